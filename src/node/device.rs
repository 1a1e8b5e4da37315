//! Locating the disk that the controller attached, by its WWN only.
//!
//! Size or attach order would be guesses; the WWN is the one identity the
//! controller chose for this volume, so it is the only thing trusted here.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::error::NodeError;

/// How often the device directory is re-checked while waiting for a link.
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Checks the controller's `0x5<15 hex>` form and returns it lowercased,
/// matching how udev names `wwn-` links.
pub fn normalize_wwn(wwn: &str) -> Result<String, NodeError> {
    let lower = wwn.trim().to_ascii_lowercase();
    let hex = lower.strip_prefix("0x").unwrap_or("");
    let ok = hex.len() == 16 && hex.starts_with('5') && hex.bytes().all(|b| b.is_ascii_hexdigit());
    if !ok {
        return Err(NodeError::invalid(format!(
            "publish_context[\"wwn\"] = {wwn:?} is not of the form 0x5 followed by 15 hex digits"
        )));
    }
    Ok(lower)
}

/// Path of the by-id link for a normalized wwn.
pub fn wwn_link(device_dir: &Path, wwn: &str) -> PathBuf {
    device_dir.join(format!("wwn-{wwn}"))
}

/// Waits up to `wait` for the wwn link, then resolves and verifies it.
pub async fn find_by_wwn(
    device_dir: &Path,
    sys_block_dir: &Path,
    wwn: &str,
    wait: Duration,
) -> Result<PathBuf, NodeError> {
    let wwn = normalize_wwn(wwn)?;
    let link = wwn_link(device_dir, &wwn);
    let deadline = Instant::now() + wait;
    let device = loop {
        match std::fs::canonicalize(&link) {
            Ok(p) => break p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if Instant::now() >= deadline {
                    return Err(NodeError::DeviceNotFound {
                        wwn,
                        link,
                        waited: wait,
                    });
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            }
            Err(e) => return Err(NodeError::io(format!("resolving {}", link.display()), e)),
        }
    };
    ensure_block_device(&device)?;
    verify_wwid(sys_block_dir, &device, &wwn)?;
    Ok(device)
}

pub fn ensure_block_device(path: &Path) -> Result<(), NodeError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| NodeError::io(format!("stat {}", path.display()), e))?;
    if !meta.file_type().is_block_device() {
        return Err(NodeError::NotBlockDevice {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// When the kernel exposes the disk's WWID, it must agree with the link
/// name: a link left over from a detached disk may now point at another
/// volume, and formatting or mounting that would be data loss or a leak.
/// Devices without a wwid file (loop devices, some virtio disks) have
/// nothing to compare and are accepted on the link alone.
fn verify_wwid(sys_block_dir: &Path, device: &Path, wwn: &str) -> Result<(), NodeError> {
    let Some(name) = device.file_name() else {
        return Err(NodeError::NotBlockDevice {
            path: device.to_path_buf(),
        });
    };
    let wwid_file = sys_block_dir.join(name).join("device").join("wwid");
    let found = match std::fs::read_to_string(&wwid_file) {
        Ok(s) => s.trim().to_ascii_lowercase(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(NodeError::io(format!("reading {}", wwid_file.display()), e)),
    };
    let expected = format!("naa.{}", &wwn[2..]);
    if found != expected {
        return Err(NodeError::WrongDisk {
            device: device.to_path_buf(),
            wwn: wwn.to_string(),
            found,
        });
    }
    Ok(())
}

// BLKGETSIZE64 is `_IOR(0x12, 114, u64)`: the kernel's "size of block device in bytes".
nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);

/// Size in bytes of a block device (or of a bind mount of one).
pub fn block_size(path: &Path) -> Result<u64, NodeError> {
    let file =
        File::open(path).map_err(|e| NodeError::io(format!("opening {}", path.display()), e))?;
    let mut size: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes exactly one u64 through the pointer, which
    // points at a live local; the fd stays open for the call's duration.
    unsafe { blkgetsize64(file.as_raw_fd(), &mut size) }.map_err(|errno| NodeError::Sys {
        op: "BLKGETSIZE64",
        path: path.to_path_buf(),
        errno,
    })?;
    Ok(size)
}

/// Device number split into (major, minor) as shown in mountinfo.
pub fn split_dev(dev: u64) -> (u64, u64) {
    (nix::sys::stat::major(dev), nix::sys::stat::minor(dev))
}

/// (major, minor) of the block device node at `path`.
pub fn device_number(path: &Path) -> Result<(u64, u64), NodeError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| NodeError::io(format!("stat {}", path.display()), e))?;
    if !meta.file_type().is_block_device() {
        return Err(NodeError::NotBlockDevice {
            path: path.to_path_buf(),
        });
    }
    Ok(split_dev(meta.rdev()))
}

/// The kernel name (`sdb`, `loop3`) of the block device with this number.
pub fn kernel_name(major: u64, minor: u64) -> Result<String, NodeError> {
    let link = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
    let target = std::fs::read_link(&link)
        .map_err(|e| NodeError::io(format!("reading {}", link.display()), e))?;
    target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| NodeError::Precondition(format!("{} has no device name", link.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wwn_forms() {
        assert_eq!(
            normalize_wwn("0x5000C500AABBCCDD").unwrap(),
            "0x5000c500aabbccdd"
        );
        assert!(normalize_wwn("").is_err());
        assert!(normalize_wwn("0x6000c500aabbccdd").is_err());
        assert!(normalize_wwn("0x5000c500aabbccd").is_err());
        assert!(normalize_wwn("5000c500aabbccdd").is_err());
        assert!(normalize_wwn("0x5000c500aabbccdg").is_err());
    }

    #[test]
    fn dev_split() {
        assert_eq!(split_dev(libc::makedev(7, 3)), (7, 3));
        assert_eq!(split_dev(libc::makedev(259, 1048577)), (259, 1048577));
    }
}
