//! Config updates: POST (async) / PUT (sync) config and unlink, with PVE's split between the
//! request half (permissions, lock, digest) and the worker half (pending section, hot-plug).

use super::apply::{apply_errors_text, apply_pending, ApplyErrors};
use super::qemu::{check_writable, check_writable_by, node_vmid};
use crate::auth::{require, Identity};
use crate::dispatch::Ctx;
use crate::drive::Drive;
use crate::error::{ApiError, ApiResult};
use crate::formats::split_list;
use crate::vmstate::{format_size, is_drive_key, Vm};
use crate::{propdef, volumes, Sim};
use serde_json::{json, Map, Value};

/// Request keys that steer the update rather than being config options.
pub(crate) const CONTROL_KEYS: &[&str] = &[
    "node",
    "vmid",
    "digest",
    "delete",
    "revert",
    "skiplock",
    "force",
    "background_delay",
];

/// Checks a drive value the way PVE does before writing it: storage exists and is reachable from
/// the VM's node, volume exists (its size is recorded), `STORAGE:SIZE` allocates a new image.
pub(crate) fn prepare_drive(sim: &Sim, who: &Identity, vm: &Vm, value: &str) -> ApiResult<String> {
    let mut d = Drive::parse(value);
    let Some(volid) = d.volid().map(str::to_string) else {
        return Ok(value.to_string());
    };
    let (sid, volname) = volumes::split_volid(&volid)?;
    let st = volumes::storage(sim.cfg(), sid)?;
    volumes::check_available(st, &vm.node)?;
    // The request half checked access ($check_storage_access); allocating needs AllocateSpace.
    if let Ok(gib) = volname.parse::<f64>() {
        require(
            who,
            &format!("/storage/{sid}"),
            &["Datastore.AllocateSpace"],
            false,
        )?;
        let name = volumes::free_name(sim.cfg(), st, &vm.node, vm.vmid, "raw");
        let kib = (gib * 1024.0 * 1024.0) as u64;
        d.file = volumes::alloc(sim.cfg(), st, &vm.node, vm.vmid, &name, "raw", kib)?;
    }
    let (path, v) = volumes::resolve(sim.cfg(), &vm.node, &d.file)?;
    let Some((size, _, _)) = volumes::size_info(&path, &v.format) else {
        return Err(ApiError::internal(format!(
            "volume {} does not exist",
            d.file
        )));
    };
    d.opts.insert("size".into(), format_size(size));
    Ok(d.print())
}

struct Update {
    sets: Vec<(String, String)>,
    deletes: Vec<String>,
    /// Keys whose pending change is dropped (`revert`).
    reverts: Vec<String>,
    force: bool,
}

fn collect_update(sim: &Sim, ctx: &Ctx) -> ApiResult<Update> {
    let sets: Vec<(String, String)> = ctx
        .params
        .iter()
        .filter(|(k, _)| !CONTROL_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let deletes: Vec<String> = ctx
        .get("delete")
        .map(|d| split_list(d).map(str::to_string).collect())
        .unwrap_or_default();
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
            return Err(ApiError::param(
                "delete",
                format!("you can't use '-{d}' and -delete {d}' at the same time"),
            ));
        }
        if propdef::lookup(props, d).is_none() || CONTROL_KEYS.contains(&d.as_str()) {
            return Err(ApiError::param("delete", format!("unknown option '{d}'")));
        }
    }
    if sets.is_empty() && deletes.is_empty() && ctx.get("revert").is_none() {
        return Err(ApiError::internal("no options specified"));
    }
    let reverts: Vec<String> = ctx
        .get("revert")
        .map(|d| split_list(d).map(str::to_string).collect())
        .unwrap_or_default();
    Ok(Update {
        sets,
        deletes,
        reverts,
        force: ctx.flag("force"),
    })
}

/// POST (async, `sync=false`) and PUT (sync) config, and the engine behind unlink.
pub async fn update_config(sim: &Sim, ctx: &Ctx, sync: bool) -> ApiResult<Value> {
    let upd = collect_update(sim, ctx)?;
    run_update(sim, ctx, upd, sync).await
}

pub async fn unlink(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let deletes: Vec<String> = split_list(ctx.req("idlist")?).map(str::to_string).collect();
    run_update(
        sim,
        ctx,
        Update {
            sets: vec![],
            deletes,
            reverts: vec![],
            force: ctx.flag("force"),
        },
        true,
    )
    .await
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
fn write_and_apply(
    sim: &Sim,
    who: &Identity,
    vmid: u32,
    upd: &Update,
    inject: Option<&str>,
) -> Result<(), WorkerError> {
    let Some(mut vm) = sim.with_vm(vmid, |v| v.clone()) else {
        return Err(WorkerError::Die(format!("VM {vmid} vanished")));
    };
    // qemu-server $updatefn order: reverts (folded into the request), then every delete, then
    // every set, each written to the pending section as it goes (write_config per option), so
    // an option that dies leaves the earlier ones written.
    for r in &upd.reverts {
        // Revert forgets a change that was never applied; the running config is untouched.
        vm.pending.remove(r);
        vm.pending_delete.remove(r);
    }
    for d in &upd.deletes {
        // A protected guest keeps its disks (PVE's check_protection).
        if is_drive_key(d)
            && vm.conf.contains_key(d)
            && vm.conf.get("protection").map(String::as_str) == Some("1")
        {
            return Err(written_then_die(
                sim,
                vm,
                format!("can't remove drive '{d}' - protection mode enabled"),
            ));
        }
        let was_pending = vm.pending.remove(d).is_some();
        if vm.conf.contains_key(d) {
            vm.pending_delete.insert(d.clone());
        } else if !was_pending {
            tracing::info!("cannot delete '{d}' - not set in current configuration!");
        }
    }
    for (k, v) in &upd.sets {
        let v = if is_drive_key(k) {
            match prepare_drive(sim, who, &vm, v) {
                Ok(v) => v,
                Err(e) => return Err(written_then_die(sim, vm, e.message)),
            }
        } else {
            v.clone()
        };
        vm.pending.insert(k.clone(), v);
        vm.pending_delete.remove(k);
    }
    sim.with_vm(vmid, |slot| *slot = vm);
    sim.save().map_err(|e| WorkerError::Die(e.message))?;
    apply_pending(sim, vmid, upd.force, inject).map_err(WorkerError::Params)
}

/// Keeps what was written before an option died, as PVE's per-option write_config does.
fn written_then_die(sim: &Sim, vm: Vm, msg: String) -> WorkerError {
    let vmid = vm.vmid;
    sim.with_vm(vmid, |slot| *slot = vm);
    if let Err(e) = sim.save() {
        return WorkerError::Die(e.message);
    }
    WorkerError::Die(msg)
}

/// Runs the worker half off the async threads: a hot-unplug may wait for the guest
/// (qemu_devicedelverify) and must not stall other requests meanwhile.
async fn write_and_apply_blocking(
    sim: &Sim,
    who: Identity,
    vmid: u32,
    upd: Update,
    inject: Option<String>,
) -> Result<(), WorkerError> {
    let sim = sim.clone();
    tokio::task::spawn_blocking(move || write_and_apply(&sim, &who, vmid, &upd, inject.as_deref()))
        .await
        .unwrap_or_else(|e| {
            Err(WorkerError::Die(format!(
                "config update worker failed: {e}"
            )))
        })
}

async fn run_update(sim: &Sim, ctx: &Ctx, upd: Update, sync: bool) -> ApiResult<Value> {
    let (node, vmid) = node_vmid(ctx)?;
    sim.vm(&node, vmid)?;
    for k in upd
        .sets
        .iter()
        .map(|(k, _)| k)
        .chain(upd.deletes.iter())
        .chain(upd.reverts.iter())
    {
        require(
            &ctx.who,
            &format!("/vms/{vmid}"),
            &[crate::auth::config_privilege(k)],
            false,
        )?;
    }
    // Storage permissions are checked before anything runs, as qemu-server's
    // $check_storage_access: AllocateSpace for a new disk, check_volume_access otherwise.
    for (k, v) in upd.sets.iter().filter(|(k, _)| is_drive_key(k)) {
        if let Some(volid) = Drive::parse(v).volid() {
            volumes::split_volid(volid)
                .map_err(|_| ApiError::param(k, format!("unable to parse volume ID '{volid}'")))?;
            super::volume_access::check_drive_access(&ctx.who, vmid, volid)?;
        }
    }
    // qemu-server API2/Qemu.pm $update_vm_api: $load_and_check_config->(0) (digest, VM lock)
    // runs before forking; the config flock is taken by the worker (lock_config($vmid,
    // $updatefn)), so for POST a lock timeout is a failed qmconfig task, for PUT a 500.
    let vm = sim.vm(&node, vmid)?;
    check_writable(&vm, ctx)?;

    let inject = ctx.hotplug_error.clone();
    let who = ctx.who.clone();
    if sync {
        let guard = sim.lock_vm(vmid).await?;
        let vm = sim.vm(&node, vmid)?;
        check_writable(&vm, ctx)?;
        let res = write_and_apply_blocking(sim, who, vmid, upd, inject).await;
        drop(guard);
        return match res {
            Ok(()) => Ok(Value::Null),
            Err(WorkerError::Die(m)) => Err(ApiError::internal(m)),
            // Synchronous updates raise the parameter exception straight to the caller.
            Err(WorkerError::Params(e)) => Err(ApiError::params(e)),
        };
    }
    let digest = ctx.get("digest").map(str::to_string);
    let skiplock = ctx.get("skiplock").is_some().then(|| ctx.flag("skiplock"));
    // $updatefn prints "update VM <vmid>: <the request's -key value pairs>" first.
    let summary: Vec<String> = ctx
        .params
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "node" | "vmid"))
        .map(|(k, v)| format!("-{k} {v}"))
        .collect();
    let sim2 = sim.clone();
    let node2 = node.clone();
    let upid = sim.spawn_task_delayed(
        ctx,
        &node,
        "qmconfig",
        &vmid.to_string(),
        std::time::Duration::ZERO,
        move |log| async move {
            // The worker's first act is lock_config; it holds the lock until it is done, and
            // the task latency (`task_ms`) is spent holding it.
            let _guard = sim2
                .lock_vm(vmid)
                .await
                .map_err(|e| e.message.trim_end().to_string())?;
            let latency = sim2.task_ms("qmconfig");
            if latency > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
            }
            // $load_and_check_config->(1) again under the lock.
            let vm = sim2.vm(&node2, vmid).map_err(|e| e.message)?;
            check_writable_by(&vm, &who, digest.as_deref(), skiplock).map_err(|e| e.message)?;
            log.line(format!("update VM {vmid}: {}", summary.join(" ")));
            match write_and_apply_blocking(&sim2, who, vmid, upd, inject).await {
                Ok(()) => Ok(0),
                Err(WorkerError::Die(m)) => Err(m),
                Err(WorkerError::Params(errors)) => {
                    for (k, v) in &errors {
                        log.line(format!("{k}: {}", v.trim_end()));
                    }
                    Err(apply_errors_text(&errors))
                }
            }
        },
    );
    if let Some(secs) = ctx
        .get("background_delay")
        .and_then(|d| d.parse::<u64>().ok())
    {
        // PVE waits this long for the worker so quick updates look synchronous.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            let st = sim.inner.tasks.status(&upid);
            match st {
                None => break,
                // A worker done in time: null when it succeeded, else
                // "failed to update VM <vmid>: <exit status>".
                Some(v) if v["status"] == "stopped" => {
                    let exit = v["exitstatus"].as_str().unwrap_or("");
                    if exit == "OK" || exit.starts_with("WARNINGS") {
                        return Ok(Value::Null);
                    }
                    return Err(ApiError::internal(format!(
                        "failed to update VM {vmid}: {exit}"
                    )));
                }
                Some(_) => {}
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    Ok(json!(upid))
}
