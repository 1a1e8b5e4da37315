//! Access endpoints: ticket login and the caller's effective permissions.

use crate::dispatch::Ctx;
use crate::error::ApiResult;
use crate::Sim;
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

/// GET /access/permissions: the caller's privileges on `path`, or on `/` and each ACL path.
pub fn permissions(ctx: &Ctx) -> ApiResult<Value> {
    let who = &ctx.who;
    let on = |path: &str| -> Map<String, Value> {
        ALL_PRIVS
            .iter()
            .filter(|p| who.has(path, p))
            .map(|p| (p.to_string(), json!(1)))
            .collect()
    };
    let mut out = Map::new();
    match ctx.get("path") {
        Some(p) => {
            out.insert(p.to_string(), Value::Object(on(p)));
        }
        None => {
            out.insert("/".into(), Value::Object(on("/")));
            for p in who.acl_paths() {
                let privs = on(&p);
                out.insert(p, Value::Object(privs));
            }
        }
    }
    Ok(Value::Object(out))
}
