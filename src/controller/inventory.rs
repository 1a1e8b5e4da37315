//! ListVolumes and GetCapacity: what the driver has on Proxmox, and how much room is left.

use super::attach_record::AttachRecord;
use super::error::{PveContext, Result};
use super::paging::{PageKey, PageRequest};
use super::Controller;
use crate::csi::*;
use crate::volume_id::{VolumeId, TOPOLOGY_REGION, TOPOLOGY_ZONE};
use std::collections::HashMap;

/// One volume of this driver, as a listing shows it.
#[derive(Debug, Clone)]
pub struct Found {
    pub id: VolumeId,
    pub size: u64,
    pub shared: bool,
    pub published_to: Vec<String>,
}

impl Controller {
    /// Every volume of this driver in every cluster, sorted by id, with the
    /// nodes (VM names) it is attached to.
    pub async fn all_volumes(&self) -> Result<Vec<Found>> {
        let (mut all, _) = self.volume_page(&PageRequest::parse(0, "")?).await?;
        all.sort_by_key(|f| f.id.to_string());
        Ok(all)
    }

    /// ListVolumes, in the order of [`Controller::volume_page`].
    pub async fn list_volumes(&self, req: ListVolumesRequest) -> Result<ListVolumesResponse> {
        let page = PageRequest::parse(req.max_entries, &req.starting_token)?;
        let (found, next_token) = self.volume_page(&page).await?;
        let entries = found
            .into_iter()
            .map(|f| list_volumes_response::Entry {
                volume: Some(Volume {
                    capacity_bytes: f.size as i64,
                    volume_id: f.id.to_string(),
                    volume_context: HashMap::from([("storage".to_string(), f.id.storage.clone())]),
                    content_source: None,
                    accessible_topology: vec![f.id.topology(f.shared)],
                }),
                status: Some(list_volumes_response::VolumeStatus {
                    published_node_ids: f.published_to,
                    volume_condition: None,
                }),
            })
            .collect();
        Ok(ListVolumesResponse {
            entries,
            next_token,
        })
    }

    /// A page of volumes: the holders in the VM listing give the order
    /// (region, holder vmid) and the page; only the page's volumes are read
    /// (their holder, disk and attach record), so a page costs the same
    /// however many volumes there are. Holders without a disk (a create
    /// under way) are left out.
    async fn volume_page(&self, page: &PageRequest) -> Result<(Vec<Found>, String)> {
        let mut keys = Vec::new();
        for cluster in self.clusters() {
            for h in cluster.holders().await? {
                keys.push((PageKey::new(&cluster.region, h.vmid, ""), h));
            }
        }
        let (keys, next_token) = page.cut(keys);
        let mut held_page = Vec::new();
        for (key, holder) in keys {
            let Some(cluster) = self.cluster(&key.region) else {
                continue;
            };
            // A holder on a node that does not answer now is left out of
            // this page, as its storage would be.
            let held = match cluster.held_volume(&holder, "").await {
                Ok(Some(h)) => h,
                Ok(None) => continue,
                Err(e @ super::error::ControllerError::Pve { .. }) => {
                    tracing::warn!(holder = holder.vmid, error = %e, "volume left out of the listing");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let shared = cluster.is_shared(&held.id.storage).await?;
            held_page.push((cluster, held, shared));
        }
        // Holders from before attach records: one read of every VM for all of them.
        let mut legacy: HashMap<(String, String), Vec<String>> = HashMap::new();
        for (cluster, held, _) in &held_page {
            if held.record() == AttachRecord::Unknown {
                legacy.insert((cluster.region.clone(), held.id.volid()), vec![]);
            }
        }
        for cluster in self.clusters() {
            let volids: Vec<String> = legacy
                .keys()
                .filter(|(r, _)| r == &cluster.region)
                .map(|(_, v)| v.clone())
                .collect();
            if volids.is_empty() {
                continue;
            }
            for (volid, a) in cluster.attachments_of(&volids).await? {
                if let (Some(names), Some(name)) =
                    (legacy.get_mut(&(cluster.region.clone(), volid)), a.vm.name)
                {
                    names.push(name);
                }
            }
        }
        let mut found = Vec::new();
        for (cluster, held, shared) in held_page {
            let volid = held.id.volid();
            let mut published_to: Vec<String> =
                match legacy.remove(&(cluster.region.clone(), volid.clone())) {
                    Some(names) => names,
                    None => self
                        .whereabouts(cluster, &held.record(), &volid)
                        .await?
                        .attachments
                        .into_iter()
                        .filter_map(|a| a.vm.name)
                        .collect(),
                };
            published_to.dedup();
            found.push(Found {
                id: held.id,
                size: held.size,
                shared,
                published_to,
            });
        }
        Ok((found, next_token))
    }

    /// Free space for new volumes: the storage named in `parameters.storage`
    /// (or the default) on the nodes that match `accessible_topology`.
    pub async fn get_capacity(&self, req: GetCapacityRequest) -> Result<GetCapacityResponse> {
        if let Some(cap) = &req.volume_capabilities.first() {
            super::params::check_capabilities(std::slice::from_ref(cap))?;
        }
        let storage = match req
            .parameters
            .get("storage")
            .cloned()
            .or_else(|| self.opts.default_storage.clone())
        {
            Some(s) => s,
            None => return Ok(GetCapacityResponse::default()),
        };
        let segments = req
            .accessible_topology
            .as_ref()
            .map(|t| t.segments.clone())
            .unwrap_or_default();
        let mut total: u64 = 0;
        let mut largest: u64 = 0;
        for cluster in self.clusters() {
            if segments
                .get(TOPOLOGY_REGION)
                .is_some_and(|r| r != &cluster.region)
            {
                continue;
            }
            let mut seen_shared = std::collections::HashSet::new();
            for s in cluster.image_storages().await? {
                if s.storage != storage || !s.is_available() {
                    continue;
                }
                if segments.get(TOPOLOGY_ZONE).is_some_and(|z| z != &s.node) {
                    continue;
                }
                if s.shared && !seen_shared.insert(s.storage.clone()) {
                    continue;
                }
                let st = cluster
                    .client
                    .storage_status(&s.node, &s.storage)
                    .await
                    .ctx(|| format!("status of {} on {}", s.storage, s.node))?;
                let avail = st.avail.unwrap_or(0);
                total = total.saturating_add(avail);
                largest = largest.max(avail);
            }
        }
        Ok(GetCapacityResponse {
            available_capacity: total.min(i64::MAX as u64) as i64,
            maximum_volume_size: Some(largest.min(i64::MAX as u64) as i64),
            minimum_volume_size: None,
        })
    }
}

impl Controller {
    /// ControllerGetVolume: one volume with the nodes it is published to.
    pub async fn get_volume(
        &self,
        req: ControllerGetVolumeRequest,
    ) -> Result<ControllerGetVolumeResponse> {
        let raw = super::required(&req.volume_id, "volume_id")?;
        let (id, cluster) = self.volume_cluster("volume_id", raw)?;
        let volid = id.volid();
        let held = self.require_volume(cluster, &id).await?;
        let shared = cluster
            .image_storages()
            .await?
            .iter()
            .any(|s| s.storage == id.storage && s.shared);
        let mut published: Vec<String> = Vec::new();
        let whereabouts = self.whereabouts(cluster, &held.record(), &volid).await?;
        for a in whereabouts.attachments {
            if let Some(name) = a.vm.name {
                if !published.contains(&name) {
                    published.push(name);
                }
            }
        }
        Ok(ControllerGetVolumeResponse {
            volume: Some(Volume {
                capacity_bytes: held.size as i64,
                volume_id: raw.to_string(),
                volume_context: HashMap::from([("storage".to_string(), id.storage.clone())]),
                content_source: None,
                accessible_topology: vec![id.topology(shared)],
            }),
            status: Some(controller_get_volume_response::VolumeStatus {
                published_node_ids: published,
                volume_condition: None,
            }),
        })
    }
}
