//! The driver's configuration file: which Proxmox clusters to talk to.
//!
//! ```yaml
//! clusters:
//!   - region: pve-a                 # topology.kubernetes.io/region of this cluster's nodes
//!     url: https://pve-a.example:8006/api2/json
//!     token_id: "kubernetes-csi@pve!csi"
//!     token_secret: "..."           # or username/password for ticket auth
//!     ca_file: /etc/proxmox-csi/ca.pem   # optional; insecure: true skips verification
//!     # allow_http: true            # accept a plain http:// url (simulator, local tests only)
//!     # pool: k8s-prod              # PVE resource pool the holder VMs are created in
//! ```

use crate::pve::{Credentials, PveEndpoint};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub clusters: Vec<ClusterConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub region: String,
    pub url: String,
    #[serde(default)]
    pub token_id: Option<String>,
    #[serde(default)]
    pub token_secret: Option<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    #[serde(default)]
    pub insecure: bool,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Accept a plain `http://` url. Without it such a url is refused: the token
    /// or password would cross the network unencrypted.
    #[serde(default)]
    pub allow_http: bool,
    /// Seconds one HTTP request may take.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// PVE resource pool holder VMs are created and cloned into (PVE's `pool`
    /// parameter). Privileges granted on `/pool/<pool>` then cover every holder.
    #[serde(default)]
    pub pool: Option<String>,
    /// HTTP requests the driver has in flight to this cluster at once
    /// (pveproxy runs 3 workers by default and queues the rest).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

fn default_max_connections() -> usize {
    crate::pve::client::DEFAULT_MAX_CONNECTIONS
}

fn default_timeout() -> u64 {
    30
}

impl ConfigFile {
    pub fn load(path: &Path) -> anyhow::Result<ConfigFile> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("config file {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<ConfigFile> {
        let cfg: ConfigFile = serde_yaml_ng::from_str(text)?;
        if cfg.clusters.is_empty() {
            anyhow::bail!("clusters: at least one cluster is required");
        }
        let mut seen = std::collections::HashSet::new();
        for c in &cfg.clusters {
            if c.region.is_empty() || c.region.contains('/') {
                anyhow::bail!(
                    "clusters[].region {:?}: must be non-empty and contain no '/'",
                    c.region
                );
            }
            if !seen.insert(c.region.clone()) {
                anyhow::bail!("clusters[].region {:?} appears twice", c.region);
            }
            c.endpoint()?;
            if let Some(p) = &c.pool {
                crate::controller::tenancy::validate_pool(p)
                    .map_err(|e| anyhow::anyhow!("clusters[{}].{e}", c.region))?;
            }
        }
        Ok(cfg)
    }
}

impl ClusterConfig {
    pub fn endpoint(&self) -> anyhow::Result<PveEndpoint> {
        let credentials = match (
            &self.token_id,
            &self.token_secret,
            &self.username,
            &self.password,
        ) {
            (Some(id), Some(secret), None, None) => {
                if !id.contains('!') || !id.contains('@') {
                    anyhow::bail!(
                        "clusters[{}].token_id {id:?}: expected USER@REALM!TOKENID",
                        self.region
                    );
                }
                Credentials::Token {
                    id: id.clone(),
                    secret: secret.clone(),
                }
            }
            (None, None, Some(u), Some(p)) => Credentials::Password {
                username: u.clone(),
                password: p.clone(),
            },
            _ => anyhow::bail!(
                "clusters[{}]: give either token_id + token_secret or username + password",
                self.region
            ),
        };
        if self.max_connections == 0 {
            anyhow::bail!(
                "clusters[{}].max_connections: must be at least 1",
                self.region
            );
        }
        if self.url.starts_with("http://") && !self.allow_http {
            anyhow::bail!(
                "clusters[{}].url {:?} is plain http://: the credentials would cross the network unencrypted; \
                 use https://, or set allow_http: true for this cluster (simulator, local tests only)",
                self.region,
                self.url
            );
        }
        Ok(PveEndpoint {
            url: self.url.clone(),
            credentials,
            insecure: self.insecure,
            ca_file: self.ca_file.clone(),
            allow_http: self.allow_http,
            timeout: Duration::from_secs(self.timeout_seconds),
            max_connections: self.max_connections,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_token_cluster() {
        let c = ConfigFile::parse(
            "clusters:\n  - region: a\n    url: https://h:8006/api2/json\n    token_id: u@pve!t\n    token_secret: s\n",
        )
        .unwrap();
        assert_eq!(c.clusters[0].region, "a");
        assert!(!c.clusters[0].insecure);
    }

    #[test]
    fn rejects_mixed_or_missing_credentials() {
        let base = "clusters:\n  - region: a\n    url: https://h/api2/json\n";
        assert!(ConfigFile::parse(base).is_err());
        assert!(ConfigFile::parse(&format!(
            "{base}    token_id: u@pve!t\n    token_secret: s\n    password: p\n"
        ))
        .is_err());
        assert!(ConfigFile::parse(&format!(
            "{base}    token_id: nobang\n    token_secret: s\n"
        ))
        .is_err());
    }

    #[test]
    fn plain_http_needs_allow_http() {
        let base = "clusters:\n  - region: a\n    url: http://h:8006/api2/json\n    token_id: u@pve!t\n    token_secret: s\n";
        let err = ConfigFile::parse(base).unwrap_err().to_string();
        assert!(
            err.contains("allow_http: true") && err.contains("unencrypted"),
            "{err}"
        );
        let c = ConfigFile::parse(&format!("{base}    allow_http: true\n")).unwrap();
        assert!(c.clusters[0].allow_http);
        assert!(c.clusters[0].endpoint().unwrap().allow_http);
        // The key is only needed (and only does something) for http:// urls.
        assert!(
            !ConfigFile::parse(&base.replace("http://", "https://"))
                .unwrap()
                .clusters[0]
                .allow_http
        );
    }

    #[test]
    fn pool_is_checked() {
        let base = "clusters:\n  - region: a\n    url: https://h\n    token_id: u@p!t\n    token_secret: s\n";
        let c = ConfigFile::parse(&format!("{base}    pool: k8s-a\n")).unwrap();
        assert_eq!(c.clusters[0].pool.as_deref(), Some("k8s-a"));
        assert!(ConfigFile::parse(base).unwrap().clusters[0].pool.is_none());
        let err = ConfigFile::parse(&format!("{base}    pool: 9bad\n"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("clusters[a].pool \"9bad\""), "{err}");
    }

    #[test]
    fn rejects_unknown_keys_and_duplicates() {
        assert!(ConfigFile::parse("clusters:\n  - region: a\n    url: https://h\n    token_id: u@p!t\n    token_secret: s\n    tokn: x\n").is_err());
        let one = "  - region: a\n    url: https://h\n    token_id: u@p!t\n    token_secret: s\n";
        assert!(ConfigFile::parse(&format!("clusters:\n{one}{one}")).is_err());
    }
}
