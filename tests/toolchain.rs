//! The Rust the project asks for is what its locked dependencies need: `rust-version` in
//! Cargo.toml and the README's "Rust X.Y or newer" both equal the highest `rust-version` of
//! the packages Cargo.lock builds on this platform (normal, build and dev dependencies).

use std::process::Command;

fn version(text: &str) -> (u32, u32) {
    let mut parts = text.split('.').map(|p| p.parse::<u32>().unwrap());
    (parts.next().unwrap(), parts.next().unwrap_or(0))
}

#[test]
fn the_rust_version_asked_for_is_what_the_locked_dependencies_need() {
    let root = env!("CARGO_MANIFEST_DIR");
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
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let built: Vec<&str> = meta["resolve"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    let packages = meta["packages"].as_array().unwrap();
    let (mut need, mut who) = ((0, 0), String::new());
    for p in packages {
        let Some(rv) = p["rust_version"].as_str() else {
            continue;
        };
        if p["name"] != "gns3-qemud"
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
    let asked = packages
        .iter()
        .find(|p| p["name"] == "gns3-qemud")
        .and_then(|p| p["rust_version"].as_str())
        .expect("Cargo.toml has a rust-version");
    let want = format!("{}.{}", need.0, need.1);
    assert_eq!(asked, want, "Cargo.toml's rust-version; {who} needs {want}");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let readme = readme.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        readme.contains(&format!("Rust comes from rustup ({want} or newer)")),
        "the README must say Rust {want} or newer ({who} needs it)"
    );
}
