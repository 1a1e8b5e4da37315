//! `proxmox-csi doctor`: checks a Proxmox VE endpoint before install — reachability,
//! credentials, privileges, storages, worker VMs — and says what to fix.
//! Everything here returns a `Report`; printing is the CLI's business.

pub(crate) mod endpoint;
pub(crate) mod error;
pub(crate) mod pool;
pub(crate) mod privileges;
pub(crate) mod report;
pub(crate) mod storages;
pub(crate) mod workers;

pub use error::DoctorError;
pub use privileges::{HOLDER_PRIVS, STORAGE_PRIVS, VM_PRIVS};
pub use report::{Check, Report, Status, Summary};

use crate::config::{ClusterConfig, ConfigFile};
use crate::pve::{Credentials, PveClient};
use report::Recorder;

#[derive(Debug, Clone, Default)]
pub struct DoctorOptions {
    /// Storages the StorageClasses will name; empty = every storage holding disk images.
    pub storages: Vec<String>,
    /// Node ids (worker VM names) to check.
    pub node_ids: Vec<String>,
}

/// Checks every cluster of the config, concurrently; checks keep config order.
pub async fn run(cfg: &ConfigFile, opts: &DoctorOptions) -> Report {
    let per_cluster =
        futures::future::join_all(cfg.clusters.iter().map(|c| check_cluster(c, opts))).await;
    Report {
        checks: per_cluster.into_iter().flatten().collect(),
    }
}

pub async fn check_cluster(cluster: &ClusterConfig, opts: &DoctorOptions) -> Vec<Check> {
    let mut rec = Recorder::new(&cluster.region);
    let ep = match cluster.endpoint() {
        Ok(ep) => ep,
        Err(e) => {
            rec.fail("endpoint", format!("configuration: {e}"));
            return rec.checks;
        }
    };
    let (who, token_auth) = match &ep.credentials {
        Credentials::Token { id, .. } => (format!("token {id}"), true),
        Credentials::Password { username, .. } => (format!("user {username}"), false),
    };
    let client = match PveClient::new(&ep) {
        Ok(c) => c,
        Err(e) => {
            rec.fail(
                "endpoint",
                DoctorError::from_pve(&e, token_auth).to_string(),
            );
            return rec.checks;
        }
    };
    endpoint::transport_security(&mut rec, &cluster.region, &ep);
    // Later steps only repeat the same failure once the endpoint or login does not work.
    if !endpoint::reach(&mut rec, &client, ep.insecure).await
        || !endpoint::authenticate(&mut rec, &client, &who, token_auth).await
    {
        return rec.checks;
    }
    check_inventory(&mut rec, &client, opts, cluster.pool.as_deref()).await;
    rec.checks
}

/// Steps 3-6, against one authenticated client.
async fn check_inventory(
    rec: &mut Recorder,
    client: &PveClient,
    opts: &DoctorOptions,
    pool: Option<&str>,
) {
    let all_storages = match client.storages().await {
        Ok(s) => s,
        Err(e) => {
            rec.fail(
                "storages",
                format!("cannot list storages: {}", DoctorError::from_pve(&e, true)),
            );
            Vec::new()
        }
    };
    let guests = match client.guests().await {
        Ok(g) => g,
        Err(e) => {
            rec.fail(
                "guests",
                format!("cannot list VMs: {}", DoctorError::from_pve(&e, true)),
            );
            Vec::new()
        }
    };
    let storage_ids = storages::select(&all_storages, &opts.storages);
    if storage_ids.is_empty() {
        rec.fail(
            "storages",
            "no storage holds disk images; add 'Disk image' to the content of one",
        );
    }
    let workers: Vec<(&str, Result<_, String>)> = opts
        .node_ids
        .iter()
        .map(|n| (n.as_str(), workers::find(&guests, n)))
        .collect();

    for id in &storage_ids {
        privileges::check_path(
            rec,
            client,
            &format!("/storage/{id}"),
            privileges::STORAGE_PRIVS,
        )
        .await;
    }
    // Per worker VM when they are named, else the whole VM tree the controller will search.
    let mut vm_paths: Vec<String> = workers
        .iter()
        .filter_map(|(_, w)| w.as_ref().ok())
        .map(|vm| format!("/vms/{}", vm.vmid))
        .collect();
    vm_paths.retain(|p| p != "/vms");
    for path in &vm_paths {
        privileges::check_path(rec, client, path, privileges::VM_PRIVS).await;
    }
    // Holder VMs get new ids, so their privileges must hold on their pool, or on /vms
    // itself without one (a superset of what workers need, so it covers them when none
    // are named).
    if let Some(p) = pool {
        pool::check(rec, client, p).await;
    }
    let holders = privileges::holder_path(pool);
    privileges::check_path(rec, client, &holders, privileges::HOLDER_PRIVS).await;

    for id in &storage_ids {
        storages::check(rec, id, &all_storages);
    }
    for (node_id, found) in &workers {
        match found {
            Ok(vm) => workers::check(rec, client, node_id, vm).await,
            Err(why) => rec.fail(format!("worker {node_id}"), why.clone()),
        }
    }
}
