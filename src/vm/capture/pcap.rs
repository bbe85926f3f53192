//! The pcap files QEMU's filter-dump writes, read back with their records' times put right.
//!
//! QEMU stamps a record with `start_ts + V`: the wall-clock second at `object-add`, plus
//! its virtual clock (see `clock.rs`). A record's V is its stamp minus `start_ts`; its wall
//! time is what the timeline makes of V. Pure functions over bytes, so that redoing the fix
//! from the same `.part` gives the same file.

use super::clock::Timeline;

pub const HEADER: usize = 24;
const RECORD: usize = 16;
const MAGIC: u32 = 0xa1b2_c3d4;

/// The byte order of a pcap file, from its magic number (QEMU writes the host's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Order {
    big: bool,
}

impl Order {
    /// The order of a file whose first bytes are `header`, if it is pcap (µs stamps).
    pub fn of(header: &[u8]) -> Option<Order> {
        let magic: [u8; 4] = header.get(..4)?.try_into().ok()?;
        if u32::from_le_bytes(magic) == MAGIC {
            Some(Order { big: false })
        } else if u32::from_be_bytes(magic) == MAGIC {
            Some(Order { big: true })
        } else {
            None
        }
    }

    fn read(self, b: &[u8], at: usize) -> u32 {
        let mut word = [0; 4];
        word.copy_from_slice(&b[at..at + 4]);
        if self.big {
            u32::from_be_bytes(word)
        } else {
            u32::from_le_bytes(word)
        }
    }

    fn write(self, b: &mut [u8], at: usize, v: u32) {
        let word = if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        b[at..at + 4].copy_from_slice(&word);
    }
}

/// The length of the complete record at the start of `b`, if there is one.
pub fn record_len(order: Order, b: &[u8]) -> Option<usize> {
    if b.len() < RECORD {
        return None;
    }
    let len = RECORD + order.read(b, 8) as usize;
    (b.len() >= len).then_some(len)
}

/// Puts the wall time on the record at the start of `record` (as long as [`record_len`]).
pub fn restamp(order: Order, record: &mut [u8], start_ts: i64, timeline: &Timeline) {
    let seconds = i64::from(order.read(record, 0));
    let micros = i64::from(order.read(record, 4));
    let virt = (seconds - start_ts) * 1_000_000 + micros;
    // Unknown (no RESUME seen): QEMU's own stamp stays.
    let Some(wall) = timeline.wall(virt) else {
        return;
    };
    let (s, us) = (wall.div_euclid(1_000_000), wall.rem_euclid(1_000_000));
    order.write(record, 0, u32::try_from(s).unwrap_or(0));
    order.write(record, 4, us as u32);
}

/// A whole file QEMU wrote (`.part`), with every complete record restamped; a record cut
/// short at the end (QEMU killed as it wrote) is left out. None if it is not pcap.
pub fn fixed(part: &[u8], start_ts: i64, timeline: &Timeline) -> Option<Vec<u8>> {
    let order = Order::of(part.get(..HEADER)?)?;
    let mut out = part.to_vec();
    let mut at = HEADER;
    while let Some(len) = record_len(order, &out[at..]) {
        restamp(order, &mut out[at..at + len], start_ts, timeline);
        at += len;
    }
    out.truncate(at);
    Some(out)
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A pcap file as QEMU writes it: `records` of (stamp s, stamp µs, frame).
    pub fn file(records: &[(u32, u32, &[u8])]) -> Vec<u8> {
        let mut b = Vec::new();
        for v in [MAGIC, 0x0004_0002, 0, 0, 65535, 1] {
            b.extend(v.to_le_bytes());
        }
        for (s, us, frame) in records {
            for v in [*s, *us, frame.len() as u32, frame.len() as u32] {
                b.extend(v.to_le_bytes());
            }
            b.extend(*frame);
        }
        b
    }

    #[test]
    fn records_get_the_wall_time_of_their_virtual_time() {
        let mut t = Timeline::default();
        // start_ts 1000; the guest ran from wall 900.5 s, paused at V=20 s for 30 s.
        t.resumed(900_500_000);
        t.stopped(920_500_000);
        t.resumed(950_500_000);
        let part = file(&[(1003, 250_000, b"abc"), (1021, 0, b"de")]);
        let mut cut = part.clone();
        cut.extend([1, 2, 3]);
        let out = fixed(&cut, 1000, &t).unwrap();
        assert_eq!(
            out,
            fixed(&part, 1000, &t).unwrap(),
            "a cut record is left out"
        );
        assert_eq!(&out[..HEADER], &part[..HEADER]);
        assert_eq!(out, file(&[(903, 750_000, b"abc"), (951, 500_000, b"de")]));
        assert_eq!(fixed(&out[..10], 1000, &t), None);
        assert_eq!(fixed(b"not a pcap file at all, no", 1000, &t), None);
    }
}
