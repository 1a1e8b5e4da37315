//! `pve-sim`: runs the Proxmox VE API simulator as a standalone server.

use clap::Parser;
use pve_sim::{parse_task_type_ms, HotplugMode, Sim, SimConfig};
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "Proxmox VE API simulator for proxmox-csi tests")]
struct Args {
    /// Address to listen on (plain HTTP).
    #[arg(long, default_value = "127.0.0.1:8006")]
    listen: String,
    /// Directory for storages, guest device links and persisted state.
    #[arg(long)]
    data_dir: PathBuf,
    /// YAML/JSON file overriding the default cluster layout.
    #[arg(long)]
    config: Option<PathBuf>,
    /// `loop` attaches disks as loop devices (root), `none` keeps config only.
    #[arg(long)]
    hotplug: Option<String>,
    /// Latency model: how long every worker task runs, in milliseconds.
    #[arg(long)]
    task_ms: Option<u64>,
    /// Latency model: how long tasks of one type run, `TYPE=MS` (e.g. `qmclone=900`);
    /// repeatable, wins over --task-ms for that type.
    #[arg(long, value_name = "TYPE=MS", value_parser = parse_task_type_ms)]
    task_type_ms: Vec<(String, u64)>,
    /// Latency model: time every API request spends in service, in milliseconds.
    #[arg(long)]
    request_ms: Option<u64>,
    /// Latency model: at most this many API requests in service at once, the rest queue
    /// (pveproxy's default is 3 workers); 0 = no limit.
    #[arg(long)]
    max_workers: Option<usize>,
    /// Config lock wait, in milliseconds.
    #[arg(long)]
    lock_timeout_ms: Option<u64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut cfg = match &args.config {
        Some(p) => SimConfig::from_yaml(&std::fs::read_to_string(p)?)?,
        None => SimConfig::default(),
    };
    cfg.data_dir = args.data_dir;
    match args.hotplug.as_deref() {
        Some("loop") => cfg.hotplug = HotplugMode::Loop,
        Some("none") => cfg.hotplug = HotplugMode::None,
        Some(other) => anyhow::bail!("--hotplug must be loop or none, not '{other}'"),
        None => {}
    }
    if let Some(ms) = args.task_ms {
        cfg.task_ms = ms;
    }
    cfg.task_type_ms.extend(args.task_type_ms);
    if let Some(ms) = args.request_ms {
        cfg.request_ms = ms;
    }
    if let Some(n) = args.max_workers {
        cfg.max_workers = n;
    }
    if let Some(ms) = args.lock_timeout_ms {
        cfg.lock_timeout_ms = ms;
    }
    let sim = Sim::new(cfg)?;
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    tracing::info!(
        "pve-sim listening on http://{}/api2/json",
        listener.local_addr()?
    );
    let cleanup = sim.clone();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = sim.serve(listener) => r?,
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    // Leave no loop devices behind on a clean shutdown.
    cleanup.detach_all();
    Ok(())
}
