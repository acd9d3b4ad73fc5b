//! Chosen rows of a Spanner table, looked up by the MySQL key's canonical values at a read
//! point (continuous verification and repair).
//!
//! The key's canonical text turns back into a Spanner value for integer (`INT64`), text
//! (`STRING`), decimal (`NUMERIC`) and date (`DATE`) key columns: the text is the value's
//! Spanner wire text. When the MySQL key maps onto Spanner's primary key (in order, the usual
//! case), rows are point reads by key (the read API with a key set); otherwise a query matches
//! the columns (`CAST(@k AS <type>)`). Tables keyed by other types (timestamps, bytes, floats,
//! booleans) cannot be looked up; whole-table `validate` still compares them.

use google_cloud_spanner::key::{Key, KeyRange, KeySet};
use google_cloud_spanner::read::ReadRequest;
use google_cloud_spanner::statement::Statement;
use google_cloud_spanner::types;
use google_cloud_spanner::value::Value as SpannerValue;

use super::canonical::{Canonical, Rule};
use super::plan::{ShardPlan, SpannerTable};
use super::snapshot::ReadPoint;
use super::spanner_quote;
use crate::error::LauncherError;
use crate::spanner::SourceDatabase;

/// Keys per query.
const KEYS_PER_QUERY: usize = 100;

/// How one key column is matched.
#[derive(Debug, Clone)]
struct KeyColumn {
    /// The quoted Spanner column.
    column: String,
    /// The Spanner type to cast the key text to; `None` for strings.
    cast: Option<&'static str>,
}

/// Looks up rows of one table by the plan's key.
#[derive(Debug, Clone)]
pub struct KeyLookup {
    table: String,
    select: String,
    key: Vec<KeyColumn>,
    /// The table's columns, for point reads; `None` when the MySQL key is not Spanner's
    /// primary key.
    read_columns: Option<Vec<String>>,
    /// Positions of Spanner's primary-key columns among the table's columns.
    primary_key: Vec<usize>,
}

impl KeyLookup {
    /// The lookup for `table` with `plan`'s key, or why its key cannot be looked up.
    pub fn new(table: &SpannerTable, plan: &ShardPlan) -> Result<Self, String> {
        let mut key = Vec::new();
        for index in &plan.key {
            let column = &plan.columns[*index];
            let (name, spanner_type) = &table.columns[column.spanner_index];
            let base = spanner_type
                .split('(')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_uppercase();
            let cast = match (&column.rule, base.as_str()) {
                (Rule::Integer, "INT64") => Some("INT64"),
                (Rule::Text { trim_spaces: false }, "STRING") => None,
                (Rule::Decimal { round_to: None }, "NUMERIC") => Some("NUMERIC"),
                (Rule::Date, "DATE") => Some("DATE"),
                _ => {
                    return Err(format!(
                        "key column {name} ({spanner_type}, MySQL {}) cannot be looked up by \
                         value; only INT64, STRING, NUMERIC and DATE keys can",
                        column.mysql_name
                    ));
                }
            };
            key.push(KeyColumn {
                column: spanner_quote(name),
                cast,
            });
        }
        let columns: Vec<String> = table
            .columns
            .iter()
            .map(|(name, _)| spanner_quote(name))
            .collect();
        let key_names: Vec<&str> = plan
            .key
            .iter()
            .map(|i| table.columns[plan.columns[*i].spanner_index].0.as_str())
            .collect();
        let is_primary_key = key_names.len() == table.primary_key.len()
            && key_names
                .iter()
                .zip(&table.primary_key)
                .all(|(a, b)| a == b);
        let read_columns =
            is_primary_key.then(|| table.columns.iter().map(|(name, _)| name.clone()).collect());
        let primary_key = table
            .primary_key
            .iter()
            .filter_map(|name| table.index_of(name))
            .collect();
        Ok(Self {
            read_columns,
            primary_key,
            table: table.name.clone(),
            select: format!(
                "SELECT {} FROM {}",
                columns.join(", "),
                spanner_quote(&table.name)
            ),
            key,
        })
    }

    /// Whether [`KeyLookup::page`] can read this table in key order.
    pub fn pages(&self) -> bool {
        self.read_columns.is_some()
    }

    /// Up to `limit` rows (all columns) after the primary key `after` (from the start when
    /// `None`), in primary-key order, as Spanner holds them at `point`; empty when the table
    /// cannot be paged ([`KeyLookup::pages`]).
    pub async fn page(
        &self,
        database: &SourceDatabase,
        point: ReadPoint,
        after: Option<&[SpannerValue]>,
        limit: u64,
    ) -> Result<Vec<Vec<SpannerValue>>, LauncherError> {
        let Some(columns) = &self.read_columns else {
            return Ok(Vec::new());
        };
        let operation = format!("read a page of {}", self.table);
        let bound = point.bound().map_err(|e| database.error(&operation, &e))?;
        let keys = match after {
            // Every key has the empty prefix: (after, []] is everything after.
            Some(after) => KeySet::from(KeyRange::open_closed(
                Key::new(after.to_vec()),
                Key::new(Vec::new()),
            )),
            None => KeySet::all(),
        };
        let read = ReadRequest::builder(self.table.clone(), columns.clone())
            .with_keys(keys)
            .set_limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .build();
        let mut result = database
            .client
            .single_use()
            .set_timestamp_bound(bound)
            .build()
            .execute_read(read)
            .await
            .map_err(|e| database.error(&operation, &e))?;
        let mut rows = Vec::new();
        while let Some(row) = result.next().await {
            let row = row.map_err(|e| database.error(&operation, &e))?;
            rows.push(row.raw_values().to_vec());
        }
        Ok(rows)
    }

    /// The Spanner primary key of a row read by [`KeyLookup::page`].
    pub fn primary_key_of(&self, row: &[SpannerValue]) -> Vec<SpannerValue> {
        self.primary_key
            .iter()
            .filter_map(|i| row.get(*i).cloned())
            .collect()
    }

    /// Visits the Spanner rows (all columns, in table order) of `keys` as Spanner holds them at
    /// `point`; keys without a row are not visited.
    pub async fn rows(
        &self,
        database: &SourceDatabase,
        point: ReadPoint,
        keys: &[Vec<Canonical>],
        visit: &mut dyn FnMut(&[SpannerValue]),
    ) -> Result<(), LauncherError> {
        if keys.is_empty() {
            return Ok(());
        }
        let operation = format!("look up rows of {} by key", self.table);
        let bound = point.bound().map_err(|e| database.error(&operation, &e))?;
        if let Some(columns) = &self.read_columns {
            let mut set = KeySet::builder();
            for values in keys {
                set = set.add_key(Key::new(
                    values
                        .iter()
                        .map(|v| match v {
                            Some(text) => SpannerValue::from(text.clone()),
                            None => SpannerValue::null(),
                        })
                        .collect(),
                ));
            }
            let read = ReadRequest::builder(self.table.clone(), columns.clone())
                .with_keys(set.build())
                .build();
            let mut result = database
                .client
                .single_use()
                .set_timestamp_bound(bound)
                .build()
                .execute_read(read)
                .await
                .map_err(|e| database.error(&operation, &e))?;
            while let Some(row) = result.next().await {
                let row = row.map_err(|e| database.error(&operation, &e))?;
                visit(row.raw_values());
            }
            return Ok(());
        }
        for chunk in keys.chunks(KEYS_PER_QUERY) {
            let mut conditions = Vec::new();
            let mut params = Vec::new();
            for (row, values) in chunk.iter().enumerate() {
                let mut parts = Vec::new();
                for (position, (column, value)) in self.key.iter().zip(values).enumerate() {
                    match value {
                        None => parts.push(format!("{} IS NULL", column.column)),
                        Some(text) => {
                            let name = format!("k{row}_{position}");
                            parts.push(match column.cast {
                                Some(cast) => {
                                    format!("{} = CAST(@{name} AS {cast})", column.column)
                                }
                                None => format!("{} = @{name}", column.column),
                            });
                            params.push((name, text.clone()));
                        }
                    }
                }
                conditions.push(format!("({})", parts.join(" AND ")));
            }
            let sql = format!("{} WHERE {}", self.select, conditions.join(" OR "));
            let mut statement = Statement::builder(sql);
            for (name, text) in params {
                statement = statement.add_typed_param(name, text, types::string());
            }
            let mut result = database
                .client
                .single_use()
                .set_timestamp_bound(bound.clone())
                .build()
                .execute_query(statement.build())
                .await
                .map_err(|e| database.error(&operation, &e))?;
            while let Some(row) = result.next().await {
                let row = row.map_err(|e| database.error(&operation, &e))?;
                visit(row.raw_values());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::plan::PlannedColumn;

    fn table(columns: &[(&str, &str)], key: &[&str]) -> SpannerTable {
        SpannerTable {
            name: "T".into(),
            columns: columns
                .iter()
                .map(|(n, t)| (n.to_string(), t.to_string()))
                .collect(),
            primary_key: key.iter().map(|k| k.to_string()).collect(),
        }
    }

    fn plan(rules: Vec<Rule>, key: Vec<usize>) -> ShardPlan {
        ShardPlan {
            mysql_table: "t".into(),
            columns: rules
                .into_iter()
                .enumerate()
                .map(|(i, rule)| PlannedColumn {
                    spanner_index: i,
                    mysql_name: format!("c{i}"),
                    rule,
                })
                .collect(),
            key,
        }
    }

    #[test]
    fn spanner_keys_are_point_reads_and_other_keys_queries() {
        let text = Rule::Text { trim_spaces: false };
        let t = table(
            &[("a", "INT64"), ("b", "STRING(10)"), ("c", "STRING(MAX)")],
            &["a", "b"],
        );
        let by_key = KeyLookup::new(
            &t,
            &plan(vec![Rule::Integer, text.clone(), text.clone()], vec![0, 1]),
        )
        .expect("INT64 and STRING keys");
        assert_eq!(by_key.read_columns.as_deref().map(<[_]>::len), Some(3));
        // A MySQL key that is not Spanner's primary key: matched by a query, with casts.
        let other = KeyLookup::new(&t, &plan(vec![Rule::Integer, text.clone(), text], vec![0]))
            .expect("an INT64 column");
        assert!(other.read_columns.is_none());
        assert_eq!(other.key[0].cast, Some("INT64"));
    }

    #[test]
    fn keys_of_other_types_are_refused_by_name() {
        let t = table(&[("at", "TIMESTAMP")], &["at"]);
        let refused = KeyLookup::new(
            &t,
            &plan(vec![Rule::DateTime { fsp: 6, zone: None }], vec![0]),
        )
        .expect_err("TIMESTAMP keys cannot be looked up");
        assert!(refused.contains("key column at (TIMESTAMP"), "{refused}");
    }
}
