//! `watch [VM...] [--lab NAME] [--json]`: the VMs' events as they happen, one line each,
//! until interrupted (Ctrl-C, exit 0). For people: `r1 added`, `r1 State=running Pid=42`,
//! `r1 removed`, with properties signalled as invalidated (their values not sent) as
//! `(LastError changed)`; with `--json` one object a line: event (added, changed, removed),
//! name, path, changed (for added every property), invalidated. Names come from the snapshot
//! and follow renames; an event of a VM the snapshot missed names it by its id.

use std::collections::{BTreeMap, HashMap};
use tokio::signal::unix::{signal, SignalKind};
use zbus::OwnedVariant;

use crate::cli::Watch;
use crate::error::Result;
use crate::events::{self, Event};
use crate::output::{self, json, text};
use crate::snapshot;

/// What is known of a VM: what its events are filtered on and named by.
#[derive(Debug, Clone, Default)]
struct Known {
    name: String,
    id: String,
    project: String,
}

impl Known {
    fn of(path: &str, properties: &HashMap<String, OwnedVariant>) -> Known {
        let get = |p: &str| properties.get(p).map(|v| text(v)).unwrap_or_default();
        Known {
            name: get("Name"),
            id: events::id_of(path).to_string(),
            project: get("Project"),
        }
    }
}

struct Filter {
    vms: Vec<String>,
    lab: Option<String>,
}

impl Filter {
    fn wants(&self, vm: &Known) -> bool {
        let named = self.vms.is_empty() || self.vms.iter().any(|n| *n == vm.name || *n == vm.id);
        named && self.lab.as_ref().is_none_or(|l| *l == vm.project)
    }
}

pub async fn run(conn: &zbus::Connection, w: Watch) -> Result<()> {
    let mut stream = events::subscribe(conn).await?;
    let mut known: HashMap<String, Known> = snapshot::vms(conn)
        .await?
        .into_iter()
        .map(|vm| {
            (
                vm.path.to_string(),
                Known::of(vm.path.as_str(), &vm.properties),
            )
        })
        .collect();
    let filter = Filter {
        vms: w.vms,
        lab: w.lab,
    };
    // Caught from before it is offered: a Ctrl-C right after the line below ends the watch
    // as a success too, not by the signal (ctrl_c() would install its handler only once
    // polled).
    let mut interrupt = signal(SignalKind::interrupt())?;
    // As busctl monitor does: once this is said, every event is printed.
    eprintln!("Watching the VMs of gns3-qemud. Press Ctrl-C to stop.");
    loop {
        let event = tokio::select! {
            event = events::next(&mut stream) => event?,
            _ = interrupt.recv() => return Ok(()),
        };
        let (path, vm) = match &event {
            Event::Added { path, properties } => {
                let vm = Known::of(path, properties);
                known.insert(path.clone(), vm.clone());
                (path, vm)
            }
            Event::Removed { path } => (path, known.remove(path).unwrap_or_else(|| unknown(path))),
            Event::Changed { path, changed, .. } => {
                let vm = known.entry(path.clone()).or_insert_with(|| unknown(path));
                let before = vm.clone();
                if let Some(name) = changed.get("Name") {
                    vm.name = text(name);
                }
                (path, before)
            }
        };
        if !filter.wants(&vm) {
            continue;
        }
        let line = if w.json {
            format!("{}\n", as_json(&event, path, &vm.name))
        } else {
            format!("{}\n", for_people(&event, &vm.name))
        };
        output::print(&line)?;
    }
}

fn unknown(path: &str) -> Known {
    let id = events::id_of(path).to_string();
    Known {
        name: id.clone(),
        id,
        project: String::new(),
    }
}

/// `r1 added`, `r1 removed`, `r1 State=running Pid=42 (LastError changed)`; properties
/// sorted by name.
fn for_people(event: &Event, name: &str) -> String {
    match event {
        Event::Added { .. } => format!("{name} added"),
        Event::Removed { .. } => format!("{name} removed"),
        Event::Changed {
            changed,
            invalidated,
            ..
        } => {
            let mut line = name.to_string();
            let sorted: BTreeMap<_, _> = changed.iter().collect();
            for (k, v) in sorted {
                line.push_str(&format!(" {k}={}", text(v)));
            }
            if !invalidated.is_empty() {
                line.push_str(&format!(" ({} changed)", invalidated.join(", ")));
            }
            line
        }
    }
}

fn as_json(event: &Event, path: &str, name: &str) -> serde_json::Value {
    let values = |m: &HashMap<String, OwnedVariant>| -> serde_json::Map<String, serde_json::Value> {
        m.iter().map(|(k, v)| (k.clone(), json(v))).collect()
    };
    let (kind, changed, invalidated) = match event {
        Event::Added { properties, .. } => ("added", values(properties), vec![]),
        Event::Removed { .. } => ("removed", serde_json::Map::new(), vec![]),
        Event::Changed {
            changed,
            invalidated,
            ..
        } => ("changed", values(changed), invalidated.clone()),
    };
    serde_json::json!({
        "event": kind,
        "name": name,
        "path": path,
        "changed": changed,
        "invalidated": invalidated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_for_people() {
        let changed = Event::Changed {
            path: "/org/gns3/Qemu/vm/ab".into(),
            changed: [
                (
                    "State".to_string(),
                    OwnedVariant::from(zbus::Str::from("running")),
                ),
                ("Pid".to_string(), OwnedVariant::from(42u32)),
            ]
            .into(),
            invalidated: vec!["LastError".into()],
        };
        assert_eq!(
            for_people(&changed, "r1"),
            "r1 Pid=42 State=running (LastError changed)"
        );
        let removed = Event::Removed {
            path: "/org/gns3/Qemu/vm/ab".into(),
        };
        assert_eq!(for_people(&removed, "r1"), "r1 removed");
        assert_eq!(
            as_json(&removed, "/org/gns3/Qemu/vm/ab", "r1"),
            serde_json::json!({"event": "removed", "name": "r1",
                "path": "/org/gns3/Qemu/vm/ab", "changed": {}, "invalidated": []})
        );
    }

    #[test]
    fn the_filter_takes_names_ids_and_labs() {
        let vm = Known {
            name: "r1".into(),
            id: "ab".into(),
            project: "lab1".into(),
        };
        let f = |vms: &[&str], lab: Option<&str>| Filter {
            vms: vms.iter().map(|s| s.to_string()).collect(),
            lab: lab.map(str::to_string),
        };
        assert!(f(&[], None).wants(&vm));
        assert!(f(&["r1"], None).wants(&vm));
        assert!(f(&["ab"], Some("lab1")).wants(&vm));
        assert!(!f(&["r2"], None).wants(&vm));
        assert!(!f(&[], Some("lab2")).wants(&vm));
    }
}
