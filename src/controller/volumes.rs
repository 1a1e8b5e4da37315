//! CreateVolume (empty, from a snapshot, or a clone of a volume) and DeleteVolume.

use super::cluster::Cluster;
use super::cluster::{HeldVolume, HOLDER_SLOT};
use super::error::{ControllerError, PveContext, Result};
use super::features::{self, Op, Support};
use super::lookup::{disk_key, name_key};
use super::params::{check_capabilities, parse_volume_params, size_fits, size_for, VolumeParams};
use super::{required, Controller};
use crate::csi::volume_content_source::Type as Source;
use crate::csi::{
    CreateVolumeRequest, CreateVolumeResponse, DeleteVolumeRequest, Topology, Volume,
    VolumeContentSource,
};
use crate::params;
use crate::pve::types::StorageResource;
use crate::pve::PveErrorKind;
use crate::volume_id::{shorten, SnapshotId, VolumeId, TOPOLOGY_REGION, TOPOLOGY_ZONE};

/// Prefix of the temporary snapshot a clone of a live volume is taken from.
pub const TEMP_SNAPSHOT_PREFIX: &str = "clone_";

/// Whether `name` is exactly a temporary clone snapshot this driver names
/// (the prefix and 24 hex digits): a snapshot someone took by hand with a
/// similar name is never removed as one.
pub fn is_temp_snapshot(name: &str) -> bool {
    name.strip_prefix(TEMP_SNAPSHOT_PREFIX).is_some_and(|h| {
        h.len() == 24
            && h.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

/// Where a volume may be allocated: the cluster and its candidate nodes.
pub(super) struct Placement {
    pub region: String,
    /// Storage entries (one per node) in order of preference.
    pub candidates: Vec<StorageResource>,
    pub shared: bool,
}

/// The disk a content source names, if its id parses (for its in-flight key).
fn source_disk(source: Option<&VolumeContentSource>) -> Option<VolumeId> {
    match source?.r#type.as_ref()? {
        Source::Snapshot(s) => SnapshotId::parse(&s.snapshot_id).map(|s| s.volume),
        Source::Volume(v) => VolumeId::parse(&v.volume_id),
    }
}

/// What the new volume starts from.
enum Origin {
    Empty,
    Snapshot(SnapshotId, HeldVolume),
    /// A copy snapshot: its snapshot holder, read as a volume.
    Copy(HeldVolume),
    Volume(HeldVolume),
}

impl Controller {
    /// CreateVolume.
    ///
    /// Idempotent and resumable by name: the holder VM's name is derived
    /// from the CSI name, so a retry after a cancel, a crash or a PVE error
    /// at any step finds what the earlier attempt made and finishes it (a
    /// holder without its disk is cleared and redone, a clone not yet grown
    /// to the size asked is grown, I/O limits not yet stored are stored, a
    /// temporary clone snapshot left on the source is removed), then answers
    /// as the first attempt would have.
    pub async fn create_volume(&self, req: CreateVolumeRequest) -> Result<CreateVolumeResponse> {
        let name = required(&req.name, "name")?;
        check_capabilities(&req.volume_capabilities)?;
        let params = parse_volume_params(&req.parameters, self.opts.default_storage.as_deref())?;
        params.check_format(&req.volume_capabilities, &req.parameters)?;
        let size = size_for(req.capacity_range.as_ref())?;
        let size = super::params::fs_minimum(
            &req.volume_capabilities,
            &req.parameters,
            size,
            req.capacity_range.as_ref(),
        )?;
        let limits = super::params::parse_io_limits(&req.mutable_parameters)?;
        let _guard = self.begin(&name_key("volume", name))?;

        let placement = self
            .place(&params.storage, req.accessibility_requirements.as_ref())
            .await?;
        let cluster = self
            .cluster(&placement.region)
            .expect("placement picks a configured cluster");
        let format = params.disk_format.as_deref().unwrap_or("raw");
        let plugintype = placement
            .candidates
            .first()
            .and_then(|c| c.plugintype.clone())
            .unwrap_or_default();
        features::check_format(&params.storage, &plugintype, format)?;
        let holder_name = cluster.tenancy.holder_name(name);
        // Taken before anything is looked up, and held to the end: the source
        // of a clone or restore must not be deleted or changed meanwhile.
        let source = req.volume_content_source.as_ref();
        let _source_guard = match source_disk(source) {
            Some(id) => Some(self.begin(&disk_key(&id))?),
            None => None,
        };
        // The same name always maps to the same holder: look for it first.
        if let Some(holder) = self.find_holder_when_settled(cluster, &holder_name).await? {
            let zone = self.zone_of(&placement, &holder.node);
            match cluster.held_volume(&holder, &zone).await? {
                Some(held) => {
                    // The source may be gone by now; the copy is made.
                    let origin = match self.origin(cluster, source).await {
                        Ok(o) => Some(o),
                        Err(ControllerError::NotFound(_)) => None,
                        Err(e) => return Err(e),
                    };
                    let held = self
                        .finish_existing(
                            cluster,
                            name,
                            held,
                            &params,
                            source.is_some(),
                            origin.as_ref(),
                            &req,
                            &limits,
                        )
                        .await?;
                    return Ok(self.volume_response(
                        &placement,
                        held.id,
                        held.size,
                        &params,
                        req.volume_content_source,
                    ));
                }
                // An earlier create stopped half-way (the controller died
                // between its steps): clear the diskless holder and redo it.
                None => self.clear_unfinished_holder(cluster, &holder).await?,
            }
        }
        let origin = self.origin(cluster, source).await?;

        let held = match &origin {
            Origin::Empty => {
                let target = self.pick_node(&placement, size).await?;
                self.create_holder(
                    cluster,
                    &target,
                    &holder_name,
                    name,
                    size,
                    params.backup,
                    format,
                )
                .await?
            }
            Origin::Snapshot(snap, source) => {
                self.require_feature(cluster, "volume_content_source", source, Op::Restore)
                    .await?;
                self.clone_holder(
                    cluster,
                    &placement,
                    source,
                    Some(&snap.snapname),
                    &holder_name,
                    name,
                    size,
                    &params,
                )
                .await?
            }
            // A full copy of the snapshot holder, which no VM ever has.
            Origin::Copy(copy) => {
                self.clone_holder(
                    cluster,
                    &placement,
                    copy,
                    None,
                    &holder_name,
                    name,
                    size,
                    &params,
                )
                .await?
            }
            Origin::Volume(source) => {
                self.clone_volume(
                    cluster,
                    &placement,
                    source,
                    &holder_name,
                    name,
                    size,
                    &params,
                )
                .await?
            }
        };
        if !limits.is_empty() {
            self.store_limits(cluster, &held, &limits).await?;
        }
        tracing::info!(volume = %held.id, size = held.size, holder = held.holder.vmid, "volume created");
        Ok(self.volume_response(
            &placement,
            held.id,
            held.size,
            &params,
            req.volume_content_source,
        ))
    }

    /// The volume of this name exists: check it is what was asked for, and
    /// finish what an interrupted attempt left undone.
    #[allow(clippy::too_many_arguments)]
    async fn finish_existing(
        &self,
        cluster: &Cluster,
        name: &str,
        mut held: HeldVolume,
        params: &VolumeParams,
        has_source: bool,
        origin: Option<&Origin>,
        req: &CreateVolumeRequest,
        limits: &super::params::IoLimits,
    ) -> Result<HeldVolume> {
        if held.id.storage != params.storage {
            return Err(ControllerError::AlreadyExists(format!(
                "name {name:?}: volume {} exists on storage {}, not {}",
                held.id, held.id.storage, params.storage
            )));
        }
        let required = req
            .capacity_range
            .as_ref()
            .map(|r| r.required_bytes.max(0) as u64)
            .unwrap_or(0);
        if has_source && held.size < required {
            // A restore or clone to a larger size stopped between the clone
            // and the resize: the copy is ours and new, grow it now.
            let want = size_for(req.capacity_range.as_ref())?;
            let h = &held.holder;
            cluster
                .client
                .resize(&h.node, h.vmid, HOLDER_SLOT, want, self.opts.task_timeout)
                .await
                .ctx(|| format!("growing the copy {} to {want} bytes", held.id))?;
            held = cluster
                .held_volume(&held.holder, "")
                .await?
                .ok_or_else(|| {
                    ControllerError::Aborted(format!(
                        "volume {} vanished while growing; retry",
                        held.id
                    ))
                })?;
        }
        if !size_fits(held.size, req.capacity_range.as_ref()) {
            return Err(ControllerError::AlreadyExists(format!(
                "name {name:?}: volume {} exists with {} bytes, which does not fit the requested capacity_range",
                held.id, held.size
            )));
        }
        if let Some(Origin::Volume(source)) = origin {
            self.drop_temp_snapshot(cluster, source, name).await?;
        }
        let stored = super::params::io_limits_of(&held.drive);
        if limits
            .iter()
            .any(|(k, v)| stored.iter().find(|(s, _)| s == k).map(|(_, sv)| sv) != Some(v))
        {
            self.store_limits(cluster, &held, limits).await?;
        }
        Ok(held)
    }

    /// A holder without its disk is what an interrupted create leaves. While
    /// PVE still works on it (a task holds the VM lock, or its disk is
    /// being made or freed), wait; once it is idle and holds no disk at all,
    /// it carries no data and may go.
    async fn clear_unfinished_holder(
        &self,
        cluster: &Cluster,
        holder: &crate::pve::types::VmResource,
    ) -> Result<()> {
        let cfg = match cluster
            .client
            .vm_config(&holder.node, holder.vmid, false)
            .await
        {
            Ok(c) => c,
            Err(e) if e.is_not_found() => return Ok(()), // removed meanwhile
            Err(e) => {
                return Err(ControllerError::Pve {
                    context: format!("reading config of holder VM {}", holder.vmid),
                    source: Box::new(e),
                })
            }
        };
        if let Some(lock) = cfg.get("lock") {
            return Err(ControllerError::Aborted(format!(
                "holder VM {} is still being set up or removed (locked: {lock}); retry later",
                holder.vmid
            )));
        }
        if let Some((slot, d)) = cfg.drives().next() {
            let storage = d.volume.split_once(':').map(|(s, _)| s).unwrap_or("");
            if cluster
                .find_volume(&holder.node, storage, &d.volume)
                .await?
                .is_some()
            {
                // A disk that exists, where this driver puts none: never ours to remove.
                return Err(ControllerError::FailedPrecondition(format!(
                    "holder VM {} has {slot}={} but not the expected disk; inspect it by hand",
                    holder.vmid, d.volume
                )));
            }
            // Its disk entry is there but the storage does not list the disk:
            // a create or delete of it is under way. Not ours to judge yet.
            return Err(ControllerError::Aborted(format!(
                "holder VM {} has {slot}={} but the storage does not list that disk (being created or removed?); retry later",
                holder.vmid, d.volume
            )));
        }
        // Its disk may have been allocated without being put in scsi0; it is
        // new and empty, owned by this holder, and goes with it.
        tracing::warn!(
            vmid = holder.vmid,
            "removing a holder VM left without a disk by an interrupted create"
        );
        self.unprotect_and_destroy(cluster, &holder.node, holder.vmid)
            .await
    }

    fn zone_of(&self, placement: &Placement, holder_node: &str) -> String {
        if placement.shared {
            holder_node.to_string()
        } else {
            String::new()
        }
    }

    /// Resolve the content source (the caller holds the source disk's
    /// in-flight key: a clone must not race a delete or snapshot of its
    /// source); a missing snapshot or volume is NotFound.
    async fn origin(
        &self,
        cluster: &Cluster,
        source: Option<&VolumeContentSource>,
    ) -> Result<Origin> {
        let Some(src) = source.and_then(|s| s.r#type.as_ref()) else {
            return Ok(Origin::Empty);
        };
        match src {
            Source::Snapshot(s) => {
                let raw = required(&s.snapshot_id, "volume_content_source.snapshot.snapshot_id")?;
                let not_found = || {
                    ControllerError::NotFound(format!(
                        "volume_content_source.snapshot.snapshot_id \"{}\": no such snapshot",
                        shorten(raw)
                    ))
                };
                let id = SnapshotId::parse(raw).ok_or_else(not_found)?;
                if id.volume.region != cluster.region {
                    return Err(ControllerError::InvalidArgument(format!(
                        "volume_content_source: snapshot {raw} is in region {}, the new volume in {}",
                        id.volume.region, cluster.region
                    )));
                }
                if id.is_copy() {
                    let copy = self.find_copy(cluster, &id).await?.ok_or_else(not_found)?;
                    if !copy.ready() {
                        return Err(ControllerError::Aborted(format!(
                            "volume_content_source: snapshot {raw} is still being made; retry"
                        )));
                    }
                    let held = cluster
                        .held_volume(&copy.holder, "")
                        .await?
                        .ok_or_else(not_found)?;
                    return Ok(Origin::Copy(held));
                }
                let held = self
                    .held(cluster, &id.volume)
                    .await?
                    .ok_or_else(not_found)?;
                let snaps = cluster
                    .client
                    .snapshots(&held.holder.node, held.holder.vmid)
                    .await
                    .ctx(|| format!("listing snapshots of holder VM {}", held.holder.vmid))?;
                if !snaps.iter().any(|x| x.name == id.snapname) {
                    return Err(not_found());
                }
                Ok(Origin::Snapshot(id, held))
            }
            Source::Volume(v) => {
                let raw = required(&v.volume_id, "volume_content_source.volume.volume_id")?;
                let not_found = || {
                    ControllerError::NotFound(format!(
                        "volume_content_source.volume.volume_id \"{}\": no such volume",
                        shorten(raw)
                    ))
                };
                let id = VolumeId::parse(raw).ok_or_else(not_found)?;
                if id.region != cluster.region {
                    return Err(ControllerError::InvalidArgument(format!(
                        "volume_content_source: volume {raw} is in region {}, the new volume in {}",
                        id.region, cluster.region
                    )));
                }
                Ok(Origin::Volume(
                    self.held(cluster, &id).await?.ok_or_else(not_found)?,
                ))
            }
        }
    }

    /// Full clone of a holder (optionally of one of its snapshots) into a new
    /// holder on a node of the placement, grown to `size` if that is larger.
    #[allow(clippy::too_many_arguments)]
    async fn clone_holder(
        &self,
        cluster: &Cluster,
        placement: &Placement,
        source: &HeldVolume,
        snapname: Option<&str>,
        name: &str,
        csi_name: &str,
        size: u64,
        params: &VolumeParams,
    ) -> Result<HeldVolume> {
        let source_size = match snapname {
            Some(s) => self.snapshot_size(cluster, source, s).await?,
            None => source.size,
        };
        if size < source_size {
            return Err(ControllerError::OutOfRange(format!(
                "capacity_range: {size} bytes is smaller than the source ({source_size} bytes)"
            )));
        }
        // PVE clones onto the source's node; a clone can land elsewhere only
        // through a shared storage.
        let target_node = if placement
            .candidates
            .iter()
            .any(|c| c.node == source.holder.node)
            || placement.shared
        {
            source.holder.node.clone()
        } else {
            return Err(ControllerError::ResourceExhausted(format!(
                "accessibility_requirements: the source lives on node {}, which they exclude",
                source.holder.node
            )));
        };
        let mut opts = params![
            ("name", name),
            (
                "description",
                super::attach_record::AttachRecord::Detached
                    .apply(&super::holder::holder_description(csi_name))
            )
        ];
        if let Some(s) = snapname {
            opts.push(("snapname".into(), s.into()));
        }
        if params.storage != source.id.storage {
            opts.push(("storage".into(), params.storage.clone()));
        }
        opts.extend(cluster.tenancy.placement_params());
        // storageFormat asked: the copy gets it (qemu-server clone_disk converts).
        if let Some(f) = &params.disk_format {
            opts.push(("format".into(), f.clone()));
        }
        let (newid, _creating) = self
            .clone_claimed(cluster, &source.holder, &params.storage, &opts, None)
            .await?;
        self.mark_holder(cluster, &source.holder.node, newid)
            .await?;
        let holder =
            super::holder::made_holder(newid, name, &source.holder.node, cluster.holder_tags());
        let zone = self.zone_of(placement, &target_node);
        let mut held = cluster.held_volume(&holder, &zone).await?.ok_or_else(|| {
            ControllerError::Internal(format!(
                "cloned holder VM {newid} has no disk in {HOLDER_SLOT}"
            ))
        })?;
        if size > held.size {
            cluster
                .client
                .resize(
                    &holder.node,
                    holder.vmid,
                    HOLDER_SLOT,
                    size,
                    self.opts.task_timeout,
                )
                .await
                .ctx(|| format!("growing the clone {} to {size} bytes", held.id))?;
            held = cluster
                .held_volume(&holder, &zone)
                .await?
                .ok_or_else(|| ControllerError::Internal("clone vanished".into()))?;
        }
        Ok(held)
    }

    /// Full clone of the VM `source` with `opts` into a vmid claimed without a lock,
    /// within the per-storage limit on `storage`; answers the new vmid, marked as being
    /// made by this process until the guard drops.
    ///
    /// Clones of other volumes run in parallel: each claims its own id. A clone that
    /// fails on PVE's storage lock leaves no VM behind (the clone task removes its
    /// target), so it is retried as it was; one refused because another writer took the
    /// id gets the next.
    ///
    /// `claimed`: an id the caller claimed already (before writes of its own, which
    /// drop the shared VM listing), tried first.
    pub(super) async fn clone_claimed<'c>(
        &self,
        cluster: &'c Cluster,
        source: &crate::pve::types::VmResource,
        storage: &str,
        opts: &crate::pve::client::Params,
        mut claimed: Option<(u64, super::cluster::Creating<'c>)>,
    ) -> Result<(u64, super::cluster::Creating<'c>)> {
        let mut taken: Vec<u64> = Vec::new();
        loop {
            let (newid, creating) = match claimed.take() {
                Some(c) => c,
                None => self.claim_vmid(cluster, &taken).await?,
            };
            let cloned = self
                .retry_contended(|| async {
                    let _permit = self.storage_limit.acquire(&cluster.region, storage).await;
                    cluster
                        .client
                        .clone_vm(
                            &source.node,
                            source.vmid,
                            newid,
                            opts,
                            self.opts.task_timeout,
                        )
                        .await
                        .ctx(|| {
                            format!(
                                "cloning VM {} into {newid} (needs VM.Clone on /vms/{} and {})",
                                source.vmid,
                                source.vmid,
                                cluster.tenancy.allocate_need(newid)
                            )
                        })
                })
                .await;
            match cloned {
                Ok(()) => return Ok((newid, creating)),
                // The id belongs to a VM this token cannot list (another tenant's), or
                // was taken since the listing: skip it from now on (see create_holder).
                Err(ControllerError::Pve { source, .. })
                    if source.kind() == PveErrorKind::AlreadyExists && taken.len() < 32 =>
                {
                    cluster.note_hidden_vmid(newid);
                    taken.push(newid);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The name of the temporary snapshot a clone of `source` for the CSI
    /// name `csi_name` is taken from (deterministic, so a retry finds it).
    fn temp_snapshot_name(csi_name: &str) -> String {
        format!(
            "{TEMP_SNAPSHOT_PREFIX}{}",
            &crate::volume_id::snap_name(csi_name)[1..25]
        )
    }

    /// Remove the temporary snapshot of a clone for `csi_name`, if there is one.
    async fn drop_temp_snapshot(
        &self,
        cluster: &Cluster,
        source: &HeldVolume,
        csi_name: &str,
    ) -> Result<()> {
        let temp = Self::temp_snapshot_name(csi_name);
        let h = &source.holder;
        if !cluster
            .holder_snapshots(h)
            .await?
            .iter()
            .any(|s| s.name == temp)
        {
            return Ok(());
        }
        match cluster
            .client
            .delete_snapshot(&h.node, h.vmid, &temp, self.opts.task_timeout)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(ControllerError::Pve {
                context: format!(
                    "removing the temporary clone snapshot {temp} of {}",
                    source.id
                ),
                source: Box::new(e),
            }),
        }
    }

    /// Clone a volume that may be in use: through a temporary snapshot, so the
    /// copy is one point in time rather than blocks read while a pod writes.
    /// Resumable: a temporary snapshot left by an interrupted attempt is the
    /// same point in time for the same request and is used as it is.
    #[allow(clippy::too_many_arguments)]
    async fn clone_volume(
        &self,
        cluster: &Cluster,
        placement: &Placement,
        source: &HeldVolume,
        name: &str,
        csi_name: &str,
        size: u64,
        params: &VolumeParams,
    ) -> Result<HeldVolume> {
        // Storages whose snapshots cannot be copied (or that have none): a direct copy of
        // the detached volume; refused while attached.
        let how = self
            .require_feature(cluster, "volume_content_source", source, Op::Clone)
            .await?;
        if how == Support::Detached {
            return self
                .clone_holder(
                    cluster, placement, source, None, name, csi_name, size, params,
                )
                .await;
        }
        let temp = Self::temp_snapshot_name(csi_name);
        let h = &source.holder;
        let exists = cluster
            .holder_snapshots(h)
            .await?
            .iter()
            .any(|s| s.name == temp);
        let taken = if exists {
            Ok(())
        } else {
            match cluster
                .client
                .create_snapshot(
                    &h.node,
                    h.vmid,
                    &temp,
                    "proxmox-csi: temporary, for a clone",
                    self.opts.task_timeout,
                )
                .await
            {
                // The name is this request's own: an interrupted attempt's
                // snapshot task finished after the listing above.
                Err(e) if e.kind() == PveErrorKind::AlreadyExists => Ok(()),
                other => other,
            }
        };
        match taken {
            Ok(()) => {
                let held = self
                    .clone_holder(
                        cluster,
                        placement,
                        source,
                        Some(&temp),
                        name,
                        csi_name,
                        size,
                        params,
                    )
                    .await?;
                self.drop_temp_snapshot(cluster, source, csi_name).await?;
                Ok(held)
            }
            // Storages without snapshots (plain files): a direct copy is only
            // consistent while nothing writes, i.e. the volume is not attached.
            Err(e) if e.kind() == PveErrorKind::FeatureUnavailable => {
                let volid = source.id.volid();
                let whereabouts = self.whereabouts(cluster, &source.record(), &volid).await?;
                whereabouts
                    .refuse_if_claimed(&format!("volume_content_source: {}", source.id), None)?;
                if let Some(a) = whereabouts.attachments.first() {
                    return Err(ControllerError::FailedPrecondition(format!(
                        "volume_content_source: {} is attached to VM {} and its storage {} has no snapshots, so it cannot be copied consistently; detach it or use a storage with snapshots",
                        source.id, a.vm.vmid, source.id.storage
                    )));
                }
                self.clone_holder(
                    cluster, placement, source, None, name, csi_name, size, params,
                )
                .await
            }
            Err(e) => Err(ControllerError::Pve {
                context: format!("snapshotting {} for a clone", source.id),
                source: Box::new(e),
            }),
        }
    }

    fn volume_response(
        &self,
        placement: &Placement,
        id: VolumeId,
        size: u64,
        params: &VolumeParams,
        source: Option<VolumeContentSource>,
    ) -> CreateVolumeResponse {
        let topology = id.topology(placement.shared);
        CreateVolumeResponse {
            volume: Some(Volume {
                capacity_bytes: size as i64,
                volume_id: id.to_string(),
                volume_context: params.to_context(),
                content_source: source,
                accessible_topology: vec![topology],
            }),
        }
    }

    /// Choose the cluster and the nodes whose storage may hold the volume,
    /// honouring the topology requirements (preferred first, then requisite).
    pub(super) async fn place(
        &self,
        storage: &str,
        reqs: Option<&crate::csi::TopologyRequirement>,
    ) -> Result<Placement> {
        let wanted: Vec<&Topology> = reqs
            .map(|r| r.preferred.iter().chain(r.requisite.iter()).collect())
            .unwrap_or_default();
        let regions: Vec<String> = if wanted.is_empty() {
            self.clusters().map(|c| c.region.clone()).collect()
        } else {
            let mut rs = Vec::new();
            for t in &wanted {
                match t.segments.get(TOPOLOGY_REGION) {
                    Some(r) if !rs.contains(r) => rs.push(r.clone()),
                    Some(_) => {}
                    None => {
                        for c in self.clusters() {
                            if !rs.contains(&c.region) {
                                rs.push(c.region.clone());
                            }
                        }
                    }
                }
            }
            rs
        };
        let mut storage_known = false;
        for region in regions {
            let Some(cluster) = self.cluster(&region) else {
                continue;
            };
            let storages: Vec<StorageResource> = cluster
                .image_storages()
                .await?
                .into_iter()
                .filter(|s| s.storage == storage && s.is_available())
                .collect();
            if storages.is_empty() {
                continue;
            }
            storage_known = true;
            let shared = storages.iter().any(|s| s.shared);
            let mut candidates = Vec::new();
            if wanted.is_empty() {
                candidates = storages.clone();
            } else {
                for t in &wanted {
                    if t.segments
                        .get(TOPOLOGY_REGION)
                        .is_some_and(|r| r != &region)
                    {
                        continue;
                    }
                    for s in &storages {
                        let zone_ok = t.segments.get(TOPOLOGY_ZONE).is_none_or(|z| z == &s.node);
                        if zone_ok
                            && !candidates
                                .iter()
                                .any(|c: &StorageResource| c.node == s.node)
                        {
                            candidates.push(s.clone());
                        }
                    }
                }
            }
            if !candidates.is_empty() {
                return Ok(Placement {
                    region,
                    candidates,
                    shared,
                });
            }
        }
        if !storage_known {
            for c in self.clusters() {
                if let Some(e) = super::visibility::unseen_storage(c, storage).await {
                    return Err(e);
                }
            }
            return Err(ControllerError::InvalidArgument(format!(
                "parameters.storage: no available storage {storage:?} for disk images in the requested region(s)"
            )));
        }
        Err(ControllerError::ResourceExhausted(format!(
            "accessibility_requirements: no node with storage {storage:?} satisfies them"
        )))
    }

    /// Among the candidates, the first with room for `size`.
    async fn pick_node(&self, placement: &Placement, size: u64) -> Result<StorageResource> {
        let cluster = self.cluster(&placement.region).expect("configured");
        let mut last_free = 0;
        for c in &placement.candidates {
            match cluster.client.storage_status(&c.node, &c.storage).await {
                Ok(st) => {
                    let avail = st.avail.unwrap_or(u64::MAX);
                    if avail >= size {
                        return Ok(c.clone());
                    }
                    last_free = last_free.max(avail);
                }
                // An offline node is no candidate; try the next.
                Err(e) => {
                    tracing::warn!(node = %c.node, storage = %c.storage, error = %e, "storage status unavailable")
                }
            }
        }
        Err(ControllerError::ResourceExhausted(format!(
            "no candidate node has {size} bytes free on storage {:?} (most free: {last_free})",
            placement
                .candidates
                .first()
                .map(|c| c.storage.as_str())
                .unwrap_or("")
        )))
    }

    /// DeleteVolume.
    ///
    /// Idempotent: an id that names no volume of this driver (never issued,
    /// already deleted, stale after its vmid was reused, a zone that is not
    /// the holder's on node-local storage) is OK with nothing touched.
    /// Refused while any VM has the disk (applied or pending) or while it
    /// has snapshots; checked under the disk's in-flight key, which every
    /// snapshot call takes too.
    pub async fn delete_volume(&self, req: DeleteVolumeRequest) -> Result<()> {
        let raw = required(&req.volume_id, "volume_id")?;
        // An id we never issued names nothing: deleting it succeeds (CSI idempotency).
        let Some(id) = VolumeId::parse(raw) else {
            return Ok(());
        };
        let Some(cluster) = self.cluster(&id.region) else {
            return Ok(());
        };
        let _guard = self.begin(&disk_key(&id))?;
        let volid = id.volid();
        let Some(holder) = self.canonical_holder(cluster, &id).await? else {
            // No holder: either long gone, or a disk this driver does not own.
            return Ok(());
        };
        // PVE frees a volume even while a VM uses it; never let that happen.
        let (description, _) = self.holder_record(cluster, &holder).await?;
        let record = super::attach_record::AttachRecord::parse(&description);
        let whereabouts = self.whereabouts(cluster, &record, &volid).await?;
        if let Some(a) = whereabouts.attachments.first() {
            let how = if a.pending {
                " (a hot-plug or hot-unplug there is pending)"
            } else {
                ""
            };
            return Err(ControllerError::FailedPrecondition(format!(
                "volume {id} is still attached to VM {} ({}) as {}{how}; unpublish it first",
                a.vm.vmid,
                a.vm.name.as_deref().unwrap_or("?"),
                a.slot
            )));
        }
        whereabouts.refuse_if_claimed(&format!("volume {id}"), None)?;
        // Snapshots live in the holder and would go with it. A temporary
        // clone snapshot is not the user's: a clone interrupted for good
        // left it (a running clone of this process holds this disk's key).
        let snaps = cluster
            .client
            .snapshots(&holder.node, holder.vmid)
            .await
            .ctx(|| format!("listing snapshots of holder VM {}", holder.vmid))?;
        let (temp, kept): (Vec<_>, Vec<_>) =
            snaps.into_iter().partition(|s| is_temp_snapshot(&s.name));
        // Copy snapshots do not live in the holder, but are refused the same way: a
        // volume goes after its snapshots, whatever their kind.
        let copies = self
            .copies_of(cluster, holder.tags.as_deref(), &id)
            .await?
            .len();
        if !kept.is_empty() || copies > 0 {
            return Err(ControllerError::FailedPrecondition(format!(
                "volume {id} has {} snapshot(s); delete them before the volume",
                kept.len() + copies
            )));
        }
        for s in temp {
            cluster
                .client
                .delete_snapshot(&holder.node, holder.vmid, &s.name, self.opts.task_timeout)
                .await
                .ctx(|| format!("removing the temporary clone snapshot {} of {id}", s.name))?;
        }
        self.destroy_holder(cluster, &holder, &volid).await?;
        tracing::info!(volume = %id, holder = holder.vmid, "volume deleted");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn temporary_snapshot_names() {
        let t = super::Controller::temp_snapshot_name("pvc-x");
        assert!(super::is_temp_snapshot(&t), "{t}");
        for other in [
            "clone_",
            "clone_by_hand",
            "clone_0123456789abcdef0123456",
            "s0123",
            &format!("{t}0"),
        ] {
            assert!(!super::is_temp_snapshot(other), "{other}");
        }
    }
}
