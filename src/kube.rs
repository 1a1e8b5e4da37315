//! The few Kubernetes API calls the driver makes about Node objects: the
//! node plugin reads its Node's topology labels, the controller can keep
//! them equal to where each worker VM runs.
//!
//! Which Proxmox node a worker VM runs on is known to Proxmox, not to the
//! guest; clusters carry it as the Node's `topology.kubernetes.io/*` labels.
//! Three plain HTTP calls with the pod's service account. No Kubernetes client
//! crate (kube-rs with k8s-openapi) is pulled in for them: it would add the
//! generated types of the whole Kubernetes API to the build for three requests.

use crate::volume_id::{TOPOLOGY_REGION, TOPOLOGY_ZONE};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Where the bearer token comes from.
pub enum Token {
    /// A fixed token (tests).
    Static(String),
    /// A file read before every request: kubelet rotates projected service-account
    /// tokens in place (they expire after an hour by default), so a token read once at
    /// start would stop working while the process keeps running.
    File(PathBuf),
}

/// Where and how to reach the API server: one HTTP client (one connection pool, one
/// TLS set-up) for the life of the process.
pub struct ApiServer {
    base_url: String,
    token: Token,
    http: reqwest::Client,
}

impl ApiServer {
    pub fn new(base_url: String, token: Token, ca_pem: Option<&[u8]>) -> anyhow::Result<Self> {
        let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(10));
        if let Some(pem) = ca_pem {
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(pem)?);
        }
        Ok(ApiServer {
            base_url,
            token,
            http: builder.build()?,
        })
    }

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
        let token = Token::File(dir.join("token"));
        // Fail at start, not at the first call, when no token is mounted.
        read_token(&token)?;
        let ca_pem = std::fs::read(dir.join("ca.crt")).ok();
        ApiServer::new(format!("https://{host}:{port}"), token, ca_pem.as_deref())
    }

    /// A request with the current token.
    fn request(
        &self,
        method: reqwest::Method,
        path: &str,
    ) -> anyhow::Result<(String, reqwest::RequestBuilder)> {
        let url = format!("{}{path}", self.base_url.trim_end_matches('/'));
        let req = self
            .http
            .request(method, &url)
            .bearer_auth(read_token(&self.token)?);
        Ok((url, req))
    }
}

fn read_token(token: &Token) -> anyhow::Result<String> {
    match token {
        Token::Static(t) => Ok(t.clone()),
        Token::File(path) => std::fs::read_to_string(path)
            .map(|t| t.trim().to_string())
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot read the service account token {} ({e}); is automountServiceAccountToken off?",
                    path.display()
                )
            }),
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
    let (url, req) = api.request(reqwest::Method::GET, &format!("/api/v1/nodes/{name}"))?;
    let resp = checked("GET", &url, req.send().await?).await?;
    let node: NodeObject = resp.json().await?;
    Ok(topology_only(node.metadata.labels))
}

/// Every Node's name with its region and zone labels.
pub async fn nodes_topology(
    api: &ApiServer,
) -> anyhow::Result<Vec<(String, BTreeMap<String, String>)>> {
    let (url, req) = api.request(reqwest::Method::GET, "/api/v1/nodes")?;
    let resp = checked("GET", &url, req.send().await?).await?;
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
    let body = serde_json::json!({ "metadata": { "labels": labels } });
    let (url, req) = api.request(reqwest::Method::PATCH, &format!("/api/v1/nodes/{name}"))?;
    let req = req
        .header("Content-Type", "application/merge-patch+json")
        .body(body.to_string());
    checked("PATCH", &url, req.send().await?).await?;
    Ok(())
}
