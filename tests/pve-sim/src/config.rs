//! Simulator configuration: the cluster layout (nodes, storages, VMs) and the credentials it
//! accepts. Loadable from YAML or JSON; every field has a default so a file only states overrides.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HotplugMode {
    /// Attach applied disks as loop devices and publish by-id links (needs root).
    Loop,
    /// Config bookkeeping only; no host devices are touched.
    None,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Root of everything the simulator writes: storages, guest by-id dirs, state.json.
    pub data_dir: PathBuf,
    pub cluster_name: String,
    pub nodes: Vec<String>,
    pub storages: Vec<StorageConfig>,
    pub vms: Vec<VmConfig>,
    pub tokens: Vec<TokenConfig>,
    pub users: Vec<UserConfig>,
    /// Resource pools present at first start (later changes go through `/pools` and persist).
    pub pools: Vec<PoolConfig>,
    pub hotplug: HotplugMode,
    /// Latency model (see `latency.rs`), all off by default: how long every worker task runs,
    /// in ms, unless `task_type_ms` names its type.
    pub task_ms: u64,
    /// Task duration per task type (`qmcreate`, `qmclone`, `qmdestroy`, `qmconfig`,
    /// `qmsnapshot`, `resize`, `imgdel`, ...), in ms.
    pub task_type_ms: BTreeMap<String, u64>,
    /// Time every API request spends in service, in ms.
    pub request_ms: u64,
    /// At most this many API requests in service at once (pveproxy's and pvedaemon's
    /// `max_workers`: 3); 0 = no limit.
    pub max_workers: usize,
    /// How long a config writer waits for the per-VM lock (PVE: 10 s).
    pub lock_timeout_ms: u64,
    /// How long an allocation, free or clone waits for the storage lock (pve-storage
    /// Plugin::cluster_lock_storage with no timeout -> pve-common Tools::lock_file_full's 10 s).
    pub storage_lock_timeout_ms: u64,
    /// How long an allocation or a clone's disk copy holds the storage lock (the time lvcreate
    /// or qemu-img takes on a real storage); 0 = only as long as the file work takes.
    pub storage_op_ms: u64,
    /// How long a hot-unplug waits for the guest to release the device (qemu-server
    /// QemuServer::qemu_devicedelverify: 5 polls one second apart).
    pub unplug_verify_ms: u64,
    /// Reported by GET /version.
    pub version: String,
    /// Delay before answering a request that failed authentication (PVE: 3000).
    pub auth_fail_delay_ms: u64,
    /// Worker VMs backed by a real QEMU process (disk changes go over QMP); unset: none.
    pub qemu: Option<QemuConfig>,
}

/// Real QEMU guests for some running VMs (see `qemu.rs`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QemuConfig {
    /// The emulator (default `qemu-system-x86_64` from PATH).
    pub binary: PathBuf,
    /// Guest kernel and initramfs, booted directly (`-kernel`/`-initrd`).
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Added to every guest's kernel command line.
    pub append: String,
    pub memory_mib: u32,
    /// `auto` (KVM when /dev/kvm opens, else TCG), `kvm` or `tcg`.
    pub accel: String,
    pub vms: Vec<QemuVm>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QemuVm {
    pub vmid: u32,
    /// User-mode network forwards, QEMU's `hostfwd` syntax (`tcp:127.0.0.1:P-:10000`).
    pub hostfwd: Vec<String>,
    /// Added to this guest's kernel command line.
    pub append: String,
}

impl Default for QemuConfig {
    fn default() -> Self {
        QemuConfig {
            binary: PathBuf::from("qemu-system-x86_64"),
            kernel: PathBuf::new(),
            initrd: PathBuf::new(),
            append: String::new(),
            memory_mib: 1536,
            accel: "auto".into(),
            vms: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub id: String,
    /// PVE storage type: `dir`, `nfs` (files, raw or qcow2), `lvmthin`, `lvm` (thick),
    /// `zfspool` or `rbd` (block devices, raw); see `volumes.rs` and `features.rs`.
    #[serde(rename = "type")]
    pub kind: String,
    pub content: String,
    pub shared: bool,
    /// Directory holding the storage; `{node}` is replaced by the node name for non-shared
    /// storages. Relative paths are taken below `data_dir`. Unset: `storage/<id>` when shared,
    /// `storage/{node}/<id>` otherwise.
    pub path: Option<String>,
    /// Nodes the storage is available on; unset = all nodes.
    pub nodes: Option<Vec<String>>,
    /// Capacity reported by status calls, in bytes.
    pub capacity: u64,
    /// lvmthin and lvm only: LVM rounds volume sizes up to whole extents (default 4 MiB).
    pub extent_size: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VmConfig {
    pub vmid: u32,
    pub name: String,
    pub node: String,
    /// `running` or `stopped`.
    pub status: String,
    /// Raw config keys (`scsihw`, `hotplug`, `scsi0`, ...), as in a PVE VM config file.
    pub config: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Full token id `user@realm!name`.
    pub id: String,
    pub secret: String,
    /// Privileges granted on every path; unset (and no `acl`) = all privileges.
    #[serde(default)]
    pub privs: Option<Vec<String>>,
    /// Privileges granted on a path and everything below it, e.g. `/storage/local`.
    #[serde(default)]
    pub acl: BTreeMap<String, Vec<String>>,
    /// PVE's `privsep` (default 1, as `pveum user token add`): the token's privileges are
    /// its own (`privs`/`acl`) intersected with its user's, when `users` lists the user.
    /// With `privsep: false` the token has exactly its user's privileges.
    #[serde(default = "yes")]
    pub privsep: bool,
}

fn yes() -> bool {
    true
}

/// A resource pool (pve-access-control user.cfg `pool:` line): members inherit the
/// privileges granted on `/pool/<poolid>`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    pub poolid: String,
    pub comment: String,
    pub vms: Vec<u32>,
    pub storage: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    pub userid: String,
    pub password: String,
    #[serde(default)]
    pub privs: Option<Vec<String>>,
    #[serde(default)]
    pub acl: BTreeMap<String, Vec<String>>,
}

const GIB: u64 = 1024 * 1024 * 1024;

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            id: String::new(),
            kind: "dir".into(),
            content: "images".into(),
            shared: false,
            path: None,
            nodes: None,
            capacity: 100 * GIB,
            extent_size: 4 * 1024 * 1024,
        }
    }
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            vmid: 0,
            name: String::new(),
            node: String::new(),
            status: "running".into(),
            config: BTreeMap::new(),
        }
    }
}

fn default_vm(vmid: u32, name: &str, node: &str) -> VmConfig {
    let mut config = BTreeMap::new();
    config.insert("name".into(), name.into());
    config.insert("scsihw".into(), "virtio-scsi-single".into());
    config.insert("hotplug".into(), "network,disk,usb".into());
    config.insert("memory".into(), "2048".into());
    config.insert("cores".into(), "2".into());
    config.insert("boot".into(), "order=scsi0".into());
    config.insert(
        "scsi0".into(),
        format!("local:{vmid}/vm-{vmid}-disk-0.raw,size=32G"),
    );
    config.insert(
        "net0".into(),
        format!("virtio=BC:24:11:00:00:{:02X},bridge=vmbr0", vmid % 256),
    );
    VmConfig {
        vmid,
        name: name.into(),
        node: node.into(),
        status: "running".into(),
        config,
    }
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            data_dir: PathBuf::from("/var/lib/pve-sim"),
            cluster_name: "sim".into(),
            nodes: vec!["pve1".into(), "pve2".into()],
            storages: vec![
                StorageConfig {
                    id: "local".into(),
                    ..Default::default()
                },
                StorageConfig {
                    id: "shared".into(),
                    shared: true,
                    ..Default::default()
                },
                // As on a default PVE install: thin LVM next to `local`, with snapshots.
                StorageConfig {
                    id: "local-lvm".into(),
                    kind: "lvmthin".into(),
                    ..Default::default()
                },
            ],
            vms: vec![
                default_vm(101, "worker-1", "pve1"),
                default_vm(102, "worker-2", "pve2"),
            ],
            tokens: vec![TokenConfig {
                id: "csi@pve!csi".into(),
                secret: "sim-secret".into(),
                privs: None,
                acl: BTreeMap::new(),
                privsep: true,
            }],
            users: vec![UserConfig {
                userid: "root@pam".into(),
                password: "sim".into(),
                privs: None,
                acl: BTreeMap::new(),
            }],
            pools: Vec::new(),
            hotplug: if nix::unistd::Uid::effective().is_root() {
                HotplugMode::Loop
            } else {
                HotplugMode::None
            },
            task_ms: 0,
            task_type_ms: BTreeMap::new(),
            request_ms: 0,
            max_workers: 0,
            lock_timeout_ms: 10_000,
            storage_lock_timeout_ms: 10_000,
            storage_op_ms: 0,
            unplug_verify_ms: 5_000,
            version: "8.4.1".into(),
            auth_fail_delay_ms: 0,
            qemu: None,
        }
    }
}

impl SimConfig {
    pub fn default_for(data_dir: PathBuf) -> Self {
        SimConfig {
            data_dir,
            ..Default::default()
        }
    }

    /// Parses YAML (a superset of JSON, so JSON files work too).
    pub fn from_yaml(text: &str) -> anyhow::Result<Self> {
        Ok(serde_yaml_ng::from_str(text)?)
    }

    /// The latency model these fields describe.
    pub fn latency_model(&self) -> crate::LatencyModel {
        crate::LatencyModel {
            request_ms: self.request_ms,
            max_workers: self.max_workers,
            task_ms: self.task_ms,
            task_type_ms: self.task_type_ms.clone(),
        }
    }

    pub fn storage(&self, id: &str) -> Option<&StorageConfig> {
        self.storages.iter().find(|s| s.id == id)
    }

    pub fn has_node(&self, node: &str) -> bool {
        self.nodes.iter().any(|n| n == node)
    }
}

impl StorageConfig {
    /// The size a new or grown volume really gets: LVM-backed storages round up to extents;
    /// ZFSPoolPlugin zfs_create_zvol / volume_resize pad to 1 MiB; RBDPlugin alloc_image /
    /// volume_resize ask `rbd` for whole MiB, rounded up.
    pub fn round_size(&self, bytes: u64) -> u64 {
        const MIB: u64 = 1024 * 1024;
        match self.kind.as_str() {
            "lvmthin" | "lvm" if self.extent_size > 0 => {
                bytes.div_ceil(self.extent_size) * self.extent_size
            }
            "zfspool" | "rbd" => bytes.div_ceil(MIB) * MIB,
            _ => bytes,
        }
    }

    pub fn available_on(&self, node: &str) -> bool {
        self.nodes
            .as_ref()
            .is_none_or(|ns| ns.iter().any(|n| n == node))
    }

    /// Directory of this storage as seen from `node`.
    pub fn dir(&self, data_dir: &Path, node: &str) -> PathBuf {
        let raw = match &self.path {
            Some(p) => p.clone(),
            None if self.shared => format!("storage/{}", self.id),
            None => format!("storage/{{node}}/{}", self.id),
        };
        let p = PathBuf::from(raw.replace("{node}", node));
        if p.is_absolute() {
            p
        } else {
            data_dir.join(p)
        }
    }
}
