//! "Simulator + driver on a socket": the set-up `sandbox` and `bench` share.
//! The simulator's default layout (cluster `sim`, nodes pve1+pve2, worker VM
//! `worker-1` = vmid 101 on pve1) and the driver serving controller and node
//! (as worker-1) on one unix socket, reached through the real gRPC client.

use crate::config::{ClusterConfig, ConfigFile};
use crate::controller::service::ControllerService;
use crate::controller::{Controller, ControllerOptions};
use crate::csi::volume_capability::{access_mode::Mode, AccessMode, AccessType, MountVolume};
use crate::csi::{ListVolumesRequest, Topology, VolumeCapability};
use crate::csi_client::{connect, CsiClients};
use crate::identity::{IdentityService, DRIVER_NAME};
use crate::node::config::NodeConfig;
use crate::node::service::NodeService;
use crate::volume_id::{TOPOLOGY_REGION, TOPOLOGY_ZONE};
use pve_sim::{Sim, SimConfig};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub(crate) const TOKEN_ID: &str = "csi@pve!csi";
const TOKEN_SECRET: &str = "sim-secret";
const REGION: &str = "sim";
pub(crate) const WORKER: &str = "worker-1";
pub(crate) const WORKER_VMID: u32 = 101;
const WORKER_NODE: &str = "pve1";

/// Start the simulator on a free local port; returns it and its API base URL.
pub(crate) async fn start_sim(cfg: SimConfig) -> anyhow::Result<(Sim, String)> {
    let sim = Sim::new(cfg)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let s = sim.clone();
    tokio::spawn(async move {
        if let Err(e) = s.serve(listener).await {
            eprintln!("simulator stopped: {e:#}");
        }
    });
    Ok((sim, format!("http://{addr}/api2/json")))
}

/// Serve controller + node (as VM worker-1) on `socket` against the simulator
/// at `base_url`, and connect the gRPC client to it. `kubelet_dir` stands in
/// for the kubelet's root: every staging and target path must lie below it.
pub(crate) async fn start_driver(
    sim: &Sim,
    base_url: &str,
    socket: &Path,
    kubelet_dir: &Path,
) -> anyhow::Result<CsiClients> {
    let cfg = ConfigFile {
        clusters: vec![ClusterConfig {
            region: REGION.into(),
            url: base_url.into(),
            token_id: Some(TOKEN_ID.into()),
            token_secret: Some(TOKEN_SECRET.into()),
            username: None,
            password: None,
            insecure: false,
            ca_file: None,
            // The simulator speaks plain HTTP on loopback.
            allow_http: true,
            timeout_seconds: 30,
            pool: None,
            max_connections: crate::pve::client::DEFAULT_MAX_CONNECTIONS,
        }],
    };
    let controller = Arc::new(Controller::new(&cfg, ControllerOptions::default())?);
    let mut ncfg = NodeConfig::new(WORKER);
    ncfg.device_dir = sim.guest_by_id_dir(WORKER_VMID);
    ncfg.device_wait = Duration::from_secs(10);
    ncfg.kubelet_dir = kubelet_dir.to_path_buf();
    ncfg.topology.insert(TOPOLOGY_REGION.into(), REGION.into());
    ncfg.topology
        .insert(TOPOLOGY_ZONE.into(), WORKER_NODE.into());
    let identity = IdentityService {
        driver_name: DRIVER_NAME.into(),
        controller: Some(controller.clone()),
    };
    let listener = crate::server::bind(&socket.to_string_lossy())?;
    tokio::spawn(crate::server::serve(
        listener,
        identity,
        Some(ControllerService { inner: controller }),
        Some(NodeService::new(ncfg)),
        std::future::pending(),
    ));
    connect(socket).await
}

/// The topology of worker-1: region `sim`, zone `pve1`.
pub(crate) fn worker_topology() -> Topology {
    Topology {
        segments: HashMap::from([
            (TOPOLOGY_REGION.into(), REGION.into()),
            (TOPOLOGY_ZONE.into(), WORKER_NODE.into()),
        ]),
    }
}

pub(crate) fn mount_cap(fs: &str) -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: fs.into(),
            ..Default::default()
        })),
    }
}

/// xfs when mkfs.xfs is installed, else ext4. xfs grows online without extra
/// privileges; ext4 online growth needs CAP_SYS_RESOURCE, which some containers lack.
pub(crate) fn default_fs_type() -> String {
    let has_xfs = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .chain(["/sbin".into(), "/usr/sbin".into()])
                .any(|d| d.join("mkfs.xfs").exists())
        })
        .unwrap_or(false);
    if has_xfs { "xfs" } else { "ext4" }.to_string()
}

pub(crate) fn loop_devices_under(dir: &Path) -> Vec<String> {
    let out = std::process::Command::new("losetup").arg("-a").output();
    let Ok(out) = out else { return vec![] };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(&*dir.to_string_lossy()))
        .map(|l| l.split(':').next().unwrap_or("").to_string())
        .collect()
}

/// No volume listed by the driver, no loop device and no mount under `data_dir`.
pub(crate) async fn check_clean(c: &mut CsiClients, data_dir: &Path) -> anyhow::Result<()> {
    let left = c
        .controller
        .list_volumes(ListVolumesRequest::default())
        .await?
        .into_inner()
        .entries
        .len();
    anyhow::ensure!(left == 0, "{left} volumes still listed");
    let loops = loop_devices_under(data_dir);
    anyhow::ensure!(loops.is_empty(), "loop devices still attached: {loops:?}");
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    anyhow::ensure!(
        !mounts.contains(&*data_dir.to_string_lossy()),
        "mounts left under {}",
        data_dir.display()
    );
    Ok(())
}
