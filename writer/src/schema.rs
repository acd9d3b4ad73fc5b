//! A shard's target schema, read from `information_schema` (DESIGN §6.7, §6.2).
//!
//! Per base table of the shard's database: the columns with their MySQL types (the short
//! `DATA_TYPE` and the full `COLUMN_TYPE`, e.g. `tinyint(1) unsigned`, `enum('a','b')`,
//! `datetime(6)`), nullability, length limits and whether they are generated; the primary-key
//! columns in key order; and the foreign keys between tables of the same database, from which
//! the writer orders the statements of one transaction so that InnoDB accepts them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};

use crate::checkpoint::CHECKPOINT_TABLE;

/// What kind of value a MySQL column holds, parsed from its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnKind {
    /// `tinyint` (8 bits), `smallint` (16), `mediumint` (24), `int` (32), `bigint` (64).
    Integer {
        /// Width in bits.
        bits: u8,
        /// `unsigned`.
        unsigned: bool,
    },
    /// `decimal(precision, scale)`.
    Decimal {
        /// Total significant digits.
        precision: u32,
        /// Digits after the decimal point.
        scale: u32,
        /// `unsigned` (deprecated, still honoured).
        unsigned: bool,
    },
    /// `float` (single precision) or `double`.
    Float {
        /// `double` rather than `float`.
        double: bool,
        /// `unsigned` (deprecated, still honoured).
        unsigned: bool,
    },
    /// `bit(width)`.
    Bit {
        /// Number of bits, 1 to 64.
        width: u32,
    },
    /// `char`, `varchar`, the `text` types and MariaDB's `uuid`/`inet4`/`inet6`.
    Text,
    /// `binary`, `varbinary` and the `blob` types.
    Binary,
    /// `enum(...)` with its members in definition order.
    Enum {
        /// The members.
        members: Vec<String>,
    },
    /// `set(...)` with its members in definition order.
    Set {
        /// The members.
        members: Vec<String>,
    },
    /// `date`.
    Date,
    /// `datetime(fsp)`: wall-clock time in the source time zone.
    DateTime {
        /// Fractional-second digits, 0 to 6.
        fsp: u8,
    },
    /// `timestamp(fsp)`: an instant (stored in UTC by MySQL).
    Timestamp {
        /// Fractional-second digits, 0 to 6.
        fsp: u8,
    },
    /// `time(fsp)`.
    Time {
        /// Fractional-second digits, 0 to 6.
        fsp: u8,
    },
    /// `year`.
    Year,
    /// `json` (MySQL's type; MariaDB's `json` is a `longtext` with a check).
    Json,
    /// A type the writer cannot fill from a Spanner value (spatial types, ...).
    Unsupported,
}

/// One column of a MySQL table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetColumn {
    /// The column name as MySQL spells it.
    pub name: String,
    /// `DATA_TYPE`, lower case: `int`, `varchar`, `datetime`...
    pub data_type: String,
    /// `COLUMN_TYPE`, lower case: `tinyint(1) unsigned`, `enum('a','b')`, `datetime(6)`...
    pub column_type: String,
    /// What kind of value it holds.
    pub kind: ColumnKind,
    /// Whether NULL is allowed.
    pub nullable: bool,
    /// Whether MySQL computes the value (`VIRTUAL`/`STORED GENERATED`): never written.
    pub generated: bool,
    /// Maximum length in characters (strings) or bytes (binary), if limited.
    pub max_chars: Option<u64>,
    /// Maximum length in bytes, if limited.
    pub max_bytes: Option<u64>,
    /// The collation of a text column (`utf8mb4_general_ci`...), `None` for other types.
    pub collation: Option<String>,
}

impl TargetColumn {
    /// A column of the given types, nullable, not generated, limits taken from the type where
    /// the type states them (`varchar(20)`, `binary(16)`, `text`...). For tests and for
    /// callers that know the schema without asking MySQL.
    pub fn new(name: impl Into<String>, column_type: &str) -> Self {
        let column_type = column_type.trim().to_ascii_lowercase();
        let data_type = column_type
            .split(|c: char| c == '(' || c.is_whitespace())
            .next()
            .unwrap_or_default()
            .to_string();
        let (max_chars, max_bytes) = type_limits(&data_type, &column_type);
        let kind = ColumnKind::parse(&data_type, &column_type, None, None, None);
        Self {
            name: name.into(),
            data_type,
            column_type,
            kind,
            nullable: true,
            generated: false,
            max_chars,
            max_bytes,
            collation: None,
        }
    }

    /// The same column with collation `collation`.
    pub fn with_collation(mut self, collation: impl Into<String>) -> Self {
        self.collation = Some(collation.into());
        self
    }

    /// Whether MySQL compares values of this column as exactly as [`crate::statement`]'s key
    /// fingerprints do (which fold case and trailing spaces): numbers, dates, binary strings
    /// and text with a binary collation — but not case- or accent-insensitive collations,
    /// which make different texts equal keys.
    pub fn compares_exactly(&self) -> bool {
        match &self.kind {
            ColumnKind::Integer { .. }
            | ColumnKind::Decimal { .. }
            | ColumnKind::Bit { .. }
            | ColumnKind::Date
            | ColumnKind::DateTime { .. }
            | ColumnKind::Timestamp { .. }
            | ColumnKind::Time { .. }
            | ColumnKind::Year => true,
            ColumnKind::Binary => self.data_type != "binary",
            ColumnKind::Text => self
                .collation
                .as_deref()
                .is_some_and(|c| c == "binary" || c.ends_with("_bin")),
            _ => false,
        }
    }

    /// The same column, `NOT NULL`.
    pub fn not_null(mut self) -> Self {
        self.nullable = false;
        self
    }
}

/// One MySQL base table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetTable {
    /// The table name as MySQL spells it.
    pub name: String,
    /// The columns in ordinal order.
    pub columns: Vec<TargetColumn>,
    /// Indexes into `columns` of the primary-key columns, in key order (empty: no key).
    pub primary_key: Vec<usize>,
    /// Unique indexes other than the primary key.
    pub unique_indexes: Vec<UniqueIndex>,
    /// Whether the table has triggers.
    pub has_triggers: bool,
    by_lower_name: HashMap<String, usize>,
}

impl TargetTable {
    /// A table from its columns and the names of its primary-key columns in key order.
    /// Unknown key column names are ignored.
    pub fn new(name: impl Into<String>, columns: Vec<TargetColumn>, primary_key: &[&str]) -> Self {
        let by_lower_name: HashMap<String, usize> = columns
            .iter()
            .enumerate()
            .map(|(index, column)| (column.name.to_lowercase(), index))
            .collect();
        let primary_key = primary_key
            .iter()
            .filter_map(|key| by_lower_name.get(&key.to_lowercase()).copied())
            .collect();
        Self {
            name: name.into(),
            columns,
            primary_key,
            unique_indexes: Vec::new(),
            has_triggers: false,
            by_lower_name,
        }
    }

    /// The same table with a unique index `name` on `columns` (names; unknown ones are
    /// ignored) besides the primary key.
    pub fn with_unique_index(mut self, name: impl Into<String>, columns: &[&str]) -> Self {
        let columns = columns
            .iter()
            .filter_map(|column| self.column(column).map(|(index, _)| index))
            .collect();
        self.unique_indexes.push(UniqueIndex {
            name: name.into(),
            columns,
        });
        self
    }

    /// The same table, marked as having triggers.
    pub fn with_triggers(mut self) -> Self {
        self.has_triggers = true;
        self
    }

    /// The column named `name`, compared case-insensitively as MySQL compares column names.
    pub fn column(&self, name: &str) -> Option<(usize, &TargetColumn)> {
        let index = match self.columns.iter().position(|c| c.name == name) {
            Some(index) => index,
            None => *self.by_lower_name.get(&name.to_lowercase())?,
        };
        self.columns.get(index).map(|column| (index, column))
    }
}

/// A unique index of a MySQL table, other than the primary key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniqueIndex {
    /// The index name.
    pub name: String,
    /// Indexes into the table's `columns`, in index order. Parts that are not plain columns
    /// (expressions) are left out.
    pub columns: Vec<usize>,
}

/// A foreign key between two tables of the shard's database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForeignKey {
    /// The constraint name.
    pub name: String,
    /// The referencing (child) table.
    pub table: String,
    /// The referencing columns, in constraint order.
    pub columns: Vec<String>,
    /// The referenced (parent) table.
    pub referenced_table: String,
    /// The referenced columns, in constraint order.
    pub referenced_columns: Vec<String>,
    /// `ON DELETE` rule: `RESTRICT`, `CASCADE`, `SET NULL`, `NO ACTION`...
    pub delete_rule: String,
}

/// The schema of one shard's database: its base tables and the foreign keys between them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TargetSchema {
    database: String,
    tables: BTreeMap<String, Arc<TargetTable>>,
    foreign_keys: Vec<ForeignKey>,
}

impl TargetSchema {
    /// A schema from parts (for tests and callers that know it).
    pub fn new(
        database: impl Into<String>,
        tables: Vec<TargetTable>,
        foreign_keys: Vec<ForeignKey>,
    ) -> Self {
        Self {
            database: database.into(),
            tables: tables
                .into_iter()
                .map(|table| (table.name.clone(), Arc::new(table)))
                .collect(),
            foreign_keys,
        }
    }

    /// Reads the schema of `database` from `information_schema` on `conn`. The writer's own
    /// checkpoint table is left out.
    pub async fn load(conn: &mut Conn, database: &str) -> Result<Self, mysql_async::Error> {
        let column_rows: Vec<Row> = conn
            .exec(
                "SELECT c.TABLE_NAME, c.COLUMN_NAME, c.DATA_TYPE, c.COLUMN_TYPE, c.IS_NULLABLE, \
                        c.CHARACTER_MAXIMUM_LENGTH, c.CHARACTER_OCTET_LENGTH, \
                        c.NUMERIC_PRECISION, c.NUMERIC_SCALE, c.DATETIME_PRECISION, c.EXTRA, \
                        c.COLLATION_NAME \
                 FROM information_schema.COLUMNS c \
                 JOIN information_schema.TABLES t \
                   ON t.TABLE_SCHEMA = c.TABLE_SCHEMA AND t.TABLE_NAME = c.TABLE_NAME \
                 WHERE c.TABLE_SCHEMA = ? AND t.TABLE_TYPE = 'BASE TABLE' \
                 ORDER BY c.TABLE_NAME, c.ORDINAL_POSITION",
                (database,),
            )
            .await?;
        let key_rows: Vec<(String, String)> = conn
            .exec(
                "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
                 WHERE TABLE_SCHEMA = ? AND CONSTRAINT_NAME = 'PRIMARY' \
                 ORDER BY TABLE_NAME, ORDINAL_POSITION",
                (database,),
            )
            .await?;
        let unique_rows: Vec<(String, String, Option<String>)> = conn
            .exec(
                "SELECT TABLE_NAME, INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS \
                 WHERE TABLE_SCHEMA = ? AND NON_UNIQUE = 0 AND INDEX_NAME <> 'PRIMARY' \
                 ORDER BY TABLE_NAME, INDEX_NAME, SEQ_IN_INDEX",
                (database,),
            )
            .await?;
        let trigger_rows: Vec<String> = conn
            .exec(
                "SELECT DISTINCT EVENT_OBJECT_TABLE FROM information_schema.TRIGGERS \
                 WHERE EVENT_OBJECT_SCHEMA = ?",
                (database,),
            )
            .await?;
        let foreign_rows: Vec<Row> = conn
            .exec(
                "SELECT k.CONSTRAINT_NAME, k.TABLE_NAME, k.COLUMN_NAME, \
                        k.REFERENCED_TABLE_NAME, k.REFERENCED_COLUMN_NAME, r.DELETE_RULE \
                 FROM information_schema.KEY_COLUMN_USAGE k \
                 JOIN information_schema.REFERENTIAL_CONSTRAINTS r \
                   ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA \
                  AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME \
                  AND r.TABLE_NAME = k.TABLE_NAME \
                 WHERE k.TABLE_SCHEMA = ? AND k.REFERENCED_TABLE_SCHEMA = k.TABLE_SCHEMA \
                   AND k.REFERENCED_TABLE_NAME IS NOT NULL \
                 ORDER BY k.TABLE_NAME, k.CONSTRAINT_NAME, k.ORDINAL_POSITION",
                (database,),
            )
            .await?;
        // MariaDB's JSON is a LONGTEXT with the column check `json_valid(`c`)`; such a column
        // is a JSON column (arrays stay JSON text there, never comma-joined).
        let version: Option<String> = conn.query_first("SELECT VERSION()").await?;
        let json_checks: Vec<(String, String, String)> =
            if version.is_some_and(|v| v.contains("MariaDB")) {
                conn.exec(
                    "SELECT TABLE_NAME, CONSTRAINT_NAME, CHECK_CLAUSE \
                     FROM information_schema.CHECK_CONSTRAINTS \
                     WHERE CONSTRAINT_SCHEMA = ? AND LEVEL = 'Column'",
                    (database,),
                )
                .await?
            } else {
                Vec::new()
            };
        let is_mariadb_json = |table: &str, column: &str| {
            json_checks.iter().any(|(t, name, clause)| {
                t == table
                    && name == column
                    && clause
                        .replace(' ', "")
                        .eq_ignore_ascii_case(&format!("json_valid(`{column}`)"))
            })
        };

        let mut columns_by_table: BTreeMap<String, Vec<TargetColumn>> = BTreeMap::new();
        for row in column_rows {
            let text = |index: usize| text_at(&row, index);
            let number = |index: usize| number_at(&row, index);
            let table = text(0);
            if table == CHECKPOINT_TABLE {
                continue;
            }
            let data_type = text(2).to_ascii_lowercase();
            let column_type = text(3).to_ascii_lowercase();
            let kind = if data_type == "longtext" && is_mariadb_json(&table, &text(1)) {
                ColumnKind::Json
            } else {
                ColumnKind::parse(&data_type, &column_type, number(7), number(8), number(9))
            };
            let extra = text(10).to_ascii_uppercase();
            let generated = [
                "VIRTUAL GENERATED",
                "STORED GENERATED",
                "PERSISTENT GENERATED",
            ]
            .iter()
            .any(|marker| extra.contains(marker));
            let (type_chars, type_bytes) = type_limits(&data_type, &column_type);
            columns_by_table
                .entry(table)
                .or_default()
                .push(TargetColumn {
                    name: text(1),
                    data_type,
                    column_type,
                    kind,
                    nullable: text(4).eq_ignore_ascii_case("YES"),
                    generated,
                    max_chars: number(5).or(type_chars),
                    max_bytes: number(6).or(type_bytes),
                    collation: Some(text(11)).filter(|c| !c.is_empty()),
                });
        }
        let mut keys: HashMap<String, Vec<String>> = HashMap::new();
        for (table, column) in key_rows {
            keys.entry(table).or_default().push(column);
        }
        let tables = columns_by_table
            .into_iter()
            .map(|(name, columns)| {
                let key = keys.get(&name).cloned().unwrap_or_default();
                let key: Vec<&str> = key.iter().map(String::as_str).collect();
                let mut table = TargetTable::new(name, columns, &key);
                for (_, index, column) in unique_rows.iter().filter(|(t, ..)| *t == table.name) {
                    let column = column
                        .as_deref()
                        .and_then(|c| table.column(c))
                        .map(|(i, _)| i);
                    match table.unique_indexes.last_mut() {
                        Some(last) if last.name == *index => last.columns.extend(column),
                        _ => table.unique_indexes.push(UniqueIndex {
                            name: index.clone(),
                            columns: column.into_iter().collect(),
                        }),
                    }
                }
                table.has_triggers = trigger_rows.contains(&table.name);
                table
            })
            .collect();

        let mut foreign_keys: Vec<ForeignKey> = Vec::new();
        for row in foreign_rows {
            let text = |index: usize| text_at(&row, index);
            let (name, table) = (text(0), text(1));
            match foreign_keys.last_mut() {
                Some(last) if last.name == name && last.table == table => {
                    last.columns.push(text(2));
                    last.referenced_columns.push(text(4));
                }
                _ => foreign_keys.push(ForeignKey {
                    name,
                    table,
                    columns: vec![text(2)],
                    referenced_table: text(3),
                    referenced_columns: vec![text(4)],
                    delete_rule: text(5),
                }),
            }
        }
        Ok(Self::new(database, tables, foreign_keys))
    }

    /// The database (MySQL schema) name.
    pub fn database(&self) -> &str {
        &self.database
    }

    /// The table named `name`: the exact name, else the only table whose name matches
    /// case-insensitively.
    pub fn table(&self, name: &str) -> Option<&Arc<TargetTable>> {
        if let Some(table) = self.tables.get(name) {
            return Some(table);
        }
        let lower = name.to_lowercase();
        let mut matches = self
            .tables
            .iter()
            .filter(|(candidate, _)| candidate.to_lowercase() == lower);
        match (matches.next(), matches.next()) {
            (Some((_, table)), None) => Some(table),
            _ => None,
        }
    }

    /// Every table, by name.
    pub fn tables(&self) -> impl Iterator<Item = &Arc<TargetTable>> {
        self.tables.values()
    }

    /// Every foreign key between tables of this database.
    pub fn foreign_keys(&self) -> &[ForeignKey] {
        &self.foreign_keys
    }
}

fn text_at(row: &Row, index: usize) -> String {
    match row.as_ref(index) {
        Some(mysql_async::Value::Bytes(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        Some(mysql_async::Value::Int(n)) => n.to_string(),
        Some(mysql_async::Value::UInt(n)) => n.to_string(),
        _ => String::new(),
    }
}

fn number_at(row: &Row, index: usize) -> Option<u64> {
    match row.as_ref(index)? {
        mysql_async::Value::Int(n) => u64::try_from(*n).ok(),
        mysql_async::Value::UInt(n) => Some(*n),
        mysql_async::Value::Bytes(bytes) => std::str::from_utf8(bytes).ok()?.trim().parse().ok(),
        _ => None,
    }
}

/// Length limits implied by a type name, for when `information_schema` does not give them.
fn type_limits(data_type: &str, column_type: &str) -> (Option<u64>, Option<u64>) {
    let declared = || type_arguments(column_type).first().copied();
    match data_type {
        "char" | "varchar" => (declared(), None),
        "binary" | "varbinary" => (declared(), declared()),
        "tinytext" | "tinyblob" => (None, Some(255)),
        "text" | "blob" => (None, Some(65_535)),
        "mediumtext" | "mediumblob" => (None, Some(16_777_215)),
        "longtext" | "longblob" => (None, Some(4_294_967_295)),
        _ => (None, None),
    }
}

/// The numbers in the first parentheses of a column type: `decimal(10,2)` → `[10, 2]`.
fn type_arguments(column_type: &str) -> Vec<u64> {
    let Some(open) = column_type.find('(') else {
        return Vec::new();
    };
    let rest = &column_type[open + 1..];
    let close = rest.find(')').unwrap_or(rest.len());
    rest[..close]
        .split(',')
        .filter_map(|part| part.trim().parse().ok())
        .collect()
}

/// The quoted members of `enum('a','b')` / `set(...)`; `''` inside quotes is one quote.
fn quoted_members(column_type: &str) -> Vec<String> {
    let Some(open) = column_type.find('(') else {
        return Vec::new();
    };
    let mut members = Vec::new();
    let mut chars = column_type[open + 1..].chars().peekable();
    let mut current: Option<String> = None;
    while let Some(c) = chars.next() {
        match (&mut current, c) {
            (None, '\'') => current = Some(String::new()),
            (None, ')') => break,
            (None, _) => {}
            (Some(member), '\'') => {
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    member.push('\'');
                } else if let Some(done) = current.take() {
                    members.push(done);
                }
            }
            (Some(member), c) => member.push(c),
        }
    }
    members
}

impl ColumnKind {
    /// Parses a column's kind from `DATA_TYPE` and `COLUMN_TYPE` (both lower case), with
    /// `NUMERIC_PRECISION`, `NUMERIC_SCALE` and `DATETIME_PRECISION` when known.
    pub fn parse(
        data_type: &str,
        column_type: &str,
        numeric_precision: Option<u64>,
        numeric_scale: Option<u64>,
        datetime_precision: Option<u64>,
    ) -> Self {
        let unsigned = column_type.contains("unsigned");
        let arguments = type_arguments(column_type);
        let fsp = || {
            let digits = datetime_precision.or_else(|| arguments.first().copied());
            digits.unwrap_or(0).min(6) as u8
        };
        let integer = |bits| Self::Integer { bits, unsigned };
        match data_type {
            "tinyint" | "bool" | "boolean" => integer(8),
            "smallint" => integer(16),
            "mediumint" => integer(24),
            "int" | "integer" => integer(32),
            "bigint" => integer(64),
            "decimal" | "numeric" | "fixed" | "dec" => {
                let precision = numeric_precision
                    .or_else(|| arguments.first().copied())
                    .unwrap_or(10);
                let scale = numeric_scale
                    .or_else(|| arguments.get(1).copied())
                    .unwrap_or(0);
                Self::Decimal {
                    precision: u32::try_from(precision).unwrap_or(65),
                    scale: u32::try_from(scale).unwrap_or(30),
                    unsigned,
                }
            }
            "float" => Self::Float {
                double: false,
                unsigned,
            },
            "double" | "real" | "double precision" => Self::Float {
                double: true,
                unsigned,
            },
            "bit" => Self::Bit {
                width: arguments
                    .first()
                    .copied()
                    .or(numeric_precision)
                    .map_or(1, |w| u32::try_from(w.clamp(1, 64)).unwrap_or(64)),
            },
            "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "uuid"
            | "inet4" | "inet6" => Self::Text,
            "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
                Self::Binary
            }
            "enum" => Self::Enum {
                members: quoted_members(column_type),
            },
            "set" => Self::Set {
                members: quoted_members(column_type),
            },
            "date" => Self::Date,
            "datetime" => Self::DateTime { fsp: fsp() },
            "timestamp" => Self::Timestamp { fsp: fsp() },
            "time" => Self::Time { fsp: fsp() },
            "year" => Self::Year,
            "json" => Self::Json,
            _ => Self::Unsupported,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_column_types() {
        let kind = |t: &str| TargetColumn::new("c", t).kind;
        assert_eq!(
            kind("tinyint(1) unsigned"),
            ColumnKind::Integer {
                bits: 8,
                unsigned: true
            }
        );
        assert_eq!(
            kind("bigint(20)"),
            ColumnKind::Integer {
                bits: 64,
                unsigned: false
            }
        );
        assert_eq!(
            kind("decimal(38,9)"),
            ColumnKind::Decimal {
                precision: 38,
                scale: 9,
                unsigned: false
            }
        );
        assert_eq!(kind("bit(12)"), ColumnKind::Bit { width: 12 });
        assert_eq!(kind("datetime(6)"), ColumnKind::DateTime { fsp: 6 });
        assert_eq!(kind("timestamp"), ColumnKind::Timestamp { fsp: 0 });
        assert_eq!(kind("time(3)"), ColumnKind::Time { fsp: 3 });
        assert_eq!(
            kind("enum('a','it''s','x,y')"),
            ColumnKind::Enum {
                members: vec!["a".into(), "it's".into(), "x,y".into()]
            }
        );
        assert_eq!(
            kind("set('r','w')"),
            ColumnKind::Set {
                members: vec!["r".into(), "w".into()]
            }
        );
        assert_eq!(kind("geometry"), ColumnKind::Unsupported);
        let varchar = TargetColumn::new("c", "varchar(20)");
        assert_eq!(varchar.max_chars, Some(20));
        let blob = TargetColumn::new("c", "blob");
        assert_eq!(blob.max_bytes, Some(65_535));
    }

    #[test]
    fn finds_tables_and_columns_case_insensitively() {
        let table = TargetTable::new(
            "Orders",
            vec![
                TargetColumn::new("Id", "int"),
                TargetColumn::new("key", "text"),
            ],
            &["id"],
        );
        assert_eq!(table.primary_key, vec![0]);
        assert_eq!(table.column("KEY").map(|(i, _)| i), Some(1));
        let schema = TargetSchema::new("db", vec![table], Vec::new());
        assert!(schema.table("orders").is_some());
        assert!(schema.table("order").is_none());
    }
}
