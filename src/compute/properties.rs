//! THE table of GNS3 3.0.6's QEMU node properties (its compute schema, QemuBase and Qemu)
//! and what each is for the daemon: a setting of org.gns3.Qemu.VM and how values convert
//! both ways, a value refused because the daemon has nothing like it, or a field of GNS3's
//! own reply that comes back as input (the controller sends its stored copy on re-open) and
//! is ignored. Declared once: the conversions, the node JSON and the README's table (a test
//! keeps it equal) all read [`ROWS`]. A property refused is never dropped silently: a value
//! other than GNS3's no-op default is a 409 saying why. Long for the table's sake.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Map, Value};
use zbus::{OwnedVariant, Variant};

use crate::error::{ApiError, Result};
use crate::images;

/// How one GNS3 property becomes its setting and back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conv {
    /// A string, as it is.
    Text,
    /// A non-negative integer (u32).
    Count,
    /// A TCP port (u16); 0 back is null.
    Port,
    Bool,
    /// A name resolved in the image directory (absolute path); back, the name again.
    Image,
    /// GNS3's disk interfaces; its "none" is the daemon's default, ide.
    DiskInterface,
    /// true: uefi, false: bios.
    Uefi,
    /// power_off, shutdown_signal, save_vm_state: power-off, shutdown, save-state.
    OnClose,
    /// The emulated platform: qemu-system-<platform> when qemu_path is not given.
    Platform,
    /// [{adapter_number, adapter_type, mac_address, port_name}] as a(uss).
    CustomAdapters,
    /// The daemon has nothing like it: only these values (JSON text) are taken, as no-ops.
    Refused(&'static [&'static str]),
    /// A field of GNS3's reply, taken back as input and ignored.
    ReplyOnly,
}

pub struct Row {
    pub gns3: &'static str,
    /// The contract's setting, for the rows that have one.
    pub setting: Option<&'static str>,
    pub conv: Conv,
    pub notes: &'static str,
}

const fn row(gns3: &'static str, setting: &'static str, conv: Conv, notes: &'static str) -> Row {
    Row {
        gns3,
        setting: Some(setting),
        conv,
        notes,
    }
}

const fn no(gns3: &'static str, conv: Conv, notes: &'static str) -> Row {
    Row {
        gns3,
        setting: None,
        conv,
        notes,
    }
}

use Conv::*;

const MD5: &str = "reply only: the image's md5, computed here";
const BACKED: &str = "reply only (GNS3's own linked clone path)";
const IFACE: &str = "ide, sata, nvme, scsi, virtio; `none` is ide; sd, mtd, floppy, pflash refused";

pub const ROWS: &[Row] = &[
    row(
        "name",
        "Name",
        Text,
        "the daemon's name rules apply (409 with its message)",
    ),
    no("node_id", ReplyOnly, "the VM's Id, given at creation only"),
    no(
        "usage",
        ReplyOnly,
        "text for the user, kept by the controller",
    ),
    row("linked_clone", "LinkedClone", Bool, ""),
    row(
        "qemu_path",
        "QemuPath",
        Text,
        "resolved in PATH by the daemon",
    ),
    row(
        "platform",
        "QemuPath",
        Platform,
        "qemu-system-<platform>, when qemu_path is not given",
    ),
    row(
        "console",
        "ConsolePort",
        Port,
        "picked by the daemon when not given",
    ),
    no(
        "console_type",
        Refused(&["null", "\"telnet\""]),
        "the daemon serves telnet consoles only",
    ),
    no(
        "aux",
        Refused(&["null"]),
        "the daemon has no auxiliary console",
    ),
    no(
        "aux_type",
        Refused(&["null", "\"none\""]),
        "the daemon has no auxiliary console",
    ),
    row("hda_disk_image", "HdaDiskImage", Image, ""),
    no("hda_disk_image_backed", ReplyOnly, BACKED),
    no("hda_disk_image_md5sum", ReplyOnly, MD5),
    row(
        "hda_disk_interface",
        "HdaDiskInterface",
        DiskInterface,
        IFACE,
    ),
    row("hdb_disk_image", "HdbDiskImage", Image, ""),
    no("hdb_disk_image_backed", ReplyOnly, BACKED),
    no("hdb_disk_image_md5sum", ReplyOnly, MD5),
    row(
        "hdb_disk_interface",
        "HdbDiskInterface",
        DiskInterface,
        IFACE,
    ),
    row("hdc_disk_image", "HdcDiskImage", Image, ""),
    no("hdc_disk_image_backed", ReplyOnly, BACKED),
    no("hdc_disk_image_md5sum", ReplyOnly, MD5),
    row(
        "hdc_disk_interface",
        "HdcDiskInterface",
        DiskInterface,
        IFACE,
    ),
    row("hdd_disk_image", "HddDiskImage", Image, ""),
    no("hdd_disk_image_backed", ReplyOnly, BACKED),
    no("hdd_disk_image_md5sum", ReplyOnly, MD5),
    row(
        "hdd_disk_interface",
        "HddDiskInterface",
        DiskInterface,
        IFACE,
    ),
    row("cdrom_image", "CdromImage", Image, ""),
    no("cdrom_image_md5sum", ReplyOnly, MD5),
    row("bios_image", "BiosImage", Image, ""),
    no("bios_image_md5sum", ReplyOnly, MD5),
    row("initrd", "Initrd", Image, ""),
    no("initrd_md5sum", ReplyOnly, MD5),
    row("kernel_image", "KernelImage", Image, ""),
    no("kernel_image_md5sum", ReplyOnly, MD5),
    row("kernel_command_line", "KernelCommandLine", Text, ""),
    row("boot_priority", "BootOrder", Text, "the same nine orders"),
    row("ram", "Ram", Count, "MiB"),
    row("cpus", "Cpus", Count, ""),
    row("maxcpus", "MaxCpus", Count, ""),
    row("adapters", "Adapters", Count, ""),
    row(
        "adapter_type",
        "AdapterType",
        Text,
        "a model QEMU lists (`virtio` is not one)",
    ),
    row(
        "mac_address",
        "MacAddress",
        Text,
        "the base MAC; adapter n gets base + n",
    ),
    row(
        "replicate_network_connection_state",
        "ReplicateLinkState",
        Bool,
        "",
    ),
    no(
        "create_config_disk",
        Refused(&["null", "false"]),
        "the daemon makes no config disk",
    ),
    row("tpm", "Tpm", Bool, ""),
    row("uefi", "Firmware", Uefi, "true: uefi, false: bios"),
    row(
        "on_close",
        "OnStop",
        OnClose,
        "power_off, shutdown_signal, save_vm_state: power-off, shutdown, save-state",
    ),
    row(
        "cpu_throttling",
        "CpuThrottling",
        Count,
        "percent of one host CPU, 0 = none",
    ),
    row(
        "process_priority",
        "ProcessPriority",
        Text,
        "the same six priorities",
    ),
    row(
        "options",
        "Options",
        Text,
        "options the daemon owns are refused (409)",
    ),
    row(
        "custom_adapters",
        "CustomAdapters",
        CustomAdapters,
        "port_name is not kept",
    ),
    no("project_id", ReplyOnly, "from the request's path"),
    no("node_directory", ReplyOnly, ""),
    no("command_line", ReplyOnly, "the daemon's CommandLine"),
    no("status", ReplyOnly, "from the VM's State"),
];

/// The row of GNS3 property `name`, if it is one.
pub fn find(name: &str) -> Option<&'static Row> {
    ROWS.iter().find(|r| r.gns3 == name)
}

/// The settings, by contract name, of the GNS3 properties in `body`: only those given (an
/// update is partial). Properties that are not GNS3 QEMU node properties are ignored (the
/// controller copies template records, database fields and all).
pub fn to_settings(
    body: &Map<String, Value>,
    images_dir: &Path,
) -> Result<BTreeMap<&'static str, Variant<'static>>> {
    let mut out = BTreeMap::new();
    for (key, value) in body {
        let Some(row) = find(key) else { continue };
        let Some(setting) = row.setting else {
            if let Refused(allowed) = row.conv {
                if !allowed.contains(&value.to_string().as_str()) {
                    return Err(ApiError::Conflict(format!(
                        "{key} {value} is not supported: {}",
                        row.notes
                    )));
                }
            }
            continue;
        };
        if value.is_null() {
            continue;
        }
        if row.conv == Platform && body.get("qemu_path").is_some_and(|v| !v.is_null()) {
            continue;
        }
        out.insert(setting, convert(row, value, images_dir)?);
    }
    Ok(out)
}

fn wrong(key: &str, what: &str, value: &Value) -> ApiError {
    ApiError::BadRequest(format!("{key} must be {what}, not {value}"))
}

fn convert(row: &Row, value: &Value, images_dir: &Path) -> Result<Variant<'static>> {
    let key = row.gns3;
    let text = || value.as_str().ok_or_else(|| wrong(key, "a string", value));
    Ok(match row.conv {
        Text => Variant::from(text()?.to_string()),
        Count => {
            let n = value.as_u64().ok_or_else(|| wrong(key, "an integer", value))?;
            Variant::from(u32::try_from(n).map_err(|_| wrong(key, "below 2^32", value))?)
        }
        Port => {
            let n = value.as_u64().ok_or_else(|| wrong(key, "a port", value))?;
            Variant::from(u16::try_from(n).map_err(|_| wrong(key, "a port", value))?)
        }
        Bool => Variant::from(value.as_bool().ok_or_else(|| wrong(key, "true or false", value))?),
        Image => match text()? {
            "" => Variant::from(String::new()),
            name => Variant::from(images::resolve(images_dir, name)?.display().to_string()),
        },
        DiskInterface => match text()? {
            "none" | "ide" => Variant::from("ide".to_string()),
            i @ ("sata" | "nvme" | "scsi" | "virtio") => Variant::from(i.to_string()),
            other => {
                return Err(ApiError::Conflict(format!(
                    "{key} {other} is not supported: the daemon attaches disks as ide, sata, nvme, scsi or virtio"
                )))
            }
        },
        Uefi => {
            let uefi = value.as_bool().ok_or_else(|| wrong(key, "true or false", value))?;
            Variant::from(if uefi { "uefi" } else { "bios" }.to_string())
        }
        OnClose => Variant::from(
            match text()? {
                "power_off" => "power-off",
                "shutdown_signal" => "shutdown",
                "save_vm_state" => "save-state",
                _ => return Err(wrong(key, "power_off, shutdown_signal or save_vm_state", value)),
            }
            .to_string(),
        ),
        Platform => Variant::from(format!("qemu-system-{}", text()?)),
        CustomAdapters => {
            let list = value.as_array().ok_or_else(|| wrong(key, "a list", value))?;
            let mut out = Vec::new();
            for a in list {
                let n = a
                    .get("adapter_number")
                    .and_then(Value::as_u64)
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| wrong(key, "a list of {adapter_number, …}", value))?;
                let field = |f: &str| match a.get(f) {
                    None | Some(Value::Null) => Ok(String::new()),
                    Some(Value::String(s)) => Ok(s.clone()),
                    Some(_) => Err(wrong(key, "a list of adapters with string fields", value)),
                };
                out.push((n, field("adapter_type")?, field("mac_address")?));
            }
            Variant::from(out)
        }
        Refused(_) | ReplyOnly => return Err(ApiError::Internal(format!("{key} has no setting"))),
    })
}

/// The GNS3 properties of the VM whose settings `get` reads: every row with a setting, by
/// GNS3 name, null where the daemon has no value.
pub fn from_settings<'a>(
    get: impl Fn(&str) -> Option<&'a OwnedVariant>,
    images_dir: &Path,
) -> Map<String, Value> {
    let mut out = Map::new();
    for row in ROWS {
        let Some(setting) = row.setting else { continue };
        let v = get(setting);
        let value = v.map(|v| back(row, v, images_dir)).unwrap_or(Value::Null);
        out.insert(row.gns3.to_string(), value);
    }
    out
}

fn back(row: &Row, v: &OwnedVariant, images_dir: &Path) -> Value {
    let s = <&str>::try_from(v).ok();
    match row.conv {
        Text => json!(s),
        Count => json!(u32::try_from(v).ok()),
        Port => json!(u16::try_from(v).ok().filter(|p| *p != 0)),
        Bool => json!(bool::try_from(v).ok()),
        Image => json!(s.map(|p| images::name_of(images_dir, p))),
        DiskInterface => json!(s),
        Uefi => json!(s.map(|f| f != "bios")),
        OnClose => json!(s.map(|o| match o {
            "shutdown" => "shutdown_signal",
            "save-state" => "save_vm_state",
            _ => "power_off",
        })),
        Platform => json!(s.map(|p| {
            let base = p.rsplit('/').next().unwrap_or(p);
            base.strip_prefix("qemu-system-")
                .unwrap_or(base)
                .to_string()
        })),
        CustomAdapters => {
            let list = v
                .try_clone()
                .ok()
                .and_then(|v| <Vec<(u32, String, String)>>::try_from(v).ok())
                .unwrap_or_default();
            Value::Array(
                list.into_iter()
                    .map(|(n, model, mac)| {
                        json!({
                            "adapter_number": n,
                            "port_name": null,
                            "adapter_type": Some(model).filter(|m| !m.is_empty()),
                            "mac_address": Some(mac).filter(|m| !m.is_empty()),
                        })
                    })
                    .collect(),
            )
        }
        Refused(_) | ReplyOnly => Value::Null,
    }
}

/// The README's table, as `properties.rs` declares it.
pub fn markdown() -> String {
    let mut out = String::from("| GNS3 property | contract setting | notes |\n|---|---|---|\n");
    for r in ROWS {
        let setting = r
            .setting
            .map(|s| format!("`{s}`"))
            .unwrap_or_else(|| "—".into());
        let notes = match r.conv {
            Refused(allowed) => format!("refused unless {}: {}", allowed.join(" or "), r.notes),
            ReplyOnly if r.notes.is_empty() => "reply only".to_string(),
            _ => r.notes.to_string(),
        };
        out.push_str(&format!("| `{}` | {setting} | {notes} |\n", r.gns3));
    }
    out
}

#[cfg(test)]
#[path = "properties_tests.rs"]
mod tests;
