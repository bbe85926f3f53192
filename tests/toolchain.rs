//! What the locked dependencies are, from `cargo metadata`. The Rust the project asks for is
//! what they need: `rust-version` in Cargo.toml and the README's "Rust X.Y or newer" both equal
//! the highest `rust-version` of the packages Cargo.lock builds on this platform (normal, build
//! and dev dependencies). And the privileged binary is built from none of zbus and tokio.

use std::collections::BTreeSet;
use std::process::Command;

fn version(text: &str) -> (u32, u32) {
    let mut parts = text.split('.').map(|p| p.parse::<u32>().unwrap());
    (parts.next().unwrap(), parts.next().unwrap_or(0))
}

/// The workspace's packages and its resolved graph, for this host.
fn metadata() -> serde_json::Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let host = String::from_utf8(Command::new("rustc").arg("-vV").output().unwrap().stdout)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .unwrap();
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--locked",
            "--format-version",
            "1",
            "--filter-platform",
        ])
        .arg(&host)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn the_rust_version_asked_for_is_what_the_locked_dependencies_need() {
    let meta = metadata();
    let built: Vec<&str> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    let ours: Vec<&serde_json::Value> = meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    let packages = meta["packages"].as_array().unwrap();
    let (mut need, mut who) = ((0, 0), String::new());
    for p in packages {
        let Some(rv) = p["rust_version"].as_str() else {
            continue;
        };
        if !ours.contains(&&p["id"])
            && built.contains(&p["id"].as_str().unwrap())
            && version(rv) > need
        {
            need = version(rv);
            who = format!(
                "{} {}",
                p["name"].as_str().unwrap(),
                p["version"].as_str().unwrap()
            );
        }
    }
    let want = format!("{}.{}", need.0, need.1);
    // Every package takes it from [workspace.package]; each is checked, should one set its own.
    for p in packages.iter().filter(|p| ours.contains(&&p["id"])) {
        let name = p["name"].as_str().unwrap();
        let asked = p["rust_version"].as_str();
        assert_eq!(
            asked,
            Some(want.as_str()),
            "{name}'s rust-version; {who} needs {want}"
        );
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let readme = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        readme.contains(&format!("Rust comes from rustup ({want} or newer)")),
        "the README must say Rust {want} or newer ({who} needs it)"
    );
}

/// What `cargo tree -p gns3-qemud-supervisor -e normal` shows (the README's command), walked
/// in the graph cargo resolved for the whole workspace.
#[test]
fn the_supervisor_is_built_without_zbus_or_tokio() {
    let meta = metadata();
    let packages = meta["packages"].as_array().unwrap();
    let nodes = meta["resolve"]["nodes"].as_array().unwrap();
    let package = |id: &str| packages.iter().find(|p| p["id"] == id).unwrap();
    let start = packages
        .iter()
        .find(|p| p["name"] == "gns3-qemud-supervisor")
        .unwrap()["id"]
        .as_str()
        .unwrap();
    let (mut seen, mut todo) = (BTreeSet::new(), vec![start]);
    while let Some(id) = todo.pop() {
        let node = nodes.iter().find(|n| n["id"] == id).unwrap();
        for dep in node["deps"].as_array().unwrap() {
            // A normal dependency's kind is null; dev and build dependencies are not the binary's.
            let normal = dep["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            let pkg = dep["pkg"].as_str().unwrap();
            if normal && seen.insert(pkg) {
                todo.push(pkg);
            }
        }
    }
    let names: BTreeSet<&str> = seen
        .iter()
        .map(|id| package(id)["name"].as_str().unwrap())
        .collect();
    let list = names.iter().copied().collect::<Vec<_>>().join(", ");
    println!(
        "gns3-qemud-supervisor builds on {} packages: {list}",
        names.len()
    );
    for banned in ["zbus", "tokio"] {
        assert!(
            !names.contains(banned),
            "{banned} is in the supervisor's dependency tree: {list}"
        );
    }
}
