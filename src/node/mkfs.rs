//! Creating a filesystem on a device already verified blank by `probe`.

use std::fmt;
use std::path::Path;

use super::cmd;
use super::device;
use super::error::NodeError;
use crate::contract::FormatOptions;

/// The smallest device current xfsprogs (5.19 and later) will format:
/// "Filesystem must be larger than 300MB" (it means MiB).
pub const XFS_MIN_BYTES: u64 = 300 << 20;

/// Filesystems this driver formats and mounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    Ext4,
    Xfs,
}

impl FsType {
    /// Used when the capability leaves fs_type empty: the contract's
    /// [`crate::contract::DEFAULT_FS_TYPE`], which the controller assumes too.
    pub fn default_type() -> FsType {
        FsType::parse(crate::contract::DEFAULT_FS_TYPE)
            .expect("the contract names a supported type")
    }

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

/// Formats `device`, with `format`'s block and inode sizes where set.
/// Callers must have established that it is blank. Errors carry only the
/// first lines of the tool's output.
pub async fn mkfs(device: &Path, fs: FsType, format: &FormatOptions) -> Result<(), NodeError> {
    let dev = device.to_string_lossy();
    if fs == FsType::Xfs {
        let size = device::block_size(device)?;
        if size < XFS_MIN_BYTES {
            return Err(NodeError::OutOfRange(format!(
                "{} is {size} bytes ({} MiB); xfs needs at least {XFS_MIN_BYTES} bytes (300 MiB): \
                 use a larger volume or ext4",
                device.display(),
                size >> 20
            )));
        }
    }
    let (tool, mut args): (&str, Vec<String>) = match fs {
        // -F: the caller has already proven the device blank, and mke2fs
        // would otherwise stop to ask about whole-disk devices on some
        // versions. -m 0: root-reserved blocks only matter for system
        // disks; on a pod's volume they would just hide 5% of what the
        // user paid for. nodiscard: a fresh disk has nothing to discard,
        // and discarding terabytes through the virtual SCSI layer can take
        // longer than the CO waits for NodeStageVolume.
        FsType::Ext4 => ("mkfs.ext4", strings(&["-F", "-m", "0", "-E", "nodiscard"])),
        // No -f: mkfs.xfs then refuses to overwrite any signature it finds,
        // a second safety net behind our own blank check. -K: no discard,
        // for the same reason as above.
        FsType::Xfs => ("mkfs.xfs", strings(&["-K"])),
    };
    args.extend(size_args(fs, format));
    args.push(dev.to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = cmd::run(tool, &args).await?;
    if !out.success() {
        return Err(out.into_short_error(tool));
    }
    Ok(())
}

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|a| a.to_string()).collect()
}

/// The block- and inode-size arguments in each tool's spelling.
fn size_args(fs: FsType, format: &FormatOptions) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(b) = format.block_size {
        out.push("-b".to_string());
        out.push(match fs {
            FsType::Ext4 => b.to_string(),
            FsType::Xfs => format!("size={b}"),
        });
    }
    if let Some(i) = format.inode_size {
        match fs {
            FsType::Ext4 => out.extend(["-I".to_string(), i.to_string()]),
            FsType::Xfs => out.extend(["-i".to_string(), format!("size={i}")]),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly_the_contract_fs_types() {
        for name in crate::contract::FS_TYPES {
            assert_eq!(FsType::parse(name).map(FsType::as_str), Some(*name));
        }
        assert_eq!(
            FsType::default_type().as_str(),
            crate::contract::DEFAULT_FS_TYPE
        );
        assert!(FsType::parse("btrfs").is_none());
    }

    #[test]
    fn size_arguments_in_each_tools_spelling() {
        let f = FormatOptions {
            block_size: Some(2048),
            inode_size: Some(512),
        };
        assert_eq!(size_args(FsType::Ext4, &f), ["-b", "2048", "-I", "512"]);
        assert_eq!(
            size_args(FsType::Xfs, &f),
            ["-b", "size=2048", "-i", "size=512"]
        );
        assert!(size_args(FsType::Xfs, &FormatOptions::default()).is_empty());
    }
}
