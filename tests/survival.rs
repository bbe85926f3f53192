//! What a VM survives: the daemon killed under it, its QEMU dying while the daemon is down,
//! a pid file that names some other process by then.

mod common;

use common::*;
use std::time::Duration;

const BOOT: Duration = Duration::from_secs(60);
const SHELL: Duration = Duration::from_secs(10);

fn kill(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

async fn wait_gone(pid: u32) {
    assert!(
        eventually(Duration::from_secs(10), || async { !pid_alive(pid) }).await,
        "process {pid} does not die"
    );
}

#[tokio::test]
async fn a_daemon_killed_and_started_again_finds_its_running_vms() {
    let mut lab = Lab::start().await;
    let m = lab.manager.clone();
    let run = create(&m, "run", guest_settings(&[])).await;
    let paused = create(&m, "paused", guest_settings(&[])).await;
    let dead = create(&m, "dead", guest_settings(&[])).await;
    let recycled = create(&m, "recycled", guest_settings(&[])).await;
    let port = m.allocate_udp_port().await.unwrap();
    run.add_udp_tunnel(0, port, "127.0.0.1", 4000)
        .await
        .unwrap();
    let paused_port = m.allocate_udp_port().await.unwrap();
    paused
        .add_udp_tunnel(0, paused_port, "127.0.0.1", 4001)
        .await
        .unwrap();
    let taken = |p: u16| std::net::UdpSocket::bind(("127.0.0.1", p)).is_err();
    run.start().await.unwrap();
    let mut console = Console::connect(run.console_port().await.unwrap());
    for vm in [&paused, &dead, &recycled] {
        vm.start().await.unwrap();
    }
    paused.suspend().await.unwrap();
    run.set_cpu_throttling(50).await.unwrap();
    let pid = run.pid().await.unwrap();
    let ports = (
        run.console_port().await.unwrap(),
        run.monitor_port().await.unwrap(),
    );
    let (dead_pid, dead_id) = (dead.pid().await.unwrap(), dead.id().await.unwrap());
    let (recycled_pid, recycled_id) = (recycled.pid().await.unwrap(), recycled.id().await.unwrap());
    console.wait_for("GUEST-READY", BOOT).unwrap();

    lab.daemon.crash();
    assert!(pid_alive(pid), "QEMU must outlive the daemon");
    // While the daemon is down: one QEMU dies, another dies and its pid file names a
    // process that is no QEMU of ours.
    kill(dead_pid);
    wait_gone(dead_pid).await;
    kill(recycled_pid);
    wait_gone(recycled_pid).await;
    let mut stranger = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let run_dir = lab.dir.path().join("run");
    std::fs::write(
        run_dir.join(&recycled_id).join("qemu.pid"),
        format!("{}\n", stranger.id()),
    )
    .unwrap();

    lab.daemon.restart(&lab.bus);
    let conn = lab.daemon.connect().await;
    let m = manager(&conn).await;
    let get = |name: &'static str| {
        let m = m.clone();
        let conn = conn.clone();
        async move { vm(&conn, &m.get_vm(name).await.unwrap()).await }
    };
    let run = get("run").await;
    assert_eq!(run.state().await.unwrap(), "running");
    assert_eq!(run.pid().await.unwrap(), pid);
    assert_eq!(
        (
            run.console_port().await.unwrap(),
            run.monitor_port().await.unwrap()
        ),
        ports
    );
    assert_eq!(
        run.tunnels().await.unwrap(),
        [(0, port, "127.0.0.1".to_string(), 4000)]
    );
    assert_eq!(get("paused").await.state().await.unwrap(), "paused");
    // Only the QEMUs have the tunnels' sockets now; the daemon cannot bind those ports,
    // and took the VMs back all the same.
    assert!(taken(port) && taken(paused_port));

    let dead = get("dead").await;
    assert_eq!(dead.state().await.unwrap(), "stopped");
    let why = dead.last_error().await.unwrap();
    assert!(why.contains("while gns3-qemud was not running"), "{why}");
    assert!(!run_dir.join(&dead_id).exists(), "the runtime files stay");
    let recycled = get("recycled").await;
    assert_eq!(recycled.state().await.unwrap(), "stopped");
    assert!(
        pid_alive(stranger.id()),
        "a process that is no QEMU of ours was killed"
    );
    let _ = stranger.kill();
    let _ = stranger.wait();

    // Adopted VMs work as any other: the console (the old daemon's connection ended with
    // it: a viewer connects again and gets the scrollback), QMP, the tunnel's port, the CPU
    // limit.
    drop(console);
    let mut console = Console::connect(run.console_port().await.unwrap());
    console.run("echo adopted", SHELL).unwrap();
    let paused = get("paused").await;
    paused.resume().await.unwrap();
    assert_eq!(paused.state().await.unwrap(), "running");
    // Stopped, its QEMU's socket is gone, and the daemon has bound the port again.
    paused.stop().await.unwrap();
    assert!(
        taken(paused_port),
        "the daemon holds a stopped VM's tunnel port"
    );
    run.remove_udp_tunnel(0).await.unwrap();
    assert!(!taken(port), "a removed tunnel's port is free");
    run.add_udp_tunnel(0, port, "127.0.0.1", 4000)
        .await
        .unwrap();
    assert!(taken(port));
    run.set_cpu_throttling(0).await.unwrap();
    assert!(gns3_qemud::supervisor::cpulimit::find(pid).is_empty());
    run.set_cpu_throttling(30).await.unwrap();
    run.stop().await.unwrap();
    wait_gone(pid).await;
    assert!(gns3_qemud::supervisor::cpulimit::find(pid).is_empty());
    assert_eq!(run.state().await.unwrap(), "stopped");
    assert!(run.last_error().await.unwrap().is_empty());
    dead.start().await.unwrap();
    dead.stop().await.unwrap();
    assert!(!lab.daemon.log_text().contains("panicked"));
}
