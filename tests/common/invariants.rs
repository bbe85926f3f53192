//! What must hold between a daemon's state directory, its QEMUs and what clients read, at
//! any quiet moment: after a crash and restart, after a storm of calls.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use zbus::{OwnedVariant, Variant};

use gns3_qemud::model::Record;

use super::{error_name, qemu_pids_under, ManagerProxy};

/// One VM as both its file and the bus show it (they were checked equal).
#[derive(Clone, Debug, PartialEq)]
pub struct Seen {
    pub record: Record,
    pub state: String,
    pub pid: u32,
}

impl Seen {
    pub fn name(&self) -> &str {
        &self.record.settings.name
    }

    pub fn is_up(&self) -> bool {
        self.state == "running" || self.state == "paused"
    }
}

/// Checks every invariant but the port pools' (see [`check_ports`]); returns the VMs by id.
pub async fn check(dir: &Path, m: &ManagerProxy<'_>) -> BTreeMap<String, Seen> {
    let vms_dir = dir.join("state/vms");
    no_leftovers(&dir.join("state"));
    let mut records = BTreeMap::new();
    for entry in std::fs::read_dir(&vms_dir).unwrap().flatten() {
        let id = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path().join("vm.json");
        let text = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let record: Record = serde_json::from_slice(&text)
            .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
        assert_eq!(record.id, id, "{} names another VM", path.display());
        records.insert(id, record);
    }

    let listed = m.list_vms().await.unwrap();
    let listed_ids: BTreeSet<&String> = listed.iter().map(|(id, ..)| id).collect();
    assert_eq!(
        listed_ids,
        records.keys().collect(),
        "ListVMs and the state directory disagree"
    );
    let conn = m.inner().connection();
    let mut seen = BTreeMap::new();
    for (id, name, _, path) in &listed {
        let record = &records[id];
        assert_eq!(name, &record.settings.name);
        let all = super::all_properties(conn, path, "org.gns3.Qemu.VM").await;
        same_as_file(record, &all);
        let state: String = get(&all, "State");
        let pid: u32 = get(&all, "Pid");
        seen.insert(
            id.clone(),
            Seen {
                record: record.clone(),
                state,
                pid,
            },
        );
    }

    let qemus: BTreeSet<u32> = qemu_pids_under(dir).into_iter().collect();
    let owned: BTreeSet<u32> = seen.values().filter(|v| v.is_up()).map(|v| v.pid).collect();
    assert_eq!(qemus, owned, "QEMUs running != QEMUs of running VMs");
    let run_dir = dir.join("run");
    // No swtpm outlives its VM: those running are the ones of running VMs with Tpm.
    let swtpms: BTreeSet<u32> = super::swtpm_pids_under(dir).into_iter().collect();
    let tpms: BTreeSet<u32> = seen
        .iter()
        .filter(|(_, v)| v.is_up() && v.record.settings.tpm)
        .filter_map(|(id, _)| std::fs::read_to_string(run_dir.join(id).join("swtpm.pid")).ok())
        .filter_map(|pid| pid.trim().parse().ok())
        .collect();
    assert_eq!(
        swtpms, tpms,
        "swtpms running != swtpms of running VMs with Tpm"
    );
    for (id, vm) in &seen {
        let rt = run_dir.join(id);
        match vm.is_up() {
            true => {
                assert!(vm.pid != 0 && rt.join("qemu.pid").exists(), "{id}: {vm:?}");
                // Its console is attached (found again after a restart) and its port held.
                let path = gns3_qemud::dbus::vm_path(id).unwrap();
                let proxy = super::vm(conn, &path).await;
                if let Err(e) = proxy.read_console(0).await {
                    panic!("{id} is {} without a console: {e}", vm.state);
                }
                let port = vm.record.settings.console_port;
                if port != 0 {
                    let bound = std::net::TcpListener::bind(("127.0.0.1", port));
                    assert!(bound.is_err(), "{id}: nobody holds its console port {port}");
                }
            }
            false => assert!(
                vm.pid == 0 && !rt.exists(),
                "{id} is {} yet has pid {} or runtime files",
                vm.state,
                vm.pid
            ),
        }
    }
    if let Ok(entries) = std::fs::read_dir(&run_dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            assert!(
                !e.path().is_dir() || seen.contains_key(&name),
                "runtime dir of no VM: {name}"
            );
        }
    }
    let mut console = BTreeSet::new();
    let mut udp = BTreeSet::new();
    for vm in seen.values() {
        let s = &vm.record.settings;
        for (_, port) in s.tcp_ports() {
            assert!(
                port == 0 || console.insert(port),
                "console port {port} used twice"
            );
        }
        for t in &vm.record.tunnels {
            assert!(
                udp.insert(t.local_port),
                "UDP port {} used twice",
                t.local_port
            );
        }
    }
    seen
}

/// The daemon reserves exactly the ports its VMs' files name: every other port of each pool
/// can be had (one VM per console/monitor pair, AllocateUdpPort for UDP), and none more.
/// Leaves nothing behind.
pub async fn check_ports(
    m: &ManagerProxy<'_>,
    seen: &BTreeMap<String, Seen>,
    console_range: &std::ops::RangeInclusive<u16>,
    udp_range: &std::ops::RangeInclusive<u16>,
) {
    let mut console: BTreeSet<u16> = BTreeSet::new();
    let mut udp: BTreeSet<u16> = BTreeSet::new();
    for vm in seen.values() {
        let s = &vm.record.settings;
        console.extend(
            s.tcp_ports()
                .map(|(_, p)| p)
                .into_iter()
                .filter(|p| *p != 0),
        );
        udp.extend(vm.record.tunnels.iter().map(|t| t.local_port));
    }

    let mut allocated = Vec::new();
    loop {
        match m.allocate_udp_port().await {
            Ok(port) => {
                assert!(udp.insert(port), "UDP port {port} handed out twice");
                allocated.push(port);
            }
            Err(e) => {
                assert_eq!(error_name(&e), "org.gns3.Qemu.Error.PortUnavailable", "{e}");
                break;
            }
        }
    }
    for port in allocated {
        m.release_udp_port(port).await.unwrap();
    }
    assert_eq!(
        udp,
        udp_range.clone().collect(),
        "UDP ports reserved for nothing"
    );

    let mut probes = Vec::new();
    loop {
        let name = format!("port-probe-{}", probes.len());
        match m.create_vm(&name, HashMap::new()).await {
            Ok(path) => {
                let vm = super::vm(m.inner().connection(), &path).await;
                assert_eq!(
                    vm.monitor_port().await.unwrap(),
                    0,
                    "a monitor port unasked"
                );
                let port = vm.console_port().await.unwrap();
                assert!(console.insert(port), "console port {port} handed out twice");
                probes.push(vm);
            }
            Err(e) => {
                assert_eq!(error_name(&e), "org.gns3.Qemu.Error.PortUnavailable", "{e}");
                break;
            }
        }
    }
    for vm in probes {
        vm.delete().await.unwrap();
    }
    assert_eq!(
        console,
        console_range.clone().collect(),
        "console ports reserved for nothing"
    );
}

/// No temp file, no half-deleted or half-made VM directory.
fn no_leftovers(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(
            !name.ends_with(".tmp") && !name.starts_with(".deleting-"),
            "left over: {}",
            e.path().display()
        );
        if e.path().is_dir() {
            no_leftovers(&e.path());
        }
    }
}

fn get<T: TryFrom<OwnedVariant>>(all: &HashMap<String, OwnedVariant>, key: &str) -> T
where
    T::Error: std::fmt::Debug,
{
    let value = all.get(key).unwrap_or_else(|| panic!("no property {key}"));
    T::try_from(value.try_clone().unwrap()).unwrap()
}

/// Every setting, tunnel and exit in `record` equals the property of the same name.
fn same_as_file(record: &Record, all: &HashMap<String, OwnedVariant>) {
    let id = &record.id;
    let settings = serde_json::to_value(&record.settings).unwrap();
    for (key, want) in settings.as_object().unwrap() {
        let got = all
            .get(key)
            .unwrap_or_else(|| panic!("{id}: no property {key}"));
        assert_eq!(
            &json(got),
            &as_tuples(want),
            "{id}: {key} differs from vm.json"
        );
    }
    let tunnels: Vec<(u32, u16, String, u16)> = get(all, "Tunnels");
    let want: Vec<_> = record.tunnels.iter().map(|t| t.as_tuple()).collect();
    assert_eq!(tunnels, want, "{id}: Tunnels differ from vm.json");
    let links: Vec<(u32, bool, bool)> = get(all, "Links");
    let want: Vec<_> = (0..record.settings.adapters)
        .map(|n| {
            let t = record.tunnels.iter().find(|t| t.adapter == n);
            let carrier = t.is_some() || !record.settings.replicate_link_state;
            (n, carrier, t.is_some_and(|t| t.suspended))
        })
        .collect();
    assert_eq!(links, want, "{id}: Links differ from vm.json");
    assert_eq!(get::<i32>(all, "ExitStatus"), record.exit_status, "{id}");
    assert_eq!(get::<String>(all, "LastError"), record.last_error, "{id}");
    assert_eq!(get::<String>(all, "Id"), record.id);
    assert_eq!(get::<String>(all, "Project"), record.project, "{id}");
}

/// A stored list of structs as D-Bus carries it, each an array of its fields in the
/// contract's order: CustomAdapters' {Adapter, Model, Mac} is (u, s, s).
fn as_tuples(stored: &serde_json::Value) -> serde_json::Value {
    const FIELDS: [&str; 3] = ["Adapter", "Model", "Mac"];
    match stored {
        serde_json::Value::Array(items) => items
            .iter()
            .map(|i| match i {
                serde_json::Value::Object(o) => FIELDS.iter().map(|f| o[*f].clone()).collect(),
                other => other.clone(),
            })
            .collect(),
        other => other.clone(),
    }
}

fn json(v: &Variant) -> serde_json::Value {
    match v {
        Variant::Array(a) => a.iter().map(json).collect(),
        Variant::Structure(s) => s.fields().iter().map(json).collect(),
        Variant::Str(s) => s.as_str().into(),
        Variant::Bool(b) => (*b).into(),
        Variant::U16(n) => (*n).into(),
        Variant::U32(n) => (*n).into(),
        Variant::I32(n) => (*n).into(),
        other => panic!("a setting of unexpected type: {other:?}"),
    }
}
