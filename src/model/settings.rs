//! A VM's settings, one row each: its D-Bus name, field, stored type, default, and what a
//! change does to a running VM. The doc comment of a row is its property's documentation.
//!
//! A new plain setting is one row here, its check (`impl Check` in `vm/settings.rs`; the
//! compiler asks for it), its property in `dbus/org.gns3.Qemu.VM.xml`, and the code that
//! uses it. Everything else (the record field, the change clients send, the writable
//! property, its parser and introspection) comes from the row.
//!
//! Longer than most files: the table has a row per setting, each with its documentation.

use serde::{Deserialize, Serialize};

use super::table::{settings, Stored};

const DEFAULT_RAM_MIB: u32 = 256;
const DEFAULT_ADAPTER_TYPE: &str = "e1000";
const DEFAULT_MACHINE_TYPE: &str = "pc";
pub const DEFAULT_STOP_TIMEOUT: u32 = 60;

settings! {
    /// The VM's name: 1 to 64 letters, digits, '.', '_' or '-'; unique on this host.
    Name name: String = String::new(), NextStart;
    /// The QEMU binary, stored as an absolute path (a bare name is looked up in PATH).
    QemuPath qemu_path: String = String::new(), NextStart;
    /// Guest RAM in MiB (default 256), at most the host's memory.
    Ram ram: u32 = DEFAULT_RAM_MIB, NextStart;
    /// Base image of the first disk; the VM runs on a qcow2 linked clone of it (on the image
    /// itself if LinkedClone is false). Empty: a blank 128 MiB flash disk. Changing it (VM
    /// stopped) discards the old clone. An image that makes QEMU open other files (a backing
    /// file) is refused unless they and it lie under the daemon's image_dirs; json: and
    /// protocol names always are.
    HdaDiskImage hda_disk_image: String = String::new(), Stopped;
    /// Base image of the second disk (a linked clone too, checked the same way); empty for
    /// none.
    HdbDiskImage hdb_disk_image: String = String::new(), Stopped;
    /// Number of Ethernet adapters, 0 to 275 (default 1). The NICs that fit on the root PCI
    /// bus are there as they always were; the others go on PCI bridges of 32, added only
    /// when needed. The machine's own devices and the disks' controllers take root slots
    /// too: a number that cannot fit beside them is refused, naming them (devices added by
    /// Options are not counted). Only while stopped, and not below an adapter that has a
    /// tunnel.
    Adapters adapters: u32 = 1, Stopped;
    /// QEMU NIC model of every adapter (default e1000): one that QemuPath lists under
    /// -device help (e1000, virtio-net-pci, rtl8139, …).
    AdapterType adapter_type: String = DEFAULT_ADAPTER_TYPE.into(), NextStart;
    /// Base MAC address: adapter n gets base + n. The default comes from the id, so it is
    /// the same at every start.
    MacAddress mac_address: String = String::new(), NextStart;
    /// Linux kernel to boot directly (-kernel); empty for none.
    KernelImage kernel_image: String = String::new(), NextStart;
    /// Initial ramdisk for KernelImage (-initrd); empty for none.
    Initrd initrd: String = String::new(), NextStart;
    /// Kernel command line for KernelImage (-append). Read by root and members of gns3
    /// only: anyone else reads an empty string, as InterfacesAdded carries it for everyone.
    /// A change is signalled as invalidated, without the value: read it again.
    KernelCommandLine kernel_command_line: String = String::new(), NextStart;
    /// Extra QEMU arguments, split as a shell would. Options the daemon owns (-qmp,
    /// -pidfile, -daemonize, -S, -sandbox, -monitor, -mon, -nographic, -vnc, -spice) are
    /// refused. The first serial port is the console: a -serial here is the guest's second.
    /// Placeholders are replaced at Start (and so shown by CommandLine) within each
    /// argument: %vm-name%, %vm-id%, %project%, %vm-dir% (the VM's directory) and
    /// %console-port% (0 for none); any other %word% stays as it is. A -uuid here takes the
    /// place of the VM's id, which the guest otherwise gets as its UUID.
    /// Read by root and members of gns3 only (secrets go here: -object secret,data=…):
    /// anyone else reads an empty string, as InterfacesAdded carries it for everyone. A
    /// change is signalled as invalidated, without the value: read it again.
    Options options: String = String::new(), NextStart;
    /// CPU limit in percent of one host CPU, 0 = none, up to 100 × host CPUs.
    CpuThrottling cpu_throttling: u32 = 0, Live;
    /// realtime, very high, high, normal, low (default) or very low: nice -20, -15, -5, 0,
    /// 5, 19 for every QEMU thread.
    ProcessPriority process_priority: Priority = Priority::Low, Live;
    /// TCP port of the console's telnet server on ConsoleHost, served by the daemon to whom
    /// its console_access lets in (by default root and members of gns3); 0 for none
    /// (OpenConsole still works). Without one at CreateVM, the lowest free port of the
    /// daemon's console_port_range; the VM keeps it, reserved for it while stopped and across
    /// restarts of the daemon, until it is deleted. Held by the daemon while the VM runs. Only
    /// while stopped.
    ConsolePort console_port: u16 = 0, Stopped;
    /// TCP port of the VM's HMP monitor (telnet, one command per line) on the daemon's
    /// monitor_host, served to root and members of gns3 only; 0 (the default) for none
    /// (HumanMonitorCommand still works). Only while stopped.
    MonitorPort monitor_port: u16 = 0, Stopped;
    /// Use the older `socket` netdev for UDP tunnels (IPv4 only) even where the binary has
    /// `dgram`. Binaries without `dgram` (before QEMU 7.2) always get `socket`. Applies to
    /// tunnels attached from then on.
    LegacyNetworking legacy_networking: bool = false, NextStart;
    /// auto (KVM where /dev/kvm is usable, else TCG), kvm, or tcg.
    Accelerator accelerator: Accelerator = Accelerator::Auto, NextStart;
    /// none (default): no display of the daemon's; vnc: a VGA display and a USB tablet,
    /// reached through OpenGraphics and, with a VncPort, by VNC clients. Only while stopped.
    Display display: Display = Display::Headless, Stopped;
    /// TCP port of the VNC server of a VM whose Display is vnc, on ConsoleHost, served by
    /// the daemon to whom its console_access lets in; 0 (the default) for none
    /// (OpenGraphics still works). Only while stopped.
    VncPort vnc_port: u16 = 0, Stopped;
    /// Virtual CPUs the guest has at start, 1 to MaxCpus (default 1); more than the host
    /// has is allowed (TCG runs them in turn). Raised on a running VM, the new CPUs are
    /// plugged in at once (CPU hot-add; a Linux guest may need to bring them online).
    /// Lowering it is refused while QEMU runs (InvalidState): stop the VM first.
    Cpus cpus: u32 = 1, Live;
    /// The most virtual CPUs the guest may have, Cpus included: room for CPUs hot-added
    /// while it runs. 1 to 255 (default 1). Only while stopped.
    MaxCpus max_cpus: u32 = 1, Stopped;
    /// QEMU CPU model (-cpu), one that QemuPath lists under -cpu help (qemu64, Skylake-Server,
    /// max, …); empty (the default) for QEMU's own. host only with Accelerator = kvm.
    CpuModel cpu_model: String = String::new(), NextStart;
    /// QEMU machine type (-machine): pc (the default), q35, or any name or alias QemuPath
    /// lists under -machine help (pc-q35-7.2, …). Only while stopped.
    MachineType machine_type: String = DEFAULT_MACHINE_TYPE.into(), Stopped;
    /// Base image of the third disk (a linked clone, checked as HdaDiskImage); empty for
    /// none. On ide it would take the unit the CD-ROM drive holds: put it on another
    /// HdcDiskInterface.
    HdcDiskImage hdc_disk_image: String = String::new(), Stopped;
    /// Base image of the fourth disk (a linked clone, checked as HdaDiskImage); empty for
    /// none.
    HddDiskImage hdd_disk_image: String = String::new(), Stopped;
    /// How the first disk is attached: ide (default), sata (one AHCI controller shared by
    /// the VM's sata disks), virtio (virtio-blk-pci), scsi (one virtio-scsi controller
    /// shared by the VM's scsi disks), nvme, or none (only defined, as -drive
    /// if=none,id=gns3-hda, for a -device of Options to attach). The binary must have the
    /// device (ahci, virtio-blk-pci, virtio-scsi-pci, nvme).
    HdaDiskInterface hda_disk_interface: DiskInterface = DiskInterface::Ide, Stopped;
    /// How the second disk is attached, as HdaDiskInterface (drive id gns3-hdb).
    HdbDiskInterface hdb_disk_interface: DiskInterface = DiskInterface::Ide, Stopped;
    /// How the third disk is attached, as HdaDiskInterface (drive id gns3-hdc); not ide,
    /// whose unit the CD-ROM drive holds.
    HdcDiskInterface hdc_disk_interface: DiskInterface = DiskInterface::Ide, Stopped;
    /// How the fourth disk is attached, as HdaDiskInterface (drive id gns3-hdd).
    HddDiskInterface hdd_disk_interface: DiskInterface = DiskInterface::Ide, Stopped;
    /// ISO image in the VM's CD-ROM drive (IDE, drive id gns3-cdrom), read-only and never
    /// cloned; empty (the default) for no media. The drive always exists: on a running VM
    /// a new image is inserted at once and an empty one ejects the media.
    CdromImage cdrom_image: String = String::new(), Live;
    /// What the firmware boots from, in order: c (the first disk, default), d (the
    /// CD-ROM), n (the first adapter), cn, cd, dn, dc, nc or nd. Given as -boot order and
    /// as bootindex on the devices.
    BootOrder boot_order: BootOrder = BootOrder::C, NextStart;
    /// bios (default): QEMU's SeaBIOS, or BiosImage; uefi: OVMF (Debian package ovmf) with
    /// the VM's own UEFI variables, kept in its directory from its first start; uefi-secure:
    /// OVMF with Secure Boot and Microsoft's keys enrolled, on a q35 MachineType only.
    /// Changing it discards the VM's UEFI variables. Only while stopped.
    Firmware firmware: Firmware = Firmware::Bios, Stopped;
    /// A vendor BIOS file for QEMU's -bios (an absolute path to a readable file), with
    /// Firmware bios only; empty (the default) for QEMU's own. Only while stopped.
    BiosImage bios_image: String = String::new(), Stopped;
    /// A TPM 2.0 for the guest (tpm-tis; tpm-crb on q35), emulated by a swtpm of the VM's
    /// own (Debian package swtpm), its state kept in the VM's directory. Only while stopped.
    Tpm tpm: bool = false, Stopped;
    /// true (the default): each disk is a qcow2 linked clone of its base image, made in the
    /// VM's directory, and the base is never written. false: the base images are given to
    /// QEMU in place, the guest writing to them, in the format found when the VM first used
    /// each; a base used so belongs to this VM only (another VM using it at all, in place
    /// or as a linked clone's base, is refused, and so is this VM while another uses it).
    /// The blank flash disk (no HdaDiskImage) is the VM's own either way. Changing it
    /// discards the VM's linked clones. Only while stopped.
    LinkedClone linked_clone: bool = true, Stopped;
    /// true (the default): an adapter without a tunnel has its link down, as a NIC without
    /// a cable. false: its link stays up and what the guest sends on it is dropped, for
    /// appliances that misbehave on a link that is down. Takes effect at the next Start,
    /// and on an adapter whose tunnel is removed from then on.
    ReplicateLinkState replicate_link_state: bool = true, NextStart;
    /// Per-adapter exceptions to AdapterType and MacAddress: (adapter, model, MAC), the
    /// model "" for AdapterType, the MAC "" for base + adapter. At most one entry per
    /// adapter, each below Adapters (lowering Adapters below one is refused: remove it
    /// first); a model is checked as AdapterType is, a MAC as MacAddress is, and every
    /// adapter's MAC must differ from the others' (base + n ones included). Empty by
    /// default.
    CustomAdapters custom_adapters: Vec<CustomAdapter> = Vec::new(), NextStart;
    /// What Stop does: power-off (the default): QEMU quits at once, as the power cord
    /// pulled; shutdown: the ACPI power button is pressed and the guest given StopTimeout
    /// seconds to power itself off, then it is stopped hard; save-state: the guest's RAM and
    /// devices are saved into the VM's qcow2 files and the next Start resumes from there
    /// (every writable drive must be qcow2). Applies from the next Stop.
    OnStop on_stop: OnStop = OnStop::PowerOff, NextStart;
    /// Seconds, 1 to 3600 (default 60), that Stop gives a shutdown or a save-state before
    /// the VM is stopped hard (LastError then says so). Applies from the next Stop.
    StopTimeout stop_timeout: u32 = DEFAULT_STOP_TIMEOUT, NextStart;
    /// Start the VM when the daemon starts after a boot of the host (not after a restart of
    /// the daemon alone, which finds its running VMs again). Default false.
    Autostart autostart: bool = false, NextStart;
}

/// One entry of CustomAdapters, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct CustomAdapter {
    pub adapter: u32,
    /// Empty: AdapterType.
    pub model: String,
    /// Empty: base + adapter.
    pub mac: String,
}

impl Stored for Vec<CustomAdapter> {
    type Wire = Vec<(u32, String, String)>;
    fn to_wire(&self) -> Self::Wire {
        self.iter()
            .map(|c| (c.adapter, c.model.clone(), c.mac.clone()))
            .collect()
    }
}

impl Settings {
    /// Whether the machine is a Q35 one (`q35` or a versioned `pc-q35-…`): PCIe, AHCI on
    /// board, a TPM as tpm-crb, UEFI secure boot possible.
    pub fn is_q35(&self) -> bool {
        self.machine_type == "q35" || self.machine_type.starts_with("pc-q35-")
    }
}

impl Settings {
    /// The TCP ports the VM holds (from the console port range), by setting; 0 is none.
    pub fn tcp_ports(&self) -> [(&'static str, u16); 3] {
        [
            ("ConsolePort", self.console_port),
            ("MonitorPort", self.monitor_port),
            ("VncPort", self.vnc_port),
        ]
    }
}

/// A setting stored as one of a few names.
macro_rules! named {
    ($(#[$attr:meta])* $ty:ident { $($variant:ident = $name:literal),+ $(,)? }) => {
        $(#[$attr])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
        pub enum $ty {
            $( #[serde(rename = $name)] $variant, )+
        }

        impl $ty {
            pub const ALL: &[$ty] = &[$($ty::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $( $ty::$variant => $name, )+ }
            }

            pub fn from_name(name: &str) -> Option<$ty> {
                Self::ALL.iter().copied().find(|v| v.as_str() == name)
            }
        }

        impl Stored for $ty {
            type Wire = String;
            fn to_wire(&self) -> String {
                self.as_str().to_string()
            }
        }
    };
}

named!(
    /// Process priority, as the seed named the levels.
    Priority {
        Realtime = "realtime",
        VeryHigh = "very high",
        High = "high",
        Normal = "normal",
        Low = "low",
        VeryLow = "very low",
    }
);

impl Priority {
    pub fn nice(self) -> i32 {
        match self {
            Priority::Realtime => -20,
            Priority::VeryHigh => -15,
            Priority::High => -5,
            Priority::Normal => 0,
            Priority::Low => 5,
            Priority::VeryLow => 19,
        }
    }
}

named!(
    /// What Stop does with a running VM.
    OnStop {
        PowerOff = "power-off",
        Shutdown = "shutdown",
        SaveState = "save-state",
    }
);

named!(Accelerator {
    Auto = "auto",
    Kvm = "kvm",
    Tcg = "tcg",
});

named!(Firmware {
    Bios = "bios",
    Uefi = "uefi",
    UefiSecure = "uefi-secure",
});

named!(Display {
    Headless = "none",
    Vnc = "vnc",
});

named!(
    /// How a disk is attached to the VM.
    DiskInterface {
        Ide = "ide",
        Sata = "sata",
        Virtio = "virtio",
        Scsi = "scsi",
        Nvme = "nvme",
        Unattached = "none",
    }
);

named!(
    /// The devices the firmware boots from, in order: c a disk, d the CD-ROM, n a NIC.
    BootOrder {
        C = "c",
        D = "d",
        N = "n",
        Cn = "cn",
        Cd = "cd",
        Dn = "dn",
        Dc = "dc",
        Nc = "nc",
        Nd = "nd",
    }
);

#[cfg(test)]
mod tests {
    use super::super::table::{Unfit, Value, When};
    use super::*;

    #[test]
    fn the_record_names_each_field_as_its_row() {
        let json = serde_json::to_value(Settings::default()).unwrap();
        let mut stored: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        let mut rows: Vec<&str> = ROWS.iter().map(|r| r.key).collect();
        stored.sort();
        rows.sort();
        assert_eq!(stored, rows);
    }

    #[test]
    fn a_record_from_before_a_setting_reads_its_default() {
        let s: Settings = serde_json::from_str(r#"{"Name": "r1", "Ram": 512}"#).unwrap();
        assert_eq!(
            s,
            Settings {
                name: "r1".into(),
                ram: 512,
                ..Settings::default()
            }
        );
        assert!(serde_json::from_str::<Settings>(r#"{"Rma": 1}"#).is_err());
    }

    #[test]
    fn every_row_goes_to_its_value_and_back() {
        let s = Settings::default();
        for row in ROWS {
            let value = s.get(row.key).unwrap();
            assert_eq!(value.signature(), row.signature, "{}", row.key);
            let change = Setting::from_value(row.key, value).unwrap();
            assert_eq!(change.key(), row.key);
        }
        assert_eq!(s.get("Nope"), None);
        assert_eq!(s.get("ProcessPriority"), Some(Value::Str("low".into())));
    }

    #[test]
    fn a_value_of_another_type_or_name_is_unfit() {
        assert_eq!(
            Setting::from_value("Ram", Value::Str("1".into())),
            Err(Unfit::Type("u"))
        );
        assert_eq!(
            Setting::from_value("ConsolePort", Value::U32(1)),
            Err(Unfit::Type("q"))
        );
        assert_eq!(
            Setting::from_value("Rma", Value::U32(1)),
            Err(Unfit::Unknown)
        );
    }

    #[test]
    fn differing_names_the_rows_that_changed() {
        let old = Settings::default();
        let new = Settings {
            ram: 1,
            console_port: 5000,
            ..old.clone()
        };
        let keys: Vec<(&str, When)> = old
            .differing(&new)
            .iter()
            .map(|r| (r.key, r.when))
            .collect();
        assert_eq!(
            keys,
            [("Ram", When::NextStart), ("ConsolePort", When::Stopped)]
        );
        assert!(old.differing(&old).is_empty());
    }

    #[test]
    fn q35_machines_by_alias_and_version() {
        let with = |m: &str| Settings {
            machine_type: m.into(),
            ..Settings::default()
        };
        assert!(with("q35").is_q35() && with("pc-q35-7.2").is_q35());
        for other in ["pc", "pc-i440fx-7.2", "microvm", "q35x"] {
            assert!(!with(other).is_q35(), "{other}");
        }
        assert_eq!(Settings::default().machine_type, "pc");
    }

    #[test]
    fn named_settings_read_their_names() {
        assert_eq!(Priority::from_name("very low"), Some(Priority::VeryLow));
        assert_eq!(Priority::from_name("urgent"), None);
        assert_eq!(Accelerator::from_name("kvm"), Some(Accelerator::Kvm));
        let nice: Vec<i32> = Priority::ALL.iter().map(|p| p.nice()).collect();
        assert_eq!(nice, [-20, -15, -5, 0, 5, 19]);
    }
}
