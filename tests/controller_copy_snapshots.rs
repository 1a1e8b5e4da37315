//! Copy snapshots (zfspool here; thick lvm and raw files work the same way, see
//! `controller_storage_types.rs`): a snapshot of a detached volume is a full copy in a
//! snapshot holder VM, which is never a volume (not listed, not publishable, not counted),
//! is listed as a snapshot with its source, restores the data as of the snapshot (sha256),
//! keeps its source from being deleted, and goes with DeleteSnapshot. Refused while the
//! volume is attached, naming the storage type. Names are unique across volumes and kinds.
//!
//! Config-only hot-plug: no root needed; data is written into the simulator's image files.

mod support;

use proxmox_csi::controller::Controller;
use proxmox_csi::csi::*;
use proxmox_csi::volume_id::{holder_tag, VolumeId, SNAPSHOT_HOLDER_PREFIX, TOPOLOGY_REGION};
use pve_sim::{HotplugMode, StorageConfig};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use support::*;
use tonic::{Code, Status};

const MIB: i64 = 1 << 20;

fn layout(c: &mut pve_sim::SimConfig) {
    c.storages.push(StorageConfig {
        id: "zfs".into(),
        kind: "zfspool".into(),
        shared: false,
        nodes: Some(vec!["pve1".into()]),
        ..Default::default()
    });
}

fn req(
    name: &str,
    storage: &str,
    source: Option<volume_content_source::Type>,
) -> CreateVolumeRequest {
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: 8 * MIB,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![ext4_writer()],
        parameters: HashMap::from([("storage".into(), storage.into())]),
        accessibility_requirements: Some(TopologyRequirement {
            requisite: vec![Topology {
                segments: HashMap::from([
                    (TOPOLOGY_REGION.into(), "sim".into()),
                    ("topology.kubernetes.io/zone".into(), "pve1".into()),
                ]),
            }],
            preferred: vec![],
        }),
        volume_content_source: source.map(|t| VolumeContentSource { r#type: Some(t) }),
        ..Default::default()
    }
}

fn image(t: &TestSim, volume_id: &str) -> std::path::PathBuf {
    let id = VolumeId::parse(volume_id).unwrap();
    let cfg = t.sim.config();
    cfg.storage(&id.storage)
        .unwrap()
        .dir(&cfg.data_dir, "pve1")
        .join(&id.volname)
}

fn write(t: &TestSim, volume_id: &str, byte: u8) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(image(t, volume_id))
        .unwrap();
    f.write_all(&vec![byte; 2 << 20]).unwrap();
    f.sync_all().unwrap();
}

fn sha(t: &TestSim, volume_id: &str) -> String {
    hex::encode(Sha256::digest(std::fs::read(image(t, volume_id)).unwrap()))
}

/// (vmid, name, protected) of every snapshot holder in the simulator.
fn snapshot_holders(t: &TestSim) -> Vec<(u64, String, bool)> {
    let state = t.sim.state_json();
    let mut out: Vec<(u64, String, bool)> = state["vms"]
        .as_object()
        .into_iter()
        .flat_map(|vms| vms.iter())
        .filter_map(|(vmid, vm)| {
            let name = vm["conf"]["name"].as_str()?;
            name.starts_with(SNAPSHOT_HOLDER_PREFIX).then(|| {
                (
                    vmid.parse().unwrap(),
                    name.to_string(),
                    vm["conf"]["protection"].as_str() == Some("1"),
                )
            })
        })
        .collect();
    out.sort();
    out
}

async fn snapshot(c: &Controller, vol: &str, name: &str) -> Result<Snapshot, Status> {
    c.create_snapshot(CreateSnapshotRequest {
        source_volume_id: vol.into(),
        name: name.into(),
        ..Default::default()
    })
    .await
    .map(|r| r.snapshot.unwrap())
    .map_err(Status::from)
}

async fn list(c: &Controller, r: ListSnapshotsRequest) -> Vec<Snapshot> {
    c.list_snapshots(r)
        .await
        .unwrap()
        .entries
        .into_iter()
        .map(|e| e.snapshot.unwrap())
        .collect()
}

async fn delete_volume(c: &Controller, vol: &str) -> Result<(), Status> {
    c.delete_volume(DeleteVolumeRequest {
        volume_id: vol.into(),
        ..Default::default()
    })
    .await
    .map_err(Status::from)
}

#[tokio::test]
async fn a_copy_snapshot_is_no_volume_restores_its_data_and_goes_with_delete_snapshot() {
    let t = start_sim(HotplugMode::None, layout).await;
    let c = controller(&t.url);
    let vol = c
        .create_volume(req("pvc-src", "zfs", None))
        .await
        .unwrap()
        .volume
        .unwrap()
        .volume_id;
    write(&t, &vol, 0xa1);
    let at_snapshot = sha(&t, &vol);

    let snap = snapshot(&c, &vol, "snap-1").await.unwrap();
    assert!(
        snap.snapshot_id.starts_with(&format!("{vol}@c")),
        "{snap:?}"
    );
    assert_eq!(snap.source_volume_id, vol);
    assert_eq!(snap.size_bytes, 8 * MIB);
    assert!(snap.ready_to_use);
    assert!(snap.creation_time.as_ref().unwrap().seconds > 1_600_000_000);
    // The same call again: the same snapshot, nothing new.
    let again = snapshot(&c, &vol, "snap-1").await.unwrap();
    assert_eq!(again, snap);
    let holders = snapshot_holders(&t);
    assert_eq!(holders.len(), 1, "{holders:?}");
    let (vmid, name, protected) = holders[0].clone();
    assert!(protected, "the snapshot holder is protected");

    // Never a volume: not listed, not counted, not publishable.
    let vols = c.all_volumes().await.unwrap();
    assert_eq!(vols.len(), 1);
    assert_eq!(vols[0].id.to_string(), vol);
    let copy_disk = format!("sim/pve1/zfs/{}/vm-{vmid}-disk-0", holder_tag(&name));
    let e = c
        .publish_volume(ControllerPublishVolumeRequest {
            volume_id: copy_disk.clone(),
            node_id: "worker-1".into(),
            volume_capability: Some(ext4_writer()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(Status::from(e).code(), Code::NotFound);
    delete_volume(&c, &copy_disk).await.unwrap();
    assert_eq!(
        snapshot_holders(&t).len(),
        1,
        "DeleteVolume never takes a copy"
    );

    // Listed: all, by source, by id.
    assert_eq!(list(&c, Default::default()).await, vec![snap.clone()]);
    let by_source = ListSnapshotsRequest {
        source_volume_id: vol.clone(),
        ..Default::default()
    };
    assert_eq!(list(&c, by_source).await, vec![snap.clone()]);
    let by_id = ListSnapshotsRequest {
        snapshot_id: snap.snapshot_id.clone(),
        ..Default::default()
    };
    assert_eq!(list(&c, by_id.clone()).await, vec![snap.clone()]);

    // Names are unique across volumes and kinds.
    let other = c
        .create_volume(req("pvc-other", "zfs", None))
        .await
        .unwrap()
        .volume
        .unwrap()
        .volume_id;
    let thin = c
        .create_volume(req("pvc-thin", "local-lvm", None))
        .await
        .unwrap()
        .volume
        .unwrap()
        .volume_id;
    for v in [&other, &thin] {
        let e = snapshot(&c, v, "snap-1").await.unwrap_err();
        assert_eq!(e.code(), Code::AlreadyExists, "{}", e.message());
    }
    let native = snapshot(&c, &thin, "snap-thin").await.unwrap();
    let e = snapshot(&c, &other, "snap-thin").await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{}", e.message());

    // The source keeps its copies: not deleted before them.
    let e = delete_volume(&c, &vol).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());

    // A restore has the data as of the snapshot, also with the source attached and changed.
    write(&t, &vol, 0xb2);
    assert_ne!(sha(&t, &vol), at_snapshot);
    c.publish_volume(ControllerPublishVolumeRequest {
        volume_id: vol.clone(),
        node_id: "worker-1".into(),
        volume_capability: Some(ext4_writer()),
        ..Default::default()
    })
    .await
    .unwrap();
    let restored = c
        .create_volume(req(
            "pvc-restored",
            "zfs",
            Some(volume_content_source::Type::Snapshot(
                volume_content_source::SnapshotSource {
                    snapshot_id: snap.snapshot_id.clone(),
                },
            )),
        ))
        .await
        .unwrap()
        .volume
        .unwrap()
        .volume_id;
    assert_eq!(sha(&t, &restored), at_snapshot);
    assert_eq!(c.all_volumes().await.unwrap().len(), 4);

    // While attached: refused, naming the type and what to do.
    let e = snapshot(&c, &vol, "snap-2").await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(
        e.message().contains("(zfspool") && e.message().contains("detach"),
        "{}",
        e.message()
    );
    assert_eq!(snapshot_holders(&t).len(), 1, "a refusal makes nothing");
    c.unpublish_volume(ControllerUnpublishVolumeRequest {
        volume_id: vol.clone(),
        node_id: "worker-1".into(),
        ..Default::default()
    })
    .await
    .unwrap();

    // DeleteSnapshot: the snapshot holder goes; again is OK.
    for _ in 0..2 {
        c.delete_snapshot(DeleteSnapshotRequest {
            snapshot_id: snap.snapshot_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    assert!(snapshot_holders(&t).is_empty());
    assert!(list(&c, by_id).await.is_empty());
    c.delete_snapshot(DeleteSnapshotRequest {
        snapshot_id: native.snapshot_id,
        ..Default::default()
    })
    .await
    .unwrap();
    // The restored volume outlives its snapshot; everything can go now.
    assert_eq!(sha(&t, &restored), at_snapshot);
    for v in [&vol, &other, &thin, &restored] {
        delete_volume(&c, v).await.unwrap();
    }
    assert!(c.all_volumes().await.unwrap().is_empty());
    assert!(list(&c, Default::default()).await.is_empty());
}

#[tokio::test]
async fn with_a_cluster_id_the_snapshot_holder_is_the_clusters() {
    let t = start_sim(HotplugMode::None, layout).await;
    let c = controller_with(&t.url, |o| o.cluster_id = Some("k8s-a".into()));
    let vol = c
        .create_volume(req("pvc-src", "zfs", None))
        .await
        .unwrap()
        .volume
        .unwrap()
        .volume_id;
    let snap = snapshot(&c, &vol, "snap-1").await.unwrap();
    let holders = snapshot_holders(&t);
    assert_eq!(holders.len(), 1);
    assert!(holders[0].1.starts_with("csi-snap-k8s-a-c"), "{holders:?}");
    // Another cluster's controller sees no such snapshot and cannot delete it.
    let b = controller_with(&t.url, |o| o.cluster_id = Some("k8s-b".into()));
    assert!(list(&b, Default::default()).await.is_empty());
    b.delete_snapshot(DeleteSnapshotRequest {
        snapshot_id: snap.snapshot_id.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(snapshot_holders(&t).len(), 1);
    assert_eq!(list(&c, Default::default()).await, vec![snap.clone()]);
    c.delete_snapshot(DeleteSnapshotRequest {
        snapshot_id: snap.snapshot_id,
        ..Default::default()
    })
    .await
    .unwrap();
    delete_volume(&c, &vol).await.unwrap();
    assert!(snapshot_holders(&t).is_empty());
}

/// A CreateSnapshot cut off when its snapshot holder existed without a disk (or a VM that
/// only looks like a snapshot holder): the retry makes the copy anew, and never removes a
/// VM that does not say what it copies.
#[tokio::test]
async fn a_snapshot_holder_left_without_a_disk_is_made_again() {
    use proxmox_csi::controller::copy_snapshots::copy_description;
    use proxmox_csi::volume_id::copy_snap_name;
    let t = start_sim(HotplugMode::None, layout).await;
    let c = controller(&t.url);
    let vol = c
        .create_volume(req("pvc-src", "zfs", None))
        .await
        .unwrap()
        .volume
        .unwrap()
        .volume_id;
    let cluster = c.cluster("sim").unwrap();
    let id = VolumeId::parse(&vol).unwrap();
    let make = |vmid: u64, name: &str, description: String| {
        let opts = vec![
            (
                "name".to_string(),
                format!("csi-snap-{}", copy_snap_name(name)),
            ),
            ("tags".to_string(), "proxmox-csi".to_string()),
            ("description".to_string(), description),
        ];
        async move {
            cluster
                .client
                .create_vm("pve1", vmid, &opts, std::time::Duration::from_secs(5))
                .await
                .unwrap()
        }
    };
    make(100_500, "snap-1", copy_description(&id, 1, "snap-1")).await;
    let snap = snapshot(&c, &vol, "snap-1").await.unwrap();
    assert!(snap.ready_to_use && snap.creation_time.unwrap().seconds > 1);
    let holders = snapshot_holders(&t);
    assert_eq!(holders.len(), 1, "{holders:?}");
    assert_ne!(
        holders[0].0, 100_500,
        "the empty one went, a new copy was made"
    );

    make(100_501, "snap-2", "some VM of someone's".into()).await;
    let e = snapshot(&c, &vol, "snap-2").await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{}", e.message());
    assert!(e.message().contains("by hand"), "{}", e.message());
    assert_eq!(snapshot_holders(&t).len(), 2, "that VM is left alone");

    c.delete_snapshot(DeleteSnapshotRequest {
        snapshot_id: snap.snapshot_id,
        ..Default::default()
    })
    .await
    .unwrap();
    delete_volume(&c, &vol).await.unwrap();
    assert_eq!(snapshot_holders(&t).len(), 1, "only the foreign VM is left");
}
