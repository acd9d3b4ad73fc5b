//! `revrepl`: initialize, watch, reprocess and validate a Spanner → MySQL reverse replication.

use std::process::ExitCode;

use clap::Parser;
use revrepl_launcher::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Results go to stdout; the log (stderr) shows warnings unless RUST_LOG asks for more.
    revrepl_telemetry::init_logging_with_default("warn");
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("revrepl: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(revrepl_launcher::run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("revrepl: {error}");
            ExitCode::from(error.exit_code())
        }
    }
}
