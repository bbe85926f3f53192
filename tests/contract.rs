//! The D-Bus contract: the interface XML equals what the daemon exports, every bad input
//! gets a named error and changes nothing, ports are managed, disks are linked clones, and
//! busctl drives it as a user would.

mod common;

use common::*;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use zbus::{OwnedObjectPath, OwnedVariant, Variant};

async fn live_interface(conn: &zbus::Connection, path: &str, name: &str) -> String {
    let proxy = zbus::fdo::IntrospectableProxy::builder(conn)
        .destination("org.gns3.Qemu")
        .path(path)
        .build()
        .await
        .unwrap();
    let xml = proxy.introspect().await.unwrap();
    let node = zbus_xml::Node::from_reader(xml.as_bytes()).unwrap();
    let iface = node
        .interfaces()
        .iter()
        .find(|i| i.name() == name)
        .unwrap_or_else(|| panic!("{path} does not export {name}"));
    members(iface)
}

/// The interface's members, one per entry, in name order within each kind: the order of
/// elements in introspection data carries no meaning.
fn members(iface: &zbus_xml::Interface<'_>) -> String {
    let mut children: Vec<String> = iface.children().map(|c| format!("{c:#?}")).collect();
    children.sort();
    format!("{}\n{}", iface.name(), children.join("\n"))
}

fn file_interface(file: &str, name: &str) -> String {
    let text = contract_file(file);
    let node = zbus_xml::Node::from_reader(text.as_bytes()).unwrap();
    let iface = node.interfaces().iter().find(|i| i.name() == name).unwrap();
    members(iface)
}

/// Every method, property and signal of the file has a comment right before it.
fn assert_documented(file: &str) {
    let text = contract_file(file);
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let t = line.trim_start();
        if t.starts_with("<method") || t.starts_with("<property") || t.starts_with("<signal") {
            assert!(
                i > 0 && lines[i - 1].trim() == "-->",
                "{file}: no doc comment before {t}"
            );
        }
    }
}

#[tokio::test]
async fn the_interface_files_are_what_the_daemon_exports() {
    let bus = Bus::start();
    let dir = tempfile::tempdir().unwrap();
    let daemon = Daemon::start(&bus, dir.path());
    let conn = daemon.connect().await;
    let path = manager(&conn)
        .await
        .create_vm("x", HashMap::new())
        .await
        .unwrap();
    assert_eq!(
        live_interface(&conn, "/org/gns3/Qemu", "org.gns3.Qemu.Manager").await,
        file_interface("org.gns3.Qemu.Manager.xml", "org.gns3.Qemu.Manager"),
        "dbus/org.gns3.Qemu.Manager.xml differs from the daemon"
    );
    assert_eq!(
        live_interface(&conn, path.as_str(), "org.gns3.Qemu.VM").await,
        file_interface("org.gns3.Qemu.VM.xml", "org.gns3.Qemu.VM"),
        "dbus/org.gns3.Qemu.VM.xml differs from the daemon"
    );
    assert_documented("org.gns3.Qemu.Manager.xml");
    assert_documented("org.gns3.Qemu.VM.xml");
}

#[tokio::test]
async fn manager_basics_and_object_manager_signals() {
    use futures_util::StreamExt;
    let lab = Lab::start().await;
    let (dir, conn, m) = (&lab.dir, &lab.conn, &lab.manager);
    assert_eq!(m.version().await.unwrap(), env!("CARGO_PKG_VERSION"));
    assert_eq!(m.console_host().await.unwrap(), "127.0.0.1");
    let binaries = m.qemu_binaries().await.unwrap();
    assert!(
        binaries
            .iter()
            .any(|(p, v)| p.ends_with("/qemu-system-x86_64") && !v.is_empty()),
        "{binaries:?}"
    );

    let om = zbus::fdo::ObjectManagerProxy::builder(conn)
        .destination("org.gns3.Qemu")
        .path("/org/gns3/Qemu")
        .build()
        .await
        .unwrap();
    let mut added = om.receive_interfaces_added().await.unwrap();
    let mut removed = om.receive_interfaces_removed().await.unwrap();
    let id = "6f9619ff-8b86-d011-b42d-00c04fc964ff";
    let settings: HashMap<&str, Variant> = [
        ("Id", Variant::from(id)),
        ("Project", Variant::from("lab-1")),
        ("Ram", Variant::from(64u32)),
    ]
    .into();
    let path = m.create_vm("r1", settings).await.unwrap();
    assert_eq!(
        path.as_str(),
        "/org/gns3/Qemu/vm/6f9619ff8b86d011b42d00c04fc964ff"
    );
    let signal = added.next().await.unwrap();
    let args = signal.args().unwrap();
    assert_eq!(args.object_path().as_str(), path.as_str());
    let props = &args.interfaces_and_properties()["org.gns3.Qemu.VM"];
    assert_eq!(props["Name"], Variant::from("r1"));
    assert_eq!(props["Project"], Variant::from("lab-1"));

    assert_eq!(m.get_vm("r1").await.unwrap(), path);
    assert_eq!(m.get_vm(id).await.unwrap(), path);
    let list = m.list_vms().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].1.as_str(), list[0].2.as_str()), ("r1", "stopped"));
    let e = m.get_vm("nope").await.unwrap_err();
    assert_eq!(error_name(&e), "org.gns3.Qemu.Error.NotFound");

    let managed = om.get_managed_objects().await.unwrap();
    assert!(managed[&path]
        .keys()
        .any(|i| i.as_str() == "org.gns3.Qemu.VM"));

    // Every change of a property is signalled; defaults are the seed's.
    let vm = vm(conn, &path).await;
    assert_eq!(vm.ram().await.unwrap(), 64);
    assert_eq!(vm.process_priority().await.unwrap(), "low");
    let cached = cached_vm(conn, &path).await;
    let mut ram_changes = cached.receive_ram_changed().await;
    ram_changes.next().await; // the current value
    vm.set_ram(96).await.unwrap();
    // GetManagedObjects, whose entries the daemon keeps serialized, shows the change as soon
    // as the Set has returned, and each VM as GetAll does.
    let managed = om.get_managed_objects().await.unwrap();
    let listed = &managed[&path]["org.gns3.Qemu.VM"];
    assert_eq!(u32::try_from(&listed["Ram"]).unwrap(), 96);
    let all = zbus::fdo::PropertiesProxy::builder(conn)
        .destination("org.gns3.Qemu")
        .path(path.clone())
        .build()
        .await
        .unwrap()
        .get_all(zbus::names::InterfaceName::from_static_str_unchecked(
            "org.gns3.Qemu.VM",
        ))
        .await
        .unwrap();
    assert_eq!(listed, &all);
    let changed = ram_changes.next().await.unwrap();
    assert_eq!(changed.get().await.unwrap(), 96);
    // ListVMs, whose rows the daemon keeps serialized too, has a new name once its Set has
    // returned, and a VM created since.
    vm.set_name("r1-renamed").await.unwrap();
    let other = m.create_vm("r0", HashMap::new()).await.unwrap();
    let listed: Vec<(String, String, String)> = m
        .list_vms()
        .await
        .unwrap()
        .into_iter()
        .map(|(id, name, state, _)| (id, name, state))
        .collect();
    let other_id = other.as_str().rsplit('/').next().unwrap().to_string();
    let mut want = vec![
        (
            id.replace('-', ""),
            "r1-renamed".to_string(),
            "stopped".to_string(),
        ),
        (other_id, "r0".to_string(), "stopped".to_string()),
    ];
    want.sort();
    assert_eq!(listed, want, "in id order");
    common::vm(conn, &other).await.delete().await.unwrap();
    vm.set_name("r1").await.unwrap();

    vm.delete().await.unwrap();
    // CreateVM also emits InterfacesRemoved([org.freedesktop.DBus.Properties]) today (see
    // `one_create_and_one_delete_are_one_signal_each`): Delete's is the one naming the VM.
    let signal = loop {
        let signal = removed.next().await.unwrap();
        let args = signal.args().unwrap();
        // r0's, deleted above, comes first.
        if args.object_path().as_str() == path.as_str()
            && args
                .interfaces()
                .iter()
                .any(|i| i.as_str() == "org.gns3.Qemu.VM")
        {
            break signal;
        }
    };
    let args = signal.args().unwrap();
    let names: Vec<&str> = args.interfaces().iter().map(|i| i.as_str()).collect();
    assert_eq!(names, ["org.gns3.Qemu.VM"]);
    assert!(m.list_vms().await.unwrap().is_empty());
    assert!(om.get_managed_objects().await.unwrap().is_empty());
    assert!(std::fs::read_dir(dir.path().join("state/vms"))
        .unwrap()
        .next()
        .is_none());
    let e = vm.start().await.unwrap_err();
    assert!(
        error_name(&e).starts_with("org.freedesktop.DBus.Error.Unknown"),
        "{e}"
    );
}

/// `qemu-io -c COMMAND` on a qcow2 file; fails the test if anything failed, a pattern
/// verification included (qemu-io exits 0 even then, so its output is read).
fn qemu_io(path: &Path, command: &str) {
    let out = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", command])
        .arg(path)
        .output()
        .expect("running qemu-io (qemu-utils)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !text.contains("failed"),
        "qemu-io {command} {}: {text}",
        path.display()
    );
}

/// Everything the ObjectManager says over a VM's whole life, in order: one InterfacesAdded
/// at CreateVM, nothing at a property change, one InterfacesRemoved naming exactly
/// `org.gns3.Qemu.VM` at Delete.
#[tokio::test]
async fn one_create_and_one_delete_are_one_signal_each() {
    use futures_util::StreamExt;
    use zbus::MatchRule;
    let lab = Lab::start().await;
    let rule = MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender("org.gns3.Qemu")
        .interface("org.freedesktop.DBus.ObjectManager")
        .build()
        .unwrap();
    let mut signals = zbus::MessageStream::for_match_rule(rule, &lab.conn, None)
        .await
        .unwrap();
    let path = lab.manager.create_vm("once", HashMap::new()).await.unwrap();
    let vm = vm(&lab.conn, &path).await;
    vm.set_ram(96).await.unwrap();
    vm.delete().await.unwrap();
    // Whatever the daemon says about these calls, it says within a second of the last.
    let mut seen = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(1), signals.next()).await {
        let msg = msg.unwrap();
        let header = msg.header();
        let member = header.member().unwrap().to_string();
        let (object, interfaces): (OwnedObjectPath, Vec<String>) = match member.as_str() {
            "InterfacesAdded" => {
                let (p, i): (
                    OwnedObjectPath,
                    HashMap<String, HashMap<String, OwnedVariant>>,
                ) = msg.body().deserialize().unwrap();
                let mut names: Vec<String> = i.into_keys().collect();
                names.sort();
                (p, names)
            }
            _ => msg.body().deserialize().unwrap(),
        };
        seen.push((member, object.to_string(), interfaces));
    }
    let p = path.to_string();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(
        (seen[0].0.as_str(), seen[0].1.as_str()),
        ("InterfacesAdded", p.as_str())
    );
    assert!(
        seen[0].2.contains(&"org.gns3.Qemu.VM".to_string()),
        "{seen:#?}"
    );
    assert_eq!(
        seen[1],
        (
            "InterfacesRemoved".to_string(),
            p,
            vec!["org.gns3.Qemu.VM".to_string()]
        )
    );
}

/// What a failed call must leave as it was.
async fn observe(dir: &Path, m: &ManagerProxy<'_>, vms: &[&VmProxy<'_>]) -> String {
    let mut props = Vec::new();
    for vm in vms {
        let conn = vm.inner().connection();
        let all = all_properties(conn, vm.inner().path(), "org.gns3.Qemu.VM").await;
        let mut all: Vec<_> = all.into_iter().map(|(k, v)| format!("{k}={v:?}")).collect();
        all.sort();
        props.push(all);
    }
    format!(
        "{:?}\n{:?}\n{props:?}",
        snapshot(&dir.join("state")),
        m.list_vms().await.unwrap()
    )
}

#[tokio::test]
async fn every_bad_input_is_named_and_changes_nothing() {
    let lab = Lab::start().await;
    let (dir, conn, m, daemon) = (&lab.dir, &lab.conn, &lab.manager, &lab.daemon);
    let a_path = m.create_vm("a", HashMap::new()).await.unwrap();
    let b_path = m.create_vm("b", HashMap::new()).await.unwrap();
    let a = vm(conn, &a_path).await;
    let b = vm(conn, &b_path).await;
    let b_console = b.console_port().await.unwrap();

    let files = dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    let broken = files.join("broken.img");
    std::os::unix::fs::symlink("/nonexistent/base.qcow2", &broken).unwrap();
    let not_exec = files.join("qemu-not-exec");
    std::fs::write(&not_exec, b"").unwrap();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let held_port = held.local_addr().unwrap().port();
    let held_in_range = free_port_in(&daemon.ports);
    let _held_in_range = std::net::TcpListener::bind(("127.0.0.1", held_in_range)).unwrap();
    let cpus = std::thread::available_parallelism().unwrap().get() as u32;
    let big = "x".repeat(64 * 1024);
    // A raw base the daemon may write in place: one a saved state cannot be put in.
    let raw = files.join("disk.raw");
    daemons_raw_image(&raw, 1 << 20);

    let before = observe(dir.path(), m, &[&a, &b]).await;
    let props = properties_proxy(conn, &a_path).await;
    let iface = zbus::names::InterfaceName::from_static_str_unchecked("org.gns3.Qemu.VM");
    // (property, value, error, a word the message must contain)
    let s = |v: &str| Variant::from(v.to_string());
    let cases: Vec<(&str, Variant, &str, String)> = vec![
        ("Name", s(""), "InvalidArgument", "1 to 64".into()),
        ("Name", s("a b"), "InvalidArgument", "a b".into()),
        ("Name", s("a/b"), "InvalidArgument", "a/b".into()),
        ("Name", s(&"n".repeat(65)), "InvalidArgument", "64".into()),
        ("Name", s(&big), "InvalidArgument", "letters".into()),
        ("Name", s("b"), "AlreadyExists", "'b'".into()),
        (
            "Ram",
            Variant::from(0u32),
            "InvalidArgument",
            "1 MiB".into(),
        ),
        (
            "Ram",
            Variant::from(u32::MAX),
            "InvalidArgument",
            "4294967295".into(),
        ),
        (
            "Ram",
            Variant::from(512i32),
            "InvalidArgument",
            "'u'".into(),
        ),
        (
            "HdaDiskImage",
            s("disk.img"),
            "InvalidArgument",
            "absolute".into(),
        ),
        (
            "HdaDiskImage",
            s("/nonexistent.img"),
            "ImageNotAccessible",
            "/nonexistent.img".into(),
        ),
        (
            "HdbDiskImage",
            s(files.to_str().unwrap()),
            "ImageNotAccessible",
            "regular file".into(),
        ),
        (
            "KernelImage",
            s(broken.to_str().unwrap()),
            "ImageNotAccessible",
            "/nonexistent/base.qcow2".into(),
        ),
        (
            "Initrd",
            s(&format!("/{big}")),
            "InvalidArgument",
            "4096".into(),
        ),
        (
            "QemuPath",
            s("no-such-qemu"),
            "QemuNotFound",
            "no-such-qemu".into(),
        ),
        (
            "QemuPath",
            s(not_exec.to_str().unwrap()),
            "QemuNotFound",
            "executable".into(),
        ),
        (
            "QemuPath",
            s("bin/qemu"),
            "InvalidArgument",
            "relative".into(),
        ),
        (
            "ProcessPriority",
            s("urgent"),
            "InvalidArgument",
            "very high".into(),
        ),
        (
            "CpuThrottling",
            Variant::from(100 * cpus + 1),
            "InvalidArgument",
            (100 * cpus).to_string(),
        ),
        (
            "ConsolePort",
            Variant::from(80u16),
            "InvalidArgument",
            format!("{}-{}", daemon.ports.start(), daemon.ports.end()),
        ),
        (
            "ConsolePort",
            Variant::from(b_console),
            "PortUnavailable",
            b_console.to_string(),
        ),
        (
            "MonitorPort",
            Variant::from(held_port),
            "InvalidArgument",
            held_port.to_string(),
        ),
        (
            "MonitorPort",
            Variant::from(held_in_range),
            "PortUnavailable",
            "cannot bind".into(),
        ),
        (
            "Options",
            s("-qmp unix:/tmp/x"),
            "InvalidArgument",
            "-qmp".into(),
        ),
        (
            "Options",
            s("-monitor stdio"),
            "InvalidArgument",
            "HumanMonitorCommand".into(),
        ),
        (
            "Options",
            s("-daemonize"),
            "InvalidArgument",
            "-daemonize".into(),
        ),
        ("Options", s("-name 'x"), "InvalidArgument", "quote".into()),
        ("Accelerator", s("fast"), "InvalidArgument", "fast".into()),
        (
            "MacAddress",
            s("01:00:5e:00:00:01"),
            "InvalidArgument",
            "multicast".into(),
        ),
        (
            "MacAddress",
            s("52:54:00"),
            "InvalidArgument",
            "52:54:00".into(),
        ),
        (
            "Adapters",
            Variant::from(276u32),
            "InvalidArgument",
            "276".into(),
        ),
        (
            "AdapterType",
            s("e1000 -x"),
            "InvalidArgument",
            "e1000 -x".into(),
        ),
        (
            "LegacyNetworking",
            s("yes"),
            "InvalidArgument",
            "'b'".into(),
        ),
        (
            "Cpus",
            Variant::from(0u32),
            "InvalidArgument",
            "1 to 255".into(),
        ),
        (
            "Cpus",
            Variant::from(2u32),
            "InvalidArgument",
            "raise MaxCpus".into(),
        ),
        (
            "MaxCpus",
            Variant::from(256u32),
            "InvalidArgument",
            "1 to 255".into(),
        ),
        (
            "CpuModel",
            s("nosuchcpu"),
            "InvalidArgument",
            "-cpu help".into(),
        ),
        (
            "CpuModel",
            s("host"),
            "InvalidArgument",
            "set Accelerator to kvm".into(),
        ),
        (
            "MachineType",
            s("q36"),
            "InvalidArgument",
            "-machine help".into(),
        ),
        (
            "OnStop",
            s("Shutdown"),
            "InvalidArgument",
            "'Shutdown'".into(),
        ),
        (
            "OnStop",
            s("hibernate"),
            "InvalidArgument",
            "save-state".into(),
        ),
        (
            "StopTimeout",
            Variant::from(0u32),
            "InvalidArgument",
            "1 to 3600".into(),
        ),
        (
            "StopTimeout",
            Variant::from(3601u32),
            "InvalidArgument",
            "3601".into(),
        ),
        (
            "StopTimeout",
            Variant::from(60u16),
            "InvalidArgument",
            "'u'".into(),
        ),
        ("Autostart", s("yes"), "InvalidArgument", "'b'".into()),
    ];
    for (key, value, error, word) in &cases {
        let e = props
            .set(iface.clone(), key, &value.clone())
            .await
            .unwrap_err();
        let name = error_name(&e.clone().into());
        assert_eq!(
            name,
            format!("org.gns3.Qemu.Error.{error}"),
            "Set {key} = {value:?}: {e}"
        );
        assert!(
            e.to_string().contains(word.as_str()),
            "Set {key}: '{e}' does not name '{word}'"
        );
        assert_eq!(
            observe(dir.path(), m, &[&a, &b]).await,
            before,
            "Set {key} changed something"
        );
    }
    let e = props
        .set(iface.clone(), "State", &s("running"))
        .await
        .unwrap_err();
    assert_eq!(
        error_name(&e.into()),
        "org.freedesktop.DBus.Error.PropertyReadOnly"
    );

    // Configure is all or nothing.
    let bad: Vec<HashMap<&str, Variant>> = vec![
        [("Ram", Variant::from(512u32)), ("Name", s(""))].into(),
        [("Ram", Variant::from(512u32)), ("Nmae", s("c"))].into(),
        [("Name", s("c")), ("ConsolePort", Variant::from(b_console))].into(),
        [
            ("OnStop", s("save-state")),
            ("HdbDiskImage", s(raw.to_str().unwrap())),
            ("LinkedClone", Variant::Bool(false)),
        ]
        .into(),
    ];
    for settings in bad {
        let e = a.configure(settings.clone()).await.unwrap_err();
        assert!(error_name(&e).starts_with("org.gns3.Qemu.Error."), "{e}");
        if settings.contains_key("OnStop") {
            assert_eq!(error_name(&e), "org.gns3.Qemu.Error.InvalidArgument");
            assert!(e.to_string().contains("HdbDiskImage"), "{e}");
        }
        assert_eq!(
            observe(dir.path(), m, &[&a, &b]).await,
            before,
            "Configure {settings:?}"
        );
    }

    // A stopped VM without a saved state has none to discard: nothing changes.
    a.discard_saved_state().await.unwrap();
    assert_eq!(observe(dir.path(), m, &[&a, &b]).await, before);

    // CreateVM checks everything before writing anything.
    let bad_creates: Vec<(&str, HashMap<&str, Variant>, &str)> = vec![
        ("", HashMap::new(), "InvalidArgument"),
        ("a", HashMap::new(), "AlreadyExists"),
        ("c", [("Id", s("not-a-uuid"))].into(), "InvalidArgument"),
        (
            "c",
            [("Id", Variant::from(a.id().await.unwrap()))].into(),
            "AlreadyExists",
        ),
        ("c", [("Id", Variant::from(5u32))].into(), "InvalidArgument"),
        ("c", [("Colour", s("red"))].into(), "InvalidArgument"),
        (
            "c",
            [("Ram", Variant::from(0u32))].into(),
            "InvalidArgument",
        ),
        (
            "c",
            [("ConsolePort", Variant::from(b_console))].into(),
            "PortUnavailable",
        ),
        (
            "c",
            [("MonitorPort", Variant::from(b_console))].into(),
            "PortUnavailable",
        ),
        (
            "c",
            [("QemuPath", s("/nonexistent/qemu"))].into(),
            "QemuNotFound",
        ),
        (
            "c",
            [("Project", s("bad\nproject"))].into(),
            "InvalidArgument",
        ),
        (
            "c",
            [
                ("OnStop", s("save-state")),
                ("HdaDiskImage", s(raw.to_str().unwrap())),
                ("LinkedClone", Variant::Bool(false)),
            ]
            .into(),
            "InvalidArgument",
        ),
    ];
    for (name, settings, error) in bad_creates {
        let e = m.create_vm(name, settings.clone()).await.unwrap_err();
        assert_eq!(
            error_name(&e),
            format!("org.gns3.Qemu.Error.{error}"),
            "CreateVM {name:?} {settings:?}: {e}"
        );
        assert_eq!(
            observe(dir.path(), m, &[&a, &b]).await,
            before,
            "CreateVM {name:?} {settings:?}"
        );
    }
    // A free port asked for by a failed create was given back.
    let free = free_port_in(&daemon.ports);
    let e = m
        .create_vm(
            "c",
            [
                ("ConsolePort", Variant::from(free)),
                ("MonitorPort", Variant::from(b_console)),
            ]
            .into(),
        )
        .await
        .unwrap_err();
    assert_eq!(error_name(&e), "org.gns3.Qemu.Error.PortUnavailable");
    let c = m
        .create_vm("c", [("ConsolePort", Variant::from(free))].into())
        .await
        .unwrap();
    assert_eq!(vm(conn, &c).await.console_port().await.unwrap(), free);
    drop(held);
}

/// A port of the daemon's console range that nobody holds now, from the top.
fn free_port_in(range: &std::ops::RangeInclusive<u16>) -> u16 {
    range
        .clone()
        .rev()
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .unwrap()
}

#[tokio::test]
async fn ports_are_reserved_skipped_changed_and_released() {
    let bus = Bus::start();
    let dir = tempfile::tempdir().unwrap();
    // A range of its own, in which the test holds the first port with another program.
    let base = (20000..30000)
        .step_by(16)
        .find(|b| (*b..b + 8).all(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()))
        .unwrap();
    std::fs::create_dir_all(dir.path()).unwrap();
    std::fs::write(
        dir.path().join("gns3-qemud.toml"),
        format!("{TEST_CONFIG}console_port_range = [{base}, {}]\n", base + 7),
    )
    .unwrap();
    let held = std::net::TcpListener::bind(("127.0.0.1", base)).unwrap();
    let daemon = Daemon::start(&bus, dir.path());
    let conn = daemon.connect().await;
    let m = manager(&conn).await;
    let v1 = create(&m, "v1", HashMap::new()).await;
    assert_eq!(
        (
            v1.console_port().await.unwrap(),
            v1.monitor_port().await.unwrap()
        ),
        (base + 1, 0),
        "the port another program holds is skipped; a monitor port only when asked"
    );
    let e = m
        .create_vm("v2", [("ConsolePort", Variant::from(base))].into())
        .await
        .unwrap_err();
    assert_eq!(error_name(&e), "org.gns3.Qemu.Error.PortUnavailable");
    assert!(e.to_string().contains(&base.to_string()), "{e}");
    let asked = [
        ("ConsolePort", Variant::from(base + 6)),
        ("MonitorPort", Variant::from(base + 2)),
    ];
    let v2 = create(&m, "v2", asked.into()).await;
    assert_eq!(
        (
            v2.console_port().await.unwrap(),
            v2.monitor_port().await.unwrap()
        ),
        (base + 6, base + 2),
        "requested ports are honoured"
    );

    // Changing the property moves the reservation.
    v1.set_console_port(base + 7).await.unwrap();
    assert_eq!(v1.console_port().await.unwrap(), base + 7);
    let v3 = create(&m, "v3", [("ConsolePort", Variant::from(base + 1))].into()).await;
    assert_eq!(
        v3.console_port().await.unwrap(),
        base + 1,
        "the old port was released"
    );
    // +3, +4 and +5 are left, one VM each; then none, and the failed create takes nothing.
    let mut filled = Vec::new();
    for name in ["v4", "v5", "v6"] {
        filled.push(
            create(&m, name, HashMap::new())
                .await
                .console_port()
                .await
                .unwrap(),
        );
    }
    assert_eq!(filled, [base + 3, base + 4, base + 5]);
    let e = m.create_vm("v7", HashMap::new()).await.unwrap_err();
    assert_eq!(error_name(&e), "org.gns3.Qemu.Error.PortUnavailable", "{e}");
    // Deleting gives the ports back: the lowest free one is v2's monitor port.
    v2.delete().await.unwrap();
    let v7 = create(&m, "v7", HashMap::new()).await;
    assert_eq!(v7.console_port().await.unwrap(), base + 2);
    drop(held);
}

fn qemu_img_info(path: &Path) -> serde_json::Value {
    let out = Command::new("qemu-img")
        .args(["info", "--force-share", "--output=json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success());
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn disks_are_linked_clones_made_once() {
    let lab = Lab::start().await;
    let (dir, conn, m) = (&lab.dir, &lab.conn, &lab.manager);
    let images = dir.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    let raw = images.join("base.raw");
    let qcow = images.join("data.qcow2");
    for (path, fmt) in [(&raw, "raw"), (&qcow, "qcow2")] {
        let ok = Command::new("qemu-img")
            .args(["create", "-q", "-f", fmt])
            .arg(path)
            .arg("16M")
            .status()
            .unwrap();
        assert!(ok.success());
    }
    let path = m
        .create_vm(
            "disks",
            guest_settings(&[
                (
                    "HdaDiskImage",
                    Variant::from(raw.to_string_lossy().into_owned()),
                ),
                (
                    "HdbDiskImage",
                    Variant::from(qcow.to_string_lossy().into_owned()),
                ),
            ]),
        )
        .await
        .unwrap();
    let vm = vm(conn, &path).await;
    let vm_dir = dir.path().join("state/vms").join(vm.id().await.unwrap());
    vm.start().await.unwrap();
    vm.stop().await.unwrap();
    let hda = qemu_img_info(&vm_dir.join("hda_disk.qcow2"));
    assert_eq!(hda["format"], "qcow2");
    assert_eq!(hda["backing-filename"], raw.to_string_lossy().as_ref());
    assert_eq!(hda["backing-filename-format"], "raw");
    let hdb = qemu_img_info(&vm_dir.join("hdb_disk.qcow2"));
    assert_eq!(hdb["backing-filename-format"], "qcow2");
    // Made once: what was written to the overlay survives a restart. A marker written
    // into it while the VM is stopped must read back afterwards, from the same file; an
    // overlay made again would read the base's zeros there, from a new inode.
    let hda_path = vm_dir.join("hda_disk.qcow2");
    let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let before = inode(&hda_path);
    qemu_io(&hda_path, "write -P 0x5a 0 4k");
    vm.start().await.unwrap();
    vm.stop().await.unwrap();
    assert_eq!(inode(&hda_path), before, "the overlay was made again");
    qemu_io(&hda_path, "read -P 0x5a 0 4k");
    assert_eq!(
        qemu_img_info(&vm_dir.join("hda_disk.qcow2"))["backing-filename"],
        hda["backing-filename"]
    );

    // Without hda: a blank 128 MiB flash disk.
    let flash_vm = create(m, "flash", guest_settings(&[])).await;
    flash_vm.start().await.unwrap();
    flash_vm.stop().await.unwrap();
    let flash_dir = dir
        .path()
        .join("state/vms")
        .join(flash_vm.id().await.unwrap());
    let flash = qemu_img_info(&flash_dir.join("flash.qcow2"));
    assert_eq!(flash["virtual-size"], 128 * 1024 * 1024);

    // qemu-img's own words when it cannot use the base: when it is set, and at Start when
    // it became so since.
    let corrupt = images.join("corrupt.qcow2");
    let spoil = || {
        let mut bytes = b"QFI\xfb".to_vec();
        bytes.extend([0xffu8; 508]);
        std::fs::write(&corrupt, bytes).unwrap();
    };
    let settings = || {
        guest_settings(&[(
            "HdaDiskImage",
            Variant::from(corrupt.to_string_lossy().into_owned()),
        )])
    };
    spoil();
    let e = m.create_vm("corrupt", settings()).await.unwrap_err();
    assert_eq!(error_name(&e), "org.gns3.Qemu.Error.DiskImageFailed", "{e}");
    assert!(e.to_string().contains("qemu-img"), "{e}");
    assert_eq!(
        m.get_vm("corrupt")
            .await
            .map(drop)
            .map_err(|e| error_name(&e)),
        Err("org.gns3.Qemu.Error.NotFound".into())
    );
    qemu_img(
        &images,
        &["create", "-q", "-f", "qcow2", "corrupt.qcow2", "16M"],
    );
    let bad = create(m, "corrupt", settings()).await;
    spoil();
    let e = bad.start().await.unwrap_err();
    assert_eq!(error_name(&e), "org.gns3.Qemu.Error.DiskImageFailed", "{e}");
    assert!(e.to_string().contains("qemu-img"), "{e}");
    assert_eq!(bad.state().await.unwrap(), "stopped");
}

#[tokio::test]
async fn driven_with_busctl_as_a_user_would() {
    let bus = Bus::start();
    let dir = tempfile::tempdir().unwrap();
    let _daemon = Daemon::start(&bus, dir.path());
    let busctl = |args: &[&str]| bus.busctl(args);
    let g = guest();
    let kernel = g.join("vmlinuz").to_string_lossy().into_owned();
    let initrd = g.join("initrd.gz").to_string_lossy().into_owned();
    let (ok, out) = busctl(&[
        "call",
        "org.gns3.Qemu",
        "/org/gns3/Qemu",
        "org.gns3.Qemu.Manager",
        "CreateVM",
        "sa{sv}",
        "web",
        "4",
        "KernelImage",
        "s",
        &kernel,
        "Initrd",
        "s",
        &initrd,
        "KernelCommandLine",
        "s",
        "console=ttyS0 panic=-1",
        "Ram",
        "u",
        "128",
    ]);
    assert!(ok, "{out}");
    let path = out
        .trim()
        .trim_start_matches("o ")
        .trim_matches('"')
        .to_string();
    assert!(path.starts_with("/org/gns3/Qemu/vm/"), "{out}");
    let vm = |args: &[&str]| {
        let mut all = vec![args[0], "org.gns3.Qemu", path.as_str()];
        all.push("org.gns3.Qemu.VM");
        all.extend_from_slice(&args[1..]);
        busctl(&all)
    };
    assert!(vm(&["set-property", "Ram", "u", "160"]).0);
    assert_eq!(vm(&["get-property", "Ram"]).1.trim(), "u 160");
    let (ok, out) = vm(&["set-property", "Ram", "u", "0"]);
    assert!(!ok && out.contains("Ram 0 MiB is out of range"), "{out}");
    let (ok, out) = vm(&["call", "Start"]);
    assert!(ok, "{out}");
    assert_eq!(vm(&["get-property", "State"]).1.trim(), "s \"running\"");
    let (ok, out) = vm(&["call", "CommandLine"]);
    assert!(ok && out.contains("\"-m\" \"160\""), "{out}");
    assert!(vm(&["call", "Stop"]).0);
    assert_eq!(vm(&["get-property", "State"]).1.trim(), "s \"stopped\"");
    let (ok, out) = busctl(&[
        "call",
        "org.gns3.Qemu",
        "/org/gns3/Qemu",
        "org.gns3.Qemu.Manager",
        "ListVMs",
    ]);
    assert!(ok && out.contains("\"web\" \"stopped\""), "{out}");
    assert!(vm(&["call", "Delete"]).0);
    let (ok, out) = busctl(&[
        "call",
        "org.gns3.Qemu",
        "/org/gns3/Qemu",
        "org.gns3.Qemu.Manager",
        "GetVM",
        "s",
        "web",
    ]);
    assert!(!ok && out.contains("no VM is named"), "{out}");
}

/// busctl reads the daemon's introspection data for `tree` and `introspect`; whatever it
/// finds odd in it, it prints on stderr.
#[tokio::test]
async fn busctl_reads_every_path_without_a_warning() {
    let lab = Lab::start().await;
    let vm = lab.manager.create_vm("tree", HashMap::new()).await.unwrap();
    let busctl = |args: &[&str]| {
        let out = Command::new("busctl")
            .arg(format!("--address={}", lab.bus.address))
            .args(args)
            .output()
            .expect("running busctl (package systemd)");
        assert!(out.status.success(), "busctl {args:?}: {out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "", "busctl {args:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let tree = busctl(&["tree", "--list", "org.gns3.Qemu"]);
    let paths: Vec<&str> = tree.lines().collect();
    assert_eq!(
        paths,
        [
            "/",
            "/org",
            "/org/gns3",
            "/org/gns3/Qemu",
            "/org/gns3/Qemu/vm",
            vm.as_str()
        ]
    );
    for path in paths {
        busctl(&["introspect", "org.gns3.Qemu", path]);
    }
}
