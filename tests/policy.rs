//! The system bus policy, `dbus/org.gns3.Qemu.conf`, on a private bus that loads that very
//! file: root and members of group `gns3` may act, everyone else may only look, and only
//! root and `gns3-qemud` may own the name. Clients are `gdbus`, run as each user.

mod common;

use common::*;
use std::process::Command;

use common::users::{gdbus_as, MEMBER, OUTSIDER};

#[tokio::test]
async fn members_of_gns3_act_everyone_else_only_looks() {
    let bus = Bus::start();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&bus, dir.path());
    let conn = daemon.connect().await;
    let m = manager(&conn).await;
    let root_vm = m
        .create_vm("by-root", std::collections::HashMap::new())
        .await
        .unwrap();
    let denied = "org.freedesktop.DBus.Error.AccessDenied";

    // Acting: CreateVM, a Set, a VM method.
    let create = ["org.gns3.Qemu.Manager.CreateVM", "by-outsider", "{}"];
    let (ok, out) = gdbus_as(OUTSIDER, &bus, "/org/gns3/Qemu", create[0], &create[1..]);
    assert!(!ok && out.contains(denied), "{out}");
    let set = ["org.gns3.Qemu.VM", "Ram", "<uint32 64>"];
    let (ok, out) = gdbus_as(
        OUTSIDER,
        &bus,
        root_vm.as_str(),
        "org.freedesktop.DBus.Properties.Set",
        &set,
    );
    assert!(!ok && out.contains(denied), "{out}");
    let (ok, out) = gdbus_as(
        OUTSIDER,
        &bus,
        root_vm.as_str(),
        "org.gns3.Qemu.VM.Delete",
        &[],
    );
    assert!(!ok && out.contains(denied), "{out}");

    let create = ["org.gns3.Qemu.Manager.CreateVM", "by-member", "{}"];
    let (ok, out) = gdbus_as(MEMBER, &bus, "/org/gns3/Qemu", create[0], &create[1..]);
    assert!(ok, "{out}");
    let (ok, out) = gdbus_as(
        MEMBER,
        &bus,
        root_vm.as_str(),
        "org.freedesktop.DBus.Properties.Set",
        &set,
    );
    assert!(ok, "{out}");
    assert_eq!(vm(&conn, &root_vm).await.ram().await.unwrap(), 64);

    // Looking: properties, the object tree, introspection.
    let get = ["org.gns3.Qemu.VM", "Name"];
    let (ok, out) = gdbus_as(
        OUTSIDER,
        &bus,
        root_vm.as_str(),
        "org.freedesktop.DBus.Properties.Get",
        &get,
    );
    assert!(ok && out.contains("by-root"), "{out}");
    let objects = "org.freedesktop.DBus.ObjectManager.GetManagedObjects";
    let (ok, out) = gdbus_as(OUTSIDER, &bus, "/org/gns3/Qemu", objects, &[]);
    assert!(ok && out.contains("by-member"), "{out}");
    let introspect = "org.freedesktop.DBus.Introspectable.Introspect";
    let (ok, out) = gdbus_as(OUTSIDER, &bus, "/org/gns3/Qemu", introspect, &[]);
    assert!(ok && out.contains("CreateVM"), "{out}");
    let mut names: Vec<String> = m
        .list_vms()
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.1)
        .collect();
    names.sort();
    assert_eq!(names, ["by-member", "by-root"]);
}

#[test]
fn only_root_and_the_daemons_user_may_own_the_name() {
    let bus = Bus::start();
    let dir = tempfile::tempdir().unwrap();
    write_test_config(dir.path(), "");
    let outsider = nix::unistd::User::from_name(OUTSIDER).unwrap().unwrap();
    nix::unistd::chown(dir.path(), Some(outsider.uid), Some(outsider.gid)).unwrap();
    use std::os::unix::process::CommandExt;
    let out = Command::new(DAEMON)
        .uid(outsider.uid.as_raw())
        .gid(outsider.gid.as_raw())
        .args(["--bus", &bus.address])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--runtime-dir")
        .arg(dir.path().join("run"))
        .arg("--config")
        .arg(dir.path().join("gns3-qemud.toml"))
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("org.gns3.Qemu") && err.contains("not allowed to own"),
        "{err}"
    );
}
