//! What `up` must do to make the daemon's VMs what a lab file says: a pure function of the
//! file and one snapshot of the daemon, so that every decision is tested without a daemon,
//! and a file that cannot be brought up is refused before any call.
//!
//! The lab's VMs are those whose Project is the lab's name, matched to nodes by name. Settings
//! the file names are compared with the VM's; a difference is configured, unless the VM runs
//! and the setting is one the daemon refuses then (`stopped` in the contract): that one is
//! reported, never forced. Settings the file does not name are left as they are. Links are
//! compared as the tunnels show them (`crate::links`): one that differs is unwired and wired
//! anew; one the file no longer has is unwired.
//!
//! Past 400 lines with its tests, which are most of it: each is one daemon state and one
//! file, the decisions `up` makes, told without a daemon.

use std::collections::{BTreeMap, BTreeSet};
use zbus::OwnedVariant;

use super::{End, Lab, Link};
use crate::contract::{properties, string, Applies};
use crate::links::{self, Port};
use crate::snapshot::Vm;

/// A link to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wire {
    Between(Port, Port),
    Out {
        port: Port,
        host: String,
        remote: u16,
        /// The local port the file asks for; None: one the daemon allocates.
        local: Option<u16>,
    },
}

impl Wire {
    fn ports(&self) -> Vec<&Port> {
        match self {
            Wire::Between(a, b) => vec![a, b],
            Wire::Out { port, .. } => vec![port],
        }
    }
}

impl std::fmt::Display for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Wire::Between(a, b) => write!(f, "{a} - {b}"),
            Wire::Out {
                port, host, remote, ..
            } => write!(f, "{port} - udp:{host}:{remote}"),
        }
    }
}

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Nodes without a VM: name and every setting CreateVM gets (Id and Project included).
    pub create: Vec<(String, BTreeMap<String, OwnedVariant>)>,
    /// Settings that differ and can change now.
    pub configure: Vec<(String, BTreeMap<String, OwnedVariant>)>,
    /// Settings that differ on a VM that runs and that only a stopped VM takes.
    pub blocked: Vec<(String, Vec<String>)>,
    /// Adapters whose tunnel goes, before anything is wired.
    pub unwire: Vec<Port>,
    pub wire: Vec<Wire>,
    /// Links that wait for a blocked Adapters (the adapter does not exist yet).
    pub waiting: Vec<Wire>,
    /// Nodes whose VM does not run (or is paused).
    pub start: Vec<String>,
    /// VMs of the lab that the file does not have.
    pub extra: Vec<String>,
}

impl Plan {
    /// Whether the daemon already is as the file says.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty()
            && self.configure.is_empty()
            && self.unwire.is_empty()
            && self.wire.is_empty()
            && self.start.is_empty()
    }
}

/// The id of node `node` of lab `lab`: the same for the same names, on every host.
pub fn vm_id(lab: &str, node: &str) -> String {
    // A namespace of the project's own, so that no other name-based UUID collides.
    const LABS: uuid::Uuid = uuid::Uuid::from_u128(0x6e0c_3c5e_8f4b_4d5a_9a43_1c1e_7a2f_0b91);
    uuid::Uuid::new_v5(&LABS, format!("{lab}/{node}").as_bytes())
        .simple()
        .to_string()
}

/// What brings `vms` (every VM of the daemon) to `lab`; `default_adapters` is what a VM
/// has when nothing sets Adapters. Err: why the lab cannot be brought up, before any call.
/// For a daemon whose UdpHost is 127.0.0.1, the default; `up` asks the daemon ([`plan_at`]).
pub fn plan(lab: &Lab, vms: &[Vm], default_adapters: u32) -> Result<Plan, String> {
    plan_at(lab, vms, "127.0.0.1", default_adapters)
}

/// [`plan`] on a daemon whose UdpHost is `here` (see `crate::links`).
pub fn plan_at(lab: &Lab, vms: &[Vm], here: &str, default_adapters: u32) -> Result<Plan, String> {
    let mut plan = Plan::default();
    let by_name: BTreeMap<String, &Vm> = vms.iter().map(|vm| (vm.name(), vm)).collect();
    // What each node's VM will have as Adapters once configured, for the links.
    let mut adapters: BTreeMap<&str, u32> = BTreeMap::new();
    for (name, node) in &lab.nodes {
        let want = node.adapters(default_adapters);
        let Some(vm) = by_name.get(name) else {
            let mut settings = node.settings.clone();
            settings.insert("Id".into(), string(&vm_id(&lab.name, name)));
            settings.insert("Project".into(), string(&lab.name));
            plan.create.push((name.clone(), settings));
            plan.start.push(name.clone());
            adapters.insert(name, want);
            continue;
        };
        if vm.project() != lab.name {
            return Err(match vm.project() {
                p if p.is_empty() => format!(
                    "a VM named {name} exists already, in no lab: rename node {name}, or \
                     delete that VM (gns3-qemuctl delete {name})"
                ),
                p => format!(
                    "a VM named {name} exists already, in lab {p}: rename node {name}, or \
                     bring lab {p} down and destroy it"
                ),
            });
        }
        let running = vm.state() != "stopped";
        let (mut now, mut later) = (BTreeMap::new(), Vec::new());
        for (key, value) in &node.settings {
            if vm.properties.get(key) == Some(value) {
                continue;
            }
            let applies = properties().get(key).map(|p| p.applies);
            if running && applies == Some(Applies::Stopped) {
                later.push(key.clone());
            } else {
                now.insert(key.clone(), value.clone());
            }
        }
        let has = vm.adapters(default_adapters);
        adapters.insert(
            name,
            if later.iter().any(|k| k == "Adapters") {
                has
            } else {
                want
            },
        );
        if !now.is_empty() {
            plan.configure.push((name.clone(), now));
        }
        if !later.is_empty() {
            plan.blocked.push((name.clone(), later));
        }
        if vm.state() != "running" {
            plan.start.push(name.clone());
        }
    }
    plan.extra = vms
        .iter()
        .filter(|vm| vm.project() == lab.name && !lab.nodes.contains_key(&vm.name()))
        .map(Vm::name)
        .collect();

    let mut wanted: Vec<Wire> = lab.links.iter().map(wire).collect();
    let tunnels: Vec<_> = vms.iter().flat_map(Vm::tunnels).collect();
    let ours = |p: &Port| lab.nodes.contains_key(&p.vm);
    let mut unwire = BTreeSet::new();
    for link in links::links(&tunnels, here) {
        if !link.ports().into_iter().any(ours) {
            continue;
        }
        match wanted.iter().position(|w| same(w, &link)) {
            Some(i) => {
                wanted.remove(i);
            }
            None => unwire.extend(link.ports().into_iter().cloned()),
        }
    }
    plan.unwire = unwire.into_iter().collect();
    for w in wanted {
        let fits = w
            .ports()
            .iter()
            .all(|p| p.adapter < adapters.get(p.vm.as_str()).copied().unwrap_or(0));
        if fits {
            plan.wire.push(w);
        } else {
            plan.waiting.push(w);
        }
    }
    Ok(plan)
}

fn wire(link: &Link) -> Wire {
    match &link.to {
        End::Adapter(to) => Wire::Between(link.from.clone(), to.clone()),
        End::Udp { host, port, local } => Wire::Out {
            port: link.from.clone(),
            host: host.clone(),
            remote: *port,
            local: *local,
        },
    }
}

/// Whether the tunnels' `link` is the file's `wire`.
fn same(wire: &Wire, link: &links::Link) -> bool {
    match (wire, link) {
        (Wire::Between(x, y), links::Link::Between { a, b, .. }) => {
            (x == a && y == b) || (x == b && y == a)
        }
        (
            Wire::Out {
                port,
                host,
                remote,
                local,
            },
            links::Link::Out {
                port: p,
                local: l,
                host: h,
                remote: r,
            },
        ) => port == p && host == h && remote == r && local.is_none_or(|want| want == *l),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const FILE: &str = "\
name: tri
defaults: {adapters: 2, ram: 256}
nodes:
  r1: {}
  r2: {}
  r3: {ram: 512}
links:
  - endpoints: [r1:eth0, r2:eth0]
  - endpoints: [r2:eth1, r3:eth0]
  - endpoints: [r3:eth1, {udp: {host: 192.0.2.7, port: 30000}}]
";

    fn lab(text: &str) -> Lab {
        super::super::parse("lab.yml", text, &super::super::contract_properties(), 1).unwrap()
    }

    /// A VM as GetManagedObjects shows it.
    fn vm(
        name: &str,
        project: &str,
        state: &str,
        ram: u32,
        tunnels: &[(u32, u16, &str, u16)],
    ) -> Vm {
        let tunnels: Vec<(u32, u16, String, u16)> = tunnels
            .iter()
            .map(|(a, l, h, r)| (*a, *l, h.to_string(), *r))
            .collect();
        let properties: HashMap<String, OwnedVariant> = [
            ("Name", string(name)),
            ("Project", string(project)),
            ("State", string(state)),
            ("Ram", OwnedVariant::from(ram)),
            ("Adapters", OwnedVariant::from(2u32)),
            (
                "Tunnels",
                OwnedVariant::try_from(zbus::Variant::from(tunnels)).unwrap(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Vm {
            path: zbus::OwnedObjectPath::try_from(format!("/org/gns3/Qemu/vm/{name}")).unwrap(),
            properties,
        }
    }

    fn p(vm: &str, adapter: u32) -> Port {
        Port {
            vm: vm.into(),
            adapter,
        }
    }

    #[test]
    fn an_empty_daemon_gets_every_node_and_link() {
        let plan = plan(&lab(FILE), &[], 1).unwrap();
        let created: Vec<&str> = plan.create.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(created, ["r1", "r2", "r3"]);
        let r3 = &plan.create[2].1;
        assert_eq!(r3["Ram"], OwnedVariant::from(512u32));
        assert_eq!(r3["Project"], string("tri"));
        assert_eq!(r3["Id"], string(&vm_id("tri", "r3")));
        assert_eq!(
            plan.wire,
            [
                Wire::Between(p("r1", 0), p("r2", 0)),
                Wire::Between(p("r2", 1), p("r3", 0)),
                Wire::Out {
                    port: p("r3", 1),
                    host: "192.0.2.7".into(),
                    remote: 30000,
                    local: None
                },
            ]
        );
        assert_eq!(plan.start, ["r1", "r2", "r3"]);
        assert!(plan.unwire.is_empty() && plan.configure.is_empty() && plan.extra.is_empty());
    }

    #[test]
    fn ids_are_derived_from_lab_and_node() {
        assert_eq!(vm_id("tri", "r1"), vm_id("tri", "r1"));
        assert_ne!(vm_id("tri", "r1"), vm_id("tri", "r2"));
        assert_ne!(vm_id("tri", "r1"), vm_id("tri2", "r1"));
        assert_eq!(vm_id("tri", "r1").len(), 32);
    }

    fn up_to_date() -> Vec<Vm> {
        vec![
            vm(
                "r1",
                "tri",
                "running",
                256,
                &[(0, 20000, "127.0.0.1", 20001)],
            ),
            vm(
                "r2",
                "tri",
                "running",
                256,
                &[
                    (0, 20001, "127.0.0.1", 20000),
                    (1, 20002, "127.0.0.1", 20003),
                ],
            ),
            vm(
                "r3",
                "tri",
                "running",
                512,
                &[
                    (0, 20003, "127.0.0.1", 20002),
                    (1, 20004, "192.0.2.7", 30000),
                ],
            ),
        ]
    }

    #[test]
    fn a_lab_that_is_up_needs_nothing() {
        let plan = plan(&lab(FILE), &up_to_date(), 1).unwrap();
        assert!(plan.is_empty(), "{plan:?}");
        assert!(plan.blocked.is_empty() && plan.waiting.is_empty());
    }

    #[test]
    fn a_moved_link_is_unwired_and_wired_and_the_rest_kept() {
        let moved = FILE.replace("[r2:eth1, r3:eth0]", "[r1:eth1, r3:eth0]");
        let mut vms = up_to_date();
        vms.push(vm("old", "tri", "stopped", 256, &[]));
        vms.push(vm("other", "elsewhere", "running", 256, &[]));
        let plan = plan(&lab(&moved), &vms, 1).unwrap();
        assert_eq!(plan.unwire, [p("r2", 1), p("r3", 0)]);
        assert_eq!(plan.wire, [Wire::Between(p("r1", 1), p("r3", 0))]);
        assert!(plan.create.is_empty() && plan.start.is_empty());
        assert_eq!(plan.extra, ["old"]);
    }

    #[test]
    fn settings_a_running_vm_cannot_take_are_reported_not_sent() {
        let changed = FILE
            .replace(
                "r3: {ram: 512}",
                "r3: {ram: 1024, adapters: 3, cpu_throttling: 50}",
            )
            .replace(
                "port: 30000}}]",
                "port: 30000}}]\n  - endpoints: [r3:eth2, r1:eth1]",
            );
        let plan = plan(&lab(&changed), &up_to_date(), 1).unwrap();
        let (name, settings) = &plan.configure[0];
        assert_eq!(name, "r3");
        let keys: Vec<&String> = settings.keys().collect();
        assert_eq!(
            keys,
            ["CpuThrottling", "Ram"],
            "Ram waits for the next start"
        );
        assert_eq!(
            plan.blocked,
            [("r3".to_string(), vec!["Adapters".to_string()])]
        );
        assert_eq!(plan.waiting, [Wire::Between(p("r3", 2), p("r1", 1))]);
        assert!(plan.wire.is_empty());
    }

    /// OnStop, StopTimeout and Autostart are stored while a VM runs (they apply from its next
    /// Stop, or the host's next boot): `up` configures them at once, by alias or contract name.
    #[test]
    fn how_a_running_vm_stops_is_configured_at_once() {
        let changed = FILE.replace(
            "r3: {ram: 512}",
            "r3: {ram: 512, on_stop: shutdown, stop_timeout: 20, Autostart: true}",
        );
        let plan = plan(&lab(&changed), &up_to_date(), 1).unwrap();
        assert_eq!(
            plan.configure,
            [(
                "r3".to_string(),
                [
                    ("Autostart".to_string(), OwnedVariant::from(true)),
                    ("OnStop".to_string(), string("shutdown")),
                    ("StopTimeout".to_string(), OwnedVariant::from(20u32)),
                ]
                .into_iter()
                .collect()
            )]
        );
        assert!(plan.blocked.is_empty() && plan.start.is_empty(), "{plan:?}");
    }

    #[test]
    fn a_name_taken_outside_the_lab_is_refused() {
        let vms = [vm("r2", "elsewhere", "running", 256, &[])];
        let e = plan(&lab(FILE), &vms, 1).unwrap_err();
        assert!(
            e.starts_with("a VM named r2 exists already, in lab elsewhere"),
            "{e}"
        );
        let vms = [vm("r2", "", "stopped", 256, &[])];
        let e = plan(&lab(FILE), &vms, 1).unwrap_err();
        assert!(e.contains("in no lab"), "{e}");
    }

    #[test]
    fn paused_and_stopped_vms_are_started() {
        let mut vms = up_to_date();
        vms[0] = vm(
            "r1",
            "tri",
            "paused",
            256,
            &[(0, 20000, "127.0.0.1", 20001)],
        );
        vms[2] = vm(
            "r3",
            "tri",
            "stopped",
            512,
            &[
                (0, 20003, "127.0.0.1", 20002),
                (1, 20004, "192.0.2.7", 30000),
            ],
        );
        let plan = plan(&lab(FILE), &vms, 1).unwrap();
        assert_eq!(plan.start, ["r1", "r3"]);
        assert!(plan.wire.is_empty() && plan.unwire.is_empty());
    }
}
