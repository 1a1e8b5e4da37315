//! When PVE hides instead of refusing. Listings (`/cluster/resources`) leave out what the
//! token may not audit (pve-manager API2/Cluster.pm resources: VM.Audit per guest,
//! Datastore.Audit per storage), so a missing audit privilege looks like a missing storage
//! or a vanished VM. Where the controller expected to see something and did not, it asks PVE
//! for its own privileges on the path (GET /access/permissions, open to every token for
//! itself) and turns a missing audit privilege into PermissionDenied naming it.

use super::cluster::Cluster;
use super::error::ControllerError;

/// PermissionDenied for `privilege` missing on `path`, or None when it is held (or the
/// question cannot be answered: then the caller's own error stands).
pub(crate) async fn missing_audit(
    cluster: &Cluster,
    path: &str,
    privilege: &str,
    doing: &str,
) -> Option<ControllerError> {
    let held = cluster.client.permissions_on(path).await.ok()?;
    if held.iter().any(|p| p == privilege) {
        return None;
    }
    Some(ControllerError::PermissionDenied(format!(
        "{doing}: the Proxmox token lacks {privilege} on {path} (PVE lists only what it may audit)"
    )))
}

/// A storage the request names that no listing shows.
pub(crate) async fn unseen_storage(cluster: &Cluster, storage: &str) -> Option<ControllerError> {
    missing_audit(
        cluster,
        &format!("/storage/{storage}"),
        "Datastore.Audit",
        &format!("parameters.storage {storage:?}"),
    )
    .await
}
