//! Cluster-wide read endpoints and ticket login.

use crate::dispatch::Ctx;
use crate::error::ApiResult;
use crate::{volumes, Sim};
use serde_json::{json, Value};

pub fn version(sim: &Sim) -> ApiResult<Value> {
    let v = &sim.cfg().version;
    Ok(
        json!({ "version": v, "release": v.rsplitn(2, '.').last().unwrap_or(v), "repoid": "00000000" }),
    )
}

pub fn status(sim: &Sim) -> ApiResult<Value> {
    let cfg = sim.cfg();
    let mut out = vec![json!({
        "type": "cluster", "id": "cluster", "name": cfg.cluster_name,
        "nodes": cfg.nodes.len(), "quorate": 1, "version": 1,
    })];
    for (i, n) in cfg.nodes.iter().enumerate() {
        out.push(json!({
            "type": "node", "id": format!("node/{n}"), "name": n, "nodeid": i + 1,
            "online": 1, "local": if i == 0 { 1 } else { 0 }, "ip": format!("127.0.0.{}", i + 1), "level": "",
        }));
    }
    Ok(Value::Array(out))
}

pub fn nodes(sim: &Sim) -> ApiResult<Value> {
    Ok(Value::Array(
        sim.cfg()
            .nodes
            .iter()
            .map(|n| json!({
                "node": n, "id": format!("node/{n}"), "type": "node", "status": "online",
                "maxcpu": 4, "cpu": 0.01, "maxmem": 16u64 << 30, "mem": 2u64 << 30, "uptime": 3600,
                "level": "", "ssl_fingerprint": "",
            }))
            .collect(),
    ))
}

/// Capacity numbers shared by the storage status endpoints: used = sum of image sizes.
pub fn storage_usage(sim: &Sim, st: &crate::StorageConfig, node: &str) -> (u64, u64) {
    let used: u64 = volumes::list_images(sim.cfg(), st, node)
        .iter()
        .map(|i| i.size)
        .sum();
    (st.capacity, used.min(st.capacity))
}

pub fn resources(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let kind = ctx.get("type");
    let cfg = sim.cfg();
    let mut out = Vec::new();
    if kind.is_none() || kind == Some("vm") {
        // pve-manager API2/Cluster.pm resources: guests need VM.Audit, and carry their pool
        // (shown only with Pool.Audit on it).
        let st = sim.inner.state.lock().unwrap();
        for vm in st.vms.values() {
            if !ctx.who.has(&format!("/vms/{}", vm.vmid), "VM.Audit") {
                continue;
            }
            let pool = st
                .pools
                .iter()
                .find(|(_, p)| p.vms.contains(&vm.vmid))
                .map(|(id, _)| id.clone())
                .filter(|id| ctx.who.has(&format!("/pool/{id}"), "Pool.Audit"));
            let mut entry = json!({
                "id": format!("qemu/{}", vm.vmid), "type": "qemu", "vmid": vm.vmid, "name": vm.name(),
                "node": vm.node, "status": vm.status,
                "template": i32::from(vm.conf.get("template").map(String::as_str) == Some("1")),
                "maxmem": 2u64 << 30, "maxcpu": 2, "maxdisk": 32u64 << 30,
            });
            // PVE lists a guest's tags here (`;`-separated), only when it has some.
            if let Some(tags) = vm.conf.get("tags") {
                entry["tags"] = json!(tags);
            }
            if let Some(lock) = vm.conf.get("lock") {
                entry["lock"] = json!(lock);
            }
            if let Some(p) = pool {
                entry["pool"] = json!(p);
            }
            out.push(entry);
        }
    }
    if kind.is_none() || kind == Some("node") {
        for n in &cfg.nodes {
            out.push(json!({ "id": format!("node/{n}"), "type": "node", "node": n, "status": "online", "level": "" }));
        }
    }
    if kind.is_none() || kind == Some("storage") {
        for n in &cfg.nodes {
            // Storages need Datastore.Audit (Cluster.pm resources).
            for s in cfg.storages.iter().filter(|s| {
                s.available_on(n)
                    && ctx
                        .who
                        .has(&format!("/storage/{}", s.id), "Datastore.Audit")
            }) {
                let (total, used) = storage_usage(sim, s, n);
                out.push(json!({
                    "id": format!("storage/{n}/{}", s.id), "type": "storage", "storage": s.id, "node": n,
                    "plugintype": s.kind, "content": s.content, "shared": if s.shared { 1 } else { 0 },
                    "disk": used, "maxdisk": total, "status": "available",
                }));
            }
        }
    }
    Ok(Value::Array(out))
}

pub fn node_status(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let _ = ctx.req("node")?;
    let v = &sim.cfg().version;
    Ok(json!({
        "uptime": 3600, "cpu": 0.01, "loadavg": ["0.01", "0.02", "0.00"],
        "memory": { "total": 16u64 << 30, "used": 2u64 << 30, "free": 14u64 << 30 },
        "cpuinfo": { "cpus": 4, "sockets": 1, "cores": 4, "model": "pve-sim" },
        "pveversion": format!("pve-manager/{v}/00000000"), "kversion": "Linux pve-sim",
    }))
}

pub fn node_version(sim: &Sim) -> ApiResult<Value> {
    version(sim)
}
