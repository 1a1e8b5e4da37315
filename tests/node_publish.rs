//! NodePublishVolume / NodeUnpublishVolume for filesystem and raw block
//! volumes.

mod node_support;

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use node_support::*;
use proxmox_csi::csi;
use proxmox_csi::csi::node_server::Node;
use proxmox_csi::csi::volume_capability::access_mode::Mode;
use proxmox_csi::node::NodeService;
use tonic::{Code, Request};

async fn stage(svc: &NodeService, disk: &Disk, staging: &Path, cap: csi::VolumeCapability) {
    svc.node_stage_volume(Request::new(stage_request(disk, staging, cap)))
        .await
        .unwrap();
}

async fn publish(
    svc: &NodeService,
    req: csi::NodePublishVolumeRequest,
) -> Result<(), tonic::Status> {
    svc.node_publish_volume(Request::new(req)).await.map(|_| ())
}

async fn unpublish(svc: &NodeService, target: &Path) -> Result<(), tonic::Status> {
    let req = csi::NodeUnpublishVolumeRequest {
        volume_id: VOLUME_ID.into(),
        target_path: target.to_string_lossy().into_owned(),
    };
    svc.node_unpublish_volume(Request::new(req))
        .await
        .map(|_| ())
}

#[tokio::test]
async fn publish_mount_rw_and_ro_then_unpublish_removes_targets() {
    if !require_root("publish_mount_rw_and_ro_then_unpublish_removes_targets") {
        return;
    }
    let disk = Disk::new(64 * MIB);
    let svc = NodeService::new(disk.config());
    let staging = disk.path("staging");
    let cap = || mount_cap("ext4", Mode::SingleNodeWriter);
    stage(&svc, &disk, &staging, cap()).await;

    // Targets live below directories that do not exist yet.
    let rw = disk.path("pods/a/volumes/rw");
    let ro = disk.path("pods/b/volumes/ro");
    publish(&svc, publish_request(&disk, &staging, &rw, cap(), false))
        .await
        .unwrap();
    publish(&svc, publish_request(&disk, &staging, &ro, cap(), true))
        .await
        .unwrap();
    // Idempotent repeats.
    publish(&svc, publish_request(&disk, &staging, &rw, cap(), false))
        .await
        .unwrap();
    publish(&svc, publish_request(&disk, &staging, &ro, cap(), true))
        .await
        .unwrap();

    std::fs::write(rw.join("hello"), b"world").unwrap();
    assert_eq!(
        std::fs::read(ro.join("hello")).unwrap(),
        b"world",
        "both targets show the same volume"
    );
    assert_eq!(std::fs::read(staging.join("hello")).unwrap(), b"world");
    let err = std::fs::write(ro.join("nope"), b"x").unwrap_err();
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EROFS),
        "readonly publish must refuse writes: {err}"
    );

    // Same target, different readonly: detected, not silently accepted.
    let err = publish(&svc, publish_request(&disk, &staging, &ro, cap(), false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");

    unpublish(&svc, &rw).await.unwrap();
    unpublish(&svc, &ro).await.unwrap();
    assert!(
        !rw.exists() && !ro.exists(),
        "unpublish removes the target directories"
    );
    // Again: already gone is success.
    unpublish(&svc, &rw).await.unwrap();
    // Data is still on the staged volume.
    assert_eq!(std::fs::read(staging.join("hello")).unwrap(), b"world");
}

#[tokio::test]
async fn publish_requires_staging() {
    if !require_root("publish_requires_staging") {
        return;
    }
    let disk = Disk::new(16 * MIB);
    let svc = NodeService::new(disk.config());
    let staging = disk.path("staging");
    std::fs::create_dir(&staging).unwrap();
    let err = publish(
        &svc,
        publish_request(
            &disk,
            &staging,
            &disk.path("t"),
            mount_cap("ext4", Mode::SingleNodeWriter),
            false,
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(!disk.path("t").exists());
}

#[tokio::test]
async fn publish_refuses_staging_path_holding_another_disk() {
    if !require_root("publish_refuses_staging_path_holding_another_disk") {
        return;
    }
    let a = Disk::new(64 * MIB);
    let b = Disk::new(64 * MIB);
    let staging = a.path("staging");
    let cap = || mount_cap("ext4", Mode::SingleNodeWriter);
    stage(&NodeService::new(b.config()), &b, &staging, cap()).await;
    // Volume a's publish names a staging path where disk b is mounted.
    let svc_a = NodeService::new(a.config());
    let err = publish(
        &svc_a,
        publish_request(&a, &staging, &a.path("t"), cap(), false),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(!a.path("t").exists());
}

#[tokio::test]
async fn single_node_single_writer_allows_one_publication() {
    if !require_root("single_node_single_writer_allows_one_publication") {
        return;
    }
    let disk = Disk::new(64 * MIB);
    let svc = NodeService::new(disk.config());
    let staging = disk.path("staging");
    let cap = || mount_cap("ext4", Mode::SingleNodeSingleWriter);
    stage(&svc, &disk, &staging, cap()).await;
    let (t1, t2) = (disk.path("t1"), disk.path("t2"));
    publish(&svc, publish_request(&disk, &staging, &t1, cap(), false))
        .await
        .unwrap();
    publish(&svc, publish_request(&disk, &staging, &t1, cap(), false))
        .await
        .unwrap();
    let err = publish(&svc, publish_request(&disk, &staging, &t2, cap(), false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    unpublish(&svc, &t1).await.unwrap();
    publish(&svc, publish_request(&disk, &staging, &t2, cap(), false))
        .await
        .unwrap();

    // SINGLE_NODE_MULTI_WRITER permits several.
    let multi = || mount_cap("ext4", Mode::SingleNodeMultiWriter);
    publish(
        &svc,
        publish_request(&disk, &staging, &disk.path("t3"), multi(), false),
    )
    .await
    .unwrap();
    publish(
        &svc,
        publish_request(&disk, &staging, &disk.path("t4"), multi(), false),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn reader_only_mode_mounts_read_only() {
    if !require_root("reader_only_mode_mounts_read_only") {
        return;
    }
    let disk = Disk::new(64 * MIB);
    let svc = NodeService::new(disk.config());
    let staging = disk.path("staging");
    let cap = || mount_cap("ext4", Mode::SingleNodeReaderOnly);
    stage(&svc, &disk, &staging, cap()).await;
    let t = disk.path("t");
    publish(&svc, publish_request(&disk, &staging, &t, cap(), false))
        .await
        .unwrap();
    let err = std::fs::write(t.join("x"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
}

#[tokio::test]
async fn publish_block_binds_the_device_node() {
    if !require_root("publish_block_binds_the_device_node") {
        return;
    }
    let disk = Disk::new(16 * MIB);
    let svc = NodeService::new(disk.config());
    let staging = disk.path("staging");
    let cap = || block_cap(Mode::SingleNodeWriter);
    stage(&svc, &disk, &staging, cap()).await;
    let target = disk.path("pods/a/volumeDevices/dev");
    publish(
        &svc,
        publish_request(&disk, &staging, &target, cap(), false),
    )
    .await
    .unwrap();
    publish(
        &svc,
        publish_request(&disk, &staging, &target, cap(), false),
    )
    .await
    .unwrap();
    assert!(is_mountpoint(&target));

    // Writing through the target lands on the loop device.
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&target)
        .unwrap();
    f.seek(SeekFrom::Start(4096)).unwrap();
    f.write_all(b"raw block payload").unwrap();
    f.sync_all().unwrap();
    let mut back = vec![0u8; 17];
    let mut dev = std::fs::File::open(&disk.loopdev).unwrap();
    dev.seek(SeekFrom::Start(4096)).unwrap();
    dev.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"raw block payload");
    // An open handle keeps the bind mount busy, as a running container would.
    drop(f);
    assert_eq!(
        proxmox_csi::node::device::block_size(&target).unwrap(),
        16 * MIB
    );

    let err = publish(&svc, publish_request(&disk, &staging, &target, cap(), true))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");

    unpublish(&svc, &target).await.unwrap();
    assert!(!target.exists(), "unpublish removes the block target file");
    unpublish(&svc, &target).await.unwrap();
}

#[tokio::test]
async fn block_single_writer_refuses_second_target() {
    if !require_root("block_single_writer_refuses_second_target") {
        return;
    }
    let disk = Disk::new(16 * MIB);
    let svc = NodeService::new(disk.config());
    let staging = disk.path("staging");
    let cap = || block_cap(Mode::SingleNodeSingleWriter);
    stage(&svc, &disk, &staging, cap()).await;
    publish(
        &svc,
        publish_request(&disk, &staging, &disk.path("b1"), cap(), false),
    )
    .await
    .unwrap();
    let err = publish(
        &svc,
        publish_request(&disk, &staging, &disk.path("b2"), cap(), false),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(!disk.path("b2").exists());
}

#[tokio::test]
async fn target_mounted_from_other_volume_is_already_exists() {
    if !require_root("target_mounted_from_other_volume_is_already_exists") {
        return;
    }
    let a = Disk::new(64 * MIB);
    let b = Disk::new(64 * MIB);
    let (sa, sb) = (a.path("staging"), b.path("staging"));
    let cap = || mount_cap("ext4", Mode::SingleNodeWriter);
    let (svc_a, svc_b) = (NodeService::new(a.config()), NodeService::new(b.config()));
    stage(&svc_a, &a, &sa, cap()).await;
    stage(&svc_b, &b, &sb, cap()).await;
    let target = a.path("t");
    publish(&svc_a, publish_request(&a, &sa, &target, cap(), false))
        .await
        .unwrap();
    let err = publish(&svc_b, publish_request(&b, &sb, &target, cap(), false))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
}

#[tokio::test]
async fn unpublish_never_deletes_contents_of_an_unmounted_target() {
    if !require_root("unpublish_never_deletes_contents_of_an_unmounted_target") {
        return;
    }
    // A plain, non-empty directory at the target (no mount): removing it
    // recursively could destroy data, so unpublish must fail instead.
    let disk = Disk::new(16 * MIB);
    let svc = NodeService::new(disk.config());
    let target = disk.path("t");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("file"), b"x").unwrap();
    let err = unpublish(&svc, &target).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("not empty"), "{err:?}");
    assert!(target.join("file").exists());
}

#[tokio::test]
async fn unpublish_validates_fields() {
    let svc = NodeService::new(proxmox_csi::node::NodeConfig::new("n"));
    let err = svc
        .node_unpublish_volume(Request::new(csi::NodeUnpublishVolumeRequest {
            volume_id: VOLUME_ID.into(),
            target_path: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("target_path"));
    let err = svc
        .node_unpublish_volume(Request::new(csi::NodeUnpublishVolumeRequest {
            volume_id: String::new(),
            target_path: "/x".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("volume_id"));
}
