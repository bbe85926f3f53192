//! A VM's HMP monitor on its MonitorPort, served by the daemon: each line a telnet client
//! (or netcat) sends is one command, run through the daemon's own QMP connection
//! (`human-monitor-command`), so QEMU itself has no monitor anyone can reach.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::telnet;

/// Runs one HMP command line; the text QEMU answered, or why it did not run.
pub type Run = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send>> + Send + Sync,
>;

const PROMPT: &[u8] = b"(qemu) ";
/// A line longer than this is no command.
const MAX_LINE: usize = 64 * 1024;

/// Serves one monitor client until it closes the connection.
pub async fn session(mut stream: TcpStream, run: Run) {
    // Line mode, the telnet default: the client echoes and sends whole lines.
    let banner =
        b"gns3-qemud: the HMP monitor of this VM; one command per line, 'help' lists them\r\n";
    if stream.write_all(banner).await.is_err() || stream.write_all(PROMPT).await.is_err() {
        return;
    }
    let mut decoder = telnet::Decoder::new();
    let mut line = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let mut data = Vec::with_capacity(n);
        super::keys_of(&mut decoder, &buf[..n], &mut data);
        for byte in data {
            if byte != b'\n' {
                line.push(byte);
                if line.len() > MAX_LINE {
                    let _ = stream.write_all(b"gns3-qemud: line too long\r\n").await;
                    return;
                }
                continue;
            }
            let command = String::from_utf8_lossy(&line).trim().to_string();
            line.clear();
            let mut reply = Vec::new();
            if !command.is_empty() {
                let text = match run(command).await {
                    Ok(text) => text,
                    Err(why) => format!("gns3-qemud: {why}\n"),
                };
                crlf(&text, &mut reply);
            }
            reply.extend_from_slice(PROMPT);
            if stream.write_all(&reply).await.is_err() {
                return;
            }
        }
    }
}

/// HMP ends lines with \n (or \r\n); a telnet client wants \r\n.
fn crlf(text: &str, out: &mut Vec<u8>) {
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\r', '\n']);
        out.extend_from_slice(body.as_bytes());
        if line.ends_with('\n') {
            out.extend_from_slice(b"\r\n");
        }
    }
    if !text.is_empty() && !text.ends_with('\n') {
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lines_end_in_crlf() {
        let mut out = Vec::new();
        super::crlf("a\nb\r\nc", &mut out);
        assert_eq!(out, b"a\r\nb\r\nc\r\n");
        out.clear();
        super::crlf("", &mut out);
        assert!(out.is_empty());
    }
}
