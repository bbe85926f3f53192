//! gns3-qemuctl(1), generated: the synopsis and the global options by clap_mangen, a section
//! per command with every one of its arguments from the clap definition, and the prose clap
//! does not hold (description, exit status, environment, files, examples) written here.
//! Generated rather than hand-written like the daemon's pages because the commands grow
//! often: a hand-written page checked by a test would only say that it drifted, this one is
//! rewritten by one command (see `generated.rs`).

use clap::{Arg, ArgAction, Command, CommandFactory};
use clap_mangen::Man;

use crate::cli::Cli;

/// The page, as shipped in packaging/gns3-qemuctl/gns3-qemuctl.1.
pub fn render() -> std::io::Result<String> {
    let mut cmd = Cli::command();
    cmd.build();
    let man = Man::new(cmd.clone())
        .title("GNS3-QEMUCTL")
        .section("1")
        .date(changelog_date(CHANGELOG))
        .source(format!("gns3-qemuctl {}", env!("CARGO_PKG_VERSION")))
        .manual("User Commands");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    out.extend_from_slice(DESCRIPTION.as_bytes());
    man.render_options_section(&mut out)?;
    let mut text = String::from_utf8(out).map_err(std::io::Error::other)?;
    text.push_str(".SH COMMANDS\n");
    for sub in subcommands(&cmd) {
        command(&mut text, &[], sub);
    }
    text.push_str(REST);
    Ok(text)
}

/// A command's `.SS` (its synopsis), its about, and a `.TP` for each of its arguments;
/// subcommands of its own follow as `PARENT NAME`.
fn command(out: &mut String, parents: &[&str], cmd: &Command) {
    let mut path = parents.to_vec();
    path.push(cmd.get_name());
    let own: Vec<&Arg> = cmd.get_arguments().filter(|a| shown(a)).collect();
    let mut synopsis = vec![format!("\\fB{}\\fR", esc(&path.join(" ")))];
    synopsis.extend(own.iter().filter(|a| !a.is_positional()).map(|a| usage(a)));
    synopsis.extend(own.iter().filter(|a| a.is_positional()).map(|a| usage(a)));
    out.push_str(&format!(
        ".SS \"{}\"\n",
        synopsis.join(" ").replace('"', "\\(dq")
    ));
    if let Some(about) = cmd.get_long_about().or(cmd.get_about()) {
        out.push_str(&paragraph(&about.to_string()));
    }
    for arg in own {
        out.push_str(".TP\n");
        out.push_str(&format!("{}\n", name(arg)));
        let mut help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        let values: Vec<String> = arg
            .get_possible_values()
            .iter()
            .filter(|v| !v.is_hide_set())
            .map(|v| v.get_name().to_string())
            .collect();
        let extra =
            !values.is_empty() || (takes_value(arg) && !arg.get_default_values().is_empty());
        if extra && !help.is_empty() && !help.ends_with(['.', '!', '?', ')']) {
            help.push('.');
        }
        if !values.is_empty() {
            help.push_str(&format!(" One of: {}.", values.join(", ")));
        }
        let defaults: Vec<String> = arg
            .get_default_values()
            .iter()
            .map(|v| v.to_string_lossy().into_owned())
            .collect();
        if takes_value(arg) && !defaults.is_empty() {
            help.push_str(&format!(" Default: {}.", defaults.join(", ")));
        }
        out.push_str(&paragraph(help.trim()));
    }
    for sub in subcommands(cmd) {
        command(out, &path, sub);
    }
}

/// The commands a command lists: not clap's own `help`, which --help covers.
fn subcommands(cmd: &Command) -> impl Iterator<Item = &Command> {
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
}

/// The page's date: the package version's, from the top entry of the Debian changelog
/// (` -- NAME <MAIL>  Wed, 25 Nov 2026 10:30:00 +0000` gives 2026-11-25), so that the
/// generated page changes with a release and not with the day it is generated.
fn changelog_date(changelog: &str) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let date = changelog
        .lines()
        .find_map(|l| l.strip_prefix(" -- ")?.split_once(">  ").map(|(_, d)| d))
        .unwrap_or_default();
    let words: Vec<&str> = date.split_whitespace().collect();
    match words.as_slice() {
        [_, day, month, year, ..] => match MONTHS.iter().position(|m| m == month) {
            Some(m) => format!("{year}-{:02}-{:0>2}", m + 1, day),
            None => String::new(),
        },
        _ => String::new(),
    }
}

const CHANGELOG: &str = include_str!("../../packaging/debian/changelog");

/// The arguments a command lists: its own, not the global ones nor --help.
fn shown(arg: &Arg) -> bool {
    !arg.is_hide_set() && !arg.is_global_set() && arg.get_id() != "help"
}

/// `-p, --property PROP` (bold option, italic value) or `VM...` for a positional.
fn name(arg: &Arg) -> String {
    if arg.is_positional() {
        return value(arg);
    }
    let mut names = Vec::new();
    if let Some(s) = arg.get_short() {
        names.push(format!("\\fB\\-{}\\fR", esc(&s.to_string())));
    }
    if let Some(l) = arg.get_long() {
        names.push(format!("\\fB\\-\\-{}\\fR", esc(l)));
    }
    let mut text = names.join(", ");
    if takes_value(arg) {
        text.push(' ');
        text.push_str(&value(arg));
    }
    text
}

fn usage(arg: &Arg) -> String {
    let text = if arg.is_positional() {
        value(arg)
    } else {
        let flag = match (arg.get_long(), arg.get_short()) {
            (Some(l), _) => format!("\\fB\\-\\-{}\\fR", esc(l)),
            (None, Some(s)) => format!("\\fB\\-{}\\fR", esc(&s.to_string())),
            (None, None) => String::new(),
        };
        if takes_value(arg) {
            format!("{flag} {}", value(arg))
        } else {
            flag
        }
    };
    if arg.is_required_set() {
        text
    } else {
        format!("[{text}]")
    }
}

fn takes_value(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Set | ArgAction::Append)
}

/// The value's name in italics, with `...` where it may be given more than once.
fn value(arg: &Arg) -> String {
    let names = arg
        .get_value_names()
        .map(|n| n.iter().map(|n| n.to_string()).collect::<Vec<_>>())
        .unwrap_or_else(|| vec![arg.get_id().as_str().to_uppercase()]);
    let many = arg.get_num_args().is_some_and(|n| n.max_values() > 1)
        || matches!(arg.get_action(), ArgAction::Append);
    let text: Vec<String> = names
        .iter()
        .map(|n| format!("\\fI{}\\fR", esc(n)))
        .collect();
    format!("{}{}", text.join(" "), if many { "..." } else { "" })
}

/// Help text as roff lines: `Prop=Value` and `--x` kept literal, each sentence of clap's on
/// the lines it has.
fn paragraph(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            out.push_str(".IP\n");
        } else {
            out.push_str(&esc(line.trim()));
            out.push('\n');
        }
    }
    out
}

/// Text as roff: backslashes and hyphens escaped, a line never starting a request.
fn esc(text: &str) -> String {
    let t = text.replace('\\', "\\e").replace('-', "\\-");
    if t.starts_with('.') || t.starts_with('\'') {
        format!("\\&{t}")
    } else {
        t
    }
}

const DESCRIPTION: &str = r#".SH DESCRIPTION
.B gns3\-qemuctl
creates, configures and drives the QEMU virtual machines of
.BR gns3\-qemud (8)
over D\-Bus, on the system bus, a bus at
.BR \-\-address ,
or a remote host's system bus through ssh
.RB ( \-H ).
Root and the members of the group
.B gns3
may use it.
A VM is named by its name or its id; commands that take several VMs act on them
all at once and report each failure.
Settings are the properties of the interface
.B org.gns3.Qemu.VM
(see
.IR /usr/share/dbus\-1/interfaces/org.gns3.Qemu.VM.xml ),
written
.IR Prop = Value
with the value in the property's type.
.PP
Tables are for people, with a header and a footer
.RB ( \-\-no\-legend
leaves them out);
.B \-\-json
prints every field for programs.
Colours are used only on a terminal, and never with
.BR NO_COLOR .
"#;

const REST: &str = r#".SH EXIT STATUS
.TP
.B 0
Done.
.TP
.B 1
Refused or failed: the daemon's error is on stderr, by its D\-Bus name
(\fBFailed to start r1: org.gns3.Qemu.Error.StartFailed: ...\fR).
When the bus denies access, a line says how to join the group
.BR gns3 ;
when the daemon is not running, how to start it.
.TP
.B 2
A usage error: an unknown command or option, or an argument missing.
.TP
.B 3
Not running, or
.B wait
timed out, or
.B stop \-\-timeout
had to power a VM off.
.TP
.B 4
No such VM or lab.
.SH ENVIRONMENT
.TP
.B DBUS_SYSTEM_BUS_ADDRESS
The address of the system bus, where
.B gns3\-qemud
is found unless
.B \-\-address
or
.B \-H
says otherwise (default
.IR unix:path=/run/dbus/system_bus_socket ).
The shells' completion asks the bus at this address for VM and lab names.
.TP
.B NO_COLOR
When set, to any value, no colours are printed.
.TP
.BR SYSTEMD_PAGER ", " PAGER
The pager for long output on a terminal: SYSTEMD_PAGER if set, else PAGER, else
.BR less (1).
Set to
.B cat
or to the empty string, or pass
.BR \-\-no\-pager ,
for none.
.TP
.B GNS3_QEMUCTL_COMPLETE
Set by the shells' completion scripts to ask
.B gns3\-qemuctl
for completions
.RB ( GNS3_QEMUCTL_COMPLETE=bash ,
.BR zsh " or " fish );
.B GNS3_QEMUCTL_COMPLETE=bash gns3\-qemuctl
prints the script that a shell sources.
.SH FILES
.TP
Lab files
YAML files that describe a lab, read by the lab commands.
.B name
is the lab's name (every VM's Project),
.B defaults
settings of every node,
.B nodes
the VMs by name, each any VM setting by its property name or an alias
.RB ( image ", " ram ", " adapters ", " kernel ", " initrd ", " append " ...)"
and
.BR "ready: {console: REGEX}" ,
and
.B links
the cables, each
.B endpoints
of two ends,
.B r1:eth0
or
.BR "{udp: {host: H, port: P, local: L}}" .
.TP
.I /usr/share/gns3\-qemuctl/lab.schema.json
The JSON schema of lab files, for editors (a first line
.B # yaml\-language\-server: $schema=/usr/share/gns3\-qemuctl/lab.schema.json
points the YAML language server at it) and validators.
.TP
.I /usr/share/doc/gns3\-qemuctl/examples/
Example labs: two routers, a triangle, and a router wired to a UDP peer outside the lab.
.TP
.I /usr/share/bash\-completion/completions/gns3\-qemuctl
.TQ
.I /usr/share/zsh/vendor\-completions/_gns3\-qemuctl
.TQ
.I /usr/share/fish/vendor_completions.d/gns3\-qemuctl.fish
Completion of commands, options, and VM and lab names, for bash, zsh and fish.
.SH EXAMPLES
A VM from a base disk image (it gets a linked clone), started and listed:
.PP
.RS
.nf
gns3\-qemuctl create r1 \-\-ram 512M \-\-adapters 2 \e
    \-\-disk /var/lib/gns3\-images/router.qcow2 \-\-start
gns3\-qemuctl list
.fi
.RE
.PP
The console's TCP port alone, and a setting changed:
.PP
.RS
.nf
gns3\-qemuctl show r1 \-p ConsolePort \-\-value
gns3\-qemuctl set r1 Ram=1024 Adapters=4
.fi
.RE
.PP
Several VMs at once, on another host:
.PP
.RS
.nf
gns3\-qemuctl \-H admin@lab\-host stop r1 r2 r3
.fi
.RE
.PP
A clean shutdown (the ACPI power button), and the power cord for a guest that has not
powered off after 30 seconds:
.PP
.RS
.nf
gns3\-qemuctl set r1 OnStop=shutdown
gns3\-qemuctl stop \-\-timeout 30s r1
.fi
.RE
.PP
A lab from an example file:
.PP
.RS
.nf
gns3\-qemuctl up /usr/share/doc/gns3\-qemuctl/examples/triangle.yml
.fi
.RE
.SH SEE ALSO
.BR gns3\-qemud (8),
.BR busctl (1),
.BR systemctl (1)
"#;

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command and every one of its options is on the page.
    #[test]
    fn every_command_and_option_is_listed() {
        let page = render().unwrap();
        let mut cmd = Cli::command();
        cmd.build();
        for arg in cmd.get_arguments().filter_map(|a| a.get_long()) {
            assert!(page.contains(&format!("\\-\\-{}", esc(arg))), "--{arg}");
        }
        for sub in subcommands(&cmd) {
            let head = format!(".SS \"\\fB{}\\fR", esc(sub.get_name()));
            assert!(page.contains(&head), "{head}");
            for arg in sub.get_arguments().filter(|a| shown(a)) {
                let n = name(arg);
                assert!(
                    page.contains(&format!(".TP\n{n}\n")),
                    "{}: {n}",
                    sub.get_name()
                );
            }
        }
        for section in ["EXIT STATUS", "ENVIRONMENT", "FILES", "EXAMPLES"] {
            assert!(page.contains(&format!(".SH {section}\n")), "{section}");
        }
    }

    #[test]
    fn the_date_is_the_changelogs() {
        let entry = "p (1-1) unstable; urgency=medium\n\n  * x\n\n -- A <a@b>  Mon, 3 Feb 2025 10:30:00 +0000\n";
        assert_eq!(changelog_date(entry), "2025-02-03");
        assert_eq!(changelog_date(CHANGELOG), "2026-11-25");
    }

    #[test]
    fn roff_requests_cannot_start_from_text() {
        assert_eq!(esc(".x -y \\z"), "\\&.x \\-y \\ez");
        assert_eq!(esc("'q"), "\\&'q");
    }
}
