//! The set of VMs: creation (checked whole before anything is written), lookup by name or
//! id, deletion, the UDP ports clients allocate for tunnels, and the QEMU binaries this host
//! has. Cables between two of its VMs (Connect, Disconnect) are in `manager/connect.rs`;
//! the host's boots and shutdowns (Autostart, restore_on_boot, StopAll) in `manager/power.rs`.

mod connect;
mod power;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};

use crate::boot::Boots;
use crate::model::{Accelerator, Record, Setting, Settings};
use crate::ports::Holder;
use crate::vm::claims::Claims;
use crate::vm::{actor, adopt, changes, lock, network, Context, Error, Handle, Pool, Result};
use crate::vm::{bases, drives, paths, settings};

pub use connect::End;

/// What a new VM gets when the client does not say.
#[derive(Clone, Debug)]
pub struct Defaults {
    pub qemu_binary: String,
    pub accelerator: Accelerator,
}

pub struct Manager {
    ctx: Arc<Context>,
    defaults: Defaults,
    vms: Mutex<BTreeMap<String, Handle>>,
    /// Held by each Connect and Disconnect, so that two never interleave on the same adapters.
    wiring: tokio::sync::Mutex<()>,
    /// The boot id and the VMs to restore, in the state directory.
    boots: Boots,
    /// `restore_on_boot`: StopAll keeps which VMs ran, and the next boot starts them.
    restore_on_boot: bool,
}

impl Manager {
    /// Takes back every VM on disk: its name, its ports, an actor, and its QEMU if that
    /// still runs.
    pub async fn load(ctx: Arc<Context>, defaults: Defaults) -> Result<Manager> {
        let manager = Manager {
            boots: Boots::new(ctx.store.state_dir()),
            ctx,
            defaults,
            vms: Mutex::default(),
            wiring: tokio::sync::Mutex::default(),
            restore_on_boot: false,
        };
        for (path, record) in manager.ctx.store.load_all()? {
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    // Left where it is for a person to look at; the other VMs still load.
                    tracing::error!(path = %path.display(), "skipping a VM that cannot be read: {e}");
                    continue;
                }
            };
            manager.restore(record).await;
        }
        let store = &manager.ctx.store;
        adopt::end_orphans(
            &manager.ctx.runtime_dir,
            |id| store.vm_dir(id).exists(),
            actor::QMP_TIMEOUT,
        )
        .await;
        Ok(manager)
    }

    /// With `on`, StopAll keeps which VMs ran and the next boot starts them again.
    pub fn restore_on_boot(mut self, on: bool) -> Manager {
        self.restore_on_boot = on;
        self
    }

    /// Takes back one VM found on disk: its name and ports, and an actor, which finds its
    /// QEMU again if that still runs.
    async fn restore(&self, record: Record) {
        let s = &record.settings;
        {
            let mut names = lock(&self.ctx.names);
            if let Some(other) = names.get(&s.name) {
                tracing::error!(vm_id = %record.id, other = %other, name = %s.name, "two VMs on disk have the same name; skipping this one");
                return;
            }
            names.insert(s.name.clone(), record.id.clone());
        }
        let tunnel_ports = record.tunnels.iter().map(|t| (Pool::Udp, t.local_port));
        let console_ports = s
            .tcp_ports()
            .into_iter()
            .filter(|(_, p)| *p != 0)
            .map(|(_, p)| (Pool::Console, p));
        for (pool, port) in console_ports.chain(tunnel_ports) {
            if !self
                .ctx
                .ports(pool)
                .restore(port, Holder::Vm(record.id.clone()))
            {
                tracing::error!(vm_id = %record.id, port, ?pool, "port recorded by two VMs");
            }
        }
        // As with names, the first VM loaded keeps a base; Start refuses the other.
        let mut claims = Claims::new(&self.ctx);
        match claims.bases(s, &record.id) {
            Ok(()) => claims.commit(),
            Err(e) => tracing::error!(vm_id = %record.id, "{e}"),
        }
        let id = record.id.clone();
        let handle = actor::load(self.ctx.clone(), record).await;
        self.insert(id, handle);
    }

    pub async fn create(
        &self,
        name: &str,
        id: Option<&str>,
        project: &str,
        changes: Vec<Setting>,
    ) -> Result<Handle> {
        let id = match id {
            Some(id) => settings::normalize_id(id)?,
            None => settings::new_id()
                .map_err(|e| Error::Internal(format!("cannot read /dev/urandom: {e}")))?,
        };
        if lock(&self.vms).contains_key(&id) {
            return Err(Error::AlreadyExists(format!(
                "a VM with id {id} already exists"
            )));
        }
        let project = settings::check_project(project)?;
        let sets_binary = changes.iter().any(|c| matches!(c, Setting::QemuPath(_)));
        let base = Settings {
            name: settings::check_name(name)?,
            qemu_path: if sets_binary {
                String::new()
            } else {
                paths::resolve_qemu_path(&self.defaults.qemu_binary)?
            },
            mac_address: network::default_mac(&id),
            accelerator: self.defaults.accelerator,
            ..Settings::default()
        };
        let mut s = settings::apply(&base, &changes, &self.ctx.limits)?;
        self.ctx.binaries.check_nic_models(&s).await?;
        self.ctx.binaries.check_machine(&s).await?;
        let caps = self.ctx.binaries.probe(&s.qemu_path).await?;
        drives::check_binary(&caps, &s.qemu_path, &s)?;
        // Claimed first: a base another VM holds is refused as such, before it is read.
        let claims = self.claim(&id, &mut s, &changes)?;
        let image_formats = bases::check(
            &s,
            None,
            &Default::default(),
            &self.ctx.image_dirs,
            &self.ctx.vetted,
        )
        .await?;
        crate::vm::saved::check_drives(&s, &image_formats)?;
        let record = Record {
            id: id.clone(),
            project,
            settings: s,
            tunnels: Vec::new(),
            exit_status: 0,
            last_error: String::new(),
            image_formats,
        };
        let store = self.ctx.store.clone();
        let r = record.clone();
        tokio::task::spawn_blocking(move || store.create(&r))
            .await
            .map_err(|e| Error::Internal(format!("the create task failed: {e}")))??;
        claims.commit();
        tracing::info!(vm_id = %id, vm_name = %record.settings.name, "VM created");
        let handle = actor::spawn(self.ctx.clone(), record);
        self.insert(id, handle.clone());
        Ok(handle)
    }

    /// Told once the VM is in the list: a reader looking it up sooner would not find it.
    fn insert(&self, id: String, handle: Handle) {
        lock(&self.vms).insert(id.clone(), handle);
        self.ctx.changes.tell(&id);
    }

    /// The new VM's name, and its ports: a requested one is honoured or refused, the
    /// others come from the range.
    fn claim(&self, id: &str, s: &mut Settings, changes: &[Setting]) -> Result<Claims> {
        let mut claims = Claims::new(&self.ctx);
        claims.name(&s.name, id)?;
        claims.bases(s, id)?;
        // The ports the client chose first; then a console port unless it chose one (0 for
        // none) or consoles have no TCP ports (console_access = "none"). A monitor or VNC
        // port only if asked for.
        for (_, port) in s.tcp_ports() {
            if port != 0 {
                claims.reserve(Pool::Console, port, id)?;
            }
        }
        let telnet = self.ctx.console_access != crate::config::ConsoleAccess::None;
        if telnet && !changes.iter().any(|c| matches!(c, Setting::ConsolePort(_))) {
            s.console_port = claims.allocate(Pool::Console, id)?;
        }
        Ok(claims)
    }

    pub fn get(&self, name_or_id: &str) -> Result<Handle> {
        let by_name = lock(&self.ctx.names).get(name_or_id).cloned();
        let id = match by_name {
            Some(id) => id,
            None => settings::normalize_id(name_or_id).map_err(|_| not_found(name_or_id))?,
        };
        lock(&self.vms)
            .get(&id)
            .cloned()
            .ok_or_else(|| not_found(name_or_id))
    }

    pub fn list(&self) -> Vec<Handle> {
        lock(&self.vms).values().cloned().collect()
    }

    /// `f` of every VM, in id order, without a copy of each handle: what ListVMs answers,
    /// at 10 000 VMs.
    pub fn map<T, C: FromIterator<T>>(&self, f: impl FnMut(&Handle) -> T) -> C {
        lock(&self.vms).values().map(f).collect()
    }

    /// `f` of the VM of this id, if there is one, without a copy of its handle.
    pub fn with<T>(&self, id: &str, f: impl FnOnce(&Handle) -> T) -> Option<T> {
        lock(&self.vms).get(id).map(f)
    }

    /// Hears which VMs change from now on: added, deleted, or their views changed.
    pub fn changes(&self) -> changes::Reader {
        self.ctx.changes.reader()
    }

    /// Stops the VM if it runs, removes its files, gives back its name and ports.
    pub async fn delete(&self, id: &str) -> Result<()> {
        let handle = lock(&self.vms)
            .get(id)
            .cloned()
            .ok_or_else(|| not_found(id))?;
        handle.delete().await?;
        lock(&self.vms).remove(id);
        self.ctx.changes.tell(id);
        crate::heap::give_back_soon();
        Ok(())
    }

    /// The `qemu-system-*` binaries in PATH, with the version each reports.
    pub async fn qemu_binaries(&self) -> Vec<(String, String)> {
        let mut found = BTreeMap::new();
        let path = std::env::var_os("PATH").unwrap_or_default();
        for dir in std::env::split_paths(&path) {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Ok(meta) = std::fs::metadata(e.path()) else {
                    continue;
                };
                if name.starts_with("qemu-system-")
                    && meta.is_file()
                    && meta.permissions().mode() & 0o111 != 0
                {
                    // The first of a name in PATH is the one a bare name finds.
                    found.entry(name).or_insert(e.path());
                }
            }
        }
        let mut out = Vec::new();
        for path in found.into_values() {
            let version = self.ctx.binaries.version(&path).await;
            out.push((path.to_string_lossy().into_owned(), version));
        }
        out
    }

    /// A UDP port of the daemon's range for a tunnel's local end, free now and held for the
    /// caller until a tunnel uses it or it is released.
    pub fn allocate_udp_port(&self) -> Result<u16> {
        Ok(self.ctx.ports(Pool::Udp).allocate(Holder::Client)?)
    }

    /// Gives back a port from [`Manager::allocate_udp_port`]. A port nobody holds is
    /// already free: nothing to do.
    pub fn release_udp_port(&self, port: u16) -> Result<()> {
        if port == 0 {
            return Err(Error::InvalidArgument(
                "port 0 is not a port; give one that AllocateUdpPort returned".into(),
            ));
        }
        let mut ports = self.ctx.ports(Pool::Udp);
        match ports.holder(port) {
            Some(Holder::Vm(id)) => {
                let name = lock(&self.vms)
                    .get(id)
                    .map_or_else(|| id.clone(), |h| h.view().settings.name.clone());
                Err(Error::InvalidState(format!(
                    "UDP port {port} is the local end of a tunnel of VM '{name}'; RemoveUdpTunnel frees it"
                )))
            }
            Some(Holder::Client) => {
                ports.release(port);
                Ok(())
            }
            None => Ok(()),
        }
    }
}

fn not_found(what: &str) -> Error {
    Error::NotFound(format!(
        "no VM is named or has the id '{}'",
        crate::vm::error::shown(what)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::testing::context;

    /// A manager on a fresh state directory. Its checks ask the real qemu-system-x86_64 what
    /// it offers, as the daemon does; no guest is started.
    async fn manager() -> (tempfile::TempDir, Manager) {
        let (dir, ctx) = context();
        let defaults = Defaults {
            qemu_binary: "qemu-system-x86_64".into(),
            accelerator: Accelerator::Tcg,
        };
        (dir, Manager::load(ctx, defaults).await.unwrap())
    }

    /// The console ports held, as offsets from the start of the range.
    fn held(m: &Manager) -> Vec<u16> {
        let ports = m.ctx.ports(Pool::Console);
        let range = ports.range().clone();
        range
            .clone()
            .filter(|p| ports.holder(*p).is_some())
            .map(|p| p - range.start())
            .collect()
    }

    fn first_port(m: &Manager) -> u16 {
        *m.ctx.limits.console_ports.start()
    }

    fn names(m: &Manager) -> Vec<String> {
        let mut names: Vec<String> = lock(&m.ctx.names).keys().cloned().collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn a_created_vm_holds_its_name_ports_and_record_until_deleted() {
        let (dir, m) = manager().await;
        let h = m
            .create("r1", None, "lab", vec![Setting::Ram(128)])
            .await
            .unwrap();
        let v = h.view();
        assert_eq!((v.settings.ram, v.project.as_str()), (128, "lab"));
        let first = first_port(&m);
        assert_eq!(
            (v.settings.console_port, v.settings.monitor_port),
            (first, 0),
            "a console port, a monitor port only if asked"
        );
        assert_eq!(m.get("r1").unwrap().view().id, v.id);
        let record = dir.path().join("vms").join(&v.id).join("vm.json");
        assert!(record.exists());
        m.delete(&v.id).await.unwrap();
        assert!(matches!(m.get("r1"), Err(Error::NotFound(_))));
        assert!(names(&m).is_empty());
        assert!(held(&m).is_empty());
        assert!(!record.exists());
    }

    #[tokio::test]
    async fn a_refused_create_takes_nothing() {
        let (dir, m) = manager().await;
        m.create("r1", None, "", Vec::new()).await.unwrap();
        let refused = [
            ("r1", Vec::new()),
            ("r2", vec![Setting::Options("-monitor stdio".into())]),
            ("r3", vec![Setting::ConsolePort(first_port(&m))]),
            ("r5", vec![Setting::MonitorPort(first_port(&m))]),
            ("r4", vec![Setting::Ram(0)]),
        ];
        for (name, changes) in refused {
            let e = match m.create(name, None, "", changes.clone()).await {
                Ok(_) => panic!("{name} {changes:?} was created"),
                Err(e) => e,
            };
            assert_eq!(names(&m), ["r1"], "after {name}: {e:?}");
            assert_eq!(held(&m), [0], "after {name}: {e:?}");
        }
        let records = std::fs::read_dir(dir.path().join("vms")).unwrap().count();
        assert_eq!(records, 1);
    }
}
