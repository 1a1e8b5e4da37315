//! proxmox-csi: a CSI driver for Proxmox VE, and the Proxmox VE API simulator it is tested against.

/// Generated CSI v1 wire types and gRPC service traits.
pub mod csi {
    #![allow(clippy::all)]
    tonic::include_proto!("csi.v1");
}

/// Generated types and service of kubelet's plugin-registration API (v1).
pub mod pluginregistration {
    #![allow(clippy::all)]
    tonic::include_proto!("pluginregistration");
}

pub mod bench;
pub mod cli;
pub mod config;
pub mod contract;
pub mod controller;
pub mod csi_client;
pub mod doctor;
pub mod identity;
pub mod inflight;
pub mod kube;
pub mod metrics;
pub mod node;
pub mod pve;
pub mod registration;
pub mod sandbox;
pub mod server;
pub mod sim;
pub mod uds_authority;
pub mod volume_id;
