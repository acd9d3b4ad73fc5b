//! A buffer in a local directory: atomic, create-if-absent writes by temp file + hard link.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;

use super::{BufferError, BufferStore, PutOutcome, check_path};

/// Temp files start with this and are never listed or read as objects.
const TEMP_PREFIX: &str = ".revrepl-tmp-";

/// A buffer rooted at a local directory (created on the first write).
///
/// A write goes to a temp file in the target directory, is flushed to disk, and is then
/// published with `link(2)`, which fails if the name exists: readers never see partial
/// objects and exactly one of two racing writers creates the object.
#[derive(Debug, Clone)]
pub struct LocalDirectory {
    root: PathBuf,
    location: String,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

impl LocalDirectory {
    /// A buffer rooted at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let location = root.display().to_string();
        Self { root, location }
    }

    fn io_error(&self, operation: &'static str, path: &str, source: io::Error) -> BufferError {
        BufferError::Io {
            operation,
            location: self.location.clone(),
            path: path.to_string(),
            source,
        }
    }

    fn put_blocking(&self, path: &str, bytes: &[u8]) -> Result<PutOutcome, BufferError> {
        let target = self.root.join(path);
        let dir = target.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| self.io_error("create directory for", path, e))?;
        if target.exists() {
            return Ok(PutOutcome::AlreadyExists);
        }
        let temp = dir.join(format!(
            "{TEMP_PREFIX}{}-{}",
            std::process::id(),
            TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let result = write_and_link(&temp, &target, &dir, bytes);
        // The temp name is ours alone; removing it cannot touch the published object.
        let _ = fs::remove_file(&temp);
        result.map_err(|e| self.io_error("write", path, e))
    }

    fn list_blocking(&self, prefix: &str) -> Result<Vec<String>, BufferError> {
        let mut found = Vec::new();
        // Start from the deepest directory the prefix names, to avoid walking everything.
        let start_dir = match prefix.rfind('/') {
            Some(i) => self.root.join(&prefix[..i]),
            None => self.root.clone(),
        };
        let mut pending = vec![start_dir];
        while let Some(dir) = pending.pop() {
            let entries = match fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io_error("list", prefix, e)),
            };
            for entry in entries {
                let entry = entry.map_err(|e| self.io_error("list", prefix, e))?;
                let kind = entry
                    .file_type()
                    .map_err(|e| self.io_error("list", prefix, e))?;
                let full = entry.path();
                if kind.is_dir() {
                    pending.push(full);
                    continue;
                }
                if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                    continue;
                }
                if let Some(relative) = relative_object_path(&self.root, &full)
                    && relative.starts_with(prefix)
                {
                    found.push(relative);
                }
            }
        }
        found.sort();
        Ok(found)
    }
}

fn write_and_link(temp: &Path, target: &Path, dir: &Path, bytes: &[u8]) -> io::Result<PutOutcome> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    match fs::hard_link(temp, target) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(PutOutcome::AlreadyExists),
        Err(e) => return Err(e),
    }
    // Make the new directory entry durable too.
    fs::File::open(dir)?.sync_all()?;
    Ok(PutOutcome::Created)
}

fn relative_object_path(root: &Path, full: &Path) -> Option<String> {
    let relative = full.strip_prefix(root).ok()?;
    let parts: Option<Vec<&str>> = relative
        .components()
        .map(|c| c.as_os_str().to_str())
        .collect();
    Some(parts?.join("/"))
}

#[async_trait]
impl BufferStore for LocalDirectory {
    async fn put_if_absent(&self, path: &str, bytes: Bytes) -> Result<PutOutcome, BufferError> {
        check_path(path)?;
        let this = self.clone();
        let path = path.to_string();
        tokio::task::spawn_blocking(move || this.put_blocking(&path, &bytes))
            .await
            .map_err(|e| self.io_error("write", "", io::Error::other(e)))?
    }

    async fn get(&self, path: &str) -> Result<Option<Bytes>, BufferError> {
        check_path(path)?;
        match tokio::fs::read(self.root.join(path)).await {
            Ok(bytes) => Ok(Some(Bytes::from(bytes))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io_error("read", path, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, BufferError> {
        let this = self.clone();
        let prefix = prefix.to_string();
        tokio::task::spawn_blocking(move || this.list_blocking(&prefix))
            .await
            .map_err(|e| self.io_error("list", "", io::Error::other(e)))?
    }

    fn location(&self) -> &str {
        &self.location
    }
}
