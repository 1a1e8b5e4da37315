//! gRPC adapter for the Controller service: requests in, logic, status out.

use super::error::ControllerError;
use super::Controller;
use crate::csi::controller_server::Controller as CsiController;
use crate::csi::controller_service_capability::rpc::Type as Rpc;
use crate::csi::*;
use crate::rpc_log;
use std::future::Future;
use std::sync::Arc;
use tonic::{Request, Response, Status};
use tracing::Instrument;

#[derive(Clone)]
pub struct ControllerService {
    pub inner: Arc<Controller>,
}

/// Capabilities offered; each one is backed by a tested implementation.
const CAPABILITIES: &[Rpc] = &[
    Rpc::CreateDeleteVolume,
    Rpc::PublishUnpublishVolume,
    Rpc::ListVolumes,
    Rpc::ListVolumesPublishedNodes,
    Rpc::GetCapacity,
    Rpc::PublishReadonly,
    Rpc::GetVolume,
    Rpc::ExpandVolume,
    Rpc::CreateDeleteSnapshot,
    Rpc::ListSnapshots,
    Rpc::CloneVolume,
    Rpc::ModifyVolume,
];

fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("{what} is not supported by this driver"))
}

impl ControllerService {
    /// Runs one controller operation in a task of its own and waits for it.
    /// When the CO's deadline passes, tonic drops this future; the task goes
    /// on and ends what it started (a clone is grown, a temporary snapshot
    /// removed) under the operation's in-flight key, so a retry meanwhile
    /// gets Aborted and a retry after it the same answer. A failure is
    /// logged here, once, with the method and the volume it concerns.
    async fn run<R, T, Fut>(
        &self,
        method: &'static str,
        req: R,
        volume: fn(&R) -> &str,
        op: impl FnOnce(Arc<Controller>, R) -> Fut,
    ) -> Result<T, Status>
    where
        R: std::fmt::Debug,
        T: Send + 'static,
        Fut: Future<Output = Result<T, ControllerError>> + Send + 'static,
    {
        let volume = volume(&req).to_string();
        let span = rpc_log::span(method, &volume);
        rpc_log::request(&span, &req);
        let task = tokio::spawn(op(self.inner.clone(), req).instrument(span.clone()));
        let result = match task.await {
            Ok(r) => r.map_err(Status::from),
            Err(e) => Err(Status::internal(format!("{method} stopped: {e}"))),
        };
        rpc_log::outcome(&span, result)
    }
}

#[tonic::async_trait]
impl CsiController for ControllerService {
    async fn create_volume(
        &self,
        r: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        let req = r.into_inner();
        let resp = self
            .run(
                "CreateVolume",
                req,
                |r| r.name.as_str(),
                |c, req| async move { c.create_volume(req).await },
            )
            .await?;
        Ok(Response::new(resp))
    }

    async fn delete_volume(
        &self,
        r: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        let req = r.into_inner();
        self.run(
            "DeleteVolume",
            req,
            |r| r.volume_id.as_str(),
            |c, req| async move { c.delete_volume(req).await },
        )
        .await?;
        Ok(Response::new(DeleteVolumeResponse {}))
    }

    async fn controller_publish_volume(
        &self,
        r: Request<ControllerPublishVolumeRequest>,
    ) -> Result<Response<ControllerPublishVolumeResponse>, Status> {
        let req = r.into_inner();
        let resp = self
            .run(
                "ControllerPublishVolume",
                req,
                |r| r.volume_id.as_str(),
                |c, req| async move { c.publish_volume(req).await },
            )
            .await?;
        Ok(Response::new(resp))
    }

    async fn controller_unpublish_volume(
        &self,
        r: Request<ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<ControllerUnpublishVolumeResponse>, Status> {
        let req = r.into_inner();
        self.run(
            "ControllerUnpublishVolume",
            req,
            |r| r.volume_id.as_str(),
            |c, req| async move { c.unpublish_volume(req).await },
        )
        .await?;
        Ok(Response::new(ControllerUnpublishVolumeResponse {}))
    }

    async fn validate_volume_capabilities(
        &self,
        r: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        let req = r.into_inner();
        let resp = self
            .run(
                "ValidateVolumeCapabilities",
                req,
                |r| r.volume_id.as_str(),
                |c, req| async move { c.validate_volume_capabilities(req).await },
            )
            .await?;
        Ok(Response::new(resp))
    }

    async fn list_volumes(
        &self,
        r: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        let req = r.into_inner();
        Ok(Response::new(
            self.run(
                "ListVolumes",
                req,
                |_| "",
                |c, req| async move { c.list_volumes(req).await },
            )
            .await?,
        ))
    }

    async fn get_capacity(
        &self,
        r: Request<GetCapacityRequest>,
    ) -> Result<Response<GetCapacityResponse>, Status> {
        let req = r.into_inner();
        Ok(Response::new(
            self.run(
                "GetCapacity",
                req,
                |_| "",
                |c, req| async move { c.get_capacity(req).await },
            )
            .await?,
        ))
    }

    async fn controller_get_capabilities(
        &self,
        _r: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        let capabilities = CAPABILITIES
            .iter()
            .map(|t| ControllerServiceCapability {
                r#type: Some(controller_service_capability::Type::Rpc(
                    controller_service_capability::Rpc { r#type: *t as i32 },
                )),
            })
            .collect();
        Ok(Response::new(ControllerGetCapabilitiesResponse {
            capabilities,
        }))
    }

    async fn create_snapshot(
        &self,
        r: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        let req = r.into_inner();
        let resp = self
            .run(
                "CreateSnapshot",
                req,
                |r| r.source_volume_id.as_str(),
                |c, req| async move { c.create_snapshot(req).await },
            )
            .await?;
        Ok(Response::new(resp))
    }

    async fn delete_snapshot(
        &self,
        r: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        let req = r.into_inner();
        self.run(
            "DeleteSnapshot",
            req,
            |r| r.snapshot_id.as_str(),
            |c, req| async move { c.delete_snapshot(req).await },
        )
        .await?;
        Ok(Response::new(DeleteSnapshotResponse {}))
    }

    async fn list_snapshots(
        &self,
        r: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        let req = r.into_inner();
        Ok(Response::new(
            self.run(
                "ListSnapshots",
                req,
                |r| r.source_volume_id.as_str(),
                |c, req| async move { c.list_snapshots(req).await },
            )
            .await?,
        ))
    }

    async fn get_snapshot(
        &self,
        _r: Request<GetSnapshotRequest>,
    ) -> Result<Response<GetSnapshotResponse>, Status> {
        Err(unimplemented("GetSnapshot"))
    }

    async fn controller_expand_volume(
        &self,
        r: Request<ControllerExpandVolumeRequest>,
    ) -> Result<Response<ControllerExpandVolumeResponse>, Status> {
        let req = r.into_inner();
        let resp = self
            .run(
                "ControllerExpandVolume",
                req,
                |r| r.volume_id.as_str(),
                |c, req| async move { c.expand_volume(req).await },
            )
            .await?;
        Ok(Response::new(resp))
    }

    async fn controller_get_volume(
        &self,
        r: Request<ControllerGetVolumeRequest>,
    ) -> Result<Response<ControllerGetVolumeResponse>, Status> {
        let req = r.into_inner();
        Ok(Response::new(
            self.run(
                "ControllerGetVolume",
                req,
                |r| r.volume_id.as_str(),
                |c, req| async move { c.get_volume(req).await },
            )
            .await?,
        ))
    }

    async fn controller_modify_volume(
        &self,
        r: Request<ControllerModifyVolumeRequest>,
    ) -> Result<Response<ControllerModifyVolumeResponse>, Status> {
        let req = r.into_inner();
        let resp = self
            .run(
                "ControllerModifyVolume",
                req,
                |r| r.volume_id.as_str(),
                |c, req| async move { c.modify_volume(req).await },
            )
            .await?;
        Ok(Response::new(resp))
    }
}
