//! Step 3: does the identity hold the privileges the controller uses, on the paths it uses them.

use super::error::DoctorError;
use super::report::Recorder;
use crate::pve::PveClient;

/// Privileges the controller needs on `/storage/<id>`, with what each is for.
pub const STORAGE_PRIVS: &[(&str, &str)] = &[
    ("Datastore.AllocateSpace", "allocate volumes"),
    ("Datastore.Allocate", "free volumes"),
    ("Datastore.Audit", "list volumes and free space"),
];

/// Privileges the controller needs on each worker VM (`/vms/<vmid>`) or `/vms`.
pub const VM_PRIVS: &[(&str, &str)] = &[
    ("VM.Audit", "find worker VMs and read their config"),
    ("VM.Config.Disk", "attach and detach disks"),
];

/// Privileges the controller needs on `/vms` (propagated): every volume is
/// owned by a holder VM with an id chosen at creation, so no narrower path
/// can be named in advance.
pub const HOLDER_PRIVS: &[(&str, &str)] = &[
    (
        "VM.Allocate",
        "create and destroy the holder VM of each volume",
    ),
    ("VM.Audit", "find holder VMs"),
    ("VM.Config.Disk", "give a holder its disk and grow it"),
    ("VM.Config.Options", "name, tag and describe holder VMs"),
    ("VM.Snapshot", "take and delete snapshots"),
    ("VM.Clone", "restore snapshots and clone volumes"),
];

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
