//! A VM's whole life over D-Bus: CreateVM → Start → Stop → Delete, each step timed alone, for
//! two machines: a 64 MiB guest with no disk of its own (so the daemon makes its blank flash
//! disk at the first Start), and a lab machine as vendor appliances want it: four disks on
//! four interfaces (each a linked clone of its base, made at Start), a CD-ROM with media and
//! UEFI (the VARS copy made at Start). The floor is QEMU itself: the daemon's own command line
//! for such a VM, run by hand with a listening QMP socket as fd 3, until QMP greets, then
//! `quit` and its exit.
//!
//! Runs alternate with the floor's, so a shared machine's drifting load weighs on both.

use crate::common::VmProxy;
use crate::lab::{ms, small_vm, BenchLab};
use crate::report::{self, Figure, Report, Target};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use zbus::zvariant::Variant;

const SECTION: &str = "cycle";
const RUNS: usize = 30;
const STEPS: [&str; 4] = ["CreateVM", "Start", "Stop", "Delete"];

pub type Settings = HashMap<&'static str, Variant<'static>>;

pub fn run(rt: &Runtime) -> Report {
    let lab = rt.block_on(BenchLab::start());
    let images = tempfile::tempdir().expect("temp dir for the lab machine's images");
    let mut all = measure(rt, &lab, ("", ""), small_vm());
    let machine = (("lab machine: ", "machine-"), lab_machine(images.path()));
    let machine = measure(rt, &lab, machine.0, machine.1);
    all.figures.extend(machine.figures);
    all.targets.extend(machine.targets);
    all
}

/// The cycles of a VM with `settings` against their floors; figure names begin with `kind`,
/// VM names with `prefix`.
fn measure(
    rt: &Runtime,
    lab: &BenchLab,
    (kind, prefix): (&str, &str),
    settings: Settings,
) -> Report {
    let work = tempfile::tempdir().expect("temp dir for the floor's QEMU");
    let floor_cmd = rt.block_on(floor_command(lab, work.path(), prefix, &settings));
    // Not counted: the first start probes the QEMU binary and warms the page cache.
    rt.block_on(cycle(lab, &format!("{prefix}warm-up"), &settings));
    by_hand(&floor_cmd, work.path());

    let mut steps: [Vec<f64>; 4] = Default::default();
    let (mut cycles, mut floors) = (Vec::new(), Vec::new());
    for r in 0..RUNS {
        let mut run_cycle = || {
            let t = rt.block_on(cycle(lab, &format!("{prefix}cycle-{r}"), &settings));
            for (s, d) in steps.iter_mut().zip(t) {
                s.push(ms(d));
            }
            cycles.push(ms(t.iter().sum()));
        };
        if r % 2 == 0 {
            run_cycle();
            floors.push(ms(by_hand(&floor_cmd, work.path())));
        } else {
            floors.push(ms(by_hand(&floor_cmd, work.path())));
            run_cycle();
        }
    }
    eprintln!(
        "{kind}cycle median {:.1} ms, floor median {:.1} ms",
        report::median(&cycles),
        report::median(&floors)
    );
    let ratio = report::median(&cycles) / report::median(&floors);
    let named = |name: &str| format!("{kind}{name}");
    let mut figures = vec![
        Figure::new(
            SECTION,
            &named("QEMU by hand: spawn to QMP greeting, quit, exit (floor)"),
            "ms",
            floors,
        ),
        Figure::new(
            SECTION,
            &named("CreateVM + Start + Stop + Delete"),
            "ms",
            cycles,
        ),
    ];
    for (name, samples) in STEPS.iter().zip(steps) {
        figures.push(Figure::new(SECTION, &named(name), "ms", samples));
    }
    Report {
        figures,
        targets: vec![Target::new(
            SECTION,
            &named("cycle / floor (medians)"),
            ratio,
            1.3,
            "ratio",
        )],
    }
}

/// The lab machine: its four bases (empty qcow2 images) and its CD's media made in `dir`.
fn lab_machine(dir: &Path) -> Settings {
    let mut s = small_vm();
    // OVMF wants more than the small VM's 64 MiB.
    s.insert("Ram", Variant::from(256u32));
    s.insert("Firmware", Variant::from("uefi".to_string()));
    let disks = [
        ("Hda", "ide"),
        ("Hdb", "sata"),
        ("Hdc", "virtio"),
        ("Hdd", "scsi"),
    ];
    for (disk, interface) in disks {
        let base = dir.join(format!("{disk}.qcow2"));
        let made = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&base)
            .arg("64M")
            .status()
            .expect("running qemu-img");
        assert!(made.success(), "qemu-img create {}: {made}", base.display());
        let base = base.to_string_lossy().into_owned();
        s.insert(leak(format!("{disk}DiskImage")), Variant::from(base));
        s.insert(
            leak(format!("{disk}DiskInterface")),
            Variant::from(interface.to_string()),
        );
    }
    let iso = dir.join("media.iso");
    std::fs::write(&iso, vec![0u8; 1 << 20]).expect("writing the CD's media");
    s.insert(
        "CdromImage",
        Variant::from(iso.to_string_lossy().into_owned()),
    );
    s
}

/// A setting's name, made once per run of the bench.
fn leak(name: String) -> &'static str {
    Box::leak(name.into_boxed_str())
}

/// One life of a VM; the time of each step.
pub async fn cycle(lab: &BenchLab, name: &str, settings: &Settings) -> [Duration; 4] {
    let t = Instant::now();
    let path = lab
        .manager
        .create_vm(name, settings.clone())
        .await
        .unwrap_or_else(|e| panic!("CreateVM {name}: {e}"));
    let create = t.elapsed();
    let vm = lab.vm(&path).await;
    let t = Instant::now();
    vm.start()
        .await
        .unwrap_or_else(|e| panic!("Start {name}: {e}"));
    let start = t.elapsed();
    let t = Instant::now();
    vm.stop()
        .await
        .unwrap_or_else(|e| panic!("Stop {name}: {e}"));
    let stop = t.elapsed();
    let t = Instant::now();
    vm.delete()
        .await
        .unwrap_or_else(|e| panic!("Delete {name}: {e}"));
    [create, start, stop, t.elapsed()]
}

/// The command line the daemon runs for a VM like the cycle's. The VM is kept: its console
/// and monitor ports stay reserved for it, free for the floor's QEMU to bind.
async fn floor_command(
    lab: &BenchLab,
    work: &Path,
    prefix: &str,
    settings: &Settings,
) -> Vec<String> {
    let path = lab
        .manager
        .create_vm(&format!("{prefix}floor"), settings.clone())
        .await
        .expect("CreateVM floor");
    by_hand_command(&lab.vm(&path).await, work).await
}

/// The command line the daemon runs for `vm`, with its pid file moved to `work`. The VM is
/// started and stopped once so that its own disks (and UEFI VARS) exist.
pub async fn by_hand_command(vm: &VmProxy<'static>, work: &Path) -> Vec<String> {
    vm.start().await.expect("Start");
    vm.stop().await.expect("Stop");
    let mut cmd = vm.command_line().await.expect("CommandLine");
    let i = cmd
        .iter()
        .position(|a| a == "-pidfile")
        .expect("-pidfile in the command line");
    cmd[i + 1] = work.join("qemu.pid").to_string_lossy().into_owned();
    cmd
}

/// QEMU started by hand on `cmd`, QMP on fd 3 and the serial port's socket on fd 4 as the
/// daemon gives them: the time from spawn to its exit after the greeting, capabilities
/// negotiation and `quit`.
pub fn by_hand(cmd: &[String], work: &Path) -> Duration {
    let socket = work.join("qmp.sock");
    let _ = std::fs::remove_file(&socket);
    let log = std::fs::File::create(work.join("qemu.log")).expect("creating the floor's log");
    let t = Instant::now();
    let listener = UnixListener::bind(&socket).expect("binding the floor's QMP socket");
    let serial_socket = work.join("serial.sock");
    let _ = std::fs::remove_file(&serial_socket);
    let serial = UnixListener::bind(&serial_socket).expect("binding the floor's serial socket");
    // Above 4, so that neither dup2 below overwrites the other's source.
    let parked = |fd: i32| {
        // SAFETY: F_DUPFD_CLOEXEC only makes a new descriptor, closed at exec.
        let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 10) };
        assert!(
            new >= 10,
            "fcntl F_DUPFD: {}",
            std::io::Error::last_os_error()
        );
        new
    };
    let fds = [parked(listener.as_raw_fd()), parked(serial.as_raw_fd())];
    let mut command = Command::new(&cmd[0]);
    command
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("cloning the floor's log"))
        .stderr(log);
    // SAFETY: dup2 is async-signal-safe; it puts the listeners on fds 3 and 4 of the child,
    // open across exec.
    unsafe {
        command.pre_exec(move || {
            for (n, fd) in fds.iter().enumerate() {
                if libc::dup2(*fd, 3 + n as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child = command.spawn().expect("running the floor's QEMU");
    for fd in fds {
        // SAFETY: the parked copies are ours alone.
        unsafe { libc::close(fd) };
    }
    drop((listener, serial));
    let stream = UnixStream::connect(&socket).expect("connecting to the floor's QMP");
    let mut reader = BufReader::new(stream.try_clone().expect("cloning the QMP stream"));
    let mut writer = stream;
    let mut line = String::new();
    // Events (`quit` sends SHUTDOWN before its return) are passed over.
    let mut expect = |what: &str, line: &mut String| loop {
        line.clear();
        let n = reader.read_line(line).expect("reading QMP");
        assert!(n > 0, "QMP closed before {what}");
        if !line.contains("\"event\"") {
            assert!(line.contains(what), "QMP said {line:?}, not {what}");
            return;
        }
    };
    expect("\"QMP\"", &mut line);
    for command in ["qmp_capabilities", "quit"] {
        writeln!(writer, "{{\"execute\":\"{command}\"}}").expect("writing to QMP");
        expect("\"return\"", &mut line);
    }
    let status = child.wait().expect("waiting for the floor's QEMU");
    let elapsed = t.elapsed();
    assert!(
        status.success(),
        "the floor's QEMU exited with {status}:\n{}",
        std::fs::read_to_string(work.join("qemu.log")).unwrap_or_default()
    );
    elapsed
}
