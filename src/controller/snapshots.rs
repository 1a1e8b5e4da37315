//! CreateSnapshot, DeleteSnapshot, ListSnapshots: PVE snapshots of the
//! volume's holder VM, which the storage takes copy-on-write (lvmthin,
//! rbd) while the volume stays attached to its worker; what each storage type
//! allows is decided first in `features.rs`. On storages whose snapshots PVE
//! cannot copy, a snapshot is a full copy of the detached volume instead
//! (`copy_snapshots.rs`); both kinds are answered here.

use super::cluster::Cluster;
use super::cluster::{HeldVolume, HOLDER_SLOT};
use super::error::{ControllerError, PveContext, Result};
use super::features::{format_of, snapshot_kind, Op, SnapshotKind};
use super::lookup::{disk_key, name_key};
use super::paging::PageKey;
use super::snapshot_index::{is_indexed, snapshot_tag, tagged_snapshots};
use super::{required, Controller};
use crate::csi::*;
use crate::pve::drive::{parse_disk_size, Drive};
use crate::pve::PveErrorKind;
use crate::volume_id::{copy_snap_name, is_copy_snap_name, snap_name, SnapshotId, VolumeId};

/// Snapshots this driver made: `s` + 32 hex digits (see `snap_name`).
/// Snapshots an admin took of a holder by hand are not CSI snapshots.
pub(super) fn is_ours(snapname: &str) -> bool {
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
        Ok(self.snapshot_facts(cluster, held, snapname).await?.0)
    }

    /// Size and creation time of a snapshot, from its config section (one read).
    async fn snapshot_facts(
        &self,
        cluster: &Cluster,
        held: &HeldVolume,
        snapname: &str,
    ) -> Result<(u64, Option<i64>)> {
        let h = &held.holder;
        let cfg = cluster
            .client
            .vm_snapshot_config(&h.node, h.vmid, snapname)
            .await
            .ctx(|| format!("reading snapshot {snapname} of holder VM {}", h.vmid))?;
        let size = cfg
            .get(HOLDER_SLOT)
            .and_then(Drive::parse)
            .and_then(|d| d.get("size").and_then(parse_disk_size))
            .unwrap_or(held.size);
        Ok((size, cfg.get("snaptime").and_then(|t| t.parse().ok())))
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
        let plugintype = self.storage_type(cluster, &id.storage).await?;
        if snapshot_kind(&plugintype, format_of(&id.volname)) == SnapshotKind::Copy {
            let snapshot = self.create_copy_snapshot(cluster, name, &held).await?;
            return Ok(CreateSnapshotResponse {
                snapshot: Some(snapshot),
            });
        }
        let snapname = snap_name(name);
        let h = &held.holder;

        // A snapshot name is unique across volumes: the same name on another
        // volume is a different snapshot. The holders' tags say where it is.
        if let Some(other) = self.snapshot_elsewhere(cluster, h, &snapname).await? {
            return Err(ControllerError::AlreadyExists(format!(
                "name {name:?}: a snapshot of that name exists for another volume (holder VM {other})"
            )));
        }
        if let Some(other) = self.snapshot_holder(cluster, &copy_snap_name(name)).await? {
            return Err(ControllerError::AlreadyExists(format!(
                "name {name:?}: a snapshot of that name exists for another volume (snapshot holder VM {})",
                other.vmid
            )));
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
        self.require_feature(cluster, "source_volume_id", &held, Op::Snapshot)
            .await?;
        // The tag goes first, so no snapshot is ever without one; a holder
        // not yet indexed gets tags for its earlier snapshots too.
        let mut tags = vec![snapshot_tag(&snapname)];
        if !is_indexed(h) {
            tags.extend(
                existing
                    .iter()
                    .filter(|s| is_ours(&s.name))
                    .map(|s| snapshot_tag(&s.name)),
            );
        }
        self.retag_holder(
            cluster,
            h,
            held.tags.as_deref(),
            held.digest.as_deref(),
            &tags,
            &[],
        )
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
        tracing::info!(volume = %source, snapshot = %snapname, "snapshot created");
        let (size, taken) = self.snapshot_facts(cluster, &held, &snapname).await?;
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
        if id.is_copy() {
            return self.delete_copy_snapshot(cluster, &id).await;
        }
        let Some(held) = self.held(cluster, &id.volume).await? else {
            return Ok(());
        };
        let h = &held.holder;
        let snaps = cluster
            .client
            .snapshots(&h.node, h.vmid)
            .await
            .ctx(|| format!("listing snapshots of holder VM {}", h.vmid))?;
        let tag = snapshot_tag(&id.snapname);
        if snaps.iter().any(|s| s.name == id.snapname) {
            self.require_feature(cluster, "snapshot_id", &held, Op::DeleteSnapshot)
                .await?;
            cluster
                .client
                .delete_snapshot(&h.node, h.vmid, &id.snapname, self.opts.task_timeout)
                .await
                .ctx(|| format!("deleting snapshot {raw}"))?;
            tracing::info!(snapshot = %raw, "snapshot deleted");
        } else if !h.has_tag(&tag) {
            return Ok(());
        }
        // The tag goes after the snapshot (the delete changed the config:
        // read it again for its digest).
        let cfg = cluster
            .client
            .vm_config(&h.node, h.vmid, false)
            .await
            .ctx(|| format!("reading config of holder VM {}", h.vmid))?;
        self.retag_holder(cluster, h, cfg.get("tags"), cfg.digest(), &[], &[tag])
            .await
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
        let (snaps, next_token) = if !req.snapshot_id.is_empty() || !req.source_volume_id.is_empty()
        {
            // One volume's snapshots: one holder to read.
            let mut all: Vec<(PageKey, Snapshot)> = Vec::new();
            let wanted = SnapshotId::parse(&req.snapshot_id);
            let volume = match &wanted {
                Some(id) => Some(id.volume.clone()),
                None if req.snapshot_id.is_empty() => VolumeId::parse(&req.source_volume_id),
                None => None,
            };
            if let Some(vol) = volume {
                if let Some(cluster) = self.cluster(&vol.region) {
                    let region = &cluster.region;
                    if let Some(w) = wanted.as_ref().filter(|w| w.is_copy()) {
                        if let Some(c) = self.find_copy(cluster, w).await? {
                            if let Some(s) = c.to_csi(&w.snapname) {
                                all.push((PageKey::new(region, c.holder.vmid, &w.snapname), s));
                            }
                        }
                    } else if let Some(held) = self.held(cluster, &vol).await? {
                        all = self
                            .snapshots_of(cluster, &held)
                            .await?
                            .into_iter()
                            .filter(|s| wanted.is_none() || s.snapshot_id == req.snapshot_id)
                            .map(|s| {
                                let name = SnapshotId::parse(&s.snapshot_id)
                                    .map(|i| i.snapname)
                                    .unwrap_or_default();
                                (PageKey::new(region, held.holder.vmid, &name), s)
                            })
                            .collect();
                        if wanted.is_none() {
                            for (copy, c) in self
                                .copies_of(cluster, held.tags.as_deref(), &held.id)
                                .await?
                            {
                                if let Some(s) = c.to_csi(&copy) {
                                    all.push((PageKey::new(region, c.holder.vmid, &copy), s));
                                }
                            }
                        }
                    }
                }
            }
            page.cut(all)
        } else {
            self.snapshot_page(&page).await?
        };
        let entries = snaps
            .into_iter()
            .map(|(_, s)| list_snapshots_response::Entry { snapshot: Some(s) })
            .collect();
        Ok(ListSnapshotsResponse {
            entries,
            next_token,
        })
    }

    /// A page of every CSI snapshot: the keys come from the holders' tags in
    /// the VM listing (holders not yet indexed are listed one by one), and
    /// only the page's snapshots are read. A tag whose snapshot is gone (or
    /// whose holder no longer holds its volume) is skipped.
    async fn snapshot_page(
        &self,
        page: &super::paging::PageRequest,
    ) -> Result<(Vec<(PageKey, Snapshot)>, String)> {
        let mut keys: Vec<(PageKey, crate::pve::types::VmResource)> = Vec::new();
        for cluster in self.clusters() {
            for holder in cluster.holders().await? {
                let names = if is_indexed(&holder) {
                    tagged_snapshots(&holder)
                } else {
                    cluster
                        .holder_snapshots(&holder)
                        .await?
                        .into_iter()
                        .map(|s| s.name)
                        .filter(|n| is_ours(n))
                        .collect()
                };
                for n in names {
                    keys.push((
                        PageKey::new(&cluster.region, holder.vmid, &n),
                        holder.clone(),
                    ));
                }
            }
            for (copy, vm) in self.snapshot_holders(cluster).await? {
                keys.push((PageKey::new(&cluster.region, vm.vmid, &copy), vm));
            }
        }
        let (keys, next) = page.cut(keys);
        let mut out = Vec::new();
        let mut held_of: std::collections::HashMap<(String, u64), Option<HeldVolume>> =
            Default::default();
        for (key, holder) in keys {
            let Some(cluster) = self.cluster(&key.region) else {
                continue;
            };
            if is_copy_snap_name(&key.name) {
                // A snapshot holder: its own config says all (one read).
                match self.read_copy(cluster, &holder).await {
                    Ok(Some(c)) => {
                        if let Some(s) = c.to_csi(&key.name) {
                            out.push((key, s));
                        }
                    }
                    Ok(None) => {}
                    Err(e @ ControllerError::Pve { .. }) => {
                        tracing::warn!(holder = holder.vmid, error = %e, "copy snapshot left out of the listing");
                    }
                    Err(e) => return Err(e),
                }
                continue;
            }
            let slot = (key.region.clone(), key.vmid);
            if !held_of.contains_key(&slot) {
                // A holder on a node that does not answer now is left out.
                let held = match cluster.held_volume(&holder, "").await {
                    Ok(h) => h,
                    Err(e @ ControllerError::Pve { .. }) => {
                        tracing::warn!(holder = holder.vmid, error = %e, "snapshots left out of the listing");
                        None
                    }
                    Err(e) => return Err(e),
                };
                held_of.insert(slot.clone(), held);
            }
            let Some(held) = held_of[&slot].as_ref() else {
                continue;
            };
            match self.snapshot_facts(cluster, held, &key.name).await {
                Ok((size, taken)) => {
                    let s = to_csi(held, &key.name, taken, size);
                    out.push((key, s));
                }
                Err(ControllerError::Pve { source, .. }) if source.is_not_found() => continue,
                Err(e) => return Err(e),
            }
        }
        Ok((out, next))
    }
}
