//! The internal snapshots a qcow2 image holds, read from its snapshot table without
//! qemu-img: a stopped VM's saved state is told whole or partial from them at every daemon
//! start, a VM at a time, and a process per file would be slow there.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The table's entries are at most this many (QEMU's own limit, QCOW_MAX_SNAPSHOTS).
const MAX_SNAPSHOTS: u32 = 65536;
/// Each entry: a fixed part of 40 bytes, its extra data, its id and its name, padded to 8.
const FIXED: usize = 40;
/// QEMU caps an entry's extra data at 1 KiB (QCOW_MAX_SNAPSHOT_EXTRA_DATA).
const MAX_EXTRA: usize = 1024;

/// One internal snapshot: its name (the tag) and the size of the VM state it carries (0
/// for a disk's share of a snapshot).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub name: String,
    pub vm_state_size: u64,
}

/// Where a qcow2 header says the snapshot table is, and how many entries it has; None for
/// what is no qcow2.
fn table_location(header: &[u8]) -> Option<(u32, u64)> {
    let field = |at: usize, n: usize| header.get(at..at + n);
    if field(0, 4)? != b"QFI\xfb" {
        return None;
    }
    let count = u32::from_be_bytes(field(60, 4)?.try_into().ok()?);
    let offset = u64::from_be_bytes(field(64, 8)?.try_into().ok()?);
    Some((count, offset))
}

/// The `count` entries of a snapshot table, read from `table` where it starts; None if it
/// is cut short or malformed. Pure on a byte slice (`&[u8]` is a reader).
pub fn parse_entries(mut table: impl Read, count: u32) -> Option<Vec<Snapshot>> {
    let mut found = Vec::new();
    let mut take = |n: usize| -> Option<Vec<u8>> {
        let mut buf = vec![0u8; n];
        table.read_exact(&mut buf).ok()?;
        Some(buf)
    };
    for i in 0..count {
        let fixed = take(FIXED)?;
        let u16_at = |i: usize| usize::from(u16::from_be_bytes([fixed[i], fixed[i + 1]]));
        let u32_at =
            |i: usize| u32::from_be_bytes([fixed[i], fixed[i + 1], fixed[i + 2], fixed[i + 3]]);
        let (id_len, name_len) = (u16_at(12), u16_at(14));
        let extra_len = usize::try_from(u32_at(36)).ok()?;
        if extra_len > MAX_EXTRA {
            return None;
        }
        let extra = take(extra_len)?;
        // Version 3 images keep the full size in the extra data; the old field is then
        // cut to 32 bits.
        let vm_state_size = match extra.get(0..8) {
            Some(large) => u64::from_be_bytes(large.try_into().ok()?),
            None => u64::from(u32_at(32)),
        };
        take(id_len)?;
        let name = take(name_len)?;
        found.push(Snapshot {
            name: String::from_utf8_lossy(&name).into_owned(),
            vm_state_size,
        });
        // The last entry's padding may be missing: qemu-img ends the file with its name.
        if i + 1 < count {
            let len = FIXED + extra_len + id_len + name_len;
            take(len.div_ceil(8) * 8 - len)?;
        }
    }
    Some(found)
}

/// The internal snapshots of the qcow2 image `image`; an error for what cannot be read
/// or is no qcow2.
pub fn read(image: &Path) -> std::io::Result<Vec<Snapshot>> {
    let bad = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: {what}", image.display()),
        )
    };
    let mut f = std::fs::File::open(image)?;
    let mut header = [0u8; 72];
    f.read_exact(&mut header)?;
    let (count, offset) = table_location(&header).ok_or_else(|| bad("not a qcow2 image"))?;
    if count > MAX_SNAPSHOTS {
        return Err(bad("too many snapshots in its table"));
    }
    if count == 0 {
        return Ok(Vec::new());
    }
    f.seek(SeekFrom::Start(offset))?;
    parse_entries(std::io::BufReader::new(f), count)
        .ok_or_else(|| bad("its snapshot table is cut short"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn entry(id: &str, name: &str, small: u32, extra: &[u8]) -> Vec<u8> {
        let mut e = vec![0u8; FIXED];
        e[12..14].copy_from_slice(&(id.len() as u16).to_be_bytes());
        e[14..16].copy_from_slice(&(name.len() as u16).to_be_bytes());
        e[32..36].copy_from_slice(&small.to_be_bytes());
        e[36..40].copy_from_slice(&(extra.len() as u32).to_be_bytes());
        e.extend_from_slice(extra);
        e.extend_from_slice(id.as_bytes());
        e.extend_from_slice(name.as_bytes());
        while !e.len().is_multiple_of(8) {
            e.push(0);
        }
        e
    }

    #[test]
    fn entries_with_and_without_extra_data() {
        let mut large = vec![0u8; 16];
        large[0..8].copy_from_slice(&(5u64 << 32).to_be_bytes());
        let mut table = entry("1", "gns3-saved", 7, &large);
        table.extend(entry("22", "x", 9, &[]));
        assert_eq!(
            parse_entries(&table[..], 2),
            Some(vec![
                Snapshot {
                    name: "gns3-saved".into(),
                    vm_state_size: 5 << 32
                },
                Snapshot {
                    name: "x".into(),
                    vm_state_size: 9
                },
            ])
        );
        assert_eq!(parse_entries(&table[..], 0), Some(vec![]));
        // A table cut anywhere is refused, never read past.
        // (The last entry's name ends 5 bytes before its padding does.)
        for cut in 0..table.len() - 5 {
            assert_eq!(parse_entries(&table[..cut], 2), None, "cut at {cut}");
        }
        assert_eq!(parse_entries(&table[..], 3), None);
    }

    #[test]
    fn what_is_no_qcow2_has_no_table() {
        assert_eq!(table_location(&[0u8; 72]), None);
        assert_eq!(table_location(b"QFI\xfb"), None);
    }

    /// Against what qemu-img writes, which the test command installs.
    #[test]
    fn the_snapshots_qemu_img_makes_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let img = dir.path().join("a.qcow2");
        let run = |args: &[&str]| {
            let out = Command::new("qemu-img").args(args).output().unwrap();
            assert!(out.status.success(), "qemu-img {args:?}: {out:?}");
        };
        let path = img.to_str().unwrap();
        run(&["create", "-q", "-f", "qcow2", path, "1M"]);
        assert_eq!(read(&img).unwrap(), vec![]);
        run(&["snapshot", "-c", "first", path]);
        run(&["snapshot", "-c", "gns3-saved", path]);
        let names: Vec<String> = read(&img).unwrap().into_iter().map(|s| s.name).collect();
        assert_eq!(names, ["first", "gns3-saved"]);
        run(&["snapshot", "-d", "first", path]);
        assert_eq!(
            read(&img).unwrap(),
            vec![Snapshot {
                name: "gns3-saved".into(),
                vm_state_size: 0
            }]
        );
        std::fs::write(dir.path().join("raw"), [0u8; 512]).unwrap();
        assert!(read(&dir.path().join("raw")).is_err());
    }
}
