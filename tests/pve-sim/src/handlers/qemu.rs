//! VM read endpoints (list, status, config, pending) and the access checks shared by writers.

use crate::auth::Identity;
use crate::dispatch::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::vmstate::Vm;
use crate::{propdef, Sim};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

pub(crate) fn node_vmid(ctx: &Ctx) -> ApiResult<(String, u32)> {
    Ok((ctx.req("node")?.to_string(), ctx.vmid()?))
}

pub fn list(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let node = ctx.req("node")?;
    let st = sim.inner.state.lock().unwrap();
    Ok(Value::Array(
        st.vms
            .values()
            // qemu-server API2/Qemu.pm vmlist: only guests with VM.Audit.
            .filter(|v| v.node == node && ctx.who.has(&format!("/vms/{}", v.vmid), "VM.Audit"))
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
    let mut v = json!({ "vmid": vmid, "name": vm.name(), "status": vm.status, "qmpstatus": vm.status,
            // qemu-server API2/Qemu.pm vm_status: `ha` from pve-ha-manager
            // HA::Config::get_service_status, `{managed => 0}` for a VM HA does not manage.
            "ha": { "managed": 0 } });
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
            let ty = propdef::lookup(props, k)
                .and_then(|d| d.get("type"))
                .and_then(Value::as_str)
                .unwrap_or("string");
            let val = match ty {
                "integer" => v
                    .parse::<i64>()
                    .map(Value::from)
                    .unwrap_or_else(|_| json!(v)),
                "number" => v
                    .parse::<f64>()
                    .map(Value::from)
                    .unwrap_or_else(|_| json!(v)),
                "boolean" => crate::validate::parse_bool(v)
                    .map(|b| json!(b as i32))
                    .unwrap_or_else(|| json!(v)),
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
    let vm = sim.vm(&node, vmid)?;
    if let Some(s) = ctx.get("snapshot") {
        // The `[snapname]` section: the config as it was when the snapshot was taken.
        let Some(section) = vm.snapshots.get(s) else {
            return Err(ApiError::internal(format!("snapshot '{s}' does not exist")));
        };
        let mut out = typed_config(sim, section);
        out.insert("digest".into(), json!(vm.digest()));
        return Ok(Value::Object(out));
    }
    let conf = if ctx.flag("current") {
        vm.conf.clone()
    } else {
        vm.merged()
    };
    let mut out = typed_config(sim, &conf);
    out.insert("digest".into(), json!(vm.digest()));
    Ok(Value::Object(out))
}

pub fn pending(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let (node, vmid) = node_vmid(ctx)?;
    let vm = sim.vm(&node, vmid)?;
    let mut keys: Vec<&String> = vm
        .conf
        .keys()
        .chain(vm.pending.keys())
        .chain(vm.pending_delete.iter())
        .collect();
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
    check_writable_by(
        vm,
        &ctx.who,
        ctx.get("digest"),
        ctx.get("skiplock").is_some().then(|| ctx.flag("skiplock")),
    )
}

pub(crate) fn check_writable_by(
    vm: &Vm,
    who: &Identity,
    digest: Option<&str>,
    skiplock: Option<bool>,
) -> ApiResult<()> {
    if skiplock.is_some() && who.userid != "root@pam" {
        return Err(ApiError::param(
            "skiplock",
            "Only root may use this option.",
        ));
    }
    if let Some(d) = digest {
        if d != vm.digest() {
            return Err(ApiError::internal(
                "checksum mismatch (file change by other user?)",
            ));
        }
    }
    if skiplock != Some(true) {
        if let Some(l) = vm.conf.get("lock") {
            return Err(ApiError::internal(format!("VM is locked ({l})")));
        }
    }
    Ok(())
}
