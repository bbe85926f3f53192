//! Every bad input, walked from the contract: each method of each interface in dbus/*.xml
//! with the wrong argument types, each property Set with the wrong type or a read-only one,
//! awkward strings and out-of-range numbers for each setting, unknown objects, VMs and
//! setting names. Each must be refused with a named error and change nothing. A method or
//! property added to the contract is walked without touching this file. No guest is booted:
//! VMs that never start are enough for every case here.

mod common;

use common::*;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;
use std::time::Instant;
use zbus::wire::StructureBuilder;
use zbus::{Array, Dict, ObjectPath, OwnedVariant, Signature, Variant};

const DEST: &str = "org.gns3.Qemu";
const MANAGER_PATH: &str = "/org/gns3/Qemu";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";
const OBJECT_MANAGER: &str = "org.freedesktop.DBus.ObjectManager";

const INVALID_ARGS: &str = "org.freedesktop.DBus.Error.InvalidArgs";
const UNKNOWN_OBJECT: &str = "org.freedesktop.DBus.Error.UnknownObject";
const INVALID_ARGUMENT: &str = "org.gns3.Qemu.Error.InvalidArgument";
const INVALID_STATE: &str = "org.gns3.Qemu.Error.InvalidState";
const NOT_FOUND: &str = "org.gns3.Qemu.Error.NotFound";
const IMAGE_NOT_ACCESSIBLE: &str = "org.gns3.Qemu.Error.ImageNotAccessible";

/// Where an interface is served.
#[derive(Clone, Copy, Debug, PartialEq)]
enum On {
    Manager,
    Vm,
}

#[derive(Debug)]
struct Method {
    name: String,
    /// The in-arguments' types, in order.
    args: Vec<Signature>,
}

#[derive(Debug)]
struct Property {
    name: String,
    ty: Signature,
    writable: bool,
}

#[derive(Debug)]
struct Iface {
    name: String,
    on: On,
    methods: Vec<Method>,
    properties: Vec<Property>,
}

/// The interfaces of an introspection document, as owned values.
fn interfaces(xml: &str, on: On) -> Vec<Iface> {
    let node = zbus_xml::Node::from_reader(xml.as_bytes()).unwrap();
    node.interfaces()
        .iter()
        .map(|i| Iface {
            name: i.name().to_string(),
            on,
            methods: i
                .methods()
                .map(|m| Method {
                    name: m.name().to_string(),
                    args: m
                        .args()
                        .iter()
                        .filter(|a| a.direction() != Some(zbus_xml::ArgDirection::Out))
                        .map(|a| a.ty().clone())
                        .collect(),
                })
                .collect(),
            properties: i
                .properties()
                .map(|p| Property {
                    name: p.name().to_string(),
                    ty: p.ty().clone(),
                    writable: p.access().write(),
                })
                .collect(),
        })
        .collect()
}

/// The contract's interfaces: org.gns3.Qemu.Manager and org.gns3.Qemu.VM.
fn contract() -> Vec<Iface> {
    let mut all = interfaces(&contract_file("org.gns3.Qemu.Manager.xml"), On::Manager);
    all.extend(interfaces(&contract_file("org.gns3.Qemu.VM.xml"), On::Vm));
    assert_eq!(all.len(), 2, "{all:#?}");
    all
}

/// The standard interfaces the daemon serves itself on `path` (its Properties, the
/// manager's ObjectManager). Peer and Introspectable are zbus's own, which cannot be
/// wrapped, and take no arguments anyway.
async fn served_standard(conn: &zbus::Connection, path: &str, on: On) -> Vec<Iface> {
    let xml = zbus::fdo::IntrospectableProxy::builder(conn)
        .destination(DEST)
        .path(path)
        .build()
        .await
        .unwrap()
        .introspect()
        .await
        .unwrap();
    let mut found: Vec<Iface> = interfaces(&xml, on)
        .into_iter()
        .filter(|i| i.name == PROPERTIES || i.name == OBJECT_MANAGER)
        .collect();
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// A value of type `sig`, the simplest there is.
fn sample(sig: &Signature) -> Variant<'static> {
    match sig {
        Signature::U8 => Variant::U8(1),
        Signature::Bool => Variant::Bool(true),
        Signature::I16 => Variant::I16(1),
        Signature::U16 => Variant::U16(1),
        Signature::I32 => Variant::I32(1),
        Signature::U32 => Variant::U32(1),
        Signature::I64 => Variant::I64(1),
        Signature::U64 => Variant::U64(1),
        Signature::F64 => Variant::F64(1.0),
        Signature::Str => Variant::from("x".to_string()),
        Signature::Signature => Variant::Signature(Signature::Str),
        Signature::ObjectPath => Variant::ObjectPath(ObjectPath::from_static_str_unchecked("/x")),
        Signature::Variant => Variant::Variant(Box::new(Variant::U32(1))),
        Signature::Array(child) => Variant::Array(Array::new(child.signature())),
        Signature::Dict { key, value } => {
            Variant::Dict(Dict::new(key.signature(), value.signature()))
        }
        Signature::Structure(fields) => {
            let mut b = StructureBuilder::new();
            for f in fields.iter() {
                b.push_value(sample(f));
            }
            Variant::Structure(b.build().unwrap())
        }
        other => panic!("no sample of D-Bus type '{other}': add one"),
    }
}

/// One value of each D-Bus type a client could send by mistake. File descriptors ('h') are
/// left out: they need a unix socket's ancillary data, and no setting takes one.
fn palette() -> Vec<Variant<'static>> {
    let mut strings = Array::new(&Signature::Str);
    strings.append(Variant::from("x".to_string())).unwrap();
    let mut settings = Dict::new(&Signature::Str, &Signature::Variant);
    settings
        .append(
            Variant::from("Ram".to_string()),
            Variant::Variant(Box::new(Variant::U32(64))),
        )
        .unwrap();
    let mut pairs = Dict::new(&Signature::Str, &Signature::Str);
    pairs
        .append(
            Variant::from("Ram".to_string()),
            Variant::from("64".to_string()),
        )
        .unwrap();
    vec![
        Variant::from("x".to_string()),
        Variant::U8(1),
        Variant::Bool(true),
        Variant::I16(1),
        Variant::U16(1),
        Variant::I32(1),
        Variant::U32(1),
        Variant::I64(1),
        Variant::U64(1),
        Variant::F64(1.5),
        Variant::ObjectPath(ObjectPath::from_static_str_unchecked("/x")),
        Variant::Signature(Signature::Str),
        Variant::Array(strings),
        Variant::Dict(settings),
        Variant::Dict(pairs),
        Variant::Structure(
            StructureBuilder::new()
                .append_field(Variant::from("x".to_string()))
                .append_field(Variant::U32(1))
                .build()
                .unwrap(),
        ),
    ]
}

/// Every value of the palette that is not of type `sig`, and a variant holding the first of
/// them (the settings unwrap a variant in a variant, so what it holds must be wrong too).
fn wrong_values(sig: &Signature) -> Vec<Variant<'static>> {
    let mut wrong: Vec<Variant<'static>> = palette()
        .into_iter()
        .filter(|v| v.value_signature() != sig)
        .collect();
    if *sig != Signature::Variant {
        wrong.push(Variant::Variant(Box::new(wrong[0].clone())));
    }
    wrong
}

/// A method call with exactly these arguments, built by hand so any signature can be sent.
async fn call(
    conn: &zbus::Connection,
    path: &str,
    iface: &str,
    method: &str,
    args: &[Variant<'static>],
) -> zbus::Result<zbus::Message> {
    if args.is_empty() {
        return conn
            .call_method(Some(DEST), path, Some(iface), method, &())
            .await;
    }
    let mut b = StructureBuilder::new();
    for a in args {
        b.push_value(a.clone());
    }
    let body = b.build().unwrap();
    conn.call_method(Some(DEST), path, Some(iface), method, &body)
        .await
}

fn signature_of(args: &[Variant<'_>]) -> String {
    args.iter()
        .map(|a| a.value_signature().to_string())
        .collect()
}

/// Properties.Set, raw.
async fn set(
    conn: &zbus::Connection,
    path: &str,
    iface: &str,
    property: &str,
    value: Variant<'static>,
) -> zbus::Result<zbus::Message> {
    call(
        conn,
        path,
        PROPERTIES,
        "Set",
        &[
            Variant::from(iface.to_string()),
            Variant::from(property.to_string()),
            Variant::Variant(Box::new(value)),
        ],
    )
    .await
}

/// The error name of a refused call, which must be ours or a standard D-Bus one: never
/// zbus's own `org.freedesktop.zbus.Error`, nor the catch-all `Failed`.
fn refused(what: &str, result: zbus::Result<zbus::Message>) -> String {
    let e = match result {
        Ok(reply) => panic!("{what}: accepted ({reply:?})"),
        Err(e) => e,
    };
    let name = error_name(&e);
    let standard = [
        INVALID_ARGS,
        UNKNOWN_OBJECT,
        "org.freedesktop.DBus.Error.UnknownInterface",
        "org.freedesktop.DBus.Error.UnknownMethod",
        "org.freedesktop.DBus.Error.UnknownProperty",
        "org.freedesktop.DBus.Error.PropertyReadOnly",
    ];
    assert!(
        name.starts_with("org.gns3.Qemu.Error.") || standard.contains(&name.as_str()),
        "{what}: not a named error: {name}: {e}"
    );
    let text = e.to_string();
    assert!(
        text.len() > name.len() + 2,
        "{what}: {name} without a message"
    );
    name
}

/// What a refused call must leave as it was: the state directory byte for byte, the VM
/// list, and every property of the manager and the VMs.
async fn observe(conn: &zbus::Connection, state: &Path, vms: &[&str]) -> String {
    let mut out = format!("{:?}\n", snapshot(state));
    let list = manager(conn).await.list_vms().await.unwrap();
    out += &format!("{list:?}\n");
    let objects = [(MANAGER_PATH, "org.gns3.Qemu.Manager")]
        .into_iter()
        .chain(vms.iter().map(|p| (*p, "org.gns3.Qemu.VM")));
    for (path, iface) in objects {
        let sorted: BTreeMap<_, _> = all_properties(conn, path, iface)
            .await
            .into_iter()
            .collect();
        out += &format!("{path}: {sorted:?}\n");
    }
    out
}

async fn vm_properties(conn: &zbus::Connection, path: &str) -> HashMap<String, OwnedVariant> {
    all_properties(conn, path, "org.gns3.Qemu.VM").await
}

/// A tally of the answers, printed at the end (`--nocapture`) and used for the summary.
#[derive(Default)]
struct Answers(BTreeMap<String, usize>);

impl Answers {
    fn add(&mut self, kind: &str, name: &str) {
        *self.0.entry(format!("{kind} -> {name}")).or_default() += 1;
    }
}

struct Walk<'a> {
    conn: &'a zbus::Connection,
    state: &'a Path,
    vms: Vec<String>,
    before: String,
    answers: Answers,
    calls: usize,
}

impl Walk<'_> {
    /// Asserts that nothing changed since the walk began.
    async fn unchanged(&self, what: &str) {
        let vms: Vec<&str> = self.vms.iter().map(String::as_str).collect();
        let now = observe(self.conn, self.state, &vms).await;
        if now != self.before {
            let (was, is) = self
                .before
                .lines()
                .zip(now.lines())
                .find(|(b, n)| b != n)
                .unwrap_or(("(fewer lines)", "(more lines)"));
            panic!(
                "{what} changed something:\n was {:.400}\n now {:.400}",
                was, is
            );
        }
    }

    fn path(&self, on: On) -> String {
        match on {
            On::Manager => MANAGER_PATH.to_string(),
            On::Vm => self.vms[0].clone(),
        }
    }

    /// Each method with no arguments, one argument too many, and each argument in turn of
    /// every wrong type: InvalidArgs.
    async fn wrong_signatures(&mut self, iface: &Iface) {
        let path = self.path(iface.on);
        for m in &iface.methods {
            let good: Vec<Variant<'static>> = m.args.iter().map(sample).collect();
            let mut bodies: Vec<Vec<Variant<'static>>> = Vec::new();
            if !good.is_empty() {
                bodies.push(Vec::new());
            }
            let mut extra = good.clone();
            extra.push(Variant::from("extra".to_string()));
            bodies.push(extra);
            for (i, ty) in m.args.iter().enumerate() {
                for wrong in wrong_values(ty) {
                    let mut body = good.clone();
                    body[i] = wrong;
                    bodies.push(body);
                }
            }
            for body in bodies {
                let what = format!("{path} {}.{}({})", iface.name, m.name, signature_of(&body));
                let result = call(self.conn, &path, &iface.name, &m.name, &body).await;
                self.calls += 1;
                let e = result.as_ref().err().map(ToString::to_string);
                let name = refused(&what, result);
                assert_eq!(name, INVALID_ARGS, "{what}: {e:?}");
                let text = e.unwrap_or_default();
                // A body of one struct reads as that struct's fields (see src/dbus/checked.rs).
                let given = match &body[..] {
                    [] => "given none".to_string(),
                    [Variant::Structure(_)] => format!(
                        "'{}'",
                        signature_of(&body)
                            .trim_start_matches('(')
                            .trim_end_matches(')')
                    ),
                    _ => format!("'{}'", signature_of(&body)),
                };
                if iface.name == PROPERTIES {
                    // zbus's own Properties, which every node has: its message names the
                    // types it expected.
                    let expected: String = m.args.iter().map(ToString::to_string).collect();
                    assert!(
                        text.contains("expected") && text.contains(&expected),
                        "{what}: the message does not name the types expected ({expected}): {text}"
                    );
                } else {
                    assert!(
                        text.contains(&m.name) && text.contains(&given),
                        "{what}: the message names neither the method nor what it was given: {text}"
                    );
                }
                self.answers
                    .add(&format!("wrong signature on {}", iface.name), &name);
            }
            self.unchanged(&format!("{}.{} with wrong signatures", iface.name, m.name))
                .await;
        }
    }

    /// Every writable property Set, and given to Configure and CreateVM, with each wrong
    /// type: InvalidArgument. Every read-only one Set: a named error, recorded.
    async fn wrong_property_types(&mut self, iface: &Iface) {
        let path = self.path(iface.on);
        for p in &iface.properties {
            if !p.writable {
                let what = format!("Set read-only {}.{}", iface.name, p.name);
                let result = set(self.conn, &path, &iface.name, &p.name, sample(&p.ty)).await;
                self.calls += 1;
                let name = refused(&what, result);
                assert!(
                    name == "org.freedesktop.DBus.Error.PropertyReadOnly"
                        || name.starts_with("org.gns3.Qemu.Error."),
                    "{what}: {name}"
                );
                self.answers
                    .add(&format!("Set read-only on {}", iface.name), &name);
                self.unchanged(&what).await;
                continue;
            }
            assert_eq!(iface.on, On::Vm, "the manager has no settings");
            for wrong in wrong_values(&p.ty) {
                let what = format!("{}={wrong:?}", p.name);
                let result = set(self.conn, &path, &iface.name, &p.name, wrong.clone()).await;
                self.calls += 1;
                self.expect(&format!("Set {what}"), result, INVALID_ARGUMENT);
                self.answers.add(
                    "Set a writable property with a wrong type",
                    INVALID_ARGUMENT,
                );
                for (method, result) in self.as_settings(&p.name, wrong).await {
                    self.expect(&format!("{method} {what}"), result, INVALID_ARGUMENT);
                    self.answers
                        .add(&format!("{method} with a wrong type"), INVALID_ARGUMENT);
                }
            }
            self.unchanged(&format!("{} with wrong types", p.name))
                .await;
        }
    }

    /// `key: value` given to Configure (of the first VM) and to CreateVM (of a new VM).
    async fn as_settings(
        &mut self,
        key: &str,
        value: Variant<'static>,
    ) -> Vec<(&'static str, zbus::Result<zbus::Message>)> {
        let settings = || {
            let mut d = Dict::new(&Signature::Str, &Signature::Variant);
            d.append(
                Variant::from(key.to_string()),
                Variant::Variant(Box::new(value.clone())),
            )
            .unwrap();
            Variant::Dict(d)
        };
        let configure = call(
            self.conn,
            &self.vms[0],
            "org.gns3.Qemu.VM",
            "Configure",
            &[settings()],
        )
        .await;
        let create = call(
            self.conn,
            MANAGER_PATH,
            "org.gns3.Qemu.Manager",
            "CreateVM",
            &[Variant::from("new".to_string()), settings()],
        )
        .await;
        self.calls += 2;
        vec![("Configure", configure), ("CreateVM", create)]
    }

    fn expect(&self, what: &str, result: zbus::Result<zbus::Message>, want: &str) {
        let e = result.as_ref().err().map(ToString::to_string);
        let name = refused(what, result);
        assert_eq!(name, want, "{what}: {e:?}");
    }
}

/// Awkward values for a setting of type `ty`: for strings, the empty string, 64 KiB, a
/// relative path, a directory, a missing file, a broken symlink, names with '/' and spaces;
/// for numbers, 0 and the type's maximum. D-Bus strings are UTF-8 by definition (the bus
/// refuses a message that is not), so no client can send a non-UTF-8 path; a byte array
/// could carry one, and the contract has none (`no_setting_takes_bytes` checks that).
fn awkward(ty: &Signature, files: &Path) -> Vec<Variant<'static>> {
    let s = |v: String| Variant::from(v);
    let path = |p: &Path| p.to_str().unwrap().to_string();
    match ty {
        Signature::Str => vec![
            s(String::new()),
            s("x".repeat(64 * 1024)),
            s(format!("/{}", "x".repeat(64 * 1024 - 1))),
            s("images/disk.img".into()),
            s(path(files)),
            s(path(&files.join("missing.img"))),
            s(path(&files.join("broken.img"))),
            s("a/b".into()),
            s("a b".into()),
            s(path(&files.join("with space.img"))),
        ],
        Signature::U8 => vec![Variant::U8(0), Variant::U8(u8::MAX)],
        Signature::U16 => vec![Variant::U16(0), Variant::U16(u16::MAX)],
        Signature::U32 => vec![Variant::U32(0), Variant::U32(u32::MAX)],
        Signature::U64 => vec![Variant::U64(0), Variant::U64(u64::MAX)],
        Signature::I16 => vec![
            Variant::I16(0),
            Variant::I16(i16::MIN),
            Variant::I16(i16::MAX),
        ],
        Signature::I32 => vec![
            Variant::I32(0),
            Variant::I32(i32::MIN),
            Variant::I32(i32::MAX),
        ],
        Signature::I64 => vec![
            Variant::I64(0),
            Variant::I64(i64::MIN),
            Variant::I64(i64::MAX),
        ],
        // Both values of a boolean are legal: nothing is out of range.
        Signature::Bool => Vec::new(),
        // CustomAdapters, of a VM with one adapter: none (allowed), an adapter it lacks,
        // one adapter twice, a model that is no name or that QEMU lacks, bad MACs.
        Signature::Array(child) if child.signature().to_string() == "(uss)" => {
            let v = |e: &[(u32, &str, &str)]| {
                Variant::from(
                    e.iter()
                        .map(|(a, m, c)| (*a, m.to_string(), c.to_string()))
                        .collect::<Vec<_>>(),
                )
            };
            vec![
                v(&[]),
                v(&[(1, "", "")]),
                v(&[(u32::MAX, "e1000", "")]),
                v(&[(0, "", ""), (0, "", "")]),
                v(&[(0, "e1000 x", "")]),
                v(&[(0, "no-such-nic", "")]),
                v(&[(0, "", "01:00:5e:00:00:01")]),
                v(&[(0, "", "52:54")]),
                v(&[(0, "", "00:00:00:00:00:00")]),
            ]
        }
        other => panic!("no awkward values of D-Bus type '{other}': add some"),
    }
}

/// Base images, made in `files`, that would make QEMU open other files; the daemon under
/// test has no image_dirs, so each is refused. Also `swap.qcow2`, a base that is fine until
/// `spoil_base` changes it.
fn opening_bases(files: &Path) -> Vec<(&'static str, String)> {
    let at = |name: &str| files.join(name).to_str().unwrap().to_string();
    // No name here has a space.
    let make = |args: &str| qemu_img(files, &args.split(' ').collect::<Vec<_>>());
    let on = |name: &str, backing: &str, format: &str| {
        make(&format!(
            "create -q -f qcow2 -u -b {backing} -F {format} {name} 1M"
        ));
        at(name)
    };
    make("create -q -f qcow2 plain.qcow2 1M");
    make("create -q -f qcow2 swap.qcow2 1M");
    make("create -q -f qcow2 -o data_file=data.raw data.qcow2 1M");
    make(&format!(
        "create -q -f qcow2 -o data_file={} abs.qcow2 1M",
        at("abs.raw")
    ));
    make("create -q -f vmdk -o subformat=monolithicFlat flat.vmdk 1M");
    on("loop-b.qcow2", "loop-a.qcow2", "qcow2");
    let json = format!(
        r#"json:{{"driver":"file","filename":"{}"}}"#,
        at("plain.qcow2")
    );
    let file = format!("file:{}", at("plain.qcow2"));
    vec![
        ("a backing file", on("on.qcow2", "plain.qcow2", "qcow2")),
        ("a json: backing name", on("json.qcow2", &json, "raw")),
        (
            "an nbd: backing name",
            on("nbd.qcow2", "nbd:127.0.0.1:9", "raw"),
        ),
        ("a file: backing name", on("file.qcow2", &file, "qcow2")),
        ("a relative external data file", at("data.qcow2")),
        ("an external data file", at("abs.qcow2")),
        ("a flat VMDK's extent", at("flat.vmdk")),
        (
            "a backing chain that loops",
            on("loop-a.qcow2", "loop-b.qcow2", "qcow2"),
        ),
    ]
}

/// Changes `swap.qcow2` (of `opening_bases`) so Start refuses it, as it may be changed
/// after it was set: `step` 0 gives it a backing file, 1 makes it a raw image. Says how.
fn spoil_base(files: &Path, step: usize) -> &'static str {
    if step == 0 {
        let rebase = "rebase -u -f qcow2 -b plain.qcow2 -F qcow2 swap.qcow2";
        qemu_img(files, &rebase.split(' ').collect::<Vec<_>>());
        "got a backing file"
    } else {
        std::fs::write(files.join("swap.qcow2"), vec![0u8; 1 << 20]).unwrap();
        "became a raw image"
    }
}

/// The awkward values the contract allows (everything else must be refused): an empty disk
/// image, kernel or initrd means none, 0 adapters, no CPU limit, no console or monitor
/// port; the kernel command line and the options are free text. An allowed value may be
/// taken; it is then set back.
fn allowed(property: &str, value: &Variant<'_>) -> bool {
    let empty = matches!(value, Variant::Str(s) if s.is_empty());
    let zero = matches!(value, Variant::U32(0) | Variant::U16(0));
    match property {
        "HdaDiskImage" | "HdbDiskImage" | "KernelImage" | "Initrd" | "BiosImage" => empty,
        // QEMU's default CPU model.
        "CpuModel" => empty,
        // No media in the CD-ROM drive; no third or fourth disk.
        "HdcDiskImage" | "HddDiskImage" | "CdromImage" => empty,
        // Free text, up to a length far below 64 KiB.
        "KernelCommandLine" | "Options" => matches!(value, Variant::Str(s) if s.len() < 4096),
        "Adapters" | "CpuThrottling" | "ConsolePort" | "MonitorPort" | "VncPort" => zero,
        // No exception to AdapterType and MacAddress.
        "CustomAdapters" => matches!(value, Variant::Array(a) if a.is_empty()),
        _ => false,
    }
}

#[tokio::test]
async fn every_bad_input_is_refused_by_name_and_changes_nothing() {
    let started = Instant::now();
    let lab = Lab::start().await;
    let (conn, m) = (&lab.conn, &lab.manager);
    let state = lab.dir.path().join("state");
    let a = m.create_vm("a", HashMap::new()).await.unwrap().to_string();
    let b = m.create_vm("b", HashMap::new()).await.unwrap().to_string();
    let files = lab.dir.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::os::unix::fs::symlink("/nonexistent/base.qcow2", files.join("broken.img")).unwrap();
    let opening = opening_bases(&files);
    let swap = files.join("swap.qcow2").to_str().unwrap().to_string();
    set(
        conn,
        &b,
        "org.gns3.Qemu.VM",
        "HdaDiskImage",
        swap.clone().into(),
    )
    .await
    .unwrap();

    let a_props = vm_properties(conn, &a).await;
    let vms = vec![a.clone(), b.clone()];
    let before = observe(conn, &state, &[&a, &b]).await;
    let mut walk = Walk {
        conn,
        state: &state,
        vms,
        before,
        answers: Answers::default(),
        calls: 0,
    };

    // Wrong signatures, on the contract's interfaces and on the standard ones we serve.
    let mut ifaces = contract();
    ifaces.extend(served_standard(conn, MANAGER_PATH, On::Manager).await);
    ifaces.extend(served_standard(conn, &a, On::Vm).await);
    let served: Vec<(String, On)> = ifaces.iter().map(|i| (i.name.clone(), i.on)).collect();
    assert!(
        served.contains(&(PROPERTIES.into(), On::Vm))
            && served.contains(&(PROPERTIES.into(), On::Manager))
            && served.contains(&(OBJECT_MANAGER.into(), On::Manager)),
        "{served:?}"
    );
    for iface in &ifaces {
        walk.wrong_signatures(iface).await;
    }

    // Wrong property types and read-only properties.
    for iface in contract() {
        walk.wrong_property_types(&iface).await;
    }

    // Awkward strings and numbers, through Set, Configure and CreateVM.
    let vm_iface = contract().into_iter().find(|i| i.on == On::Vm).unwrap();
    let mut allowed_seen = Vec::new();
    for p in vm_iface.properties.iter().filter(|p| p.writable) {
        for value in awkward(&p.ty, &files) {
            let shown: String = format!("{value:?}").chars().take(80).collect();
            let what = format!("Set {}={shown}", p.name);
            let result = set(conn, &a, "org.gns3.Qemu.VM", &p.name, value.clone()).await;
            walk.calls += 1;
            if allowed(&p.name, &value) {
                // A legal value: it may be taken; then it is put back as it was.
                match result {
                    Ok(_) => {
                        allowed_seen.push(what.clone());
                        let old = a_props[&p.name].try_clone().unwrap();
                        set(conn, &a, "org.gns3.Qemu.VM", &p.name, old.into())
                            .await
                            .unwrap_or_else(|e| panic!("setting {} back: {e}", p.name));
                    }
                    Err(e) => {
                        panic!("{what}: the contract allows this value, but it was refused: {e}")
                    }
                }
                walk.unchanged(&format!("{what}, set back")).await;
                continue;
            }
            let name = refused(&what, result);
            assert!(name.starts_with("org.gns3.Qemu.Error."), "{what}: {name}");
            walk.answers.add(&format!("awkward {}", p.name), &name);
            for (method, result) in walk.as_settings(&p.name, value.clone()).await {
                let again = refused(&format!("{method} {}={shown}", p.name), result);
                assert_eq!(
                    again, name,
                    "{method} {}={shown} answers unlike Set",
                    p.name
                );
            }
            walk.unchanged(&what).await;
        }
    }
    // Values of the right form that a setting's own rules refuse: more Cpus than MaxCpus
    // (1 here), names the binary does not list, the host's CPU without KVM.
    let machine_bad: [(&str, Variant<'static>); 6] = [
        ("Cpus", Variant::U32(2)),
        ("MaxCpus", Variant::U32(256)),
        ("CpuModel", Variant::from("nosuchcpu".to_string())),
        ("CpuModel", Variant::from("host".to_string())),
        ("MachineType", Variant::from("q36".to_string())),
        ("MachineType", Variant::from("pc-q35-1.0".to_string())),
    ];
    for (key, value) in machine_bad {
        let what = format!("Set {key}={value:?}");
        let result = set(conn, &a, "org.gns3.Qemu.VM", key, value.clone()).await;
        walk.calls += 1;
        walk.expect(&what, result, INVALID_ARGUMENT);
        for (method, result) in walk.as_settings(key, value).await {
            walk.expect(&format!("{method} {key}"), result, INVALID_ARGUMENT);
        }
        walk.answers
            .add(&format!("a {key} its rules refuse"), INVALID_ARGUMENT);
        walk.unchanged(&what).await;
    }
    // Base images that would make QEMU open other files (no image_dirs here), through Set,
    // Configure and CreateVM; then a base that changed since it was set, at Start.
    for (what, image) in &opening {
        for key in ["HdaDiskImage", "HdbDiskImage"] {
            let value = Variant::from(image.clone());
            let what = format!("{key} on {what}");
            let result = set(conn, &a, "org.gns3.Qemu.VM", key, value.clone()).await;
            walk.calls += 1;
            let text = result.as_ref().err().map(ToString::to_string);
            walk.expect(&format!("Set {what}"), result, IMAGE_NOT_ACCESSIBLE);
            assert!(
                text.unwrap_or_default()
                    .contains("Give an image that stands alone"),
                "Set {what}: the message does not say what to do"
            );
            for (method, result) in walk.as_settings(key, value).await {
                walk.expect(&format!("{method} {what}"), result, IMAGE_NOT_ACCESSIBLE);
            }
            walk.answers
                .add("a base image that opens other files", IMAGE_NOT_ACCESSIBLE);
        }
        walk.unchanged(what).await;
    }
    // A disk on the IDE unit the CD-ROM drive holds: hdc on ide (its default interface) is
    // refused, naming the setting that makes room.
    let plain = Variant::from(files.join("plain.qcow2").to_str().unwrap().to_string());
    let what = "HdcDiskImage on ide, whose unit the CD-ROM drive holds";
    let result = set(conn, &a, "org.gns3.Qemu.VM", "HdcDiskImage", plain.clone()).await;
    walk.calls += 1;
    let text = result.as_ref().err().map(ToString::to_string);
    walk.expect(what, result, INVALID_ARGUMENT);
    assert!(
        text.unwrap_or_default()
            .contains("which the CD-ROM drive holds (a pc has four: hda, hdb, the CD-ROM, hdd); set HdcDiskInterface to sata, virtio, scsi or nvme"),
        "{what}: the message does not say what to do"
    );
    for (method, result) in walk.as_settings("HdcDiskImage", plain).await {
        walk.expect(&format!("{method} {what}"), result, INVALID_ARGUMENT);
    }
    walk.answers
        .add("an IDE disk on the CD-ROM drive's unit", INVALID_ARGUMENT);
    walk.unchanged(what).await;
    // A base used in place (LinkedClone false) is one VM's only: b's linked clone stands on
    // swap.qcow2, so neither Configure nor CreateVM may take it in place.
    let in_place = || {
        let mut d = Dict::new(&Signature::Str, &Signature::Variant);
        for (key, value) in [
            ("HdaDiskImage", Variant::from(swap.clone())),
            ("LinkedClone", Variant::Bool(false)),
        ] {
            d.append(
                Variant::from(key.to_string()),
                Variant::Variant(Box::new(value)),
            )
            .unwrap();
        }
        Variant::Dict(d)
    };
    let what = "a base in place that another VM's linked clone stands on";
    let configure = call(conn, &a, "org.gns3.Qemu.VM", "Configure", &[in_place()]).await;
    let text = configure.as_ref().err().map(ToString::to_string);
    walk.expect(
        &format!("Configure {what}"),
        configure,
        IMAGE_NOT_ACCESSIBLE,
    );
    assert!(
        text.unwrap_or_default()
            .contains("is the base of linked clones of VM 'b'"),
        "{what}: the message does not name the VM that holds it"
    );
    let create = call(
        conn,
        MANAGER_PATH,
        "org.gns3.Qemu.Manager",
        "CreateVM",
        &[Variant::from("new".to_string()), in_place()],
    )
    .await;
    walk.expect(&format!("CreateVM {what}"), create, IMAGE_NOT_ACCESSIBLE);
    walk.calls += 2;
    walk.answers
        .add("a base in place that another VM uses", IMAGE_NOT_ACCESSIBLE);
    walk.unchanged(what).await;
    for step in 0..2 {
        let what = format!(
            "Start on a base that {} since it was set",
            spoil_base(&files, step)
        );
        let result = call(conn, &b, "org.gns3.Qemu.VM", "Start", &[]).await;
        walk.calls += 1;
        walk.expect(&what, result, IMAGE_NOT_ACCESSIBLE);
        walk.answers.add(
            "Start on a base image changed since set",
            IMAGE_NOT_ACCESSIBLE,
        );
        walk.unchanged(&what).await;
    }

    firmware(&mut walk, &files).await;

    // CreateVM's own name argument: as awkward as the Name property.
    for value in awkward(&Signature::Str, &files) {
        let what = format!("CreateVM {:.40?}", format!("{value:?}"));
        let mut d = Dict::new(&Signature::Str, &Signature::Variant);
        d.append(
            Variant::from("Ram".to_string()),
            Variant::Variant(Box::new(Variant::U32(64))),
        )
        .unwrap();
        let result = call(
            conn,
            MANAGER_PATH,
            "org.gns3.Qemu.Manager",
            "CreateVM",
            &[value, Variant::Dict(d)],
        )
        .await;
        walk.calls += 1;
        walk.expect(&what, result, INVALID_ARGUMENT);
        walk.answers
            .add("CreateVM with an awkward name", INVALID_ARGUMENT);
    }
    // CreateVM's create-only settings: no awkward string is a UUID; a project is free text
    // without control characters, up to a length far below 64 KiB.
    let mut create_only: Vec<(&str, Variant<'static>)> = awkward(&Signature::Str, &files)
        .into_iter()
        .map(|v| ("Id", v))
        .collect();
    create_only.extend(
        awkward(&Signature::Str, &files)
            .into_iter()
            .filter(|v| matches!(v, Variant::Str(s) if s.len() >= 4096))
            .chain([Variant::from("lab\n1".to_string())])
            .map(|v| ("Project", v)),
    );
    for (key, value) in create_only {
        let what = format!("CreateVM with {key}={:.40}", format!("{value:?}"));
        let result = walk.as_settings(key, value).await.pop().unwrap().1;
        walk.expect(&what, result, INVALID_ARGUMENT);
        walk.answers
            .add(&format!("CreateVM with an awkward {key}"), INVALID_ARGUMENT);
    }
    walk.unchanged("CreateVM with awkward names").await;

    // Unknown setting names: misspelt, wrong case, empty, and every read-only property
    // (CreateVM also takes Id and Project, which only it sets).
    let mut unknown: Vec<String> = ["Nmae", "ram", "RAM", "", "Ram ", "org.gns3.Qemu.VM.Ram"]
        .map(String::from)
        .to_vec();
    unknown.extend(
        vm_iface
            .properties
            .iter()
            .filter(|p| !p.writable)
            .map(|p| p.name.clone()),
    );
    for key in &unknown {
        for (method, result) in walk.as_settings(key, Variant::U32(1)).await {
            if method == "CreateVM" && (key == "Id" || key == "Project") {
                // Taken by CreateVM as a string; a u32 is the wrong type.
                walk.expect(&format!("{method} {key:?}"), result, INVALID_ARGUMENT);
                continue;
            }
            let what = format!("{method} with setting {key:?}");
            let text = result.as_ref().err().map(ToString::to_string);
            walk.expect(&what, result, INVALID_ARGUMENT);
            assert!(
                text.unwrap_or_default().contains("is not a VM setting"),
                "{what}"
            );
            walk.answers.add(
                &format!("{method} with an unknown setting"),
                INVALID_ARGUMENT,
            );
        }
    }
    walk.unchanged("unknown settings").await;

    // Unknown properties and interfaces through Properties.
    let e = set(conn, &a, "org.gns3.Qemu.VM", "Rom", Variant::U32(1)).await;
    let name = refused("Set an unknown property", e);
    walk.answers.add("Set an unknown property", &name);
    let e = set(conn, &a, "org.gns3.Qemu.Nope", "Ram", Variant::U32(1)).await;
    let name = refused("Set on an unknown interface", e);
    walk.answers.add("Set on an unknown interface", &name);
    walk.calls += 2;

    // The console and the monitor: bad options are InvalidArgument whatever the VM's state;
    // on a stopped VM, whose QEMU has no console, the rest is InvalidState.
    let dict = |key: &str, value: Variant<'static>| {
        let mut d = Dict::new(&Signature::Str, &Signature::Variant);
        d.append(
            Variant::from(key.to_string()),
            Variant::Variant(Box::new(value)),
        )
        .unwrap();
        Variant::Dict(d)
    };
    let console_calls: Vec<(&str, Vec<Variant<'static>>, &str)> = vec![
        (
            "OpenConsole",
            vec![dict("Bogus", Variant::Bool(true))],
            INVALID_ARGUMENT,
        ),
        (
            "OpenConsole",
            vec![dict("replay", Variant::Bool(true))],
            INVALID_ARGUMENT,
        ),
        (
            "OpenConsole",
            vec![dict("Replay", Variant::U32(1))],
            INVALID_ARGUMENT,
        ),
        (
            "OpenConsole",
            vec![dict("ReadOnly", Variant::from("yes"))],
            INVALID_ARGUMENT,
        ),
        (
            "OpenConsole",
            vec![dict("Replay", Variant::Bool(false))],
            INVALID_STATE,
        ),
        ("ReadConsole", vec![Variant::U32(0)], INVALID_STATE),
        ("ReadConsole", vec![Variant::U32(u32::MAX)], INVALID_STATE),
        (
            "HumanMonitorCommand",
            vec![Variant::from("info status")],
            INVALID_STATE,
        ),
        (
            "HumanMonitorCommand",
            vec![Variant::from("")],
            INVALID_ARGUMENT,
        ),
    ];
    for (method, args, want) in console_calls {
        let what = format!("{method}{args:?} on a stopped VM");
        let result = call(conn, &a, "org.gns3.Qemu.VM", method, &args).await;
        walk.calls += 1;
        walk.expect(&what, result, want);
        walk.answers
            .add(&format!("{method}, bad or on a stopped VM"), want);
    }
    walk.unchanged("console calls").await;

    // Captures: bad options and adapters are InvalidArgument whatever the VM's state; on a
    // stopped VM the rest is InvalidState.
    let capture_calls: Vec<(&str, Vec<Variant<'static>>, &str)> = vec![
        (
            "StartCapture",
            vec![Variant::U32(0), dict("Bogus", Variant::Bool(true))],
            INVALID_ARGUMENT,
        ),
        (
            "StartCapture",
            vec![Variant::U32(0), dict("snaplength", Variant::U32(100))],
            INVALID_ARGUMENT,
        ),
        (
            "StartCapture",
            vec![Variant::U32(0), dict("SnapLength", Variant::from("100"))],
            INVALID_ARGUMENT,
        ),
        (
            "StartCapture",
            vec![Variant::U32(0), dict("SnapLength", Variant::U32(63))],
            INVALID_ARGUMENT,
        ),
        (
            "StartCapture",
            vec![Variant::U32(0), dict("SnapLength", Variant::U32(262_145))],
            INVALID_ARGUMENT,
        ),
        (
            "StartCapture",
            vec![Variant::U32(0), dict("Direction", Variant::U32(1))],
            INVALID_ARGUMENT,
        ),
        (
            "StartCapture",
            vec![Variant::U32(0), dict("Direction", Variant::from("rx"))],
            INVALID_ARGUMENT,
        ),
        (
            "StartCapture",
            vec![Variant::U32(1), dict("Direction", Variant::from("in"))],
            INVALID_ARGUMENT,
        ),
        (
            "StartCapture",
            vec![Variant::U32(u32::MAX), dict("SnapLength", Variant::U32(64))],
            INVALID_ARGUMENT,
        ),
        (
            "StartCapture",
            vec![Variant::U32(0), dict("Direction", Variant::from("out"))],
            INVALID_STATE,
        ),
        ("StopCapture", vec![Variant::U32(1)], INVALID_ARGUMENT),
        ("OpenCapture", vec![Variant::U32(1)], INVALID_ARGUMENT),
        ("OpenCapture", vec![Variant::U32(0)], INVALID_STATE),
    ];
    for (method, args, want) in capture_calls {
        let what = format!("{method}{args:?} on a stopped VM");
        let result = call(conn, &a, "org.gns3.Qemu.VM", method, &args).await;
        walk.calls += 1;
        walk.expect(&what, result, want);
        walk.answers
            .add(&format!("{method}, bad or on a stopped VM"), want);
    }
    walk.unchanged("capture calls").await;

    // ResizeDisk on a stopped VM whose only disk is its flash disk, never made yet (128 MiB
    // when it is): a name that is no disk's, a disk it lacks, sizes no disk may have, and
    // sizes that do not grow it. Nothing is made for a refused size.
    let resize_calls: Vec<(&str, u64, &str)> = vec![
        (
            "hde",
            1 << 30,
            "not a disk's name: give one of hda, hdb, hdc, hdd",
        ),
        ("HDA", 1 << 30, "not a disk's name"),
        ("", 1 << 30, "not a disk's name"),
        ("gns3-hda", 1 << 30, "not a disk's name"),
        (
            "hdb",
            1 << 30,
            "has no hdb (its HdbDiskImage is ''): set HdbDiskImage",
        ),
        ("hdd", 1 << 30, "has no hdd"),
        (
            "hda",
            (16 << 40) + 512,
            "16 TiB (17592186044416 bytes): ask for less",
        ),
        ("hda", u64::MAX, "16 TiB"),
        (
            "hda",
            (1 << 30) + 1,
            "give a multiple of 512, such as 1073742336",
        ),
        (
            "hda",
            128 << 20,
            "is 134217728 bytes already, and a disk only grows",
        ),
        ("hda", 512, "give more than 134217728 bytes"),
        ("hda", 0, "give more than 134217728 bytes"),
    ];
    for (disk, bytes, says) in resize_calls {
        let what = format!("ResizeDisk({disk:?}, {bytes}) on a stopped VM");
        let args = [Variant::from(disk.to_string()), Variant::U64(bytes)];
        let result = call(conn, &a, "org.gns3.Qemu.VM", "ResizeDisk", &args).await;
        walk.calls += 1;
        let text = result
            .as_ref()
            .err()
            .map(ToString::to_string)
            .unwrap_or_default();
        walk.expect(&what, result, INVALID_ARGUMENT);
        assert!(text.contains(says), "{what}: {text}");
        walk.answers.add("ResizeDisk, bad", INVALID_ARGUMENT);
    }
    walk.unchanged("ResizeDisk with bad arguments").await;

    // SetLinkSuspended on adapters a (one adapter, no tunnel) lacks, and on one without a
    // cable to suspend.
    let link_calls: [(u32, bool, &str); 4] = [
        (
            0,
            true,
            "adapter 0 of VM 'a' has no tunnel, so no link to suspend",
        ),
        (0, false, "has no tunnel"),
        (
            1,
            true,
            "VM 'a' has no adapter 1: it has 1 adapter, number 0",
        ),
        (u32::MAX, false, "has no adapter 4294967295"),
    ];
    for (adapter, suspended, says) in link_calls {
        let what = format!("SetLinkSuspended({adapter}, {suspended})");
        let args = [Variant::U32(adapter), Variant::Bool(suspended)];
        let result = call(conn, &a, "org.gns3.Qemu.VM", "SetLinkSuspended", &args).await;
        walk.calls += 1;
        let text = result
            .as_ref()
            .err()
            .map(ToString::to_string)
            .unwrap_or_default();
        walk.expect(&what, result, INVALID_ARGUMENT);
        assert!(text.contains(says), "{what}: {text}");
        walk.answers.add("SetLinkSuspended, bad", INVALID_ARGUMENT);
    }
    walk.unchanged("SetLinkSuspended with bad arguments").await;

    // Unknown objects: every VM method on paths that are no VM's.
    for path in [
        "/org/gns3/Qemu/vm/nope",
        "/org/gns3/Qemu/vm/00000000000000000000000000000000",
    ] {
        for m in &vm_iface.methods {
            let args: Vec<Variant<'static>> = m.args.iter().map(sample).collect();
            let result = call(conn, path, "org.gns3.Qemu.VM", &m.name, &args).await;
            walk.calls += 1;
            walk.expect(&format!("{path} {}", m.name), result, UNKNOWN_OBJECT);
            walk.answers.add("a VM method on no VM", UNKNOWN_OBJECT);
        }
        for p in &vm_iface.properties {
            let result = set(conn, path, "org.gns3.Qemu.VM", &p.name, sample(&p.ty)).await;
            walk.calls += 1;
            walk.expect(&format!("{path} Set {}", p.name), result, UNKNOWN_OBJECT);
        }
    }
    // Unknown VMs by name or id: the manager's methods that take one answer NotFound.
    for who in [
        "nope",
        "00000000000000000000000000000000",
        "6f9619ff-8b86-d011-b42d-00c04fc964ff",
        "",
    ] {
        let e = m.get_vm(who).await.unwrap_err();
        walk.calls += 1;
        let name = error_name(&e);
        assert_eq!(name, "org.gns3.Qemu.Error.NotFound", "GetVM {who:?}: {e}");
        walk.answers.add("GetVM of no VM", &name);
    }
    walk.unchanged("unknown objects and VMs").await;
    unsafe_tunnels(&mut walk).await;
    connect(&mut walk).await;

    let mut summary: Vec<String> = walk
        .answers
        .0
        .iter()
        .map(|(k, n)| format!("{n:4} × {k}"))
        .collect();
    summary.extend(
        allowed_seen
            .iter()
            .map(|w| format!("   allowed and set back: {w}")),
    );
    eprintln!(
        "{} calls in {:.1?}:\n{}",
        walk.calls,
        started.elapsed(),
        summary.join("\n")
    );
}

/// Tunnels on QEMU's socket netdev, whose port any local user could bind too, are refused
/// while the daemon's configuration does not say allow_unsafe_tunnels = true: a tunnel on
/// a LegacyNetworking VM, and LegacyNetworking on a VM that has a tunnel. On VMs of their
/// own, watched with the others.
/// Firmware values and combinations that cannot be: an unknown firmware, a BIOS file that is
/// not there, a vendor BIOS with UEFI (through Configure, the two at once), and Secure Boot
/// on the pc machine every VM has until its machine type can be set.
async fn firmware(walk: &mut Walk<'_>, files: &Path) {
    let vendor = files.join("vendor.bin");
    std::fs::write(&vendor, b"not really a BIOS").unwrap();
    let vendor = vendor.to_str().unwrap().to_string();
    let missing = files.join("no-such-bios.bin").to_str().unwrap().to_string();
    let a = walk.vms[0].clone();
    // What, the settings given at once, the error, and words of its message.
    type Case<'a> = (&'a str, Vec<(&'a str, Variant<'static>)>, &'a str, &'a str);
    let cases: [Case; 4] = [
        (
            "an unknown Firmware",
            vec![("Firmware", Variant::from("efi"))],
            INVALID_ARGUMENT,
            "use bios (the default), uefi or uefi-secure",
        ),
        (
            "a BiosImage that is not there",
            vec![("BiosImage", Variant::from(missing))],
            IMAGE_NOT_ACCESSIBLE,
            "is not accessible",
        ),
        (
            "a BiosImage with Firmware uefi",
            vec![
                ("Firmware", Variant::from("uefi")),
                ("BiosImage", Variant::from(vendor)),
            ],
            INVALID_ARGUMENT,
            "set BiosImage to '' or Firmware to bios",
        ),
        (
            "Firmware uefi-secure on a pc",
            vec![("Firmware", Variant::from("uefi-secure"))],
            INVALID_ARGUMENT,
            "needs MachineType q35",
        ),
    ];
    for (what, settings, want, says) in cases {
        let mut d = Dict::new(&Signature::Str, &Signature::Variant);
        for (key, value) in &settings {
            d.append(
                Variant::from(key.to_string()),
                Variant::Variant(Box::new(value.clone())),
            )
            .unwrap();
        }
        let result = call(
            walk.conn,
            &a,
            "org.gns3.Qemu.VM",
            "Configure",
            &[Variant::Dict(d)],
        )
        .await;
        walk.calls += 1;
        let text = result
            .as_ref()
            .err()
            .map(ToString::to_string)
            .unwrap_or_default();
        walk.expect(&format!("Configure {what}"), result, want);
        assert!(text.contains(says), "Configure {what}: {text}");
        if let [(key, value)] = settings.as_slice() {
            let result = set(walk.conn, &a, "org.gns3.Qemu.VM", key, value.clone()).await;
            walk.calls += 1;
            walk.expect(&format!("Set {what}"), result, want);
        }
        walk.answers.add(what, want);
        walk.unchanged(what).await;
    }
}

async fn unsafe_tunnels(walk: &mut Walk<'_>) {
    let m = manager(walk.conn).await;
    let legacy = HashMap::from([("LegacyNetworking", Variant::from(true))]);
    let legacy = m.create_vm("legacy", legacy).await.unwrap().to_string();
    let wired = m
        .create_vm("wired", HashMap::new())
        .await
        .unwrap()
        .to_string();
    let port = m.allocate_udp_port().await.unwrap();
    let tunnel = |port: u16| {
        [
            Variant::U32(0),
            Variant::U16(port),
            Variant::from("127.0.0.1".to_string()),
            Variant::U16(4000),
        ]
    };
    let added = call(
        walk.conn,
        &wired,
        "org.gns3.Qemu.VM",
        "AddUdpTunnel",
        &tunnel(port),
    )
    .await;
    added.unwrap();
    let spare = m.allocate_udp_port().await.unwrap();
    walk.vms.extend([legacy.clone(), wired.clone()]);
    walk.before = observe(
        walk.conn,
        walk.state,
        &walk.vms.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await;

    let mut d = Dict::new(&Signature::Str, &Signature::Variant);
    d.append(
        Variant::from("LegacyNetworking".to_string()),
        Variant::Variant(Box::new(Variant::Bool(true))),
    )
    .unwrap();
    let refusals = [
        (
            "AddUdpTunnel on a LegacyNetworking VM",
            call(
                walk.conn,
                &legacy,
                "org.gns3.Qemu.VM",
                "AddUdpTunnel",
                &tunnel(spare),
            )
            .await,
        ),
        (
            "Set LegacyNetworking on a VM with a tunnel",
            set(
                walk.conn,
                &wired,
                "org.gns3.Qemu.VM",
                "LegacyNetworking",
                Variant::Bool(true),
            )
            .await,
        ),
        (
            "Configure LegacyNetworking on a VM with a tunnel",
            call(
                walk.conn,
                &wired,
                "org.gns3.Qemu.VM",
                "Configure",
                &[Variant::Dict(d)],
            )
            .await,
        ),
    ];
    for (what, result) in refusals {
        let text = result
            .as_ref()
            .err()
            .map(ToString::to_string)
            .unwrap_or_default();
        walk.calls += 1;
        walk.expect(what, result, INVALID_ARGUMENT);
        assert!(
            text.contains("allow_unsafe_tunnels = true"),
            "{what}: {text}"
        );
        walk.answers.add(
            "a tunnel on the socket netdev, not allowed",
            INVALID_ARGUMENT,
        );
        walk.unchanged(what).await;
    }
}

/// Manager.Connect and Disconnect with a VM that is none, an adapter a VM does not have, or
/// the same adapter twice; on the walk's VMs, whose tunnels must stay as they are.
async fn connect(walk: &mut Walk<'_>) {
    let (a, b) = (walk.vms[0].clone(), walk.vms[1].clone());
    let path = |p: &str| Variant::ObjectPath(ObjectPath::try_from(p.to_string()).unwrap());
    let no_vm = "/org/gns3/Qemu/vm/00000000000000000000000000000000";
    let cases: [(&str, Vec<Variant<'static>>, &str); 8] = [
        (
            "Connect to no VM",
            vec![path(&a), Variant::U32(0), path(no_vm), Variant::U32(0)],
            NOT_FOUND,
        ),
        (
            "Connect from the manager's path",
            vec![
                path(MANAGER_PATH),
                Variant::U32(0),
                path(&b),
                Variant::U32(0),
            ],
            NOT_FOUND,
        ),
        (
            "Connect from an adapter out of range",
            vec![path(&a), Variant::U32(1), path(&b), Variant::U32(0)],
            INVALID_ARGUMENT,
        ),
        (
            "Connect to an adapter out of range",
            vec![path(&a), Variant::U32(0), path(&b), Variant::U32(u32::MAX)],
            INVALID_ARGUMENT,
        ),
        (
            "Connect of an adapter to itself",
            vec![path(&b), Variant::U32(0), path(&b), Variant::U32(0)],
            INVALID_ARGUMENT,
        ),
        (
            "Disconnect of no VM",
            vec![path(no_vm), Variant::U32(0)],
            NOT_FOUND,
        ),
        (
            "Disconnect of the manager's path",
            vec![path(MANAGER_PATH), Variant::U32(0)],
            NOT_FOUND,
        ),
        (
            "Disconnect of an adapter out of range",
            vec![path(&a), Variant::U32(1)],
            INVALID_ARGUMENT,
        ),
    ];
    for (what, args, want) in cases {
        let method = what.split(' ').next().unwrap_or(what);
        let result = call(
            walk.conn,
            MANAGER_PATH,
            "org.gns3.Qemu.Manager",
            method,
            &args,
        )
        .await;
        walk.calls += 1;
        walk.expect(what, result, want);
        walk.answers.add(&format!("{method}, bad"), want);
        walk.unchanged(what).await;
    }
}

/// The contract has no byte arrays: every string is UTF-8 on the wire, so non-UTF-8 input
/// cannot reach the daemon. A setting or argument of type 'ay' would need cases of its own.
#[test]
fn no_setting_takes_bytes() {
    for iface in contract() {
        for p in &iface.properties {
            assert!(!p.ty.to_string().contains("ay"), "{}: {}", p.name, p.ty);
        }
        for m in &iface.methods {
            for a in &m.args {
                assert!(!a.to_string().contains("ay"), "{}: {a}", m.name);
            }
        }
    }
}

#[tokio::test]
async fn busctl_with_the_wrong_signature_says_what_the_method_takes() {
    let lab = Lab::start().await;
    let path = lab
        .manager
        .create_vm("a", HashMap::new())
        .await
        .unwrap()
        .to_string();
    let before = snapshot(&lab.dir.path().join("state"));
    let busctl = |args: &[&str]| lab.bus.busctl(args);
    let (ok, out) = busctl(&[
        "call",
        DEST,
        MANAGER_PATH,
        "org.gns3.Qemu.Manager",
        "CreateVM",
        "s",
        "foo",
    ]);
    assert!(
        !ok && out.contains("CreateVM takes arguments of type 'sa{sv}', not 's'"),
        "{out}"
    );
    let (ok, out) = busctl(&[
        "call",
        DEST,
        &path,
        "org.gns3.Qemu.VM",
        "Delete",
        "s",
        "now",
    ]);
    assert!(
        !ok && out.contains("Delete takes no arguments, not 's'"),
        "{out}"
    );
    let (ok, out) = busctl(&[
        "call",
        DEST,
        &path,
        "org.gns3.Qemu.VM",
        "AddUdpTunnel",
        "uusu",
        "0",
        "10000",
        "127.0.0.1",
        "10001",
    ]);
    assert!(
        !ok && out.contains("AddUdpTunnel takes arguments of type 'uqsq', not 'uusu'"),
        "{out}"
    );
    // busctl prints only the message; dbus-send shows the name users would match on.
    let out = Command::new("dbus-send")
        .arg(format!("--bus={}", lab.bus.address))
        .args([
            "--print-reply",
            "--dest=org.gns3.Qemu",
            "/org/gns3/Qemu",
            "org.gns3.Qemu.Manager.CreateVM",
            "string:foo",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && text.contains(INVALID_ARGS),
        "{text}"
    );
    assert_eq!(snapshot(&lab.dir.path().join("state")), before);
    assert!(
        busctl(&["get-property", DEST, &path, "org.gns3.Qemu.VM", "Name"])
            .1
            .contains("\"a\"")
    );
}
