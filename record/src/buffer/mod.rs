//! The buffer between reader and writer: window files in a GCS bucket or a local directory.
//!
//! One small trait, [`BufferStore`], with one implementation per real system, selected by URL
//! with [`open`]. Object paths are relative to the buffer root and use `/` separators.

mod gcs;
mod local;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

pub use gcs::{GcsBucket, GcsOptions};
pub use local::LocalDirectory;

use crate::retry::{Classify, ErrorClass};

/// What a create-if-absent write found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The object did not exist and now holds the bytes given.
    Created,
    /// The object already existed and was left untouched.
    AlreadyExists,
}

/// Storage for window files (and the `skip/` and `dlq/` directories).
#[async_trait]
pub trait BufferStore: Send + Sync + fmt::Debug {
    /// Writes `bytes` to `path` only if no object is there; readers never see a partial
    /// object. When two writers race, exactly one gets [`PutOutcome::Created`].
    async fn put_if_absent(&self, path: &str, bytes: Bytes) -> Result<PutOutcome, BufferError>;

    /// The whole object at `path`, or `None` if there is none.
    async fn get(&self, path: &str) -> Result<Option<Bytes>, BufferError>;

    /// Paths of all objects whose path starts with `prefix`, sorted. For tools and tests: the
    /// metadata store, not listing, says which windows exist.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, BufferError>;

    /// Where the buffer is, for messages: `gs://bucket/prefix` or a directory path.
    fn location(&self) -> &str;
}

/// An error of the buffer store; each names the buffer and the object.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// The buffer URL cannot be used.
    #[error("buffer URL {url:?} is invalid: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An object path that is not a clean relative path (a bug in the caller).
    #[error("object path {path:?} is invalid: {reason}")]
    InvalidPath {
        /// The path given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A local file-system operation failed.
    #[error("{operation} {path:?} in buffer {location} failed: {source}")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The buffer.
        location: String,
        /// The object path.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A Cloud Storage call failed.
    #[error("{operation} {path:?} in buffer {location} failed: {message}")]
    Gcs {
        /// What was being done.
        operation: &'static str,
        /// The buffer.
        location: String,
        /// The object path.
        path: String,
        /// What the service or client said.
        message: String,
        /// The HTTP status, when there was a response.
        status: Option<u16>,
        /// Whether the failure is a timeout or a connection problem.
        transport: bool,
    },
}

impl Classify for BufferError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::InvalidUrl { .. } | Self::InvalidPath { .. } => ErrorClass::Fatal,
            Self::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::PermissionDenied
                | std::io::ErrorKind::ReadOnlyFilesystem
                | std::io::ErrorKind::NotADirectory
                | std::io::ErrorKind::IsADirectory => ErrorClass::Fatal,
                _ => ErrorClass::Transient,
            },
            Self::Gcs {
                status, transport, ..
            } => match status {
                Some(408 | 429) | Some(500..=599) => ErrorClass::Transient,
                Some(401 | 403 | 404) => ErrorClass::Fatal,
                Some(_) => ErrorClass::Definite,
                None if *transport => ErrorClass::Transient,
                None => ErrorClass::Fatal,
            },
        }
    }
}

/// Checks that `path` is a clean relative object path: non-empty `/`-separated segments, none
/// of them `.` or `..`, no backslashes or control characters.
pub(crate) fn check_path(path: &str) -> Result<(), BufferError> {
    let invalid = |reason| {
        Err(BufferError::InvalidPath {
            path: path.to_string(),
            reason,
        })
    };
    if path.is_empty() {
        return invalid("it is empty");
    }
    if path.chars().any(|c| c.is_control() || c == '\\') {
        return invalid("it contains a control character or a backslash");
    }
    if path
        .split('/')
        .any(|segment| segment.is_empty() || segment == "." || segment == "..")
    {
        return invalid("it has an empty, '.' or '..' segment, or a leading or trailing '/'");
    }
    Ok(())
}

/// Opens the buffer named by `url`: `gs://bucket/prefix`, `file:///path`, or a plain path.
///
/// For GCS, `options` choose the endpoint and credentials; by default the endpoint comes from
/// `STORAGE_EMULATOR_HOST` when set (with anonymous credentials), otherwise Google's with
/// Application Default Credentials.
pub async fn open(url: &str, options: GcsOptions) -> Result<Arc<dyn BufferStore>, BufferError> {
    match BufferUrl::parse(url)? {
        BufferUrl::Gcs { bucket, prefix } => Ok(Arc::new(
            GcsBucket::connect(&bucket, &prefix, options).await?,
        )),
        BufferUrl::Local(dir) => Ok(Arc::new(LocalDirectory::new(dir))),
    }
}

/// A parsed buffer URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BufferUrl {
    /// `gs://bucket/prefix`.
    Gcs {
        /// The bucket name.
        bucket: String,
        /// The object-name prefix, without leading or trailing `/`; may be empty.
        prefix: String,
    },
    /// A local directory.
    Local(PathBuf),
}

impl BufferUrl {
    /// Parses `gs://bucket[/prefix]`, `file:///path` or a plain path.
    pub fn parse(url: &str) -> Result<Self, BufferError> {
        let invalid = |reason: &str| BufferError::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        if url.trim().is_empty() {
            return Err(invalid("it is empty"));
        }
        if let Some(rest) = url.strip_prefix("gs://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid(
                    "the bucket name is missing (expected gs://bucket/prefix)",
                ));
            }
            let prefix = prefix.trim_matches('/').to_string();
            if !prefix.is_empty() {
                check_path(&prefix).map_err(|e| invalid(&e.to_string()))?;
            }
            return Ok(Self::Gcs {
                bucket: bucket.to_string(),
                prefix,
            });
        }
        if url.starts_with("file:") {
            if !url.starts_with("file:///") {
                return Err(invalid(
                    "a file URL must be absolute, like file:///var/revrepl",
                ));
            }
            let parsed = url::Url::parse(url).map_err(|e| invalid(&e.to_string()))?;
            let path = parsed
                .to_file_path()
                .map_err(|()| invalid("a file URL must be absolute, like file:///var/revrepl"))?;
            return Ok(Self::Local(path));
        }
        if let Some((scheme, _)) = url.split_once("://") {
            return Err(invalid(&format!(
                "scheme {scheme:?} is not supported; use gs://bucket/prefix, file:///path or a path"
            )));
        }
        Ok(Self::Local(PathBuf::from(url)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buffer_urls() {
        assert_eq!(
            BufferUrl::parse("gs://bkt/rr/run1/").ok(),
            Some(BufferUrl::Gcs {
                bucket: "bkt".into(),
                prefix: "rr/run1".into()
            })
        );
        assert_eq!(
            BufferUrl::parse("gs://bkt").ok(),
            Some(BufferUrl::Gcs {
                bucket: "bkt".into(),
                prefix: String::new()
            })
        );
        assert_eq!(
            BufferUrl::parse("file:///var/rr").ok(),
            Some(BufferUrl::Local("/var/rr".into()))
        );
        assert_eq!(
            BufferUrl::parse("buffer/dir").ok(),
            Some(BufferUrl::Local("buffer/dir".into()))
        );
        for (bad, reason) in [
            ("", "empty"),
            ("gs:///x", "bucket name is missing"),
            ("gs://b/a/../c", "'..'"),
            ("s3://b/p", "scheme \"s3\" is not supported"),
            ("file:relative", "must be absolute"),
        ] {
            let err = BufferUrl::parse(bad).err().map(|e| e.to_string());
            assert!(
                err.as_deref().is_some_and(|e| e.contains(reason)),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn object_paths_must_be_clean() {
        assert!(check_path("ls1/2024-01-05T10:33:50.000Z-x.txt").is_ok());
        for bad in [
            "", "/abs", "a//b", "a/./b", "../x", "a/..", "tail/", "a\\b", "a\nb",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn classifies_errors() {
        let gcs = |status, transport| BufferError::Gcs {
            operation: "get",
            location: "gs://b".into(),
            path: "p".into(),
            message: "m".into(),
            status,
            transport,
        };
        assert_eq!(gcs(Some(503), false).class(), ErrorClass::Transient);
        assert_eq!(gcs(Some(429), false).class(), ErrorClass::Transient);
        assert_eq!(gcs(None, true).class(), ErrorClass::Transient);
        assert_eq!(gcs(Some(403), false).class(), ErrorClass::Fatal);
        assert_eq!(gcs(Some(400), false).class(), ErrorClass::Definite);
        let io = BufferError::Io {
            operation: "write",
            location: "/tmp".into(),
            path: "p".into(),
            source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
        };
        assert_eq!(io.class(), ErrorClass::Fatal);
    }
}
