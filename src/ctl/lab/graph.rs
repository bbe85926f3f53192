//! `graph`: a lab's nodes and links as Graphviz dot or Mermaid text, to draw or paste into
//! documentation. Pure: the links come from a file or from the daemon's tunnels.

use crate::links::Port;

/// A link to draw: two adapters, or an adapter and a UDP peer (`host:port`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edge {
    Between(Port, Port),
    Out(Port, String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Dot,
    Mermaid,
}

/// The graph of lab `name`: `nodes` (each drawn even without a link) and `edges`.
pub fn render(format: Format, name: &str, nodes: &[String], edges: &[Edge]) -> String {
    let mut out = String::new();
    match format {
        Format::Dot => {
            out.push_str(&format!("graph {} {{\n", dot_id(name)));
            for n in nodes {
                out.push_str(&format!("  {};\n", dot_id(n)));
            }
            for e in edges {
                let line = match e {
                    Edge::Between(a, b) => format!(
                        "  {} -- {} [taillabel=\"eth{}\", headlabel=\"eth{}\"];\n",
                        dot_id(&a.vm),
                        dot_id(&b.vm),
                        a.adapter,
                        b.adapter
                    ),
                    Edge::Out(a, peer) => format!(
                        "  {} [shape=plaintext];\n  {} -- {} [taillabel=\"eth{}\"];\n",
                        dot_id(&format!("udp:{peer}")),
                        dot_id(&a.vm),
                        dot_id(&format!("udp:{peer}")),
                        a.adapter
                    ),
                };
                out.push_str(&line);
            }
            out.push_str("}\n");
        }
        Format::Mermaid => {
            out.push_str(&format!("---\ntitle: {name}\n---\ngraph LR\n"));
            let id = |n: &str| mermaid_id(n);
            for n in nodes {
                out.push_str(&format!("  {}[\"{n}\"]\n", id(n)));
            }
            for e in edges {
                let line = match e {
                    Edge::Between(a, b) => format!(
                        "  {} ---|\"eth{} - eth{}\"| {}\n",
                        id(&a.vm),
                        a.adapter,
                        b.adapter,
                        id(&b.vm)
                    ),
                    Edge::Out(a, peer) => format!(
                        "  {} ---|\"eth{}\"| {}([\"udp:{peer}\"])\n",
                        id(&a.vm),
                        a.adapter,
                        id(&format!("udp:{peer}"))
                    ),
                };
                out.push_str(&line);
            }
        }
    }
    out
}

/// A dot identifier: always quoted, so names with '-' or '.' need nothing else.
fn dot_id(name: &str) -> String {
    format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A Mermaid node id: letters, digits and '_' only (the label shows the real name).
fn mermaid_id(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(vm: &str, adapter: u32) -> Port {
        Port {
            vm: vm.into(),
            adapter,
        }
    }

    fn sample() -> (Vec<String>, Vec<Edge>) {
        (
            vec!["r-1".into(), "r2".into(), "r3".into()],
            vec![
                Edge::Between(p("r-1", 0), p("r2", 1)),
                Edge::Out(p("r2", 0), "192.0.2.7:30000".into()),
            ],
        )
    }

    #[test]
    fn dot() {
        let (nodes, edges) = sample();
        assert_eq!(
            render(Format::Dot, "tri", &nodes, &edges),
            "graph \"tri\" {\n  \"r-1\";\n  \"r2\";\n  \"r3\";\n  \
             \"r-1\" -- \"r2\" [taillabel=\"eth0\", headlabel=\"eth1\"];\n  \
             \"udp:192.0.2.7:30000\" [shape=plaintext];\n  \
             \"r2\" -- \"udp:192.0.2.7:30000\" [taillabel=\"eth0\"];\n}\n"
        );
    }

    #[test]
    fn mermaid() {
        let (nodes, edges) = sample();
        assert_eq!(
            render(Format::Mermaid, "tri", &nodes, &edges),
            "---\ntitle: tri\n---\ngraph LR\n  r_1[\"r-1\"]\n  r2[\"r2\"]\n  r3[\"r3\"]\n  \
             r_1 ---|\"eth0 - eth1\"| r2\n  \
             r2 ---|\"eth0\"| udp_192_0_2_7_30000([\"udp:192.0.2.7:30000\"])\n"
        );
    }
}
