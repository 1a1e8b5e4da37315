//! Topology from the Kubernetes Node object's labels.
//!
//! Which Proxmox node a worker VM runs on is known to Proxmox, not to the
//! guest; clusters usually carry it as the Node's `topology.kubernetes.io/*`
//! labels (set by the Proxmox cloud controller manager or by hand). Reading
//! them lets one DaemonSet serve every worker instead of one per PVE node.
//! A single GET with the pod's service account; no Kubernetes client crate is
//! pulled in for it.

use crate::volume_id::{TOPOLOGY_REGION, TOPOLOGY_ZONE};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Where and how to reach the API server.
pub struct ApiServer {
    pub base_url: String,
    pub token: String,
    pub ca_pem: Option<Vec<u8>>,
}

impl ApiServer {
    /// The in-cluster API server, from the environment kubelet gives every pod.
    pub fn in_cluster() -> anyhow::Result<ApiServer> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST")
            .map_err(|_| anyhow::anyhow!("KUBERNETES_SERVICE_HOST is not set: not running in a pod?"))?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let host = if host.contains(':') { format!("[{host}]") } else { host };
        let dir = Path::new(SA_DIR);
        let token = std::fs::read_to_string(dir.join("token"))
            .map_err(|e| anyhow::anyhow!("cannot read the service account token ({e}); is automountServiceAccountToken off?"))?;
        let ca_pem = std::fs::read(dir.join("ca.crt")).ok();
        Ok(ApiServer { base_url: format!("https://{host}:{port}"), token: token.trim().to_string(), ca_pem })
    }
}

#[derive(Deserialize)]
struct NodeObject {
    metadata: Metadata,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// The region and zone labels of Node `name` (absent labels are left out).
pub async fn topology_labels(api: &ApiServer, name: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
    if let Some(pem) = &api.ca_pem {
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(pem)?);
    }
    let client = builder.build()?;
    let url = format!("{}/api/v1/nodes/{name}", api.base_url.trim_end_matches('/'));
    let resp = client.get(&url).bearer_auth(&api.token).send().await?;
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        anyhow::bail!("GET {url}: HTTP {status}: {}", body.chars().take(300).collect::<String>());
    }
    let node: NodeObject = resp.json().await?;
    Ok(node
        .metadata
        .labels
        .into_iter()
        .filter(|(k, _)| k == TOPOLOGY_REGION || k == TOPOLOGY_ZONE)
        .collect())
}
