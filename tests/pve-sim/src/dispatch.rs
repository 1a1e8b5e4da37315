//! Request pipeline for `/api2/json`: route against the schema, authenticate, apply faults,
//! check privileges, verify parameters, then call the endpoint handler.

use super::auth::{self, Identity};
use super::error::{ApiError, ApiResult};
use super::faults::FaultAction;
use super::{handlers, simapi, validate, Sim};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::collections::BTreeMap;

const BASE: &str = "/api2/json";

/// Everything a handler needs to know about the request.
pub struct Ctx {
    /// Decoded request path below `/api2/json`, for messages.
    pub path: String,
    pub template: String,
    pub method: String,
    pub params: BTreeMap<String, String>,
    pub who: Identity,
    /// Fault-injected failure for the task this request starts.
    pub task_error: Option<String>,
    /// Fault-injected failure for every hot-(un)plug this request triggers.
    pub hotplug_error: Option<String>,
}

impl Ctx {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.params.get(k).map(String::as_str)
    }
    pub fn req(&self, k: &str) -> ApiResult<&str> {
        self.get(k)
            .ok_or_else(|| ApiError::param(k, "property is missing and it is not optional"))
    }
    pub fn flag(&self, k: &str) -> bool {
        self.get(k).and_then(validate::parse_bool).unwrap_or(false)
    }
    pub fn vmid(&self) -> ApiResult<u32> {
        self.req("vmid")?
            .parse()
            .map_err(|_| ApiError::param("vmid", "type check ('integer') failed"))
    }
}

/// pve-storage API2/Storage/Status.pm mounts the Content API with `fragmentDelimiter => ''`
/// and pve-common RESTHandler::map_path_to_methods then joins the rest of the path into one
/// component: `{volume}` takes everything after `content/`, raw slashes included (dir volume
/// ids are `<vmid>/<file>`).
fn join_content_volume(segs: &mut Vec<String>) {
    let is_content =
        segs.len() > 6 && segs[0] == "nodes" && segs[2] == "storage" && segs[4] == "content";
    if is_content {
        let rest = segs.split_off(5).join("/");
        segs.push(rest);
    }
}

pub fn router(sim: Sim) -> axum::Router {
    simapi::routes().fallback(handle).with_state(sim)
}

fn json_scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(b) => (if *b { "1" } else { "0" }).to_string(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn parse_params(
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    if let Some(q) = uri.query() {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q)
            .map_err(|e| ApiError::new(400, format!("unable to parse query - {e}")))?;
        out.extend(pairs);
    }
    if body.is_empty() {
        return Ok(out);
    }
    let ct = headers
        .get("content-type")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if ct.starts_with("application/json") {
        let v: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::new(400, format!("unable to parse JSON body - {e}")))?;
        if let Value::Object(m) = v {
            for (k, v) in m {
                out.insert(k, json_scalar(&v));
            }
        }
    } else {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
            .map_err(|e| ApiError::new(400, format!("unable to parse body - {e}")))?;
        out.extend(pairs);
    }
    Ok(out)
}

async fn handle(
    State(sim): State<Sim>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // The latency model: a free API worker, the request latency, then the request.
    let load = &sim.inner.load;
    let resp = load
        .serve(async {
            match pipeline(&sim, &method, &uri, &headers, &body).await {
                Ok(data) => axum::Json(serde_json::json!({ "data": data })).into_response(),
                Err(e) => {
                    tracing::debug!("{method} {} -> {} {}", uri.path(), e.status, e.message);
                    e.into_response()
                }
            }
        })
        .await;
    // Bodies are built whole, so their size is known exactly.
    let bytes = axum::body::HttpBody::size_hint(resp.body())
        .exact()
        .unwrap_or(0);
    load.count(bytes);
    resp
}

async fn pipeline(
    sim: &Sim,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Value> {
    let m = method.as_str().to_string();
    let Some(rel) = uri.path().strip_prefix(BASE) else {
        return Err(ApiError::new(404, "Not found"));
    };
    // Split before decoding: volume ids carry encoded slashes.
    let mut segs: Vec<String> = rel
        .split('/')
        .filter(|s| !s.is_empty())
        .map(auth::percent_decode)
        .collect();
    join_content_volume(&mut segs);
    let shown = format!("/{}", segs.join("/"));
    let write = matches!(m.as_str(), "POST" | "PUT" | "DELETE");
    // Like pveproxy, authenticate before routing: only login is reachable without credentials.
    let public = shown == "/access/ticket" || (shown == "/access/domains" && m == "GET");
    let who = if public {
        Identity::anonymous()
    } else {
        let pools = handlers::pools::pool_paths(sim);
        match auth::authenticate(&sim.inner.cfg, &sim.inner.tickets, headers, write, pools) {
            Ok(who) => who,
            Err(e) => {
                // PVE delays every rejected login to slow down guessing.
                let delay = sim.inner.cfg.auth_fail_delay_ms;
                if delay > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                }
                return Err(e);
            }
        }
    };
    let matched = sim.inner.schema.lookup(&segs);
    let Some(matched) = matched else {
        return Err(ApiError::not_implemented(&m, &shown));
    };
    let template = matched.template.to_string();
    let path_params = matched.path_params;
    let Some(def) = sim.inner.schema.method(&template, &m).cloned() else {
        return Err(ApiError::not_implemented(&m, &shown));
    };

    let mut task_error = None;
    let mut hotplug_error = None;
    for action in sim.inner.faults.take(&m, &shown) {
        match action {
            FaultAction::DelayMs(ms) => {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await
            }
            FaultAction::Error { status, message } => return Err(ApiError::new(status, message)),
            FaultAction::TaskError(e) => task_error = Some(e),
            FaultAction::Hang => std::future::pending::<()>().await,
            FaultAction::HotplugError(e) => hotplug_error = Some(e),
            FaultAction::LockVm(lock) => {
                if let Some(vmid) = path_params.get("vmid").and_then(|v| v.parse::<u32>().ok()) {
                    // An empty lock value clears the lock again.
                    sim.with_vm(vmid, |vm| match lock.is_empty() {
                        true => vm.conf.remove("lock"),
                        false => vm.conf.insert("lock".into(), lock.clone()),
                    });
                    sim.save()?;
                }
            }
        }
    }

    let mut params = parse_params(uri, headers, body)?;
    for (k, v) in &path_params {
        if params.get(k).is_some_and(|p| p != v) {
            return Err(ApiError::param(
                k,
                "duplicate parameter (already defined in URI) with conflicting values!",
            ));
        }
    }
    params.extend(path_params);
    if who.is_token && def.get("allowtoken").and_then(Value::as_i64) == Some(0) {
        return Err(ApiError::perm_text(&format!(
            "URI '{shown}' not available with API token, need proper ticket.\n"
        )));
    }
    // pve-access-control RPCEnvironment::check_api2_permissions: a method that declares no
    // permissions at all is for root@pam only ("user != root@pam"); tokens are never root.
    if def.get("permissions").is_none() && !public && (who.is_token || who.userid != "root@pam") {
        return Err(ApiError::perm_text("user != root@pam"));
    }
    if let Some(check) = def.pointer("/permissions/check") {
        auth::check(&who, check, &params)?;
    }
    // Requests for another node are proxied there; an unknown node fails that lookup.
    if let Some(node) = params.get("node") {
        if !sim.cfg().has_node(node) {
            return Err(ApiError::new(
                500,
                format!("hostname lookup '{node}' failed - failed to get address info for: {node}: Name or service not known"),
            ));
        }
    }
    let empty = Value::Null;
    validate::validate(def.get("parameters").unwrap_or(&empty), &params)
        .map_err(ApiError::params)?;
    let ctx = Ctx {
        path: shown,
        template,
        method: m,
        params,
        who,
        task_error,
        hotplug_error,
    };
    handlers::call(sim, &ctx).await
}
