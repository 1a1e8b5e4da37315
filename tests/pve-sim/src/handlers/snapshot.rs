//! VM snapshots (create, list, delete, rollback) and full clones, backed by the storage
//! simulation's per-volume snapshots.

use super::apply::plug_drive;
use super::lifecycle::{abandon_vm, reserve_vm};
use super::qemu::{check_writable, check_writable_by, node_vmid};
use crate::auth::require;
use crate::dispatch::Ctx;
use crate::drive::Drive;
use crate::error::{ApiError, ApiResult};
use crate::vmstate::{format_size, is_drive_key, Vm};
use crate::{volumes, Sim};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Storage-backed drives of a config section: (key, image path, parsed volume, drive).
fn volumes_of(
    sim: &Sim,
    vm: &Vm,
    conf: &BTreeMap<String, String>,
) -> Vec<(String, PathBuf, volumes::VolName, Drive)> {
    conf.iter()
        .filter(|(k, _)| is_drive_key(k))
        .filter_map(|(k, v)| {
            let d = Drive::parse(v);
            let volid = d.volid()?.to_string();
            let (p, vn) = volumes::resolve(sim.cfg(), &vm.node, &volid).ok()?;
            Some((k.clone(), p, vn, d))
        })
        .collect()
}

fn snapshot_missing(snap: &str) -> ApiError {
    ApiError::internal(format!("snapshot '{snap}' does not exist"))
}

/// The running VM other than `except` whose applied config has `volid`, if any: its QEMU
/// holds the image open, and a qcow2 image open in a QEMU is locked against every other
/// writer (QEMU's image locking, on since 2.10), so `qemu-img snapshot` or `convert`, which
/// pve-storage Plugin::volume_snapshot/_rollback/_delete and qemu-server's clone_disk
/// (qemu_img_convert) run for a VM that is not running itself, fail.
fn open_elsewhere(sim: &Sim, volid: &str, except: u32) -> Option<u32> {
    let st = sim.inner.state.lock().unwrap();
    st.vms
        .values()
        .filter(|vm| vm.vmid != except && vm.running())
        .find(|vm| {
            vm.conf
                .iter()
                .filter(|(k, _)| is_drive_key(k))
                .any(|(_, v)| Drive::parse(v).volid() == Some(volid))
        })
        .map(|vm| vm.vmid)
}

/// What qemu-img answers for an image another QEMU holds, and how PVE's run_command reports
/// the failed command (pve-common Tools::run_command: "command '…' failed: exit code 1").
fn image_locked(log: &crate::tasks::TaskLog, args: &str, path: &std::path::Path) -> String {
    log.line(format!(
        "qemu-img: Could not open '{p}': Failed to get \"write\" lock",
        p = path.display()
    ));
    log.line(format!(
        "Is another process using the image [{}]?",
        path.display()
    ));
    format!(
        "command '/usr/bin/qemu-img {args} {}' failed: exit code 1",
        path.display()
    )
}

/// For a qcow2 drive open in another running VM: the error its qemu-img call gets.
fn qcow2_locked(
    sim: &Sim,
    log: &crate::tasks::TaskLog,
    vmid: u32,
    d: &Drive,
    vn: &volumes::VolName,
    path: &std::path::Path,
    args: &str,
) -> Option<String> {
    if vn.format != "qcow2" || volumes::is_block(&vn.kind) {
        return None;
    }
    let volid = d.volid()?;
    open_elsewhere(sim, volid, vmid)?;
    Some(image_locked(log, args, path))
}

pub fn list(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let (node, vmid) = node_vmid(ctx)?;
    let vm = sim.vm(&node, vmid)?;
    let mut out: Vec<Value> = vm
        .snapshots
        .iter()
        .map(|(name, s)| {
            let mut e = json!({
                "name": name,
                "description": s.get("description").cloned().unwrap_or_default(),
                "snaptime": s.get("snaptime").and_then(|t| t.parse::<u64>().ok()),
                "vmstate": 0,
            });
            if let Some(p) = s.get("parent") {
                e["parent"] = json!(p);
            }
            e
        })
        .collect();
    let mut current = json!({ "name": "current", "description": "You are here!", "running": i32::from(vm.running()) });
    if let Some(p) = vm.conf.get("parent") {
        current["parent"] = json!(p);
    }
    out.push(current);
    Ok(Value::Array(out))
}

/// Sets or clears the `lock` of a VM and persists it.
fn set_lock(sim: &Sim, vmid: u32, lock: Option<&str>) -> Result<(), String> {
    sim.with_vm(vmid, |vm| match lock {
        Some(l) => vm.conf.insert("lock".into(), l.into()),
        None => vm.conf.remove("lock"),
    });
    sim.save().map_err(|e| e.message)
}

pub async fn create(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let (node, vmid) = node_vmid(ctx)?;
    let snap = ctx.req("snapname")?.to_string();
    // qemu-server API2/Qemu.pm snapshot: reserved names are refused before the config is
    // loaded or locked.
    if snap == "current" {
        return Err(ApiError::internal(
            "unable to use snapshot name 'current' (reserved name)",
        ));
    }
    if snap.eq_ignore_ascii_case("pending") {
        return Err(ApiError::internal(
            "unable to use snapshot name 'pending' (reserved name)",
        ));
    }
    sim.vm(&node, vmid)?;
    // Everything else is the worker's (pve-guest-common AbstractConfig::snapshot_create ->
    // snapshot_prepare under lock_config): a lock timeout, a locked VM and a name in use
    // are failed qmsnapshot tasks, not errors of the request.
    let who = ctx.who.clone();
    let skiplock = ctx.get("skiplock").is_some().then(|| ctx.flag("skiplock"));
    let description = ctx.get("description").unwrap_or("").to_string();
    let sim2 = sim.clone();
    let node2 = node.clone();
    let upid = sim.spawn_task_delayed(
        ctx,
        &node,
        "qmsnapshot",
        &vmid.to_string(),
        std::time::Duration::ZERO,
        move |log| async move {
            let _guard = sim2
                .lock_vm(vmid)
                .await
                .map_err(|e| e.message.trim_end().to_string())?;
            let vm = sim2.vm(&node2, vmid).map_err(|e| e.message)?;
            check_writable_by(&vm, &who, None, skiplock).map_err(|e| e.message)?;
            if vm.snapshots.contains_key(&snap) {
                return Err(format!("snapshot name '{snap}' already used"));
            }
            let latency = sim2.task_ms("qmsnapshot");
            if latency > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(latency)).await;
            }
            let vols = volumes_of(&sim2, &vm, &vm.conf);
            if vols
                .iter()
                .any(|(_, _, vn, d)| !d.is_cdrom() && !volumes::can_snapshot(vn))
            {
                return Err("snapshot feature is not available".into());
            }
            set_lock(&sim2, vmid, Some("snapshot"))?;
            let mut done = Vec::new();
            for (key, path, vn, d) in &vols {
                if d.is_cdrom() {
                    continue;
                }
                log.line(format!("snapshotting '{key}' ({})", path.display()));
                let args = format!("snapshot -c {snap}");
                let res = match qcow2_locked(&sim2, &log, vmid, d, vn, path, &args) {
                    Some(e) => Err(e),
                    None => volumes::snapshot(path, vn, &snap),
                };
                if let Err(e) = res {
                    for (p, v) in done {
                        let _ = volumes::delete_snapshot(p, v, &snap);
                    }
                    set_lock(&sim2, vmid, None)?;
                    return Err(e);
                }
                done.push((path, vn));
            }
            sim2.with_vm(vmid, |vm| {
                let mut section: BTreeMap<String, String> = vm
                    .conf
                    .iter()
                    .filter(|(k, _)| k.as_str() != "lock" && k.as_str() != "description")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                section.insert("snaptime".into(), now().to_string());
                if !description.is_empty() {
                    section.insert("description".into(), description.clone());
                }
                vm.snapshots.insert(snap.clone(), section);
                vm.conf.insert("parent".into(), snap.clone());
                vm.conf.remove("lock");
            });
            sim2.save().map_err(|e| e.message)?;
            Ok(0)
        },
    );
    Ok(json!(upid))
}

pub async fn delete(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let (node, vmid) = node_vmid(ctx)?;
    let snap = ctx.req("snapname")?.to_string();
    sim.vm(&node, vmid)?;
    let guard = sim.lock_vm(vmid).await?;
    let vm = sim.vm(&node, vmid)?;
    check_writable(&vm, ctx)?;
    let Some(section) = vm.snapshots.get(&snap).cloned() else {
        return Err(snapshot_missing(&snap));
    };
    let force = ctx.flag("force");
    let sim2 = sim.clone();
    let upid = sim.spawn_task(
        ctx,
        &node,
        "qmdelsnapshot",
        &vmid.to_string(),
        move |log| async move {
            let _guard = guard;
            for (key, path, vn, d) in volumes_of(&sim2, &vm, &section) {
                if d.is_cdrom() {
                    continue;
                }
                let args = format!("snapshot -d {snap}");
                let res = match qcow2_locked(&sim2, &log, vmid, &d, &vn, &path, &args) {
                    Some(e) => Err(e),
                    None => volumes::delete_snapshot(&path, &vn, &snap),
                };
                if let Err(e) = res {
                    if !force {
                        return Err(format!("{key}: {e}"));
                    }
                    log.line(format!("WARN: {key}: {e}"));
                }
            }
            let parent = section.get("parent").cloned();
            sim2.with_vm(vmid, |vm| {
                vm.snapshots.remove(&snap);
                // Children of the removed snapshot move up to its parent.
                for s in vm
                    .snapshots
                    .values_mut()
                    .chain(std::iter::once(&mut vm.conf))
                {
                    if s.get("parent") == Some(&snap) {
                        match &parent {
                            Some(p) => s.insert("parent".into(), p.clone()),
                            None => s.remove("parent"),
                        };
                    }
                }
            });
            sim2.save().map_err(|e| e.message)?;
            Ok(0)
        },
    );
    Ok(json!(upid))
}

pub async fn rollback(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let (node, vmid) = node_vmid(ctx)?;
    let snap = ctx.req("snapname")?.to_string();
    sim.vm(&node, vmid)?;
    let guard = sim.lock_vm(vmid).await?;
    let vm = sim.vm(&node, vmid)?;
    check_writable(&vm, ctx)?;
    let Some(section) = vm.snapshots.get(&snap).cloned() else {
        return Err(snapshot_missing(&snap));
    };
    let start = ctx.flag("start");
    let sim2 = sim.clone();
    let upid = sim.spawn_task(
        ctx,
        &node,
        "qmrollback",
        &vmid.to_string(),
        move |log| async move {
            let _guard = guard;
            // pve-guest-common AbstractConfig::snapshot_rollback asks every volume first
            // (__snapshot_rollback_vol_possible -> the plugin's volume_rollback_is_possible):
            // ZFS rolls back only to the most recent snapshot (ZFSPoolPlugin
            // volume_rollback_is_possible), and a qcow2 image another QEMU holds is locked.
            for (key, path, vn, d) in volumes_of(&sim2, &vm, &section) {
                if d.is_cdrom() {
                    continue;
                }
                if vn.kind == "zfspool" && !volumes::newer_snapshots(&path, &snap).is_empty() {
                    return Err(format!(
                        "can't rollback, '{snap}' is not most recent snapshot on '{}'",
                        d.file
                    ));
                }
                if let Some(e) = qcow2_locked(
                    &sim2,
                    &log,
                    vmid,
                    &d,
                    &vn,
                    &path,
                    &format!("snapshot -a {snap}"),
                ) {
                    return Err(format!("{key}: {e}"));
                }
            }
            // Rolling back stops the VM (no RAM state is simulated).
            for key in vm.conf.keys() {
                sim2.inner.hotplug.unplug(vmid, key);
            }
            sim2.inner.hotplug.vm_stopped(vmid);
            for (key, path, vn, d) in volumes_of(&sim2, &vm, &section) {
                if !d.is_cdrom() {
                    volumes::rollback(&path, &vn, &snap).map_err(|e| format!("{key}: {e}"))?;
                }
            }
            let mut conf: BTreeMap<String, String> = section
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "snaptime" | "vmstate" | "description"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            conf.insert("parent".into(), snap.clone());
            let updated = sim2.with_vm(vmid, |vm| {
                vm.conf = conf;
                vm.pending.clear();
                vm.pending_delete.clear();
                vm.status = if start {
                    "running".into()
                } else {
                    "stopped".into()
                };
                vm.clone()
            });
            sim2.save().map_err(|e| e.message)?;
            if let (true, Some(vm)) = (start, updated) {
                for (k, v) in vm.conf.iter().filter(|(k, _)| is_drive_key(k)) {
                    plug_drive(&sim2, &vm, k, v)?;
                }
            }
            Ok(0)
        },
    );
    Ok(json!(upid))
}

/// qemu-server API2/Qemu.pm clone_vm, $load_and_check (run before the task is forked, so
/// refusals are errors of the request): a full clone (the default unless the source is a
/// template) needs the `copy` feature of every disk, a linked one `clone`, each asked of the
/// disk as of the snapshot when one is named.
fn check_clone_features(
    sim: &Sim,
    src: &Vm,
    conf: &BTreeMap<String, String>,
    snap: Option<&str>,
    ctx: &Ctx,
) -> ApiResult<()> {
    use crate::features::{has, Feature, State};
    let template = src.conf.get("template").map(String::as_str) == Some("1");
    let full = match ctx.get("full") {
        Some(_) => ctx.flag("full"),
        None => !template,
    };
    if !full && ctx.get("storage").is_some() {
        return Err(ApiError::internal(
            "parameter 'storage' not allowed for linked clones",
        ));
    }
    if !full && ctx.get("format").is_some() {
        return Err(ApiError::internal(
            "parameter 'format' not allowed for linked clones",
        ));
    }
    for (key, _, vn, d) in volumes_of(sim, src, conf) {
        if d.is_cdrom() {
            continue;
        }
        let feature = if full { Feature::Copy } else { Feature::Clone };
        if !has(
            &vn.kind,
            &vn.format,
            feature,
            State::of(vn.base, snap.is_some()),
        ) {
            return Err(ApiError::internal(format!(
                "{} clone feature is not supported for{} '{}' ({key})",
                if full { "Full" } else { "Linked" },
                if snap.is_some() { " a snapshot of" } else { "" },
                d.file
            )));
        }
    }
    Ok(())
}

/// Config keys a clone does not inherit.
fn clone_skips(key: &str) -> bool {
    matches!(key, "parent" | "lock" | "snaptime" | "vmstate" | "template")
        || key.starts_with("unused")
}

pub async fn clone(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let (node, vmid) = node_vmid(ctx)?;
    let newid: u32 = ctx
        .req("newid")?
        .parse()
        .map_err(|_| ApiError::param("newid", "type check ('integer') failed"))?;
    let src = sim.vm(&node, vmid)?;
    let snap = ctx.get("snapname").map(str::to_string);
    let source_conf = match &snap {
        Some(s) => src
            .snapshots
            .get(s)
            .cloned()
            .ok_or_else(|| snapshot_missing(s))?,
        None => src.conf.clone(),
    };
    let target = ctx.get("target").unwrap_or(&node).to_string();
    if !sim.cfg().has_node(&target) {
        return Err(ApiError::param(
            "target",
            format!("no such cluster node '{target}'"),
        ));
    }
    let target_storage = match ctx.get("storage") {
        Some(s) => {
            let st = volumes::storage(sim.cfg(), s)?;
            volumes::check_available(st, &target)?;
            Some(st.clone())
        }
        None => None,
    };
    // qemu-server API2/Qemu.pm clone_vm $load_and_check: the pool must exist, and
    // $check_storage_access_clone wants Datastore.AllocateSpace on every disk's target storage.
    let pool = ctx.get("pool").map(str::to_string);
    if let Some(p) = &pool {
        super::pools::check_pool_exist(sim, p)?;
    }
    for (_, v) in source_conf.iter().filter(|(k, _)| is_drive_key(k)) {
        let d = Drive::parse(v);
        if d.is_cdrom() {
            continue;
        }
        if let Some(volid) = d.volid() {
            let sid = match &target_storage {
                Some(st) => st.id.clone(),
                None => volumes::split_volid(volid)?.0.to_string(),
            };
            require(
                &ctx.who,
                &format!("/storage/{sid}"),
                &["Datastore.AllocateSpace"],
                false,
            )?;
        }
    }
    let format = ctx.get("format").map(str::to_string);
    check_clone_features(sim, &src, &source_conf, snap.as_deref(), ctx)?;
    let name = ctx
        .get("name")
        .map(str::to_string)
        .unwrap_or_else(|| format!("Copy-of-VM-{}", src.name()));
    let description = ctx.get("description").map(str::to_string);
    // An injected task failure skips the task body; PVE removes the new VM
    // when its clone task fails, so there is no placeholder to leave behind.
    if ctx.task_error.is_none() {
        reserve_vm(sim, newid, &target, "clone")?;
    }
    let sim2 = sim.clone();
    let upid = sim.spawn_task(
        ctx,
        &node,
        "qmclone",
        &vmid.to_string(),
        move |log| async move {
            let cfg = sim2.cfg();
            let mut conf: BTreeMap<String, String> = source_conf
                .iter()
                .filter(|(k, _)| !clone_skips(k) && k.as_str() != "description")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            conf.insert("name".into(), name);
            if let Some(d) = description {
                conf.insert("description".into(), d);
            }
            let mut created: Vec<PathBuf> = Vec::new();
            for (key, path, vn, mut d) in volumes_of(&sim2, &src, &source_conf) {
                if d.is_cdrom() {
                    continue;
                }
                let st = match &target_storage {
                    Some(st) => Ok(st.clone()),
                    None => volumes::split_volid(&d.file)
                        .and_then(|(sid, _)| volumes::storage(cfg, sid).cloned())
                        .map_err(|e| e.message),
                };
                // qemu-server clone_disk allocates the target with PVE::Storage::vdisk_alloc,
                // i.e. under the target storage's lock (pve-storage cluster_lock_storage);
                // parallel clones queue there and fail the task past the lock timeout.
                let lock = match &st {
                    Ok(st) => Some(sim2.lock_storage(st, &target).await),
                    Err(_) => None,
                };
                let result = (|| -> Result<String, String> {
                    let st = st?;
                    if let Some(Err(e)) = &lock {
                        return Err(e.clone());
                    }
                    volumes::check_available(&st, &target).map_err(|e| e.message)?;
                    let fmt = match &format {
                        _ if volumes::is_block(&st.kind) => "raw".to_string(),
                        Some(f) => f.clone(),
                        None => vn.format.clone(),
                    };
                    if fmt == "qcow2" && !volumes::is_block(&vn.kind) {
                        if let Some(e) = qcow2_locked(
                            &sim2,
                            &log,
                            vmid,
                            &d,
                            &vn,
                            &path,
                            &format!("convert -p -n -f {} -O {fmt}", vn.format),
                        ) {
                            return Err(format!("copy failed: {e}"));
                        }
                    }
                    let file = volumes::free_name(cfg, &st, &target, newid, &fmt);
                    let nv = volumes::VolName {
                        owner: newid,
                        file: file.clone(),
                        format: fmt.clone(),
                        kind: st.kind.clone(),
                        base: false,
                    };
                    let dst = volumes::image_path(cfg, &st, &target, &nv);
                    log.line(format!("copying '{key}' to {}", dst.display()));
                    created.push(dst.clone());
                    volumes::copy_image(&path, &vn, snap.as_deref(), &dst, &fmt)?;
                    if let Some((size, _, _)) = volumes::size_info(&dst, &fmt) {
                        d.opts.insert("size".into(), format_size(size));
                    }
                    Ok(format!("{}:{}", st.id, volumes::volname_of(&nv)))
                })();
                if lock.as_ref().is_some_and(|l| l.is_ok()) {
                    sim2.storage_work().await;
                }
                drop(lock);
                match result {
                    Ok(volid) => {
                        d.file = volid;
                        conf.insert(key, d.print());
                    }
                    Err(e) => {
                        abandon_vm(&sim2, newid, &created);
                        return Err(format!("clone failed: {e}"));
                    }
                }
            }
            sim2.with_vm(newid, |vm| vm.conf = conf);
            // AccessControl::add_vm_to_pool once the clone exists.
            if let Some(p) = &pool {
                super::pools::add_vm(&sim2, newid, p);
            }
            sim2.save().map_err(|e| e.message)?;
            Ok(0)
        },
    );
    Ok(json!(upid))
}
