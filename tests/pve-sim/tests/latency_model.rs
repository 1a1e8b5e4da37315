//! The latency model (latency.rs): a bounded pool of API workers, a per-request latency and
//! task durations per task type, and the traffic counters. Assertions are about order and
//! lower bounds (a sleep never ends early), never tight timing bounds.

mod support;

use pve_sim::{Fault, FaultAction, LatencyModel};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::{start, Harness};

/// GET `path` in the background; resolves to when it was answered.
fn get_at(h: &Harness, path: &str) -> tokio::task::JoinHandle<Instant> {
    let (client, url) = (h.client.clone(), format!("{}{path}", h.base));
    tokio::spawn(async move {
        let r = client
            .get(url)
            .header("Authorization", support::TOKEN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        Instant::now()
    })
}

/// Holds `path` in service for `ms` (an injected delay inside the handler).
fn delay(h: &Harness, path: &str, ms: u64) {
    h.sim
        .faults()
        .add(Fault {
            method: Some("GET".into()),
            path_regex: format!("^{path}$"),
            action: FaultAction::DelayMs(ms),
            count: None,
            skip: None,
        })
        .unwrap();
}

#[tokio::test]
async fn off_by_default() {
    let h = start(|_| {}).await;
    assert_eq!(h.sim.latency(), LatencyModel::default());
    // With no worker limit a quick request overtakes a slow one.
    delay(&h, "/nodes", 1500);
    let slow = get_at(&h, "/nodes");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let quick = get_at(&h, "/version");
    let quick = quick.await.unwrap();
    assert!(quick < slow.await.unwrap(), "a free request waited");
}

#[tokio::test]
async fn one_worker_serves_one_request_at_a_time() {
    let h = start(|c| c.max_workers = 1).await;
    // The only worker is busy with the slow request: the quick one queues behind it.
    // (Compared with when the slow one was sent: its answer may reach the client a
    // moment after the worker is free again.)
    delay(&h, "/nodes", 800);
    let t = Instant::now();
    let slow = get_at(&h, "/nodes");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let quick = get_at(&h, "/version");
    let quick = quick.await.unwrap();
    assert!(
        quick - t >= Duration::from_millis(800),
        "a request was served while the only worker was busy"
    );
    slow.await.unwrap();
}

#[tokio::test]
async fn request_latency_is_spent_holding_a_worker() {
    const L: u64 = 150;
    let h = start(|c| {
        c.request_ms = L;
        c.max_workers = 1;
    })
    .await;
    let t = Instant::now();
    let a = get_at(&h, "/version");
    let b = get_at(&h, "/cluster/status");
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    // One worker: the two requests run one after the other, L each.
    assert!(t.elapsed() >= Duration::from_millis(2 * L));
    let (first, second) = if a < b { (a, b) } else { (b, a) };
    assert!(first - t >= Duration::from_millis(L));
    assert!(second - t >= Duration::from_millis(2 * L));
}

#[tokio::test]
async fn task_stays_running_for_its_type_duration() {
    let h = start(|c| {
        c.task_ms = 0;
        c.task_type_ms = BTreeMap::from([("qmcreate".to_string(), 1200)]);
    })
    .await;
    let t = Instant::now();
    let (s, b) = h.post("/nodes/pve1/qemu", &[("vmid", "300")]).await;
    assert_eq!(s, 200, "{b}");
    let upid = b["data"].as_str().unwrap().to_string();
    let path = format!("/nodes/pve1/tasks/{}/status", support::urlencode(&upid));
    let (_, st) = h.get(&path, &[]).await;
    assert_eq!(st["data"]["status"], "running", "{st}");
    assert_eq!(h.wait("pve1", &upid).await, "OK");
    assert!(t.elapsed() >= Duration::from_millis(1200));
    // Another type takes the default (0): its task is done by the first poll that waits.
    let (s, b) = h.delete("/nodes/pve1/qemu/300").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(h.wait("pve1", b["data"].as_str().unwrap()).await, "OK");
}

#[tokio::test]
async fn model_changes_at_run_time() {
    let h = start(|_| {}).await;
    let model = LatencyModel {
        request_ms: 20,
        max_workers: 3,
        task_ms: 200,
        task_type_ms: BTreeMap::from([("qmclone".to_string(), 900)]),
    };
    let control = format!("{}/_sim/latency", h.base.trim_end_matches("/api2/json"));
    let r = h.client.post(&control).json(&model).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(h.sim.latency(), model);
    let got: serde_json::Value = h
        .client
        .get(&control)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["data"]["task_type_ms"]["qmclone"], 900);
    assert_eq!(got["data"]["max_workers"], 3);
    // A field the model does not know is refused, naming it.
    let r = h
        .client
        .post(&control)
        .json(&serde_json::json!({"request_msec": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("request_msec"));
    assert_eq!(h.sim.latency(), model);
    h.sim.set_latency(LatencyModel::default());
    assert_eq!(h.sim.latency(), LatencyModel::default());
}

#[tokio::test]
async fn traffic_counts_requests_and_response_bytes() {
    let h = start(|_| {}).await;
    let before = h.sim.traffic();
    let mut bytes = 0;
    for path in ["/version", "/cluster/resources", "/nodes/pve9/qemu"] {
        let r = h
            .client
            .get(format!("{}{path}", h.base))
            .header("Authorization", support::TOKEN)
            .send()
            .await
            .unwrap();
        bytes += r.bytes().await.unwrap().len() as u64;
    }
    // Control requests are not API traffic.
    let control = format!("{}/_sim/traffic", h.base.trim_end_matches("/api2/json"));
    let t: serde_json::Value = h
        .client
        .get(&control)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let d = h.sim.traffic() - before;
    assert_eq!(d.requests, 3, "an error answer counts too");
    assert_eq!(d.response_bytes, bytes);
    assert_eq!(t["data"]["requests"], h.sim.traffic().requests);
}
