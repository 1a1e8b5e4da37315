//! One VM's configuration as PVE keeps it: applied keys, pending changes and pending deletions,
//! plus the digest PVE derives from the config file text.

use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Vm {
    pub vmid: u32,
    pub node: String,
    /// `running` or `stopped`.
    pub status: String,
    pub conf: BTreeMap<String, String>,
    #[serde(default)]
    pub pending: BTreeMap<String, String>,
    #[serde(default)]
    pub pending_delete: BTreeSet<String>,
    /// Snapshot sections: name -> config at snapshot time (plus `snaptime`, `description`,
    /// `parent`), as in the `[snapname]` sections of a PVE config file.
    #[serde(default)]
    pub snapshots: BTreeMap<String, BTreeMap<String, String>>,
}

impl Vm {
    pub fn name(&self) -> String {
        self.conf
            .get("name")
            .cloned()
            .unwrap_or_else(|| format!("VM {}", self.vmid))
    }

    pub fn running(&self) -> bool {
        self.status == "running"
    }

    /// The config file text in PVE's layout; the digest is computed over it.
    pub fn file_text(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.conf {
            out.push_str(&format!("{k}: {v}\n"));
        }
        if !self.pending.is_empty() || !self.pending_delete.is_empty() {
            out.push_str("\n[PENDING]\n");
            if !self.pending_delete.is_empty() {
                let d: Vec<&str> = self.pending_delete.iter().map(String::as_str).collect();
                out.push_str(&format!("delete: {}\n", d.join(",")));
            }
            for (k, v) in &self.pending {
                out.push_str(&format!("{k}: {v}\n"));
            }
        }
        for (name, conf) in &self.snapshots {
            out.push_str(&format!("\n[{name}]\n"));
            for (k, v) in conf {
                out.push_str(&format!("{k}: {v}\n"));
            }
        }
        out
    }

    pub fn digest(&self) -> String {
        hex::encode(Sha1::digest(self.file_text().as_bytes()))
    }

    /// The config with pending changes applied, as GET config (current=0) shows it.
    pub fn merged(&self) -> BTreeMap<String, String> {
        let mut m = self.conf.clone();
        for d in &self.pending_delete {
            m.remove(d);
        }
        for (k, v) in &self.pending {
            m.insert(k.clone(), v.clone());
        }
        m
    }

    pub fn hotplug_features(&self) -> Vec<String> {
        let raw = self
            .conf
            .get("hotplug")
            .cloned()
            .unwrap_or_else(|| "network,disk,usb".into());
        match raw.as_str() {
            "0" => vec![],
            "1" => vec!["network".into(), "disk".into(), "usb".into()],
            _ => raw
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        }
    }

    /// First free `unusedN` slot.
    pub fn free_unused_key(&self) -> String {
        (0..256)
            .map(|i| format!("unused{i}"))
            .find(|k| !self.conf.contains_key(k))
            .unwrap_or_else(|| "unused255".into())
    }
}

/// Is `key` a drive slot (`scsi3`, `virtio0`, ...)?
pub fn is_drive_key(key: &str) -> bool {
    if key == "efidisk0" || key == "tpmstate0" {
        return true;
    }
    matches!(
        super::propdef::split_indexed(key),
        Some(("scsi" | "virtio" | "sata" | "ide", _))
    )
}

/// Buses QEMU can hot-plug disks on.
pub fn is_hotpluggable_bus(key: &str) -> bool {
    matches!(
        super::propdef::split_indexed(key),
        Some(("scsi", _)) | Some(("virtio", _))
    )
}

/// Renders a byte count the way PVE writes `size=` (largest exact unit).
pub fn format_size(bytes: u64) -> String {
    let units = [
        ("T", 1u64 << 40),
        ("G", 1 << 30),
        ("M", 1 << 20),
        ("K", 1 << 10),
    ];
    for (u, f) in units {
        if bytes >= f && bytes.is_multiple_of(f) {
            return format!("{}{u}", bytes / f);
        }
    }
    bytes.to_string()
}

/// Parses a `size=` value back into bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let (num, mult) = match s.chars().last()? {
        'K' => (&s[..s.len() - 1], 1u64 << 10),
        'M' => (&s[..s.len() - 1], 1 << 20),
        'G' => (&s[..s.len() - 1], 1 << 30),
        'T' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let n: f64 = num.parse().ok()?;
    Some((n * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_round_trip_in_pve_units() {
        assert_eq!(format_size(4 << 20), "4M");
        assert_eq!(format_size(32 << 30), "32G");
        assert_eq!(format_size(1536), "1536");
        assert_eq!(format_size(3 << 10), "3K");
        assert_eq!(parse_size("1.5G"), Some(3 << 29));
        assert_eq!(parse_size("512"), Some(512));
    }

    #[test]
    fn drive_keys_and_hotplug_buses() {
        assert!(is_drive_key("scsi30") && is_drive_key("sata0") && is_drive_key("efidisk0"));
        assert!(!is_drive_key("net0") && !is_drive_key("scsihw"));
        assert!(is_hotpluggable_bus("virtio3") && !is_hotpluggable_bus("sata1"));
    }

    #[test]
    fn pending_changes_merge_and_change_the_digest() {
        let mut vm = Vm {
            vmid: 100,
            node: "n".into(),
            status: "running".into(),
            conf: [
                ("a".to_string(), "1".to_string()),
                ("b".to_string(), "2".to_string()),
            ]
            .into(),
            pending: Default::default(),
            pending_delete: Default::default(),
            snapshots: Default::default(),
        };
        let d0 = vm.digest();
        vm.pending.insert("c".into(), "3".into());
        vm.pending_delete.insert("a".into());
        assert_ne!(d0, vm.digest());
        let m = vm.merged();
        assert!(!m.contains_key("a") && m["c"] == "3" && m["b"] == "2");
        assert!(vm.file_text().contains("[PENDING]\ndelete: a\nc: 3\n"));
    }
}
