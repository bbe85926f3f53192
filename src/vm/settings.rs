//! The checks every change of a VM's settings goes through before anything is written:
//! one per setting (`impl Check`, which the table in `model/settings.rs` asks for), then the
//! checks across settings.
//!
//! Longer than most files: one short check per setting of the table, which grows with it; the
//! checks of a family of settings that need more than a line live beside their command-line
//! code (`machine.rs`, `drives.rs`, `firmware.rs`).

use std::fs;
use std::ops::RangeInclusive;

use super::error::{check_len, shown, Error, Result};
use super::paths::{check_file, resolve_qemu_path};
use super::{machine, options};
use crate::model::table::When;

use crate::model::settings::{apply_one, Check};
use crate::model::{
    Accelerator, BootOrder, CustomAdapter, DiskInterface, Display, Firmware, OnStop, Priority,
    Setting, Settings,
};

/// GNS3's most; past the root bus's slots they go on PCI bridges (`pci`).
pub const MAX_ADAPTERS: u32 = 275;
const MAX_NAME: usize = 64;
const MAX_PROJECT: usize = 256;
const MAX_KERNEL_COMMAND_LINE: usize = 4096;
const MAX_OPTIONS: usize = 16 * 1024;
/// An hour: the host's shutdown waits for the slowest VM.
pub const MAX_STOP_TIMEOUT: u32 = 3600;

/// Facts about the host and the daemon's configuration that the checks need.
#[derive(Clone, Debug)]
pub struct Limits {
    pub host_ram_mib: u64,
    pub host_cpus: u32,
    pub console_ports: RangeInclusive<u16>,
}

/// Returns `current` with every change applied, or the first change that is not valid.
/// Nothing is touched on disk: the caller writes the result only if this succeeds.
pub fn apply(current: &Settings, changes: &[Setting], limits: &Limits) -> Result<Settings> {
    let mut next = current.clone();
    for change in changes {
        apply_one(&mut next, change.clone(), limits)?;
    }
    options::check(&next.options)?;
    let ports = next.tcp_ports();
    for (i, (key, port)) in ports.iter().enumerate() {
        if let Some((other, _)) = ports[i + 1..].iter().find(|(_, p)| *port != 0 && p == port) {
            return Err(Error::InvalidArgument(format!(
                "{key} and {other} are both {port}; they must differ"
            )));
        }
    }
    if next.vnc_port != 0 && next.display != Display::Vnc {
        return Err(Error::InvalidArgument(format!(
            "VncPort {} serves the VM's display, which it has only with Display = vnc; set Display to vnc, or VncPort to 0",
            next.vnc_port
        )));
    }
    super::network::check_mac_base(&next.mac_address, next.adapters)?;
    super::custom_adapters::check_nics(&next)?;
    super::pci::of(&next)?;
    machine::check(&next)?;
    super::drives::check(&next, next.is_q35())?;
    super::firmware::check(&next)?;
    Ok(next)
}

/// The settings that cannot change under a running QEMU, the first of them that differs.
pub fn needs_stopped_vm(old: &Settings, new: &Settings) -> Option<&'static str> {
    old.differing(new)
        .into_iter()
        .find(|row| row.when == When::Stopped)
        .map(|row| row.key)
}

impl Check for Limits {
    type Error = Error;

    fn name(&self, v: String) -> Result<String> {
        check_name(&v)
    }
    fn qemu_path(&self, v: String) -> Result<String> {
        resolve_qemu_path(&v)
    }
    fn ram(&self, v: u32) -> Result<u32> {
        check_ram(v, self.host_ram_mib)
    }
    fn hda_disk_image(&self, v: String) -> Result<String> {
        check_file("HdaDiskImage", &v)
    }
    fn hdb_disk_image(&self, v: String) -> Result<String> {
        check_file("HdbDiskImage", &v)
    }
    fn adapters(&self, v: u32) -> Result<u32> {
        if v > MAX_ADAPTERS {
            return Err(Error::InvalidArgument(format!(
                "Adapters {v} is too many; a VM has 0 to {MAX_ADAPTERS} adapters"
            )));
        }
        Ok(v)
    }
    fn adapter_type(&self, v: String) -> Result<String> {
        super::network::check_adapter_type(&v)
    }
    fn mac_address(&self, v: String) -> Result<String> {
        super::network::normalize_mac(&v)
    }
    fn kernel_image(&self, v: String) -> Result<String> {
        check_file("KernelImage", &v)
    }
    fn initrd(&self, v: String) -> Result<String> {
        check_file("Initrd", &v)
    }
    fn kernel_command_line(&self, v: String) -> Result<String> {
        check_len("KernelCommandLine", &v, MAX_KERNEL_COMMAND_LINE)?;
        Ok(v)
    }
    fn options(&self, v: String) -> Result<String> {
        check_len("Options", &v, MAX_OPTIONS)?;
        Ok(v)
    }
    fn cpu_throttling(&self, v: u32) -> Result<u32> {
        let max = 100 * self.host_cpus;
        if v > max {
            return Err(Error::InvalidArgument(format!(
                "CpuThrottling {v} is above {max}: it is a percentage of one CPU (0 = off), up to 100 × the {} CPUs of this host",
                self.host_cpus
            )));
        }
        Ok(v)
    }
    fn process_priority(&self, v: String) -> Result<Priority> {
        Priority::from_name(&v).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "ProcessPriority '{}' is not a priority; use one of: {}",
                shown(&v),
                names(Priority::ALL.iter().map(|p| p.as_str()))
            ))
        })
    }
    fn console_port(&self, v: u16) -> Result<u16> {
        check_port("ConsolePort", v, self)
    }
    fn monitor_port(&self, v: u16) -> Result<u16> {
        check_port("MonitorPort", v, self)
    }
    fn legacy_networking(&self, v: bool) -> Result<bool> {
        Ok(v)
    }
    fn replicate_link_state(&self, v: bool) -> Result<bool> {
        Ok(v)
    }
    fn display(&self, v: String) -> Result<Display> {
        Display::from_name(&v).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "Display '{}' is not known; use none or vnc",
                shown(&v)
            ))
        })
    }
    fn vnc_port(&self, v: u16) -> Result<u16> {
        check_port("VncPort", v, self)
    }
    fn cpus(&self, v: u32) -> Result<u32> {
        machine::check_cpu_count("Cpus", v)
    }
    fn max_cpus(&self, v: u32) -> Result<u32> {
        machine::check_cpu_count("MaxCpus", v)
    }
    fn cpu_model(&self, v: String) -> Result<String> {
        machine::check_name("CpuModel", v, true)
    }
    fn machine_type(&self, v: String) -> Result<String> {
        machine::check_name("MachineType", v, false)
    }
    fn hdc_disk_image(&self, v: String) -> Result<String> {
        check_file("HdcDiskImage", &v)
    }
    fn hdd_disk_image(&self, v: String) -> Result<String> {
        check_file("HddDiskImage", &v)
    }
    fn hda_disk_interface(&self, v: String) -> Result<DiskInterface> {
        disk_interface("HdaDiskInterface", &v)
    }
    fn hdb_disk_interface(&self, v: String) -> Result<DiskInterface> {
        disk_interface("HdbDiskInterface", &v)
    }
    fn hdc_disk_interface(&self, v: String) -> Result<DiskInterface> {
        disk_interface("HdcDiskInterface", &v)
    }
    fn hdd_disk_interface(&self, v: String) -> Result<DiskInterface> {
        disk_interface("HddDiskInterface", &v)
    }
    fn cdrom_image(&self, v: String) -> Result<String> {
        check_file("CdromImage", &v)
    }
    fn boot_order(&self, v: String) -> Result<BootOrder> {
        BootOrder::from_name(&v).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "BootOrder '{}' is not known; use one of {} (c: the first disk, d: the CD-ROM, n: the first adapter)",
                shown(&v),
                names(BootOrder::ALL.iter().map(|b| b.as_str()))
            ))
        })
    }
    fn firmware(&self, v: String) -> Result<Firmware> {
        Firmware::from_name(&v).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "Firmware '{}' is not known; use bios (the default), uefi or uefi-secure",
                shown(&v)
            ))
        })
    }
    fn bios_image(&self, v: String) -> Result<String> {
        check_file("BiosImage", &v)
    }
    fn tpm(&self, v: bool) -> Result<bool> {
        Ok(v)
    }
    fn on_stop(&self, v: String) -> Result<OnStop> {
        OnStop::from_name(&v).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "OnStop '{}' is not known; use power-off (quit at once), shutdown (the ACPI power button, then power-off after StopTimeout) or save-state",
                shown(&v)
            ))
        })
    }
    fn stop_timeout(&self, v: u32) -> Result<u32> {
        if !(1..=MAX_STOP_TIMEOUT).contains(&v) {
            return Err(Error::InvalidArgument(format!(
                "StopTimeout {v} is not 1 to {MAX_STOP_TIMEOUT}: the seconds a shutdown or a save-state may take before the VM is stopped hard"
            )));
        }
        Ok(v)
    }
    fn autostart(&self, v: bool) -> Result<bool> {
        Ok(v)
    }
    fn linked_clone(&self, v: bool) -> Result<bool> {
        Ok(v)
    }
    fn custom_adapters(&self, v: Vec<(u32, String, String)>) -> Result<Vec<CustomAdapter>> {
        super::custom_adapters::check(v)
    }
    fn accelerator(&self, v: String) -> Result<Accelerator> {
        Accelerator::from_name(&v).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "Accelerator '{}' is not known; use auto (KVM where /dev/kvm is usable, else TCG), kvm or tcg",
                shown(&v)
            ))
        })
    }
}

fn disk_interface(key: &str, v: &str) -> Result<DiskInterface> {
    DiskInterface::from_name(v).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{key} '{}' is not a disk interface; use one of {}",
            shown(v),
            names(DiskInterface::ALL.iter().map(|i| i.as_str()))
        ))
    })
}

fn names<'a>(all: impl Iterator<Item = &'a str>) -> String {
    all.collect::<Vec<_>>().join(", ")
}

pub fn check_name(v: &str) -> Result<String> {
    let ok_chars = v
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if v.is_empty() || v.len() > MAX_NAME || !ok_chars {
        return Err(Error::InvalidArgument(format!(
            "VM name '{}' is not allowed: use 1 to {MAX_NAME} characters among letters, digits, '.', '_' and '-'",
            shown(v)
        )));
    }
    Ok(v.to_string())
}

pub fn check_project(v: &str) -> Result<String> {
    if v.len() > MAX_PROJECT || v.chars().any(char::is_control) {
        return Err(Error::InvalidArgument(format!(
            "Project '{}' is not allowed: at most {MAX_PROJECT} bytes, no control characters",
            shown(v)
        )));
    }
    Ok(v.to_string())
}

fn check_ram(v: u32, host_mib: u64) -> Result<u32> {
    if v == 0 || u64::from(v) > host_mib {
        return Err(Error::InvalidArgument(format!(
            "Ram {v} MiB is out of range: it must be at least 1 MiB and at most the host's {host_mib} MiB"
        )));
    }
    Ok(v)
}

fn check_port(key: &str, v: u16, limits: &Limits) -> Result<u16> {
    if v != 0 && !limits.console_ports.contains(&v) {
        return Err(Error::InvalidArgument(format!(
            "{key} {v} is outside the console port range {}-{} of this daemon (0 = none)",
            limits.console_ports.start(),
            limits.console_ports.end()
        )));
    }
    Ok(v)
}

/// Accepts a UUID with or without dashes, any case; returns the 32 lowercase hex digits the
/// object path uses.
pub fn normalize_id(v: &str) -> Result<String> {
    let hex: String = v.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Error::InvalidArgument(format!(
            "Id '{}' is not a UUID: give 32 hexadecimal digits, dashes allowed",
            shown(v)
        )));
    }
    Ok(hex.to_ascii_lowercase())
}

/// A fresh random id (UUID version 4, as 32 hex digits).
pub fn new_id() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 16];
    fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn limits() -> Limits {
        Limits {
            host_ram_mib: 4096,
            host_cpus: 2,
            console_ports: 5000..=10000,
        }
    }

    pub(crate) fn sample() -> Settings {
        Settings {
            name: "r1".into(),
            qemu_path: "/usr/bin/qemu-system-x86_64".into(),
            mac_address: "52:54:00:12:34:00".into(),
            console_port: 5000,
            monitor_port: 5001,
            ..Settings::default()
        }
    }

    /// Why `changes` to the sample are refused.
    pub(crate) fn invalid(changes: &[Setting]) -> String {
        match apply(&sample(), changes, &limits()) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{changes:?} was accepted"),
        }
    }

    #[test]
    fn names() {
        assert!(check_name("R1_core-2.a").is_ok());
        assert!(check_name(&"a".repeat(64)).is_ok());
        for bad in ["", "a b", "a/b", "é", &"a".repeat(65)] {
            let e = check_name(bad).unwrap_err().to_string();
            assert!(e.contains("letters, digits"), "{e}");
        }
    }

    #[test]
    fn ram_bounds_name_the_host_memory() {
        assert!(invalid(&[Setting::Ram(0)]).contains("at least 1 MiB"));
        assert!(invalid(&[Setting::Ram(4097)]).contains("4096 MiB"));
        assert_eq!(
            apply(&sample(), &[Setting::Ram(4096)], &limits())
                .unwrap()
                .ram,
            4096
        );
    }

    #[test]
    fn throttling_is_capped_by_cpus() {
        assert!(apply(&sample(), &[Setting::CpuThrottling(200)], &limits()).is_ok());
        assert!(invalid(&[Setting::CpuThrottling(201)]).contains("200"));
    }

    #[test]
    fn priorities_and_nice_levels() {
        let expect = [
            ("realtime", -20),
            ("very high", -15),
            ("high", -5),
            ("normal", 0),
            ("low", 5),
            ("very low", 19),
        ];
        for (name, nice) in expect {
            let s = apply(
                &sample(),
                &[Setting::ProcessPriority(name.into())],
                &limits(),
            )
            .unwrap();
            assert_eq!(s.process_priority.nice(), nice);
            assert_eq!(s.process_priority.as_str(), name);
        }
        assert!(invalid(&[Setting::ProcessPriority("urgent".into())]).contains("very high"));
    }

    #[test]
    fn ports_must_be_in_range_and_distinct() {
        assert!(invalid(&[Setting::ConsolePort(80)]).contains("5000-10000"));
        assert!(invalid(&[Setting::ConsolePort(5001)]).contains("must differ"));
        let s = apply(&sample(), &[Setting::ConsolePort(0)], &limits()).unwrap();
        assert_eq!(s.console_port, 0);
    }

    #[test]
    fn ids() {
        let id = "6F9619FF-8B86-D011-B42D-00C04FC964FF";
        assert_eq!(
            normalize_id(id).unwrap(),
            "6f9619ff8b86d011b42d00c04fc964ff"
        );
        assert!(normalize_id("xyz").is_err());
        let fresh = new_id().unwrap();
        assert_eq!(normalize_id(&fresh).unwrap(), fresh);
        assert_eq!(&fresh[12..13], "4");
    }

    #[test]
    fn a_failed_change_list_changes_nothing() {
        let before = sample();
        let r = apply(&before, &[Setting::Ram(512), Setting::Ram(0)], &limits());
        assert!(r.is_err());
        assert_eq!(before, sample());
    }

    #[test]
    fn disk_interfaces_boot_orders_and_the_cdrom_unit() {
        let s = apply(
            &sample(),
            &[
                Setting::HddDiskInterface("nvme".into()),
                Setting::BootOrder("dc".into()),
            ],
            &limits(),
        )
        .unwrap();
        assert_eq!(s.hdd_disk_interface, DiskInterface::Nvme);
        assert_eq!(s.boot_order, BootOrder::Dc);
        assert_eq!(
            invalid(&[Setting::HdaDiskInterface("usb".into())]),
            "HdaDiskInterface 'usb' is not a disk interface; use one of ide, sata, virtio, scsi, nvme, none"
        );
        assert!(invalid(&[Setting::BootOrder("cdn".into())]).starts_with(
            "BootOrder 'cdn' is not known; use one of c, d, n, cn, cd, dn, dc, nc, nd"
        ));
        // Any readable file stands for a base here; hdc on ide is refused whichever comes
        // first, and taken once hdc is elsewhere.
        let file = std::env::current_exe()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let hdc = Setting::HdcDiskImage(file.clone());
        assert!(invalid(std::slice::from_ref(&hdc)).contains("set HdcDiskInterface to sata"));
        let sata = Setting::HdcDiskInterface("sata".into());
        let s = apply(&sample(), &[hdc, sata], &limits()).unwrap();
        assert_eq!(s.hdc_disk_image, file);
        assert!(invalid(&[Setting::CdromImage("iso/a.iso".into())]).contains("absolute path"));
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let e = invalid(&[Setting::Name("x".repeat(65536))]);
        assert!(e.len() < 300, "{}", e.len());
    }
}
