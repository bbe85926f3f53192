use std::process::ExitCode;

use gns3_qemud::{cli, config::Config, daemon, heap};

fn main() -> ExitCode {
    heap::one_arena();
    // Disks, records, sockets, logs and the consoles' scrollback are the VMs' owners' only:
    // whatever umask the daemon is started with (the unit's is the same), everything it
    // and its QEMUs create is 0700 or 0600.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    let args = match cli::parse(std::env::args_os()) {
        Ok(cli::Parsed::Run(args)) => args,
        Ok(cli::Parsed::Help) => {
            print!("{}", cli::USAGE);
            return ExitCode::SUCCESS;
        }
        Ok(cli::Parsed::Version) => {
            println!("gns3-qemud {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("gns3-qemud: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("gns3-qemud: {e}");
            return ExitCode::from(1);
        }
    };
    daemon::init_logging();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gns3-qemud: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(daemon::run(args, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("gns3-qemud: {e}");
            ExitCode::from(1)
        }
    }
}
