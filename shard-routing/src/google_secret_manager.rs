//! [`SecretStore`] backed by Google Cloud Secret Manager, through the official client.

use google_cloud_gax::error::rpc::Code;
use google_cloud_secretmanager_v1::client::SecretManagerService;
use revrepl_record::ErrorClass;

use crate::error::RoutingError;
use crate::secret::{Password, SecretStore, SecretVersion};

/// Reads `secretManagerUri` passwords from Secret Manager with Application Default
/// Credentials. The payload is used exactly as stored (no trimming), as the reference does.
#[derive(Debug, Clone)]
pub struct GoogleSecretManager {
    client: SecretManagerService,
}

impl GoogleSecretManager {
    /// A client with Application Default Credentials and the global endpoint.
    pub async fn connect() -> Result<Self, RoutingError> {
        let client = SecretManagerService::builder()
            .build()
            .await
            .map_err(|error| RoutingError::Secret {
                class: ErrorClass::Fatal,
                reason: format!("cannot create the Secret Manager client: {error}"),
            })?;
        Ok(Self::from_client(client))
    }

    /// Uses an existing client (another endpoint, other credentials, or a test stub).
    pub fn from_client(client: SecretManagerService) -> Self {
        Self { client }
    }
}

impl SecretStore for GoogleSecretManager {
    type Error = RoutingError;

    async fn access(&self, secret: &SecretVersion) -> Result<Password, RoutingError> {
        let response = self
            .client
            .access_secret_version()
            .set_name(secret.to_string())
            .send()
            .await
            .map_err(|error| RoutingError::Secret {
                class: class_of(&error),
                reason: format!("secret {secret}: {error}"),
            })?;
        let definite = |problem: &str| RoutingError::Secret {
            class: ErrorClass::Fatal,
            reason: format!("secret {secret} {problem}"),
        };
        let payload = response.payload.ok_or_else(|| definite("has no payload"))?;
        let text =
            String::from_utf8(payload.data.to_vec()).map_err(|_| definite("is not UTF-8 text"))?;
        Ok(Password::new(text))
    }
}

/// Unavailability, timeouts and throttling may pass; a missing secret, a refused permission or
/// a disabled version will not.
fn class_of(error: &google_cloud_secretmanager_v1::Error) -> ErrorClass {
    if error.is_timeout() || error.is_transport() || error.is_io() || error.is_connect() {
        return ErrorClass::Transient;
    }
    match error.status().map(|status| status.code) {
        Some(
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Internal
            | Code::Unknown,
        ) => ErrorClass::Transient,
        Some(_) => ErrorClass::Fatal,
        None => match error.http_status_code() {
            Some(429 | 500..=599) => ErrorClass::Transient,
            _ => ErrorClass::Fatal,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use google_cloud_gax::error::rpc::Status;
    use google_cloud_gax::options::RequestOptions;
    use google_cloud_gax::response::Response;
    use google_cloud_secretmanager_v1::model::{
        AccessSecretVersionRequest, AccessSecretVersionResponse, SecretPayload,
    };
    use google_cloud_secretmanager_v1::stub;
    use revrepl_record::Classify;

    /// Secret Manager as a stub: `.../versions/1` holds `s3cret`, `.../down/...` is
    /// unavailable, anything else is not found.
    #[derive(Debug)]
    struct FakeSecretManager;

    impl stub::SecretManagerService for FakeSecretManager {
        async fn access_secret_version(
            &self,
            request: AccessSecretVersionRequest,
            _options: RequestOptions,
        ) -> google_cloud_secretmanager_v1::Result<Response<AccessSecretVersionResponse>> {
            let status = |code: Code, message: &str| {
                google_cloud_secretmanager_v1::Error::service(
                    Status::default().set_code(code).set_message(message),
                )
            };
            match request.name.as_str() {
                "projects/p/secrets/db/versions/1" => {
                    let response = AccessSecretVersionResponse::new()
                        .set_name(request.name.clone())
                        .set_payload(SecretPayload::new().set_data("s3cret"));
                    Ok(Response::from(response))
                }
                name if name.contains("/down/") => Err(status(Code::Unavailable, "try later")),
                _ => Err(status(Code::NotFound, "no such secret")),
            }
        }
    }

    fn store() -> GoogleSecretManager {
        GoogleSecretManager::from_client(SecretManagerService::from_stub(FakeSecretManager))
    }

    fn secret(uri: &str) -> SecretVersion {
        SecretVersion::parse(uri).expect("a valid secret name")
    }

    #[tokio::test]
    async fn reads_the_payload_of_the_named_version() {
        let password = store()
            .access(&secret("projects/p/secrets/db/versions/1"))
            .await
            .expect("found");
        assert_eq!(password.expose(), "s3cret");
    }

    #[tokio::test]
    async fn errors_are_classified_and_name_the_secret() {
        let missing = store()
            .access(&secret("projects/p/secrets/db"))
            .await
            .expect_err("not found");
        assert_eq!(missing.class(), ErrorClass::Fatal);
        assert!(
            missing
                .to_string()
                .starts_with("secret projects/p/secrets/db/versions/latest: "),
            "{missing}"
        );
        let down = store()
            .access(&secret("projects/p/secrets/down/versions/2"))
            .await
            .expect_err("unavailable");
        assert_eq!(down.class(), ErrorClass::Transient);
    }
}
