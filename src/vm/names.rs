//! A sorted set of names in one string, for what a QEMU binary offers (`binary`).
//!
//! A binary is asked lazily, so often once the heap holds thousands of VMs (after a restart
//! that loaded them); its ~800 names as Strings in trees land in as many holes of that heap,
//! and once the VMs are deleted each pins the page it lies in: 3 MiB after deleting 10 000.
//! Here a set is two allocations.

/// Names, sorted and without repeats, laid end to end.
#[derive(Debug, Default, PartialEq)]
pub struct Names {
    text: Box<str>,
    /// Where each name ends in `text`.
    ends: Box<[u32]>,
}

impl Names {
    fn get(&self, i: usize) -> &str {
        let start = match i {
            0 => 0,
            _ => self.ends[i - 1] as usize,
        };
        &self.text[start..self.ends[i] as usize]
    }

    pub fn contains(&self, name: &str) -> bool {
        let (mut low, mut high) = (0, self.ends.len());
        while low < high {
            let middle = low + (high - low) / 2;
            match self.get(middle).cmp(name) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => return true,
            }
        }
        false
    }

    /// In order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        (0..self.ends.len()).map(|i| self.get(i))
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

impl<S: AsRef<str>> FromIterator<S> for Names {
    fn from_iter<I: IntoIterator<Item = S>>(names: I) -> Names {
        let names: Vec<S> = names.into_iter().collect();
        let mut sorted: Vec<&str> = names.iter().map(AsRef::as_ref).collect();
        sorted.sort_unstable();
        sorted.dedup();
        let mut text = String::with_capacity(sorted.iter().map(|n| n.len()).sum());
        let mut ends = Vec::with_capacity(sorted.len());
        for name in sorted {
            text.push_str(name);
            // Names are a few thousand bytes of QEMU's help in all, far below 4 GiB.
            ends.push(u32::try_from(text.len()).unwrap_or(u32::MAX));
        }
        Names {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_sorted_once_each_and_found() {
        let names: Names = ["virtio-net-pci", "e1000", "", "e1000", "ahci"]
            .into_iter()
            .collect();
        assert_eq!(
            names.iter().collect::<Vec<_>>(),
            ["", "ahci", "e1000", "virtio-net-pci"]
        );
        for name in ["", "ahci", "e1000", "virtio-net-pci"] {
            assert!(names.contains(name), "{name}");
        }
        for name in ["e100", "e10000", "virtio", "z"] {
            assert!(!names.contains(name), "{name}");
        }
        assert!(Names::default().is_empty() && !Names::default().contains(""));
    }
}
