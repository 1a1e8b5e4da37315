//! The gRPC face of the node plugin: parse, guard, call, convert. No logic
//! of its own beyond choosing which plain function to call.

use std::future::Future;
use std::sync::Arc;

use tonic::{Request, Response, Status};

use crate::csi;
use crate::csi::node_server::Node;
use csi::node_service_capability::rpc::Type as RpcType;

use super::config::NodeConfig;
use super::error::NodeError;
use super::request::{self, PublishRequest, StageRequest};
use super::{expand, publish, stage, stats};
use crate::inflight::InFlight;
use crate::rpc_log;
use tracing::Instrument;

#[derive(Debug, Clone)]
pub struct NodeService {
    cfg: Arc<NodeConfig>,
    inflight: InFlight,
}

impl NodeService {
    pub fn new(cfg: NodeConfig) -> Self {
        NodeService {
            cfg: Arc::new(cfg),
            inflight: InFlight::default(),
        }
    }

    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    /// The per-volume guard, shared with every clone of this service.
    pub fn inflight(&self) -> &InFlight {
        &self.inflight
    }

    /// Runs a mutating operation on a volume under its in-flight guard, in
    /// a task of its own. When the CO gives up on an RPC, tonic drops the
    /// handler; the operation (say, a half-done mkfs) must not be cut off
    /// or lose its guard, or a retry could start formatting the same disk
    /// again. The retry gets ABORTED until the first run has finished.
    async fn guarded<T, F>(&self, volume_id: &str, work: F) -> Result<T, NodeError>
    where
        T: Send + 'static,
        F: Future<Output = Result<T, NodeError>> + Send + 'static,
    {
        let guard = self
            .inflight
            .try_acquire(volume_id)
            .ok_or_else(|| NodeError::Busy(volume_id.to_string()))?;
        let task = tokio::spawn(
            async move {
                let _guard = guard;
                work.await
            }
            .in_current_span(),
        );
        task.await.map_err(|e| {
            NodeError::Internal(format!("operation on volume {volume_id} failed: {e}"))
        })?
    }
}

/// Capabilities this node plugin offers.
pub const CAPABILITIES: [RpcType; 5] = [
    RpcType::StageUnstageVolume,
    RpcType::GetVolumeStats,
    RpcType::ExpandVolume,
    RpcType::VolumeCondition,
    RpcType::SingleNodeMultiWriter,
];

fn condition(abnormal: Option<String>) -> csi::VolumeCondition {
    match abnormal {
        Some(message) => csi::VolumeCondition {
            abnormal: true,
            message,
        },
        None => csi::VolumeCondition {
            abnormal: false,
            message: "volume is mounted and healthy".into(),
        },
    }
}

/// Each CSI call in its span, logged once (`rpc_log`); the work is in the `_inner` methods.
#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        req: Request<csi::NodeStageVolumeRequest>,
    ) -> Result<Response<csi::NodeStageVolumeResponse>, Status> {
        let span = rpc_log::span("NodeStageVolume", &req.get_ref().volume_id);
        rpc_log::request(&span, req.get_ref());
        let result = self
            .node_stage_volume_inner(req)
            .instrument(span.clone())
            .await;
        rpc_log::outcome(&span, result)
    }

    async fn node_unstage_volume(
        &self,
        req: Request<csi::NodeUnstageVolumeRequest>,
    ) -> Result<Response<csi::NodeUnstageVolumeResponse>, Status> {
        let span = rpc_log::span("NodeUnstageVolume", &req.get_ref().volume_id);
        rpc_log::request(&span, req.get_ref());
        let result = self
            .node_unstage_volume_inner(req)
            .instrument(span.clone())
            .await;
        rpc_log::outcome(&span, result)
    }

    async fn node_publish_volume(
        &self,
        req: Request<csi::NodePublishVolumeRequest>,
    ) -> Result<Response<csi::NodePublishVolumeResponse>, Status> {
        let span = rpc_log::span("NodePublishVolume", &req.get_ref().volume_id);
        rpc_log::request(&span, req.get_ref());
        let result = self
            .node_publish_volume_inner(req)
            .instrument(span.clone())
            .await;
        rpc_log::outcome(&span, result)
    }

    async fn node_unpublish_volume(
        &self,
        req: Request<csi::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<csi::NodeUnpublishVolumeResponse>, Status> {
        let span = rpc_log::span("NodeUnpublishVolume", &req.get_ref().volume_id);
        rpc_log::request(&span, req.get_ref());
        let result = self
            .node_unpublish_volume_inner(req)
            .instrument(span.clone())
            .await;
        rpc_log::outcome(&span, result)
    }

    async fn node_get_volume_stats(
        &self,
        req: Request<csi::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<csi::NodeGetVolumeStatsResponse>, Status> {
        let span = rpc_log::span("NodeGetVolumeStats", &req.get_ref().volume_id);
        rpc_log::request(&span, req.get_ref());
        let result = self
            .node_get_volume_stats_inner(req)
            .instrument(span.clone())
            .await;
        rpc_log::outcome(&span, result)
    }

    async fn node_expand_volume(
        &self,
        req: Request<csi::NodeExpandVolumeRequest>,
    ) -> Result<Response<csi::NodeExpandVolumeResponse>, Status> {
        let span = rpc_log::span("NodeExpandVolume", &req.get_ref().volume_id);
        rpc_log::request(&span, req.get_ref());
        let result = self
            .node_expand_volume_inner(req)
            .instrument(span.clone())
            .await;
        rpc_log::outcome(&span, result)
    }

    async fn node_get_capabilities(
        &self,
        req: Request<csi::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<csi::NodeGetCapabilitiesResponse>, Status> {
        let span = rpc_log::span("NodeGetCapabilities", "");
        rpc_log::request(&span, req.get_ref());
        let result = self
            .node_get_capabilities_inner(req)
            .instrument(span.clone())
            .await;
        rpc_log::outcome(&span, result)
    }

    async fn node_get_info(
        &self,
        req: Request<csi::NodeGetInfoRequest>,
    ) -> Result<Response<csi::NodeGetInfoResponse>, Status> {
        let span = rpc_log::span("NodeGetInfo", "");
        rpc_log::request(&span, req.get_ref());
        let result = self.node_get_info_inner(req).instrument(span.clone()).await;
        rpc_log::outcome(&span, result)
    }
}

impl NodeService {
    async fn node_stage_volume_inner(
        &self,
        req: Request<csi::NodeStageVolumeRequest>,
    ) -> Result<Response<csi::NodeStageVolumeResponse>, Status> {
        let req = StageRequest::from_csi(req.get_ref(), &self.cfg.kubelet_dir)?;
        let cfg = Arc::clone(&self.cfg);
        let id = req.volume_id.clone();
        self.guarded(&id, async move { stage::stage(&cfg, &req).await })
            .await?;
        Ok(Response::new(csi::NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume_inner(
        &self,
        req: Request<csi::NodeUnstageVolumeRequest>,
    ) -> Result<Response<csi::NodeUnstageVolumeResponse>, Status> {
        let req = req.get_ref();
        let volume_id = request::volume_id(&req.volume_id)?;
        let staging = request::path(
            &self.cfg.kubelet_dir,
            "staging_target_path",
            &req.staging_target_path,
        )?;
        let id = volume_id.clone();
        self.guarded(
            &volume_id,
            async move { stage::unstage(&id, &staging).await },
        )
        .await?;
        Ok(Response::new(csi::NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume_inner(
        &self,
        req: Request<csi::NodePublishVolumeRequest>,
    ) -> Result<Response<csi::NodePublishVolumeResponse>, Status> {
        let req = PublishRequest::from_csi(req.get_ref(), &self.cfg.kubelet_dir)?;
        let cfg = Arc::clone(&self.cfg);
        let id = req.volume_id.clone();
        self.guarded(&id, async move { publish::publish(&cfg, &req).await })
            .await?;
        Ok(Response::new(csi::NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume_inner(
        &self,
        req: Request<csi::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<csi::NodeUnpublishVolumeResponse>, Status> {
        let req = req.get_ref();
        let volume_id = request::volume_id(&req.volume_id)?;
        let target = request::path(&self.cfg.kubelet_dir, "target_path", &req.target_path)?;
        self.guarded(&volume_id, async move { publish::unpublish(&target) })
            .await?;
        Ok(Response::new(csi::NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats_inner(
        &self,
        req: Request<csi::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<csi::NodeGetVolumeStatsResponse>, Status> {
        let req = req.get_ref();
        let volume_id = request::volume_id(&req.volume_id)?;
        if req.volume_path.is_empty() {
            return Err(NodeError::invalid("volume_path is required").into());
        }
        request::known_volume(&volume_id)?;
        let path =
            request::existing_volume_path(&self.cfg.kubelet_dir, "volume_path", &req.volume_path)?;
        // Read-only and frequent: deliberately not behind the in-flight guard.
        let st = stats::stats(&path)?;
        let unit = |u: stats::Usage, unit: csi::volume_usage::Unit| csi::VolumeUsage {
            available: u.available,
            total: u.total,
            used: u.used,
            unit: unit as i32,
        };
        let mut usage = Vec::new();
        if let Some(b) = st.bytes {
            usage.push(unit(b, csi::volume_usage::Unit::Bytes));
        }
        if let Some(i) = st.inodes {
            usage.push(unit(i, csi::volume_usage::Unit::Inodes));
        }
        Ok(Response::new(csi::NodeGetVolumeStatsResponse {
            usage,
            volume_condition: Some(condition(st.abnormal)),
        }))
    }

    async fn node_expand_volume_inner(
        &self,
        req: Request<csi::NodeExpandVolumeRequest>,
    ) -> Result<Response<csi::NodeExpandVolumeResponse>, Status> {
        let req = req.get_ref();
        let volume_id = request::volume_id(&req.volume_id)?;
        if req.volume_path.is_empty() {
            return Err(NodeError::invalid("volume_path is required").into());
        }
        let id = request::known_volume(&volume_id)?;
        let kubelet = &self.cfg.kubelet_dir;
        let path = request::existing_volume_path(kubelet, "volume_path", &req.volume_path)?;
        let staging =
            request::optional_path(kubelet, "staging_target_path", &req.staging_target_path)?;
        let required = req
            .capacity_range
            .as_ref()
            .map(|c| c.required_bytes.max(0) as u64)
            .unwrap_or(0);
        let passphrase = req
            .secrets
            .get(crate::contract::SECRET_ENCRYPTION_PASSPHRASE)
            .map(|p| request::Passphrase::new(p.clone()));
        let cfg = Arc::clone(&self.cfg);
        let size = self
            .guarded(&volume_id, async move {
                expand::expand(
                    &cfg,
                    &id,
                    &path,
                    staging.as_deref(),
                    required,
                    passphrase.as_ref(),
                )
                .await
            })
            .await?;
        Ok(Response::new(csi::NodeExpandVolumeResponse {
            capacity_bytes: size as i64,
        }))
    }

    async fn node_get_capabilities_inner(
        &self,
        _req: Request<csi::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<csi::NodeGetCapabilitiesResponse>, Status> {
        let capabilities = CAPABILITIES
            .iter()
            .map(|t| csi::NodeServiceCapability {
                r#type: Some(csi::node_service_capability::Type::Rpc(
                    csi::node_service_capability::Rpc { r#type: *t as i32 },
                )),
            })
            .collect();
        Ok(Response::new(csi::NodeGetCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn node_get_info_inner(
        &self,
        _req: Request<csi::NodeGetInfoRequest>,
    ) -> Result<Response<csi::NodeGetInfoResponse>, Status> {
        let accessible_topology = (!self.cfg.topology.is_empty()).then(|| csi::Topology {
            segments: self
                .cfg
                .topology
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        });
        Ok(Response::new(csi::NodeGetInfoResponse {
            node_id: self.cfg.node_id.clone(),
            max_volumes_per_node: self.cfg.max_volumes,
            accessible_topology,
        }))
    }
}
