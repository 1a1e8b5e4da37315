//! The controller against PVE's locks and hot-unplug rules as the simulator now models them
//! (pve-storage's storage lock that gives up after its timeout, qemu-server's unplug that
//! waits for the guest and the throttle group a late unplug leaves behind).

mod support;

use proxmox_csi::controller::error::ControllerError;
use proxmox_csi::controller::Controller;
use proxmox_csi::csi::*;
use pve_sim::HotplugMode;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tonic::Code;

const GIB: i64 = 1 << 30;

fn create_req(name: &str, storage: &str) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: GIB,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![block_writer()],
        parameters: HashMap::from([("storage".into(), storage.into())]),
        ..Default::default()
    }
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

fn is_block_device(p: &std::path::Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device())
}

fn code(e: ControllerError) -> (Code, String) {
    let s: tonic::Status = e.into();
    (s.code(), s.message().to_string())
}

/// Six CreateVolumes at once on one shared storage whose lock a second allocation can
/// wait out but a third cannot (each allocation holds it 300 ms, waiters give up after 500).
async fn six_creates(c: Arc<Controller>) -> Vec<Result<String, (Code, String)>> {
    let calls: Vec<_> = (0..6)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                c.create_volume(create_req(&format!("pvc-lock-{i}"), "shared"))
                    .await
                    .map(|r| r.volume.unwrap().volume_id)
                    .map_err(code)
            })
        })
        .collect();
    let mut out = Vec::new();
    for h in calls {
        out.push(h.await.unwrap());
    }
    out
}

fn slow_storage(c: &mut pve_sim::SimConfig) {
    c.storage_op_ms = 300;
    c.storage_lock_timeout_ms = 500;
}

#[tokio::test]
async fn storage_lock_is_not_overrun_with_the_per_storage_limit() {
    let t = start_sim(HotplugMode::None, slow_storage).await;
    // No retries at all: only the limit keeps PVE's storage lock from timing out.
    let c = Arc::new(controller_with(&t.url, |o| {
        o.storage_concurrency = 1;
        o.config_attempts = 1;
    }));
    let res = six_creates(c).await;
    assert!(res.iter().all(Result::is_ok), "{res:?}");
}

#[tokio::test]
async fn without_limit_or_retries_pve_refuses_on_its_storage_lock() {
    let t = start_sim(HotplugMode::None, slow_storage).await;
    let c = Arc::new(controller_with(&t.url, |o| {
        o.storage_concurrency = 6;
        o.config_attempts = 1;
    }));
    let res = six_creates(c).await;
    let refused: Vec<&(Code, String)> = res.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(!refused.is_empty(), "{res:?}");
    for (code, msg) in refused {
        assert_eq!(*code, Code::Aborted, "{msg}");
        assert!(
            msg.contains("cfs-lock 'storage-shared' error: got lock request timeout"),
            "{msg}"
        );
    }
    // Nothing half-made is left: every failed create discarded its holder VM.
    let holders = controller(&t.url)
        .cluster("sim")
        .unwrap()
        .holders()
        .await
        .unwrap();
    assert_eq!(holders.len(), res.iter().filter(|r| r.is_ok()).count());
}

#[tokio::test]
async fn lock_timeouts_are_retried_with_jitter() {
    let t = start_sim(HotplugMode::None, slow_storage).await;
    let c = Arc::new(controller_with(&t.url, |o| {
        o.storage_concurrency = 6;
        o.config_attempts = 12;
        o.config_retry_delay = Duration::from_millis(200);
    }));
    let res = six_creates(c).await;
    assert!(res.iter().all(Result::is_ok), "{res:?}");
}

fn publish_req(vol: &str) -> ControllerPublishVolumeRequest {
    ControllerPublishVolumeRequest {
        volume_id: vol.into(),
        node_id: "worker-1".into(),
        volume_capability: Some(block_writer()),
        ..Default::default()
    }
}

fn unpublish_req(vol: &str) -> ControllerUnpublishVolumeRequest {
    ControllerUnpublishVolumeRequest {
        volume_id: vol.into(),
        node_id: "worker-1".into(),
        ..Default::default()
    }
}

/// Unpublish while the guest still has the disk open: Unavailable with the disk still in the
/// VM (PVE left the delete pending); once released, unpublish succeeds; the slot the late
/// unplug poisoned (left-over throttle group) is skipped by the next publish.
#[tokio::test]
async fn unplug_pending_is_still_attached_and_a_poisoned_slot_is_skipped() {
    if !is_root() {
        eprintln!("SKIP: needs root for loop devices");
        return;
    }
    let t = start_sim(HotplugMode::Loop, |c| c.unplug_verify_ms = 300).await;
    let c = controller(&t.url);
    let a = c
        .create_volume(create_req("pvc-busy-a", "local-lvm"))
        .await
        .unwrap()
        .volume
        .unwrap()
        .volume_id;
    let b = c
        .create_volume(create_req("pvc-busy-b", "local-lvm"))
        .await
        .unwrap()
        .volume
        .unwrap()
        .volume_id;
    let ctx = c
        .publish_volume(publish_req(&a))
        .await
        .unwrap()
        .publish_context;
    let slot_a = ctx
        .values()
        .find(|v| v.starts_with("scsi"))
        .cloned()
        .unwrap();
    let dir = t.sim.guest_by_id_dir(101);
    let link = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with("wwn-"))
        .expect("wwn link");
    let held = std::fs::File::open(std::fs::canonicalize(&link).unwrap()).unwrap();

    let (code_, msg) = code(c.unpublish_volume(unpublish_req(&a)).await.unwrap_err());
    assert_eq!(code_, Code::Unavailable, "{msg}");
    assert!(msg.contains("still busy in guest"), "{msg}");
    assert!(is_block_device(&link), "the guest still has the disk");
    // Publishing it again while the unplug is pending keeps it where it is.
    let again = c
        .publish_volume(publish_req(&a))
        .await
        .unwrap()
        .publish_context;
    assert_eq!(again, ctx);

    drop(held);
    c.unpublish_volume(unpublish_req(&a)).await.unwrap();
    // The unpublish cancelled by the re-publish was re-sent above: the device went away
    // only now, after the guest let go, and left its throttle group: the slot is skipped.
    let ctx_b = c
        .publish_volume(publish_req(&b))
        .await
        .unwrap()
        .publish_context;
    let slot_b = ctx_b
        .values()
        .find(|v| v.starts_with("scsi"))
        .cloned()
        .unwrap();
    assert_ne!(slot_b, slot_a, "{ctx_b:?}");
    c.unpublish_volume(unpublish_req(&b)).await.unwrap();
}
