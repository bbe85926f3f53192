//! The table's rows, each both ways, and the spec's create bodies (docs: gns3-compute-api §1).

use super::*;
use axum::http::StatusCode;
use std::collections::HashMap;

fn owned(settings: BTreeMap<&'static str, Variant<'static>>) -> HashMap<String, OwnedVariant> {
    settings
        .into_iter()
        .map(|(k, v)| (k.to_string(), OwnedVariant::try_from(v).unwrap()))
        .collect()
}

fn images() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in ["vmlinuz", "initrd.gz", "disk.qcow2", "cd.iso", "bios.bin"] {
        std::fs::write(dir.path().join(f), b"x").unwrap();
    }
    dir
}

/// A GNS3 value for every row that has a setting, and the setting it must become.
fn sample(row: &Row, dir: &Path) -> (Value, Variant<'static>) {
    let path = |f: &str| Variant::from(dir.join(f).display().to_string());
    let s = |x: &str| Variant::from(x.to_string());
    match row.gns3 {
        "name" => (json!("n1"), s("n1")),
        "qemu_path" => (
            json!("/usr/bin/qemu-system-x86_64"),
            s("/usr/bin/qemu-system-x86_64"),
        ),
        "platform" => (json!("x86_64"), s("qemu-system-x86_64")),
        "console" => (json!(12000), Variant::from(12000u16)),
        "hda_disk_image" | "hdb_disk_image" | "hdc_disk_image" | "hdd_disk_image" => {
            (json!("disk.qcow2"), path("disk.qcow2"))
        }
        "cdrom_image" => (json!("cd.iso"), path("cd.iso")),
        "bios_image" => (json!("bios.bin"), path("bios.bin")),
        "initrd" => (json!("initrd.gz"), path("initrd.gz")),
        "kernel_image" => (json!("vmlinuz"), path("vmlinuz")),
        n if n.ends_with("_disk_interface") => (json!("virtio"), s("virtio")),
        "kernel_command_line" => (json!("console=ttyS0"), s("console=ttyS0")),
        "boot_priority" => (json!("cd"), s("cd")),
        "ram" => (json!(128), Variant::from(128u32)),
        "cpus" => (json!(2), Variant::from(2u32)),
        "maxcpus" => (json!(4), Variant::from(4u32)),
        "adapters" => (json!(3), Variant::from(3u32)),
        "adapter_type" => (json!("virtio-net-pci"), s("virtio-net-pci")),
        "mac_address" => (json!("0c:42:8b:23:00:00"), s("0c:42:8b:23:00:00")),
        "linked_clone" | "replicate_network_connection_state" => {
            (json!(false), Variant::from(false))
        }
        "tpm" => (json!(true), Variant::from(true)),
        "uefi" => (json!(true), s("uefi")),
        "on_close" => (json!("shutdown_signal"), s("shutdown")),
        "cpu_throttling" => (json!(50), Variant::from(50u32)),
        "process_priority" => (json!("very high"), s("very high")),
        "options" => (json!("-nic none"), s("-nic none")),
        "custom_adapters" => (
            json!([{"adapter_number": 1, "port_name": null, "adapter_type": "rtl8139", "mac_address": null}]),
            Variant::from(vec![(1u32, "rtl8139".to_string(), String::new())]),
        ),
        other => panic!("no sample for {other}"),
    }
}

#[test]
fn each_row_converts_both_ways() {
    let dir = images();
    for row in ROWS {
        let Some(setting) = row.setting else { continue };
        let (gns3, variant) = sample(row, dir.path());
        let body: Map<String, Value> = [(row.gns3.to_string(), gns3.clone())].into_iter().collect();
        let settings = to_settings(&body, dir.path()).unwrap();
        assert_eq!(settings.len(), 1, "{}", row.gns3);
        assert_eq!(settings[setting], variant, "{}", row.gns3);
        let props = owned(settings);
        let back = from_settings(|n| props.get(n), dir.path());
        assert_eq!(back[row.gns3], gns3, "{} back", row.gns3);
    }
}

#[test]
fn the_rows_are_gns3s_whole_schema_once() {
    let mut names: Vec<_> = ROWS.iter().map(|r| r.gns3).collect();
    assert_eq!(names.len(), 55);
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 55);
}

#[test]
fn gns3s_other_defaults_convert_too() {
    let dir = images();
    let body = json!({"hda_disk_interface": "none", "uefi": false, "on_close": "power_off",
        "console": null, "hda_disk_image": "", "custom_adapters": []});
    let s = to_settings(body.as_object().unwrap(), dir.path()).unwrap();
    let expected: BTreeMap<&str, Variant<'static>> = [
        ("HdaDiskInterface", Variant::from("ide".to_string())),
        ("Firmware", Variant::from("bios".to_string())),
        ("OnStop", Variant::from("power-off".to_string())),
        ("HdaDiskImage", Variant::from(String::new())),
        (
            "CustomAdapters",
            Variant::from(Vec::<(u32, String, String)>::new()),
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(s, expected);
}

#[test]
fn the_specs_template_body_converts() {
    let dir = images();
    let body = json!({"builtin":false,"compute_id":"e5a0610c-f3e6-5ccd-8aa4-1cb54040d44d",
        "created_at":"2026-01-01","updated_at":"2026-01-01","qemu_path":"qemu-system-x86_64",
        "platform":"x86_64","linked_clone":true,"ram":128,"cpus":1,"maxcpus":1,"adapters":1,
        "adapter_type":"e1000","boot_priority":"c","hda_disk_interface":"none","initrd":"initrd.gz",
        "kernel_image":"vmlinuz","kernel_command_line":"console=ttyS0 panic=-1",
        "replicate_network_connection_state":true,"create_config_disk":false,"tpm":false,
        "uefi":false,"on_close":"power_off","cpu_throttling":0,"process_priority":"normal",
        "name":"n1","console_type":"telnet","aux_type":"none",
        "node_id":"8c428b23-dc77-4ca6-b724-ea8e4f23eff4", "x": -150, "symbol": ":/symbols/qemu.svg",
        "initrd_md5sum": "1a94d8ef158679a642ec862087bfa833", "status": "stopped"});
    let s = to_settings(body.as_object().unwrap(), dir.path()).unwrap();
    let p = |f: &str| Variant::from(dir.path().join(f).display().to_string());
    let t = |x: &str| Variant::from(x.to_string());
    let expected: BTreeMap<&str, Variant<'static>> = [
        ("QemuPath", t("qemu-system-x86_64")),
        ("LinkedClone", Variant::from(true)),
        ("Ram", Variant::from(128u32)),
        ("Cpus", Variant::from(1u32)),
        ("MaxCpus", Variant::from(1u32)),
        ("Adapters", Variant::from(1u32)),
        ("AdapterType", t("e1000")),
        ("BootOrder", t("c")),
        ("HdaDiskInterface", t("ide")),
        ("Initrd", p("initrd.gz")),
        ("KernelImage", p("vmlinuz")),
        ("KernelCommandLine", t("console=ttyS0 panic=-1")),
        ("ReplicateLinkState", Variant::from(true)),
        ("Tpm", Variant::from(false)),
        ("Firmware", t("bios")),
        ("OnStop", t("power-off")),
        ("CpuThrottling", Variant::from(0u32)),
        ("ProcessPriority", t("normal")),
        ("Name", t("n1")),
    ]
    .into_iter()
    .collect();
    assert_eq!(s, expected);
}

#[test]
fn the_specs_direct_body_converts() {
    let dir = images();
    let body = json!({"qemu_path":"qemu-system-x86_64","platform":"x86_64","ram":128,"adapters":1,
        "kernel_image":"vmlinuz","initrd":"initrd.gz","kernel_command_line":"console=ttyS0",
        "compute_id":"e5a0610c-f3e6-5ccd-8aa4-1cb54040d44d","name":"n2","console_type":"telnet",
        "node_id":"0d4fa1a6-4b8f-4f7e-9b76-0a3c1d1e2f30"});
    let s = to_settings(body.as_object().unwrap(), dir.path()).unwrap();
    let keys: Vec<_> = s.keys().copied().collect();
    assert_eq!(
        keys,
        [
            "Adapters",
            "Initrd",
            "KernelCommandLine",
            "KernelImage",
            "Name",
            "QemuPath",
            "Ram"
        ]
    );
}

#[test]
fn what_the_daemon_lacks_is_refused_saying_why() {
    let dir = images();
    for (body, message) in [
        (json!({"aux_type": "telnet"}), "aux_type \"telnet\" is not supported: the daemon has no auxiliary console"),
        (json!({"create_config_disk": true}), "create_config_disk true is not supported: the daemon makes no config disk"),
        (json!({"console_type": "vnc"}), "console_type \"vnc\" is not supported: the daemon serves telnet consoles only"),
        (json!({"hdb_disk_interface": "floppy"}), "hdb_disk_interface floppy is not supported: the daemon attaches disks as ide, sata, nvme, scsi or virtio"),
    ] {
        let e = to_settings(body.as_object().unwrap(), dir.path()).unwrap_err();
        assert_eq!(e.status(), StatusCode::CONFLICT);
        assert_eq!(e.to_string(), message);
    }
}

#[test]
fn a_wrong_json_type_names_the_field() {
    let dir = images();
    for (body, message) in [
        (json!({"ram": "128"}), "ram must be an integer, not \"128\""),
        (
            json!({"linked_clone": 1}),
            "linked_clone must be true or false, not 1",
        ),
        (
            json!({"kernel_image": 5}),
            "kernel_image must be a string, not 5",
        ),
        (
            json!({"console": 70000}),
            "console must be a port, not 70000",
        ),
        (
            json!({"custom_adapters": {}}),
            "custom_adapters must be a list, not {}",
        ),
    ] {
        let e = to_settings(body.as_object().unwrap(), dir.path()).unwrap_err();
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.to_string(), message);
    }
}

#[test]
fn a_missing_image_is_image_missing() {
    let dir = tempfile::tempdir().unwrap();
    let e = to_settings(
        json!({"initrd": "initrd.gz"}).as_object().unwrap(),
        dir.path(),
    )
    .unwrap_err();
    assert!(
        matches!(e, ApiError::ImageMissing(ref n) if n == "initrd.gz"),
        "{e}"
    );
}

/// `GNS3_QEMUD_COMPUTE_REGENERATE=1 cargo test -p gns3-qemud-compute --lib readme` writes
/// the table into README.md; without it the test fails when the two differ.
#[test]
fn the_readme_has_the_table() {
    let file = concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md");
    let readme = std::fs::read_to_string(file).unwrap();
    let start = "<!-- properties.rs: begin -->\n";
    let end = "<!-- properties.rs: end -->";
    let (head, rest) = readme
        .split_once(start)
        .expect("README.md has the table's begin marker");
    let (table, tail) = rest
        .split_once(end)
        .expect("README.md has the table's end marker");
    if std::env::var_os("GNS3_QEMUD_COMPUTE_REGENERATE").is_some_and(|v| v == "1") {
        std::fs::write(file, format!("{head}{start}{}{end}{tail}", markdown())).unwrap();
        return;
    }
    assert_eq!(
        table,
        markdown(),
        "README.md's table differs from properties.rs: run \
         GNS3_QEMUD_COMPUTE_REGENERATE=1 cargo test -p gns3-qemud-compute --lib readme"
    );
}
