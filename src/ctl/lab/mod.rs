//! Lab files: a containerlab-like YAML description of VMs and the cables between them, read
//! into a [`Lab`] that `up` can reconcile with the daemon. Everything that can be wrong with
//! a file is found here, before any call: a bad file changes nothing, and its error names the
//! file, line and column.
//!
//! ```yaml
//! name: triangle              # every VM's Project; VM names are the node names
//! defaults: {ram: 256}        # settings of every node, which a node's own override
//! nodes:
//!   r1: {image: /srv/router.qcow2, adapters: 2, ready: {console: "login:"}}
//!   r2: {image: /srv/router.qcow2, adapters: 2}
//! links:
//!   - endpoints: ["r1:eth0", "r2:eth0"]
//!   - endpoints: ["r2:eth1", {udp: {host: 192.0.2.7, port: 20000, local: 20001}}]
//! ```
//!
//! A node's settings are the VM's writable properties, by their contract names (`Ram`) or a
//! short alias (`ram`, `image`); their types are the contract's, given to [`parse`] as a
//! table of property signatures so that they are spelled once, in the contract XML.
//!
//! Longer than most files because of its tests: one case for each mistake a file can hold,
//! beside the reader that finds it.

use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use zbus::{OwnedVariant, Str};

use crate::contract::FILES;
use crate::links::Port;

pub mod graph;
pub mod plan;

/// Short names for the settings lab files use most; any contract name works too.
pub(crate) const ALIASES: &[(&str, &str)] = &[
    ("image", "HdaDiskImage"),
    ("hda", "HdaDiskImage"),
    ("hdb", "HdbDiskImage"),
    ("hdc", "HdcDiskImage"),
    ("hdd", "HddDiskImage"),
    ("cdrom", "CdromImage"),
    ("boot", "BootOrder"),
    ("ram", "Ram"),
    ("adapters", "Adapters"),
    ("adapter_type", "AdapterType"),
    ("mac", "MacAddress"),
    ("kernel", "KernelImage"),
    ("initrd", "Initrd"),
    ("append", "KernelCommandLine"),
    ("options", "Options"),
    ("console", "ConsolePort"),
    ("accelerator", "Accelerator"),
    ("qemu", "QemuPath"),
    ("priority", "ProcessPriority"),
    ("cpu_throttling", "CpuThrottling"),
    ("display", "Display"),
    ("firmware", "Firmware"),
    ("bios", "BiosImage"),
    ("tpm", "Tpm"),
    ("on_stop", "OnStop"),
    ("stop_timeout", "StopTimeout"),
    ("autostart", "Autostart"),
];

/// The key of a node that is not a setting.
const READY: &str = "ready";

/// What `up --wait` waits for before a node counts as ready.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ready {
    /// A regular expression the console's output must match.
    pub console: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Contract name → value of the property's type: the defaults, then the node's own;
    /// files (images, kernel, initrd) as absolute paths, relative ones from the lab file's
    /// directory.
    pub settings: BTreeMap<String, OwnedVariant>,
    pub ready: Ready,
}

impl Node {
    /// The node's Adapters, or `default` where the file sets none.
    pub fn adapters(&self, default: u32) -> u32 {
        crate::contract::as_u32(self.settings.get("Adapters")).unwrap_or(default)
    }
}

/// One end of a link.
#[derive(Clone, Debug, PartialEq)]
pub enum End {
    /// A node's adapter (`r1:eth0` is adapter 0 of r1).
    Adapter(Port),
    /// A UDP peer outside the lab: where to send, and the local port to receive on (None:
    /// one the daemon allocates).
    Udp {
        host: String,
        port: u16,
        local: Option<u16>,
    },
}

/// A link: from a node's adapter (the first of the file's endpoints that is one) to the
/// other end.
#[derive(Clone, Debug, PartialEq)]
pub struct Link {
    pub from: Port,
    pub to: End,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Lab {
    pub name: String,
    pub nodes: BTreeMap<String, Node>,
    pub links: Vec<Link>,
}

/// What is wrong with a lab file, and where.
#[derive(Debug, PartialEq)]
pub struct Error {
    pub file: String,
    pub line: u64,
    pub column: u64,
    pub message: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

impl std::error::Error for Error {}

/// The file as written, before any check.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: Spanned<String>,
    #[serde(default)]
    defaults: BTreeMap<String, Spanned<Value>>,
    nodes: BTreeMap<String, Spanned<BTreeMap<String, Spanned<Value>>>>,
    #[serde(default)]
    links: Vec<Spanned<FileLink>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileLink {
    endpoints: Vec<Spanned<FileEnd>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum FileEnd {
    Adapter(String),
    External { udp: Udp },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Udp {
    host: String,
    port: u16,
    local: Option<u16>,
}

/// The VM's writable properties and their D-Bus signatures, from the contract.
pub type Properties<'a> = BTreeMap<&'a str, &'a str>;

/// The writable properties of the contract the client is built with.
pub fn contract_properties() -> Properties<'static> {
    crate::contract::properties()
        .iter()
        .filter(|(_, p)| p.writable)
        .map(|(name, p)| (name.as_str(), p.signature.as_str()))
        .collect()
}

/// Reads lab file `file` (its text `text`), checking it against the VM's writable
/// `properties`; `default_adapters` is what a VM has when nothing sets Adapters.
pub fn parse(
    file: &str,
    text: &str,
    properties: &Properties<'_>,
    default_adapters: u32,
) -> Result<Lab, Error> {
    let at = |loc: &serde_saphyr::Location, message: String| Error {
        file: file.to_string(),
        line: loc.line(),
        column: loc.column(),
        message,
    };
    let raw: File = serde_saphyr::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        Error {
            file: file.to_string(),
            line,
            column,
            message: message_of(&e.to_string()),
        }
    })?;
    let name = raw.name.value.trim().to_string();
    if name.is_empty() {
        return Err(at(&raw.name.referenced, "the lab's name is empty".into()));
    }
    // Files are found from the lab file's directory, as containerlab finds them.
    let dir = Path::new(file).parent().unwrap_or(Path::new(""));
    // `ready` is the one key of a node that is not a setting; defaults may give it too.
    let ready_of = |spec: &mut BTreeMap<String, Spanned<Value>>, whose: &str| {
        spec.remove(READY)
            .map(|r| {
                serde_json::from_value::<Ready>(r.value.clone()).map_err(|e| {
                    at(
                        &r.referenced,
                        format!("{whose}: ready takes {{console: REGEX}}: {e}"),
                    )
                })
            })
            .transpose()
    };
    let mut raw_defaults = raw.defaults.clone();
    let default_ready = ready_of(&mut raw_defaults, "defaults")?.unwrap_or_default();
    let defaults =
        settings(&raw_defaults, properties, "defaults", dir).map_err(|(l, m)| at(&l, m))?;
    let mut nodes = BTreeMap::new();
    for (node, spec) in &raw.nodes {
        let mut own = spec.value.clone();
        let whose = format!("node '{node}'");
        let ready = ready_of(&mut own, &whose)?.unwrap_or_else(|| default_ready.clone());
        let mut merged = defaults.clone();
        merged.extend(settings(&own, properties, &whose, dir).map_err(|(l, m)| at(&l, m))?);
        nodes.insert(
            node.clone(),
            Node {
                settings: merged,
                ready,
            },
        );
    }
    let mut used = std::collections::BTreeSet::new();
    let mut links = Vec::new();
    for link in &raw.links {
        let [a, b] = link.value.endpoints.as_slice() else {
            return Err(at(
                &link.referenced,
                format!(
                    "a link has two endpoints, this one {}",
                    link.value.endpoints.len()
                ),
            ));
        };
        let mut ends = Vec::with_capacity(2);
        for e in [a, b] {
            let end = end(&e.value, &nodes, default_adapters).map_err(|m| at(&e.referenced, m))?;
            if let End::Adapter(port) = &end {
                if !used.insert(port.clone()) {
                    return Err(at(
                        &e.referenced,
                        format!("{port} is the end of another link already"),
                    ));
                }
            }
            ends.push(end);
        }
        let (first, second) = (ends.remove(0), ends.remove(0));
        let (from, to) = match (first, second) {
            (End::Adapter(from), to) | (to, End::Adapter(from)) => (from, to),
            _ => {
                return Err(at(
                    &link.referenced,
                    "a link joins at least one node; this one has two UDP ends".into(),
                ))
            }
        };
        links.push(Link { from, to });
    }
    Ok(Lab { name, nodes, links })
}

/// `settings` written as `key: value`, as contract names and values of their types.
fn settings(
    written: &BTreeMap<String, Spanned<Value>>,
    properties: &Properties<'_>,
    whose: &str,
    dir: &Path,
) -> Result<BTreeMap<String, OwnedVariant>, (serde_saphyr::Location, String)> {
    let mut out = BTreeMap::new();
    for (key, value) in written {
        let name = ALIASES
            .iter()
            .find(|(alias, _)| alias == key)
            .map_or(key.as_str(), |(_, name)| name);
        let Some(signature) = properties.get(name) else {
            return Err((
                value.referenced,
                format!(
                    "{whose}: '{key}' is not a setting a VM has (a writable property of \
                     org.gns3.Qemu.VM, or one of: {})",
                    ALIASES
                        .iter()
                        .map(|(a, _)| *a)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        let mut typed = typed(&value.value, signature)
            .map_err(|want| (value.referenced, format!("{whose}: {name} takes {want}")))?;
        if let (true, Some(path)) = (FILES.contains(&name), value.value.as_str()) {
            if !path.is_empty() && !path.starts_with('/') {
                let path = std::path::absolute(dir.join(path))
                    .map_err(|e| (value.referenced, format!("{whose}: {name}: {e}")))?;
                typed = OwnedVariant::from(Str::from(path.to_string_lossy().into_owned()));
            }
        }
        out.insert(name.to_string(), typed);
    }
    Ok(out)
}

/// `value` as a value of D-Bus type `signature`, or what that type takes.
fn typed(value: &Value, signature: &str) -> Result<OwnedVariant, String> {
    let number = |max: u64| value.as_u64().filter(|n| *n <= max);
    let got = || match value {
        Value::String(s) => format!("'{s}'"),
        other => other.to_string(),
    };
    match signature {
        "s" => value
            .as_str()
            .map(crate::contract::string)
            .ok_or_else(|| format!("a string, not {} (quote it)", got())),
        "u" => number(u64::from(u32::MAX))
            .map(|n| OwnedVariant::from(n as u32))
            .ok_or_else(|| format!("a number from 0 to {}, not {}", u32::MAX, got())),
        "q" => number(u64::from(u16::MAX))
            .map(|n| OwnedVariant::from(n as u16))
            .ok_or_else(|| format!("a number from 0 to {}, not {}", u16::MAX, got())),
        "i" => value
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .map(OwnedVariant::from)
            .ok_or_else(|| format!("a number from {} to {}, not {}", i32::MIN, i32::MAX, got())),
        "b" => value
            .as_bool()
            .map(OwnedVariant::from)
            .ok_or_else(|| format!("true or false, not {}", got())),
        "a(uss)" => custom_adapters(value)
            .and_then(|v| OwnedVariant::try_from(zbus::Variant::from(v)).ok())
            .ok_or_else(|| {
                format!(
                    "a list of [adapter, model, MAC] (model or MAC \"\" for the VM's own), not {}",
                    got()
                )
            }),
        other => Err(format!(
            "a value of D-Bus type '{other}', which lab files cannot give"
        )),
    }
}

/// CustomAdapters in a lab file: `[[1, virtio-net-pci, ""], [3, "", "52:54:00:ab:cd:ef"]]`.
fn custom_adapters(value: &Value) -> Option<Vec<(u32, String, String)>> {
    value
        .as_array()?
        .iter()
        .map(|entry| match entry.as_array()?.as_slice() {
            [a, model, mac] => Some((
                u32::try_from(a.as_u64()?).ok()?,
                model.as_str()?.to_string(),
                mac.as_str()?.to_string(),
            )),
            _ => None,
        })
        .collect()
}

fn end(
    written: &FileEnd,
    nodes: &BTreeMap<String, Node>,
    default_adapters: u32,
) -> Result<End, String> {
    let udp = match written {
        FileEnd::External { udp } => udp,
        FileEnd::Adapter(text) => {
            let port = Port::parse(text)?;
            let n = nodes.get(&port.vm).ok_or_else(|| {
                format!(
                    "'{text}' names node '{}', which the lab does not have (nodes: {})",
                    port.vm,
                    nodes.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })?;
            let adapters = n.adapters(default_adapters);
            if port.adapter >= adapters {
                return Err(format!(
                    "'{text}': node '{}' has {adapters} adapter(s), eth0 to eth{}; raise its adapters",
                    port.vm,
                    adapters.saturating_sub(1)
                ));
            }
            return Ok(End::Adapter(port));
        }
    };
    if udp.host.trim().is_empty() || udp.port == 0 || udp.local == Some(0) {
        return Err("a UDP end needs a host, and ports from 1 to 65535".into());
    }
    Ok(End::Udp {
        host: udp.host.clone(),
        port: udp.port,
        local: udp.local,
    })
}

/// The YAML reader's message without its own "error: line L column C: " (ours says where).
fn message_of(text: &str) -> String {
    let first = text.lines().next().unwrap_or_default();
    let rest = first.strip_prefix("error: ").unwrap_or(first);
    match rest.strip_prefix("line ").and_then(|r| r.split_once(": ")) {
        Some((_, message)) => message.to_string(),
        None => rest.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_adapters_are_lists_of_three() {
        let v = typed(&serde_json::json!([[1, "virtio-net-pci", ""]]), "a(uss)").unwrap();
        assert_eq!(
            <Vec<(u32, String, String)>>::try_from(v).unwrap(),
            [(1, "virtio-net-pci".to_string(), String::new())]
        );
        for bad in [
            serde_json::json!([[1, "virtio-net-pci"]]),
            serde_json::json!([["1", "", ""]]),
            serde_json::json!("1:e1000:"),
        ] {
            let e = typed(&bad, "a(uss)").unwrap_err();
            assert!(e.starts_with("a list of [adapter, model, MAC]"), "{e}");
        }
    }

    fn props() -> Properties<'static> {
        [
            ("HdaDiskImage", "s"),
            ("Ram", "u"),
            ("Adapters", "u"),
            ("ConsolePort", "q"),
            ("LegacyNetworking", "b"),
            ("KernelCommandLine", "s"),
        ]
        .into_iter()
        .collect()
    }

    fn lab(text: &str) -> Result<Lab, Error> {
        parse("lab.yml", text, &props(), 1)
    }

    fn err(text: &str) -> String {
        lab(text).unwrap_err().to_string()
    }

    const TRIANGLE: &str = "\
name: triangle
defaults:
  ram: 256
  adapters: 2
nodes:
  r1: {image: /srv/r.qcow2, ready: {console: 'login:'}}
  r2: {image: /srv/r.qcow2, Ram: 512}
  r3: {image: /srv/r.qcow2, adapters: 3}
links:
  - endpoints: [r1:eth0, r2:eth0]
  - endpoints: [r2:eth1, r3:eth0]
  - endpoints: [r3:eth1, r1:eth1]
  - endpoints: [r3:eth2, {udp: {host: 192.0.2.7, port: 20000, local: 20001}}]
";

    #[test]
    fn a_lab_is_read_with_defaults_aliases_and_links() {
        let lab = lab(TRIANGLE).unwrap();
        assert_eq!(lab.name, "triangle");
        let r2 = &lab.nodes["r2"];
        assert_eq!(
            r2.settings["Ram"],
            OwnedVariant::from(512u32),
            "the node's own wins"
        );
        assert_eq!(lab.nodes["r1"].settings["Ram"], OwnedVariant::from(256u32));
        assert_eq!(
            lab.nodes["r1"].settings["HdaDiskImage"],
            OwnedVariant::from(Str::from("/srv/r.qcow2"))
        );
        assert_eq!(lab.nodes["r1"].ready.console.as_deref(), Some("login:"));
        assert_eq!(lab.links.len(), 4);
        assert_eq!(
            lab.links[0].to,
            End::Adapter(Port {
                vm: "r2".into(),
                adapter: 0
            })
        );
        assert_eq!(
            lab.links[3].to,
            End::Udp {
                host: "192.0.2.7".into(),
                port: 20000,
                local: Some(20001)
            }
        );
    }

    #[test]
    fn ready_comes_from_the_defaults_unless_the_node_has_its_own() {
        let text = "name: x\ndefaults: {ready: {console: 'login:'}}\nnodes:\n  a: {}\n  b: {ready: {console: '#'}}\n";
        let lab = lab(text).unwrap();
        assert_eq!(lab.nodes["a"].ready.console.as_deref(), Some("login:"));
        assert_eq!(lab.nodes["b"].ready.console.as_deref(), Some("#"));
        assert!(err("name: x\ndefaults: {ready: {prompt: x}}\nnodes: {}\n")
            .contains("defaults: ready takes {console: REGEX}: unknown field `prompt`"));
    }

    #[test]
    fn files_are_found_from_the_lab_files_directory() {
        let text =
            "name: x\nnodes:\n  a: {image: r.qcow2, hdb: /abs.qcow2, qemu: qemu-system-x86_64}\n";
        let mut props = props();
        props.insert("HdbDiskImage", "s");
        props.insert("QemuPath", "s");
        let lab = parse("/srv/labs/lab.yml", text, &props, 1).unwrap();
        let a = &lab.nodes["a"].settings;
        assert_eq!(
            a["HdaDiskImage"],
            OwnedVariant::from(Str::from("/srv/labs/r.qcow2"))
        );
        assert_eq!(
            a["HdbDiskImage"],
            OwnedVariant::from(Str::from("/abs.qcow2"))
        );
        assert_eq!(
            a["QemuPath"],
            OwnedVariant::from(Str::from("qemu-system-x86_64")),
            "found in PATH"
        );
    }

    /// The aliases and the example name settings of the real contract, with its types.
    #[test]
    fn every_alias_is_a_writable_setting_of_the_contract() {
        let contract = contract_properties();
        for (alias, name) in ALIASES {
            assert!(contract.contains_key(name), "{alias} → {name}");
        }
        let lab = parse("lab.yml", TRIANGLE, &contract, 1).unwrap();
        assert_eq!(
            lab.nodes["r3"].settings["Adapters"],
            OwnedVariant::from(3u32)
        );
    }

    #[test]
    fn each_mistake_is_named_with_its_line_and_column() {
        let cases: &[(&str, &str)] = &[
            ("name: x\nnodes: {a: {}\n", "lab.yml:2:8: unclosed bracket '{'"),
            (
                "name: x\nnodes: {}\ncolour: red\n",
                "lab.yml:3:1: unknown field `colour`, expected one of name, defaults, nodes, links",
            ),
            (
                "name: x\nnodes:\n  a: {rams: 5}\n",
                "lab.yml:3:13: node 'a': 'rams' is not a setting a VM has",
            ),
            (
                "name: x\nnodes:\n  a: {ram: lots}\n",
                "lab.yml:3:12: node 'a': Ram takes a number from 0 to 4294967295, not 'lots'",
            ),
            (
                "name: x\nnodes:\n  a: {console: 70000}\n",
                "node 'a': ConsolePort takes a number from 0 to 65535, not 70000",
            ),
            (
                "name: x\nnodes:\n  a: {image: 5}\n",
                "node 'a': HdaDiskImage takes a string, not 5 (quote it)",
            ),
            (
                "name: x\ndefaults: {LegacyNetworking: yes please}\nnodes: {}\n",
                "lab.yml:2:30: defaults: LegacyNetworking takes true or false",
            ),
            (
                "name: x\nnodes: {a: {}, b: {}}\nlinks:\n  - endpoints: [a:eth0, c:eth0]\n",
                "lab.yml:4:25: 'c:eth0' names node 'c', which the lab does not have (nodes: a, b)",
            ),
            (
                "name: x\nnodes: {a: {}, b: {}}\nlinks:\n  - endpoints: [a:eth1, b:eth0]\n",
                "'a:eth1': node 'a' has 1 adapter(s), eth0 to eth0; raise its adapters",
            ),
            (
                "name: x\nnodes: {a: {adapters: 2}, b: {}}\nlinks:\n  - endpoints: [a:eth0, b:eth0]\n  - endpoints: [a:eth1, b:eth0]\n",
                "lab.yml:5:25: b:eth0 is the end of another link already",
            ),
            (
                "name: x\nnodes: {a: {}}\nlinks:\n  - endpoints: [a:eth0]\n",
                "a link has two endpoints, this one 1",
            ),
            (
                "name: x\nnodes: {a: {}}\nlinks:\n  - endpoints: [a-eth0, a:eth0]\n",
                "'a-eth0' is not an endpoint: write NODE:ethN",
            ),
            ("name: ' '\nnodes: {}\n", "the lab's name is empty"),
        ];
        for (text, want) in cases {
            let got = err(text);
            assert!(got.contains(want), "{text:?}\n got: {got}\nwant: {want}");
        }
    }
}
