//! gns3-qemuctl as a user runs it: the built binary against the real daemon on a private
//! bus, with real guests. Outputs and exit codes are checked exactly.

mod common;

use common::ctl::{create, ctl, ctl_on, failed, finish, ok, BOOT};
use common::users::{run_as, OUTSIDER};
use common::{ctl_bin, error_name, Bus, Lab};
use std::process::Command;

#[tokio::test]
async fn create_list_show_set_start_stop_delete() {
    let lab = Lab::start().await;
    let m = &lab.manager;
    let lab1 = ["--set", "Project=lab1"];
    let r1 = [&["--ram", "128M", "--adapters", "2"][..], &lab1].concat();
    assert_eq!(create(&lab, "r1", &r1), ok(""));
    assert_eq!(
        create(&lab, "r2", &[&["--ram", "128"][..], &lab1].concat()),
        ok("")
    );
    let (p1, p2) = (m.get_vm("r1").await.unwrap(), m.get_vm("r2").await.unwrap());
    let (vm1, vm2) = (
        common::vm(&lab.conn, &p1).await,
        common::vm(&lab.conn, &p2).await,
    );
    let (c1, c2) = (
        vm1.console_port().await.unwrap(),
        vm2.console_port().await.unwrap(),
    );
    // A cable on r2, for LINKS.
    let local = m.allocate_udp_port().await.unwrap();
    vm2.add_udp_tunnel(0, local, "127.0.0.1", 9).await.unwrap();

    let table = format!(
        "NAME  LAB   STATE    CONSOLE   RAM  ADAPTERS  LINKS\n\
         r1    lab1  stopped  {c1:>7}  128M         2      0\n\
         r2    lab1  stopped  {c2:>7}  128M         1      1\n"
    );
    assert_eq!(
        ctl(&lab, &["list"]),
        ok(&format!("{table}\n2 VMs listed.\n"))
    );
    // Without the header, the columns are as wide as their values.
    let body =
        format!("r1  lab1  stopped  {c1}  128M  2  0\nr2  lab1  stopped  {c2}  128M  1  1\n");
    assert_eq!(ctl(&lab, &["--no-legend", "list"]), ok(&body));

    let json = ctl(&lab, &["list", "--json"]);
    assert_eq!((json.code, json.stderr.as_str()), (0, ""));
    let vms: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let vms = vms.as_array().unwrap();
    assert_eq!(vms.len(), 2);
    for (vm, name, path, port, adapters) in
        [(&vms[0], "r1", &p1, c1, 2), (&vms[1], "r2", &p2, c2, 1)]
    {
        assert_eq!(vm["Name"], name);
        assert_eq!(vm["Project"], "lab1");
        assert_eq!(vm["State"], "stopped");
        assert_eq!(vm["ConsolePort"], port);
        assert_eq!(vm["Ram"], 128);
        assert_eq!(vm["Adapters"], adapters);
        assert_eq!(vm["ObjectPath"], path.as_str());
    }
    assert_eq!(vms[0]["Tunnels"], serde_json::json!([]));
    assert_eq!(
        vms[1]["Tunnels"],
        serde_json::json!([[0, local, "127.0.0.1", 9]])
    );

    assert_eq!(
        ctl(&lab, &["show", "r1", "-p", "Ram", "--value"]),
        ok("128\n")
    );
    assert_eq!(
        ctl(&lab, &["show", "r1", "-p", "Ram", "-p", "Project"]),
        ok("Ram=128\nProject=lab1\n")
    );
    let shown = ctl(&lab, &["show", "r1", "--json"]);
    assert_eq!((shown.code, shown.stderr.as_str()), (0, ""));
    let shown: serde_json::Value = serde_json::from_str(&shown.stdout).unwrap();
    // Every property, as in list's, which adds the object path.
    let mut want = vms[0].clone();
    want.as_object_mut().unwrap().remove("ObjectPath");
    assert_eq!(shown, want);
    let id = vm1.id().await.unwrap();
    assert_eq!(
        ctl(&lab, &["show", &id, "-p", "Name", "--value"]),
        ok("r1\n")
    );

    // One bad setting: nothing changes, and the daemon's named error is what is printed.
    let refused = vm1
        .configure([("Ram", 256u32.into()), ("Adapters", 276u32.into())].into())
        .await
        .unwrap_err();
    let zbus::Error::MethodError(name, Some(message), _) = &refused else {
        panic!("{refused:?}")
    };
    assert_eq!(name.as_str(), "org.gns3.Qemu.Error.InvalidArgument");
    assert_eq!(
        ctl(&lab, &["set", "r1", "Ram=256", "Adapters=276"]),
        failed(1, &format!("Failed to configure r1: {name}: {message}\n"))
    );
    assert_eq!(
        (vm1.ram().await.unwrap(), vm1.adapters().await.unwrap()),
        (128, 2)
    );
    assert_eq!(ctl(&lab, &["set", "r1", "Ram=256", "Adapters=3"]), ok(""));
    assert_eq!(
        (vm1.ram().await.unwrap(), vm1.adapters().await.unwrap()),
        (256, 3)
    );
    // CustomAdapters as ADAPTER:MODEL:MAC entries; the daemon's refusal is printed as is.
    assert_eq!(
        ctl(
            &lab,
            &[
                "set",
                "r1",
                "CustomAdapters=2:virtio-net-pci:52:54:00:AB:CD:EF,0:rtl8139:"
            ]
        ),
        ok("")
    );
    assert_eq!(
        vm1.custom_adapters().await.unwrap(),
        [
            (0, "rtl8139".into(), String::new()),
            (2, "virtio-net-pci".into(), "52:54:00:ab:cd:ef".into())
        ]
    );
    assert_eq!(
        ctl(&lab, &["show", "r1", "-p", "CustomAdapters", "--value"]),
        ok("0:rtl8139: 2:virtio-net-pci:52:54:00:ab:cd:ef\n")
    );
    assert_eq!(
        ctl(&lab, &["set", "r1", "CustomAdapters=3::"]),
        failed(
            1,
            "Failed to configure r1: org.gns3.Qemu.Error.InvalidArgument: CustomAdapters has an \
             entry for adapter 3, and the VM has 3 adapter(s) (0 to 2); raise Adapters, or \
             remove that entry from CustomAdapters\n"
        )
    );
    assert_eq!(ctl(&lab, &["set", "r1", "CustomAdapters="]), ok(""));
    assert_eq!(vm1.custom_adapters().await.unwrap(), []);

    // Both in one command, and each really runs its guest.
    assert_eq!(ctl(&lab, &["start", "r1", "r2"]), ok(""));
    for vm in [&vm1, &vm2] {
        assert_eq!(vm.state().await.unwrap(), "running");
        assert!(common::pid_alive(vm.pid().await.unwrap()));
        let mut console = common::Console::connect(vm.console_port().await.unwrap());
        console.wait_for("GUEST-READY", BOOT).unwrap();
    }
    assert_eq!(ctl(&lab, &["suspend", "r1", "r2"]), ok(""));
    for vm in [&vm1, &vm2] {
        assert_eq!(vm.state().await.unwrap(), "paused");
    }
    assert_eq!(ctl(&lab, &["resume", "r1", "r2"]), ok(""));
    for vm in [&vm1, &vm2] {
        assert_eq!(vm.state().await.unwrap(), "running");
    }
    assert_eq!(ctl(&lab, &["stop", "r2"]), ok(""));
    assert_eq!(vm2.state().await.unwrap(), "stopped");
    assert_eq!(vm1.state().await.unwrap(), "running");

    assert_eq!(
        ctl(&lab, &["delete", "r2", "r1"]),
        failed(
            1,
            "Refusing to delete r1: it is running. Stop it first, or pass --force.\n"
        )
    );
    assert_eq!(
        ctl(&lab, &["list", "--no-legend"]).stdout.lines().count(),
        2
    );
    assert_eq!(ctl(&lab, &["delete", "--force", "r1"]), ok(""));
    let gone = m.get_vm("r1").await.unwrap_err();
    assert_eq!(error_name(&gone), "org.gns3.Qemu.Error.NotFound");
    assert!(common::qemu_pids_under(lab.dir.path()).is_empty());
    assert_eq!(ctl(&lab, &["delete", "r2"]), ok(""));
    assert_eq!(
        ctl(&lab, &["list"]),
        ok("NAME  LAB  STATE  CONSOLE  RAM  ADAPTERS  LINKS\n\n0 VMs listed.\n")
    );
}

#[tokio::test]
async fn no_such_vm_is_4_and_bad_usage_2() {
    let lab = Lab::start().await;
    assert_eq!(create(&lab, "r1", &[]), ok(""));
    let none = "No VM named or with id 'nosuch'.\n";
    assert_eq!(ctl(&lab, &["show", "nosuch"]), failed(4, none));
    assert_eq!(ctl(&lab, &["set", "nosuch", "Ram=256"]), failed(4, none));
    assert_eq!(ctl(&lab, &["delete", "nosuch"]), failed(4, none));
    // Every VM named is found before any is touched.
    assert_eq!(ctl(&lab, &["start", "r1", "nosuch"]), failed(4, none));
    let r1 = common::vm(&lab.conn, &lab.manager.get_vm("r1").await.unwrap()).await;
    assert_eq!(r1.state().await.unwrap(), "stopped");

    for usage in [
        &["frobnicate"][..],
        &["start"],
        &["show", "r1", "--value", "--json"],
        &["create", "r2", "--adapters", "many"],
        &["--address", "unix:path=/x", "-H", "host", "list"],
    ] {
        let run = ctl(&lab, usage);
        assert_eq!(
            (run.code, run.stdout.as_str()),
            (2, ""),
            "{usage:?}: {run:?}"
        );
        assert!(run.stderr.starts_with("error: "), "{usage:?}: {run:?}");
    }
    // A setting the contract does not have, or of the wrong type, is refused before any call.
    assert_eq!(
        ctl(&lab, &["set", "r1", "Ram=lots"]),
        failed(
            1,
            "Invalid setting 'Ram=lots': expected a number from 0 to 4294967295, not 'lots'\n"
        )
    );
    assert_eq!(
        ctl(&lab, &["set", "r1", "State=running"]),
        failed(1, "Invalid setting 'State=running': State is read-only\n")
    );
    assert_eq!(
        ctl(&lab, &["show", "r1", "-p", "Rams"]),
        failed(1, "r1 has no property 'Rams'.\n")
    );
    assert_eq!(
        ctl(&lab, &["create", "r2", "--ram", "1.5G"]),
        failed(1, "Invalid setting '1.5G': expected a size in MiB, or with a K, M, G or T suffix (512M, 2G)\n")
    );
    // The daemon's refusal of a whole create, named.
    let run = ctl(&lab, &["create", "r1"]);
    assert_eq!((run.code, run.stdout.as_str()), (1, ""));
    assert!(
        run.stderr
            .starts_with("Failed to create r1: org.gns3.Qemu.Error.AlreadyExists: "),
        "{run:?}"
    );
}

#[tokio::test]
async fn the_bus_by_address_or_ssh_and_what_to_do_when_refused() {
    let lab = Lab::start().await;
    assert_eq!(create(&lab, "r1", &[]), ok(""));
    let r1 = common::vm(&lab.conn, &lab.manager.get_vm("r1").await.unwrap()).await;
    let port = r1.console_port().await.unwrap();
    let listed = ok(&format!("r1  -  stopped  {port}  256M  1  0\n"));
    // --address wins over the environment's system bus.
    let by_address = ctl_on(
        "unix:path=/nonexistent",
        &["--address", &lab.bus.address, "--no-legend", "list"],
    );
    assert_eq!(by_address, listed);

    // -H runs `ssh -xT -- HOST systemd-stdio-bridge`: an ssh of the test's, first in PATH,
    // records its arguments and bridges to the private bus, as sshd would run the bridge.
    let bin = lab.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let argv = lab.dir.path().join("ssh-argv");
    let ssh = bin.join("ssh");
    std::fs::write(
        &ssh,
        format!(
            "#!/bin/sh\necho \"$@\" > {}\nexec systemd-stdio-bridge --bus-path='{}'\n",
            argv.display(),
            lab.bus.address
        ),
    )
    .unwrap();
    std::fs::set_permissions(&ssh, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut command = Command::new(ctl_bin());
    command
        .args(["-H", "admin@lab-host", "--no-legend", "list"])
        .env("PATH", path)
        .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent");
    assert_eq!(finish(command), listed);
    assert_eq!(
        std::fs::read_to_string(&argv).unwrap(),
        "-xT -- admin@lab-host systemd-stdio-bridge\n"
    );

    // A user the bus policy keeps out is told how to join gns3.
    let mut outsider = run_as(OUTSIDER, ctl_bin().to_str().unwrap());
    outsider
        .args(["show", "r1"])
        .env("DBUS_SYSTEM_BUS_ADDRESS", &lab.bus.address);
    let run = finish(outsider);
    assert_eq!((run.code, run.stdout.as_str()), (1, ""), "{run:?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{run:?}");
    assert!(
        lines[0].starts_with("Failed to find r1: org.freedesktop.DBus.Error.AccessDenied: "),
        "{run:?}"
    );
    assert_eq!(
        lines[1],
        "Only root and members of the group gns3 may use gns3-qemud: `usermod -a -G gns3 $USER`, then log in again."
    );

    // No daemon on the bus: how to start it.
    let empty = Bus::start();
    let run = ctl_on(&empty.address, &["list"]);
    assert_eq!((run.code, run.stdout.as_str()), (1, ""), "{run:?}");
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{run:?}");
    assert!(
        lines[0].starts_with("Failed to list the VMs: org.freedesktop.DBus.Error.ServiceUnknown: "),
        "{run:?}"
    );
    assert_eq!(
        lines[1],
        "gns3-qemud is not running: `systemctl start gns3-qemud`."
    );
}

/// Several VMs at once: each is tried, each failure is said with the daemon's named error,
/// and any failure makes the exit code 1.
#[tokio::test]
async fn each_failure_of_several_is_said() {
    let lab = Lab::start().await;
    for bad in ["b1", "b2"] {
        assert_eq!(
            create(&lab, bad, &["--set", "Options=-bogus-option"]),
            ok("")
        );
    }
    assert_eq!(create(&lab, "r1", &[]), ok(""));
    let run = ctl(&lab, &["start", "b1", "r1", "b2"]);
    assert_eq!((run.code, run.stdout.as_str()), (1, ""), "{run:?}");
    let b2 = run
        .stderr
        .find("Failed to start b2: ")
        .unwrap_or_else(|| panic!("{run:?}"));
    let (one, two) = run.stderr.split_at(b2);
    for (said, name) in [(one, "b1"), (two, "b2")] {
        assert!(
            said.starts_with(&format!(
                "Failed to start {name}: org.gns3.Qemu.Error.StartFailed: "
            )),
            "{run:?}"
        );
        assert!(said.contains("-bogus-option: invalid option"), "{run:?}");
    }
    let r1 = common::vm(&lab.conn, &lab.manager.get_vm("r1").await.unwrap()).await;
    assert_eq!(r1.state().await.unwrap(), "running");

    // One failure alone is said once.
    let run = ctl(&lab, &["start", "b1"]);
    assert_eq!((run.code, run.stdout.as_str()), (1, ""), "{run:?}");
    assert!(run
        .stderr
        .starts_with("Failed to start b1: org.gns3.Qemu.Error.StartFailed: "));
    assert_eq!(run.stderr.matches("Failed to start").count(), 1, "{run:?}");

    // create --start: created and running in one command.
    assert_eq!(create(&lab, "r2", &["--start"]), ok(""));
    let r2 = common::vm(&lab.conn, &lab.manager.get_vm("r2").await.unwrap()).await;
    assert_eq!(r2.state().await.unwrap(), "running");
}
