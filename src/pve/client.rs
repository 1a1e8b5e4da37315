//! HTTP client for one Proxmox VE cluster.

use super::error::PveError;
use super::observer::{Observer, Silent};
use super::resources::{ResourceCache, Resources};
use super::task_pace::TaskPace;
use super::types::*;
use super::upid::{exitstatus_is_ok, Upid};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// How the driver proves who it is to PVE.
#[derive(Clone)]
pub enum Credentials {
    /// API token: `user@realm!tokenid` and its secret. No CSRF token needed.
    Token { id: String, secret: String },
    /// User and password: a ticket from /access/ticket, renewed before its 2 h lifetime ends.
    Password { username: String, password: String },
}

impl std::fmt::Debug for Credentials {
    // Never print secrets, even in debug logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Token { id, .. } => write!(f, "Token({id})"),
            Credentials::Password { username, .. } => write!(f, "Password({username})"),
        }
    }
}

/// Where and how to reach one cluster.
#[derive(Debug, Clone)]
pub struct PveEndpoint {
    /// Base URL up to and including `/api2/json`.
    pub url: String,
    pub credentials: Credentials,
    /// Skip TLS verification. Off by default; only for lab clusters.
    pub insecure: bool,
    /// PEM file with the CA that signed the PVE certificate.
    pub ca_file: Option<std::path::PathBuf>,
    /// Accept a plain `http://` url: credentials then cross the network
    /// unencrypted. Off by default; for the simulator and local tests.
    pub allow_http: bool,
    /// Per-request timeout.
    pub timeout: Duration,
    /// HTTP requests in flight at once to this cluster; the rest wait here
    /// (pveproxy serves a few at a time and queues the others anyway).
    pub max_connections: usize,
}

/// `max_connections` when the config file gives none.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4;

struct Ticket {
    cookie: String,
    csrf: String,
    issued: Instant,
}

/// Tickets live 2 h; renew well before so a long task poll never hits expiry.
const TICKET_RENEW_AFTER: Duration = Duration::from_secs(90 * 60);

pub struct PveClient {
    http: reqwest::Client,
    base: String,
    credentials: Credentials,
    ticket: Mutex<Option<Ticket>>,
    observer: Arc<dyn Observer>,
    /// Bounds the requests in flight (`PveEndpoint::max_connections`).
    in_flight: Arc<tokio::sync::Semaphore>,
    /// The shared `/cluster/resources` view, when enabled.
    resources: Option<ResourceCache>,
    task_pace: TaskPace,
}

#[derive(Deserialize)]
struct Envelope<T> {
    data: T,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    errors: Option<BTreeMap<String, serde_json::Value>>,
}

pub type Params = Vec<(String, String)>;

/// Builds a parameter list: `params![("vmid", 101), ("size", "1G")]`.
#[macro_export]
macro_rules! params {
    ($(($k:expr, $v:expr)),* $(,)?) => {
        vec![$(($k.to_string(), $v.to_string())),*]
    };
}

impl PveClient {
    /// Who this client acts as: the token id or the user name (as task UPIDs name it).
    pub fn principal(&self) -> &str {
        match &self.credentials {
            Credentials::Token { id, .. } => id,
            Credentials::Password { username, .. } => username,
        }
    }

    pub fn new(endpoint: &PveEndpoint) -> Result<PveClient, PveError> {
        let mut builder = reqwest::Client::builder()
            .timeout(endpoint.timeout)
            .connect_timeout(Duration::from_secs(10))
            .danger_accept_invalid_certs(endpoint.insecure)
            // Never follow a redirect: reqwest would re-send the request, the ticket
            // login body (username and password) included, to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("proxmox-csi/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(endpoint.max_connections.max(1));
        if let Some(ca) = &endpoint.ca_file {
            let pem = std::fs::read(ca).map_err(|e| {
                PveError::Config(format!("cannot read CA file {}: {e}", ca.display()))
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                PveError::Config(format!("CA file {} is not PEM: {e}", ca.display()))
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder
            .build()
            .map_err(|e| PveError::Config(format!("HTTP client: {e}")))?;
        let base = endpoint.url.trim_end_matches('/').to_string();
        check_scheme(&base, endpoint.allow_http)?;
        Ok(PveClient {
            http,
            base,
            credentials: endpoint.credentials.clone(),
            ticket: Mutex::new(None),
            observer: Arc::new(Silent),
            in_flight: Arc::new(tokio::sync::Semaphore::new(endpoint.max_connections.max(1))),
            resources: None,
            task_pace: TaskPace::default(),
        })
    }

    /// Answer `vms()` and `storages()` from one `/cluster/resources` read
    /// shared for up to `ttl` and dropped on this client's writes (see
    /// `resources.rs`); `ttl` zero keeps every read fresh.
    pub fn with_resource_cache(mut self, ttl: Duration) -> PveClient {
        self.resources = (!ttl.is_zero()).then(|| ResourceCache::new(ttl));
        self
    }

    fn invalidate_resources(&self) {
        if let Some(c) = &self.resources {
            c.invalidate();
        }
    }

    /// The shared view (a fresh read without a cache).
    pub async fn resources(&self) -> Result<Arc<Resources>, PveError> {
        let fetch = || async {
            let entries: Vec<serde_json::Value> = self.get("/cluster/resources", &vec![]).await?;
            Resources::from_entries(entries).map_err(|detail| PveError::Decode {
                method: "GET".into(),
                path: "/cluster/resources".into(),
                detail,
            })
        };
        match &self.resources {
            Some(c) => c.get(fetch).await,
            None => Ok(Arc::new(fetch().await?)),
        }
    }

    /// Reports every request and task to `observer` (metrics) from now on.
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> PveClient {
        self.observer = observer;
        self
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn ticket(&self, force_new: bool) -> Result<(String, String), PveError> {
        let Credentials::Password { username, password } = &self.credentials else {
            return Err(PveError::Config(
                "ticket requested for token credentials".into(),
            ));
        };
        let mut guard = self.ticket.lock().await;
        if let Some(t) = guard.as_ref() {
            if !force_new && t.issued.elapsed() < TICKET_RENEW_AFTER {
                return Ok((t.cookie.clone(), t.csrf.clone()));
            }
        }
        #[derive(Deserialize)]
        struct TicketData {
            ticket: String,
            #[serde(rename = "CSRFPreventionToken")]
            csrf: String,
        }
        let path = "/access/ticket";
        let resp = self
            .http
            .post(format!("{}{}", self.base, path))
            .form(&[
                ("username", username.as_str()),
                ("password", password.as_str()),
            ])
            .send()
            .await
            .map_err(|source| PveError::Transport {
                method: "POST".into(),
                path: path.into(),
                source,
            })?;
        let data: TicketData = Self::decode("POST", path, resp).await?;
        *guard = Some(Ticket {
            cookie: data.ticket.clone(),
            csrf: data.csrf.clone(),
            issued: Instant::now(),
        });
        Ok((data.ticket, data.csrf))
    }

    async fn decode<T: DeserializeOwned>(
        method: &str,
        path: &str,
        resp: reqwest::Response,
    ) -> Result<T, PveError> {
        let status = resp.status();
        refuse_redirect(method, path, &resp)?;
        // PVE puts its error text in the HTTP reason phrase; hyper keeps a
        // non-standard phrase as a response extension.
        let reason = resp
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .map(|r| String::from_utf8_lossy(r.as_bytes()).to_string())
            .or_else(|| status.canonical_reason().map(str::to_string))
            .unwrap_or_default();
        let bytes = resp.bytes().await.map_err(|source| PveError::Transport {
            method: method.into(),
            path: path.into(),
            source,
        })?;
        if !status.is_success() {
            let body: ErrorBody = serde_json::from_slice(&bytes).unwrap_or_default();
            let message = body
                .message
                .map(|m| m.trim().to_string())
                .filter(|m| !m.is_empty())
                .unwrap_or(reason);
            let param_errors = body
                .errors
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        v.as_str()
                            .map(|s| s.trim().to_string())
                            .unwrap_or_else(|| v.to_string()),
                    )
                })
                .collect();
            return Err(PveError::Api {
                method: method.into(),
                path: path.into(),
                status: status.as_u16(),
                message,
                param_errors,
            });
        }
        let env: Envelope<T> = serde_json::from_slice(&bytes).map_err(|e| PveError::Decode {
            method: method.into(),
            path: path.into(),
            detail: format!(
                "{e}: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(300)])
            ),
        })?;
        Ok(env.data)
    }

    /// One API call. GET/DELETE carry parameters in the query, POST/PUT as a form.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        params: &Params,
    ) -> Result<T, PveError> {
        let mut retried_auth = false;
        loop {
            let url = format!("{}{}", self.base, path);
            let mut req = self.http.request(method.clone(), &url);
            req = if method == reqwest::Method::GET || method == reqwest::Method::DELETE {
                req.query(params)
            } else {
                req.form(params)
            };
            match &self.credentials {
                Credentials::Token { id, secret } => {
                    req = req.header("Authorization", format!("PVEAPIToken={id}={secret}"));
                }
                Credentials::Password { .. } => {
                    let (cookie, csrf) = self.ticket(retried_auth).await?;
                    req = req.header("Cookie", format!("PVEAuthCookie={cookie}"));
                    if method != reqwest::Method::GET {
                        req = req.header("CSRFPreventionToken", csrf);
                    }
                }
            }
            let writes = method != reqwest::Method::GET;
            if writes {
                self.invalidate_resources();
            }
            let _permit = self
                .in_flight
                .clone()
                .acquire_owned()
                .await
                .expect("never closed");
            let sent = Instant::now();
            let resp = req.send().await.map_err(|source| {
                if writes {
                    self.invalidate_resources();
                }
                self.observer
                    .request(method.as_str(), path, None, sent.elapsed());
                PveError::Transport {
                    method: method.to_string(),
                    path: path.into(),
                    source,
                }
            })?;
            let status = resp.status().as_u16();
            // A ticket can be invalidated early (PVE key rotation): get a new one once.
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED
                && matches!(self.credentials, Credentials::Password { .. })
                && !retried_auth
            {
                retried_auth = true;
                self.observer
                    .request(method.as_str(), path, Some(status), sent.elapsed());
                continue;
            }
            let decoded = Self::decode(method.as_str(), path, resp).await;
            if writes {
                self.invalidate_resources();
            }
            self.observer
                .request(method.as_str(), path, Some(status), sent.elapsed());
            return decoded;
        }
    }

    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        params: &Params,
    ) -> Result<T, PveError> {
        self.call(reqwest::Method::GET, path, params).await
    }

    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        params: &Params,
    ) -> Result<T, PveError> {
        self.call(reqwest::Method::POST, path, params).await
    }

    pub async fn put<T: DeserializeOwned>(
        &self,
        path: &str,
        params: &Params,
    ) -> Result<T, PveError> {
        self.call(reqwest::Method::PUT, path, params).await
    }

    pub async fn delete<T: DeserializeOwned>(
        &self,
        path: &str,
        params: &Params,
    ) -> Result<T, PveError> {
        self.call(reqwest::Method::DELETE, path, params).await
    }

    /// Wait for a worker task to stop; a failed task is an error carrying PVE's text.
    pub async fn wait_task(&self, upid: &str, timeout: Duration) -> Result<(), PveError> {
        let parsed = Upid::parse(upid).ok_or_else(|| PveError::Decode {
            method: "GET".into(),
            path: "tasks".into(),
            detail: format!("not a UPID: {upid:?}"),
        })?;
        let path = format!(
            "/nodes/{}/tasks/{}/status",
            parsed.node,
            encode_segment(upid)
        );
        let start = Instant::now();
        // First asked when tasks of this type took lately, or at once for
        // quick ones (task_pace.rs).
        let initial = self.task_pace.initial_wait(&parsed.task_type);
        let waited = !initial.is_zero();
        let mut delay: Option<Duration> = None;
        let mut asks = 0;
        let outcome = async {
            if waited {
                tokio::time::sleep(initial.min(timeout)).await;
            }
            loop {
                let st: TaskStatus = self.get(&path, &vec![]).await?;
                asks += 1;
                if st.status == "stopped" {
                    self.task_pace
                        .learn(&parsed.task_type, start.elapsed(), asks, waited);
                    let exit = st.exitstatus.unwrap_or_default();
                    return if exitstatus_is_ok(&exit) {
                        Ok(())
                    } else {
                        Err(PveError::TaskFailed {
                            upid: upid.to_string(),
                            exitstatus: exit,
                        })
                    };
                }
                if start.elapsed() >= timeout {
                    return Err(PveError::TaskTimeout {
                        upid: upid.to_string(),
                        waited_secs: start.elapsed().as_secs(),
                    });
                }
                let pause = match delay {
                    None if !waited => self
                        .task_pace
                        .first_pause(&parsed.task_type, start.elapsed()),
                    None => TaskPace::next_pause(None),
                    Some(d) => d,
                };
                delay = Some(TaskPace::next_pause(delay));
                tokio::time::sleep(pause).await;
            }
        }
        .await;
        // The task changed what the cluster lists (a VM made, named, locked, gone).
        self.invalidate_resources();
        let result = match &outcome {
            Ok(()) => "ok",
            Err(PveError::TaskFailed { .. }) => "failed",
            Err(PveError::TaskTimeout { .. }) => "timeout",
            // Polling itself failed: the task's own outcome is unknown.
            Err(_) => "error",
        };
        self.observer
            .task(&parsed.task_type, result, start.elapsed());
        outcome
    }

    // ---- typed calls -------------------------------------------------------

    pub async fn version(&self) -> Result<serde_json::Value, PveError> {
        self.get("/version", &vec![]).await
    }

    pub async fn vms(&self) -> Result<Vec<VmResource>, PveError> {
        if self.resources.is_some() {
            return Ok(self.resources().await?.vms.clone());
        }
        self.vms_uncached().await
    }

    /// The VM listing read now, past the shared view: for readers that run
    /// seldom and must see changes of other writers at once (the labeller).
    pub async fn vms_uncached(&self) -> Result<Vec<VmResource>, PveError> {
        let all: Vec<VmResource> = self
            .get("/cluster/resources", &params![("type", "vm")])
            .await?;
        Ok(all.into_iter().filter(|v| v.kind == "qemu").collect())
    }

    pub async fn storages(&self) -> Result<Vec<StorageResource>, PveError> {
        if self.resources.is_some() {
            return Ok(self.resources().await?.storages.clone());
        }
        self.get("/cluster/resources", &params![("type", "storage")])
            .await
    }

    pub async fn storage_status(
        &self,
        node: &str,
        storage: &str,
    ) -> Result<StorageStatus, PveError> {
        self.get(&format!("/nodes/{node}/storage/{storage}/status"), &vec![])
            .await
    }

    pub async fn storage_content(
        &self,
        node: &str,
        storage: &str,
        vmid: Option<u64>,
    ) -> Result<Vec<ContentItem>, PveError> {
        let mut p = params![("content", "images")];
        if let Some(vmid) = vmid {
            p.push(("vmid".into(), vmid.to_string()));
        }
        self.get(&format!("/nodes/{node}/storage/{storage}/content"), &p)
            .await
    }

    /// Allocate a disk; `size_kib` is sent bare, which PVE reads as KiB.
    pub async fn alloc_disk(
        &self,
        node: &str,
        storage: &str,
        vmid: u64,
        filename: &str,
        size_kib: u64,
        format: &str,
    ) -> Result<String, PveError> {
        let p = params![
            ("vmid", vmid),
            ("filename", filename),
            ("size", size_kib),
            ("format", format)
        ];
        self.post(&format!("/nodes/{node}/storage/{storage}/content"), &p)
            .await
    }

    /// `Ok(None)` when PVE says the volume does not exist.
    pub async fn volume_info(
        &self,
        node: &str,
        storage: &str,
        volid: &str,
    ) -> Result<Option<VolumeInfo>, PveError> {
        match self
            .get(
                &format!(
                    "/nodes/{node}/storage/{storage}/content/{}",
                    encode_segment(volid)
                ),
                &vec![],
            )
            .await
        {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Free a volume and wait for the `imgdel` task.
    pub async fn free_volume(
        &self,
        node: &str,
        storage: &str,
        volid: &str,
        timeout: Duration,
    ) -> Result<(), PveError> {
        let upid: Option<String> = self
            .delete(
                &format!(
                    "/nodes/{node}/storage/{storage}/content/{}",
                    encode_segment(volid)
                ),
                &vec![],
            )
            .await?;
        match upid {
            Some(u) if u.starts_with("UPID:") => self.wait_task(&u, timeout).await,
            _ => Ok(()),
        }
    }

    /// VM config. `current = true` shows only what is applied to the running
    /// VM; the default view also merges pending (not yet hot-plugged) changes.
    pub async fn vm_config(
        &self,
        node: &str,
        vmid: u64,
        current: bool,
    ) -> Result<VmConfig, PveError> {
        let p = if current {
            params![("current", 1)]
        } else {
            vec![]
        };
        let path = format!("/nodes/{node}/qemu/{vmid}/config");
        let v: serde_json::Value = self.get(&path, &p).await?;
        VmConfig::from_json(v).ok_or_else(|| PveError::Decode {
            method: "GET".into(),
            path,
            detail: "config is not an object".into(),
        })
    }

    /// The VM's disk slots, applied and pending alike (one request).
    pub async fn vm_slots(&self, node: &str, vmid: u64) -> Result<Vec<SlotView>, PveError> {
        let entries: Vec<PendingEntry> = self
            .get(&format!("/nodes/{node}/qemu/{vmid}/pending"), &vec![])
            .await?;
        Ok(slot_views(&entries))
    }

    /// The VM config as it was when snapshot `snapname` was taken.
    pub async fn vm_snapshot_config(
        &self,
        node: &str,
        vmid: u64,
        snapname: &str,
    ) -> Result<VmConfig, PveError> {
        let path = format!("/nodes/{node}/qemu/{vmid}/config");
        let v: serde_json::Value = self.get(&path, &params![("snapshot", snapname)]).await?;
        VmConfig::from_json(v).ok_or_else(|| PveError::Decode {
            method: "GET".into(),
            path,
            detail: "config is not an object".into(),
        })
    }

    /// Asynchronous config update (POST); waits for the `qmconfig` task.
    pub async fn update_vm_config(
        &self,
        node: &str,
        vmid: u64,
        params: &Params,
        timeout: Duration,
    ) -> Result<(), PveError> {
        let upid: Option<String> = self
            .post(&format!("/nodes/{node}/qemu/{vmid}/config"), params)
            .await?;
        match upid {
            Some(u) if u.starts_with("UPID:") => self.wait_task(&u, timeout).await,
            _ => Ok(()),
        }
    }

    /// Synchronous config update (PUT): for options that apply at once
    /// (description, tags), without a worker task to wait for.
    pub async fn set_vm_config_sync(
        &self,
        node: &str,
        vmid: u64,
        params: &Params,
    ) -> Result<(), PveError> {
        let _: serde_json::Value = self
            .put(&format!("/nodes/{node}/qemu/{vmid}/config"), params)
            .await?;
        Ok(())
    }

    /// Remove disks from a VM config without freeing volumes it does not own.
    pub async fn unlink(&self, node: &str, vmid: u64, slots: &[String]) -> Result<(), PveError> {
        let _: serde_json::Value = self
            .put(
                &format!("/nodes/{node}/qemu/{vmid}/unlink"),
                &params![("idlist", slots.join(","))],
            )
            .await?;
        Ok(())
    }

    /// Grow an attached disk to `size_bytes` (absolute; bare number = bytes).
    pub async fn resize(
        &self,
        node: &str,
        vmid: u64,
        slot: &str,
        size_bytes: u64,
        timeout: Duration,
    ) -> Result<(), PveError> {
        let upid: Option<String> = self
            .put(
                &format!("/nodes/{node}/qemu/{vmid}/resize"),
                &params![("disk", slot), ("size", size_bytes)],
            )
            .await?;
        match upid {
            Some(u) if u.starts_with("UPID:") => self.wait_task(&u, timeout).await,
            _ => Ok(()),
        }
    }

    async fn task_or_done(&self, upid: Option<String>, timeout: Duration) -> Result<(), PveError> {
        match upid {
            Some(u) if u.starts_with("UPID:") => self.wait_task(&u, timeout).await,
            _ => Ok(()),
        }
    }

    /// Create a VM (`qmcreate` task) with the given config options.
    pub async fn create_vm(
        &self,
        node: &str,
        vmid: u64,
        options: &Params,
        timeout: Duration,
    ) -> Result<(), PveError> {
        let mut p = params![("vmid", vmid)];
        p.extend(options.iter().cloned());
        let upid: Option<String> = self.post(&format!("/nodes/{node}/qemu"), &p).await?;
        self.task_or_done(upid, timeout).await
    }

    /// Destroy a VM and every volume it owns, snapshots included.
    pub async fn destroy_vm(
        &self,
        node: &str,
        vmid: u64,
        timeout: Duration,
    ) -> Result<(), PveError> {
        let p = params![("purge", 1), ("destroy-unreferenced-disks", 1)];
        let upid: Option<String> = self
            .delete(&format!("/nodes/{node}/qemu/{vmid}"), &p)
            .await?;
        self.task_or_done(upid, timeout).await
    }

    pub async fn snapshots(&self, node: &str, vmid: u64) -> Result<Vec<SnapshotInfo>, PveError> {
        let all: Vec<SnapshotInfo> = self
            .get(&format!("/nodes/{node}/qemu/{vmid}/snapshot"), &vec![])
            .await?;
        // "current" is PVE's marker for the live state, not a snapshot.
        Ok(all.into_iter().filter(|s| s.name != "current").collect())
    }

    pub async fn create_snapshot(
        &self,
        node: &str,
        vmid: u64,
        snapname: &str,
        description: &str,
        timeout: Duration,
    ) -> Result<(), PveError> {
        let p = params![("snapname", snapname), ("description", description)];
        let upid: Option<String> = self
            .post(&format!("/nodes/{node}/qemu/{vmid}/snapshot"), &p)
            .await?;
        self.task_or_done(upid, timeout).await
    }

    pub async fn delete_snapshot(
        &self,
        node: &str,
        vmid: u64,
        snapname: &str,
        timeout: Duration,
    ) -> Result<(), PveError> {
        let upid: Option<String> = self
            .delete(
                &format!("/nodes/{node}/qemu/{vmid}/snapshot/{snapname}"),
                &vec![],
            )
            .await?;
        self.task_or_done(upid, timeout).await
    }

    /// Full clone of a VM (optionally of one of its snapshots) into `newid`.
    pub async fn clone_vm(
        &self,
        node: &str,
        vmid: u64,
        newid: u64,
        options: &Params,
        timeout: Duration,
    ) -> Result<(), PveError> {
        let mut p = params![("newid", newid), ("full", 1)];
        p.extend(options.iter().cloned());
        let upid: Option<String> = self
            .post(&format!("/nodes/{node}/qemu/{vmid}/clone"), &p)
            .await?;
        self.task_or_done(upid, timeout).await
    }
}

/// `https://` always; `http://` only with the explicit opt-in, since a token or
/// password would then travel unencrypted.
fn check_scheme(base: &str, allow_http: bool) -> Result<(), PveError> {
    if base.starts_with("https://") {
        return Ok(());
    }
    if base.starts_with("http://") {
        if allow_http {
            return Ok(());
        }
        return Err(PveError::Config(format!(
            "url {base:?} is plain http://: the API token or password would cross the network unencrypted; \
             use https://, or set allow_http: true for this cluster if that is really wanted (local tests, the simulator)"
        )));
    }
    Err(PveError::Config(format!(
        "url {base:?} must start with https://"
    )))
}

/// A 3xx answer is never followed (see `PveClient::new`) and never a success:
/// PVE itself does not redirect API calls, so something in between is sending
/// the driver elsewhere.
fn refuse_redirect(method: &str, path: &str, resp: &reqwest::Response) -> Result<(), PveError> {
    if !resp.status().is_redirection() {
        return Ok(());
    }
    let location = resp
        .headers()
        .get(reqwest::header::LOCATION)
        .map(|l| String::from_utf8_lossy(l.as_bytes()).to_string())
        .unwrap_or_else(|| "(no Location header)".into());
    Err(PveError::Redirect {
        method: method.into(),
        path: path.into(),
        status: resp.status().as_u16(),
        location,
    })
}

/// Everything but RFC 3986's unreserved characters: volume ids contain ':' and '/', UPIDs '@' and '!'.
const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Percent-encode one path segment.
pub fn encode_segment(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, SEGMENT).to_string()
}

// ---- calls used by `proxmox-csi doctor` -------------------------------------

impl PveClient {
    /// `GET /version` without credentials: proves TLS and HTTP work before
    /// authentication is tried, so the two kinds of failure can be told apart.
    /// Any HTTP answer is returned as its status; only transport errors fail.
    pub async fn probe_unauthenticated(&self) -> Result<u16, PveError> {
        let path = "/version";
        let resp = self
            .http
            .get(format!("{}{}", self.base, path))
            .send()
            .await
            .map_err(|source| PveError::Transport {
                method: "GET".into(),
                path: path.into(),
                source,
            })?;
        refuse_redirect("GET", path, &resp)?;
        Ok(resp.status().as_u16())
    }

    /// Every guest (VMs and containers) from `/cluster/resources?type=vm`;
    /// a container's vmid owns `vm-<vmid>-*` disks just like a VM's.
    pub async fn guests(&self) -> Result<Vec<VmResource>, PveError> {
        self.get("/cluster/resources", &params![("type", "vm")])
            .await
    }

    /// The caller's effective privileges on one ACL path (`GET /access/permissions?path=`).
    pub async fn permissions_on(&self, acl_path: &str) -> Result<Vec<String>, PveError> {
        let all: BTreeMap<String, BTreeMap<String, serde_json::Value>> = self
            .get("/access/permissions", &params![("path", acl_path)])
            .await?;
        // The value is PVE's propagate flag, not a grant bit: a listed privilege is held.
        Ok(all
            .get(acl_path)
            .map(|privs| privs.keys().cloned().collect())
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_volume_ids() {
        assert_eq!(
            encode_segment("local:9999/vm-9999-csi-a.raw"),
            "local%3A9999%2Fvm-9999-csi-a.raw"
        );
        assert_eq!(
            encode_segment("UPID:pve1:00:01:qm:101:a@b!c:"),
            "UPID%3Apve1%3A00%3A01%3Aqm%3A101%3Aa%40b%21c%3A"
        );
    }

    #[test]
    fn rejects_non_http_urls() {
        let ep = PveEndpoint {
            url: "pve.example:8006".into(),
            credentials: Credentials::Token {
                id: "a@pve!b".into(),
                secret: "s".into(),
            },
            insecure: false,
            ca_file: None,
            allow_http: false,
            timeout: Duration::from_secs(5),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        };
        assert!(matches!(PveClient::new(&ep), Err(PveError::Config(_))));
    }

    #[test]
    fn plain_http_needs_allow_http() {
        let mut ep = PveEndpoint {
            url: "http://127.0.0.1:8006/api2/json".into(),
            credentials: Credentials::Token {
                id: "a@pve!b".into(),
                secret: "s".into(),
            },
            insecure: false,
            ca_file: None,
            allow_http: false,
            timeout: Duration::from_secs(5),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        };
        let err = PveClient::new(&ep)
            .err()
            .expect("http:// without allow_http is refused")
            .to_string();
        assert!(
            err.contains("allow_http: true") && err.contains("unencrypted"),
            "{err}"
        );
        ep.allow_http = true;
        assert!(PveClient::new(&ep).is_ok());
    }

    /// Requests a listener is answering at once, at most, over its life:
    /// each is answered 100 ms after it arrived.
    fn slow_listener(
        listener: tokio::net::TcpListener,
    ) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let active = std::sync::Arc::new(AtomicUsize::new(0));
        let most = std::sync::Arc::new(AtomicUsize::new(0));
        let seen = most.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (active, most) = (active.clone(), most.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match sock.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.clear();
                        let now = active.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        active.fetch_sub(1, Ordering::SeqCst);
                        let body = r#"{"data":{"version":"8.4.1"}}"#;
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if sock.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        seen
    }

    #[tokio::test]
    async fn requests_in_flight_are_bounded_per_cluster() {
        for (bound, calls) in [(2usize, 8usize), (8, 8)] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/api2/json", listener.local_addr().unwrap());
            let most = slow_listener(listener);
            let mut ep = endpoint(
                &url,
                Credentials::Token {
                    id: "a@pve!b".into(),
                    secret: "s".into(),
                },
            );
            ep.max_connections = bound;
            let client = PveClient::new(&ep).unwrap();
            let all = futures::future::join_all((0..calls).map(|_| client.version())).await;
            assert!(all.iter().all(|r| r.is_ok()), "{all:?}");
            let most = most.load(std::sync::atomic::Ordering::SeqCst);
            if bound < calls {
                assert!(
                    most <= bound,
                    "{most} requests at once with max_connections {bound}"
                );
            } else {
                // Without a tighter bound they do overlap: the check above can fail.
                assert!(most > 2, "only {most} at once with max_connections {bound}");
            }
        }
    }

    /// Everything a listener received, connection by connection, until the test ends.
    fn recording_listener(
        listener: tokio::net::TcpListener,
    ) -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
        use tokio::io::AsyncReadExt;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let s = s.clone();
                s.lock().unwrap().extend_from_slice(b"<connection>");
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = conn.read(&mut buf).await {
                        s.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                });
            }
        });
        seen
    }

    /// A server answering every request with `307` to `location`.
    fn redirecting_listener(listener: tokio::net::TcpListener, location: String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let location = location.clone();
                tokio::spawn(async move {
                    // One request per connection: read its head (and a short body), answer, close.
                    let mut buf = vec![0u8; 8192];
                    let _ = conn.read(&mut buf).await;
                    let answer = format!(
                        "HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = conn.write_all(answer.as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
    }

    async fn redirect_pair() -> (String, String, std::sync::Arc<std::sync::Mutex<Vec<u8>>>) {
        let elsewhere = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let location = format!(
            "http://{}/api2/json/access/ticket",
            elsewhere.local_addr().unwrap()
        );
        let seen = recording_listener(elsewhere);
        let front = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api2/json", front.local_addr().unwrap());
        redirecting_listener(front, location.clone());
        (url, location, seen)
    }

    fn endpoint(url: &str, credentials: Credentials) -> PveEndpoint {
        PveEndpoint {
            url: url.into(),
            credentials,
            insecure: false,
            ca_file: None,
            allow_http: true,
            timeout: Duration::from_secs(5),
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }

    #[tokio::test]
    async fn redirect_is_not_followed_and_password_stays_here() {
        let (url, location, seen) = redirect_pair().await;
        let creds = Credentials::Password {
            username: "root@pam".into(),
            password: "s3cret-pw".into(),
        };
        let client = PveClient::new(&endpoint(&url, creds)).unwrap();
        let err = client.version().await.expect_err("a 307 is no success");
        assert!(
            matches!(err, PveError::Redirect { status: 307, .. }),
            "{err:?}"
        );
        let text = err.to_string();
        assert!(text.contains(&location) && text.contains("307"), "{text}");
        assert!(
            !err.is_unavailable(),
            "a redirect is not retried as an outage"
        );
        // Give a followed request time to arrive, then check none did.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let got = String::from_utf8_lossy(&seen.lock().unwrap()).to_string();
        assert!(got.is_empty(), "the redirect target was contacted: {got:?}");
        assert!(!got.contains("s3cret-pw"));
    }

    #[tokio::test]
    async fn redirect_with_token_and_unauthenticated_probe_fail() {
        let (url, location, seen) = redirect_pair().await;
        let creds = Credentials::Token {
            id: "csi@pve!csi".into(),
            secret: "tok-secret".into(),
        };
        let client = PveClient::new(&endpoint(&url, creds)).unwrap();
        let err = client
            .get::<serde_json::Value>("/cluster/resources", &vec![])
            .await
            .unwrap_err();
        assert!(err.to_string().contains(&location), "{err}");
        let probe = client.probe_unauthenticated().await.unwrap_err();
        assert!(matches!(probe, PveError::Redirect { .. }), "{probe:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            seen.lock().unwrap().is_empty(),
            "the redirect target was contacted"
        );
    }
}
