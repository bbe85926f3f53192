//! The QEMU command line of a VM: a pure function of its settings and where its files live.

use std::path::Path;

use super::error::Result;
use super::firmware::{self, Ovmf};
use super::{drives, machine, network, options, pci};
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
    /// The VM's id (32 hex digits) and project, for -uuid and the placeholders of Options.
    pub id: &'a str,
    pub project: &'a str,
    pub vm_dir: &'a Path,
    pub pidfile: &'a Path,
    pub kvm: bool,
    /// QEMU's seccomp sandbox ([`SANDBOX`]).
    pub sandbox: bool,
    /// The OVMF of a UEFI VM (`firmware::find`).
    pub ovmf: Option<&'a Ovmf>,
    /// Where the VM's swtpm listens, if it has Tpm.
    pub tpm_socket: &'a Path,
    /// The formats of its base images (`Record::image_formats`), for those used in place.
    pub formats: &'a super::bases::Formats,
}

/// QEMU's own seccomp filter: no obsolete system calls, no setuid, no fork or exec (a
/// monitor's `migrate "exec:…"` would run a command as the daemon's user), no changing its
/// own priority or CPU affinity (the daemon and the supervisor set them).
pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// In QEMU's `key=value,...` option syntax a comma inside a value is written twice.
pub(super) fn opt_value(p: &Path) -> String {
    p.to_string_lossy().replace(',', ",,")
}

pub fn build(l: &Launch<'_>) -> Result<Vec<String>> {
    let s = l.settings;
    let vm_dir = l.vm_dir.to_string_lossy();
    let placeholders = options::Placeholders {
        vm_name: &s.name,
        vm_id: l.id,
        project: l.project,
        vm_dir: &vm_dir,
        console_port: s.console_port,
    };
    let user_options = options::expand(options::split(&s.options)?, &placeholders);
    options::check_args(&user_options)?;
    let mut cmd: Vec<String> = vec![
        s.qemu_path.clone(),
        "-name".into(),
        s.name.clone(),
        "-m".into(),
        s.ram.to_string(),
        "-accel".into(),
        if l.kvm { "kvm" } else { "tcg" }.into(),
    ];
    cmd.extend(machine::args(s, l.id, &user_options));
    cmd.extend::<[String; 13]>([
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
    ]);
    if l.sandbox {
        cmd.extend(["-sandbox".into(), SANDBOX.into()]);
    }
    cmd.extend(drives::args(l.vm_dir, s, s.is_q35(), l.formats)?);
    cmd.extend(firmware::args(s, l.vm_dir, l.ovmf)?);
    if s.tpm {
        cmd.extend(super::tpm::args(l.tpm_socket, s.is_q35()));
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
    cmd.extend(user_options);
    let boot = drives::boot_index(s, 'n');
    cmd.extend(network::args(&network::nics(s), &pci::of(s)?, boot));
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
            id: "6f9619ff8b86d011b42d00c04fc964ff",
            project: "lab",
            vm_dir: Path::new("/var/lib/gns3-qemud/vms/ab"),
            pidfile: Path::new("/run/gns3-qemud/ab/qemu.pid"),
            kvm: false,
            sandbox: true,
            ovmf: None,
            tpm_socket: Path::new("/run/gns3-qemud/ab/swtpm.sock"),
            formats: &Default::default(),
        })
        .unwrap()
    }

    #[test]
    fn a_default_vm() {
        assert_eq!(
            launch(&settings()).join(" "),
            "/usr/bin/qemu-system-x86_64 -name r1 -m 256 -accel tcg \
             -machine pc -smp cpus=1,maxcpus=1,sockets=1 -uuid 6f9619ff-8b86-d011-b42d-00c04fc964ff \
             -display none -S \
             -pidfile /run/gns3-qemud/ab/qemu.pid \
             -chardev socket,id=gns3-qmp,fd=3,server=on,wait=off -mon chardev=gns3-qmp,mode=control \
             -chardev socket,id=gns3-serial,fd=4,server=on,wait=off -serial chardev:gns3-serial \
             -sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny \
             -drive if=none,id=gns3-hda,file=/var/lib/gns3-qemud/vms/ab/flash.qcow2,format=qcow2 \
             -device ide-hd,bus=ide.0,unit=0,drive=gns3-hda,id=gns3-hda,bootindex=1 \
             -drive if=none,id=gns3-cdrom,media=cdrom,readonly=on \
             -device ide-cd,bus=ide.1,unit=0,drive=gns3-cdrom,id=gns3-cdrom -boot order=c \
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
            "-drive if=none,id=gns3-hda,file=/var/lib/gns3-qemud/vms/ab/hda_disk.qcow2,format=qcow2 \
             -device ide-hd,bus=ide.0,unit=0,drive=gns3-hda,id=gns3-hda,bootindex=1 \
             -drive if=none,id=gns3-hdb,file=/var/lib/gns3-qemud/vms/ab/hdb_disk.qcow2,format=qcow2 \
             -device ide-hd,bus=ide.0,unit=1,drive=gns3-hdb,id=gns3-hdb \
             -drive if=none,id=gns3-cdrom,media=cdrom,readonly=on \
             -device ide-cd,bus=ide.1,unit=0,drive=gns3-cdrom,id=gns3-cdrom -boot order=c \
             -kernel /boot/vmlinuz -initrd /boot/initrd.gz -append console=ttyS0 panic=-1 \
             -cpu max -smp 2 -nic none"
        );
    }

    #[test]
    fn options_expanded_and_checked_after_expansion() {
        let mut s = settings();
        s.options =
            "-smbios type=1,serial=%vm-id% -chardev file,id=log,path=%vm-dir%/%vm-name%.log \
                     -uuid 00000000-0000-0000-0000-000000000001"
                .into();
        let cmd = launch(&s).join(" ");
        assert!(
            cmd.contains(
                " -smbios type=1,serial=6f9619ff8b86d011b42d00c04fc964ff \
                 -chardev file,id=log,path=/var/lib/gns3-qemud/vms/ab/r1.log \
                 -uuid 00000000-0000-0000-0000-000000000001 -netdev "
            ),
            "{cmd}"
        );
        assert_eq!(cmd.matches("-uuid").count(), 1, "{cmd}");
        // A name is only letters, digits and '.', '_', '-': it may be an option QEMU reads.
        s.name = "-daemonize".into();
        s.options = "-name %vm-name%".into();
        let e = build(&Launch {
            settings: &s,
            id: "6f9619ff8b86d011b42d00c04fc964ff",
            project: "",
            vm_dir: Path::new("/v"),
            pidfile: Path::new("/p"),
            kvm: false,
            sandbox: true,
            ovmf: None,
            tpm_socket: Path::new("/t"),
            formats: &Default::default(),
        })
        .unwrap_err();
        assert!(e.to_string().contains("'-daemonize'"), "{e}");
    }

    #[test]
    fn a_network_boot_marks_the_first_nic() {
        let mut s = settings();
        s.adapters = 2;
        s.boot_order = crate::model::BootOrder::Nc;
        let cmd = launch(&s).join(" ");
        assert!(
            cmd.ends_with(
                " -boot order=nc -netdev hubport,id=gns3-0,hubid=0 \
                 -device e1000,netdev=gns3-0,mac=52:54:00:12:34:00,bootindex=1 \
                 -netdev hubport,id=gns3-1,hubid=1 -device e1000,netdev=gns3-1,mac=52:54:00:12:34:01"
            ),
            "{cmd}"
        );
        assert!(cmd.contains(",id=gns3-hda,bootindex=2 "), "{cmd}");
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
            id: "6f9619ff8b86d011b42d00c04fc964ff",
            project: "",
            vm_dir: Path::new("/srv/a,b"),
            pidfile: Path::new("/run/x.pid"),
            kvm: true,
            sandbox: false,
            ovmf: None,
            tpm_socket: Path::new("/run/gns3-qemud/ab/swtpm.sock"),
            formats: &Default::default(),
        })
        .unwrap();
        assert!(cmd.contains(&"if=none,id=gns3-hda,file=/srv/a,,b/flash.qcow2,format=qcow2".into()));
        assert!(cmd.windows(2).any(|w| w == ["-accel", "kvm"]));
        assert!(
            !cmd.contains(&"-sandbox".to_string()),
            "qemu_sandbox = false"
        );
    }
}
