//! Shared set-up for integration tests: an in-process simulator and a controller wired to it.
#![allow(dead_code)]

use proxmox_csi::config::{ClusterConfig, ConfigFile};
use proxmox_csi::controller::{Controller, ControllerOptions};
use pve_sim::{HotplugMode, Sim, SimConfig};
use std::time::Duration;

pub struct TestSim {
    pub sim: Sim,
    pub url: String,
    pub dir: tempfile::TempDir,
}

impl Drop for TestSim {
    fn drop(&mut self) {
        // Loop devices outlive the process otherwise.
        self.sim.detach_all();
    }
}

pub async fn start_sim(hotplug: HotplugMode, tweak: impl FnOnce(&mut SimConfig)) -> TestSim {
    let dir = tempfile::Builder::new()
        .prefix("proxmox-csi-test.")
        .tempdir()
        .unwrap();
    let mut cfg = SimConfig::default_for(dir.path().join("sim"));
    cfg.hotplug = hotplug;
    cfg.lock_timeout_ms = 300;
    tweak(&mut cfg);
    let sim = Sim::new(cfg).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api2/json", listener.local_addr().unwrap());
    let s = sim.clone();
    tokio::spawn(async move { s.serve(listener).await });
    TestSim { sim, url, dir }
}

pub fn cluster_config(url: &str) -> ConfigFile {
    ConfigFile {
        clusters: vec![ClusterConfig {
            region: "sim".into(),
            url: url.into(),
            token_id: Some("csi@pve!csi".into()),
            token_secret: Some("sim-secret".into()),
            username: None,
            password: None,
            insecure: false,
            ca_file: None,
            // The simulator speaks plain HTTP on loopback.
            allow_http: true,
            timeout_seconds: 10,
            pool: None,
            max_connections: proxmox_csi::pve::DEFAULT_MAX_CONNECTIONS,
        }],
    }
}

pub fn controller(url: &str) -> Controller {
    controller_with(url, |_| {})
}

pub fn controller_with(url: &str, tweak: impl FnOnce(&mut ControllerOptions)) -> Controller {
    let mut opts = ControllerOptions {
        task_timeout: Duration::from_secs(10),
        config_retry_delay: Duration::from_millis(50),
        ..Default::default()
    };
    tweak(&mut opts);
    Controller::new(&cluster_config(url), opts).unwrap()
}

/// The capability most tests ask for: an ext4 mount, single-node writer.
pub fn ext4_writer() -> proxmox_csi::csi::VolumeCapability {
    use proxmox_csi::csi::volume_capability::{access_mode::Mode, AccessMode, AccessType};
    proxmox_csi::csi::VolumeCapability {
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Mount(
            proxmox_csi::csi::volume_capability::MountVolume {
                fs_type: "ext4".into(),
                ..Default::default()
            },
        )),
    }
}

/// A raw block volume, single-node writer.
pub fn block_writer() -> proxmox_csi::csi::VolumeCapability {
    use proxmox_csi::csi::volume_capability::{access_mode::Mode, AccessMode, AccessType};
    proxmox_csi::csi::VolumeCapability {
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Block(
            proxmox_csi::csi::volume_capability::BlockVolume {},
        )),
    }
}
