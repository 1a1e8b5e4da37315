//! Two Kubernetes clusters on one Proxmox cluster (controller tenancy.rs): each controller
//! sees and touches only its own holders; ids of the other cluster are NotFound; holders
//! made before cluster ids belong to the cluster that claims them; another principal's
//! creation in progress is not waited for.

mod support;

use proxmox_csi::controller::error::ControllerError;
use proxmox_csi::controller::{Controller, ControllerOptions};
use proxmox_csi::csi::volume_capability::{access_mode::Mode, AccessMode, AccessType, MountVolume};
use proxmox_csi::csi::*;
use pve_sim::{HotplugMode, TokenConfig};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use support::*;
use tonic::Code;

const MIB: i64 = 1 << 20;

fn token(id: &str, secret: &str) -> TokenConfig {
    TokenConfig {
        id: id.into(),
        secret: secret.into(),
        privs: None,
        acl: BTreeMap::new(),
        privsep: true,
    }
}

async fn two_token_sim(task_ms: u64) -> TestSim {
    start_sim(HotplugMode::None, |c| {
        c.tokens.push(token("kube-b@pve!csi", "b"));
        c.tokens.push(token("other@pve!x", "x"));
        c.task_ms = task_ms;
    })
    .await
}

/// A controller for `cluster_id` (None: one from before cluster ids), with its own token.
fn ctl(
    url: &str,
    cluster_id: Option<&str>,
    claim_legacy: bool,
    tok: Option<(&str, &str)>,
) -> Controller {
    let mut cfg = cluster_config(url);
    if let Some((id, secret)) = tok {
        cfg.clusters[0].token_id = Some(id.into());
        cfg.clusters[0].token_secret = Some(secret.into());
    }
    let opts = ControllerOptions {
        task_timeout: Duration::from_secs(10),
        config_retry_delay: Duration::from_millis(50),
        cluster_id: cluster_id.map(str::to_string),
        claim_legacy_holders: claim_legacy,
        ..Default::default()
    };
    Controller::new(&cfg, opts).unwrap()
}

fn create(name: &str) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: 64 * MIB,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![VolumeCapability {
            access_mode: Some(AccessMode {
                mode: Mode::SingleNodeWriter as i32,
            }),
            access_type: Some(AccessType::Mount(MountVolume::default())),
        }],
        parameters: HashMap::from([("storage".into(), "local-lvm".into())]),
        ..Default::default()
    }
}

fn code(e: ControllerError) -> Code {
    tonic::Status::from(e).code()
}

async fn ids(c: &Controller) -> Vec<String> {
    let mut v: Vec<String> = c
        .list_volumes(ListVolumesRequest::default())
        .await
        .unwrap()
        .entries
        .into_iter()
        .map(|e| e.volume.unwrap().volume_id)
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn clusters_never_see_or_touch_each_other() {
    let t = two_token_sim(0).await;
    let legacy = ctl(&t.url, None, true, None);
    let a = ctl(&t.url, Some("a"), true, None);
    let b = ctl(&t.url, Some("b"), false, Some(("kube-b@pve!csi", "b")));
    let old = legacy
        .create_volume(create("pvc-old"))
        .await
        .unwrap()
        .volume
        .unwrap();
    // The same CSI name in both clusters: two holders, two ids.
    let va = a
        .create_volume(create("pvc-same"))
        .await
        .unwrap()
        .volume
        .unwrap();
    let vb = b
        .create_volume(create("pvc-same"))
        .await
        .unwrap()
        .volume
        .unwrap();
    assert_ne!(va.volume_id, vb.volume_id);
    // A repeated create finds its own holder, not the other cluster's.
    let again = b
        .create_volume(create("pvc-same"))
        .await
        .unwrap()
        .volume
        .unwrap();
    assert_eq!(again.volume_id, vb.volume_id);

    let mut a_sees = vec![old.volume_id.clone(), va.volume_id.clone()];
    a_sees.sort();
    assert_eq!(
        ids(&a).await,
        a_sees,
        "a owns its holders and the id-less one"
    );
    assert_eq!(ids(&b).await, vec![vb.volume_id.clone()]);
    assert_eq!(ids(&legacy).await, vec![old.volume_id.clone()]);

    // b cannot reach a's volume (nor the id-less one) by id.
    for foreign in [&va.volume_id, &old.volume_id] {
        let e = b
            .publish_volume(ControllerPublishVolumeRequest {
                volume_id: foreign.clone(),
                node_id: "worker-1".into(),
                volume_capability: create("x").volume_capabilities.pop(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(code(e), Code::NotFound);
        let e = b
            .expand_volume(ControllerExpandVolumeRequest {
                volume_id: foreign.clone(),
                capacity_range: Some(CapacityRange {
                    required_bytes: 128 * MIB,
                    limit_bytes: 0,
                }),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(code(e), Code::NotFound);
        let e = b
            .create_snapshot(CreateSnapshotRequest {
                name: "snap-foreign".into(),
                source_volume_id: foreign.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(code(e), Code::NotFound);
        // DeleteVolume of a volume that is not there is a success, and touches nothing.
        b.delete_volume(DeleteVolumeRequest {
            volume_id: foreign.clone(),
            secrets: Default::default(),
        })
        .await
        .unwrap();
    }
    assert_eq!(ids(&a).await, a_sees, "b's deletes left a's volumes alone");
    let snaps = a
        .create_snapshot(CreateSnapshotRequest {
            name: "snap-a".into(),
            source_volume_id: va.volume_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(snaps.snapshot.is_some());
    let b_snaps = b
        .list_snapshots(ListSnapshotsRequest::default())
        .await
        .unwrap();
    assert!(b_snaps.entries.is_empty(), "{:?}", b_snaps.entries);
    assert_eq!(
        a.list_snapshots(ListSnapshotsRequest::default())
            .await
            .unwrap()
            .entries
            .len(),
        1
    );
}

/// A VM in the holder range that another principal is creating is not this cluster's
/// unfinished create: a controller with a cluster id goes ahead, one without waits.
#[tokio::test]
async fn another_principals_creation_is_not_waited_for() {
    let t = two_token_sim(1500).await;
    let http = reqwest::Client::new();
    let r: serde_json::Value = http
        .post(format!("{}/nodes/pve1/qemu", t.url))
        .header("Authorization", "PVEAPIToken=other@pve!x=x")
        .form(&[("vmid", "100000"), ("name", "csi-vol-z-pvc-x")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(r["data"].as_str().unwrap().starts_with("UPID:"), "{r}");
    let legacy = ctl(&t.url, None, true, None);
    let e = legacy.create_volume(create("pvc-wait")).await.unwrap_err();
    assert_eq!(code(e), Code::Aborted);
    let b = ctl(&t.url, Some("b"), false, Some(("kube-b@pve!csi", "b")));
    let v = b
        .create_volume(create("pvc-wait"))
        .await
        .unwrap()
        .volume
        .unwrap();
    assert!(!v.volume_id.contains("/100000"), "{}", v.volume_id);
    // A creation under b's own token (an earlier b controller that died mid-create) is
    // still waited for.
    let r: serde_json::Value = http
        .post(format!("{}/nodes/pve1/qemu", t.url))
        .header("Authorization", "PVEAPIToken=kube-b@pve!csi=b")
        .form(&[("vmid", "100005"), ("name", "csi-vol-b-pvc-y")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(r["data"].as_str().unwrap().starts_with("UPID:"), "{r}");
    let e = b.create_volume(create("pvc-y")).await.unwrap_err();
    assert_eq!(code(e), Code::Aborted);
}
