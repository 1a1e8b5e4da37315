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

pub fn list(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    Ok(sim.inner.tasks.list(ctx.req("node")?))
}
