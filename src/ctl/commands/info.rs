//! `info`: what the daemon is: its version, the host its consoles listen on, and the QEMU
//! binaries it found.

use crate::error::{Error, Result};
use crate::output;

pub async fn run(conn: &zbus::Connection, legend: bool) -> Result<()> {
    let manager = super::manager(conn).await?;
    let read = |what: &'static str| Error::call(format!("read the daemon's {what}"));
    let version = manager.version().await.map_err(read("version"))?;
    let console_host = manager.console_host().await.map_err(read("console host"))?;
    let binaries = manager
        .qemu_binaries()
        .await
        .map_err(read("QEMU binaries"))?;
    let mut out = format!("Version: {version}\nConsoleHost: {console_host}\n");
    if legend {
        out.push('\n');
    }
    let rows = binaries
        .into_iter()
        // An empty cell is '-', as in systemd's tables (a binary that gave no version).
        .map(|(path, version)| {
            vec![
                path,
                if version.is_empty() {
                    "-".into()
                } else {
                    version
                },
            ]
        })
        .collect();
    out.push_str(&output::table(&["QEMU", "VERSION"], &[], rows, legend));
    output::print(&out)
}
