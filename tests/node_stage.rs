//! NodeStageVolume / NodeUnstageVolume against real loop devices.

mod node_support;

use std::time::{Duration, Instant};

use node_support::*;
use proxmox_csi::csi;
use proxmox_csi::csi::node_server::Node;
use proxmox_csi::csi::volume_capability::access_mode::Mode;
use proxmox_csi::node::NodeService;
use tonic::{Code, Request};

async fn stage(svc: &NodeService, req: csi::NodeStageVolumeRequest) -> Result<(), tonic::Status> {
    svc.node_stage_volume(Request::new(req)).await.map(|_| ())
}

async fn unstage(svc: &NodeService, staging: &std::path::Path) -> Result<(), tonic::Status> {
    let req = csi::NodeUnstageVolumeRequest {
        volume_id: VOLUME_ID.into(),
        staging_target_path: staging.to_string_lossy().into_owned(),
    };
    svc.node_unstage_volume(Request::new(req)).await.map(|_| ())
}

async fn formats_blank(fs: &str) {
    let disk = Disk::new(300 * MIB);
    let svc = NodeService::new(disk.config());
    let staging = disk.path("staging");
    stage(
        &svc,
        stage_request(&disk, &staging, mount_cap(fs, Mode::SingleNodeWriter)),
    )
    .await
    .unwrap();
    let m = proxmox_csi::node::mountinfo::mount_at(&staging)
        .unwrap()
        .expect("staging is mounted");
    assert_eq!(m.fs_type, if fs.is_empty() { "ext4" } else { fs });
    assert_eq!(disk.blkid_type().as_deref(), Some(m.fs_type.as_str()));
    // Idempotent: staging again is a no-op success.
    stage(
        &svc,
        stage_request(&disk, &staging, mount_cap(fs, Mode::SingleNodeWriter)),
    )
    .await
    .unwrap();
    unstage(&svc, &staging).await.unwrap();
    assert!(!is_mountpoint(&staging));
    // Unstaging twice is fine too.
    unstage(&svc, &staging).await.unwrap();
}

#[tokio::test]
async fn stage_formats_blank_device_ext4_by_default() {
    if !require_root("stage_formats_blank_device_ext4_by_default") {
        return;
    }
    formats_blank("").await;
}

#[tokio::test]
async fn stage_formats_blank_device_xfs() {
    if !require_root("stage_formats_blank_device_xfs") {
        return;
    }
    formats_blank("xfs").await;
}

#[tokio::test]
async fn ext4_has_no_reserved_blocks() {
    if !require_root("ext4_has_no_reserved_blocks") {
        return;
    }
    let disk = Disk::new(64 * MIB);
    let svc = NodeService::new(disk.config());
    let staging = disk.path("staging");
    stage(
        &svc,
        stage_request(&disk, &staging, mount_cap("ext4", Mode::SingleNodeWriter)),
    )
    .await
    .unwrap();
    // statvfs cannot tell: the kernel also holds back a few percent for
    // its own metadata. The superblock records the root reservation.
    let out = std::process::Command::new("tune2fs")
        .arg("-l")
        .arg(&disk.loopdev)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("Reserved block count:"))
        .expect("tune2fs -l output");
    assert_eq!(
        line.split(':').nth(1).unwrap().trim(),
        "0",
        "-m 0 leaves nothing reserved for root"
    );
}

#[tokio::test]
async fn restage_keeps_existing_data() {
    if !require_root("restage_keeps_existing_data") {
        return;
    }
    for fs in ["ext4", "xfs"] {
        let disk = Disk::new(300 * MIB);
        let svc = NodeService::new(disk.config());
        let staging = disk.path("staging");
        let req = || stage_request(&disk, &staging, mount_cap(fs, Mode::SingleNodeWriter));
        stage(&svc, req()).await.unwrap();
        std::fs::write(staging.join("keep.txt"), b"precious").unwrap();
        unstage(&svc, &staging).await.unwrap();
        assert!(
            !staging.join("keep.txt").exists(),
            "{fs}: file must live on the volume, not the directory"
        );
        stage(&svc, req()).await.unwrap();
        assert_eq!(
            std::fs::read(staging.join("keep.txt")).unwrap(),
            b"precious",
            "{fs}: data lost on restage"
        );
        unstage(&svc, &staging).await.unwrap();
    }
}

/// An MBR with one Linux partition: enough for blkid to report PTTYPE=dos.
fn mbr(total_sectors: u32) -> [u8; 512] {
    let mut s = [0u8; 512];
    s[440..444].copy_from_slice(&0x1234_5678u32.to_le_bytes()); // disk id
    let e = &mut s[446..462];
    e[4] = 0x83; // Linux
    e[8..12].copy_from_slice(&2048u32.to_le_bytes());
    e[12..16].copy_from_slice(&(total_sectors - 2048).to_le_bytes());
    s[510] = 0x55;
    s[511] = 0xAA;
    s
}

async fn assert_refused_untouched(disk: &Disk, fs: &str, expect_in_msg: &str) {
    let svc = NodeService::new(disk.config());
    let staging = disk.path("staging");
    let before = disk.first_mib();
    let err = stage(
        &svc,
        stage_request(disk, &staging, mount_cap(fs, Mode::SingleNodeWriter)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains(expect_in_msg),
        "message {:?} lacks {expect_in_msg:?}",
        err.message()
    );
    assert!(!is_mountpoint(&staging));
    assert!(disk.first_mib() == before, "device was modified");
}

#[tokio::test]
async fn stage_refuses_partition_table_and_leaves_it_alone() {
    if !require_root("stage_refuses_partition_table_and_leaves_it_alone") {
        return;
    }
    let disk = Disk::new(64 * MIB);
    disk.write_at(0, &mbr((64 * MIB / 512) as u32));
    assert_refused_untouched(&disk, "ext4", "partition table").await;
}

#[tokio::test]
async fn stage_refuses_other_filesystem_type_and_leaves_it_alone() {
    if !require_root("stage_refuses_other_filesystem_type_and_leaves_it_alone") {
        return;
    }
    let disk = Disk::new(300 * MIB);
    disk.mkfs("mkfs.xfs");
    assert_refused_untouched(&disk, "ext4", "xfs filesystem but ext4 was requested").await;
    assert_eq!(disk.blkid_type().as_deref(), Some("xfs"));
}

#[tokio::test]
async fn stage_refuses_unknown_signature_and_stray_data() {
    if !require_root("stage_refuses_unknown_signature_and_stray_data") {
        return;
    }
    let disk = Disk::new(64 * MIB);
    std::process::Command::new("mkswap")
        .arg(&disk.loopdev)
        .output()
        .unwrap();
    assert_refused_untouched(&disk, "ext4", "swap").await;

    let disk = Disk::new(64 * MIB);
    disk.write_at(300 * 1024, b"leftover bytes from an earlier tenant");
    assert_refused_untouched(&disk, "ext4", "non-zero data").await;
}

#[tokio::test]
async fn missing_wwn_link_times_out_with_not_found() {
    if !require_root("missing_wwn_link_times_out_with_not_found") {
        return;
    }
    let disk = Disk::new(16 * MIB);
    let mut cfg = disk.config();
    cfg.device_wait = Duration::from_millis(600);
    let svc = NodeService::new(cfg);
    let mut req = stage_request(
        &disk,
        &disk.path("staging"),
        mount_cap("ext4", Mode::SingleNodeWriter),
    );
    req.publish_context
        .insert("wwn".into(), "0x5000000000000bad".into());
    let start = Instant::now();
    let err = stage(&svc, req).await.unwrap_err();
    let waited = start.elapsed();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(
        err.message().contains("0x5000000000000bad") && err.message().contains("did not appear"),
        "{err:?}"
    );
    assert!(
        waited >= Duration::from_millis(600) && waited < Duration::from_secs(5),
        "waited {waited:?}"
    );
}

#[tokio::test]
async fn link_appearing_late_is_found() {
    if !require_root("link_appearing_late_is_found") {
        return;
    }
    let disk = Disk::new(64 * MIB);
    let link = disk.device_dir.join(format!("wwn-{}", disk.wwn));
    std::fs::remove_file(&link).unwrap();
    let svc = NodeService::new(disk.config());
    let staging = disk.path("staging");
    let loopdev = disk.loopdev.clone();
    let link2 = link.clone();
    let late = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        std::os::unix::fs::symlink(loopdev, link2).unwrap();
    });
    stage(
        &svc,
        stage_request(&disk, &staging, mount_cap("ext4", Mode::SingleNodeWriter)),
    )
    .await
    .unwrap();
    late.await.unwrap();
    assert!(is_mountpoint(&staging));
}

#[tokio::test]
async fn stale_link_to_wrong_disk_is_refused() {
    if !require_root("stale_link_to_wrong_disk_is_refused") {
        return;
    }
    let disk = Disk::new(16 * MIB);
    // A fake sysfs where the loop device claims a different identity.
    let sys = disk.path("sys");
    let name = disk.loopdev.file_name().unwrap();
    std::fs::create_dir_all(sys.join(name).join("device")).unwrap();
    std::fs::write(sys.join(name).join("device/wwid"), "naa.5000000000000001\n").unwrap();
    let mut cfg = disk.config();
    cfg.sys_block_dir = sys.clone();
    let before = disk.first_mib();
    let svc = NodeService::new(cfg.clone());
    let err = stage(
        &svc,
        stage_request(
            &disk,
            &disk.path("staging"),
            mount_cap("ext4", Mode::SingleNodeWriter),
        ),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("naa.5000000000000001"), "{err:?}");
    assert!(disk.first_mib() == before);

    // The matching wwid is accepted.
    std::fs::write(
        sys.join(name).join("device/wwid"),
        format!("naa.{}\n", &disk.wwn[2..]),
    )
    .unwrap();
    let svc = NodeService::new(cfg);
    stage(
        &svc,
        stage_request(
            &disk,
            &disk.path("staging"),
            mount_cap("ext4", Mode::SingleNodeWriter),
        ),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn staging_path_taken_by_another_device_is_already_exists() {
    if !require_root("staging_path_taken_by_another_device_is_already_exists") {
        return;
    }
    let a = Disk::new(64 * MIB);
    let b = Disk::new(64 * MIB);
    let staging = a.path("staging");
    stage(
        &NodeService::new(a.config()),
        stage_request(&a, &staging, mount_cap("ext4", Mode::SingleNodeWriter)),
    )
    .await
    .unwrap();
    let err = stage(
        &NodeService::new(b.config()),
        stage_request(&b, &staging, mount_cap("ext4", Mode::SingleNodeWriter)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
    // Same device, different fs type requested: also a conflict.
    let err = stage(
        &NodeService::new(a.config()),
        stage_request(&a, &staging, mount_cap("xfs", Mode::SingleNodeWriter)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");
}

#[tokio::test]
async fn block_stage_only_checks_the_device() {
    if !require_root("block_stage_only_checks_the_device") {
        return;
    }
    let disk = Disk::new(16 * MIB);
    let svc = NodeService::new(disk.config());
    let staging = disk.path("staging");
    let before = disk.first_mib();
    stage(
        &svc,
        stage_request(&disk, &staging, block_cap(Mode::SingleNodeWriter)),
    )
    .await
    .unwrap();
    assert!(!is_mountpoint(&staging));
    assert!(disk.first_mib() == before, "block stage must not write");
    unstage(&svc, &staging).await.unwrap();
}

#[tokio::test]
async fn stage_validates_fields() {
    // Pure validation: no device access, so no root needed.
    let cfg = proxmox_csi::node::NodeConfig::new("n");
    let svc = NodeService::new(cfg);
    let good = || csi::NodeStageVolumeRequest {
        volume_id: VOLUME_ID.into(),
        publish_context: [("wwn".to_string(), "0x5000000000000001".to_string())].into(),
        staging_target_path: "/tmp/x".into(),
        volume_capability: Some(mount_cap("ext4", Mode::SingleNodeWriter)),
        ..Default::default()
    };
    let cases: Vec<(csi::NodeStageVolumeRequest, &str)> = vec![
        (
            csi::NodeStageVolumeRequest {
                volume_id: String::new(),
                ..good()
            },
            "volume_id",
        ),
        (
            csi::NodeStageVolumeRequest {
                staging_target_path: String::new(),
                ..good()
            },
            "staging_target_path",
        ),
        (
            csi::NodeStageVolumeRequest {
                volume_capability: None,
                ..good()
            },
            "volume_capability",
        ),
        (
            csi::NodeStageVolumeRequest {
                publish_context: Default::default(),
                ..good()
            },
            "wwn",
        ),
        (
            csi::NodeStageVolumeRequest {
                volume_capability: Some(mount_cap("btrfs", Mode::SingleNodeWriter)),
                ..good()
            },
            "volume_capability.mount.fs_type",
        ),
    ];
    for (req, field) in cases {
        let err = stage(&svc, req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(
            err.message().contains(field),
            "{:?} does not name {field}",
            err.message()
        );
    }
}

#[tokio::test]
async fn cloned_xfs_volumes_stage_side_by_side() {
    if !require_root("cloned_xfs_volumes_stage_side_by_side") {
        return;
    }
    let original = Disk::new(300 * MIB);
    let svc = NodeService::new(original.config());
    let s1 = original.path("s1");
    stage(
        &svc,
        stage_request(&original, &s1, mount_cap("xfs", Mode::SingleNodeWriter)),
    )
    .await
    .unwrap();
    std::fs::write(s1.join("f"), b"v1").unwrap();
    unstage(&svc, &s1).await.unwrap();

    // A block-for-block copy, as a snapshot restore would produce: same
    // xfs UUID on two disks.
    let clone = Disk::new(300 * MIB);
    std::fs::copy(&original.image, &clone.image).unwrap();
    std::process::Command::new("losetup")
        .arg("-c")
        .arg(&clone.loopdev)
        .status()
        .unwrap();
    stage(
        &svc,
        stage_request(&original, &s1, mount_cap("xfs", Mode::SingleNodeWriter)),
    )
    .await
    .unwrap();
    let s2 = clone.path("s2");
    stage(
        &NodeService::new(clone.config()),
        stage_request(&clone, &s2, mount_cap("xfs", Mode::SingleNodeWriter)),
    )
    .await
    .unwrap();
    assert_eq!(std::fs::read(s2.join("f")).unwrap(), b"v1");
}

#[tokio::test]
async fn mount_flags_from_the_capability_are_applied() {
    if !require_root("mount_flags_from_the_capability_are_applied") {
        return;
    }
    let disk = Disk::new(300 * MIB);
    let svc = NodeService::new(disk.config());
    let staging = disk.path("staging");
    let mut cap = mount_cap("xfs", Mode::SingleNodeWriter);
    if let Some(csi::volume_capability::AccessType::Mount(m)) = cap.access_type.as_mut() {
        m.mount_flags = vec![
            "noatime".into(),
            "nodev,noexec".into(),
            "logbsize=64k".into(),
        ];
    }
    stage(&svc, stage_request(&disk, &staging, cap))
        .await
        .unwrap();
    let m = proxmox_csi::node::mountinfo::mount_at(&staging)
        .unwrap()
        .unwrap();
    for flag in ["noatime", "nodev", "noexec"] {
        assert!(
            m.mount_options.iter().any(|o| o == flag),
            "{flag} missing from {:?}",
            m.mount_options
        );
    }
    assert!(
        m.super_options.iter().any(|o| o == "logbsize=64k"),
        "fs option missing: {:?}",
        m.super_options
    );
    assert!(
        m.super_options.iter().any(|o| o == "nouuid"),
        "xfs nouuid missing: {:?}",
        m.super_options
    );
}
