//! What a change takes from the pools every VM shares (names, ports) before it is written to
//! disk. Claims are given back when they are dropped, on every way out of a change that
//! failed, unless the change commits them.

use std::sync::Arc;

use super::error::{Error, Result};
use super::{lock, Context, Pool};
use crate::ports::Holder;

#[must_use = "claims are given back at once when dropped"]
pub struct Claims {
    ctx: Arc<Context>,
    name: Option<String>,
    /// Each port taken, and who held it before (a client's allocation a tunnel took over).
    ports: Vec<(Pool, u16, Option<Holder>)>,
}

impl Claims {
    pub fn new(ctx: &Arc<Context>) -> Claims {
        Claims {
            ctx: ctx.clone(),
            name: None,
            ports: Vec::new(),
        }
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
