//! Copy snapshots: a CSI snapshot as a full copy of a detached volume, on the storages
//! whose own snapshots PVE cannot copy (zfspool) or that have none (thick lvm, raw files;
//! `features::SnapshotKind::Copy`).
//!
//! On those types the only copy PVE makes is of a volume's *current* state (pve-storage
//! `volume_has_feature`: `copy` in state `current`), which is one point in time only while
//! nothing writes the disk. So CreateSnapshot there needs the volume attached to no VM (its
//! attach record, verified as publish and delete verify it) and makes a full clone of the
//! volume's holder (`POST .../qemu/{holder}/clone`, full) into a *snapshot holder*: a
//! stopped, protected VM named `csi-snap-[<cluster id>-]c<32 hex>` (from the CSI snapshot
//! name, so a retry finds it), tagged `proxmox-csi;proxmox-csi-copysnap` (and the cluster's
//! tag), whose description starts with `proxmox-csi-copy-of: <source volume id> at <unix
//! time>;`. Its name has no holder prefix, so it is never listed, published or counted as a
//! volume. A restore is a full clone of the snapshot holder, whatever state the source is
//! in; the copy is independent of the source, and nothing that deletes the source touches it.
//!
//! The source's holder carries the tag `proxmox-csi-c<32 hex>` (added before the clone,
//! removed after the snapshot holder is destroyed), so DeleteVolume and ListSnapshots by
//! source find a volume's copies from the VM listing; a tag without its snapshot holder (a
//! create cut off before the clone) is skipped.
//!
//! What a retry after an interrupted CreateSnapshot finds: only the tag (the clone is made);
//! the clone still running (PVE shows the new VM locked `clone` and names it only at the
//! end: Aborted until it is done, as for creates); the clone done but not yet marked (marked
//! now); a snapshot holder without a disk (removed and made again); the finished one (its
//! answer).

use super::cluster::{owner_vmid, Cluster, HeldVolume, HOLDER_SLOT};
use super::error::{ControllerError, PveContext, Result};
use super::features::Op;
use super::snapshot_index::{snapshot_tag, tagged_copies};
use super::Controller;
use crate::csi::Snapshot;
use crate::params;
use crate::pve::drive::{parse_disk_size, Drive};
use crate::pve::types::VmResource;
use crate::volume_id::{copy_snap_name, snap_name, SnapshotId, VolumeId};
use std::time::{SystemTime, UNIX_EPOCH};

/// Marks a finished snapshot holder (set last, with its protection).
pub const COPY_SNAPSHOT_TAG: &str = "proxmox-csi-copysnap";

/// A snapshot holder's description starts with `COPY_KEY <source id> at <unix time>;`.
pub const COPY_KEY: &str = "proxmox-csi-copy-of:";

/// The description of the snapshot holder of `csi_name`, a copy of `source` taken at `taken`.
pub fn copy_description(source: &VolumeId, taken: i64, csi_name: &str) -> String {
    format!(
        "{COPY_KEY} {source} at {taken}; proxmox-csi snapshot {} (a full copy of that volume). Never start or delete this VM by hand.",
        csi_name.escape_debug()
    )
}

/// The source volume and creation time at the start of a snapshot holder's description.
pub fn parse_copy_description(description: &str) -> Option<(VolumeId, i64)> {
    let (value, _) = description.strip_prefix(COPY_KEY)?.split_once(';')?;
    match value.split_whitespace().collect::<Vec<_>>().as_slice() {
        [id, "at", t] => Some((VolumeId::parse(id)?, t.parse().ok()?)),
        _ => None,
    }
}

/// A snapshot holder as read from its config.
#[derive(Debug, Clone)]
pub struct CopySnapshot {
    pub holder: VmResource,
    /// What its description says it copies; None when it says nothing of the kind
    /// (a VM that only looks like one: never touched).
    pub source: Option<VolumeId>,
    pub taken: i64,
    /// The copy's disk (its `scsi0`), once the clone got that far.
    pub disk: Option<String>,
    pub size: u64,
    /// Other disks than the copy: a snapshot holder has none.
    pub others: Vec<String>,
    pub lock: Option<String>,
    /// Carries [`COPY_SNAPSHOT_TAG`]: the last step of its CreateSnapshot is done.
    pub marked: bool,
}

impl CopySnapshot {
    /// A copy of the volume `id` (the zone is not compared: on a shared storage two
    /// spellings name one disk).
    pub fn is_of(&self, id: &VolumeId) -> bool {
        self.source
            .as_ref()
            .is_some_and(|s| s.region == id.region && s.volid() == id.volid() && s.tag == id.tag)
    }

    pub fn ready(&self) -> bool {
        self.marked && self.lock.is_none() && self.disk.is_some()
    }

    /// The CSI snapshot, named `copy` (its `c<32 hex>` name).
    pub fn to_csi(&self, copy: &str) -> Option<Snapshot> {
        let source = self.source.as_ref()?;
        Some(Snapshot {
            size_bytes: self.size as i64,
            snapshot_id: SnapshotId {
                volume: source.clone(),
                snapname: copy.to_string(),
            }
            .to_string(),
            source_volume_id: source.to_string(),
            creation_time: Some(prost_types::Timestamp {
                seconds: self.taken,
                nanos: 0,
            }),
            ready_to_use: self.ready(),
            group_snapshot_id: String::new(),
        })
    }
}

/// The copy name (`c<32 hex>`) in a snapshot holder's name.
pub fn copy_name_of(vm: &VmResource) -> Option<String> {
    let name = vm.name.as_deref()?;
    let tail = name.get(name.len().checked_sub(33)?..)?;
    crate::volume_id::is_copy_snap_name(tail).then(|| tail.to_string())
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Controller {
    /// The snapshot holder of the copy snapshot `copy`, from the VM listing.
    pub(super) async fn snapshot_holder(
        &self,
        cluster: &Cluster,
        copy: &str,
    ) -> Result<Option<VmResource>> {
        let name = cluster.tenancy.snapshot_holder_name(copy);
        let mut found: Vec<VmResource> = cluster
            .client
            .vms()
            .await
            .ctx(|| format!("listing VMs of cluster {}", cluster.region))?
            .into_iter()
            .filter(|v| cluster.tenancy.owns_snapshot_holder(v) && v.name.as_deref() == Some(&name))
            .collect();
        found.sort_by_key(|v| v.vmid);
        Ok(found.into_iter().next())
    }

    /// Every snapshot holder of this cluster, with its copy name (the VM listing only).
    pub(super) async fn snapshot_holders(
        &self,
        cluster: &Cluster,
    ) -> Result<Vec<(String, VmResource)>> {
        Ok(cluster
            .client
            .vms()
            .await
            .ctx(|| format!("listing VMs of cluster {}", cluster.region))?
            .into_iter()
            .filter(|v| cluster.tenancy.owns_snapshot_holder(v))
            .filter_map(|v| {
                let copy = copy_name_of(&v)?;
                (v.name.as_deref() == Some(&cluster.tenancy.snapshot_holder_name(&copy)))
                    .then_some((copy, v))
            })
            .collect())
    }

    /// A snapshot holder's config, read now; None once it is gone.
    pub(super) async fn read_copy(
        &self,
        cluster: &Cluster,
        vm: &VmResource,
    ) -> Result<Option<CopySnapshot>> {
        let cfg = match cluster.client.vm_config(&vm.node, vm.vmid, false).await {
            Ok(c) => c,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => {
                return Err(ControllerError::Pve {
                    context: format!("reading config of snapshot holder VM {}", vm.vmid),
                    source: Box::new(e),
                })
            }
        };
        let described = parse_copy_description(cfg.get("description").unwrap_or_default());
        let drive = cfg.get(HOLDER_SLOT).and_then(Drive::parse);
        let others = cfg
            .drives()
            .filter(|(k, _)| *k != HOLDER_SLOT)
            .map(|(k, d)| format!("{k}={}", d.volume))
            .collect();
        let marked = cfg
            .get("tags")
            .unwrap_or_default()
            .split([';', ',', ' '])
            .any(|t| t == COPY_SNAPSHOT_TAG);
        Ok(Some(CopySnapshot {
            holder: vm.clone(),
            taken: described.as_ref().map(|d| d.1).unwrap_or(0),
            source: described.map(|d| d.0),
            size: drive
                .as_ref()
                .and_then(|d| d.get("size").and_then(parse_disk_size))
                .unwrap_or(0),
            disk: drive.map(|d| d.volume),
            others,
            lock: cfg.get("lock").map(str::to_string),
            marked,
        }))
    }

    /// The copy snapshot the id names, if it exists and copies the id's volume.
    pub(super) async fn find_copy(
        &self,
        cluster: &Cluster,
        id: &SnapshotId,
    ) -> Result<Option<CopySnapshot>> {
        let Some(vm) = self.snapshot_holder(cluster, &id.snapname).await? else {
            return Ok(None);
        };
        Ok(self
            .read_copy(cluster, &vm)
            .await?
            .filter(|c| c.is_of(&id.volume)))
    }

    /// The copy snapshots of the volume `id` whose holder has `tags` (they name them;
    /// each is checked against its snapshot holder), with their copy names. No request
    /// for a volume without copies.
    pub(super) async fn copies_of(
        &self,
        cluster: &Cluster,
        tags: Option<&str>,
        id: &VolumeId,
    ) -> Result<Vec<(String, CopySnapshot)>> {
        let mut out = Vec::new();
        for copy in tagged_copies(tags) {
            let id = SnapshotId {
                volume: id.clone(),
                snapname: copy.clone(),
            };
            if let Some(c) = self.find_copy(cluster, &id).await? {
                out.push((copy, c));
            }
        }
        Ok(out)
    }

    /// Marks a finished snapshot holder: its tags (those its clone copied from the
    /// volume's holder go) and protection.
    async fn mark_snapshot_holder(&self, cluster: &Cluster, node: &str, vmid: u64) -> Result<()> {
        let tags = format!("{};{COPY_SNAPSHOT_TAG}", cluster.tenancy.holder_tags());
        let mark = params![("tags", tags), ("protection", 1)];
        cluster
            .client
            .update_vm_config(node, vmid, &mark, self.opts.task_timeout)
            .await
            .ctx(|| format!("marking snapshot holder VM {vmid}"))
    }

    /// CreateSnapshot as a copy (the caller holds the source disk's and the name's
    /// in-flight keys and has resolved the source).
    ///
    /// Idempotent by name: an earlier attempt's snapshot holder of this volume is waited
    /// for (Aborted while its clone runs), finished (marked) or, holding no disk, removed
    /// and made again; one of another volume is AlreadyExists. Refused (FailedPrecondition
    /// naming the storage type) while the volume is attached, before anything is made.
    pub(super) async fn create_copy_snapshot(
        &self,
        cluster: &Cluster,
        name: &str,
        held: &HeldVolume,
    ) -> Result<Snapshot> {
        let copy = copy_snap_name(name);
        let holder_name = cluster.tenancy.snapshot_holder_name(&copy);
        // A CSI snapshot name is unique across volumes and kinds.
        if let Some(other) = self
            .snapshot_elsewhere(cluster, &held.holder, &snap_name(name))
            .await?
        {
            return Err(ControllerError::AlreadyExists(format!(
                "name {name:?}: a snapshot of that name exists for another volume (holder VM {other})"
            )));
        }
        let owns = |v: &VmResource| cluster.tenancy.owns_snapshot_holder(v);
        if let Some(vm) = self
            .find_vm_when_settled(cluster, &holder_name, owns)
            .await?
        {
            match self.read_copy(cluster, &vm).await? {
                None => {} // removed meanwhile
                Some(c) if c.source.is_none() => {
                    return Err(ControllerError::FailedPrecondition(format!(
                        "name {name:?}: VM {} is named as its snapshot holder but does not say what it copies; inspect it by hand",
                        vm.vmid
                    )))
                }
                Some(c) if !c.is_of(&held.id) => {
                    return Err(ControllerError::AlreadyExists(format!(
                        "name {name:?}: a snapshot of that name exists for another volume ({})",
                        c.source.as_ref().map(|s| s.to_string()).unwrap_or_default()
                    )))
                }
                Some(c) => {
                    if let Some(lock) = &c.lock {
                        return Err(ControllerError::Aborted(format!(
                            "snapshot holder VM {} of {name:?} is still being made (lock: {lock}); retry later",
                            vm.vmid
                        )));
                    }
                    if c.disk.is_some() && c.others.is_empty() {
                        if !c.marked {
                            self.mark_snapshot_holder(cluster, &vm.node, vm.vmid)
                                .await?;
                        }
                        let mut c = c;
                        c.marked = true;
                        return c.to_csi(&copy).ok_or_else(|| {
                            ControllerError::Internal("copy without a source".into())
                        });
                    }
                    if !c.others.is_empty() {
                        return Err(ControllerError::FailedPrecondition(format!(
                            "snapshot holder VM {} of {name:?} has other disks ({}); inspect it by hand",
                            vm.vmid,
                            c.others.join(", ")
                        )));
                    }
                    // A clone that left no disk in it carries no data.
                    tracing::warn!(
                        vmid = vm.vmid,
                        "removing a snapshot holder left without a disk by an interrupted snapshot"
                    );
                    self.unprotect_and_destroy(cluster, &vm.node, vm.vmid)
                        .await?;
                }
            }
        }
        // Only a detached volume: the copy reads the live disk.
        self.require_feature(cluster, "source_volume_id", held, Op::Snapshot)
            .await?;
        // Its id is claimed from the VM listing this call has read, before the tag
        // write drops that listing.
        let claimed = self.claim_vmid(cluster, &[]).await?;
        // The tag goes first, so no copy is ever without one.
        self.retag_holder(
            cluster,
            &held.holder,
            held.tags.as_deref(),
            held.digest.as_deref(),
            &[snapshot_tag(&copy)],
            &[],
        )
        .await?;
        let taken = now_secs();
        let mut opts = params![
            ("name", &holder_name),
            ("description", copy_description(&held.id, taken, name))
        ];
        opts.extend(cluster.tenancy.placement_params());
        let (newid, _creating) = self
            .clone_claimed(
                cluster,
                &held.holder,
                &held.id.storage,
                &opts,
                Some(claimed),
            )
            .await?;
        self.mark_snapshot_holder(cluster, &held.holder.node, newid)
            .await?;
        tracing::info!(volume = %held.id, snapshot = %copy, holder = newid, "copy snapshot created");
        let vm = super::holder::made_holder(
            newid,
            &holder_name,
            &held.holder.node,
            format!("{};{COPY_SNAPSHOT_TAG}", cluster.tenancy.holder_tags()),
        );
        self.read_copy(cluster, &vm)
            .await?
            .and_then(|c| c.to_csi(&copy))
            .ok_or_else(|| {
                ControllerError::Aborted(format!(
                    "snapshot holder VM {newid} vanished right after it was made; retry"
                ))
            })
    }

    /// DeleteSnapshot of a copy (the caller holds the source disk's in-flight key).
    /// Idempotent: a snapshot holder that is gone, or that does not copy the id's volume,
    /// is OK with nothing touched. Only a VM that says it copies this volume and holds
    /// nothing but its own disk is destroyed; Aborted while its clone still runs.
    pub(super) async fn delete_copy_snapshot(
        &self,
        cluster: &Cluster,
        id: &SnapshotId,
    ) -> Result<()> {
        // The source is read before anything is written (the writes drop the shared VM
        // listing); destroying the snapshot holder leaves its config as read.
        let source = self.held(cluster, &id.volume).await?;
        if let Some(c) = self.find_copy(cluster, id).await? {
            let vm = &c.holder;
            if let Some(lock) = &c.lock {
                return Err(ControllerError::Aborted(format!(
                    "snapshot holder VM {} is still being made (lock: {lock}); retry later",
                    vm.vmid
                )));
            }
            let own_disk = c
                .disk
                .as_deref()
                .is_none_or(|d| owner_vmid(d) == Some(vm.vmid));
            if !own_disk || !c.others.is_empty() {
                return Err(ControllerError::FailedPrecondition(format!(
                    "snapshot holder VM {} holds {:?} and {:?}, not only its own copy; refusing to destroy it",
                    vm.vmid, c.disk, c.others
                )));
            }
            self.unprotect_and_destroy(cluster, &vm.node, vm.vmid)
                .await?;
            tracing::info!(snapshot = %id, holder = vm.vmid, "copy snapshot deleted");
        }
        // The source's tag goes after its snapshot holder.
        let tag = snapshot_tag(&id.snapname);
        if let Some(held) = source {
            if tagged_copies(held.tags.as_deref()).contains(&id.snapname) {
                self.retag_holder(
                    cluster,
                    &held.holder,
                    held.tags.as_deref(),
                    held.digest.as_deref(),
                    &[],
                    &[tag],
                )
                .await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_and_names_round_trip() {
        let id = VolumeId::parse("sim/pve1/local-zfs/0a1b2c3d/vm-100000-disk-0").unwrap();
        let d = copy_description(&id, 1_700_000_000, "snap\n1");
        assert!(!d.contains('\n'));
        assert_eq!(parse_copy_description(&d), Some((id, 1_700_000_000)));
        assert_eq!(parse_copy_description("proxmox-csi volume x"), None);
        assert_eq!(
            parse_copy_description("proxmox-csi-copy-of: junk at 1; x"),
            None
        );
        let copy = copy_snap_name("snap-1");
        let vm = VmResource {
            vmid: 100001,
            name: Some(format!("csi-snap-k8s-a-{copy}")),
            node: "pve1".into(),
            kind: "qemu".into(),
            status: None,
            template: false,
            tags: None,
            lock: None,
        };
        assert_eq!(copy_name_of(&vm), Some(copy));
    }
}
