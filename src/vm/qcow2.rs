//! qcow2 images written and read without qemu-img, for what a Start needs often and
//! qemu-img makes slowly (a process each): the blank flash disk, a linked clone's empty
//! overlay, and the backing file an overlay names. Laid out as qemu-img lays them out
//! (version 3, 64 KiB clusters, 16-bit refcounts); qemu-img checks them in the tests.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

const CLUSTER: u64 = 1 << 16;
const HEADER_LEN: u64 = 104;
/// The header extension that names the backing file's format, so QEMU never probes it.
const BACKING_FORMAT: u32 = 0xe279_2aca;
/// The format caps a backing file's name at 1023 bytes.
const MAX_NAME: usize = 1023;

/// An empty image of `size` bytes: the header, the refcount table, one refcount block, then
/// the L1 table; no L2 table and no data until the guest writes.
pub fn blank(size: u64) -> Vec<u8> {
    image(size, None)
}

/// An empty overlay of `size` bytes on `backing` (its name, written as given) of `format`;
/// None for a name the format cannot hold.
pub fn overlay(size: u64, backing: &str, format: &str) -> Option<Vec<u8>> {
    (!backing.is_empty() && backing.len() <= MAX_NAME && format.len() < 256)
        .then(|| image(size, Some((backing, format))))
}

fn image(size: u64, backing: Option<(&str, &str)>) -> Vec<u8> {
    const L2_COVERS: u64 = CLUSTER * (CLUSTER / 8);
    let l1_entries = size.div_ceil(L2_COVERS);
    let l1_offset = 3 * CLUSTER;
    let clusters = 3 + (l1_entries * 8).div_ceil(CLUSTER);
    let mut f = vec![0u8; (l1_offset + l1_entries * 8) as usize];
    let mut put = |at: u64, bytes: &[u8]| {
        f[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
    };
    put(0, b"QFI\xfb");
    put(4, &3u32.to_be_bytes()); // version
    put(20, &16u32.to_be_bytes()); // cluster_bits
    put(24, &size.to_be_bytes());
    put(36, &(l1_entries as u32).to_be_bytes());
    put(40, &l1_offset.to_be_bytes());
    put(48, &CLUSTER.to_be_bytes()); // refcount_table_offset
    put(56, &1u32.to_be_bytes()); // refcount_table_clusters
    put(96, &4u32.to_be_bytes()); // refcount_order: 16 bits
    put(100, &(HEADER_LEN as u32).to_be_bytes());
    // The header extensions follow the header, the last an end mark (0s); the backing
    // file's name comes after them, all in the first cluster.
    if let Some((name, format)) = backing {
        put(HEADER_LEN, &BACKING_FORMAT.to_be_bytes());
        put(HEADER_LEN + 4, &(format.len() as u32).to_be_bytes());
        put(HEADER_LEN + 8, format.as_bytes());
        let name_at = HEADER_LEN + 8 + (format.len() as u64).next_multiple_of(8) + 8;
        put(name_at, name.as_bytes());
        put(8, &name_at.to_be_bytes());
        put(16, &(name.len() as u32).to_be_bytes());
    }
    put(CLUSTER, &(2 * CLUSTER).to_be_bytes()); // the refcount block
    for c in 0..clusters {
        put(2 * CLUSTER + 2 * c, &1u16.to_be_bytes());
    }
    f
}

/// The size the guest sees of an image of `format`, for the formats that say it plainly: a
/// raw file's length (if whole sectors, as QEMU counts it), a qcow2's header. None for others.
pub fn virtual_size(image: &Path, format: &str) -> Option<u64> {
    match format {
        "raw" => {
            let len = std::fs::metadata(image).ok()?.len();
            (len % 512 == 0).then_some(len)
        }
        "qcow2" => {
            let mut header = [0u8; 32];
            std::fs::File::open(image)
                .ok()?
                .read_exact(&mut header)
                .ok()?;
            let size = u64::from_be_bytes(header[24..32].try_into().ok()?);
            (header[..4] == *b"QFI\xfb").then_some(size)
        }
        _ => None,
    }
}

/// Where a qcow2 header (big-endian) says the backing file's name is: its offset (bytes 8..16)
/// and length (16..20); None without a backing file or for what is no qcow2.
fn backing_location(header: &[u8]) -> Option<(u64, usize)> {
    let field = |at: usize, n: usize| header.get(at..at + n);
    if field(0, 4)? != b"QFI\xfb" {
        return None;
    }
    let offset = u64::from_be_bytes(field(8, 8)?.try_into().ok()?);
    let len = u32::from_be_bytes(field(16, 4)?.try_into().ok()?);
    (offset != 0 && (1..=MAX_NAME as u32).contains(&len)).then_some((offset, len as usize))
}

/// The base image an overlay was made from.
pub fn backing_file(image: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let mut f = std::fs::File::open(image)?;
    let mut header = [0u8; 20];
    f.read_exact(&mut header)?;
    let Some((offset, len)) = backing_location(&header) else {
        return Ok(None);
    };
    let mut name = vec![0u8; len];
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(&mut name)?;
    Ok(Some(name))
}

/// These need qemu-img, which the test command installs.
#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn qemu_img(args: &[&str]) -> Vec<u8> {
        let out = Command::new("qemu-img")
            .args(args)
            .output()
            .expect("qemu-img (qemu-utils)");
        assert!(out.status.success(), "qemu-img {args:?}: {out:?}");
        out.stdout
    }

    fn info(image: &Path) -> serde_json::Value {
        let out = qemu_img(&["info", "--output=json", &image.to_string_lossy()]);
        serde_json::from_slice(&out).unwrap()
    }

    /// Sound (`qemu-img check` fails otherwise), of its size, and as qemu-img makes it.
    #[test]
    fn a_blank_image_is_a_sound_qcow2_as_qemu_img_makes_it() {
        let dir = tempfile::tempdir().unwrap();
        let size = 128 << 20;
        let ours = dir.path().join("ours.qcow2");
        std::fs::write(&ours, blank(size)).unwrap();
        let theirs = dir.path().join("theirs.qcow2");
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            &theirs.to_string_lossy(),
            "128M",
        ]);
        for image in [&ours, &theirs] {
            qemu_img(&["check", &image.to_string_lossy()]);
            let info = info(image);
            assert_eq!(info["virtual-size"], size, "{info}");
            assert_eq!(info["format"], "qcow2");
            assert_eq!(info["cluster-size"], 65536);
        }
        let len = |p: &Path| std::fs::metadata(p).unwrap().len();
        assert_eq!(len(&ours), len(&theirs));
        assert_eq!(backing_file(&ours).unwrap(), None);
        assert_eq!(virtual_size(&ours, "qcow2"), Some(size));
    }

    /// On a raw and on a qcow2 base (of a size that needs two L2 tables: 600 MiB), the
    /// format's name padded both ways, with names of eight lengths: what qemu-img reads is what was asked, and
    /// what the guest reads through it is the base's.
    #[test]
    fn an_overlay_names_its_backing_file_and_format_and_reads_as_its_base() {
        let dir = tempfile::tempdir().unwrap();
        let mut raw_base = vec![0u8; 1 << 20];
        raw_base[..9].copy_from_slice(b"BASE-DATA");
        let raw = dir.path().join("base.raw");
        std::fs::write(&raw, &raw_base).unwrap();
        let qcow = dir.path().join("base.qcow2");
        qemu_img(&[
            "create",
            "-q",
            "-f",
            "qcow2",
            &qcow.to_string_lossy(),
            "600M",
        ]);
        for (base, format) in [(&raw, "raw"), (&qcow, "qcow2")] {
            let size = virtual_size(base, format).unwrap();
            for pad in 0..8 {
                // A name of another length each time: a symlink to the base.
                let linked = dir.path().join(format!("{}{format}.link", "l".repeat(pad)));
                std::os::unix::fs::symlink(base, &linked).unwrap();
                let backing = linked.to_string_lossy().into_owned();
                let over = dir.path().join(format!("over-{format}-{pad}.qcow2"));
                std::fs::write(&over, overlay(size, &backing, format).unwrap()).unwrap();
                qemu_img(&["check", &over.to_string_lossy()]);
                let info = info(&over);
                assert_eq!(info["virtual-size"], size, "{info}");
                assert_eq!(info["backing-filename"], backing.as_str(), "{info}");
                assert_eq!(info["backing-filename-format"], format, "{info}");
                assert_eq!(
                    backing_file(&over).unwrap().as_deref(),
                    Some(backing.as_bytes())
                );
            }
        }
        let over = dir.path().join("over-raw-0.qcow2");
        let read = dir.path().join("read.raw");
        qemu_img(&[
            "convert",
            "-O",
            "raw",
            &over.to_string_lossy(),
            &read.to_string_lossy(),
        ]);
        assert_eq!(std::fs::read(&read).unwrap(), raw_base);
        assert_eq!(overlay(1, &"n".repeat(1024), "raw"), None);
    }

    #[test]
    fn the_backing_file_is_read_from_the_qcow2_header() {
        let mut header = b"QFI\xfb\0\0\0\x03".to_vec();
        header.extend(0x1234u64.to_be_bytes());
        header.extend(17u32.to_be_bytes());
        assert_eq!(backing_location(&header), Some((0x1234, 17)));
        let mut none = header.clone();
        none[8..16].fill(0);
        assert_eq!(backing_location(&none), None);
        let mut raw = header.clone();
        raw[0] = b'X';
        assert_eq!(backing_location(&raw), None);
        assert_eq!(backing_location(&header[..12]), None);
    }

    #[test]
    fn a_virtual_size_is_read_only_where_the_format_says_it_plainly() {
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("odd.raw");
        std::fs::write(&odd, [0u8; 1000]).unwrap();
        assert_eq!(virtual_size(&odd, "raw"), None);
        assert_eq!(virtual_size(&odd, "qcow2"), None);
        assert_eq!(virtual_size(&odd, "vmdk"), None);
    }
}
