//! Spanner names → MySQL (source) names (DESIGN §6.7).
//!
//! A [`SchemaMapping`] says, per Spanner table, which MySQL table receives its changes and, per
//! Spanner column, which MySQL column receives its values — or that the column exists only in
//! Spanner and is left out. Everything it does not mention maps by identity: the same table
//! name, and the same column name (compared case-insensitively, as MySQL compares column
//! names). It can also carry each column's Spanner type, which the type conversion needs where
//! the value alone is ambiguous (a base64 `BYTES` value and a `STRING` look alike).
//!
//! The Spanner Migration Tool session file converts into a mapping with
//! [`SchemaMapping::from_session`].

use std::collections::BTreeMap;
use std::fmt;

use revrepl_shard_routing::{Session, SessionTable};

use crate::convert::ConversionRules;

/// The scalar type of a Spanner column.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SpannerScalar {
    /// `BOOL`.
    Bool,
    /// `INT64`.
    Int64,
    /// `FLOAT32`.
    Float32,
    /// `FLOAT64`.
    Float64,
    /// `NUMERIC` (also PostgreSQL-dialect `PG.NUMERIC`).
    Numeric,
    /// `STRING`.
    String,
    /// `BYTES`.
    Bytes,
    /// `DATE`.
    Date,
    /// `TIMESTAMP`.
    Timestamp,
    /// `JSON` (also PostgreSQL-dialect `PG.JSONB`).
    Json,
    /// Any other type name, kept as written.
    Other(String),
}

impl SpannerScalar {
    /// Parses a Spanner type name such as `INT64`, `STRING(MAX)` or `PG.NUMERIC`.
    pub fn parse(name: &str) -> Self {
        let upper = name.trim().to_ascii_uppercase();
        let base = upper.split('(').next().unwrap_or_default().trim();
        match base {
            "BOOL" | "BOOLEAN" => Self::Bool,
            "INT64" => Self::Int64,
            "FLOAT32" => Self::Float32,
            "FLOAT64" => Self::Float64,
            "NUMERIC" | "PG.NUMERIC" => Self::Numeric,
            "STRING" => Self::String,
            "BYTES" => Self::Bytes,
            "DATE" => Self::Date,
            "TIMESTAMP" => Self::Timestamp,
            "JSON" | "PG.JSONB" => Self::Json,
            _ => Self::Other(name.trim().to_string()),
        }
    }
}

impl fmt::Display for SpannerScalar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Bool => "BOOL",
            Self::Int64 => "INT64",
            Self::Float32 => "FLOAT32",
            Self::Float64 => "FLOAT64",
            Self::Numeric => "NUMERIC",
            Self::String => "STRING",
            Self::Bytes => "BYTES",
            Self::Date => "DATE",
            Self::Timestamp => "TIMESTAMP",
            Self::Json => "JSON",
            Self::Other(name) => name,
        })
    }
}

/// The type of a Spanner column: a scalar or an array of one.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpannerType {
    /// The scalar (element) type.
    pub scalar: SpannerScalar,
    /// Whether the column is `ARRAY<scalar>`.
    pub is_array: bool,
}

impl SpannerType {
    /// A scalar column type.
    pub fn scalar(scalar: SpannerScalar) -> Self {
        Self {
            scalar,
            is_array: false,
        }
    }

    /// An `ARRAY<scalar>` column type.
    pub fn array(scalar: SpannerScalar) -> Self {
        Self {
            scalar,
            is_array: true,
        }
    }
}

impl fmt::Display for SpannerType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_array {
            write!(f, "ARRAY<{}>", self.scalar)
        } else {
            write!(f, "{}", self.scalar)
        }
    }
}

/// Where one Spanner column goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ColumnMapping {
    /// The MySQL column, or `None` when the column exists only in Spanner (left out).
    pub source_column: Option<String>,
    /// The Spanner type, when known.
    pub spanner_type: Option<SpannerType>,
}

/// Where one Spanner table goes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TableMapping {
    /// The MySQL table, or `None` when the table exists only in Spanner: its changes cannot be
    /// applied, which is a definite error (never a silent drop).
    pub source_table: Option<String>,
    /// Columns by Spanner name. Columns not listed map by identity.
    pub columns: BTreeMap<String, ColumnMapping>,
}

/// Spanner → MySQL names for a whole database; identity where nothing is said.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SchemaMapping {
    tables: BTreeMap<String, TableMapping>,
    /// Spanner columns left out of every table.
    ignored_everywhere: std::collections::BTreeSet<String>,
    /// How values are converted where a choice exists (decimal rounding, arrays as text).
    rules: ConversionRules,
}

/// What the mapping says about one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableTarget<'a> {
    /// Changes go to this MySQL table.
    Source(&'a str),
    /// The table exists only in Spanner.
    SpannerOnly,
}

/// What the mapping says about one column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnTarget<'a> {
    /// Values go to this MySQL column; the Spanner type is given when known.
    Source(&'a str, Option<&'a SpannerType>),
    /// The column exists only in Spanner: left out.
    SpannerOnly,
}

impl SchemaMapping {
    /// The identity mapping: every Spanner table and column has the same name in MySQL.
    pub fn identity() -> Self {
        Self::default()
    }

    /// Adds or replaces the mapping of Spanner table `spanner_table`.
    pub fn with_table(mut self, spanner_table: impl Into<String>, table: TableMapping) -> Self {
        self.tables.insert(spanner_table.into(), table);
        self
    }

    /// Marks Spanner column `column` of `spanner_table` as existing only in Spanner, so that
    /// its values are left out (e.g. a `migration_shard_id` column added by the migration).
    pub fn ignoring_column(
        mut self,
        spanner_table: impl Into<String>,
        column: impl Into<String>,
    ) -> Self {
        let spanner_table = spanner_table.into();
        let table = self
            .tables
            .entry(spanner_table.clone())
            .or_insert_with(|| TableMapping {
                source_table: Some(spanner_table),
                columns: BTreeMap::new(),
            });
        table.columns.insert(
            column.into(),
            ColumnMapping {
                source_column: None,
                spanner_type: None,
            },
        );
        self
    }

    /// Converts values by `rules` (the writer's `decimal_overflow` and `array_text`).
    pub fn with_rules(mut self, rules: ConversionRules) -> Self {
        self.rules = rules;
        self
    }

    /// The conversion rules.
    pub fn rules(&self) -> &ConversionRules {
        &self.rules
    }

    /// Marks Spanner column `column` as existing only in Spanner in every table (the writer's
    /// `ignore_columns` setting).
    pub fn ignoring_column_everywhere(mut self, column: impl Into<String>) -> Self {
        self.ignored_everywhere.insert(column.into());
        self
    }

    /// The mapping of a session file: every table and column the session knows, with source
    /// names and Spanner types; tables and columns without a source side are Spanner-only.
    pub fn from_session(session: &Session) -> Self {
        let tables = session
            .tables()
            .map(|table| (table.spanner_name.clone(), table_from_session(table)))
            .collect();
        Self {
            tables,
            ignored_everywhere: Default::default(),
            rules: ConversionRules::default(),
        }
    }

    /// The mapping of schema overrides (renames without a session file): each renamed table
    /// and each renamed column back to its source name; everything else by identity, with no
    /// Spanner types known.
    pub fn from_overrides(overrides: &revrepl_shard_routing::SchemaOverrides) -> Self {
        let mut tables: BTreeMap<String, TableMapping> = BTreeMap::new();
        for (source, spanner) in overrides.renamed_tables() {
            tables.insert(
                spanner.clone(),
                TableMapping {
                    source_table: Some(source.clone()),
                    columns: BTreeMap::new(),
                },
            );
        }
        for (source_table, renames) in overrides.renamed_columns() {
            let spanner_table = overrides
                .renamed_tables()
                .get(source_table)
                .unwrap_or(source_table);
            let table = tables
                .entry(spanner_table.clone())
                .or_insert_with(|| TableMapping {
                    source_table: Some(source_table.clone()),
                    columns: BTreeMap::new(),
                });
            for (source_column, spanner_column) in renames {
                table.columns.insert(
                    spanner_column.clone(),
                    ColumnMapping {
                        source_column: Some(source_column.clone()),
                        spanner_type: None,
                    },
                );
            }
        }
        Self {
            tables,
            ignored_everywhere: Default::default(),
            rules: ConversionRules::default(),
        }
    }

    /// Where the changes of `spanner_table` go.
    pub fn table<'a>(&'a self, spanner_table: &'a str) -> TableTarget<'a> {
        match self.tables.get(spanner_table) {
            None => TableTarget::Source(spanner_table),
            Some(TableMapping {
                source_table: Some(name),
                ..
            }) => TableTarget::Source(name),
            Some(TableMapping {
                source_table: None, ..
            }) => TableTarget::SpannerOnly,
        }
    }

    /// Where the values of `column` of `spanner_table` go.
    pub fn column<'a>(&'a self, spanner_table: &str, column: &'a str) -> ColumnTarget<'a> {
        if self.ignored_everywhere.contains(column) {
            return ColumnTarget::SpannerOnly;
        }
        let mapped = self
            .tables
            .get(spanner_table)
            .and_then(|table| table.columns.get(column));
        match mapped {
            None => ColumnTarget::Source(column, None),
            Some(ColumnMapping {
                source_column: Some(name),
                spanner_type,
            }) => ColumnTarget::Source(name, spanner_type.as_ref()),
            Some(ColumnMapping {
                source_column: None,
                ..
            }) => ColumnTarget::SpannerOnly,
        }
    }
}

impl From<&Session> for SchemaMapping {
    fn from(session: &Session) -> Self {
        Self::from_session(session)
    }
}

fn table_from_session(table: &SessionTable) -> TableMapping {
    let columns = table
        .columns
        .iter()
        .map(|column| {
            let spanner_type = SpannerType {
                scalar: SpannerScalar::parse(&column.spanner_type.name),
                is_array: column.spanner_type.is_array,
            };
            (
                column.spanner_name.clone(),
                ColumnMapping {
                    source_column: column.source.as_ref().map(|source| source.name.clone()),
                    spanner_type: Some(spanner_type),
                },
            )
        })
        .collect();
    TableMapping {
        source_table: table.source_name().map(str::to_string),
        columns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SESSION: &str = r#"{
      "SpSchema": {
        "t1": {"Name": "Users", "ColIds": ["c1", "c2", "c3"],
               "ColDefs": {"c1": {"Name": "UserId", "T": {"Name": "INT64"}},
                           "c2": {"Name": "Photo", "T": {"Name": "BYTES"}},
                           "c3": {"Name": "migration_shard_id", "T": {"Name": "STRING"}}},
               "PrimaryKeys": [{"ColId": "c1", "Order": 1}], "ShardIdColumn": "c3"},
        "t2": {"Name": "Audit", "ColIds": ["c9"],
               "ColDefs": {"c9": {"Name": "Id", "T": {"Name": "STRING", "IsArray": true}}}}
      },
      "SrcSchema": {
        "t1": {"Name": "users", "Schema": "app", "ColIds": ["c1", "c2"],
               "ColDefs": {"c1": {"Name": "user_id", "Type": {"Name": "bigint"}},
                           "c2": {"Name": "photo", "Type": {"Name": "blob"}}},
               "PrimaryKeys": [{"ColId": "c1", "Order": 1}]}
      },
      "SyntheticPKeys": {}
    }"#;

    #[test]
    fn identity_maps_every_name_to_itself() {
        let mapping = SchemaMapping::identity();
        assert_eq!(mapping.table("Orders"), TableTarget::Source("Orders"));
        assert_eq!(
            mapping.column("Orders", "key"),
            ColumnTarget::Source("key", None)
        );
    }

    #[test]
    fn ignored_columns_are_spanner_only() {
        let mapping = SchemaMapping::identity().ignoring_column("T", "migration_shard_id");
        assert_eq!(mapping.table("T"), TableTarget::Source("T"));
        assert_eq!(
            mapping.column("T", "migration_shard_id"),
            ColumnTarget::SpannerOnly
        );
        assert_eq!(mapping.column("T", "x"), ColumnTarget::Source("x", None));
    }

    #[test]
    fn session_files_convert_with_names_and_types() {
        let session = Session::from_json("session.json", SESSION).expect("valid session");
        let mapping = SchemaMapping::from(&session);
        assert_eq!(mapping.table("Users"), TableTarget::Source("users"));
        assert_eq!(mapping.table("Audit"), TableTarget::SpannerOnly);
        let bytes = SpannerType::scalar(SpannerScalar::Bytes);
        assert_eq!(
            mapping.column("Users", "Photo"),
            ColumnTarget::Source("photo", Some(&bytes))
        );
        assert_eq!(
            mapping.column("Users", "UserId"),
            ColumnTarget::Source("user_id", Some(&SpannerType::scalar(SpannerScalar::Int64)))
        );
        assert_eq!(
            mapping.column("Users", "migration_shard_id"),
            ColumnTarget::SpannerOnly
        );
        // A column the session does not know (added later) maps by identity.
        assert_eq!(
            mapping.column("Users", "Nickname"),
            ColumnTarget::Source("Nickname", None)
        );
    }

    #[test]
    fn schema_overrides_map_renamed_names_back() {
        let overrides = revrepl_shard_routing::SchemaOverrides::from_json(
            "o.json",
            r#"{"renamedTables": {"person": "Person"},
                "renamedColumns": {"person": {"first_name": "FirstName"},
                                   "orders": {"total": "Amount"}}}"#,
        )
        .expect("valid");
        let mapping = SchemaMapping::from_overrides(&overrides);
        assert_eq!(mapping.table("Person"), TableTarget::Source("person"));
        assert_eq!(mapping.table("Other"), TableTarget::Source("Other"));
        assert_eq!(
            mapping.column("Person", "FirstName"),
            ColumnTarget::Source("first_name", None)
        );
        assert_eq!(
            mapping.column("Person", "Age"),
            ColumnTarget::Source("Age", None)
        );
        assert_eq!(mapping.table("orders"), TableTarget::Source("orders"));
        assert_eq!(
            mapping.column("orders", "Amount"),
            ColumnTarget::Source("total", None)
        );
    }

    #[test]
    fn parses_spanner_type_names() {
        assert_eq!(SpannerScalar::parse("STRING(MAX)"), SpannerScalar::String);
        assert_eq!(SpannerScalar::parse("pg.numeric"), SpannerScalar::Numeric);
        assert_eq!(
            SpannerType::array(SpannerScalar::Int64).to_string(),
            "ARRAY<INT64>"
        );
        assert_eq!(
            SpannerScalar::parse("INTERVAL"),
            SpannerScalar::Other("INTERVAL".into())
        );
    }
}
