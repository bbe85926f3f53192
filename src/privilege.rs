//! What the daemon's own rights do not give it: a QEMU's nice value below the daemon's, and
//! CPU limits through cgroups. With a supervisor socket configured, renices go to
//! `gns3-qemud-supervisor`, and CPU limits too on cgroup v1; on cgroup v2 under systemd the
//! VMs' cgroups are the daemon's own, under its unit (`Delegate=cpu`). Where no cgroup has
//! the cpu controller, and without a supervisor (development), the daemon does what its own
//! uid may (nice at or above its own, `cpulimit` as its own child) and says clearly what it
//! cannot.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::lock::lock;
use crate::supervisor::cgroup::Hierarchy;
use crate::supervisor::protocol::{Envelope, Link, Reply, Request, VERSION};
use crate::supervisor::{self, cpulimit, priority};

/// How long the supervisor gets to answer a request.
const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the supervisor at {path}: {source}. Is gns3-qemud-supervisor running?")]
    Unreachable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the supervisor refused: {0}")]
    Refused(String),
    #[error("the supervisor failed: {0}")]
    Failed(String),
    #[error("the supervisor has no cpu controller: {0}")]
    Unsupported(String),
    #[error(
        "{0}. That needs privilege, and gns3-qemud runs without any and without a supervisor: \
         start gns3-qemud-supervisor and give its socket as supervisor_socket in the \
         configuration (or --supervisor-socket)"
    )]
    NeedsSupervisor(#[source] supervisor::Error),
    #[error("{0}")]
    Local(#[source] supervisor::Error),
    #[error("the task that asked failed: {0}")]
    Task(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub struct Privilege {
    /// `gns3-qemud-supervisor`, if configured.
    supervisor: Option<Client>,
    /// The cgroup the daemon's unit delegated to it (cgroup v2 under systemd).
    cgroups: Option<Hierarchy>,
}

impl Privilege {
    pub fn new(socket: Option<PathBuf>) -> Privilege {
        let supervisor = socket.map(|path| Client {
            path,
            link: Arc::default(),
        });
        let cgroups = Hierarchy::delegated();
        if let Some(h) = &cgroups {
            // Those of QEMUs that exited while no daemon ran; a populated one stays.
            h.sweep(crate::supervisor::procfs::running);
            tracing::info!(parent = %h.parent.display(), cpu = h.cpu, "the VMs' cgroups are under the daemon's unit");
        }
        Privilege {
            supervisor,
            cgroups,
        }
    }

    /// Whether each QEMU gets a cgroup at start, CPU limit or not: under the daemon's unit,
    /// where all of them compete as one unit anyway. (On cgroup v1 one goes into a cgroup
    /// only to be limited: all in `gns3-qemud/` would share the CPU of one process when
    /// the host is busy.)
    pub fn places(&self) -> bool {
        self.cgroups.is_some()
    }

    /// Whether every thread of the process already runs at `nice`: reading it takes no
    /// privilege, so a priority already in place costs no request.
    pub fn is_at(&self, pid: u32, nice: i32) -> bool {
        priority::all_at(pid, nice)
    }

    /// Sets every thread of the process to `nice`.
    pub async fn renice(&self, pid: u32, pidfd: BorrowedFd<'_>, nice: i32) -> Result<()> {
        match &self.supervisor {
            Some(c) => c.call(Request::Renice { pid, nice }, Some(pidfd)).await,
            None => blocking(move || priority::renice(pid, nice).map(drop).map_err(local)).await,
        }
    }

    /// Limits the process, the daemon's child or one found again, to `percent` of one CPU;
    /// 0 lifts the limit (and, at start, places it in its cgroup).
    pub async fn throttle(&self, pid: u32, pidfd: BorrowedFd<'_>, percent: u32) -> Result<()> {
        let done = if let Some(h) = self.cgroups.clone() {
            // The kernel lets the daemon move a process only from within its unit's own
            // cgroup: no pid there can be another's.
            blocking(move || h.limit(pid, percent, true).map_err(local)).await
        } else if let Some(c) = &self.supervisor {
            c.call(Request::Throttle { pid, percent }, Some(pidfd))
                .await
        } else {
            Err(Error::Unsupported("no supervisor".into()))
        };
        match done {
            Err(Error::Unsupported(_)) | Err(Error::Local(supervisor::Error::NoCpuController)) => {}
            done => return done,
        }
        blocking(move || {
            if percent == 0 {
                cpulimit::stop(pid);
                Ok(())
            } else {
                cpulimit::start(pid, percent).map_err(local)
            }
        })
        .await
    }

    /// After the process has exited: whatever limited it goes.
    pub async fn release(&self, pid: u32) -> Result<()> {
        blocking(move || {
            cpulimit::stop(pid);
            Ok(())
        })
        .await?;
        if let Some(h) = self.cgroups.clone() {
            return blocking(move || h.release(pid).map_err(local)).await;
        }
        match &self.supervisor {
            Some(c) => c.call(Request::Release { pid }, None).await,
            None => Ok(()),
        }
    }
}

fn local(e: supervisor::Error) -> Error {
    if e.is_permission() {
        Error::NeedsSupervisor(e)
    } else {
        Error::Local(e)
    }
}

async fn blocking(f: impl FnOnce() -> Result<()> + Send + 'static) -> Result<()> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Task(e.to_string()))?
}

/// A connection to the supervisor, made when first needed and made again when the
/// supervisor has gone away (restarted, or started by its socket on the next request).
pub struct Client {
    path: PathBuf,
    link: Arc<Mutex<Option<Link>>>,
}

impl Client {
    async fn call(&self, request: Request, pidfd: Option<BorrowedFd<'_>>) -> Result<()> {
        // The request is sent from a blocking thread, which needs a descriptor of its own.
        let pidfd: Option<OwnedFd> = pidfd
            .map(|fd| fd.try_clone_to_owned())
            .transpose()
            .map_err(|e| Error::Task(format!("cannot duplicate the pidfd: {e}")))?;
        let (path, link) = (self.path.clone(), self.link.clone());
        blocking(move || {
            let mut link = lock(&link);
            let envelope = Envelope {
                version: VERSION,
                request,
            };
            // Every request is idempotent, so one that met a dead connection is sent again.
            let mut last = None;
            for _ in 0..2 {
                let l = match link.as_mut() {
                    Some(l) => l,
                    None => link.insert(connect(&path)?),
                };
                let answer = l
                    .send(&envelope, pidfd.as_ref().map(std::os::fd::AsFd::as_fd))
                    .and_then(|()| l.receive());
                match answer {
                    Ok(Some((line, _))) => {
                        return match serde_json::from_slice::<Reply>(&line) {
                            Ok(Reply::Done) => Ok(()),
                            Ok(Reply::Refused(why)) => Err(Error::Refused(why)),
                            Ok(Reply::Failed(why)) => Err(Error::Failed(why)),
                            Ok(Reply::Unsupported(why)) => Err(Error::Unsupported(why)),
                            Err(e) => Err(Error::Failed(format!("an answer not understood: {e}"))),
                        };
                    }
                    Ok(None) => {
                        last = Some(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "it closed the connection",
                        ))
                    }
                    Err(e) => last = Some(e),
                }
                *link = None;
            }
            Err(Error::Unreachable {
                path: path.clone(),
                source: last.unwrap_or_else(|| io::Error::other("no answer")),
            })
        })
        .await
    }
}

fn connect(path: &std::path::Path) -> Result<Link> {
    let unreachable = |source| Error::Unreachable {
        path: path.into(),
        source,
    };
    let stream = UnixStream::connect(path).map_err(unreachable)?;
    stream
        .set_read_timeout(Some(TIMEOUT))
        .map_err(unreachable)?;
    stream
        .set_write_timeout(Some(TIMEOUT))
        .map_err(unreachable)?;
    Ok(Link::new(stream))
}
