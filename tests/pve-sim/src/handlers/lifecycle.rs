//! VM creation, destruction and VMID allocation.

use super::apply::{drive_image, plug_drive};
use super::qemu::{check_writable, node_vmid};
use super::vmconfig::prepare_drive;
use super::{pools, volume_access};
use crate::auth::require;
use crate::dispatch::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::vmstate::{is_drive_key, Vm};
use crate::{volumes, Sim};
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Create-call parameters that steer creation rather than being config options.
const CREATE_CONTROL: &[&str] = &[
    "node",
    "vmid",
    "start",
    "storage",
    "pool",
    "unique",
    "archive",
    "bwlimit",
    "ha-managed",
    "live-restore",
    "force",
];

pub fn nextid(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let st = sim.inner.state.lock().unwrap();
    if let Some(v) = ctx.get("vmid") {
        let id: u32 = v.parse().map_err(|_| {
            ApiError::param("vmid", format!("type check ('integer') failed - got '{v}'"))
        })?;
        if st.vms.contains_key(&id) {
            return Err(ApiError::param("vmid", format!("VM {id} already exists")));
        }
        return Ok(json!(v));
    }
    let id = (100u32..)
        .find(|i| !st.vms.contains_key(i))
        .expect("free id");
    // PVE hands the id back as a string.
    Ok(json!(id.to_string()))
}

fn exists_error(vmid: u32) -> ApiError {
    ApiError::internal(format!(
        "unable to create VM {vmid}: config file already exists"
    ))
}

/// Registers a placeholder VM carrying `lock`, so the id is taken while its task runs.
pub(crate) fn reserve_vm(sim: &Sim, vmid: u32, node: &str, lock: &str) -> ApiResult<()> {
    {
        let mut st = sim.inner.state.lock().unwrap();
        if st.vms.contains_key(&vmid) {
            return Err(exists_error(vmid));
        }
        let mut conf = BTreeMap::new();
        conf.insert("lock".to_string(), lock.to_string());
        st.vms.insert(
            vmid,
            Vm {
                vmid,
                node: node.into(),
                status: "stopped".into(),
                conf,
                pending: Default::default(),
                pending_delete: Default::default(),
                snapshots: Default::default(),
            },
        );
    }
    sim.save()
}

/// Frees the images a failed creation allocated and drops the placeholder.
pub(crate) fn abandon_vm(sim: &Sim, vmid: u32, created: &[std::path::PathBuf]) {
    for p in created {
        let _ = volumes::free(p);
    }
    sim.inner.state.lock().unwrap().vms.remove(&vmid);
    let _ = sim.save();
}

pub async fn create(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let node = ctx.req("node")?.to_string();
    let vmid = ctx.vmid()?;
    // qemu-server API2/Qemu.pm create_vm: the pool must exist (check_pool_exist), then
    // VM.Allocate on /vms/<vmid> or on /pool/<pool>, else a bare raise_perm_exc().
    let pool = ctx.get("pool").map(str::to_string);
    if let Some(p) = &pool {
        pools::check_pool_exist(sim, p)?;
    }
    let on_pool = |privilege: &str| {
        pool.as_ref()
            .is_some_and(|p| ctx.who.has(&format!("/pool/{p}"), privilege))
    };
    if !ctx.who.has(&format!("/vms/{vmid}"), "VM.Allocate") && !on_pool("VM.Allocate") {
        return Err(ApiError::perm_bare());
    }
    let sets: BTreeMap<String, String> = ctx
        .params
        .iter()
        .filter(|(k, _)| !CREATE_CONTROL.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // $check_vm_modify_config_perm -> RPCEnvironment::check_vm_perm: the pool's ACL first,
    // then /vms/<vmid> (whose error is the one reported).
    for k in sets.keys() {
        let privilege = crate::auth::config_privilege(k);
        if !on_pool(privilege) {
            require(&ctx.who, &format!("/vms/{vmid}"), &[privilege], false)?;
        }
    }
    // $check_storage_access for every drive before anything is created.
    for (_, v) in sets.iter().filter(|(k, _)| is_drive_key(k)) {
        if let Some(volid) = crate::drive::Drive::parse(v).volid() {
            volume_access::check_drive_access(&ctx.who, vmid, volid)?;
        }
    }
    let start = ctx.flag("start");
    // An injected task failure skips the task body; PVE removes the new VM
    // when its create task fails, so there is no placeholder to leave behind.
    if ctx.task_error.is_none() {
        reserve_vm(sim, vmid, &node, "create")?;
    }
    let sim2 = sim.clone();
    let who = ctx.who.clone();
    let upid = sim.spawn_task(
        ctx,
        &node,
        "qmcreate",
        &vmid.to_string(),
        move |_log| async move {
            let Some(mut vm) = sim2.with_vm(vmid, |v| v.clone()) else {
                return Err(format!("VM {vmid} vanished"));
            };
            let mut conf = BTreeMap::new();
            let mut created = Vec::new();
            for (k, v) in &sets {
                if !is_drive_key(k) {
                    conf.insert(k.clone(), v.clone());
                    continue;
                }
                let existed = drive_image(&sim2, &vm, v)
                    .map(|(p, _, _)| p.exists())
                    .unwrap_or(true);
                match prepare_drive(&sim2, &who, &vm, v) {
                    Ok(val) => {
                        if !existed {
                            if let Some((p, _, _)) = drive_image(&sim2, &vm, &val) {
                                created.push(p);
                            }
                        }
                        conf.insert(k.clone(), val);
                    }
                    Err(e) => {
                        abandon_vm(&sim2, vmid, &created);
                        return Err(e.message);
                    }
                }
            }
            vm.conf = conf;
            vm.status = if start {
                "running".into()
            } else {
                "stopped".into()
            };
            sim2.with_vm(vmid, |slot| *slot = vm.clone());
            // AccessControl::add_vm_to_pool once the VM exists.
            if let Some(p) = &pool {
                pools::add_vm(&sim2, vmid, p);
            }
            sim2.save().map_err(|e| e.message)?;
            if start {
                for (k, v) in vm.conf.iter().filter(|(k, _)| is_drive_key(k)) {
                    plug_drive(&sim2, &vm, k, v)?;
                }
            }
            Ok(0)
        },
    );
    Ok(json!(upid))
}

/// Volumes owned by the VM that its config (any section) refers to.
fn owned_volumes(sim: &Sim, vm: &Vm) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for (k, v) in vm
        .conf
        .iter()
        .chain(vm.pending.iter())
        .chain(vm.snapshots.values().flat_map(|s| s.iter()))
    {
        if !(is_drive_key(k) || k.starts_with("unused")) {
            continue;
        }
        if let Some((p, vn, _)) = drive_image(sim, vm, v) {
            if vn.owner == vm.vmid && !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

pub async fn destroy(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let (node, vmid) = node_vmid(ctx)?;
    sim.vm(&node, vmid)?;
    let guard = sim.lock_vm(vmid).await?;
    let vm = sim.vm(&node, vmid)?;
    check_writable(&vm, ctx)?;
    if vm.running() {
        return Err(ApiError::internal(format!(
            "VM {vmid} is running - destroy failed"
        )));
    }
    if vm.conf.get("protection").map(String::as_str) == Some("1") {
        return Err(ApiError::internal(format!(
            "can't remove VM {vmid} - protection mode enabled"
        )));
    }
    let unreferenced = ctx.flag("destroy-unreferenced-disks");
    let sim2 = sim.clone();
    let upid = sim.spawn_task(
        ctx,
        &node,
        "qmdestroy",
        &vmid.to_string(),
        move |log| async move {
            let _guard = guard;
            let mut paths = owned_volumes(&sim2, &vm);
            if unreferenced {
                // Images on every storage of the node whose name marks them as this VM's.
                let cfg = sim2.cfg();
                for st in cfg.storages.iter().filter(|s| s.available_on(&vm.node)) {
                    for img in volumes::list_images(cfg, st, &vm.node)
                        .into_iter()
                        .filter(|i| i.owner == vmid)
                    {
                        if let Ok((p, _)) = volumes::resolve(cfg, &vm.node, &img.volid) {
                            if !paths.contains(&p) {
                                paths.push(p);
                            }
                        }
                    }
                }
            }
            for key in vm.conf.keys() {
                sim2.inner.hotplug.unplug(vmid, key);
            }
            sim2.inner.hotplug.vm_stopped(vmid);
            for p in &paths {
                match volumes::free(p) {
                    Ok(_) => log.line(format!("Removed {}", p.display())),
                    Err(e) => log.line(format!("WARN: {e}")),
                }
            }
            sim2.inner.state.lock().unwrap().vms.remove(&vmid);
            // AccessControl::remove_vm_access: the VM leaves its pool.
            pools::remove_vm(&sim2, vmid);
            let _ = std::fs::remove_dir_all(
                sim2.guest_by_id_dir(vmid)
                    .parent()
                    .and_then(|p| p.parent())
                    .unwrap_or(&sim2.guest_by_id_dir(vmid)),
            );
            sim2.save().map_err(|e| e.message)?;
            Ok(0)
        },
    );
    Ok(json!(upid))
}
