//! The few Kubernetes API calls the driver makes about Node objects: the
//! node plugin reads its Node's topology labels, the controller can keep
//! them equal to where each worker VM runs.
//!
//! Which Proxmox node a worker VM runs on is known to Proxmox, not to the
//! guest; clusters carry it as the Node's `topology.kubernetes.io/*` labels.
//! Three plain HTTP calls with the pod's service account; no Kubernetes
//! client crate is pulled in for them.

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
        let host = std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| {
            anyhow::anyhow!("KUBERNETES_SERVICE_HOST is not set: not running in a pod?")
        })?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host
        };
        let dir = Path::new(SA_DIR);
        let token = std::fs::read_to_string(dir.join("token")).map_err(|e| {
            anyhow::anyhow!(
                "cannot read the service account token ({e}); is automountServiceAccountToken off?"
            )
        })?;
        let ca_pem = std::fs::read(dir.join("ca.crt")).ok();
        Ok(ApiServer {
            base_url: format!("https://{host}:{port}"),
            token: token.trim().to_string(),
            ca_pem,
        })
    }
}

#[derive(Deserialize)]
struct NodeObject {
    metadata: Metadata,
}

#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct NodeList {
    items: Vec<NodeObject>,
}

impl ApiServer {
    fn client(&self) -> anyhow::Result<reqwest::Client> {
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
        if let Some(pem) = &self.ca_pem {
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(pem)?);
        }
        Ok(builder.build()?)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url.trim_end_matches('/'))
    }
}

async fn checked(
    method: &str,
    url: &str,
    resp: reqwest::Response,
) -> anyhow::Result<reqwest::Response> {
    let status = resp.status();
    if !status.is_success() {
        let body = resp.text().await.unwrap_or_default();
        anyhow::bail!(
            "{method} {url}: HTTP {status}: {}",
            body.chars().take(300).collect::<String>()
        );
    }
    Ok(resp)
}

fn topology_only(labels: BTreeMap<String, String>) -> BTreeMap<String, String> {
    labels
        .into_iter()
        .filter(|(k, _)| k == TOPOLOGY_REGION || k == TOPOLOGY_ZONE)
        .collect()
}

/// The region and zone labels of Node `name` (absent labels are left out).
pub async fn topology_labels(
    api: &ApiServer,
    name: &str,
) -> anyhow::Result<BTreeMap<String, String>> {
    let url = api.url(&format!("/api/v1/nodes/{name}"));
    let resp = checked(
        "GET",
        &url,
        api.client()?
            .get(&url)
            .bearer_auth(&api.token)
            .send()
            .await?,
    )
    .await?;
    let node: NodeObject = resp.json().await?;
    Ok(topology_only(node.metadata.labels))
}

/// Every Node's name with its region and zone labels.
pub async fn nodes_topology(
    api: &ApiServer,
) -> anyhow::Result<Vec<(String, BTreeMap<String, String>)>> {
    let url = api.url("/api/v1/nodes");
    let resp = checked(
        "GET",
        &url,
        api.client()?
            .get(&url)
            .bearer_auth(&api.token)
            .send()
            .await?,
    )
    .await?;
    let list: NodeList = resp.json().await?;
    Ok(list
        .items
        .into_iter()
        .map(|n| (n.metadata.name, topology_only(n.metadata.labels)))
        .collect())
}

/// Set labels on Node `name` (a JSON merge patch: other labels stay).
pub async fn set_labels(
    api: &ApiServer,
    name: &str,
    labels: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let url = api.url(&format!("/api/v1/nodes/{name}"));
    let body = serde_json::json!({ "metadata": { "labels": labels } });
    let req = api
        .client()?
        .patch(&url)
        .bearer_auth(&api.token)
        .header("Content-Type", "application/merge-patch+json")
        .body(body.to_string());
    checked("PATCH", &url, req.send().await?).await?;
    Ok(())
}
