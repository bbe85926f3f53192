//! Base images that make QEMU open other files (a backing chain, an external data file):
//! refused, by name and saying why, unless every file lies under the daemon's image_dirs;
//! json: and protocol names always; and the format found at first use kept. No guest is
//! booted: the checks come before QEMU starts, and a VM that passes starts on a blank disk.

mod common;

use common::*;
use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use zbus::Variant;

const IMAGE_NOT_ACCESSIBLE: &str = "org.gns3.Qemu.Error.ImageNotAccessible";

/// A directory the daemon's user can read, with `base.qcow2` (16 MiB, blank) and
/// `app.qcow2` on it (a relative backing name, as appliance images have).
fn images() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().canonicalize().unwrap();
    qemu_img(&path, &["create", "-q", "-f", "qcow2", "base.qcow2", "16M"]);
    on(&path, "app.qcow2", "base.qcow2");
    (dir, path)
}

/// `name`, a qcow2 whose backing file is named `backing`.
fn on(dir: &Path, name: &str, backing: &str) {
    qemu_img(
        dir,
        &[
            "create", "-q", "-f", "qcow2", "-u", "-b", backing, "-F", "qcow2", name, "16M",
        ],
    );
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// The name and message of a refused call.
fn refusal<T: std::fmt::Debug>(r: zbus::Result<T>) -> (String, String) {
    let e = r.unwrap_err();
    let text = match &e {
        zbus::Error::MethodError(_, Some(text), _) => text.clone(),
        other => other.to_string(),
    };
    (error_name(&e), text)
}

fn hda(image: &Path) -> HashMap<&'static str, Variant<'static>> {
    HashMap::from([("HdaDiskImage", Variant::from(s(image)))])
}

/// The VM's directory in the lab's state.
fn vm_dir(lab: &Lab, vm: &VmProxy<'_>) -> PathBuf {
    let id = vm
        .inner()
        .path()
        .as_str()
        .rsplit('/')
        .next()
        .unwrap()
        .to_string();
    lab.dir.path().join("state/vms").join(id)
}

fn image_formats(lab: &Lab, vm: &VmProxy<'_>) -> serde_json::Value {
    let record = std::fs::read(vm_dir(lab, vm).join("vm.json")).unwrap();
    let record: serde_json::Value = serde_json::from_slice(&record).unwrap();
    record.get("ImageFormats").cloned().unwrap_or_default()
}

/// `qemu-img info` of the VM's first disk: its backing file and the format given for it.
fn overlay_backing(lab: &Lab, vm: &VmProxy<'_>) -> (String, String) {
    let overlay = vm_dir(lab, vm).join("hda_disk.qcow2");
    let out = std::process::Command::new("qemu-img")
        .args(["info", "-U", "--output=json"])
        .arg(&overlay)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let field = |k: &str| info[k].as_str().unwrap_or_default().to_string();
    (field("backing-filename"), field("backing-filename-format"))
}

fn outside_image_dirs(image: &Path, backing: &Path, dirs: &str) -> String {
    let (i, b) = (s(image), s(backing));
    format!(
        "HdaDiskImage '{i}' would make QEMU open its backing file, '{b}', which is not under the \
         daemon's image_dirs ({dirs}): the guest would see whatever that file holds. Give an \
         image that stands alone (qemu-img convert -O qcow2 '{i}' NEW.qcow2 makes one), or add \
         the directories of the files of its chain to image_dirs in the daemon's configuration"
    )
}

#[tokio::test]
async fn a_base_on_a_backing_file_is_refused_by_default_and_nothing_changes() {
    let (_keep, images) = images();
    let lab = Lab::start().await;
    let (app, base) = (images.join("app.qcow2"), images.join("base.qcow2"));
    let why = outside_image_dirs(&app, &base, "none are set");
    let state = lab.dir.path().join("state");
    let before = snapshot(&state);
    let refused = refusal(lab.manager.create_vm("a", hda(&app)).await);
    assert_eq!(refused, (IMAGE_NOT_ACCESSIBLE.into(), why.clone()));
    assert_eq!(snapshot(&state), before);

    // A standalone base passes; once it has a backing file, Start refuses it before QEMU.
    qemu_img(
        &images,
        &["create", "-q", "-f", "qcow2", "solo.qcow2", "16M"],
    );
    let solo = images.join("solo.qcow2");
    let vm = create(&lab.manager, "b", hda(&solo)).await;
    assert_eq!(
        refusal(vm.configure(hda(&app)).await),
        (IMAGE_NOT_ACCESSIBLE.into(), why)
    );
    assert_eq!(vm.hda_disk_image().await.unwrap(), s(&solo));
    qemu_img(
        &images,
        &[
            "rebase",
            "-u",
            "-f",
            "qcow2",
            "-b",
            "base.qcow2",
            "-F",
            "qcow2",
            "solo.qcow2",
        ],
    );
    let before = snapshot(&state);
    let refused = refusal(vm.start().await);
    assert_eq!(
        refused,
        (
            IMAGE_NOT_ACCESSIBLE.into(),
            outside_image_dirs(&solo, &base, "none are set")
        )
    );
    assert_eq!(vm.state().await.unwrap(), "stopped");
    assert_eq!(
        snapshot(&state),
        before,
        "a refused Start changed the state"
    );
    assert!(!vm_dir(&lab, &vm).join("hda_disk.qcow2").exists());
    assert_eq!(qemu_pids_under(lab.dir.path()), Vec::<u32>::new());
}

#[tokio::test]
async fn image_dirs_let_a_chain_in_but_never_a_json_name_nor_a_way_out() {
    let (_keep, images) = images();
    let lab = Lab::with_config(&format!("image_dirs = [{:?}]\n", s(&images))).await;
    let (app, base) = (images.join("app.qcow2"), images.join("base.qcow2"));
    let vm = create(&lab.manager, "a", hda(&app)).await;
    assert_eq!(
        image_formats(&lab, &vm),
        serde_json::json!({ s(&app): "qcow2" })
    );
    vm.start().await.unwrap();
    assert_eq!(vm.state().await.unwrap(), "running");
    assert_eq!(overlay_backing(&lab, &vm), (s(&app), "qcow2".into()));
    vm.stop().await.unwrap();

    // A json: name is never followed, even to a file under image_dirs.
    let json = format!(
        r#"json:{{"driver":"qcow2","file":{{"driver":"file","filename":"{}"}}}}"#,
        s(&base)
    );
    on(&images, "json.qcow2", &json);
    let j = s(&images.join("json.qcow2"));
    let refused = refusal(vm.configure(hda(&images.join("json.qcow2"))).await);
    let shown: String =
        json.chars().take(80).collect::<String>() + &format!("… ({} bytes)", json.len());
    assert_eq!(
        refused,
        (
            IMAGE_NOT_ACCESSIBLE.into(),
            format!(
                "HdaDiskImage '{j}' would make QEMU open its backing file named '{shown}', a \
                 json: name: the daemon never lets QEMU follow one, whatever image_dirs says (it \
                 can name any file or a network server). Give an image that stands alone \
                 (qemu-img convert -O qcow2 '{j}' NEW.qcow2 makes one), or one whose chain names \
                 plain paths"
            )
        )
    );
    // Nor a symlink, or `..`, out of image_dirs.
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::set_permissions(elsewhere.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let elsewhere = elsewhere.path().canonicalize().unwrap();
    qemu_img(
        &elsewhere,
        &["create", "-q", "-f", "qcow2", "secret.qcow2", "16M"],
    );
    let secret = elsewhere.join("secret.qcow2");
    std::os::unix::fs::symlink(&secret, images.join("link.qcow2")).unwrap();
    on(&images, "linked.qcow2", "link.qcow2");
    let (name, text) = refusal(vm.configure(hda(&images.join("linked.qcow2"))).await);
    assert_eq!(name, IMAGE_NOT_ACCESSIBLE);
    let link = s(&images.join("link.qcow2"));
    assert!(
        text.contains(&format!(
            "its backing file, '{link}' (that is '{}'), which is not under the daemon's \
             image_dirs ({})",
            s(&secret),
            s(&images)
        )),
        "{text}"
    );
    let up = format!(
        "../{}/secret.qcow2",
        elsewhere.file_name().unwrap().to_str().unwrap()
    );
    on(&images, "up.qcow2", &up);
    let (name, text) = refusal(vm.configure(hda(&images.join("up.qcow2"))).await);
    assert_eq!(name, IMAGE_NOT_ACCESSIBLE);
    assert!(
        text.contains(&format!("(that is '{}')", s(&secret))),
        "{text}"
    );
    assert_eq!(vm.hda_disk_image().await.unwrap(), s(&app));
    assert_eq!(
        image_formats(&lab, &vm),
        serde_json::json!({ s(&app): "qcow2" })
    );
}

#[tokio::test]
async fn the_format_found_first_is_kept_and_given() {
    let (_keep, images) = images();
    let lab = Lab::start().await;
    let base = images.join("base.qcow2");
    let vm = create(&lab.manager, "a", HashMap::new()).await;
    assert_eq!(image_formats(&lab, &vm), serde_json::Value::Null);
    vm.configure(hda(&base)).await.unwrap();
    assert_eq!(
        image_formats(&lab, &vm),
        serde_json::json!({ s(&base): "qcow2" })
    );

    // The base's content replaced by a raw image: refused at Start, saying how to reset.
    std::fs::write(&base, vec![0u8; 1 << 20]).unwrap();
    let b = s(&base);
    let refused = refusal(vm.start().await);
    assert_eq!(
        refused,
        (
            IMAGE_NOT_ACCESSIBLE.into(),
            format!(
                "HdaDiskImage '{b}' was qcow2 when this VM first used it, and qemu-img now finds \
                 raw: its content was replaced. Put the qcow2 image back, or set HdaDiskImage \
                 to '' and then to '{b}' again to use it as raw (this discards the VM's changes \
                 to that disk)"
            )
        )
    );
    assert_eq!(vm.state().await.unwrap(), "stopped");

    // Set anew: the old format is forgotten, the new one found, kept and given to the clone.
    vm.configure(HashMap::from([("HdaDiskImage", Variant::from(""))]))
        .await
        .unwrap();
    assert_eq!(image_formats(&lab, &vm), serde_json::Value::Null);
    vm.configure(hda(&base)).await.unwrap();
    assert_eq!(
        image_formats(&lab, &vm),
        serde_json::json!({ b.clone(): "raw" })
    );
    vm.start().await.unwrap();
    assert_eq!(overlay_backing(&lab, &vm), (b, "raw".into()));
    vm.stop().await.unwrap();
}
