//! What a QEMU binary offers: its version, its NIC models, its netdev backends. Each binary is
//! asked once (by path and modification time), since asking means running it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::error::{Error, Result};
use super::lock;
use super::names::Names;

/// How long a binary may take to answer `--version` or `help`.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Default, PartialEq)]
pub struct Capabilities {
    /// "7.2.22", or empty if the binary did not say.
    pub version: String,
    /// Names and aliases of the "Network devices" of `-device help`.
    pub nic_models: Names,
    /// Names of every device of `-device help` (the disk controllers: ahci, nvme, …).
    pub devices: Names,
    /// Backends of `-netdev help` (socket, dgram, hubport, …).
    pub netdevs: Names,
    /// Whether it has `-sandbox`: QEMU built with seccomp lists it in `-help`.
    pub sandbox: bool,
    /// CPU models of `-cpu help` (aliases included).
    pub cpu_models: Names,
    /// Machine types of `-machine help` (aliases such as `pc` and `q35` included).
    pub machines: Names,
}

impl Capabilities {
    /// Checks that the binary has NIC model `model`; the error lists a few it has.
    pub fn check_nic_model(&self, qemu_path: &str, model: &str) -> Result<()> {
        self.check_nic_model_of("AdapterType", qemu_path, model)
    }

    /// As `check_nic_model`, the error naming `what` (a setting) as the model's source.
    pub fn check_nic_model_of(&self, what: &str, qemu_path: &str, model: &str) -> Result<()> {
        if self.nic_models.contains(model) {
            return Ok(());
        }
        const COMMON: [&str; 5] = ["e1000", "virtio-net-pci", "rtl8139", "e1000e", "vmxnet3"];
        let mut some: Vec<&str> = COMMON
            .into_iter()
            .filter(|m| self.nic_models.contains(m))
            .collect();
        some.extend(
            self.nic_models
                .iter()
                .filter(|m| !COMMON.contains(m))
                .take(6usize.saturating_sub(some.len())),
        );
        Err(Error::InvalidArgument(format!(
            "{what} '{}' is not a NIC model of {qemu_path}; it has {}, … (all of them: {qemu_path} -device help)",
            super::error::shown(model),
            some.join(", ")
        )))
    }
}

impl Capabilities {
    /// Checks that the binary has the machine type and CPU model of `s` (an empty model is
    /// QEMU's default); the error names where the list is.
    pub fn check_machine(&self, s: &crate::model::Settings) -> Result<()> {
        let path = &s.qemu_path;
        if !self.machines.contains(&s.machine_type) {
            return Err(Error::InvalidArgument(format!(
                "MachineType '{}' is not a machine of {path}; use pc, q35 or another name of {path} -machine help",
                super::error::shown(&s.machine_type)
            )));
        }
        if !s.cpu_model.is_empty() && !self.cpu_models.contains(&s.cpu_model) {
            return Err(Error::InvalidArgument(format!(
                "CpuModel '{}' is not a CPU model of {path}; use one of {path} -cpu help (max, qemu64, …), or empty for QEMU's default",
                super::error::shown(&s.cpu_model)
            )));
        }
        Ok(())
    }
}

/// The first word of each line of `-cpu help`'s first section, after the architecture
/// (x86 prints `x86 Broadwell   (alias …)`, others an indented name).
fn parse_cpu_models(out: &str) -> Names {
    out.lines()
        .skip_while(|l| !l.starts_with("Available CPUs"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            let first = words.next()?;
            Some(if first == "x86" { words.next()? } else { first })
        })
        .collect()
}

/// The first word of each line after "Supported machines are:".
fn parse_machines(out: &str) -> Names {
    out.lines()
        .skip_while(|l| !l.starts_with("Supported machines"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect()
}

/// "QEMU emulator version 7.2.22 (Debian ...)" -> "7.2.22".
fn parse_version(out: &str) -> String {
    out.lines()
        .next()
        .and_then(|l| l.split("version ").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("")
        .to_string()
}

/// The `name "…"` and `alias "…"` of every line of the "Network devices:" section.
fn parse_nic_models(out: &str) -> Names {
    let section = out
        .split("\n\n")
        .find(|s| s.trim_start().starts_with("Network devices:"));
    names_and_aliases(section.into_iter().flat_map(str::lines).skip(1))
}

/// The `name "…"` and `alias "…"` of every line of `lines` (QEMU lists the AHCI
/// controller as `name "ich9-ahci", …, alias "ahci"`).
fn names_and_aliases<'a>(lines: impl Iterator<Item = &'a str>) -> Names {
    let mut names = Vec::new();
    for line in lines {
        for key in ["name \"", "alias \""] {
            if let Some(rest) = line.split(key).nth(1) {
                if let Some(name) = rest.split('"').next() {
                    names.push(name);
                }
            }
        }
    }
    names.into_iter().collect()
}

/// Every device of `-device help`, by name and alias.
fn parse_devices(out: &str) -> Names {
    names_and_aliases(out.lines().filter(|l| l.starts_with("name \"")))
}

/// The lines after "Available netdev backend types:".
fn parse_netdevs(out: &str) -> Names {
    out.lines()
        .skip_while(|l| !l.starts_with("Available netdev backend types"))
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect()
}

/// Whether `-help` lists `-sandbox`.
fn has_sandbox(help: &str) -> bool {
    help.lines().any(|l| l.starts_with("-sandbox "))
}

/// The answers of every binary asked so far.
#[derive(Default)]
pub struct Binaries {
    cache: Mutex<HashMap<(PathBuf, SystemTime), Arc<Capabilities>>>,
}

impl Binaries {
    /// What `path` offers. A binary that cannot be run, or lists no NIC model at all, is
    /// an error, and is asked again next time.
    pub async fn probe(&self, path: &str) -> Result<Arc<Capabilities>> {
        let mtime = std::fs::metadata(path)
            .and_then(|m| m.modified())
            .map_err(|e| Error::QemuNotFound(format!("QEMU binary {path}: {e}")))?;
        let key = (PathBuf::from(path), mtime);
        if let Some(c) = lock(&self.cache).get(&key) {
            return Ok(c.clone());
        }
        let (version, devices, netdevs, help, cpus, machines) = tokio::join!(
            run(path, &["--version"]),
            run(path, &["-device", "help"]),
            run(path, &["-netdev", "help"]),
            run(path, &["-help"]),
            run(path, &["-cpu", "help"]),
            run(path, &["-machine", "help"]),
        );
        let devices = devices?;
        let caps = Arc::new(Capabilities {
            version: parse_version(&version?),
            nic_models: parse_nic_models(&devices),
            devices: parse_devices(&devices),
            netdevs: parse_netdevs(&netdevs?),
            sandbox: has_sandbox(&help?),
            cpu_models: parse_cpu_models(&cpus?),
            machines: parse_machines(&machines?),
        });
        if caps.nic_models.is_empty() {
            return Err(Error::QemuNotFound(format!(
                "{path} lists no NIC model under -device help; is it a qemu-system binary?"
            )));
        }
        lock(&self.cache).insert(key, caps.clone());
        Ok(caps)
    }

    /// Checks that the binary at `path` has NIC model `model`.
    pub async fn check_nic_model(&self, path: &str, model: &str) -> Result<()> {
        self.probe(path).await?.check_nic_model(path, model)
    }

    /// Checks that the binary of `s` has every NIC model its adapters use.
    pub async fn check_nic_models(&self, s: &crate::model::Settings) -> Result<()> {
        let caps = self.probe(&s.qemu_path).await?;
        for (what, model) in super::custom_adapters::models(s) {
            caps.check_nic_model_of(&what, &s.qemu_path, model)?;
        }
        Ok(())
    }

    /// Checks that the binary of `s` has its machine type and CPU model.
    pub async fn check_machine(&self, s: &crate::model::Settings) -> Result<()> {
        self.probe(&s.qemu_path).await?.check_machine(s)
    }

    /// The version of `path`, or empty if it cannot tell.
    pub async fn version(&self, path: &Path) -> String {
        match path.to_str() {
            Some(p) => self.probe(p).await.map(|c| c.version.clone()),
            None => Ok(String::new()),
        }
        .unwrap_or_default()
    }
}

async fn run(path: &str, args: &[&str]) -> Result<String> {
    let what = || format!("{path} {}", args.join(" "));
    let out = tokio::process::Command::new(path)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(PROBE_TIMEOUT, out)
        .await
        .map_err(|_| {
            Error::QemuNotFound(format!("{} did not answer in {PROBE_TIMEOUT:?}", what()))
        })?
        .map_err(|e| Error::QemuNotFound(format!("cannot run {}: {e}", what())))?;
    if !out.status.success() {
        // Say how it ended (a seccomp filter shows as SIGSYS) rather than what it did not
        // print.
        let stderr = String::from_utf8_lossy(&out.stderr);
        let said = stderr.lines().last().unwrap_or("").trim();
        return Err(Error::QemuNotFound(format!(
            "{} failed ({}){}",
            what(),
            super::process::Exit::from(out.status).describe(),
            if said.is_empty() {
                String::new()
            } else {
                format!(": {said}")
            }
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEVICES: &str = "Controller/Bridge/Hub devices:\nname \"i82801b11-bridge\", bus PCI\n\n\
        Network devices:\nname \"e1000\", bus PCI, alias \"e1000-82540em\", desc \"Intel Gigabit Ethernet\"\n\
        name \"ne2k_isa\", bus ISA\nname \"virtio-net-pci\", bus PCI, alias \"virtio-net\"\n\n\
        Input devices:\nname \"usb-kbd\", bus usb-bus\n";

    #[test]
    fn parses_what_qemu_prints() {
        assert_eq!(
            parse_version("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7)\nCopyright"),
            "7.2.22"
        );
        assert_eq!(parse_version("garbage"), "");
        let models = parse_nic_models(DEVICES);
        assert_eq!(
            models.iter().collect::<Vec<_>>(),
            [
                "e1000",
                "e1000-82540em",
                "ne2k_isa",
                "virtio-net",
                "virtio-net-pci"
            ]
        );
        assert_eq!(
            parse_devices(DEVICES).iter().collect::<Vec<_>>(),
            [
                "e1000",
                "e1000-82540em",
                "i82801b11-bridge",
                "ne2k_isa",
                "usb-kbd",
                "virtio-net",
                "virtio-net-pci"
            ]
        );
        let netdevs =
            parse_netdevs("Available netdev backend types:\nsocket\nstream\ndgram\nhubport\n");
        assert!(netdevs.contains("dgram") && netdevs.contains("socket"));
        assert!(parse_netdevs("qemu: unknown option").is_empty());
        assert!(has_sandbox(
            "-no-user-config\n-sandbox on[,obsolete=allow|deny][,elevateprivileges=...]\n"
        ));
        assert!(!has_sandbox(
            "-msg [timestamp=on|off]\n                enable -sandbox\n"
        ));
    }

    #[test]
    fn a_wrong_model_lists_common_ones_first() {
        let caps = Capabilities {
            nic_models: parse_nic_models(DEVICES),
            ..Default::default()
        };
        assert!(caps.check_nic_model("/q", "virtio-net").is_ok());
        let e = caps.check_nic_model("/q", "e1001").unwrap_err().to_string();
        assert!(
            e.contains("e1001") && e.contains("it has e1000, virtio-net-pci, e1000-82540em"),
            "{e}"
        );
    }

    #[test]
    fn machines_and_cpu_models_with_their_aliases() {
        let caps = Capabilities {
            cpu_models: parse_cpu_models(
                "Available CPUs:\nx86 486                   (alias configured by machine type)\n\
                 x86 Broadwell-IBRS        (alias of Broadwell-v3)\nx86 max                   Enables all\n\n\
                 Recognized CPUID flags:\n  3dnow 3dnowext\n",
            ),
            machines: parse_machines(
                "Supported machines are:\nmicrovm              microvm (i386)\n\
                 pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)\n\
                 q35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-7.2)\n\
                 pc-q35-7.2           Standard PC (Q35 + ICH9, 2009)\n",
            ),
            ..Default::default()
        };
        assert_eq!(
            caps.cpu_models.iter().collect::<Vec<_>>(),
            ["486", "Broadwell-IBRS", "max"]
        );
        assert_eq!(
            caps.machines.iter().collect::<Vec<_>>(),
            ["microvm", "pc", "pc-q35-7.2", "q35"]
        );
        let mut s = crate::model::Settings {
            qemu_path: "/q".into(),
            ..Default::default()
        };
        assert!(caps.check_machine(&s).is_ok());
        s.machine_type = "pc-q35-7.2".into();
        s.cpu_model = "max".into();
        assert!(caps.check_machine(&s).is_ok());
        s.cpu_model = "3dnow".into();
        let e = caps.check_machine(&s).unwrap_err().to_string();
        assert!(
            e.contains("CpuModel '3dnow'") && e.contains("/q -cpu help"),
            "{e}"
        );
        s.machine_type = "q36".into();
        let e = caps.check_machine(&s).unwrap_err().to_string();
        assert!(
            e.contains("MachineType 'q36'") && e.contains("/q -machine help"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_probe_that_dies_says_how() {
        let e = run("/bin/sh", &["-c", "echo refused >&2; kill -SYS $$"])
            .await
            .unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, Error::QemuNotFound(_)), "{e:?}");
        assert!(
            text.contains("SIGSYS") && text.contains("refused"),
            "{text}"
        );
        let e = run("/bin/sh", &["-c", "exit 3"]).await.unwrap_err();
        assert!(e.to_string().contains("status 3"), "{e}");
    }
}
