//! Metrics end to end: the CSI server on a unix socket with the metrics layer, the
//! controller against the simulator, and `/metrics` scraped over HTTP.

mod support;

use proxmox_csi::controller::service::ControllerService;
use proxmox_csi::csi::volume_capability::{access_mode::Mode, AccessMode, AccessType, MountVolume};
use proxmox_csi::csi::*;
use proxmox_csi::identity::{IdentityService, DRIVER_NAME};
use proxmox_csi::node::NodeService;
use proxmox_csi::sim::HotplugMode;
use std::collections::HashMap;
use std::sync::Arc;
use support::*;

fn create_req(name: &str) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange { required_bytes: 1 << 30, limit_bytes: 0 }),
        volume_capabilities: vec![VolumeCapability {
            access_mode: Some(AccessMode { mode: Mode::SingleNodeWriter as i32 }),
            access_type: Some(AccessType::Mount(MountVolume { fs_type: "ext4".into(), ..Default::default() })),
        }],
        parameters: HashMap::from([("storage".into(), "shared".into())]),
        ..Default::default()
    }
}

/// The value of the sample with exactly this name and these labels (in exposition order).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

#[tokio::test]
async fn csi_calls_and_pve_requests_are_scraped() {
    let sim = start_sim(HotplugMode::None, |_| {}).await;
    let controller = Arc::new(controller(&sim.url));

    let socket = sim.dir.path().join("csi.sock");
    let listener = proxmox_csi::server::bind(&socket.to_string_lossy()).unwrap();
    let identity = IdentityService { driver_name: DRIVER_NAME.into(), controller: Some(controller.clone()) };
    let csi = tokio::spawn(proxmox_csi::server::serve(
        listener,
        identity,
        Some(ControllerService { inner: controller }),
        None::<NodeService>,
        std::future::pending(),
    ));
    let metrics_listener = proxmox_csi::metrics::http::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let metrics_addr = metrics_listener.local_addr().unwrap();
    let metrics = tokio::spawn(proxmox_csi::metrics::http::serve(metrics_listener));

    let mut c = proxmox_csi::csi_client::connect(&socket).await.unwrap();
    let vol = c.controller.create_volume(create_req("pvc-metrics")).await.unwrap().into_inner().volume.unwrap();
    let err = c.controller.create_volume(create_req("")).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    // Freeing the disk waits for PVE's imgdel task.
    c.controller.delete_volume(DeleteVolumeRequest { volume_id: vol.volume_id, ..Default::default() }).await.unwrap();

    let http = reqwest::Client::new();
    let resp = http.get(format!("http://{metrics_addr}/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    let text = resp.text().await.unwrap();

    // Other tests in this binary share the process-wide registry, hence ">=".
    let ok = sample(&text, r#"proxmox_csi_grpc_requests_total{code="Ok",method="CreateVolume"}"#);
    assert!(ok >= Some(1.0), "no successful CreateVolume in:\n{text}");
    let invalid = sample(&text, r#"proxmox_csi_grpc_requests_total{code="InvalidArgument",method="CreateVolume"}"#);
    assert!(invalid >= Some(1.0), "no InvalidArgument CreateVolume in:\n{text}");
    assert!(sample(&text, r#"proxmox_csi_grpc_requests_total{code="Ok",method="DeleteVolume"}"#) >= Some(1.0));
    assert!(
        sample(&text, r#"proxmox_csi_grpc_request_duration_seconds_count{method="CreateVolume"}"#) >= Some(2.0),
        "{text}"
    );

    // PVE requests are labelled by template, never by ids.
    let pve: Vec<&str> = text.lines().filter(|l| l.starts_with("proxmox_csi_pve_requests_total{")).collect();
    assert!(
        pve.iter().any(|l| l.contains(r#"method="POST""#)
            && l.contains(r#"path_template="/nodes/{node}/storage/{storage}/content""#)
            && l.contains(r#"status="200""#)),
        "no disk allocation counted in:\n{text}"
    );
    for l in &pve {
        assert!(!l.contains("pvc-metrics") && !l.contains("UPID") && !l.contains("pve1"), "id in a label: {l}");
    }
    assert!(text.contains(r#"proxmox_csi_pve_request_duration_seconds_count{method="GET",path_template="/cluster/resources"}"#));
    assert!(
        text.lines().any(|l| l.starts_with("proxmox_csi_pve_task_duration_seconds_count{") && l.contains(r#"result="ok""#)),
        "no task timing in:\n{text}"
    );
    assert_eq!(
        sample(&text, &format!(r#"proxmox_csi_build_info{{version="{}"}}"#, env!("CARGO_PKG_VERSION"))),
        Some(1.0)
    );

    let health = http.get(format!("http://{metrics_addr}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);

    csi.abort();
    metrics.abort();
}
