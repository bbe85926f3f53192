//! Ethernet adapters: MAC addresses and the QEMU arguments that make each adapter a NIC on a
//! hub of its own, so UDP tunnels can be joined to it and removed while the VM runs.

use super::error::shown;
use super::error::{Error, Result};

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

/// `-netdev hubport` + `-device` per adapter, the first with `bootindex` when the boot
/// order has n. With no adapter at all QEMU would add a user-mode NIC of its own, hence
/// `-nic none`.
pub fn args(adapters: u32, model: &str, mac_base: &str, bootindex: Option<usize>) -> Vec<String> {
    if adapters == 0 {
        return vec!["-nic".into(), "none".into()];
    }
    (0..adapters)
        .flat_map(|n| {
            let netdev = adapter_netdev(n);
            let boot = match bootindex {
                Some(i) if n == 0 => format!(",bootindex={i}"),
                _ => String::new(),
            };
            [
                "-netdev".into(),
                format!("hubport,id={netdev},hubid={n}"),
                "-device".into(),
                format!(
                    "{model},netdev={netdev},mac={}{boot}",
                    adapter_mac(mac_base, n)
                ),
            ]
        })
        .collect()
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

    #[test]
    fn one_hub_per_adapter() {
        assert_eq!(
            args(2, "e1000", "52:54:00:00:00:10", Some(2)),
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
        assert_eq!(
            args(0, "e1000", "52:54:00:00:00:10", None),
            ["-nic", "none"]
        );
        assert_eq!(
            args(1, "e1000", "52:54:00:00:00:10", None)[3],
            "e1000,netdev=gns3-0,mac=52:54:00:00:00:10"
        );
    }
}
