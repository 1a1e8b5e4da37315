//! Resource pools: the `/pools` API, membership of VMs and storages, and the ACL paths members
//! inherit from. PVE keeps pools in user.cfg (pve-access-control AccessControl::parse_user_config
//! `pool:` lines) and edits them under the user.cfg lock (lock_user_config, whose error text
//! prefixes every failure: "create pool failed: ...").
//!
//! Modelled from pve-manager PVE/API2/Pool.pm (index, create_pool, update_pool, read_pool,
//! delete_pool; the deprecated `/pools/{poolid}` PUT and DELETE do the same) and
//! pve-access-control AccessControl::add_vm_to_pool / remove_vm_access. Nested pools
//! (`parent/child`) are not simulated: a `/` in a pool id is refused like an unknown parent.

use crate::auth::{require, PoolPaths};
use crate::config::PoolConfig;
use crate::dispatch::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::formats::split_list;
use crate::Sim;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeSet;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Pool {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default)]
    pub vms: BTreeSet<u32>,
    #[serde(default)]
    pub storage: BTreeSet<String>,
}

impl Pool {
    pub fn from_config(p: &PoolConfig) -> Pool {
        Pool {
            comment: (!p.comment.is_empty()).then(|| p.comment.clone()),
            vms: p.vms.iter().copied().collect(),
            storage: p.storage.iter().cloned().collect(),
        }
    }
}

/// Which `/pool/<pool>` paths each member path inherits from (RPCEnvironment::compile_acl_path
/// "resolve and cache roles of the current user/token for all pool ACL paths").
pub fn pool_paths(sim: &Sim) -> PoolPaths {
    let st = sim.inner.state.lock().unwrap();
    let mut out = PoolPaths::new();
    for (id, p) in &st.pools {
        let pool_path = format!("/pool/{id}");
        for vmid in &p.vms {
            out.entry(format!("/vms/{vmid}"))
                .or_default()
                .push(pool_path.clone());
        }
        for s in &p.storage {
            out.entry(format!("/storage/{s}"))
                .or_default()
                .push(pool_path.clone());
        }
    }
    out
}

/// RPCEnvironment::check_pool_exist: an unknown pool is a permission error.
pub fn check_pool_exist(sim: &Sim, pool: &str) -> ApiResult<()> {
    if sim.inner.state.lock().unwrap().pools.contains_key(pool) {
        Ok(())
    } else {
        Err(ApiError::perm_text(&format!(
            "pool '{pool}' does not exist"
        )))
    }
}

/// AccessControl::add_vm_to_pool, called by qemu-server's create and clone workers once the
/// VM exists; a pool deleted meanwhile is silently skipped, as PVE does.
pub fn add_vm(sim: &Sim, vmid: u32, pool: &str) {
    let mut st = sim.inner.state.lock().unwrap();
    if st.pools.contains_key(pool) {
        for p in st.pools.values_mut() {
            p.vms.remove(&vmid);
        }
        if let Some(p) = st.pools.get_mut(pool) {
            p.vms.insert(vmid);
        }
    }
}

/// AccessControl::remove_vm_access, called by qemu-server's destroy worker.
pub fn remove_vm(sim: &Sim, vmid: u32) {
    let mut st = sim.inner.state.lock().unwrap();
    for p in st.pools.values_mut() {
        p.vms.remove(&vmid);
    }
}

fn members(sim: &Sim, pool: &Pool, kind: Option<&str>) -> Vec<Value> {
    let st = sim.inner.state.lock().unwrap();
    let mut out = Vec::new();
    if kind.is_none_or(|k| k == "qemu") {
        for vmid in &pool.vms {
            // Pool.pm index skips members that no longer exist.
            let Some(vm) = st.vms.get(vmid) else { continue };
            out.push(json!({
                "id": format!("qemu/{vmid}"), "type": "qemu", "vmid": vmid,
                "node": vm.node, "name": vm.name(), "status": vm.status,
            }));
        }
    }
    if kind.is_none_or(|k| k == "storage") {
        let cfg = sim.cfg();
        for sid in &pool.storage {
            let Some(s) = cfg.storage(sid) else { continue };
            // Pool.pm prefers the local node, else the first node the storage is on.
            let node = cfg
                .nodes
                .iter()
                .find(|n| s.available_on(n))
                .cloned()
                .unwrap_or_default();
            out.push(json!({
                "id": format!("storage/{node}/{sid}"), "type": "storage", "storage": sid,
                "node": node, "plugintype": s.kind, "shared": i32::from(s.shared),
                "content": s.content, "status": "available",
            }));
        }
    }
    out
}

/// GET /pools: without `poolid`, the pools the caller has Pool.Audit on; with it, that pool and
/// its members. Pool.pm index runs the Pool.Audit check for a named pool with `noerr` and does
/// not act on its result, so the named form answers without Pool.Audit too.
pub fn index(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    if let Some(id) = ctx.get("poolid") {
        let pool = sim.inner.state.lock().unwrap().pools.get(id).cloned();
        let Some(pool) = pool else {
            return Err(ApiError::internal(format!("pool '{id}' does not exist")));
        };
        let mut e = json!({ "poolid": id, "members": members(sim, &pool, ctx.get("type")) });
        if let Some(c) = &pool.comment {
            e["comment"] = json!(c);
        }
        return Ok(json!([e]));
    }
    let st = sim.inner.state.lock().unwrap();
    let out = st
        .pools
        .iter()
        .filter(|(id, _)| ctx.who.has(&format!("/pool/{id}"), "Pool.Audit"))
        .map(|(id, p)| {
            let mut e = json!({ "poolid": id });
            if let Some(c) = &p.comment {
                e["comment"] = json!(c);
            }
            e
        })
        .collect();
    Ok(Value::Array(out))
}

/// GET /pools/{poolid} (read_pool): index for one pool, without `poolid` in the answer.
pub fn read(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let mut v = index(sim, ctx)?;
    let mut e = v.as_array_mut().and_then(|a| a.pop()).unwrap_or_default();
    if let Some(o) = e.as_object_mut() {
        o.remove("poolid");
    }
    Ok(e)
}

/// POST /pools (create_pool).
pub fn create(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let id = ctx.req("poolid")?;
    let fail = |m: String| ApiError::internal(format!("create pool failed: {m}"));
    let mut st = sim.inner.state.lock().unwrap();
    if st.pools.contains_key(id) {
        return Err(fail(format!("pool '{id}' already exists")));
    }
    if let Some((parent, _)) = id.rsplit_once('/') {
        return Err(fail(format!(
            "parent '{parent}' of pool '{id}' does not exist"
        )));
    }
    if !id.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(fail("pool name must start with a letter".into()));
    }
    st.pools.insert(
        id.to_string(),
        Pool {
            comment: ctx.get("comment").filter(|c| !c.is_empty()).map(Into::into),
            ..Default::default()
        },
    );
    drop(st);
    sim.save()?;
    Ok(Value::Null)
}

/// RPCEnvironment::check_perm_modify for a member path: Permissions.Modify, or the
/// allocate privilege of the path's kind.
fn check_perm_modify(ctx: &Ctx, path: &str) -> ApiResult<()> {
    let kind = if path.starts_with("/storage/") {
        "Datastore.Allocate"
    } else {
        "VM.Allocate"
    };
    require(&ctx.who, path, &["Permissions.Modify", kind], true)
}

/// PUT /pools (update_pool): comment, and adding or (`delete`) removing `vms` and `storage`.
pub fn update(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let id = ctx.req("poolid")?.to_string();
    let fail = |m: String| ApiError::internal(format!("update pools failed: {m}"));
    let delete = ctx.flag("delete");
    let allow_move = ctx.flag("allow-move");
    let mut st = sim.inner.state.lock().unwrap();
    if !st.pools.contains_key(&id) {
        return Err(fail(format!("pool '{id}' does not exist")));
    }
    // Work on a copy: PVE writes user.cfg only when the whole update succeeded.
    let mut pools = st.pools.clone();
    if let Some(c) = ctx.get("comment") {
        pools.get_mut(&id).expect("checked").comment = Some(c.to_string());
    }
    for v in ctx.get("vms").map(split_list).into_iter().flatten() {
        let vmid: u32 = v.parse().map_err(|_| {
            ApiError::param(
                "vms",
                format!("invalid format - value '{v}' does not look like a valid VM ID"),
            )
        })?;
        check_perm_modify(ctx, &format!("/vms/{vmid}"))?;
        let is_member = pools[&id].vms.contains(&vmid);
        if delete {
            if !is_member {
                return Err(fail(format!("VM {vmid} is not a pool member")));
            }
            pools.get_mut(&id).expect("checked").vms.remove(&vmid);
            continue;
        }
        if is_member {
            return Err(fail(format!("VM {vmid} is already a pool member")));
        }
        let existing = pools
            .iter()
            .find(|(_, p)| p.vms.contains(&vmid))
            .map(|(k, _)| k.clone());
        if let Some(existing) = existing {
            if !allow_move {
                return Err(fail(format!(
                    "VM {vmid} belongs already to pool '{existing}' and 'allow-move' is not set"
                )));
            }
            require(
                &ctx.who,
                &format!("/pool/{existing}"),
                &["Pool.Allocate"],
                false,
            )?;
            pools.get_mut(&existing).expect("found").vms.remove(&vmid);
        }
        pools.get_mut(&id).expect("checked").vms.insert(vmid);
    }
    for s in ctx.get("storage").map(split_list).into_iter().flatten() {
        check_perm_modify(ctx, &format!("/storage/{s}"))?;
        let p = pools.get_mut(&id).expect("checked");
        if delete {
            if !p.storage.remove(s) {
                return Err(fail(format!("Storage '{s}' is not a pool member")));
            }
        } else if !p.storage.insert(s.to_string()) {
            return Err(fail(format!("Storage '{s}' is already a pool member")));
        }
    }
    st.pools = pools;
    drop(st);
    sim.save()?;
    Ok(Value::Null)
}

/// DELETE /pools (delete_pool): only an empty pool; members that no longer exist don't count.
pub fn delete(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let id = ctx.req("poolid")?;
    let fail = |m: String| ApiError::internal(format!("delete pool failed: {m}"));
    let mut st = sim.inner.state.lock().unwrap();
    let Some(p) = st.pools.get(id) else {
        return Err(fail(format!("pool '{id}' does not exist")));
    };
    if let Some(vmid) = p.vms.iter().find(|v| st.vms.contains_key(v)) {
        return Err(fail(format!(
            "pool '{id}' is not empty (contains VM {vmid})"
        )));
    }
    if let Some(s) = p.storage.iter().find(|s| sim.cfg().storage(s).is_some()) {
        return Err(fail(format!(
            "pool '{id}' is not empty (contains storage '{s}')"
        )));
    }
    st.pools.remove(id);
    drop(st);
    sim.save()?;
    Ok(Value::Null)
}
