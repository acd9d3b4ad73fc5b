//! `revrepl run` with stand-in children (`REVREPL_READER_BIN`, `REVREPL_WRITER_BIN` pointing at
//! small shell scripts): arguments passed through, restart in resume mode after a crash,
//! SIGTERM forwarded, configuration errors not retried, exit codes. No services needed.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

/// A temp directory with a configuration file and two stand-in binaries.
struct Fakes {
    dir: tempfile::TempDir,
}

impl Fakes {
    /// `reader` and `writer` are shell script bodies; `$MODE` holds the `--mode` value, and
    /// every argument is logged to `<role>.args`.
    fn new(reader: &str, writer: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(
            dir.path().join("revrepl.toml"),
            r#"run_id = "fake"
shards_file = "shards.json"
[spanner]
database = "projects/p/instances/i/databases/d"
change_stream = "s"
[metadata]
path = "metadata.db"
"#,
        )
        .expect("config");
        for (role, body) in [("reader", reader), ("writer", writer)] {
            let path = dir.path().join(role);
            let script = format!(
                "#!/bin/sh\n\
                 MODE=''\nprev=''\nfor a in \"$@\"; do [ \"$prev\" = --mode ] && MODE=\"$a\"; prev=\"$a\"; done\n\
                 printf '%s\\n' \"$*\" >> '{dir}/{role}.args'\n\
                 {body}\n",
                dir = dir.path().display()
            );
            std::fs::write(&path, script).expect("script");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn command(&self, extra: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_revrepl"));
        command
            .args(["run", "--config"])
            .arg(self.path("revrepl.toml"))
            .args(extra)
            .current_dir(self.dir.path())
            .env("REVREPL_READER_BIN", self.path("reader"))
            .env("REVREPL_WRITER_BIN", self.path("writer"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    fn args(&self, role: &str) -> Vec<String> {
        std::fs::read_to_string(self.path(&format!("{role}.args")))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

async fn output(mut command: tokio::process::Command) -> (Option<i32>, String, String) {
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("revrepl run ends within a minute")
        .expect("run revrepl");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn path_text(path: &Path) -> String {
    path.display().to_string()
}

#[tokio::test]
async fn a_crashed_reader_is_restarted_in_resume_mode() {
    // The reader fails in regular mode and succeeds in resume mode; the writer succeeds.
    let fakes = Fakes::new(
        r#"[ "$MODE" = resume ] || { echo "reader: simulated crash" >&2; exit 1; }"#,
        "exit 0",
    );
    let (code, stdout, stderr) = output(fakes.command(&[
        "--reader-mode",
        "regular",
        "--writer-mode",
        "regular",
        "--until",
        "2030-01-01T00:00:00Z",
        "--set",
        "writer.batch_max_records=7",
        "--progress",
        "off",
    ]))
    .await;
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let reader = fakes.args("reader");
    assert_eq!(reader.len(), 2, "{reader:?}\n{stderr}");
    let config = path_text(&fakes.path("revrepl.toml"));
    assert!(
        reader[0].starts_with(&format!(
            "--config {config} --set writer.batch_max_records=7 --set reader.start_timestamp="
        )) && reader[0].ends_with("--mode regular --until 2030-01-01T00:00:00Z"),
        "{reader:?}"
    );
    assert!(reader[1].contains("--mode resume"), "{reader:?}");
    assert_eq!(fakes.args("writer").len(), 1);
    assert!(
        stderr.contains("reader: simulated crash")
            && stderr.contains("revrepl run: reader exited unexpectedly (exit code 1)")
            && stderr.contains("revrepl run: reader restarted"),
        "{stderr}"
    );
    // The printed reader command is the one that ran first.
    let printed = stdout
        .lines()
        .find(|l| l.contains("/reader "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        printed.trim().ends_with(&reader[0]),
        "{printed}\n{reader:?}"
    );
}

#[tokio::test]
async fn sigterm_stops_both_children_and_exits_143() {
    let body = r#"trap 'echo "$0 got TERM" >&2; exit 0' TERM
echo "$0 ready" >&2
while :; do sleep 0.1; done"#;
    let fakes = Fakes::new(body, body);
    let mut command = fakes.command(&[
        "--reader-mode",
        "resume",
        "--writer-mode",
        "resume",
        "--progress",
        "off",
    ]);
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start revrepl run");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut seen = Vec::new();
    // Wait until both children are up and handle SIGTERM (on a loaded machine a child may be
    // started but not yet have set its trap), then SIGTERM revrepl.
    let started = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(line)) = lines.next_line().await {
            seen.push(line);
            if seen.iter().filter(|l| l.ends_with(" ready")).count() == 2 {
                return true;
            }
        }
        false
    })
    .await
    .expect("children start within 30 s");
    assert!(started, "{seen:?}");
    let pid = child.id().expect("pid").to_string();
    let killed = tokio::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill");
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("revrepl run stops within 30 s")
        .expect("wait");
    while let Ok(Some(line)) = lines.next_line().await {
        seen.push(line);
    }
    let text = seen.join("\n");
    assert_eq!(status.code(), Some(143), "{text}");
    for expected in [
        "reader got TERM",
        "writer got TERM",
        "revrepl run: stopping the reader (SIGTERM)",
        "resume with:",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
}

#[tokio::test]
async fn a_configuration_error_is_not_retried_and_stops_the_other_child() {
    let fakes = Fakes::new(
        "trap 'exit 0' TERM\nwhile :; do sleep 0.1; done",
        "echo 'writer: unknown key' >&2; exit 2",
    );
    let (code, _, stderr) = output(fakes.command(&[
        "--reader-mode",
        "resume",
        "--writer-mode",
        "resume",
        "--progress",
        "off",
    ]))
    .await;
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(fakes.args("writer").len(), 1);
    assert!(
        stderr.contains("writer stopped with a configuration error (exit code 2)"),
        "{stderr}"
    );
    assert!(stderr.contains("stopping the reader"), "{stderr}");
}

#[tokio::test]
async fn a_failed_shard_is_exit_code_3() {
    let fakes = Fakes::new("exit 0", "exit 3");
    let (code, _, stderr) = output(fakes.command(&[
        "--reader-mode",
        "resume",
        "--writer-mode",
        "resume",
        "--until",
        "2030-01-01T00:00:00Z",
        "--progress",
        "lines",
    ]))
    .await;
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("a shard failed (exit code 3)"), "{stderr}");
    assert_eq!(fakes.args("writer").len(), 1);
}

#[tokio::test]
async fn missing_binaries_and_configuration_are_usage_errors() {
    let fakes = Fakes::new("exit 0", "exit 0");
    let mut command = fakes.command(&["--reader-mode", "resume", "--writer-mode", "resume"]);
    command.env("REVREPL_WRITER_BIN", fakes.path("nonexistent"));
    let (code, _, stderr) = output(command).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("REVREPL_WRITER_BIN="), "{stderr}");

    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_revrepl"));
    command
        .args(["run", "--reader-mode", "resume", "--writer-mode", "resume"])
        .current_dir(fakes.dir.path().join(".."))
        .env_remove("REVREPL_CONFIG")
        .env("REVREPL_RUN_ID", "x")
        .env("REVREPL_SHARDS_FILE", "s.json")
        .env(
            "REVREPL_SPANNER__DATABASE",
            "projects/p/instances/i/databases/d",
        )
        .env("REVREPL_SPANNER__CHANGE_STREAM", "s");
    let (code, _, stderr) = output(command).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("needs a configuration file"), "{stderr}");
}

/// Whether process `pid` runs (exists and is not a zombie waiting to be reaped).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
    }
}

/// Issue 11 finding 8: `kill -9` of `revrepl run` takes its children with it (they get
/// SIGTERM from the kernel), so none runs on beside the next `revrepl run`.
#[tokio::test]
async fn children_die_when_revrepl_run_is_killed_with_sigkill() {
    let body = "while :; do sleep 0.1; done";
    let fakes = Fakes::new(body, body);
    let mut command = fakes.command(&[
        "--reader-mode",
        "resume",
        "--writer-mode",
        "resume",
        "--progress",
        "off",
    ]);
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start revrepl run");
    let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
    let mut pids: Vec<u32> = Vec::new();
    let mut seen = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        while pids.len() < 2 {
            let Ok(Some(line)) = lines.next_line().await else {
                break;
            };
            if let Some(pid) = line
                .split(" started (pid ")
                .nth(1)
                .and_then(|rest| rest.split(',').next())
                .and_then(|pid| pid.parse().ok())
            {
                pids.push(pid);
            }
            seen.push(line);
        }
    })
    .await
    .expect("children start within 30 s");
    assert_eq!(pids.len(), 2, "{seen:?}");
    assert!(pids.iter().all(|&pid| alive(pid)), "children run: {pids:?}");
    let killed = tokio::process::Command::new("kill")
        .args(["-KILL", &child.id().expect("pid").to_string()])
        .status()
        .await
        .expect("kill");
    assert!(killed.success());
    let _ = child.wait().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|&pid| alive(pid)) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let survivors: Vec<u32> = pids.iter().copied().filter(|&pid| alive(pid)).collect();
    for &pid in &survivors {
        // Do not leave them behind after the test.
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status();
    }
    assert!(
        survivors.is_empty(),
        "children {survivors:?} outlived `revrepl run` by 10 s"
    );
}
