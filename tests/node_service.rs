//! Service-level behaviour: capabilities, node info, and the per-volume
//! in-flight guard.

mod node_support;

use std::collections::BTreeMap;
use std::time::Duration;

use node_support::*;
use proxmox_csi::csi;
use proxmox_csi::csi::node_server::Node;
use proxmox_csi::csi::node_service_capability::rpc::Type as RpcType;
use proxmox_csi::csi::volume_capability::access_mode::Mode;
use proxmox_csi::node::{NodeConfig, NodeService};
use tonic::{Code, Request};

#[tokio::test]
async fn capabilities_are_advertised() {
    let svc = NodeService::new(NodeConfig::new("n"));
    let caps = svc
        .node_get_capabilities(Request::new(csi::NodeGetCapabilitiesRequest {}))
        .await
        .unwrap()
        .into_inner();
    let types: Vec<i32> = caps
        .capabilities
        .iter()
        .map(|c| match &c.r#type {
            Some(csi::node_service_capability::Type::Rpc(r)) => r.r#type,
            None => panic!("capability without type"),
        })
        .collect();
    for want in [
        RpcType::StageUnstageVolume,
        RpcType::GetVolumeStats,
        RpcType::ExpandVolume,
        RpcType::VolumeCondition,
        RpcType::SingleNodeMultiWriter,
    ] {
        assert!(types.contains(&(want as i32)), "missing {want:?}");
    }
}

#[tokio::test]
async fn node_info_reflects_config() {
    let mut cfg = NodeConfig::new("worker-3");
    cfg.max_volumes = 24;
    cfg.topology = BTreeMap::from([
        (
            "topology.kubernetes.io/region".to_string(),
            "region1".to_string(),
        ),
        (
            "topology.kubernetes.io/zone".to_string(),
            "pve-a".to_string(),
        ),
    ]);
    let svc = NodeService::new(cfg);
    let info = svc
        .node_get_info(Request::new(csi::NodeGetInfoRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, "worker-3");
    assert_eq!(info.max_volumes_per_node, 24);
    let seg = info.accessible_topology.unwrap().segments;
    assert_eq!(
        seg.get("topology.kubernetes.io/zone").map(String::as_str),
        Some("pve-a")
    );
    assert_eq!(
        seg.get("topology.kubernetes.io/region").map(String::as_str),
        Some("region1")
    );
}

#[tokio::test]
async fn concurrent_operation_on_same_volume_is_aborted() {
    if !require_root("concurrent_operation_on_same_volume_is_aborted") {
        return;
    }
    let disk = Disk::new(16 * MIB);
    // Remove the link so the first stage sits waiting for the device.
    std::fs::remove_file(disk.device_dir.join(format!("wwn-{}", disk.wwn))).unwrap();
    let mut cfg = disk.config();
    cfg.device_wait = Duration::from_secs(2);
    let svc = NodeService::new(cfg);
    let staging = disk.path("staging");
    let first = {
        let svc = svc.clone();
        let req = stage_request(&disk, &staging, mount_cap("ext4", Mode::SingleNodeWriter));
        tokio::spawn(async move { svc.node_stage_volume(Request::new(req)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    let err = svc
        .node_stage_volume(Request::new(stage_request(
            &disk,
            &staging,
            mount_cap("ext4", Mode::SingleNodeWriter),
        )))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    assert!(
        err.message().contains(&disk.volume_id) && err.message().contains("already in progress"),
        "{err:?}"
    );
    let err = svc
        .node_unstage_volume(Request::new(csi::NodeUnstageVolumeRequest {
            volume_id: disk.volume_id.clone(),
            staging_target_path: staging.to_string_lossy().into_owned(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err:?}");

    // Another volume is not blocked.
    svc.node_unstage_volume(Request::new(csi::NodeUnstageVolumeRequest {
        volume_id: new_volume_id().to_string(),
        staging_target_path: disk.path("other").to_string_lossy().into_owned(),
    }))
    .await
    .unwrap();

    // Once the first finishes (here: times out), the volume is free again.
    let first = first.await.unwrap().unwrap_err();
    assert_eq!(first.code(), Code::NotFound);
    svc.node_unstage_volume(Request::new(csi::NodeUnstageVolumeRequest {
        volume_id: disk.volume_id.clone(),
        staging_target_path: staging.to_string_lossy().into_owned(),
    }))
    .await
    .unwrap();
}

#[tokio::test]
async fn full_lifecycle_through_the_service() {
    if !require_root("full_lifecycle_through_the_service") {
        return;
    }
    let disk = Disk::new(128 * MIB);
    let svc = NodeService::new(disk.config());
    let staging = disk.path("plugins/kubernetes.io/csi/pv/globalmount");
    let target = disk.path("pods/uid/volumes/kubernetes.io~csi/pv/mount");
    let cap = || mount_cap("ext4", Mode::SingleNodeWriter);
    svc.node_stage_volume(Request::new(stage_request(&disk, &staging, cap())))
        .await
        .unwrap();
    svc.node_publish_volume(Request::new(publish_request(
        &disk,
        &staging,
        &target,
        cap(),
        false,
    )))
    .await
    .unwrap();
    std::fs::write(target.join("f"), b"data").unwrap();
    svc.node_unpublish_volume(Request::new(csi::NodeUnpublishVolumeRequest {
        volume_id: disk.volume_id.clone(),
        target_path: target.to_string_lossy().into_owned(),
    }))
    .await
    .unwrap();
    assert!(!target.exists());
    svc.node_unstage_volume(Request::new(csi::NodeUnstageVolumeRequest {
        volume_id: disk.volume_id.clone(),
        staging_target_path: staging.to_string_lossy().into_owned(),
    }))
    .await
    .unwrap();
    assert!(!is_mountpoint(&staging));
    assert!(
        staging.is_dir(),
        "the staging directory belongs to the CO and stays"
    );
}

#[tokio::test]
async fn cancelled_rpc_finishes_its_work_and_keeps_the_guard() {
    if !require_root("cancelled_rpc_finishes_its_work_and_keeps_the_guard") {
        return;
    }
    let disk = Disk::new(64 * MIB);
    let link = disk.device_dir.join(format!("wwn-{}", disk.wwn));
    std::fs::remove_file(&link).unwrap();
    let mut cfg = disk.config();
    cfg.device_wait = Duration::from_secs(5);
    let svc = NodeService::new(cfg);
    let staging = disk.path("staging");
    let req = || stage_request(&disk, &staging, mount_cap("ext4", Mode::SingleNodeWriter));

    // The CO gives up on the first call while it waits for the disk.
    let first = {
        let svc = svc.clone();
        let req = req();
        tokio::spawn(async move { svc.node_stage_volume(Request::new(req)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());

    // Its work goes on, so a retry must not start a second one.
    let err = svc
        .node_stage_volume(Request::new(req()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err:?}");

    // The disk shows up; the original operation formats and mounts it.
    std::os::unix::fs::symlink(&disk.loopdev, &link).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !is_mountpoint(&staging) {
        assert!(
            std::time::Instant::now() < deadline,
            "abandoned stage never completed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Wait for the guard to drop, then the retry is an idempotent success.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match svc.node_stage_volume(Request::new(req())).await {
            Ok(_) => break,
            Err(e) if e.code() == Code::Aborted && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("retry after completion failed: {e:?}"),
        }
    }
    assert_eq!(disk.blkid_type().as_deref(), Some("ext4"));
}
