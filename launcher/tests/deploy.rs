//! The Kubernetes manifests in `deploy/k8s/` validate against the Kubernetes API schemas
//! (`kubernetes-validate --strict`, installed into the project's `.venv` on first use), and the
//! configuration they carry parses.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the launcher lives in the repository")
        .to_path_buf()
}

/// `.venv/bin/kubernetes-validate`, installed by the script under an exclusive lock if missing.
fn kubernetes_validate(root: &Path) -> PathBuf {
    let bin = root.join(".venv/bin/kubernetes-validate");
    if bin.is_file() {
        return bin;
    }
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/tmp/revrepl-install-kubernetes-validate.lock")
        .expect("open the install lock");
    lock.lock().expect("take the install lock");
    if !bin.is_file() {
        let output = Command::new("bash")
            .arg(root.join("tests/scripts/install-kubernetes-validate.sh"))
            .output()
            .expect("run install-kubernetes-validate.sh");
        assert!(
            output.status.success(),
            "install-kubernetes-validate.sh failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    bin
}

fn manifests(root: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root.join("deploy/k8s"))
        .expect("deploy/k8s")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn kubernetes_manifests_validate_strictly() {
    let root = repo_root();
    let files = manifests(&root);
    assert!(
        files.len() >= 8,
        "expected the manifests in deploy/k8s, found {files:?}"
    );
    let output = Command::new(kubernetes_validate(&root))
        .arg("--strict")
        .args(&files)
        .current_dir(&root)
        .output()
        .expect("run kubernetes-validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "kubernetes-validate failed:\n{text}"
    );
    for file in &files {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .expect("file name");
        assert!(
            text.contains(&format!("{name} passed")),
            "{name} not validated:\n{text}"
        );
    }
}

#[test]
fn the_configmap_carries_a_valid_configuration() {
    let root = repo_root();
    let text = std::fs::read_to_string(root.join("deploy/k8s/configmap.yaml")).expect("configmap");
    // The TOML block: the lines indented under `revrepl.toml: |`.
    let toml: String = text
        .lines()
        .skip_while(|line| !line.contains("revrepl.toml: |"))
        .skip(1)
        .take_while(|line| line.starts_with("    ") || line.trim().is_empty())
        .map(|line| format!("{}\n", line.strip_prefix("    ").unwrap_or(line)))
        .collect();
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("revrepl.toml");
    std::fs::write(&path, toml).expect("write");
    let config =
        revrepl_config::Config::load(Some(&path), &[]).expect("the ConfigMap's TOML parses");
    assert_eq!(config.metadata.store, revrepl_config::MetadataKind::Spanner);
    assert!(config.buffer.url.starts_with("gs://"));
    // Passwords come from the mounted Secret, never from the ConfigMap.
    let shards: String = text
        .lines()
        .skip_while(|line| !line.contains("shards.json: |"))
        .skip(1)
        .take_while(|line| line.starts_with("    "))
        .collect();
    let file = revrepl_shard_routing::ShardsFile::from_json("configmap", &shards).expect("shards");
    for shard in file.shards() {
        assert!(
            matches!(shard.password, revrepl_shard_routing::PasswordSource::File(ref p) if p.starts_with("/etc/revrepl/secrets")),
            "shard {} must read its password from the Secret",
            shard.logical_shard_id
        );
    }
}

/// The Grafana dashboard is valid JSON with panels, and every metric its queries use is
/// documented in docs/metrics.md (that each is exported is checked on real processes by the
/// end-to-end test).
#[test]
fn the_grafana_dashboard_queries_only_documented_metrics() {
    use revrepl_test_services::dashboard::{dashboard_metrics, dashboard_path};
    let text = std::fs::read_to_string(dashboard_path()).expect("read the dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 6, "{} panels", panels.len());
    for panel in panels {
        let targets = panel["targets"].as_array().map_or(0, Vec::len);
        assert!(targets > 0, "panel {} has no query", panel["title"]);
    }
    let metrics = dashboard_metrics(&dashboard);
    for wanted in [
        "revrepl_writer_replication_lag_seconds",
        "revrepl_writer_records_applied_total",
        "revrepl_reader_records_read_total",
        "revrepl_writer_shard_failed",
        "revrepl_writer_retries_total",
        "revrepl_reader_watermark_lag_seconds",
    ] {
        assert!(metrics.contains(wanted), "the dashboard shows {wanted}");
    }
    let docs = std::fs::read_to_string(repo_root().join("docs/metrics.md")).expect("metrics.md");
    for metric in &metrics {
        assert!(
            docs.contains(&format!("`{metric}`")),
            "{metric} (used by deploy/grafana/revrepl-dashboard.json) is not in docs/metrics.md"
        );
    }
}
