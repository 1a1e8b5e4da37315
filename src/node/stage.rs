//! NodeStageVolume / NodeUnstageVolume: device to staging mount.

use std::path::Path;

use super::config::NodeConfig;
use super::crypt;
use super::device;
use super::error::NodeError;
use super::mkfs::{self, FsType};
use super::mount;
use super::mountinfo;
use super::probe::{self, Content};
use super::request::{Access, Sharing, StageRequest};
use crate::contract::FormatOptions;

/// Makes the volume available at the staging path. For block access the
/// device is only located (publish bind-mounts it directly); for mount
/// access it is formatted if blank and mounted. Encrypted volumes are
/// opened first and everything after works on the opened mapping.
pub async fn stage(cfg: &NodeConfig, req: &StageRequest) -> Result<(), NodeError> {
    let disk = device::find_by_wwn(
        &cfg.device_dir,
        &cfg.sys_block_dir,
        &req.wwn,
        cfg.device_wait,
    )
    .await?;
    let device = match &req.encryption {
        Some(passphrase) => {
            let name = crypt::mapping_name(&req.volume_id);
            crypt::open(&disk, &name, passphrase, &cfg.sys_block_dir).await?
        }
        None => disk,
    };
    match &req.capability.access {
        Access::Block => Ok(()),
        Access::Mount { fs, flags } => {
            let readonly = req.capability.sharing == Sharing::ReadOnly;
            stage_filesystem(
                &device,
                &req.staging_path,
                *fs,
                &req.format,
                flags,
                readonly,
            )
            .await
        }
    }
}

pub async fn stage_filesystem(
    device: &Path,
    staging: &Path,
    fs: FsType,
    format: &FormatOptions,
    flags: &[String],
    readonly: bool,
) -> Result<(), NodeError> {
    let devno = device::device_number(device)?;
    if let Some(existing) = mountinfo::mount_at(staging)? {
        return check_existing_stage(&existing, devno, staging, fs);
    }
    std::fs::create_dir_all(staging)
        .map_err(|e| NodeError::io(format!("creating {}", staging.display()), e))?;
    prepare_filesystem(device, fs, format).await?;
    let options = mount_options(fs, flags);
    mount::mount_fs(device, staging, fs.as_str(), &options, readonly)?;
    if !readonly {
        // A volume restored from a snapshot (or cloned) at a larger size
        // carries the source's smaller filesystem, and kubelet calls
        // NodeExpandVolume only when a PVC is resized: grow it here. A no-op
        // when the filesystem already fills the disk. On failure the stage is
        // undone, so the retry starts from an unmounted disk.
        if let Err(e) = grow_staged(device, staging).await {
            let _ = mount::unmount_all(staging);
            return Err(e);
        }
    }
    tracing::info!(device = %device.display(), staging = %staging.display(), %fs, "staged");
    Ok(())
}

async fn grow_staged(device: &Path, staging: &Path) -> Result<(), NodeError> {
    let entry = mountinfo::mount_at(staging)?.ok_or_else(|| {
        NodeError::Precondition(format!("{} is not mounted after mount", staging.display()))
    })?;
    super::expand::grow_filesystem(&entry, device).await
}

/// The capability's mount flags plus what the filesystem needs here.
///
/// xfs refuses to mount a second filesystem with the same UUID, which is
/// exactly what a volume restored from a snapshot or cloned from another
/// volume carries; `nouuid` lets the copy and the original be staged on
/// the same node.
pub fn mount_options(fs: FsType, flags: &[String]) -> Vec<String> {
    let mut options = flags.to_vec();
    if fs == FsType::Xfs
        && !options
            .iter()
            .flat_map(|f| f.split(','))
            .any(|o| o == "nouuid")
    {
        options.push("nouuid".to_string());
    }
    options
}

/// A repeated stage is fine if the same disk is already mounted there with
/// the requested filesystem; anything else is a conflict.
fn check_existing_stage(
    existing: &mountinfo::MountEntry,
    devno: (u64, u64),
    staging: &Path,
    fs: FsType,
) -> Result<(), NodeError> {
    if (existing.major, existing.minor) != devno {
        return Err(NodeError::Incompatible(format!(
            "{} is already a mount point of another device ({})",
            staging.display(),
            existing.source
        )));
    }
    if existing.fs_type != fs.as_str() {
        return Err(NodeError::Incompatible(format!(
            "{} is already staged as {}, not {fs}",
            staging.display(),
            existing.fs_type
        )));
    }
    Ok(())
}

/// Ensures `device` holds a filesystem of type `fs`, creating one (with
/// `format`'s sizes) only if the device is verifiably blank.
pub async fn prepare_filesystem(
    device: &Path,
    fs: FsType,
    format: &FormatOptions,
) -> Result<(), NodeError> {
    match probe::probe(device).await? {
        Content::Filesystem(found) if found == fs.as_str() => Ok(()),
        Content::Filesystem(found) => Err(NodeError::FsTypeMismatch {
            device: device.to_path_buf(),
            found,
            wanted: fs.to_string(),
        }),
        Content::Blank => {
            tracing::info!(device = %device.display(), %fs, "formatting blank device");
            mkfs::mkfs(device, fs, format).await?;
            // Trust but verify: mount must only ever see what we created.
            match probe::probe(device).await? {
                Content::Filesystem(found) if found == fs.as_str() => Ok(()),
                other => Err(NodeError::Precondition(format!(
                    "after formatting {} as {fs}, blkid reports {}",
                    device.display(),
                    other.describe()
                ))),
            }
        }
        other => Err(NodeError::NotBlank {
            device: device.to_path_buf(),
            found: other.describe(),
        }),
    }
}

/// Unmounts the staging path and closes the volume's LUKS mapping if one is
/// open. Not mounted (or already gone) is success, so retries after a
/// partial failure converge. The directory itself belongs to the CO and is
/// left in place.
pub async fn unstage(volume_id: &str, staging: &Path) -> Result<(), NodeError> {
    let removed = mount::unmount_all(staging)?;
    crypt::close(&crypt::mapping_name(volume_id)).await?;
    tracing::info!(staging = %staging.display(), removed, "unstaged");
    Ok(())
}
