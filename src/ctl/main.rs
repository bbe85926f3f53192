//! `gns3-qemuctl`: parses the command line, runs the command, and turns its error into a
//! message on stderr and an exit code.

use clap::Parser;
use std::process::ExitCode;

use gns3_qemuctl::cli::Cli;

fn main() -> ExitCode {
    // A shell asking for completions (GNS3_QEMUCTL_COMPLETE=bash …) is answered here, and the run ends.
    gns3_qemuctl::complete::complete_if_asked();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Failed to start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(gns3_qemuctl::commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if !matches!(e, gns3_qemuctl::error::Error::Several(_)) {
                eprintln!("{}", gns3_qemuctl::output::failure(&e.to_string()));
            }
            if let Some(hint) = e.hint() {
                eprintln!("{hint}");
            }
            e.exit_code()
        }
    }
}
