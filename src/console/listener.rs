//! The TCP listeners of a VM (its console's telnet port, its monitor's), held by the daemon
//! from Start to stop so nobody else can take the port, and the check of who connects.

use std::net::SocketAddr;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::access;

/// Who a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// Root and members of [`access::DRIVERS`], found through the kernel's socket table:
    /// only for listeners on a loopback address.
    Drivers,
    /// Whoever reaches the address.
    Anyone,
}

/// Binds `host`:`port`, refusing what another program holds.
pub fn bind(host: &str, port: u16) -> std::io::Result<TcpListener> {
    let addr: SocketAddr = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => SocketAddr::new(ip, port),
        Err(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("'{host}' is not an IP address"),
            ))
        }
    };
    let std = std::net::TcpListener::bind(addr)?;
    std.set_nonblocking(true)?;
    TcpListener::from_std(std)
}

/// Accepts connections on `listener` for ever, hands those `who` lets in to `serve`, and
/// tells the others, in one line, who may connect to this `what`.
pub async fn accept(
    listener: TcpListener,
    who: Who,
    what: &'static str,
    serve: impl Fn(TcpStream) + Send + 'static,
) {
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // Out of descriptors, usually: wait rather than spin.
                tracing::warn!("cannot accept a {what} connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let refusal = match who {
            Who::Anyone => None,
            Who::Drivers => refusal(&stream, peer).await,
        };
        match refusal {
            None => serve(stream),
            Some(why) => {
                tracing::info!(%peer, "refused a {what} connection: {why}");
                tokio::spawn(async move {
                    let line = format!(
                        "gns3-qemud: only root and members of group {} may reach this {what}; {why}.\r\n",
                        access::DRIVERS
                    );
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(1), async {
                        let _ = stream.write_all(line.as_bytes()).await;
                        let _ = stream.shutdown().await;
                    })
                    .await;
                });
            }
        }
    }
}

/// Why the peer of `stream` may not drive VMs, or None if it may.
async fn refusal(stream: &TcpStream, peer: SocketAddr) -> Option<String> {
    let local = match stream.local_addr() {
        Ok(local) => local,
        Err(e) => return Some(format!("its address is unknown ({e})")),
    };
    let found = tokio::task::spawn_blocking(move || {
        let Some(uid) = access::peer_uid(local, peer)? else {
            return Ok(None);
        };
        access::may_drive(uid).map(|may| Some((uid, may)))
    })
    .await;
    match found {
        Ok(Ok(Some((_, true)))) => None,
        Ok(Ok(Some((uid, false)))) => Some(format!("uid {uid} is neither")),
        Ok(Ok(None)) => Some("the connection comes from no process of this host".into()),
        Ok(Err(e)) => {
            tracing::error!("cannot tell who connected: {e}");
            Some("the daemon cannot tell who connected".into())
        }
        Err(e) => Some(format!("the check failed ({e})")),
    }
}
