//! CSI Identity service: who we are, what we offer, and whether we are ready.

use crate::controller::Controller;
use crate::csi::identity_server::Identity;
use crate::csi::plugin_capability::service::Type as ServiceType;
use crate::csi::*;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub const DRIVER_NAME: &str = "csi.proxmox-csi.dev";

#[derive(Clone)]
pub struct IdentityService {
    pub driver_name: String,
    /// Present when this process serves the Controller (capabilities say so).
    pub controller: Option<Arc<Controller>>,
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _r: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: self.driver_name.clone(),
            vendor_version: env!("CARGO_PKG_VERSION").to_string(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _r: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        let mut types = vec![ServiceType::VolumeAccessibilityConstraints];
        if self.controller.is_some() {
            types.push(ServiceType::ControllerService);
        }
        let mut capabilities: Vec<PluginCapability> = types
            .into_iter()
            .map(|t| PluginCapability {
                r#type: Some(plugin_capability::Type::Service(
                    plugin_capability::Service { r#type: t as i32 },
                )),
            })
            .collect();
        if self.controller.is_some() {
            // Disks grow while attached (through the worker VM) or not (through the holder VM).
            capabilities.push(PluginCapability {
                r#type: Some(plugin_capability::Type::VolumeExpansion(
                    plugin_capability::VolumeExpansion {
                        r#type: plugin_capability::volume_expansion::Type::Online as i32,
                    },
                )),
            });
        }
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities,
        }))
    }

    /// Answers for this process only, never asks PVE: the liveness sidecar restarts
    /// a container whose Probe fails, and a restarted controller cannot bring an
    /// unreachable PVE back. PVE reachability is the `proxmox_csi_pve_up` gauge.
    async fn probe(&self, _r: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        Ok(Response::new(ProbeResponse { ready: Some(true) }))
    }
}
