//! A buffer in a Cloud Storage bucket, through the official `google-cloud-storage` client.

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use google_cloud_auth::credentials::{self, CacheableResource, Credentials};
use google_cloud_storage::client::Storage;
use serde::Deserialize;

use super::{BufferError, BufferStore, PutOutcome, check_path};

const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";

/// How to reach Cloud Storage.
#[derive(Debug, Clone, Default)]
pub struct GcsOptions {
    /// Endpoint override, e.g. `http://127.0.0.1:4443` for fake-gcs-server. When `None`,
    /// `STORAGE_EMULATOR_HOST` is used if set, otherwise Google's endpoint.
    pub endpoint: Option<String>,
    /// Use no credentials (emulators). Implied when the endpoint comes from
    /// `STORAGE_EMULATOR_HOST`; otherwise Application Default Credentials are used.
    pub anonymous: bool,
}

/// A buffer rooted at `gs://bucket/prefix`.
///
/// Writes are single-request uploads with `ifGenerationMatch=0`, so an object is created only
/// if absent and is never visible half-written.
#[derive(Debug)]
pub struct GcsBucket {
    client: Storage,
    credentials: Credentials,
    http: reqwest::Client,
    endpoint: String,
    bucket: String,
    bucket_resource: String,
    prefix: String,
    location: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListPage {
    #[serde(default)]
    items: Vec<ListedObject>,
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
struct ListedObject {
    name: String,
}

impl GcsBucket {
    /// Connects to `bucket`, storing objects under `prefix` (may be empty).
    pub async fn connect(
        bucket: &str,
        prefix: &str,
        options: GcsOptions,
    ) -> Result<Self, BufferError> {
        let location = if prefix.is_empty() {
            format!("gs://{bucket}")
        } else {
            format!("gs://{bucket}/{prefix}")
        };
        let fail = |message: String| BufferError::Gcs {
            operation: "connect to",
            location: location.clone(),
            path: String::new(),
            message,
            status: None,
            transport: false,
        };
        let emulator = std::env::var("STORAGE_EMULATOR_HOST")
            .ok()
            .filter(|v| !v.is_empty())
            .map(|host| {
                if host.contains("://") {
                    host
                } else {
                    format!("http://{host}")
                }
            });
        let (endpoint, anonymous) = match (options.endpoint, emulator) {
            (Some(endpoint), _) => (endpoint, options.anonymous),
            (None, Some(emulator)) => (emulator, true),
            (None, None) => (DEFAULT_ENDPOINT.to_string(), options.anonymous),
        };
        let endpoint = endpoint.trim_end_matches('/').to_string();
        let credentials = if anonymous {
            credentials::anonymous::Builder::new().build()
        } else {
            credentials::Builder::default()
                .build()
                .map_err(|e| fail(format!("no usable Google credentials: {e}")))?
        };
        let client = Storage::builder()
            .with_endpoint(endpoint.clone())
            .with_credentials(credentials.clone())
            // Objects are in memory already: always upload in one request (fake-gcs-server
            // cannot finish the client's chunked resumable uploads).
            .with_resumable_upload_threshold(usize::MAX)
            .build()
            .await
            .map_err(|e| fail(e.to_string()))?;
        Ok(Self {
            client,
            credentials,
            http: reqwest::Client::new(),
            endpoint,
            bucket: bucket.to_string(),
            bucket_resource: format!("projects/_/buckets/{bucket}"),
            prefix: prefix.trim_matches('/').to_string(),
            location,
        })
    }

    fn object_name(&self, path: &str) -> String {
        if self.prefix.is_empty() {
            path.to_string()
        } else {
            format!("{}/{path}", self.prefix)
        }
    }

    fn error(
        &self,
        operation: &'static str,
        path: &str,
        error: &google_cloud_storage::Error,
    ) -> BufferError {
        BufferError::Gcs {
            operation,
            location: self.location.clone(),
            path: path.to_string(),
            message: error.to_string(),
            status: error.http_status_code(),
            transport: error.is_timeout() || error.is_transport() || error.is_io(),
        }
    }

    fn list_error(&self, prefix: &str, message: String, status: Option<u16>) -> BufferError {
        BufferError::Gcs {
            operation: "list",
            location: self.location.clone(),
            path: prefix.to_string(),
            message,
            status,
            transport: status.is_none(),
        }
    }

    /// Listing uses the JSON API directly: the client library lists through gRPC, which
    /// emulators such as fake-gcs-server do not serve.
    async fn list_page(
        &self,
        prefix: &str,
        page_token: Option<&str>,
    ) -> Result<ListPage, BufferError> {
        let headers = match self.credentials.headers(Default::default()).await {
            Ok(CacheableResource::New { data, .. }) => data,
            Ok(CacheableResource::NotModified) => Default::default(),
            Err(e) => return Err(self.list_error(prefix, e.to_string(), None)),
        };
        let url = format!("{}/storage/v1/b/{}/o", self.endpoint, self.bucket);
        let mut query = vec![("prefix", self.object_name(prefix))];
        if self.prefix.is_empty() && prefix.is_empty() {
            query.clear();
        }
        if let Some(token) = page_token {
            query.push(("pageToken", token.to_string()));
        }
        let response = self
            .http
            .get(url)
            .headers(headers)
            .query(&query)
            .send()
            .await
            .map_err(|e| self.list_error(prefix, e.to_string(), e.status().map(|s| s.as_u16())))?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            let message = format!(
                "HTTP {status}: {}",
                body.chars().take(300).collect::<String>()
            );
            return Err(self.list_error(prefix, message, Some(status.as_u16())));
        }
        response
            .json::<ListPage>()
            .await
            .map_err(|e| self.list_error(prefix, format!("unreadable listing: {e}"), None))
    }
}

#[async_trait]
impl BufferStore for GcsBucket {
    async fn put_if_absent(&self, path: &str, bytes: Bytes) -> Result<PutOutcome, BufferError> {
        check_path(path)?;
        // Sending the checksum up front lets the service reject a corrupted upload, and keeps
        // the request a plain two-part multipart upload that emulators understand.
        let checksum = crc32c::crc32c(&bytes);
        let result = self
            .client
            .write_object(&self.bucket_resource, self.object_name(path), bytes)
            .with_known_crc32c(checksum)
            .set_if_generation_match(0_i64)
            .set_content_type("text/plain")
            .send_unbuffered()
            .await;
        match result {
            Ok(_) => Ok(PutOutcome::Created),
            Err(e) if e.http_status_code() == Some(412) => Ok(PutOutcome::AlreadyExists),
            Err(e) => Err(self.error("write", path, &e)),
        }
    }

    async fn get(&self, path: &str) -> Result<Option<Bytes>, BufferError> {
        check_path(path)?;
        let response = self
            .client
            .read_object(&self.bucket_resource, self.object_name(path))
            .send()
            .await;
        let mut response = match response {
            Ok(response) => response,
            Err(e) if e.http_status_code() == Some(404) => return Ok(None),
            Err(e) => return Err(self.error("read", path, &e)),
        };
        let mut out = BytesMut::new();
        while let Some(chunk) = response.next().await {
            let chunk = chunk.map_err(|e| self.error("read", path, &e))?;
            out.extend_from_slice(&chunk);
        }
        Ok(Some(out.freeze()))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, BufferError> {
        let strip = if self.prefix.is_empty() {
            0
        } else {
            self.prefix.len() + 1
        };
        let mut names = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let page = self.list_page(prefix, token.as_deref()).await?;
            names.extend(
                page.items
                    .into_iter()
                    .filter_map(|o| o.name.get(strip..).map(str::to_string)),
            );
            match page.next_page_token {
                Some(next) if !next.is_empty() => token = Some(next),
                _ => break,
            }
        }
        names.sort();
        Ok(names)
    }

    fn location(&self) -> &str {
        &self.location
    }
}
