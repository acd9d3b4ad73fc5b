//! The demo's local services, started and stopped by the project's scripts
//! (`tests/scripts/spanner-emulator.sh`, `tests/scripts/mariadb.sh`): each server runs in its
//! own directory, on free loopback ports, with a watchdog that stops it when this process is
//! gone (even if it is killed).

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::Command;

use crate::error::LauncherError;

/// The scripts' exit code when a port was taken meanwhile.
const EXIT_PORT_IN_USE: i32 = 3;
/// Attempts with new ports.
const PORT_ATTEMPTS: u32 = 5;

/// Where the scripts are: `--scripts-dir`, else `tests/scripts` of the source tree this
/// binary was built from, else of the current directory.
pub fn scripts_dir(requested: Option<&Path>) -> Result<PathBuf, LauncherError> {
    let candidates: Vec<PathBuf> = match requested {
        Some(dir) => vec![dir.to_path_buf()],
        None => vec![
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/scripts"),
            PathBuf::from("tests/scripts"),
        ],
    };
    candidates
        .iter()
        .find(|dir| dir.join("spanner-emulator.sh").is_file() && dir.join("mariadb.sh").is_file())
        .cloned()
        .ok_or_else(|| {
            LauncherError::Usage(format!(
                "the service scripts (spanner-emulator.sh, mariadb.sh) are not in {}: run the \
                 demo from a clone of the revrepl repository, or pass --scripts-dir",
                candidates
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ))
        })
}

/// Whether `program` is on `PATH` (or in the sbin directories, where Debian puts `mariadbd`).
pub fn on_path(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .any(|dir| dir.join(program).is_file())
}

/// Runs `bash <script> <args>`, showing its output as it goes; fails with its exit code.
pub async fn run_script_visibly(script: &Path, args: &[&str]) -> Result<(), LauncherError> {
    let status = Command::new("bash")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .status()
        .await
        .map_err(|e| process_error(script, format!("cannot run it: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(process_error(
            script,
            format!("failed ({status}); its output above says why"),
        ))
    }
}

/// Runs `bash <script> <args>` quietly; returns (exit code, stdout, stderr).
async fn run_script(
    script: &Path,
    args: &[String],
) -> Result<(i32, String, String), LauncherError> {
    let output = Command::new("bash")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|e| process_error(script, format!("cannot run it: {e}")))?;
    Ok((
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
        String::from_utf8_lossy(&output.stderr).trim().to_string(),
    ))
}

fn process_error(script: &Path, message: String) -> LauncherError {
    LauncherError::Process {
        program: script.display().to_string(),
        message,
    }
}

/// A free TCP port on 127.0.0.1 (free now; the scripts detect a race and we try again).
fn free_port() -> Result<u16, LauncherError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| LauncherError::Demo(format!("cannot find a free port: {e}")))
}

/// The started servers, to stop at the end.
#[derive(Debug, Default)]
pub struct Services {
    started: Vec<(PathBuf, PathBuf)>,
}

impl Services {
    /// Remembers that `script` runs a server in `dir` (before starting it, so that a server
    /// whose start failed half-way is stopped too).
    pub fn register(&mut self, script: PathBuf, dir: PathBuf) {
        self.started.push((script, dir));
    }

    /// Stops every server, last started first. Never fails: problems are printed.
    pub async fn stop_all(&mut self) {
        while let Some((script, dir)) = self.started.pop() {
            let args = ["stop".to_string(), dir.display().to_string()];
            match run_script(&script, &args).await {
                Ok((0, _, _)) => {}
                Ok((code, _, stderr)) => eprintln!(
                    "revrepl demo: stopping the server in {} failed (exit code {code}): {stderr}",
                    dir.display()
                ),
                Err(error) => eprintln!("revrepl demo: {error}"),
            }
        }
    }
}

/// The emulator's ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmulatorPorts {
    /// gRPC (data API).
    pub grpc: u16,
    /// REST (admin API).
    pub rest: u16,
}

impl EmulatorPorts {
    /// `http://127.0.0.1:<grpc>`.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc)
    }

    /// `http://127.0.0.1:<rest>`.
    pub fn rest_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.rest)
    }
}

/// Starts the Spanner emulator (gateway and emulator) in `dir`.
pub async fn start_emulator(scripts: &Path, dir: &Path) -> Result<EmulatorPorts, LauncherError> {
    let script = scripts.join("spanner-emulator.sh");
    let mut last = String::new();
    for _ in 0..PORT_ATTEMPTS {
        let ports = EmulatorPorts {
            grpc: free_port()?,
            rest: free_port()?,
        };
        if ports.grpc == ports.rest {
            continue;
        }
        let args = [
            "start".to_string(),
            dir.display().to_string(),
            ports.grpc.to_string(),
            ports.rest.to_string(),
            std::process::id().to_string(),
        ];
        match run_script(&script, &args).await? {
            (0, _, _) => return Ok(ports),
            (EXIT_PORT_IN_USE, _, stderr) => last = stderr,
            (code, _, stderr) => {
                return Err(process_error(
                    &script,
                    format!("the Spanner emulator did not start (exit code {code}): {stderr}"),
                ));
            }
        }
    }
    Err(process_error(
        &script,
        format!("no free ports after {PORT_ATTEMPTS} attempts: {last}"),
    ))
}

/// Starts a MariaDB server in `dir`; returns its port.
pub async fn start_mariadb(scripts: &Path, dir: &Path) -> Result<u16, LauncherError> {
    let script = scripts.join("mariadb.sh");
    let mut last = String::new();
    for _ in 0..PORT_ATTEMPTS {
        let port = free_port()?;
        let args = [
            "start".to_string(),
            dir.display().to_string(),
            port.to_string(),
            std::process::id().to_string(),
        ];
        match run_script(&script, &args).await? {
            (0, _, _) => return Ok(port),
            (EXIT_PORT_IN_USE, _, stderr) => last = stderr,
            (code, _, stderr) => {
                return Err(process_error(
                    &script,
                    format!("MariaDB did not start (exit code {code}): {stderr}"),
                ));
            }
        }
    }
    Err(process_error(
        &script,
        format!("no free port after {PORT_ATTEMPTS} attempts: {last}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_of_this_source_tree_are_found() {
        let dir = scripts_dir(None).expect("scripts");
        assert!(dir.join("mariadb.sh").is_file());
        assert!(scripts_dir(Some(Path::new("/nonexistent"))).is_err());
    }

    #[test]
    fn programs_are_looked_up_on_the_path() {
        assert!(on_path("sh"));
        assert!(!on_path("surely-not-a-program-revrepl"));
    }
}
