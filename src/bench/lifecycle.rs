//! One volume's way through the driver, each CSI call timed and, when the run
//! measures them, its PVE requests and response bytes counted: create, attach,
//! stage, publish, expand, snapshot, then the same undone in reverse.

use super::report::{Op, Sample};
use crate::csi::controller_client::ControllerClient;
use crate::csi::node_client::NodeClient;
use crate::csi::*;
use crate::csi_client::CsiClients;
use crate::sandbox::harness::worker_topology;
use pve_sim::Sim;
use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::time::Instant;
use tonic::transport::Channel;

/// The controller and node clients, cloned per worker: they share the one connection.
#[derive(Clone)]
pub(super) struct Clients {
    pub controller: ControllerClient<Channel>,
    pub node: NodeClient<Channel>,
}

impl Clients {
    pub(super) fn new(c: &CsiClients) -> Self {
        Clients {
            controller: c.controller.clone(),
            node: c.node.clone(),
        }
    }
}

/// What every volume of the run shares.
#[derive(Clone)]
pub(super) struct Plan {
    pub storage: String,
    pub size_bytes: u64,
    pub cap: VolumeCapability,
    /// Stage and publish on worker-1 (false: controller only).
    pub node_ops: bool,
    pub snapshots: bool,
    /// Each volume gets `<dir>/<name>/staging` and `.../target`.
    pub dir: PathBuf,
    /// ControllerExpandVolume grows each volume to this size.
    pub expand_bytes: u64,
    /// Count every call's PVE requests and response bytes on this simulator; only
    /// set when one call runs at a time, so that the counts are that call's.
    pub meter: Option<Sim>,
}

/// What one volume got to, so that exactly that is undone.
pub(super) struct Volume {
    id: String,
    /// The worker VM (Kubernetes node) it is published to.
    node_id: String,
    dir: PathBuf,
    attached: bool,
    staged: bool,
    published: bool,
    snapshot: Option<String>,
}

impl Volume {
    fn staging(&self) -> String {
        self.dir.join("staging").to_string_lossy().into()
    }
    fn target(&self) -> String {
        self.dir.join("target").to_string_lossy().into()
    }
}

/// Time one call (and count its PVE traffic on `meter`) and record it; the
/// response on success.
pub(super) async fn call<T>(
    s: &mut Vec<Sample>,
    meter: Option<&Sim>,
    op: Op,
    f: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Option<T> {
    let before = meter.map(Sim::traffic);
    let start = Instant::now();
    let r = f.await;
    let ms = start.elapsed().as_secs_f64() * 1000.0;
    let pve = meter.zip(before).map(|(m, b)| m.traffic() - b);
    let (error, out) = match r {
        Ok(r) => (None, Some(r.into_inner())),
        Err(e) => (Some(format!("{:?}: {}", e.code(), e.message())), None),
    };
    s.push(Sample { op, ms, error, pve });
    out
}

/// The whole lifecycle of volume `name`. Returns every call made and, when
/// the tear-down did not complete, the volume so it can be tried again.
pub(super) async fn run(
    c: &mut Clients,
    plan: &Plan,
    name: &str,
    node_id: &str,
) -> (Vec<Sample>, Option<Volume>) {
    let mut s = Vec::new();
    let req = create_request(plan, name);
    let meter = plan.meter.as_ref();
    let Some(created) = call(
        &mut s,
        meter,
        Op::CreateVolume,
        c.controller.create_volume(req),
    )
    .await
    else {
        return (s, None);
    };
    let mut v = Volume {
        id: created.volume.unwrap_or_default().volume_id,
        node_id: node_id.into(),
        dir: plan.dir.join(name),
        attached: false,
        staged: false,
        published: false,
        snapshot: None,
    };
    // Whatever failed on the way up, undo what was started.
    let _ = forward(c, plan, &mut v, &mut s).await;
    let clean = teardown(c, plan, &v, &mut s).await;
    (s, (!clean).then_some(v))
}

/// CreateVolume of `name` as the run's volumes are made (on worker-1's node).
pub(super) fn create_request(plan: &Plan, name: &str) -> CreateVolumeRequest {
    let topo = worker_topology();
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: plan.size_bytes as i64,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![plan.cap.clone()],
        parameters: HashMap::from([("storage".into(), plan.storage.clone())]),
        accessibility_requirements: Some(TopologyRequirement {
            requisite: vec![topo.clone()],
            preferred: vec![topo],
        }),
        ..Default::default()
    }
}

async fn forward(c: &mut Clients, plan: &Plan, v: &mut Volume, s: &mut Vec<Sample>) -> Option<()> {
    let meter = plan.meter.as_ref();
    v.attached = true;
    let req = ControllerPublishVolumeRequest {
        volume_id: v.id.clone(),
        node_id: v.node_id.clone(),
        volume_capability: Some(plan.cap.clone()),
        ..Default::default()
    };
    let ctx = call(
        s,
        meter,
        Op::ControllerPublishVolume,
        c.controller.controller_publish_volume(req),
    )
    .await?
    .publish_context;
    if plan.node_ops {
        v.staged = true;
        // As the kubelet does, the CO makes the staging directory.
        if let Err(e) = std::fs::create_dir_all(v.staging()) {
            s.push(Sample {
                op: Op::NodeStageVolume,
                ms: 0.0,
                error: Some(format!("creating {}: {e}", v.staging())),
                pve: None,
            });
            return None;
        }
        let req = NodeStageVolumeRequest {
            volume_id: v.id.clone(),
            publish_context: ctx.clone(),
            staging_target_path: v.staging(),
            volume_capability: Some(plan.cap.clone()),
            ..Default::default()
        };
        call(s, meter, Op::NodeStageVolume, c.node.node_stage_volume(req)).await?;
        v.published = true;
        let req = NodePublishVolumeRequest {
            volume_id: v.id.clone(),
            publish_context: ctx,
            staging_target_path: v.staging(),
            target_path: v.target(),
            volume_capability: Some(plan.cap.clone()),
            ..Default::default()
        };
        call(
            s,
            meter,
            Op::NodePublishVolume,
            c.node.node_publish_volume(req),
        )
        .await?;
    }
    // Online, as a PVC resize of a volume in use; the node side is not grown.
    let req = ControllerExpandVolumeRequest {
        volume_id: v.id.clone(),
        capacity_range: Some(CapacityRange {
            required_bytes: plan.expand_bytes as i64,
            limit_bytes: 0,
        }),
        volume_capability: Some(plan.cap.clone()),
        secrets: Default::default(),
    };
    call(
        s,
        meter,
        Op::ControllerExpandVolume,
        c.controller.controller_expand_volume(req),
    )
    .await?;
    if plan.snapshots {
        let name = format!(
            "{}-snap",
            v.dir.file_name().unwrap_or_default().to_string_lossy()
        );
        let req = CreateSnapshotRequest {
            source_volume_id: v.id.clone(),
            name,
            ..Default::default()
        };
        let snap = call(
            s,
            meter,
            Op::CreateSnapshot,
            c.controller.create_snapshot(req),
        )
        .await?;
        v.snapshot = snap.snapshot.map(|x| x.snapshot_id);
    }
    Some(())
}

/// Undo what `v` got to, in reverse; every step is tried even after one
/// fails. True when all succeeded.
pub(super) async fn teardown(
    c: &mut Clients,
    plan: &Plan,
    v: &Volume,
    s: &mut Vec<Sample>,
) -> bool {
    let meter = plan.meter.as_ref();
    let before = s.len();
    if v.published {
        let req = NodeUnpublishVolumeRequest {
            volume_id: v.id.clone(),
            target_path: v.target(),
        };
        call(
            s,
            meter,
            Op::NodeUnpublishVolume,
            c.node.node_unpublish_volume(req),
        )
        .await;
    }
    if v.staged {
        let req = NodeUnstageVolumeRequest {
            volume_id: v.id.clone(),
            staging_target_path: v.staging(),
        };
        call(
            s,
            meter,
            Op::NodeUnstageVolume,
            c.node.node_unstage_volume(req),
        )
        .await;
    }
    if v.attached {
        let req = ControllerUnpublishVolumeRequest {
            volume_id: v.id.clone(),
            node_id: v.node_id.clone(),
            secrets: Default::default(),
        };
        call(
            s,
            meter,
            Op::ControllerUnpublishVolume,
            c.controller.controller_unpublish_volume(req),
        )
        .await;
    }
    if let Some(id) = &v.snapshot {
        let req = DeleteSnapshotRequest {
            snapshot_id: id.clone(),
            secrets: Default::default(),
        };
        call(
            s,
            meter,
            Op::DeleteSnapshot,
            c.controller.delete_snapshot(req),
        )
        .await;
    }
    let req = DeleteVolumeRequest {
        volume_id: v.id.clone(),
        secrets: Default::default(),
    };
    call(s, meter, Op::DeleteVolume, c.controller.delete_volume(req)).await;
    s[before..].iter().all(|x| x.error.is_none())
}
