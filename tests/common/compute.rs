//! The built gns3-qemud-compute, run as the unit runs it: a member of gns3 (never root), on
//! a loopback port of its own, in front of a test daemon's bus.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use serde_json::Value;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{append, free_port, users, workspace_bin};

pub const USER: &str = "gns3";
pub const PASSWORD: &str = "compute-pw";
/// USER:PASSWORD, as the controller sends them.
pub const AUTH: &str = "Basic Z25zMzpjb21wdXRlLXB3";

pub fn compute_bin() -> &'static Path {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| workspace_bin("gns3-qemud-compute", "gns3-qemud-compute"))
}

pub struct Compute {
    pub child: Child,
    pub host: String,
    pub port: u16,
    bus: String,
    dir: PathBuf,
    flags: Vec<String>,
    env: Vec<(String, String)>,
    /// The image directory, the compute's user's, readable by the daemon's.
    pub images: PathBuf,
    pub log: PathBuf,
    agent: ureq::Agent,
}

impl Compute {
    /// A compute on 127.0.0.1 for the bus at `bus`, its files in `dir`.
    pub fn start(bus: &str, dir: &Path) -> Compute {
        Self::start_on(bus, dir, "127.0.0.1", &[])
    }

    /// A compute in front of `lab`'s daemon, its files in a directory of its own (returned
    /// first, so that a binding `let (_dir, compute)` drops the compute, and prints its log,
    /// before the directory goes).
    pub fn for_lab(lab: &super::Lab) -> (tempfile::TempDir, Compute) {
        let dir = tempfile::Builder::new()
            .prefix("gns3-compute-")
            .tempdir()
            .unwrap();
        let compute = Compute::start(&lab.bus.address, dir.path());
        (dir, compute)
    }

    /// A compute listening on `host`, with more flags.
    pub fn start_on(bus: &str, dir: &Path, host: &str, flags: &[&str]) -> Compute {
        Self::start_with_env(bus, dir, host, flags, &[])
    }

    /// A compute listening on `host`, with more flags and more environment (after the
    /// tests' RUST_LOG=debug, so that `env` may set another).
    pub fn start_with_env(
        bus: &str,
        dir: &Path,
        host: &str,
        flags: &[&str],
        env: &[(&str, &str)],
    ) -> Compute {
        let own = |v: &[&str]| v.iter().map(|f| f.to_string()).collect::<Vec<_>>();
        let env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Self::spawn(bus, dir, host, free_port(), own(flags), env)
    }

    /// Stops it and starts it again, on the same port with the same files: what a restart
    /// of its unit does.
    pub fn restart(&mut self) {
        self.stop();
        let again = Self::spawn(
            &self.bus,
            &self.dir,
            &self.host,
            self.port,
            std::mem::take(&mut self.flags),
            std::mem::take(&mut self.env),
        );
        drop(std::mem::replace(self, again));
    }

    fn spawn(
        bus: &str,
        dir: &Path,
        host: &str,
        port: u16,
        flags: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Compute {
        users::ensure();
        let member = nix::unistd::User::from_name(users::MEMBER)
            .unwrap()
            .unwrap();
        std::fs::create_dir_all(dir).unwrap();
        let images = dir.join("images");
        std::fs::create_dir_all(&images).unwrap();
        for d in [dir, &images] {
            nix::unistd::chown(d, Some(member.uid), Some(member.gid)).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let password = dir.join("compute.password");
        std::fs::write(&password, format!("{PASSWORD}\n")).unwrap();
        nix::unistd::chown(&password, Some(member.uid), Some(member.gid)).unwrap();
        let notify_path = dir.join("compute-notify.sock");
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        nix::unistd::chown(&notify_path, Some(member.uid), Some(member.gid)).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let log = dir.join("compute.log");
        let out = append(&log);
        let listen = format!("{host}:{port}");
        let mut command = users::run_as(users::MEMBER, compute_bin().to_str().unwrap());
        command
            .args(["--config", "/dev/null", "--bus", bus, "--listen", &listen])
            .args(["--user", USER])
            .arg("--password-file")
            .arg(&password)
            .arg("--images")
            .arg(&images)
            .args(&flags)
            .env("NOTIFY_SOCKET", &notify_path)
            .env("RUST_LOG", "debug")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let mut child = command.spawn().unwrap();
        let end = Instant::now() + Duration::from_secs(30);
        let mut buf = [0u8; 512];
        loop {
            if let Ok(n) = notify.recv(&mut buf) {
                if String::from_utf8_lossy(&buf[..n])
                    .lines()
                    .any(|l| l == "READY=1")
                {
                    break;
                }
            }
            let status = child.try_wait().unwrap();
            if status.is_some() || Instant::now() > end {
                panic!(
                    "no READY=1 from gns3-qemud-compute; exit: {status:?}; log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        }
        Compute {
            child,
            host: host.to_string(),
            port,
            bus: bus.to_string(),
            dir: dir.to_path_buf(),
            flags,
            env,
            images,
            log,
            // Statuses are the tests' to check: a 409 is an answer, not an error.
            agent: ureq::Agent::config_builder()
                .http_status_as_error(false)
                .build()
                .into(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}:{}/v3/compute{path}", self.host, self.port)
    }

    pub fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Option<(u16, Value)> {
        let url = self.url(path);
        let mut resp = match (method, body) {
            ("GET", _) => self.agent.get(&url).header("Authorization", AUTH).call(),
            ("DELETE", _) => self.agent.delete(&url).header("Authorization", AUTH).call(),
            ("POST", None) => self
                .agent
                .post(&url)
                .header("Authorization", AUTH)
                .send_empty(),
            ("POST", Some(b)) => self
                .agent
                .post(&url)
                .header("Authorization", AUTH)
                .send_json(b),
            ("PUT", Some(b)) => self
                .agent
                .put(&url)
                .header("Authorization", AUTH)
                .send_json(b),
            (m, _) => panic!("no {m}"),
        }
        .ok()?;
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        };
        Some((status, body))
    }

    pub fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.try_call(method, path, body)
            .unwrap_or_else(|| panic!("{method} {path}: no answer"))
    }

    /// `method path` with `body` as it is (JSON or not) and `authorization` as the header
    /// if there is one: the status and the body (JSON, or a String if it is not).
    pub fn raw(
        &self,
        method: &str,
        path: &str,
        authorization: Option<&str>,
        body: &[u8],
    ) -> (u16, Value) {
        let url = self.url(path);
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        if let Some(a) = authorization {
            req = req.header("Authorization", a);
        }
        if !body.is_empty() {
            req = req.header("Content-Type", "application/json");
        }
        let mut resp = self
            .agent
            .run(req.body(body.to_vec()).unwrap())
            .unwrap_or_else(|e| panic!("{method} {path}: no answer: {e}"));
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    pub fn upload(&self, name: &str, file: &Path) -> u16 {
        let mut f = std::fs::File::open(file).unwrap();
        let resp = self
            .agent
            .post(self.url(&format!("/qemu/images/{name}")))
            .header("Authorization", AUTH)
            .header("Content-Type", "application/octet-stream")
            .send(ureq::SendBody::from_reader(&mut f))
            .unwrap();
        resp.status().as_u16()
    }

    /// A websocket of the compute at `path` (under `/v3/compute`), opened with
    /// `authorization` as the upgrade's header when there is one; the handshake's error
    /// as text.
    pub fn websocket(
        &self,
        path: &str,
        authorization: Option<&str>,
    ) -> Result<tungstenite::WebSocket<std::net::TcpStream>, String> {
        use tungstenite::client::IntoClientRequest;
        let url = format!("ws://{}:{}/v3/compute{path}", self.host, self.port);
        let mut request = url.into_client_request().map_err(|e| e.to_string())?;
        if let Some(a) = authorization {
            request
                .headers_mut()
                .insert("Authorization", a.parse().unwrap());
        }
        let tcp = std::net::TcpStream::connect((self.host.as_str(), self.port))
            .map_err(|e| e.to_string())?;
        tcp.set_read_timeout(Some(Duration::from_secs(30)))
            .map_err(|e| e.to_string())?;
        tungstenite::client(request, tcp)
            .map(|(ws, _)| ws)
            .map_err(|e| format!("websocket {path}: {e}"))
    }

    /// The notification socket, as the controller opens it.
    pub fn notifications(&self) -> Notifications {
        Notifications(
            self.websocket("/notifications/ws", Some(AUTH))
                .unwrap_or_else(|e| panic!("{e}")),
        )
    }

    /// A node's web console through the compute, as a `Console`.
    pub fn web_console(&self, project: &str, node: &str) -> Result<super::Console, String> {
        let path = format!("/projects/{project}/qemu/nodes/{node}/console/ws");
        let ws = self.websocket(&path, Some(AUTH))?;
        Ok(super::Console::over_stream(super::console::Stream::Ws(
            Box::new(super::gns3::WsStream::new(ws)),
        )))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Stops it (SIGTERM) and waits for its end.
    pub fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

impl Drop for Compute {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("gns3-qemud-compute's log:\n{}", self.log_text());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A daemon, a compute in front of it, project `project` open there and the test guest's
/// kernel and initrd uploaded.
pub async fn project_with_the_guest(project: &str) -> (super::Lab, tempfile::TempDir, Compute) {
    let lab = super::Lab::start().await;
    let (dir, compute) = Compute::for_lab(&lab);
    let body = serde_json::json!({"name": "lab", "project_id": project});
    assert_eq!(compute.call("POST", "/projects", Some(body)).0, 201);
    for image in ["initrd.gz", "vmlinuz"] {
        assert_eq!(compute.upload(image, &super::guest().join(image)), 204);
    }
    (lab, dir, compute)
}

/// The compute's notification socket: one JSON message per text frame.
pub struct Notifications(pub tungstenite::WebSocket<std::net::TcpStream>);

impl Notifications {
    /// The next message, or None if none comes within `timeout`.
    pub fn next(&mut self, timeout: Duration) -> Option<Value> {
        self.0.get_ref().set_read_timeout(Some(timeout)).unwrap();
        loop {
            match self.0.read() {
                Ok(tungstenite::Message::Text(t)) => {
                    return Some(serde_json::from_str(&t).unwrap())
                }
                Ok(tungstenite::Message::Close(c)) => panic!("the compute closed: {c:?}"),
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                Err(e) => panic!("the notification socket: {e}"),
            }
        }
    }

    /// The messages already sent, other than pings: what the compute said before the reply
    /// the test just had.
    pub fn sent(&mut self) -> Vec<Value> {
        std::iter::from_fn(|| self.next(Duration::from_millis(200)))
            .filter(|m| m["action"] != "ping")
            .collect()
    }
}
