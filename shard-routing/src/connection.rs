//! A shards-file entry's `connectionProperties`: the MySQL Connector/J properties users put
//! there (Java-properties text, `key=value` pairs), checked when the shards file is loaded and
//! applied to the connections of the writer, `revrepl init` and `revrepl validate`.
//!
//! | property | effect |
//! |---|---|
//! | `sslMode` (`DISABLED`, `PREFERRED`, `REQUIRED`, `VERIFY_CA`, `VERIFY_IDENTITY`) | TLS for this shard. `PREFERRED` keeps the writer's `tls` / `tls_ca_file` setting (revrepl never falls back to plain text silently); `REQUIRED` encrypts without verifying the certificate, as Connector/J does; `VERIFY_CA` verifies the chain but not the host name; `VERIFY_IDENTITY` verifies both. The CA is `writer.tls_ca_file` when set, else the system's roots |
//! | `useSSL`, `requireSSL`, `verifyServerCertificate` (`true`/`false`) | the older spelling: `useSSL=false` is `DISABLED`; `useSSL=true` or `requireSSL=true` is `REQUIRED`, or `VERIFY_IDENTITY` with `verifyServerCertificate=true` |
//! | `connectTimeout` (ms) | the deadline for opening a connection where revrepl has one (`init`, `validate`); 0 means none |
//! | `socketTimeout` (ms) | the session's `net_read_timeout` and `net_write_timeout`, in seconds rounded up |
//! | `tcpKeepAlive` (`true`/`false`) | TCP keep-alive on the connection |
//! | `sslCa` (also MariaDB Connector/J's `serverSslCert`; a PEM file path) | this shard's CA: its certificate is verified against it instead of `writer.tls_ca_file` or the system roots; enables TLS (`VERIFY_IDENTITY` unless `sslMode` says otherwise) |
//! | `sslCert`, `sslKey` (PEM file paths, both or neither) | this shard's client certificate and its private key (mutual TLS), instead of `writer.tls_client_cert_file` / `writer.tls_client_key_file`; enables TLS like `sslCa` |
//! | `sessionVariables` (`name=value,name=value`) | `SET SESSION name = value` on every new connection; values are numbers, words or quoted strings (the writer still sets `time_zone`, `sql_mode` and `foreign_key_checks` itself afterwards) |
//! | `rewriteBatchedStatements`, `autoReconnect`, `useUnicode`, `characterEncoding` (a UTF-8 name), `allowPublicKeyRetrieval`, `serverTimezone`, `connectionTimeZone` | accepted and without effect: revrepl always batches, reconnects, speaks `utf8mb4` and sets the session time zone itself |
//!
//! Any other property is refused with an error naming the shard and the property: an
//! unapplied setting would be a silent surprise. Certificate and key files are read when the
//! shards file is loaded ([`check_pem_file`]): one missing or unreadable is an error naming the
//! shard, the property and the path, not a failed TLS handshake later.
//!
//! Pairs are separated by new lines (Java properties), `;` or `&` (JDBC URL habits); `#` and
//! `!` start comments; `=` or `:` separates key and value.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mysql_async::{ClientIdentity, OptsBuilder, SslOpts};

/// TLS as `sslMode` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// No TLS.
    Disabled,
    /// The writer's configuration decides.
    Preferred,
    /// TLS without certificate verification.
    Required,
    /// TLS, certificate chain verified, host name not.
    VerifyCa,
    /// TLS, certificate chain and host name verified.
    VerifyIdentity,
}

/// The checked `connectionProperties` of one shard.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConnectionProperties {
    /// TLS for this shard; `None` leaves the writer's configuration.
    pub tls: Option<TlsMode>,
    /// Deadline for opening a connection.
    pub connect_timeout: Option<Duration>,
    /// TCP keep-alive.
    pub tcp_keepalive: Option<bool>,
    /// `SET SESSION` assignments, in order: (name, value as SQL).
    pub session_variables: Vec<(String, String)>,
    /// This shard's CA file (`sslCa`), PEM.
    pub ca_file: Option<PathBuf>,
    /// This shard's client certificate (`sslCert`) and private key (`sslKey`), PEM.
    pub client_identity: Option<(PathBuf, PathBuf)>,
}

/// Checks that `path` can be read and holds PEM of `kind` (`CERTIFICATE`, `PRIVATE KEY`);
/// `what` names the setting in the error (never the file's content).
pub fn check_pem_file(what: &str, path: &Path, kind: &str) -> Result<(), String> {
    let text =
        std::fs::read(path).map_err(|e| format!("{what}: cannot read {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&text);
    let found = text
        .lines()
        .any(|line| line.starts_with("-----BEGIN ") && line.contains(kind));
    if !found {
        return Err(format!(
            "{what}: {} holds no PEM {kind} (expected a -----BEGIN …{kind}----- block)",
            path.display()
        ));
    }
    Ok(())
}

/// A client identity (mutual TLS) from a certificate and a key file, both checked
/// ([`check_pem_file`]); `what` names the settings, e.g. `writer.tls_client_cert_file`.
pub fn client_identity(
    (cert_what, cert): (&str, &Path),
    (key_what, key): (&str, &Path),
) -> Result<ClientIdentity, String> {
    check_pem_file(cert_what, cert, "CERTIFICATE")?;
    check_pem_file(key_what, key, "PRIVATE KEY")?;
    Ok(ClientIdentity::new(
        cert.to_path_buf().into(),
        key.to_path_buf().into(),
    ))
}

impl ConnectionProperties {
    /// Parses and checks `text`; the error says which property is wrong and why (never
    /// quoting a value, which might be secret).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut properties = Self::default();
        let mut use_ssl: Option<bool> = None;
        let mut verify: Option<bool> = None;
        let mut ssl_mode: Option<TlsMode> = None;
        let (mut cert_file, mut key_file): (Option<PathBuf>, Option<PathBuf>) = (None, None);
        for pair in text
            .split(['\n', ';', '&'])
            .map(str::trim)
            .filter(|p| !p.is_empty() && !p.starts_with('#') && !p.starts_with('!'))
        {
            let (key, value) = pair
                .split_once(['=', ':'])
                .map(|(k, v)| (k.trim(), v.trim()))
                .ok_or_else(|| format!("{pair:?} is not key=value"))?;
            let flag = |value: &str| match value.to_ascii_lowercase().as_str() {
                "true" | "yes" | "1" => Ok(true),
                "false" | "no" | "0" => Ok(false),
                _ => Err(format!("property {key}: expected true or false")),
            };
            let millis = |value: &str| {
                value
                    .parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|_| format!("property {key}: expected milliseconds"))
            };
            match key {
                "sslMode" => {
                    ssl_mode = Some(match value.to_ascii_uppercase().as_str() {
                        "DISABLED" => TlsMode::Disabled,
                        "PREFERRED" => TlsMode::Preferred,
                        "REQUIRED" => TlsMode::Required,
                        "VERIFY_CA" => TlsMode::VerifyCa,
                        "VERIFY_IDENTITY" => TlsMode::VerifyIdentity,
                        _ => {
                            return Err(format!(
                                "property sslMode: expected DISABLED, PREFERRED, REQUIRED, \
                                 VERIFY_CA or VERIFY_IDENTITY, found {value:?}"
                            ));
                        }
                    });
                }
                "useSSL" | "requireSSL" => {
                    let on = flag(value)?;
                    use_ssl = Some(use_ssl.unwrap_or(false) || on);
                }
                "verifyServerCertificate" => verify = Some(flag(value)?),
                "connectTimeout" => {
                    let timeout = millis(value)?;
                    properties.connect_timeout = (!timeout.is_zero()).then_some(timeout);
                }
                "socketTimeout" => {
                    let timeout = millis(value)?;
                    if !timeout.is_zero() {
                        let seconds = timeout.as_millis().div_ceil(1000).to_string();
                        for name in ["net_read_timeout", "net_write_timeout"] {
                            properties
                                .session_variables
                                .push((name.to_string(), seconds.clone()));
                        }
                    }
                }
                "tcpKeepAlive" => properties.tcp_keepalive = Some(flag(value)?),
                "sslCa" | "serverSslCert" => {
                    properties.ca_file = Some(path_value(key, value)?);
                }
                "sslCert" => cert_file = Some(path_value(key, value)?),
                "sslKey" => key_file = Some(path_value(key, value)?),
                "sessionVariables" => {
                    for assignment in split_assignments(value) {
                        properties
                            .session_variables
                            .push(session_variable(assignment)?);
                    }
                }
                "characterEncoding" => {
                    let name = value.to_ascii_lowercase().replace(['-', '_'], "");
                    if !matches!(name.as_str(), "utf8" | "utf8mb4" | "utf8mb3") {
                        return Err(format!(
                            "property characterEncoding: revrepl always speaks utf8mb4, so only \
                             a UTF-8 encoding is accepted, found {value:?}"
                        ));
                    }
                }
                "rewriteBatchedStatements"
                | "autoReconnect"
                | "useUnicode"
                | "allowPublicKeyRetrieval"
                | "serverTimezone"
                | "connectionTimeZone" => {}
                other => {
                    return Err(format!(
                        "property {other:?} is not supported by revrepl (supported: sslMode, \
                         useSSL, requireSSL, verifyServerCertificate, connectTimeout, \
                         socketTimeout, tcpKeepAlive, sessionVariables, sslCa, \
                         serverSslCert, sslCert, sslKey; accepted without \
                         effect: rewriteBatchedStatements, autoReconnect, useUnicode, \
                         characterEncoding, allowPublicKeyRetrieval, serverTimezone, \
                         connectionTimeZone)"
                    ));
                }
            }
        }
        properties.tls = match (ssl_mode, use_ssl) {
            (Some(mode), _) => Some(mode),
            (None, Some(false)) => Some(TlsMode::Disabled),
            (None, Some(true)) if verify == Some(true) => Some(TlsMode::VerifyIdentity),
            (None, Some(true)) => Some(TlsMode::Required),
            (None, None) => None,
        };
        properties.client_identity = match (cert_file, key_file) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(
                    "property sslCert needs sslKey (the client certificate's private \
                            key)"
                        .into(),
                );
            }
            (None, Some(_)) => {
                return Err("property sslKey needs sslCert (the client certificate)".into());
            }
        };
        let wants_tls = properties.ca_file.is_some() || properties.client_identity.is_some();
        if wants_tls && properties.tls == Some(TlsMode::Disabled) {
            return Err(
                "properties sslCa, sslCert and sslKey need TLS, but sslMode=DISABLED or \
                 useSSL=false turns it off"
                    .into(),
            );
        }
        Ok(properties)
    }

    /// Checks that the certificate and key files the properties name can be read and hold
    /// PEM; the error names the property and the path.
    pub fn check_files(&self) -> Result<(), String> {
        if let Some(ca) = &self.ca_file {
            check_pem_file("property sslCa", ca, "CERTIFICATE")?;
        }
        if let Some((cert, key)) = &self.client_identity {
            client_identity(("property sslCert", cert), ("property sslKey", key))?;
        }
        Ok(())
    }

    /// Applies the properties to `builder`; `configured` is the TLS the writer's configuration
    /// asks for (`writer.tls`, `writer.tls_ca_file`), whose CA file verification uses.
    pub fn apply(&self, builder: OptsBuilder, configured: Option<SslOpts>) -> OptsBuilder {
        let base = || configured.clone().unwrap_or_default();
        let own_tls = self.ca_file.is_some() || self.client_identity.is_some();
        let tls = match self.tls {
            None | Some(TlsMode::Preferred) if own_tls => Some(base()),
            None | Some(TlsMode::Preferred) => configured.clone(),
            Some(TlsMode::Disabled) => None,
            Some(TlsMode::Required) => Some(base().with_danger_accept_invalid_certs(true)),
            Some(TlsMode::VerifyCa) => Some(base().with_danger_skip_domain_validation(true)),
            Some(TlsMode::VerifyIdentity) => Some(base()),
        };
        // This shard's own CA and client certificate replace the configured ones.
        let tls = tls.map(|mut opts| {
            if let Some(ca) = &self.ca_file {
                opts = opts.with_root_certs(vec![ca.clone().into()]);
            }
            if let Some((cert, key)) = &self.client_identity {
                opts = opts.with_client_identity(Some(ClientIdentity::new(
                    cert.clone().into(),
                    key.clone().into(),
                )));
            }
            opts
        });
        let mut builder = builder.ssl_opts(tls);
        if let Some(keepalive) = self.tcp_keepalive {
            builder = builder.tcp_keepalive(keepalive.then_some(Duration::from_secs(60)));
        }
        if !self.session_variables.is_empty() {
            let assignments: Vec<String> = self
                .session_variables
                .iter()
                .map(|(name, value)| format!("{name} = {value}"))
                .collect();
            builder = builder.init(vec![format!("SET SESSION {}", assignments.join(", "))]);
        }
        builder
    }
}

/// A file path property: not empty.
fn path_value(key: &str, value: &str) -> Result<PathBuf, String> {
    if value.is_empty() {
        return Err(format!("property {key}: expected a file path"));
    }
    Ok(PathBuf::from(value))
}

/// `a=1,b='x,y'` → `a=1`, `b='x,y'` (commas inside quotes kept).
fn split_assignments(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut quote: Option<char> = None;
    let mut start = 0;
    for (index, c) in text.char_indices() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (None, '\'' | '"') => quote = Some(c),
            (None, ',') => {
                parts.push(text[start..index].trim());
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(text[start..].trim());
    parts.into_iter().filter(|p| !p.is_empty()).collect()
}

/// One `name=value` of `sessionVariables`, checked so that it can only be an assignment.
fn session_variable(assignment: &str) -> Result<(String, String), String> {
    let (name, value) = assignment
        .split_once('=')
        .map(|(n, v)| (n.trim(), v.trim()))
        .ok_or_else(|| format!("property sessionVariables: {assignment:?} is not name=value"))?;
    let name = name
        .strip_prefix("@@session.")
        .or_else(|| name.strip_prefix("@@"))
        .unwrap_or(name);
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "property sessionVariables: {name:?} is not a variable name"
        ));
    }
    let quoted = |q: char| {
        value.len() >= 2
            && value.starts_with(q)
            && value.ends_with(q)
            && !value[1..value.len() - 1].contains(q)
            && !value.contains('\\')
    };
    let plain = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '+' | ':'));
    if !(plain || quoted('\'') || quoted('"')) {
        return Err(format!(
            "property sessionVariables: the value of {name} must be a number, a word or a \
             quoted string without quotes or backslashes inside"
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_usual_properties() {
        let properties = ConnectionProperties::parse(
            "useSSL=true\nverifyServerCertificate=false\nconnectTimeout=5000\n\
             socketTimeout=1500\nsessionVariables=sql_mode='STRICT_ALL_TABLES,NO_ZERO_DATE',\
             innodb_lock_wait_timeout=20\n# comment\nrewriteBatchedStatements=true",
        )
        .expect("valid");
        assert_eq!(properties.tls, Some(TlsMode::Required));
        assert_eq!(properties.connect_timeout, Some(Duration::from_secs(5)));
        assert_eq!(
            properties.session_variables,
            [
                ("net_read_timeout".to_string(), "2".to_string()),
                ("net_write_timeout".to_string(), "2".to_string()),
                (
                    "sql_mode".to_string(),
                    "'STRICT_ALL_TABLES,NO_ZERO_DATE'".to_string()
                ),
                ("innodb_lock_wait_timeout".to_string(), "20".to_string()),
            ]
        );
        let jdbc =
            ConnectionProperties::parse("sslMode=VERIFY_CA&tcpKeepAlive=false").expect("valid");
        assert_eq!(jdbc.tls, Some(TlsMode::VerifyCa));
        assert_eq!(jdbc.tcp_keepalive, Some(false));
        assert_eq!(
            ConnectionProperties::parse("useSSL=false").map(|p| p.tls),
            Ok(Some(TlsMode::Disabled))
        );
        assert_eq!(
            ConnectionProperties::parse("").map(|p| p.tls),
            Ok(None),
            "no properties: the writer's configuration"
        );
    }

    #[test]
    fn reads_a_shards_own_ca_and_client_certificate() {
        let properties = ConnectionProperties::parse(
            "sslCa=/etc/ca.pem\nsslCert=/etc/client.pem\nsslKey=/etc/client.key",
        )
        .expect("valid");
        assert_eq!(properties.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(
            properties.client_identity,
            Some((
                PathBuf::from("/etc/client.pem"),
                PathBuf::from("/etc/client.key")
            ))
        );
        assert_eq!(properties.tls, None, "TLS comes with them when applied");
        let mariadb = ConnectionProperties::parse("serverSslCert=/etc/ca.pem;sslMode=VERIFY_CA")
            .expect("valid");
        assert_eq!(mariadb.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(mariadb.tls, Some(TlsMode::VerifyCa));
        for (bad, says) in [
            ("sslCert=/c.pem", "needs sslKey"),
            ("sslKey=/c.key", "needs sslCert"),
            ("sslCa=", "expected a file path"),
            ("sslCa=/ca.pem\nuseSSL=false", "need TLS"),
        ] {
            let error = ConnectionProperties::parse(bad).expect_err(bad);
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn unreadable_or_wrong_certificate_files_are_named() {
        let dir = std::env::temp_dir().join(format!("revrepl-conn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let ca = dir.join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let not_pem = dir.join("key.txt");
        std::fs::write(&not_pem, "hello").expect("write");
        let missing = dir.join("missing.pem");
        let properties = |text: String| ConnectionProperties::parse(&text).expect("valid");
        assert_eq!(
            properties(format!("sslCa={}", ca.display())).check_files(),
            Ok(())
        );
        let error = properties(format!("sslCa={}", missing.display()))
            .check_files()
            .expect_err("missing");
        assert!(
            error.contains("property sslCa") && error.contains(&missing.display().to_string()),
            "{error}"
        );
        let error = properties(format!(
            "sslCert={}\nsslKey={}",
            ca.display(),
            not_pem.display()
        ))
        .check_files()
        .expect_err("not a key");
        assert!(
            error.contains("property sslKey")
                && error.contains("no PEM PRIVATE KEY")
                && error.contains(&not_pem.display().to_string()),
            "{error}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn refuses_unknown_properties_and_unsafe_values() {
        let error = ConnectionProperties::parse("useSSL=true\nfancyOption=1").expect_err("unknown");
        assert!(
            error.starts_with("property \"fancyOption\" is not supported"),
            "{error}"
        );
        for bad in [
            "sslMode=SOMETIMES",
            "useSSL=maybe",
            "connectTimeout=5s",
            "sessionVariables=a=1;DROP TABLE x",
            "sessionVariables=sql_mode=x' OR '1",
            "sessionVariables=wait_timeout",
            "characterEncoding=latin1",
        ] {
            assert!(ConnectionProperties::parse(bad).is_err(), "{bad} accepted");
        }
    }
}
