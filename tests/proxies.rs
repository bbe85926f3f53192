//! The proxies the tests drive the daemon with (`src/ctl/proxies.rs`, gns3-qemuctl's) against the
//! contract (`dbus/*.xml`): the same members with the same types, read from both sources,
//! so that neither can drift from the other.

mod common;

use common::contract_file;
use std::collections::BTreeSet;

/// One member as a proxy or a contract file declares it: (kind, D-Bus name, signature).
type Member = (&'static str, String, String);

/// The members of `file`'s interface `name`: each method with its in- and out-signature,
/// each property to read, and each to write.
fn contract_members(file: &str, name: &str) -> BTreeSet<Member> {
    let text = contract_file(file);
    let node = zbus_xml::Node::from_reader(text.as_bytes()).unwrap();
    let iface = node.interfaces().iter().find(|i| i.name() == name).unwrap();
    let mut out = BTreeSet::new();
    for m in iface.methods() {
        let sig = |out: bool| -> String {
            m.args()
                .iter()
                .filter(|a| (a.direction() == Some(zbus_xml::ArgDirection::Out)) == out)
                .map(|a| a.ty().to_string())
                .collect()
        };
        out.insert((
            "method",
            m.name().to_string(),
            format!("{}->{}", sig(false), sig(true)),
        ));
    }
    for p in iface.properties() {
        let ty = p.ty().to_string();
        if p.access().read() {
            out.insert(("get", p.name().to_string(), ty.clone()));
        }
        if p.access().write() {
            out.insert(("set", p.name().to_string(), ty));
        }
    }
    out
}

/// The D-Bus signature of a Rust type as the test proxies spell it.
fn signature_of(ty: &str) -> String {
    let ty = ty.trim();
    let inner = |prefix: &str| ty[prefix.len()..ty.len() - 1].to_string();
    match ty {
        "&str" | "String" => "s".into(),
        "u64" => "t".into(),
        "u32" => "u".into(),
        "u16" => "q".into(),
        "u8" => "y".into(),
        "i32" => "i".into(),
        "bool" => "b".into(),
        "()" => String::new(),
        "OwnedObjectPath" | "&zbus::ObjectPath<'_>" => "o".into(),
        "zbus::OwnedFd" => "h".into(),
        "Variant<'_>" => "v".into(),
        _ if ty.starts_with("Vec<") => format!("a{}", signature_of(&inner("Vec<"))),
        _ if ty.starts_with("&[") => format!("a{}", signature_of(&inner("&["))),
        _ if ty.starts_with("HashMap<") => {
            let parts = split_top(&inner("HashMap<"));
            format!(
                "a{{{}{}}}",
                signature_of(&parts[0]),
                signature_of(&parts[1])
            )
        }
        _ if ty.starts_with('(') => {
            let parts = split_top(&ty[1..ty.len() - 1]);
            format!(
                "({})",
                parts.iter().map(|p| signature_of(p)).collect::<String>()
            )
        }
        _ => panic!("the proxy check does not know the type {ty}"),
    }
}

/// `text` split at the commas outside any brackets.
fn split_top(text: &str) -> Vec<String> {
    let (mut parts, mut depth, mut cur) = (Vec::new(), 0, String::new());
    for c in text.chars() {
        match c {
            '<' | '(' | '{' => depth += 1,
            '>' | ')' | '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    if !cur.trim().is_empty() {
        parts.push(cur);
    }
    parts.into_iter().map(|p| p.trim().to_string()).collect()
}

fn pascal(snake: &str) -> String {
    snake
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().chain(c).collect::<String>())
                .unwrap_or_default()
        })
        .collect()
}

/// The members of the proxy trait `name` in src/ctl/proxies.rs, read from its source.
fn proxy_members(name: &str) -> BTreeSet<Member> {
    let text = include_str!("../src/ctl/proxies.rs");
    let start = text
        .find(&format!("pub trait {name} {{"))
        .unwrap_or_else(|| panic!("no trait {name} in the proxies"));
    let body = &text[start..];
    let body = &body[body.find('{').unwrap() + 1..body.find("\n}").unwrap()];
    let mut out = BTreeSet::new();
    for item in body.split(';').map(str::trim).filter(|i| !i.is_empty()) {
        let property = item.contains("#[zbus(property)]");
        let explicit = item
            .split("name = \"")
            .nth(1)
            .map(|rest| rest[..rest.find('"').unwrap()].to_string());
        let f = &item[item.find("fn ").unwrap() + 3..];
        let fname = &f[..f.find('(').unwrap()];
        let args_start = f.find('(').unwrap() + 1;
        let args_end = f.rfind(") ->").unwrap();
        let args: Vec<String> = split_top(&f[args_start..args_end])
            .into_iter()
            .filter(|a| a != "&self")
            .map(|a| signature_of(&a[a.find(':').unwrap() + 1..]))
            .collect();
        let ret = f.split("zbus::Result<").nth(1).unwrap();
        let ret = signature_of(&ret[..ret.len() - 1]);
        let member = |n: &str| explicit.clone().unwrap_or_else(|| pascal(n));
        out.insert(match fname.strip_prefix("set_") {
            Some(p) if property => ("set", member(p), args.concat()),
            _ if property => ("get", member(fname), ret),
            _ => ("method", member(fname), format!("{}->{ret}", args.concat())),
        });
    }
    out
}

/// The proxies the tests drive the daemon with cannot drift from the contract: the same
/// members, with the same types.
#[test]
fn the_test_proxies_are_the_contract() {
    for (file, iface, proxy) in [
        (
            "org.gns3.Qemu.Manager.xml",
            "org.gns3.Qemu.Manager",
            "Manager",
        ),
        ("org.gns3.Qemu.VM.xml", "org.gns3.Qemu.VM", "Vm"),
    ] {
        let want = contract_members(file, iface);
        let have = proxy_members(proxy);
        let missing: Vec<_> = want.difference(&have).collect();
        let extra: Vec<_> = have.difference(&want).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "src/ctl/proxies.rs {proxy} differs from dbus/{file}: missing {missing:?}, not in the contract {extra:?}"
        );
    }
}
