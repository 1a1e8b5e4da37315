//! Metrics end to end: the CSI server on a unix socket with the metrics layer, the
//! controller against the simulator, and `/metrics` scraped over HTTP.

mod support;

use proxmox_csi::controller::service::ControllerService;
use proxmox_csi::csi::volume_capability::{access_mode::Mode, AccessMode, AccessType, MountVolume};
use proxmox_csi::csi::*;
use proxmox_csi::identity::{IdentityService, DRIVER_NAME};
use proxmox_csi::node::NodeService;
use pve_sim::HotplugMode;
use std::collections::HashMap;
use std::sync::Arc;
use support::*;

fn create_req(name: &str) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: 1 << 30,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![VolumeCapability {
            access_mode: Some(AccessMode {
                mode: Mode::SingleNodeWriter as i32,
            }),
            access_type: Some(AccessType::Mount(MountVolume {
                fs_type: "ext4".into(),
                ..Default::default()
            })),
        }],
        parameters: HashMap::from([("storage".into(), "shared".into())]),
        ..Default::default()
    }
}

/// The value of the sample with exactly this name and these labels (in exposition order).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

#[tokio::test]
async fn csi_calls_and_pve_requests_are_scraped() {
    let sim = start_sim(HotplugMode::None, |_| {}).await;
    let controller = Arc::new(controller(&sim.url));

    let socket = sim.dir.path().join("csi.sock");
    let listener = proxmox_csi::server::bind(&socket.to_string_lossy()).unwrap();
    let identity = IdentityService {
        driver_name: DRIVER_NAME.into(),
        controller: Some(controller.clone()),
    };
    let csi = tokio::spawn(proxmox_csi::server::serve(
        listener,
        identity,
        Some(ControllerService { inner: controller }),
        None::<NodeService>,
        std::future::pending(),
    ));
    let metrics_listener = proxmox_csi::metrics::http::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let metrics_addr = metrics_listener.local_addr().unwrap();
    let metrics = tokio::spawn(proxmox_csi::metrics::http::serve(metrics_listener));

    let mut c = proxmox_csi::csi_client::connect(&socket).await.unwrap();
    let vol = c
        .controller
        .create_volume(create_req("pvc-metrics"))
        .await
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    let err = c
        .controller
        .create_volume(create_req(""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    // Freeing the disk waits for PVE's imgdel task.
    c.controller
        .delete_volume(DeleteVolumeRequest {
            volume_id: vol.volume_id,
            ..Default::default()
        })
        .await
        .unwrap();

    let http = reqwest::Client::new();
    let resp = http
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = resp.text().await.unwrap();

    // Other tests in this binary share the process-wide registry, hence ">=".
    let ok = sample(
        &text,
        r#"proxmox_csi_grpc_requests_total{code="Ok",method="CreateVolume"}"#,
    );
    assert!(ok >= Some(1.0), "no successful CreateVolume in:\n{text}");
    let invalid = sample(
        &text,
        r#"proxmox_csi_grpc_requests_total{code="InvalidArgument",method="CreateVolume"}"#,
    );
    assert!(
        invalid >= Some(1.0),
        "no InvalidArgument CreateVolume in:\n{text}"
    );
    assert!(
        sample(
            &text,
            r#"proxmox_csi_grpc_requests_total{code="Ok",method="DeleteVolume"}"#
        ) >= Some(1.0)
    );
    assert!(
        sample(
            &text,
            r#"proxmox_csi_grpc_request_duration_seconds_count{method="CreateVolume"}"#
        ) >= Some(2.0),
        "{text}"
    );

    // PVE requests are labelled by template, never by ids.
    let pve: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("proxmox_csi_pve_requests_total{"))
        .collect();
    assert!(
        pve.iter().any(|l| l.contains(r#"method="POST""#)
            && l.contains(r#"path_template="/nodes/{node}/storage/{storage}/content""#)
            && l.contains(r#"status="200""#)),
        "no disk allocation counted in:\n{text}"
    );
    for l in &pve {
        assert!(
            !l.contains("pvc-metrics") && !l.contains("UPID") && !l.contains("pve1"),
            "id in a label: {l}"
        );
    }
    assert!(text.contains(r#"proxmox_csi_pve_request_duration_seconds_count{method="GET",path_template="/cluster/resources"}"#));
    assert!(
        text.lines().any(
            |l| l.starts_with("proxmox_csi_pve_task_duration_seconds_count{")
                && l.contains(r#"result="ok""#)
        ),
        "no task timing in:\n{text}"
    );
    assert_eq!(
        sample(
            &text,
            &format!(
                r#"proxmox_csi_build_info{{version="{}"}}"#,
                env!("CARGO_PKG_VERSION")
            )
        ),
        Some(1.0)
    );

    let health = http
        .get(format!("http://{metrics_addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);

    csi.abort();
    metrics.abort();
}

/// A "PVE" that accepts connections and never answers; counts the connections.
async fn silent_pve() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api2/json", listener.local_addr().unwrap());
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let s = seen.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            s.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(conn);
        }
    });
    (url, seen)
}

fn one_cluster(region: &str, url: &str, timeout_seconds: u64) -> proxmox_csi::config::ConfigFile {
    let mut cfg = cluster_config(url);
    cfg.clusters[0].region = region.into();
    cfg.clusters[0].timeout_seconds = timeout_seconds;
    cfg
}

/// Probe answers for the process: ready while PVE is unreachable, without sending it anything.
#[tokio::test]
async fn probe_is_ready_without_asking_pve() {
    let (url, seen) = silent_pve().await;
    let controller = Arc::new(
        proxmox_csi::controller::Controller::new(
            &one_cluster("probe-down", &url, 2),
            Default::default(),
        )
        .unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("csi.sock");
    let listener = proxmox_csi::server::bind(&socket.to_string_lossy()).unwrap();
    let identity = IdentityService {
        driver_name: DRIVER_NAME.into(),
        controller: Some(controller.clone()),
    };
    let csi = tokio::spawn(proxmox_csi::server::serve(
        listener,
        identity,
        Some(ControllerService { inner: controller }),
        None::<NodeService>,
        std::future::pending(),
    ));
    let mut c = proxmox_csi::csi_client::connect(&socket).await.unwrap();
    let start = std::time::Instant::now();
    let ready = c
        .identity
        .probe(ProbeRequest {})
        .await
        .unwrap()
        .into_inner()
        .ready;
    assert_eq!(ready, Some(true));
    assert!(
        start.elapsed() < std::time::Duration::from_secs(1),
        "took {:?}",
        start.elapsed()
    );
    // And with nothing listening at all (a PVE that is down).
    let down = Arc::new(
        proxmox_csi::controller::Controller::new(
            &one_cluster("probe-refused", "http://127.0.0.1:1/api2/json", 2),
            Default::default(),
        )
        .unwrap(),
    );
    let identity = IdentityService {
        driver_name: DRIVER_NAME.into(),
        controller: Some(down),
    };
    let r = proxmox_csi::csi::identity_server::Identity::probe(
        &identity,
        tonic::Request::new(ProbeRequest {}),
    )
    .await
    .unwrap();
    assert_eq!(r.into_inner().ready, Some(true));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(
        seen.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "Probe sent a request to PVE"
    );
    csi.abort();
}

/// `proxmox_csi_pve_up{region}`: 1 while /version answers, 0 when it does not, back to 1 after.
#[tokio::test]
async fn pve_up_gauge_follows_reachability() {
    use proxmox_csi::metrics::pve_up::PveUp;
    let sim = start_sim(HotplugMode::None, |_| {}).await;
    let up = proxmox_csi::controller::Controller::new(
        &one_cluster("gauge-up", &sim.url, 2),
        Default::default(),
    )
    .unwrap();
    let mut state = PveUp::default();
    assert_eq!(state.check(&up).await, vec![("gauge-up".to_string(), true)]);
    let text = proxmox_csi::metrics::global().render();
    assert_eq!(
        sample(&text, r#"proxmox_csi_pve_up{region="gauge-up"}"#),
        Some(1.0),
        "{text}"
    );

    // A cluster that does not answer within its timeout, and one that refuses connections.
    let (url, _) = silent_pve().await;
    let mut cfg = one_cluster("gauge-silent", &url, 1);
    cfg.clusters
        .extend(one_cluster("gauge-refused", "http://127.0.0.1:1/api2/json", 1).clusters);
    let down = proxmox_csi::controller::Controller::new(&cfg, Default::default()).unwrap();
    let mut state = PveUp::default();
    let got = state.check(&down).await;
    assert_eq!(
        got,
        vec![
            ("gauge-refused".to_string(), false),
            ("gauge-silent".to_string(), false)
        ]
    );
    let text = proxmox_csi::metrics::global().render();
    assert_eq!(
        sample(&text, r#"proxmox_csi_pve_up{region="gauge-silent"}"#),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"proxmox_csi_pve_up{region="gauge-refused"}"#),
        Some(0.0),
        "{text}"
    );
    assert!(text.contains("# TYPE proxmox_csi_pve_up gauge"), "{text}");

    // Same region, PVE back: the gauge returns to 1.
    let back = proxmox_csi::controller::Controller::new(
        &one_cluster("gauge-silent", &sim.url, 2),
        Default::default(),
    )
    .unwrap();
    assert_eq!(
        state.check(&back).await,
        vec![("gauge-silent".to_string(), true)]
    );
    let text = proxmox_csi::metrics::global().render();
    assert_eq!(
        sample(&text, r#"proxmox_csi_pve_up{region="gauge-silent"}"#),
        Some(1.0),
        "{text}"
    );
}
