//! Proxmox VE API simulator: enough of the PVE REST API, with PVE's validation, errors, tasks
//! and hot-plug semantics, for the driver and its conformance tests to run without a cluster.
//!
//! Start it in-process with `Sim::new(SimConfig::default_for(dir))?.serve(listener)` or as the
//! `pve-sim` binary; the API is plain HTTP under `/api2/json`. Every request is checked against
//! the embedded PVE schema (`pve-api.json.gz`) before any handler runs, so the simulator rejects
//! what PVE rejects. Errors come back as `{"data": null, "message": "...\n", "errors": {...}}`
//! with PVE's status codes and texts.
//!
//! Simulated endpoints (everything else in the schema answers 501 like PVE):
//! - `/version`, `/cluster/status`, `/cluster/resources`, `/cluster/nextid`, `/nodes`,
//!   `/nodes/{node}/status|version`, `POST /access/ticket`, `GET /access/permissions`
//! - storages (`dir`, `nfs`, `lvmthin`, `lvm`, `zfspool`, `rbd`, simulated with files): `/storage[/{storage}]` (config),
//!   `/nodes/{node}/storage[/{storage}/status]`, `.../content` (list, allocate),
//!   `.../content/{volume}` (info, free, root-only copy; `{volume}` takes the rest of the path)
//! - VMs: list, create, destroy, `config` (GET/POST/PUT), `pending`, `unlink`, `resize`,
//!   `status/current|start|stop`, `snapshot` (list/create/delete/rollback), `clone`
//! - tasks: `/nodes/{node}/tasks[/{upid}/status|log]`
//! - pools: `GET|POST|PUT|DELETE /pools`, `GET|PUT|DELETE /pools/{poolid}`; `pool` on create and
//!   clone, removal on destroy
//!
//! Privileges follow pve-access-control: ACL paths propagate downwards, a pool's ACL reaches its
//! member VMs and storages, a privilege-separated token holds its own ACLs intersected with its
//! user's, and listings leave out what the caller may not audit.
//!
//! PVE's locks and hot-plug rules are modelled as contention, not only as injected faults: the
//! per-VM config flock (taken by the worker of asynchronous config updates), the per-storage
//! allocation lock (cluster-wide for shared storages), hot-unplug waiting for the guest to
//! release a device, and the throttle group a late unplug leaves behind. Their timeouts are
//! `SimConfig` fields with PVE's values as defaults.
//!
//! Control endpoints outside the PVE API: `GET|POST|DELETE /_sim/faults`, `GET /_sim/state`,
//! `POST /_sim/vms/{vmid}` (`{"node", "running"}`), `GET|POST /_sim/latency` (the latency
//! model: per-request latency, API worker count, task durations; see `latency.rs`),
//! `GET /_sim/traffic` (requests answered, response bytes).

mod auth;
pub mod config;
mod dispatch;
mod drive;
mod error;
pub mod faults;
pub mod features;
mod formats;
mod handlers;
mod hotplug;
mod latency;
mod propdef;
mod qemu;
mod rawview;
mod schema;
mod simapi;
mod tasks;
mod validate;
mod vmstate;
mod volumes;

pub use config::{
    HotplugMode, PoolConfig, QemuConfig, QemuVm, SimConfig, StorageConfig, TokenConfig, UserConfig,
    VmConfig,
};
pub use faults::{Fault, FaultAction, Faults};
pub use latency::{parse_task_type_ms, LatencyModel, Traffic};

use error::{ApiError, ApiResult};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vmstate::Vm;

/// Everything that survives a restart (volumes live as image files, not here).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct State {
    vms: BTreeMap<u32, Vm>,
    /// Resource pools (PVE keeps them in user.cfg); absent in state files of older versions.
    #[serde(default)]
    pools: BTreeMap<String, handlers::pools::Pool>,
}

struct Inner {
    cfg: SimConfig,
    schema: schema::Schema,
    state: Mutex<State>,
    /// Per-VM config lock, PVE's `/var/lock/qemu-server/lock-<vmid>.conf`.
    vm_locks: Mutex<HashMap<u32, Arc<tokio::sync::Mutex<()>>>>,
    /// Storage allocation locks, keyed like PVE's: `storage-<id>` in pmxcfs for shared
    /// storages (one for the cluster), `<node>/pve-storage-<id>` flocks for local ones.
    storage_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    tasks: Arc<tasks::Tasks>,
    tickets: auth::Tickets,
    faults: Faults,
    hotplug: hotplug::Hotplug,
    /// The latency model in force and the traffic counters.
    load: latency::Load,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.hotplug.detach_all();
    }
}

/// Handle to a running simulator; cheap to clone.
#[derive(Clone)]
pub struct Sim {
    inner: Arc<Inner>,
}

impl Sim {
    pub fn new(mut cfg: SimConfig) -> anyhow::Result<Sim> {
        std::fs::create_dir_all(&cfg.data_dir)?;
        // Absolute paths: loop back-files and link targets are compared against it.
        cfg.data_dir = std::fs::canonicalize(&cfg.data_dir)?;
        let schema = schema::Schema::load()?;
        let state_file = cfg.data_dir.join("state.json");
        // Persisted VMs win over the config; VMs the config adds later are merged in.
        let mut state: State = if state_file.exists() {
            serde_json::from_str(&std::fs::read_to_string(&state_file)?)?
        } else {
            State::default()
        };
        for v in &cfg.vms {
            state.vms.entry(v.vmid).or_insert_with(|| vm_from_config(v));
        }
        for p in &cfg.pools {
            state
                .pools
                .entry(p.poolid.clone())
                .or_insert_with(|| handlers::pools::Pool::from_config(p));
        }
        let mut hotplug = hotplug::Hotplug::new(cfg.hotplug, cfg.data_dir.clone());
        if let Some(q) = &cfg.qemu {
            let scsihw = |vmid: u32| {
                state
                    .vms
                    .get(&vmid)
                    .and_then(|v| v.conf.get("scsihw").cloned())
                    .unwrap_or_else(|| "lsi".into())
            };
            hotplug.set_qemu(
                qemu::Guests::start(q, &cfg.data_dir, scsihw).map_err(anyhow::Error::msg)?,
            );
        }
        let load = latency::Load::new(cfg.latency_model());
        let sim = Sim {
            inner: Arc::new(Inner {
                load,
                cfg,
                schema,
                state: Mutex::new(state),
                vm_locks: Mutex::new(HashMap::new()),
                storage_locks: Mutex::new(HashMap::new()),
                tasks: Arc::new(tasks::Tasks::default()),
                tickets: auth::Tickets::default(),
                faults: Faults::default(),
                hotplug,
            }),
        };
        sim.persist()?;
        sim.inner.hotplug.cleanup_stale();
        sim.replug_all();
        Ok(sim)
    }

    pub fn router(&self) -> axum::Router {
        dispatch::router(self.clone())
    }

    pub async fn serve(self, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
        axum::serve(listener, self.router()).await?;
        Ok(())
    }

    /// Where the by-id links of disks attached to `vmid` appear.
    pub fn guest_by_id_dir(&self, vmid: u32) -> PathBuf {
        self.inner.hotplug.by_id_dir(vmid)
    }

    /// Where the sysfs identity (`<dev>/device/wwid`, `vendor`) of disks attached to `vmid`
    /// appears, the guest's `/sys/block`.
    pub fn guest_sys_block_dir(&self, vmid: u32) -> PathBuf {
        self.inner.hotplug.sys_block_dir(vmid)
    }

    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    pub fn config(&self) -> &SimConfig {
        &self.inner.cfg
    }

    /// Detaches every loop device this simulator attached (tests call it from a Drop guard).
    pub fn detach_all(&self) {
        self.inner.hotplug.detach_all();
    }

    /// Moves a VM to another node, as a migration would (tests of node lookups). Its devices
    /// stay attached: the guest keeps its disks across a live migration.
    pub fn move_vm(&self, vmid: u32, node: &str) -> anyhow::Result<()> {
        anyhow::ensure!(self.cfg().has_node(node), "no such node '{node}'");
        self.with_vm(vmid, |vm| vm.node = node.to_string())
            .ok_or_else(|| anyhow::anyhow!("no VM {vmid}"))?;
        self.persist()
    }

    /// Changes a VM's power state directly, without a task: stopping unplugs its disks,
    /// starting applies pending changes and plugs them.
    pub fn set_vm_running(&self, vmid: u32, running: bool) -> anyhow::Result<()> {
        let vm = self
            .with_vm(vmid, |vm| vm.clone())
            .ok_or_else(|| anyhow::anyhow!("no VM {vmid}"))?;
        if running == vm.running() {
            return Ok(());
        }
        if running {
            handlers::apply::apply_pending(self, vmid, false, None)
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            self.with_vm(vmid, |v| v.status = "running".into());
            let vm = self.with_vm(vmid, |v| v.clone()).expect("present");
            for (key, val) in &vm.conf {
                if vmstate::is_drive_key(key) && handlers::apply::drive_has_image(self, &vm, val) {
                    handlers::apply::plug_drive(self, &vm, key, val).map_err(anyhow::Error::msg)?;
                }
            }
        } else {
            for key in vm.conf.keys() {
                self.inner.hotplug.unplug(vmid, key);
            }
            self.inner.hotplug.vm_stopped(vmid);
            self.with_vm(vmid, |v| v.status = "stopped".into());
        }
        self.persist()
    }

    /// JSON dump of the persisted state, for debugging.
    pub fn state_json(&self) -> serde_json::Value {
        serde_json::to_value(&*self.inner.state.lock().unwrap()).unwrap_or_default()
    }

    fn cfg(&self) -> &SimConfig {
        &self.inner.cfg
    }

    /// Starts a worker task on behalf of the request in `ctx`.
    fn spawn_task<F>(
        &self,
        ctx: &dispatch::Ctx,
        node: &str,
        kind: &str,
        id: &str,
        body: impl FnOnce(tasks::TaskLog) -> F + Send + 'static,
    ) -> String
    where
        F: std::future::Future<Output = tasks::TaskOutcome> + Send + 'static,
    {
        let delay = Duration::from_millis(self.task_ms(kind));
        self.spawn_task_delayed(ctx, node, kind, id, delay, body)
    }

    /// [`Sim::spawn_task`] with the latency before the body chosen by the caller (zero for a
    /// worker that takes a lock first and spends its task duration holding it).
    fn spawn_task_delayed<F>(
        &self,
        ctx: &dispatch::Ctx,
        node: &str,
        kind: &str,
        id: &str,
        delay: Duration,
        body: impl FnOnce(tasks::TaskLog) -> F + Send + 'static,
    ) -> String
    where
        F: std::future::Future<Output = tasks::TaskOutcome> + Send + 'static,
    {
        let spec = tasks::TaskSpec {
            node,
            kind,
            id,
            user: &ctx.who.userid,
            delay,
            forced_error: ctx.task_error.clone(),
        };
        self.inner.tasks.spawn(spec, body)
    }

    fn persist(&self) -> anyhow::Result<()> {
        // Snapshot and write under the state lock: concurrent writers sharing
        // the one temp file would otherwise rename it from under each other
        // (and an older snapshot could land after a newer one).
        let st = self.inner.state.lock().unwrap();
        let text = serde_json::to_string_pretty(&*st)?;
        let path = self.inner.cfg.data_dir.join("state.json");
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &path)?;
        Ok(())
    }

    fn save(&self) -> ApiResult<()> {
        self.persist()
            .map_err(|e| ApiError::internal(format!("unable to write state - {e}")))
    }

    /// Reads a VM after checking it lives on `node`, as PVE's per-node config path implies.
    fn vm(&self, node: &str, vmid: u32) -> ApiResult<Vm> {
        let st = self.inner.state.lock().unwrap();
        match st.vms.get(&vmid) {
            Some(vm) if vm.node == node => Ok(vm.clone()),
            _ => Err(ApiError::internal(format!(
                "Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist"
            ))),
        }
    }

    fn with_vm<R>(&self, vmid: u32, f: impl FnOnce(&mut Vm) -> R) -> Option<R> {
        let mut st = self.inner.state.lock().unwrap();
        st.vms.get_mut(&vmid).map(f)
    }

    fn vm_lock_handle(&self, vmid: u32) -> Arc<tokio::sync::Mutex<()>> {
        self.inner
            .vm_locks
            .lock()
            .unwrap()
            .entry(vmid)
            .or_default()
            .clone()
    }

    /// Takes the per-VM config lock, failing like PVE's flock timeout.
    async fn lock_vm(&self, vmid: u32) -> ApiResult<tokio::sync::OwnedMutexGuard<()>> {
        let m = self.vm_lock_handle(vmid);
        let t = Duration::from_millis(self.inner.cfg.lock_timeout_ms);
        tokio::time::timeout(t, m.lock_owned()).await.map_err(|_| {
            ApiError::internal(format!(
                "can't lock file '/var/lock/qemu-server/lock-{vmid}.conf' - got timeout"
            ))
        })
    }

    /// Takes a storage's allocation lock for an allocate, free or clone, as pve-storage's
    /// Plugin::cluster_lock_storage: shared storages lock cluster-wide through
    /// PVE::Cluster::cfs_lock_storage ("cfs-lock 'storage-<id>' error: got lock request
    /// timeout"), local ones with a node-local flock /var/lock/pve-manager/pve-storage-<id>
    /// (pve-common Tools::lock_file_full: "can't lock file '...' - got timeout"). Both wait
    /// 10 s when the caller gives no timeout (`storage_lock_timeout_ms`).
    async fn lock_storage(
        &self,
        st: &StorageConfig,
        node: &str,
    ) -> Result<tokio::sync::OwnedMutexGuard<()>, String> {
        let key = if st.shared {
            format!("storage-{}", st.id)
        } else {
            format!("{node}/pve-storage-{}", st.id)
        };
        let m = self
            .inner
            .storage_locks
            .lock()
            .unwrap()
            .entry(key)
            .or_default()
            .clone();
        let t = Duration::from_millis(self.inner.cfg.storage_lock_timeout_ms);
        tokio::time::timeout(t, m.lock_owned()).await.map_err(|_| {
            if st.shared {
                format!(
                    "cfs-lock 'storage-{}' error: got lock request timeout",
                    st.id
                )
            } else {
                format!(
                    "can't lock file '/var/lock/pve-manager/pve-storage-{}' - got timeout",
                    st.id
                )
            }
        })
    }

    /// The time a storage operation keeps its lock (`storage_op_ms`), standing in for the
    /// run time of lvcreate/qemu-img on a real storage.
    async fn storage_work(&self) {
        let ms = self.inner.cfg.storage_op_ms;
        if ms > 0 {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
    }

    /// Re-creates devices for the applied disks of running VMs (startup after cleanup).
    fn replug_all(&self) {
        let vms: Vec<Vm> = self
            .inner
            .state
            .lock()
            .unwrap()
            .vms
            .values()
            .cloned()
            .collect();
        for vm in vms.iter().filter(|v| v.running()) {
            for (key, val) in &vm.conf {
                if !vmstate::is_drive_key(key) || !handlers::apply::drive_has_image(self, vm, val) {
                    continue;
                }
                if let Err(e) = handlers::apply::plug_drive(self, vm, key, val) {
                    tracing::warn!("re-plugging {key} of VM {}: {}", vm.vmid, e);
                }
            }
        }
    }
}

fn vm_from_config(v: &VmConfig) -> Vm {
    let mut conf = v.config.clone();
    if !v.name.is_empty() {
        conf.insert("name".into(), v.name.clone());
    }
    Vm {
        vmid: v.vmid,
        node: v.node.clone(),
        status: v.status.clone(),
        conf,
        pending: BTreeMap::new(),
        pending_delete: Default::default(),
        snapshots: Default::default(),
    }
}
