//! The Grafana dashboard shipped in `deploy/grafana/`: which metrics its queries use, so tests
//! can check each is documented and really exported.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// `deploy/grafana/revrepl-dashboard.json` in this repository.
pub fn dashboard_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/grafana/revrepl-dashboard.json")
}

/// Every Prometheus metric family the dashboard's queries (panel targets and template
/// variables) name, with histogram suffixes (`_bucket`, `_sum`, `_count`) removed.
pub fn dashboard_metrics(dashboard: &serde_json::Value) -> BTreeSet<String> {
    let mut texts = Vec::new();
    collect_queries(dashboard, &mut texts);
    let mut metrics = BTreeSet::new();
    for text in texts {
        let mut rest = text.as_str();
        while let Some(at) = rest.find("revrepl_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| name.strip_suffix(suffix))
                .unwrap_or(&name);
            metrics.insert(family.to_string());
        }
    }
    metrics
}

fn collect_queries(value: &serde_json::Value, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("expr" | "query" | "definition", serde_json::Value::String(text)) => {
                        out.push(text.clone());
                    }
                    _ => collect_queries(value, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| collect_queries(v, out)),
        _ => {}
    }
}
