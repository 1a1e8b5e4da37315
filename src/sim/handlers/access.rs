//! Access endpoints: ticket login and the caller's effective permissions.

use crate::sim::dispatch::Ctx;
use crate::sim::error::ApiResult;
use crate::sim::Sim;
use serde_json::{json, Map, Value};

/// Every privilege PVE knows of, granted to identities without a privilege list.
pub const ALL_PRIVS: &[&str] = &[
    "Datastore.Allocate",
    "Datastore.AllocateSpace",
    "Datastore.AllocateTemplate",
    "Datastore.Audit",
    "Group.Allocate",
    "Mapping.Audit",
    "Mapping.Modify",
    "Mapping.Use",
    "Permissions.Modify",
    "Pool.Allocate",
    "Pool.Audit",
    "Realm.Allocate",
    "Realm.AllocateUser",
    "SDN.Allocate",
    "SDN.Audit",
    "SDN.Use",
    "Sys.AccessNetwork",
    "Sys.Audit",
    "Sys.Console",
    "Sys.Incoming",
    "Sys.Modify",
    "Sys.PowerMgmt",
    "Sys.Syslog",
    "User.Modify",
    "VM.Allocate",
    "VM.Audit",
    "VM.Backup",
    "VM.Clone",
    "VM.Config.CDROM",
    "VM.Config.CPU",
    "VM.Config.Cloudinit",
    "VM.Config.Disk",
    "VM.Config.HWType",
    "VM.Config.Memory",
    "VM.Config.Network",
    "VM.Config.Options",
    "VM.Console",
    "VM.GuestAgent.Audit",
    "VM.GuestAgent.FileRead",
    "VM.GuestAgent.FileSystemMgmt",
    "VM.GuestAgent.FileWrite",
    "VM.GuestAgent.Unrestricted",
    "VM.Migrate",
    "VM.PowerMgmt",
    "VM.Replicate",
    "VM.Snapshot",
    "VM.Snapshot.Rollback",
];

pub fn ticket(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    sim.inner.tickets.login(
        sim.cfg(),
        ctx.req("username")?,
        ctx.req("password")?,
        ctx.get("realm"),
    )
}

/// GET /access/permissions: privileges are granted on `/` with propagation, so every path
/// inherits them.
pub fn permissions(ctx: &Ctx) -> ApiResult<Value> {
    let privs: Vec<String> = match &ctx.who.privs {
        Some(p) => p.clone(),
        None => ALL_PRIVS.iter().map(|s| s.to_string()).collect(),
    };
    let map: Map<String, Value> = privs.into_iter().map(|p| (p, json!(1))).collect();
    let path = ctx.get("path").unwrap_or("/").to_string();
    Ok(json!({ path: map }))
}
