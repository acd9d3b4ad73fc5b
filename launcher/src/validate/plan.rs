//! Which tables and columns are compared: the Spanner schema from `INFORMATION_SCHEMA`, the
//! mapping to MySQL names (session file, else identity), and per shard the MySQL columns and
//! their canonical [`Rule`]s.

use std::collections::BTreeMap;

use google_cloud_spanner::statement::Statement;
use mysql_async::Conn;
use mysql_async::prelude::Queryable;
use revrepl_shard_routing::Session;

use super::canonical::{MySqlColumn, Rule, WriterChoices, rule_for_column};
use super::zone::SourceZone;
use crate::error::LauncherError;
use crate::spanner::SourceDatabase;

/// A Spanner table: columns in table order, with their types, and the primary key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpannerTable {
    /// The table name.
    pub name: String,
    /// `(column, SPANNER_TYPE)` in column order.
    pub columns: Vec<(String, String)>,
    /// Primary-key column names in key order.
    pub primary_key: Vec<String>,
}

impl SpannerTable {
    /// The position of `column`.
    pub fn index_of(&self, column: &str) -> Option<usize> {
        self.columns.iter().position(|(name, _)| name == column)
    }
}

/// Reads every table of the database's default schema.
pub async fn spanner_tables(
    database: &SourceDatabase,
) -> Result<BTreeMap<String, SpannerTable>, LauncherError> {
    let columns = database
        .query(
            "read INFORMATION_SCHEMA.COLUMNS",
            Statement::builder(
                "SELECT TABLE_NAME, COLUMN_NAME, SPANNER_TYPE FROM INFORMATION_SCHEMA.COLUMNS \
                 WHERE TABLE_SCHEMA = '' ORDER BY TABLE_NAME, ORDINAL_POSITION",
            )
            .build(),
        )
        .await?;
    let keys = database
        .query(
            "read INFORMATION_SCHEMA.INDEX_COLUMNS",
            Statement::builder(
                "SELECT TABLE_NAME, COLUMN_NAME FROM INFORMATION_SCHEMA.INDEX_COLUMNS \
                 WHERE TABLE_SCHEMA = '' AND INDEX_NAME = 'PRIMARY_KEY' \
                 ORDER BY TABLE_NAME, ORDINAL_POSITION",
            )
            .build(),
        )
        .await?;
    let text =
        |row: &google_cloud_spanner::result::Row, i: usize| -> Result<String, LauncherError> {
            row.get::<Option<String>>(i)
                .map(Option::unwrap_or_default)
                .map_err(|e| database.error("read the schema", &e))
        };
    let mut tables: BTreeMap<String, SpannerTable> = BTreeMap::new();
    for row in &columns {
        let table = text(row, 0)?;
        let entry = tables.entry(table.clone()).or_insert_with(|| SpannerTable {
            name: table,
            columns: Vec::new(),
            primary_key: Vec::new(),
        });
        entry.columns.push((text(row, 1)?, text(row, 2)?));
    }
    for row in &keys {
        if let Some(table) = tables.get_mut(&text(row, 0)?) {
            table.primary_key.push(text(row, 1)?);
        }
    }
    // Views have no primary key; the change stream never reports them.
    tables.retain(|_, table| !table.primary_key.is_empty());
    Ok(tables)
}

/// A Spanner table and the MySQL table its changes go to, with the Spanner → MySQL column
/// names (before checking which exist in MySQL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableMapping {
    /// The Spanner table.
    pub spanner: SpannerTable,
    /// The MySQL table name.
    pub mysql_table: String,
    /// `(Spanner column, MySQL column)` for columns that have a MySQL side.
    pub columns: Vec<(String, String)>,
    /// The MySQL names of the key that identifies rows on both sides.
    pub key: Vec<String>,
}

/// The mapping of `table`: from the session file when given, else identity. `None` when the
/// session says the table exists only in Spanner.
pub fn map_table(table: &SpannerTable, session: Option<&Session>) -> Option<TableMapping> {
    let Some(session) = session else {
        return Some(TableMapping {
            spanner: table.clone(),
            mysql_table: table.name.clone(),
            columns: table
                .columns
                .iter()
                .map(|(name, _)| (name.clone(), name.clone()))
                .collect(),
            key: table.primary_key.clone(),
        });
    };
    let mapped = session.table(&table.name)?;
    let mysql_table = mapped.source_name()?.to_string();
    let columns: Vec<(String, String)> = mapped
        .columns
        .iter()
        .filter_map(|c| Some((c.spanner_name.clone(), c.source.as_ref()?.name.clone())))
        .collect();
    let key = if mapped.source_primary_key.is_empty() {
        table
            .primary_key
            .iter()
            .map(|k| {
                columns
                    .iter()
                    .find(|(s, _)| s == k)
                    .map_or_else(|| k.clone(), |(_, m)| m.clone())
            })
            .collect()
    } else {
        mapped.source_primary_key.clone()
    };
    Some(TableMapping {
        spanner: table.clone(),
        mysql_table,
        columns,
        key,
    })
}

/// `mapping` (an identity mapping) with the MySQL names of schema overrides: the renamed
/// source table and columns.
pub fn with_overrides(
    mut mapping: TableMapping,
    overrides: &revrepl_shard_routing::SchemaOverrides,
) -> TableMapping {
    let spanner_table = mapping.spanner.name.clone();
    mapping.mysql_table = overrides.source_table(&spanner_table).to_string();
    for (spanner, mysql) in &mut mapping.columns {
        *mysql = overrides.source_column(&spanner_table, spanner).to_string();
    }
    for key in &mut mapping.key {
        *key = overrides.source_column(&spanner_table, key).to_string();
    }
    mapping
}

/// One compared column.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedColumn {
    /// Its position in the Spanner table (and in the Spanner scan's rows).
    pub spanner_index: usize,
    /// The MySQL column name, as MySQL spells it.
    pub mysql_name: String,
    /// How values are made canonical.
    pub rule: Rule,
}

/// What is compared of one table on one shard.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardPlan {
    /// The MySQL table.
    pub mysql_table: String,
    /// The compared columns, in Spanner column order.
    pub columns: Vec<PlannedColumn>,
    /// Positions in [`columns`](Self::columns) of the key.
    pub key: Vec<usize>,
}

/// The plan of `mapping` on the shard behind `conn`, or why the table cannot be compared
/// there. Spanner columns in `ignore_columns` are not compared; values compare by the
/// writer's `choices`.
pub async fn shard_plan(
    conn: &mut Conn,
    mapping: &TableMapping,
    zone: SourceZone,
    ignore_columns: &[String],
    choices: WriterChoices,
) -> Result<Result<ShardPlan, String>, mysql_async::Error> {
    type ColumnRow = (String, String, Option<u64>, String, Option<u64>);
    let rows: Vec<ColumnRow> = conn
        .exec(
            "SELECT COLUMN_NAME, DATA_TYPE, DATETIME_PRECISION, EXTRA, NUMERIC_SCALE \
             FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION",
            (&mapping.mysql_table,),
        )
        .await?;
    // MariaDB's JSON is a LONGTEXT with the column check `json_valid(`c`)`.
    let version: Option<String> = conn.query_first("SELECT VERSION()").await?;
    let json_columns: Vec<(String, String)> = if version.is_some_and(|v| v.contains("MariaDB")) {
        conn.exec(
            "SELECT CONSTRAINT_NAME, CHECK_CLAUSE FROM information_schema.CHECK_CONSTRAINTS \
             WHERE CONSTRAINT_SCHEMA = DATABASE() AND TABLE_NAME = ? AND LEVEL = 'Column'",
            (&mapping.mysql_table,),
        )
        .await?
    } else {
        Vec::new()
    };
    let is_mariadb_json = |column: &str| {
        json_columns.iter().any(|(name, clause)| {
            name == column
                && clause
                    .replace(' ', "")
                    .eq_ignore_ascii_case(&format!("json_valid(`{column}`)"))
        })
    };
    if rows.is_empty() {
        return Ok(Err(format!(
            "MySQL table `{}` does not exist on this shard",
            mapping.mysql_table
        )));
    }
    let mut columns = Vec::new();
    for (spanner_name, mysql_name) in &mapping.columns {
        // The writer never writes these (`writer.ignore_columns`); key columns stay.
        if ignore_columns.contains(spanner_name) && !mapping.key.contains(mysql_name) {
            continue;
        }
        let Some(spanner_index) = mapping.spanner.index_of(spanner_name) else {
            continue;
        };
        let found = rows.iter().find(|(name, _, _, extra, _)| {
            name.eq_ignore_ascii_case(mysql_name)
                && !extra.to_ascii_uppercase().contains("GENERATED")
        });
        let Some((name, data_type, precision, _, scale)) = found else {
            continue;
        };
        let spanner_type = &mapping.spanner.columns[spanner_index].1;
        let precision = precision.and_then(|p| u8::try_from(p).ok());
        columns.push(PlannedColumn {
            spanner_index,
            mysql_name: name.clone(),
            rule: rule_for_column(
                spanner_type,
                &MySqlColumn {
                    data_type,
                    datetime_precision: precision,
                    numeric_scale: scale.and_then(|s| u32::try_from(s).ok()),
                    mariadb_json: data_type.eq_ignore_ascii_case("longtext")
                        && is_mariadb_json(name),
                },
                zone,
                choices,
            ),
        });
    }
    let mut key = Vec::new();
    for name in &mapping.key {
        match columns
            .iter()
            .position(|c| c.mysql_name.eq_ignore_ascii_case(name))
        {
            Some(index) => key.push(index),
            None => {
                return Ok(Err(format!(
                    "key column {name:?} has no counterpart in both Spanner table {} and MySQL \
                     table `{}`: rows cannot be matched",
                    mapping.spanner.name, mapping.mysql_table
                )));
            }
        }
    }
    if key.is_empty() {
        return Ok(Err(format!(
            "table `{}` has no key to match rows by",
            mapping.mysql_table
        )));
    }
    Ok(Ok(ShardPlan {
        mysql_table: mapping.mysql_table.clone(),
        columns,
        key,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> SpannerTable {
        SpannerTable {
            name: "Users".into(),
            columns: vec![
                ("id".into(), "INT64".into()),
                ("shard".into(), "STRING(50)".into()),
                ("name".into(), "STRING(MAX)".into()),
            ],
            primary_key: vec!["id".into()],
        }
    }

    #[test]
    fn schema_overrides_rename_the_table_columns_and_key() {
        let overrides = revrepl_shard_routing::SchemaOverrides::from_json(
            "o.json",
            r#"{"renamedTables": {"users": "Users"},
                "renamedColumns": {"users": {"user_id": "id", "full_name": "name"}}}"#,
        )
        .expect("valid");
        let mapping = with_overrides(map_table(&users(), None).expect("mapped"), &overrides);
        assert_eq!(mapping.mysql_table, "users");
        assert_eq!(
            mapping.columns,
            [
                ("id".to_string(), "user_id".to_string()),
                ("shard".to_string(), "shard".to_string()),
                ("name".to_string(), "full_name".to_string()),
            ]
        );
        assert_eq!(mapping.key, ["user_id"]);
    }

    #[test]
    fn identity_maps_every_column() {
        let mapping = map_table(&users(), None).expect("mapped");
        assert_eq!(mapping.mysql_table, "Users");
        assert_eq!(mapping.columns.len(), 3);
        assert_eq!(mapping.key, ["id"]);
    }

    #[test]
    fn the_session_renames_and_drops_columns() {
        let session = Session::from_json(
            "session.json",
            revrepl_test_services::workload::WORKLOAD_SESSION,
        )
        .expect("session");
        let mapping = map_table(&users(), Some(&session)).expect("mapped");
        assert_eq!(mapping.mysql_table, "users");
        // `shard` exists only in Spanner.
        let pairs: Vec<(&str, &str)> = mapping
            .columns
            .iter()
            .map(|(s, m)| (s.as_str(), m.as_str()))
            .collect();
        assert_eq!(pairs, [("id", "id"), ("name", "name"), ("score", "score")]);
        assert_eq!(mapping.key, ["id"]);
        let audit = SpannerTable {
            name: "Audit".into(),
            ..users()
        };
        assert_eq!(map_table(&audit, Some(&session)), None);
    }
}
