//! Step 3: does the identity hold the privileges the controller uses, on the paths it uses them.

use super::error::DoctorError;
use super::report::Recorder;
use crate::pve::PveClient;

/// Privileges the controller needs on `/storage/<id>`, with what each is for and the RPC
/// that fails first without it. This and the two tables below are the ACL table of
/// README.md and docs/runbook.md; tests/tenant_acl.rs removes each privilege in turn and
/// checks that RPC fails PermissionDenied naming it. Datastore.Allocate is not needed:
/// a worker uses a holder's disk through check_volume_access (Datastore.Audit here plus
/// VM.Config.Disk on the holder), and a volume is freed by destroying its holder.
pub const STORAGE_PRIVS: &[(&str, &str)] = &[
    (
        "Datastore.Audit",
        "see the storage and its volumes, and attach holders' disks to workers (CreateVolume)",
    ),
    (
        "Datastore.AllocateSpace",
        "allocate, clone and grow volumes (CreateVolume, ControllerExpandVolume)",
    ),
];

/// Privileges the controller needs on each worker VM (`/vms/<vmid>`).
pub const VM_PRIVS: &[(&str, &str)] = &[
    (
        "VM.Audit",
        "find worker VMs and read their config (ControllerPublishVolume)",
    ),
    (
        "VM.Config.Disk",
        "attach and detach disks (ControllerPublishVolume)",
    ),
];

/// Privileges the controller needs on every holder VM: on `/pool/<pool>` when the
/// cluster's config names a pool (PVE passes them on to the pool's VMs), else on `/vms`
/// (propagated), since holder ids are chosen at creation.
pub const HOLDER_PRIVS: &[(&str, &str)] = &[
    (
        "VM.Allocate",
        "create and destroy the holder VM of each volume (CreateVolume)",
    ),
    ("VM.Audit", "find holder VMs (CreateVolume)"),
    (
        "VM.Config.Disk",
        "give a holder its disk and grow it (CreateVolume)",
    ),
    (
        "VM.Config.Options",
        "name, tag, protect and describe holder VMs (CreateVolume)",
    ),
    ("VM.Snapshot", "take and delete snapshots (CreateSnapshot)"),
    (
        "VM.Clone",
        "restore snapshots and clone volumes (CreateVolume from a snapshot)",
    ),
];

/// The ACL path the holder privileges must be granted on.
pub fn holder_path(pool: Option<&str>) -> String {
    match pool {
        Some(p) => format!("/pool/{p}"),
        None => "/vms".to_string(),
    }
}

/// Checks one ACL path; a missing privilege is a FAIL naming it and its use.
pub(crate) async fn check_path(
    rec: &mut Recorder,
    client: &PveClient,
    acl_path: &str,
    required: &[(&str, &str)],
) {
    let name = format!("privileges {acl_path}");
    let held = match client.permissions_on(acl_path).await {
        Ok(h) => h,
        Err(e) => {
            rec.fail(
                name,
                format!(
                    "cannot read permissions: {}",
                    DoctorError::from_pve(&e, true)
                ),
            );
            return;
        }
    };
    let has = |p: &str| held.iter().any(|h| h == p);
    let missing: Vec<String> = required
        .iter()
        .filter(|(p, _)| !has(p))
        .map(|(p, why)| format!("{p} on {acl_path} (to {why})"))
        .collect();
    if missing.is_empty() {
        let names: Vec<&str> = required.iter().map(|(p, _)| *p).collect();
        rec.pass(name.clone(), names.join(", "));
    } else {
        rec.fail(name.clone(), format!("missing {}", missing.join("; ")));
    }
}
