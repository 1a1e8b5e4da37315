//! The controller ↔ node contract: every key and value one side writes and
//! the other reads. This module is the one place both sides read them from,
//! so a rename cannot silently break the hand-over between
//! ControllerPublishVolume and NodeStageVolume.

/// publish_context key: the WWN (`0x5` + 15 hex digits) the disk is
/// hot-plugged with. Derived from the volume id (`VolumeId::wwn`), so the
/// node can check it instead of trusting it.
pub const PUBLISH_CONTEXT_WWN: &str = "wwn";
/// publish_context key: the worker VM's bus slot (`scsiN`), informational.
pub const PUBLISH_CONTEXT_BUS: &str = "bus";
/// volume_context key asking for LUKS encryption on the node (`"true"`).
pub const VOLUME_CONTEXT_ENCRYPTED: &str = "encrypted";
/// Node-stage secret key holding the LUKS passphrase.
pub const SECRET_ENCRYPTION_PASSPHRASE: &str = "encryptionPassphrase";
/// Filesystems the node formats and mounts (`csi.storage.k8s.io/fstype`).
pub const FS_TYPES: &[&str] = &["ext4", "xfs"];
/// Used when a mount capability leaves fs_type empty.
pub const DEFAULT_FS_TYPE: &str = "ext4";

/// volume_context keys (and the StorageClass parameters of the same name):
/// the block and inode size, in bytes, mkfs gives a volume's filesystem.
/// They only matter when the node formats a blank disk; a filesystem that
/// exists is never changed to match them.
pub const VOLUME_CONTEXT_BLOCK_SIZE: &str = "blockSize";
pub const VOLUME_CONTEXT_INODE_SIZE: &str = "inodeSize";

/// Block sizes both filesystems accept and the kernel mounts on every
/// architecture: mkfs.xfs needs 1024 or more with metadata checksums (its
/// default), and neither filesystem mounts blocks larger than the page
/// size, 4096 on x86-64.
const BLOCK_SIZES: &[u32] = &[1024, 2048, 4096];
/// Assumed when only the inode size is given: both mkfs default to 4096
/// for disks of the sizes volumes have.
const DEFAULT_BLOCK_SIZE: u32 = 4096;

/// mkfs options a volume carries; `None` leaves mkfs's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FormatOptions {
    pub block_size: Option<u32>,
    pub inode_size: Option<u32>,
}

impl FormatOptions {
    /// Reads both keys from `map` (StorageClass parameters or a
    /// volume_context); `field` names the map in errors.
    pub fn parse(
        map: &std::collections::HashMap<String, String>,
        field: &str,
    ) -> Result<FormatOptions, String> {
        let get = |key: &str| -> Result<Option<u32>, String> {
            let Some(v) = map.get(key).map(|v| v.trim()) else {
                return Ok(None);
            };
            if v.is_empty() {
                return Ok(None);
            }
            v.parse::<u32>()
                .ok()
                .filter(|n| n.is_power_of_two())
                .map(Some)
                .ok_or_else(|| {
                    format!("{field}.{key}: {v:?} is not a power of two in bytes (e.g. 4096)")
                })
        };
        Ok(FormatOptions {
            block_size: get(VOLUME_CONTEXT_BLOCK_SIZE)?,
            inode_size: get(VOLUME_CONTEXT_INODE_SIZE)?,
        })
    }

    /// Whether mkfs for `fs` (one of [`FS_TYPES`]) can make, and the kernel
    /// mount, a filesystem with these sizes. The limits are mke2fs's and
    /// mkfs.xfs's own: an ext4 inode is 128 bytes up to the block size; an
    /// xfs inode with metadata checksums is 512 to 2048 bytes and at most
    /// half a block.
    pub fn check(&self, fs: &str, field: &str) -> Result<(), String> {
        if let Some(b) = self.block_size {
            if !BLOCK_SIZES.contains(&b) {
                return Err(format!(
                    "{field}.{VOLUME_CONTEXT_BLOCK_SIZE}: {b} is not one of 1024, 2048, 4096 \
                     (larger blocks than the 4096-byte page do not mount)"
                ));
            }
        }
        let Some(i) = self.inode_size else {
            return Ok(());
        };
        let block = self.block_size.unwrap_or(DEFAULT_BLOCK_SIZE);
        let (min, max) = match fs {
            "xfs" => (512, (block / 2).min(2048)),
            _ => (128, block),
        };
        if i < min || i > max {
            return Err(format!(
                "{field}.{VOLUME_CONTEXT_INODE_SIZE}: {i} is outside {min}..={max}, \
                 the inode sizes {fs} allows with {block}-byte blocks"
            ));
        }
        Ok(())
    }

    /// Writes the sizes that are set into a volume_context.
    pub fn to_context(self, ctx: &mut std::collections::HashMap<String, String>) {
        if let Some(b) = self.block_size {
            ctx.insert(VOLUME_CONTEXT_BLOCK_SIZE.into(), b.to_string());
        }
        if let Some(i) = self.inode_size {
            ctx.insert(VOLUME_CONTEXT_INODE_SIZE.into(), i.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn opts(b: Option<u32>, i: Option<u32>) -> FormatOptions {
        FormatOptions {
            block_size: b,
            inode_size: i,
        }
    }

    #[test]
    fn format_options_round_trip_through_the_context() {
        let o = opts(Some(2048), Some(512));
        let mut ctx = HashMap::new();
        o.to_context(&mut ctx);
        assert_eq!(FormatOptions::parse(&ctx, "volume_context"), Ok(o));
        assert_eq!(
            FormatOptions::parse(&HashMap::new(), "x"),
            Ok(FormatOptions::default())
        );
        for bad in ["4k", "-1", "3000", "0", "1.5"] {
            let m = HashMap::from([("inodeSize".to_string(), bad.to_string())]);
            let e = FormatOptions::parse(&m, "parameters").unwrap_err();
            assert!(e.starts_with("parameters.inodeSize: "), "{e}");
        }
    }

    /// The limits measured with mke2fs 1.47 and mkfs.xfs 6.1 (node tests
    /// run the tools themselves on these sizes).
    #[test]
    fn format_limits_per_filesystem() {
        let ok = |fs: &str, b, i| opts(b, i).check(fs, "p").is_ok();
        assert!(ok("ext4", Some(1024), Some(128)));
        assert!(ok("ext4", Some(1024), Some(1024)));
        assert!(!ok("ext4", Some(1024), Some(2048)));
        assert!(ok("ext4", None, Some(4096)));
        assert!(!ok("ext4", Some(512), None));
        assert!(!ok("ext4", Some(8192), None));
        assert!(ok("xfs", Some(1024), Some(512)));
        assert!(!ok("xfs", Some(1024), Some(1024)));
        assert!(!ok("xfs", None, Some(256)));
        assert!(ok("xfs", None, Some(2048)));
        assert!(!ok("xfs", None, Some(4096)));
        let e = opts(Some(4096), Some(64))
            .check("ext4", "parameters")
            .unwrap_err();
        assert!(e.starts_with("parameters.inodeSize: 64 "), "{e}");
    }
}
