//! Who may put which volume into a VM's config: qemu-server API2/Qemu.pm
//! `$check_storage_access` (and `$check_storage_access_clone`) with pve-storage
//! Storage.pm check_volume_access. This is what lets a token scoped to a pool attach a disk
//! owned by another VM (a holder) to a worker without any privilege on `/`.

use crate::auth::{require, Identity};
use crate::error::{ApiError, ApiResult};
use crate::volumes;

/// pve-storage Storage.pm check_volume_access for an `images` volume: Datastore.Allocate on the
/// storage allows everything; the owner VM itself needs nothing more; a disk owned by another
/// VM needs Datastore.Audit on the storage and VM.Config.Disk on the owner.
pub fn check_volume_access(who: &Identity, vmid: u32, volid: &str) -> ApiResult<()> {
    let (sid, volname) = volumes::split_volid(volid)?;
    let storage = format!("/storage/{sid}");
    if who.has(&storage, "Datastore.Allocate") {
        return Ok(());
    }
    // The owner is the vmid in the volume name (`vm-<vmid>-disk-N`, `<vmid>/...`).
    let owner = volname
        .rsplit('/')
        .next()
        .and_then(|f| f.strip_prefix("vm-").or_else(|| f.strip_prefix("base-")))
        .and_then(|f| f.split('-').next())
        .and_then(|v| v.parse::<u32>().ok());
    match owner {
        Some(o) if o == vmid => Ok(()),
        Some(o) => {
            require(who, &storage, &["Datastore.Audit"], false)?;
            require(who, &format!("/vms/{o}"), &["VM.Config.Disk"], false)
        }
        None => Err(ApiError::internal(format!(
            "missing privileges to access {volid}"
        ))),
    }
}

/// `$check_storage_access` for one drive value of a create or config update: a new disk
/// (`STORAGE:SIZE`) needs Datastore.AllocateSpace on the storage, an existing volume
/// check_volume_access; `none`, `cdrom` and paths are not volumes.
pub fn check_drive_access(who: &Identity, vmid: u32, volid: &str) -> ApiResult<()> {
    let Some((sid, volname)) = volid.split_once(':') else {
        return Ok(());
    };
    if volname.parse::<f64>().is_ok() {
        return require(
            who,
            &format!("/storage/{sid}"),
            &["Datastore.AllocateSpace"],
            false,
        );
    }
    check_volume_access(who, vmid, volid)
}
