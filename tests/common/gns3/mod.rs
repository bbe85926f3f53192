//! A real GNS3 controller (gns3-server 3.0.6, from PyPI) as the tests' peer: the program that
//! registers gns3-qemud-compute and drives it, as a GNS3 user's controller would.
//!
//! `gns3_server` installs it once per machine into a venv under the user's cache;
//! `Controller::start` runs one on loopback with a throwaway home and config, and its REST
//! and websocket clients are blocking calls for the std-thread tests.
//!
//! The controller runs as the test (root): the venv lives under root's home, which no other
//! user may enter, and it is a test peer, not the program under test.

// Every tests/*.rs binary compiles this module but not all of them use all of it.
#![allow(dead_code)]

mod install;
mod ws;

use std::fs::File;
use std::io::Read;
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::console::{Console, Stream};
pub use install::gns3_server;
pub use ws::WsStream;

/// The GNS3 release the compute speaks to: the controller refuses any other (spec §2.3).
pub const VERSION: &str = "3.0.6";

/// The controller's administrator, as a fresh controller database makes it.
pub const ADMIN: (&str, &str) = ("admin", "admin");

/// A gns3server running as a controller on 127.0.0.1, logged in as the administrator.
pub struct Controller {
    child: Child,
    pub dir: PathBuf,
    pub port: u16,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    pub log: PathBuf,
    token: String,
    agent: ureq::Agent,
}

impl Controller {
    /// Starts one in `dir` (its config, database, images, projects and home) and waits until
    /// it answers. `compute_user`/`compute_password` are its own compute credentials: it
    /// opens a compute's console websocket with them, whatever the compute was registered
    /// with (spec §4, §9.2), so they must be the compute's.
    pub fn start(dir: &Path, compute_user: &str, compute_password: &str) -> Controller {
        let home = dir.join("home");
        std::fs::create_dir_all(&home).unwrap();
        let port = super::free_port();
        let config = dir.join("gns3_server.conf");
        std::fs::write(
            &config,
            config_text(dir, port, compute_user, compute_password),
        )
        .unwrap();
        let log = dir.join("gns3server.log");
        let log_file = File::create(&log).unwrap();
        let mut command = Command::new(gns3_server());
        {
            use std::os::unix::process::CommandExt;
            // A group of its own, so that Drop ends whatever it started along with it.
            command.process_group(0);
        }
        let child = command
            .arg("--config")
            .arg(&config)
            .current_dir(dir)
            .env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("XDG_DATA_HOME", home.join(".local/share"))
            .env("XDG_CACHE_HOME", home.join(".cache"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", gns3_server().display()));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Past the controller's own 240 s for a node's start or stop.
            .timeout_global(Some(Duration::from_secs(300)))
            .build()
            .into();
        let mut controller = Controller {
            child,
            dir: dir.to_path_buf(),
            port,
            url: format!("http://127.0.0.1:{port}"),
            log,
            token: String::new(),
            agent,
        };
        controller.wait_until_up(Duration::from_secs(60));
        let (status, body) = controller.login(ADMIN.0, ADMIN.1);
        assert_eq!(status, 200, "login as {}: {body}", ADMIN.0);
        controller.token = body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access_token in {body}"))
            .to_string();
        controller
    }

    fn wait_until_up(&mut self, timeout: Duration) {
        let end = Instant::now() + timeout;
        loop {
            if let Ok(mut r) = self.agent.get(format!("{}/v3/version", self.url)).call() {
                if r.status() == 200 {
                    return;
                }
                let _ = r.body_mut().read_to_string();
            }
            let exited = self.child.try_wait().unwrap();
            assert!(
                exited.is_none() && Instant::now() < end,
                "the GNS3 controller did not come up ({}):\n{}",
                exited.map_or("still running".into(), |s| s.to_string()),
                self.log_tail(60)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The gns3server process's id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// `POST /v3/access/users/login` with a form, as GNS3's OAuth2 password flow wants it.
    pub fn login(&self, user: &str, password: &str) -> (u16, Value) {
        let r = self
            .agent
            .post(format!("{}/v3/access/users/login", self.url))
            .send_form([("username", user), ("password", password)]);
        reply(r)
    }

    /// The bearer token of the administrator's session.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// `GET path` (`/v3/...`): the status and the JSON body (Null if empty, a String if the
    /// body is not JSON).
    pub fn get(&self, path: &str) -> (u16, Value) {
        reply(self.authorized(self.agent.get(self.at(path))).call())
    }

    pub fn delete(&self, path: &str) -> (u16, Value) {
        reply(self.authorized(self.agent.delete(self.at(path))).call())
    }

    pub fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        reply(
            self.authorized(self.agent.post(self.at(path)))
                .send_json(body),
        )
    }

    pub fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        reply(
            self.authorized(self.agent.put(self.at(path)))
                .send_json(body),
        )
    }

    fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    fn authorized<B>(&self, r: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        r.header("Authorization", format!("Bearer {}", self.token))
    }

    /// Uploads the file at `path` as image `name` (`POST /v3/images/upload/{name}`), for
    /// templates and nodes to name; its image record. Panics unless the controller took it.
    pub fn upload_image(&self, name: &str, path: &Path) -> Value {
        let mut file =
            File::open(path).unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        let r = self
            .authorized(
                self.agent
                    .post(self.at(&format!("/v3/images/upload/{name}"))),
            )
            .content_type("application/octet-stream")
            .send(ureq::SendBody::from_reader(&mut file));
        let (status, body) = reply(r);
        assert_eq!(
            status,
            201,
            "uploading {} as {name}: {body}",
            path.display()
        );
        body
    }

    /// Registers a compute (`POST /v3/computes?connect=true`, body as in spec §2.1) and
    /// makes the controller connect to it now (`POST /v3/computes/{id}/connect`): with
    /// `connect=true` alone an unreachable compute is accepted (201) and retried every 5 s.
    /// Its compute id, or the controller's error.
    pub fn add_compute(
        &self,
        host: &str,
        port: u16,
        user: &str,
        password: &str,
    ) -> Result<String, ComputeError> {
        let body = json!({
            "protocol": "http", "host": host, "port": port,
            "user": user, "password": password, "name": format!("gns3-qemud {host}:{port}"),
        });
        let (status, reply) = self.post("/v3/computes?connect=true", &body);
        let id = reply["compute_id"].as_str().map(str::to_string);
        let (status, reply) = match (status, &id) {
            (201, Some(id)) => match self.post(&format!("/v3/computes/{id}/connect"), &json!({})) {
                (204, _) => return Ok(id.clone()),
                other => other,
            },
            _ => (status, reply),
        };
        Err(ComputeError {
            status,
            message: reply["message"].as_str().unwrap_or_default().to_string(),
            body: reply,
            // A failed registration leaves the compute's row (spec §2.1).
            compute_id: id.or_else(|| self.compute_at(host, port)),
        })
    }

    /// The id of the compute registered at `host:port`, if there is one.
    pub fn compute_at(&self, host: &str, port: u16) -> Option<String> {
        let (status, list) = self.get("/v3/computes");
        assert_eq!(status, 200, "GET /v3/computes: {list}");
        list.as_array()?
            .iter()
            .find(|c| c["host"] == host && c["port"] == port)
            .and_then(|c| c["compute_id"].as_str().map(str::to_string))
    }

    /// Unregisters compute `id`; panics unless the controller did.
    pub fn remove_compute(&self, id: &str) {
        let (status, body) = self.delete(&format!("/v3/computes/{id}"));
        assert_eq!(status, 204, "DELETE /v3/computes/{id}: {body}");
    }

    /// A project with the test guest's kernel and initrd uploaded to the controller (which
    /// uploads them to a compute after its 409, spec §7); its id.
    pub fn project_with_the_guest(&self, name: &str) -> String {
        let (status, project) = self.post("/v3/projects", &json!({"name": name}));
        assert_eq!(status, 201, "{project}");
        for image in ["vmlinuz", "initrd.gz"] {
            self.upload_image(image, &super::guest().join(image));
        }
        project["project_id"].as_str().unwrap().to_string()
    }

    /// A QEMU node of the test guest (128 MiB, one adapter, telnet console) in `project`
    /// on compute `compute_id`: its JSON. Panics unless the controller made it.
    pub fn guest_node(&self, project: &str, compute_id: &str, name: &str) -> Value {
        let body = json!({"name": name, "node_type": "qemu", "compute_id": compute_id,
            "properties": {"ram": 128, "adapters": 1, "kernel_image": "vmlinuz",
            "initrd": "initrd.gz", "kernel_command_line": "console=ttyS0 panic=-1 quiet",
            "console_type": "telnet", "qemu_path": "qemu-system-x86_64"}});
        let (status, node) = self.post(&format!("/v3/projects/{project}/nodes"), &body);
        assert_eq!(status, 201, "{node}");
        node
    }

    /// A link between adapter 0 of nodes `a` and `b`: its id.
    pub fn link(&self, project: &str, a: &str, b: &str) -> String {
        let ends = json!({"nodes": [
            {"node_id": a, "adapter_number": 0, "port_number": 0},
            {"node_id": b, "adapter_number": 0, "port_number": 0}]});
        let (status, link) = self.post(&format!("/v3/projects/{project}/links"), &ends);
        assert_eq!(status, 201, "{link}");
        link["link_id"].as_str().unwrap().to_string()
    }

    /// Posts `action` (start, stop, suspend, reload…) for `node`; panics unless it was done.
    pub fn node_action(&self, project: &str, node: &str, action: &str) {
        let path = format!("/v3/projects/{project}/nodes/{node}/{action}");
        let (status, body) = self.post(&path, &json!({}));
        assert!(
            status == 200 || status == 204,
            "{action} {node}: {status} {body}"
        );
    }

    /// The node's `status` in the controller's view (started, stopped, suspended), which
    /// only the compute's notifications change (spec §3.1).
    pub fn node_status(&self, project: &str, node: &str) -> String {
        let (status, body) = self.get(&format!("/v3/projects/{project}/nodes/{node}"));
        assert_eq!(status, 200, "GET node {node}: {body}");
        body["status"]
            .as_str()
            .unwrap_or_else(|| panic!("node {node} has no status: {body}"))
            .to_string()
    }

    /// Waits until the controller says the node is `want`; false if it does not in `timeout`.
    pub fn wait_node_status(
        &self,
        project: &str,
        node: &str,
        want: &str,
        timeout: Duration,
    ) -> bool {
        let end = Instant::now() + timeout;
        while self.node_status(project, node) != want {
            if Instant::now() > end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        true
    }

    /// The node's web console on the controller (`WS /v3/projects/{p}/nodes/{n}/console/ws`),
    /// as a `Console`: the controller relays the compute's telnet bytes in binary frames (the
    /// Console skips the telnet commands), and takes what is typed as text frames.
    pub fn web_console(&self, project: &str, node: &str) -> Result<Console, String> {
        self.websocket(&format!("/v3/projects/{project}/nodes/{node}/console/ws"))
    }

    /// The controller's notifications (`WS /v3/notifications/ws`), one JSON text frame
    /// each, as a `Console` to wait for: where a compute's live state shows
    /// (`compute.updated` with `"connected": true`), which its REST record never gives.
    pub fn notifications(&self) -> Result<Console, String> {
        self.websocket("/v3/notifications/ws")
    }

    fn websocket(&self, path: &str) -> Result<Console, String> {
        let url = format!("ws://127.0.0.1:{}{path}?token={}", self.port, self.token);
        let tcp =
            TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        match tungstenite::client(url.as_str(), tcp) {
            Ok((ws, _)) => Ok(Console::over_stream(Stream::Ws(Box::new(WsStream::new(
                ws,
            ))))),
            Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(r))) => Err(format!(
                "the controller refused the websocket {path}: {} {}",
                r.status(),
                String::from_utf8_lossy(r.body().as_deref().unwrap_or_default())
            )),
            Err(e) => Err(format!("websocket {path}: {e}")),
        }
    }

    /// The link's capture as the controller streams it
    /// (`GET /v3/projects/{p}/links/{l}/capture/stream`): pcap bytes until the capture stops.
    /// A read fails after 60 s without a byte.
    pub fn capture_stream(
        &self,
        project: &str,
        link: &str,
    ) -> Result<impl Read + Send + 'static, (u16, Value)> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_per_read(Some(Duration::from_secs(60)))
            .build()
            .into();
        let path = format!("/v3/projects/{project}/links/{link}/capture/stream");
        let r = self
            .authorized(agent.get(self.at(&path)))
            .call()
            .map_err(|e| (0, Value::String(e.to_string())))?;
        if r.status() != 200 {
            return Err(reply(Ok(r)));
        }
        Ok(r.into_body().into_reader())
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "--- the GNS3 controller's log ({}), last lines:\n{}",
                self.log.display(),
                self.log_tail(60)
            );
        }
    }
}

/// The controller's config: everything under `dir`, on loopback, and nothing that reaches
/// out (crash reports) or works in the background at start (image discovery, built-in
/// templates and appliances), so that it comes up quickly and the same each time.
fn config_text(dir: &Path, port: u16, compute_user: &str, compute_password: &str) -> String {
    let d = dir.display();
    format!(
        "[Server]\n\
         host = 127.0.0.1\n\
         port = {port}\n\
         images_path = {d}/images\n\
         projects_path = {d}/projects\n\
         appliances_path = {d}/appliances\n\
         symbols_path = {d}/symbols\n\
         configs_path = {d}/configs\n\
         resources_path = {d}/resources\n\
         report_errors = False\n\
         auto_discover_images = False\n\
         enable_builtin_templates = False\n\
         install_builtin_appliances = False\n\
         compute_username = {compute_user}\n\
         compute_password = {compute_password}\n"
    )
}

/// A failed compute registration: the controller's status and message, and the id of the
/// row it left (to remove), if it left one.
#[derive(Debug)]
pub struct ComputeError {
    pub status: u16,
    pub message: String,
    pub body: Value,
    pub compute_id: Option<String>,
}

/// A reply's status and JSON body.
fn reply(r: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
    let mut r = r.unwrap_or_else(|e| panic!("no reply from the GNS3 controller: {e}"));
    let status = r.status().as_u16();
    let text = r
        .body_mut()
        .read_to_string()
        .unwrap_or_else(|e| panic!("reading a reply of the GNS3 controller: {e}"));
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}
