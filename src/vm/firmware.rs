//! The firmware of a VM: QEMU's own SeaBIOS, a vendor BIOS file, or UEFI from OVMF with the
//! VM's own variable store. OVMF is found through the firmware descriptors QEMU defines
//! (docs/interop/firmware.json), which Debian's `ovmf` installs in /usr/share/qemu/firmware:
//! they say which code file goes with which variable template, so no file name is guessed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Deserialize;

use super::error::{Error, Result};
use super::stamp::Stamp;
use crate::lock::lock;
use crate::model::{Firmware, Settings};

pub const DESCRIPTORS: &str = "/usr/share/qemu/firmware";
/// The VM's own UEFI variables, in its directory: qcow2, so a saved state can include them
/// (QEMU refuses to save a VM with a raw pflash).
pub const VARS_FILE: &str = "efivars.qcow2";

/// The OVMF files a UEFI VM runs on.
#[derive(Clone, Debug, PartialEq)]
pub struct Ovmf {
    pub code: PathBuf,
    pub code_format: String,
    pub vars_template: PathBuf,
    pub vars_format: String,
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "interface-types")]
    interface_types: Vec<String>,
    mapping: Mapping,
    targets: Vec<Target>,
    #[serde(default)]
    features: Vec<String>,
}

#[derive(Deserialize)]
struct Mapping {
    device: String,
    executable: Option<FlashFile>,
    #[serde(rename = "nvram-template")]
    nvram_template: Option<FlashFile>,
}

#[derive(Deserialize)]
struct FlashFile {
    filename: PathBuf,
    format: String,
}

#[derive(Deserialize)]
struct Target {
    architecture: String,
}

/// Of the descriptors (name, JSON text) in QEMU's order (by file name), the OVMF of
/// `firmware` for x86_64: plain UEFI has no Secure Boot and needs no SMM; uefi-secure has
/// Secure Boot with keys enrolled. A descriptor that does not parse is passed over.
fn choose(descriptors: &[(String, String)], firmware: Firmware) -> Option<Ovmf> {
    let secure = firmware == Firmware::UefiSecure;
    descriptors.iter().find_map(|(_, text)| {
        let d: Descriptor = serde_json::from_str(text).ok()?;
        let has = |f: &str| d.features.iter().any(|x| x == f);
        let fits = d.interface_types.iter().any(|t| t == "uefi")
            && d.mapping.device == "flash"
            && d.targets.iter().any(|t| t.architecture == "x86_64")
            && !has("amd-sev-es")
            && if secure {
                has("secure-boot") && has("enrolled-keys") && has("requires-smm")
            } else {
                !has("secure-boot") && !has("requires-smm")
            };
        let (code, vars) = (d.mapping.executable?, d.mapping.nvram_template?);
        fits.then_some(Ovmf {
            code: code.filename,
            code_format: code.format,
            vars_template: vars.filename,
            vars_format: vars.format,
        })
    })
}

/// The OVMF for the VM's Firmware (None for bios), with both of its files there.
pub fn find(firmware: Firmware) -> Result<Option<Ovmf>> {
    find_in(Path::new(DESCRIPTORS), firmware)
}

fn find_in(dir: &Path, firmware: Firmware) -> Result<Option<Ovmf>> {
    if firmware == Firmware::Bios {
        return Ok(None);
    }
    let missing = |why: String| {
        Error::StartFailed(format!(
            "Firmware {} needs OVMF, but {why}; install the Debian package ovmf, or set Firmware to bios",
            firmware.as_str()
        ))
    };
    let mut descriptors: Vec<(String, String)> = std::fs::read_dir(dir)
        .map_err(|e| missing(format!("{} cannot be read ({e})", dir.display())))?
        .filter_map(|entry| {
            let path = entry.ok()?.path();
            let name = path.file_name()?.to_str()?.to_string();
            name.ends_with(".json")
                .then(|| Some((name, std::fs::read_to_string(&path).ok()?)))?
        })
        .collect();
    descriptors.sort();
    let ovmf = choose(&descriptors, firmware).ok_or_else(|| {
        missing(format!(
            "no firmware descriptor in {} is one for x86_64 {}",
            dir.display(),
            if firmware == Firmware::UefiSecure {
                "with Secure Boot and enrolled keys"
            } else {
                "without Secure Boot"
            }
        ))
    })?;
    for file in [&ovmf.code, &ovmf.vars_template] {
        std::fs::File::open(file)
            .map_err(|e| missing(format!("{} cannot be read ({e})", file.display())))?;
    }
    Ok(Some(ovmf))
}

pub fn vars(vm_dir: &Path) -> PathBuf {
    vm_dir.join(VARS_FILE)
}

/// OVMF's variable templates as qcow2, made once by qemu-img and kept while the template
/// stays unchanged: a VM's first UEFI start writes a copy instead of running qemu-img.
#[derive(Default)]
pub struct Templates(Mutex<HashMap<PathBuf, Converted>>);

/// A template's stamp when converted, and the qcow2 made of it.
type Converted = (Stamp, Arc<Vec<u8>>);

impl Templates {
    fn get(&self, template: &Path) -> Option<Arc<Vec<u8>>> {
        let all = lock(&self.0);
        let (stamp, image) = all.get(template)?;
        (Stamp::of(template, SystemTime::now()) == Some(*stamp)).then(|| image.clone())
    }
}

/// Makes the VM's variable store from OVMF's template at its first UEFI start, through a
/// temporary file so a crash never leaves half of one; kept from then on. Whether it made it.
pub async fn prepare(
    qemu_img: &Path,
    vm_dir: &Path,
    ovmf: &Ovmf,
    templates: &Templates,
) -> Result<bool> {
    let dest = vars(vm_dir);
    if std::fs::metadata(&dest).is_ok_and(|m| m.len() > 0) {
        return Ok(false);
    }
    let tmp = vm_dir.join(format!(".{VARS_FILE}.tmp"));
    let failed = |what: &str, e: std::io::Error| {
        Error::DiskImageFailed(format!("cannot {what} {}: {e}", tmp.display()))
    };
    let template = &ovmf.vars_template;
    if let Some(image) = templates.get(template) {
        std::fs::write(&tmp, &*image).map_err(|e| failed("write", e))?;
    } else {
        let since = SystemTime::now();
        let (template_str, tmp_str) = (template.to_string_lossy(), tmp.to_string_lossy());
        let args = [
            "convert",
            "-q",
            "-f",
            &ovmf.vars_format,
            "-O",
            "qcow2",
            &template_str,
            &tmp_str,
        ];
        super::disks::run(qemu_img, &args).await?;
        if let Some(stamp) = Stamp::of(template, since) {
            let image = std::fs::read(&tmp).map_err(|e| failed("read", e))?;
            lock(&templates.0).insert(template.clone(), (stamp, Arc::new(image)));
        }
    }
    std::fs::rename(&tmp, &dest).map_err(|e| {
        Error::DiskImageFailed(format!("cannot move {} into place: {e}", dest.display()))
    })?;
    Ok(true)
}

/// The firmware's part of the command line.
pub fn args(s: &Settings, vm_dir: &Path, ovmf: Option<&Ovmf>) -> Result<Vec<String>> {
    let opt = |p: &Path| p.to_string_lossy().replace(',', ",,");
    if !s.bios_image.is_empty() {
        return Ok(vec!["-bios".into(), s.bios_image.clone()]);
    }
    if s.firmware == Firmware::Bios {
        return Ok(Vec::new());
    }
    let ovmf = ovmf.ok_or_else(|| Error::Internal("no OVMF was found for a UEFI VM".into()))?;
    let mut cmd = vec![
        "-drive".into(),
        format!(
            "if=pflash,format={},unit=0,readonly=on,file={}",
            ovmf.code_format,
            opt(&ovmf.code)
        ),
        "-drive".into(),
        format!("if=pflash,format=qcow2,unit=1,file={}", opt(&vars(vm_dir))),
    ];
    if s.firmware == Firmware::UefiSecure {
        // Secure Boot's variables are guarded by SMM: only code in SMM may write the flash.
        cmd.extend(
            [
                "-machine",
                "smm=on",
                "-global",
                "driver=cfi.pflash01,property=secure,value=on",
            ]
            .map(String::from),
        );
    }
    Ok(cmd)
}

/// The checks across settings: a vendor BIOS is not UEFI, and Secure Boot needs a q35.
pub fn check(s: &Settings) -> Result<()> {
    if !s.bios_image.is_empty() && s.firmware != Firmware::Bios {
        return Err(Error::InvalidArgument(format!(
            "BiosImage is a BIOS, which Firmware {} replaces with OVMF; set BiosImage to '' or Firmware to bios",
            s.firmware.as_str()
        )));
    }
    // Secure Boot needs SMM, which only q35 has.
    if s.firmware == Firmware::UefiSecure && !s.is_q35() {
        return Err(Error::InvalidArgument(
            "Firmware uefi-secure needs MachineType q35 (Secure Boot needs SMM, which the pc machine lacks); set MachineType to q35, or Firmware to uefi".into(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian 12's three descriptors from ovmf, cut to what is read.
    fn debian() -> Vec<(String, String)> {
        let one = |name: &str, code: &str, vars: &str, features: &str| {
            (
                name.to_string(),
                format!(
                    r#"{{"interface-types": ["uefi"], "mapping": {{"device": "flash",
                    "executable": {{"filename": "/usr/share/OVMF/{code}", "format": "raw"}},
                    "nvram-template": {{"filename": "/usr/share/OVMF/{vars}", "format": "raw"}}}},
                    "targets": [{{"architecture": "x86_64", "machines": ["pc-q35-*"]}}],
                    "features": [{features}], "tags": []}}"#
                ),
            )
        };
        vec![
            one(
                "40-edk2-x86_64-secure-enrolled.json",
                "OVMF_CODE_4M.ms.fd",
                "OVMF_VARS_4M.ms.fd",
                r#""acpi-s3", "amd-sev", "enrolled-keys", "requires-smm", "secure-boot", "verbose-dynamic""#,
            ),
            one(
                "50-edk2-x86_64-secure.json",
                "OVMF_CODE_4M.secboot.fd",
                "OVMF_VARS_4M.fd",
                r#""acpi-s3", "amd-sev", "requires-smm", "secure-boot", "verbose-dynamic""#,
            ),
            one(
                "60-edk2-x86_64.json",
                "OVMF_CODE_4M.fd",
                "OVMF_VARS_4M.fd",
                r#""acpi-s3", "amd-sev", "verbose-dynamic""#,
            ),
        ]
    }

    #[test]
    fn debian_descriptors_give_plain_and_secure_ovmf() {
        let d = debian();
        let plain = choose(&d, Firmware::Uefi).unwrap();
        assert_eq!(plain.code, Path::new("/usr/share/OVMF/OVMF_CODE_4M.fd"));
        assert_eq!(
            plain.vars_template,
            Path::new("/usr/share/OVMF/OVMF_VARS_4M.fd")
        );
        assert_eq!(
            (plain.code_format.as_str(), plain.vars_format.as_str()),
            ("raw", "raw")
        );
        let secure = choose(&d, Firmware::UefiSecure).unwrap();
        assert_eq!(secure.code, Path::new("/usr/share/OVMF/OVMF_CODE_4M.ms.fd"));
        assert_eq!(
            secure.vars_template,
            Path::new("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
        );
        assert_eq!(choose(&d[..2], Firmware::Uefi), None);
        let broken = vec![("10-bad.json".to_string(), "{".to_string()), d[2].clone()];
        assert_eq!(choose(&broken, Firmware::Uefi), Some(plain));
    }

    #[test]
    fn without_ovmf_start_names_the_package() {
        let dir = tempfile::tempdir().unwrap();
        let says = |r: Result<Option<Ovmf>>| match r {
            Err(e @ Error::StartFailed(_)) => e.to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(find_in(dir.path(), Firmware::Bios).unwrap(), None);
        let e = says(find_in(&dir.path().join("none"), Firmware::Uefi));
        assert!(e.contains("install the Debian package ovmf"), "{e}");
        let e = says(find_in(dir.path(), Firmware::Uefi));
        assert!(
            e.contains("no firmware descriptor") && e.contains("package ovmf"),
            "{e}"
        );
        // A descriptor whose files are gone (ovmf removed, its descriptors left).
        let gone = dir.path().join("gone");
        let (name, text) = debian().remove(2);
        let text = text.replace("/usr/share/OVMF", gone.to_str().unwrap());
        std::fs::write(dir.path().join(name), text).unwrap();
        assert!(find_in(dir.path(), Firmware::UefiSecure).is_err());
        let e = says(find_in(dir.path(), Firmware::Uefi));
        let code = gone.join("OVMF_CODE_4M.fd");
        assert!(
            e.contains(&format!("{} cannot be read", code.display())),
            "{e}"
        );
    }

    #[test]
    fn command_line_of_each_firmware() {
        let dir = Path::new("/var/lib/gns3-qemud/vms/ab");
        let ovmf = choose(&debian(), Firmware::Uefi).unwrap();
        let mut s = Settings::default();
        assert!(args(&s, dir, None).unwrap().is_empty());
        s.bios_image = "/images/vendor.bin".into();
        assert_eq!(
            args(&s, dir, None).unwrap(),
            ["-bios", "/images/vendor.bin"]
        );
        s.bios_image.clear();
        s.firmware = Firmware::Uefi;
        assert_eq!(
            args(&s, dir, Some(&ovmf)).unwrap().join(" "),
            "-drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd \
             -drive if=pflash,format=qcow2,unit=1,file=/var/lib/gns3-qemud/vms/ab/efivars.qcow2"
        );
        assert!(matches!(args(&s, dir, None), Err(Error::Internal(_))));
        s.firmware = Firmware::UefiSecure;
        let secure = args(&s, dir, Some(&ovmf)).unwrap().join(" ");
        assert!(
            secure
                .ends_with(" -machine smm=on -global driver=cfi.pflash01,property=secure,value=on"),
            "{secure}"
        );
    }

    #[test]
    fn a_vendor_bios_is_not_uefi_and_secure_boot_needs_q35() {
        let mut s = Settings::default();
        assert!(check(&s).is_ok());
        s.bios_image = "/images/vendor.bin".into();
        assert!(check(&s).is_ok());
        s.firmware = Firmware::Uefi;
        let e = check(&s).unwrap_err().to_string();
        assert!(e.contains("set BiosImage to '' or Firmware to bios"), "{e}");
        s.bios_image.clear();
        assert!(check(&s).is_ok());
        s.firmware = Firmware::UefiSecure;
        let e = check(&s).unwrap_err().to_string();
        assert!(e.contains("needs MachineType q35"), "{e}");
        s.machine_type = "q35".into();
        assert!(check(&s).is_ok());
    }
}
