//! `proxmox-csi doctor` against the in-process simulator (config-only hot-plug, no root needed):
//! each kind of problem an admin can have before install shows up as the right check.

mod support;

use proxmox_csi::config::ConfigFile;
use proxmox_csi::doctor::{self, DoctorOptions, Report, Status};
use pve_sim::{HotplugMode, SimConfig, TokenConfig};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::*;

fn workers() -> DoctorOptions {
    DoctorOptions {
        node_ids: vec!["worker-1".into(), "worker-2".into()],
        ..Default::default()
    }
}

async fn doctor_with(tweak: impl FnOnce(&mut SimConfig), opts: DoctorOptions) -> (TestSim, Report) {
    let sim = start_sim(HotplugMode::None, tweak).await;
    let report = doctor::run(&cluster_config(&sim.url), &opts).await;
    (sim, report)
}

/// The check called `name`; fails the test with the whole report if absent.
fn check<'a>(report: &'a Report, name: &str) -> &'a doctor::Check {
    report
        .find(name)
        .unwrap_or_else(|| panic!("no check {name:?} in:\n{}", report.to_text()))
}

#[tokio::test]
async fn default_sim_passes_everything() {
    let (_sim, report) = doctor_with(|_| {}, workers()).await;
    let text = report.to_text();
    // The simulator speaks plain HTTP (allow_http: true), which the `tls` check warns about.
    assert!(
        report
            .checks
            .iter()
            .filter(|c| c.name != "tls")
            .all(|c| c.status == Status::Pass),
        "{text}"
    );
    assert_eq!(check(&report, "tls").status, Status::Warn, "{text}");
    assert_eq!(report.exit_code(), 0);
    for name in [
        "endpoint",
        "auth",
        "privileges /storage/local",
        "privileges /storage/shared",
        "privileges /vms/101",
        "privileges /vms/102",
        "storage local",
        "storage shared",
        "worker worker-1",
        "worker worker-2 hotplug",
        "worker worker-2 scsihw",
        "worker worker-1 slots",
        "privileges /vms",
    ] {
        check(&report, name);
    }
    assert!(check(&report, "version").detail.contains("8.4.1"), "{text}");
    assert!(
        check(&report, "storage shared")
            .detail
            .contains("shared, on pve1, pve2"),
        "{text}"
    );
    assert!(
        check(&report, "worker worker-1 slots")
            .detail
            .starts_with("30 of 31"),
        "{text}"
    );
    assert!(text.ends_with("0 failed: ready\n"), "{text}");
}

#[tokio::test]
async fn missing_privilege_fails_naming_privilege_and_path() {
    let tweak = |c: &mut SimConfig| {
        let acl = BTreeMap::from([
            (
                "/storage/local".to_string(),
                vec!["Datastore.AllocateSpace".to_string()],
            ),
            (
                "/vms".to_string(),
                vec!["VM.Audit".to_string(), "VM.Config.Disk".to_string()],
            ),
        ]);
        c.tokens = vec![TokenConfig {
            id: "csi@pve!csi".into(),
            secret: "sim-secret".into(),
            privs: Some(vec![]),
            acl,
            privsep: true,
        }];
    };
    let opts = DoctorOptions {
        storages: vec!["local".into()],
        ..workers()
    };
    let (_sim, report) = doctor_with(tweak, opts).await;
    let text = report.to_text();
    let storage = check(&report, "privileges /storage/local");
    assert_eq!(storage.status, Status::Fail, "{text}");
    assert!(
        storage.detail.contains("Datastore.Audit on /storage/local"),
        "{text}"
    );
    assert!(
        !storage.detail.contains("Datastore.AllocateSpace"),
        "{text}"
    );
    assert_eq!(
        check(&report, "privileges /vms/101").status,
        Status::Pass,
        "{text}"
    );
    // Holder VMs need more on /vms: creating them, snapshots, clones.
    let holders = check(&report, "privileges /vms");
    assert_eq!(holders.status, Status::Fail, "{text}");
    for p in ["VM.Allocate", "VM.Snapshot", "VM.Clone"] {
        assert!(holders.detail.contains(&format!("{p} on /vms")), "{text}");
    }
    // Without Datastore.Audit PVE hides the storage, so its own check fails too.
    assert!(
        check(&report, "storage local")
            .detail
            .contains("Datastore.Audit on /storage/local"),
        "{text}"
    );
    assert_eq!(report.failures().count(), 3, "{text}");
    assert_eq!(report.exit_code(), 1);
}

#[tokio::test]
async fn wrong_token_secret_is_an_auth_failure() {
    let sim = start_sim(HotplugMode::None, |_| {}).await;
    let mut cfg = cluster_config(&sim.url);
    cfg.clusters[0].token_secret = Some("wrong".into());
    let report = doctor::run(&cfg, &workers()).await;
    let text = report.to_text();
    assert_eq!(check(&report, "endpoint").status, Status::Pass, "{text}");
    let auth = check(&report, "auth");
    assert_eq!(auth.status, Status::Fail, "{text}");
    assert!(
        auth.detail.contains("credentials rejected (HTTP 401"),
        "{text}"
    );
    assert!(auth.detail.contains("token_secret"), "{text}");
    // Nothing further is tried: every later check would repeat the same 401.
    assert!(report.find("storage local").is_none(), "{text}");
    assert_eq!(report.exit_code(), 1);
}

#[tokio::test]
async fn wrong_password_is_an_auth_failure() {
    let sim = start_sim(HotplugMode::None, |_| {}).await;
    let mut cfg = cluster_config(&sim.url);
    let c = &mut cfg.clusters[0];
    c.token_id = None;
    c.token_secret = None;
    c.username = Some("root@pam".into());
    c.password = Some("nope".into());
    let report = doctor::run(&cfg, &DoctorOptions::default()).await;
    let auth = check(&report, "auth");
    assert_eq!(auth.status, Status::Fail, "{}", report.to_text());
    assert!(
        auth.detail.contains("user root@pam") && auth.detail.contains("password"),
        "{}",
        report.to_text()
    );
    // The right password passes with ticket auth.
    cfg.clusters[0].password = Some("sim".into());
    let report = doctor::run(&cfg, &DoctorOptions::default()).await;
    assert_eq!(report.exit_code(), 0, "{}", report.to_text());
}

#[tokio::test]
async fn unknown_storage_and_storage_without_images_fail() {
    let tweak = |c: &mut SimConfig| {
        c.storages.push(pve_sim::StorageConfig {
            id: "isos".into(),
            content: "iso,vztmpl".into(),
            ..Default::default()
        });
    };
    let opts = DoctorOptions {
        storages: vec!["nope".into(), "isos".into(), "local".into()],
        ..Default::default()
    };
    let (_sim, report) = doctor_with(tweak, opts).await;
    let text = report.to_text();
    let nope = check(&report, "storage nope");
    assert_eq!(nope.status, Status::Fail, "{text}");
    assert!(nope.detail.contains("does not exist"), "{text}");
    let isos = check(&report, "storage isos");
    assert_eq!(isos.status, Status::Fail, "{text}");
    assert!(isos.detail.contains("lacks images"), "{text}");
    assert_eq!(
        check(&report, "storage local").status,
        Status::Pass,
        "{text}"
    );
}

#[tokio::test]
async fn without_storage_flags_only_image_storages_are_checked() {
    let tweak = |c: &mut SimConfig| {
        c.storages.push(pve_sim::StorageConfig {
            id: "isos".into(),
            content: "iso".into(),
            ..Default::default()
        });
    };
    let (_sim, report) = doctor_with(tweak, DoctorOptions::default()).await;
    assert!(
        report.find("storage isos").is_none(),
        "{}",
        report.to_text()
    );
    assert!(report.find("storage local").is_some());
    assert!(
        report.find("privileges /vms").is_some(),
        "no workers named: the whole VM tree is checked"
    );
    assert_eq!(report.exit_code(), 0, "{}", report.to_text());
}

#[tokio::test]
async fn worker_without_disk_hotplug_fails() {
    let tweak = |c: &mut SimConfig| {
        let w1 = &mut c.vms[0].config;
        w1.insert("hotplug".into(), "network,usb".into());
        w1.remove("scsihw");
        c.vms[1].status = "stopped".into();
    };
    let (_sim, report) = doctor_with(tweak, workers()).await;
    let text = report.to_text();
    let hotplug = check(&report, "worker worker-1 hotplug");
    assert_eq!(hotplug.status, Status::Fail, "{text}");
    assert!(hotplug.detail.contains("qm set 101 --hotplug"), "{text}");
    // Unset scsihw is PVE's LSI controller: a warning, not a failure.
    let scsihw = check(&report, "worker worker-1 scsihw");
    assert_eq!(scsihw.status, Status::Warn, "{text}");
    assert!(scsihw.detail.starts_with("lsi"), "{text}");
    let stopped = check(&report, "worker worker-2");
    assert_eq!(stopped.status, Status::Fail, "{text}");
    assert!(stopped.detail.contains("stopped"), "{text}");
    assert_eq!(report.exit_code(), 1);
}

#[tokio::test]
async fn unknown_and_ambiguous_worker_names_fail() {
    let tweak = |c: &mut SimConfig| {
        c.vms[1].name = "worker-1".into();
        c.vms[1].config.insert("name".into(), "worker-1".into());
    };
    let opts = DoctorOptions {
        node_ids: vec!["worker-1".into(), "ghost".into()],
        ..Default::default()
    };
    let (_sim, report) = doctor_with(tweak, opts).await;
    let text = report.to_text();
    let dup = check(&report, "worker worker-1");
    assert_eq!(dup.status, Status::Fail, "{text}");
    assert!(dup.detail.contains("101, 102"), "{text}");
    assert!(
        check(&report, "worker ghost")
            .detail
            .contains("no VM has this name"),
        "{text}"
    );
}

#[tokio::test]
async fn unreachable_url_fails_quickly() {
    // Port 1 on loopback: nothing listens, the connection is refused at once.
    let cfg = cluster_config("http://127.0.0.1:1/api2/json");
    let start = Instant::now();
    let report = doctor::run(&cfg, &workers()).await;
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    let endpoint = check(&report, "endpoint");
    assert_eq!(endpoint.status, Status::Fail);
    assert!(
        endpoint.detail.contains("connection failed"),
        "{}",
        report.to_text()
    );
    // Only the plain-HTTP warning besides: nothing after a failed endpoint.
    assert_eq!(report.checks.len(), 2, "{}", report.to_text());
    assert_eq!(check(&report, "tls").status, Status::Warn);
}

#[tokio::test]
async fn every_cluster_is_checked() {
    let sim = start_sim(HotplugMode::None, |_| {}).await;
    let mut cfg: ConfigFile = cluster_config(&sim.url);
    let mut down = cfg.clusters[0].clone();
    down.region = "down".into();
    down.url = "http://127.0.0.1:1/api2/json".into();
    cfg.clusters.push(down);
    let report = doctor::run(&cfg, &DoctorOptions::default()).await;
    assert_eq!(
        report
            .checks
            .iter()
            .filter(|c| c.cluster == "sim" && c.status == Status::Fail)
            .count(),
        0
    );
    assert!(report
        .checks
        .iter()
        .any(|c| c.cluster == "down" && c.status == Status::Fail));
    assert_eq!(report.exit_code(), 1);
}

/// The binary: text or JSON on stdout, exit code 0 without failures and 1 with one.
#[tokio::test]
async fn cli_exit_codes_and_json() {
    let sim = start_sim(HotplugMode::None, |_| {}).await;
    let config = sim.dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!("clusters:\n  - region: sim\n    url: {}\n    token_id: \"csi@pve!csi\"\n    token_secret: sim-secret\n    allow_http: true\n", sim.url),
    )
    .unwrap();
    // tokio's Command: the simulator runs on this test's runtime and must keep serving meanwhile.
    let run = |extra: &[&str]| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_proxmox-csi"));
        cmd.arg("doctor").arg("--config").arg(&config).args(extra);
        cmd.output()
    };
    let ok = run(&["--node-id", "worker-1"]).await.unwrap();
    let text = String::from_utf8_lossy(&ok.stdout).to_string();
    assert_eq!(ok.status.code(), Some(0), "{text}");
    assert!(
        text.lines().all(|l| l.starts_with("PASS  ")
            || l.starts_with("WARN  sim/tls ")
            || l.contains("passed")),
        "{text}"
    );
    assert!(
        text.contains("WARN  sim/tls ") && text.contains("plain HTTP in use"),
        "{text}"
    );

    let bad = run(&["--storage", "nope", "--output", "json"])
        .await
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(json["ok"], false);
    assert_eq!(json["summary"]["fail"], 1);
    let failed: Vec<&serde_json::Value> = json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "FAIL")
        .collect();
    assert_eq!(failed[0]["name"], "storage nope");
    assert_eq!(failed[0]["cluster"], "sim");
}

/// Plain HTTP and unverified TLS work, but never silently: a WARN line naming the cluster.
#[tokio::test]
async fn plain_http_and_insecure_tls_warn_naming_the_cluster() {
    let (_sim, report) = doctor_with(|_| {}, DoctorOptions::default()).await;
    let text = report.to_text();
    let tls = check(&report, "tls");
    assert_eq!(tls.status, Status::Warn, "{text}");
    assert!(
        tls.detail.contains("cluster sim") && tls.detail.contains("plain HTTP in use"),
        "{text}"
    );
    assert!(tls.detail.contains("allow_http: true"), "{text}");
    assert!(text.contains("WARN  sim/tls"), "{text}");
    assert!(
        check(&report, "endpoint")
            .detail
            .contains("plain HTTP (no TLS)"),
        "{text}"
    );
    assert_eq!(report.exit_code(), 0, "a warning does not block: {text}");

    // insecure: true on https: warned even when the endpoint cannot be reached.
    let mut cfg = cluster_config("https://127.0.0.1:1/api2/json");
    cfg.clusters[0].region = "lab".into();
    cfg.clusters[0].insecure = true;
    let report = doctor::run(&cfg, &DoctorOptions::default()).await;
    let text = report.to_text();
    let tls = check(&report, "tls");
    assert_eq!(tls.status, Status::Warn, "{text}");
    assert!(
        tls.detail.contains("cluster lab")
            && tls
                .detail
                .contains("TLS certificate NOT verified (insecure: true)"),
        "{text}"
    );
    assert!(text.contains("WARN  lab/tls"), "{text}");

    // Verified https: no tls line at all.
    cfg.clusters[0].insecure = false;
    let report = doctor::run(&cfg, &DoctorOptions::default()).await;
    assert!(report.find("tls").is_none(), "{}", report.to_text());
}

/// A plain http:// url without allow_http is refused before anything is sent.
#[tokio::test]
async fn plain_http_without_allow_http_fails_naming_the_key() {
    let sim = start_sim(HotplugMode::None, |_| {}).await;
    let mut cfg = cluster_config(&sim.url);
    cfg.clusters[0].allow_http = false;
    let report = doctor::run(&cfg, &DoctorOptions::default()).await;
    let endpoint = check(&report, "endpoint");
    assert_eq!(endpoint.status, Status::Fail, "{}", report.to_text());
    assert!(
        endpoint.detail.contains("allow_http: true") && endpoint.detail.contains("unencrypted"),
        "{}",
        report.to_text()
    );
    assert_eq!(report.checks.len(), 1, "{}", report.to_text());
}

/// An https endpoint whose certificate no trusted CA signed: the report must say so and point
/// at `ca_file`. Needs the `openssl` tool for the TLS server; skipped where it is missing.
#[tokio::test]
async fn untrusted_certificate_suggests_ca_file() {
    if std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no openssl binary");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let made = tokio::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
        ])
        .args([
            "-addext",
            "basicConstraints=critical,CA:FALSE",
            "-addext",
            "subjectAltName=DNS:localhost",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .await
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    // A free port: bound and released; s_server takes it a moment later.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = tokio::process::Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept", &port.to_string()])
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "openssl s_server did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut cfg = cluster_config(&format!("https://localhost:{port}/api2/json"));
    let report = doctor::run(&cfg, &DoctorOptions::default()).await;
    let endpoint = check(&report, "endpoint");
    assert_eq!(endpoint.status, Status::Fail);
    assert!(
        endpoint.detail.contains("certificate not trusted"),
        "{}",
        report.to_text()
    );
    assert!(endpoint.detail.contains("ca_file"), "{}", report.to_text());

    // Trusting the certificate gets past TLS; s_server is no PVE, which the next steps notice.
    cfg.clusters[0].ca_file = Some(cert.clone());
    let report = doctor::run(&cfg, &DoctorOptions::default()).await;
    // Wait for it to be gone: a dying server still accepts for a moment, and
    // the restarted one could not bind the port.
    let mut server = server;
    server.kill().await.unwrap();
    let text = report.to_text();
    assert!(
        check(&report, "endpoint").detail.contains("TLS verified"),
        "{text}"
    );
    assert!(
        check(&report, "auth")
            .detail
            .contains("not the Proxmox VE API"),
        "{text}"
    );
    assert!(report.find("tls").is_none(), "{text}");

    // insecure: true gets past the untrusted certificate, and says TLS is not verified.
    cfg.clusters[0].ca_file = None;
    cfg.clusters[0].insecure = true;
    let server = tokio::process::Command::new("openssl")
        .args(["s_server", "-quiet", "-www", "-accept", &port.to_string()])
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            Instant::now() < deadline,
            "openssl s_server did not restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let report = doctor::run(&cfg, &DoctorOptions::default()).await;
    drop(server);
    let text = report.to_text();
    assert!(
        check(&report, "endpoint")
            .detail
            .contains("TLS NOT verified (insecure: true)"),
        "{text}"
    );
    assert_eq!(check(&report, "tls").status, Status::Warn, "{text}");
}
