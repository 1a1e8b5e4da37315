//! Mount syscalls: filesystem mounts, bind mounts, read-only remounts and
//! unmounts, all idempotent-friendly.

use std::path::Path;

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags};

use super::error::NodeError;
use super::mountinfo;

/// Splits CSI mount_flags into kernel flags and the filesystem-specific
/// option string, since mount(2) takes them separately.
pub fn split_flags(flags: &[String]) -> (MsFlags, String) {
    let mut ms = MsFlags::empty();
    let mut data = Vec::new();
    for flag in flags
        .iter()
        .flat_map(|f| f.split(','))
        .map(str::trim)
        .filter(|f| !f.is_empty())
    {
        match flag {
            "ro" => ms |= MsFlags::MS_RDONLY,
            "rw" => ms &= !MsFlags::MS_RDONLY,
            "nosuid" => ms |= MsFlags::MS_NOSUID,
            "nodev" => ms |= MsFlags::MS_NODEV,
            "noexec" => ms |= MsFlags::MS_NOEXEC,
            "sync" => ms |= MsFlags::MS_SYNCHRONOUS,
            "dirsync" => ms |= MsFlags::MS_DIRSYNC,
            "noatime" => ms |= MsFlags::MS_NOATIME,
            "nodiratime" => ms |= MsFlags::MS_NODIRATIME,
            "relatime" => ms |= MsFlags::MS_RELATIME,
            "strictatime" => ms |= MsFlags::MS_STRICTATIME,
            "lazytime" => ms |= MsFlags::MS_LAZYTIME,
            // "defaults" is fstab shorthand with no kernel meaning.
            "defaults" => {}
            other => data.push(other),
        }
    }
    (ms, data.join(","))
}

/// Mounts a filesystem from `device` at `target`.
pub fn mount_fs(
    device: &Path,
    target: &Path,
    fs_type: &str,
    flags: &[String],
    readonly: bool,
) -> Result<(), NodeError> {
    let (mut ms, data) = split_flags(flags);
    if readonly {
        ms |= MsFlags::MS_RDONLY;
    }
    let opts = (!data.is_empty()).then_some(data.as_str());
    match nix::mount::mount(Some(device), target, Some(fs_type), ms, opts) {
        Ok(()) => Ok(()),
        // EINVAL with filesystem options given: almost always an option the
        // filesystem does not know. Find out which, so the caller hears
        // what to fix rather than a bare errno.
        Err(Errno::EINVAL) if !data.is_empty() => {
            match rejected_options(device, target, fs_type, ms, &data) {
                Some(bad) => Err(NodeError::invalid(format!(
                    "volume_capability.mount.mount_flags: the {fs_type} filesystem rejects {}",
                    bad.iter()
                        .map(|o| format!("{o:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
                None => Err(NodeError::Sys {
                    op: "mount",
                    path: target.to_path_buf(),
                    errno: Errno::EINVAL,
                }),
            }
        }
        Err(errno) => Err(NodeError::Sys {
            op: "mount",
            path: target.to_path_buf(),
            errno,
        }),
    }
}

/// After a mount with the options `data` failed with EINVAL: None if the
/// mount fails without them too (the options are not the problem), else
/// the options that fail on their own (all of them if only the combination
/// does). Every trial mount that succeeds is undone at once.
fn rejected_options(
    device: &Path,
    target: &Path,
    fs_type: &str,
    ms: MsFlags,
    data: &str,
) -> Option<Vec<String>> {
    let trial = |opts: Option<&str>| -> Result<(), Errno> {
        nix::mount::mount(Some(device), target, Some(fs_type), ms, opts)?;
        let _ = unmount_all(target);
        Ok(())
    };
    if trial(None).is_err() {
        return None;
    }
    let all: Vec<String> = data.split(',').map(str::to_string).collect();
    let bad: Vec<String> = all
        .iter()
        .filter(|o| trial(Some(o.as_str())) == Err(Errno::EINVAL))
        .cloned()
        .collect();
    Some(if bad.is_empty() { all } else { bad })
}

/// Bind-mounts `source` (directory or device node) onto `target`, then
/// makes it read-only if asked. A bind mount ignores MS_RDONLY on its first
/// call, hence the separate remount.
pub fn bind(source: &Path, target: &Path, readonly: bool) -> Result<(), NodeError> {
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|errno| NodeError::Sys {
        op: "bind mount",
        path: target.to_path_buf(),
        errno,
    })?;
    if readonly {
        if let Err(e) = remount_bind_readonly(target) {
            // Leaving a writable mount behind after promising read-only
            // would be worse than failing the request.
            let _ = unmount_all(target);
            return Err(e);
        }
    }
    Ok(())
}

pub fn remount_bind_readonly(target: &Path) -> Result<(), NodeError> {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>).map_err(|errno| {
        NodeError::Sys {
            op: "remount read-only",
            path: target.to_path_buf(),
            errno,
        }
    })
}

/// Unmounts everything stacked on `target` until it is no longer a mount
/// point. Returns how many mounts were removed; 0 for a plain path or one
/// that does not exist.
pub fn unmount_all(target: &Path) -> Result<usize, NodeError> {
    // The root filesystem is never a volume; request paths are checked
    // against the kubelet directory already, this is the last line.
    if target == Path::new("/")
        || std::fs::canonicalize(target).ok().as_deref() == Some(Path::new("/"))
    {
        return Err(NodeError::invalid("refusing to unmount /"));
    }
    // A bound on the loop guards against a mount we cannot remove but
    // which keeps reporting success (should never happen, must not hang).
    const MAX_STACK: usize = 16;
    // A probe (blkid, udev) holding the device for a moment makes umount
    // fail with EBUSY; that passes within milliseconds, a real user does not.
    const BUSY_RETRIES: u32 = 20;
    let mut busy = 0;
    let mut removed = 0;
    while mountinfo::mount_at(target)?.is_some() {
        if removed == MAX_STACK {
            return Err(NodeError::Precondition(format!(
                "{} is still a mount point after {MAX_STACK} unmounts",
                target.display()
            )));
        }
        match nix::mount::umount2(target, MntFlags::empty()) {
            Ok(()) => removed += 1,
            // Raced with another unmount: the loop condition re-checks.
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(Errno::EBUSY) if busy < BUSY_RETRIES => {
                busy += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(errno) => {
                return Err(NodeError::Sys {
                    op: "umount",
                    path: target.to_path_buf(),
                    errno,
                })
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_split() {
        let (ms, data) = split_flags(&[
            "noatime".into(),
            "discard,nouuid".into(),
            "defaults".into(),
            "ro".into(),
        ]);
        assert!(ms.contains(MsFlags::MS_NOATIME));
        assert!(ms.contains(MsFlags::MS_RDONLY));
        assert_eq!(data, "discard,nouuid");
    }
}
