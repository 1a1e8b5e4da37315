//! Endpoint handlers, one module per API area.

pub mod access;
pub mod apply;
pub mod cluster;
pub mod lifecycle;
pub mod pools;
pub mod power;
pub mod qemu;
pub mod resize;
pub mod snapshot;
pub mod storage;
pub mod tasks;
pub mod vmconfig;
pub mod volume_access;

use super::dispatch::Ctx;
use super::error::{ApiError, ApiResult};
use super::Sim;
use serde_json::Value;

pub async fn call(sim: &Sim, ctx: &Ctx) -> ApiResult<Value> {
    match (ctx.method.as_str(), ctx.template.as_str()) {
        ("POST", "/access/ticket") => access::ticket(sim, ctx),
        ("GET", "/access/permissions") => access::permissions(ctx),
        ("GET", "/version") => cluster::version(sim),
        ("GET", "/cluster/status") => cluster::status(sim),
        ("GET", "/nodes") => cluster::nodes(sim),
        ("GET", "/cluster/resources") => cluster::resources(sim, ctx),
        ("GET", "/nodes/{node}/status") => cluster::node_status(sim, ctx),
        ("GET", "/nodes/{node}/version") => cluster::node_version(sim),
        ("GET", "/nodes/{node}/storage") => storage::list_storages(sim, ctx),
        ("GET", "/nodes/{node}/storage/{storage}/status") => storage::status(sim, ctx),
        ("GET", "/nodes/{node}/storage/{storage}/content") => storage::list_content(sim, ctx),
        ("POST", "/nodes/{node}/storage/{storage}/content") => storage::alloc(sim, ctx).await,
        ("POST", "/nodes/{node}/storage/{storage}/content/{volume}") => storage::copy(sim, ctx),
        ("GET", "/storage") => storage::config_index(sim, ctx),
        ("GET", "/storage/{storage}") => storage::config_read(sim, ctx),
        ("GET", "/nodes/{node}/storage/{storage}/content/{volume}") => {
            storage::volume_info(sim, ctx)
        }
        ("DELETE", "/nodes/{node}/storage/{storage}/content/{volume}") => storage::free(sim, ctx),
        ("GET", "/nodes/{node}/qemu") => qemu::list(sim, ctx),
        ("GET", "/nodes/{node}/qemu/{vmid}/config") => qemu::get_config(sim, ctx),
        ("GET", "/nodes/{node}/qemu/{vmid}/pending") => qemu::pending(sim, ctx),
        ("POST", "/nodes/{node}/qemu/{vmid}/config") => {
            vmconfig::update_config(sim, ctx, false).await
        }
        ("PUT", "/nodes/{node}/qemu/{vmid}/config") => {
            vmconfig::update_config(sim, ctx, true).await
        }
        ("PUT", "/nodes/{node}/qemu/{vmid}/unlink") => vmconfig::unlink(sim, ctx).await,
        ("PUT", "/nodes/{node}/qemu/{vmid}/resize") => resize::resize(sim, ctx).await,
        ("GET", "/nodes/{node}/qemu/{vmid}/status/current") => qemu::status_current(sim, ctx),
        ("POST", "/nodes/{node}/qemu/{vmid}/status/start") => power::power(sim, ctx, true).await,
        ("POST", "/nodes/{node}/qemu/{vmid}/status/stop") => power::power(sim, ctx, false).await,
        ("GET", "/pools") => pools::index(sim, ctx),
        ("POST", "/pools") => pools::create(sim, ctx),
        ("PUT", "/pools") | ("PUT", "/pools/{poolid}") => pools::update(sim, ctx),
        ("GET", "/pools/{poolid}") => pools::read(sim, ctx),
        ("DELETE", "/pools") | ("DELETE", "/pools/{poolid}") => pools::delete(sim, ctx),
        ("GET", "/cluster/nextid") => lifecycle::nextid(sim, ctx),
        ("POST", "/nodes/{node}/qemu") => lifecycle::create(sim, ctx).await,
        ("DELETE", "/nodes/{node}/qemu/{vmid}") => lifecycle::destroy(sim, ctx).await,
        ("GET", "/nodes/{node}/qemu/{vmid}/snapshot") => snapshot::list(sim, ctx),
        ("POST", "/nodes/{node}/qemu/{vmid}/snapshot") => snapshot::create(sim, ctx).await,
        ("DELETE", "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}") => {
            snapshot::delete(sim, ctx).await
        }
        ("POST", "/nodes/{node}/qemu/{vmid}/snapshot/{snapname}/rollback") => {
            snapshot::rollback(sim, ctx).await
        }
        ("POST", "/nodes/{node}/qemu/{vmid}/clone") => snapshot::clone(sim, ctx).await,
        ("GET", "/nodes/{node}/tasks") => tasks::list(sim, ctx),
        ("GET", "/nodes/{node}/tasks/{upid}/status") => tasks::status(sim, ctx),
        ("GET", "/nodes/{node}/tasks/{upid}/log") => tasks::log(sim, ctx),
        // Known to the schema but not simulated.
        (m, _) => Err(ApiError::not_implemented(m, &ctx.path)),
    }
}
