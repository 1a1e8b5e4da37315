//! proxmox-csi: a CSI driver for Proxmox VE, and the Proxmox VE API simulator it is tested against.

/// Generated CSI v1 wire types and gRPC service traits.
pub mod csi {
    #![allow(clippy::all)]
    tonic::include_proto!("csi.v1");
}

pub mod sim;
