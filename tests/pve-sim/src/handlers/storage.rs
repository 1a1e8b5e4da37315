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

/// pve-storage API2/Storage/Status.pm read_status: the entry comes from
/// PVE::Storage::storage_info, which lists every configured storage; one not enabled on this
/// node keeps its zeroed defaults (active 0, enabled 0), and an id missing from storage.cfg is
/// raise_param_exc({storage => "No such storage."}).
pub fn status(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let node = ctx.req("node")?;
    let Some(st) = sim.cfg().storage(ctx.req("storage")?) else {
        return Err(ApiError::param("storage", "No such storage."));
    };
    if !st.available_on(node) {
        return Ok(json!({
            "type": st.kind, "content": st.content, "shared": if st.shared { 1 } else { 0 },
            "total": 0, "used": 0, "avail": 0, "active": 0, "enabled": 0,
        }));
    }
    Ok(storage_entry(sim, st, node))
}

/// One storage.cfg section as pve-storage API2/Storage/Config.pm's $api_storage_config
/// renders it: the section's keys plus `storage` and the file's `digest`, content and nodes
/// re-encoded as comma lists.
fn storage_config_entry(sim: &Sim, s: &StorageConfig) -> Value {
    let mut v = json!({ "storage": s.id, "type": s.kind, "content": s.content, "digest": storage_cfg_digest(sim) });
    if s.shared {
        v["shared"] = json!(1);
    }
    // Each type's own keys (pve-storage plugin `properties`/`options`), with the values of a
    // default install: LvmThinPlugin vgname/thinpool, LVMPlugin vgname, ZFSPoolPlugin
    // pool/sparse, RBDPlugin pool/krbd.
    match s.kind.as_str() {
        "lvmthin" => {
            v["vgname"] = json!("pve");
            v["thinpool"] = json!("data");
        }
        "lvm" => v["vgname"] = json!("pve"),
        "zfspool" => {
            v["pool"] = json!("rpool/data");
            v["sparse"] = json!(1);
        }
        "rbd" => {
            v["pool"] = json!("rbd");
            v["krbd"] = json!(0);
        }
        _ => {
            v["path"] = json!(s.dir(&sim.cfg().data_dir, "{node}").to_string_lossy());
        }
    }
    if let Some(n) = &s.nodes {
        v["nodes"] = json!(n.join(","));
    }
    v
}

/// SHA-1 over the storage.cfg text the configured storages stand for (PVE's section config
/// digest is the file's SHA-1).
fn storage_cfg_digest(sim: &Sim) -> String {
    let mut text = String::new();
    for s in &sim.cfg().storages {
        text.push_str(&format!("{}: {}\n\tcontent {}\n", s.kind, s.id, s.content));
        if s.shared {
            text.push_str("\tshared 1\n");
        }
        if let Some(n) = &s.nodes {
            text.push_str(&format!("\tnodes {}\n", n.join(",")));
        }
        text.push('\n');
    }
    use sha1::{Digest, Sha1};
    hex::encode(Sha1::digest(text.as_bytes()))
}

/// GET /storage (Config.pm index): every storage the caller has Datastore.Audit or
/// Datastore.AllocateSpace on, optionally of one `type`.
pub fn config_index(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let out = sim
        .cfg()
        .storages
        .iter()
        .filter(|s| ctx.get("type").is_none_or(|t| t == s.kind))
        .filter(|s| {
            require(
                &ctx.who,
                &format!("/storage/{}", s.id),
                &["Datastore.Audit", "Datastore.AllocateSpace"],
                true,
            )
            .is_ok()
        })
        .map(|s| storage_config_entry(sim, s))
        .collect();
    Ok(Value::Array(out))
}

/// GET /storage/{storage} (Config.pm read; PVE::Storage::storage_config dies
/// "storage '<id>' does not exist").
pub fn config_read(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let st = volumes::storage(sim.cfg(), ctx.req("storage")?)?;
    Ok(storage_config_entry(sim, st))
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

/// Content.pm create -> PVE::Storage::vdisk_alloc, which runs the plugin's alloc_image under
/// the storage lock (synchronous: a lock timeout is the request's 500).
pub async fn alloc(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
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
    let _lock = sim
        .lock_storage(st, &node)
        .await
        .map_err(ApiError::internal)?;
    sim.storage_work().await;
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
    let st = volumes::storage(sim.cfg(), sid)?.clone();
    let id = volid.clone();
    // PVE names the task after owner and storage: `imgdel:<vmid>@<storage>`.
    let task_id = format!("{}@{sid}", vol.owner);
    let sim2 = sim.clone();
    let lock_node = node.clone();
    let upid = sim.spawn_task(ctx, &node, "imgdel", &task_id, move |log| async move {
        // PVE::Storage::vdisk_free runs free_image under the storage lock, in the task.
        let _lock = sim2.lock_storage(&st, &lock_node).await?;
        // VM references are not checked. A missing image: the dir plugin
        // (Plugin::free_image) warns "disk image '...' does not exist"; LvmThinPlugin::free_image
        // removes the LV only `if ($dat->{$volname})`, so a gone LV ends OK without a word.
        match volumes::free(&path) {
            Ok(true) => {
                log.line(format!("Removed volume '{id}'"));
                Ok(0)
            }
            // ZFSPoolPlugin zfs_delete_zvol takes "dataset does not exist" as done, too.
            // (Not modelled: LVMPlugin's lvremove and RBDPlugin's `rbd rm` of a missing
            // volume fail; the simulator ends those OK as well.)
            Ok(false) if volumes::is_block(&st.kind) => Ok(0),
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

/// POST .../content/{volume} (Content.pm copy): root-only, as the method declares no
/// permissions (the dispatcher refuses everyone else). The `imgcopy` worker copies the source
/// volume to `target` (a volume id, or a name on the path's storage) on this node.
pub fn copy(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let node = ctx.req("node")?.to_string();
    let src = real_volid(ctx)?;
    let target = ctx.req("target")?;
    let dst = if target.contains(':') {
        target.to_string()
    } else {
        match ctx.get("storage") {
            Some(s) => format!("{s}:{target}"),
            None => {
                return Err(ApiError::param(
                    "volume",
                    "no storage specified - incomplete volume ID",
                ))
            }
        }
    };
    let (spath, sv) = volumes::resolve(sim.cfg(), &node, &src)?;
    let (dpath, dv) = volumes::resolve(sim.cfg(), &node, &dst)?;
    let (dsid, _) = volumes::split_volid(&dst)?;
    let dst_st = volumes::storage(sim.cfg(), dsid)?.clone();
    let sim2 = sim.clone();
    let lock_node = node.clone();
    let upid = sim.spawn_task(ctx, &node, "imgcopy", "", move |log| async move {
        log.line(format!("DEBUG: COPY {src} TO {dst}"));
        if !spath.exists() {
            return Err(format!("volume '{src}' does not exist"));
        }
        if dpath.exists() {
            return Err(format!("volume '{dst}' already exists"));
        }
        let _lock = sim2.lock_storage(&dst_st, &lock_node).await?;
        volumes::copy_image(&spath, &sv, None, &dpath, &dv.format)?;
        Ok(0)
    });
    Ok(json!(upid))
}
