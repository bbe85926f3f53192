//! `show NAME [-p PROP]... [--value | --json]`: the VM's properties (one GetAll), sorted,
//! as `Prop=value` lines like `systemctl show`, bare values, or a JSON object.

use crate::cli::Show;
use crate::error::Result;
use crate::output::{self, text};

pub async fn run(conn: &zbus::Connection, s: Show) -> Result<()> {
    let all = super::get::all(conn, &s.vm).await?;
    let chosen = if s.properties.is_empty() {
        all.iter().collect()
    } else {
        super::get::pick(&all, &s.vm, &s.properties)?
    };
    if s.json.json {
        return super::get::print_object(&chosen);
    }
    let mut out = String::new();
    for (k, v) in chosen {
        if s.value {
            out.push_str(&format!("{}\n", text(v)));
        } else {
            out.push_str(&format!("{k}={}\n", text(v)));
        }
    }
    output::print(&out)
}
