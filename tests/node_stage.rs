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

async fn unstage(
    svc: &NodeService,
    disk: &Disk,
    staging: &std::path::Path,
) -> Result<(), tonic::Status> {
    let req = csi::NodeUnstageVolumeRequest {
        volume_id: disk.volume_id.clone(),
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
    unstage(&svc, &disk, &staging).await.unwrap();
    assert!(!is_mountpoint(&staging));
    // Unstaging twice is fine too.
    unstage(&svc, &disk, &staging).await.unwrap();
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
        unstage(&svc, &disk, &staging).await.unwrap();
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
        unstage(&svc, &disk, &staging).await.unwrap();
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
    // The link is missing: make the disk's link belong to nothing.
    std::fs::remove_file(disk.device_dir.join(format!("wwn-{}", disk.wwn))).unwrap();
    let req = stage_request(
        &disk,
        &disk.path("staging"),
        mount_cap("ext4", Mode::SingleNodeWriter),
    );
    let start = Instant::now();
    let err = stage(&svc, req).await.unwrap_err();
    let waited = start.elapsed();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(
        err.message().contains(&disk.wwn) && err.message().contains("did not appear"),
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
    let mut bcfg = b.config();
    bcfg.kubelet_dir = a.root.path().to_path_buf();
    let err = stage(
        &NodeService::new(bcfg),
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
    unstage(&svc, &disk, &staging).await.unwrap();
}

#[tokio::test]
async fn stage_validates_fields() {
    // Pure validation: no device access, so no root needed.
    let kubelet = tempfile::tempdir().unwrap();
    let mut cfg = proxmox_csi::node::NodeConfig::new("n");
    cfg.kubelet_dir = kubelet.path().to_path_buf();
    let svc = NodeService::new(cfg);
    let id = new_volume_id();
    let staging = kubelet.path().join("x").to_string_lossy().into_owned();
    let good = || csi::NodeStageVolumeRequest {
        volume_id: id.to_string(),
        publish_context: [("wwn".to_string(), id.wwn())].into(),
        staging_target_path: staging.clone(),
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
    unstage(&svc, &original, &s1).await.unwrap();

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

fn run_ok(cmd: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn stage_at(disk: &Disk, staging: &str) -> csi::NodeStageVolumeRequest {
    csi::NodeStageVolumeRequest {
        staging_target_path: staging.into(),
        ..stage_request(
            disk,
            std::path::Path::new("/unused"),
            mount_cap("ext4", Mode::SingleNodeWriter),
        )
    }
}

#[tokio::test]
async fn stage_and_unstage_refuse_paths_outside_the_kubelet_dir() {
    if !require_root("stage_and_unstage_refuse_paths_outside_the_kubelet_dir") {
        return;
    }
    let disk = Disk::new(64 * MIB);
    let svc = NodeService::new(disk.config());
    let kubelet = disk.root.path().to_path_buf();
    std::os::unix::fs::symlink("/etc", kubelet.join("etc-link")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    let fresh_outside = outside.path().join("would-be-created");
    let before = disk.checksum();
    let etc_mounted = is_mountpoint(std::path::Path::new("/etc"));
    let bad = [
        format!("{}/../../../etc", kubelet.display()),
        kubelet.join("etc-link").display().to_string(),
        kubelet.join("etc-link/sub").display().to_string(),
        "/etc".to_string(),
        kubelet.display().to_string(),
        fresh_outside.display().to_string(),
        "relative/staging".to_string(),
    ];
    for path in &bad {
        let err = stage(&svc, stage_at(&disk, path)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{path}: {err:?}");
        assert!(
            err.message().contains("staging_target_path"),
            "{path}: {err:?}"
        );
    }
    assert_eq!(
        is_mountpoint(std::path::Path::new("/etc")),
        etc_mounted,
        "/etc was mounted over"
    );
    assert!(
        !fresh_outside.exists(),
        "a directory outside the kubelet dir was created"
    );
    assert!(!kubelet.join("etc-link/sub").exists());
    assert!(disk.checksum() == before, "the disk was formatted");

    // Unstage of a mount outside the kubelet dir, or of /, unmounts nothing.
    let foreign = outside.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &foreign,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    for path in [foreign.display().to_string(), "/".to_string()] {
        let req = csi::NodeUnstageVolumeRequest {
            volume_id: disk.volume_id.clone(),
            staging_target_path: path.clone(),
        };
        let err = svc
            .node_unstage_volume(Request::new(req))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{path}: {err:?}");
        assert!(err.message().contains("staging_target_path"), "{err:?}");
    }
    assert!(is_mountpoint(&foreign), "a foreign mount was unmounted");
    assert!(is_mountpoint(std::path::Path::new("/")));
    nix::mount::umount2(&foreign, nix::mount::MntFlags::MNT_DETACH).unwrap();
}

#[tokio::test]
async fn stage_refuses_another_volumes_wwn_and_unknown_ids() {
    if !require_root("stage_refuses_another_volumes_wwn_and_unknown_ids") {
        return;
    }
    let a = Disk::new(64 * MIB);
    let b = Disk::new(64 * MIB);
    // On a real node every attached disk is in the same by-id directory.
    std::os::unix::fs::symlink(&b.loopdev, a.device_dir.join(format!("wwn-{}", b.wwn))).unwrap();
    let svc = NodeService::new(a.config());
    let staging = a.path("staging");
    let before = b.checksum();
    let mut req = stage_request(&a, &staging, mount_cap("ext4", Mode::SingleNodeWriter));
    req.publish_context.insert("wwn".into(), b.wwn.clone());
    let err = stage(&svc, req).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("publish_context[\"wwn\"]"),
        "{err:?}"
    );
    assert!(!is_mountpoint(&staging));
    assert!(b.checksum() == before, "B's disk was formatted as A");
    assert_eq!(b.blkid_type(), None);

    let mut req = stage_request(&a, &staging, mount_cap("ext4", Mode::SingleNodeWriter));
    req.volume_id = "region1/zone-a/local-lvm/vm-9999-disk-0".into();
    let err = stage(&svc, req).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("volume_id"), "{err:?}");
    assert!(!is_mountpoint(&staging));
}

async fn assert_refused_keeps_all(disk: &Disk, expect: &[&str]) {
    let svc = NodeService::new(disk.config());
    let staging = disk.path("staging");
    let before = disk.checksum();
    let err = stage(
        &svc,
        stage_request(disk, &staging, mount_cap("ext4", Mode::SingleNodeWriter)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    for e in expect {
        assert!(err.message().contains(e), "{:?} lacks {e:?}", err.message());
    }
    assert!(!is_mountpoint(&staging));
    assert!(disk.checksum() == before, "device was modified");
}

#[tokio::test]
async fn stage_refuses_ext4_at_partition_offset() {
    if !require_root("stage_refuses_ext4_at_partition_offset") {
        return;
    }
    let disk = Disk::new(64 * MIB);
    // A partition at 1 MiB whose table was wiped: its filesystem remains.
    let part = run_ok(
        "losetup",
        &[
            "--find",
            "--show",
            "-o",
            "1048576",
            disk.image.to_str().unwrap(),
        ],
    );
    let made = std::process::Command::new("mkfs.ext4")
        .args(["-q", &part])
        .status()
        .unwrap();
    run_ok("losetup", &["-d", &part]);
    assert!(made.success());
    assert_eq!(disk.blkid_type(), None, "nothing at the start of the disk");
    assert_refused_keeps_all(&disk, &["ext4", "1048576"]).await;
    let found = run_ok(
        "blkid",
        &[
            "-p",
            "-O",
            "1048576",
            "-o",
            "value",
            "-s",
            "TYPE",
            disk.loopdev.to_str().unwrap(),
        ],
    );
    assert_eq!(found, "ext4", "the filesystem is still there");
}

#[tokio::test]
async fn stage_refuses_disk_with_only_a_backup_gpt() {
    if !require_root("stage_refuses_disk_with_only_a_backup_gpt") {
        return;
    }
    let size = 64 * MIB;
    let disk = Disk::new(size);
    run_ok(
        "sgdisk",
        &["-o", "-n", "1:2048:0", disk.loopdev.to_str().unwrap()],
    );
    // Wipe the protective MBR and the primary GPT (first 34 sectors).
    disk.write_at(0, &[0u8; 34 * 512]);
    assert!(disk.first_mib().iter().all(|&b| b == 0));
    assert_eq!(disk.blkid_type(), None);
    let err_offset = size - 33 * 512;
    let svc = NodeService::new(disk.config());
    let before = disk.checksum();
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
    let msg = err.message();
    let at: u64 = msg
        .split("non-zero data at byte offset ")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{msg:?} names no offset"));
    assert!(
        at >= err_offset - 512 && at < size,
        "offset {at} is not in the backup GPT"
    );
    assert!(disk.checksum() == before, "device was modified");
}

#[tokio::test]
async fn bad_mount_flags_are_invalid_argument() {
    if !require_root("bad_mount_flags_are_invalid_argument") {
        return;
    }
    let disk = Disk::new(64 * MIB);
    let svc = NodeService::new(disk.config());
    let staging = disk.path("staging");
    let mut cap = mount_cap("ext4", Mode::SingleNodeWriter);
    if let Some(csi::volume_capability::AccessType::Mount(m)) = cap.access_type.as_mut() {
        m.mount_flags = vec!["noatime".into(), "no_such_option=1".into()];
    }
    let err = stage(&svc, stage_request(&disk, &staging, cap))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message()
            .contains("volume_capability.mount.mount_flags")
            && err.message().contains("no_such_option=1")
            && !err.message().contains("noatime"),
        "{err:?}"
    );
    assert!(!is_mountpoint(&staging), "a trial mount was left behind");
}

#[tokio::test]
async fn xfs_below_its_minimum_size_is_refused_up_front() {
    if !require_root("xfs_below_its_minimum_size_is_refused_up_front") {
        return;
    }
    let disk = Disk::new(200 * MIB);
    let svc = NodeService::new(disk.config());
    let staging = disk.path("staging");
    let before = disk.checksum();
    let err = stage(
        &svc,
        stage_request(&disk, &staging, mount_cap("xfs", Mode::SingleNodeWriter)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(err.message().contains("300 MiB"), "{err:?}");
    assert!(
        err.message().len() < 400,
        "error too long: {}",
        err.message().len()
    );
    assert!(disk.checksum() == before);
}

/// A disk larger than its filesystem (a volume restored or cloned at a larger
/// size) is grown to the disk at stage, data kept. xfs only: growing a mounted
/// ext4 needs CAP_SYS_RESOURCE, which test hosts may withhold.
#[tokio::test]
async fn stage_grows_a_filesystem_smaller_than_its_disk() {
    if !require_root("stage_grows_a_filesystem_smaller_than_its_disk") {
        return;
    }
    let disk = Disk::new(300 * MIB);
    let svc = NodeService::new(disk.config());
    let staging = disk.path("staging");
    let req = || stage_request(&disk, &staging, mount_cap("xfs", Mode::SingleNodeWriter));
    stage(&svc, req()).await.unwrap();
    std::fs::write(staging.join("keep.txt"), b"precious").unwrap();
    let small = nix::sys::statvfs::statvfs(&staging).unwrap();
    let small = small.blocks() as u64 * small.fragment_size() as u64;
    unstage(&svc, &disk, &staging).await.unwrap();
    disk.grow(600 * MIB);
    stage(&svc, req()).await.unwrap();
    let big = nix::sys::statvfs::statvfs(&staging).unwrap();
    let big = big.blocks() as u64 * big.fragment_size() as u64;
    assert!(
        big > small + 250 * MIB,
        "filesystem grown at stage: {small} -> {big} bytes"
    );
    assert_eq!(
        std::fs::read(staging.join("keep.txt")).unwrap(),
        b"precious"
    );
    // Staging again is a no-op, also for the grow.
    stage(&svc, req()).await.unwrap();
    unstage(&svc, &disk, &staging).await.unwrap();
}
