//! Shard passwords and where they come from: Secret Manager (behind [`SecretStore`]), a file,
//! or an environment variable (DESIGN §9).
//!
//! A [`Password`] prints as `***` in `Debug` and `Display`, so it cannot reach a log line, an
//! error or a metric by accident; [`Password::expose`] is the one way to read it.

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};

use revrepl_record::{Classify, ErrorClass};

use crate::error::RoutingError;

/// A database password. `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(password: impl Into<String>) -> Self {
        Self(password.into())
    }

    /// The password itself, for the database driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A Secret Manager secret version: `projects/{project}/secrets/{secret}/versions/{version}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SecretVersion {
    project: String,
    secret: String,
    version: String,
}

impl SecretVersion {
    /// Parses `projects/{p}/secrets/{s}` (meaning version `latest`, as the reference does) or
    /// `projects/{p}/secrets/{s}/versions/{v}`; one trailing `/` is allowed (the reference
    /// reads `projects/{p}/secrets/{s}/` as `…/versions/latest` too). Anything else is an
    /// error saying what is expected.
    pub fn parse(uri: &str) -> Result<Self, String> {
        let trimmed = uri.strip_suffix('/').unwrap_or(uri);
        let parts: Vec<&str> = trimmed.split('/').collect();
        let (project, secret, version) = match parts.as_slice() {
            ["projects", project, "secrets", secret] => (*project, *secret, "latest"),
            ["projects", project, "secrets", secret, "versions", version] => {
                (*project, *secret, *version)
            }
            _ => {
                return Err(format!(
                    "{uri:?} is not of the form projects/PROJECT/secrets/SECRET or \
                     projects/PROJECT/secrets/SECRET/versions/VERSION"
                ));
            }
        };
        if [project, secret, version]
            .iter()
            .any(|part| part.is_empty())
        {
            return Err(format!("{uri:?} has an empty project, secret or version"));
        }
        Ok(Self {
            project: project.to_string(),
            secret: secret.to_string(),
            version: version.to_string(),
        })
    }

    /// The project id or number.
    pub fn project(&self) -> &str {
        &self.project
    }

    /// The secret id.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// The version: a number or `latest`.
    pub fn version(&self) -> &str {
        &self.version
    }
}

impl fmt::Display for SecretVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "projects/{}/secrets/{}/versions/{}",
            self.project, self.secret, self.version
        )
    }
}

/// Where `secretManagerUri` passwords are read from: Google Secret Manager in production, a
/// directory or the environment in tests and on a laptop.
pub trait SecretStore: Send + Sync {
    /// The store's error; its class says whether trying again may help.
    type Error: std::error::Error + Classify + Send + Sync + 'static;

    /// The payload of `secret`, as UTF-8 text.
    fn access(
        &self,
        secret: &SecretVersion,
    ) -> impl Future<Output = Result<Password, Self::Error>> + Send;
}

/// Refuses every secret: for deployments whose shards file has no `secretManagerUri`.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSecretManager;

impl SecretStore for NoSecretManager {
    type Error = RoutingError;

    async fn access(&self, secret: &SecretVersion) -> Result<Password, RoutingError> {
        Err(RoutingError::Secret {
            class: ErrorClass::Fatal,
            reason: format!(
                "the shards file names Secret Manager secret {secret}, but no Secret Manager \
                 access is configured"
            ),
        })
    }
}

/// Secrets as files: `projects/p/secrets/s/versions/v` is the file
/// `<root>/p/s/v` (so `latest` is a file named `latest`). One trailing newline is removed.
#[derive(Debug, Clone)]
pub struct SecretDirectory {
    root: PathBuf,
}

impl SecretDirectory {
    /// Secrets under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The file holding `secret`.
    pub fn path_of(&self, secret: &SecretVersion) -> PathBuf {
        self.root
            .join(&secret.project)
            .join(&secret.secret)
            .join(&secret.version)
    }
}

impl SecretStore for SecretDirectory {
    type Error = RoutingError;

    async fn access(&self, secret: &SecretVersion) -> Result<Password, RoutingError> {
        let path = self.path_of(secret);
        read_password_file(&path)
            .await
            .map_err(|reason| RoutingError::Secret {
                class: ErrorClass::Fatal,
                reason: format!("secret {secret}: {reason}"),
            })
    }
}

/// Secrets as environment variables: `projects/p/secrets/db-pass/versions/latest` is
/// `<prefix>DB_PASS`, and an explicit version `3` is `<prefix>DB_PASS_3` (letters upper-cased,
/// every other character but digits turned into `_`).
#[derive(Debug, Clone)]
pub struct SecretEnvironment {
    prefix: String,
}

impl SecretEnvironment {
    /// Variables named `<prefix><SECRET>[_<VERSION>]`, e.g. prefix `REVREPL_SECRET_`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    /// The variable holding `secret`.
    pub fn variable_of(&self, secret: &SecretVersion) -> String {
        let mut name = format!("{}{}", self.prefix, env_name(&secret.secret));
        if secret.version != "latest" {
            name.push('_');
            name.push_str(&env_name(&secret.version));
        }
        name
    }
}

fn env_name(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect()
}

impl SecretStore for SecretEnvironment {
    type Error = RoutingError;

    async fn access(&self, secret: &SecretVersion) -> Result<Password, RoutingError> {
        let variable = self.variable_of(secret);
        read_password_variable(&variable).map_err(|reason| RoutingError::Secret {
            class: ErrorClass::Fatal,
            reason: format!("secret {secret}: {reason}"),
        })
    }
}

/// Reads a password file, removing one trailing newline (`\n` or `\r\n`).
pub(crate) async fn read_password_file(path: &Path) -> Result<Password, String> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|error| format!("cannot read {path:?}: {error}"))?;
    let text = text
        .strip_suffix('\n')
        .map(|rest| rest.strip_suffix('\r').unwrap_or(rest))
        .unwrap_or(&text);
    Ok(Password::new(text))
}

/// Reads a password from an environment variable.
pub(crate) fn read_password_variable(variable: &str) -> Result<Password, String> {
    match std::env::var(variable) {
        Ok(value) => Ok(Password::new(value)),
        Err(std::env::VarError::NotPresent) => {
            Err(format!("environment variable {variable:?} is not set"))
        }
        Err(std::env::VarError::NotUnicode(_)) => Err(format!(
            "environment variable {variable:?} is not valid UTF-8"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_print() {
        let password = Password::new("hunter2");
        assert_eq!(
            format!("{password:?} {password} {password:#?}"),
            "*** *** ***"
        );
        assert_eq!(password.expose(), "hunter2");
    }

    #[test]
    fn secret_versions_follow_the_reference_rules() {
        let latest = SecretVersion::parse("projects/p1/secrets/db").expect("short form");
        assert_eq!(latest.to_string(), "projects/p1/secrets/db/versions/latest");
        let slash = SecretVersion::parse("projects/123/secrets/name/").expect("trailing slash");
        assert_eq!(
            slash.to_string(),
            "projects/123/secrets/name/versions/latest"
        );
        let pinned_slash =
            SecretVersion::parse("projects/p1/secrets/db/versions/3/").expect("trailing slash");
        assert_eq!(pinned_slash.version(), "3");
        let pinned = SecretVersion::parse("projects/p1/secrets/db/versions/3").expect("long form");
        assert_eq!(
            (pinned.project(), pinned.secret(), pinned.version()),
            ("p1", "db", "3")
        );
        for bad in [
            "",
            "db",
            "projects/p1/secrets",
            "projects/p1/secrets/db/versions",
            "projects/p1/secrets/db/versions/",
            "projects/p1/secrets/db//",
            "projects/p1/secrets/db/versions/3/extra",
            "projects//secrets/db",
            "project/p1/secrets/db",
        ] {
            assert!(SecretVersion::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[tokio::test]
    async fn directory_store_reads_files_and_trims_one_newline() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SecretDirectory::new(dir.path());
        let secret = SecretVersion::parse("projects/p/secrets/db").expect("uri");
        let path = store.path_of(&secret);
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(&path, "s3cret\r\n").expect("write");
        let password = store.access(&secret).await.expect("readable");
        assert_eq!(password.expose(), "s3cret");

        let missing = SecretVersion::parse("projects/p/secrets/other").expect("uri");
        let error = store.access(&missing).await.expect_err("missing file");
        assert_eq!(error.class(), ErrorClass::Fatal);
        assert!(
            error
                .to_string()
                .starts_with("secret projects/p/secrets/other/versions/latest: cannot read"),
            "{error}"
        );
    }

    #[test]
    fn environment_store_names_variables_after_the_secret() {
        let store = SecretEnvironment::new("REVREPL_SECRET_");
        let latest = SecretVersion::parse("projects/p/secrets/db-pass.eu").expect("uri");
        assert_eq!(store.variable_of(&latest), "REVREPL_SECRET_DB_PASS_EU");
        let pinned = SecretVersion::parse("projects/p/secrets/db/versions/7").expect("uri");
        assert_eq!(store.variable_of(&pinned), "REVREPL_SECRET_DB_7");
    }

    #[tokio::test]
    async fn environment_store_reads_the_variable() {
        // Cargo and nextest set CARGO_PKG_NAME when they run a test binary.
        let store = SecretEnvironment::new("CARGO_PKG_");
        let secret = SecretVersion::parse("projects/p/secrets/name").expect("uri");
        let password = store.access(&secret).await.expect("variable set");
        assert_eq!(password.expose(), env!("CARGO_PKG_NAME"));
        let unset = SecretVersion::parse("projects/p/secrets/never-set").expect("uri");
        let error = store.access(&unset).await.expect_err("variable unset");
        assert_eq!(
            error.to_string(),
            "secret projects/p/secrets/never-set/versions/latest: environment variable \
             \"CARGO_PKG_NEVER_SET\" is not set"
        );
    }

    #[tokio::test]
    async fn no_secret_manager_says_it_is_not_configured() {
        let secret = SecretVersion::parse("projects/p/secrets/db").expect("uri");
        let error = NoSecretManager.access(&secret).await.expect_err("refuses");
        assert!(
            error
                .to_string()
                .contains("no Secret Manager access is configured")
        );
        assert_eq!(error.class(), ErrorClass::Fatal);
    }
}
