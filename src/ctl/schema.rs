//! The JSON schema (draft 2020-12) of lab files, for editors and validators: what
//! [`crate::lab::parse`] takes, derived from the same tables. A node's settings are the
//! contract's writable properties with their D-Bus types (so the schema follows the contract
//! XML) and the short aliases; `ready`; links of two endpoints, `NODE:ethN` or an external
//! UDP end. What the schema cannot say (a link to an unknown node, an adapter beyond the
//! node's Adapters, an endpoint used twice) only `parse` finds.
//!
//! The package ships it as /usr/share/gns3-qemuctl/lab.schema.json, written from
//! [`lab_schema`] (see `generated.rs`).

use serde_json::{json, Map, Value};

use crate::lab::{contract_properties, Properties, ALIASES};

pub const DRAFT: &str = "https://json-schema.org/draft/2020-12/schema";

/// The schema of a lab file, for the contract the client is built with.
pub fn lab_schema() -> Value {
    schema_for(&contract_properties())
}

/// The schema of a lab file whose settings are `properties` (name → D-Bus signature).
pub fn schema_for(properties: &Properties<'_>) -> Value {
    let mut node = settings(properties);
    node.insert(
        "ready".into(),
        json!({
            "description": "What `up --wait` waits for before the node counts as ready.",
            "type": "object",
            "properties": {
                "console": {
                    "description": "A regular expression the console's output must match.",
                    "type": "string"
                }
            },
            "additionalProperties": false
        }),
    );
    let port = |what: &str| json!({"description": what, "type": "integer", "minimum": 1, "maximum": u16::MAX});
    json!({
        "$schema": DRAFT,
        "title": "gns3-qemuctl lab file",
        "description": "A lab: VMs of gns3-qemud (the nodes) and the cables between them (the links). See gns3-qemuctl(1).",
        "type": "object",
        "required": ["name", "nodes"],
        "properties": {
            "name": {
                "description": "The lab's name: every VM's Project.",
                "type": "string",
                "pattern": "\\S"
            },
            "defaults": {
                "description": "Settings (and ready) of every node, which a node's own override.",
                "type": "object",
                "properties": node,
                "additionalProperties": false
            },
            "nodes": {
                "description": "The VMs, by name: each any VM setting, by its D-Bus property name or an alias.",
                "type": "object",
                "additionalProperties": {"$ref": "#/$defs/node"}
            },
            "links": {
                "description": "The cables.",
                "type": "array",
                "items": {"$ref": "#/$defs/link"}
            }
        },
        "additionalProperties": false,
        "$defs": {
            "node": {
                "type": "object",
                "properties": node,
                "additionalProperties": false
            },
            "link": {
                "type": "object",
                "required": ["endpoints"],
                "properties": {
                    "endpoints": {
                        "description": "The link's two ends.",
                        "type": "array",
                        "minItems": 2,
                        "maxItems": 2,
                        "items": {"$ref": "#/$defs/endpoint"}
                    }
                },
                "additionalProperties": false
            },
            "endpoint": {
                "oneOf": [
                    {
                        "description": "A node's adapter: r1:eth0 is adapter 0 of node r1.",
                        "type": "string",
                        "pattern": "^.+:eth[0-9]+$"
                    },
                    {
                        "description": "A UDP peer outside the lab.",
                        "type": "object",
                        "required": ["udp"],
                        "properties": {
                            "udp": {
                                "type": "object",
                                "required": ["host", "port"],
                                "properties": {
                                    "host": {
                                        "description": "Where to send.",
                                        "type": "string",
                                        "pattern": "\\S"
                                    },
                                    "port": port("The peer's port."),
                                    "local": port("The port to receive on; without it, one the daemon allocates.")
                                },
                                "additionalProperties": false
                            }
                        },
                        "additionalProperties": false
                    }
                ]
            }
        }
    })
}

/// Every setting a node may have, by contract name and by alias, with its type.
fn settings(properties: &Properties<'_>) -> Map<String, Value> {
    let mut out = Map::new();
    for (name, signature) in properties {
        if let Some(t) = json_type(signature) {
            out.insert(name.to_string(), t);
        }
    }
    for (alias, name) in ALIASES {
        if let Some(mut t) = properties.get(name).and_then(|s| json_type(s)) {
            t["description"] = Value::from(format!("Alias of {name}."));
            out.insert(alias.to_string(), t);
        }
    }
    out
}

/// The JSON type of a D-Bus type a lab file can give; None for the others, which
/// [`crate::lab::parse`] refuses.
fn json_type(signature: &str) -> Option<Value> {
    let integer = |min: i64, max: i64| json!({"type": "integer", "minimum": min, "maximum": max});
    Some(match signature {
        "s" => json!({"type": "string"}),
        "b" => json!({"type": "boolean"}),
        "u" => integer(0, u32::MAX.into()),
        "q" => integer(0, u16::MAX.into()),
        "i" => integer(i32::MIN.into(), i32::MAX.into()),
        "a(uss)" => json!({
            "type": "array",
            "items": {
                "type": "array",
                "prefixItems": [integer(0, u32::MAX.into()), {"type": "string"}, {"type": "string"}],
                "minItems": 3,
                "maxItems": 3
            }
        }),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_take_their_contract_types_and_aliases_name_theirs() {
        let props: Properties = [("Ram", "u"), ("ConsolePort", "q"), ("Tunnels", "a(uqsq)")]
            .into_iter()
            .collect();
        let s = schema_for(&props);
        let node = &s["$defs"]["node"]["properties"];
        assert_eq!(
            node["Ram"],
            json!({"type": "integer", "minimum": 0, "maximum": 4294967295u32})
        );
        assert_eq!(node["console"]["maximum"], 65535);
        assert_eq!(node["console"]["description"], "Alias of ConsolePort.");
        assert_eq!(node.get("Tunnels"), None, "a type lab files cannot give");
        assert_eq!(node.get("image"), None, "an alias of a setting not there");
        assert!(node.get("ready").is_some());
        assert_eq!(
            s["properties"]["defaults"]["properties"], *node,
            "defaults give ready too"
        );
    }
}
