//! The free ports of a pool, one bit each: a fixed table made once, so that ports taken and
//! given back never scatter small allocations over the heap (a tree's nodes did, and pinned
//! pages of it after ten thousand VMs were deleted), and the lowest free port at or after
//! any port is found in a few word operations, whatever the number of VMs.

use std::ops::RangeInclusive;

const WORDS: usize = (u16::MAX as usize + 1) / 64;

pub struct Free {
    /// Bit `p % 64` of word `p / 64`: port `p` is free.
    words: Box<[u64; WORDS]>,
    /// Bit `w % 64` of entry `w / 64`: word `w` has a free port.
    summary: [u64; WORDS / 64],
}

impl Free {
    /// Every port of `range` free.
    pub fn new(range: RangeInclusive<u16>) -> Free {
        let mut free = Free {
            words: Box::new([0; WORDS]),
            summary: [0; WORDS / 64],
        };
        for port in range {
            free.insert(port);
        }
        free
    }

    pub fn insert(&mut self, port: u16) {
        let w = usize::from(port) / 64;
        self.words[w] |= 1 << (port % 64);
        self.summary[w / 64] |= 1 << (w % 64);
    }

    pub fn remove(&mut self, port: u16) {
        let w = usize::from(port) / 64;
        self.words[w] &= !(1 << (port % 64));
        if self.words[w] == 0 {
            self.summary[w / 64] &= !(1 << (w % 64));
        }
    }

    /// The lowest free port at or after `from`.
    pub fn first_from(&self, from: u16) -> Option<u16> {
        let w = usize::from(from) / 64;
        let here = self.words[w] & (!0u64 << (from % 64));
        if here != 0 {
            return Some(port(w, here));
        }
        let next = w + 1;
        let mut s = next / 64;
        let mut bits = match self.summary.get(s) {
            Some(bits) => bits & (!0u64 << (next % 64)),
            None => return None,
        };
        loop {
            if bits != 0 {
                let w = s * 64 + bits.trailing_zeros() as usize;
                return Some(port(w, self.words[w]));
            }
            s += 1;
            bits = *self.summary.get(s)?;
        }
    }

    pub fn len(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }
}

impl std::fmt::Debug for Free {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Free({} ports)", self.len())
    }
}

/// The lowest port of word `w` whose bit is set in `bits` (not 0).
fn port(w: usize, bits: u64) -> u16 {
    (w * 64 + bits.trailing_zeros() as usize) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_lowest_free_port_at_or_after_any_port() {
        let mut f = Free::new(5000..=20000);
        assert_eq!(f.len(), 15001);
        assert_eq!(f.first_from(0), Some(5000));
        assert_eq!(f.first_from(7777), Some(7777));
        for p in 5000..=19999 {
            f.remove(p);
        }
        assert_eq!(f.first_from(0), Some(20000), "past 235 empty words");
        f.remove(20000);
        assert_eq!(f.first_from(0), None);
        f.insert(6400);
        f.insert(6401);
        assert_eq!(f.first_from(6400), Some(6400));
        assert_eq!(f.first_from(6401), Some(6401));
        assert_eq!(f.first_from(6402), None);
        f.remove(6400);
        assert_eq!(f.first_from(0), Some(6401));
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn the_ends_of_the_port_space() {
        let mut f = Free::new(1..=u16::MAX);
        assert_eq!(f.first_from(0), Some(1));
        assert_eq!(f.first_from(u16::MAX), Some(u16::MAX));
        for p in 1..u16::MAX {
            f.remove(p);
        }
        assert_eq!(f.first_from(1), Some(u16::MAX));
        f.remove(u16::MAX);
        assert_eq!(f.first_from(0), None);
        assert_eq!(f.first_from(u16::MAX), None);
    }
}
