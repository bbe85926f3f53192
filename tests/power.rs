//! OnStop shutdown and PowerOff on real guests (TCG): the ACPI power button, a guest that
//! ignores it, a PowerOff that ends the wait, and a shutdown that goes on across a restart
//! of the daemon.

mod common;

use common::*;
use std::time::Duration;
use zbus::Variant;

const BOOT: Duration = Duration::from_secs(90);

fn shutdown_settings(timeout: u32) -> [(&'static str, Variant<'static>); 2] {
    [
        ("OnStop", Variant::from("shutdown")),
        ("StopTimeout", Variant::from(timeout)),
    ]
}

/// Every State the VM's PropertiesChanged signals carry, until it is stopped.
async fn states_until_stopped(changes: &mut zbus::MessageStream) -> Vec<String> {
    let mut seen = Vec::new();
    while seen.last().map(String::as_str) != Some("stopped") {
        let (_, changed, _) = next_change(changes).await;
        if let Some(state) = changed.get("State") {
            seen.push(String::try_from(state.try_clone().unwrap()).unwrap());
        }
    }
    seen
}

/// A Stop of `vm` called, and seen to make it stopping: its answer, to come.
async fn stop_under_way(vm: &VmProxy<'static>) -> tokio::task::JoinHandle<zbus::Result<()>> {
    let stop = tokio::spawn({
        let vm = vm.clone();
        async move { vm.stop().await }
    });
    let stopping = eventually(Duration::from_secs(3), || async {
        vm.state().await.unwrap() == "stopping"
    })
    .await;
    assert!(stopping, "Stop did not make the VM stopping");
    stop
}

#[tokio::test]
async fn a_shutdown_presses_the_button_and_the_guest_powers_off() {
    let lab = Lab::start().await;
    let (vm, mut console) = booted(&lab, "polite", &shutdown_settings(60), BOOT).await;
    assert_eq!(vm.on_stop().await.unwrap(), "shutdown");
    let path = lab.manager.get_vm("polite").await.unwrap();
    let mut changes = signals(&lab.conn, Some(path.as_str()), "PropertiesChanged").await;

    vm.stop().await.unwrap();
    assert_eq!(
        vm.state().await.unwrap(),
        "stopped",
        "Stop returns once stopped"
    );
    console
        .wait_for("GUEST-POWERDOWN", Duration::from_secs(5))
        .unwrap();
    assert_eq!(
        states_until_stopped(&mut changes).await,
        ["stopping", "stopped"]
    );
    assert_eq!(vm.last_error().await.unwrap(), "", "nothing was forced");
    assert_eq!(vm.exit_status().await.unwrap(), 0);

    // A paused guest is resumed to hear the button.
    vm.start().await.unwrap();
    let mut console = Console::connect(vm.console_port().await.unwrap());
    console.wait_for("GUEST-READY", BOOT).unwrap();
    vm.suspend().await.unwrap();
    vm.stop().await.unwrap();
    console
        .wait_for("GUEST-POWERDOWN", Duration::from_secs(5))
        .unwrap();
    assert_eq!(vm.state().await.unwrap(), "stopped");
    assert_eq!(vm.last_error().await.unwrap(), "");
}

#[tokio::test]
async fn a_guest_that_ignores_the_button_is_powered_off_after_stop_timeout() {
    let lab = Lab::start().await;
    let (vm, mut console) = booted(&lab, "deaf", &shutdown_settings(4), BOOT).await;
    console.ignore_the_power_button();
    let pid = vm.pid().await.unwrap();

    let stop = stop_under_way(&vm).await;
    // During the shutdown: another Stop waits for the same end; Start, Delete and a
    // setting held by QEMU are refused and change nothing; a NextStart setting is stored.
    let second = tokio::spawn({
        let vm = vm.clone();
        async move { vm.stop().await }
    });
    for refused in [vm.start().await, vm.delete().await] {
        let e = refused.unwrap_err();
        assert_eq!(error_name(&e), "org.gns3.Qemu.Error.InvalidState", "{e}");
        assert!(e.to_string().contains("is stopping"), "{e}");
    }
    let held = vm
        .configure([("Adapters", Variant::from(3u32))].into())
        .await
        .unwrap_err();
    assert_eq!(error_name(&held), "org.gns3.Qemu.Error.InvalidState");
    vm.configure([("Ram", Variant::from(160u32))].into())
        .await
        .unwrap();
    assert_eq!(vm.pid().await.unwrap(), pid, "still the same QEMU");

    stop.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
    assert_eq!(vm.state().await.unwrap(), "stopped");
    assert!(!pid_alive(pid));
    assert_eq!(
        vm.last_error().await.unwrap(),
        "the guest did not power off within 4 s of the power button; it was powered off"
    );
    assert_eq!(vm.ram().await.unwrap(), 160);
    assert_eq!(vm.adapters().await.unwrap(), 1);
    assert!(console.wait_closed(Duration::from_secs(5)).is_ok());
}

#[tokio::test]
async fn power_off_ends_a_shutdown_and_never_waits() {
    let lab = Lab::start().await;
    let (vm, mut console) = booted(&lab, "impatient", &shutdown_settings(3600), BOOT).await;
    console.ignore_the_power_button();
    let stop = stop_under_way(&vm).await;
    vm.power_off().await.unwrap();
    assert_eq!(vm.state().await.unwrap(), "stopped");
    stop.await.unwrap().unwrap();
    assert_eq!(vm.last_error().await.unwrap(), "", "PowerOff was asked for");
    // On a stopped VM it does nothing.
    vm.power_off().await.unwrap();

    // Whatever OnStop says, PowerOff does not press the button.
    vm.start().await.unwrap();
    let mut console = Console::connect(vm.console_port().await.unwrap());
    console.wait_for("GUEST-READY", BOOT).unwrap();
    vm.power_off().await.unwrap();
    let rest = console.wait_closed(Duration::from_secs(5)).unwrap();
    assert!(!rest.contains("GUEST-POWERDOWN"), "{rest}");
    assert_eq!(vm.state().await.unwrap(), "stopped");
}

#[tokio::test]
async fn a_shutdown_goes_on_across_a_restart_of_the_daemon() {
    let mut lab = Lab::start().await;
    let (vm, mut console) = booted(&lab, "survivor", &shutdown_settings(8), BOOT).await;
    console.ignore_the_power_button();
    let pid = vm.pid().await.unwrap();
    let stop = stop_under_way(&vm).await;
    lab.daemon.crash();
    assert!(
        stop.await.unwrap().is_err(),
        "its daemon died under the Stop"
    );
    lab.daemon.restart(&lab.bus);
    let path = lab.manager.get_vm("survivor").await.unwrap();
    let vm = common::vm(&lab.conn, &path).await;
    assert_eq!(
        vm.state().await.unwrap(),
        "stopping",
        "the shutdown goes on"
    );
    assert_eq!(vm.pid().await.unwrap(), pid);
    // A Stop now waits for the end of the shutdown the first daemon began.
    vm.stop().await.unwrap();
    assert_eq!(vm.state().await.unwrap(), "stopped");
    assert!(!pid_alive(pid));
    assert_eq!(
        vm.last_error().await.unwrap(),
        "the guest did not power off within 8 s of the power button; it was powered off"
    );
}
