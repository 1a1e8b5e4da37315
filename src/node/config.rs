//! Static configuration of the node plugin.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// Where udev publishes by-id links for attached disks.
pub const DEFAULT_DEVICE_DIR: &str = "/dev/disk/by-id";
/// sysfs view of block devices, used to cross-check a disk's WWID.
pub const DEFAULT_SYS_BLOCK_DIR: &str = "/sys/class/block";
/// Hot-plugged SCSI disks usually show up within seconds; a minute covers
/// slow guests without making a genuinely missing disk hang for long.
pub const DEFAULT_DEVICE_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Identifier reported by NodeGetInfo; the controller maps it to a VM.
    pub node_id: String,
    /// Directory holding `wwn-0x...` links to attached disks.
    pub device_dir: PathBuf,
    /// How long NodeStageVolume waits for the disk's link to appear.
    pub device_wait: Duration,
    /// Reported as max_volumes_per_node; 0 means "no limit" in CSI.
    pub max_volumes: i64,
    /// Topology segments reported as accessible_topology.
    pub topology: BTreeMap<String, String>,
    /// sysfs block directory (`/sys/class/block`); a separate setting only
    /// so tests can present a fake WWID.
    pub sys_block_dir: PathBuf,
    /// The kubelet's root directory. Every staging, target and volume path
    /// of a request must lie below it (see `super::paths`).
    pub kubelet_dir: PathBuf,
}

impl NodeConfig {
    /// A configuration with production defaults for everything but the id.
    pub fn new(node_id: impl Into<String>) -> Self {
        NodeConfig {
            node_id: node_id.into(),
            device_dir: PathBuf::from(DEFAULT_DEVICE_DIR),
            device_wait: DEFAULT_DEVICE_WAIT,
            max_volumes: 0,
            topology: BTreeMap::new(),
            sys_block_dir: PathBuf::from(DEFAULT_SYS_BLOCK_DIR),
            kubelet_dir: PathBuf::from(super::paths::DEFAULT_KUBELET_DIR),
        }
    }
}
