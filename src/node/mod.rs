//! Node plugin: runs on every worker VM and turns an attached Proxmox disk
//! into a staged filesystem (or raw block device) that pods can use.
//!
//! The gRPC surface lives in [`service`]; everything it calls is a plain
//! async function in one of the sibling modules so tests can drive the
//! logic without a gRPC server.

pub mod cmd;
pub mod config;
pub mod crypt;
pub mod device;
pub mod error;
pub mod expand;
pub mod inflight;
pub mod mkfs;
pub mod mount;
pub mod mountinfo;
pub mod probe;
pub mod publish;
pub mod request;
pub mod service;
pub mod stage;
pub mod stats;

pub use config::NodeConfig;
pub use error::NodeError;
pub use service::NodeService;
