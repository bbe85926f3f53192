//! The VM's machine on real guests (TCG): the vCPUs the guest sees, one hot-added while it
//! runs and kept over a daemon restart, a q35 machine, and the command line with -smp,
//! -cpu, -machine, -uuid and the placeholders of Options.

mod common;

use common::*;
use std::time::Duration;
use zbus::Variant;

const BOOT: Duration = Duration::from_secs(90);
const RUN: Duration = Duration::from_secs(30);

/// The processors the guest counts in /proc/cpuinfo.
fn guest_cpus(console: &mut Console) -> usize {
    let out = console
        .run("echo CPUS-$(grep -c ^processor /proc/cpuinfo)-", RUN)
        .unwrap();
    let n = out
        .split("CPUS-")
        .nth(1)
        .and_then(|rest| rest.split('-').next())
        .unwrap_or_else(|| panic!("no count in {out:?}"));
    n.parse().unwrap_or_else(|_| panic!("no count in {out:?}"))
}

/// The vCPUs QEMU has, as its monitor lists them.
async fn qemu_cpus(vm: &VmProxy<'_>) -> usize {
    let info = vm.human_monitor_command("info cpus").await.unwrap();
    info.lines().filter(|l| l.contains("CPU #")).count()
}

#[tokio::test]
async fn the_guest_sees_its_cpus_and_one_hot_added_which_a_restart_keeps() {
    let mut lab = Lab::start().await;
    let extra = [
        ("Cpus", Variant::from(2u32)),
        ("MaxCpus", Variant::from(4u32)),
    ];
    let vm = create(&lab.manager, "cpus", guest_settings(&extra)).await;
    let line = vm.command_line().await.unwrap().join(" ");
    assert!(line.contains(" -smp cpus=2,maxcpus=4,sockets=1 "), "{line}");
    vm.start().await.unwrap();
    let mut console = Console::connect(vm.console_port().await.unwrap());
    console.wait_for("GUEST-READY", BOOT).unwrap();
    assert_eq!(guest_cpus(&mut console), 2);

    vm.set_cpus(3).await.unwrap();
    console.wait_for("GUEST-CPU 2", RUN).unwrap();
    assert_eq!(guest_cpus(&mut console), 3);
    assert_eq!(qemu_cpus(&vm).await, 3);

    // A running guest keeps its CPUs: lowering is refused, and nothing changes.
    let e = vm.set_cpus(2).await.unwrap_err().to_string();
    assert!(
        e.contains("org.gns3.Qemu.Error.InvalidState") && e.contains("stop the VM first"),
        "{e}"
    );
    assert_eq!(vm.cpus().await.unwrap(), 3);
    // Past MaxCpus is refused before QEMU is asked.
    let e = vm.set_cpus(5).await.unwrap_err().to_string();
    assert!(
        e.contains("org.gns3.Qemu.Error.InvalidArgument") && e.contains("above MaxCpus 4"),
        "{e}"
    );

    let pid = vm.pid().await.unwrap();
    lab.daemon.crash();
    console.wait_closed(Duration::from_secs(5)).unwrap();
    lab.daemon.restart(&lab.bus);
    let conn = lab.daemon.connect().await;
    let path = manager(&conn).await.get_vm("cpus").await.unwrap();
    let vm = common::vm(&conn, &path).await;
    assert_eq!(vm.pid().await.unwrap(), pid, "the QEMU was adopted");
    assert_eq!(vm.cpus().await.unwrap(), 3);
    assert_eq!(qemu_cpus(&vm).await, 3);
    let mut console = Console::connect(vm.console_port().await.unwrap());
    assert_eq!(guest_cpus(&mut console), 3);

    // Raised again after the restart: the next free place is found from QEMU.
    vm.set_cpus(4).await.unwrap();
    console.wait_for("GUEST-CPU 3", RUN).unwrap();
    assert_eq!(guest_cpus(&mut console), 4);
    vm.stop().await.unwrap();

    // Stopped, it may go down; the next start has that many.
    vm.set_cpus(1).await.unwrap();
    let line = vm.command_line().await.unwrap().join(" ");
    assert!(line.contains(" -smp cpus=1,maxcpus=4,sockets=1 "), "{line}");
}

#[tokio::test]
async fn a_q35_guest_boots_with_its_model_uuid_and_expanded_options() {
    let lab = Lab::start().await;
    let extra = [
        ("MachineType", Variant::from("q35")),
        ("CpuModel", Variant::from("max")),
        (
            "Options",
            Variant::from("-smbios type=1,serial=%vm-name%-%console-port%,sku=%other%"),
        ),
    ];
    let vm = create(&lab.manager, "q35", guest_settings(&extra)).await;
    let id = vm.id().await.unwrap();
    let port = vm.console_port().await.unwrap();
    let uuid = format!(
        "{}-{}-{}-{}-{}",
        &id[0..8],
        &id[8..12],
        &id[12..16],
        &id[16..20],
        &id[20..32]
    );
    let line = vm.command_line().await.unwrap().join(" ");
    for part in [
        " -machine q35 ".to_string(),
        " -cpu max ".to_string(),
        " -smp cpus=1,maxcpus=1,sockets=1 ".to_string(),
        format!(" -uuid {uuid} "),
        format!(" -smbios type=1,serial=q35-{port},sku=%other% "),
    ] {
        assert!(line.contains(&part), "no{part}in {line}");
    }
    vm.start().await.unwrap();
    let mut console = Console::connect(port);
    console.wait_for("GUEST-READY", BOOT).unwrap();
    let out = console
        .run(
            "cat /sys/class/dmi/id/product_uuid /sys/class/dmi/id/product_serial /sys/class/dmi/id/board_name",
            RUN,
        )
        .unwrap();
    assert!(
        out.contains(&uuid),
        "the guest's UUID is the VM's id: {out}"
    );
    assert!(out.contains(&format!("q35-{port}")), "{out}");
    let info = vm.human_monitor_command("info qom-tree /machine").await;
    let info = info.unwrap();
    assert!(info.contains("q35"), "{info}");
    vm.stop().await.unwrap();

    // MachineType holds the PCI layout: only while stopped. An unknown one is refused.
    let e = vm.set_machine_type("q36").await.unwrap_err().to_string();
    assert!(e.contains("-machine help"), "{e}");
    vm.set_machine_type("pc-q35-7.2").await.unwrap();
}
