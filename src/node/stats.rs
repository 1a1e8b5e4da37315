//! NodeGetVolumeStats: usage numbers and a health verdict for a published
//! (or staged) volume.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use super::device;
use super::error::NodeError;
use super::mountinfo;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub total: i64,
    pub available: i64,
    pub used: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeStats {
    pub bytes: Option<Usage>,
    /// Absent for raw block volumes, which have no inodes.
    pub inodes: Option<Usage>,
    /// None when healthy, otherwise why not.
    pub abnormal: Option<String>,
}

pub fn stats(volume_path: &Path) -> Result<VolumeStats, NodeError> {
    let meta = match std::fs::metadata(volume_path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(NodeError::PathNotFound(volume_path.to_path_buf()))
        }
        Err(e) => {
            // The path exists (or we could not tell) but cannot be read:
            // report that as a condition rather than failing the call, so
            // the CO learns the volume is unhealthy.
            return Ok(VolumeStats {
                abnormal: Some(format!("cannot stat {}: {e}", volume_path.display())),
                ..Default::default()
            });
        }
    };
    let mount = mountinfo::mount_at(volume_path)?;
    if meta.file_type().is_block_device() {
        let size = device::block_size(volume_path)? as i64;
        let abnormal = mount.is_none().then(|| {
            format!(
                "{} is not a bind mount of the volume's device",
                volume_path.display()
            )
        });
        return Ok(VolumeStats {
            bytes: Some(Usage {
                total: size,
                available: 0,
                used: 0,
            }),
            inodes: None,
            abnormal,
        });
    }
    let Some(mount) = mount else {
        // statvfs would describe whatever filesystem holds the empty
        // directory, which is not this volume; report no numbers.
        return Ok(VolumeStats {
            abnormal: Some(format!(
                "{} is not a mount point; the volume is not mounted",
                volume_path.display()
            )),
            ..Default::default()
        });
    };
    let vfs = match nix::sys::statvfs::statvfs(volume_path) {
        Ok(v) => v,
        // EIO and friends: the mount exists but its filesystem is broken,
        // which is a volume condition, not a failure of this call.
        Err(errno) => {
            return Ok(VolumeStats {
                abnormal: Some(format!("statvfs {} failed: {errno}", volume_path.display())),
                ..Default::default()
            })
        }
    };
    let frsize = vfs.fragment_size() as i64;
    let bytes = Usage {
        total: vfs.blocks() as i64 * frsize,
        available: vfs.blocks_available() as i64 * frsize,
        used: (vfs.blocks() as i64 - vfs.blocks_free() as i64) * frsize,
    };
    let inodes = Usage {
        total: vfs.files() as i64,
        available: vfs.files_available() as i64,
        used: vfs.files() as i64 - vfs.files_free() as i64,
    };
    Ok(VolumeStats {
        bytes: Some(bytes),
        inodes: Some(inodes),
        abnormal: mount_health(&mount),
    })
}

/// Problems visible from the mount table alone.
fn mount_health(mount: &mountinfo::MountEntry) -> Option<String> {
    if mount.fs_forced_readonly() {
        return Some(format!(
            "filesystem on {} has become read-only (usually after I/O or filesystem errors)",
            mount.source
        ));
    }
    let sys = format!("/sys/dev/block/{}:{}", mount.major, mount.minor);
    if mount.source.starts_with("/dev/") && !Path::new(&sys).exists() {
        return Some(format!(
            "the disk behind {} ({}) is gone",
            mount.mount_point.display(),
            mount.source
        ));
    }
    None
}
