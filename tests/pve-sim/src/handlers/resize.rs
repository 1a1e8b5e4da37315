//! Disk resize (grow only), as a `resize` task.

use super::qemu::{check_writable_by, node_vmid};
use crate::auth::{require, Identity};
use crate::dispatch::Ctx;
use crate::drive::Drive;
use crate::error::{ApiError, ApiResult};
use crate::vmstate::{self, format_size};
use crate::{volumes, Sim};
use serde_json::{json, Value};

/// `+N` or absolute N with optional K/M/G/T (bare = bytes), as qemu-server's resize takes it.
fn parse_resize(s: &str, current: u64) -> ApiResult<u64> {
    let (rel, body) = match s.strip_prefix('+') {
        Some(b) => (true, b),
        None => (false, s),
    };
    let n = vmstate::parse_size(body)
        .ok_or_else(|| ApiError::param("size", "value does not match the regex pattern"))?;
    Ok(if rel { current + n } else { n })
}

/// What a resize request resolves to, checked against the current config.
struct ResizePlan {
    /// The image really grows to this (storage rounding), the config records `new`.
    actual: u64,
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
        return Err(ApiError::internal(format!(
            "disk '{disk}' has no associated volume"
        )));
    };
    let (sid, _) = volumes::split_volid(&volid)?;
    require(
        &r.who,
        &format!("/storage/{sid}"),
        &["Datastore.AllocateSpace"],
        false,
    )?;
    let st = volumes::storage(sim.cfg(), sid)?;
    let (path, vol) = volumes::resolve(sim.cfg(), &vm.node, &volid)?;
    let Some((current, _, _)) = volumes::size_info(&path, &vol.format) else {
        return Err(ApiError::internal(format!(
            "Could not determine current size of volume '{volid}'"
        )));
    };
    let new = parse_resize(&r.size, current)?;
    if new < current {
        return Err(ApiError::internal("shrinking disks is not supported"));
    }
    Ok(ResizePlan {
        actual: st.round_size(new).max(current),
        path,
        vol,
        current,
        new,
    })
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
    let upid = sim.spawn_task(
        ctx,
        &node,
        "resize",
        &vmid.to_string(),
        move |log| async move {
            let _guard = sim2.lock_vm(vmid).await.map_err(|e| e.message)?;
            let plan = resize_plan(&sim2, &req).map_err(|e| e.message)?;
            if plan.new == plan.current {
                log.line("disk is already at specified size");
                return Ok(0);
            }
            // A running VM's disk grows in its QEMU (qemu-server QemuServer::qemu_block_resize);
            // the file of a stopped VM's disk with qemu-img / truncate.
            if !sim2.inner.hotplug.grow_open(vmid, &req.disk, plan.actual)? {
                volumes::grow(&plan.path, &plan.vol.format, plan.actual)?;
            }
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
        },
    );
    Ok(json!(upid))
}
