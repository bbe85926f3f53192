//! Runs the compute: connects to the daemon's bus, listens, tells systemd it is ready, and
//! serves until SIGTERM or SIGINT, or until the bus is gone.

use tokio::net::TcpListener;

use crate::app::App;
use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to the bus {bus}: {source}")]
    Bus {
        bus: String,
        #[source]
        source: zbus::Error,
    },
    #[error("cannot read gns3-qemud's VMs: {0}. Is gns3-qemud running?")]
    Daemon(#[source] crate::error::ApiError),
    #[error("cannot listen on {listen}: {source}")]
    Listen {
        listen: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot hear gns3-qemud's signals: {0}")]
    Events(String),
    #[error("cannot wait for signals: {0}")]
    Signals(#[source] std::io::Error),
    #[error("the server failed: {0}")]
    Serve(#[source] std::io::Error),
}

pub async fn run(config: Config) -> Result<(), Error> {
    let name = config
        .bus
        .clone()
        .unwrap_or_else(|| "the system bus".into());
    let fail = |source| Error::Bus {
        bus: name.clone(),
        source,
    };
    let builder = match &config.bus {
        Some(a) => zbus::connection::Builder::address(a.as_str()),
        None => zbus::connection::Builder::system(),
    };
    let bus = builder.build().await.map_err(fail)?;
    let events = crate::events::subscribe(&bus)
        .await
        .map_err(Error::Events)?;
    let app = App::new(config.clone(), bus).await.map_err(Error::Daemon)?;
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|source| Error::Listen {
            listen: config.listen,
            source,
        })?;
    tracing::info!(
        "serving the GNS3 compute API (version {}) on {}",
        config.gns3_version,
        config.listen
    );
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(Error::Signals)?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    let serve =
        axum::serve(listener, crate::routes::router(app.clone())).with_graceful_shutdown(shutdown);
    // Without the daemon's signals the controller would see no node change: better to
    // stop, and be started again (Restart=on-failure), than to serve a stale view.
    tokio::select! {
        served = serve => served.map_err(Error::Serve),
        gone = crate::events::run(app, events) => Err(Error::Events(gone)),
    }
}
