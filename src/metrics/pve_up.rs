//! PVE reachability, watched from the controller process: `GET /version` on every
//! cluster every ~30 s sets `proxmox_csi_pve_up{region}` and logs each change.
//!
//! This is deliberately not CSI Probe: the liveness sidecar restarts a container whose
//! Probe fails, and restarting the controller does not bring PVE back. Probe answers
//! for the process; an outage is something to alert on, through this gauge.

use crate::controller::Controller;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How often `run` checks.
pub const INTERVAL: Duration = Duration::from_secs(30);

/// The last state of every cluster checked so far, to log only changes.
#[derive(Debug, Default)]
pub struct PveUp {
    last: BTreeMap<String, bool>,
}

impl PveUp {
    /// One round: every cluster at once. Returns (region, up) of each, in region order.
    pub async fn check(&mut self, controller: &Controller) -> Vec<(String, bool)> {
        let clusters: Vec<_> = controller.clusters().cloned().collect();
        let results = futures::future::join_all(
            clusters
                .iter()
                .map(|c| async move { (c, c.client.version().await) }),
        )
        .await;
        let mut out = Vec::new();
        for (c, result) in results {
            let up = result.is_ok();
            super::set_pve_up(&c.region, up);
            let before = self.last.insert(c.region.clone(), up);
            match (before, &result) {
                // Down now, and up (or not known) before: one line, with why.
                (Some(true) | None, Err(e)) => {
                    tracing::warn!(region = %c.region, error = %e, "Proxmox VE API unreachable")
                }
                (Some(false), Ok(_)) => {
                    tracing::info!(region = %c.region, "Proxmox VE API reachable again")
                }
                _ => {}
            }
            out.push((c.region.clone(), up));
        }
        out
    }
}

/// Check every `interval`, for as long as the process runs.
pub async fn run(controller: Arc<Controller>, interval: Duration) {
    let mut state = PveUp::default();
    loop {
        state.check(&controller).await;
        tokio::time::sleep(interval).await;
    }
}
