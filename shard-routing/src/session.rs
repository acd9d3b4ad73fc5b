//! The Spanner Migration Tool session file, as a typed mapping for routing and for the writer
//! (DESIGN §5 and §6.7, reference §1.2).
//!
//! The file holds `SpSchema` (Spanner tables by table id), `SrcSchema` (source tables by the
//! same ids) and `SyntheticPKeys` (Spanner-only primary-key columns added for source tables
//! without one). Tables are joined by table id and columns by column id; names may differ on
//! the two sides (renamed tables and columns). Everything else in the file is ignored.
//!
//! Only what revrepl uses is required: `SpSchema` and `SrcSchema`, the `Name` of every table
//! and column, and the Spanner type (`T`) of every Spanner column. `SyntheticPKeys` may be
//! absent (no synthetic keys), and so may a source column's type (`Type`, which some files
//! call `T`): the writer reads column types from the shard's `information_schema` anyway.
//! A missing or malformed piece is reported with its JSON path, e.g.
//! `SrcSchema["t1"].ColDefs["c2"].Name`.
//!
//! Checks made at load, so that routing never meets them later: every column id listed
//! (`ColIds`, `PrimaryKeys`, `ShardIdColumn`, `SyntheticPKeys`) is defined in `ColDefs`, and
//! no two Spanner tables share a name.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::RoutingError;

/// A loaded session file: one [`SessionTable`] per Spanner table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    origin: String,
    tables: BTreeMap<String, SessionTable>,
}

/// One Spanner table and the source table it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionTable {
    /// The table id shared by `SpSchema` and `SrcSchema`, e.g. `t1`.
    pub id: String,
    /// The Spanner table name, as change records carry it.
    pub spanner_name: String,
    /// The source (MySQL) table, or `None` for a table that exists only in Spanner.
    pub source: Option<SourceTable>,
    /// The Spanner columns, in the Spanner table's column order.
    pub columns: Vec<SessionColumn>,
    /// The Spanner primary key: Spanner column names in key order.
    pub spanner_primary_key: Vec<String>,
    /// The source primary key: source column names in key order (empty if the source table
    /// has none).
    pub source_primary_key: Vec<String>,
    /// The Spanner column whose value is the logical shard id (`ShardIdColumn`), if any.
    pub shard_id_column: Option<String>,
    /// The Spanner-only column the migration added as primary key (`SyntheticPKeys`), if any.
    pub synthetic_primary_key: Option<String>,
}

/// The source side of a table.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SourceTable {
    /// The source table name.
    pub name: String,
    /// The source schema (for MySQL, the database the session was made from).
    pub schema: String,
}

/// One Spanner column and the source column it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionColumn {
    /// The column id shared by both sides, e.g. `c3`.
    pub id: String,
    /// The Spanner column name, as change records carry it.
    pub spanner_name: String,
    /// The Spanner type.
    pub spanner_type: SpannerType,
    /// The source column, or `None` for a column that exists only in Spanner (such as a
    /// synthetic primary key or `migration_shard_id`).
    pub source: Option<SourceColumn>,
}

/// A Spanner column type.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpannerType {
    /// `INT64`, `STRING`, `FLOAT64`, `BOOL`, `BYTES`, `TIMESTAMP`, `DATE`, `NUMERIC`, `JSON`...
    pub name: String,
    /// Whether the column is an `ARRAY<name>`.
    pub is_array: bool,
}

/// A source column.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SourceColumn {
    /// The source column name.
    pub name: String,
    /// The source type name as the migration tool recorded it, lower case for MySQL:
    /// `varchar`, `int`, `datetime`..., or `None` when the file does not record it (revrepl
    /// reads the real column types from the shard's `information_schema`).
    pub type_name: Option<String>,
    /// Type modifiers, e.g. `[20]` for `varchar(20)`, `[10, 2]` for `decimal(10,2)` (empty
    /// when unknown).
    pub type_mods: Vec<i64>,
    /// Array bounds, for sources with array types.
    pub array_bounds: Vec<i64>,
    /// Whether the source column is `NOT NULL`.
    pub not_null: bool,
}

impl Session {
    /// Reads and validates the session file at `path`.
    pub fn load(path: &Path) -> Result<Self, RoutingError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| RoutingError::ReadFile {
            file: "session file",
            path: origin.clone(),
            source,
        })?;
        Self::from_json(&origin, &text)
    }

    /// Validates session-file `text`; `origin` (a path or URL) names the file in errors.
    pub fn from_json(origin: &str, text: &str) -> Result<Self, RoutingError> {
        let raw: RawSession =
            serde_json::from_str(text).map_err(|error| RoutingError::FileSyntax {
                file: "session file",
                path: origin.to_string(),
                reason: error.to_string(),
            })?;
        let error = |(location, problem): Located| RoutingError::SessionFile {
            path: origin.to_string(),
            location,
            problem,
        };
        let missing = |section: &str| {
            error((
                "top level".to_string(),
                format!("{section:?} is missing (is this a Spanner Migration Tool session file?)"),
            ))
        };
        let spanner = raw.sp_schema.ok_or_else(|| missing("SpSchema"))?;
        let source = raw.src_schema.ok_or_else(|| missing("SrcSchema"))?;
        let synthetic = raw.synthetic_p_keys.unwrap_or_default();

        let mut tables = BTreeMap::new();
        for (id, table) in spanner {
            let table: RawSpannerTable =
                parse_at(table, || format!("SpSchema[{id:?}]")).map_err(&error)?;
            let source_table = source
                .get(&id)
                .map(|table| {
                    parse_at::<RawSourceTable>(table.clone(), || format!("SrcSchema[{id:?}]"))
                })
                .transpose()
                .map_err(&error)?;
            let synthetic_key = synthetic
                .get(&id)
                .map(|key| {
                    parse_at::<RawSyntheticKey>(key.clone(), || format!("SyntheticPKeys[{id:?}]"))
                })
                .transpose()
                .map_err(&error)?;
            let joined = join_table(&id, table, source_table.as_ref(), synthetic_key.as_ref())
                .map_err(&error)?;
            if let Some(other) = tables.get(&joined.spanner_name) {
                let other: &SessionTable = other;
                return Err(error((
                    format!("SpSchema[{id:?}].Name"),
                    format!(
                        "Spanner table name {:?} is also used by table {:?}",
                        joined.spanner_name, other.id
                    ),
                )));
            }
            tables.insert(joined.spanner_name.clone(), joined);
        }
        Ok(Self {
            origin: origin.to_string(),
            tables,
        })
    }

    /// Where the file came from.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The table named `spanner_name` in Spanner, if the session knows it.
    pub fn table(&self, spanner_name: &str) -> Option<&SessionTable> {
        self.tables.get(spanner_name)
    }

    /// Every table, by Spanner name.
    pub fn tables(&self) -> impl Iterator<Item = &SessionTable> {
        self.tables.values()
    }
}

impl SessionTable {
    /// The column named `spanner_name` in Spanner.
    pub fn column(&self, spanner_name: &str) -> Option<&SessionColumn> {
        self.columns
            .iter()
            .find(|column| column.spanner_name == spanner_name)
    }

    /// The source name of the table, or `None` if it exists only in Spanner.
    pub fn source_name(&self) -> Option<&str> {
        self.source.as_ref().map(|source| source.name.as_str())
    }

    /// Whether the table exists only in Spanner (no `SrcSchema` entry, typically a table added
    /// after the migration): its changes cannot be applied and go to `skip/`.
    pub fn is_spanner_only(&self) -> bool {
        self.source.is_none()
    }
}

/// A JSON path in the session file and what is wrong there.
type Located = (String, String);

/// Deserializes one entry of a section, naming its JSON path (`at()`) when it has the wrong
/// shape.
fn parse_at<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    at: impl Fn() -> String,
) -> Result<T, Located> {
    serde_json::from_value(value).map_err(|error| (at(), error.to_string()))
}

/// A required `Name`, or where it is missing.
fn required_name(name: Option<String>, at: impl Fn() -> String) -> Result<String, Located> {
    match name {
        Some(name) if !name.is_empty() => Ok(name),
        Some(_) => Err((at(), "the name is empty".to_string())),
        None => Err((at(), "the name is missing".to_string())),
    }
}

fn join_table(
    id: &str,
    spanner: RawSpannerTable,
    source: Option<&RawSourceTable>,
    synthetic: Option<&RawSyntheticKey>,
) -> Result<SessionTable, Located> {
    let at = |field: &str| format!("SpSchema[{id:?}].{field}");
    let undefined = |field: &str, column: &str| {
        (
            at(field),
            format!("column id {column:?} is not defined in SpSchema[{id:?}].ColDefs"),
        )
    };
    let table_name = required_name(spanner.name, || at("Name"))?;
    let mut spanner_names = BTreeMap::new();
    for (column_id, def) in &spanner.col_defs {
        let name = required_name(def.name.clone(), || {
            format!("SpSchema[{id:?}].ColDefs[{column_id:?}].Name")
        })?;
        spanner_names.insert(column_id.as_str(), name);
    }
    let spanner_name_of = |column: &str, field: &str| {
        spanner_names
            .get(column)
            .cloned()
            .ok_or_else(|| undefined(field, column))
    };
    let mut source_names = BTreeMap::new();
    if let Some(table) = source {
        for (column_id, def) in &table.col_defs {
            let name = required_name(def.name.clone(), || {
                format!("SrcSchema[{id:?}].ColDefs[{column_id:?}].Name")
            })?;
            source_names.insert(column_id.as_str(), name);
        }
    }
    let source_table = source
        .map(|table| {
            Ok::<_, Located>(SourceTable {
                name: required_name(table.name.clone(), || format!("SrcSchema[{id:?}].Name"))?,
                schema: table.schema.clone().unwrap_or_default(),
            })
        })
        .transpose()?;

    let column_ids: Vec<String> = match spanner.col_ids.as_deref() {
        Some(ids) if !ids.is_empty() => ids.to_vec(),
        _ => spanner.col_defs.keys().cloned().collect(),
    };
    let mut columns = Vec::with_capacity(column_ids.len());
    for column_id in &column_ids {
        let def = spanner
            .col_defs
            .get(column_id)
            .ok_or_else(|| undefined("ColIds", column_id))?;
        let source_column = source
            .and_then(|table| table.col_defs.get(column_id))
            .zip(source_names.get(column_id.as_str()))
            .map(|(def, name)| SourceColumn {
                name: name.clone(),
                type_name: def.kind.as_ref().and_then(|kind| kind.name.clone()),
                type_mods: def
                    .kind
                    .as_ref()
                    .and_then(|kind| kind.mods.clone())
                    .unwrap_or_default(),
                array_bounds: def
                    .kind
                    .as_ref()
                    .and_then(|kind| kind.array_bounds.clone())
                    .unwrap_or_default(),
                not_null: def.not_null,
            });
        let kind = def.kind.as_ref().ok_or_else(|| {
            (
                format!("SpSchema[{id:?}].ColDefs[{column_id:?}].T"),
                "the Spanner type is missing".to_string(),
            )
        })?;
        columns.push(SessionColumn {
            id: column_id.clone(),
            spanner_name: spanner_name_of(column_id, "ColIds")?,
            spanner_type: SpannerType {
                name: required_name(kind.name.clone(), || {
                    format!("SpSchema[{id:?}].ColDefs[{column_id:?}].T.Name")
                })?,
                is_array: kind.is_array,
            },
            source: source_column,
        });
    }

    let spanner_primary_key = key_in_order(spanner.primary_keys.as_deref())
        .map(|column| spanner_name_of(column, "PrimaryKeys"))
        .collect::<Result<Vec<_>, _>>()?;
    let shard_id_column = match spanner.shard_id_column.as_deref() {
        None | Some("") => None,
        Some(column) => Some(spanner_name_of(column, "ShardIdColumn")?),
    };
    let synthetic_primary_key = synthetic
        .map(|key| {
            spanner_names
                .get(key.col_id.as_str())
                .cloned()
                .ok_or_else(|| {
                    (
                        format!("SyntheticPKeys[{id:?}].ColId"),
                        format!(
                            "column id {:?} is not defined in SpSchema[{id:?}].ColDefs",
                            key.col_id
                        ),
                    )
                })
        })
        .transpose()?;
    let source_primary_key = match source {
        None => Vec::new(),
        Some(table) => key_in_order(table.primary_keys.as_deref())
            .map(|column| {
                source_names.get(column).cloned().ok_or_else(|| {
                    (
                        format!("SrcSchema[{id:?}].PrimaryKeys"),
                        format!("column id {column:?} is not defined in SrcSchema[{id:?}].ColDefs"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
    };

    Ok(SessionTable {
        id: id.to_string(),
        spanner_name: table_name,
        source: source_table,
        columns,
        spanner_primary_key,
        source_primary_key,
        shard_id_column,
        synthetic_primary_key,
    })
}

/// The column ids of a key, sorted by their `Order` (stable for equal orders).
fn key_in_order(key: Option<&[RawKeyPart]>) -> impl Iterator<Item = &str> {
    let mut parts: Vec<&RawKeyPart> = key.unwrap_or_default().iter().collect();
    parts.sort_by_key(|part| part.order);
    parts.into_iter().map(|part| part.col_id.as_str())
}

// The file's own shapes. Go's encoder writes `null` for empty lists and maps, so every
// collection is optional.

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawSession {
    // Entries stay JSON values until each is parsed with its path (`parse_at`).
    sp_schema: Option<BTreeMap<String, serde_json::Value>>,
    src_schema: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(rename = "SyntheticPKeys")]
    synthetic_p_keys: Option<BTreeMap<String, serde_json::Value>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawSpannerTable {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    col_ids: Option<Vec<String>>,
    #[serde(default, deserialize_with = "null_as_empty_map")]
    col_defs: BTreeMap<String, RawSpannerColumn>,
    #[serde(default)]
    primary_keys: Option<Vec<RawKeyPart>>,
    #[serde(default)]
    shard_id_column: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawSpannerColumn {
    #[serde(default)]
    name: Option<String>,
    #[serde(default, rename = "T")]
    kind: Option<RawSpannerType>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawSpannerType {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    is_array: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawSourceTable {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    schema: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty_map")]
    col_defs: BTreeMap<String, RawSourceColumn>,
    #[serde(default)]
    primary_keys: Option<Vec<RawKeyPart>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawSourceColumn {
    #[serde(default)]
    name: Option<String>,
    // Most files call it `Type`; some call it `T` (like the Spanner side), some omit it.
    #[serde(default, rename = "Type", alias = "T")]
    kind: Option<RawSourceType>,
    #[serde(default)]
    not_null: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawSourceType {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    mods: Option<Vec<i64>>,
    #[serde(default)]
    array_bounds: Option<Vec<i64>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawKeyPart {
    col_id: String,
    #[serde(default)]
    order: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawSyntheticKey {
    col_id: String,
}

fn null_as_empty_map<'de, D, T>(deserializer: D) -> Result<BTreeMap<String, T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<BTreeMap<String, T>>::deserialize(deserializer)?.unwrap_or_default())
}
