//! The VM's drives on its command line: four disks and the CD-ROM drive, each a `-drive
//! if=none` with a stable id (gns3-hda … gns3-hdd, gns3-cdrom) and, unless its interface is
//! none, a `-device` of the same id, so QMP and a user's Options can name them; one AHCI and
//! one virtio-scsi controller shared by the disks that use them; the boot order. Pure.
//! Past 400 lines for its tests, which spell out whole command lines.

use std::path::{Path, PathBuf};

use super::bases::Formats;
use super::binary::Capabilities;
use super::cmdline::opt_value;
use super::error::{Error, Result};
use crate::model::{DiskInterface, Settings};

/// The id of the CD-ROM drive and of its device (`blockdev-change-medium`, `eject`).
pub const CDROM: &str = "gns3-cdrom";
const AHCI: &str = "gns3-ahci";
const SCSI: &str = "gns3-scsi";
/// The IDE unit the CD-ROM drive takes: the first of the second bus, hdc's in a pc.
const CDROM_UNIT: u32 = 2;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disk {
    Hda,
    Hdb,
    Hdc,
    Hdd,
}

pub const DISKS: [Disk; 4] = [Disk::Hda, Disk::Hdb, Disk::Hdc, Disk::Hdd];

impl Disk {
    fn index(self) -> u32 {
        self as u32
    }

    /// The id of its drive and device.
    pub fn id(self) -> &'static str {
        ["gns3-hda", "gns3-hdb", "gns3-hdc", "gns3-hdd"][self as usize]
    }

    /// The setting of its base image.
    pub fn key(self) -> &'static str {
        [
            "HdaDiskImage",
            "HdbDiskImage",
            "HdcDiskImage",
            "HddDiskImage",
        ][self as usize]
    }

    fn interface_key(self) -> &'static str {
        [
            "HdaDiskInterface",
            "HdbDiskInterface",
            "HdcDiskInterface",
            "HddDiskInterface",
        ][self as usize]
    }

    pub fn image(self, s: &Settings) -> &str {
        match self {
            Disk::Hda => &s.hda_disk_image,
            Disk::Hdb => &s.hdb_disk_image,
            Disk::Hdc => &s.hdc_disk_image,
            Disk::Hdd => &s.hdd_disk_image,
        }
    }

    pub fn interface(self, s: &Settings) -> DiskInterface {
        match self {
            Disk::Hda => s.hda_disk_interface,
            Disk::Hdb => s.hdb_disk_interface,
            Disk::Hdc => s.hdc_disk_interface,
            Disk::Hdd => s.hdd_disk_interface,
        }
    }

    /// Whether the VM has this disk: the first always (a blank flash disk without a base).
    pub fn exists(self, s: &Settings) -> bool {
        self == Disk::Hda || !self.image(s).is_empty()
    }

    /// Its base image if QEMU is given it in place (LinkedClone false), not an overlay.
    pub fn in_place(self, s: &Settings) -> Option<&str> {
        Some(self.image(s)).filter(|b| !s.linked_clone && !b.is_empty())
    }

    /// The file QEMU is given and its format: the overlay (qcow2) `disks::prepare` makes
    /// before the start, or the base itself in place in the format kept for it.
    pub fn file(self, vm_dir: &Path, s: &Settings, formats: &Formats) -> Result<(PathBuf, String)> {
        let Some(base) = self.in_place(s) else {
            return Ok((self.overlay(vm_dir, s), "qcow2".into()));
        };
        let format = formats.get(base).ok_or_else(|| {
            Error::DiskImageFailed(format!(
                "the format of {} '{base}' is not known yet; set {} again, or start the VM, \
                 to have it found",
                self.key(),
                self.key()
            ))
        })?;
        Ok((PathBuf::from(base), format.clone()))
    }

    /// Its file that is the VM's own (a linked clone, the blank flash disk), if the VM has
    /// the disk and does not use its base in place.
    pub fn own_file(self, vm_dir: &Path, s: &Settings) -> Option<PathBuf> {
        (self.exists(s) && self.in_place(s).is_none()).then(|| self.overlay(vm_dir, s))
    }

    /// The overlay QEMU is given, made by `disks::prepare` before the start.
    pub fn overlay(self, vm_dir: &Path, s: &Settings) -> PathBuf {
        vm_dir.join(match self {
            Disk::Hda if s.hda_disk_image.is_empty() => "flash.qcow2",
            Disk::Hda => "hda_disk.qcow2",
            Disk::Hdb => "hdb_disk.qcow2",
            Disk::Hdc => "hdc_disk.qcow2",
            Disk::Hdd => "hdd_disk.qcow2",
        })
    }
}

/// Where an IDE disk (or, for None, the CD-ROM drive) goes, as `-device` options; None if
/// the machine has no unit for it. A pc has two IDE buses of two units: hda 0, hdb 1, the
/// CD-ROM 2 (hdc's place, as GNS3 has it), hdd 3. On q35 IDE devices go on the ports of its
/// built-in AHCI, one each (`ide.0` … `ide.5`): the same, and hdc on the fifth.
fn ide_place(q35: bool, disk: Option<Disk>) -> Option<String> {
    let unit = match disk {
        None => CDROM_UNIT,
        Some(Disk::Hdc) if q35 => 4,
        Some(Disk::Hdc) => return None,
        Some(d) => d.index(),
    };
    Some(if q35 {
        format!("bus=ide.{unit}")
    } else {
        format!("bus=ide.{},unit={}", unit / 2, unit % 2)
    })
}

/// The disks of `s` that exist, with their interfaces.
fn disks(s: &Settings) -> impl Iterator<Item = (Disk, DiskInterface)> + '_ {
    DISKS
        .into_iter()
        .filter(|d| d.exists(s))
        .map(|d| (d, d.interface(s)))
}

/// Refuses an IDE disk for which the machine has no free unit.
pub fn check(s: &Settings, q35: bool) -> Result<()> {
    for (disk, interface) in disks(s) {
        if interface == DiskInterface::Ide && ide_place(q35, Some(disk)).is_none() {
            return Err(Error::InvalidArgument(format!(
                "{} on ide would need IDE unit {CDROM_UNIT}, which the CD-ROM drive holds (a pc \
                 has four: hda, hdb, the CD-ROM, hdd); set {} to sata, virtio, scsi or nvme",
                disk.key(),
                disk.interface_key()
            )));
        }
    }
    Ok(())
}

/// The QEMU device each interface needs, as `-device help` names it.
fn device_of(interface: DiskInterface) -> Option<&'static str> {
    match interface {
        DiskInterface::Sata => Some("ahci"),
        DiskInterface::Virtio => Some("virtio-blk-pci"),
        DiskInterface::Scsi => Some("virtio-scsi-pci"),
        DiskInterface::Nvme => Some("nvme"),
        DiskInterface::Ide | DiskInterface::Unattached => None,
    }
}

/// Refuses a disk interface whose device the binary lacks.
pub fn check_binary(caps: &Capabilities, qemu_path: &str, s: &Settings) -> Result<()> {
    for (disk, interface) in disks(s) {
        let Some(device) = device_of(interface) else {
            continue;
        };
        if !caps.devices.contains(device) {
            let other: Vec<&str> = DiskInterface::ALL
                .iter()
                .copied()
                .filter(|i| device_of(*i).is_none_or(|d| caps.devices.contains(d)))
                .map(DiskInterface::as_str)
                .collect();
            return Err(Error::InvalidArgument(format!(
                "{} {} needs the {device} device, which {qemu_path} lacks (it is not under its \
                 -device help); set {} to one it has ({}), or QemuPath to a binary with {device}",
                disk.interface_key(),
                interface.as_str(),
                disk.interface_key(),
                other.join(", ")
            )));
        }
    }
    Ok(())
}

/// The place of `c` (c, d or n) in the boot order, from 1, as `bootindex` takes it.
pub fn boot_index(s: &Settings, c: char) -> Option<usize> {
    s.boot_order.as_str().find(c).map(|i| i + 1)
}

fn with_boot_index(s: &Settings, c: char) -> String {
    boot_index(s, c)
        .map(|i| format!(",bootindex={i}"))
        .unwrap_or_default()
}

/// `-device`s and `-drive`s of the disks and the CD-ROM drive, then `-boot`; `formats`
/// of the bases (`Record::image_formats`), for those given in place.
pub fn args(vm_dir: &Path, s: &Settings, q35: bool, formats: &Formats) -> Result<Vec<String>> {
    let mut cmd: Vec<String> = Vec::new();
    let mut arg = |flag: &str, value: String| cmd.extend([flag.to_string(), value]);
    let uses = |i: DiskInterface| disks(s).any(|(_, it)| it == i);
    if uses(DiskInterface::Sata) {
        arg("-device", format!("ahci,id={AHCI}"));
    }
    if uses(DiskInterface::Scsi) {
        arg("-device", format!("virtio-scsi-pci,id={SCSI}"));
    }
    for (disk, interface) in disks(s) {
        let id = disk.id();
        let (file, format) = disk.file(vm_dir, s, formats)?;
        let file = opt_value(&file);
        arg(
            "-drive",
            format!("if=none,id={id},file={file},format={format}"),
        );
        let boot = if disk == Disk::Hda {
            with_boot_index(s, 'c')
        } else {
            String::new()
        };
        let n = disk.index();
        let device = match interface {
            DiskInterface::Unattached => continue,
            // `check` refused an IDE hdc on a pc: it has no unit there.
            DiskInterface::Ide => match ide_place(q35, Some(disk)) {
                Some(place) => format!("ide-hd,{place}"),
                None => continue,
            },
            DiskInterface::Sata => format!("ide-hd,bus={AHCI}.{n}"),
            DiskInterface::Virtio => "virtio-blk-pci".to_string(),
            DiskInterface::Scsi => format!("scsi-hd,bus={SCSI}.0,scsi-id={n}"),
            DiskInterface::Nvme => format!("nvme,serial={id}"),
        };
        arg("-device", format!("{device},drive={id},id={id}{boot}"));
    }
    let media = if s.cdrom_image.is_empty() {
        String::new()
    } else {
        format!(",file={},format=raw", opt_value(Path::new(&s.cdrom_image)))
    };
    arg(
        "-drive",
        format!("if=none,id={CDROM},media=cdrom,readonly=on{media}"),
    );
    arg(
        "-device",
        format!(
            "ide-cd,{},drive={CDROM},id={CDROM}{}",
            ide_place(q35, None).unwrap_or_default(),
            with_boot_index(s, 'd')
        ),
    );
    arg("-boot", format!("order={}", s.boot_order.as_str()));
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BootOrder;

    fn settings() -> Settings {
        Settings {
            qemu_path: "/usr/bin/qemu-system-x86_64".into(),
            ..Settings::default()
        }
    }

    fn line(s: &Settings, q35: bool) -> String {
        args(Path::new("/vms/ab"), s, q35, &Formats::new())
            .unwrap()
            .join(" ")
    }

    #[test]
    fn a_default_vm_has_its_flash_disk_on_ide_and_an_empty_cdrom() {
        assert_eq!(
            line(&settings(), false),
            "-drive if=none,id=gns3-hda,file=/vms/ab/flash.qcow2,format=qcow2 \
             -device ide-hd,bus=ide.0,unit=0,drive=gns3-hda,id=gns3-hda,bootindex=1 \
             -drive if=none,id=gns3-cdrom,media=cdrom,readonly=on \
             -device ide-cd,bus=ide.1,unit=0,drive=gns3-cdrom,id=gns3-cdrom \
             -boot order=c"
        );
    }

    #[test]
    fn every_interface_with_shared_controllers_and_a_boot_order() {
        let mut s = settings();
        s.hda_disk_image = "/i/a.qcow2".into();
        s.hdb_disk_image = "/i/b.qcow2".into();
        s.hdc_disk_image = "/i/c.qcow2".into();
        s.hdd_disk_image = "/i/d.qcow2".into();
        s.hda_disk_interface = DiskInterface::Sata;
        s.hdb_disk_interface = DiskInterface::Scsi;
        s.hdc_disk_interface = DiskInterface::Sata;
        s.hdd_disk_interface = DiskInterface::Scsi;
        s.cdrom_image = "/iso/a,b.iso".into();
        s.boot_order = BootOrder::Dc;
        assert_eq!(
            line(&s, false),
            "-device ahci,id=gns3-ahci -device virtio-scsi-pci,id=gns3-scsi \
             -drive if=none,id=gns3-hda,file=/vms/ab/hda_disk.qcow2,format=qcow2 \
             -device ide-hd,bus=gns3-ahci.0,drive=gns3-hda,id=gns3-hda,bootindex=2 \
             -drive if=none,id=gns3-hdb,file=/vms/ab/hdb_disk.qcow2,format=qcow2 \
             -device scsi-hd,bus=gns3-scsi.0,scsi-id=1,drive=gns3-hdb,id=gns3-hdb \
             -drive if=none,id=gns3-hdc,file=/vms/ab/hdc_disk.qcow2,format=qcow2 \
             -device ide-hd,bus=gns3-ahci.2,drive=gns3-hdc,id=gns3-hdc \
             -drive if=none,id=gns3-hdd,file=/vms/ab/hdd_disk.qcow2,format=qcow2 \
             -device scsi-hd,bus=gns3-scsi.0,scsi-id=3,drive=gns3-hdd,id=gns3-hdd \
             -drive if=none,id=gns3-cdrom,media=cdrom,readonly=on,file=/iso/a,,b.iso,format=raw \
             -device ide-cd,bus=ide.1,unit=0,drive=gns3-cdrom,id=gns3-cdrom,bootindex=1 \
             -boot order=dc"
        );
        s.hda_disk_interface = DiskInterface::Virtio;
        s.hdb_disk_interface = DiskInterface::Nvme;
        s.hdc_disk_interface = DiskInterface::Unattached;
        s.hdd_disk_interface = DiskInterface::Ide;
        s.boot_order = BootOrder::N;
        assert_eq!(
            line(&s, false),
            "-drive if=none,id=gns3-hda,file=/vms/ab/hda_disk.qcow2,format=qcow2 \
             -device virtio-blk-pci,drive=gns3-hda,id=gns3-hda \
             -drive if=none,id=gns3-hdb,file=/vms/ab/hdb_disk.qcow2,format=qcow2 \
             -device nvme,serial=gns3-hdb,drive=gns3-hdb,id=gns3-hdb \
             -drive if=none,id=gns3-hdc,file=/vms/ab/hdc_disk.qcow2,format=qcow2 \
             -drive if=none,id=gns3-hdd,file=/vms/ab/hdd_disk.qcow2,format=qcow2 \
             -device ide-hd,bus=ide.1,unit=1,drive=gns3-hdd,id=gns3-hdd \
             -drive if=none,id=gns3-cdrom,media=cdrom,readonly=on,file=/iso/a,,b.iso,format=raw \
             -device ide-cd,bus=ide.1,unit=0,drive=gns3-cdrom,id=gns3-cdrom \
             -boot order=n"
        );
        assert_eq!(boot_index(&s, 'n'), Some(1));
        assert_eq!(boot_index(&s, 'c'), None);
    }

    #[test]
    fn without_linked_clones_qemu_gets_each_base_in_its_pinned_format() {
        let mut s = settings();
        s.hda_disk_image = "/i/a,b.raw".into();
        s.hdb_disk_image = "/i/b.qcow2".into();
        s.linked_clone = false;
        let formats: Formats = [("/i/a,b.raw", "raw"), ("/i/b.qcow2", "qcow2")]
            .map(|(p, f)| (p.to_string(), f.to_string()))
            .into();
        let in_place = args(Path::new("/vms/ab"), &s, false, &formats)
            .unwrap()
            .join(" ");
        assert!(
            in_place.starts_with(
                "-drive if=none,id=gns3-hda,file=/i/a,,b.raw,format=raw \
                 -device ide-hd,bus=ide.0,unit=0,drive=gns3-hda,id=gns3-hda,bootindex=1 \
                 -drive if=none,id=gns3-hdb,file=/i/b.qcow2,format=qcow2 "
            ),
            "{in_place}"
        );
        // A base whose format was never found is not guessed at.
        let e = args(Path::new("/vms/ab"), &s, false, &Formats::new()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the format of HdaDiskImage '/i/a,b.raw' is not known yet; set HdaDiskImage \
             again, or start the VM, to have it found"
        );
        // The blank flash disk is the VM's own either way.
        s.hda_disk_image.clear();
        s.hdb_disk_image.clear();
        assert!(line(&s, false)
            .starts_with("-drive if=none,id=gns3-hda,file=/vms/ab/flash.qcow2,format=qcow2 "));
    }

    #[test]
    fn hdc_on_ide_is_refused_on_a_pc_and_placed_on_q35() {
        let mut s = settings();
        s.hdc_disk_image = "/i/c.qcow2".into();
        let e = check(&s, false).unwrap_err().to_string();
        assert_eq!(
            e,
            "HdcDiskImage on ide would need IDE unit 2, which the CD-ROM drive holds (a pc has \
             four: hda, hdb, the CD-ROM, hdd); set HdcDiskInterface to sata, virtio, scsi or nvme"
        );
        assert!(check(&s, true).is_ok());
        let q35 = line(&s, true);
        assert!(
            q35.contains(" -device ide-hd,bus=ide.4,drive=gns3-hdc,id=gns3-hdc ")
                && q35.contains(" -device ide-cd,bus=ide.2,drive=gns3-cdrom,id=gns3-cdrom "),
            "{q35}"
        );
        s.hdc_disk_interface = DiskInterface::Unattached;
        assert!(check(&s, false).is_ok());
        // An interface without a disk takes nothing.
        s.hdc_disk_image.clear();
        s.hdc_disk_interface = DiskInterface::Ide;
        assert!(check(&s, false).is_ok());
    }

    #[test]
    fn an_interface_the_binary_lacks_is_refused_naming_those_it_has() {
        let caps = Capabilities {
            devices: ["ahci", "virtio-blk-pci"].into_iter().collect(),
            ..Default::default()
        };
        let mut s = settings();
        s.hdb_disk_image = "/i/b.qcow2".into();
        s.hdb_disk_interface = DiskInterface::Nvme;
        let e = check_binary(&caps, "/q", &s).unwrap_err().to_string();
        assert_eq!(
            e,
            "HdbDiskInterface nvme needs the nvme device, which /q lacks (it is not under its \
             -device help); set HdbDiskInterface to one it has (ide, sata, virtio, none), or \
             QemuPath to a binary with nvme"
        );
        s.hdb_disk_interface = DiskInterface::Sata;
        assert!(check_binary(&caps, "/q", &s).is_ok());
        // A disk the VM does not have is not looked at.
        s.hdc_disk_interface = DiskInterface::Scsi;
        assert!(check_binary(&caps, "/q", &s).is_ok());
    }
}
