//! Child processes under supervision, for `revrepl run`: each child is started, watched, and
//! started again after a jittered backoff when it dies unexpectedly; all of them are stopped
//! cleanly (SIGTERM, then SIGKILL after a grace period) when asked.
//!
//! Children die with the supervisor: each gets SIGTERM from the kernel when `revrepl run`
//! dies, even by SIGKILL (Linux's parent-death signal), so none is left running beside the
//! next `revrepl run`; the metadata store's leases refuse a second reader or writer anyway.
//!
//! What an exit means follows the reader's and the writer's exit codes: 0 finished (caught up
//! to `--until`, or stopped), 2 bad configuration (starting again cannot help), 3 from the
//! writer a shard failed (it needs an operator), anything else — including death by a signal
//! nobody sent through the supervisor — a crash worth a restart.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use revrepl_record::Backoff;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The reader's and the writer's exit code for a configuration error.
pub const EXIT_CONFIG: i32 = 2;
/// The writer's exit code when a shard failed.
pub const EXIT_SHARD_FAILED: i32 = 3;

/// Which child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// `revrepl-reader`.
    Reader,
    /// `revrepl-writer`.
    Writer,
}

impl Role {
    /// `reader` or `writer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reader => "reader",
            Self::Writer => "writer",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a child is started: `program before_mode… --mode MODE after_mode…`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildCommand {
    /// The program.
    pub program: PathBuf,
    /// Arguments before `--mode`.
    pub before_mode: Vec<OsString>,
    /// The mode of the first start.
    pub mode: String,
    /// Arguments after the mode.
    pub after_mode: Vec<OsString>,
    /// Environment variables removed from the child's environment.
    pub env_remove: Vec<OsString>,
}

impl ChildCommand {
    /// The arguments (without the program) for a start in `mode`.
    pub fn argv(&self, mode: &str) -> Vec<OsString> {
        let mut argv = self.before_mode.clone();
        argv.push("--mode".into());
        argv.push(mode.into());
        argv.extend(self.after_mode.iter().cloned());
        argv
    }
}

/// Where a child's stdout and stderr go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildOutput {
    /// This process's stdout and stderr.
    Inherit,
    /// Appended to this file (colors off), after a line saying which start it is.
    Append(PathBuf),
    /// Read line by line and sent as [`SupervisorEvent::Output`].
    Capture,
}

/// What a child's exit means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitMeaning {
    /// Exit 0: done.
    Finished,
    /// Exit 2: the configuration is wrong; starting again cannot help.
    ConfigError,
    /// Exit 3 from the writer: a shard stopped with a definite error.
    ShardFailed,
    /// Anything else: restart.
    Crashed,
}

/// What `status` of `role`'s child means.
pub fn exit_meaning(role: Role, status: ExitStatus) -> ExitMeaning {
    match status.code() {
        Some(0) => ExitMeaning::Finished,
        Some(EXIT_CONFIG) => ExitMeaning::ConfigError,
        Some(EXIT_SHARD_FAILED) if role == Role::Writer => ExitMeaning::ShardFailed,
        _ => ExitMeaning::Crashed,
    }
}

/// `exit code 1`, `killed by signal 9`.
pub fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// The mode a child is started in again after a crash.
#[async_trait::async_trait]
pub trait RestartModes: Send + Sync {
    /// The mode for restarting `role`'s child, whose first start used `first_mode`.
    async fn restart_mode(&self, role: Role, first_mode: &str) -> String;
}

/// Restarts every child in one fixed mode.
#[derive(Debug, Clone)]
pub struct FixedRestartMode(pub String);

#[async_trait::async_trait]
impl RestartModes for FixedRestartMode {
    async fn restart_mode(&self, _role: Role, _first_mode: &str) -> String {
        self.0.clone()
    }
}

/// How children are supervised.
#[derive(Debug, Clone)]
pub struct SupervisorOptions {
    /// Delay before each restart (only `initial`, `max` and `multiplier` are used).
    pub backoff: Backoff,
    /// Give up after this many restarts in a row of one child; `None` never gives up.
    pub max_restarts: Option<u32>,
    /// A child that ran this long before dying counts as healthy again: its backoff and its
    /// restarts in a row start over.
    pub healthy_after: Duration,
    /// How long a child gets to exit after SIGTERM before SIGKILL.
    pub grace_period: Duration,
    /// Stop the other children when the writer reports a failed shard (when nothing else
    /// would make them stop, i.e. without `--until`).
    pub stop_all_on_shard_failure: bool,
}

impl Default for SupervisorOptions {
    fn default() -> Self {
        Self {
            backoff: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(60),
                multiplier: 2,
                max_attempts: None,
            },
            max_restarts: None,
            healthy_after: Duration::from_secs(60),
            grace_period: Duration::from_secs(30),
            stop_all_on_shard_failure: true,
        }
    }
}

/// How a child's supervision ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChildEnd {
    /// It exited with 0.
    Finished,
    /// The writer exited with 3: a shard failed.
    ShardFailed,
    /// It exited with 2: bad configuration.
    ConfigError,
    /// It kept crashing: `restarts` restarts in a row, the last exit as text.
    GaveUp {
        /// Restarts in a row.
        restarts: u32,
        /// The last exit, e.g. `exit code 1`.
        last: String,
    },
    /// It was stopped by the supervisor (a signal, or another child's failure).
    Stopped,
    /// The program could not be started at all.
    CannotStart(String),
}

impl ChildEnd {
    /// A short text for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Finished => "finished".into(),
            Self::ShardFailed => "stopped: a shard failed (exit code 3)".into(),
            Self::ConfigError => "stopped: configuration error (exit code 2)".into(),
            Self::GaveUp { restarts, last } => {
                format!("gave up after {restarts} restart(s) in a row ({last})")
            }
            Self::Stopped => "stopped".into(),
            Self::CannotStart(reason) => format!("cannot start: {reason}"),
        }
    }
}

/// What happens to the children, as it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupervisorEvent {
    /// A child was started.
    Started {
        /// Which.
        role: Role,
        /// In which mode.
        mode: String,
        /// Its process id.
        pid: Option<u32>,
        /// 0 for the first start, then the restart number.
        restart: u32,
    },
    /// A child exited by itself.
    Exited {
        /// Which.
        role: Role,
        /// How, e.g. `exit code 1`.
        status: String,
        /// What that means.
        meaning: ExitMeaning,
    },
    /// A crashed child will be started again after `delay`.
    Restarting {
        /// Which.
        role: Role,
        /// The wait before the restart.
        delay: Duration,
        /// The restart number.
        restart: u32,
    },
    /// A child is being stopped (SIGTERM sent).
    Stopping {
        /// Which.
        role: Role,
    },
    /// A child's supervision ended.
    Ended {
        /// Which.
        role: Role,
        /// How.
        end: ChildEnd,
    },
    /// A line a captured child wrote.
    Output {
        /// Which.
        role: Role,
        /// The line, without its newline.
        line: String,
    },
}

/// One child to supervise.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// Which.
    pub role: Role,
    /// How to start it.
    pub command: ChildCommand,
    /// Where its output goes.
    pub output: ChildOutput,
}

/// Supervises `children` until each has ended: finished, failed for good, or stopped because
/// `stop` was cancelled or another child failed for good (configuration error, gave up,
/// cannot start, or a failed shard with [`SupervisorOptions::stop_all_on_shard_failure`]).
/// Children are killed if this future is dropped.
pub async fn supervise(
    children: Vec<ChildSpec>,
    modes: Arc<dyn RestartModes>,
    options: SupervisorOptions,
    stop: CancellationToken,
    events: UnboundedSender<SupervisorEvent>,
) -> BTreeMap<Role, ChildEnd> {
    let mut tokens: BTreeMap<Role, CancellationToken> = BTreeMap::new();
    let mut roles = HashMap::new();
    let mut tasks = JoinSet::new();
    for spec in children {
        let token = stop.child_token();
        tokens.insert(spec.role, token.clone());
        let role = spec.role;
        let handle = tasks.spawn(supervise_child(
            spec,
            Arc::clone(&modes),
            options.clone(),
            token,
            events.clone(),
        ));
        roles.insert(handle.id(), role);
    }
    let mut ends = BTreeMap::new();
    while let Some(joined) = tasks.join_next_with_id().await {
        let (role, end) = match joined {
            Ok((id, end)) => (roles.get(&id).copied(), end),
            Err(error) => (
                roles.get(&error.id()).copied(),
                ChildEnd::CannotStart(format!("its supervising task failed: {error}")),
            ),
        };
        let Some(role) = role else { continue };
        let stop_others = match &end {
            ChildEnd::ConfigError | ChildEnd::GaveUp { .. } | ChildEnd::CannotStart(_) => true,
            ChildEnd::ShardFailed => options.stop_all_on_shard_failure,
            ChildEnd::Finished | ChildEnd::Stopped => false,
        };
        if stop_others {
            for (other, token) in &tokens {
                if *other != role {
                    token.cancel();
                }
            }
        }
        let _ = events.send(SupervisorEvent::Ended {
            role,
            end: end.clone(),
        });
        ends.insert(role, end);
    }
    ends
}

async fn supervise_child(
    spec: ChildSpec,
    modes: Arc<dyn RestartModes>,
    options: SupervisorOptions,
    cancel: CancellationToken,
    events: UnboundedSender<SupervisorEvent>,
) -> ChildEnd {
    let role = spec.role;
    let mut mode = spec.command.mode.clone();
    let mut in_a_row: u32 = 0;
    let mut restart: u32 = 0;
    loop {
        if cancel.is_cancelled() {
            return ChildEnd::Stopped;
        }
        let started = Instant::now();
        let (status_text, meaning) = match start(&spec, &mode, restart, &events) {
            Ok(mut child) => {
                let _ = events.send(SupervisorEvent::Started {
                    role,
                    mode: mode.clone(),
                    pid: child.id(),
                    restart,
                });
                let waited = tokio::select! {
                    waited = child.wait() => waited,
                    () = cancel.cancelled() => {
                        let _ = events.send(SupervisorEvent::Stopping { role });
                        terminate(&mut child, options.grace_period).await;
                        return ChildEnd::Stopped;
                    }
                };
                match waited {
                    Ok(status) => (describe_status(status), exit_meaning(role, status)),
                    Err(error) => (format!("cannot wait for it: {error}"), ExitMeaning::Crashed),
                }
            }
            Err(reason) if restart == 0 => return ChildEnd::CannotStart(reason),
            Err(reason) => (format!("cannot start: {reason}"), ExitMeaning::Crashed),
        };
        let _ = events.send(SupervisorEvent::Exited {
            role,
            status: status_text.clone(),
            meaning,
        });
        match meaning {
            ExitMeaning::Finished => return ChildEnd::Finished,
            ExitMeaning::ConfigError => return ChildEnd::ConfigError,
            ExitMeaning::ShardFailed => return ChildEnd::ShardFailed,
            ExitMeaning::Crashed => {}
        }
        if started.elapsed() >= options.healthy_after {
            in_a_row = 0;
        }
        if options.max_restarts.is_some_and(|max| in_a_row >= max) {
            return ChildEnd::GaveUp {
                restarts: in_a_row,
                last: status_text,
            };
        }
        let delay = options.backoff.delay(in_a_row);
        in_a_row += 1;
        restart += 1;
        let _ = events.send(SupervisorEvent::Restarting {
            role,
            delay,
            restart,
        });
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = cancel.cancelled() => return ChildEnd::Stopped,
        }
        mode = modes.restart_mode(role, &spec.command.mode).await;
    }
}

/// Starts the child in `mode`, wiring its output.
fn start(
    spec: &ChildSpec,
    mode: &str,
    restart: u32,
    events: &UnboundedSender<SupervisorEvent>,
) -> Result<Child, String> {
    let command = &spec.command;
    let mut process = Command::new(&command.program);
    process
        .args(command.argv(mode))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for name in &command.env_remove {
        process.env_remove(name);
    }
    die_with_this_process(&mut process);
    match &spec.output {
        ChildOutput::Inherit => {}
        ChildOutput::Append(path) => {
            use std::io::Write as _;
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open its log file {}: {e}", path.display()))?;
            let _ = writeln!(
                file,
                "===== {} revrepl run: {} --mode {mode} (start {}) =====",
                chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
                command.program.display(),
                restart + 1
            );
            let err = file
                .try_clone()
                .map_err(|e| format!("cannot use its log file {}: {e}", path.display()))?;
            process.stdout(file).stderr(err).env("NO_COLOR", "1");
        }
        ChildOutput::Capture => {
            process.stdout(Stdio::piped()).stderr(Stdio::piped());
        }
    }
    let mut child = process
        .spawn()
        .map_err(|e| format!("{}: {e}", command.program.display()))?;
    if spec.output == ChildOutput::Capture {
        if let Some(stdout) = child.stdout.take() {
            forward_lines(spec.role, stdout, events.clone());
        }
        if let Some(stderr) = child.stderr.take() {
            forward_lines(spec.role, stderr, events.clone());
        }
    }
    Ok(child)
}

/// Makes the child get SIGTERM when this process dies, however it dies (SIGKILL included), so
/// that no reader or writer outlives its supervisor and runs beside the next one: Linux's
/// parent-death signal, set between fork and exec. SIGTERM, not SIGKILL, so that the child
/// stops cleanly (recording nothing past durable work, releasing its lease). If this process
/// died before the child set it up, the child does not start at all.
///
/// The signal is tied to the thread that started the child; the children are started from
/// the runtime's worker threads, which live as long as the supervisor.
fn die_with_this_process(process: &mut Command) {
    let parent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe functions may be called: prctl(2) and getppid(2) are system calls
    // that allocate nothing and take no locks; building the error allocates only on the
    // path where the child gives up anyway.
    unsafe {
        process.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(std::io::Error::other(
                    "revrepl run exited before the child started",
                ));
            }
            Ok(())
        });
    }
}

/// Sends every line `from` produces as [`SupervisorEvent::Output`], until end of file.
fn forward_lines(
    role: Role,
    from: impl AsyncRead + Unpin + Send + 'static,
    events: UnboundedSender<SupervisorEvent>,
) {
    tokio::spawn(async move {
        let mut reader = BufReader::new(from);
        let mut buffer = Vec::new();
        loop {
            buffer.clear();
            match reader.read_until(b'\n', &mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buffer);
                    let line = line.trim_end_matches(['\n', '\r']).to_string();
                    if events.send(SupervisorEvent::Output { role, line }).is_err() {
                        break;
                    }
                }
            }
        }
    });
}

/// SIGTERM, then SIGKILL when `grace` passes; waits for the exit.
async fn terminate(child: &mut Child, grace: Duration) {
    if let Some(pid) = child.id() {
        send_sigterm(pid);
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
}

/// Sends SIGTERM to process `pid`; whether it was delivered.
fn send_sigterm(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) only takes integers and touches no memory of ours. `pid` is a child we
    // have not reaped yet (we still hold its `Child`), so it cannot name another process.
    unsafe { libc::kill(pid, libc::SIGTERM) == 0 }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tokio::sync::mpsc;

    use super::*;

    fn fast() -> SupervisorOptions {
        SupervisorOptions {
            backoff: Backoff {
                initial: Duration::from_millis(10),
                max: Duration::from_millis(40),
                multiplier: 2,
                max_attempts: None,
            },
            max_restarts: Some(5),
            healthy_after: Duration::from_secs(60),
            grace_period: Duration::from_secs(5),
            stop_all_on_shard_failure: true,
        }
    }

    /// `sh -c SCRIPT child --mode MODE`: the script sees the mode as `$2`.
    fn shell(role: Role, script: &str, mode: &str) -> ChildSpec {
        ChildSpec {
            role,
            command: ChildCommand {
                program: "sh".into(),
                before_mode: vec!["-c".into(), script.into(), "child".into()],
                mode: mode.into(),
                after_mode: Vec::new(),
                env_remove: Vec::new(),
            },
            output: ChildOutput::Capture,
        }
    }

    /// Remembers what restart modes were asked for.
    #[derive(Default)]
    struct Recording(Mutex<Vec<(Role, String)>>);

    #[async_trait::async_trait]
    impl RestartModes for Recording {
        async fn restart_mode(&self, role: Role, first_mode: &str) -> String {
            if let Ok(mut asked) = self.0.lock() {
                asked.push((role, first_mode.to_string()));
            }
            "resume".into()
        }
    }

    async fn run(
        children: Vec<ChildSpec>,
        modes: Arc<dyn RestartModes>,
        options: SupervisorOptions,
        stop: CancellationToken,
    ) -> (BTreeMap<Role, ChildEnd>, Vec<SupervisorEvent>) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let ends = tokio::time::timeout(
            Duration::from_secs(60),
            supervise(children, modes, options, stop, tx),
        )
        .await
        .expect("supervision ends within a minute");
        let mut events = Vec::new();
        while let Ok(event) = rx.try_recv() {
            events.push(event);
        }
        (ends, events)
    }

    fn starts(events: &[SupervisorEvent], role: Role) -> Vec<(String, u32)> {
        events
            .iter()
            .filter_map(|e| match e {
                SupervisorEvent::Started {
                    role: r,
                    mode,
                    restart,
                    ..
                } if *r == role => Some((mode.clone(), *restart)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn exit_codes_mean_what_the_binaries_say() {
        use std::os::unix::process::ExitStatusExt as _;
        let code = |c: i32| ExitStatus::from_raw(c << 8);
        assert_eq!(exit_meaning(Role::Reader, code(0)), ExitMeaning::Finished);
        assert_eq!(
            exit_meaning(Role::Writer, code(2)),
            ExitMeaning::ConfigError
        );
        assert_eq!(
            exit_meaning(Role::Writer, code(3)),
            ExitMeaning::ShardFailed
        );
        assert_eq!(exit_meaning(Role::Reader, code(3)), ExitMeaning::Crashed);
        assert_eq!(exit_meaning(Role::Reader, code(1)), ExitMeaning::Crashed);
        let killed = ExitStatus::from_raw(9);
        assert_eq!(exit_meaning(Role::Writer, killed), ExitMeaning::Crashed);
        assert_eq!(describe_status(killed), "killed by signal 9");
        assert_eq!(describe_status(code(1)), "exit code 1");
    }

    #[test]
    fn arguments_put_the_mode_in_the_middle() {
        let command = ChildCommand {
            program: "p".into(),
            before_mode: vec!["--config".into(), "c.toml".into()],
            mode: "regular".into(),
            after_mode: vec!["--until".into(), "T".into()],
            env_remove: Vec::new(),
        };
        assert_eq!(
            command.argv("resume"),
            ["--config", "c.toml", "--mode", "resume", "--until", "T"]
        );
    }

    #[tokio::test]
    async fn a_crashed_child_restarts_in_the_restart_mode_until_it_succeeds() {
        // Fails while started in regular mode, succeeds in resume mode.
        let script = r#"echo "started in $2"; [ "$2" = resume ] || exit 1"#;
        let modes = Arc::new(Recording::default());
        let (ends, events) = run(
            vec![
                shell(Role::Reader, script, "regular"),
                shell(Role::Writer, "exit 0", "regular"),
            ],
            Arc::clone(&modes) as Arc<dyn RestartModes>,
            fast(),
            CancellationToken::new(),
        )
        .await;
        assert_eq!(ends[&Role::Reader], ChildEnd::Finished);
        assert_eq!(ends[&Role::Writer], ChildEnd::Finished);
        assert_eq!(
            starts(&events, Role::Reader),
            [("regular".to_string(), 0), ("resume".to_string(), 1)]
        );
        assert_eq!(starts(&events, Role::Writer), [("regular".to_string(), 0)]);
        let asked = modes.0.lock().expect("lock").clone();
        assert_eq!(asked, [(Role::Reader, "regular".to_string())]);
        assert!(
            events.iter().any(|e| matches!(e,
                SupervisorEvent::Output { role: Role::Reader, line } if line == "started in regular")),
            "{events:?}"
        );
        assert!(events.iter().any(|e| matches!(
            e,
            SupervisorEvent::Restarting {
                role: Role::Reader,
                restart: 1,
                ..
            }
        )));
    }

    #[tokio::test]
    async fn a_child_that_keeps_crashing_is_given_up_and_the_other_is_stopped() {
        let options = SupervisorOptions {
            max_restarts: Some(2),
            ..fast()
        };
        let (ends, events) = run(
            vec![
                shell(Role::Reader, "exit 1", "regular"),
                shell(Role::Writer, "exec sleep 30", "regular"),
            ],
            Arc::new(FixedRestartMode("resume".into())),
            options,
            CancellationToken::new(),
        )
        .await;
        assert_eq!(
            ends[&Role::Reader],
            ChildEnd::GaveUp {
                restarts: 2,
                last: "exit code 1".into()
            }
        );
        assert_eq!(ends[&Role::Writer], ChildEnd::Stopped);
        assert_eq!(starts(&events, Role::Reader).len(), 3);
    }

    #[tokio::test]
    async fn configuration_errors_and_failed_shards_are_not_retried() {
        let (ends, events) = run(
            vec![
                shell(Role::Reader, "exec sleep 30", "regular"),
                shell(Role::Writer, "exit 3", "regular"),
            ],
            Arc::new(FixedRestartMode("resume".into())),
            fast(),
            CancellationToken::new(),
        )
        .await;
        assert_eq!(ends[&Role::Writer], ChildEnd::ShardFailed);
        assert_eq!(ends[&Role::Reader], ChildEnd::Stopped);
        assert_eq!(starts(&events, Role::Writer).len(), 1);

        // Without stopping on a failed shard, the reader runs on (here: to its end).
        let options = SupervisorOptions {
            stop_all_on_shard_failure: false,
            ..fast()
        };
        let (ends, _) = run(
            vec![
                shell(Role::Reader, "sleep 0.3; exit 0", "regular"),
                shell(Role::Writer, "exit 3", "regular"),
            ],
            Arc::new(FixedRestartMode("resume".into())),
            options,
            CancellationToken::new(),
        )
        .await;
        assert_eq!(ends[&Role::Reader], ChildEnd::Finished);

        let (ends, events) = run(
            vec![shell(Role::Reader, "exit 2", "regular")],
            Arc::new(FixedRestartMode("resume".into())),
            fast(),
            CancellationToken::new(),
        )
        .await;
        assert_eq!(ends[&Role::Reader], ChildEnd::ConfigError);
        assert_eq!(starts(&events, Role::Reader).len(), 1);
    }

    #[tokio::test]
    async fn stopping_sends_sigterm_and_kills_after_the_grace_period() {
        let stop = CancellationToken::new();
        let canceller = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            canceller.cancel();
        });
        let options = SupervisorOptions {
            grace_period: Duration::from_millis(500),
            ..fast()
        };
        let began = Instant::now();
        // The reader exits on SIGTERM; the writer ignores it and must be killed.
        let (ends, events) = run(
            vec![
                shell(
                    Role::Reader,
                    "trap 'echo got TERM; exit 0' TERM; while true; do sleep 0.05; done",
                    "regular",
                ),
                shell(
                    Role::Writer,
                    "trap '' TERM; while true; do sleep 0.05; done",
                    "regular",
                ),
            ],
            Arc::new(FixedRestartMode("resume".into())),
            options,
            stop,
        )
        .await;
        assert_eq!(ends[&Role::Reader], ChildEnd::Stopped);
        assert_eq!(ends[&Role::Writer], ChildEnd::Stopped);
        assert!(began.elapsed() < Duration::from_secs(10));
        assert!(
            events.iter().any(|e| matches!(e,
                SupervisorEvent::Output { role: Role::Reader, line } if line == "got TERM")),
            "{events:?}"
        );
    }

    #[tokio::test]
    async fn a_missing_program_cannot_start() {
        let mut spec = shell(Role::Reader, "exit 0", "regular");
        spec.command.program = "/nonexistent/revrepl-reader".into();
        let (ends, _) = run(
            vec![spec, shell(Role::Writer, "exec sleep 30", "regular")],
            Arc::new(FixedRestartMode("resume".into())),
            fast(),
            CancellationToken::new(),
        )
        .await;
        assert!(matches!(&ends[&Role::Reader], ChildEnd::CannotStart(reason)
            if reason.contains("/nonexistent/revrepl-reader")));
        assert_eq!(ends[&Role::Writer], ChildEnd::Stopped);
    }

    #[tokio::test]
    async fn output_can_go_to_a_log_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("reader.log");
        let mut spec = shell(Role::Reader, "echo hello from $2", "regular");
        spec.output = ChildOutput::Append(log.clone());
        let (ends, _) = run(
            vec![spec],
            Arc::new(FixedRestartMode("resume".into())),
            fast(),
            CancellationToken::new(),
        )
        .await;
        assert_eq!(ends[&Role::Reader], ChildEnd::Finished);
        let text = std::fs::read_to_string(&log).expect("log");
        assert!(text.contains("--mode regular (start 1)"), "{text}");
        assert!(text.contains("hello from regular"), "{text}");
    }
}
