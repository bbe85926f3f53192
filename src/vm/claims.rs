//! What a change takes from the pools every VM shares (names, ports) before it is written to
//! disk, so that it can all be given back if the write, or a later step, fails.

use super::error::{Error, Result};
use super::{lock, Context, Pool};
use crate::ports::Holder;

#[derive(Default)]
pub struct Claims {
    name: Option<String>,
    /// Each port taken, and who held it before (a client's allocation a tunnel took over).
    ports: Vec<(Pool, u16, Option<Holder>)>,
}

impl Claims {
    /// Takes `name` for VM `id`; names are unique across VMs.
    pub fn name(&mut self, ctx: &Context, name: &str, id: &str) -> Result<()> {
        let mut names = lock(&ctx.names);
        if names.contains_key(name) {
            return Err(Error::AlreadyExists(format!(
                "a VM named '{name}' already exists; VM names are unique"
            )));
        }
        names.insert(name.to_string(), id.to_string());
        self.name = Some(name.to_string());
        Ok(())
    }

    /// Takes a port a client asked for, for VM `id`.
    pub fn reserve(&mut self, ctx: &Context, pool: Pool, port: u16, id: &str) -> Result<()> {
        let previous = ctx.ports(pool).reserve(port, Holder::Vm(id.into()))?;
        self.ports.push((pool, port, previous));
        Ok(())
    }

    /// Takes the lowest free port of the pool's range for VM `id`.
    pub fn allocate(&mut self, ctx: &Context, pool: Pool, id: &str) -> Result<u16> {
        let port = ctx.ports(pool).allocate(Holder::Vm(id.into()))?;
        self.ports.push((pool, port, None));
        Ok(port)
    }

    /// Gives everything back.
    pub fn undo(self, ctx: &Context) {
        if let Some(name) = &self.name {
            lock(&ctx.names).remove(name);
        }
        for (pool, port, previous) in self.ports {
            let mut ports = ctx.ports(pool);
            ports.release(port);
            if let Some(holder) = previous {
                ports.restore(port, holder);
            }
        }
    }
}
