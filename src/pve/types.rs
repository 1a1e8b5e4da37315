//! Response shapes of the PVE endpoints the driver reads. Fields PVE marks
//! optional are `Option`/defaulted; booleans arrive as 0/1.

use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

/// PVE encodes booleans as integers 0/1, sometimes as strings.
pub fn de_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(match v {
        serde_json::Value::Bool(b) => b,
        serde_json::Value::Number(n) => n.as_i64().unwrap_or(0) != 0,
        serde_json::Value::String(s) => matches!(s.as_str(), "1" | "true" | "yes" | "on"),
        _ => false,
    })
}

/// Numbers sometimes arrive as strings (e.g. `vmid` in some lists).
pub fn de_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    match v {
        serde_json::Value::Number(n) => Ok(n
            .as_u64()
            .or_else(|| n.as_f64().map(|f| f as u64))
            .unwrap_or(0)),
        serde_json::Value::String(s) => s.parse().map_err(serde::de::Error::custom),
        serde_json::Value::Null => Ok(0),
        other => Err(serde::de::Error::custom(format!(
            "expected a number, got {other}"
        ))),
    }
}

/// One VM from `GET /cluster/resources?type=vm`.
#[derive(Debug, Clone, Deserialize)]
pub struct VmResource {
    #[serde(deserialize_with = "de_u64")]
    pub vmid: u64,
    #[serde(default)]
    pub name: Option<String>,
    pub node: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default, deserialize_with = "de_bool")]
    pub template: bool,
    /// `;`-separated tags.
    #[serde(default)]
    pub tags: Option<String>,
    /// Set while PVE works on the VM (`create`, `clone`, `backup`, ...).
    #[serde(default)]
    pub lock: Option<String>,
}

impl VmResource {
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags
            .as_deref()
            .is_some_and(|t| t.split([';', ',', ' ']).any(|x| x == tag))
    }
}

/// One entry of `GET /nodes/{node}/qemu/{vmid}/snapshot` (without the `current` pseudo-entry).
#[derive(Debug, Clone, Deserialize)]
pub struct SnapshotInfo {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub snaptime: Option<i64>,
}

/// One storage on one node from `GET /cluster/resources?type=storage`.
#[derive(Debug, Clone, Deserialize)]
pub struct StorageResource {
    pub storage: String,
    pub node: String,
    #[serde(default)]
    pub plugintype: Option<String>,
    #[serde(default)]
    pub content: Option<String>,
    #[serde(default, deserialize_with = "de_bool")]
    pub shared: bool,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub maxdisk: Option<u64>,
    #[serde(default)]
    pub disk: Option<u64>,
}

impl StorageResource {
    pub fn holds_images(&self) -> bool {
        self.content
            .as_deref()
            .map(|c| c.split(',').any(|c| c.trim() == "images"))
            .unwrap_or(false)
    }

    pub fn is_available(&self) -> bool {
        self.status
            .as_deref()
            .map(|s| s == "available")
            .unwrap_or(true)
    }

    /// Storages whose volumes are files (`<vmid>/<name>.<fmt>`) rather than
    /// block devices; PVE wants the format as a file extension there.
    pub fn is_file_based(&self) -> bool {
        matches!(
            self.plugintype.as_deref(),
            Some("dir" | "nfs" | "cifs" | "glusterfs" | "btrfs" | "cephfs")
        )
    }
}

/// `GET /nodes/{node}/storage/{storage}/status`.
#[derive(Debug, Clone, Deserialize)]
pub struct StorageStatus {
    #[serde(default)]
    pub total: Option<u64>,
    #[serde(default)]
    pub used: Option<u64>,
    #[serde(default)]
    pub avail: Option<u64>,
    #[serde(default, deserialize_with = "de_bool")]
    pub active: bool,
    #[serde(default, deserialize_with = "de_bool")]
    pub shared: bool,
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
}

/// One entry of `GET /nodes/{node}/storage/{storage}/content`.
#[derive(Debug, Clone, Deserialize)]
pub struct ContentItem {
    pub volid: String,
    #[serde(default)]
    pub size: Option<u64>,
    #[serde(default)]
    pub format: Option<String>,
    #[serde(default)]
    pub vmid: Option<u64>,
    #[serde(default)]
    pub ctime: Option<u64>,
}

/// `GET /nodes/{node}/storage/{storage}/content/{volume}`.
#[derive(Debug, Clone, Deserialize)]
pub struct VolumeInfo {
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default, deserialize_with = "de_u64")]
    pub size: u64,
    #[serde(default)]
    pub format: Option<String>,
}

/// `GET /nodes/{node}/tasks/{upid}/status`.
#[derive(Debug, Clone, Deserialize)]
pub struct TaskStatus {
    pub status: String,
    #[serde(default)]
    pub exitstatus: Option<String>,
}

/// A VM config: every key as PVE returns it (values are strings or numbers).
#[derive(Debug, Clone, Default)]
pub struct VmConfig {
    pub entries: BTreeMap<String, String>,
}

impl VmConfig {
    pub fn from_json(v: serde_json::Value) -> Option<VmConfig> {
        let obj = v.as_object()?;
        let entries = obj
            .iter()
            .map(|(k, v)| {
                let s = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), s)
            })
            .collect();
        Some(VmConfig { entries })
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(|s| s.as_str())
    }

    pub fn digest(&self) -> Option<&str> {
        self.get("digest")
    }

    /// Disk slots and their parsed drives.
    pub fn drives(&self) -> impl Iterator<Item = (&str, super::drive::Drive)> {
        self.entries
            .iter()
            .filter(|(k, _)| super::drive::is_disk_key(k))
            .filter_map(|(k, v)| super::drive::Drive::parse(v).map(|d| (k.as_str(), d)))
    }

    /// Slots that hold `volid`.
    pub fn slots_with_volume(&self, volid: &str) -> Vec<String> {
        self.drives()
            .filter(|(_, d)| d.volume == volid)
            .map(|(k, _)| k.to_string())
            .collect()
    }
}

/// One entry of `GET /nodes/{node}/qemu/{vmid}/pending`: a config key with
/// its applied value (what the running VM has), its pending value, and
/// whether its removal is pending (qemu-server API2/Qemu.pm, vm_pending).
#[derive(Debug, Clone, Deserialize)]
pub struct PendingEntry {
    pub key: String,
    #[serde(default)]
    pub value: Option<serde_json::Value>,
    #[serde(default)]
    pub pending: Option<serde_json::Value>,
    #[serde(default)]
    pub delete: Option<serde_json::Value>,
}

fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A disk slot as the pending view shows it.
#[derive(Debug, Clone)]
pub struct SlotView {
    pub slot: String,
    /// In the applied config: for a running VM, the guest has this disk.
    pub current: Option<super::drive::Drive>,
    /// Waiting to be applied (a hot-plug that has not happened yet).
    pub pending: Option<super::drive::Drive>,
    /// Its removal is pending (a hot-unplug that has not happened yet).
    pub delete: bool,
}

impl SlotView {
    /// Whether either the applied or the pending value holds `volid`.
    pub fn holds(&self, volid: &str) -> bool {
        self.current.as_ref().is_some_and(|d| d.volume == volid)
            || self.pending.as_ref().is_some_and(|d| d.volume == volid)
    }

    /// Whether a change of this slot waits in the pending section.
    pub fn is_pending(&self) -> bool {
        self.pending.is_some() || self.delete
    }
}

/// The disk slots of a VM from its pending view: every slot a disk is in,
/// applied or not.
pub fn slot_views(entries: &[PendingEntry]) -> Vec<SlotView> {
    entries
        .iter()
        .filter(|e| super::drive::is_disk_key(&e.key))
        .map(|e| SlotView {
            slot: e.key.clone(),
            current: e
                .value
                .as_ref()
                .and_then(|v| super::drive::Drive::parse(&json_text(v))),
            pending: e
                .pending
                .as_ref()
                .and_then(|v| super::drive::Drive::parse(&json_text(v))),
            delete: e.delete.as_ref().is_some_and(|d| json_text(d) != "0"),
        })
        .filter(|s| s.current.is_some() || s.pending.is_some())
        .collect()
}
