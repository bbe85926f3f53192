//! The system bus policy, `dbus/org.gns3.Qemu.conf`, on a private bus that loads that very
//! file: root and members of group `gns3` may act, everyone else may only look, and only
//! root and `gns3-qemud` may own the name; and what only root and members read of what
//! anyone may look at. Clients are `gdbus` and `busctl`, run as each user.

mod common;

use common::*;
use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use common::users::{gdbus_as, run_as, MEMBER, OUTSIDER};
use futures_util::StreamExt;
use zbus::{OwnedObjectPath, OwnedVariant, Variant};

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

    // StopAll stops every VM of the host.
    let (ok, out) = gdbus_as(
        OUTSIDER,
        &bus,
        "/org/gns3/Qemu",
        "org.gns3.Qemu.Manager.StopAll",
        &[],
    );
    assert!(!ok && out.contains(denied), "{out}");

    // The capture methods: the frames are the lab's traffic.
    for (method, args) in [
        ("org.gns3.Qemu.VM.StartCapture", &["0", "{}"][..]),
        ("org.gns3.Qemu.VM.StopCapture", &["0"][..]),
        ("org.gns3.Qemu.VM.OpenCapture", &["0"][..]),
    ] {
        let (ok, out) = gdbus_as(OUTSIDER, &bus, root_vm.as_str(), method, args);
        assert!(!ok && out.contains(denied), "{method}: {out}");
    }
    let stop = "org.gns3.Qemu.VM.StopCapture";
    let (ok, out) = gdbus_as(MEMBER, &bus, root_vm.as_str(), stop, &["0"]);
    assert!(
        ok,
        "a member stops a capture (of none: nothing to do): {out}"
    );

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
    // Wiring is acting too: Connect and Disconnect are for members; UdpHost anyone reads.
    let disconnect = "org.gns3.Qemu.Manager.Disconnect";
    let quoted = format!("'{}'", root_vm.as_str());
    let args = [quoted.as_str(), "0"];
    let (ok, out) = gdbus_as(OUTSIDER, &bus, "/org/gns3/Qemu", disconnect, &args);
    assert!(!ok && out.contains(denied), "{out}");
    let connect = "org.gns3.Qemu.Manager.Connect";
    let args = [quoted.as_str(), "0", quoted.as_str(), "0"];
    let (ok, out) = gdbus_as(OUTSIDER, &bus, "/org/gns3/Qemu", connect, &args);
    assert!(!ok && out.contains(denied), "{out}");
    let (ok, out) = gdbus_as(MEMBER, &bus, "/org/gns3/Qemu", disconnect, &args[..2]);
    assert!(ok, "{out}");
    let udp_host = ["org.gns3.Qemu.Manager", "UdpHost"];
    let get_prop = "org.freedesktop.DBus.Properties.Get";
    let (ok, out) = gdbus_as(OUTSIDER, &bus, "/org/gns3/Qemu", get_prop, &udp_host);
    assert!(ok && out.contains("'127.0.0.1'"), "{out}");

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

/// The properties only root and members of gns3 read.
const DRIVERS_ONLY: [&str; 3] = ["Options", "KernelCommandLine", "LastError"];

/// `busctl --json=short` with `args` as `user`: the data of its answer.
fn busctl_as(user: &str, bus: &Bus, args: &[&str]) -> serde_json::Value {
    let out = run_as(user, "busctl")
        .arg(format!("--address={}", bus.address))
        .arg("--json=short")
        .args(args)
        .output()
        .expect("running busctl (package systemd)");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "busctl {args:?} as {user}: {err}");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    answer["data"].clone()
}

/// The string values of `names` in `props`, busctl's JSON of an a{sv}.
fn strings(props: &serde_json::Value, names: &[&str]) -> Vec<String> {
    names
        .iter()
        .map(|n| match props[n]["data"].as_str() {
            Some(s) => s.to_string(),
            None => panic!("no string {n} in {props}"),
        })
        .collect()
}

fn sorted_keys(changed: &HashMap<String, OwnedVariant>) -> Vec<&str> {
    let mut keys: Vec<&str> = changed.keys().map(String::as_str).collect();
    keys.sort();
    keys
}

/// `Options` holds secrets (`-object secret,data=…`), a kernel command line may, and
/// `LastError` quotes qemu.log: others read them empty through Get, GetAll,
/// GetManagedObjects and the broadcast InterfacesAdded, and PropertiesChanged names them
/// without their values, while root and members read them whole, cached proxies too.
#[tokio::test]
async fn only_drivers_read_options_kernel_command_line_and_last_error() {
    if !root_for("to run clients as other users") {
        return;
    }
    let lab = Lab::start().await;
    let (bus, conn) = (&lab.bus, &lab.conn);
    let secret = "-object secret,id=s0,data=hunter2";
    let mut added = signals(conn, None, "InterfacesAdded").await;
    let path = lab
        .manager
        .create_vm(
            "secretive",
            guest_settings(&[("Options", Variant::from(secret))]),
        )
        .await
        .unwrap();

    // Announced to every local user: with all three empty, whoever created it.
    let msg = tokio::time::timeout(Duration::from_secs(10), added.next())
        .await
        .expect("no InterfacesAdded within 10 s")
        .unwrap()
        .unwrap();
    let (announced, interfaces): (
        OwnedObjectPath,
        HashMap<String, HashMap<String, OwnedVariant>>,
    ) = msg.body().deserialize().unwrap();
    assert_eq!(announced, path);
    let props = &interfaces["org.gns3.Qemu.VM"];
    for name in DRIVERS_ONLY {
        assert_eq!(
            props[name],
            OwnedVariant::from(zbus::Str::from("")),
            "{name}"
        );
    }
    assert_eq!(
        props["Name"],
        OwnedVariant::from(zbus::Str::from("secretive"))
    );

    // A LastError: QEMU killed from outside; its change is named, not told.
    let vm = vm(conn, &path).await;
    let mut changes = signals(conn, Some(path.as_str()), "PropertiesChanged").await;
    vm.start().await.unwrap();
    let pid = vm.pid().await.unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    loop {
        let (iface, changed, invalidated) = next_change(&mut changes).await;
        assert_eq!(iface, "org.gns3.Qemu.VM");
        for name in DRIVERS_ONLY {
            assert!(!changed.contains_key(name), "{name} told in {changed:?}");
        }
        if invalidated.iter().any(|n| n == "LastError") {
            assert_eq!(invalidated, ["LastError"]);
            break;
        }
    }
    let last_error = vm.last_error().await.unwrap();
    assert!(last_error.contains("signal 9"), "{last_error}");
    let cmdline = "console=ttyS0 panic=-1 quiet";
    let values = [secret, cmdline, last_error.as_str()];

    let objects = ["org.freedesktop.DBus.ObjectManager", "GetManagedObjects"];
    let interface = [
        "org.freedesktop.DBus.Properties",
        "GetAll",
        "s",
        "org.gns3.Qemu.VM",
    ];
    for (user, driver) in [(OUTSIDER, false), (MEMBER, true)] {
        let want: Vec<&str> = values
            .iter()
            .map(|v| if driver { *v } else { "" })
            .collect();
        let got: Vec<String> = DRIVERS_ONLY
            .iter()
            .map(|name| {
                let args = [
                    "get-property",
                    "org.gns3.Qemu",
                    path.as_str(),
                    "org.gns3.Qemu.VM",
                    name,
                ];
                let value = busctl_as(user, bus, &args);
                value.as_str().unwrap().to_string()
            })
            .collect();
        assert_eq!(got, want, "Get as {user}");

        let args = [
            &["call", "org.gns3.Qemu", path.as_str()][..],
            &interface[..],
        ]
        .concat();
        let all = busctl_as(user, bus, &args);
        let names = [&DRIVERS_ONLY[..], &["Name"]].concat();
        let mut want_all = want.clone();
        want_all.push("secretive");
        assert_eq!(strings(&all[0], &names), want_all, "GetAll as {user}");

        let args = [
            &["call", "org.gns3.Qemu", "/org/gns3/Qemu"][..],
            &objects[..],
        ]
        .concat();
        let managed = busctl_as(user, bus, &args);
        let props = &managed[0][path.as_str()]["org.gns3.Qemu.VM"];
        assert_eq!(
            strings(props, &names),
            want_all,
            "GetManagedObjects as {user}"
        );
    }

    // A change of Options, alone or with another setting: named, and only the other told.
    let cached = cached_vm(conn, &path).await;
    assert_eq!(cached.options().await.unwrap(), secret);
    let mut options_changes = cached.receive_options_changed().await;
    options_changes.next().await; // the current value
    let other = "-object secret,id=s0,data=swordfish";
    vm.set_options(other).await.unwrap();
    let (iface, changed, invalidated) = next_change(&mut changes).await;
    assert_eq!(iface, "org.gns3.Qemu.VM");
    assert!(changed.is_empty(), "{changed:?}");
    assert_eq!(invalidated, ["Options"]);
    // The proxy that caches properties reads it again, as a driver.
    let seen = tokio::time::timeout(Duration::from_secs(10), options_changes.next())
        .await
        .expect("no change of Options within 10 s")
        .unwrap();
    assert_eq!(seen.get().await.unwrap(), other);
    assert_eq!(cached.options().await.unwrap(), other);

    let both = HashMap::from([
        ("Options", Variant::from(secret)),
        ("Ram", Variant::from(96u32)),
    ]);
    vm.configure(both).await.unwrap();
    let (_, changed, invalidated) = next_change(&mut changes).await;
    assert_eq!(sorted_keys(&changed), ["Ram"]);
    assert_eq!(changed["Ram"], OwnedVariant::from(96u32));
    assert_eq!(invalidated, ["Options"]);
    assert_eq!(cached.options().await.unwrap(), secret);
}
