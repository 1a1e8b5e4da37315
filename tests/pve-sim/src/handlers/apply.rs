//! Applying pending config changes: what may change while the VM runs, hot-(un)plugging disks
//! and what happens to volumes that leave the config.

use crate::drive::Drive;
use crate::vmstate::{is_drive_key, is_hotpluggable_bus, Vm};
use crate::{volumes, Sim};
use std::collections::BTreeMap;

/// Options PVE writes straight into the config even while the VM runs.
const FAST_PLUG: &[&str] = &[
    "name",
    "description",
    "hookscript",
    "lock",
    "onboot",
    "protection",
    "shares",
    "startup",
    "tags",
    "vmstatestorage",
];

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
pub(crate) fn drive_image(
    sim: &Sim,
    vm: &Vm,
    value: &str,
) -> Option<(std::path::PathBuf, volumes::VolName, Drive)> {
    let d = Drive::parse(value);
    let volid = d.volid()?.to_string();
    let (path, v) = volumes::resolve(sim.cfg(), &vm.node, &volid).ok()?;
    Some((path, v, d))
}

/// Attaches a drive's image to the simulated guest.
pub(crate) fn plug_drive(sim: &Sim, vm: &Vm, key: &str, value: &str) -> Result<(), String> {
    let Some((path, v, d)) = drive_image(sim, vm, value) else {
        return Ok(());
    };
    if !path.exists() {
        return Err(format!("volume {} does not exist", d.file));
    }
    sim.inner
        .hotplug
        .plug(vm.vmid, key, &path, &v.format, d.wwn(), d.serial())
}

/// The boot disks of a config (qemu-server QemuServer/Drive.pm get_bootdisks): the drives in
/// `boot: order=...`, or the legacy `bootdisk` when `boot` has no order.
pub(crate) fn bootdisks(conf: &BTreeMap<String, String>) -> Vec<String> {
    let order = conf.get("boot").and_then(|b| {
        b.split(',')
            .find_map(|kv| kv.strip_prefix("order="))
            .map(str::to_string)
    });
    match order {
        Some(o) => o
            .split(';')
            .filter(|d| is_drive_key(d))
            .map(str::to_string)
            .collect(),
        None => conf.get("bootdisk").cloned().into_iter().collect(),
    }
}

/// Hot-unplugs a drive of a running VM as qemu-server's vm_deviceunplug: a boot disk is
/// refused ("can't unplug bootdisk '<key>'"), then the device is removed once the guest has
/// released it (see hotplug::Hotplug::unplug_verified). The error is the die() text; the
/// caller adds "hotplug problem - " as vmconfig_hotplug_pending does.
pub(crate) fn unplug_drive(sim: &Sim, vm: &Vm, key: &str) -> Result<(), String> {
    if bootdisks(&vm.conf).iter().any(|b| b == key) {
        return Err(format!("can't unplug bootdisk '{key}'"));
    }
    let verify = std::time::Duration::from_millis(sim.cfg().unplug_verify_ms);
    sim.inner.hotplug.unplug_verified(vm.vmid, key, verify)
}

/// What happens to a volume leaving the config: owned ones become `unusedN` (or are freed with
/// force), foreign ones are only dropped.
fn release_volume(sim: &Sim, vm: &mut Vm, value: &str, force: bool) -> Result<(), String> {
    let Some((path, v, d)) = drive_image(sim, vm, value) else {
        return Ok(());
    };
    if v.owner != vm.vmid {
        return Ok(());
    }
    // Still referenced by another slot: nothing to release.
    if vm
        .conf
        .values()
        .filter(|x| Drive::parse(x).file == d.file)
        .count()
        > 1
    {
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
pub(crate) fn apply_pending(
    sim: &Sim,
    vmid: u32,
    force: bool,
    inject: Option<&str>,
) -> Result<(), ApplyErrors> {
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
                    if let Err(e) = unplug_drive(sim, &vm, &key) {
                        errors.insert(key.clone(), hotplug_problem(&e));
                        continue;
                    }
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
            if running && old_file.as_deref() == Some(Drive::parse(&val).file.as_str()) {
                // Same disk, new options: PVE changes I/O limits of a running
                // drive in place (block_set_io_throttle); any other option
                // waits for the next VM start.
                if only_throttle_changed(old.as_deref().unwrap_or(""), &val) {
                    vm.conf.insert(key.clone(), val);
                    vm.pending.remove(&key);
                }
                continue;
            }
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
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

/// Drive options QEMU can change on a running disk.
const THROTTLE_PREFIXES: &[&str] = &["iops", "mbps", "bps"];

fn only_throttle_changed(old: &str, new: &str) -> bool {
    let (a, b) = (Drive::parse(old).opts, Drive::parse(new).opts);
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let only = keys
        .into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .all(|k| k.as_str() == "size" || THROTTLE_PREFIXES.iter().any(|p| k.starts_with(p)));
    only
}

/// Whether a drive's image exists (used to skip disks without a backing file on startup).
pub(crate) fn drive_has_image(sim: &Sim, vm: &Vm, value: &str) -> bool {
    drive_image(sim, vm, value).is_some_and(|(p, _, _)| p.exists())
}
