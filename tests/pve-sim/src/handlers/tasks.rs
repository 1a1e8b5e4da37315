//! Task status and logs.

use crate::dispatch::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::{tasks::parse_upid, Sim};
use serde_json::Value;

fn checked_upid(ctx: &Ctx) -> ApiResult<&str> {
    let upid = ctx.req("upid")?;
    if parse_upid(upid).is_none() {
        return Err(ApiError::param("upid", "unable to parse worker upid"));
    }
    Ok(upid)
}

pub fn status(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let upid = checked_upid(ctx)?;
    sim.inner
        .tasks
        .status(upid)
        .ok_or_else(|| ApiError::param("upid", "no such task"))
}

pub fn log(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let upid = checked_upid(ctx)?;
    sim.inner
        .tasks
        .log(upid)
        .ok_or_else(|| ApiError::param("upid", "no such task"))
}

/// GET /nodes/{node}/tasks, filtered as pve-manager API2/Tasks.pm node_tasks: without
/// Sys.Audit on /nodes/<node> a caller sees only its own tasks (`$check_task_user`: a token
/// only its token's, a user its own and its tokens'); `vmid`, `typefilter`, `userfilter`
/// narrow the list; `source=active` lists running tasks (status RUNNING), `archive`
/// (the default) finished ones, `all` both.
pub fn list(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    let node = ctx.req("node")?;
    let auditor = ctx.who.has(&format!("/nodes/{node}"), "Sys.Audit");
    let me = ctx.who.userid.as_str();
    let source = ctx.get("source").unwrap_or("archive");
    let Value::Array(all) = sim.inner.tasks.list(node) else {
        return Ok(Value::Array(Vec::new()));
    };
    let out = all
        .into_iter()
        .filter_map(|mut t| {
            let user = t["user"].as_str().unwrap_or("").to_string();
            let owner = user.split('!').next().unwrap_or("");
            let mine = user == me || owner == me;
            let running = t.get("status").is_none();
            let keep = (auditor || mine)
                && ctx.get("userfilter").is_none_or(|f| user.contains(f))
                && ctx.get("typefilter").is_none_or(|f| t["type"] == f)
                && ctx.get("vmid").is_none_or(|v| t["id"] == v)
                && match source {
                    "active" => running,
                    "all" => true,
                    _ => !running,
                };
            if running {
                t["status"] = "RUNNING".into();
            }
            keep.then_some(t)
        })
        .collect();
    Ok(Value::Array(out))
}
