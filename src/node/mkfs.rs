//! Creating a filesystem on a device already verified blank by `probe`.

use std::fmt;
use std::path::Path;

use super::cmd;
use super::error::NodeError;

/// Filesystems this driver formats and mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    Ext4,
    Xfs,
}

impl FsType {
    /// Used when the capability leaves fs_type empty.
    pub const DEFAULT: FsType = FsType::Ext4;

    pub fn parse(name: &str) -> Option<FsType> {
        match name {
            "ext4" => Some(FsType::Ext4),
            "xfs" => Some(FsType::Xfs),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Xfs => "xfs",
        }
    }
}

impl fmt::Display for FsType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Formats `device`. Callers must have established that it is blank.
pub async fn mkfs(device: &Path, fs: FsType) -> Result<(), NodeError> {
    let dev = device.to_string_lossy();
    match fs {
        // -F: the caller has already proven the device blank, and mke2fs
        // would otherwise stop to ask about whole-disk devices on some
        // versions. -m 0: root-reserved blocks only matter for system
        // disks; on a pod's volume they would just hide 5% of what the
        // user paid for. nodiscard: a fresh disk has nothing to discard,
        // and discarding terabytes through the virtual SCSI layer can take
        // longer than the CO waits for NodeStageVolume.
        FsType::Ext4 => {
            cmd::run_ok("mkfs.ext4", &["-F", "-m", "0", "-E", "nodiscard", &dev]).await?
        }
        // No -f: mkfs.xfs then refuses to overwrite any signature it finds,
        // a second safety net behind our own blank check. -K: no discard,
        // for the same reason as above.
        FsType::Xfs => cmd::run_ok("mkfs.xfs", &["-K", &dev]).await?,
    };
    Ok(())
}
