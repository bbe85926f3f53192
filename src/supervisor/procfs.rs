//! What `/proc` tells of processes: who runs, with which arguments, and the fields of their
//! `stat` line.

/// Every pid in `/proc` now.
pub fn pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The arguments `pid` was started with; none if it is gone (or a kernel thread).
pub fn args(pid: u32) -> Vec<Vec<u8>> {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return Vec::new();
    };
    cmdline
        .strip_suffix(&[0])
        .unwrap_or(&cmdline)
        .split(|&b| b == 0)
        .map(<[u8]>::to_vec)
        .collect()
}

/// Whether `pid` runs: it is in /proc and not a zombie.
pub fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat_field(&stat, 3).is_some_and(|state| state != "Z"))
}

/// Field `n` of a stat line, numbered as in proc(5) (3 is the state); None for 1 and 2.
/// The command name (field 2) may hold spaces and parentheses, so fields are counted from
/// the last ')'.
pub fn stat_field(stat: &str, n: usize) -> Option<&str> {
    stat[stat.rfind(')')? + 1..]
        .split_whitespace()
        .nth(n.checked_sub(3)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_counted_after_an_odd_command_name() {
        let stat = "4242 (qemu (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 3 0 0 20 -5 3 0 123 0";
        assert_eq!(stat_field(stat, 3), Some("S"));
        assert_eq!(stat_field(stat, 19), Some("-5"));
        assert_eq!(stat_field(stat, 22), Some("123"));
        assert_eq!(stat_field(stat, 2), None);
        assert_eq!(stat_field("garbage", 3), None);
    }

    #[test]
    fn our_own_arguments_are_read_back() {
        let me = std::process::id();
        assert!(pids().contains(&me));
        let mine = args(me);
        let exe = std::env::args_os().next().unwrap();
        assert_eq!(
            mine.first().map(Vec::as_slice),
            Some(exe.as_encoded_bytes())
        );
        assert!(args(u32::MAX).is_empty());
        assert!(running(me));
        assert!(!running(u32::MAX));
    }
}
