//! PVE drive property strings such as
//! `shared:9999/vm-9999-csi-ab12.raw,backup=0,serial=csi-ab12,wwn=0x5000c50015ea71ac`.
//!
//! Written by hand on purpose: this is PVE's own `key=value` list format with
//! a bare leading volume (the schema's `default_key`), not any general format
//! a crate parses; serde_urlencoded or a CSV reader would accept strings PVE
//! rejects, or split volume ids that contain `=`.

use std::fmt;

/// One disk slot value from a VM config (`scsi3: <drive>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drive {
    /// Volume id (`<storage>:<volname>`), or `none`/a path for special drives.
    pub volume: String,
    /// Options in their original order, so a rewrite keeps the string stable.
    pub options: Vec<(String, String)>,
}

impl Drive {
    pub fn new(volume: impl Into<String>) -> Self {
        Drive {
            volume: volume.into(),
            options: Vec::new(),
        }
    }

    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.set(key, value);
        self
    }

    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        let value = value.into();
        match self.options.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.options.push((key.to_string(), value)),
        }
    }

    pub fn remove(&mut self, key: &str) {
        self.options.retain(|(k, _)| k != key);
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Boolean options are written `1`/`0` by PVE but `on`/`yes`/`true` are accepted.
    pub fn flag(&self, key: &str) -> bool {
        matches!(self.get(key), Some("1" | "on" | "yes" | "true"))
    }

    /// Parse a drive string. The volume may be given bare (first) or as
    /// `file=`/`volume=`; a string without a volume is not a drive.
    pub fn parse(s: &str) -> Option<Drive> {
        let mut volume: Option<String> = None;
        let mut options = Vec::new();
        for (i, part) in s.split(',').enumerate() {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            match part.split_once('=') {
                Some((k, v)) if k == "file" || k == "volume" => volume = Some(v.to_string()),
                // Only the first element may be the bare volume; a volume id
                // never contains '=' before its ':'.
                Some((k, v)) if !(i == 0 && k.contains(':')) => {
                    options.push((k.to_string(), v.to_string()))
                }
                _ if i == 0 => volume = Some(part.to_string()),
                _ => return None,
            }
        }
        volume.map(|volume| Drive { volume, options })
    }
}

impl fmt::Display for Drive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.volume)?;
        for (k, v) in &self.options {
            write!(f, ",{k}={v}")?;
        }
        Ok(())
    }
}

/// Bytes in a PVE `disk-size` value (`32G`, `1536M`, `0.5T`; bare = bytes).
pub fn parse_disk_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()? {
        'K' => (&s[..s.len() - 1], 1u64 << 10),
        'M' => (&s[..s.len() - 1], 1 << 20),
        'G' => (&s[..s.len() - 1], 1 << 30),
        'T' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    if let Ok(n) = num.parse::<u64>() {
        return n.checked_mul(mult);
    }
    let f: f64 = num.parse().ok()?;
    (f.is_finite() && f >= 0.0).then(|| (f * mult as f64).round() as u64)
}

/// Disk buses a hot-plugged CSI volume may use, in the order slots are tried.
/// scsi first: it carries a wwn, which is how the node finds the disk.
pub const SCSI_SLOTS: u32 = 31;

/// True for VM config keys that hold a disk (`scsi0`, `virtio3`, `sata1`, `ide2`, `efidisk0`...).
pub fn is_disk_key(key: &str) -> bool {
    let prefix = key.trim_end_matches(|c: char| c.is_ascii_digit());
    prefix.len() < key.len()
        && matches!(
            prefix,
            "scsi" | "virtio" | "sata" | "ide" | "efidisk" | "tpmstate" | "unused"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bare_volume_and_options() {
        let d =
            Drive::parse("local-lvm:vm-9999-csi-1,backup=0,wwn=0x5000000000000001,ro=1").unwrap();
        assert_eq!(d.volume, "local-lvm:vm-9999-csi-1");
        assert_eq!(d.get("wwn"), Some("0x5000000000000001"));
        assert!(d.flag("ro"));
        assert!(!d.flag("backup"));
        assert_eq!(d.get("size"), None);
    }

    #[test]
    fn parses_file_key_form() {
        let d = Drive::parse("size=1G,file=shared:9999/vm-9999-csi-a.raw").unwrap();
        assert_eq!(d.volume, "shared:9999/vm-9999-csi-a.raw");
        assert_eq!(d.get("size"), Some("1G"));
    }

    #[test]
    fn round_trips() {
        let s = "shared:9999/vm-9999-csi-a.raw,backup=0,serial=abc,wwn=0x5aaaaaaaaaaaaaaa";
        assert_eq!(Drive::parse(s).unwrap().to_string(), s);
        let d = Drive::new("x:1").with("ro", "1").with("ro", "0");
        assert_eq!(d.to_string(), "x:1,ro=0");
    }

    #[test]
    fn rejects_stray_bare_words() {
        assert!(Drive::parse("a:b,oops").is_none());
        assert!(Drive::parse("").is_none());
    }

    #[test]
    fn disk_sizes() {
        assert_eq!(parse_disk_size("32G"), Some(32 << 30));
        assert_eq!(parse_disk_size("1536M"), Some(1536 << 20));
        assert_eq!(parse_disk_size("0.5T"), Some(1 << 39));
        assert_eq!(parse_disk_size("4096"), Some(4096));
        assert_eq!(parse_disk_size("12X"), None);
        assert_eq!(parse_disk_size(""), None);
    }

    #[test]
    fn disk_keys() {
        assert!(is_disk_key("scsi30"));
        assert!(is_disk_key("unused0"));
        assert!(!is_disk_key("scsihw"));
        assert!(!is_disk_key("net0"));
        assert!(!is_disk_key("scsi"));
    }
}
