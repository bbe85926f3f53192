//! What a change takes from the pools every VM shares (names, console ports) before it is
//! written to disk, so that it can all be given back if the write, or a later check, fails.

use super::error::{Error, Result};
use super::{lock, Context};

#[derive(Default)]
pub struct Claims {
    name: Option<String>,
    ports: Vec<u16>,
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

    /// Takes a port a client asked for.
    pub fn reserve(&mut self, ctx: &Context, port: u16) -> Result<()> {
        lock(&ctx.console_ports).reserve(port)?;
        self.ports.push(port);
        Ok(())
    }

    /// Takes the lowest free port of the range.
    pub fn allocate(&mut self, ctx: &Context) -> Result<u16> {
        let port = lock(&ctx.console_ports).allocate()?;
        self.ports.push(port);
        Ok(port)
    }

    /// Gives everything back.
    pub fn undo(self, ctx: &Context) {
        if let Some(name) = &self.name {
            lock(&ctx.names).remove(name);
        }
        let mut ports = lock(&ctx.console_ports);
        for p in &self.ports {
            ports.release(*p);
        }
    }
}
