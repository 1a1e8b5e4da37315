//! Prometheus metrics: CSI RPCs, Proxmox API requests and tasks, build info.
//!
//! Built on the `prometheus` crate rather than `metrics` + `metrics-exporter-prometheus`:
//! its text encoder is all `/metrics` needs, with no extra exporter HTTP stack next to axum.
//!
//! One registry per process ([`global`]): a process is one driver (controller, node or
//! both), and what it serves at `/metrics` is everything that process did. Tests that run
//! several servers in one process share it, so they compare counts before and after.
//! The recording points do not reach for the registry themselves: the gRPC layer records
//! through `grpc`'s tower layer, the PVE client through the [`PveMetrics`] observer it is
//! given (so `pve` does not depend on this layer).
//!
//! Recording is always on (a few atomic adds per request); `--metrics-address` only
//! decides whether the registry is served.

pub(crate) mod grpc;
pub mod http;
pub(crate) mod labels;
pub mod pve_up;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::sync::OnceLock;
use std::time::Duration;

/// CSI calls range from microseconds (probes) to minutes (a CreateVolume that waits on
/// a slow storage), so the buckets reach well past the sidecars' default timeouts.
const GRPC_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];
/// One PVE HTTP exchange: usually milliseconds, bounded by the client timeout.
const PVE_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Worker tasks (allocations, hot-plug) can take minutes on busy storage.
const TASK_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Every metric the driver exports, in one registry.
pub struct Metrics {
    pub registry: Registry,
    grpc_requests: IntCounterVec,
    grpc_duration: HistogramVec,
    pve_requests: IntCounterVec,
    pve_duration: HistogramVec,
    task_duration: HistogramVec,
    pve_up: IntGaugeVec,
}

impl Metrics {
    fn new() -> Metrics {
        let registry = Registry::new();
        let grpc_requests = IntCounterVec::new(
            Opts::new(
                "proxmox_csi_grpc_requests_total",
                "CSI gRPC calls handled, by method and gRPC status code.",
            ),
            &["method", "code"],
        )
        .expect("valid metric");
        let grpc_duration = HistogramVec::new(
            HistogramOpts::new(
                "proxmox_csi_grpc_request_duration_seconds",
                "Time to answer a CSI gRPC call.",
            )
            .buckets(GRPC_BUCKETS.to_vec()),
            &["method"],
        )
        .expect("valid metric");
        let pve_requests = IntCounterVec::new(
            Opts::new(
                "proxmox_csi_pve_requests_total",
                "Proxmox VE API requests, by HTTP method, path template and HTTP status (\"error\" when no response came).",
            ),
            &["method", "path_template", "status"],
        )
        .expect("valid metric");
        let pve_duration = HistogramVec::new(
            HistogramOpts::new(
                "proxmox_csi_pve_request_duration_seconds",
                "Time of one Proxmox VE API request, body included.",
            )
            .buckets(PVE_BUCKETS.to_vec()),
            &["method", "path_template"],
        )
        .expect("valid metric");
        let task_duration = HistogramVec::new(
            HistogramOpts::new(
                "proxmox_csi_pve_task_duration_seconds",
                "Time waited for a Proxmox VE worker task, by task type and result (ok, failed, timeout, error).",
            )
            .buckets(TASK_BUCKETS.to_vec()),
            &["type", "result"],
        )
        .expect("valid metric");
        let build_info = IntGaugeVec::new(
            Opts::new(
                "proxmox_csi_build_info",
                "Always 1; the version label tells which driver build is running.",
            ),
            &["version"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let pve_up = IntGaugeVec::new(
            Opts::new(
                "proxmox_csi_pve_up",
                "1 when the cluster's Proxmox VE API answered the controller's last GET /version, else 0.",
            ),
            &["region"],
        )
        .expect("valid metric");
        for c in [
            Box::new(grpc_requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(grpc_duration.clone()),
            Box::new(pve_requests.clone()),
            Box::new(pve_duration.clone()),
            Box::new(task_duration.clone()),
            Box::new(build_info),
            Box::new(pve_up.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            grpc_requests,
            grpc_duration,
            pve_requests,
            pve_duration,
            task_duration,
            pve_up,
        }
    }

    /// The text exposition format, as Prometheus scrapes it.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        // Encoding only fails on I/O errors, and a Vec does not have any.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// One answered CSI call. `code` is a tonic status code name such as `InvalidArgument`.
pub fn record_grpc(method: &str, code: &str, elapsed: Duration) {
    let m = global();
    m.grpc_requests.with_label_values(&[method, code]).inc();
    m.grpc_duration
        .with_label_values(&[method])
        .observe(elapsed.as_secs_f64());
}

/// The PVE client's [`crate::pve::Observer`] that records into [`global`].
pub struct PveMetrics;

impl crate::pve::Observer for PveMetrics {
    fn request(&self, method: &str, path: &str, status: Option<u16>, elapsed: Duration) {
        record_pve_request(method, path, status, elapsed);
    }
    fn task(&self, task_type: &str, result: &str, elapsed: Duration) {
        record_task(task_type, result, elapsed);
    }
}

/// One PVE HTTP exchange; `status` is `None` when the request failed before a response.
pub fn record_pve_request(method: &str, path: &str, status: Option<u16>, elapsed: Duration) {
    let m = global();
    let template = labels::pve_path_template(path);
    let status = status
        .map(|s| s.to_string())
        .unwrap_or_else(|| "error".into());
    m.pve_requests
        .with_label_values(&[method, &template, &status])
        .inc();
    m.pve_duration
        .with_label_values(&[method, &template])
        .observe(elapsed.as_secs_f64());
}

/// One waited-for worker task. `task_type` comes from the UPID (e.g. `qmconfig`, `imgdel`).
pub fn record_task(task_type: &str, result: &str, elapsed: Duration) {
    let task_type = labels::task_type(task_type);
    global()
        .task_duration
        .with_label_values(&[task_type, result])
        .observe(elapsed.as_secs_f64());
}

/// Whether the cluster of `region` answered its last reachability check.
pub fn set_pve_up(region: &str, up: bool) {
    global().pve_up.with_label_values(&[region]).set(up as i64);
}
