//! proxmox-csi: a Kubernetes CSI driver for Proxmox VE.
//!
//! Layout, one layer per line; each layer uses only the layers below it:
//!
//! - `main.rs`, [`cli`]: the binary's subcommands and flags.
//! - [`server`], [`identity`], `controller::service`, `node::service`: the thin gRPC layer. Each
//!   RPC is checked, handed to a plain async function, and its error mapped to a gRPC status in
//!   one place per side (`controller::error`, `node::error`); `uds_authority` makes the socket
//!   accept every client's `:authority`.
//! - [`controller`]: volumes as holder VMs — create, delete, publish (hot-plug), expand,
//!   snapshot, clone, modify, list — on top of [`pve`]. `inflight` keeps one call per volume.
//! - [`node`]: inside the worker VM — find the disk by WWN, format only blank disks, LUKS,
//!   mount, publish, grow, stats — through the host's tools (mkfs, mount, cryptsetup).
//! - `contract`: the keys and values the controller hands the node (publish and volume
//!   context, fs types, secrets); [`volume_id`]: the volume id, WWN and holder naming.
//! - [`pve`]: the Proxmox VE API client — HTTP, auth, tasks — and the one place PVE's error
//!   texts are classified ([`pve::PveErrorKind`]).
//! - [`config`], [`kube`], [`metrics`], [`doctor`]: the config file, the few Kubernetes API
//!   calls about Nodes, Prometheus metrics, and the pre-install checks.
//!
//! With the default feature `dev` (off in the image): [`sandbox`] and [`bench`](mod@bench) run the driver
//! against the simulator (the `pve-sim` crate under tests/), and [`csi_client`] is the gRPC client
//! they and the tests use. The driver never depends on the simulator.

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

#[cfg(feature = "dev")]
pub mod bench;
pub mod cli;
pub mod config;
pub(crate) mod contract;
pub mod controller;
#[cfg(feature = "dev")]
pub mod csi_client;
pub mod doctor;
pub mod identity;
pub(crate) mod inflight;
pub mod kube;
pub mod metrics;
pub mod node;
pub mod pve;
pub mod registration;
pub(crate) mod rpc_log;
#[cfg(feature = "dev")]
pub mod sandbox;
pub mod server;
pub(crate) mod uds_authority;
pub mod volume_id;
