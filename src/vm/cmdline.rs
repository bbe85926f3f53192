//! The QEMU command line of a VM: a pure function of its settings and where its files live.

use std::path::{Path, PathBuf};

use super::error::Result;
use super::firmware::{self, Ovmf};
use super::{network, options};
use crate::model::{Display, Settings};

/// The file descriptors on which QEMU finds its QMP socket and its serial port's, already
/// bound and listening. The daemon binds them before the spawn, so it can connect at once:
/// no waiting for QEMU to create a socket file, no race with a stale one.
pub const FIRST_FD: i32 = 3;
pub const QMP_FD: i32 = FIRST_FD;
pub const SERIAL_FD: i32 = FIRST_FD + 1;

/// Where a VM's files are, and what the host decided for it.
pub struct Launch<'a> {
    pub settings: &'a Settings,
    pub vm_dir: &'a Path,
    pub pidfile: &'a Path,
    pub kvm: bool,
    /// QEMU's seccomp sandbox ([`SANDBOX`]).
    pub sandbox: bool,
    /// The OVMF of a UEFI VM (`firmware::find`).
    pub ovmf: Option<&'a Ovmf>,
    /// Where the VM's swtpm listens, if it has Tpm.
    pub tpm_socket: &'a Path,
}

/// QEMU's own seccomp filter: no obsolete system calls, no setuid, no fork or exec (a
/// monitor's `migrate "exec:…"` would run a command as the daemon's user), no changing its
/// own priority or CPU affinity (the daemon and the supervisor set them).
pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// The overlay disks QEMU is given, made by `disks::prepare` before the start.
pub fn hda_overlay(vm_dir: &Path, s: &Settings) -> PathBuf {
    vm_dir.join(if s.hda_disk_image.is_empty() {
        "flash.qcow2"
    } else {
        "hda_disk.qcow2"
    })
}

pub fn hdb_overlay(vm_dir: &Path) -> PathBuf {
    vm_dir.join("hdb_disk.qcow2")
}

/// In QEMU's `key=value,...` option syntax a comma inside a value is written twice.
fn opt_value(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

pub fn build(l: &Launch<'_>) -> Result<Vec<String>> {
    let s = l.settings;
    let mut cmd: Vec<String> = vec![
        s.qemu_path.clone(),
        "-name".into(),
        s.name.clone(),
        "-m".into(),
        s.ram.to_string(),
        "-accel".into(),
        if l.kvm { "kvm" } else { "tcg" }.into(),
        "-display".into(),
        "none".into(),
        "-S".into(),
        "-pidfile".into(),
        l.pidfile.to_string_lossy().into_owned(),
        "-chardev".into(),
        format!("socket,id=gns3-qmp,fd={QMP_FD},server=on,wait=off"),
        "-mon".into(),
        "chardev=gns3-qmp,mode=control".into(),
        // The first serial port is the VM's console, which the daemon reads at all times
        // (`console`); QEMU gets no other listener and no HMP monitor.
        "-chardev".into(),
        format!("socket,id=gns3-serial,fd={SERIAL_FD},server=on,wait=off"),
        "-serial".into(),
        "chardev:gns3-serial".into(),
    ];
    if l.sandbox {
        cmd.extend(["-sandbox".into(), SANDBOX.into()]);
    }
    let drive = |path: PathBuf, index: u32| {
        [
            "-drive".to_string(),
            format!(
                "file={},format=qcow2,if=ide,index={index},media=disk",
                opt_value(&path)
            ),
        ]
    };
    cmd.extend(drive(hda_overlay(l.vm_dir, s), 0));
    if !s.hdb_disk_image.is_empty() {
        cmd.extend(drive(hdb_overlay(l.vm_dir), 1));
    }
    cmd.extend(firmware::args(s, l.vm_dir, l.ovmf)?);
    if s.tpm {
        cmd.extend(super::tpm::args(l.tpm_socket, firmware::q35(s)));
    }
    for (flag, value) in [
        ("-kernel", &s.kernel_image),
        ("-initrd", &s.initrd),
        ("-append", &s.kernel_command_line),
    ] {
        if !value.is_empty() {
            cmd.extend([flag.to_string(), value.clone()]);
        }
    }
    if s.display == Display::Vnc {
        // QEMU's VNC server without a listener of its own: the daemon hands it each client
        // it accepts (`add_client`). The tablet keeps the pointer where the viewer's is.
        cmd.extend(
            [
                "-vnc",
                "none",
                "-vga",
                "std",
                "-usb",
                "-device",
                "usb-tablet",
            ]
            .map(String::from),
        );
    }
    cmd.extend(options::split(&s.options)?);
    cmd.extend(network::args(s.adapters, &s.adapter_type, &s.mac_address));
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            name: "r1".into(),
            qemu_path: "/usr/bin/qemu-system-x86_64".into(),
            mac_address: "52:54:00:12:34:00".into(),
            console_port: 5000,
            monitor_port: 5001,
            ..Settings::default()
        }
    }

    fn launch(s: &Settings) -> Vec<String> {
        build(&Launch {
            settings: s,
            vm_dir: Path::new("/var/lib/gns3-qemud/vms/ab"),
            pidfile: Path::new("/run/gns3-qemud/ab/qemu.pid"),
            kvm: false,
            sandbox: true,
            ovmf: None,
            tpm_socket: Path::new("/run/gns3-qemud/ab/swtpm.sock"),
        })
        .unwrap()
    }

    #[test]
    fn a_default_vm() {
        assert_eq!(
            launch(&settings()).join(" "),
            "/usr/bin/qemu-system-x86_64 -name r1 -m 256 -accel tcg -display none -S \
             -pidfile /run/gns3-qemud/ab/qemu.pid \
             -chardev socket,id=gns3-qmp,fd=3,server=on,wait=off -mon chardev=gns3-qmp,mode=control \
             -chardev socket,id=gns3-serial,fd=4,server=on,wait=off -serial chardev:gns3-serial \
             -sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny \
             -drive file=/var/lib/gns3-qemud/vms/ab/flash.qcow2,format=qcow2,if=ide,index=0,media=disk \
             -netdev hubport,id=gns3-0,hubid=0 -device e1000,netdev=gns3-0,mac=52:54:00:12:34:00"
        );
    }

    #[test]
    fn disks_boot_files_options_in_order() {
        let mut s = settings();
        s.hda_disk_image = "/images/base.qcow2".into();
        s.hdb_disk_image = "/images/data.img".into();
        s.kernel_image = "/boot/vmlinuz".into();
        s.initrd = "/boot/initrd.gz".into();
        s.kernel_command_line = "console=ttyS0 panic=-1".into();
        s.options = "-cpu max -smp 2".into();
        s.console_port = 0;
        s.monitor_port = 0;
        s.adapters = 0;
        let cmd = launch(&s);
        let tail = cmd[cmd.iter().position(|a| a == "-drive").unwrap()..].join(" ");
        assert_eq!(
            tail,
            "-drive file=/var/lib/gns3-qemud/vms/ab/hda_disk.qcow2,format=qcow2,if=ide,index=0,media=disk \
             -drive file=/var/lib/gns3-qemud/vms/ab/hdb_disk.qcow2,format=qcow2,if=ide,index=1,media=disk \
             -kernel /boot/vmlinuz -initrd /boot/initrd.gz -append console=ttyS0 panic=-1 \
             -cpu max -smp 2 -nic none"
        );
    }

    #[test]
    fn a_vnc_display() {
        let mut s = settings();
        s.display = Display::Vnc;
        let cmd = launch(&s).join(" ");
        assert!(
            cmd.contains(" -vnc none -vga std -usb -device usb-tablet -netdev "),
            "{cmd}"
        );
        assert!(!launch(&settings()).contains(&"-vnc".to_string()));
    }

    #[test]
    fn commas_in_paths_kvm_no_sandbox() {
        let s = settings();
        let cmd = build(&Launch {
            settings: &s,
            vm_dir: Path::new("/srv/a,b"),
            pidfile: Path::new("/run/x.pid"),
            kvm: true,
            sandbox: false,
            ovmf: None,
            tpm_socket: Path::new("/run/gns3-qemud/ab/swtpm.sock"),
        })
        .unwrap();
        assert!(cmd
            .contains(&"file=/srv/a,,b/flash.qcow2,format=qcow2,if=ide,index=0,media=disk".into()));
        assert!(cmd.windows(2).any(|w| w == ["-accel", "kvm"]));
        assert!(
            !cmd.contains(&"-sandbox".to_string()),
            "qemu_sandbox = false"
        );
    }
}
