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

async fn unpublish(svc: &NodeService, disk: &Disk, target: &Path) -> Result<(), tonic::Status> {
    let req = csi::NodeUnpublishVolumeRequest {
        volume_id: disk.volume_id.clone(),
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

    unpublish(&svc, &disk, &rw).await.unwrap();
    unpublish(&svc, &disk, &ro).await.unwrap();
    assert!(
        !rw.exists() && !ro.exists(),
        "unpublish removes the target directories"
    );
    // Again: already gone is success.
    unpublish(&svc, &disk, &rw).await.unwrap();
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
    let mut bcfg = b.config();
    bcfg.kubelet_dir = a.root.path().to_path_buf();
    stage(&NodeService::new(bcfg), &b, &staging, cap()).await;
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
    unpublish(&svc, &disk, &t1).await.unwrap();
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

    unpublish(&svc, &disk, &target).await.unwrap();
    assert!(!target.exists(), "unpublish removes the block target file");
    unpublish(&svc, &disk, &target).await.unwrap();
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
    let (sa, sb) = (a.path("staging"), a.path("staging-b"));
    let cap = || mount_cap("ext4", Mode::SingleNodeWriter);
    let mut bcfg = b.config();
    bcfg.kubelet_dir = a.root.path().to_path_buf();
    let (svc_a, svc_b) = (NodeService::new(a.config()), NodeService::new(bcfg));
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
    let err = unpublish(&svc, &disk, &target).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("not empty"), "{err:?}");
    assert!(target.join("file").exists());
}

#[tokio::test]
async fn unpublish_validates_fields() {
    let svc = NodeService::new(proxmox_csi::node::NodeConfig::new("n"));
    let err = svc
        .node_unpublish_volume(Request::new(csi::NodeUnpublishVolumeRequest {
            volume_id: new_volume_id().to_string(),
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

#[tokio::test]
async fn publish_refuses_paths_outside_the_kubelet_dir() {
    if !require_root("publish_refuses_paths_outside_the_kubelet_dir") {
        return;
    }
    let disk = Disk::new(64 * MIB);
    let svc = NodeService::new(disk.config());
    let staging = disk.path("staging");
    let kubelet = disk.root.path().to_path_buf();
    std::os::unix::fs::symlink("/etc", kubelet.join("etc-link")).unwrap();
    let etc_mounted = is_mountpoint(Path::new("/etc"));
    for (access, cap) in [
        ("mount", mount_cap("ext4", Mode::SingleNodeWriter)),
        ("block", block_cap(Mode::SingleNodeWriter)),
    ] {
        stage(&svc, &disk, &staging, cap.clone()).await;
        for bad in [
            "/etc".to_string(),
            "/etc/hostname".to_string(),
            format!("{}/../../../etc", kubelet.display()),
            kubelet.join("etc-link").display().to_string(),
            kubelet.join("etc-link/hostname").display().to_string(),
            kubelet.display().to_string(),
        ] {
            let mut req =
                publish_request(&disk, &staging, Path::new("/unused"), cap.clone(), false);
            req.target_path = bad.clone();
            let err = publish(&svc, req).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{access} {bad}: {err:?}");
            assert!(err.message().contains("target_path"), "{err:?}");
            // The staging path follows the same rules.
            let mut req = publish_request(
                &disk,
                Path::new("/unused"),
                &disk.path("t"),
                cap.clone(),
                false,
            );
            req.staging_target_path = bad.clone();
            let err = publish(&svc, req).await.unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{access} {bad}: {err:?}");
            assert!(err.message().contains("staging_target_path"), "{err:?}");
        }
        assert!(!disk.path("t").exists());
        assert_eq!(
            is_mountpoint(Path::new("/etc")),
            etc_mounted,
            "{access}: /etc mounted over"
        );
        assert!(
            !is_mountpoint(Path::new("/etc/hostname")),
            "{access}: /etc/hostname mounted over"
        );
        svc.node_unstage_volume(Request::new(csi::NodeUnstageVolumeRequest {
            volume_id: disk.volume_id.clone(),
            staging_target_path: staging.to_string_lossy().into_owned(),
        }))
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn block_publish_never_binds_over_a_non_empty_file() {
    if !require_root("block_publish_never_binds_over_a_non_empty_file") {
        return;
    }
    let disk = Disk::new(16 * MIB);
    let svc = NodeService::new(disk.config());
    let staging = disk.path("staging");
    let cap = || block_cap(Mode::SingleNodeWriter);
    stage(&svc, &disk, &staging, cap()).await;
    let target = disk.path("pods/a/precious.db");
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::write(&target, b"precious").unwrap();
    let err = publish(
        &svc,
        publish_request(&disk, &staging, &target, cap(), false),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("non-empty regular file"), "{err:?}");
    assert!(!is_mountpoint(&target));
    assert_eq!(std::fs::read(&target).unwrap(), b"precious");
    // An empty file (what an earlier publish left) is fine to reuse.
    let empty = disk.path("pods/a/empty");
    std::fs::write(&empty, b"").unwrap();
    publish(&svc, publish_request(&disk, &staging, &empty, cap(), false))
        .await
        .unwrap();
    assert!(is_mountpoint(&empty));
    unpublish(&svc, &disk, &empty).await.unwrap();
    assert!(!empty.exists());
}

#[tokio::test]
async fn unpublish_deletes_only_what_the_driver_made() {
    if !require_root("unpublish_deletes_only_what_the_driver_made") {
        return;
    }
    let disk = Disk::new(16 * MIB);
    let svc = NodeService::new(disk.config());
    // A non-empty regular file inside the kubelet dir: refused, kept.
    let file = disk.path("pods/a/etc-passwd-copy");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, b"root:x:0:0").unwrap();
    let err = unpublish(&svc, &disk, &file).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("non-empty regular file"), "{err:?}");
    assert_eq!(std::fs::read(&file).unwrap(), b"root:x:0:0");
    // Outside the kubelet dir: refused before anything is looked at.
    let outside = tempfile::tempdir().unwrap();
    let foreign = outside.path().join("file");
    std::fs::write(&foreign, b"").unwrap();
    let foreign_dir = outside.path().join("dir");
    std::fs::create_dir(&foreign_dir).unwrap();
    let link = disk.path("pods/a/link");
    std::os::unix::fs::symlink(&foreign, &link).unwrap();
    for bad in [&foreign, &foreign_dir, &link, Path::new("/")] {
        let err = unpublish(&svc, &disk, bad).await.unwrap_err();
        assert_eq!(
            err.code(),
            Code::InvalidArgument,
            "{}: {err:?}",
            bad.display()
        );
        assert!(err.message().contains("target_path"), "{err:?}");
    }
    assert!(foreign.exists() && foreign_dir.exists() && link.exists());
    assert!(is_mountpoint(Path::new("/")));
    // The empty file block publish makes, and an empty directory, go.
    let empty = disk.path("pods/a/empty");
    std::fs::write(&empty, b"").unwrap();
    unpublish(&svc, &disk, &empty).await.unwrap();
    assert!(!empty.exists());
}

#[tokio::test]
async fn publish_refuses_another_volumes_wwn_and_unknown_ids() {
    if !require_root("publish_refuses_another_volumes_wwn_and_unknown_ids") {
        return;
    }
    let a = Disk::new(16 * MIB);
    let b = Disk::new(16 * MIB);
    std::os::unix::fs::symlink(&b.loopdev, a.device_dir.join(format!("wwn-{}", b.wwn))).unwrap();
    let svc = NodeService::new(a.config());
    for (access, cap) in [
        ("mount", mount_cap("ext4", Mode::SingleNodeWriter)),
        ("block", block_cap(Mode::SingleNodeWriter)),
    ] {
        // B is staged properly; a publish of A naming B's wwn must not
        // hand B's data out as A.
        let sb = a.path(&format!("staging-b-{access}"));
        stage(&svc, &b, &sb, cap.clone()).await;
        let target = a.path(&format!("t-{access}"));
        let mut req = publish_request(&a, &sb, &target, cap.clone(), false);
        req.publish_context.insert("wwn".into(), b.wwn.clone());
        let err = publish(&svc, req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{access}: {err:?}");
        assert!(
            err.message().contains("publish_context[\"wwn\"]"),
            "{err:?}"
        );
        assert!(!target.exists() && !is_mountpoint(&target));

        let mut req = publish_request(&a, &sb, &target, cap.clone(), false);
        req.volume_id = "region1/zone-a/local-lvm/vm-9999-disk-0".into();
        let err = publish(&svc, req).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{access}: {err:?}");
        assert!(err.message().contains("volume_id"), "{err:?}");
        assert!(!target.exists());
    }
}
