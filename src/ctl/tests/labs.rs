//! The shipped lab schema and example labs (packaging/gns3-qemuctl/): the schema is a valid
//! draft 2020-12 schema, every example validates against it and is read by `lab::parse`
//! with the real contract, and files with the mistakes the schema can see do not validate.

use gns3_qemuctl::lab::{self, contract_properties};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// What a VM has when nothing sets Adapters (src/model/settings.rs).
const DEFAULT_ADAPTERS: u32 = 1;

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/gns3-qemuctl")
}

fn schema() -> Value {
    let text = std::fs::read_to_string(shipped().join("lab.schema.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap()
}

/// The schema's complaints about `text`, one line each.
fn errors(text: &str) -> Vec<String> {
    let validator = jsonschema::validator_for(&schema()).unwrap();
    let instance = yaml(text);
    validator
        .iter_errors(&instance)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn the_schema_is_a_draft_2020_12_schema() {
    let s = schema();
    assert_eq!(s["$schema"], "https://json-schema.org/draft/2020-12/schema");
    jsonschema::meta::validate(&s).unwrap();
}

#[test]
fn every_example_validates_and_parses() {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(shipped().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(errors(&text), Vec::<String>::new(), "{name}");
        let lab = lab::parse(&name, &text, &contract_properties(), DEFAULT_ADAPTERS)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!lab.nodes.is_empty() && !lab.links.is_empty(), "{name}");
        names.push(name);
    }
    names.sort();
    assert_eq!(
        names,
        ["external-udp.yml", "triangle.yml", "two-routers.yml"]
    );
}

#[test]
fn mistakes_the_schema_sees_do_not_validate() {
    let ok = "name: x\nnodes:\n  a: {ram: 256, adapters: 2}\n  b: {}\nlinks:\n  - endpoints: [a:eth0, b:eth0]\n";
    assert_eq!(errors(ok), Vec::<String>::new());
    let cases: &[(&str, &str)] = &[
        (
            "name: x\nnodes: {}\ncolour: red\n",
            ": Additional properties are not allowed ('colour' was unexpected)",
        ),
        (
            "name: x\nnodes:\n  a: {rams: 5}\n",
            "/nodes/a: Additional properties are not allowed ('rams' was unexpected)",
        ),
        (
            "name: x\nnodes:\n  a: {ready: {prompt: '#'}}\n",
            "/nodes/a/ready: Additional properties are not allowed ('prompt' was unexpected)",
        ),
        (
            "name: x\nnodes:\n  a: {ram: lots}\n",
            "/nodes/a/ram: \"lots\" is not of type \"integer\"",
        ),
        (
            "name: x\nnodes:\n  a: {console: 70000}\n",
            "/nodes/a/console: 70000 is greater than the maximum of 65535",
        ),
        (
            "name: x\nnodes: {a: {}, b: {}}\nlinks:\n  - endpoints: [a-eth0, b:eth0]\n",
            "/links/0/endpoints/0: \"a-eth0\" is not valid under any of the schemas listed in the 'oneOf' keyword",
        ),
        (
            "name: x\nnodes: {a: {}}\nlinks:\n  - endpoints: [a:eth0, {udp: {host: h, port: 0}}]\n",
            "/links/0/endpoints/1: {\"udp\":{\"host\":\"h\",\"port\":0}} is not valid under any of the schemas listed in the 'oneOf' keyword",
        ),
        (
            "name: x\nnodes: {a: {}}\nlinks:\n  - endpoints: [a:eth0]\n",
            "/links/0/endpoints: [\"a:eth0\"] has less than 2 items",
        ),
        ("nodes: {}\n", ": \"name\" is a required property"),
    ];
    for (text, want) in cases {
        assert_eq!(errors(text), [want.to_string()], "{text:?}");
        // lab::parse refuses each of them too.
        assert!(
            lab::parse("lab.yml", text, &contract_properties(), DEFAULT_ADAPTERS).is_err(),
            "{text:?}"
        );
    }
}
