//! VM start/stop as tasks: starting applies pending changes and plugs every drive, stopping
//! unplugs them.

use super::apply::{apply_errors_text, apply_pending, drive_image, plug_drive};
use super::qemu::{check_writable, node_vmid};
use crate::dispatch::Ctx;
use crate::error::ApiResult;
use crate::vmstate::is_drive_key;
use crate::Sim;
use serde_json::{json, Value};

/// POST status/start and status/stop: power state changes as tasks. Starting applies all pending
/// changes and plugs every drive; stopping unplugs them.
pub async fn power(sim: &Sim, ctx: &Ctx, start: bool) -> ApiResult<Value> {
    let (node, vmid) = node_vmid(ctx)?;
    sim.vm(&node, vmid)?;
    let guard = sim.lock_vm(vmid).await?;
    let vm = sim.vm(&node, vmid)?;
    check_writable(&vm, ctx)?;
    let sim2 = sim.clone();
    let kind = if start { "qmstart" } else { "qmstop" };
    let upid = sim.spawn_task(
        ctx,
        &node,
        kind,
        &vmid.to_string(),
        move |_log| async move {
            let _guard = guard;
            let Some(vm) = sim2.with_vm(vmid, |v| v.clone()) else {
                return Err(format!("VM {vmid} vanished"));
            };
            if start {
                if vm.running() {
                    return Err(format!("VM {vmid} already running"));
                }
                apply_pending(&sim2, vmid, false, None).map_err(|e| apply_errors_text(&e))?;
                sim2.with_vm(vmid, |v| v.status = "running".into());
                sim2.save().map_err(|e| e.message)?;
                let vm = sim2.with_vm(vmid, |v| v.clone()).expect("present");
                for (key, val) in vm.conf.iter().filter(|(k, _)| is_drive_key(k)) {
                    if drive_image(&sim2, &vm, val).is_some_and(|(p, _, _)| p.exists()) {
                        plug_drive(&sim2, &vm, key, val)?;
                    }
                }
            } else {
                for key in vm.conf.keys().filter(|k| is_drive_key(k)) {
                    sim2.inner.hotplug.unplug(vmid, key);
                }
                sim2.inner.hotplug.vm_stopped(vmid);
                sim2.with_vm(vmid, |v| v.status = "stopped".into());
                sim2.save().map_err(|e| e.message)?;
            }
            Ok(0)
        },
    );
    Ok(json!(upid))
}
