//! QEMU's side of a saved state, over QMP: the state's image opened as a block node, the
//! drives that take part, and the snapshot-save, -load and -delete jobs run to their end
//! (QEMU 7.2's QAPI: each a job with a job-id, concluded then dismissed by its client).

use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;
use tokio::time::Instant;

use super::error::{Error, Result};
use super::qemu::Qemu;
use super::saved::{NODE, TAG};

pub const SAVE_JOB: &str = "gns3-save";
pub const LOAD_JOB: &str = "gns3-load";
pub const DELETE_JOB: &str = "gns3-delete";
/// How often a job is asked after; QEMU's snapshot jobs take seconds.
const POLL: Duration = Duration::from_millis(100);

/// A block node QEMU writes, as its snapshot jobs need to know it.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// The node name (QEMU's own, `#block…`, for a -drive).
    pub name: String,
    /// What the node is to a user: the drive's id, or the state's node.
    pub device: String,
    pub driver: String,
    /// Whether it carries the saved state's tag, and the VM state's size there.
    pub tagged: Option<u64>,
}

fn tag_in(image: &Value) -> Option<u64> {
    image["snapshots"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == TAG)
        .map(|s| s["vm-state-size"].as_u64().unwrap_or(0))
}

/// The writable drives of a `query-block` reply (the CD-ROM and empty drives aside). Pure.
pub fn writable(reply: &Value) -> Vec<Node> {
    let Some(devices) = reply.as_array() else {
        return Vec::new();
    };
    devices
        .iter()
        .filter_map(|d| {
            let inserted = d.get("inserted")?;
            if inserted["ro"].as_bool() != Some(false) {
                return None;
            }
            let device = d["device"].as_str().filter(|s| !s.is_empty());
            let qdev = d["qdev"].as_str();
            Some(Node {
                name: inserted["node-name"].as_str()?.to_string(),
                device: device.or(qdev).unwrap_or("?").to_string(),
                driver: inserted["drv"].as_str().unwrap_or("?").to_string(),
                tagged: tag_in(&inserted["image"]),
            })
        })
        .collect()
}

/// The state's node in a `query-named-block-nodes` reply, if QEMU has it open. Pure.
pub fn state_node(reply: &Value) -> Option<Node> {
    let node = reply.as_array()?.iter().find(|n| n["node-name"] == NODE)?;
    Some(Node {
        name: NODE.into(),
        device: NODE.into(),
        driver: node["drv"].as_str().unwrap_or("?").to_string(),
        tagged: tag_in(&node["image"]),
    })
}

/// A QMP command's time: what is left before `deadline`, and a second more, so that the
/// caller's own bound on the whole (which says what took too long) ends it first.
fn left(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(1)
}

async fn execute(qemu: &mut Qemu, cmd: &str, args: Value, deadline: Instant) -> Result<Value> {
    Ok(qemu.qmp.execute(cmd, Some(args), left(deadline)).await?)
}

/// The writable drives of the running QEMU, and its state's node if open; each drive is
/// refused by name unless qcow2.
pub async fn nodes(qemu: &mut Qemu, deadline: Instant) -> Result<(Vec<Node>, Option<Node>)> {
    let blocks = qemu
        .qmp
        .execute("query-block", None, left(deadline))
        .await?;
    let drives = writable(&blocks);
    if let Some(raw) = drives.iter().find(|n| n.driver != "qcow2") {
        return Err(Error::InvalidArgument(format!(
            "drive {} is {}, and only qcow2 drives can hold a saved state",
            raw.device, raw.driver
        )));
    }
    let all = execute(
        qemu,
        "query-named-block-nodes",
        json!({"flat": true}),
        deadline,
    )
    .await?;
    Ok((drives, state_node(&all)))
}

/// Opens the state's image as the state's node.
pub async fn open_state(qemu: &mut Qemu, image: &Path, deadline: Instant) -> Result<()> {
    let args = json!({
        "driver": "qcow2",
        "node-name": NODE,
        "file": {"driver": "file", "filename": image.to_string_lossy()},
    });
    execute(qemu, "blockdev-add", args, deadline).await?;
    Ok(())
}

pub async fn close_state(qemu: &mut Qemu, deadline: Instant) -> Result<()> {
    execute(qemu, "blockdev-del", json!({"node-name": NODE}), deadline).await?;
    Ok(())
}

/// The status of job `id` and its error, None if QEMU has no such job.
async fn job(
    qemu: &mut Qemu,
    id: &str,
    deadline: Instant,
) -> Result<Option<(String, Option<String>)>> {
    let jobs = qemu.qmp.execute("query-jobs", None, left(deadline)).await?;
    Ok(jobs.as_array().and_then(|jobs| {
        let job = jobs.iter().find(|j| j["id"] == id)?;
        let status = job["status"].as_str().unwrap_or("").to_string();
        Some((status, job["error"].as_str().map(str::to_string)))
    }))
}

/// Whether QEMU has job `id`, in any status (a daemon that starts again finds the save
/// its predecessor began).
pub async fn has_job(qemu: &mut Qemu, id: &str, deadline: Instant) -> Result<bool> {
    Ok(job(qemu, id, deadline).await?.is_some())
}

/// Waits for job `id` to conclude, dismisses it, and gives its error as QEMU words it.
pub async fn finish(qemu: &mut Qemu, id: &str, deadline: Instant) -> Result<()> {
    loop {
        match job(qemu, id, deadline).await? {
            Some((status, error)) if status == "concluded" => {
                execute(qemu, "job-dismiss", json!({"id": id}), deadline).await?;
                return match error {
                    Some(e) => Err(Error::Internal(e)),
                    None => Ok(()),
                };
            }
            Some(_) => tokio::time::sleep(POLL).await,
            None => {
                return Err(Error::Internal(format!(
                    "QEMU's job {id} went before it was seen to end"
                )))
            }
        }
    }
}

/// Runs `command` as job `id` with `args`, to its end.
pub async fn run(
    qemu: &mut Qemu,
    command: &str,
    id: &str,
    mut args: Value,
    deadline: Instant,
) -> Result<()> {
    args["job-id"] = json!(id);
    args["tag"] = json!(TAG);
    execute(qemu, command, args, deadline).await?;
    finish(qemu, id, deadline).await
}

/// Asks QEMU to cancel job `id` and forget it, if it has it; what it says is of no use to
/// a VM about to be stopped hard.
pub async fn abandon(qemu: &mut Qemu, id: &str) {
    // A second each: a QEMU that does not answer is killed next anyway.
    let now = Instant::now();
    if execute(qemu, "job-cancel", json!({"id": id}), now)
        .await
        .is_ok()
    {
        let _ = execute(qemu, "job-dismiss", json!({"id": id}), now).await;
    }
}

/// The node names of `drives` and of `state`, as a job's `devices`.
pub fn devices(drives: &[Node], state: &str) -> Value {
    let mut names: Vec<&str> = drives.iter().map(|n| n.name.as_str()).collect();
    names.push(state);
    json!(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writable_drives_of_a_query_block() {
        let reply = json!([
            {"device": "gns3-hda", "qdev": "gns3-hda", "inserted": {"node-name": "#block122",
              "ro": false, "drv": "qcow2", "image": {"snapshots": [
                {"name": "other", "vm-state-size": 0}, {"name": TAG, "vm-state-size": 0}]}}},
            {"device": "gns3-cdrom", "inserted": {"node-name": "#block9", "ro": true, "drv": "raw"}},
            {"device": "pflash1", "inserted": {"node-name": "#block7", "ro": false, "drv": "raw",
              "image": {}}},
            {"device": "floppy0"},
        ]);
        let nodes = writable(&reply);
        assert_eq!(
            nodes,
            [
                Node {
                    name: "#block122".into(),
                    device: "gns3-hda".into(),
                    driver: "qcow2".into(),
                    tagged: Some(0)
                },
                Node {
                    name: "#block7".into(),
                    device: "pflash1".into(),
                    driver: "raw".into(),
                    tagged: None
                },
            ]
        );
        assert_eq!(devices(&nodes, NODE), json!(["#block122", "#block7", NODE]));
        let all = json!([{"node-name": "#block1", "drv": "file"},
            {"node-name": NODE, "drv": "qcow2", "image": {"snapshots": [
                {"name": TAG, "vm-state-size": 5000}]}}]);
        assert_eq!(state_node(&all).and_then(|n| n.tagged), Some(5000));
        assert_eq!(state_node(&json!([])), None);
    }
}
