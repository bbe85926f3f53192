//! The connection: the system bus (zbus honours DBUS_SYSTEM_BUS_ADDRESS), a bus at
//! `--address`, or a remote host's system bus through `ssh -xT HOST systemd-stdio-bridge`
//! (`-H`), as systemd's tools reach one.

use std::ffi::OsString;
use zbus::address::transport::{Transport, Unixexec};
use zbus::connection::Builder;
use zbus::Address;

use crate::error::{Error, Result};

/// Where to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    System,
    Address(String),
    /// `[USER@]HOST`, for ssh.
    Host(String),
}

/// The address that runs ssh to `host` and speaks D-Bus over its stdio. `--` keeps a host
/// starting with `-` from being read as an option of ssh's.
pub fn ssh_address(host: &str) -> Address {
    let args = ["-xT", "--", host, "systemd-stdio-bridge"]
        .into_iter()
        .map(OsString::from)
        .collect();
    Address::from(Transport::Unixexec(Unixexec::new("ssh".into(), None, args)))
}

pub async fn connect(target: &Target) -> Result<zbus::Connection> {
    let builder = match target {
        Target::System => Builder::system(),
        Target::Address(a) => Builder::address(a.as_str()),
        Target::Host(h) => Builder::address(ssh_address(h)),
    };
    builder.build().await.map_err(Error::Connect)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ssh_address_is_systemds() {
        assert_eq!(
            ssh_address("admin@lab-host").to_string(),
            "unixexec:path=ssh,argv1=-xT,argv2=--,argv3=admin%40lab-host,argv4=systemd-stdio-bridge"
        );
    }
}
