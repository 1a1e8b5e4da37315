//! `proxmox-csi`: the CSI driver binary.

use clap::{Args, Parser, Subcommand};
use proxmox_csi::cli::{ControllerArgs, NodeArgs};
use proxmox_csi::controller::service::ControllerService;
use proxmox_csi::identity::{IdentityService, DRIVER_NAME};
use proxmox_csi::node::service::NodeService;
use proxmox_csi::server;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "proxmox-csi",
    version,
    about = "Kubernetes CSI driver for Proxmox VE"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options every serving subcommand shares.
#[derive(Args)]
struct ServeArgs {
    /// The CSI unix socket.
    #[arg(long, default_value = "unix:///csi/csi.sock")]
    endpoint: String,
    /// The name the driver registers under (CSIDriver, StorageClass provisioner).
    #[arg(long, default_value = DRIVER_NAME)]
    driver_name: String,
    /// Serve Prometheus metrics (`/metrics`) and `/healthz` on this TCP address,
    /// e.g. `0.0.0.0:9810` (9808 is the liveness-probe sidecar's). Off when not given.
    #[arg(long, env = "METRICS_ADDRESS")]
    metrics_address: Option<std::net::SocketAddr>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Controller service (Deployment next to the CSI sidecars).
    Controller {
        #[command(flatten)]
        serve: ServeArgs,
        #[command(flatten)]
        controller: ControllerArgs,
    },
    /// Serve the Node service (DaemonSet on every worker VM).
    Node {
        #[command(flatten)]
        serve: ServeArgs,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Serve Controller and Node on one socket (tests, single-VM set-ups).
    All {
        #[command(flatten)]
        serve: ServeArgs,
        #[command(flatten)]
        controller: ControllerArgs,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Run the driver against the built-in Proxmox VE simulator: provision,
    /// attach, format, mount, write, clean up, with progress (needs root).
    #[cfg(feature = "dev")]
    Sandbox {
        /// Keep simulator disks and the socket here instead of a temp dir.
        #[arg(long)]
        data_dir: Option<std::path::PathBuf>,
        /// Filesystem for the demo volume [default: xfs when mkfs.xfs is installed, else ext4].
        #[arg(long, value_parser = ["ext4", "xfs"])]
        fs_type: Option<String>,
        /// Volume size in MiB.
        #[arg(long, default_value_t = 1024)]
        size_mib: u64,
        /// MiB written through the mount and read back.
        #[arg(long, default_value_t = 64)]
        write_mib: u64,
        /// Storage of the demo volume: a storage id of the simulated cluster or a PVE storage
        /// type: lvmthin (local-lvm), rbd (ceph), zfspool (local-zfs), lvm (san), dir (local),
        /// nfs (nfs). Snapshot and restore steps run where the type has them.
        #[arg(long, default_value = "local-lvm")]
        storage: String,
    },
    /// Measure the driver's latency and throughput against the built-in
    /// simulator: N volumes through the full CSI lifecycle, P at a time (needs
    /// root unless --controller-only). Exit code 1 if any call failed.
    #[cfg(feature = "dev")]
    Bench(proxmox_csi::bench::BenchArgs),
    /// Check a Proxmox VE endpoint before install: reachability, credentials,
    /// privileges, storages, worker VMs. Exit code 1 if any check fails.
    Doctor {
        /// Cluster configuration file (YAML), the same the controller reads.
        #[arg(
            long,
            env = "PROXMOX_CSI_CONFIG",
            default_value = "/etc/proxmox-csi/config.yaml"
        )]
        config: std::path::PathBuf,
        /// Storage the StorageClasses will use (repeatable); default: every storage holding disk images.
        #[arg(long = "storage")]
        storages: Vec<String>,
        /// Worker VM name (Kubernetes node id) to check (repeatable).
        #[arg(long = "node-id")]
        node_ids: Vec<String>,
        #[arg(long, default_value = "text", value_parser = ["text", "json"])]
        output: String,
    },
}

/// Resolves once `stop` has been sent `true` (or dropped).
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(&cli.command);
    let (serve, controller, node) = match cli.command {
        Command::Controller { serve, controller } => (serve, Some(controller), None),
        Command::Node { serve, node } => (serve, None, Some(node)),
        Command::All {
            serve,
            controller,
            node,
        } => (serve, Some(controller), Some(node)),
        Command::Doctor {
            config,
            storages,
            node_ids,
            output,
        } => std::process::exit(doctor(&config, storages, node_ids, &output).await?),
        #[cfg(feature = "dev")]
        Command::Sandbox {
            data_dir,
            fs_type,
            size_mib,
            write_mib,
            storage,
        } => {
            return proxmox_csi::sandbox::run(proxmox_csi::sandbox::SandboxOptions {
                data_dir,
                size_bytes: size_mib << 20,
                write_bytes: write_mib << 20,
                fs_type,
                storage,
            })
            .await
        }
        #[cfg(feature = "dev")]
        Command::Bench(args) => std::process::exit(proxmox_csi::bench::main(args).await?),
    };
    serve_csi(serve, controller, node).await
}

fn init_logging(command: &Command) {
    // The one-shot commands show their own progress and report each failed call
    // themselves; driver logs would drown it.
    let default_level = match command {
        Command::Controller { .. } | Command::Node { .. } | Command::All { .. } => "info",
        _ => "warn,proxmox_csi::rpc_log=off",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_level.into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in container logs.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Runs `doctor` and prints its report; returns the process exit code.
async fn doctor(
    config: &std::path::Path,
    storages: Vec<String>,
    node_ids: Vec<String>,
    output: &str,
) -> anyhow::Result<i32> {
    let cfg = proxmox_csi::config::ConfigFile::load(config)?;
    let opts = proxmox_csi::doctor::DoctorOptions { storages, node_ids };
    let report = proxmox_csi::doctor::run(&cfg, &opts).await;
    let text = if output == "json" {
        serde_json::to_string_pretty(&report.to_json())? + "\n"
    } else {
        report.to_text()
    };
    // A closed pipe (`doctor | head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
    Ok(report.exit_code())
}

/// Serves the CSI services until SIGTERM / Ctrl-C.
async fn serve_csi(
    serve: ServeArgs,
    controller: Option<ControllerArgs>,
    node: Option<NodeArgs>,
) -> anyhow::Result<()> {
    let ServeArgs {
        endpoint,
        driver_name,
        metrics_address,
    } = serve;
    if let Some(addr) = metrics_address {
        // Bound before serving CSI so a taken port fails the start instead of going unnoticed.
        let listener = proxmox_csi::metrics::http::bind(addr).await?;
        tracing::info!(%addr, "serving metrics");
        tokio::spawn(async move {
            if let Err(e) = proxmox_csi::metrics::http::serve(listener).await {
                tracing::error!("metrics server stopped: {e}");
            }
        });
    }
    let label = controller
        .as_ref()
        .filter(|c| c.label_nodes)
        .map(|c| std::time::Duration::from_secs(c.label_interval));
    let controller = controller.map(|c| c.build()).transpose()?.map(Arc::new);
    if let Some(c) = &controller {
        // PVE reachability as the proxmox_csi_pve_up gauge; Probe does not ask PVE.
        tokio::spawn(proxmox_csi::metrics::pve_up::run(
            c.clone(),
            proxmox_csi::metrics::pve_up::INTERVAL,
        ));
    }
    if let (Some(interval), Some(c)) = (label, &controller) {
        let api = proxmox_csi::kube::ApiServer::in_cluster()?;
        tokio::spawn(c.clone().run_labeller(api, interval));
    }
    let registration = match &node {
        Some(n) if n.kubelet_registration => Some((
            proxmox_csi::registration::socket_path(&n.kubelet_dir, &driver_name),
            proxmox_csi::registration::RegistrationService::new(
                &driver_name,
                &n.registration_endpoint(&driver_name),
            )
            .map_err(anyhow::Error::msg)?,
        )),
        _ => None,
    };
    let node = match node {
        Some(n) => Some(NodeService::new(n.resolve().await?)),
        None => None,
    };
    let identity = IdentityService {
        driver_name,
        controller: controller.clone(),
    };
    let listener = server::bind(&endpoint)?;
    tracing::info!(%endpoint, controller = controller.is_some(), node = node.is_some(), "serving CSI");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    // Registered only once the CSI socket listens: kubelet calls NodeGetInfo right away.
    let registrar = match registration {
        Some((path, service)) => {
            let registrar = proxmox_csi::registration::Registrar::bind(&path)?;
            tracing::info!(socket = %path.display(), "serving kubelet plugin registration");
            Some(tokio::spawn(
                registrar.serve(service, stopped(stop_rx.clone())),
            ))
        }
        None => None,
    };
    let served = server::serve(
        listener,
        identity,
        controller.map(|inner| ControllerService { inner }),
        node,
        stopped(stop_rx),
    )
    .await;
    if let Some(r) = registrar {
        if served.is_err() {
            // Dropping the task's future drops the Registrar, which removes the socket.
            r.abort();
            let _ = r.await;
        } else {
            r.await??;
        }
    }
    served
}
