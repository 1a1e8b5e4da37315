//! The snapshot index in holder tags: a tag is added before each CSI
//! snapshot and removed after it; name uniqueness and ListSnapshots read
//! the tags; a tag without its snapshot is skipped; a holder from before the
//! index is read snapshot list by snapshot list and indexed by its next
//! CreateSnapshot.

mod support;

use proxmox_csi::controller::Controller;
use proxmox_csi::csi::volume_capability::{access_mode::Mode, AccessMode, AccessType, MountVolume};
use proxmox_csi::csi::*;
use proxmox_csi::volume_id::{snap_name, VolumeId, TOPOLOGY_REGION, TOPOLOGY_ZONE};
use pve_sim::HotplugMode;
use std::collections::HashMap;
use support::*;
use tonic::Code;

const INDEX_TAG: &str = "proxmox-csi-snaptags";

fn create(name: &str) -> CreateVolumeRequest {
    let t = Topology {
        segments: HashMap::from([
            (TOPOLOGY_REGION.into(), "sim".into()),
            (TOPOLOGY_ZONE.into(), "pve1".into()),
        ]),
    };
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: 16 << 20,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![VolumeCapability {
            access_mode: Some(AccessMode {
                mode: Mode::SingleNodeWriter as i32,
            }),
            access_type: Some(AccessType::Mount(MountVolume {
                fs_type: "ext4".into(),
                ..Default::default()
            })),
        }],
        parameters: HashMap::from([("storage".into(), "local-lvm".into())]),
        accessibility_requirements: Some(TopologyRequirement {
            requisite: vec![t.clone()],
            preferred: vec![t],
        }),
        ..Default::default()
    }
}

fn snap(name: &str, vol: &str) -> CreateSnapshotRequest {
    CreateSnapshotRequest {
        name: name.into(),
        source_volume_id: vol.into(),
        ..Default::default()
    }
}

fn code(e: proxmox_csi::controller::error::ControllerError) -> (Code, String) {
    let s: tonic::Status = e.into();
    (s.code(), s.message().to_string())
}

/// The holder's (node, vmid, tags).
async fn tags(c: &Controller, vol: &str) -> (String, u64, Vec<String>) {
    let cluster = c.cluster("sim").unwrap();
    let h = cluster
        .holder_of(&VolumeId::parse(vol).unwrap())
        .await
        .unwrap()
        .unwrap();
    let cfg = cluster
        .client
        .vm_config(&h.node, h.vmid, false)
        .await
        .unwrap();
    let t = cfg
        .get("tags")
        .unwrap_or_default()
        .split(';')
        .map(str::to_string)
        .collect();
    (h.node, h.vmid, t)
}

async fn set_tags(c: &Controller, node: &str, vmid: u64, tags: &[String]) {
    c.cluster("sim")
        .unwrap()
        .client
        .set_vm_config_sync(node, vmid, &vec![("tags".into(), tags.join(";"))])
        .await
        .unwrap();
}

async fn list_all(c: &Controller) -> Vec<String> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let r = c
            .list_snapshots(ListSnapshotsRequest {
                max_entries: 1,
                starting_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        out.extend(
            r.entries
                .into_iter()
                .map(|e| e.snapshot.unwrap().snapshot_id),
        );
        if r.next_token.is_empty() {
            return out;
        }
        token = r.next_token;
    }
}

#[tokio::test]
async fn snapshots_are_tagged_and_untagged() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let v = c
        .create_volume(create("pvc-a"))
        .await
        .unwrap()
        .volume
        .unwrap();
    let (_, _, before) = tags(&c, &v.volume_id).await;
    assert!(before.contains(&INDEX_TAG.to_string()), "{before:?}");
    let s = c
        .create_snapshot(snap("snap-a", &v.volume_id))
        .await
        .unwrap()
        .snapshot
        .unwrap();
    let tag = format!("proxmox-csi-{}", snap_name("snap-a"));
    let (_, _, with) = tags(&c, &v.volume_id).await;
    assert!(with.contains(&tag), "{with:?}");
    assert_eq!(list_all(&c).await, vec![s.snapshot_id.clone()]);
    c.delete_snapshot(DeleteSnapshotRequest {
        snapshot_id: s.snapshot_id.clone(),
        secrets: Default::default(),
    })
    .await
    .unwrap();
    let (_, _, after) = tags(&c, &v.volume_id).await;
    assert!(!after.contains(&tag), "{after:?}");
    assert!(list_all(&c).await.is_empty());
}

/// A tag whose snapshot was never taken (a create cut off before PVE took
/// it, or copied by a clone) neither blocks the name elsewhere nor lists.
#[tokio::test]
async fn a_tag_without_its_snapshot_is_skipped() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let a = c
        .create_volume(create("pvc-a"))
        .await
        .unwrap()
        .volume
        .unwrap();
    let b = c
        .create_volume(create("pvc-b"))
        .await
        .unwrap()
        .volume
        .unwrap();
    let (node, vmid, mut ta) = tags(&c, &a.volume_id).await;
    ta.push(format!("proxmox-csi-{}", snap_name("snap-x")));
    set_tags(&c, &node, vmid, &ta).await;
    assert!(list_all(&c).await.is_empty());
    let s = c
        .create_snapshot(snap("snap-x", &b.volume_id))
        .await
        .unwrap()
        .snapshot
        .unwrap();
    assert_eq!(list_all(&c).await, vec![s.snapshot_id]);
    // Now the name is taken, by b's snapshot: a's stale tag does not matter.
    let (k, m) = code(
        c.create_snapshot(snap("snap-x", &a.volume_id))
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::AlreadyExists, "{m}");
}

/// A holder from before the index: its snapshots are found by listing it,
/// for uniqueness and ListSnapshots alike, and its next CreateSnapshot
/// tags them all.
#[tokio::test]
async fn a_holder_from_before_the_index_is_listed_and_then_indexed() {
    let t = start_sim(HotplugMode::None, |_| {}).await;
    let c = controller(&t.url);
    let a = c
        .create_volume(create("pvc-old"))
        .await
        .unwrap()
        .volume
        .unwrap();
    let b = c
        .create_volume(create("pvc-new"))
        .await
        .unwrap()
        .volume
        .unwrap();
    let s1 = c
        .create_snapshot(snap("snap-1", &a.volume_id))
        .await
        .unwrap()
        .snapshot
        .unwrap();
    // Back to what a holder made before the index carries.
    let (node, vmid, _) = tags(&c, &a.volume_id).await;
    set_tags(&c, &node, vmid, &["proxmox-csi".to_string()]).await;
    assert_eq!(list_all(&c).await, vec![s1.snapshot_id.clone()]);
    let (k, m) = code(
        c.create_snapshot(snap("snap-1", &b.volume_id))
            .await
            .unwrap_err(),
    );
    assert_eq!(k, Code::AlreadyExists, "{m}");
    let s2 = c
        .create_snapshot(snap("snap-2", &a.volume_id))
        .await
        .unwrap()
        .snapshot
        .unwrap();
    let (_, _, now) = tags(&c, &a.volume_id).await;
    for want in [
        INDEX_TAG.to_string(),
        format!("proxmox-csi-{}", snap_name("snap-1")),
        format!("proxmox-csi-{}", snap_name("snap-2")),
    ] {
        assert!(now.contains(&want), "{want} missing from {now:?}");
    }
    let mut all = list_all(&c).await;
    all.sort();
    let mut want = vec![s1.snapshot_id, s2.snapshot_id];
    want.sort();
    assert_eq!(all, want);
}
