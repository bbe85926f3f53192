use std::process::ExitCode;

use clap::Parser;
use gns3_qemud_compute::config::{Config, Flags};

fn main() -> ExitCode {
    let config = match Config::load(Flags::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gns3-qemud-compute: {e}");
            return ExitCode::from(1);
        }
    };
    init_logging();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gns3-qemud-compute: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(gns3_qemud_compute::serve::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("gns3-qemud-compute: {e}");
            ExitCode::from(1)
        }
    }
}

/// To the journal when systemd started us with one (JOURNAL_STREAM), else to stderr.
fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter: tracing_subscriber::filter::Targets = std::env::var("RUST_LOG")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            tracing_subscriber::filter::Targets::new().with_default(tracing::Level::INFO)
        });
    let journald = std::env::var_os("JOURNAL_STREAM").and_then(|_| tracing_journald::layer().ok());
    let registry = tracing_subscriber::registry().with(filter);
    match journald {
        Some(layer) => registry.with(layer).init(),
        None => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(false),
            )
            .init(),
    }
}
