//! kubelet's plugin registration as kubelet's plugin watcher drives it: a
//! gRPC client on the registration socket asks GetInfo and reports the
//! outcome; the socket disappears when the plugin stops.

use hyper_util::rt::TokioIo;
use proxmox_csi::pluginregistration::registration_client::RegistrationClient;
use proxmox_csi::pluginregistration::{InfoRequest, RegistrationStatus};
use proxmox_csi::registration::{self, Outcome, Registrar, RegistrationService};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

async fn dial(sock: &Path) -> RegistrationClient<Channel> {
    let path = sock.to_path_buf();
    // The URI is required by the API but unused: the connector dials the socket.
    let channel = Endpoint::from_static("http://[::1]:50051")
        .connect_with_connector(tower::service_fn(move |_| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
        .expect("dial registration socket");
    RegistrationClient::new(channel)
}

#[tokio::test]
async fn get_info_and_status_over_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(registration::registry_dir(dir.path())).unwrap();
    let sock = registration::socket_path(dir.path(), "csi.example.dev");
    // A stale socket file of an earlier process is replaced.
    std::fs::write(&sock, b"").unwrap();
    let svc = RegistrationService::new(
        "csi.example.dev",
        "/var/lib/kubelet/plugins/csi.example.dev/csi.sock",
    )
    .unwrap();
    let registrar = Registrar::bind(&sock).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(registrar.serve(svc.clone(), async {
        let _ = stop_rx.await;
    }));

    let mut client = dial(&sock).await;
    let info = client.get_info(InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.r#type, "CSIPlugin");
    assert_eq!(info.name, "csi.example.dev");
    assert_eq!(
        info.endpoint,
        "/var/lib/kubelet/plugins/csi.example.dev/csi.sock"
    );
    assert_eq!(info.supported_versions, vec!["1.0.0".to_string()]);

    assert_eq!(svc.outcome(), None);
    client
        .notify_registration_status(RegistrationStatus {
            plugin_registered: false,
            error: "version 0.3 not supported".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        svc.outcome(),
        Some(Outcome::Failed("version 0.3 not supported".into()))
    );
    client
        .notify_registration_status(RegistrationStatus {
            plugin_registered: true,
            error: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(svc.outcome(), Some(Outcome::Registered));

    drop(client);
    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server stops")
        .unwrap()
        .unwrap();
    assert!(!sock.exists(), "socket removed on shutdown");
}

#[test]
fn bind_without_the_registry_dir_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let sock = registration::socket_path(dir.path(), "d");
    let err = Registrar::bind(&sock)
        .err()
        .expect("no plugins_registry dir");
    assert!(err.to_string().contains("plugins_registry"), "{err}");
}

fn wait_for(path: &Path, present: bool) -> bool {
    for _ in 0..200 {
        if path.exists() == present {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// The binary: `proxmox-csi node --kubelet-registration` serves the socket
/// where kubelet looks, reports the CSI socket path kubelet is to dial, and
/// removes the registration socket on SIGTERM.
#[tokio::test]
async fn node_binary_registers_and_cleans_up() {
    let dir = tempfile::tempdir().unwrap();
    let kubelet = dir.path().join("kubelet");
    std::fs::create_dir_all(registration::registry_dir(&kubelet)).unwrap();
    let csi = dir.path().join("csi").join("csi.sock");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_proxmox-csi"))
        .args([
            "node",
            "--node-id",
            "worker-1",
            "--driver-name",
            "csi.example.dev",
        ])
        .arg(format!("--endpoint=unix://{}", csi.display()))
        .arg(format!("--kubelet-dir={}", kubelet.display()))
        .arg("--kubelet-registration")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let sock: PathBuf = registration::socket_path(&kubelet, "csi.example.dev");
    assert!(
        wait_for(&sock, true),
        "registration socket {} appears",
        sock.display()
    );
    assert!(
        csi.exists(),
        "CSI socket listens before registration is offered"
    );

    let mut client = dial(&sock).await;
    let info = client.get_info(InfoRequest {}).await.unwrap().into_inner();
    assert_eq!(info.name, "csi.example.dev");
    assert_eq!(
        PathBuf::from(&info.endpoint),
        kubelet.join("plugins/csi.example.dev/csi.sock"),
        "default endpoint is the kubelet's view of the plugin dir"
    );
    drop(client);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    // Waited for off the runtime, which must keep running the client's connection task.
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    assert!(!sock.exists(), "registration socket removed on shutdown");
}

#[test]
fn registration_path_needs_registration() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_proxmox-csi"))
        .args([
            "node",
            "--node-id",
            "n",
            "--kubelet-registration-path",
            "/x/csi.sock",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--kubelet-registration"));
}
