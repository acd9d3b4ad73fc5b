//! JSON-over-HTTP calls to a service, with errors that point at the service's log.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::ServiceError;
use crate::process::log_tail;

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Sends requests to one service.
#[derive(Debug, Clone)]
pub(crate) struct Rest {
    service: &'static str,
    log: PathBuf,
}

impl Rest {
    pub(crate) fn new(service: &'static str, log: PathBuf) -> Self {
        Self { service, log }
    }

    fn log_tail(&self) -> String {
        log_tail(&self.log, 40)
    }

    fn http_error(&self, context: &str, source: reqwest::Error) -> ServiceError {
        ServiceError::Http {
            service: self.service,
            context: context.to_owned(),
            source,
            log: self.log.clone(),
            log_tail: self.log_tail(),
        }
    }

    pub(crate) fn api_error(&self, context: &str, status: u16, body: String) -> ServiceError {
        ServiceError::Api {
            service: self.service,
            context: context.to_owned(),
            status,
            body,
            log: self.log.clone(),
            log_tail: self.log_tail(),
        }
    }

    pub(crate) fn timeout_error(&self, context: &str, waited: Duration) -> ServiceError {
        ServiceError::Timeout {
            service: self.service,
            context: context.to_owned(),
            waited,
            log: self.log.clone(),
            log_tail: self.log_tail(),
        }
    }

    /// A client for one call. No connection pool: a pooled connection belongs to the tokio
    /// runtime that opened it, and tests may call from different runtimes. No proxy: everything
    /// is on loopback.
    fn client(&self, context: &str) -> Result<reqwest::Client, ServiceError> {
        reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| self.http_error(context, e))
    }

    /// Sends `method url` with an optional JSON body and returns the JSON answer (`null` for an
    /// empty body). Any non-2xx status is an [`ServiceError::Api`].
    pub(crate) async fn json(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Value, ServiceError> {
        let context = format!("{method} {url}");
        let mut request = self.client(&context)?.request(method, url);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request
            .send()
            .await
            .map_err(|e| self.http_error(&context, e))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .map_err(|e| self.http_error(&context, e))?;
        if !status.is_success() {
            return Err(self.api_error(&context, status.as_u16(), text));
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| {
            self.api_error(
                &context,
                status.as_u16(),
                format!("answer is not JSON ({e}): {text}"),
            )
        })
    }
}
