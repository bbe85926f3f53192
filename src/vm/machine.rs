//! The VM's machine: its type, CPU model and vCPUs checked, on the command line with its
//! UUID, and vCPUs plugged into a running QEMU (CPU hot-add).

use serde_json::{json, Value};

use super::error::{shown, Error, Result};
use super::qemu::{Qemu, QMP_TIMEOUT};
use crate::model::{Accelerator, Settings};

/// QEMU's limit for the `pc` machine (255 APIC ids below the broadcast one without
/// interrupt remapping); q35 allows a few more only with an IOMMU, which no VM here has.
pub const MAX_CPUS: u32 = 255;
const MAX_NAME: usize = 64;

/// The checks across the CPU settings.
pub fn check(s: &Settings) -> Result<()> {
    if s.cpus > s.max_cpus {
        return Err(Error::InvalidArgument(format!(
            "Cpus {} is above MaxCpus {}: raise MaxCpus (VM stopped) to at least {}, or ask for fewer Cpus",
            s.cpus, s.max_cpus, s.cpus
        )));
    }
    // `host` passes the host's CPU through, which only KVM can; `max` is every feature
    // the accelerator offers, TCG's included.
    if s.cpu_model == "host" && s.accelerator != Accelerator::Kvm {
        return Err(Error::InvalidArgument(format!(
            "CpuModel host needs KVM, and Accelerator is {}: set Accelerator to kvm, or use another CpuModel (max is the most TCG offers)",
            s.accelerator.as_str()
        )));
    }
    Ok(())
}

pub fn check_cpu_count(key: &str, v: u32) -> Result<u32> {
    if v == 0 || v > MAX_CPUS {
        return Err(Error::InvalidArgument(format!(
            "{key} {v} is out of range: a VM has 1 to {MAX_CPUS} CPUs"
        )));
    }
    Ok(v)
}

/// A CPU model or machine name as QEMU's help lists them; whether the binary has it is
/// checked against its `help` (`binary::Capabilities::check_machine`).
pub fn check_name(key: &str, v: String, empty_ok: bool) -> Result<String> {
    let ok = v
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if (v.is_empty() && !empty_ok) || v.len() > MAX_NAME || !ok {
        return Err(Error::InvalidArgument(format!(
            "{key} '{}' is not a name QEMU lists: give one of {} ({}letters, digits, '.', '_', '-')",
            shown(&v),
            if key == "CpuModel" { "-cpu help" } else { "-machine help" },
            if empty_ok { "empty for QEMU's default, or " } else { "" }
        )));
    }
    Ok(v)
}

/// `-machine`, `-cpu`, `-smp` and `-uuid` of a VM whose id is `id` (32 hex digits);
/// `options` are the user's expanded Options, whose own `-uuid` wins.
pub fn args(s: &Settings, id: &str, options: &[String]) -> Vec<String> {
    let mut args = vec!["-machine".to_string(), s.machine_type.clone()];
    if !s.cpu_model.is_empty() {
        args.extend(["-cpu".to_string(), s.cpu_model.clone()]);
    }
    // One socket of MaxCpus cores of one thread each: QEMU hot-plugs x86 vCPUs by core on
    // pc and q35 (TCG and KVM alike), so every CPU above Cpus is a free core that
    // `device_add` can fill. One socket also keeps guests that license by socket (Windows
    // client editions take two at most) using all of them.
    args.extend([
        "-smp".to_string(),
        format!("cpus={},maxcpus={},sockets=1", s.cpus, s.max_cpus),
    ]);
    let own_uuid = options.iter().any(|a| a == "-uuid" || a == "--uuid");
    if !own_uuid {
        if let Some(uuid) = uuid(id) {
            args.extend(["-uuid".to_string(), uuid]);
        }
    }
    args
}

/// The 32 hex digits of an id as a UUID, 8-4-4-4-12.
pub fn uuid(id: &str) -> Option<String> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let cut = |a: usize, b: usize| &id[a..b];
    Some(format!(
        "{}-{}-{}-{}-{}",
        cut(0, 8),
        cut(8, 12),
        cut(12, 16),
        cut(16, 20),
        cut(20, 32)
    ))
}

/// The id `device_add` gives the CPU plugged at `props`.
fn cpu_id(props: &Value) -> String {
    let n = |k: &str| props[k].as_u64().unwrap_or(0);
    format!(
        "gns3-cpu-{}-{}-{}",
        n("socket-id"),
        n("core-id"),
        n("thread-id")
    )
}

/// Of `query-hotpluggable-cpus`' answer: how many vCPUs are there, and the free places
/// (driver, properties) in the order the guest should get them. QEMU lists the highest
/// places first.
fn places(slots: &[Value]) -> (usize, Vec<(&str, &Value)>) {
    let present = slots.iter().filter(|s| s.get("qom-path").is_some()).count();
    let free = slots
        .iter()
        .rev()
        .filter(|s| s.get("qom-path").is_none())
        .filter_map(|s| Some((s["type"].as_str()?, &s["props"])))
        .collect();
    (present, free)
}

impl Qemu {
    /// What `query-hotpluggable-cpus` lists: each place a vCPU can be, with a `qom-path`
    /// where there is one.
    async fn cpu_slots(&mut self) -> Result<Vec<Value>> {
        let slots = self
            .qmp
            .execute("query-hotpluggable-cpus", None, QMP_TIMEOUT)
            .await?;
        Ok(slots.as_array().cloned().unwrap_or_default())
    }

    /// How many vCPUs QEMU has.
    pub async fn present_cpus(&mut self) -> Result<u32> {
        let (present, _) = places(&self.cpu_slots().await?);
        Ok(u32::try_from(present).unwrap_or(u32::MAX))
    }

    /// Plugs vCPUs in until QEMU has `cpus`; those it already has stay as they are.
    pub async fn plug_cpus(&mut self, vm: &str, cpus: u32) -> Result<()> {
        let slots = self.cpu_slots().await?;
        let (present, free) = places(&slots);
        let wanted = (cpus as usize).saturating_sub(present);
        if wanted > free.len() {
            return Err(Error::InvalidArgument(format!(
                "VM '{vm}' has {present} CPUs and room for {} more, not {wanted}: raise MaxCpus (VM stopped)",
                free.len()
            )));
        }
        for (driver, props) in free.into_iter().take(wanted) {
            let mut args = json!({ "driver": driver, "id": cpu_id(props) });
            if let (Some(args), Some(props)) = (args.as_object_mut(), props.as_object()) {
                args.extend(props.clone());
            }
            self.qmp
                .execute("device_add", Some(args), QMP_TIMEOUT)
                .await?;
        }
        Ok(())
    }

    /// Asks the guest to let go of the hot-added vCPUs above `cpus` (ACPI eject); a guest
    /// that keeps one keeps it until the VM stops. Those of -smp cannot go.
    pub async fn unplug_cpus(&mut self, cpus: u32) -> Result<()> {
        let slots = self.cpu_slots().await?;
        let (present, _) = places(&slots);
        // A device with an id lives at /machine/peripheral/<id>.
        let plugged = slots.iter().filter_map(|s| {
            s.get("qom-path")?
                .as_str()?
                .strip_prefix("/machine/peripheral/")
        });
        for id in plugged.take(present.saturating_sub(cpus as usize)) {
            let args = json!({ "id": id });
            if let Err(e) = self
                .qmp
                .execute("device_del", Some(args), QMP_TIMEOUT)
                .await
            {
                tracing::warn!(%id, "cannot unplug a vCPU: {e}");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::model::Setting;
    use crate::vm::settings::apply;
    use crate::vm::settings::tests::{invalid, limits, sample};

    const ID: &str = "6f9619ff8b86d011b42d00c04fc964ff";

    #[test]
    fn cpus_lie_between_one_and_max_cpus() {
        assert!(invalid(&[Setting::Cpus(0)]).contains("1 to 255"));
        assert!(invalid(&[Setting::MaxCpus(256)]).contains("1 to 255"));
        let e = invalid(&[Setting::Cpus(2)]);
        assert!(
            e.contains("above MaxCpus 1") && e.contains("raise MaxCpus"),
            "{e}"
        );
        let s = apply(
            &sample(),
            &[Setting::MaxCpus(255), Setting::Cpus(255)],
            &limits(),
        )
        .unwrap();
        assert_eq!((s.cpus, s.max_cpus), (255, 255));
        // Lowering MaxCpus below Cpus is the same mistake, named the same way.
        assert!(
            invalid(&[Setting::MaxCpus(4), Setting::Cpus(3), Setting::MaxCpus(2)])
                .contains("Cpus 3 is above MaxCpus 2")
        );
    }

    #[test]
    fn host_cpu_only_with_kvm() {
        let e = invalid(&[Setting::CpuModel("host".into())]);
        assert!(e.contains("set Accelerator to kvm"), "{e}");
        let kvm = [
            Setting::Accelerator("kvm".into()),
            Setting::CpuModel("host".into()),
        ];
        assert_eq!(apply(&sample(), &kvm, &limits()).unwrap().cpu_model, "host");
        let tcg = [
            Setting::Accelerator("tcg".into()),
            Setting::CpuModel("max".into()),
        ];
        assert!(apply(&sample(), &tcg, &limits()).is_ok());
    }

    #[test]
    fn cpu_and_machine_names_are_names() {
        assert!(invalid(&[Setting::MachineType(String::new())]).contains("-machine help"));
        assert!(invalid(&[Setting::CpuModel("a b".into())]).contains("-cpu help"));
        let s = apply(
            &sample(),
            &[
                Setting::MachineType("pc-q35-7.2".into()),
                Setting::CpuModel("Skylake-Server-v1".into()),
            ],
            &limits(),
        )
        .unwrap();
        assert!(s.is_q35());
        assert!(apply(&sample(), &[Setting::CpuModel(String::new())], &limits()).is_ok());
    }

    #[test]
    fn ids_as_uuids() {
        assert_eq!(uuid(ID).unwrap(), "6f9619ff-8b86-d011-b42d-00c04fc964ff");
        assert_eq!(uuid("6f9619ff"), None);
    }

    #[test]
    fn machine_cpus_and_uuid() {
        let mut s = Settings::default();
        assert_eq!(
            args(&s, ID, &[]).join(" "),
            "-machine pc -smp cpus=1,maxcpus=1,sockets=1 -uuid 6f9619ff-8b86-d011-b42d-00c04fc964ff"
        );
        s.machine_type = "q35".into();
        s.cpu_model = "max".into();
        s.cpus = 2;
        s.max_cpus = 4;
        let own = ["-uuid".to_string(), "x".to_string()];
        assert_eq!(
            args(&s, ID, &own).join(" "),
            "-machine q35 -cpu max -smp cpus=2,maxcpus=4,sockets=1"
        );
    }

    #[test]
    fn free_places_lowest_first() {
        let slot = |core: u32, at: Option<&str>| {
            let mut s = json!({
                "type": "qemu64-x86_64-cpu",
                "vcpus-count": 1,
                "props": { "socket-id": 0, "core-id": core, "thread-id": 0 }
            });
            if let Some(at) = at {
                s["qom-path"] = json!(at);
            }
            s
        };
        let slots = [
            slot(3, None),
            slot(2, None),
            slot(1, Some("/machine/unattached/device[1]")),
            slot(0, Some("/machine/unattached/device[0]")),
        ];
        let (present, free) = places(&slots);
        assert_eq!(present, 2);
        let cores: Vec<String> = free.iter().map(|(_, p)| cpu_id(p)).collect();
        assert_eq!(cores, ["gns3-cpu-0-2-0", "gns3-cpu-0-3-0"]);
        assert_eq!(free[0].0, "qemu64-x86_64-cpu");
    }

    #[test]
    fn plugged_cpus_are_named_by_place() {
        let props = json!({ "socket-id": 0, "core-id": 3, "thread-id": 0 });
        assert_eq!(cpu_id(&props), "gns3-cpu-0-3-0");
    }
}
