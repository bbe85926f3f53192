//! What one VM tells and takes beside its properties: `log` (qemu.log), `cmdline` (the
//! command line Start runs, as a shell line), `repair-disks`, `resize-disk` and `monitor`
//! (QEMU's human monitor).

use std::io::BufRead;

use crate::error::{Error, Result};
use crate::output;

pub async fn log(conn: &zbus::Connection, name: &str) -> Result<()> {
    let vm = super::find(conn, name).await?;
    let text = vm
        .read_log()
        .await
        .map_err(Error::call(format!("read the log of {name}")))?;
    output::print(&text)
}

pub async fn cmdline(conn: &zbus::Connection, name: &str) -> Result<()> {
    let vm = super::find(conn, name).await?;
    let args = vm
        .command_line()
        .await
        .map_err(Error::call(format!("get the command line of {name}")))?;
    let line: Vec<String> = args.iter().map(|a| quote(a)).collect();
    output::print(&format!("{}\n", line.join(" ")))
}

pub async fn repair_disks(conn: &zbus::Connection, name: &str) -> Result<()> {
    let vm = super::find(conn, name).await?;
    let repaired = vm
        .repair_disks()
        .await
        .map_err(Error::call(format!("repair the disks of {name}")))?;
    output::print(
        &repaired
            .iter()
            .map(|f| format!("{f}\n"))
            .collect::<String>(),
    )
}

pub async fn resize_disk(
    conn: &zbus::Connection,
    name: &str,
    disk: &str,
    bytes: u64,
) -> Result<()> {
    let vm = super::find(conn, name).await?;
    vm.resize_disk(disk, bytes)
        .await
        .map_err(Error::call(format!("resize {disk} of {name}")))
}

/// `command` as one monitor line; without one, every line of stdin, each answered in turn.
pub async fn monitor(conn: &zbus::Connection, name: &str, command: &[String]) -> Result<()> {
    let vm = super::find(conn, name).await?;
    let run = |line: String| {
        let vm = &vm;
        async move {
            let answer = match vm.human_monitor_command(&line).await {
                Ok(answer) => answer,
                Err(e) => {
                    let what = format!("run '{line}' on the monitor of {name}");
                    return Err(super::refused(vm, name, &what, e).await);
                }
            };
            output::print(&answer)
        }
    };
    if !command.is_empty() {
        return run(command.join(" ")).await;
    }
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        if !line.trim().is_empty() {
            run(line).await?;
        }
    }
    Ok(())
}

/// `arg` as a POSIX shell reads it back: bare if it has only characters no shell treats
/// specially, else in single quotes (a quote inside as `'\''`).
fn quote(arg: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !arg.is_empty() && arg.chars().all(plain) {
        return arg.to_string();
    }
    format!("'{}'", arg.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn arguments_are_quoted_only_where_a_shell_needs_it() {
        assert_eq!(
            quote("/usr/bin/qemu-system-x86_64"),
            "/usr/bin/qemu-system-x86_64"
        );
        assert_eq!(quote("fd=3,server=on"), "fd=3,server=on");
        assert_eq!(quote("console=ttyS0 quiet"), "'console=ttyS0 quiet'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("$HOME"), "'$HOME'");
    }
}
