//! A monitor of the private bus (`busctl monitor`, through BecomeMonitor, which
//! tests/private-bus.conf.in lets root call): every message on the bus, as JSON, to check
//! what one client sent and in which order.

// Every tests/*.rs binary compiles this module but not all of them use it.
#![allow(dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::bus::Bus;

pub struct Monitor {
    child: Child,
    messages: mpsc::Receiver<Value>,
}

/// busctl says this on stderr once BecomeMonitor has succeeded: from then on every message
/// is seen.
const READY: &str = "Monitoring bus message stream.";
const PATIENCE: Duration = Duration::from_secs(30);

impl Monitor {
    /// Starts monitoring `bus`; returns once busctl is a monitor.
    pub fn start(bus: &Bus) -> Monitor {
        let mut child = Command::new("busctl")
            .arg(format!("--address={}", bus.address))
            .args(["monitor", "--json=short"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running busctl (package systemd)");
        let (said, heard) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = said.send(line);
            }
        });
        let (tx, messages) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let message = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("busctl monitor printed {line:?}: {e}"));
                if tx.send(message).is_err() {
                    break;
                }
            }
        });
        loop {
            match heard.recv_timeout(PATIENCE) {
                Ok(line) if line == READY => break,
                Ok(_) => {}
                Err(e) => panic!("busctl monitor did not say {READY:?}: {e}"),
            }
        }
        Monitor { child, messages }
    }

    /// The unique name of the one connection that came while monitoring, and every message
    /// from its Hello to the bus's signal that it left: all it sent comes before that, as
    /// the bus handles a connection's messages in order. Panics if another connection came
    /// between.
    pub fn one_client(&mut self) -> (String, Vec<Value>) {
        let mut seen = Vec::new();
        let mut client: Option<String> = None;
        loop {
            let message = self
                .messages
                .recv_timeout(PATIENCE)
                .unwrap_or_else(|e| panic!("the client to leave the bus: {e}; seen {seen:#?}"));
            let field = |k: &str| message[k].as_str().unwrap_or_default().to_string();
            let (kind, member, sender) = (field("type"), field("member"), field("sender"));
            if kind == "method_call" && member == "Hello" {
                assert_eq!(client, None, "a second connection came: {message}");
                client = Some(sender.clone());
            }
            let gone = client.as_ref().is_some_and(|c| {
                kind == "signal"
                    && member == "NameOwnerChanged"
                    && message["payload"]["data"] == serde_json::json!([c, c, ""])
            });
            if client.is_some() {
                seen.push(message);
            }
            if gone {
                return (client.unwrap(), seen);
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
