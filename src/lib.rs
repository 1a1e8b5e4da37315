//! proxmox-csi: a CSI driver for Proxmox VE, and the Proxmox VE API simulator it is tested against.

/// Generated CSI v1 wire types and gRPC service traits.
pub mod csi {
    #![allow(clippy::all)]
    tonic::include_proto!("csi.v1");
}

#[cfg(feature = "dev")]
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
#[cfg(feature = "dev")]
pub mod sandbox;
pub mod server;
pub mod uds_authority;
pub mod volume_id;
