//! ListVolumes and GetCapacity: what the driver has on Proxmox, and how much room is left.

use super::cluster::owner_vmid;
use super::error::{PveContext, Result};
use super::Controller;
use crate::csi::*;
use crate::volume_id::{VolumeId, TOPOLOGY_REGION, TOPOLOGY_ZONE};
use std::collections::{BTreeMap, HashMap};

/// One volume of this driver found on a storage.
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
        let mut out: BTreeMap<String, Found> = BTreeMap::new();
        for cluster in self.clusters() {
            let holders: HashMap<u64, (String, String)> = cluster
                .holders()
                .await?
                .into_iter()
                .map(|h| (h.vmid, (h.node, h.name.unwrap_or_default())))
                .collect();
            if holders.is_empty() {
                continue;
            }
            let storages = cluster.image_storages().await?;
            let mut seen_shared = std::collections::HashSet::new();
            let mut volids = Vec::new();
            for s in storages.iter().filter(|s| s.is_available()) {
                if s.shared && !seen_shared.insert(s.storage.clone()) {
                    continue;
                }
                let items = cluster
                    .client
                    .storage_content(&s.node, &s.storage, None)
                    .await
                    .ctx(|| format!("listing {} on {}", s.storage, s.node))?;
                for item in items {
                    let Some(owner) = owner_vmid(&item.volid) else {
                        continue;
                    };
                    let Some((holder_node, holder_name)) = holders.get(&owner) else {
                        continue;
                    };
                    if !item.volid.contains(&format!("vm-{owner}-disk-0")) {
                        continue;
                    }
                    // Same zone as CreateVolume gave: the holder's node for shared storages.
                    let zone = if s.shared { holder_node } else { &s.node };
                    let Some(id) =
                        VolumeId::from_volid(&cluster.region, zone, &item.volid, holder_name)
                    else {
                        continue;
                    };
                    volids.push(item.volid.clone());
                    out.insert(
                        item.volid.clone() + "\0" + &cluster.region,
                        Found {
                            id,
                            size: item.size.unwrap_or(0),
                            shared: s.shared,
                            published_to: vec![],
                        },
                    );
                }
            }
            for (volid, a) in cluster.attachments_of(&volids).await? {
                if let Some(f) = out.get_mut(&(volid + "\0" + &cluster.region)) {
                    if let Some(name) = a.vm.name.clone() {
                        if !f.published_to.contains(&name) {
                            f.published_to.push(name);
                        }
                    }
                }
            }
        }
        let mut v: Vec<Found> = out.into_values().collect();
        v.sort_by_key(|f| f.id.to_string());
        Ok(v)
    }

    pub async fn list_volumes(&self, req: ListVolumesRequest) -> Result<ListVolumesResponse> {
        let page = super::paging::PageRequest::parse(req.max_entries, &req.starting_token)?;
        let all = self.all_volumes().await?;
        let (found, next_token) = page.cut(&all)?;
        let entries = found
            .iter()
            .map(|f| list_volumes_response::Entry {
                volume: Some(Volume {
                    capacity_bytes: f.size as i64,
                    volume_id: f.id.to_string(),
                    volume_context: HashMap::from([("storage".to_string(), f.id.storage.clone())]),
                    content_source: None,
                    accessible_topology: vec![f.id.topology(f.shared)],
                }),
                status: Some(list_volumes_response::VolumeStatus {
                    published_node_ids: f.published_to.clone(),
                    volume_condition: None,
                }),
            })
            .collect();
        Ok(ListVolumesResponse {
            entries,
            next_token,
        })
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
