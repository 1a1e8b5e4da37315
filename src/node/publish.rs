//! NodePublishVolume / NodeUnpublishVolume: staging mount (or raw device)
//! to the pod's target path.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::config::NodeConfig;
use super::crypt;
use super::device;
use super::error::NodeError;
use super::mount;
use super::mountinfo::{self, MountEntry};
use super::request::{Access, PublishRequest, Sharing};

pub async fn publish(cfg: &NodeConfig, req: &PublishRequest) -> Result<(), NodeError> {
    // Reader-only volumes are mounted read-only whatever the request says.
    let readonly = req.readonly || req.capability.sharing == Sharing::ReadOnly;
    let single = req.capability.sharing == Sharing::SingleWriter;
    let device = data_device(cfg, req).await?;
    match &req.capability.access {
        Access::Mount { .. } => publish_filesystem(
            &device,
            &req.staging_path,
            &req.target_path,
            readonly,
            single,
        ),
        Access::Block => publish_block(&device, &req.target_path, readonly, single),
    }
}

/// The block device holding the volume's data: the disk itself, or the
/// LUKS mapping that NodeStageVolume opened on it.
async fn data_device(cfg: &NodeConfig, req: &PublishRequest) -> Result<PathBuf, NodeError> {
    if req.encrypted {
        let mapped = crypt::mapping_path(&crypt::mapping_name(&req.volume_id));
        if !mapped.exists() {
            return Err(NodeError::Precondition(format!(
                "encrypted volume {} is not open on this node; NodeStageVolume must succeed first",
                req.volume_id
            )));
        }
        return Ok(mapped);
    }
    device::find_by_wwn(
        &cfg.device_dir,
        &cfg.sys_block_dir,
        &req.wwn,
        cfg.device_wait,
    )
    .await
}

fn io_err(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> NodeError {
    let ctx = format!("{what} {}", path.display());
    move |e| NodeError::io(ctx, e)
}

fn canonical_or_same(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Bind-mounts the staged filesystem of `device` onto `target`.
pub fn publish_filesystem(
    device: &Path,
    staging: &Path,
    target: &Path,
    readonly: bool,
    single_writer: bool,
) -> Result<(), NodeError> {
    let staged = mountinfo::mount_at(staging)?.ok_or_else(|| {
        NodeError::Precondition(format!(
            "volume is not staged: {} is not a mount point",
            staging.display()
        ))
    })?;
    // Publishing whatever happens to be mounted at the staging path could
    // hand a pod another volume's data.
    if (staged.major, staged.minor) != device::device_number(device)? {
        return Err(NodeError::Precondition(format!(
            "{} holds {}, not this volume's device {}",
            staging.display(),
            staged.source,
            device.display()
        )));
    }
    if let Some(existing) = mountinfo::mount_at(target)? {
        let same = (existing.major, existing.minor) == (staged.major, staged.minor)
            && existing.root == staged.root;
        return check_republish(same, &existing, target, readonly);
    }
    if single_writer {
        let others: Vec<PathBuf> = mountinfo::read()?
            .into_iter()
            .filter(|m| (m.major, m.minor) == (staged.major, staged.minor))
            .map(|m| m.mount_point)
            .filter(|p| *p != staged.mount_point)
            .collect();
        refuse_second_writer(&others)?;
    }
    std::fs::create_dir_all(target).map_err(io_err("creating", target))?;
    mount::bind(staging, target, readonly)?;
    tracing::info!(staging = %staging.display(), target = %target.display(), readonly, "published");
    Ok(())
}

/// Bind-mounts the device node itself onto a file at `target`.
///
/// Note that a read-only bind mount does not stop writes through a device
/// node (the kernel checks read-only mounts only for regular files and
/// directories); `readonly` here marks the mount, the kubelet additionally
/// exposes the device read-only to the container.
pub fn publish_block(
    device: &Path,
    target: &Path,
    readonly: bool,
    single_writer: bool,
) -> Result<(), NodeError> {
    let dev_meta = std::fs::metadata(device).map_err(io_err("stat", device))?;
    if let Some(existing) = mountinfo::mount_at(target)? {
        let same = is_node_of(target, dev_meta.rdev());
        return check_republish(same, &existing, target, readonly);
    }
    if single_writer {
        refuse_second_writer(&block_publications(
            device,
            dev_meta.dev(),
            dev_meta.rdev(),
        )?)?;
    }
    prepare_target_file(target)?;
    mount::bind(device, target, readonly)?;
    tracing::info!(device = %device.display(), target = %target.display(), readonly, "published block device");
    Ok(())
}

/// Same source and same read-only setting means the request was already
/// done; otherwise the target is taken by something incompatible.
fn check_republish(
    same_source: bool,
    existing: &MountEntry,
    target: &Path,
    readonly: bool,
) -> Result<(), NodeError> {
    if !same_source {
        return Err(NodeError::Incompatible(format!(
            "{} is already a mount point of something else ({})",
            target.display(),
            existing.source
        )));
    }
    if existing.is_readonly() != readonly {
        return Err(NodeError::Incompatible(format!(
            "volume is already published at {} with readonly={}",
            target.display(),
            existing.is_readonly()
        )));
    }
    Ok(())
}

fn refuse_second_writer(others: &[PathBuf]) -> Result<(), NodeError> {
    if let Some(other) = others.first() {
        return Err(NodeError::Precondition(format!(
            "access mode SINGLE_NODE_SINGLE_WRITER: volume is already published at {}",
            other.display()
        )));
    }
    Ok(())
}

fn is_node_of(path: &Path, rdev: u64) -> bool {
    std::fs::metadata(path)
        .map(|m| m.file_type().is_block_device() && m.rdev() == rdev)
        .unwrap_or(false)
}

/// Mount points where the device node with `rdev` is bind-mounted. Only
/// mounts of the filesystem holding the node (`node_fs_dev`, usually
/// devtmpfs) are stat'ed, so unrelated and possibly hung mounts are never
/// touched.
fn block_publications(
    device: &Path,
    node_fs_dev: u64,
    rdev: u64,
) -> Result<Vec<PathBuf>, NodeError> {
    let (maj, min) = device::split_dev(node_fs_dev);
    let device = canonical_or_same(device);
    Ok(mountinfo::read()?
        .into_iter()
        .filter(|m| (m.major, m.minor) == (maj, min) && m.mount_point != device)
        .map(|m| m.mount_point)
        .filter(|p| is_node_of(p, rdev))
        .collect())
}

/// A block target must be a file to bind a device node onto. An empty
/// directory (which some COs pre-create) is replaced by one, and an empty
/// regular file (what an earlier publish made) is reused. Anything else is
/// not this driver's to cover with a device: a non-empty file would
/// vanish under the bind mount, and unpublish could later delete it.
fn prepare_target_file(target: &Path) -> Result<(), NodeError> {
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(io_err("creating", parent))?;
    }
    match std::fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => std::fs::remove_dir(target).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOTEMPTY) {
                NodeError::Precondition(format!(
                    "{} is a non-empty directory; refusing to publish a block volume there",
                    target.display()
                ))
            } else {
                io_err("replacing directory", target)(e)
            }
        })?,
        Ok(m) if m.is_file() && m.len() == 0 => return Ok(()),
        Ok(m) if m.is_file() => {
            return Err(NodeError::Precondition(format!(
                "{} is an existing non-empty regular file ({} bytes); refusing to bind a device over it",
                target.display(),
                m.len()
            )))
        }
        Ok(_) => {
            return Err(NodeError::Precondition(format!(
                "{} exists and is neither a directory nor an empty regular file; refusing to use it",
                target.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("stat", target)(e)),
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)
        .map_err(io_err("creating", target))?;
    Ok(())
}

/// Unmounts and removes the target. Removes only what this driver makes
/// there: an empty directory (the mount point) or an empty regular file
/// (the block bind target). Never removes recursively or deletes a file
/// with contents: if an unmount silently failed, or the path names
/// something else, the data must not be deleted with it.
pub fn unpublish(target: &Path) -> Result<(), NodeError> {
    let removed = mount::unmount_all(target)?;
    match std::fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() => std::fs::remove_dir(target).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOTEMPTY) {
                NodeError::Precondition(format!(
                    "{} is not mounted but not empty; refusing to delete what is in it",
                    target.display()
                ))
            } else {
                io_err("removing", target)(e)
            }
        })?,
        Ok(m) if m.is_file() && m.len() == 0 => {
            std::fs::remove_file(target).map_err(io_err("removing", target))?
        }
        Ok(m) if m.is_file() => {
            return Err(NodeError::Precondition(format!(
                "{} is a non-empty regular file ({} bytes), not a publication of this driver; refusing to delete it",
                target.display(),
                m.len()
            )))
        }
        Ok(_) => {
            return Err(NodeError::Precondition(format!(
                "{} is neither a directory nor an empty regular file; refusing to delete it",
                target.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("stat", target)(e)),
    }
    tracing::info!(target = %target.display(), removed, "unpublished");
    Ok(())
}
