//! Replies whose bodies are laid together from pieces kept serialized, one per VM
//! (GetManagedObjects' entries, ListVMs' rows): the array around the pieces, and the reply
//! message around that. With thousands of VMs, copying bytes is what keeps a list's cost
//! per VM flat; serializing every VM again for every call is what it replaced.

use zbus::message::{Flags, Message};
use zbus::wire::serialized::{Context, Data};
use zbus::wire::{to_bytes, Endian, NATIVE_ENDIAN};
use zbus::{fdo, Connection};

/// The byte order pieces are written in, and so the replies'.
pub const ENDIAN: Endian = NATIVE_ENDIAN;

/// D-Bus arrays hold at most 64 MiB.
const MAX_ARRAY: usize = 64 << 20;

/// `value` serialized as a piece of an array of structs or dict entries, from offset 0: both
/// are 8-aligned, and every alignment within is relative to that, so the bytes are the same
/// at any 8-aligned offset.
pub fn piece<T: serde::Serialize + zbus::DynamicType>(
    value: &T,
) -> fdo::Result<Data<'static, 'static>> {
    to_bytes(Context::new(ENDIAN, 0), value)
        .map_err(|e| fdo::Error::Failed(format!("cannot serialize a reply's piece: {e}")))
}

/// An array of structs or dict entries laid out of pieces: its length in bytes, the padding
/// to the 8-byte boundary where the first piece starts (there even when there is none), then
/// the pieces, each starting on such a boundary.
pub struct Array {
    body: Vec<u8>,
}

impl Array {
    /// An empty array with room for `capacity` bytes of pieces.
    pub fn with_capacity(capacity: usize) -> Array {
        let mut body = Vec::with_capacity(capacity + 8);
        body.resize(8, 0);
        Array { body }
    }

    pub fn push(&mut self, piece: &[u8]) {
        self.body.resize(self.body.len().next_multiple_of(8), 0);
        self.body.extend_from_slice(piece);
    }

    /// The bytes of the pieces pushed.
    pub fn size(&self) -> usize {
        self.body.len() - 8
    }

    /// The array's bytes; `too_big` is the refusal when its pieces do not fit one array, given
    /// their size in MiB.
    pub fn finish(mut self, too_big: impl FnOnce(usize) -> String) -> fdo::Result<Vec<u8>> {
        let len = self.size();
        if len > MAX_ARRAY {
            return Err(fdo::Error::LimitsExceeded(too_big(len >> 20)));
        }
        let len = len as u32;
        self.body[..4].copy_from_slice(&match ENDIAN {
            Endian::Little => len.to_le_bytes(),
            Endian::Big => len.to_be_bytes(),
        });
        Ok(self.body)
    }
}

/// Answers `call` with `body`, of `signature` (an error reply when `body` is one), unless the
/// caller asked for no reply.
pub async fn reply(
    conn: &Connection,
    call: &Message,
    body: fdo::Result<Vec<u8>>,
    signature: &str,
) -> zbus::Result<()> {
    let header = call.header();
    if header.primary().flags().contains(Flags::NO_REPLY_EXPECTED) {
        return Ok(());
    }
    let reply = match body {
        Ok(body) => {
            let mut builder = Message::method_return(&header).endian(ENDIAN);
            if let Some(name) = conn.unique_name() {
                builder = builder.sender(name);
            }
            // SAFETY: the body is an array of zbus's own serializations of each piece, laid
            // out as D-Bus lays out an array ([`Array`]; the tests of managed.rs and listed.rs
            // read bodies back as their signatures say).
            unsafe { builder.build_raw_body(&body, signature, Vec::new()) }?
        }
        Err(e) => zbus::DBusError::create_reply(&e, &header)?,
    };
    conn.send(&reply).await
}

/// `body` read back as the `T` its `signature` says, which must be the whole of it: what the
/// tests of the replies laid out of pieces check.
#[cfg(test)]
pub fn read_back<T: serde::de::DeserializeOwned>(body: &[u8], signature: &str) -> T {
    let data = Data::new(body, Context::new(ENDIAN, 0));
    let (decoded, read): (T, usize) = data.deserialize_for_signature(signature).unwrap();
    assert_eq!(read, body.len(), "the whole body is the array");
    decoded
}
