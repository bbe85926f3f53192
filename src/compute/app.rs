//! What every request handler shares: the configuration, the connection to gns3-qemud and
//! the projects the controller opened here. None of it is state of the compute's own: the
//! VMs are the daemon's, and the open projects are rebuilt from their `Project` at start.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

use gns3_qemuctl::contract::{SERVICE, VM_INTERFACE};
use gns3_qemuctl::managed::{self, Keep};
use gns3_qemuctl::proxies::{ManagerProxy, VmProxy};
use zbus::{OwnedObjectPath, Variant};

use crate::config::Config;
use crate::error::{ApiError, Result};
use crate::events::Events;
use crate::ids::{self, Id};
use crate::node::{Props, COMMAND_LINE};

#[derive(Clone)]
pub struct App(Arc<Inner>);

pub struct Inner {
    pub config: Config,
    pub bus: zbus::Connection,
    pub manager: ManagerProxy<'static>,
    /// The GNS3 projects open on this compute (`POST /projects`), by id.
    projects: Mutex<BTreeSet<Id>>,
    /// UDP ports allocated for a project's links (`POST ports/udp`) and not yet given to a
    /// tunnel: released when the project closes. Lost if the compute restarts; the daemon
    /// frees them at its own next restart.
    ports: Mutex<BTreeMap<Id, BTreeSet<u16>>>,
    /// What the notification sockets are told.
    pub events: Events,
}

impl std::ops::Deref for App {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl App {
    /// The compute's view of the daemon on `bus`: every project that has a VM there is open,
    /// so a compute started again (or a controller reconnecting) finds its labs as they were.
    pub async fn new(config: Config, bus: zbus::Connection) -> Result<App> {
        let manager = ManagerProxy::new(&bus)
            .await
            .map_err(ApiError::call("reach gns3-qemud's manager"))?;
        let vms = managed::vms(&bus, Keep::Only(&["Project"]))
            .await
            .map_err(|e| ApiError::Unreachable {
                what: "list the VMs".into(),
                why: e.to_string(),
            })?;
        let projects = vms
            .iter()
            .filter_map(|(_, props)| props.get("Project"))
            .filter_map(|v| <&str>::try_from(v).ok())
            .filter_map(|p| Id::parse(p).ok())
            .collect();
        Ok(App(Arc::new(Inner {
            config,
            bus,
            manager,
            projects: Mutex::new(projects),
            ports: Mutex::default(),
            events: Events::default(),
        })))
    }

    fn projects(&self) -> MutexGuard<'_, BTreeSet<Id>> {
        // A handler that panicked holding the lock left a set that is still whole.
        self.projects.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ports(&self) -> MutexGuard<'_, BTreeMap<Id, BTreeSet<u16>>> {
        self.ports.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes a port allocated for `project`.
    pub fn hold_port(&self, project: Id, port: u16) {
        self.ports().entry(project).or_default().insert(port);
    }

    /// A tunnel took `port`: the daemon frees it with the tunnel from now on.
    pub fn port_used(&self, project: Id, port: u16) {
        if let Some(ports) = self.ports().get_mut(&project) {
            ports.remove(&port);
        }
    }

    /// Gives back every port allocated for `project` that no tunnel took.
    pub async fn release_ports(&self, project: Id) {
        let ports = self.ports().remove(&project).unwrap_or_default();
        for port in ports {
            // A port a tunnel took meanwhile is refused (InvalidState): the tunnel frees it.
            if let Err(e) = self.manager.release_udp_port(port).await {
                tracing::debug!("UDP port {port} not released: {e}");
            }
        }
    }

    pub fn open_project(&self, id: Id) {
        self.projects().insert(id);
    }

    /// Forgets the project; false if it was not open.
    pub fn close_project(&self, id: Id) -> bool {
        self.projects().remove(&id)
    }

    pub fn is_open(&self, id: Id) -> bool {
        self.projects().contains(&id)
    }

    /// The project `id` of a request path, if open here.
    pub fn project(&self, id: &str) -> Result<Id> {
        match Id::parse(id) {
            Ok(p) if self.projects().contains(&p) => Ok(p),
            _ => Err(ApiError::NoProject(id.to_string())),
        }
    }

    /// The VM of node `node` of project `project`: 404 unless the daemon has a VM of that id
    /// in that project.
    pub async fn node(&self, project: Id, node: &str) -> Result<Node> {
        let id = Id::parse(node).map_err(|_| ApiError::NoNode(node.to_string()))?;
        let path = ids::vm_path(id);
        let vm = self.vm(path.clone()).await?;
        match vm.project().await {
            Ok(p) if p == project.to_string() => Ok(Node { id, path, vm }),
            Ok(_) => Err(ApiError::NoNode(node.to_string())),
            Err(e) => match ApiError::call("read the node's project")(e) {
                e if e.status() == axum::http::StatusCode::NOT_FOUND => {
                    Err(ApiError::NoNode(node.to_string()))
                }
                e => Err(e),
            },
        }
    }

    /// A proxy of the VM at `path`. The handlers read what they need once, fresh: nothing
    /// is cached per node.
    pub async fn vm(&self, path: OwnedObjectPath) -> Result<VmProxy<'static>> {
        VmProxy::builder(&self.bus)
            .path(path)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(ApiError::call("reach a VM"))
    }

    /// Every property of the VM at `path` (one GetAll), and its command line under
    /// [`COMMAND_LINE`]: what a node's JSON is made of.
    pub async fn node_props(&self, path: &OwnedObjectPath) -> Result<Props> {
        let properties = zbus::fdo::PropertiesProxy::builder(&self.bus)
            .destination(SERVICE)
            .path(path.clone())
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(ApiError::call("reach a VM"))?;
        let interface = zbus::names::InterfaceName::from_static_str_unchecked(VM_INTERFACE);
        let mut props = properties
            .get_all(interface)
            .await
            .map_err(|e| ApiError::call("read a node")(e.into()))?;
        let vm = self.vm(path.clone()).await?;
        if let Ok(args) = vm.command_line().await {
            if let Ok(v) = zbus::OwnedVariant::try_from(Variant::from(args)) {
                props.insert(COMMAND_LINE.to_string(), v);
            }
        }
        Ok(props)
    }

    /// Every VM of `project`: its path and all its properties.
    pub async fn project_vms(&self, project: Id) -> Result<managed::Listed> {
        let project = project.to_string();
        let vms = managed::vms(&self.bus, Keep::All)
            .await
            .map_err(|e| ApiError::Unreachable {
                what: "list the VMs".into(),
                why: e.to_string(),
            })?;
        Ok(vms
            .into_iter()
            .filter(|(_, props)| {
                props
                    .get("Project")
                    .and_then(|v| <&str>::try_from(v).ok())
                    .is_some_and(|p| p == project)
            })
            .collect())
    }
}

/// A node of an open project: its id and its VM.
pub struct Node {
    pub id: Id,
    pub path: OwnedObjectPath,
    pub vm: VmProxy<'static>,
}
