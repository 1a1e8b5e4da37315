//! Keep each Kubernetes Node's topology labels equal to where its worker VM
//! runs: region = the cluster's region, zone = the PVE node. Only the
//! controller knows the latter (the guest cannot see it), and it changes
//! when a VM migrates. Optional (`--label-nodes`): clusters with a Proxmox
//! cloud controller manager already have these labels.

use super::cluster::{is_holder, is_snapshot_holder};
use super::Controller;
use crate::kube::{nodes_topology, set_labels, ApiServer};
use crate::volume_id::{TOPOLOGY_REGION, TOPOLOGY_ZONE};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// What one pass did.
#[derive(Debug, Default, PartialEq)]
pub struct LabelReport {
    /// Nodes whose labels were changed.
    pub patched: Vec<String>,
    /// Nodes without a VM of that name (left alone).
    pub without_vm: Vec<String>,
    /// Nodes whose name matches several VMs (left alone: no guessing).
    pub ambiguous: Vec<String>,
}

impl Controller {
    pub async fn label_nodes_once(&self, api: &ApiServer) -> anyhow::Result<LabelReport> {
        let nodes = nodes_topology(api).await?;
        let mut placement: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for cluster in self.clusters() {
            for vm in cluster.client.vms_uncached().await? {
                if vm.template || is_holder(&vm) || is_snapshot_holder(&vm) {
                    continue;
                }
                if let Some(name) = vm.name {
                    placement
                        .entry(name)
                        .or_default()
                        .push((cluster.region.clone(), vm.node));
                }
            }
        }
        let mut report = LabelReport::default();
        for (name, labels) in nodes {
            match placement.get(&name).map(Vec::as_slice) {
                None | Some([]) => report.without_vm.push(name),
                Some([(region, zone)]) => {
                    let want = BTreeMap::from([
                        (TOPOLOGY_REGION.to_string(), region.clone()),
                        (TOPOLOGY_ZONE.to_string(), zone.clone()),
                    ]);
                    if labels != want {
                        set_labels(api, &name, &want).await?;
                        tracing::info!(node = %name, %region, %zone, "node topology labels set");
                        report.patched.push(name);
                    }
                }
                Some(_) => report.ambiguous.push(name),
            }
        }
        Ok(report)
    }

    /// Label nodes now and every `interval`; errors are logged and retried.
    pub async fn run_labeller(self: Arc<Self>, api: ApiServer, interval: Duration) {
        loop {
            match self.label_nodes_once(&api).await {
                Ok(r) if !r.ambiguous.is_empty() => {
                    tracing::warn!(nodes = ?r.ambiguous, "several VMs carry these node names; their labels are left alone")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "labelling nodes failed; retrying")
                }
            }
            tokio::time::sleep(interval).await;
        }
    }
}
