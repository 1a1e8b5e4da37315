//! NodeExpandVolume: after the controller grew the disk, make the guest see
//! the new size and grow the filesystem on it.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::cmd;
use super::config::NodeConfig;
use super::crypt;
use super::device;
use super::error::NodeError;
use super::mountinfo::{self, MountEntry};
use super::request::Passphrase;
use crate::volume_id::VolumeId;

const SIZE_POLL: Duration = Duration::from_millis(200);

/// Grows what is at `volume_path` (a mount of the volume or a raw device
/// bind) and returns the disk's size in bytes. Only ever the volume `id`:
/// its disk is found by the WWN derived from the id, and what is at
/// `volume_path` must be that disk or the LUKS mapping opened on it. `required_bytes`
/// (0 = unknown) is the size the controller gave the disk; the guest may
/// need a moment to notice it. `passphrase` is only used for encrypted
/// volumes whose key is not in the kernel keyring.
pub async fn expand(
    cfg: &NodeConfig,
    id: &VolumeId,
    volume_path: &Path,
    staging_path: Option<&Path>,
    required_bytes: u64,
    passphrase: Option<&Passphrase>,
) -> Result<u64, NodeError> {
    let meta = match std::fs::metadata(volume_path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(NodeError::PathNotFound(volume_path.to_path_buf()))
        }
        Err(e) => return Err(NodeError::io(format!("stat {}", volume_path.display()), e)),
    };
    let disk = device::find_by_wwn(
        &cfg.device_dir,
        &cfg.sys_block_dir,
        &id.wwn(),
        cfg.device_wait,
    )
    .await?;
    let (dmaj, dmin) = device::device_number(&disk)?;
    let disk_name = device::kernel_name(dmaj, dmin)?;
    if meta.file_type().is_block_device() {
        // Raw block: the consumer owns the contents; only the size changes.
        let (maj, min) = device::split_dev(meta.rdev());
        ensure_volume_device(cfg, id, volume_path, maj, min, &disk_name)?;
        let (_, disk) = grow_device(cfg, maj, min, required_bytes, passphrase).await?;
        return device::block_size(&disk);
    }
    let mount = writable_mount(volume_path, staging_path)?;
    ensure_volume_device(cfg, id, volume_path, mount.major, mount.minor, &disk_name)?;
    let (data, disk) =
        grow_device(cfg, mount.major, mount.minor, required_bytes, passphrase).await?;
    grow_filesystem(&mount, &data).await?;
    device::block_size(&disk)
}

/// What is at `volume_path` (device major:minor) must be the volume's disk
/// `disk_name`, or the LUKS mapping on it; growing anything else would
/// resize a filesystem that is not this volume's.
fn ensure_volume_device(
    cfg: &NodeConfig,
    id: &VolumeId,
    volume_path: &Path,
    major: u64,
    minor: u64,
    disk_name: &str,
) -> Result<(), NodeError> {
    let name = device::kernel_name(major, minor).unwrap_or_else(|_| format!("{major}:{minor}"));
    if name == disk_name {
        return Ok(());
    }
    if let Some((_, under)) = crypt::mapping_parent(&cfg.sys_block_dir, &name) {
        if under == disk_name {
            return Ok(());
        }
    }
    Err(NodeError::Precondition(format!(
        "{} is backed by {name}, not by the disk of volume {id} ({disk_name}); refusing to grow it",
        volume_path.display()
    )))
}

/// Brings the data device (major:minor) up to the disk's new size and
/// returns (data device, disk). They differ only for encrypted volumes,
/// where the LUKS mapping has to follow the disk.
async fn grow_device(
    cfg: &NodeConfig,
    major: u64,
    minor: u64,
    required_bytes: u64,
    passphrase: Option<&Passphrase>,
) -> Result<(PathBuf, PathBuf), NodeError> {
    let data = device_node(major, minor)?;
    let name = device::kernel_name(major, minor)?;
    match crypt::mapping_parent(&cfg.sys_block_dir, &name) {
        Some((mapping, under)) => {
            let disk = PathBuf::from("/dev").join(under);
            refresh_size(cfg, &disk, required_bytes).await?;
            crypt::resize(&mapping, passphrase).await?;
            Ok((data, disk))
        }
        None => {
            refresh_size(cfg, &data, required_bytes).await?;
            Ok((data.clone(), data))
        }
    }
}

/// Picks the mount to grow through. xfs_growfs needs a writable mount, and
/// a read-only publication may sit at volume_path, so the staging mount is
/// preferred when it is writable and holds the same filesystem.
fn writable_mount(
    volume_path: &Path,
    staging_path: Option<&Path>,
) -> Result<MountEntry, NodeError> {
    let published = mountinfo::mount_at(volume_path)?.ok_or_else(|| {
        NodeError::Precondition(format!(
            "{} is not a mount point; is the volume published?",
            volume_path.display()
        ))
    })?;
    if let Some(staging) = staging_path {
        let same_fs = |m: &MountEntry| (m.major, m.minor) == (published.major, published.minor);
        if let Some(m) = mountinfo::mount_at(staging)?.filter(|m| !m.is_readonly() && same_fs(m)) {
            return Ok(m);
        }
    }
    Ok(published)
}

fn device_node(major: u64, minor: u64) -> Result<PathBuf, NodeError> {
    let name = device::kernel_name(major, minor)?;
    let node = PathBuf::from("/dev").join(&name);
    device::ensure_block_device(&node)?;
    Ok(node)
}

/// Asks the SCSI layer to re-read the disk's capacity (QEMU does not always
/// signal a resize), then waits for the kernel to report the new size.
async fn refresh_size(cfg: &NodeConfig, dev: &Path, required_bytes: u64) -> Result<(), NodeError> {
    let name = dev.file_name().expect("device node has a name");
    let rescan = cfg.sys_block_dir.join(name).join("device").join("rescan");
    if rescan.exists() {
        std::fs::write(&rescan, "1")
            .map_err(|e| NodeError::io(format!("writing {}", rescan.display()), e))?;
    }
    let deadline = Instant::now() + cfg.device_wait;
    loop {
        let size = device::block_size(dev)?;
        if size >= required_bytes {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(NodeError::Precondition(format!(
                "{} is {size} bytes, still below the requested {required_bytes} after {:?}",
                dev.display(),
                cfg.device_wait
            )));
        }
        tokio::time::sleep(SIZE_POLL).await;
    }
}

/// Grows the filesystem mounted at `mount` to the size of `dev`. A no-op
/// (success) when it already fills the device.
pub(crate) async fn grow_filesystem(mount: &MountEntry, dev: &Path) -> Result<(), NodeError> {
    match mount.fs_type.as_str() {
        "ext4" | "ext3" | "ext2" => {
            let out = cmd::run("resize2fs", &[&dev.to_string_lossy()]).await?;
            if !out.success() {
                let err = out.into_error("resize2fs");
                // The kernel allows online ext4 growth only to holders of
                // CAP_SYS_RESOURCE; say so, since the tool does not.
                let hint = if err.to_string().contains("Permission denied") {
                    " (the node plugin needs CAP_SYS_RESOURCE to grow a mounted ext4 filesystem)"
                } else {
                    ""
                };
                return Err(NodeError::Precondition(format!(
                    "online grow of the ext4 filesystem on {} failed{hint}: {err}",
                    dev.display()
                )));
            }
        }
        "xfs" => {
            cmd::run_ok("xfs_growfs", &[&mount.mount_point.to_string_lossy()]).await?;
        }
        other => {
            return Err(NodeError::Precondition(format!(
                "cannot grow a {other} filesystem at {}",
                mount.mount_point.display()
            )))
        }
    }
    tracing::info!(device = %dev.display(), fs = %mount.fs_type, "filesystem grown");
    Ok(())
}
