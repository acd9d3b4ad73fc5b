//! The writer's errors and their classes (DESIGN §6.9).
//!
//! Transient errors (connection lost or reset, server shutting down, deadlock, lock wait
//! timeout, too many connections, read-only during a failover) are retried from the
//! checkpoint; definite errors (conversion, constraint, unknown table or column, data too long,
//! out of range) stop the shard; fatal errors (configuration, permissions, TLS certificates the
//! writer does not trust) stop the writer.
//!
//! Errors never carry row values other than primary keys: MySQL's own messages quote values
//! (`Duplicate entry '…'`, `Incorrect string value: '…'`), so the quoted parts of server
//! messages are redacted, keeping only identifiers.

use std::fmt;

use revrepl_record::{Classify, ErrorClass, ShardId};

use crate::convert::ConversionError;

/// Everything that can go wrong while applying changes to one shard.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriterError {
    /// The mapped MySQL table does not exist in the shard.
    #[error(
        "shard {shard}: Spanner table {spanner_table:?} maps to MySQL table {source_table:?}, which does not exist in database {database:?}"
    )]
    MissingTable {
        /// The shard.
        shard: ShardId,
        /// The Spanner table of the record.
        spanner_table: String,
        /// The MySQL table it maps to.
        source_table: String,
        /// The shard's database.
        database: String,
    },
    /// The schema mapping says the table exists only in Spanner.
    #[error(
        "shard {shard}: Spanner table {spanner_table:?} exists only in Spanner according to the schema mapping, so its changes cannot be applied"
    )]
    SpannerOnlyTable {
        /// The shard.
        shard: ShardId,
        /// The Spanner table of the record.
        spanner_table: String,
    },
    /// A column of the record has no MySQL column.
    #[error(
        "shard {shard}, table {table}: column {column:?} of the change record does not exist in MySQL (map it, or mark it as existing only in Spanner)"
    )]
    MissingColumn {
        /// The shard.
        shard: ShardId,
        /// The MySQL table.
        table: String,
        /// The Spanner column name (or the mapped MySQL name).
        column: String,
    },
    /// The MySQL table has no primary key to apply changes by.
    #[error(
        "shard {shard}, table {table}: the MySQL table has no primary key, so changes cannot be applied by key"
    )]
    NoPrimaryKey {
        /// The shard.
        shard: ShardId,
        /// The MySQL table.
        table: String,
    },
    /// The record lacks a value for a MySQL primary-key column.
    #[error(
        "shard {shard}, table {table}, key {key}: the record has no value for primary-key column {column:?} (in keys, new values or old values)"
    )]
    MissingKeyValue {
        /// The shard.
        shard: ShardId,
        /// The MySQL table.
        table: String,
        /// The MySQL key column.
        column: String,
        /// The record's keys, as the record carries them.
        key: String,
    },
    /// A value does not fit its column.
    #[error("{0}")]
    Conversion(Box<ConversionFailure>),
    /// The transformation plugin failed on a record, or its row changes cannot be applied.
    #[error("{0}")]
    Transformation(Box<TransformationFailure>),
    /// A record that cannot be read (keys or values are not JSON objects, ...).
    #[error("shard {shard}, table {table}, at {position}: malformed change record: {reason}")]
    MalformedRecord {
        /// The shard.
        shard: ShardId,
        /// The Spanner table.
        table: String,
        /// The record's commit position.
        position: String,
        /// What is wrong.
        reason: String,
    },
    /// A batch that breaks the applier's contract (records of another shard, not in commit
    /// order, outside the window).
    #[error("shard {shard}: invalid batch: {reason}")]
    InvalidBatch {
        /// The shard.
        shard: ShardId,
        /// What is wrong.
        reason: String,
    },
    /// MySQL or the connection to it failed.
    #[error("shard {shard}: {operation} failed{context}: {failure}")]
    Database {
        /// The shard.
        shard: ShardId,
        /// What the writer was doing: `connecting`, `applying a statement`, `committing`...
        operation: &'static str,
        /// Where: table, statement and key, when known (starts with `" ("` or is empty).
        context: String,
        /// The error, with quoted values redacted.
        failure: MySqlFailure,
        /// Its class.
        class: ErrorClass,
    },
    /// The checkpoint row cannot be read.
    #[error("shard {shard}: the checkpoint in `revrepl_checkpoint` is unusable: {reason}")]
    Checkpoint {
        /// The shard.
        shard: ShardId,
        /// What is wrong.
        reason: String,
    },
    /// The applier's configuration is unusable.
    #[error("shard {shard}: invalid writer configuration: {reason}")]
    Configuration {
        /// The shard.
        shard: ShardId,
        /// What is wrong.
        reason: String,
    },
    /// The writer's configuration is unusable (before any shard starts).
    #[error("configuration: {key}: {reason}")]
    Config {
        /// The configuration key.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// The metadata store failed.
    #[error(transparent)]
    Metadata(#[from] revrepl_metadata::MetadataError),
    /// The buffer failed.
    #[error(transparent)]
    Buffer(#[from] revrepl_record::BufferError),
    /// The shards or session file is unusable.
    #[error(transparent)]
    Routing(#[from] revrepl_shard_routing::RoutingError),
    /// A window file the metadata store lists does not exist.
    #[error(
        "shard {shard}: window file {path:?} is missing from buffer {location}, although the \
         reader recorded data for that window"
    )]
    MissingFile {
        /// The shard.
        shard: ShardId,
        /// The buffer.
        location: String,
        /// The object path.
        path: String,
    },
    /// A window file cannot be read.
    #[error("shard {shard}: window file {path:?} is malformed: {source}")]
    MalformedFile {
        /// The shard.
        shard: ShardId,
        /// The object path.
        path: String,
        /// The line and reason.
        source: revrepl_record::DecodeError,
    },
    /// The run is not recorded, and `--until` lies before anything it could apply: waiting for
    /// the reader is pointless.
    #[error(
        "run {run_id:?} is not recorded in the metadata store, and --until {until} {reason}: \
         there is nothing to wait for (check run_id and --until, or start the reader first)"
    )]
    NothingToWaitFor {
        /// The run.
        run_id: String,
        /// The `--until` given.
        until: String,
        /// Why nothing could be applied up to `until`.
        reason: String,
    },
    /// A dead letter in the buffer that cannot be read.
    #[error("dead letter {path:?} in buffer {location} is malformed: {reason}")]
    MalformedDeadLetter {
        /// The buffer.
        location: String,
        /// The object path.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A line of a shard's window file does not belong there.
    #[error("shard {shard}: window file {path:?}: {reason}")]
    MisplacedRecord {
        /// The shard.
        shard: ShardId,
        /// The object path.
        path: String,
        /// What is wrong.
        reason: String,
    },
}

impl Classify for WriterError {
    fn class(&self) -> ErrorClass {
        match self {
            Self::Database { class, .. } => *class,
            Self::Configuration { .. } | Self::Config { .. } | Self::NothingToWaitFor { .. } => {
                ErrorClass::Fatal
            }
            Self::Metadata(e) => e.class(),
            Self::Buffer(e) => e.class(),
            Self::Routing(e) => e.class(),
            Self::MissingFile { .. }
            | Self::MalformedFile { .. }
            | Self::MisplacedRecord { .. }
            | Self::MalformedDeadLetter { .. } => ErrorClass::Definite,
            Self::MissingTable { .. }
            | Self::SpannerOnlyTable { .. }
            | Self::MissingColumn { .. }
            | Self::NoPrimaryKey { .. }
            | Self::MissingKeyValue { .. }
            | Self::Conversion(_)
            | Self::Transformation(_)
            | Self::MalformedRecord { .. }
            | Self::InvalidBatch { .. }
            | Self::Checkpoint { .. } => ErrorClass::Definite,
        }
    }
}

impl WriterError {
    /// Wraps a MySQL driver error met during `operation`, classifying it and redacting the
    /// values MySQL quotes in its messages. `context` is empty or starts with `" ("`.
    pub fn database(
        shard: &ShardId,
        operation: &'static str,
        context: String,
        error: &mysql_async::Error,
    ) -> Self {
        Self::Database {
            shard: shard.clone(),
            operation,
            context,
            failure: MySqlFailure::from(error),
            class: classify(error),
        }
    }

    /// Whether the error is caused by the content of the records being applied, so that the
    /// dead-letter policy may set their transaction aside and go on: a value that does not
    /// convert, a record without its key, or a constraint or data error of MySQL
    /// ([`RECORD_FAULT_CODES`]). Everything else — the checkpoint, a table or column missing
    /// (after DDL), files, the metadata store, transient server errors — stops the shard or
    /// is retried, never dead-lettered (DESIGN §6.9).
    pub fn is_record_fault(&self) -> bool {
        match self {
            Self::Conversion(_) | Self::MissingKeyValue { .. } | Self::MalformedRecord { .. } => {
                true
            }
            Self::Transformation(failure) => failure.problem.is_record_fault(),
            Self::Database {
                failure,
                class: ErrorClass::Definite,
                ..
            } => failure
                .code
                .is_some_and(|code| RECORD_FAULT_CODES.contains(&code)),
            _ => false,
        }
    }

    /// Whether this is about the process's lease of the shard (another writer holds it, or
    /// this one lost it): such a failure is not the shard's, so it is not recorded as `ERROR`
    /// (the other writer owns the shard's progress).
    pub fn is_lease(&self) -> bool {
        matches!(
            self,
            Self::Metadata(
                revrepl_metadata::MetadataError::LeaseHeld { .. }
                    | revrepl_metadata::MetadataError::LeaseLost { .. }
            )
        )
    }

    /// What caused the error, without keys or values, so that dead letters failing for the
    /// same reason group together (`revrepl dlq list`): e.g. `MySQL error 4025 (23000):
    /// CONSTRAINT … failed for …` or `value does not fit column users.name (varchar(5))`.
    pub fn cause(&self) -> String {
        match self {
            Self::Conversion(failure) => format!(
                "value does not fit column {}.{} ({})",
                failure.table, failure.column, failure.column_type
            ),
            Self::MissingKeyValue { table, column, .. } => {
                format!("no value for primary-key column {table}.{column}")
            }
            Self::MalformedRecord { table, .. } => format!("malformed record of table {table}"),
            Self::Database { failure, .. } => failure.to_string(),
            other => other.to_string(),
        }
    }

    /// The MySQL error code, for database errors that have one.
    pub fn mysql_code(&self) -> Option<u16> {
        match self {
            Self::Database { failure, .. } => failure.code,
            _ => None,
        }
    }
}

/// A transformation that failed, with the plugin and the record it failed on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "shard {shard}: transformation plugin {plugin:?} {problem} (record of Spanner table {table:?}, key {key}, at {position}); nothing of its transaction was applied"
)]
pub struct TransformationFailure {
    /// The shard.
    pub shard: ShardId,
    /// The plugin (its path).
    pub plugin: String,
    /// The record's Spanner table.
    pub table: String,
    /// The record's keys, as the record carries them.
    pub key: String,
    /// The record's commit position.
    pub position: String,
    /// What went wrong.
    pub problem: crate::transformation::TransformationProblem,
}

/// A value that does not fit its column, with where it was met.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shard {shard}, table {table}, column {column} ({column_type}), key {key}: {error}")]
pub struct ConversionFailure {
    /// The shard.
    pub shard: ShardId,
    /// The MySQL table.
    pub table: String,
    /// The MySQL column.
    pub column: String,
    /// The column's type, e.g. `varchar(20)`.
    pub column_type: String,
    /// The record's keys, as the record carries them.
    pub key: String,
    /// The value's type and why it does not fit (never the value).
    pub error: ConversionError,
}

/// A MySQL or connection error, safe to log: quoted values are redacted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MySqlFailure {
    /// The server's error number, for server errors.
    pub code: Option<u16>,
    /// The SQLSTATE, for server errors.
    pub sqlstate: Option<String>,
    /// The message, with quoted values replaced by `'?'`.
    pub message: String,
}

impl fmt::Display for MySqlFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, &self.sqlstate) {
            (Some(code), Some(state)) => {
                write!(f, "MySQL error {code} ({state}): {}", self.message)
            }
            (Some(code), None) => write!(f, "MySQL error {code}: {}", self.message),
            _ => f.write_str(&self.message),
        }
    }
}

impl From<&mysql_async::Error> for MySqlFailure {
    fn from(error: &mysql_async::Error) -> Self {
        match error {
            mysql_async::Error::Server(server) => Self {
                code: Some(server.code),
                sqlstate: Some(server.state.clone()),
                message: redact_values(&server.message),
            },
            mysql_async::Error::Driver(driver) => Self {
                code: None,
                sqlstate: None,
                message: format!("driver error: {driver}"),
            },
            mysql_async::Error::Io(mysql_async::IoError::Io(io)) if tls_error(io).is_some() => {
                let hint = match tls_error(io) {
                    Some(rustls::Error::InvalidCertificate(_)) => {
                        " (the shard's certificate is not trusted: check writer.tls_ca_file, the \
                         server's certificate chain and that it names the host connected to)"
                    }
                    _ => "",
                };
                Self {
                    code: None,
                    sqlstate: None,
                    message: format!("TLS error: {io}{hint}"),
                }
            }
            mysql_async::Error::Io(io) => Self {
                code: None,
                sqlstate: None,
                message: format!("connection error: {io}"),
            },
            mysql_async::Error::Url(url) => Self {
                code: None,
                sqlstate: None,
                message: format!("connection options: {url}"),
            },
            mysql_async::Error::Other(other) => Self {
                code: None,
                sqlstate: None,
                message: format!("error: {other}"),
            },
        }
    }
}

/// Server error numbers worth retrying: the same statement may succeed later.
const TRANSIENT_CODES: &[u16] = &[
    1020, // record changed since last read
    1021, // disk full
    1037, // out of memory
    1038, // out of sort memory
    1040, // too many connections
    1041, // out of memory
    1047, // Galera: WSREP has not yet prepared the node for application use
    1053, // server shutdown in progress
    1077, // normal shutdown
    1078, // got signal
    1079, // shutdown complete
    1080, // forcing close of thread
    1114, // table is full
    1152, // aborted connection
    1154, // read error from connection pipe
    1155, // fcntl error
    1156, // packets out of order
    1157, // couldn't uncompress packet
    1158, // error reading packets
    1159, // timeout reading packets
    1160, // error writing packets
    1161, // timeout writing packets
    1180, // got error during commit
    1181, // got error during rollback
    1184, // aborted new connection
    1203, // too many user connections
    1205, // lock wait timeout
    1213, // deadlock
    1226, // user resource limit exceeded
    1290, // --read-only (failover)
    1317, // query interrupted
    1412, // table definition changed (concurrent DDL); try again
    1614, // transaction branch rolled back: deadlock
    1615, // prepared statement needs to be re-prepared
    1637, // too many active concurrent transactions
    1792, // read-only transaction
    1836, // read-only mode
    1927, // connection killed (MariaDB)
    1969, // statement timeout (MariaDB)
    2002, // can't connect (socket)
    2003, // can't connect (TCP)
    2006, // server has gone away
    2013, // lost connection during query
    2055, // lost connection (system error)
    3024, // max execution time exceeded
    3100, // group replication: error in a replication hook (e.g. before_commit)
    3101, // group replication: the plugin rolled the transaction back during commit
    4031, // disconnected for inactivity
];

/// Server error numbers caused by the values of the rows being written (constraints and data
/// errors): the only MySQL errors the dead-letter policy sets aside
/// ([`WriterError::is_record_fault`]).
pub const RECORD_FAULT_CODES: &[u16] = &[
    1048, // column cannot be null
    1062, // duplicate entry (unique key)
    1216, // cannot add a child row: foreign key (old servers)
    1217, // cannot delete a parent row: foreign key (old servers)
    1264, // out of range value
    1265, // data truncated
    1292, // incorrect date/time value
    1366, // incorrect string or integer value
    1367, // illegal value during parsing
    1406, // data too long
    1451, // cannot delete or update a parent row: foreign key
    1452, // cannot add or update a child row: foreign key
    1586, // duplicate entry for key
    1690, // value out of range
    3140, // invalid JSON text
    3819, // check constraint violated (MySQL)
    4025, // check constraint failed (MariaDB)
];

/// Server error numbers that mean the writer is misconfigured for this shard.
const FATAL_CODES: &[u16] = &[
    1044, // access denied to database
    1045, // access denied for user
    1049, // unknown database
    1142, // command denied
    1143, // column access denied
    1227, // access denied (privilege)
    1251, // client does not support authentication protocol
    1698, // access denied (unix socket auth)
];

/// The class of a MySQL driver error.
pub fn classify(error: &mysql_async::Error) -> ErrorClass {
    use mysql_async::{DriverError, Error, IoError};
    match error {
        Error::Server(server) => classify_code(server.code),
        Error::Io(IoError::Io(io)) => tls_error(io).map_or(ErrorClass::Transient, classify_tls),
        Error::Io(_) => ErrorClass::Fatal, // TLS: certificates or configuration.
        Error::Url(_) => ErrorClass::Fatal,
        Error::Other(_) => ErrorClass::Definite,
        Error::Driver(driver) => match driver {
            DriverError::ConnectionClosed
            | DriverError::PacketOutOfOrder
            | DriverError::PoolDisconnected
            | DriverError::UnexpectedPacket { .. }
            | DriverError::BadCompressedPacketHeader => ErrorClass::Transient,
            DriverError::UnknownAuthPlugin { .. }
            | DriverError::MysqlOldPasswordDisabled
            | DriverError::CleartextPluginDisabled
            | DriverError::NoClientSslFlagFromServer
            | DriverError::NoKeyFound
            | DriverError::CantParseServerVersion { .. } => ErrorClass::Fatal,
            _ => ErrorClass::Definite,
        },
    }
}

/// The TLS error inside an I/O error: the TLS handshake and TLS records fail with I/O errors
/// wrapping a `rustls::Error`.
fn tls_error(io: &std::io::Error) -> Option<&rustls::Error> {
    io.get_ref()?.downcast_ref::<rustls::Error>()
}

/// The class of a TLS error: fatal when the certificates or TLS settings of the writer and the
/// server do not fit (an untrusted or invalid certificate, no common protocol version or
/// cipher suite, the server's alert), which no retry can fix; transient when a connection's
/// records are damaged (the connection is dropped and a new one made).
fn classify_tls(error: &rustls::Error) -> ErrorClass {
    use rustls::Error as Tls;
    match error {
        Tls::InvalidCertificate(_)
        | Tls::NoCertificatesPresented
        | Tls::UnsupportedNameType
        | Tls::PeerIncompatible(_)
        | Tls::InvalidCertRevocationList(_)
        | Tls::AlertReceived(_)
        | Tls::InconsistentKeys(_)
        | Tls::NoApplicationProtocol
        | Tls::General(_)
        | Tls::Other(_) => ErrorClass::Fatal,
        _ => ErrorClass::Transient,
    }
}

/// The class of a MySQL server error number: transient for connection, shutdown, locking,
/// capacity and read-only errors; fatal for access and unknown-database errors; definite for
/// everything else (data and constraint errors: 1048, 1054, 1062, 1146, 1264, 1292, 1366,
/// 1406, 1451, 1452, ...).
pub fn classify_code(code: u16) -> ErrorClass {
    if TRANSIENT_CODES.contains(&code) {
        ErrorClass::Transient
    } else if FATAL_CODES.contains(&code) {
        ErrorClass::Fatal
    } else {
        ErrorClass::Definite
    }
}

/// Replaces single-quoted parts of a server message by `'?'`, except identifiers (a quoted
/// part right after `column`, `key`, `table`, `database`, `constraint`, `index` or `user`).
/// Backtick-quoted parts are identifiers and stay.
pub fn redact_values(message: &str) -> String {
    const IDENTIFIER_WORDS: &[&str] = &[
        "column",
        "key",
        "table",
        "database",
        "constraint",
        "index",
        "user",
    ];
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(open) = rest.find('\'') {
        let (before, from_quote) = rest.split_at(open);
        out.push_str(before);
        let after = &from_quote[1..];
        // A quoted part ends at the next quote not doubled.
        let mut end = None;
        let mut chars = after.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '\'' {
                if chars.peek().is_some_and(|(_, next)| *next == '\'') {
                    chars.next();
                } else {
                    end = Some(i);
                    break;
                }
            }
        }
        let Some(end) = end else {
            out.push_str("'?");
            return out;
        };
        let quoted = &after[..end];
        let previous_word = out
            .trim_end()
            .rsplit(|c: char| c.is_whitespace())
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if IDENTIFIER_WORDS.contains(&previous_word.as_str()) {
            out.push('\'');
            out.push_str(quoted);
            out.push('\'');
        } else {
            out.push_str("'?'");
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The row number (1-based) and column a MySQL data error names, e.g. `Data too long for column
/// 'c' at row 3` or `... for column `db`.`t`.`c` at row 3`.
pub(crate) fn row_and_column(message: &str) -> (Option<usize>, Option<String>) {
    let row = message.rfind("at row ").and_then(|at| {
        message[at + 7..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .ok()
    });
    let column = message.find("column ").and_then(|at| {
        let rest = &message[at + 7..];
        let quote = rest.chars().next()?;
        if quote == '\'' {
            rest[1..].split('\'').next().map(str::to_string)
        } else if quote == '`' {
            let end = rest.find(" at row").unwrap_or(rest.len());
            rest[..end]
                .rsplit('.')
                .next()
                .map(|part| part.trim_matches('`').to_string())
        } else {
            None
        }
    });
    (row, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_values_and_keeps_identifiers() {
        assert_eq!(
            redact_values("Duplicate entry 'secret-1' for key 'PRIMARY'"),
            "Duplicate entry '?' for key 'PRIMARY'"
        );
        assert_eq!(
            redact_values("Data too long for column 'name' at row 3"),
            "Data too long for column 'name' at row 3"
        );
        assert_eq!(
            redact_values(
                "Incorrect string value: '\\xF0\\x9F\\xA6\\x80' for column `db`.`t`.`c` at row 1"
            ),
            "Incorrect string value: '?' for column `db`.`t`.`c` at row 1"
        );
        assert_eq!(
            redact_values("Incorrect datetime value: 'it''s' for column 'd'"),
            "Incorrect datetime value: '?' for column 'd'"
        );
        assert_eq!(redact_values("unterminated 'secret"), "unterminated '?");
    }

    #[test]
    fn finds_row_and_column_in_messages() {
        assert_eq!(
            row_and_column("Data too long for column 'name' at row 3"),
            (Some(3), Some("name".to_string()))
        );
        assert_eq!(
            row_and_column("Incorrect string value: '?' for column `db`.`t`.`c` at row 12"),
            (Some(12), Some("c".to_string()))
        );
        assert_eq!(row_and_column("Deadlock found"), (None, None));
    }

    #[test]
    fn certificate_errors_are_fatal_and_damaged_tls_records_transient() {
        use mysql_async::{Error, IoError};
        let tls = |error: rustls::Error| {
            Error::Io(IoError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                error,
            )))
        };
        let untrusted = tls(rustls::Error::InvalidCertificate(
            rustls::CertificateError::UnknownIssuer,
        ));
        assert_eq!(classify(&untrusted), ErrorClass::Fatal);
        let message = MySqlFailure::from(&untrusted).message;
        assert!(
            message.starts_with("TLS error: ")
                && message.contains("UnknownIssuer")
                && message.contains("writer.tls_ca_file"),
            "{message}"
        );
        assert_eq!(
            classify(&tls(rustls::Error::DecryptError)),
            ErrorClass::Transient
        );
        let reset = Error::Io(IoError::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert_eq!(classify(&reset), ErrorClass::Transient);
        assert!(
            MySqlFailure::from(&reset)
                .message
                .starts_with("connection error: ")
        );
    }

    #[test]
    fn classifies_server_codes() {
        for code in [1053, 1205, 1213, 1040, 1290, 1836, 2006, 2013] {
            assert_eq!(classify_code(code), ErrorClass::Transient, "{code}");
        }
        for code in [1054, 1062, 1146, 1264, 1406, 1451, 1452, 1366, 1048] {
            assert_eq!(classify_code(code), ErrorClass::Definite, "{code}");
        }
        assert_eq!(classify_code(1045), ErrorClass::Fatal);
    }

    fn server_error(code: u16) -> WriterError {
        WriterError::Database {
            shard: ShardId::new("s1").expect("valid shard"),
            operation: "applying a statement",
            context: String::new(),
            failure: MySqlFailure {
                code: Some(code),
                sqlstate: Some("HY000".into()),
                message: "m".into(),
            },
            class: classify_code(code),
        }
    }

    /// Issue 11 finding 4: only errors caused by a record's content may be dead-lettered;
    /// transient cluster errors are retried.
    #[test]
    fn only_record_content_errors_are_record_faults() {
        for code in [1412, 1047, 3100, 3101] {
            assert_eq!(classify_code(code), ErrorClass::Transient, "{code}");
            assert!(!server_error(code).is_record_fault(), "{code}");
        }
        for code in [1062, 1451, 1452, 1406, 1264, 1366, 1048, 4025, 3819] {
            assert!(server_error(code).is_record_fault(), "{code}");
        }
        // Missing tables and columns (after DDL), permissions: not the record's fault.
        for code in [1146, 1054, 1045] {
            assert!(!server_error(code).is_record_fault(), "{code}");
        }
        let shard = ShardId::new("s1").expect("valid shard");
        let infrastructure = [
            WriterError::Checkpoint {
                shard: shard.clone(),
                reason: "column window_end is invalid".into(),
            },
            WriterError::MissingTable {
                shard: shard.clone(),
                spanner_table: "Users".into(),
                source_table: "users".into(),
                database: "app".into(),
            },
            WriterError::MissingColumn {
                shard,
                table: "users".into(),
                column: "name".into(),
            },
        ];
        for error in infrastructure {
            assert_eq!(error.class(), ErrorClass::Definite, "{error}");
            assert!(!error.is_record_fault(), "{error}");
        }
    }
}
