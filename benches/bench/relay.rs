//! The bus's floor for a reply: a peer on the same bus that, asked, sends back the body of a
//! reply the daemon gave (its bytes and signature, held), doing nothing else. What a call to
//! the daemon takes beyond it is the daemon's; what it takes is the bus's and the client's.
//!
//! The project's policy lets no one call methods of any name but org.gns3.Qemu, which the
//! daemon holds, so the peer is asked and answers with signals sent to one connection, which
//! the bus relays as it relays a reply: checked against the policy, then copied whole.

use futures_util::StreamExt;
use std::time::Instant;
use zbus::message::{Message, Type};
use zbus::{Connection, MessageStream};

const PATH: &str = "/org/gns3/Bench/Relay";
const INTERFACE: &str = "org.gns3.Bench.Relay";
const ASK: &str = "Ask";
const AGAIN: &str = "Again";

/// A peer answering every `Ask` with `reply`'s body, as an `Again`.
pub struct Relay {
    conn: Connection,
    task: tokio::task::JoinHandle<()>,
}

fn is(msg: &Message, member: &str) -> bool {
    let header = msg.header();
    header.message_type() == Type::Signal && header.member().map(|m| m.as_str()) == Some(member)
}

impl Relay {
    /// On `conn`, a connection of its own to the bus.
    pub fn serve(conn: Connection, reply: &Message) -> Relay {
        let body = reply.body();
        let (bytes, signature) = (body.data().bytes().to_vec(), body.signature().to_string());
        let mut asked = MessageStream::from(&conn);
        let sender = conn.clone();
        let task = tokio::spawn(async move {
            while let Some(Ok(ask)) = asked.next().await {
                if !is(&ask, ASK) {
                    continue;
                }
                let Some(client) = ask.header().sender().cloned() else {
                    continue;
                };
                // SAFETY: the bytes are the body of a reply zbus read and checked, with its
                // own signature.
                let again = unsafe {
                    Message::signal(PATH, INTERFACE, AGAIN)
                        .destination(client)
                        .build_raw_body(&bytes, signature.as_str(), Vec::new())
                }
                .expect("the held reply");
                sender.send(&again).await.expect("sending the held reply");
            }
        });
        Relay { conn, task }
    }

    /// `runs` round trips from `client`: its `Ask`, until the whole `Again` is read (µs).
    pub async fn time(&self, client: &Connection, runs: usize) -> Vec<f64> {
        let relay = self.conn.unique_name().expect("the relay's unique name");
        let mut heard = MessageStream::from(client);
        let mut out = Vec::with_capacity(runs);
        for _ in 0..runs {
            let ask = Message::signal(PATH, INTERFACE, ASK)
                .destination(relay.as_ref())
                .build(&())
                .expect("the bench's signal");
            let t = Instant::now();
            client.send(&ask).await.expect("asking the relay");
            loop {
                let msg = heard
                    .next()
                    .await
                    .expect("the bench's connection")
                    .expect("a message");
                if is(&msg, AGAIN) {
                    break;
                }
            }
            out.push(t.elapsed().as_secs_f64() * 1e6);
        }
        out
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
