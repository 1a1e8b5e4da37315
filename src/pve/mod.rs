//! Proxmox VE API: an HTTP client with token or ticket auth, typed calls for the
//! endpoints the driver uses, UPID task tracking, and drive property strings.

pub mod client;
pub mod drive;
pub mod error;
pub mod types;
pub mod upid;

pub use client::{Credentials, PveClient, PveEndpoint};
pub use error::{PveError, PveErrorKind};
