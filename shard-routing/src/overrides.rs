//! Schema overrides: table and column renames between MySQL (the source) and Spanner, for
//! migrations without a session file — the newer reference template's `schemaOverridesFilePath`,
//! `tableOverrides` and `columnOverrides`, with their semantics:
//!
//! - Renames go from the **source** name to the Spanner name. Everything not renamed has the
//!   same name on both sides.
//! - The file is JSON: `{"renamedTables": {"SourceTable": "SpannerTable"}, "renamedColumns":
//!   {"SourceTable": {"source_column": "SpannerColumn"}}}`; both members are optional. Column
//!   renames are keyed by the table's **source** name.
//! - `tableOverrides` is text: `[{SourceTable, SpannerTable}, {…, …}]`; `columnOverrides` is
//!   `[{SourceTable.source_column, SourceTable.SpannerColumn}, …]`, where both sides name the
//!   same (source) table — renaming a table is `tableOverrides`' job.
//! - Replicating back, a Spanner table's MySQL table is the source table renamed to it (else the
//!   same name), and a Spanner column's MySQL column the source column of that table renamed to
//!   it (else the same name).
//!
//! Where the reference would pick one of two sources renamed to the same Spanner name
//! arbitrarily (the first found in a hash map), revrepl refuses the overrides: writing back,
//! one Spanner name must lead to one MySQL name.
//!
//! Only one of a session file, an overrides file, or the inline overrides may be configured
//! (checked by the configuration).

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::error::RoutingError;

/// Table and column renames, source name → Spanner name.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SchemaOverrides {
    /// Source table → Spanner table.
    tables: BTreeMap<String, String>,
    /// Source table → (source column → Spanner column).
    columns: BTreeMap<String, BTreeMap<String, String>>,
    /// Spanner table → source table (the reverse of `tables`).
    source_tables: BTreeMap<String, String>,
    /// Source table → (Spanner column → source column).
    source_columns: BTreeMap<String, BTreeMap<String, String>>,
}

impl SchemaOverrides {
    /// Overrides from renames (source → Spanner); `origin` names them in errors. Refused when
    /// a name is empty or two sources are renamed to one Spanner name.
    pub fn new(
        origin: &str,
        tables: BTreeMap<String, String>,
        columns: BTreeMap<String, BTreeMap<String, String>>,
    ) -> Result<Self, RoutingError> {
        let invalid = |problem: String| RoutingError::SchemaOverrides {
            origin: origin.to_string(),
            problem,
        };
        let mut source_tables = BTreeMap::new();
        for (source, spanner) in &tables {
            if source.is_empty() || spanner.is_empty() {
                return Err(invalid(format!(
                    "table rename {source:?} → {spanner:?} has an empty name"
                )));
            }
            if let Some(other) = source_tables.insert(spanner.clone(), source.clone()) {
                return Err(invalid(format!(
                    "source tables {other:?} and {source:?} are both renamed to Spanner table \
                     {spanner:?}: replicating back, its changes could go to either"
                )));
            }
        }
        let mut source_columns = BTreeMap::new();
        for (table, renames) in &columns {
            let reverse: &mut BTreeMap<String, String> =
                source_columns.entry(table.clone()).or_default();
            for (source, spanner) in renames {
                if table.is_empty() || source.is_empty() || spanner.is_empty() {
                    return Err(invalid(format!(
                        "column rename {table:?}.{source:?} → {spanner:?} has an empty name"
                    )));
                }
                if let Some(other) = reverse.insert(spanner.clone(), source.clone()) {
                    return Err(invalid(format!(
                        "columns {other:?} and {source:?} of source table {table:?} are both \
                         renamed to Spanner column {spanner:?}"
                    )));
                }
            }
        }
        Ok(Self {
            tables,
            columns,
            source_tables,
            source_columns,
        })
    }

    /// Reads an overrides file (`schemaOverridesFilePath`).
    pub fn load(path: &Path) -> Result<Self, RoutingError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| RoutingError::ReadFile {
            file: "schema overrides file",
            path: origin.clone(),
            source,
        })?;
        Self::from_json(&origin, &text)
    }

    /// Reads overrides-file `text`; `origin` names it in errors.
    pub fn from_json(origin: &str, text: &str) -> Result<Self, RoutingError> {
        let syntax = |reason: String| RoutingError::FileSyntax {
            file: "schema overrides file",
            path: origin.to_string(),
            reason,
        };
        let document: Value = serde_json::from_str(text).map_err(|e| syntax(e.to_string()))?;
        let Value::Object(members) = document else {
            return Err(syntax(
                "expected an object with renamedTables and renamedColumns".into(),
            ));
        };
        let mut tables = BTreeMap::new();
        let mut columns = BTreeMap::new();
        for (name, value) in &members {
            match (name.as_str(), value) {
                (_, Value::Null) => {}
                ("renamedTables", value) => tables = string_map(value, "renamedTables", syntax)?,
                ("renamedColumns", Value::Object(per_table)) => {
                    for (table, renames) in per_table {
                        let path = format!("renamedColumns[{table:?}]");
                        columns.insert(table.clone(), string_map(renames, &path, syntax)?);
                    }
                }
                ("renamedColumns", _) => {
                    return Err(syntax(
                        "renamedColumns must be an object of objects: {\"SourceTable\": \
                         {\"source_column\": \"SpannerColumn\"}}"
                            .into(),
                    ));
                }
                (other, _) => {
                    return Err(syntax(format!(
                        "unknown member {other:?} (expected renamedTables and renamedColumns)"
                    )));
                }
            }
        }
        Self::new(origin, tables, columns)
    }

    /// Parses the reference's `tableOverrides` text, `[{SourceTable, SpannerTable}, …]`.
    pub fn parse_table_overrides(text: &str) -> Result<BTreeMap<String, String>, RoutingError> {
        let origin = "table_overrides";
        let mut tables = BTreeMap::new();
        for (source, spanner) in pairs(origin, text)? {
            tables.insert(source, spanner);
        }
        Ok(tables)
    }

    /// Parses the reference's `columnOverrides` text, `[{Table.source_column,
    /// Table.SpannerColumn}, …]`, into source table → (source column → Spanner column).
    pub fn parse_column_overrides(
        text: &str,
    ) -> Result<BTreeMap<String, BTreeMap<String, String>>, RoutingError> {
        let origin = "column_overrides";
        let invalid = |problem: String| RoutingError::SchemaOverrides {
            origin: origin.to_string(),
            problem,
        };
        let mut columns: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (source, spanner) in pairs(origin, text)? {
            let split = |name: &str| {
                let parts: Vec<&str> = name.split('.').collect();
                match parts.as_slice() {
                    [table, column] => Ok((table.trim().to_string(), column.trim().to_string())),
                    _ => Err(invalid(format!(
                        "{name:?} is not Table.column (exactly one dot)"
                    ))),
                }
            };
            let (table, column) = split(&source)?;
            let (spanner_table, spanner_column) = split(&spanner)?;
            if table != spanner_table {
                return Err(invalid(format!(
                    "pair {{{source}, {spanner}}} names two tables; both sides name the source \
                     table ({table:?}) — rename tables with table_overrides"
                )));
            }
            columns
                .entry(table)
                .or_default()
                .insert(column, spanner_column);
        }
        Ok(columns)
    }

    /// Whether nothing is renamed.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty() && self.columns.values().all(BTreeMap::is_empty)
    }

    /// The MySQL table of `spanner_table`: the source table renamed to it, else the same name.
    pub fn source_table<'a>(&'a self, spanner_table: &'a str) -> &'a str {
        self.source_tables
            .get(spanner_table)
            .map_or(spanner_table, String::as_str)
    }

    /// The MySQL column of `spanner_column` of `spanner_table`: the column of the table's
    /// source table renamed to it, else the same name.
    pub fn source_column<'a>(&'a self, spanner_table: &str, spanner_column: &'a str) -> &'a str {
        self.source_columns
            .get(self.source_table(spanner_table))
            .and_then(|renames| renames.get(spanner_column))
            .map_or(spanner_column, String::as_str)
    }

    /// The table renames, source → Spanner.
    pub fn renamed_tables(&self) -> &BTreeMap<String, String> {
        &self.tables
    }

    /// The column renames per source table, source → Spanner.
    pub fn renamed_columns(&self) -> &BTreeMap<String, BTreeMap<String, String>> {
        &self.columns
    }
}

/// A JSON object of strings.
fn string_map(
    value: &Value,
    path: &str,
    syntax: impl Fn(String) -> RoutingError,
) -> Result<BTreeMap<String, String>, RoutingError> {
    let Value::Object(members) = value else {
        return Err(syntax(format!("{path} must be an object of names")));
    };
    members
        .iter()
        .map(|(key, value)| match value {
            Value::String(text) => Ok((key.clone(), text.clone())),
            _ => Err(syntax(format!("{path}[{key:?}] must be a string"))),
        })
        .collect()
}

/// The `{a, b}` pairs of `[{a, b}, {c, d}]`.
fn pairs(origin: &str, text: &str) -> Result<Vec<(String, String)>, RoutingError> {
    let invalid = |problem: String| RoutingError::SchemaOverrides {
        origin: origin.to_string(),
        problem,
    };
    let trimmed = text.trim();
    let inner = trimmed
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .ok_or_else(|| {
            invalid("expected a list of pairs in brackets: [{source, spanner}, …]".into())
        })?;
    let mut pairs = Vec::new();
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let body = rest
            .strip_prefix('{')
            .ok_or_else(|| invalid(format!("expected {{ at {rest:?}")))?;
        let end = body
            .find('}')
            .ok_or_else(|| invalid(format!("no closing }} after {rest:?}")))?;
        let pair = &body[..end];
        let parts: Vec<&str> = pair.split(',').map(str::trim).collect();
        match parts.as_slice() {
            [source, spanner] if !source.is_empty() && !spanner.is_empty() => {
                pairs.push(((*source).to_string(), (*spanner).to_string()));
            }
            _ => {
                return Err(invalid(format!(
                    "malformed pair {{{pair}}}: expected {{source, spanner}}"
                )));
            }
        }
        rest = body[end + 1..].trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after.trim_start();
        } else if !rest.is_empty() {
            return Err(invalid(format!("expected , between pairs at {rest:?}")));
        }
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_reference_file_and_maps_back() {
        let overrides = SchemaOverrides::from_json(
            "o.json",
            r#"{"renamedTables": {"person": "Person", "orders": "Orders"},
                "renamedColumns": {"person": {"first_name": "FirstName"},
                                   "orders": {"total": "Amount"}}}"#,
        )
        .expect("valid");
        assert_eq!(overrides.source_table("Person"), "person");
        assert_eq!(overrides.source_table("Other"), "Other");
        assert_eq!(overrides.source_column("Person", "FirstName"), "first_name");
        assert_eq!(overrides.source_column("Person", "Age"), "Age");
        assert_eq!(overrides.source_column("Orders", "Amount"), "total");
        assert_eq!(
            overrides.source_column("Other", "Amount"),
            "Amount",
            "column renames belong to their table"
        );
        let only_columns =
            SchemaOverrides::from_json("o.json", r#"{"renamedColumns": {"t": {"a": "b"}}}"#)
                .expect("valid");
        assert_eq!(only_columns.source_column("t", "b"), "a");
        assert!(
            SchemaOverrides::from_json("o.json", "{}")
                .expect("valid")
                .is_empty()
        );
    }

    #[test]
    fn reads_the_reference_inline_texts() {
        let tables =
            SchemaOverrides::parse_table_overrides("[{Singers, Vocalists}, {Albums, Records}]")
                .expect("valid");
        assert_eq!(tables.get("Singers").map(String::as_str), Some("Vocalists"));
        assert_eq!(tables.get("Albums").map(String::as_str), Some("Records"));
        let columns = SchemaOverrides::parse_column_overrides(
            "[{Singers.SingerName, Singers.TalentName}, {Albums.AlbumName, Albums.RecordName}]",
        )
        .expect("valid");
        let overrides = SchemaOverrides::new("inline", tables, columns).expect("valid");
        // A Spanner column of a renamed table: its source table's rename applies.
        assert_eq!(overrides.source_table("Vocalists"), "Singers");
        assert_eq!(
            overrides.source_column("Vocalists", "TalentName"),
            "SingerName"
        );
        assert_eq!(
            SchemaOverrides::parse_table_overrides("[]")
                .map(|t| t.len())
                .ok(),
            Some(0)
        );
    }

    #[test]
    fn refuses_what_is_malformed_or_ambiguous() {
        for bad in [
            "{a, b}",
            "[{a}]",
            "[{a, b, c}]",
            "[{a, b} {c, d}]",
            "[{a, b",
        ] {
            let error = SchemaOverrides::parse_table_overrides(bad).expect_err(bad);
            assert!(
                error.to_string().starts_with("table_overrides: "),
                "{error}"
            );
        }
        let error =
            SchemaOverrides::parse_column_overrides("[{t.a, u.b}]").expect_err("two tables");
        assert!(error.to_string().contains("table_overrides"), "{error}");
        assert!(SchemaOverrides::parse_column_overrides("[{a, t.b}]").is_err());
        let error =
            SchemaOverrides::from_json("o.json", r#"{"renamedTables": {"a": "T", "b": "T"}}"#)
                .expect_err("ambiguous");
        assert!(
            error
                .to_string()
                .contains("both renamed to Spanner table \"T\""),
            "{error}"
        );
        let error =
            SchemaOverrides::from_json("o.json", r#"{"renamedTable": {}}"#).expect_err("typo");
        assert!(
            error
                .to_string()
                .contains("unknown member \"renamedTable\""),
            "{error}"
        );
        assert!(SchemaOverrides::from_json("o.json", r#"{"renamedColumns": {"t": 1}}"#).is_err());
    }
}
