//! Figures of this host for the controller's display: CPUs, memory, disk, load, interfaces.
//! None is load-bearing (the controller only shows them), so a figure that cannot be read is
//! 0 rather than an error.

use std::path::Path;
use std::sync::Mutex;

use serde_json::{json, Value};

pub fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `/proc/meminfo`'s fields, in bytes.
fn meminfo() -> Vec<(String, u64)> {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (key, rest) = l.split_once(':')?;
            let kib: u64 = rest.split_whitespace().next()?.parse().ok()?;
            Some((key.to_string(), kib * 1024))
        })
        .collect()
}

fn field(info: &[(String, u64)], key: &str) -> u64 {
    info.iter().find(|(k, _)| k == key).map_or(0, |(_, v)| *v)
}

pub fn memory_total() -> u64 {
    field(&meminfo(), "MemTotal")
}

/// (total, free) bytes of the filesystem holding `dir`.
fn disk(dir: &Path) -> (u64, u64) {
    // The image directory may not exist yet; its parent's filesystem is the one it will use.
    let mut at = dir;
    loop {
        if let Ok(s) = nix::sys::statvfs::statvfs(at) {
            let block = s.fragment_size();
            return (s.blocks() * block, s.blocks_available() * block);
        }
        match at.parent() {
            Some(p) => at = p,
            None => return (0, 0),
        }
    }
}

pub fn disk_size(dir: &Path) -> u64 {
    disk(dir).0
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        ((part as f64 * 1000.0 / whole as f64).round()) / 10.0
    }
}

/// Busy and total jiffies of all CPUs (`/proc/stat`'s first line).
fn cpu_times() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = text
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    // idle and iowait
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle.min(total), total)
}

/// The CPU use since the last call (of any caller), in percent.
pub fn cpu_usage_percent() -> f64 {
    static LAST: Mutex<(u64, u64)> = Mutex::new((0, 0));
    let now = cpu_times();
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    let (busy, total) = (now.0.saturating_sub(last.0), now.1.saturating_sub(last.1));
    *last = now;
    percent(busy, total)
}

/// The three figures of the notification socket's `ping` (the controller indexes each).
pub fn usage(images: &Path) -> Value {
    let info = meminfo();
    let (total, available) = (field(&info, "MemTotal"), field(&info, "MemAvailable"));
    let (disk_total, disk_free) = disk(images);
    json!({
        "cpu_usage_percent": cpu_usage_percent(),
        "memory_usage_percent": percent(total.saturating_sub(available), total),
        "disk_usage_percent": percent(disk_total.saturating_sub(disk_free), disk_total),
    })
}

/// `GET /statistics`: the fields GNS3's own compute answers with.
pub fn statistics(images: &Path) -> Value {
    let info = meminfo();
    let (total, free, available) = (
        field(&info, "MemTotal"),
        field(&info, "MemFree"),
        field(&info, "MemAvailable"),
    );
    let (swap_total, swap_free) = (field(&info, "SwapTotal"), field(&info, "SwapFree"));
    let load: Vec<f64> = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .map(|l| l.parse::<f64>().unwrap_or(0.0) * 100.0 / cpus() as f64)
        .collect();
    let (disk_total, disk_free) = disk(images);
    json!({
        "memory_total": total,
        "memory_free": free,
        "memory_used": total.saturating_sub(available),
        "swap_total": swap_total,
        "swap_free": swap_free,
        "swap_used": swap_total.saturating_sub(swap_free),
        "cpu_usage_percent": cpu_usage_percent(),
        "memory_usage_percent": percent(total.saturating_sub(available), total),
        "swap_usage_percent": percent(swap_total.saturating_sub(swap_free), swap_total),
        "disk_usage_percent": percent(disk_total.saturating_sub(disk_free), disk_total),
        "load_average_percent": load,
    })
}

/// `GET /network/interfaces`: this host's IPv4 interfaces, which the controller reads to
/// find a subnet two computes share when one is registered at a loopback address.
pub fn interfaces() -> Value {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return json!([]);
    };
    let addrs: Vec<_> = addrs.collect();
    let mac = |name: &str| {
        std::fs::read_to_string(format!("/sys/class/net/{name}/address"))
            .map(|m| m.trim().to_string())
            .unwrap_or_default()
    };
    let list: Vec<Value> = addrs
        .iter()
        .filter_map(|a| {
            let ip = a.address.as_ref()?.as_sockaddr_in()?.ip();
            let mask = a
                .netmask
                .as_ref()
                .and_then(|m| m.as_sockaddr_in())
                .map(|m| m.ip());
            Some(json!({
                "id": a.interface_name,
                "name": a.interface_name,
                "ip_address": ip.to_string(),
                "netmask": mask.map(|m| m.to_string()).unwrap_or_default(),
                "mac_address": mac(&a.interface_name),
                "type": "ethernet",
            }))
        })
        .collect();
    Value::Array(list)
}

/// Whether KVM can be used here, for the GUI's display only: each VM's Accelerator decides.
pub fn kvm() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ping_carries_the_three_figures_the_controller_indexes() {
        let usage = usage(Path::new("/nonexistent/images"));
        for key in [
            "cpu_usage_percent",
            "memory_usage_percent",
            "disk_usage_percent",
        ] {
            let v = usage[key].as_f64().unwrap();
            assert!((0.0..=100.0).contains(&v), "{key} = {v}");
        }
        assert!(usage["memory_usage_percent"].as_f64().unwrap() > 0.0);
        assert!(usage["disk_usage_percent"].as_f64().unwrap() > 0.0);
    }

    #[test]
    fn loopback_is_among_the_interfaces() {
        let list = interfaces();
        assert!(
            list.as_array()
                .unwrap()
                .iter()
                .any(|i| i["ip_address"] == "127.0.0.1" && i["netmask"] == "255.0.0.0"),
            "{list}"
        );
    }
}
