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

/// Not used by any call the driver makes today; reported so a token made now
/// does not have to be widened when snapshots and expansion arrive.
pub const UPCOMING_VM_PRIVS: &[&str] = &["VM.Allocate", "VM.Snapshot", "VM.Clone"];

/// Checks one ACL path; `required` failures are FAIL, `upcoming` ones WARN.
pub(crate) async fn check_path(
    rec: &mut Recorder,
    client: &PveClient,
    acl_path: &str,
    required: &[(&str, &str)],
    upcoming: &[&str],
) {
    let name = format!("privileges {acl_path}");
    let held = match client.permissions_on(acl_path).await {
        Ok(h) => h,
        Err(e) => {
            rec.fail(name, format!("cannot read permissions: {}", DoctorError::from_pve(&e, true)));
            return;
        }
    };
    let has = |p: &str| held.iter().any(|h| h == p);
    let missing: Vec<String> =
        required.iter().filter(|(p, _)| !has(p)).map(|(p, why)| format!("{p} on {acl_path} (to {why})")).collect();
    if missing.is_empty() {
        let names: Vec<&str> = required.iter().map(|(p, _)| *p).collect();
        rec.pass(name.clone(), names.join(", "));
    } else {
        rec.fail(name.clone(), format!("missing {}", missing.join("; ")));
    }
    let later: Vec<&str> = upcoming.iter().copied().filter(|p| !has(p)).collect();
    if !later.is_empty() {
        rec.warn(
            format!("{name} (upcoming)"),
            format!("missing {} on {acl_path}: needed for snapshots/expansion (upcoming), not used today", later.join(", ")),
        );
    }
}
