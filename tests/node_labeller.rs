//! The controller keeps Node topology labels equal to where each worker VM
//! runs, against the simulator and a fake Kubernetes API server.

mod support;

use axum::extract::{Path, State};
use axum::routing::get;
use proxmox_csi::kube::{ApiServer, Token};
use pve_sim::{HotplugMode, VmConfig};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use support::*;

type Nodes = Arc<Mutex<BTreeMap<String, BTreeMap<String, String>>>>;

async fn list(State(nodes): State<Nodes>) -> axum::Json<Value> {
    let items: Vec<Value> = nodes
        .lock()
        .unwrap()
        .iter()
        .map(|(n, l)| json!({"metadata": {"name": n, "labels": l}}))
        .collect();
    axum::Json(json!({"kind": "NodeList", "items": items}))
}

async fn patch(
    State(nodes): State<Nodes>,
    Path(name): Path<String>,
    body: String,
) -> axum::Json<Value> {
    let v: Value = serde_json::from_str(&body).unwrap();
    let mut nodes = nodes.lock().unwrap();
    let labels = nodes.get_mut(&name).unwrap();
    for (k, val) in v["metadata"]["labels"].as_object().unwrap() {
        labels.insert(k.clone(), val.as_str().unwrap().to_string());
    }
    axum::Json(json!({}))
}

async fn fake_api(nodes: Nodes) -> ApiServer {
    let app = axum::Router::new()
        .route("/api/v1/nodes", get(list))
        .route("/api/v1/nodes/{name}", axum::routing::patch(patch))
        .with_state(nodes);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    ApiServer::new(base_url, Token::Static("t".into()), None).unwrap()
}

const R: &str = "topology.kubernetes.io/region";
const Z: &str = "topology.kubernetes.io/zone";

#[tokio::test]
async fn labels_follow_the_vms() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let nodes: Nodes = Arc::new(Mutex::new(BTreeMap::from([
        (
            "worker-1".to_string(),
            BTreeMap::from([("kubernetes.io/os".to_string(), "linux".to_string())]),
        ),
        (
            "worker-2".to_string(),
            BTreeMap::from([
                (R.to_string(), "sim".to_string()),
                (Z.to_string(), "pve2".to_string()),
            ]),
        ),
        ("control-plane".to_string(), BTreeMap::new()),
    ])));
    let api = fake_api(nodes.clone()).await;

    let r = c.label_nodes_once(&api).await.unwrap();
    assert_eq!(r.patched, vec!["worker-1".to_string()]);
    assert_eq!(r.without_vm, vec!["control-plane".to_string()]);
    {
        let n = nodes.lock().unwrap();
        assert_eq!(n["worker-1"][R], "sim");
        assert_eq!(n["worker-1"][Z], "pve1");
        assert_eq!(
            n["worker-1"]["kubernetes.io/os"], "linux",
            "other labels untouched"
        );
        assert!(n["control-plane"].is_empty());
    }
    // Nothing to do the second time.
    assert!(c.label_nodes_once(&api).await.unwrap().patched.is_empty());
    // The VM migrates: the zone label follows.
    t.sim.move_vm(101, "pve2").unwrap();
    assert_eq!(
        c.label_nodes_once(&api).await.unwrap().patched,
        vec!["worker-1".to_string()]
    );
    assert_eq!(nodes.lock().unwrap()["worker-1"][Z], "pve2");
}

#[tokio::test]
async fn ambiguous_names_are_left_alone() {
    let t = start_sim(HotplugMode::None, |c| {
        c.vms.push(VmConfig {
            vmid: 103,
            name: "worker-1".into(),
            node: "pve2".into(),
            ..Default::default()
        });
    })
    .await;
    let c = controller(&t.url);
    let nodes: Nodes = Arc::new(Mutex::new(BTreeMap::from([(
        "worker-1".to_string(),
        BTreeMap::new(),
    )])));
    let api = fake_api(nodes.clone()).await;
    let r = c.label_nodes_once(&api).await.unwrap();
    assert_eq!(r.ambiguous, vec!["worker-1".to_string()]);
    assert!(r.patched.is_empty());
    assert!(nodes.lock().unwrap()["worker-1"].is_empty());
}
