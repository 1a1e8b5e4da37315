//! Storage endpoints: storage lists/status and image allocation, listing, inspection, freeing.

use super::cluster::storage_usage;
use crate::auth::require;
use crate::dispatch::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::{volumes, Sim, StorageConfig};
use serde_json::{json, Value};

fn storage_entry(sim: &Sim, s: &StorageConfig, node: &str) -> Value {
    let (total, used) = storage_usage(sim, s, node);
    json!({
        "storage": s.id, "type": s.kind, "content": s.content, "shared": if s.shared { 1 } else { 0 },
        "active": 1, "enabled": 1, "total": total, "used": used, "avail": total - used,
        "used_fraction": if total > 0 { used as f64 / total as f64 } else { 0.0 },
    })
}

pub fn list_storages(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let node = ctx.req("node")?;
    let want_content: Vec<&str> = ctx
        .get("content")
        .map(|c| crate::formats::split_list(c).collect())
        .unwrap_or_default();
    let out = sim
        .cfg()
        .storages
        .iter()
        .filter(|s| s.available_on(node))
        .filter(|s| ctx.get("storage").is_none_or(|id| id == s.id))
        .filter(|s| {
            want_content
                .iter()
                .all(|c| s.content.split(',').any(|x| x == *c))
        })
        .map(|s| storage_entry(sim, s, node))
        .collect();
    Ok(Value::Array(out))
}

/// The storage named in the path, available on the path's node.
fn node_storage<'a>(sim: &'a Sim, ctx: &Ctx) -> ApiResult<(&'a StorageConfig, String)> {
    let node = ctx.req("node")?.to_string();
    let st = volumes::storage(sim.cfg(), ctx.req("storage")?)?;
    volumes::check_available(st, &node)?;
    Ok((st, node))
}

pub fn status(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let (st, node) = node_storage(sim, ctx)?;
    Ok(storage_entry(sim, st, &node))
}

pub fn list_content(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let (st, node) = node_storage(sim, ctx)?;
    if let Some(c) = ctx.get("content") {
        if c != "images" {
            return Ok(json!([]));
        }
    }
    let vmid: Option<u32> = ctx.get("vmid").and_then(|v| v.parse().ok());
    let out = volumes::list_images(sim.cfg(), st, &node)
        .into_iter()
        .filter(|i| vmid.is_none_or(|v| v == i.owner))
        .map(|i| {
            json!({
                "volid": i.volid, "format": i.format, "size": i.size, "used": i.used,
                "vmid": i.owner, "ctime": i.ctime, "content": "images",
            })
        })
        .collect();
    Ok(Value::Array(out))
}

/// `size` is KiB with optional M/G suffix, as PVE's allocation call defines it.
fn parse_alloc_size(s: &str) -> ApiResult<u64> {
    let err = || ApiError::param("size", format!("unable to parse size '{s}'"));
    let (num, mult) = if let Some(n) = s.strip_suffix('M') {
        (n, 1024)
    } else if let Some(n) = s.strip_suffix('G') {
        (n, 1024 * 1024)
    } else {
        (s, 1)
    };
    let n: u64 = num.parse().map_err(|_| err())?;
    n.checked_mul(mult).ok_or_else(err)
}

pub fn alloc(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let size = parse_alloc_size(ctx.req("size")?)?;
    let name = ctx.req("filename")?;
    let mut fmt = ctx.get("format").map(str::to_string);
    if let Some((_, ext)) = name.rsplit_once('.') {
        if matches!(ext, "raw" | "qcow2" | "vmdk") {
            if let Some(f) = &fmt {
                if f != ext {
                    return Err(ApiError::param(
                        "format",
                        format!("different storage formats ({f} != {ext})"),
                    ));
                }
            }
            fmt = Some(ext.to_string());
        }
    }
    let (st, node) = node_storage(sim, ctx)?;
    if !st.content.split(',').any(|c| c == "images") {
        return Err(ApiError::internal(format!(
            "storage '{}' does not support vm images",
            st.id
        )));
    }
    let vmid = ctx.vmid()?;
    // dir storages default to raw.
    let fmt = fmt.unwrap_or_else(|| "raw".into());
    let volid = volumes::alloc(sim.cfg(), st, &node, vmid, name, &fmt, size)?;
    Ok(json!(volid))
}

/// PVE accepts either a full volume id or a volume name relative to the path's storage.
fn real_volid(ctx: &Ctx) -> ApiResult<String> {
    let volume = ctx.req("volume")?;
    if volume.contains(':') {
        return Ok(volume.to_string());
    }
    match ctx.get("storage") {
        Some(s) => Ok(format!("{s}:{volume}")),
        None => Err(ApiError::param(
            "volume",
            "no storage specified - incomplete volume ID",
        )),
    }
}

pub fn volume_info(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let node = ctx.req("node")?;
    let volid = real_volid(ctx)?;
    let (sid, _) = volumes::split_volid(&volid)?;
    require(
        &ctx.who,
        &format!("/storage/{sid}"),
        &["Datastore.Audit", "Datastore.AllocateSpace"],
        true,
    )?;
    let (path, v) = volumes::resolve(sim.cfg(), node, &volid)?;
    let Some((size, used, _)) = volumes::size_info(&path, &v.format) else {
        return Err(ApiError::internal(format!(
            "volume_size_info on '{volid}' failed - no format"
        )));
    };
    if size == 0 {
        return Err(ApiError::internal(format!(
            "volume '{volid}' has size zero"
        )));
    }
    Ok(json!({ "path": path.to_string_lossy(), "size": size, "used": used, "format": v.format }))
}

pub fn free(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let node = ctx.req("node")?.to_string();
    let volid = real_volid(ctx)?;
    let (sid, _) = volumes::split_volid(&volid)?;
    require(
        &ctx.who,
        &format!("/storage/{sid}"),
        &["Datastore.Allocate"],
        false,
    )?;
    let (path, vol) = volumes::resolve(sim.cfg(), &node, &volid)?;
    let id = volid.clone();
    // PVE names the task after owner and storage: `imgdel:<vmid>@<storage>`.
    let task_id = format!("{}@{sid}", vol.owner);
    let upid = sim.spawn_task(ctx, &node, "imgdel", &task_id, move |log| async move {
        // Like PVE: a missing image is only a warning, and VM references are not checked.
        match volumes::free(&path) {
            Ok(true) => {
                log.line(format!("Removed volume '{id}'"));
                Ok(0)
            }
            Ok(false) => {
                log.line(format!(
                    "WARN: disk image '{}' does not exist",
                    path.display()
                ));
                Ok(1)
            }
            Err(e) => Err(e),
        }
    });
    Ok(json!(upid))
}
