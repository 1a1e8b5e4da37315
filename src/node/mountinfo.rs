//! Reading the kernel's mount table (`/proc/self/mountinfo`).
//!
//! mountinfo rather than /proc/mounts because it carries the device number
//! of each mount, which identifies the backing disk without trusting names.

use std::path::{Path, PathBuf};

use super::error::NodeError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub major: u64,
    pub minor: u64,
    /// Path inside the mounted filesystem that is visible at mount_point
    /// (`/` for a normal mount, the sub-path for a bind mount).
    pub root: PathBuf,
    pub mount_point: PathBuf,
    /// Per-mount options (`rw`/`ro`, `nosuid`, ...).
    pub mount_options: Vec<String>,
    pub fs_type: String,
    pub source: String,
    /// Options of the filesystem itself, shared by all its mounts.
    pub super_options: Vec<String>,
}

impl MountEntry {
    pub fn is_readonly(&self) -> bool {
        self.mount_options.iter().any(|o| o == "ro")
    }

    /// True when the filesystem itself went read-only underneath a
    /// read-write mount, which ext4 does after detecting errors.
    pub fn fs_forced_readonly(&self) -> bool {
        !self.is_readonly() && self.super_options.iter().any(|o| o == "ro")
    }
}

/// Undoes mountinfo's octal escapes (`\040` for space, `\011`, `\012`, `\134`).
pub fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') as u32 * 64
                + (bytes[i + 2] - b'0') as u32 * 8
                + (bytes[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let (pre, post) = line.split_once(" - ")?;
    let pre: Vec<&str> = pre.split(' ').collect();
    let post: Vec<&str> = post.split(' ').collect();
    if pre.len() < 6 || post.len() < 3 {
        return None;
    }
    let (major, minor) = pre[2].split_once(':')?;
    let opts = |s: &str| s.split(',').map(str::to_string).collect::<Vec<_>>();
    Some(MountEntry {
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        root: PathBuf::from(unescape(pre[3])),
        mount_point: PathBuf::from(unescape(pre[4])),
        mount_options: opts(pre[5]),
        fs_type: unescape(post[0]),
        source: unescape(post[1]),
        super_options: opts(post[2]),
    })
}

pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

pub fn read() -> Result<Vec<MountEntry>, NodeError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| NodeError::io("reading /proc/self/mountinfo", e))?;
    Ok(parse(&text))
}

/// The mount visible at `path`, if `path` is a mount point. mountinfo lists
/// paths in canonical form, so `path` is canonicalized first; when several
/// mounts are stacked, the last (topmost) one is what users see.
pub fn mount_at(path: &Path) -> Result<Option<MountEntry>, NodeError> {
    let canonical = match std::fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        // A dead filesystem (EIO, ENOTCONN) can make its own mount point
        // unresolvable; it must still be found so it can be unmounted.
        Err(_) => path.to_path_buf(),
    };
    Ok(read()?
        .into_iter()
        .rev()
        .find(|m| m.mount_point == canonical))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_unescapes() {
        let text = "36 35 98:0 /mnt1 /mnt/with\\040space rw,noatime master:1 - ext3 /dev/root rw,errors=continue\n\
                    42 27 7:0 / /tmp/m rw,relatime - ext4 /dev/loop0 ro\n\
                    garbage line\n";
        let e = parse(text);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].mount_point, PathBuf::from("/mnt/with space"));
        assert_eq!(e[0].root, PathBuf::from("/mnt1"));
        assert_eq!((e[0].major, e[0].minor), (98, 0));
        assert_eq!(e[0].fs_type, "ext3");
        assert!(!e[0].is_readonly());
        assert_eq!(e[1].source, "/dev/loop0");
        assert!(e[1].fs_forced_readonly());
    }

    #[test]
    fn unescape_edge_cases() {
        assert_eq!(unescape("a\\134b"), "a\\b");
        assert_eq!(unescape("tab\\011x"), "tab\tx");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
    }
}
