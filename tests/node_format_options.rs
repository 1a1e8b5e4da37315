//! The StorageClass `blockSize` / `inodeSize` reach mkfs: NodeStageVolume on
//! real loop devices, the made filesystem read back with the filesystem's
//! own tools, and sizes mkfs would refuse stopped before it runs.

mod node_support;

use std::collections::HashMap;

use node_support::*;
use proxmox_csi::csi;
use proxmox_csi::csi::node_server::Node;
use proxmox_csi::csi::volume_capability::access_mode::Mode;
use proxmox_csi::node::NodeService;
use tonic::{Code, Request};

fn with_sizes(
    disk: &Disk,
    staging: &std::path::Path,
    fs: &str,
    block: Option<u32>,
    inode: Option<u32>,
) -> csi::NodeStageVolumeRequest {
    let mut ctx = HashMap::new();
    if let Some(b) = block {
        ctx.insert("blockSize".to_string(), b.to_string());
    }
    if let Some(i) = inode {
        ctx.insert("inodeSize".to_string(), i.to_string());
    }
    csi::NodeStageVolumeRequest {
        volume_context: ctx,
        ..stage_request(disk, staging, mount_cap(fs, Mode::SingleNodeWriter))
    }
}

fn tool_output(cmd: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The value after `key:` on the first line of `text` that starts with it.
fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|rest| rest.strip_prefix(':'))
        .unwrap_or_else(|| panic!("{key} not in\n{text}"))
        .trim()
}

#[tokio::test]
async fn ext4_gets_the_asked_block_and_inode_size() {
    if !require_root("ext4_gets_the_asked_block_and_inode_size") {
        return;
    }
    let disk = Disk::new(64 * MIB);
    let svc = NodeService::new(disk.config());
    let staging = disk.path("staging");
    svc.node_stage_volume(Request::new(with_sizes(
        &disk,
        &staging,
        "ext4",
        Some(2048),
        Some(512),
    )))
    .await
    .unwrap();
    let sb = tool_output("tune2fs", &["-l", &disk.loopdev.to_string_lossy()]);
    assert_eq!(field(&sb, "Block size"), "2048");
    assert_eq!(field(&sb, "Inode size"), "512");
}

#[tokio::test]
async fn xfs_gets_the_asked_block_and_inode_size() {
    if !require_root("xfs_gets_the_asked_block_and_inode_size") {
        return;
    }
    let disk = Disk::new(300 * MIB);
    let svc = NodeService::new(disk.config());
    let staging = disk.path("staging");
    svc.node_stage_volume(Request::new(with_sizes(
        &disk,
        &staging,
        "xfs",
        Some(2048),
        Some(1024),
    )))
    .await
    .unwrap();
    let info = tool_output("xfs_info", &[&staging.to_string_lossy()]);
    // xfs_info: "meta-data=... isize=1024 ..." and "data = bsize=2048 ...".
    assert!(info.contains("isize=1024"), "{info}");
    assert!(
        info.lines()
            .any(|l| l.starts_with("data") && l.contains("bsize=2048")),
        "{info}"
    );
}

#[tokio::test]
async fn sizes_mkfs_refuses_fail_before_anything_is_written() {
    if !require_root("sizes_mkfs_refuses_fail_before_anything_is_written") {
        return;
    }
    let disk = Disk::new(300 * MIB);
    let svc = NodeService::new(disk.config());
    let staging = disk.path("staging");
    for (fs, block, inode, field) in [
        // xfs with checksums needs 512-byte inodes at least.
        ("xfs", None, Some(256), "volume_context.inodeSize"),
        ("ext4", Some(1024), Some(2048), "volume_context.inodeSize"),
        ("ext4", Some(8192), None, "volume_context.blockSize"),
        ("xfs", Some(3000), None, "volume_context.blockSize"),
    ] {
        let e = svc
            .node_stage_volume(Request::new(with_sizes(&disk, &staging, fs, block, inode)))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{fs} {block:?} {inode:?}");
        assert!(e.message().contains(field), "{}", e.message());
        assert_eq!(disk.blkid_type(), None, "nothing formatted");
        assert!(!is_mountpoint(&staging));
    }
    // The same numbers are fine for block access: nothing is formatted.
    let block_req = csi::NodeStageVolumeRequest {
        volume_capability: Some(block_cap(Mode::SingleNodeWriter)),
        ..with_sizes(&disk, &staging, "xfs", None, Some(256))
    };
    svc.node_stage_volume(Request::new(block_req))
        .await
        .unwrap();
    assert_eq!(disk.blkid_type(), None);
}

#[tokio::test]
async fn an_existing_filesystem_is_kept_whatever_the_sizes_say() {
    if !require_root("an_existing_filesystem_is_kept_whatever_the_sizes_say") {
        return;
    }
    let disk = Disk::new(64 * MIB);
    disk.mkfs("mkfs.ext4");
    let dev = disk.loopdev.to_string_lossy().into_owned();
    let before = tool_output("blkid", &["-o", "value", "-s", "UUID", &dev]);
    let sb = tool_output("tune2fs", &["-l", &dev]);
    let block_before = field(&sb, "Block size").to_string();
    // Ask for something other than what is there.
    let asked = if block_before == "1024" { 2048 } else { 1024 };
    let svc = NodeService::new(disk.config());
    let staging = disk.path("staging");
    svc.node_stage_volume(Request::new(with_sizes(
        &disk,
        &staging,
        "ext4",
        Some(asked),
        None,
    )))
    .await
    .unwrap();
    let after = tool_output("blkid", &["-o", "value", "-s", "UUID", &dev]);
    assert_eq!(before, after, "the filesystem was not remade");
    let sb = tool_output("tune2fs", &["-l", &dev]);
    assert_eq!(field(&sb, "Block size"), block_before);
}
