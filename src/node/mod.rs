//! Node plugin: runs on every worker VM and turns an attached Proxmox disk
//! into a staged filesystem (or raw block device) that pods can use.
//!
//! The gRPC surface lives in [`service`]; everything it calls is a plain
//! async function in one of the sibling modules so tests can drive the
//! logic without a gRPC server.
//!
//! Serving it: `csi::node_server::NodeServer::new(NodeService::new(cfg))`.
//! The plugin needs the host's `/dev` (for the by-id links and device
//! nodes), `/sys`, and bidirectional mount propagation on the kubelet
//! directory so its mounts reach the pods.
//!
//! Contract with the controller (keys in `crate::contract`):
//! ControllerPublishVolume puts the disk's WWN into
//! `publish_context["wwn"]`. The WWN is derived from the volume id, so the
//! node derives it too, refuses a publish_context that disagrees, and finds
//! the disk by that WWN alone (see [`device`]).
//!
//! Paths in requests are checked by `paths`: absolute, no `..`, and below
//! the kubelet directory (`--kubelet-dir`) after resolving symlinks.

pub(crate) mod cmd;
pub(crate) mod config;
pub mod crypt;
pub mod device;
pub(crate) mod error;
pub(crate) mod expand;
pub(crate) mod mkfs;
pub(crate) mod mount;
pub mod mountinfo;
pub(crate) mod paths;
pub(crate) mod probe;
pub(crate) mod publish;
pub mod request;
pub mod service;
pub(crate) mod stage;
pub(crate) mod stats;

pub use config::NodeConfig;
pub use error::NodeError;
pub use service::NodeService;
