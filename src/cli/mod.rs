//! Command-line flags shared by the subcommands of `proxmox-csi`.

use crate::config::ConfigFile;
use crate::controller::{Controller, ControllerOptions};
use crate::node::config::NodeConfig;
use crate::volume_id::{TOPOLOGY_REGION, TOPOLOGY_ZONE};
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Args, Debug, Clone)]
pub struct ControllerArgs {
    /// Cluster configuration file (YAML).
    #[arg(
        long,
        env = "PROXMOX_CSI_CONFIG",
        default_value = "/etc/proxmox-csi/config.yaml"
    )]
    pub config: PathBuf,
    /// Holder VMs (one stopped VM owning each volume) get ids from here up.
    #[arg(long, default_value_t = 100_000)]
    pub holder_vmid_base: u64,
    /// Storage for StorageClasses that name none.
    #[arg(long)]
    pub default_storage: Option<String>,
    /// Driver volumes one VM may have attached.
    #[arg(long, default_value_t = 24)]
    pub max_volumes_per_node: u32,
    /// Seconds to wait for a Proxmox task.
    #[arg(long, default_value_t = 120)]
    pub task_timeout: u64,
    /// Disk allocations and clones run at once per storage (PVE serializes
    /// them behind a storage lock that gives up after 10 s).
    #[arg(long, default_value_t = 2)]
    pub storage_concurrency: usize,
    /// Keep every Node's topology.kubernetes.io/region and zone labels equal
    /// to where its VM runs (needs get/list/patch on nodes). Leave off when
    /// a Proxmox cloud controller manager sets them.
    #[arg(long)]
    pub label_nodes: bool,
    /// Seconds between two labelling passes.
    #[arg(long, default_value_t = 60)]
    pub label_interval: u64,
    /// This Kubernetes cluster's identity, when several share one Proxmox cluster:
    /// holders carry it (name and `csi-cluster-<id>` tag) and other clusters' holders
    /// are ignored. 1-14 lower-case letters, digits and '-'.
    #[arg(long, env = "PROXMOX_CSI_CLUSTER_ID")]
    pub cluster_id: Option<String>,
    /// With --cluster-id: also own holders made without a cluster id (the upgrade of a
    /// single cluster). Set false on every further cluster sharing the Proxmox cluster.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub claim_legacy_holders: bool,
}

impl ControllerArgs {
    pub fn build(&self) -> anyhow::Result<Controller> {
        let cfg = ConfigFile::load(&self.config)?;
        Controller::new(
            &cfg,
            ControllerOptions {
                holder_vmid_base: self.holder_vmid_base,
                default_storage: self.default_storage.clone(),
                task_timeout: Duration::from_secs(self.task_timeout),
                max_volumes_per_vm: self.max_volumes_per_node,
                storage_concurrency: self.storage_concurrency,
                cluster_id: self.cluster_id.clone(),
                claim_legacy_holders: self.claim_legacy_holders,
                attach_claim_lease: crate::controller::attach_record::default_claim_lease(
                    Duration::from_secs(self.task_timeout),
                ),
                ..Default::default()
            },
        )
    }
}

#[derive(Args, Debug, Clone)]
pub struct NodeArgs {
    /// This node's id: the name of the Proxmox VM it runs in (usually the Kubernetes node name).
    #[arg(long, env = "NODE_NAME")]
    pub node_id: String,
    /// Where attached disks appear as `wwn-0x...` links.
    #[arg(long, default_value = "/dev/disk/by-id")]
    pub device_dir: PathBuf,
    /// Seconds NodeStage waits for an attached disk to appear.
    #[arg(long, default_value_t = 60)]
    pub device_wait: u64,
    /// Proxmox cluster (region) this VM runs in, reported as topology.
    #[arg(long, env = "NODE_REGION")]
    pub region: Option<String>,
    /// Proxmox node (zone) this VM runs on, reported as topology.
    #[arg(long, env = "NODE_ZONE")]
    pub zone: Option<String>,
    /// Reported as max_volumes_per_node (0 = no limit); keep equal to the controller's.
    #[arg(long = "node-max-volumes", default_value_t = 24)]
    pub max_volumes: i64,
    /// Take region and zone from this Node's topology.kubernetes.io labels
    /// (needs `get nodes` for the pod's service account); --region/--zone win.
    #[arg(long)]
    pub topology_from_node_labels: bool,
    /// The kubelet's root directory: every staging, target and volume path
    /// of a request must lie below it (others are refused).
    #[arg(long, env = "KUBELET_DIR", default_value = crate::node::paths::DEFAULT_KUBELET_DIR)]
    pub kubelet_dir: PathBuf,
    /// Register with kubelet by serving its plugin-registration socket
    /// (`<kubelet-dir>/plugins_registry/<driver-name>-reg.sock`) instead of
    /// leaving that to the node-driver-registrar sidecar.
    #[arg(long)]
    pub kubelet_registration: bool,
    /// The CSI socket as kubelet sees it, reported in the registration
    /// [default: <kubelet-dir>/plugins/<driver-name>/csi.sock].
    #[arg(long, requires = "kubelet_registration")]
    pub kubelet_registration_path: Option<String>,
}

impl NodeArgs {
    /// The CSI socket path kubelet is told to dial (see `--kubelet-registration-path`).
    pub fn registration_endpoint(&self, driver_name: &str) -> String {
        self.kubelet_registration_path.clone().unwrap_or_else(|| {
            self.kubelet_dir
                .join("plugins")
                .join(driver_name)
                .join("csi.sock")
                .display()
                .to_string()
        })
    }

    /// The node configuration, with topology read from the Node's labels when asked.
    pub async fn resolve(&self) -> anyhow::Result<NodeConfig> {
        let mut cfg = self.build();
        // Flags given for both keys leave nothing to read.
        if self.topology_from_node_labels && cfg.topology.len() < 2 {
            let api = crate::kube::ApiServer::in_cluster()?;
            // At first install the labels may still be on their way (the
            // controller's --label-nodes, or a cloud controller manager):
            // wait a while rather than register without a topology.
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            let mut labels = fetch_with_retries(&api, &self.node_id).await?;
            while labels.len() < 2 && std::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_secs(5)).await;
                labels = fetch_with_retries(&api, &self.node_id).await?;
            }
            if labels.len() < 2 {
                tracing::warn!(node = %self.node_id, ?labels, "the Node lacks topology.kubernetes.io region/zone labels: volumes on node-local storages cannot be scheduled here");
            }
            for (k, v) in labels {
                cfg.topology.entry(k).or_insert(v);
            }
        }
        Ok(cfg)
    }

    pub fn build(&self) -> NodeConfig {
        let mut cfg = NodeConfig::new(self.node_id.clone());
        cfg.device_dir = self.device_dir.clone();
        cfg.device_wait = Duration::from_secs(self.device_wait);
        cfg.max_volumes = self.max_volumes;
        cfg.kubelet_dir = self.kubelet_dir.clone();
        if let Some(r) = &self.region {
            cfg.topology.insert(TOPOLOGY_REGION.into(), r.clone());
        }
        if let Some(z) = &self.zone {
            cfg.topology.insert(TOPOLOGY_ZONE.into(), z.clone());
        }
        cfg
    }
}

/// The API server may still be coming up when a node boots; a few tries.
async fn fetch_with_retries(
    api: &crate::kube::ApiServer,
    node: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let mut last = None;
    for attempt in 0..5 {
        match crate::kube::topology_labels(api, node).await {
            Ok(l) => return Ok(l),
            Err(e) => {
                tracing::warn!(attempt, error = %e, "reading the Node's topology labels failed");
                last = Some(e);
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }
    Err(last
        .expect("at least one attempt")
        .context(format!("reading topology labels of Node {node}")))
}
