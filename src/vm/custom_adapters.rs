//! CustomAdapters: the entries checked one by one, then against the VM's other settings
//! (Adapters, every MAC its own), and the NIC models they add for the check against the
//! binary's devices.

use super::error::{shown, Error, Result};
use super::network::{check_adapter_type, nics, normalize_mac};
use crate::model::{CustomAdapter, Settings};

/// CustomAdapters' entries, each on its own: one per adapter, a model's name checked as
/// AdapterType's, a MAC as MacAddress (and written the same way).
pub fn check(v: Vec<(u32, String, String)>) -> Result<Vec<CustomAdapter>> {
    let mut out: Vec<CustomAdapter> = Vec::with_capacity(v.len());
    for (adapter, model, mac) in v {
        if out.iter().any(|c| c.adapter == adapter) {
            return Err(Error::InvalidArgument(format!(
                "CustomAdapters has adapter {adapter} twice; give each adapter at most one entry"
            )));
        }
        let model = if model.is_empty() {
            model
        } else {
            check_adapter_type(&model).map_err(|_| {
                Error::InvalidArgument(format!(
                    "CustomAdapters: the model '{}' of adapter {adapter} is not a NIC model name \
                     (such as e1000, virtio-net-pci, rtl8139; \"\" for AdapterType)",
                    shown(&model)
                ))
            })?
        };
        let mac = if mac.is_empty() {
            mac
        } else {
            normalize_mac(&mac).map_err(|e| {
                Error::InvalidArgument(format!(
                    "CustomAdapters: the MAC of adapter {adapter}: {} (\"\" for base + {adapter})",
                    e.to_string().trim_start_matches("MacAddress ")
                ))
            })?
        };
        out.push(CustomAdapter {
            adapter,
            model,
            mac,
        });
    }
    out.sort_by_key(|c| c.adapter);
    Ok(out)
}

/// CustomAdapters against the other settings: every entry below Adapters, every adapter's
/// MAC its own.
pub fn check_nics(s: &Settings) -> Result<()> {
    if let Some(c) = s.custom_adapters.iter().find(|c| c.adapter >= s.adapters) {
        return Err(Error::InvalidArgument(format!(
            "CustomAdapters has an entry for adapter {}, and the VM has {} adapter(s) (0 to {}); \
             raise Adapters, or remove that entry from CustomAdapters",
            c.adapter,
            s.adapters,
            s.adapters.saturating_sub(1)
        )));
    }
    let nics = nics(s);
    for (n, nic) in nics.iter().enumerate() {
        if let Some(other) = nics[n + 1..].iter().position(|o| o.mac == nic.mac) {
            return Err(Error::InvalidArgument(format!(
                "adapters {n} and {} would both have MAC {}; give CustomAdapters another MAC for \
                 one of them",
                n + 1 + other,
                nic.mac
            )));
        }
    }
    Ok(())
}

/// The NIC models the VM's adapters use, AdapterType first, each once, with the setting
/// that names it (for the check against the binary's devices).
pub fn models(s: &Settings) -> Vec<(String, &str)> {
    let mut out = vec![("AdapterType".to_string(), s.adapter_type.as_str())];
    for c in &s.custom_adapters {
        if !c.model.is_empty() && out.iter().all(|(_, m)| *m != c.model) {
            out.push((
                format!("CustomAdapters model of adapter {}", c.adapter),
                c.model.as_str(),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::network::Nic;

    fn custom(entries: &[(u32, &str, &str)]) -> Result<Vec<CustomAdapter>> {
        check(
            entries
                .iter()
                .map(|(a, m, c)| (*a, m.to_string(), c.to_string()))
                .collect(),
        )
    }

    #[test]
    fn custom_adapters_are_checked_one_by_one() {
        assert_eq!(
            custom(&[(3, "", "52-54-00-AA-BB-CC"), (1, "virtio-net-pci", "")]).unwrap(),
            [
                CustomAdapter {
                    adapter: 1,
                    model: "virtio-net-pci".into(),
                    mac: String::new()
                },
                CustomAdapter {
                    adapter: 3,
                    model: String::new(),
                    mac: "52:54:00:aa:bb:cc".into()
                },
            ]
        );
        let err = |e: &[(u32, &str, &str)]| custom(e).unwrap_err().to_string();
        assert_eq!(
            err(&[(1, "", ""), (1, "e1000", "")]),
            "CustomAdapters has adapter 1 twice; give each adapter at most one entry"
        );
        assert_eq!(
            err(&[(0, "e1000 x", "")]),
            "CustomAdapters: the model 'e1000 x' of adapter 0 is not a NIC model name (such as \
             e1000, virtio-net-pci, rtl8139; \"\" for AdapterType)"
        );
        assert_eq!(
            err(&[(2, "", "01:00:5e:00:00:01")]),
            "CustomAdapters: the MAC of adapter 2: '01:00:5e:00:00:01' is a multicast address \
             (lowest bit of the first byte set); a NIC needs a unicast one (\"\" for base + 2)"
        );
        assert!(err(&[(2, "", "52:54")]).contains("is not a MAC address"));
    }

    #[test]
    fn custom_adapters_against_adapters_and_the_other_macs() {
        let mut s = Settings {
            adapters: 3,
            mac_address: "52:54:00:00:00:10".into(),
            custom_adapters: custom(&[(1, "virtio-net-pci", "52:54:00:00:00:99")]).unwrap(),
            ..Settings::default()
        };
        assert!(check_nics(&s).is_ok());
        assert_eq!(
            nics(&s),
            [
                Nic {
                    model: "e1000".into(),
                    mac: "52:54:00:00:00:10".into()
                },
                Nic {
                    model: "virtio-net-pci".into(),
                    mac: "52:54:00:00:00:99".into()
                },
                Nic {
                    model: "e1000".into(),
                    mac: "52:54:00:00:00:12".into()
                },
            ]
        );
        assert_eq!(
            models(&s),
            [
                ("AdapterType".to_string(), "e1000"),
                (
                    "CustomAdapters model of adapter 1".to_string(),
                    "virtio-net-pci"
                )
            ]
        );
        s.custom_adapters = custom(&[(1, "", "52:54:00:00:00:12")]).unwrap();
        assert_eq!(
            check_nics(&s).unwrap_err().to_string(),
            "adapters 1 and 2 would both have MAC 52:54:00:00:00:12; give CustomAdapters another \
             MAC for one of them"
        );
        s.custom_adapters = custom(&[(3, "rtl8139", "")]).unwrap();
        assert_eq!(
            check_nics(&s).unwrap_err().to_string(),
            "CustomAdapters has an entry for adapter 3, and the VM has 3 adapter(s) (0 to 2); \
             raise Adapters, or remove that entry from CustomAdapters"
        );
        s.adapters = 4;
        assert!(check_nics(&s).is_ok());
        assert_eq!(nics(&s)[3].model, "rtl8139");
    }
}
