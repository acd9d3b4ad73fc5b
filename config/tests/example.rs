//! `config/examples/revrepl.toml` parses, and mentions every key of the configuration (set, or
//! commented out), so that the documented example cannot fall behind the code.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use revrepl_config::Config;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/revrepl.toml")
}

/// Every key path of `value` (`reader.window`), objects descended into.
fn key_paths(prefix: &str, value: &serde_json::Value, out: &mut BTreeSet<String>) {
    if let serde_json::Value::Object(map) = value {
        for (key, inner) in map {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            if inner.is_object() {
                key_paths(&path, inner, out);
            } else {
                out.insert(path);
            }
        }
    }
}

/// Key paths written in the file, as `key = ...` or `# key = ...` lines under their section
/// (`[section]`, or `# [section]` for an optional one shown commented out).
fn documented_keys(text: &str) -> BTreeSet<String> {
    let mut section = String::new();
    let mut keys = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim();
        let uncommented = line.strip_prefix('#').map_or(line, str::trim_start);
        if let Some(name) = uncommented
            .strip_prefix('[')
            .and_then(|l| l.strip_suffix(']'))
        {
            section = name.trim().to_string();
            continue;
        }
        let assignment = line.strip_prefix('#').map_or(line, str::trim_start);
        let Some((key, _)) = assignment.split_once(" = ") else {
            continue;
        };
        if key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
            keys.insert(if section.is_empty() {
                key.to_string()
            } else {
                format!("{section}.{key}")
            });
        }
    }
    keys
}

#[test]
fn the_example_parses() {
    let config = Config::load(Some(&example()), &[]).expect("the example parses");
    assert_eq!(config.spanner.change_stream, "revrepl_stream");
    assert_eq!(config.reader.window.to_string(), "2s");
}

#[test]
fn the_example_mentions_every_key() {
    // Optional sections (absent by default) are set, so that their keys count too.
    let optional = ["writer.transformation.library=/lib/libx.so".to_string()];
    let config = Config::load(Some(&example()), &optional).expect("the example parses");
    let mut all = BTreeSet::new();
    key_paths(
        "",
        &serde_json::to_value(&config).expect("serializable"),
        &mut all,
    );
    let text = std::fs::read_to_string(example()).expect("read the example");
    let documented = documented_keys(&text);
    let missing: Vec<&String> = all.difference(&documented).collect();
    assert!(
        missing.is_empty(),
        "config/examples/revrepl.toml does not mention {missing:?}: add each with a comment"
    );
    let unknown: Vec<&String> = documented.difference(&all).collect();
    assert!(
        unknown.is_empty(),
        "config/examples/revrepl.toml mentions keys the configuration does not have: {unknown:?}"
    );
}
