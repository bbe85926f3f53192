//! A full state directory (a small tmpfs): VMs are created until there is no room left.
//! Every refusal is a named error that says what to do, nothing half-written is left, no
//! name or port stays taken by a change that failed, and a restarted daemon finds every VM
//! made before as it was.

mod common;

use common::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use zbus::{OwnedObjectPath, OwnedVariant, Variant};

const CONSOLE_PORTS: [u16; 2] = [29000, 29299];

/// A tmpfs mounted on `path` for as long as it lives; unmounted even when the test panics.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(path: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        // Owned by the user the daemon runs as.
        let user = daemon_user();
        let options = format!("size={size},mode=0755,uid={},gid={}", user.uid, user.gid);
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &options])
            .arg("gns3-qemud-full-disk")
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success(), "cannot mount a tmpfs (tests run as root)");
        Tmpfs(path.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Something still holds it (a daemon a failed test left): detach it anyway, so
            // the temp dir under it can go.
            let _ = Command::new("umount").arg("--lazy").arg(&self.0).status();
        }
    }
}

fn settings(i: u32) -> HashMap<&'static str, Variant<'static>> {
    HashMap::from([
        ("Ram", Variant::from(64 + i)),
        ("Project", Variant::from(format!("lab-{}", i % 3))),
        ("Options", Variant::from(format!("-smp {}", 1 + i % 2))),
    ])
}

fn message(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(_, Some(text), _) => text.clone(),
        zbus::Error::FDO(fdo) => fdo.to_string(),
        other => other.to_string(),
    }
}

/// The error a write to the full state directory must give.
#[track_caller]
fn assert_full(e: &zbus::Error, state: &Path) {
    assert_eq!(error_name(e), "org.gns3.Qemu.Error.Internal", "{e:?}");
    let text = message(e);
    assert!(
        text.contains(&format!(
            "no space left on the state directory {}",
            state.display()
        )),
        "{text}"
    );
    assert!(!text.contains("vm.json"), "{text}");
}

/// The VM directories on disk, each holding a valid record and nothing else.
fn on_disk(state: &Path) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for entry in std::fs::read_dir(state.join("vms")).unwrap() {
        let entry = entry.unwrap();
        let id = entry.file_name().to_string_lossy().into_owned();
        let files: Vec<_> = std::fs::read_dir(entry.path())
            .unwrap()
            .map(|f| f.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(files, ["vm.json"], "in {id}");
        let record: serde_json::Value =
            serde_json::from_slice(&std::fs::read(entry.path().join("vm.json")).unwrap())
                .unwrap_or_else(|e| panic!("{id}/vm.json: {e}"));
        assert_eq!(record["Id"], id.as_str());
        ids.insert(id);
    }
    ids
}

async fn listed(m: &ManagerProxy<'_>) -> BTreeSet<String> {
    m.list_vms()
        .await
        .unwrap()
        .into_iter()
        .map(|(id, ..)| id)
        .collect()
}

/// Every property of every VM, for before/after comparisons.
async fn everything(
    conn: &zbus::Connection,
    m: &ManagerProxy<'_>,
) -> BTreeMap<String, HashMap<String, OwnedVariant>> {
    let mut out = BTreeMap::new();
    for (id, _, _, path) in m.list_vms().await.unwrap() {
        let all = all_properties(conn, &path, "org.gns3.Qemu.VM").await;
        out.insert(id, all);
    }
    out
}

#[tokio::test]
async fn a_full_state_directory_fails_cleanly_and_loses_nothing() {
    let began = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("gns3-qemud.toml"),
        // Ports for more VMs than fit: the disk, not the port range, must run out first.
        format!("{TEST_CONFIG}console_port_range = {CONSOLE_PORTS:?}\n"),
    )
    .unwrap();
    let state = dir.path().join("state");
    // 64 pages: a record takes one, so some 60 VMs fit.
    let _tmpfs = Tmpfs::mount(&state, "256k");
    let bus = Bus::start();
    let mut daemon = Daemon::start(&bus, dir.path());
    let conn = daemon.connect().await;
    let m = manager(&conn).await;

    let mut made: Vec<OwnedObjectPath> = Vec::new();
    let full = loop {
        let i = made.len() as u32;
        assert!(i < 140, "the tmpfs never filled up");
        match m.create_vm(&format!("vm{i}"), settings(i)).await {
            Ok(path) => made.push(path),
            Err(e) => break e,
        }
    };
    assert!(made.len() >= 20, "only {} VMs fit", made.len());
    assert_full(&full, &state);
    let failed = format!("vm{}", made.len());
    let ids = listed(&m).await;
    assert_eq!(ids.len(), made.len());
    assert_eq!(
        on_disk(&state),
        ids,
        "ListVMs and the VM directories differ"
    );
    // Console ports come one per VM from the bottom of the range; the failed VM would have
    // had the next.
    let next = CONSOLE_PORTS[0] + made.len() as u16;
    let last = vm(&conn, made.last().unwrap()).await;
    assert_eq!(last.console_port().await.unwrap(), next - 1);

    // Again, by the allocating path and by the reserving one: a name or port the first
    // attempt kept would now be AlreadyExists or PortUnavailable.
    let e = m.create_vm(&failed, settings(0)).await.unwrap_err();
    assert_full(&e, &state);
    let mut explicit = settings(0);
    explicit.insert("ConsolePort", Variant::from(next));
    explicit.insert("MonitorPort", Variant::from(next + 1));
    let e = m.create_vm(&failed, explicit.clone()).await.unwrap_err();
    assert_full(&e, &state);

    // Changes that must be written fail the same way, and leave disk and properties alone.
    let before_files = snapshot(&state);
    let before = everything(&conn, &m).await;
    let vm0 = vm(&conn, &made[0]).await;
    let e = vm0
        .configure(HashMap::from([("Ram", Variant::from(1000u32))]))
        .await
        .unwrap_err();
    assert_full(&e, &state);
    let e = vm0
        .configure(HashMap::from([
            ("ConsolePort", Variant::from(next)),
            ("ProcessPriority", Variant::from("high")),
        ]))
        .await
        .unwrap_err();
    assert_full(&e, &state);
    let e = vm0.set_name("renamed").await.unwrap_err();
    assert_full(&e, &state);
    let e = vm0.set_ram(1000).await.unwrap_err();
    assert_full(&e, &state);
    // A change to what the VM already has writes nothing, so it still works.
    vm0.configure(HashMap::from([("Ram", Variant::from(64u32))]))
        .await
        .unwrap();
    assert_eq!(
        snapshot(&state),
        before_files,
        "a failed change wrote something"
    );
    assert_eq!(everything(&conn, &m).await, before, "a failed change shows");
    let e = m.get_vm("renamed").await.unwrap_err();
    assert_eq!(error_name(&e), "org.gns3.Qemu.Error.NotFound");
    assert_eq!(m.get_vm("vm0").await.unwrap(), made[0]);

    // A restart on the full disk finds every VM as it was.
    assert!(daemon.terminate().success());
    daemon.restart(&bus);
    let conn = daemon.connect().await;
    let m = manager(&conn).await;
    assert_eq!(
        everything(&conn, &m).await,
        before,
        "VMs changed over a restart"
    );
    assert_eq!(on_disk(&state), ids);
    let e = m.create_vm(&failed, explicit.clone()).await.unwrap_err();
    assert_full(&e, &state);

    // Deleting a VM makes room, and the failed VM's name and ports are free for it.
    vm(&conn, &made[1]).await.delete().await.unwrap();
    let path = m.create_vm(&failed, explicit).await.unwrap();
    let late = vm(&conn, &path).await;
    assert_eq!(late.console_port().await.unwrap(), next);
    let ids = listed(&m).await;
    assert_eq!(ids.len(), made.len());
    assert_eq!(on_disk(&state), ids);
    drop(daemon);
    eprintln!("{} VMs fit, in {:?}", made.len(), began.elapsed());
}
