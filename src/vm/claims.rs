//! What a change takes from the pools every VM shares (names, ports, base images) before it
//! is written to disk. Claims are given back when they are dropped, on every way out of a
//! change that failed, unless the change commits them.

use std::path::PathBuf;
use std::sync::Arc;

use super::base_uses::{self, Use};
use super::error::{Error, Result};
use super::{lock, Context, Pool};
use crate::model::Settings;
use crate::ports::Holder;

#[must_use = "claims are given back at once when dropped"]
pub struct Claims {
    ctx: Arc<Context>,
    name: Option<String>,
    /// Each port taken, and who held it before (a client's allocation a tunnel took over).
    ports: Vec<(Pool, u16, Option<Holder>)>,
    /// Each base image use taken (VM id, key), and what that VM had of it before.
    bases: Vec<(String, PathBuf, Option<Use>)>,
}

impl Claims {
    pub fn new(ctx: &Arc<Context>) -> Claims {
        Claims {
            ctx: ctx.clone(),
            name: None,
            ports: Vec::new(),
            bases: Vec::new(),
        }
    }

    /// Takes the base images of `s` for VM `id`, used as `s` says (LinkedClone): refused
    /// if another VM uses one in place, or uses at all one that `s` uses in place.
    pub fn bases(&mut self, s: &Settings, id: &str) -> Result<()> {
        let wanted = base_uses::of(s)?;
        let mut uses = lock(&self.ctx.bases);
        for (key, path, how) in wanted {
            if let Some((holder, theirs)) = uses.conflict(&path, id, how) {
                let holder = holder.to_string();
                drop(uses);
                let name = lock(&self.ctx.names)
                    .iter()
                    .find(|(_, i)| **i == holder)
                    .map_or(holder, |(name, _)| name.clone());
                let base = super::drives::DISKS
                    .iter()
                    .find(|d| d.key() == key)
                    .map_or("", |d| d.image(s));
                return Err(base_uses::refusal(key, base, how, &name, theirs));
            }
            let before = uses.set(path.clone(), id, how);
            self.bases.push((id.to_string(), path, before));
        }
        Ok(())
    }

    /// Takes `name` for VM `id`; names are unique across VMs.
    pub fn name(&mut self, name: &str, id: &str) -> Result<()> {
        let mut names = lock(&self.ctx.names);
        if names.contains_key(name) {
            return Err(Error::AlreadyExists(format!(
                "a VM named '{name}' already exists; VM names are unique"
            )));
        }
        names.insert(name.to_string(), id.to_string());
        drop(names);
        self.name = Some(name.to_string());
        Ok(())
    }

    /// Takes a port a client asked for, for VM `id`.
    pub fn reserve(&mut self, pool: Pool, port: u16, id: &str) -> Result<()> {
        let previous = self.ctx.ports(pool).reserve(port, Holder::Vm(id.into()))?;
        self.ports.push((pool, port, previous));
        Ok(())
    }

    /// Takes the lowest free port of the pool's range for VM `id`.
    pub fn allocate(&mut self, pool: Pool, id: &str) -> Result<u16> {
        let port = self.ctx.ports(pool).allocate(Holder::Vm(id.into()))?;
        self.ports.push((pool, port, None));
        Ok(port)
    }

    /// The change is written: what it took stays taken.
    pub fn commit(mut self) {
        self.name = None;
        self.ports.clear();
        self.bases.clear();
    }
}

impl Drop for Claims {
    fn drop(&mut self) {
        if let Some(name) = self.name.take() {
            lock(&self.ctx.names).remove(&name);
        }
        for (pool, port, previous) in self.ports.drain(..) {
            let mut ports = self.ctx.ports(pool);
            match previous {
                // A UDP port keeps its socket: the port is never free in between.
                Some(holder) => ports.hand_back(port, holder),
                None => ports.release(port),
            }
        }
        let mut uses = lock(&self.ctx.bases);
        for (id, path, before) in self.bases.drain(..).rev() {
            uses.put_back(&path, &id, before);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm::testing::context;

    #[test]
    fn claims_not_committed_are_given_back() {
        let (_dir, ctx) = context();
        let udp = *ctx.ports(Pool::Udp).range().start();
        ctx.ports(Pool::Udp).reserve(udp, Holder::Client).unwrap();
        let mut claims = Claims::new(&ctx);
        claims.name("r1", "aa").unwrap();
        let console = claims.allocate(Pool::Console, "aa").unwrap();
        // A tunnel takes over a port a client allocated for it.
        claims.reserve(Pool::Udp, udp, "aa").unwrap();
        assert_eq!(lock(&ctx.names).get("r1").map(String::as_str), Some("aa"));
        drop(claims);
        assert!(lock(&ctx.names).is_empty());
        assert_eq!(ctx.ports(Pool::Console).holder(console), None);
        assert_eq!(
            ctx.ports(Pool::Udp).holder(udp),
            Some(&Holder::Client),
            "the client's allocation is back"
        );
        assert!(ctx.ports(Pool::Udp).is_bound(udp), "with its socket");
    }

    #[test]
    fn committed_claims_stay() {
        let (_dir, ctx) = context();
        let mut claims = Claims::new(&ctx);
        claims.name("r1", "aa").unwrap();
        let port = claims.allocate(Pool::Console, "aa").unwrap();
        claims.commit();
        assert!(lock(&ctx.names).contains_key("r1"));
        assert_eq!(
            ctx.ports(Pool::Console).holder(port),
            Some(&Holder::Vm("aa".into()))
        );
    }

    #[test]
    fn a_base_in_place_is_one_vms_and_a_refusal_names_the_holder() {
        let (_dir, ctx) = context();
        let base = tempfile::NamedTempFile::new().unwrap();
        let path = base.path().to_str().unwrap().to_string();
        let mut clones = Settings {
            hda_disk_image: path.clone(),
            ..Settings::default()
        };
        let mut first = Claims::new(&ctx);
        first.name("r1", "aa").unwrap();
        first.bases(&clones, "aa").unwrap();
        first.commit();
        let in_place = Settings {
            hdb_disk_image: path.clone(),
            linked_clone: false,
            ..Settings::default()
        };
        let e = Claims::new(&ctx).bases(&in_place, "bb").unwrap_err();
        assert!(matches!(e, Error::ImageNotAccessible(_)), "{e:?}");
        assert_eq!(
            e.to_string(),
            format!(
                "HdbDiskImage '{path}' is the base of linked clones of VM 'r1', which writes in \
                 place would corrupt: it cannot be used in place (LinkedClone false). Keep \
                 LinkedClone true (a linked clone), or give this VM a copy of it"
            )
        );
        // r1 itself may switch to in place; a claim dropped puts back what it had.
        let mut switch = Claims::new(&ctx);
        clones.linked_clone = false;
        switch.bases(&clones, "aa").unwrap();
        let key = base.path().canonicalize().unwrap();
        assert!(lock(&ctx.bases).holds(&key, "aa", Use::InPlace));
        drop(switch);
        assert!(lock(&ctx.bases).holds(&key, "aa", Use::Clone));
        let mut switch = Claims::new(&ctx);
        switch.bases(&clones, "aa").unwrap();
        switch.commit();
        clones.linked_clone = true;
        let e = Claims::new(&ctx).bases(&clones, "bb").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "HdaDiskImage '{path}' is used in place (LinkedClone false) by VM 'r1', whose \
                 guest writes to it: no other VM may use it. Give this VM a copy of it (cp or \
                 qemu-img convert), or set LinkedClone of VM 'r1' to true first"
            )
        );
    }

    #[test]
    fn a_refused_claim_leaves_the_others_to_the_guard() {
        let (_dir, ctx) = context();
        let mut first = Claims::new(&ctx);
        first.name("r1", "aa").unwrap();
        first.commit();
        let mut second = Claims::new(&ctx);
        let port = second.allocate(Pool::Console, "bb").unwrap();
        let e = second.name("r1", "bb").unwrap_err();
        assert!(matches!(e, Error::AlreadyExists(_)), "{e}");
        drop(second);
        assert_eq!(ctx.ports(Pool::Console).holder(port), None);
        assert_eq!(lock(&ctx.names).get("r1").map(String::as_str), Some("aa"));
    }
}
