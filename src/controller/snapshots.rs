//! CreateSnapshot, DeleteSnapshot, ListSnapshots: PVE snapshots of the
//! volume's holder VM, which the storage takes copy-on-write (lvmthin,
//! rbd) while the volume stays attached to its worker; what each storage type
//! allows is decided first in `features.rs`.

use super::cluster::Cluster;
use super::cluster::{HeldVolume, HOLDER_SLOT};
use super::error::{ControllerError, PveContext, Result};
use super::features::Op;
use super::lookup::{disk_key, name_key};
use super::{required, Controller};
use crate::csi::*;
use crate::pve::drive::{parse_disk_size, Drive};
use crate::pve::PveErrorKind;
use crate::volume_id::{snap_name, SnapshotId, VolumeId};

/// Snapshots this driver made: `s` + 32 hex digits (see `snap_name`).
/// Snapshots an admin took of a holder by hand are not CSI snapshots.
fn is_ours(snapname: &str) -> bool {
    snapname.len() == 33
        && snapname.starts_with('s')
        && snapname[1..].chars().all(|c| c.is_ascii_hexdigit())
}

fn to_csi(held: &HeldVolume, snapname: &str, snaptime: Option<i64>, size: u64) -> Snapshot {
    Snapshot {
        size_bytes: size as i64,
        snapshot_id: SnapshotId {
            volume: held.id.clone(),
            snapname: snapname.to_string(),
        }
        .to_string(),
        source_volume_id: held.id.to_string(),
        creation_time: Some(prost_types::Timestamp {
            seconds: snaptime.unwrap_or(0),
            nanos: 0,
        }),
        ready_to_use: true,
        group_snapshot_id: String::new(),
    }
}

impl Controller {
    /// The volume's size when the snapshot was taken (it may have grown
    /// since): the holder's drive entry in the snapshot's config section.
    pub(super) async fn snapshot_size(
        &self,
        cluster: &Cluster,
        held: &HeldVolume,
        snapname: &str,
    ) -> Result<u64> {
        let h = &held.holder;
        let cfg = cluster
            .client
            .vm_snapshot_config(&h.node, h.vmid, snapname)
            .await
            .ctx(|| format!("reading snapshot {snapname} of holder VM {}", h.vmid))?;
        Ok(cfg
            .get(HOLDER_SLOT)
            .and_then(Drive::parse)
            .and_then(|d| d.get("size").and_then(parse_disk_size))
            .unwrap_or(held.size))
    }

    pub async fn create_snapshot(
        &self,
        req: CreateSnapshotRequest,
    ) -> Result<CreateSnapshotResponse> {
        let name = required(&req.name, "name")?;
        let source = required(&req.source_volume_id, "source_volume_id")?;
        let (id, cluster) = self.volume_cluster("source_volume_id", source)?;
        // The source disk's key: no DeleteVolume (or other snapshot call) of
        // this volume runs meanwhile; the name's key: no second snapshot of
        // this name on another volume.
        let _guard = self.begin(&disk_key(&id))?;
        let _name_guard = self.begin(&name_key("snapshot", name))?;
        let held = self.require_volume(cluster, &id).await?;
        let snapname = snap_name(name);
        let h = &held.holder;

        // A snapshot name is unique across volumes: the same name on another
        // volume is a different snapshot.
        for other in cluster.holders().await? {
            if other.vmid == h.vmid {
                continue;
            }
            let snaps = cluster.holder_snapshots(&other).await?;
            if snaps.iter().any(|s| s.name == snapname) {
                return Err(ControllerError::AlreadyExists(format!(
                    "name {name:?}: a snapshot of that name exists for another volume (holder VM {})",
                    other.vmid
                )));
            }
        }
        let existing = cluster
            .client
            .snapshots(&h.node, h.vmid)
            .await
            .ctx(|| format!("listing snapshots of holder VM {}", h.vmid))?;
        if let Some(s) = existing.iter().find(|s| s.name == snapname) {
            // Taken by an earlier attempt (perhaps one that was cut off while
            // PVE worked on it): answer for it once PVE has committed it.
            let size = self.snapshot_size(cluster, &held, &snapname).await?;
            return Ok(CreateSnapshotResponse {
                snapshot: Some(to_csi(&held, &snapname, s.snaptime, size)),
            });
        }
        // Refused before PVE is asked where the storage cannot take it, or not while attached.
        self.require_feature(cluster, "source_volume_id", &id, Op::Snapshot)
            .await?;
        let description = format!("proxmox-csi snapshot {}", name.escape_debug());
        if let Err(e) = cluster
            .client
            .create_snapshot(
                &h.node,
                h.vmid,
                &snapname,
                &description,
                self.opts.task_timeout,
            )
            .await
        {
            if e.kind() == PveErrorKind::FeatureUnavailable {
                return Err(ControllerError::FailedPrecondition(format!(
                    "source_volume_id {source}: storage {} cannot take snapshots of this disk (PVE: {e}; use lvmthin or rbd, or qcow2 on a file storage)",
                    id.storage
                )));
            }
            return Err(ControllerError::Pve {
                context: format!("snapshotting {source}"),
                source: Box::new(e),
            });
        }
        let snaps = cluster
            .client
            .snapshots(&h.node, h.vmid)
            .await
            .ctx(|| format!("listing snapshots of holder VM {}", h.vmid))?;
        let taken = snaps
            .iter()
            .find(|s| s.name == snapname)
            .and_then(|s| s.snaptime);
        tracing::info!(volume = %source, snapshot = %snapname, "snapshot created");
        let size = self.snapshot_size(cluster, &held, &snapname).await?;
        Ok(CreateSnapshotResponse {
            snapshot: Some(to_csi(&held, &snapname, taken, size)),
        })
    }

    pub async fn delete_snapshot(&self, req: DeleteSnapshotRequest) -> Result<()> {
        let raw = required(&req.snapshot_id, "snapshot_id")?;
        // Ids we never issued, and snapshots already gone: nothing to do.
        let Some(id) = SnapshotId::parse(raw) else {
            return Ok(());
        };
        let Some(cluster) = self.cluster(&id.volume.region) else {
            return Ok(());
        };
        let _guard = self.begin(&disk_key(&id.volume))?;
        let Some(held) = self.held(cluster, &id.volume).await? else {
            return Ok(());
        };
        let h = &held.holder;
        let snaps = cluster
            .client
            .snapshots(&h.node, h.vmid)
            .await
            .ctx(|| format!("listing snapshots of holder VM {}", h.vmid))?;
        if !snaps.iter().any(|s| s.name == id.snapname) {
            return Ok(());
        }
        self.require_feature(cluster, "snapshot_id", &id.volume, Op::DeleteSnapshot)
            .await?;
        cluster
            .client
            .delete_snapshot(&h.node, h.vmid, &id.snapname, self.opts.task_timeout)
            .await
            .ctx(|| format!("deleting snapshot {raw}"))?;
        tracing::info!(snapshot = %raw, "snapshot deleted");
        Ok(())
    }

    async fn snapshots_of(&self, cluster: &Cluster, held: &HeldVolume) -> Result<Vec<Snapshot>> {
        let h = &held.holder;
        let snaps = cluster
            .client
            .snapshots(&h.node, h.vmid)
            .await
            .ctx(|| format!("listing snapshots of holder VM {}", h.vmid))?;
        let mut out = Vec::new();
        for s in snaps.iter().filter(|s| is_ours(&s.name)) {
            let size = self.snapshot_size(cluster, held, &s.name).await?;
            out.push(to_csi(held, &s.name, s.snaptime, size));
        }
        Ok(out)
    }

    pub async fn list_snapshots(&self, req: ListSnapshotsRequest) -> Result<ListSnapshotsResponse> {
        let page = super::paging::PageRequest::parse(req.max_entries, &req.starting_token)?;
        let mut all: Vec<Snapshot> = Vec::new();
        if !req.snapshot_id.is_empty() {
            if let Some(id) = SnapshotId::parse(&req.snapshot_id) {
                if let Some(cluster) = self.cluster(&id.volume.region) {
                    if let Some(held) = self.held(cluster, &id.volume).await? {
                        all = self
                            .snapshots_of(cluster, &held)
                            .await?
                            .into_iter()
                            .filter(|s| s.snapshot_id == req.snapshot_id)
                            .collect();
                    }
                }
            }
        } else if !req.source_volume_id.is_empty() {
            if let Some(id) = VolumeId::parse(&req.source_volume_id) {
                if let Some(cluster) = self.cluster(&id.region) {
                    if let Some(held) = self.held(cluster, &id).await? {
                        all = self.snapshots_of(cluster, &held).await?;
                    }
                }
            }
        } else {
            for cluster in self.clusters() {
                for holder in cluster.holders().await? {
                    if let Some(held) = cluster.held_volume(&holder, "").await? {
                        all.extend(self.snapshots_of(cluster, &held).await?);
                    }
                }
            }
        }
        all.sort_by(|a, b| a.snapshot_id.cmp(&b.snapshot_id));
        let (snaps, next_token) = page.cut(&all)?;
        let entries = snaps
            .into_iter()
            .map(|s| list_snapshots_response::Entry { snapshot: Some(s) })
            .collect();
        Ok(ListSnapshotsResponse {
            entries,
            next_token,
        })
    }
}
