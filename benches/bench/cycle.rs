//! A VM's whole life over D-Bus: CreateVM → Start → Stop → Delete, a 64 MiB guest with no
//! disk of its own (so the daemon makes its blank flash disk at the first Start), each step
//! timed alone. The floor is QEMU itself: the daemon's own command line for such a VM, run by
//! hand with a listening QMP socket as fd 3, until QMP greets, then `quit` and its exit.
//!
//! Runs alternate with the floor's, so a shared machine's drifting load weighs on both.

use crate::common::VmProxy;
use crate::lab::{ms, small_vm, BenchLab};
use crate::report::{self, Figure, Report, Target};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

const SECTION: &str = "cycle";
const RUNS: usize = 30;
const STEPS: [&str; 4] = ["CreateVM", "Start", "Stop", "Delete"];

pub fn run(rt: &Runtime) -> Report {
    let lab = rt.block_on(BenchLab::start());
    let work = tempfile::tempdir().expect("temp dir for the floor's QEMU");
    let floor_cmd = rt.block_on(floor_command(&lab, work.path()));
    // Not counted: the first start probes the QEMU binary and warms the page cache.
    rt.block_on(cycle(&lab, "warm-up"));
    by_hand(&floor_cmd, work.path());

    let mut steps: [Vec<f64>; 4] = Default::default();
    let (mut cycles, mut floors) = (Vec::new(), Vec::new());
    for r in 0..RUNS {
        let mut run_cycle = || {
            let t = rt.block_on(cycle(&lab, &format!("cycle-{r}")));
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
        "cycle median {:.1} ms, floor median {:.1} ms",
        report::median(&cycles),
        report::median(&floors)
    );
    let ratio = report::median(&cycles) / report::median(&floors);
    let mut figures = vec![
        Figure::new(
            SECTION,
            "QEMU by hand: spawn to QMP greeting, quit, exit (floor)",
            "ms",
            floors,
        ),
        Figure::new(SECTION, "CreateVM + Start + Stop + Delete", "ms", cycles),
    ];
    for (name, samples) in STEPS.iter().zip(steps) {
        figures.push(Figure::new(SECTION, name, "ms", samples));
    }
    Report {
        figures,
        targets: vec![Target::new(
            SECTION,
            "cycle / floor (medians)",
            ratio,
            1.3,
            "ratio",
        )],
    }
}

/// One life of a VM; the time of each step.
async fn cycle(lab: &BenchLab, name: &str) -> [Duration; 4] {
    let t = Instant::now();
    let path = lab
        .manager
        .create_vm(name, small_vm())
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
async fn floor_command(lab: &BenchLab, work: &Path) -> Vec<String> {
    let path = lab
        .manager
        .create_vm("floor", small_vm())
        .await
        .expect("CreateVM floor");
    by_hand_command(&lab.vm(&path).await, work).await
}

/// The command line the daemon runs for `vm`, with its pid file moved to `work`. The VM is
/// started and stopped once so that its flash disk exists.
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
