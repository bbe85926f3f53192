//! A console's scrollback: the last `capacity` bytes the guest printed, in a file of the VM's
//! runtime dir. The file, not the daemon's heap, holds them, so they survive a daemon that is
//! killed and cost the daemon no memory; the runtime dir is a tmpfs, so a write is a copy
//! into memory, never a disk write.
//!
//! Layout: a header (magic, capacity, bytes ever written) then the ring. Each write puts the
//! data in first and the count after, so a daemon killed in between loses at most that
//! write, never the bytes before it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

const MAGIC: &[u8; 8] = b"gns3con1";
const HEADER: u64 = 24;

pub struct Ring {
    file: File,
    capacity: u64,
    /// Bytes ever written; the next goes at `total % capacity`.
    total: u64,
}

impl Ring {
    /// Opens the ring at `path`, keeping what a previous daemon left there (its last
    /// `capacity` bytes, if the capacity changed), or makes an empty one.
    pub fn open(path: &Path, capacity: u64) -> io::Result<Ring> {
        let capacity = capacity.max(1);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut ring = Ring {
            file,
            capacity,
            total: 0,
        };
        let mut header = [0u8; HEADER as usize];
        let kept = match ring.file.read_exact_at(&mut header, 0) {
            Ok(()) if &header[..8] == MAGIC => {
                let old = Ring {
                    file: ring.file.try_clone()?,
                    capacity: u64_at(&header, 8).max(1),
                    total: u64_at(&header, 16),
                };
                if old.capacity == capacity {
                    ring.total = old.total;
                    return Ok(ring);
                }
                old.tail(capacity)?
            }
            _ => Vec::new(),
        };
        ring.file.set_len(0)?;
        ring.write_header()?;
        ring.push(&kept)?;
        Ok(ring)
    }

    /// Appends `data`, dropping the oldest bytes past the capacity.
    pub fn push(&mut self, data: &[u8]) -> io::Result<()> {
        let skip = (data.len() as u64).saturating_sub(self.capacity);
        let data = &data[skip as usize..];
        let at = self.total.wrapping_add(skip) % self.capacity;
        let first = ((self.capacity - at) as usize).min(data.len());
        self.file.write_all_at(&data[..first], HEADER + at)?;
        self.file.write_all_at(&data[first..], HEADER)?;
        self.total = self.total.wrapping_add(skip + data.len() as u64);
        self.write_header()
    }

    /// The last `max` bytes (fewer if fewer were written).
    pub fn tail(&self, max: u64) -> io::Result<Vec<u8>> {
        let n = max.min(self.total).min(self.capacity);
        let start = (self.total - n) % self.capacity;
        let mut out = vec![0u8; n as usize];
        let first = ((self.capacity - start) as usize).min(out.len());
        self.file.read_exact_at(&mut out[..first], HEADER + start)?;
        self.file.read_exact_at(&mut out[first..], HEADER)?;
        Ok(out)
    }

    /// Bytes ever written.
    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    fn write_header(&self) -> io::Result<()> {
        let mut header = [0u8; HEADER as usize];
        header[..8].copy_from_slice(MAGIC);
        header[8..16].copy_from_slice(&self.capacity.to_le_bytes());
        header[16..].copy_from_slice(&self.total.to_le_bytes());
        self.file.write_all_at(&header, 0)
    }
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut n = [0u8; 8];
    n.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_bytes_across_wraps() {
        let dir = tempfile::tempdir().unwrap();
        let mut ring = Ring::open(&dir.path().join("c"), 10).unwrap();
        assert!(ring.tail(100).unwrap().is_empty());
        ring.push(b"abcdef").unwrap();
        assert_eq!(ring.tail(100).unwrap(), b"abcdef");
        ring.push(b"ghijkl").unwrap();
        assert_eq!(ring.tail(100).unwrap(), b"cdefghijkl");
        assert_eq!(ring.tail(3).unwrap(), b"jkl");
        ring.push(b"0123456789ABC").unwrap();
        assert_eq!(ring.tail(100).unwrap(), b"3456789ABC");
        ring.push(b"").unwrap();
        assert_eq!(ring.tail(4).unwrap(), b"9ABC");
    }

    #[test]
    fn found_again_by_the_next_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        let mut ring = Ring::open(&path, 8).unwrap();
        ring.push(b"hello world").unwrap();
        drop(ring);
        let mut ring = Ring::open(&path, 8).unwrap();
        assert_eq!(ring.tail(100).unwrap(), b"lo world");
        ring.push(b"!").unwrap();
        assert_eq!(ring.tail(100).unwrap(), b"o world!");
        drop(ring);
        // Another capacity: the last bytes are kept.
        let ring = Ring::open(&path, 4).unwrap();
        assert_eq!(ring.tail(100).unwrap(), b"rld!");
        drop(ring);
        let ring = Ring::open(&path, 64).unwrap();
        assert_eq!(ring.tail(100).unwrap(), b"rld!");
        // Not a ring: started afresh.
        std::fs::write(&path, b"garbage").unwrap();
        assert!(Ring::open(&path, 8).unwrap().tail(100).unwrap().is_empty());
    }
}
