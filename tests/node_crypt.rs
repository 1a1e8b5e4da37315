//! Encrypted (LUKS) volumes. Opening a LUKS container needs device-mapper;
//! where the host lacks it, the tests check that the node says so and
//! leaves the disk untouched, and print that the open path was skipped. The
//! open/mount round trip always runs inside a real guest kernel: step "luks2:
//! stage, wrong passphrase refused" of tests/qemu_guest.rs (tests/e2e/qemu.sh).

mod node_support;

use std::io::Write;
use std::process::{Command, Stdio};

use node_support::*;
use proxmox_csi::csi;
use proxmox_csi::csi::node_server::Node;
use proxmox_csi::csi::volume_capability::access_mode::Mode;
use proxmox_csi::node::{crypt, NodeService};
use tonic::{Code, Request};

fn encrypted_stage(
    disk: &Disk,
    staging: &std::path::Path,
    pass: Option<&str>,
) -> csi::NodeStageVolumeRequest {
    let mut req = stage_request(disk, staging, mount_cap("ext4", Mode::SingleNodeWriter));
    req.volume_context.insert("encrypted".into(), "true".into());
    if let Some(p) = pass {
        req.secrets.insert("encryptionPassphrase".into(), p.into());
    }
    req
}

fn luks_format(disk: &Disk, pass: &str) {
    // Cheap key derivation keeps the test fast; strength is irrelevant here.
    let mut child = Command::new("cryptsetup")
        .args([
            "luksFormat",
            "--batch-mode",
            "--type",
            "luks2",
            "--pbkdf",
            "pbkdf2",
            "--pbkdf-force-iterations",
            "1000",
            "--key-file=-",
        ])
        .arg(&disk.loopdev)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(pass.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

#[tokio::test]
async fn encrypted_volume_requires_passphrase() {
    let kubelet = tempfile::tempdir().unwrap();
    let mut cfg = proxmox_csi::node::NodeConfig::new("n");
    cfg.kubelet_dir = kubelet.path().to_path_buf();
    let svc = NodeService::new(cfg);
    let id = new_volume_id();
    let disk_less = csi::NodeStageVolumeRequest {
        volume_id: id.to_string(),
        publish_context: [("wwn".to_string(), id.wwn())].into(),
        staging_target_path: kubelet.path().join("x").to_string_lossy().into_owned(),
        volume_capability: Some(mount_cap("ext4", Mode::SingleNodeWriter)),
        volume_context: [("encrypted".to_string(), "true".to_string())].into(),
        ..Default::default()
    };
    let err = svc
        .node_stage_volume(Request::new(disk_less))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("encryptionPassphrase"), "{err:?}");
}

#[tokio::test]
async fn plain_request_refuses_a_luks_disk() {
    if !require_root("plain_request_refuses_a_luks_disk") {
        return;
    }
    let disk = Disk::new(32 * MIB);
    luks_format(&disk, "pw");
    let before = disk.first_mib();
    let svc = NodeService::new(disk.config());
    let staging = disk.path("staging");
    let err = svc
        .node_stage_volume(Request::new(stage_request(
            &disk,
            &staging,
            mount_cap("ext4", Mode::SingleNodeWriter),
        )))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("LUKS"), "{err:?}");
    assert!(disk.first_mib() == before);
}

#[tokio::test]
async fn encrypted_publish_before_stage_is_refused() {
    if !require_root("encrypted_publish_before_stage_is_refused") {
        return;
    }
    let disk = Disk::new(16 * MIB);
    let svc = NodeService::new(disk.config());
    let mut req = publish_request(
        &disk,
        &disk.path("staging"),
        &disk.path("t"),
        block_cap(Mode::SingleNodeWriter),
        false,
    );
    req.volume_context.insert("encrypted".into(), "true".into());
    let err = svc
        .node_publish_volume(Request::new(req))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(!disk.path("t").exists());
}

#[tokio::test]
async fn encrypted_stage_round_trip_or_clear_refusal() {
    if !require_root("encrypted_stage_round_trip_or_clear_refusal") {
        return;
    }
    let disk = Disk::new(64 * MIB);
    let svc = NodeService::new(disk.config());
    let staging = disk.path("staging");
    let unstage = csi::NodeUnstageVolumeRequest {
        volume_id: disk.volume_id.clone(),
        staging_target_path: staging.to_string_lossy().into_owned(),
    };

    if let Err(why) = crypt::device_mapper_available() {
        let before = disk.first_mib();
        let err = svc
            .node_stage_volume(Request::new(encrypted_stage(
                &disk,
                &staging,
                Some("s3cret"),
            )))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains("device-mapper"), "{err:?}");
        assert!(
            disk.first_mib() == before,
            "nothing may be written when the container cannot be opened"
        );
        skip(
            "encrypted open/mount round trip (run in a real guest by tests/e2e/qemu.sh, \
             step \"luks2: stage, wrong passphrase refused\")",
            &why.to_string(),
        );
        return;
    }

    svc.node_stage_volume(Request::new(encrypted_stage(
        &disk,
        &staging,
        Some("s3cret"),
    )))
    .await
    .unwrap();
    assert_eq!(disk.blkid_type().as_deref(), Some("crypto_LUKS"));
    let mapped = crypt::mapping_path(&crypt::mapping_name(&disk.volume_id));
    assert!(mapped.exists());
    std::fs::write(staging.join("secret.txt"), b"inside").unwrap();
    svc.node_unstage_volume(Request::new(unstage.clone()))
        .await
        .unwrap();
    assert!(!mapped.exists(), "unstage closes the mapping");

    let err = svc
        .node_stage_volume(Request::new(encrypted_stage(
            &disk,
            &staging,
            Some("wrong"),
        )))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    svc.node_stage_volume(Request::new(encrypted_stage(
        &disk,
        &staging,
        Some("s3cret"),
    )))
    .await
    .unwrap();
    assert_eq!(
        std::fs::read(staging.join("secret.txt")).unwrap(),
        b"inside"
    );
    svc.node_unstage_volume(Request::new(unstage))
        .await
        .unwrap();
}

#[tokio::test]
async fn luks_format_creates_a_container_the_passphrase_unlocks() {
    if !require_root("luks_format_creates_a_container_the_passphrase_unlocks") {
        return;
    }
    // Formatting needs no device-mapper, so this runs everywhere; the
    // passphrase is checked with --test-passphrase, which does not map.
    let disk = Disk::new(32 * MIB);
    let pass = proxmox_csi::node::request::Passphrase::new("correct horse");
    crypt::format(&disk.loopdev, &pass).await.unwrap();
    assert_eq!(disk.blkid_type().as_deref(), Some("crypto_LUKS"));
    let unlocks = |p: &str| {
        let mut child = Command::new("cryptsetup")
            .args(["open", "--test-passphrase", "--key-file=-"])
            .arg(&disk.loopdev)
            .stdin(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(p.as_bytes()).unwrap();
        child.wait().unwrap().success()
    };
    assert!(unlocks("correct horse"));
    assert!(!unlocks("wrong"));
}
