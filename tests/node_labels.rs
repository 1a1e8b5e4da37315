//! Reading a Node's topology labels from a (fake) Kubernetes API server.

use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use proxmox_csi::kube::{topology_labels, ApiServer, Token};

async fn node(
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<axum::Json<serde_json::Value>, StatusCode> {
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Bearer sa-token") {
        return Err(StatusCode::UNAUTHORIZED);
    }
    match name.as_str() {
        "worker-1" => Ok(axum::Json(serde_json::json!({
            "kind": "Node",
            "metadata": {"name": "worker-1", "labels": {
                "topology.kubernetes.io/region": "pve-a",
                "topology.kubernetes.io/zone": "pve1",
                "kubernetes.io/hostname": "worker-1"
            }}
        }))),
        "bare" => Ok(axum::Json(
            serde_json::json!({"kind": "Node", "metadata": {"name": "bare"}}),
        )),
        _ => Err(StatusCode::NOT_FOUND),
    }
}

async fn fake_api() -> String {
    let app = axum::Router::new().route("/api/v1/nodes/{name}", get(node));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    url
}

#[tokio::test]
async fn reads_region_and_zone_only() {
    let api = ApiServer::new(fake_api().await, Token::Static("sa-token".into()), None).unwrap();
    let labels = topology_labels(&api, "worker-1").await.unwrap();
    assert_eq!(labels.len(), 2, "{labels:?}");
    assert_eq!(labels["topology.kubernetes.io/region"], "pve-a");
    assert_eq!(labels["topology.kubernetes.io/zone"], "pve1");
    assert!(topology_labels(&api, "bare").await.unwrap().is_empty());
}

#[tokio::test]
async fn errors_name_the_request() {
    let base = fake_api().await;
    let api = ApiServer::new(base.clone(), Token::Static("sa-token".into()), None).unwrap();
    let e = topology_labels(&api, "ghost")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("/api/v1/nodes/ghost") && e.contains("404"),
        "{e}"
    );
    let api = ApiServer::new(base, Token::Static("wrong".into()), None).unwrap();
    let e = topology_labels(&api, "worker-1")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("401"), "{e}");
}

#[tokio::test]
async fn a_rotated_token_file_is_read_again() {
    // kubelet rewrites the projected token in place; the same ApiServer must use the new one.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "expired\n").unwrap();
    let api = ApiServer::new(fake_api().await, Token::File(file.clone()), None).unwrap();
    let e = topology_labels(&api, "worker-1")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("401"), "{e}");
    std::fs::write(&file, "sa-token\n").unwrap();
    let labels = topology_labels(&api, "worker-1").await.unwrap();
    assert_eq!(labels["topology.kubernetes.io/zone"], "pve1");
    std::fs::remove_file(&file).unwrap();
    let e = topology_labels(&api, "worker-1")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("service account token"), "{e}");
}
