//! Ethernet adapters: MAC addresses and the QEMU arguments that make each adapter a NIC on a
//! hub of its own, so UDP tunnels can be joined to it and removed while the VM runs.

use super::error::shown;
use super::error::{Error, Result};
use super::pci::{self, Layout, Place};
use crate::model::{CustomAdapter, Settings};

/// The name of adapter `n`'s NIC backend, also the name `set_link` takes.
pub fn adapter_netdev(n: u32) -> String {
    format!("gns3-{n}")
}

/// A stable default base MAC for a VM: QEMU's own prefix and three bytes of the id. The
/// last byte keeps its low bits clear so base + adapter number never carries.
pub fn default_mac(id_hex: &str) -> String {
    let byte = |i: usize| u8::from_str_radix(id_hex.get(i..i + 2).unwrap_or("00"), 16).unwrap_or(0);
    format!(
        "52:54:00:{:02x}:{:02x}:{:02x}",
        byte(0),
        byte(2),
        byte(4) & 0xc0
    )
}

fn parse_mac(v: &str) -> Option<u64> {
    let parts: Vec<&str> = v.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    parts.iter().try_fold(0u64, |acc, p| {
        (p.len() == 2)
            .then(|| u8::from_str_radix(p, 16).ok())
            .flatten()
            .map(|b| acc << 8 | u64::from(b))
    })
}

fn format_mac(m: u64) -> String {
    let b = m.to_be_bytes();
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[2], b[3], b[4], b[5], b[6], b[7]
    )
}

/// Checks a base MAC and writes it the one way the daemon stores it.
pub fn normalize_mac(v: &str) -> Result<String> {
    let m = parse_mac(v).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "MacAddress '{}' is not a MAC address; write six hex bytes such as 52:54:00:ab:cd:00",
            shown(v)
        ))
    })?;
    if m >> 40 & 1 == 1 {
        return Err(Error::InvalidArgument(format!(
            "MacAddress '{v}' is a multicast address (lowest bit of the first byte set); a NIC needs a unicast one"
        )));
    }
    if m == 0 {
        return Err(Error::InvalidArgument(
            "MacAddress 00:00:00:00:00:00 is not a usable address".into(),
        ));
    }
    Ok(format_mac(m))
}

/// Adapter n gets base + n: every one of them must stay a valid address.
pub fn check_mac_base(base: &str, adapters: u32) -> Result<()> {
    let m = parse_mac(base).ok_or_else(|| {
        Error::InvalidArgument(format!("MacAddress '{base}' is not a MAC address"))
    })?;
    let last = m + u64::from(adapters.saturating_sub(1));
    if last >> 48 != 0 || (last >> 40) != (m >> 40) {
        return Err(Error::InvalidArgument(format!(
            "MacAddress {base} leaves no room for {adapters} adapters (adapter n gets base + n); lower its last byte"
        )));
    }
    Ok(())
}

/// Adapter `n`'s MAC.
pub fn adapter_mac(base: &str, n: u32) -> String {
    format_mac(parse_mac(base).unwrap_or(0) + u64::from(n))
}

/// Only the shape of a NIC model name; whether the binary has it is checked at start.
pub fn check_adapter_type(v: &str) -> Result<String> {
    let ok = !v.is_empty()
        && v.len() <= 64
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !ok {
        return Err(Error::InvalidArgument(format!(
            "AdapterType '{}' is not a NIC model name (such as e1000, virtio-net-pci, rtl8139)",
            shown(v)
        )));
    }
    Ok(v.to_string())
}

/// One adapter's NIC: its QEMU model and MAC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Nic {
    pub model: String,
    pub mac: String,
}

/// The NIC of each adapter of `s`, adapter 0 first: its CustomAdapters entry's model and
/// MAC where given, else AdapterType and base MAC + n.
pub fn nics(s: &Settings) -> Vec<Nic> {
    (0..s.adapters)
        .map(|n| {
            let custom = s.custom_adapters.iter().find(|c| c.adapter == n);
            let given = |f: fn(&CustomAdapter) -> &String| custom.map(f).filter(|v| !v.is_empty());
            Nic {
                model: given(|c| &c.model).unwrap_or(&s.adapter_type).clone(),
                mac: given(|c| &c.mac)
                    .cloned()
                    .unwrap_or_else(|| adapter_mac(&s.mac_address, n)),
            }
        })
        .collect()
}

/// The model whose NICs tell the guest a link speed: the highest it knows, as a host's
/// 10 Gbit/s port would (QEMU's default is unknown, -1).
const VIRTIO_NET: &str = "virtio-net-pci";

/// `-netdev hubport` + `-device` per adapter, placed as `layout` says (bridges declared
/// before the first NIC on one), the first with `bootindex` when the boot order has n.
/// With no adapter at all QEMU would add a user-mode NIC of its own, hence `-nic none`.
pub fn args(nics: &[Nic], layout: &Layout, bootindex: Option<usize>) -> Vec<String> {
    if nics.is_empty() {
        return vec!["-nic".into(), "none".into()];
    }
    let mut args = Vec::new();
    let mut bridges_declared = false;
    for (n, (nic, place)) in (0u32..).zip(nics.iter().zip(&layout.places)) {
        let netdev = adapter_netdev(n);
        let mut device = format!("{},netdev={netdev},mac={}", nic.model, nic.mac);
        if let Place::Bridge { bridge, addr } = *place {
            if !bridges_declared {
                for k in 1..=layout.bridges {
                    args.extend([
                        "-device".into(),
                        format!("pci-bridge,id={},chassis_nr={k}", pci::bridge_id(k)),
                    ]);
                }
                bridges_declared = true;
            }
            device.push_str(&format!(",bus={},addr={addr:#04x}", pci::bridge_id(bridge)));
        }
        if nic.model == VIRTIO_NET {
            device.push_str(",speed=10000,duplex=full");
        }
        if let (Some(i), 0) = (bootindex, n) {
            device.push_str(&format!(",bootindex={i}"));
        }
        args.extend([
            "-netdev".into(),
            format!("hubport,id={netdev},hubid={n}"),
            "-device".into(),
            device,
        ]);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(
            normalize_mac("52-54-00-AB-CD-00").unwrap(),
            "52:54:00:ab:cd:00"
        );
        assert!(normalize_mac("01:00:5e:00:00:01")
            .unwrap_err()
            .to_string()
            .contains("multicast"));
        assert!(normalize_mac("52:54:00:ab:cd").is_err());
        assert!(normalize_mac("52:54:00:ab:cd:0g").is_err());
        assert!(normalize_mac("00:00:00:00:00:00").is_err());
        assert_eq!(adapter_mac("52:54:00:ab:cd:00", 31), "52:54:00:ab:cd:1f");
        assert_eq!(adapter_mac("52:54:00:ab:cd:ff", 1), "52:54:00:ab:ce:00");
        assert!(check_mac_base("52:54:00:ab:cd:00", 32).is_ok());
        assert!(check_mac_base("fe:ff:ff:ff:ff:ff", 2).is_err());
    }

    #[test]
    fn default_mac_is_stable_and_leaves_room() {
        let id = "6f9619ff8b86d011b42d00c04fc964ff";
        assert_eq!(default_mac(id), "52:54:00:6f:96:00");
        assert_eq!(default_mac(id), default_mac(id));
        assert!(check_mac_base(&default_mac(id), 32).is_ok());
    }

    fn nics_of(adapters: u32, model: &str) -> Vec<Nic> {
        nics(&Settings {
            adapters,
            adapter_type: model.into(),
            mac_address: "52:54:00:00:00:10".into(),
            ..Settings::default()
        })
    }

    fn on_root(nics: &[Nic], bootindex: Option<usize>) -> Vec<String> {
        let layout = pci::layout(nics.len() as u32, 29).unwrap();
        args(nics, &layout, bootindex)
    }

    #[test]
    fn one_hub_per_adapter() {
        assert_eq!(
            on_root(&nics_of(2, "e1000"), Some(2)),
            [
                "-netdev",
                "hubport,id=gns3-0,hubid=0",
                "-device",
                "e1000,netdev=gns3-0,mac=52:54:00:00:00:10,bootindex=2",
                "-netdev",
                "hubport,id=gns3-1,hubid=1",
                "-device",
                "e1000,netdev=gns3-1,mac=52:54:00:00:00:11",
            ]
        );
        assert_eq!(on_root(&nics_of(0, "e1000"), None), ["-nic", "none"]);
        assert_eq!(
            on_root(&nics_of(1, "e1000"), None)[3],
            "e1000,netdev=gns3-0,mac=52:54:00:00:00:10"
        );
    }

    #[test]
    fn virtio_nics_report_ten_gigabit_full_duplex() {
        assert_eq!(
            on_root(&nics_of(1, "virtio-net-pci"), Some(1))[3],
            "virtio-net-pci,netdev=gns3-0,mac=52:54:00:00:00:10,speed=10000,duplex=full,bootindex=1"
        );
    }

    #[test]
    fn nics_past_the_root_bus_go_on_bridges_declared_once() {
        let nics = nics_of(64, "e1000");
        let cmd = args(&nics, &pci::layout(64, 29).unwrap(), Some(1));
        let devices: Vec<&str> = cmd
            .chunks(2)
            .filter(|w| w[0] == "-device")
            .map(|w| w[1].as_str())
            .collect();
        assert_eq!(devices.len(), 66);
        assert_eq!(
            devices[0],
            "e1000,netdev=gns3-0,mac=52:54:00:00:00:10,bootindex=1"
        );
        assert_eq!(devices[26], "e1000,netdev=gns3-26,mac=52:54:00:00:00:2a");
        assert_eq!(devices[27], "pci-bridge,id=gns3-bridge-1,chassis_nr=1");
        assert_eq!(devices[28], "pci-bridge,id=gns3-bridge-2,chassis_nr=2");
        assert_eq!(
            devices[29],
            "e1000,netdev=gns3-27,mac=52:54:00:00:00:2b,bus=gns3-bridge-1,addr=0x00"
        );
        assert_eq!(
            devices[65],
            "e1000,netdev=gns3-63,mac=52:54:00:00:00:4f,bus=gns3-bridge-2,addr=0x04"
        );
        // The MACs carry into the fifth byte past the last: 275 from a default base.
        assert_eq!(adapter_mac("52:54:00:6f:96:c0", 274), "52:54:00:6f:97:d2");
        assert!(check_mac_base("52:54:00:6f:96:c0", 275).is_ok());
    }
}
