//! CreateVolume and DeleteVolume.

use super::error::{ControllerError, PveContext, Result};
use super::params::{check_capabilities, parse_volume_params, size_fits, size_for, VolumeParams};
use super::{required, Controller};
use crate::csi::{CreateVolumeRequest, CreateVolumeResponse, DeleteVolumeRequest, Topology, Volume};
use crate::pve::types::StorageResource;
use crate::volume_id::{disk_name, VolumeId, TOPOLOGY_REGION, TOPOLOGY_ZONE};
use std::collections::HashMap;

/// Where a volume may be allocated: the cluster and its candidate nodes.
struct Placement {
    region: String,
    /// (node, storage entry) in order of preference.
    candidates: Vec<StorageResource>,
    shared: bool,
}

impl Controller {
    pub async fn create_volume(&self, req: CreateVolumeRequest) -> Result<CreateVolumeResponse> {
        let name = required(&req.name, "name")?;
        check_capabilities(&req.volume_capabilities)?;
        let params = parse_volume_params(&req.parameters, self.opts.default_storage.as_deref())?;
        let size = size_for(req.capacity_range.as_ref())?;
        if req.volume_content_source.is_some() {
            return Err(ControllerError::InvalidArgument(
                "volume_content_source: creating from a snapshot or another volume is not supported yet".into(),
            ));
        }
        if !req.mutable_parameters.is_empty() {
            return Err(ControllerError::InvalidArgument(
                "mutable_parameters: this driver has no modifiable volume parameters".into(),
            ));
        }
        let _guard = self.begin(name)?;

        let placement = self.place(&params.storage, req.accessibility_requirements.as_ref()).await?;
        let cluster = self.cluster(&placement.region).expect("placement picks a configured cluster");
        let disk = disk_name(self.opts.owner_vmid, name);

        // The same name always maps to the same disk name: look for it first.
        if let Some((id, actual)) = self.find_disk(&placement, &disk).await? {
            if !size_fits(actual, req.capacity_range.as_ref()) {
                return Err(ControllerError::AlreadyExists(format!(
                    "name {name:?}: volume {id} exists with {actual} bytes, which does not fit the requested capacity_range"
                )));
            }
            return Ok(self.volume_response(&placement, id, actual, &params));
        }

        let target = self.pick_node(&placement, size).await?;
        let filename = if target.is_file_based() { format!("{disk}.raw") } else { disk.clone() };
        let volid = match cluster
            .client
            .alloc_disk(&target.node, &target.storage, self.opts.owner_vmid, &filename, size / 1024, "raw")
            .await
        {
            Ok(v) => v,
            // Another controller replica created it between our lookup and now.
            Err(e) if e.message().contains("already exists") => {
                if let Some((id, actual)) = self.find_disk(&placement, &disk).await? {
                    return Ok(self.volume_response(&placement, id, actual, &params));
                }
                return Err(ControllerError::Pve { context: format!("allocating {filename} on {}", target.storage), source: Box::new(e) });
            }
            Err(e) => return Err(ControllerError::Pve { context: format!("allocating {filename} on {}/{}", target.node, target.storage), source: Box::new(e) }),
        };
        let id = VolumeId::from_volid(&placement.region, &target.node, &volid)
            .ok_or_else(|| ControllerError::Internal(format!("PVE returned a malformed volume id {volid:?}")))?;
        let info = cluster
            .find_volume(&target.node, &target.storage, &volid)
            .await?
            .ok_or_else(|| ControllerError::Internal(format!("volume {volid} vanished right after allocation")))?;
        let size = info.size.unwrap_or(size);
        tracing::info!(volume = %id, size, "volume created");
        Ok(self.volume_response(&placement, id, size, &params))
    }

    fn volume_response(&self, placement: &Placement, id: VolumeId, size: u64, params: &VolumeParams) -> CreateVolumeResponse {
        let mut segments = HashMap::from([(TOPOLOGY_REGION.to_string(), placement.region.clone())]);
        if !placement.shared {
            segments.insert(TOPOLOGY_ZONE.to_string(), id.zone.clone());
        }
        CreateVolumeResponse {
            volume: Some(Volume {
                capacity_bytes: size as i64,
                volume_id: id.to_string(),
                volume_context: params.to_context(),
                content_source: None,
                accessible_topology: vec![Topology { segments }],
            }),
        }
    }

    /// Choose the cluster and the nodes whose storage may hold the volume,
    /// honouring the topology requirements (preferred first, then requisite).
    async fn place(&self, storage: &str, reqs: Option<&crate::csi::TopologyRequirement>) -> Result<Placement> {
        let wanted: Vec<&Topology> = reqs.map(|r| r.preferred.iter().chain(r.requisite.iter()).collect()).unwrap_or_default();
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
            let Some(cluster) = self.cluster(&region) else { continue };
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
                    if t.segments.get(TOPOLOGY_REGION).is_some_and(|r| r != &region) {
                        continue;
                    }
                    for s in &storages {
                        let zone_ok = t.segments.get(TOPOLOGY_ZONE).is_none_or(|z| z == &s.node);
                        if zone_ok && !candidates.iter().any(|c: &StorageResource| c.node == s.node) {
                            candidates.push(s.clone());
                        }
                    }
                }
            }
            if !candidates.is_empty() {
                return Ok(Placement { region, candidates, shared });
            }
        }
        if !storage_known {
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
                Err(e) => tracing::warn!(node = %c.node, storage = %c.storage, error = %e, "storage status unavailable"),
            }
        }
        Err(ControllerError::ResourceExhausted(format!(
            "no candidate node has {size} bytes free on storage {:?} (most free: {last_free})",
            placement.candidates.first().map(|c| c.storage.as_str()).unwrap_or("")
        )))
    }

    /// Find an existing disk by its name on any candidate node.
    async fn find_disk(&self, placement: &Placement, disk: &str) -> Result<Option<(VolumeId, u64)>> {
        let cluster = self.cluster(&placement.region).expect("configured");
        let mut nodes: Vec<&StorageResource> = placement.candidates.iter().collect();
        if placement.shared {
            nodes.truncate(1); // one listing shows a shared storage's whole content
        }
        for s in nodes {
            let items = cluster
                .client
                .storage_content(&s.node, &s.storage, Some(self.opts.owner_vmid))
                .await
                .ctx(|| format!("listing {} on {}", s.storage, s.node))?;
            for item in items {
                let Some((_, volname)) = item.volid.split_once(':') else { continue };
                let base = volname.rsplit('/').next().unwrap_or(volname);
                let stem = base.strip_suffix(".raw").or_else(|| base.strip_suffix(".qcow2")).unwrap_or(base);
                if stem == disk {
                    let id = VolumeId::from_volid(&placement.region, &s.node, &item.volid).expect("has a colon");
                    return Ok(Some((id, item.size.unwrap_or(0))));
                }
            }
        }
        Ok(None)
    }

    pub async fn delete_volume(&self, req: DeleteVolumeRequest) -> Result<()> {
        let raw = required(&req.volume_id, "volume_id")?;
        // An id we never issued names nothing: deleting it succeeds (CSI idempotency).
        let Some(id) = VolumeId::parse(raw) else { return Ok(()) };
        let Some(cluster) = self.cluster(&id.region) else { return Ok(()) };
        let _guard = self.begin(raw)?;
        let volid = id.volid();
        if cluster.find_volume(&id.zone, &id.storage, &volid).await?.is_none() {
            return Ok(());
        }
        // PVE frees a volume even while a VM uses it; never let that happen.
        let users = cluster.attachments_of(std::slice::from_ref(&volid)).await?;
        if let Some((_, a)) = users.first() {
            return Err(ControllerError::FailedPrecondition(format!(
                "volume {raw} is still attached to VM {} ({}) as {}; unpublish it first",
                a.vm.vmid,
                a.vm.name.as_deref().unwrap_or("?"),
                a.slot
            )));
        }
        cluster
            .client
            .free_volume(&id.zone, &id.storage, &volid, self.opts.task_timeout)
            .await
            .ctx(|| format!("freeing {volid}"))?;
        tracing::info!(volume = %raw, "volume deleted");
        Ok(())
    }
}
