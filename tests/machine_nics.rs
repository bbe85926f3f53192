//! Many adapters on real guests (TCG): past the root PCI bus's slots the NICs go on PCI
//! bridges, and the guest sees every one with its MAC, in adapter order (per driver), on pc
//! and q35, a CustomAdapters entry's model and MAC included; virtio-net-pci NICs tell the
//! guest 10 Gbit/s full duplex once their link is up.

mod common;

use common::*;
use std::time::Duration;
use zbus::Variant;

const BOOT: Duration = Duration::from_secs(240);
const RUN: Duration = Duration::from_secs(60);

/// Waits until the guest has `want` (from [`want_macs`]): the MAC of every ethN, eth0
/// first, one a line, then their count.
fn macs(console: &mut Console, n: u32, want: &str) {
    let cmd = format!(
        "i=0; while [ $i -lt {n} ]; do cat /sys/class/net/eth$i/address 2>/dev/null || echo none; i=$((i+1)); done; \
         ls -d /sys/class/net/eth* | wc -l"
    );
    console.run_until(&cmd, want, RUN);
}

/// base + 0 … base + n-1 of the base 52:54:00:12:40:f0 the tests give (past the last byte
/// they carry into the fifth), then the count.
fn want_macs(n: u32) -> String {
    let mut lines: Vec<String> = (0..n)
        .map(|i| {
            let m = 0x40f0 + i;
            format!("52:54:00:12:{:02x}:{:02x}", m >> 8, m & 0xff)
        })
        .collect();
    lines.push(n.to_string());
    lines.join("\n")
}

#[tokio::test]
async fn a_pc_with_64_e1000_adapters_shows_them_all() {
    let lab = Lab::start().await;
    let (vm, mut console) = booted(
        &lab,
        "pc64",
        &[
            ("Adapters", Variant::from(64u32)),
            ("MacAddress", Variant::from("52:54:00:12:40:f0")),
            (
                "CustomAdapters",
                Variant::from(vec![(
                    63u32,
                    "virtio-net-pci".to_string(),
                    "52:54:00:AB:CD:EF".to_string(),
                )]),
            ),
        ],
        BOOT,
    )
    .await;
    assert_eq!(
        vm.custom_adapters().await.unwrap(),
        [(63, "virtio-net-pci".into(), "52:54:00:ab:cd:ef".into())]
    );
    // The guest loads virtio_net before e1000, so the custom adapter (63, on the second
    // bridge) is its eth0, and adapters 0 to 62 follow in order.
    let want = format!(
        "52:54:00:ab:cd:ef\n{}",
        want_macs(64).replace("52:54:00:12:41:2f\n", "")
    );
    macs(&mut console, 64, &want);
    // Wired (to adapter 0), the one virtio NIC tells its speed.
    let m = &lab.manager;
    let (p0, p63) = (
        m.allocate_udp_port().await.unwrap(),
        m.allocate_udp_port().await.unwrap(),
    );
    vm.add_udp_tunnel(0, p0, "127.0.0.1", p63).await.unwrap();
    vm.add_udp_tunnel(63, p63, "127.0.0.1", p0).await.unwrap();
    console.run_until(
        "for i in 0 1 63; do basename $(readlink /sys/class/net/eth$i/device/driver); done; \
         cat /sys/class/net/eth0/speed /sys/class/net/eth0/duplex",
        "virtio_net\ne1000\ne1000\n10000\nfull",
        RUN,
    );
    // 27 NICs on the root bus beside the host bridge, PIIX3 and VGA; two bridges for the
    // other 37.
    let pci = vm.human_monitor_command("info pci").await.unwrap();
    assert_eq!(pci.matches("PCI bridge: PCI device").count(), 2, "{pci}");
    assert_eq!(pci.matches("Ethernet controller").count(), 64, "{pci}");
    let mut root_slots: Vec<&str> = pci
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Bus  0, device"))
        .filter_map(|rest| rest.split(',').next())
        .collect();
    root_slots.dedup();
    assert_eq!(root_slots.len(), 32, "every root slot taken: {pci}");
    vm.stop().await.unwrap();
}

#[tokio::test]
async fn a_q35_with_40_virtio_adapters_shows_them_all_at_10_gbit() {
    let lab = Lab::start().await;
    let (vm, mut console) = booted(
        &lab,
        "q35-40",
        &[
            ("MachineType", Variant::from("q35")),
            ("Adapters", Variant::from(40u32)),
            ("AdapterType", Variant::from("virtio-net-pci")),
            ("MacAddress", Variant::from("52:54:00:12:40:f0")),
        ],
        BOOT,
    )
    .await;
    macs(&mut console, 40, &want_macs(40));
    // eth0 on the root bus, eth39 on the bridge, wired to each other. The guest's driver
    // reads the speed when the link comes up, which it does once a tunnel is attached.
    let m = &lab.manager;
    let (p0, p39) = (
        m.allocate_udp_port().await.unwrap(),
        m.allocate_udp_port().await.unwrap(),
    );
    vm.add_udp_tunnel(0, p0, "127.0.0.1", p39).await.unwrap();
    vm.add_udp_tunnel(39, p39, "127.0.0.1", p0).await.unwrap();
    console.run_until(
        "cat /sys/class/net/eth0/speed /sys/class/net/eth0/duplex \
         /sys/class/net/eth39/speed /sys/class/net/eth39/duplex",
        "10000\nfull\n10000\nfull",
        RUN,
    );
    let pci = vm.human_monitor_command("info pci").await.unwrap();
    assert_eq!(pci.matches("PCI bridge: PCI device").count(), 1, "{pci}");
    vm.stop().await.unwrap();
}
