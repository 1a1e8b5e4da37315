//! Proxmox VE API: an HTTP client with token or ticket auth, typed calls for the
//! endpoints the driver uses, UPID task tracking, and drive property strings.

mod active_tasks;
pub(crate) mod client;
pub mod drive;
pub(crate) mod error;
pub mod observer;
pub mod resources;
pub(crate) mod task_pace;
pub mod types;
pub(crate) mod upid;

pub use client::{Credentials, PveClient, PveEndpoint, DEFAULT_MAX_CONNECTIONS};
pub use error::{MissingPrivilege, PveError, PveErrorKind};
pub use observer::Observer;
