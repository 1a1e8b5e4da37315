//! VM endpoints: config read/update with pending/hot-plug semantics, unlink, resize.

use crate::sim::auth::{require, Identity};
use crate::sim::dispatch::Ctx;
use crate::sim::drive::Drive;
use crate::sim::error::{ApiError, ApiResult};
use crate::sim::formats::split_list;
use crate::sim::vmstate::{self, format_size, is_drive_key, is_hotpluggable_bus, Vm};
use crate::sim::{propdef, volumes, Sim};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// Options PVE writes straight into the config even while the VM runs.
const FAST_PLUG: &[&str] = &[
    "name", "description", "hookscript", "lock", "onboot", "protection", "shares", "startup", "tags", "vmstatestorage",
];

/// Request keys that steer the update rather than being config options.
pub(crate) const CONTROL_KEYS: &[&str] = &["node", "vmid", "digest", "delete", "revert", "skiplock", "force", "background_delay"];

pub(crate) fn node_vmid(ctx: &Ctx) -> ApiResult<(String, u32)> {
    Ok((ctx.req("node")?.to_string(), ctx.vmid()?))
}

pub fn list(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let node = ctx.req("node")?;
    let st = sim.inner.state.lock().unwrap();
    Ok(Value::Array(
        st.vms
            .values()
            .filter(|v| v.node == node)
            .map(|v| {
                let mut e = json!({
                    "vmid": v.vmid, "name": v.name(), "status": v.status,
                    "maxmem": 2u64 << 30, "cpus": 2, "maxdisk": 32u64 << 30, "uptime": if v.running() { 3600 } else { 0 },
                });
                if let Some(l) = v.conf.get("lock") {
                    e["lock"] = json!(l);
                }
                e
            })
            .collect(),
    ))
}

pub fn status_current(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let (node, vmid) = node_vmid(ctx)?;
    let vm = sim.vm(&node, vmid)?;
    let mut v = json!({ "vmid": vmid, "name": vm.name(), "status": vm.status, "qmpstatus": vm.status });
    if let Some(l) = vm.conf.get("lock") {
        v["lock"] = json!(l);
    }
    Ok(v)
}

/// Renders config values with the JSON types PVE's GET config returns.
fn typed_config(sim: &Sim, conf: &BTreeMap<String, String>) -> Map<String, Value> {
    let empty = Map::new();
    let props = sim
        .inner
        .schema
        .method("/nodes/{node}/qemu/{vmid}/config", "GET")
        .and_then(|m| m.pointer("/returns/properties"))
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    conf.iter()
        .map(|(k, v)| {
            let ty = propdef::lookup(props, k).and_then(|d| d.get("type")).and_then(Value::as_str).unwrap_or("string");
            let val = match ty {
                "integer" => v.parse::<i64>().map(Value::from).unwrap_or_else(|_| json!(v)),
                "number" => v.parse::<f64>().map(Value::from).unwrap_or_else(|_| json!(v)),
                "boolean" => crate::sim::validate::parse_bool(v).map(|b| json!(b as i32)).unwrap_or_else(|| json!(v)),
                _ => json!(v),
            };
            (k.clone(), val)
        })
        .collect()
}

pub fn get_config(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let (node, vmid) = node_vmid(ctx)?;
    if ctx.get("snapshot").is_some() && ctx.flag("current") {
        let msg = "cannot use 'snapshot' parameter with 'current'";
        let mut e = BTreeMap::new();
        e.insert("snapshot".into(), msg.into());
        e.insert("current".into(), msg.into());
        return Err(ApiError::params(e));
    }
    if let Some(s) = ctx.get("snapshot") {
        return Err(ApiError::internal(format!("snapshot '{s}' does not exist")));
    }
    let vm = sim.vm(&node, vmid)?;
    let conf = if ctx.flag("current") { vm.conf.clone() } else { vm.merged() };
    let mut out = typed_config(sim, &conf);
    out.insert("digest".into(), json!(vm.digest()));
    Ok(Value::Object(out))
}

pub fn pending(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let (node, vmid) = node_vmid(ctx)?;
    let vm = sim.vm(&node, vmid)?;
    let mut keys: Vec<&String> = vm.conf.keys().chain(vm.pending.keys()).chain(vm.pending_delete.iter()).collect();
    keys.sort();
    keys.dedup();
    Ok(Value::Array(
        keys.into_iter()
            .map(|k| {
                let mut e = json!({ "key": k });
                if let Some(v) = vm.conf.get(k) {
                    e["value"] = json!(v);
                }
                if let Some(v) = vm.pending.get(k) {
                    e["pending"] = json!(v);
                }
                if vm.pending_delete.contains(k) {
                    e["delete"] = json!(1);
                }
                e
            })
            .collect(),
    ))
}

/// Sync-side checks shared by config writers: skiplock (root only), digest and VM lock.
pub(crate) fn check_writable(vm: &Vm, ctx: &Ctx) -> ApiResult<()> {
    check_writable_by(vm, &ctx.who, ctx.get("digest"), ctx.get("skiplock").is_some().then(|| ctx.flag("skiplock")))
}

fn check_writable_by(vm: &Vm, who: &Identity, digest: Option<&str>, skiplock: Option<bool>) -> ApiResult<()> {
    if skiplock.is_some() && who.userid != "root@pam" {
        return Err(ApiError::param("skiplock", "Only root may use this option."));
    }
    if let Some(d) = digest {
        if d != vm.digest() {
            return Err(ApiError::internal("checksum mismatch (file change by other user?)"));
        }
    }
    if skiplock != Some(true) {
        if let Some(l) = vm.conf.get("lock") {
            return Err(ApiError::internal(format!("VM is locked ({l})")));
        }
    }
    Ok(())
}

/// Checks a drive value the way PVE does before writing it: storage exists and is reachable from
/// the VM's node, volume exists (its size is recorded), `STORAGE:SIZE` allocates a new image.
pub(crate) fn prepare_drive(sim: &Sim, who: &Identity, vm: &Vm, value: &str) -> ApiResult<String> {
    let mut d = Drive::parse(value);
    let Some(volid) = d.volid().map(str::to_string) else { return Ok(value.to_string()) };
    let (sid, volname) = volumes::split_volid(&volid)?;
    let st = volumes::storage(sim.cfg(), sid)?;
    volumes::check_available(st, &vm.node)?;
    require(who, &format!("/storage/{sid}"), &["Datastore.AllocateSpace"], false)?;
    if let Ok(gib) = volname.parse::<f64>() {
        let name = volumes::free_name(sim.cfg(), st, &vm.node, vm.vmid, "raw");
        let kib = (gib * 1024.0 * 1024.0) as u64;
        d.file = volumes::alloc(sim.cfg(), st, &vm.node, vm.vmid, &name, "raw", kib)?;
    }
    let (path, v) = volumes::resolve(sim.cfg(), &vm.node, &d.file)?;
    let Some((size, _, _)) = volumes::size_info(&path, &v.format) else {
        return Err(ApiError::internal(format!("volume {} does not exist", d.file)));
    };
    d.opts.insert("size".into(), format_size(size));
    Ok(d.print())
}

struct Update {
    sets: Vec<(String, String)>,
    deletes: Vec<String>,
    force: bool,
}

fn collect_update(sim: &Sim, ctx: &Ctx) -> ApiResult<Update> {
    let sets: Vec<(String, String)> =
        ctx.params.iter().filter(|(k, _)| !CONTROL_KEYS.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect();
    let deletes: Vec<String> = ctx.get("delete").map(|d| split_list(d).map(str::to_string).collect()).unwrap_or_default();
    let empty = Map::new();
    let props = sim
        .inner
        .schema
        .method("/nodes/{node}/qemu/{vmid}/config", "POST")
        .and_then(|m| m.pointer("/parameters/properties"))
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    for d in &deletes {
        if sets.iter().any(|(k, _)| k == d) {
            return Err(ApiError::param("delete", format!("you can't use '-{d}' and -delete {d}' at the same time")));
        }
        if propdef::lookup(props, d).is_none() || CONTROL_KEYS.contains(&d.as_str()) {
            return Err(ApiError::param("delete", format!("unknown option '{d}'")));
        }
    }
    if sets.is_empty() && deletes.is_empty() && ctx.get("revert").is_none() {
        return Err(ApiError::internal("no options specified"));
    }
    Ok(Update { sets, deletes, force: ctx.flag("force") })
}

/// POST (async, `sync=false`) and PUT (sync) config, and the engine behind unlink.
pub async fn update_config(sim: &Sim, ctx: &Ctx, sync: bool) -> ApiResult<Value> {
    let upd = collect_update(sim, ctx)?;
    run_update(sim, ctx, upd, sync).await
}

pub async fn unlink(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let deletes: Vec<String> = split_list(ctx.req("idlist")?).map(str::to_string).collect();
    run_update(sim, ctx, Update { sets: vec![], deletes, force: ctx.flag("force") }, true).await
}

/// Why the worker part of a config update failed.
enum WorkerError {
    /// A plain die(): 500 when synchronous, the task's exit status otherwise.
    Die(String),
    /// Hot-plug failures, raised as a parameter exception.
    Params(ApplyErrors),
}

/// The worker half of a config update (PVE runs it in the `qmconfig` task, or inline for
/// synchronous calls): writes the changes to the pending section, checking drives as it goes,
/// then applies what can be applied.
fn write_and_apply(sim: &Sim, who: &Identity, vmid: u32, upd: &Update, inject: Option<&str>) -> Result<(), WorkerError> {
    let Some(mut vm) = sim.with_vm(vmid, |v| v.clone()) else {
        return Err(WorkerError::Die(format!("VM {vmid} vanished")));
    };
    for (k, v) in &upd.sets {
        let v = if is_drive_key(k) { prepare_drive(sim, who, &vm, v).map_err(|e| WorkerError::Die(e.message))? } else { v.clone() };
        vm.pending.insert(k.clone(), v);
        vm.pending_delete.remove(k);
    }
    for d in &upd.deletes {
        let was_pending = vm.pending.remove(d).is_some();
        if vm.conf.contains_key(d) {
            vm.pending_delete.insert(d.clone());
        } else if !was_pending {
            tracing::info!("cannot delete '{d}' - not set in current configuration!");
        }
    }
    sim.with_vm(vmid, |slot| *slot = vm);
    sim.save().map_err(|e| WorkerError::Die(e.message))?;
    apply_pending(sim, vmid, upd.force, inject).map_err(WorkerError::Params)
}

async fn run_update(sim: &Sim, ctx: &Ctx, upd: Update, sync: bool) -> ApiResult<Value> {
    let (node, vmid) = node_vmid(ctx)?;
    sim.vm(&node, vmid)?;
    if upd.sets.iter().map(|(k, _)| k).chain(upd.deletes.iter()).any(|k| is_drive_key(k) || k.starts_with("unused")) {
        require(&ctx.who, &format!("/vms/{vmid}"), &["VM.Config.Disk"], false)?;
    }
    // Storage permissions are checked before anything runs, as PVE's check_storage_access.
    for (k, v) in upd.sets.iter().filter(|(k, _)| is_drive_key(k)) {
        if let Some(volid) = Drive::parse(v).volid() {
            let (sid, _) = volumes::split_volid(volid).map_err(|_| ApiError::param(k, format!("unable to parse volume ID '{volid}'")))?;
            require(&ctx.who, &format!("/storage/{sid}"), &["Datastore.AllocateSpace"], false)?;
        }
    }
    let guard = sim.lock_vm(vmid).await?;
    let vm = sim.vm(&node, vmid)?;
    check_writable(&vm, ctx)?;

    let inject = ctx.hotplug_error.clone();
    let who = ctx.who.clone();
    if sync {
        let res = write_and_apply(sim, &who, vmid, &upd, inject.as_deref());
        drop(guard);
        return match res {
            Ok(()) => Ok(Value::Null),
            Err(WorkerError::Die(m)) => Err(ApiError::internal(m)),
            // Synchronous updates raise the parameter exception straight to the caller.
            Err(WorkerError::Params(e)) => Err(ApiError::params(e)),
        };
    }
    let sim2 = sim.clone();
    let upid = sim.spawn_task(ctx, &node, "qmconfig", &vmid.to_string(), move |log| async move {
        // The config lock stays held until the worker is done, as with PVE's forked worker.
        let _guard = guard;
        match write_and_apply(&sim2, &who, vmid, &upd, inject.as_deref()) {
            Ok(()) => Ok(0),
            Err(WorkerError::Die(m)) => Err(m),
            Err(WorkerError::Params(errors)) => {
                for (k, v) in &errors {
                    log.line(format!("{k}: {}", v.trim_end()));
                }
                Err(apply_errors_text(&errors))
            }
        }
    });
    if let Some(secs) = ctx.get("background_delay").and_then(|d| d.parse::<u64>().ok()) {
        // PVE waits this long for the worker so quick updates look synchronous.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            let st = sim.inner.tasks.status(&upid);
            if st.as_ref().is_none_or(|v| v["status"] == "stopped") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    Ok(json!(upid))
}

/// Can `key` change while the VM runs?
fn hot_applicable(vm: &Vm, key: &str) -> bool {
    if !vm.running() || FAST_PLUG.contains(&key) || key.starts_with("unused") {
        return true;
    }
    let hp = vm.hotplug_features();
    if is_drive_key(key) {
        return is_hotpluggable_bus(key) && hp.iter().any(|f| f == "disk");
    }
    if key.starts_with("net") {
        return hp.iter().any(|f| f == "network");
    }
    false
}

/// Image path and parsed name of a drive's volume, if it is a storage volume.
pub(crate) fn drive_image(sim: &Sim, vm: &Vm, value: &str) -> Option<(std::path::PathBuf, volumes::VolName, Drive)> {
    let d = Drive::parse(value);
    let volid = d.volid()?.to_string();
    let (path, v) = volumes::resolve(sim.cfg(), &vm.node, &volid).ok()?;
    Some((path, v, d))
}

/// Attaches a drive's image to the simulated guest.
pub(crate) fn plug_drive(sim: &Sim, vm: &Vm, key: &str, value: &str) -> Result<(), String> {
    let Some((path, v, d)) = drive_image(sim, vm, value) else { return Ok(()) };
    if !path.exists() {
        return Err(format!("volume {} does not exist", d.file));
    }
    sim.inner.hotplug.plug(vm.vmid, key, &path, &v.format, d.wwn(), d.serial())
}

/// What happens to a volume leaving the config: owned ones become `unusedN` (or are freed with
/// force), foreign ones are only dropped.
fn release_volume(sim: &Sim, vm: &mut Vm, value: &str, force: bool) -> Result<(), String> {
    let Some((path, v, d)) = drive_image(sim, vm, value) else { return Ok(()) };
    if v.owner != vm.vmid {
        return Ok(());
    }
    // Still referenced by another slot: nothing to release.
    if vm.conf.values().filter(|x| Drive::parse(x).file == d.file).count() > 1 {
        return Ok(());
    }
    if force {
        volumes::free(&path)?;
    } else {
        let key = vm.free_unused_key();
        vm.conf.insert(key, d.file.clone());
    }
    Ok(())
}

/// PVE's per-option hot-plug failure text (the underlying die() text keeps its newline).
fn hotplug_problem(err: &str) -> String {
    let nl = if err.ends_with('\n') { "" } else { "\n" };
    format!("hotplug problem - {err}{nl}")
}

/// Per-option failures of applying pending changes, PVE's `raise_param_exc` payload.
pub(crate) type ApplyErrors = BTreeMap<String, String>;

/// How PVE's worker reports a parameter exception as the task's exit status.
pub(crate) fn apply_errors_text(errors: &ApplyErrors) -> String {
    let mut out = String::from("400 Parameter verification failed.");
    for (k, v) in errors {
        out.push_str(&format!(" {k}: {}", v.trim_end()));
    }
    out
}

/// Applies what can be applied now (everything when stopped; hot-pluggable keys when running).
/// `inject` (fault injection) makes every hot-(un)plug fail with that text. Changes that fail
/// stay pending.
pub(crate) fn apply_pending(sim: &Sim, vmid: u32, force: bool, inject: Option<&str>) -> Result<(), ApplyErrors> {
    let Some(mut vm) = sim.with_vm(vmid, |v| v.clone()) else {
        return Err([("vmid".to_string(), format!("VM {vmid} vanished"))].into());
    };
    let mut errors = ApplyErrors::new();
    let running = vm.running();
    for key in vm.pending_delete.clone() {
        if !hot_applicable(&vm, &key) {
            continue;
        }
        if let Some(old) = vm.conf.get(&key).cloned() {
            if is_drive_key(&key) {
                if running {
                    if let Some(msg) = inject {
                        errors.insert(key.clone(), hotplug_problem(msg));
                        continue;
                    }
                    sim.inner.hotplug.unplug(vmid, &key);
                }
                if let Err(e) = release_volume(sim, &mut vm, &old, force) {
                    errors.insert(key.clone(), e);
                }
            } else if key.starts_with("unused") {
                // Deleting an unused entry destroys the volume, as in PVE.
                if let Err(e) = release_volume(sim, &mut vm, &old, true) {
                    errors.insert(key.clone(), e);
                }
            }
        }
        vm.conf.remove(&key);
        vm.pending_delete.remove(&key);
    }
    for (key, val) in vm.pending.clone() {
        if !hot_applicable(&vm, &key) {
            continue;
        }
        if is_drive_key(&key) {
            let old = vm.conf.get(&key).cloned();
            let old_file = old.as_deref().map(|o| Drive::parse(o).file);
            if running {
                let plugged = match inject {
                    Some(msg) => Err(msg.to_string()),
                    None => plug_drive(sim, &vm, &key, &val),
                };
                if let Err(e) = plugged {
                    errors.insert(key.clone(), hotplug_problem(&e));
                    continue;
                }
            }
            if let Some(o) = old {
                if old_file.as_deref() != Some(Drive::parse(&val).file.as_str()) {
                    let _ = release_volume(sim, &mut vm, &o, false);
                }
            }
        }
        vm.conf.insert(key.clone(), val);
        vm.pending.remove(&key);
    }
    sim.with_vm(vmid, |slot| *slot = vm);
    if let Err(e) = sim.save() {
        errors.insert("vmid".into(), e.message);
    }
    if errors.is_empty() { Ok(()) } else { Err(errors) }
}

/// `+N` or absolute N with optional K/M/G/T (bare = bytes), as qemu-server's resize takes it.
fn parse_resize(s: &str, current: u64) -> ApiResult<u64> {
    let (rel, body) = match s.strip_prefix('+') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let n = vmstate::parse_size(body).ok_or_else(|| ApiError::param("size", "value does not match the regex pattern"))?;
    Ok(if rel { current + n } else { n })
}

/// What a resize request resolves to, checked against the current config.
struct ResizePlan {
    path: std::path::PathBuf,
    vol: volumes::VolName,
    current: u64,
    new: u64,
}

/// The request half of a resize, owned so the worker can re-run the checks under the lock.
#[derive(Clone)]
struct ResizeRequest {
    node: String,
    vmid: u32,
    disk: String,
    size: String,
    digest: Option<String>,
    skiplock: Option<bool>,
    who: Identity,
}

/// qemu-server's checks for a resize, run once before forking and again in the worker.
fn resize_plan(sim: &Sim, r: &ResizeRequest) -> ApiResult<ResizePlan> {
    let vm = sim.vm(&r.node, r.vmid)?;
    check_writable_by(&vm, &r.who, r.digest.as_deref(), r.skiplock)?;
    let disk = &r.disk;
    let Some(value) = vm.conf.get(disk).cloned() else {
        return Err(ApiError::internal(format!("disk '{disk}' does not exist")));
    };
    let d = Drive::parse(&value);
    if d.is_cdrom() {
        return Err(ApiError::internal("you can't resize a cdrom"));
    }
    let Some(volid) = d.volid().map(str::to_string) else {
        return Err(ApiError::internal(format!("disk '{disk}' has no associated volume")));
    };
    let (sid, _) = volumes::split_volid(&volid)?;
    require(&r.who, &format!("/storage/{sid}"), &["Datastore.AllocateSpace"], false)?;
    let (path, vol) = volumes::resolve(sim.cfg(), &vm.node, &volid)?;
    let Some((current, _, _)) = volumes::size_info(&path, &vol.format) else {
        return Err(ApiError::internal(format!("Could not determine current size of volume '{volid}'")));
    };
    let new = parse_resize(&r.size, current)?;
    if new < current {
        return Err(ApiError::internal("shrinking disks is not supported"));
    }
    Ok(ResizePlan { path, vol, current, new })
}

/// PUT resize: early checks answer the call; the `resize` worker takes the config lock (its
/// timeout fails the task), checks again and grows the image.
pub async fn resize(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let (node, vmid) = node_vmid(ctx)?;
    let req = ResizeRequest {
        node: node.clone(),
        vmid,
        disk: ctx.req("disk")?.to_string(),
        size: ctx.req("size")?.to_string(),
        digest: ctx.get("digest").map(str::to_string),
        skiplock: ctx.get("skiplock").is_some().then(|| ctx.flag("skiplock")),
        who: ctx.who.clone(),
    };
    resize_plan(sim, &req)?;
    let sim2 = sim.clone();
    let upid = sim.spawn_task(ctx, &node, "resize", &vmid.to_string(), move |log| async move {
        let _guard = sim2.lock_vm(vmid).await.map_err(|e| e.message)?;
        let plan = resize_plan(&sim2, &req).map_err(|e| e.message)?;
        if plan.new == plan.current {
            log.line("disk is already at specified size");
            return Ok(0);
        }
        volumes::grow(&plan.path, &plan.vol.format, plan.new)?;
        sim2.inner.hotplug.refresh(vmid, &req.disk)?;
        sim2.with_vm(vmid, |vm| {
            if let Some(val) = vm.conf.get(&req.disk).cloned() {
                let mut d = Drive::parse(&val);
                d.opts.insert("size".into(), format_size(plan.new));
                vm.conf.insert(req.disk.clone(), d.print());
            }
        });
        sim2.save().map_err(|e| e.message)?;
        log.line(format!("Image resized to {} bytes.", plan.new));
        Ok(0)
    });
    Ok(json!(upid))
}

/// POST status/start and status/stop: power state changes as tasks. Starting applies all pending
/// changes and plugs every drive; stopping unplugs them.
pub async fn power(sim: &Sim, ctx: &Ctx, start: bool) -> ApiResult<Value> {
    let (node, vmid) = node_vmid(ctx)?;
    sim.vm(&node, vmid)?;
    let guard = sim.lock_vm(vmid).await?;
    let vm = sim.vm(&node, vmid)?;
    check_writable(&vm, ctx)?;
    let sim2 = sim.clone();
    let kind = if start { "qmstart" } else { "qmstop" };
    let upid = sim.spawn_task(ctx, &node, kind, &vmid.to_string(), move |_log| async move {
        let _guard = guard;
        let Some(vm) = sim2.with_vm(vmid, |v| v.clone()) else { return Err(format!("VM {vmid} vanished")) };
        if start {
            if vm.running() {
                return Err(format!("VM {vmid} already running"));
            }
            apply_pending(&sim2, vmid, false, None).map_err(|e| apply_errors_text(&e))?;
            sim2.with_vm(vmid, |v| v.status = "running".into());
            sim2.save().map_err(|e| e.message)?;
            let vm = sim2.with_vm(vmid, |v| v.clone()).expect("present");
            for (key, val) in vm.conf.iter().filter(|(k, _)| is_drive_key(k)) {
                if drive_image(&sim2, &vm, val).is_some_and(|(p, _, _)| p.exists()) {
                    plug_drive(&sim2, &vm, key, val)?;
                }
            }
        } else {
            for key in vm.conf.keys().filter(|k| is_drive_key(k)) {
                sim2.inner.hotplug.unplug(vmid, key);
            }
            sim2.with_vm(vmid, |v| v.status = "stopped".into());
            sim2.save().map_err(|e| e.message)?;
        }
        Ok(0)
    });
    Ok(json!(upid))
}

/// Whether a drive's image exists (used to skip disks without a backing file on startup).
pub(crate) fn drive_has_image(sim: &Sim, vm: &Vm, value: &str) -> bool {
    drive_image(sim, vm, value).is_some_and(|(p, _, _)| p.exists())
}
