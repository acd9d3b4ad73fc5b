//! The shards file: the MySQL shards and their logical shard ids (DESIGN §9, reference §1.1).
//!
//! Accepted shapes, as the reference's two generations of templates write them:
//!
//! ```json
//! [{"logicalShardId": "ls1", "host": "10.0.0.1", "port": "3306", "user": "app",
//!   "secretManagerUri": "projects/p/secrets/ls1-password", "dbName": "db1"}]
//! {"shardConfigs": [ ...the same objects... ]}
//! ```
//!
//! Every field is a string, except `port`, which may also be a number (default 3306). The
//! password comes from exactly one of `secretManagerUri` (wins over `password`, as in the
//! reference), `passwordFile`, `passwordEnv`, or else `password` (which may be empty). Other
//! fields (`namespace`, `streamId`) are kept; `connectionProperties` is checked and applied
//! ([`crate::connection`]); unknown fields are
//! ignored, as the reference ignores them. Logical shard ids are validated (DESIGN §4) and
//! must be unique; shards are kept sorted by id.
//!
//! The file is parsed field by field rather than with a derived deserializer so that an error
//! names the file, the entry and the field, and never quotes a password.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use revrepl_record::{Classify, ShardId};
use serde_json::{Map, Value};

use crate::connection::ConnectionProperties;
use crate::error::RoutingError;
use crate::request::json_kind;
use crate::secret::{
    Password, SecretStore, SecretVersion, read_password_file, read_password_variable,
};

/// MySQL's default port, used when an entry has no `port`.
pub const DEFAULT_PORT: u16 = 3306;

/// Where a shard's password comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// Written in the shards file (`password`).
    Inline(Password),
    /// A Secret Manager secret version (`secretManagerUri`).
    SecretManager(SecretVersion),
    /// A file holding the password (`passwordFile`); one trailing newline is removed.
    File(PathBuf),
    /// An environment variable holding the password (`passwordEnv`).
    Environment(String),
}

/// One entry of the shards file, with its password not yet fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShardConfig {
    /// The logical shard id: the directory of its window files and the value routing yields.
    pub logical_shard_id: ShardId,
    /// MySQL host name or address.
    pub host: String,
    /// MySQL port.
    pub port: u16,
    /// MySQL user.
    pub user: String,
    /// Where the password comes from.
    pub password: PasswordSource,
    /// The MySQL database (schema) of this shard.
    pub db_name: String,
    /// `namespace`, kept for compatibility with the reference's files.
    pub namespace: Option<String>,
    /// `connectionProperties`: Java-properties text (`key=value` lines), as written.
    pub connection_properties: Option<String>,
    /// `connectionProperties`, checked: what revrepl applies to this shard's connections.
    pub connection: ConnectionProperties,
    /// `streamId`, kept for compatibility with the reference's files.
    pub stream_id: Option<String>,
}

/// A shard whose password has been fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// The shard's entry in the shards file.
    pub config: ShardConfig,
    /// Its password.
    pub password: Password,
}

/// A loaded and validated shards file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardsFile {
    origin: String,
    shards: Vec<ShardConfig>,
}

impl ShardsFile {
    /// Reads and validates the shards file at `path`.
    pub fn load(path: &Path) -> Result<Self, RoutingError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| RoutingError::ReadFile {
            file: "shards file",
            path: origin.clone(),
            source,
        })?;
        Self::from_json(&origin, &text)
    }

    /// Validates shards-file `text`; `origin` (a path or URL) names the file in errors.
    pub fn from_json(origin: &str, text: &str) -> Result<Self, RoutingError> {
        let document: Value =
            serde_json::from_str(text).map_err(|error| RoutingError::FileSyntax {
                file: "shards file",
                path: origin.to_string(),
                reason: error.to_string(),
            })?;
        let file_error = |problem: &str| RoutingError::ShardsFile {
            path: origin.to_string(),
            problem: problem.to_string(),
        };
        let (entries, entry_prefix) = match &document {
            Value::Array(entries) => (entries, ""),
            Value::Object(object) => match object.get("shardConfigs") {
                Some(Value::Array(entries)) => (entries, "shardConfigs"),
                Some(_) => return Err(file_error("\"shardConfigs\" must be an array of shards")),
                None => {
                    return Err(file_error(
                        "the object has no \"shardConfigs\" field (expected an array of shards \
                         or {\"shardConfigs\": [...]})",
                    ));
                }
            },
            _ => {
                return Err(file_error(
                    "expected an array of shards or {\"shardConfigs\": [...]}",
                ));
            }
        };
        if entries.is_empty() {
            return Err(file_error("the file lists no shards"));
        }
        let mut by_id: BTreeMap<ShardId, (usize, ShardConfig)> = BTreeMap::new();
        for (index, entry) in entries.iter().enumerate() {
            let position = format!("{entry_prefix}[{index}]");
            let shard = parse_entry(origin, &position, entry)?;
            if let Some((first, _)) = by_id.get(&shard.logical_shard_id) {
                return Err(RoutingError::DuplicateShard {
                    path: origin.to_string(),
                    shard: shard.logical_shard_id.to_string(),
                    first: *first,
                    second: index,
                });
            }
            by_id.insert(shard.logical_shard_id.clone(), (index, shard));
        }
        Ok(Self {
            origin: origin.to_string(),
            shards: by_id.into_values().map(|(_, shard)| shard).collect(),
        })
    }

    /// Where the file came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The shards, sorted by logical shard id.
    pub fn shards(&self) -> &[ShardConfig] {
        &self.shards
    }

    /// The logical shard ids, sorted.
    pub fn shard_ids(&self) -> impl Iterator<Item = &ShardId> {
        self.shards.iter().map(|shard| &shard.logical_shard_id)
    }

    /// The entry of `shard`, if the file has it.
    pub fn shard(&self, shard: &ShardId) -> Option<&ShardConfig> {
        self.shards
            .binary_search_by(|config| config.logical_shard_id.cmp(shard))
            .ok()
            .and_then(|index| self.shards.get(index))
    }

    /// Fetches every shard's password, from `secrets` for `secretManagerUri` entries, and
    /// checks the certificate and key files of `connectionProperties` (the reader, which
    /// connects to no shard, never calls this). Run once at start; the first failure is
    /// returned, naming the shard and the source or file.
    pub async fn resolve<S: SecretStore>(&self, secrets: &S) -> Result<Vec<Shard>, RoutingError> {
        let mut shards = Vec::with_capacity(self.shards.len());
        for config in &self.shards {
            // Connections come next: a certificate or key file they would need is checked
            // now, so that its problem is named rather than met as a failed handshake.
            config
                .connection
                .check_files()
                .map_err(|problem| RoutingError::ShardsFileEntry {
                    path: self.origin.clone(),
                    entry: format!("logicalShardId {:?}", config.logical_shard_id.as_str()),
                    field: "connectionProperties",
                    problem,
                })?;
            let password = resolve_password(config, secrets).await?;
            shards.push(Shard {
                config: config.clone(),
                password,
            });
        }
        Ok(shards)
    }
}

async fn resolve_password<S: SecretStore>(
    config: &ShardConfig,
    secrets: &S,
) -> Result<Password, RoutingError> {
    let fatal = |from: String, reason: String| RoutingError::Password {
        shard: config.logical_shard_id.clone(),
        from,
        class: revrepl_record::ErrorClass::Fatal,
        reason,
    };
    match &config.password {
        PasswordSource::Inline(password) => Ok(password.clone()),
        PasswordSource::File(path) => read_password_file(path)
            .await
            .map_err(|reason| fatal(format!("password file {path:?}"), reason)),
        PasswordSource::Environment(variable) => read_password_variable(variable)
            .map_err(|reason| fatal(format!("environment variable {variable:?}"), reason)),
        PasswordSource::SecretManager(secret) => {
            secrets
                .access(secret)
                .await
                .map_err(|error| RoutingError::Password {
                    shard: config.logical_shard_id.clone(),
                    from: format!("Secret Manager secret {secret}"),
                    class: error.class(),
                    reason: error.to_string(),
                })
        }
    }
}

/// Reads the fields of one entry, naming `position` (and the id, once known) in errors.
fn parse_entry(origin: &str, position: &str, entry: &Value) -> Result<ShardConfig, RoutingError> {
    let Value::Object(fields) = entry else {
        return Err(RoutingError::ShardsFile {
            path: origin.to_string(),
            problem: format!("entry {position} is not an object"),
        });
    };
    let mut reader = EntryReader {
        origin,
        entry: position.to_string(),
        fields,
    };
    let id_text = reader.required("logicalShardId")?;
    let logical_shard_id = ShardId::new(id_text.clone())
        .map_err(|error| reader.invalid("logicalShardId", error.to_string()))?;
    reader.entry = format!("{position} (logicalShardId {id_text:?})");
    let host = reader.required("host")?;
    let port = reader.port()?;
    let user = reader.required("user")?;
    let db_name = reader.required("dbName")?;
    let password = reader.password()?;
    let connection_properties = reader.optional("connectionProperties")?;
    let connection = match &connection_properties {
        Some(text) => ConnectionProperties::parse(text)
            .map_err(|problem| reader.invalid("connectionProperties", problem))?,
        None => ConnectionProperties::default(),
    };
    Ok(ShardConfig {
        logical_shard_id,
        host,
        port,
        user,
        password,
        db_name,
        namespace: reader.optional("namespace")?,
        connection_properties,
        connection,
        stream_id: reader.optional("streamId")?,
    })
}

struct EntryReader<'a> {
    origin: &'a str,
    entry: String,
    fields: &'a Map<String, Value>,
}

impl EntryReader<'_> {
    fn invalid(&self, field: &'static str, problem: impl Into<String>) -> RoutingError {
        RoutingError::ShardsFileEntry {
            path: self.origin.to_string(),
            entry: self.entry.clone(),
            field,
            problem: problem.into(),
        }
    }

    /// A string field; JSON `null` counts as absent (the reference's Gson and Jackson do so).
    /// The message never quotes the value, which may be a password.
    fn optional(&self, field: &'static str) -> Result<Option<String>, RoutingError> {
        match self.fields.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(other) => Err(self.invalid(
                field,
                format!("must be a string, found {}", json_kind(other)),
            )),
        }
    }

    /// A non-empty string field.
    fn required(&self, field: &'static str) -> Result<String, RoutingError> {
        match self.optional(field)? {
            None => Err(self.invalid(field, "is missing")),
            Some(text) if text.trim().is_empty() => Err(self.invalid(field, "is empty")),
            Some(text) => Ok(text),
        }
    }

    fn port(&self) -> Result<u16, RoutingError> {
        let problem = "must be a port number from 1 to 65535";
        let port = match self.fields.get("port") {
            None | Some(Value::Null) => return Ok(DEFAULT_PORT),
            Some(Value::String(text)) => text.trim().parse::<u16>().ok(),
            Some(Value::Number(number)) => number.as_u64().and_then(|n| u16::try_from(n).ok()),
            Some(_) => None,
        };
        match port {
            Some(port) if port > 0 => Ok(port),
            _ => Err(self.invalid("port", problem)),
        }
    }

    fn password(&self) -> Result<PasswordSource, RoutingError> {
        let present = |field: &'static str| -> Result<Option<String>, RoutingError> {
            Ok(self.optional(field)?.filter(|text| !text.trim().is_empty()))
        };
        let secret = present("secretManagerUri")?;
        let file = present("passwordFile")?;
        let variable = present("passwordEnv")?;
        let chosen: Vec<&str> = [
            ("secretManagerUri", secret.is_some()),
            ("passwordFile", file.is_some()),
            ("passwordEnv", variable.is_some()),
        ]
        .iter()
        .filter(|(_, given)| *given)
        .map(|(field, _)| *field)
        .collect();
        if chosen.len() > 1 {
            return Err(self.invalid(
                "password",
                format!(
                    "give only one of secretManagerUri, passwordFile and passwordEnv, not {}",
                    chosen.join(" and ")
                ),
            ));
        }
        let inline = self.optional("password")?;
        if inline.is_some() && !chosen.is_empty() {
            tracing::warn!(
                shards_file = self.origin,
                entry = %self.entry,
                "field \"password\" is ignored because {} is given", chosen.join(" and ")
            );
        }
        if let Some(uri) = secret {
            return SecretVersion::parse(&uri)
                .map(PasswordSource::SecretManager)
                .map_err(|problem| self.invalid("secretManagerUri", problem));
        }
        if let Some(path) = file {
            return Ok(PasswordSource::File(PathBuf::from(path)));
        }
        if let Some(variable) = variable {
            return Ok(PasswordSource::Environment(variable));
        }
        match inline {
            Some(password) => Ok(PasswordSource::Inline(Password::new(password))),
            None => Err(self.invalid(
                "password",
                "is missing: give password, secretManagerUri, passwordFile or passwordEnv",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::{NoSecretManager, SecretDirectory};
    use revrepl_record::ErrorClass;

    fn shard_ids(file: &ShardsFile) -> Vec<&str> {
        file.shard_ids().map(ShardId::as_str).collect()
    }

    fn error_of(text: &str) -> String {
        ShardsFile::from_json("shards.json", text)
            .err()
            .map(|error| error.to_string())
            .unwrap_or_else(|| "accepted".to_string())
    }

    /// The reference's V1 shape (a bare array, string ports), sorted by id on load.
    const REFERENCE_ARRAY: &str = r#"[
      {"logicalShardId": "shard2", "host": "10.0.0.2", "user": "root", "port": "3307",
       "secretManagerUri": "projects/demo/secrets/shard2", "dbName": "db2"},
      {"logicalShardId": "shard1", "host": "10.0.0.1", "user": "root", "password": "pw1",
       "port": "3306", "dbName": "db1", "namespace": "", "connectionProperties": "useSSL=true",
       "streamId": null, "somethingNew": 5}
    ]"#;

    #[test]
    fn reads_the_reference_array_shape() {
        let file = ShardsFile::from_json("shards.json", REFERENCE_ARRAY).expect("valid file");
        assert_eq!(shard_ids(&file), ["shard1", "shard2"]);
        let first = &file.shards()[0];
        assert_eq!(
            (
                first.host.as_str(),
                first.port,
                first.user.as_str(),
                first.db_name.as_str()
            ),
            ("10.0.0.1", 3306, "root", "db1")
        );
        assert_eq!(first.password, PasswordSource::Inline(Password::new("pw1")));
        assert_eq!(first.connection_properties.as_deref(), Some("useSSL=true"));
        assert_eq!(first.stream_id, None);
        let second = &file.shards()[1];
        assert_eq!(second.port, 3307);
        assert!(matches!(
            &second.password,
            PasswordSource::SecretManager(secret)
                if secret.to_string() == "projects/demo/secrets/shard2/versions/latest"
        ));
        let found = file.shard(&ShardId::new("shard2").expect("id"));
        assert_eq!(found.map(|s| s.db_name.as_str()), Some("db2"));
        assert!(file.shard(&ShardId::new("shard3").expect("id")).is_none());
    }

    #[test]
    fn reads_the_shard_configs_shape_with_numeric_ports_and_default_port() {
        let text = r#"{"shardConfigs": [
          {"logicalShardId": "a", "host": "h", "port": 3310, "user": "u", "password": "",
           "dbName": "d"},
          {"logicalShardId": "b", "host": "h", "user": "u", "passwordEnv": "B_PASSWORD",
           "dbName": "d"},
          {"logicalShardId": "c", "host": "h", "user": "u", "passwordFile": "/run/c.pw",
           "dbName": "d", "password": "ignored"}
        ]}"#;
        let file = ShardsFile::from_json("s.json", text).expect("valid file");
        let shards = file.shards();
        assert_eq!((shards[0].port, shards[1].port), (3310, DEFAULT_PORT));
        assert_eq!(
            shards[0].password,
            PasswordSource::Inline(Password::new(""))
        );
        assert_eq!(
            shards[1].password,
            PasswordSource::Environment("B_PASSWORD".to_string())
        );
        assert_eq!(
            shards[2].password,
            PasswordSource::File(PathBuf::from("/run/c.pw"))
        );
    }

    #[test]
    fn whole_file_errors_name_the_file() {
        assert!(error_of("[").starts_with("shards file \"shards.json\" is not valid: EOF"));
        assert_eq!(
            error_of("[]"),
            "shards file \"shards.json\": the file lists no shards"
        );
        assert!(error_of("{\"shards\": []}").contains("has no \"shardConfigs\" field"));
        assert!(error_of("{\"shardConfigs\": {}}").contains("must be an array"));
        assert!(error_of("\"x\"").contains("expected an array of shards"));
        assert_eq!(
            error_of("[5]"),
            "shards file \"shards.json\": entry [0] is not an object"
        );
    }

    #[test]
    fn entry_errors_name_the_entry_and_the_field() {
        let entry = |fields: &str| format!("[{{{fields}}}]");
        let base = r#""host": "h", "user": "u", "password": "p", "dbName": "d""#;
        assert_eq!(
            error_of(&entry(base)),
            "shards file \"shards.json\", entry [0], field \"logicalShardId\": is missing"
        );
        assert_eq!(
            error_of(&entry(&format!(r#""logicalShardId": "a/b", {base}"#))),
            "shards file \"shards.json\", entry [0], field \"logicalShardId\": shard id \"a/b\" contains '/'"
        );
        for reserved in ["skip", "dlq", "..", ""] {
            let text = entry(&format!(r#""logicalShardId": "{reserved}", {base}"#));
            assert!(error_of(&text).contains("\"logicalShardId\""), "{reserved}");
        }
        assert_eq!(
            error_of(&entry(
                r#""logicalShardId": "ls1", "user": "u", "password": "p", "dbName": "d""#
            )),
            "shards file \"shards.json\", entry [0] (logicalShardId \"ls1\"), field \"host\": is missing"
        );
        assert!(
            error_of(&entry(&format!(
                r#""logicalShardId": "ls1", "port": "99999", {base}"#
            )))
            .ends_with("field \"port\": must be a port number from 1 to 65535")
        );
        assert!(
            error_of(&entry(&format!(
                r#""logicalShardId": "ls1", "port": 0, {base}"#
            )))
            .ends_with("field \"port\": must be a port number from 1 to 65535")
        );
        assert!(
            error_of(
                r#"{"shardConfigs": [{"logicalShardId": "ls1", "host": "h", "user": "u", "dbName": "d", "password": "p"},
                                     {"logicalShardId": "ls2", "host": "h", "user": "u", "dbName": ""}]}"#
            )
            .starts_with(
                "shards file \"shards.json\", entry shardConfigs[1] (logicalShardId \"ls2\"), field \"dbName\": is empty"
            )
        );
    }

    #[test]
    fn password_errors_never_quote_the_password() {
        let text = r#"[{"logicalShardId": "ls1", "host": "h", "user": "u", "dbName": "d",
                        "password": 123456789}]"#;
        let message = error_of(text);
        assert_eq!(
            message,
            "shards file \"shards.json\", entry [0] (logicalShardId \"ls1\"), field \"password\": must be a string, found a number"
        );
        assert!(!message.contains("123456789"));
        let missing =
            error_of(r#"[{"logicalShardId": "ls1", "host": "h", "user": "u", "dbName": "d"}]"#);
        assert!(missing.ends_with(
            "field \"password\": is missing: give password, secretManagerUri, passwordFile or passwordEnv"
        ));
        let both = error_of(
            r#"[{"logicalShardId": "ls1", "host": "h", "user": "u", "dbName": "d",
                 "secretManagerUri": "projects/p/secrets/s", "passwordEnv": "X"}]"#,
        );
        assert!(
            both.ends_with("not secretManagerUri and passwordEnv"),
            "{both}"
        );
        let bad_uri = error_of(
            r#"[{"logicalShardId": "ls1", "host": "h", "user": "u", "dbName": "d",
                 "secretManagerUri": "projects/p/secret/s"}]"#,
        );
        assert!(
            bad_uri
                .contains("field \"secretManagerUri\": \"projects/p/secret/s\" is not of the form")
        );
        let debug = format!(
            "{:?}",
            ShardsFile::from_json("s", REFERENCE_ARRAY).expect("valid file")
        );
        assert!(!debug.contains("pw1"), "{debug}");
    }

    #[test]
    fn duplicate_ids_name_both_entries() {
        let text = r#"[
          {"logicalShardId": "ls1", "host": "a", "user": "u", "password": "p", "dbName": "d"},
          {"logicalShardId": "ls2", "host": "b", "user": "u", "password": "p", "dbName": "d"},
          {"logicalShardId": "ls1", "host": "c", "user": "u", "password": "p", "dbName": "d"}
        ]"#;
        assert_eq!(
            error_of(text),
            "shards file \"shards.json\": logical shard id \"ls1\" appears in entries 0 and 2"
        );
    }

    #[test]
    fn load_names_a_missing_file() {
        let error =
            ShardsFile::load(Path::new("/nonexistent/shards.json")).expect_err("missing file");
        assert!(
            error
                .to_string()
                .starts_with("cannot read shards file \"/nonexistent/shards.json\":"),
            "{error}"
        );
        assert_eq!(error.class(), ErrorClass::Fatal);
    }

    #[tokio::test]
    async fn resolve_fetches_every_kind_of_password() {
        let dir = tempfile::tempdir().expect("temp dir");
        let secrets = SecretDirectory::new(dir.path().join("secrets"));
        let secret = SecretVersion::parse("projects/p/secrets/ls2/versions/4").expect("uri");
        let secret_path = secrets.path_of(&secret);
        std::fs::create_dir_all(secret_path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&secret_path, "from-secret-manager").expect("write");
        let password_file = dir.path().join("ls3.password");
        std::fs::write(&password_file, "from-file\n").expect("write");
        // Cargo and nextest set CARGO_PKG_NAME when they run a test binary.
        let text = serde_json::json!([
            {"logicalShardId": "ls1", "host": "h", "user": "u", "dbName": "d", "password": "inline"},
            {"logicalShardId": "ls2", "host": "h", "user": "u", "dbName": "d",
             "secretManagerUri": "projects/p/secrets/ls2/versions/4", "password": "ignored"},
            {"logicalShardId": "ls3", "host": "h", "user": "u", "dbName": "d",
             "passwordFile": password_file},
            {"logicalShardId": "ls4", "host": "h", "user": "u", "dbName": "d",
             "passwordEnv": "CARGO_PKG_NAME"},
        ])
        .to_string();
        let file = ShardsFile::from_json("shards.json", &text).expect("valid file");
        let shards = file.resolve(&secrets).await.expect("all passwords found");
        let passwords: Vec<&str> = shards.iter().map(|s| s.password.expose()).collect();
        assert_eq!(
            passwords,
            [
                "inline",
                "from-secret-manager",
                "from-file",
                env!("CARGO_PKG_NAME")
            ]
        );
        assert!(!format!("{shards:?}").contains("inline"));
    }

    #[tokio::test]
    async fn resolve_errors_name_the_shard_and_the_source() {
        let text = r#"[
          {"logicalShardId": "ls1", "host": "h", "user": "u", "dbName": "d",
           "secretManagerUri": "projects/p/secrets/s"}]"#;
        let file = ShardsFile::from_json("shards.json", text).expect("valid file");
        let error = file.resolve(&NoSecretManager).await.expect_err("no store");
        assert!(
            error.to_string().starts_with(
                "cannot get the password of shard \"ls1\" from Secret Manager secret projects/p/secrets/s/versions/latest: the shards file names"
            ),
            "{error}"
        );
        assert_eq!(error.class(), ErrorClass::Fatal);

        let text = r#"[
          {"logicalShardId": "ls1", "host": "h", "user": "u", "dbName": "d",
           "passwordEnv": "REVREPL_TEST_VARIABLE_THAT_IS_NEVER_SET"}]"#;
        let file = ShardsFile::from_json("shards.json", text).expect("valid file");
        let error = file.resolve(&NoSecretManager).await.expect_err("unset");
        assert_eq!(
            error.to_string(),
            "cannot get the password of shard \"ls1\" from environment variable \"REVREPL_TEST_VARIABLE_THAT_IS_NEVER_SET\": environment variable \"REVREPL_TEST_VARIABLE_THAT_IS_NEVER_SET\" is not set"
        );

        let text = r#"[
          {"logicalShardId": "ls1", "host": "h", "user": "u", "dbName": "d",
           "passwordFile": "/nonexistent/pw"}]"#;
        let file = ShardsFile::from_json("shards.json", text).expect("valid file");
        let error = file.resolve(&NoSecretManager).await.expect_err("missing");
        assert!(
            error.to_string().starts_with(
                "cannot get the password of shard \"ls1\" from password file \"/nonexistent/pw\": cannot read"
            ),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_missing_certificate_file_is_named_with_its_shard_before_connecting() {
        let text = r#"[
          {"logicalShardId": "ls1", "host": "h", "user": "u", "dbName": "d", "password": "",
           "connectionProperties": "sslCa=/nonexistent/ls1-ca.pem"}]"#;
        // Loading does not need the file (the reader connects to no shard) ...
        let file = ShardsFile::from_json("shards.json", text).expect("valid file");
        // ... connecting does.
        let error = file.resolve(&NoSecretManager).await.expect_err("missing");
        let text = error.to_string();
        assert!(
            text.contains("shards.json")
                && text.contains("\"ls1\"")
                && text.contains("connectionProperties")
                && text.contains("property sslCa: cannot read /nonexistent/ls1-ca.pem"),
            "{text}"
        );
        assert_eq!(error.class(), ErrorClass::Fatal);
    }
}
