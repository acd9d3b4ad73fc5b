//! Running the scripts in `tests/scripts/`: service directories, free ports, start with retries,
//! stop on drop, and installing missing programs under a file lock.

use std::ffi::OsString;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

use crate::ServiceError;

/// How many sets of fresh ports a start tries when the ports turn out to be taken.
pub(crate) const START_ATTEMPTS: u32 = 3;

/// Exit code of the start scripts for "a port was already in use".
const EXIT_PORT_IN_USE: i32 = 3;

/// `tests/scripts/`, next to this crate.
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("scripts")
}

/// The workspace root (two levels above `tests/scripts/`).
pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("..")
}

/// True when `REVREPL_KEEP_SERVICES=1`: service directories (data and logs) are kept.
fn keep_dirs() -> bool {
    std::env::var_os("REVREPL_KEEP_SERVICES").is_some_and(|v| v == "1")
}

/// A binary of this workspace built next to the running test or benchmark (`target/<profile>/`,
/// the parent of its `deps/`); panics with the build command to run when it is missing.
pub fn workspace_binary(name: &str, build_hint: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the path of this test");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the target directory");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} is not built: run `{build_hint}`",
        path.display()
    );
    path
}

/// True when the process exists and is not a zombie (the container's init may reap late).
pub fn process_is_running(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the command name, which is in parentheses and may contain spaces.
    match stat.rfind(") ").and_then(|i| stat.get(i + 2..i + 3)) {
        Some(state) => state != "Z" && state != "X",
        None => false,
    }
}

/// `count` distinct ports that were free a moment ago on 127.0.0.1.
pub(crate) fn free_ports(service: &'static str, count: usize) -> Result<Vec<u16>, ServiceError> {
    // Hold all listeners until every port is picked, so the ports differ.
    let mut listeners = Vec::with_capacity(count);
    let mut ports = Vec::with_capacity(count);
    for _ in 0..count {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(|source| ServiceError::Io {
            service,
            context: "binding 127.0.0.1:0 to find a free port".to_owned(),
            source,
        })?;
        let port = listener
            .local_addr()
            .map_err(|source| ServiceError::Io {
                service,
                context: "reading the address of a listener on 127.0.0.1:0".to_owned(),
                source,
            })?
            .port();
        ports.push(port);
        listeners.push(listener);
    }
    Ok(ports)
}

/// A port that was free a moment ago on 127.0.0.1, for a process under test to listen on
/// (e.g. `--metrics-addr`).
pub fn free_port() -> Result<u16, ServiceError> {
    let ports = free_ports("test", 1)?;
    ports.first().copied().ok_or_else(|| ServiceError::Io {
        service: "test",
        context: "finding a free port".to_owned(),
        source: std::io::Error::other("no port was picked"),
    })
}

/// The last `lines` lines of a log file, without the emulator's protobuf registration noise.
pub(crate) fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(file) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
    for line in BufReader::new(file).lines() {
        let Ok(line) = line else { break };
        if line.is_empty()
            || line.starts_with("WARNING: proto:")
            || line.starts_with("\tpreviously from:")
            || line.starts_with("\tcurrently from:")
            || line.starts_with("See https://protobuf.dev")
        {
            continue;
        }
        if tail.len() == lines {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    Vec::from(tail).join("\n")
}

fn combined_output(output: &Output) -> String {
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !stderr.is_empty() {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&stderr);
    }
    text
}

/// What a start script said.
pub(crate) enum StartOutcome {
    /// The service is ready.
    Started,
    /// A port was taken; the script's output.
    PortInUse(String),
}

/// One service's directory and its start/stop script. Dropping it stops the service (if it was
/// started) and then removes the directory (unless `REVREPL_KEEP_SERVICES=1`).
#[derive(Debug)]
pub(crate) struct ServiceProcess {
    service: &'static str,
    script: PathBuf,
    log: PathBuf,
    envs: Vec<(&'static str, OsString)>,
    running: bool,
    // Last, so the directory is removed after `Drop::drop` stopped the service.
    dir: TempDir,
}

impl ServiceProcess {
    /// A new temp dir for `service`, started and stopped by `tests/scripts/<script>`, logging to
    /// `<dir>/<log_name>`.
    pub(crate) fn new(
        service: &'static str,
        script: &str,
        log_name: &str,
        envs: Vec<(&'static str, OsString)>,
    ) -> Result<Self, ServiceError> {
        let keep = keep_dirs();
        let prefix = format!("revrepl-{}-", script.trim_end_matches(".sh"));
        let dir = tempfile::Builder::new()
            .prefix(&prefix)
            .disable_cleanup(keep)
            .tempdir()
            .map_err(|source| ServiceError::Io {
                service,
                context: "creating a temp dir".to_owned(),
                source,
            })?;
        if keep {
            eprintln!("{service}: keeping its directory {}", dir.path().display());
        }
        Ok(Self {
            service,
            script: scripts_dir().join(script),
            log: dir.path().join(log_name),
            envs,
            running: false,
            dir,
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn log_path(&self) -> &Path {
        &self.log
    }

    pub(crate) fn log_tail(&self) -> String {
        log_tail(&self.log, 40)
    }

    /// The server's pid (the leader of its process group), while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        if !self.running {
            return None;
        }
        std::fs::read_to_string(self.dir.path().join("server.pid"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
    }

    fn command(&self, args: &[String]) -> Command {
        let mut command = Command::new("bash");
        command
            .arg(&self.script)
            .args(args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        command
    }

    fn command_line(&self, args: &[String]) -> String {
        let mut line = self.script.display().to_string();
        for arg in args {
            line.push(' ');
            line.push_str(arg);
        }
        line
    }

    fn run(&self, args: &[String]) -> Result<Output, ServiceError> {
        self.command(args)
            .output()
            .map_err(|source| ServiceError::Io {
                service: self.service,
                context: format!("running {}", self.command_line(args)),
                source,
            })
    }

    /// Runs `<script> start <dir> <args...> <owner pid> <options...>`.
    pub(crate) fn start(
        &mut self,
        ports: &[u16],
        options: &[String],
    ) -> Result<StartOutcome, ServiceError> {
        let mut args = vec!["start".to_owned(), self.dir.path().display().to_string()];
        args.extend(ports.iter().map(u16::to_string));
        args.push(std::process::id().to_string());
        args.extend(options.iter().cloned());
        // The script stops whatever ran in this dir before; from here on a stop is owed.
        self.running = true;
        let output = self.run(&args)?;
        if output.status.success() {
            return Ok(StartOutcome::Started);
        }
        self.running = false;
        if output.status.code() == Some(EXIT_PORT_IN_USE) {
            return Ok(StartOutcome::PortInUse(combined_output(&output)));
        }
        Err(ServiceError::Script {
            service: self.service,
            action: "start",
            command: format!(
                "`{}` exited with {}",
                self.command_line(&args),
                output.status
            ),
            log: self.log.clone(),
            output: combined_output(&output),
        })
    }

    /// Starts with fresh ports from `free_ports`, retrying up to [`START_ATTEMPTS`] times when
    /// they turn out to be taken. Returns the ports used.
    pub(crate) fn start_with_free_ports(
        &mut self,
        port_count: usize,
        options: &[String],
    ) -> Result<Vec<u16>, ServiceError> {
        let mut last_output = String::new();
        for _ in 0..START_ATTEMPTS {
            let ports = free_ports(self.service, port_count)?;
            match self.start(&ports, options)? {
                StartOutcome::Started => return Ok(ports),
                StartOutcome::PortInUse(output) => last_output = output,
            }
        }
        Err(ServiceError::PortsInUse {
            service: self.service,
            attempts: START_ATTEMPTS,
            log: self.log.clone(),
            output: last_output,
        })
    }

    /// Starts on exactly these ports (no retry): for restarts.
    pub(crate) fn start_on(
        &mut self,
        ports: &[u16],
        options: &[String],
    ) -> Result<(), ServiceError> {
        match self.start(ports, options)? {
            StartOutcome::Started => Ok(()),
            StartOutcome::PortInUse(output) => Err(ServiceError::PortsInUse {
                service: self.service,
                attempts: 1,
                log: self.log.clone(),
                output,
            }),
        }
    }

    /// Stops the server and waits for it to exit. Idempotent.
    pub(crate) fn stop(&mut self) -> Result<(), ServiceError> {
        if !self.running {
            return Ok(());
        }
        let args = vec!["stop".to_owned(), self.dir.path().display().to_string()];
        let output = self.run(&args)?;
        if !output.status.success() {
            return Err(ServiceError::Script {
                service: self.service,
                action: "stop",
                command: format!(
                    "`{}` exited with {}",
                    self.command_line(&args),
                    output.status
                ),
                log: self.log.clone(),
                output: combined_output(&output),
            });
        }
        self.running = false;
        Ok(())
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("{e}");
        }
    }
}

/// Finds `name` on PATH or in the sbin directories (mariadbd lives in /usr/sbin, which is not on
/// every user's PATH).
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Runs `tests/scripts/<script>` while holding an exclusive lock on `/tmp/<lock_name>.lock`, so
/// concurrent test processes do not run apt or pip at the same time. `installed` is checked
/// again under the lock: another process may have finished the install meanwhile. The
/// installer's output is saved in `/tmp/<lock_name>.log`.
pub(crate) fn install_locked(
    service: &'static str,
    script: &str,
    lock_name: &str,
    installed: impl Fn() -> bool,
) -> Result<(), ServiceError> {
    let lock_path = PathBuf::from(format!("/tmp/{lock_name}.lock"));
    let log_path = PathBuf::from(format!("/tmp/{lock_name}.log"));
    let io_err = |context: String| {
        move |source| ServiceError::Io {
            service,
            context,
            source,
        }
    };
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_err(format!(
            "opening the install lock {}",
            lock_path.display()
        )))?;
    lock.lock()
        .map_err(io_err(format!("locking {}", lock_path.display())))?;
    if installed() {
        return Ok(());
    }
    let script_path = scripts_dir().join(script);
    let output = Command::new("bash")
        .arg(&script_path)
        .stdin(Stdio::null())
        .output()
        .map_err(io_err(format!("running {}", script_path.display())))?;
    let text = combined_output(&output);
    // Best effort: the output is also in the error below.
    let _ = std::fs::write(&log_path, &text);
    if !output.status.success() || !installed() {
        return Err(ServiceError::Script {
            service,
            action: "install",
            command: format!("`{}` exited with {}", script_path.display(), output.status),
            log: log_path,
            output: text,
        });
    }
    // The lock is released when `lock` is dropped.
    Ok(())
}

/// Waits for `child` to exit, polling until `deadline`; on timeout kills it and returns `None`.
/// For tests that run revrepl's binaries as real processes.
pub fn wait_for_exit(
    child: &mut std::process::Child,
    deadline: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    let started = std::time::Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if started.elapsed() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}
