//! The byte stream of a web console, for `Console`.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A websocket console as a byte stream for `Console`: each frame's payload in turn (text
/// frames too: the controller relays the compute's error messages as text), and each write
/// a text frame, as GNS3's web console sends keystrokes.
pub struct WsStream {
    ws: tungstenite::WebSocket<TcpStream>,
    pending: Vec<u8>,
}

impl WsStream {
    pub fn new(ws: tungstenite::WebSocket<TcpStream>) -> WsStream {
        WsStream {
            ws,
            pending: Vec::new(),
        }
    }

    pub fn set_read_timeout(&self, t: Option<Duration>) -> std::io::Result<()> {
        self.ws.get_ref().set_read_timeout(t)
    }
}

impl Read for WsStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use tungstenite::{Error, Message};
        while self.pending.is_empty() {
            match self.ws.read() {
                Ok(Message::Binary(b)) => self.pending.extend_from_slice(&b),
                Ok(Message::Text(t)) => self.pending.extend_from_slice(t.as_bytes()),
                Ok(Message::Close(_)) | Err(Error::ConnectionClosed | Error::AlreadyClosed) => {
                    return Ok(0)
                }
                // Pings are answered by tungstenite itself.
                Ok(_) => {}
                Err(Error::Io(e)) => return Err(e),
                Err(e) => return Err(std::io::Error::other(e)),
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }
}

impl Write for WsStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf).into_owned();
        match self.ws.send(tungstenite::Message::text(text)) {
            Ok(()) => Ok(buf.len()),
            Err(tungstenite::Error::Io(e)) => Err(e),
            Err(e) => Err(std::io::Error::new(ErrorKind::BrokenPipe, e)),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.ws
            .flush()
            .map_err(|e| std::io::Error::new(ErrorKind::BrokenPipe, e))
    }
}
