//! Printing: D-Bus values as text for people and as JSON for programs, tables in
//! systemctl's style (a header, columns two spaces apart, no borders), and colours, only on a
//! terminal and never with NO_COLOR set.

use serde_json::Value as Json;
use std::io::{IsTerminal, Write};
use std::sync::OnceLock;
use zbus::Variant;

use crate::error::Result;

/// A D-Bus value as JSON: numbers, booleans and strings as themselves, arrays and
/// structures as arrays, dictionaries as objects (keys as text).
pub fn json(value: &Variant<'_>) -> Json {
    match value {
        Variant::U8(n) => Json::from(*n),
        Variant::Bool(b) => Json::from(*b),
        Variant::I16(n) => Json::from(*n),
        Variant::U16(n) => Json::from(*n),
        Variant::I32(n) => Json::from(*n),
        Variant::U32(n) => Json::from(*n),
        Variant::I64(n) => Json::from(*n),
        Variant::U64(n) => Json::from(*n),
        Variant::F64(n) => Json::from(*n),
        Variant::Str(s) => Json::from(s.as_str()),
        Variant::Signature(s) => Json::from(s.to_string()),
        Variant::ObjectPath(p) => Json::from(p.as_str()),
        Variant::Variant(v) => json(v),
        Variant::Array(a) => Json::Array(a.iter().map(json).collect()),
        Variant::Structure(s) => Json::Array(s.fields().iter().map(json).collect()),
        Variant::Dict(d) => Json::Object(
            d.iter()
                .map(|(k, v)| (text(k), json(v)))
                .collect::<serde_json::Map<_, _>>(),
        ),
        Variant::Fd(fd) => Json::from(format!("{fd:?}")),
    }
}

/// A D-Bus value as `show` prints it: strings bare, booleans yes/no (as systemctl),
/// array items space-separated, structure fields colon-separated (a tunnel:
/// `0:20000:127.0.0.1:20001`).
pub fn text(value: &Variant<'_>) -> String {
    match value {
        Variant::Bool(b) => if *b { "yes" } else { "no" }.to_string(),
        Variant::Str(s) => s.to_string(),
        Variant::U16(n) => n.to_string(),
        Variant::U32(n) => n.to_string(),
        Variant::I32(n) => n.to_string(),
        Variant::Variant(v) => text(v),
        Variant::Array(a) => a.iter().map(text).collect::<Vec<_>>().join(" "),
        Variant::Structure(s) => s.fields().iter().map(text).collect::<Vec<_>>().join(":"),
        Variant::Dict(d) => d
            .iter()
            .map(|(k, v)| format!("{}={}", text(k), text(v)))
            .collect::<Vec<_>>()
            .join(" "),
        Variant::Fd(fd) => format!("{fd:?}"),
        other => json(other).to_string(),
    }
}

/// A table of `rows` under `header` (dropped with `--no-legend`), each line without the
/// trailing blanks of the last column. `right` names the columns of numbers, aligned right.
pub fn table(header: &[&str], right: &[&str], rows: Vec<Vec<String>>, legend: bool) -> String {
    let spec: Vec<&str> = header
        .iter()
        .map(|name| if right.contains(name) { "{:>}" } else { "{:<}" })
        .collect();
    // A spec of only `{:<}` and `{:>}` always parses.
    let mut table = tabular::Table::new(&spec.join("  "));
    if legend {
        table.add_row(tabular::Row::from_cells(header.iter().copied()));
    }
    for mut row in rows {
        // The table takes rows of exactly its columns.
        row.resize(header.len(), String::new());
        table.add_row(tabular::Row::from_cells(row));
    }
    let mut out = String::new();
    for line in table.to_string().lines() {
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `n` things, as people write it: "1 VM", "3 VMs" (`one` and `many` name the thing).
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `text` on stdout; a closed pipe (`| head`) is a failure to write, not a panic.
pub fn print(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// `value` as JSON on stdout, one document.
pub fn print_json(value: &Json) -> Result<()> {
    print(&format!("{value:#}\n"))
}

/// Whether to colour what goes to a stream: only a terminal, and not if NO_COLOR is set, to
/// any value (no-color.org).
pub fn colour(terminal: bool, no_color: bool) -> bool {
    terminal && !no_color
}

fn no_color() -> bool {
    std::env::var_os("NO_COLOR").is_some()
}

/// Whether stdout gets colours; decided once, before a pager takes stdout (its `less -R`
/// shows them).
pub fn stdout_colour() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| colour(std::io::stdout().is_terminal(), no_color()))
}

pub fn stderr_colour() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| colour(std::io::stderr().is_terminal(), no_color()))
}

pub const GREEN: &str = "\x1b[0;32m";
pub const YELLOW: &str = "\x1b[0;33m";
pub const RED: &str = "\x1b[0;1;31m";
const RESET: &str = "\x1b[0m";

/// `text` in `colour`.
pub fn paint(text: &str, colour: &str) -> String {
    format!("{colour}{text}{RESET}")
}

/// An error's line for stderr: red on a terminal, as systemd's tools say their failures.
pub fn failure(message: &str) -> String {
    if stderr_colour() {
        paint(message, RED)
    } else {
        message.to_string()
    }
}

/// A state's colour: running green, paused yellow; the others plain.
pub fn state_colour(state: &str) -> Option<&'static str> {
    match state {
        "running" => Some(GREEN),
        "paused" => Some(YELLOW),
        _ => None,
    }
}

/// `table` (as [`table`] made it of `rows`) with the cells of column `column` coloured by
/// `colour`. The widths are laid out on the bare text first, so colours never shift a column.
pub fn colour_column(
    table: &str,
    header: &[&str],
    rows: &[Vec<String>],
    legend: bool,
    column: usize,
    colour: impl Fn(&str) -> Option<&'static str>,
) -> String {
    let width = |i: usize| {
        let cells = rows
            .iter()
            .filter_map(|r| r.get(i))
            .map(|c| c.chars().count());
        let head = legend.then(|| header.get(i).map_or(0, |h| h.chars().count()));
        cells.chain(head).max().unwrap_or(0)
    };
    let start: usize = (0..column).map(|i| width(i) + 2).sum();
    let skip = usize::from(legend);
    let mut out = String::new();
    for (i, line) in table.lines().enumerate() {
        let cell = i
            .checked_sub(skip)
            .and_then(|r| rows.get(r))
            .and_then(|r| r.get(column));
        let painted = cell.and_then(|cell| {
            let code = colour(cell)?;
            let at = line.char_indices().nth(start).map(|(b, _)| b)?;
            let after = line[at..].strip_prefix(cell.as_str())?;
            Some(format!("{}{}{after}", &line[..at], paint(cell, code)))
        });
        out.push_str(painted.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tunnels() -> Variant<'static> {
        Variant::from(vec![(0u32, 20000u16, "127.0.0.1".to_string(), 20001u16)])
    }

    #[test]
    fn values_as_json_and_text() {
        assert_eq!(json(&Variant::from(512u32)), serde_json::json!(512));
        assert_eq!(json(&Variant::from(true)), serde_json::json!(true));
        assert_eq!(json(&Variant::from("r1")), serde_json::json!("r1"));
        assert_eq!(
            json(&tunnels()),
            serde_json::json!([[0, 20000, "127.0.0.1", 20001]])
        );
        assert_eq!(text(&Variant::from(true)), "yes");
        assert_eq!(text(&Variant::from(-1i32)), "-1");
        assert_eq!(text(&Variant::from("a b")), "a b");
        assert_eq!(text(&tunnels()), "0:20000:127.0.0.1:20001");
    }

    #[test]
    fn tables_are_systemctls() {
        let rows = vec![
            vec!["r1".to_string(), "5000".to_string()],
            vec!["router-2".to_string(), "12".to_string()],
        ];
        assert_eq!(
            table(&["NAME", "PORT"], &["PORT"], rows.clone(), true),
            "NAME      PORT\nr1        5000\nrouter-2    12\n"
        );
        assert_eq!(
            table(&["NAME", "PORT"], &["PORT"], rows, false),
            "r1        5000\nrouter-2    12\n"
        );
        let short = vec![vec!["r1".to_string()]];
        assert_eq!(
            table(&["NAME", "PORT"], &["PORT"], short, true),
            "NAME  PORT\nr1\n",
            "a row short of cells is filled with empty ones"
        );
    }

    #[test]
    fn colours_only_on_a_terminal_without_no_color() {
        assert!(colour(true, false));
        assert!(!colour(true, true));
        assert!(!colour(false, false));
        assert!(!colour(false, true));
    }

    #[test]
    fn a_coloured_column_keeps_its_place() {
        let header = ["NAME", "STATE", "RAM"];
        let rows = vec![
            vec!["r1".to_string(), "running".to_string(), "128M".to_string()],
            vec![
                "router-2".to_string(),
                "stopped".to_string(),
                "1G".to_string(),
            ],
        ];
        let plain = table(&header, &[], rows.clone(), true);
        let coloured = colour_column(&plain, &header, &rows, true, 1, state_colour);
        assert_eq!(
            coloured,
            "NAME      STATE    RAM\n\
             r1        \x1b[0;32mrunning\x1b[0m  128M\n\
             router-2  stopped  1G\n"
        );
        let plain = table(&header, &[], rows.clone(), false);
        let coloured = colour_column(&plain, &header, &rows, false, 1, state_colour);
        assert_eq!(
            coloured,
            "r1        \x1b[0;32mrunning\x1b[0m  128M\nrouter-2  stopped  1G\n"
        );
    }
}
