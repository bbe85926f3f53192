//! The files a VM's settings name: boot files and base disk images, which must be readable
//! regular files, and the QEMU binary, looked up in PATH as the seed did.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::error::{check_len, shown, Error, Result};

const MAX_PATH: usize = 4096;

/// A boot file or base disk image: empty (unset) or an absolute path to a readable file.
pub fn check_file(key: &str, v: &str) -> Result<String> {
    if v.is_empty() {
        return Ok(String::new());
    }
    check_len(key, v, MAX_PATH)?;
    let path = Path::new(v);
    if !path.is_absolute() {
        return Err(Error::InvalidArgument(format!(
            "{key} '{}' is not an absolute path; give the full path (starting with /)",
            shown(v)
        )));
    }
    let not_accessible = |why: String| Error::ImageNotAccessible(format!("{key} '{v}' {why}"));
    match fs::metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(not_accessible("is not a regular file".into())),
        Err(e) => {
            return Err(match fs::read_link(path) {
                Ok(target) => not_accessible(format!(
                    "is a symlink to '{}', which is not accessible ({e})",
                    target.display()
                )),
                Err(_) => not_accessible(format!("is not accessible ({e})")),
            })
        }
    }
    fs::File::open(path)
        .map_err(|e| not_accessible(format!("cannot be read by the daemon ({e})")))?;
    Ok(v.to_string())
}

/// The seed's rule: a bare name is looked up in PATH; the result must be an executable file.
/// The absolute path is what gets stored, so a VM keeps its binary when PATH changes.
pub fn resolve_qemu_path(v: &str) -> Result<String> {
    check_len("QemuPath", v, MAX_PATH)?;
    if v.is_empty() {
        return Err(Error::QemuNotFound(
            "QemuPath is empty; give a QEMU binary such as qemu-system-x86_64".into(),
        ));
    }
    let path = if v.contains('/') {
        if !v.starts_with('/') {
            return Err(Error::InvalidArgument(format!(
                "QemuPath '{}' is relative; give an absolute path or a bare name looked up in PATH",
                shown(v)
            )));
        }
        PathBuf::from(v)
    } else {
        which(OsStr::new(v)).ok_or_else(|| {
            Error::QemuNotFound(format!(
                "QEMU binary '{}' is not in PATH ({}); install QEMU (Debian: qemu-system-x86) or give its absolute path",
                shown(v),
                std::env::var("PATH").unwrap_or_default()
            ))
        })?
    };
    let meta = fs::metadata(&path).map_err(|e| {
        Error::QemuNotFound(format!(
            "QEMU binary '{}' is not accessible: {e}",
            path.display()
        ))
    })?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(Error::QemuNotFound(format!(
            "QEMU binary '{}' is not an executable file",
            path.display()
        )));
    }
    nix::unistd::access(&path, nix::unistd::AccessFlags::X_OK).map_err(|e| {
        Error::QemuNotFound(format!(
            "QEMU binary '{}' is not executable by the daemon: {e}",
            path.display()
        ))
    })?;
    path.into_os_string()
        .into_string()
        .map_err(|p| Error::InvalidArgument(format!("QemuPath {p:?} is not UTF-8")))
}

/// The first executable `name` in PATH.
pub fn which(name: &OsStr) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_must_be_absolute_readable_regular_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("base.img");
        fs::write(&file, b"x").unwrap();
        let f = file.to_str().unwrap();
        assert_eq!(check_file("HdaDiskImage", f).unwrap(), f);
        assert_eq!(check_file("HdaDiskImage", "").unwrap(), "");
        assert!(matches!(
            check_file("Initrd", "rel/path"),
            Err(Error::InvalidArgument(_))
        ));
        let e = check_file("Initrd", dir.path().to_str().unwrap()).unwrap_err();
        assert!(matches!(e, Error::ImageNotAccessible(_)) && e.to_string().contains("regular"));
        let link = dir.path().join("broken");
        std::os::unix::fs::symlink("/nonexistent/target.img", &link).unwrap();
        let e = check_file("KernelImage", link.to_str().unwrap())
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/target.img"), "{e}");
    }

    #[test]
    fn qemu_path_lookup() {
        let e = resolve_qemu_path("no-such-qemu-binary").unwrap_err();
        assert!(matches!(e, Error::QemuNotFound(_)));
        assert!(matches!(
            resolve_qemu_path("bin/qemu"),
            Err(Error::InvalidArgument(_))
        ));
        let sh = resolve_qemu_path("sh").unwrap();
        assert!(sh.starts_with('/') && sh.ends_with("/sh"), "{sh}");
        let dir = tempfile::tempdir().unwrap();
        let noexec = dir.path().join("qemu");
        fs::write(&noexec, b"").unwrap();
        assert!(matches!(
            resolve_qemu_path(noexec.to_str().unwrap()),
            Err(Error::QemuNotFound(_))
        ));
    }
}
