//! The images the controller names (kernel, initrd, disks, ISOs) and uploads: files of one
//! directory (config.images). A name is resolved there; an absolute path is taken only if
//! it lies inside. A missing image is `ImageMissing`, which makes the controller upload it
//! and retry. Each image's md5 is cached beside it (`<name>.md5sum`, as GNS3 does), worked
//! out on a blocking thread. The daemon runs as another user (gns3-qemud) and opens these
//! files itself, so the directory is made 0755 and every image 0644, set explicitly
//! whatever the umask.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use axum::body::Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use md5::{Digest, Md5};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;

use crate::app::App;
use crate::error::{ApiError, Result};

const DIR_MODE: u32 = 0o755;
const FILE_MODE: u32 = 0o644;
const MD5_SUFFIX: &str = ".md5sum";
/// Uploads under way are written to hidden files, which the listing leaves out.
const PARTIAL_PREFIX: &str = ".upload-";

pub fn routes() -> Router<App> {
    Router::new()
        .route("/qemu/images", get(list))
        .route("/qemu/images/{filename}", post(upload))
}

fn refused(name: &str, why: &str) -> ApiError {
    ApiError::Conflict(format!(
        "The image '{name}' is not allowed on this remote server: {why}"
    ))
}

/// A bare file name the directory may hold: no path, no hidden or md5 file.
fn check_filename(name: &str) -> Result<()> {
    if name.is_empty() || name.contains('/') || name.contains('\0') || name == ".." || name == "." {
        return Err(refused(
            name,
            "an image is a file name of the image directory",
        ));
    }
    if name.starts_with('.') || name.ends_with(MD5_SUFFIX) {
        return Err(refused(
            name,
            "names starting with '.' or ending in .md5sum are the compute's own",
        ));
    }
    Ok(())
}

/// The path of image `name` in `dir`: 409 for a name that would lie outside it,
/// ImageMissing for one that is not there.
pub fn resolve(dir: &Path, name: &str) -> Result<PathBuf> {
    if name.contains('\0') {
        return Err(refused(name, "it holds a NUL"));
    }
    let path = if name.starts_with('/') {
        let p = Path::new(name);
        let inside = p.strip_prefix(dir).is_ok_and(|rest| {
            rest.components().count() == 1
                && rest.components().all(|c| matches!(c, Component::Normal(_)))
        });
        if !inside {
            return Err(refused(
                name,
                "an absolute path must lie in the image directory",
            ));
        }
        p.to_path_buf()
    } else {
        check_filename(name)?;
        dir.join(name)
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(ApiError::ImageMissing(name.to_string()))
    }
}

/// The name GNS3 knows an image by: its path relative to `dir` if it lies there.
pub fn name_of(dir: &Path, path: &str) -> String {
    Path::new(path)
        .strip_prefix(dir)
        .ok()
        .and_then(|p| p.to_str())
        .filter(|p| !p.is_empty())
        .unwrap_or(path)
        .to_string()
}

fn md5_file(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(MD5_SUFFIX);
    PathBuf::from(p)
}

/// The md5 cached beside `path`, if worked out already (never computed here: this runs on
/// the async threads).
pub fn cached_md5(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(md5_file(path)).ok()?;
    let sum = text.split_whitespace().next()?;
    (sum.len() == 32 && sum.bytes().all(|b| b.is_ascii_hexdigit())).then(|| sum.to_string())
}

fn compute_md5(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let sum: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut cache = std::fs::File::create(md5_file(path))?;
    cache.write_all(sum.as_bytes())?;
    cache.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
    Ok(sum)
}

/// The md5 of `path`, from its cache or worked out on a blocking thread (and cached).
pub async fn md5(path: PathBuf) -> Result<String> {
    if let Some(sum) = cached_md5(&path) {
        return Ok(sum);
    }
    let shown = path.display().to_string();
    tokio::task::spawn_blocking(move || compute_md5(&path))
        .await
        .map_err(|e| ApiError::Internal(format!("md5 of {shown}: {e}")))?
        .map_err(|e| ApiError::Internal(format!("md5 of {shown}: {e}")))
}

async fn make_dir(dir: &Path) -> Result<()> {
    let io =
        |e: std::io::Error| ApiError::Internal(format!("image directory {}: {e}", dir.display()));
    tokio::fs::create_dir_all(dir).await.map_err(io)?;
    tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))
        .await
        .map_err(io)
}

/// `POST /qemu/images/{filename}`: the body, of any size, streamed into a hidden file of
/// the directory, synced, then renamed over the name at once: a reader never sees half an
/// image. The old md5 goes with the old content.
async fn upload(
    State(app): State<App>,
    UrlPath(name): UrlPath<String>,
    body: Body,
) -> Result<StatusCode> {
    check_filename(&name)?;
    let dir = app.config.images.clone();
    make_dir(&dir).await?;
    let target = dir.join(&name);
    let partial = dir.join(format!("{PARTIAL_PREFIX}{}-{name}", std::process::id()));
    let io = |what: &str, e: std::io::Error| {
        ApiError::Internal(format!("upload of {name}: {what}: {e}"))
    };
    let result = async {
        let mut file = tokio::fs::File::create(&partial)
            .await
            .map_err(|e| io("create", e))?;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| ApiError::BadRequest(format!("upload of {name}: {e}")))?;
            file.write_all(&chunk).await.map_err(|e| io("write", e))?;
        }
        file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))
            .await
            .map_err(|e| io("chmod", e))?;
        file.sync_all().await.map_err(|e| io("sync", e))?;
        drop(file);
        let _ = tokio::fs::remove_file(md5_file(&target)).await;
        tokio::fs::rename(&partial, &target)
            .await
            .map_err(|e| io("rename", e))
    }
    .await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&partial).await;
    }
    result?;
    // The directory entry itself is durable only once the directory is synced.
    if let Ok(d) = tokio::fs::File::open(&dir).await {
        let _ = d.sync_all().await;
    }
    md5(target).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /qemu/images`: every image with its size and md5.
async fn list(State(app): State<App>) -> Result<Json<Value>> {
    let dir = &app.config.images;
    let mut out = Vec::new();
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Json(json!([]))),
        Err(e) => {
            return Err(ApiError::Internal(format!(
                "image directory {}: {e}",
                dir.display()
            )))
        }
    };
    let mut names = Vec::new();
    while let Ok(Some(entry)) = entries.next_entry().await {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if check_filename(&name).is_err() {
            continue;
        }
        match entry.metadata().await {
            Ok(m) if m.is_file() => names.push((name, m.len())),
            _ => {}
        }
    }
    names.sort();
    for (name, size) in names {
        let md5sum = md5(dir.join(&name)).await?;
        out.push(json!({"filename": name, "path": name, "md5sum": md5sum, "filesize": size}));
    }
    Ok(Json(Value::Array(out)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_in_the_directory_only() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("vmlinuz"), b"k").unwrap();
        assert_eq!(resolve(d, "vmlinuz").unwrap(), d.join("vmlinuz"));
        let abs = d.join("vmlinuz").display().to_string();
        assert_eq!(resolve(d, &abs).unwrap(), d.join("vmlinuz"));
        assert!(
            matches!(resolve(d, "initrd.gz"), Err(ApiError::ImageMissing(n)) if n == "initrd.gz")
        );
        for bad in [
            "../etc/passwd",
            "a/b",
            "..",
            "/etc/passwd",
            "x\0y",
            ".hidden",
        ] {
            let e = resolve(d, bad).unwrap_err();
            assert_eq!(e.status(), StatusCode::CONFLICT, "{bad}");
            assert!(e.to_string().contains(bad), "{e}");
        }
        let sub = format!("{}/../x", d.display());
        assert_eq!(resolve(d, &sub).unwrap_err().status(), StatusCode::CONFLICT);
        assert_eq!(name_of(d, &abs), "vmlinuz");
        assert_eq!(name_of(d, "/elsewhere/x"), "/elsewhere/x");
    }

    #[test]
    fn the_md5_is_cached_beside_the_image() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        std::fs::write(&p, b"hello\n").unwrap();
        assert_eq!(cached_md5(&p), None);
        assert_eq!(compute_md5(&p).unwrap(), "b1946ac92492d2347c6235b4d2611184");
        assert_eq!(
            cached_md5(&p).as_deref(),
            Some("b1946ac92492d2347c6235b4d2611184")
        );
        let mode = std::fs::metadata(md5_file(&p))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o644);
    }
}
