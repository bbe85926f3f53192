//! The user's extra QEMU options (`Options`): split as a shell would, and kept away from
//! what the daemon itself must own for the VM to be controllable.

use super::error::{Error, Result};

/// Splits `Options` into arguments. Quotes and backslashes work as in a POSIX shell, a `#`
/// that starts a word comments out the rest of its line, and a backslash-newline joins two
/// lines; nothing is expanded.
pub fn split(options: &str) -> Result<Vec<String>> {
    let unsplittable = || {
        Error::InvalidArgument(format!(
            "Options '{}' cannot be split into arguments: a quote is not closed or a backslash ends it",
            super::error::shown(options)
        ))
    };
    let mut words = Vec::new();
    // None between words: a word begins with its first character or quote, so `''` is an
    // empty argument, while blanks and line continuations make none.
    let mut word: Option<String> = None;
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => words.extend(word.take()),
            '#' if word.is_none() => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            // A continuation is no character: between blanks it must not make an empty
            // argument, which QEMU takes for a drive without media and refuses to start.
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err(unsplittable()),
            },
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err(unsplittable()),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('$' | '`' | '"' | '\\')) => w.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => return Err(unsplittable()),
                        },
                        Some(c) => w.push(c),
                        None => return Err(unsplittable()),
                    }
                }
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(words)
}

/// What the placeholders of `Options` stand for at Start.
pub struct Placeholders<'a> {
    pub vm_name: &'a str,
    pub vm_id: &'a str,
    pub project: &'a str,
    pub vm_dir: &'a str,
    pub console_port: u16,
}

/// Each argument with `%vm-name%`, `%vm-id%`, `%project%`, `%vm-dir%` and
/// `%console-port%` replaced, as GNS3 does; any other `%word%` is left as it is. Expanded
/// after splitting, so a value with blanks or quotes stays within its argument.
pub fn expand(args: Vec<String>, p: &Placeholders<'_>) -> Vec<String> {
    let port = p.console_port.to_string();
    let values = [
        ("%vm-name%", p.vm_name),
        ("%vm-id%", p.vm_id),
        ("%project%", p.project),
        ("%vm-dir%", p.vm_dir),
        ("%console-port%", port.as_str()),
    ];
    args.into_iter()
        .map(|arg| {
            if !arg.contains('%') {
                return arg;
            }
            // One pass: a value that itself holds a placeholder is not expanded again.
            let mut out = String::with_capacity(arg.len());
            let mut rest = arg.as_str();
            while let Some(at) = rest.find('%') {
                out.push_str(&rest[..at]);
                rest = &rest[at..];
                match values.iter().find(|(k, _)| rest.starts_with(k)) {
                    Some((k, v)) => {
                        out.push_str(v);
                        rest = &rest[k.len()..];
                    }
                    None => {
                        out.push('%');
                        rest = &rest[1..];
                    }
                }
            }
            out.push_str(rest);
            out
        })
        .collect()
}

/// Refuses options that would take the VM, its console or its monitor away from the daemon.
pub fn check(options: &str) -> Result<()> {
    check_args(&split(options)?)
}

/// [`check`] of arguments already split (and expanded: a VM's name may be `-S`).
pub fn check_args(args: &[String]) -> Result<()> {
    for arg in args {
        // QEMU accepts `--opt` as well as `-opt`.
        let Some(opt) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            continue;
        };
        let why = match opt {
            "qmp" | "qmp-pretty" => {
                "the daemon controls the VM through its own QMP socket; a second one could stop or reconfigure it behind the daemon's back"
            }
            "pidfile" => "the daemon writes the pid file itself, to find the VM again after a restart",
            "daemonize" => "QEMU must stay the daemon's child so that its exit is seen at once",
            "S" => "the daemon already starts QEMU paused and resumes it once the VM is set up",
            "sandbox" => {
                "the daemon puts QEMU in its seccomp sandbox (qemu_sandbox in the daemon's configuration); a second -sandbox would loosen it"
            }
            // QEMU's HMP monitor runs commands on the host; the daemon serves it only to
            // those who may drive the VM.
            "monitor" | "mon" => {
                "the monitor is the daemon's: HumanMonitorCommand over D-Bus, or MonitorPort for a telnet client"
            }
            "vnc" | "spice" => {
                "the display is the daemon's, served only to whom may reach the VM: set Display to vnc (and a VncPort)"
            }
            "nographic" => {
                "it moves the console and a monitor to stdio, away from the daemon (the VM has no display unless Display is set)"
            }
            _ => continue,
        };
        return Err(Error::InvalidArgument(format!(
            "Options may not contain '{arg}': {why}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_like_a_shell() {
        assert_eq!(
            split(r#"-cpu host -append "a b" 'c d' e\ f"#).unwrap(),
            ["-cpu", "host", "-append", "a b", "c d", "e f"]
        );
        assert!(split("").unwrap().is_empty());
        assert!(matches!(split("-name 'x"), Err(Error::InvalidArgument(_))));
        assert_eq!(split(r#"-name '' "" x''"#).unwrap(), ["-name", "", "", "x"]);
        assert_eq!(
            split("-m 1 # the rest\n-smp 2 a#b").unwrap(),
            ["-m", "1", "-smp", "2", "a#b"]
        );
        assert_eq!(split(r#""\$x \a" \""#).unwrap(), ["$x \\a", "\""]);
    }

    /// fuzz/regressions/options_split/: a line continuation between blanks was split as an
    /// empty argument, and one before a `#` kept the comment as arguments.
    #[test]
    fn line_continuations_make_no_argument() {
        assert_eq!(
            split("-cpu host \\\n  -smp 4 # cores\n-m 512").unwrap(),
            ["-cpu", "host", "-smp", "4", "-m", "512"]
        );
        assert_eq!(split("-m 512 \\\n# note").unwrap(), ["-m", "512"]);
        assert_eq!(split("a \\\n").unwrap(), ["a"]);
        assert_eq!(split("a\\\nb \"c\\\nd\"").unwrap(), ["ab", "cd"]);
        assert_eq!(split("'a\\\nb'").unwrap(), ["a\\\nb"]);
    }

    #[test]
    fn placeholders_are_expanded_once_and_unknown_ones_kept() {
        let p = Placeholders {
            vm_name: "r1",
            vm_id: "%vm-name%",
            project: "lab a",
            vm_dir: "/var/lib/gns3-qemud/vms/ab",
            console_port: 5000,
        };
        let args = split(
            "-serial telnet::%console-port%,server=on -name '%project%/%vm-name%' \\
             -drive file=%vm-dir%/x.img -smbios type=1,serial=%vm-id% 100%% %other% %",
        )
        .unwrap();
        assert_eq!(
            expand(args, &p),
            [
                "-serial",
                "telnet::5000,server=on",
                "-name",
                "lab a/r1",
                "-drive",
                "file=/var/lib/gns3-qemud/vms/ab/x.img",
                "-smbios",
                "type=1,serial=%vm-name%",
                "100%%",
                "%other%",
                "%"
            ]
        );
    }

    #[test]
    fn refuses_what_the_daemon_owns() {
        for bad in [
            "-qmp unix:/x",
            "--qmp tcp::1",
            "-pidfile /x",
            "-daemonize",
            "-S",
            "-sandbox off",
            "-nographic",
            "-vnc :1",
            "-spice port=5930",
        ] {
            let e = check(bad).unwrap_err().to_string();
            assert!(e.contains("may not contain"), "{bad}: {e}");
        }
        for monitor in ["-monitor stdio", "-mon chardev=c,mode=readline"] {
            let e = check(monitor).unwrap_err().to_string();
            assert!(e.contains("HumanMonitorCommand"), "{monitor}: {e}");
        }
        // A second serial port is the guest's ttyS1; the console stays ttyS0.
        assert!(check("-serial null -cpu max -smp 2 -vga std").is_ok());
        // a value that merely looks like an option name is an argument, not an option
        assert!(check("-name qmp").is_ok());
    }
}
