//! `create NAME [--ram ...] [--set Prop=Value]... [--start]`: one CreateVM with every
//! setting, checked whole by the daemon; then Start if asked.

use std::collections::BTreeMap;
use std::path::Path;
use zbus::OwnedVariant;

use crate::cli::Create;
use crate::contract::{call_args, mebibytes, setting, string, Use};
use crate::error::{Error, Result};

/// The settings `create` sends: its own options first, then `--set`, which wins.
pub fn settings(c: &Create) -> Result<BTreeMap<String, OwnedVariant>> {
    let mut out = BTreeMap::new();
    if let Some(ram) = &c.ram {
        out.insert("Ram".to_string(), OwnedVariant::from(mebibytes(ram)?));
    }
    if let Some(n) = c.adapters {
        out.insert("Adapters".to_string(), OwnedVariant::from(n));
    }
    for (name, file) in [
        ("HdaDiskImage", &c.disk),
        ("KernelImage", &c.kernel),
        ("Initrd", &c.initrd),
    ] {
        if let Some(file) = file {
            out.insert(name.to_string(), string(&absolute(file)?));
        }
    }
    if let Some(append) = &c.append {
        out.insert("KernelCommandLine".to_string(), string(append));
    }
    for given in &c.settings {
        let (name, value) = setting(given, Use::Create)?;
        out.insert(name, value);
    }
    Ok(out)
}

fn absolute(file: &str) -> Result<String> {
    let path = std::path::absolute(Path::new(file)).map_err(|e| Error::Setting {
        given: file.to_string(),
        why: format!("cannot make it an absolute path: {e}"),
    })?;
    Ok(path.to_string_lossy().into_owned())
}

pub async fn run(conn: &zbus::Connection, c: Create) -> Result<()> {
    let settings = settings(&c)?;
    let manager = super::manager(conn).await?;
    let map = call_args(&settings);
    let path = manager
        .create_vm(&c.name, map)
        .await
        .map_err(Error::call(format!("create {}", c.name)))?;
    if c.start {
        let vm = super::vm_at(conn, path).await?;
        vm.start()
            .await
            .map_err(Error::call(format!("start {}", c.name)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Create {
        let cli = crate::cli::Cli::parse_from([&["gns3-qemuctl", "create"], args].concat());
        match cli.command {
            crate::cli::Command::Create(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn options_become_settings_and_set_wins() {
        let c = parse(&[
            "r1",
            "--ram",
            "1G",
            "--adapters",
            "3",
            "--kernel",
            "/k",
            "--append",
            "quiet",
            "--set",
            "Adapters=4",
            "--set",
            "Project=lab",
        ]);
        let s = settings(&c).unwrap();
        assert_eq!(s["Ram"], OwnedVariant::from(1024u32));
        assert_eq!(s["Adapters"], OwnedVariant::from(4u32));
        assert_eq!(s["KernelImage"], string("/k"));
        assert_eq!(s["KernelCommandLine"], string("quiet"));
        assert_eq!(s["Project"], string("lab"));
        assert_eq!(s.len(), 5);
    }

    #[test]
    fn relative_files_are_made_absolute() {
        let s = settings(&parse(&["r1", "--disk", "base.qcow2"])).unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(
            s["HdaDiskImage"],
            string(&cwd.join("base.qcow2").to_string_lossy())
        );
    }
}
