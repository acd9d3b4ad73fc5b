//! `revrepl run`: the reader and the writer as child processes of one command, restarted when
//! they crash, stopped together, with live progress.
//!
//! The children are the real binaries (`revrepl-reader`, `revrepl-writer`), found next to the
//! running `revrepl` or at `$REVREPL_READER_BIN` / `$REVREPL_WRITER_BIN`, started with the same
//! configuration file and `--set` overrides. Before starting, `run` prints the equivalent
//! standalone commands (shell-quoted) and the command that resumes the run.
//!
//! A reader started in `regular` mode without `reader.start_timestamp` gets the start time
//! pinned with `--set reader.start_timestamp=<now>`, so that a restart before the run is
//! recorded starts at the same time, and the printed commands reproduce the run exactly.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use revrepl_config::Config;
use revrepl_metadata::RunId;
use revrepl_record::Timestamp;
use revrepl_shard_routing::ShardsFile;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::cli::{GlobalArgs, ProgressStyle, ReaderMode, RunArgs, WriterMode};
use crate::error::LauncherError;
use crate::progress::{
    Header, Progress, ProgressProbe, Screen, ScreenMode, live_lines, summary_line,
};
use crate::reprocess::shell_word;
use crate::store;
use crate::supervise::{
    ChildCommand, ChildEnd, ChildOutput, ChildSpec, ExitMeaning, RestartModes, Role,
    SupervisorEvent, SupervisorOptions, supervise,
};

/// The reader binary's name.
pub const READER_BIN: &str = "revrepl-reader";
/// The writer binary's name.
pub const WRITER_BIN: &str = "revrepl-writer";
/// Overrides where the reader binary is.
pub const READER_BIN_VARIABLE: &str = "REVREPL_READER_BIN";
/// Overrides where the writer binary is.
pub const WRITER_BIN_VARIABLE: &str = "REVREPL_WRITER_BIN";
/// The children's metrics address variable: removed from their environment, since both would
/// bind it (`--reader-metrics-addr` and `--writer-metrics-addr` set their endpoints).
pub const METRICS_ADDR_VARIABLE: &str = "REVREPL_METRICS_ADDR";

/// Exit code when stopped by SIGINT (128 + 2).
pub const EXIT_SIGINT: u8 = 130;
/// Exit code when stopped by SIGTERM (128 + 15).
pub const EXIT_SIGTERM: u8 = 143;

/// How often the live table is redrawn.
const LIVE_INTERVAL: Duration = Duration::from_secs(1);
/// How often a summary line is printed when stderr is not a terminal.
const LINES_INTERVAL: Duration = Duration::from_secs(10);

/// `$variable` if set,
/// else `name` in the directory of the running executable.
pub fn locate_binary(name: &str, variable: &str) -> Result<PathBuf, LauncherError> {
    if let Some(path) = std::env::var_os(variable) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(LauncherError::Usage(format!(
                "{variable}={} is not a file: point it at the {name} binary, or unset it to use \
                 the one next to revrepl",
                path.display()
            )))
        };
    }
    let exe = std::env::current_exe().map_err(|e| LauncherError::Process {
        program: "revrepl".into(),
        message: format!("cannot find its own executable: {e}"),
    })?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let path = dir.join(name);
    if path.is_file() {
        Ok(path)
    } else {
        Err(LauncherError::Usage(format!(
            "{name} is not next to revrepl (in {}): build it (`cargo build -p revrepl-reader -p \
             revrepl-writer`, or `make demo`), install it there, or set {variable}",
            dir.display()
        )))
    }
}

/// The programs a run uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binaries {
    /// `revrepl-reader`.
    pub reader: PathBuf,
    /// `revrepl-writer`.
    pub writer: PathBuf,
    /// `revrepl` itself (for the resume command).
    pub revrepl: PathBuf,
}

/// Everything a run needs, decided before anything starts.
#[derive(Debug, Clone)]
pub struct RunPlan {
    /// The configuration, as the children will load it.
    pub config: Config,
    /// The configuration file passed to the children.
    pub config_path: PathBuf,
    /// The user's `--set` overrides.
    pub user_overrides: Vec<String>,
    /// All `--set` overrides the children get: the user's, then `run_id` (from `--run-id`) and
    /// the pinned `reader.start_timestamp`.
    pub overrides: Vec<String>,
    /// `run`'s own options.
    pub args: RunArgs,
    /// The reader binary.
    pub reader_bin: PathBuf,
    /// The writer binary.
    pub writer_bin: PathBuf,
    /// The `revrepl` binary (for the resume command).
    pub revrepl_bin: PathBuf,
    /// Print how to resume the run.
    pub resume_hint: bool,
}

impl RunPlan {
    /// Plans a run of `config` (loaded from `config_path` with `global`'s overrides) at `now`,
    /// with the binaries found by [`locate_binary`].
    pub fn new(
        global: &GlobalArgs,
        config: Config,
        config_path: Option<PathBuf>,
        args: RunArgs,
        now: Timestamp,
    ) -> Result<Self, LauncherError> {
        let binaries = Binaries {
            reader: locate_binary(READER_BIN, READER_BIN_VARIABLE)?,
            writer: locate_binary(WRITER_BIN, WRITER_BIN_VARIABLE)?,
            revrepl: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("revrepl")),
        };
        Self::with_binaries(global, config, config_path, args, now, binaries)
    }

    /// [`RunPlan::new`] with the given binaries.
    pub fn with_binaries(
        global: &GlobalArgs,
        mut config: Config,
        config_path: Option<PathBuf>,
        args: RunArgs,
        now: Timestamp,
        binaries: Binaries,
    ) -> Result<Self, LauncherError> {
        let config_path = config_path.ok_or_else(|| {
            LauncherError::Usage(
                "revrepl run needs a configuration file (--config FILE, REVREPL_CONFIG, or \
                 revrepl.toml here): the reader and the writer read it"
                    .into(),
            )
        })?;
        let mut overrides = global.overrides.clone();
        if let Some(run_id) = &global.run_id {
            overrides.push(format!("run_id={run_id}"));
        }
        if args.reader_mode == ReaderMode::Regular && config.reader.start_timestamp.is_none() {
            let start = now.to_rfc3339();
            overrides.push(format!("reader.start_timestamp={start}"));
            config.reader.start_timestamp = Some(start);
        }
        Ok(Self {
            config,
            config_path,
            user_overrides: global.overrides.clone(),
            overrides,
            args,
            reader_bin: binaries.reader,
            writer_bin: binaries.writer,
            revrepl_bin: binaries.revrepl,
            resume_hint: true,
        })
    }

    fn common_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec!["--config".into(), self.config_path.clone().into()];
        for item in &self.overrides {
            args.push("--set".into());
            args.push(item.into());
        }
        args
    }

    fn trailing_args(&self, metrics: Option<std::net::SocketAddr>) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        if let Some(until) = self.args.until {
            args.push("--until".into());
            args.push(until.to_rfc3339().into());
        }
        if let Some(addr) = metrics {
            args.push("--metrics-addr".into());
            args.push(addr.to_string().into());
        }
        args
    }

    /// How the reader is started (first start).
    pub fn reader_command(&self) -> ChildCommand {
        ChildCommand {
            program: self.reader_bin.clone(),
            before_mode: self.common_args(),
            mode: self.args.reader_mode.as_str().into(),
            after_mode: self.trailing_args(self.args.reader_metrics_addr),
            env_remove: child_env_remove(),
        }
    }

    /// How the writer is started (first start).
    pub fn writer_command(&self) -> ChildCommand {
        ChildCommand {
            program: self.writer_bin.clone(),
            before_mode: self.common_args(),
            mode: self.args.writer_mode.as_str().into(),
            after_mode: self.trailing_args(self.args.writer_metrics_addr),
            env_remove: child_env_remove(),
        }
    }

    /// The `revrepl run` command that resumes this run.
    pub fn resume_command(&self) -> Vec<OsString> {
        let mut argv: Vec<OsString> = vec![
            self.revrepl_bin.clone().into(),
            "run".into(),
            "--config".into(),
            self.config_path.clone().into(),
            "--run-id".into(),
            self.config.run_id.clone().into(),
        ];
        for item in &self.user_overrides {
            argv.push("--set".into());
            argv.push(item.into());
        }
        argv.extend(["--reader-mode", "resume", "--writer-mode", "resume"].map(OsString::from));
        if let Some(until) = self.args.until {
            argv.push("--until".into());
            argv.push(until.to_rfc3339().into());
        }
        if let Some(dir) = &self.args.log_dir {
            argv.push("--log-dir".into());
            argv.push(dir.clone().into());
        }
        for (flag, addr) in [
            ("--reader-metrics-addr", self.args.reader_metrics_addr),
            ("--writer-metrics-addr", self.args.writer_metrics_addr),
        ] {
            if let Some(addr) = addr {
                argv.push(flag.into());
                argv.push(addr.to_string().into());
            }
        }
        argv
    }

    /// What `run` prints before it starts anything.
    pub fn announcement(&self) -> String {
        let reader = self.reader_command();
        let writer = self.writer_command();
        let mut text = format!(
            "revrepl run: run {}, reader {}, writer {}{}\n",
            self.config.run_id,
            reader.mode,
            writer.mode,
            self.args
                .until
                .map_or(String::new(), |u| format!(", until {}", u.to_rfc3339()))
        );
        text.push_str("the same as running, in this directory and environment:\n");
        for command in [&reader, &writer] {
            let mut argv = vec![OsString::from(command.program.clone())];
            argv.extend(command.argv(&command.mode));
            text.push_str(&format!("  {}\n", shell_line(&argv)));
        }
        if self.resume_hint {
            text.push_str(&format!(
                "to resume this run after it stopped:\n  {}\n",
                shell_line(&self.resume_command())
            ));
        }
        text
    }
}

/// Variables the children must not inherit: the metrics address (both would bind it) and the
/// binary locations (not configuration keys).
fn child_env_remove() -> Vec<OsString> {
    [
        METRICS_ADDR_VARIABLE,
        READER_BIN_VARIABLE,
        WRITER_BIN_VARIABLE,
    ]
    .map(OsString::from)
    .to_vec()
}

/// `argv` as one line a POSIX shell reads back as the same words.
pub fn shell_line(argv: &[OsString]) -> String {
    argv.iter()
        .map(|word| shell_word(&word.to_string_lossy()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Restart modes from the metadata store: the reader resumes once its run is recorded; a
/// writer started in `regular` mode resumes once every shard has progress (before that,
/// `resume` would skip shards the writer had not reached); a `resumeSuccess` writer keeps its
/// mode (the shards the operator left out stay out); every other writer resumes. A writer
/// started in `reprocess` mode resumes too: `resume` re-applies every shard still marked
/// `REPROCESS` from its `file_start_interval` (rewinding its checkpoint, as `reprocess` does)
/// and continues the shards whose reprocessing already began from their progress.
///
/// The restarted child finds the crashed one's lease in the metadata store; as the crashed
/// process is gone from this host, it takes the lease over at once.
pub struct MetadataRestartModes {
    config: Config,
}

impl MetadataRestartModes {
    /// Restart modes for the run of `config`.
    pub fn new(config: Config) -> Self {
        Self { config }
    }

    async fn run_recorded(&self) -> Result<bool, LauncherError> {
        let run_id = RunId::new(self.config.run_id.clone())?;
        let store = store::open_existing(&self.config).await?;
        Ok(store.run(&run_id).await?.is_some())
    }

    async fn every_shard_has_progress(&self) -> Result<bool, LauncherError> {
        let run_id = RunId::new(self.config.run_id.clone())?;
        let store = store::open_existing(&self.config).await?;
        let with_progress: Vec<_> = store
            .list_process_progress(&run_id, None)
            .await?
            .into_iter()
            .map(|p| p.shard)
            .collect();
        let shards = ShardsFile::load(&self.config.shards_file)?;
        Ok(shards.shard_ids().all(|id| with_progress.contains(id)))
    }
}

#[async_trait::async_trait]
impl RestartModes for MetadataRestartModes {
    async fn restart_mode(&self, role: Role, first_mode: &str) -> String {
        let mode = match role {
            // An unreadable store: resume; the reader will say what is wrong.
            Role::Reader if first_mode == ReaderMode::Regular.as_str() => {
                match self.run_recorded().await {
                    Ok(false) => ReaderMode::Regular.as_str(),
                    Ok(true) | Err(_) => ReaderMode::Resume.as_str(),
                }
            }
            Role::Reader => ReaderMode::Resume.as_str(),
            Role::Writer if first_mode == WriterMode::Regular.as_str() => {
                match self.every_shard_has_progress().await {
                    Ok(true) => WriterMode::Resume.as_str(),
                    Ok(false) | Err(_) => WriterMode::Regular.as_str(),
                }
            }
            Role::Writer if first_mode == WriterMode::ResumeSuccess.as_str() => {
                WriterMode::ResumeSuccess.as_str()
            }
            Role::Writer => WriterMode::Resume.as_str(),
        };
        mode.to_string()
    }
}

/// A line of the caller's shown with the progress (the demo's workload).
pub type Note = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// How each child ended.
    pub ends: BTreeMap<Role, ChildEnd>,
    /// The last progress seen.
    pub progress: Progress,
}

impl RunOutcome {
    /// The exit code: `128 + signal` when stopped by one, 2 on a configuration error, 1 when a
    /// child could not be kept running or was stopped for another's failure (or supervision
    /// failed), 3 when a shard failed, 0 when both finished.
    pub fn exit_code(&self, signal: Option<i32>) -> u8 {
        if let Some(signal) = signal {
            return u8::try_from(128 + signal).unwrap_or(1);
        }
        let ends: Vec<&ChildEnd> = self.ends.values().collect();
        if ends.is_empty() {
            // The supervisor itself failed.
            1
        } else if ends.iter().any(|e| matches!(e, ChildEnd::ConfigError)) {
            2
        } else if ends
            .iter()
            .any(|e| matches!(e, ChildEnd::GaveUp { .. } | ChildEnd::CannotStart(_)))
        {
            1
        } else if ends.iter().any(|e| matches!(e, ChildEnd::ShardFailed)) {
            crate::EXIT_SHARD_ERROR
        } else if ends.iter().all(|e| matches!(e, ChildEnd::Finished)) {
            0
        } else {
            1
        }
    }
}

/// `revrepl run`: plans, announces, runs until done or a signal; returns the exit code.
pub async fn command(
    global: &GlobalArgs,
    config: Config,
    config_path: Option<PathBuf>,
    args: RunArgs,
) -> Result<u8, LauncherError> {
    let plan = RunPlan::new(
        global,
        config,
        config_path,
        args,
        Timestamp::from(chrono::Utc::now()),
    )?;
    if let Some(dir) = &plan.args.log_dir {
        std::fs::create_dir_all(dir).map_err(|e| {
            LauncherError::Usage(format!(
                "--log-dir {}: cannot create it: {e}",
                dir.display()
            ))
        })?;
    }
    let stop = CancellationToken::new();
    let signal = stop_on_signals(stop.clone())?;
    print!("{}", plan.announcement());
    let outcome = execute(&plan, stop, None).await;
    let signal = match signal.load(Ordering::SeqCst) {
        0 => None,
        n => Some(n),
    };
    let code = outcome.exit_code(signal);
    if code != 0 && plan.resume_hint {
        eprintln!(
            "revrepl run: stopped (exit code {code}); resume with:\n  {}",
            shell_line(&plan.resume_command())
        );
    }
    Ok(code)
}

/// Cancels `stop` on the first SIGTERM or SIGINT; the returned cell then holds the signal's
/// number (0 before).
pub fn stop_on_signals(stop: CancellationToken) -> Result<Arc<AtomicI32>, LauncherError> {
    let listen = |kind: SignalKind| {
        signal(kind).map_err(|e| LauncherError::Process {
            program: "revrepl".into(),
            message: format!("cannot listen for signals: {e}"),
        })
    };
    let mut terminate = listen(SignalKind::terminate())?;
    let mut interrupt = listen(SignalKind::interrupt())?;
    let received = Arc::new(AtomicI32::new(0));
    let cell = Arc::clone(&received);
    tokio::spawn(async move {
        let number = tokio::select! {
            _ = terminate.recv() => libc::SIGTERM,
            _ = interrupt.recv() => libc::SIGINT,
            () = stop.cancelled() => return,
        };
        cell.store(number, Ordering::SeqCst);
        stop.cancel();
    });
    Ok(received)
}

/// Runs `plan` until both children ended (or `stop`), showing progress and what happens to
/// the children on stderr.
pub async fn execute(plan: &RunPlan, stop: CancellationToken, note: Option<Note>) -> RunOutcome {
    let mode = match plan.args.progress {
        ProgressStyle::Auto if std::io::stderr().is_terminal() => ScreenMode::Live,
        ProgressStyle::Auto | ProgressStyle::Lines => ScreenMode::Lines,
        ProgressStyle::Live => ScreenMode::Live,
        ProgressStyle::Off => ScreenMode::Quiet,
    };
    let output = |role: Role| match (&plan.args.log_dir, mode) {
        (Some(dir), _) => ChildOutput::Append(dir.join(format!("{role}.log"))),
        (None, ScreenMode::Live) => ChildOutput::Capture,
        (None, _) => ChildOutput::Inherit,
    };
    let children = vec![
        ChildSpec {
            role: Role::Reader,
            command: plan.reader_command(),
            output: output(Role::Reader),
        },
        ChildSpec {
            role: Role::Writer,
            command: plan.writer_command(),
            output: output(Role::Writer),
        },
    ];
    let options = SupervisorOptions {
        max_restarts: plan.args.max_restarts,
        grace_period: plan.args.grace_period,
        stop_all_on_shard_failure: plan.args.until.is_none(),
        ..SupervisorOptions::default()
    };
    let modes: Arc<dyn RestartModes> = Arc::new(MetadataRestartModes::new(plan.config.clone()));
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut supervisor = tokio::spawn(supervise(children, modes, options, stop, events_tx));

    let mut screen = Screen::new(mode);
    let mut states: BTreeMap<Role, String> = [Role::Reader, Role::Writer]
        .into_iter()
        .map(|role| (role, format!("{role} starting")))
        .collect();
    let mut probe = ProgressProbe::new(plan.config.clone());
    let began = Instant::now();
    let header = |states: &BTreeMap<Role, String>| Header {
        run_id: plan.config.run_id.clone(),
        children: states.values().cloned().collect(),
        elapsed: began.elapsed(),
        until: plan.args.until,
        note: note.as_ref().and_then(|note| note()),
    };
    let interval = if mode == ScreenMode::Live {
        LIVE_INTERVAL
    } else {
        LINES_INTERVAL
    };
    // A terminal shows the table at once; logs get their first line after one interval.
    let first = if mode == ScreenMode::Live {
        tokio::time::Instant::now()
    } else {
        tokio::time::Instant::now() + interval
    };
    let mut ticks = tokio::time::interval_at(first, interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut events_open = true;
    let mut last = Progress::default();
    let ends = loop {
        tokio::select! {
            joined = &mut supervisor => {
                break joined.unwrap_or_default();
            }
            event = events.recv(), if events_open => match event {
                Some(event) => {
                    on_event(&event, &mut states, &mut screen);
                    // The table's header names the children's states: keep it current.
                    if mode == ScreenMode::Live && !matches!(event, SupervisorEvent::Output { .. }) {
                        show(&mut screen, &header(&states), &last);
                    }
                }
                None => events_open = false,
            },
            _ = ticks.tick(), if mode != ScreenMode::Quiet => {
                last = probe.look().await;
                show(&mut screen, &header(&states), &last);
            }
        }
    };
    while let Ok(event) = events.try_recv() {
        on_event(&event, &mut states, &mut screen);
    }
    let progress = probe.look().await;
    show(&mut screen, &header(&states), &progress);
    RunOutcome { ends, progress }
}

fn show(screen: &mut Screen, header: &Header, progress: &Progress) {
    match screen.mode() {
        ScreenMode::Live => screen.show(live_lines(header, progress)),
        ScreenMode::Lines => screen.show(vec![format!(
            "revrepl run: progress: {}",
            summary_line(header, progress)
        )]),
        ScreenMode::Quiet => {}
    }
}

fn on_event(event: &SupervisorEvent, states: &mut BTreeMap<Role, String>, screen: &mut Screen) {
    let say = |screen: &mut Screen, text: String| screen.log(&format!("revrepl run: {text}"));
    match event {
        SupervisorEvent::Started {
            role,
            mode,
            pid,
            restart,
        } => {
            states.insert(*role, format!("{role} running ({mode})"));
            let pid = pid.map_or(String::new(), |p| format!("pid {p}, "));
            if *restart == 0 {
                say(screen, format!("{role} started ({pid}mode {mode})"));
            } else {
                say(
                    screen,
                    format!("{role} restarted ({pid}mode {mode}, restart {restart})"),
                );
            }
        }
        SupervisorEvent::Exited {
            role,
            status,
            meaning,
        } => {
            let (state, text) = match meaning {
                ExitMeaning::Finished => ("finished".to_string(), format!("{role} finished")),
                ExitMeaning::ConfigError => (
                    "configuration error".to_string(),
                    format!(
                        "{role} stopped with a configuration error ({status}); its log names \
                         the key; not restarted"
                    ),
                ),
                ExitMeaning::ShardFailed => (
                    "a shard failed".to_string(),
                    format!(
                        "{role}: a shard failed ({status}); see `revrepl status` and the \
                         writer's log; not restarted"
                    ),
                ),
                ExitMeaning::Crashed => (
                    "crashed".to_string(),
                    format!("{role} exited unexpectedly ({status})"),
                ),
            };
            states.insert(*role, format!("{role} {state}"));
            say(screen, text);
        }
        SupervisorEvent::Restarting {
            role,
            delay,
            restart,
        } => {
            states.insert(*role, format!("{role} restarting"));
            say(
                screen,
                format!(
                    "restarting the {role} in {:.1}s (restart {restart})",
                    delay.as_secs_f64()
                ),
            );
        }
        SupervisorEvent::Stopping { role } => {
            states.insert(*role, format!("{role} stopping"));
            say(screen, format!("stopping the {role} (SIGTERM)"));
        }
        SupervisorEvent::Ended { role, end } => {
            let state = match end {
                ChildEnd::Finished => "finished",
                ChildEnd::ShardFailed => "a shard failed",
                ChildEnd::ConfigError => "configuration error",
                ChildEnd::GaveUp { .. } => "gave up",
                ChildEnd::Stopped => "stopped",
                ChildEnd::CannotStart(_) => "cannot start",
            };
            states.insert(*role, format!("{role} {state}"));
            if matches!(end, ChildEnd::GaveUp { .. } | ChildEnd::CannotStart(_)) {
                say(screen, format!("{role} {}", end.describe()));
            }
        }
        SupervisorEvent::Output { role, line } => screen.log(&format!("{role} | {line}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    fn config() -> Config {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("revrepl-run-test-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            r#"run_id = "r1"
shards_file = "shards.json"
[spanner]
database = "projects/p/instances/i/databases/d"
change_stream = "s"
"#,
        )
        .expect("write config");
        let config = Config::load(Some(&path), &[]).expect("config");
        let _ = std::fs::remove_file(path);
        config
    }

    fn plan(argv: &[&str]) -> RunPlan {
        let cli = crate::Cli::try_parse_from(argv).expect("parses");
        let crate::cli::Command::Run(args) = cli.command else {
            panic!("not run");
        };
        let now = Timestamp::parse_rfc3339("2024-01-05T10:00:00Z").expect("now");
        let mut config = config();
        if let Some(run_id) = &cli.global.run_id {
            config.run_id = run_id.clone();
        }
        let binaries = Binaries {
            reader: "/opt/rev repl/revrepl-reader".into(),
            writer: "/opt/rev repl/revrepl-writer".into(),
            revrepl: "/opt/rev repl/revrepl".into(),
        };
        let config_path = cli.global.config.clone();
        RunPlan::with_binaries(&cli.global, config, config_path, args, now, binaries).expect("plan")
    }

    #[test]
    fn children_get_the_configuration_the_overrides_and_until() {
        let plan = plan(&[
            "revrepl",
            "run",
            "--config",
            "my conf.toml",
            "--set",
            "writer.batch_max_records=10",
            "--run-id",
            "r2",
            "--reader-mode",
            "regular",
            "--writer-mode",
            "resumeFailed",
            "--until",
            "2024-01-05T11:00:00Z",
            "--writer-metrics-addr",
            "127.0.0.1:9100",
        ]);
        let reader = plan.reader_command();
        assert_eq!(
            reader.argv(&reader.mode),
            [
                "--config",
                "my conf.toml",
                "--set",
                "writer.batch_max_records=10",
                "--set",
                "run_id=r2",
                "--set",
                "reader.start_timestamp=2024-01-05T10:00:00Z",
                "--mode",
                "regular",
                "--until",
                "2024-01-05T11:00:00Z",
            ]
        );
        let writer = plan.writer_command();
        assert_eq!(writer.mode, "resumeFailed");
        assert!(
            writer
                .argv("resume")
                .ends_with(&["--metrics-addr".into(), "127.0.0.1:9100".into()])
        );
        assert_eq!(
            shell_line(&plan.resume_command()),
            "'/opt/rev repl/revrepl' run --config 'my conf.toml' --run-id r2 --set \
             writer.batch_max_records=10 --reader-mode resume --writer-mode resume --until \
             2024-01-05T11:00:00Z --writer-metrics-addr 127.0.0.1:9100"
        );
        let text = plan.announcement();
        assert!(
            text.contains(
                "  '/opt/rev repl/revrepl-writer' --config 'my conf.toml' --set \
                 writer.batch_max_records=10 --set run_id=r2 --set \
                 reader.start_timestamp=2024-01-05T10:00:00Z --mode resumeFailed --until"
            ),
            "{text}"
        );
    }

    /// The printed lines, read back by a real shell, give the same words.
    #[test]
    fn printed_commands_are_correct_shell() {
        let plan = plan(&[
            "revrepl",
            "run",
            "--config",
            "it's a $HOME \"conf\".toml",
            "--set",
            "spanner.database=projects/p q/instances/i`x`/databases/d;rm",
            "--set",
            "writer.ignore_columns=[\"a b\", \"c\\\\d\"]",
            "--reader-mode",
            "resume",
            "--writer-mode",
            "resume",
        ]);
        let reader = plan.reader_command();
        let mut argv = vec![OsString::from(reader.program.clone())];
        argv.extend(reader.argv(&reader.mode));
        for argv in [argv, plan.resume_command()] {
            let line = shell_line(&argv);
            let output = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf '%s\\0' {line}"))
                .output()
                .expect("run sh");
            assert!(output.status.success(), "{line}");
            let words: Vec<OsString> = output
                .stdout
                .split(|b| *b == 0)
                .filter(|w| !w.is_empty())
                .map(|w| OsString::from(String::from_utf8_lossy(w).into_owned()))
                .collect();
            assert_eq!(words, argv, "{line}");
        }
    }

    #[test]
    fn exit_codes_follow_the_children() {
        let outcome = |reader: ChildEnd, writer: ChildEnd| RunOutcome {
            ends: BTreeMap::from([(Role::Reader, reader), (Role::Writer, writer)]),
            progress: Progress::default(),
        };
        let both = outcome(ChildEnd::Finished, ChildEnd::Finished);
        assert_eq!(both.exit_code(None), 0);
        let nothing = RunOutcome {
            ends: BTreeMap::new(),
            progress: Progress::default(),
        };
        assert_eq!(nothing.exit_code(None), 1);
        assert_eq!(both.exit_code(Some(libc::SIGTERM)), EXIT_SIGTERM);
        assert_eq!(both.exit_code(Some(libc::SIGINT)), EXIT_SIGINT);
        assert_eq!(
            outcome(ChildEnd::Finished, ChildEnd::ShardFailed).exit_code(None),
            3
        );
        assert_eq!(
            outcome(ChildEnd::ConfigError, ChildEnd::Stopped).exit_code(None),
            2
        );
        assert_eq!(
            outcome(
                ChildEnd::GaveUp {
                    restarts: 3,
                    last: "exit code 1".into()
                },
                ChildEnd::Stopped
            )
            .exit_code(None),
            1
        );
    }
}
