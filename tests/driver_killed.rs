//! The driver process is killed (SIGKILL) in the middle of CreateVolume while
//! PVE keeps working on its task. The restarted driver, asked again as a CO
//! would, must end with exactly one volume and nothing leaked.

mod support;

use proxmox_csi::csi::volume_capability::{access_mode::Mode, AccessMode, AccessType, BlockVolume};
use proxmox_csi::csi::*;
use proxmox_csi::csi_client::connect;
use pve_sim::HotplugMode;
use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use support::*;

/// Kills the driver even when an assertion fails first.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_driver(dir: &Path, url: &str) -> Driver {
    let cfg = dir.join("config.yaml");
    std::fs::write(
        &cfg,
        format!("clusters:\n  - region: sim\n    url: {url}\n    token_id: \"csi@pve!csi\"\n    token_secret: sim-secret\n    allow_http: true\n"),
    )
    .unwrap();
    Command::new(env!("CARGO_BIN_EXE_proxmox-csi"))
        .args(["controller", "--endpoint"])
        .arg(format!("unix://{}", dir.join("csi.sock").display()))
        .arg("--config")
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .spawn()
        .map(Driver)
        .unwrap()
}

async fn wait_for_socket(sock: &Path) {
    let start = Instant::now();
    while !sock.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "driver did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn request() -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: "pvc-0f8e2c4a-1b3d-4e5f-8a9b-0c1d2e3f4a5b".into(),
        capacity_range: Some(CapacityRange {
            required_bytes: 64 << 20,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![VolumeCapability {
            access_mode: Some(AccessMode {
                mode: Mode::SingleNodeWriter as i32,
            }),
            access_type: Some(AccessType::Block(BlockVolume {})),
        }],
        parameters: HashMap::from([("storage".into(), "local-lvm".into())]),
        ..Default::default()
    }
}

#[tokio::test]
async fn create_survives_a_killed_driver() {
    // Every PVE task takes 800 ms, so the kill lands while one runs.
    let t = start_sim(HotplugMode::None, |c| c.task_ms = 800).await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("csi.sock");
    let driver = start_driver(dir.path(), &t.url);
    wait_for_socket(&sock).await;
    let mut clients = connect(&sock).await.unwrap();
    let call = tokio::spawn(async move { clients.controller.create_volume(request()).await });

    // Kill as soon as PVE has started on the holder VM: asked afresh each
    // time, past the client's shared listing view.
    let cluster = controller_with(&t.url, |o| o.resources_ttl = Duration::ZERO);
    let start = Instant::now();
    loop {
        let vms = cluster.cluster("sim").unwrap().client.vms().await.unwrap();
        if vms.iter().any(|v| v.vmid >= 100_000) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no holder VM appeared"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(driver); // SIGKILL, mid-call
    assert!(call.await.unwrap().is_err(), "the CO saw the call fail");

    // The CO retries against the restarted driver until it succeeds.
    let _ = std::fs::remove_file(&sock);
    let _driver = start_driver(dir.path(), &t.url);
    wait_for_socket(&sock).await;
    let mut clients = connect(&sock).await.unwrap();
    let start = Instant::now();
    let volume = loop {
        match clients.controller.create_volume(request()).await {
            Ok(r) => break r.into_inner().volume.unwrap(),
            // Aborted while PVE still finishes the killed call's task.
            Err(s)
                if s.code() == tonic::Code::Aborted
                    && start.elapsed() < Duration::from_secs(30) =>
            {
                tokio::time::sleep(Duration::from_millis(300)).await
            }
            Err(s) => panic!("retry failed: {s:?}"),
        }
    };
    assert_eq!(volume.capacity_bytes, 64 << 20);

    let c = cluster.cluster("sim").unwrap();
    let holders = c.holders().await.unwrap();
    assert_eq!(holders.len(), 1, "one holder, no leftover: {holders:?}");
    let disks = c
        .client
        .storage_content("pve1", "local-lvm", None)
        .await
        .unwrap();
    let pve2 = c
        .client
        .storage_content("pve2", "local-lvm", None)
        .await
        .unwrap();
    assert_eq!(
        disks.len() + pve2.len(),
        1,
        "one disk, no leftover: {disks:?} {pve2:?}"
    );

    clients
        .controller
        .delete_volume(DeleteVolumeRequest {
            volume_id: volume.volume_id,
            secrets: Default::default(),
        })
        .await
        .unwrap();
    assert!(c.holders().await.unwrap().is_empty());
}
