//! CSI Controller: allocate and free disks on Proxmox storage, hot-plug them
//! into worker VMs, and report on them. The logic lives in plain async
//! functions on [`Controller`]; `service.rs` only adapts them to gRPC.

pub(crate) mod attach;
pub mod attach_record;
pub(crate) mod cluster;
pub mod copy_snapshots;
pub mod error;
pub(crate) mod expand;
pub mod features;
pub mod holder;
pub(crate) mod inventory;
pub(crate) mod labeller;
pub(crate) mod lookup;
pub(crate) mod modify;
pub(crate) mod paging;
pub(crate) mod params;
pub mod service;
pub(crate) mod snapshot_index;
pub(crate) mod snapshots;
pub(crate) mod storage_limit;
pub mod tenancy;
pub(crate) mod visibility;
pub(crate) mod volumes;

use crate::config::ConfigFile;
use crate::inflight::{InFlight, InFlightGuard};
use crate::pve::PveClient;
use cluster::Cluster;
use error::{ControllerError, Result};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// Holder VMs get the lowest free vmid at or above this, away from the
    /// ids people give their VMs.
    pub holder_vmid_base: u64,
    /// Storage used when a StorageClass gives none.
    pub default_storage: Option<String>,
    /// How long to wait for a PVE worker task.
    pub task_timeout: Duration,
    /// How many driver volumes one VM may have attached (the node reports the same).
    pub max_volumes_per_vm: u32,
    /// Attempts for a VM config edit that meets a lock or a concurrent change.
    pub config_attempts: u32,
    /// Pause between those attempts.
    pub config_retry_delay: Duration,
    /// Allocations and clones this controller runs at once per storage; the rest
    /// queue here instead of on PVE's storage lock (see `storage_limit`).
    pub storage_concurrency: usize,
    /// The Kubernetes cluster's identity when several share one Proxmox cluster
    /// (see `tenancy`); None = holders without a cluster tag, as before cluster ids.
    pub cluster_id: Option<String>,
    /// With a cluster id: also own the holders that carry no cluster tag.
    pub claim_legacy_holders: bool,
    /// How long a recorded publish to a VM that does not have the disk yet
    /// counts as under way (see `attach_record`).
    pub attach_claim_lease: Duration,
    /// How long one read of /cluster/resources answers the VM and storage
    /// listings of every call (dropped at once on this controller's own
    /// writes); zero reads it afresh each time.
    pub resources_ttl: Duration,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            holder_vmid_base: 100_000,
            default_storage: None,
            task_timeout: Duration::from_secs(120),
            max_volumes_per_vm: 24,
            config_attempts: 5,
            config_retry_delay: Duration::from_millis(500),
            storage_concurrency: 2,
            cluster_id: None,
            claim_legacy_holders: true,
            attach_claim_lease: attach_record::default_claim_lease(Duration::from_secs(120)),
            resources_ttl: Duration::from_secs(2),
        }
    }
}

pub struct Controller {
    clusters: BTreeMap<String, Arc<Cluster>>,
    pub opts: ControllerOptions,
    inflight: InFlight,
    storage_limit: storage_limit::StorageLimit,
}

impl Controller {
    pub fn new(config: &ConfigFile, opts: ControllerOptions) -> anyhow::Result<Controller> {
        Self::new_observed(config, opts, Arc::new(crate::metrics::PveMetrics))
    }

    /// Like [`Controller::new`], with every PVE request and task reported to
    /// `observer` instead of the Prometheus metrics (the request-count tests).
    pub fn new_observed(
        config: &ConfigFile,
        opts: ControllerOptions,
        observer: Arc<dyn crate::pve::Observer>,
    ) -> anyhow::Result<Controller> {
        let mut clusters = BTreeMap::new();
        for c in &config.clusters {
            if let Some(id) = &opts.cluster_id {
                tenancy::validate_cluster_id(id).map_err(anyhow::Error::msg)?;
            }
            let tenancy = tenancy::Tenancy {
                cluster_id: opts.cluster_id.clone(),
                claim_legacy: opts.claim_legacy_holders,
                pool: c.pool.clone(),
            };
            let client = PveClient::new(&c.endpoint()?)?
                .with_observer(observer.clone())
                .with_resource_cache(opts.resources_ttl);
            clusters.insert(
                c.region.clone(),
                Arc::new(Cluster::new(c.region.clone(), client).with_tenancy(tenancy)),
            );
        }
        Ok(Controller {
            clusters,
            storage_limit: storage_limit::StorageLimit::new(opts.storage_concurrency),
            opts,
            inflight: InFlight::default(),
        })
    }

    pub fn cluster(&self, region: &str) -> Option<&Arc<Cluster>> {
        self.clusters.get(region)
    }

    pub fn clusters(&self) -> impl Iterator<Item = &Arc<Cluster>> {
        self.clusters.values()
    }

    /// One operation per key at a time; others get Aborted. Keys are made by
    /// [`lookup::disk_key`] (every call touching a PVE disk) and
    /// [`lookup::name_key`] (CreateVolume/CreateSnapshot by name).
    fn begin(&self, key: &str) -> Result<InFlightGuard> {
        self.inflight.try_acquire(key).ok_or_else(|| {
            ControllerError::Aborted(format!(
                "an operation on {} is already in progress",
                crate::volume_id::shorten(key)
            ))
        })
    }

    /// Run a PVE operation again while PVE reports contention (a config or
    /// storage lock timed out, the VM is locked for a moment, or the digest
    /// changed under us), with a jittered pause; then Aborted, so the CO retries.
    pub(crate) async fn retry_contended<T, F, Fut>(&self, mut attempt_once: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match attempt_once().await {
                Err(ControllerError::Pve { source, context }) if source.is_contention() => {
                    if attempt >= self.opts.config_attempts {
                        return Err(ControllerError::Aborted(format!(
                            "{context}: {source} (gave up after {attempt} attempts)"
                        )));
                    }
                    tracing::warn!(attempt, error = %source, "{context}: PVE busy, retrying");
                    let base = self.opts.config_retry_delay;
                    let jitter = base.mul_f64(rand::random::<f64>() * 0.5);
                    tokio::time::sleep(base + jitter).await;
                }
                other => return other,
            }
        }
    }
}

pub(crate) fn required<'a>(value: &'a str, field: &str) -> Result<&'a str> {
    if value.is_empty() {
        Err(ControllerError::InvalidArgument(format!(
            "{field}: required"
        )))
    } else {
        Ok(value)
    }
}
