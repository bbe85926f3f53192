//! The PCI slots of a VM: which of the root bus's 32 the machine and the VM's own devices
//! take, and where each adapter's NIC goes. NICs that fit on the root bus are left to QEMU's
//! automatic addresses, as before bridges existed, so a VM with few adapters keeps the
//! addresses its guest knows; the others go on `pci-bridge`s, added only when needed.
//!
//! Seen with `query-pci` on QEMU 7.2 (the unit tests hold these counts): a `pc` takes slot 0
//! (host bridge), 1 (PIIX3: ISA, IDE, ACPI and, with `-usb`, its UHCI as functions) and one
//! for the VGA QEMU adds unless told otherwise; a `q35` takes 0 (host bridge), 0x1f (LPC,
//! SATA, SMBus), one for the VGA, and 0x1d for its USB controllers with `-usb`. Each of
//! `ahci`, `virtio-scsi-pci`, `virtio-blk-pci` and `nvme` takes one; TPMs (ISA, sysbus) and
//! OVMF's flash take none. A `pci-bridge` takes one root slot and has 32 of its own (0 to
//! 0x1f), on a pc's bus and on a q35's pcie.0 alike. Devices a user's Options add are not
//! counted: they take slots the NICs then lack, and QEMU refuses the start.

use super::drives::{Disk, DISKS};
use super::error::{Error, Result};
use crate::model::{DiskInterface, Display, Settings};

/// Slots of a PCI bus, the root one or a bridge's.
pub const SLOTS: u32 = 32;

/// Where an adapter's NIC is plugged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// On the root bus, at the address QEMU picks.
    Root,
    /// On bridge `bridge` (from 1), slot `addr`.
    Bridge { bridge: u32, addr: u32 },
}

/// The bridges a VM needs and the place of each adapter's NIC, adapter 0 first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub bridges: u32,
    pub places: Vec<Place>,
}

/// The id of bridge `k`, which its NICs name as their bus.
pub fn bridge_id(k: u32) -> String {
    format!("gns3-bridge-{k}")
}

/// What holds slots of the root bus, one entry per slot, as a person would name it.
pub fn taken(s: &Settings) -> Vec<String> {
    let mut taken: Vec<String> = if s.is_q35() {
        vec!["the host bridge".into(), "the LPC/SATA/SMBus".into()]
    } else {
        vec!["the host bridge".into(), "the PIIX3 (ISA, IDE, USB)".into()]
    };
    taken.push("the VGA".into());
    if s.is_q35() && s.display == Display::Vnc {
        taken.push("the USB controllers (Display vnc)".into());
    }
    let disks: Vec<(Disk, DiskInterface)> = DISKS
        .into_iter()
        .filter(|d| d.exists(s))
        .map(|d| (d, d.interface(s)))
        .collect();
    let uses = |i: DiskInterface| disks.iter().any(|(_, it)| *it == i);
    if uses(DiskInterface::Sata) {
        taken.push("the AHCI of the sata disks".into());
    }
    if uses(DiskInterface::Scsi) {
        taken.push("the virtio-scsi of the scsi disks".into());
    }
    for (disk, interface) in &disks {
        if matches!(interface, DiskInterface::Virtio | DiskInterface::Nvme) {
            taken.push(format!("{} ({})", disk.key(), interface.as_str()));
        }
    }
    taken
}

/// How `adapters` NICs go on a root bus with `free` slots: all on it if they fit, else on
/// as few bridges as hold the rest, those taking root slots too. None if they cannot fit.
pub fn layout(adapters: u32, free: u32) -> Option<Layout> {
    if adapters <= free {
        return Some(Layout {
            bridges: 0,
            places: vec![Place::Root; adapters as usize],
        });
    }
    let bridges = (1..=free).find(|b| (free - b) + b * SLOTS >= adapters)?;
    let root = free - bridges;
    let places = (0..adapters)
        .map(|n| match n.checked_sub(root) {
            None => Place::Root,
            Some(k) => Place::Bridge {
                bridge: k / SLOTS + 1,
                addr: k % SLOTS,
            },
        })
        .collect();
    Some(Layout { bridges, places })
}

/// The layout of the VM's NICs, or why its Adapters do not fit with its machine and disks.
pub fn of(s: &Settings) -> Result<Layout> {
    let taken = taken(s);
    let free = SLOTS.saturating_sub(taken.len() as u32);
    layout(s.adapters, free).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "Adapters {} do not fit this VM's PCI slots: {free} of the {SLOTS} slots of its \
             {} root bus are free ({} take the others), which hold at most {} adapters with \
             bridges; ask for fewer Adapters, or put disks on ide, sata or scsi",
            s.adapters,
            s.machine_type,
            taken.join(", "),
            free * SLOTS
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings::default()
    }

    #[test]
    fn machines_and_devices_take_what_query_pci_showed() {
        // pc: 00.0 host, 01.x PIIX3, 02.0 VGA; q35: 00.0, 1f.x, 01.0 VGA.
        assert_eq!(taken(&settings()).len(), 3);
        let mut s = settings();
        s.machine_type = "pc-q35-7.2".into();
        assert_eq!(taken(&s).len(), 3);
        // -usb: on pc functions of slot 1, on q35 slot 0x1d.
        s.display = Display::Vnc;
        assert_eq!(taken(&s).len(), 4);
        s.machine_type = "pc".into();
        assert_eq!(taken(&s).len(), 3);
        // ahci 03.0, virtio-scsi 04.0, virtio-blk 05.0, nvme 06.0 on both machines; the
        // second sata or scsi disk shares its controller; ide takes none.
        s.hda_disk_interface = DiskInterface::Sata;
        s.hdb_disk_image = "/b".into();
        s.hdb_disk_interface = DiskInterface::Scsi;
        s.hdc_disk_image = "/c".into();
        s.hdc_disk_interface = DiskInterface::Virtio;
        s.hdd_disk_image = "/d".into();
        s.hdd_disk_interface = DiskInterface::Nvme;
        assert_eq!(
            taken(&s)[3..],
            [
                "the AHCI of the sata disks",
                "the virtio-scsi of the scsi disks",
                "HdcDiskImage (virtio)",
                "HddDiskImage (nvme)"
            ]
        );
        s.hdd_disk_interface = DiskInterface::Sata;
        s.hdc_disk_interface = DiskInterface::Unattached;
        assert_eq!(taken(&s).len(), 5);
        // A disk without an image is not there, whatever its interface.
        s.hdd_disk_image.clear();
        s.hdd_disk_interface = DiskInterface::Nvme;
        assert_eq!(taken(&s).len(), 5);
    }

    #[test]
    fn nics_that_fit_stay_on_the_root_bus() {
        // QEMU 7.2 refuses the 30th NIC on a pc or q35 without bridges: 29 slots are free.
        assert_eq!(
            layout(29, 29),
            Some(Layout {
                bridges: 0,
                places: vec![Place::Root; 29]
            })
        );
        assert_eq!(layout(0, 29).unwrap().places, []);
    }

    #[test]
    fn bridges_only_as_needed() {
        let l = layout(30, 29).unwrap();
        assert_eq!(l.bridges, 1);
        assert_eq!(l.places[27], Place::Root);
        assert_eq!(l.places[28], Place::Bridge { bridge: 1, addr: 0 });
        assert_eq!(l.places[29], Place::Bridge { bridge: 1, addr: 1 });
        // 64: one bridge holds 28 + 32 = 60, two hold 27 + 64.
        let l = layout(64, 29).unwrap();
        assert_eq!(l.bridges, 2);
        assert_eq!(l.places.iter().filter(|p| **p == Place::Root).count(), 27);
        assert_eq!(
            l.places[58],
            Place::Bridge {
                bridge: 1,
                addr: 31
            }
        );
        assert_eq!(l.places[59], Place::Bridge { bridge: 2, addr: 0 });
        assert_eq!(l.places[63], Place::Bridge { bridge: 2, addr: 4 });
        // 275 (GNS3's most) on the fewest root slots any VM here leaves (24).
        let l = layout(275, 24).unwrap();
        assert_eq!((l.bridges, l.places.len()), (9, 275));
        assert_eq!(l.places[274], Place::Bridge { bridge: 9, addr: 3 });
        // Every slot a bridge: 32 per free slot, and not one more.
        assert_eq!(
            layout(64, 2).unwrap().places[0],
            Place::Bridge { bridge: 1, addr: 0 }
        );
        assert_eq!(layout(65, 2), None);
        assert_eq!(layout(1, 0), None);
    }

    #[test]
    fn too_many_for_the_slots_is_refused_naming_them() {
        let mut s = settings();
        s.adapters = 275;
        assert_eq!(of(&s).unwrap().bridges, 8);
        assert_eq!(
            layout(s.adapters, 8).map(|l| l.bridges),
            None,
            "8 free slots hold 256"
        );
        s.adapters = 1000;
        let e = of(&s).unwrap_err().to_string();
        assert_eq!(
            e,
            "Adapters 1000 do not fit this VM's PCI slots: 29 of the 32 slots of its pc root \
             bus are free (the host bridge, the PIIX3 (ISA, IDE, USB), the VGA take the \
             others), which hold at most 928 adapters with bridges; ask for fewer Adapters, or \
             put disks on ide, sata or scsi"
        );
    }
}
