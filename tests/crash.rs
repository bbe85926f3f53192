//! The daemon SIGKILLed in the middle of random operations, round after round: after every
//! restart the state directory, the QEMUs and what clients read agree, nothing is left half
//! made, and the operation happened whole or not at all.
//!
//! The random rounds run beside a thousand VMs defined and never touched
//! (`common::bystanders`): each restart finds them again, unchanged.
//!
//! `CRASH_SEED=<n>` replays a run; `CRASH_ROUNDS=<n>` makes it longer; `BYSTANDERS=<n>`
//! sets how many VMs stand beside.
//!
//! Longer than most files: each operation, what is checked after it, and the windows the
//! rounds rarely hit (made on purpose at the end) belong together.

mod common;

use common::invariants::{self, Seen};
use common::*;
use gns3_qemud::model::OnStop;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};
use zbus::Variant;

const MIN_VMS: usize = 2;
const MAX_VMS: usize = 6;
/// Running guests cost CPU even idle (TCG): at most this many at a time.
const MAX_UP: usize = 3;
const ADAPTERS: u32 = 2;
/// Room for vCPUs hot-added to a running VM (AddCpu).
const MAX_CPUS: u32 = 3;
/// What a live ResizeDisk adds to the first disk.
const GROWTH: u64 = 1 << 20;
/// The StopTimeout of the VMs stopped by a shutdown.
const SHUTDOWN_S: u32 = 2;

#[derive(Clone, Debug)]
enum Op {
    Create {
        name: String,
        hda: bool,
        tpm: bool,
        /// OnStop shutdown (with a StopTimeout of [`SHUTDOWN_S`]) rather than power-off.
        shutdown: bool,
    },
    Configure {
        id: String,
        name: String,
        ram: Option<u32>,
        /// On a running VM, the CD-ROM's media changed live: the base inserted, or ejected.
        cdrom: Option<String>,
    },
    Start(String),
    Stop(String),
    /// A Stop of a VM whose OnStop is shutdown: its guest (none here) ignores the power
    /// button, so the VM is powered off after StopTimeout.
    Shutdown(String),
    Suspend(String),
    Resume(String),
    AddTunnel {
        id: String,
        adapter: u32,
        port: u16,
    },
    RemoveTunnel {
        id: String,
        adapter: u32,
    },
    /// A tunnel's cable suspended, or made to pass again.
    SuspendLink {
        id: String,
        adapter: u32,
        suspended: bool,
    },
    Delete(String),
    /// Cpus raised by one on a running VM: a vCPU hot-added.
    AddCpu(String),
    /// The first disk of a running or paused VM grown by [`GROWTH`] to `bytes`, live.
    Resize {
        id: String,
        bytes: u64,
    },
    /// A console opened and typed into, a VNC client, and a monitor command: nothing a
    /// record keeps.
    Console(String),
}

impl Op {
    fn kind(&self) -> &'static str {
        match self {
            Op::Create { .. } => "create",
            Op::Configure { .. } => "configure",
            Op::Start(_) => "start",
            Op::Stop(_) => "stop",
            Op::Shutdown(_) => "shutdown",
            Op::Suspend(_) => "suspend",
            Op::Resume(_) => "resume",
            Op::AddTunnel { .. } => "add-tunnel",
            Op::RemoveTunnel { .. } => "remove-tunnel",
            Op::SuspendLink { .. } => "suspend-link",
            Op::Delete(_) => "delete",
            Op::AddCpu(_) => "add-cpu",
            Op::Resize { .. } => "resize",
            Op::Console(_) => "console",
        }
    }

    fn target(&self) -> Option<&str> {
        match self {
            Op::Create { .. } => None,
            Op::Configure { id, .. }
            | Op::AddTunnel { id, .. }
            | Op::Resize { id, .. }
            | Op::RemoveTunnel { id, .. }
            | Op::SuspendLink { id, .. }
            | Op::Start(id)
            | Op::Stop(id)
            | Op::Shutdown(id)
            | Op::Suspend(id)
            | Op::Resume(id)
            | Op::Delete(id)
            | Op::AddCpu(id)
            | Op::Console(id) => Some(id),
        }
    }

    /// How long after the call the daemon is killed, at most: a bit more than the
    /// operation takes here, so that some rounds kill it during the call, some after.
    fn window(&self) -> Duration {
        Duration::from_millis(match self {
            Op::Start(_) => 300,
            Op::Stop(_) => 40,
            Op::Shutdown(_) => 1000 * u64::from(SHUTDOWN_S) + 500,
            Op::Suspend(_) | Op::Resume(_) => 10,
            Op::Delete(_) => 20,
            // qemu-img reads what a base image opens (src/vm/bases).
            Op::Create { hda: true, .. } => 80,
            _ => 30,
        })
    }
}

/// A random operation that is legal on the VMs as they are.
fn choose(rng: &mut Rng, vms: &BTreeMap<String, Seen>, round: usize, media: &str) -> Op {
    let up = vms.values().filter(|v| v.is_up()).count();
    let mut ops: Vec<Vec<Op>> = Vec::new();
    if vms.len() < MAX_VMS {
        ops.push(vec![Op::Create {
            name: format!("vm-{round}"),
            hda: rng.below(2) == 0,
            tpm: rng.below(2) == 0,
            shutdown: rng.below(2) == 0,
        }]);
    }
    let mut per_kind: HashMap<&'static str, Vec<Op>> = HashMap::new();
    for (id, vm) in vms {
        let id = id.clone();
        let mut mine = vec![Op::Configure {
            id: id.clone(),
            name: format!("renamed-{round}"),
            ram: (vm.state == "stopped").then_some(32 + 16 * rng.below(3) as u32),
            cdrom: vm
                .is_up()
                .then(|| match vm.record.settings.cdrom_image.is_empty() {
                    true => media.to_string(),
                    false => String::new(),
                }),
        }];
        let stop = match vm.record.settings.on_stop {
            OnStop::Shutdown => Op::Shutdown(id.clone()),
            _ => Op::Stop(id.clone()),
        };
        match vm.state.as_str() {
            "stopped" if up < MAX_UP => mine.push(Op::Start(id.clone())),
            "running" => mine.extend([stop, Op::Suspend(id.clone()), Op::Console(id.clone())]),
            "paused" => mine.extend([stop, Op::Resume(id.clone()), Op::Console(id.clone())]),
            _ => {}
        }
        if vm.is_up() && vm.record.settings.cpus < vm.record.settings.max_cpus {
            mine.push(Op::AddCpu(id.clone()));
        }
        if vm.is_up() {
            // Its size is read when the round runs (`hda_size`).
            mine.push(Op::Resize {
                id: id.clone(),
                bytes: 0,
            });
        }
        let used: Vec<u32> = vm.record.tunnels.iter().map(|t| t.adapter).collect();
        if let Some(adapter) = (0..ADAPTERS).find(|a| !used.contains(a)) {
            mine.push(Op::AddTunnel {
                id: id.clone(),
                adapter,
                port: 0,
            });
        }
        if let Some(&adapter) = used.first() {
            mine.push(Op::RemoveTunnel {
                id: id.clone(),
                adapter,
            });
        }
        if let Some(t) = vm.record.tunnels.last() {
            mine.push(Op::SuspendLink {
                id: id.clone(),
                adapter: t.adapter,
                suspended: !t.suspended,
            });
        }
        if vms.len() > MIN_VMS {
            mine.push(Op::Delete(id.clone()));
        }
        for op in mine {
            per_kind.entry(op.kind()).or_default().push(op);
        }
    }
    let mut kinds: Vec<_> = per_kind.into_iter().collect();
    kinds.sort_by_key(|(k, _)| *k);
    ops.extend(kinds.into_iter().map(|(_, v)| v));
    // A kind first, then a VM: every kind comes up about as often.
    let of_kind = rng.pick(&ops).clone();
    rng.pick(&of_kind).clone()
}

fn vm_settings(
    hda: Option<&std::path::Path>,
    tpm: bool,
) -> HashMap<&'static str, Variant<'static>> {
    vm_settings_stopped(hda, tpm, false)
}

/// [`vm_settings`], stopped by a shutdown if `shutdown`.
fn vm_settings_stopped(
    hda: Option<&std::path::Path>,
    tpm: bool,
    shutdown: bool,
) -> HashMap<&'static str, Variant<'static>> {
    let mut s: HashMap<&str, Variant> = HashMap::new();
    if shutdown {
        s.insert("OnStop", Variant::from("shutdown"));
        s.insert("StopTimeout", Variant::from(SHUTDOWN_S));
    }
    // A swtpm beside QEMU, started before it and ended with it.
    s.insert("Tpm", Variant::from(tpm));
    s.insert("Ram", Variant::from(32u32));
    s.insert("Adapters", Variant::from(ADAPTERS));
    s.insert("MaxCpus", Variant::from(MAX_CPUS));
    // A display, so that the console rounds hand QEMU a VNC client too.
    s.insert("Display", Variant::from("vnc"));
    if let Some(base) = hda {
        s.insert(
            "HdaDiskImage",
            Variant::from(base.to_string_lossy().into_owned()),
        );
    }
    s
}

/// Runs `op` as a client would, and says how long it took; its answer does not matter
/// (the daemon may die first).
async fn call(op: Op, conn: zbus::Connection, base: std::path::PathBuf) -> Duration {
    let began = Instant::now();
    let m = manager(&conn).await;
    let on = |id: String| {
        let conn = conn.clone();
        async move {
            let path = gns3_qemud::dbus::vm_path(&id).unwrap();
            vm(&conn, &path).await
        }
    };
    let _ = match op {
        Op::Create {
            name,
            hda,
            tpm,
            shutdown,
        } => {
            let settings = vm_settings_stopped(hda.then_some(base.as_path()), tpm, shutdown);
            m.create_vm(&name, settings).await.map(drop)
        }
        Op::Configure {
            id,
            name,
            ram,
            cdrom,
        } => {
            let mut s: HashMap<&str, Variant> = HashMap::new();
            s.insert("Name", Variant::from(name));
            if let Some(ram) = ram {
                s.insert("Ram", Variant::from(ram));
            }
            if let Some(cdrom) = cdrom {
                s.insert("CdromImage", Variant::from(cdrom));
            }
            on(id).await.configure(s).await
        }
        Op::Start(id) => on(id).await.start().await,
        Op::Stop(id) | Op::Shutdown(id) => on(id).await.stop().await,
        Op::Suspend(id) => on(id).await.suspend().await,
        Op::Resume(id) => on(id).await.resume().await,
        Op::AddTunnel { id, adapter, port } => {
            on(id)
                .await
                .add_udp_tunnel(adapter, port, "127.0.0.1", 40000)
                .await
        }
        Op::RemoveTunnel { id, adapter } => on(id).await.remove_udp_tunnel(adapter).await,
        Op::SuspendLink {
            id,
            adapter,
            suspended,
        } => on(id).await.set_link_suspended(adapter, suspended).await,
        Op::Delete(id) => on(id).await.delete().await,
        Op::AddCpu(id) => {
            let vm = on(id).await;
            match vm.cpus().await {
                Ok(n) => vm.set_cpus(n + 1).await,
                Err(e) => Err(e),
            }
        }
        Op::Resize { id, bytes } => on(id).await.resize_disk("hda", bytes).await,
        Op::Console(id) => {
            let vm = on(id).await;
            if let Ok(fd) = vm.open_console(HashMap::new()).await {
                // The daemon may be killed while this is written.
                let _ = Console::from_fd(fd.into()).try_send(b"\r");
            }
            if let Ok(fd) = vm.open_graphics(HashMap::new()).await {
                let _ = Console::from_fd(fd.into()).try_send(b"RFB 003.008\n");
            }
            vm.human_monitor_command("info status").await.map(drop)
        }
    };
    began.elapsed()
}

/// Whether `op` happened (true) or not (false), and that it did nothing else.
fn verify(op: &Op, before: &BTreeMap<String, Seen>, after: &BTreeMap<String, Seen>) -> bool {
    let target = op.target();
    for (id, vm) in before {
        if Some(id.as_str()) == target {
            continue;
        }
        assert_eq!(after.get(id), Some(vm), "{op:?} changed another VM");
    }
    let Some(id) = target else {
        let Op::Create {
            name,
            hda,
            tpm,
            shutdown,
        } = op
        else {
            unreachable!()
        };
        let new: Vec<&Seen> = after
            .iter()
            .filter(|(id, _)| !before.contains_key(*id))
            .map(|(_, vm)| vm)
            .collect();
        return match new.as_slice() {
            [] => false,
            [vm] => {
                let s = &vm.record.settings;
                assert_eq!(vm.name(), name);
                assert_eq!((s.ram, s.adapters), (32, ADAPTERS), "{op:?}: {vm:?}");
                assert_eq!(s.hda_disk_image.is_empty(), !hda, "{op:?}: {vm:?}");
                assert_eq!(s.tpm, *tpm, "{op:?}: {vm:?}");
                assert_eq!(s.on_stop == OnStop::Shutdown, *shutdown, "{op:?}: {vm:?}");
                assert_eq!(vm.state, "stopped");
                true
            }
            more => panic!("{op:?} made {} VMs", more.len()),
        };
    };
    let was = &before[id];
    let Some(now) = after.get(id) else {
        assert!(matches!(op, Op::Delete(_)), "{op:?} deleted the VM");
        return true;
    };
    let (old, new) = (&was.record, &now.record);
    let same_settings = old.settings == new.settings;
    let same_tunnels = old.tunnels == new.tunnels;
    let states = |a: &str, b: &str| {
        assert!(
            now.state == a || now.state == b,
            "{op:?}: {} -> {}",
            was.state,
            now.state
        );
        now.state == b
    };
    match op {
        Op::Create { .. } => unreachable!(),
        // Nothing of it is in the record: whether it happened is the disk's size, which the
        // round reads.
        Op::Console(_) | Op::Resize { .. } => {
            assert!(
                same_settings && same_tunnels,
                "{op:?} changed the VM: {now:?}"
            );
            assert_eq!(now.state, was.state, "{op:?}");
            false
        }
        Op::Delete(_) => {
            assert!(same_settings && same_tunnels, "{op:?} half done: {now:?}");
            assert_eq!(now.state, was.state, "{op:?} half done");
            false
        }
        Op::Configure {
            name, ram, cdrom, ..
        } => {
            assert!(same_tunnels);
            assert_eq!(now.state, was.state);
            let mut wanted = old.settings.clone();
            wanted.name = name.clone();
            if let Some(ram) = ram {
                wanted.ram = *ram;
            }
            if let Some(cdrom) = cdrom {
                wanted.cdrom_image = cdrom.clone();
            }
            assert!(
                same_settings || new.settings == wanted,
                "{op:?} half done: {:?}",
                new.settings
            );
            !same_settings
        }
        Op::Start(_) | Op::Stop(_) | Op::Shutdown(_) | Op::Suspend(_) | Op::Resume(_) => {
            assert!(same_settings && same_tunnels, "{op:?} changed the settings");
            match op {
                Op::Start(_) => states("stopped", "running"),
                Op::Stop(_) | Op::Shutdown(_) => states(&was.state, "stopped"),
                Op::Suspend(_) => states("running", "paused"),
                _ => states("paused", "running"),
            }
        }
        Op::AddCpu(_) => {
            assert!(same_tunnels);
            assert_eq!(now.state, was.state);
            let mut wanted = old.settings.clone();
            wanted.cpus += 1;
            assert!(
                same_settings || new.settings == wanted,
                "{op:?} half done: {:?}",
                new.settings
            );
            !same_settings
        }
        Op::SuspendLink {
            adapter, suspended, ..
        } => {
            assert!(same_settings);
            assert_eq!(now.state, was.state);
            let mut wanted = old.tunnels.clone();
            for t in wanted.iter_mut().filter(|t| t.adapter == *adapter) {
                t.suspended = *suspended;
            }
            assert!(same_tunnels || new.tunnels == wanted, "{op:?}: {new:?}");
            !same_tunnels
        }
        Op::AddTunnel { adapter, .. } | Op::RemoveTunnel { adapter, .. } => {
            assert!(same_settings);
            assert_eq!(now.state, was.state);
            let without: Vec<_> = old
                .tunnels
                .iter()
                .filter(|t| t.adapter != *adapter)
                .cloned()
                .collect();
            if let Op::RemoveTunnel { .. } = op {
                assert!(same_tunnels || new.tunnels == without, "{op:?}: {new:?}");
            } else {
                let added = new.tunnels.len() == without.len() + 1
                    && new.tunnels.iter().any(|t| t.adapter == *adapter);
                assert!(same_tunnels || added, "{op:?}: {new:?}");
            }
            !same_tunnels
        }
    }
}

/// Waits until no VM is stopping.
async fn no_shutdown_within(m: &ManagerProxy<'_>, within: Duration) {
    let over = eventually(within, || async {
        m.list_vms()
            .await
            .unwrap()
            .iter()
            .all(|(_, _, state, _)| state != "stopping")
    })
    .await;
    assert!(over, "a VM is still stopping after {within:?}");
}

/// The virtual size of the VM's first disk, from its qcow2 header (bytes 24..32), which
/// QEMU writes before `block_resize` returns.
fn hda_size(dir: &std::path::Path, vm: &Seen) -> u64 {
    let file = if vm.record.settings.hda_disk_image.is_empty() {
        "flash.qcow2"
    } else {
        "hda_disk.qcow2"
    };
    let path = dir.join("state/vms").join(&vm.record.id).join(file);
    let header = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    u64::from_be_bytes(header[24..32].try_into().unwrap())
}

/// The size of the first disk as the running QEMU has it.
async fn qemu_hda_size(vm: &VmProxy<'_>) -> u64 {
    let info = vm
        .human_monitor_command("info block -v gns3-hda")
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("virtual size: "))
        .and_then(|l| l.split_once('(')?.1.strip_suffix(" bytes)"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no virtual size in: {info}"))
}

#[tokio::test]
async fn sigkill_during_random_operations_loses_nothing() {
    let rounds: usize = std::env::var("CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(30);
    let seed: u64 = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("CRASH_SEED={seed}");
    let mut rng = Rng(seed);

    let mut lab = Lab::start().await;
    let dir = lab.dir.path().to_path_buf();
    let base = blank_base(&dir);
    let conn = lab.conn.clone();
    for (name, shutdown) in [("first", false), ("second", true)] {
        lab.manager
            .create_vm(name, vm_settings_stopped(None, true, shutdown))
            .await
            .unwrap();
    }
    let (console_range, udp_range) = (lab.daemon.ports.clone(), lab.daemon.udp_ports.clone());
    let beside = bystanders::count();
    bystanders::define(&lab.manager, beside).await;

    let mut vms = invariants::check(&dir, &lab.manager).await;
    assert_eq!(vms.len(), beside + 2);
    let mut done: BTreeMap<&'static str, (u32, u32)> = BTreeMap::new();
    let began = Instant::now();
    for round in 0..rounds {
        let mine: BTreeMap<String, Seen> = vms
            .iter()
            .filter(|(_, v)| !bystanders::is_one(v.name()))
            .map(|(id, v)| (id.clone(), v.clone()))
            .collect();
        let mut op = choose(&mut rng, &mine, round, &base.to_string_lossy());
        if let Op::AddTunnel { port, .. } = &mut op {
            *port = lab.manager.allocate_udp_port().await.unwrap();
        }
        if let Op::Resize { id, bytes } = &mut op {
            *bytes = hda_size(&dir, &vms[id.as_str()]) + GROWTH;
        }
        let delay = op.window().mul_f64(rng.below(1001) as f64 / 1000.0);
        let call = tokio::spawn(call(op.clone(), conn.clone(), base.clone()));
        tokio::time::sleep(delay).await;
        let answered = call.is_finished();
        lab.daemon.crash();
        lab.daemon.restart(&lab.bus);
        let took = call.await.unwrap_or_default();
        // A shutdown the killed daemon began goes on in the new one, to its StopTimeout.
        no_shutdown_within(
            &lab.manager,
            Duration::from_secs(u64::from(SHUTDOWN_S) + 10),
        )
        .await;

        let after = invariants::check(&dir, &lab.manager).await;
        let mut happened = verify(&op, &vms, &after);
        if let Op::Resize { id, bytes } = &op {
            // QEMU's disk is its file, of the size asked for or the one before.
            let path = gns3_qemud::dbus::vm_path(id).unwrap();
            let qemu = qemu_hda_size(&vm(&conn, &path).await).await;
            let file = hda_size(&dir, &after[id]);
            assert_eq!(qemu, file, "{op:?}: QEMU and the file disagree");
            assert!(file == *bytes || file + GROWTH == *bytes, "{op:?}: {file}");
            happened = file == *bytes;
        }
        // An answered call happened, unless the daemon refused it.
        println!(
            "round {round:2}: {op:?} killed after {delay:.1?}: {}{}",
            if answered {
                format!("answered in {took:.1?}, ")
            } else {
                String::new()
            },
            if happened {
                "happened"
            } else {
                "did not happen"
            },
        );
        if let Op::AddCpu(id) = &op {
            // The QEMU has the vCPUs its record says, whether the change reached it or not.
            let path = gns3_qemud::dbus::vm_path(id).unwrap();
            let info = vm(&conn, &path)
                .await
                .human_monitor_command("info cpus")
                .await
                .unwrap();
            let cpus = info.lines().filter(|l| l.contains("CPU #")).count();
            assert_eq!(cpus, after[id].record.settings.cpus as usize, "{info}");
        }
        let tally = done.entry(op.kind()).or_default();
        *(if happened { &mut tally.0 } else { &mut tally.1 }) += 1;
        if round % 5 == 4 || round + 1 == rounds {
            invariants::check_ports(&lab.manager, &after, &console_range, &udp_range).await;
        }
        vms = after;
    }
    println!(
        "{rounds} rounds in {:.1?}; (happened, did not) by operation: {done:?}",
        began.elapsed()
    );
}

/// The window the crash rounds rarely hit, made on purpose: a tunnel added live whose
/// record the daemon did not live to save. The next daemon takes it out of QEMU.
#[tokio::test]
async fn a_live_change_the_record_missed_is_undone_on_adoption() {
    let mut lab = Lab::start().await;
    let vm = create(&lab.manager, "live", vm_settings(None, true)).await;
    let id = vm.id().await.unwrap();
    vm.start().await.unwrap();
    let port = lab.manager.allocate_udp_port().await.unwrap();
    vm.add_udp_tunnel(0, port, "127.0.0.1", 40000)
        .await
        .unwrap();
    let taken = || std::net::UdpSocket::bind(("127.0.0.1", port)).is_err();
    assert!(taken(), "QEMU holds the tunnel's port");

    lab.daemon.crash();
    let dir = lab.dir.path();
    let record_path = dir.join("state/vms").join(&id).join("vm.json");
    let mut record: gns3_qemud::model::Record =
        serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    record.tunnels.clear();
    std::fs::write(&record_path, serde_json::to_vec(&record).unwrap()).unwrap();
    std::fs::write(dir.join("run").join(&id).join("pending-tunnel-0"), b"").unwrap();

    lab.daemon.restart(&lab.bus);
    assert_eq!(vm.state().await.unwrap(), "running");
    assert!(vm.tunnels().await.unwrap().is_empty());
    assert!(!taken(), "the tunnel is still in QEMU");
    assert!(!dir.join("run").join(&id).join("pending-tunnel-0").exists());
    invariants::check(dir, &lab.manager).await;
}

/// Two more windows made on purpose: a Delete that committed but did not end its QEMU, and
/// a Start whose QEMU had not written its pid file yet. Neither QEMU outlives the restart.
#[tokio::test]
async fn qemus_of_unfinished_deletes_and_starts_are_ended() {
    let mut lab = Lab::start().await;
    let deleted = create(&lab.manager, "deleted", vm_settings(None, true)).await;
    let starting = create(&lab.manager, "starting", vm_settings(None, true)).await;
    let mut pids = Vec::new();
    for vm in [&deleted, &starting] {
        vm.start().await.unwrap();
        pids.push(vm.pid().await.unwrap());
    }
    let (deleted_id, starting_id) = (deleted.id().await.unwrap(), starting.id().await.unwrap());

    lab.daemon.crash();
    let dir = lab.dir.path();
    std::fs::remove_dir_all(dir.join("state/vms").join(&deleted_id)).unwrap();
    std::fs::remove_file(dir.join("run").join(&starting_id).join("qemu.pid")).unwrap();
    lab.daemon.restart(&lab.bus);

    for pid in pids {
        let gone = eventually(Duration::from_secs(5), || async { !pid_alive(pid) }).await;
        assert!(gone, "QEMU {pid} outlived the restart");
    }
    assert!(!dir.join("run").join(&deleted_id).exists());
    assert_eq!(starting.state().await.unwrap(), "stopped");
    let why = starting.last_error().await.unwrap();
    assert!(why.contains("stopped while it started"), "{why}");
    invariants::check(dir, &lab.manager).await;
}

/// The same window for a hot-added vCPU: a guest gives one back only if it cooperates, so
/// the next daemon makes the change whole instead, and the record takes QEMU's vCPUs.
#[tokio::test]
async fn a_hot_added_cpu_the_record_missed_is_kept_on_adoption() {
    let mut lab = Lab::start().await;
    let vm = create(&lab.manager, "cpus", vm_settings(None, false)).await;
    let id = vm.id().await.unwrap();
    vm.start().await.unwrap();
    vm.set_cpus(2).await.unwrap();

    lab.daemon.crash();
    let dir = lab.dir.path();
    let record_path = dir.join("state/vms").join(&id).join("vm.json");
    let mut record: gns3_qemud::model::Record =
        serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
    record.settings.cpus = 1;
    std::fs::write(&record_path, serde_json::to_vec(&record).unwrap()).unwrap();
    std::fs::write(dir.join("run").join(&id).join("pending-cpus"), b"").unwrap();

    lab.daemon.restart(&lab.bus);
    assert_eq!(vm.state().await.unwrap(), "running");
    assert_eq!(vm.cpus().await.unwrap(), 2);
    let info = vm.human_monitor_command("info cpus").await.unwrap();
    assert_eq!(
        info.lines().filter(|l| l.contains("CPU #")).count(),
        2,
        "{info}"
    );
    assert!(!dir.join("run").join(&id).join("pending-cpus").exists());
    invariants::check(dir, &lab.manager).await;
}

/// A disk grown live is as big after a restart: QEMU and the file have the size, which the
/// next daemon reads from QEMU (the same size again is refused, naming it).
#[tokio::test]
async fn a_disk_grown_live_keeps_its_size_across_a_restart() {
    let mut lab = Lab::start().await;
    let vm = create(&lab.manager, "grown", vm_settings(None, false)).await;
    vm.start().await.unwrap();
    let bytes = (128 << 20) + GROWTH;
    vm.resize_disk("hda", bytes).await.unwrap();

    lab.daemon.crash();
    lab.daemon.restart(&lab.bus);
    assert_eq!(vm.state().await.unwrap(), "running");
    assert_eq!(qemu_hda_size(&vm).await, bytes);
    let e = vm.resize_disk("hda", bytes).await.unwrap_err();
    assert!(
        e.to_string().contains(&format!("is {bytes} bytes already")),
        "{e}"
    );
    let vms = invariants::check(lab.dir.path(), &lab.manager).await;
    let id = vm.id().await.unwrap();
    assert_eq!(hda_size(lab.dir.path(), &vms[&id]), bytes);
}

/// A Connect the daemon is killed in, at a moment of its own each round, with one of the two
/// VMs running: the restart shows no cable, half of one (the first VM's tunnel, facing a
/// port nobody holds) or the whole, never anything else; Disconnect of either end then
/// leaves both adapters free, and every port can be had again.
#[tokio::test]
async fn a_connect_cut_short_is_undone_by_disconnect() {
    let mut lab = Lab::start().await;
    let dir = lab.dir.path().to_path_buf();
    let a = create(&lab.manager, "a", vm_settings(None, false)).await;
    let b = create(&lab.manager, "b", vm_settings(None, false)).await;
    b.start().await.unwrap();
    let (pa, pb) = (a.inner().path().to_owned(), b.inner().path().to_owned());
    let (console_range, udp_range) = (lab.daemon.ports.clone(), lab.daemon.udp_ports.clone());
    let mut seen: BTreeMap<&'static str, u32> = BTreeMap::new();
    for round in 0..8u32 {
        let m = lab.manager.clone();
        let (ca, cb) = (pa.clone(), pb.clone());
        let call = tokio::spawn(async move { m.connect(&ca, 0, &cb, 1).await });
        tokio::time::sleep(Duration::from_millis(u64::from(round) * 15)).await;
        lab.daemon.crash();
        lab.daemon.restart(&lab.bus);
        let _ = call.await;
        let (ta, tb) = (a.tunnels().await.unwrap(), b.tunnels().await.unwrap());
        let what = match (ta.as_slice(), tb.as_slice()) {
            ([], []) => "none",
            ([(0, la, ha, ra)], []) => {
                assert_eq!(ha, "127.0.0.1");
                assert!(udp_range.contains(la) && udp_range.contains(ra), "{ta:?}");
                "half"
            }
            ([(0, la, ha, ra)], [(1, lb, hb, rb)]) => {
                assert_eq!((ha.as_str(), hb.as_str()), ("127.0.0.1", "127.0.0.1"));
                assert_eq!((la, ra), (rb, lb), "{ta:?} {tb:?}");
                "whole"
            }
            _ => panic!("round {round}: a Connect cut short left {ta:?} and {tb:?}"),
        };
        *seen.entry(what).or_default() += 1;
        invariants::check(&dir, &lab.manager).await;
        lab.manager.disconnect(&pa, 0).await.unwrap();
        lab.manager.disconnect(&pb, 1).await.unwrap();
        assert_eq!(
            (a.tunnels().await.unwrap(), b.tunnels().await.unwrap()),
            (vec![], vec![])
        );
        let after = invariants::check(&dir, &lab.manager).await;
        invariants::check_ports(&lab.manager, &after, &console_range, &udp_range).await;
        assert_eq!(b.state().await.unwrap(), "running", "round {round}");
    }
    println!("a Connect cut short left, by round: {seen:?}");
}

/// Captures caught half-way by a daemon's death, made on purpose: one whose filter QEMU no
/// longer has (killed inside StopCapture) is finished, and a filter without the daemon's
/// state (killed inside StartCapture) goes with its file; neither shows in Captures.
#[tokio::test]
async fn captures_half_started_or_half_stopped_are_made_whole_on_adoption() {
    let mut lab = Lab::start().await;
    let vm = create(&lab.manager, "cap", vm_settings(None, false)).await;
    let id = vm.id().await.unwrap();
    vm.start().await.unwrap();
    let dir = lab.dir.path().to_path_buf();
    let stopped = vm.start_capture(0, HashMap::new()).await.unwrap();
    assert_eq!(vm.captures().await.unwrap(), [(0, stopped.clone())]);
    vm.human_monitor_command("object_del gns3-capture-0")
        .await
        .unwrap();
    let stray = dir
        .join("state/vms")
        .join(&id)
        .join("captures/eth1-stray.pcap.part");
    let add = format!(
        "object_add filter-dump,id=gns3-capture-1,netdev=gns3-1,file={}",
        stray.display()
    );
    vm.human_monitor_command(&add).await.unwrap();
    assert!(stray.exists());
    let objects = vm.human_monitor_command("qom-list /objects").await.unwrap();
    assert!(
        objects.contains("gns3-capture-1") && !objects.contains("gns3-capture-0"),
        "{objects}"
    );

    lab.daemon.crash();
    lab.daemon.restart(&lab.bus);
    assert_eq!(vm.state().await.unwrap(), "running");
    assert!(vm.captures().await.unwrap().is_empty());
    let part = std::path::PathBuf::from(format!("{stopped}.part"));
    assert!(!part.exists(), "{}", part.display());
    let finished = std::fs::read(&stopped).unwrap();
    assert_eq!(&finished[..4], &0xa1b2c3d4u32.to_le_bytes(), "a pcap file");
    assert!(!stray.exists());
    let objects = vm.human_monitor_command("qom-list /objects").await.unwrap();
    assert!(!objects.contains("gns3-capture"), "{objects}");
    assert!(!dir.join("run").join(&id).join("capture-0").exists());
    invariants::check(&dir, &lab.manager).await;
}

/// A shutdown the rounds may not hit, made on purpose: the daemon killed while the guest
/// (none here, so the button is ignored) has the power button. The next daemon waits out
/// the rest of StopTimeout and powers the VM off; the record says so.
#[tokio::test]
async fn a_shutdown_killed_half_way_ends_in_the_next_daemon() {
    let mut lab = Lab::start().await;
    let vm = create(
        &lab.manager,
        "halfway",
        vm_settings_stopped(None, false, true),
    )
    .await;
    vm.start().await.unwrap();
    let pid = vm.pid().await.unwrap();
    let stop = tokio::spawn({
        let vm = vm.clone();
        async move { vm.stop().await }
    });
    tokio::time::sleep(Duration::from_millis(500 * u64::from(SHUTDOWN_S))).await;
    assert_eq!(vm.state().await.unwrap(), "stopping");
    lab.daemon.crash();
    assert!(stop.await.unwrap().is_err());
    lab.daemon.restart(&lab.bus);
    no_shutdown_within(
        &lab.manager,
        Duration::from_secs(u64::from(SHUTDOWN_S) + 10),
    )
    .await;
    assert_eq!(vm.state().await.unwrap(), "stopped");
    assert!(!pid_alive(pid));
    let why = vm.last_error().await.unwrap();
    assert!(why.contains("did not power off within 2 s"), "{why}");
    invariants::check(lab.dir.path(), &lab.manager).await;
}

/// Whether the VM's disk holds a saved state whole (the state's image and the tag in its
/// flash disk), holds none at all, or something in between (a failure).
fn saved_on_disk(dir: &std::path::Path, id: &str) -> Option<bool> {
    let vm_dir = dir.join("state/vms").join(id);
    let tagged = |image: &std::path::Path| snapshot_list(image).contains("gns3-saved");
    let state = vm_dir.join("saved-state.qcow2");
    match (
        state.exists() && tagged(&state),
        tagged(&vm_dir.join("flash.qcow2")),
    ) {
        (true, true) => Some(true),
        (false, false) if !state.exists() => Some(false),
        _ => None,
    }
}

/// The daemon SIGKILLed at moments of a save-state Stop, once with its QEMU killed too:
/// after the restart the saved state is whole and the next Start resumes from it (the
/// guest's RAM still holds what was written there), or it is absent and the guest boots.
#[tokio::test]
async fn a_save_cut_by_sigkill_leaves_a_whole_state_or_none() {
    let mut lab = Lab::start().await;
    let settings = guest_settings(&[("OnStop", Variant::from("save-state"))]);
    let vm = create(&lab.manager, "saver", settings).await;
    let id = vm.id().await.unwrap();
    let path = lab.manager.get_vm("saver").await.unwrap();
    let boot = Duration::from_secs(120);
    let shell = Duration::from_secs(30);
    for (round, (delay_ms, qemu_too)) in [(40, false), (120, false), (80, true)]
        .into_iter()
        .enumerate()
    {
        let vm = common::vm(&lab.daemon.connect().await, &path).await;
        vm.start().await.unwrap();
        let mut console = Console::connect(vm.console_port().await.unwrap());
        console.wait_for("GUEST-READY", boot).unwrap();
        console
            .run(&format!("echo IN-RAM-{round} > /tmp/mark"), shell)
            .unwrap();
        let conn = lab.daemon.connect().await;
        let stopped = path.clone();
        let stopping = tokio::spawn(async move {
            let _ = common::vm(&conn, &stopped).await.stop().await;
        });
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        lab.daemon.crash();
        stopping.abort();
        if qemu_too {
            kill_qemus_under(lab.dir.path());
        }
        lab.daemon.restart(&lab.bus);
        let vm = common::vm(&lab.daemon.connect().await, &path).await;
        // The next daemon goes on with the stop, or a client stops the VM again.
        let settled = eventually(Duration::from_secs(60), || async {
            vm.state()
                .await
                .is_ok_and(|s| s != "stopping" && s != "starting")
        })
        .await;
        let state = vm.state().await.unwrap();
        assert!(settled, "round {round}: the VM stays {state}");
        println!("round {round}: {state} after the restart");
        if state != "stopped" {
            vm.stop().await.unwrap();
        }
        let saved = vm.saved_state().await.unwrap();
        let on_disk = saved_on_disk(lab.dir.path(), &id);
        assert_eq!(
            on_disk,
            Some(saved),
            "round {round}: SavedState {saved}, the disk {on_disk:?}"
        );
        println!("round {round}: SavedState {saved}");
        vm.start().await.unwrap();
        assert!(!vm.saved_state().await.unwrap());
        assert_eq!(saved_on_disk(lab.dir.path(), &id), Some(false));
        let mut console = Console::connect(vm.console_port().await.unwrap());
        if !saved {
            // It boots: what is typed before its shell runs is lost (a fresh machine saw
            // the first letters eaten).
            console.wait_for("GUEST-READY", boot).unwrap();
        }
        let out = console
            .run("cat /tmp/mark 2>/dev/null || echo NO-MARK", boot)
            .unwrap();
        let want = if saved {
            format!("IN-RAM-{round}")
        } else {
            "NO-MARK".into()
        };
        assert!(out.contains(&want), "round {round}: saved {saved}: {out}");
        vm.power_off().await.unwrap();
        invariants::check(lab.dir.path(), &lab.manager).await;
    }
}
