//! Lines of `/proc/<pid>/stat`. The command name (field 2) may hold spaces and parentheses,
//! so fields are counted from the last ')'.

/// Field `n` of a stat line, numbered as in proc(5) (3 is the state); None for 1 and 2.
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
}
