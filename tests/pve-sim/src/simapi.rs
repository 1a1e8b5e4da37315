//! The simulator's own control endpoints under `/_sim/` (outside the PVE API): fault injection
//! and a state dump for debugging, the latency model and the traffic counters.

use super::faults::Fault;
use super::{LatencyModel, Sim};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Json;
use serde_json::{json, Value};

pub fn routes() -> axum::Router<Sim> {
    axum::Router::new()
        .route(
            "/_sim/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/_sim/state", get(state))
        .route("/_sim/latency", get(get_latency).post(set_latency))
        .route("/_sim/traffic", get(traffic))
        .route("/_sim/vms/{vmid}", axum::routing::post(update_vm))
}

async fn list_faults(State(sim): State<Sim>) -> Json<Value> {
    Json(json!({ "data": sim.faults().list() }))
}

async fn add_fault(State(sim): State<Sim>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    // Accept one rule or a list of rules.
    let rules: Result<Vec<Fault>, _> = if body.is_array() {
        serde_json::from_value(body)
    } else {
        serde_json::from_value(body).map(|f| vec![f])
    };
    let rules = match rules {
        Ok(r) => r,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "data": null, "message": e.to_string() })),
            )
        }
    };
    for r in rules {
        if let Err(e) = sim.faults().add(r) {
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({ "data": null, "message": e.to_string() })),
            );
        }
    }
    (StatusCode::OK, Json(json!({ "data": null })))
}

async fn clear_faults(State(sim): State<Sim>) -> Json<Value> {
    sim.faults().clear();
    Json(json!({ "data": null }))
}

async fn get_latency(State(sim): State<Sim>) -> Json<Value> {
    Json(json!({ "data": sim.latency() }))
}

/// Replaces the whole latency model (fields left out are off).
async fn set_latency(State(sim): State<Sim>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    match serde_json::from_value::<LatencyModel>(body) {
        Ok(m) => {
            sim.set_latency(m);
            (StatusCode::OK, Json(json!({ "data": null })))
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "data": null, "message": e.to_string() })),
        ),
    }
}

async fn traffic(State(sim): State<Sim>) -> Json<Value> {
    Json(json!({ "data": sim.traffic() }))
}

async fn state(State(sim): State<Sim>) -> Json<Value> {
    Json(json!({ "data": sim.state_json(), "faults": sim.faults().list() }))
}

/// `POST /_sim/vms/{vmid}` with `{"node": "...", "running": bool}` (either optional): moves the
/// VM and/or changes its power state directly.
async fn update_vm(
    State(sim): State<Sim>,
    axum::extract::Path(vmid): axum::extract::Path<u32>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let mut res = Ok(());
    if let Some(node) = body.get("node").and_then(Value::as_str) {
        res = sim.move_vm(vmid, node);
    }
    if let (Ok(()), Some(running)) = (&res, body.get("running").and_then(Value::as_bool)) {
        res = sim.set_vm_running(vmid, running);
    }
    match res {
        Ok(()) => (StatusCode::OK, Json(json!({ "data": null }))),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "data": null, "message": e.to_string() })),
        ),
    }
}
