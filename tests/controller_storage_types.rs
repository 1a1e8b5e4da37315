//! The storage-type feature matrix, measured: every row of `controller::features::MATRIX`
//! (the table the README shows) is run against the simulator's storage of that type —
//! create, expand, snapshot, restore and clone, each tried on an attached and on a detached
//! volume — and what happened is compared with the table. A refusal must be
//! FailedPrecondition naming the storage type and leave no volume behind; a restore must give
//! back the data as of the snapshot (sha256 of the image before the snapshot, after the
//! source was overwritten), a clone the source's data.
//!
//! Config-only hot-plug: no root needed; the data is written into and read from the
//! simulator's image files (qcow2 images through qemu-io / qemu-img).

mod support;

use proxmox_csi::controller::error::ControllerError;
use proxmox_csi::controller::features::{snapshot_kind, SnapshotKind, Support, MATRIX, OPS};
use proxmox_csi::controller::Controller;
use proxmox_csi::csi::*;
use proxmox_csi::volume_id::{VolumeId, TOPOLOGY_REGION, TOPOLOGY_ZONE};
use pve_sim::{HotplugMode, StorageConfig};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use support::*;
use tonic::Code;

const MIB: i64 = 1 << 20;

/// The simulator's storage for each type in the matrix (node-local ones on pve1 only, where
/// worker-1 runs).
fn storage_id(plugintype: &str) -> String {
    format!("t-{plugintype}")
}

fn layout(c: &mut pve_sim::SimConfig) {
    for (kind, shared) in [
        ("lvmthin", false),
        ("rbd", true),
        ("zfspool", false),
        ("lvm", true),
        ("dir", false),
        ("nfs", true),
    ] {
        c.storages.push(StorageConfig {
            id: storage_id(kind),
            kind: kind.into(),
            shared,
            nodes: (!shared).then(|| vec!["pve1".into()]),
            ..Default::default()
        });
    }
}

fn req(name: &str, storage: &str, format: &str, size: i64) -> CreateVolumeRequest {
    let t = Topology {
        segments: HashMap::from([
            (TOPOLOGY_REGION.into(), "sim".into()),
            (TOPOLOGY_ZONE.into(), "pve1".into()),
        ]),
    };
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: size,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![ext4_writer()],
        parameters: HashMap::from([
            ("storage".into(), storage.into()),
            ("storageFormat".into(), format.into()),
        ]),
        accessibility_requirements: Some(TopologyRequirement {
            requisite: vec![t.clone()],
            preferred: vec![t],
        }),
        ..Default::default()
    }
}

fn from(mut r: CreateVolumeRequest, source: volume_content_source::Type) -> CreateVolumeRequest {
    r.volume_content_source = Some(VolumeContentSource {
        r#type: Some(source),
    });
    r
}

/// The image file of a volume in the simulator's data dir.
fn image(t: &TestSim, volume_id: &str) -> (PathBuf, String) {
    let id = VolumeId::parse(volume_id).expect("our id");
    let cfg = t.sim.config();
    let st = cfg.storage(&id.storage).expect("storage");
    let dir = st.dir(&cfg.data_dir, "pve1");
    let format = proxmox_csi::controller::features::format_of(&id.volname).to_string();
    let path = if st.kind == "dir" || st.kind == "nfs" {
        dir.join("images").join(&id.volname)
    } else {
        dir.join(&id.volname)
    };
    (path, format)
}

/// Writes `byte` over the first 2 MiB and at 3 MiB of the volume's data.
fn write(t: &TestSim, volume_id: &str, byte: u8) {
    let (path, format) = image(t, volume_id);
    if format == "raw" {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let buf = vec![byte; 2 << 20];
        f.write_all(&buf).unwrap();
        f.seek(SeekFrom::Start(3 << 20)).unwrap();
        f.write_all(&buf[..4096]).unwrap();
        f.sync_all().unwrap();
    } else {
        let out = Command::new("qemu-io")
            .args(["-f", &format, "-c"])
            .arg(format!("write -P {byte} 0 2M"))
            .arg("-c")
            .arg(format!("write -P {byte} 3M 4k"))
            .arg(&path)
            .output()
            .expect("qemu-io runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// sha256 of the volume's data (the guest's view: qcow2 converted to raw).
fn sha(t: &TestSim, volume_id: &str) -> String {
    let (path, format) = image(t, volume_id);
    let bytes = if format == "raw" {
        std::fs::read(&path).unwrap()
    } else {
        let tmp = t.dir.path().join("view.raw");
        let out = Command::new("qemu-img")
            .args(["convert", "-f", &format, "-O", "raw"])
            .arg(&path)
            .arg(&tmp)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let b = std::fs::read(&tmp).unwrap();
        std::fs::remove_file(&tmp).unwrap();
        b
    };
    hex::encode(Sha256::digest(&bytes))
}

fn precondition(e: ControllerError, plugintype: &str, what: &str) {
    let s: tonic::Status = e.into();
    assert_eq!(
        s.code(),
        Code::FailedPrecondition,
        "{what}: {}",
        s.message()
    );
    assert!(
        s.message().contains(&format!("({plugintype}")),
        "{what}: the refusal names the storage type: {}",
        s.message()
    );
}

async fn attach(c: &Controller, vol: &str) {
    c.publish_volume(ControllerPublishVolumeRequest {
        volume_id: vol.into(),
        node_id: "worker-1".into(),
        volume_capability: Some(ext4_writer()),
        ..Default::default()
    })
    .await
    .expect("publish");
}

async fn detach(c: &Controller, vol: &str) {
    c.unpublish_volume(ControllerUnpublishVolumeRequest {
        volume_id: vol.into(),
        node_id: "worker-1".into(),
        ..Default::default()
    })
    .await
    .expect("unpublish");
}

/// The snapshot holders (copy snapshots) in the simulator, by name.
fn snapshot_holders(t: &TestSim) -> Vec<String> {
    let state = t.sim.state_json();
    state["vms"]
        .as_object()
        .into_iter()
        .flat_map(|vms| vms.values())
        .filter_map(|vm| vm["conf"]["name"].as_str())
        .filter(|n| n.starts_with(proxmox_csi::volume_id::SNAPSHOT_HOLDER_PREFIX))
        .map(str::to_string)
        .collect()
}

async fn volumes(c: &Controller) -> usize {
    c.all_volumes().await.unwrap().len()
}

/// Tries `op` on an attached volume, then (if refused) on the detached one; the observed cell.
/// `try_it(attached)` answers Ok(Some(new volume)) / Ok(None) on success, Err on refusal.
async fn observe<F, Fut>(
    c: &Controller,
    vol: &str,
    plugintype: &str,
    what: &str,
    mut try_it: F,
) -> (Support, Vec<String>)
where
    F: FnMut(bool) -> Fut,
    Fut: std::future::Future<Output = Result<Option<String>, ControllerError>>,
{
    let mut made = Vec::new();
    attach(c, vol).await;
    let before = volumes(c).await;
    let attached = try_it(true).await;
    detach(c, vol).await;
    match attached {
        Ok(v) => {
            made.extend(v);
            return (Support::Yes, made);
        }
        Err(e) => {
            precondition(e, plugintype, &format!("{what} (attached)"));
            assert_eq!(volumes(c).await, before, "{what}: a refusal leaves nothing");
        }
    }
    match try_it(false).await {
        Ok(v) => {
            made.extend(v);
            (Support::Detached, made)
        }
        Err(e) => {
            precondition(e, plugintype, &format!("{what} (detached)"));
            assert_eq!(volumes(c).await, before, "{what}: a refusal leaves nothing");
            (Support::No(""), made)
        }
    }
}

fn same(a: Support, b: Support) -> bool {
    a.cell() == b.cell()
}

#[tokio::test]
async fn every_storage_type_does_what_the_matrix_says_and_restores_keep_the_data() {
    let t = start_sim(HotplugMode::None, layout).await;
    let c = controller(&t.url);
    let mut failures = Vec::new();
    for (i, row) in MATRIX.iter().enumerate() {
        let storage = storage_id(row.plugintype);
        let what = format!("{} ({})", row.plugintype, row.format);
        let mut seen = [Support::No(""); 5];
        let mut made_all: Vec<String> = Vec::new();

        // create
        let vol = match c
            .create_volume(req(&format!("pvc-{i}"), &storage, row.format, 8 * MIB))
            .await
        {
            Ok(r) => {
                seen[0] = Support::Yes;
                r.volume.unwrap().volume_id
            }
            Err(e) => panic!("{what}: create failed: {e}"),
        };
        assert_eq!(
            image(&t, &vol).1,
            row.format,
            "{what}: the disk has the format asked"
        );

        // expand: detached, then attached (through the worker)
        let grow = |to: i64| ControllerExpandVolumeRequest {
            volume_id: vol.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: to,
                limit_bytes: 0,
            }),
            ..Default::default()
        };
        let detached_ok = c.expand_volume(grow(12 * MIB)).await.is_ok();
        attach(&c, &vol).await;
        let attached_ok = c.expand_volume(grow(16 * MIB)).await.is_ok();
        detach(&c, &vol).await;
        seen[1] = match (attached_ok, detached_ok) {
            (true, true) => Support::Yes,
            (false, true) => Support::Detached,
            _ => Support::No(""),
        };

        // snapshot
        write(&t, &vol, 0xa1);
        let at_snapshot = sha(&t, &vol);
        let snap_name = format!("snap-{i}");
        let (s, _) = observe(
            &c,
            &vol,
            row.plugintype,
            &format!("{what} snapshot"),
            |_| {
                let c = &c;
                let vol = vol.clone();
                let snap_name = snap_name.clone();
                async move {
                    c.create_snapshot(CreateSnapshotRequest {
                        source_volume_id: vol,
                        name: snap_name,
                        ..Default::default()
                    })
                    .await
                    .map(|r| Some(r.snapshot.unwrap().snapshot_id))
                }
            },
        )
        .await;
        seen[2] = s;
        let snapshot_id = if s.cell() == "no" {
            None
        } else {
            let r = c
                .create_snapshot(CreateSnapshotRequest {
                    source_volume_id: vol.clone(),
                    name: snap_name.clone(),
                    ..Default::default()
                })
                .await
                .expect("the same snapshot again (idempotent)");
            Some(r.snapshot.unwrap().snapshot_id)
        };
        let copies = snapshot_kind(row.plugintype, row.format) == SnapshotKind::Copy;
        if let (true, Some(snap)) = (copies, &snapshot_id) {
            // A copy snapshot: its own VM, never a volume; listed with its source; the
            // source is not deleted before it.
            assert_eq!(volumes(&c).await, 1, "{what}: a copy snapshot is no volume");
            assert_eq!(snapshot_holders(&t).len(), 1, "{what}: one snapshot holder");
            let listed = c
                .list_snapshots(ListSnapshotsRequest {
                    snapshot_id: snap.clone(),
                    ..Default::default()
                })
                .await
                .unwrap();
            let s = listed.entries[0].snapshot.clone().unwrap();
            assert_eq!(
                (s.source_volume_id.as_str(), s.ready_to_use),
                (vol.as_str(), true),
                "{what}"
            );
            let e = c
                .delete_volume(DeleteVolumeRequest {
                    volume_id: vol.clone(),
                    ..Default::default()
                })
                .await
                .expect_err("a volume with snapshots stays");
            let st: tonic::Status = e.into();
            assert_eq!(
                st.code(),
                Code::FailedPrecondition,
                "{what}: {}",
                st.message()
            );
        }
        write(&t, &vol, 0xb2);
        let now = sha(&t, &vol);
        assert_ne!(now, at_snapshot, "{what}: the overwrite changed the data");

        // restore
        let restore_from = match &snapshot_id {
            Some(s) => Some(s.clone()),
            None => {
                // A snapshot taken by hand on the holder, where PVE can take one at all
                // (ZFS: the driver refuses to, as it could not restore it).
                let id = VolumeId::parse(&vol).unwrap();
                let cl = c.cluster("sim").unwrap();
                let h = cl.holder_of(&id).await.unwrap().unwrap();
                let name = "s0123456789abcdef0123456789abcdef";
                match cl
                    .client
                    .create_snapshot(
                        &h.node,
                        h.vmid,
                        name,
                        "by hand",
                        std::time::Duration::from_secs(10),
                    )
                    .await
                {
                    Ok(()) => {
                        // What the driver refuses PVE refuses too: no full copy of this
                        // snapshot (qemu-server clone_vm's 'copy' check), and no VM is made.
                        let opts = vec![("snapname".to_string(), name.to_string())];
                        let e = cl
                            .client
                            .clone_vm(
                                &h.node,
                                h.vmid,
                                99_999,
                                &opts,
                                std::time::Duration::from_secs(10),
                            )
                            .await
                            .expect_err("PVE copies no snapshot of this type");
                        assert!(
                            e.to_string()
                                .contains("Full clone feature is not supported for a snapshot of"),
                            "{what}: {e}"
                        );
                        Some(format!("{vol}@{name}"))
                    }
                    Err(e) => {
                        assert!(
                            e.to_string().contains("snapshot feature is not available"),
                            "{what}: {e}"
                        );
                        None
                    }
                }
            }
        };
        if let Some(snap) = &restore_from {
            let mut n = 0;
            let (s, made) = observe(&c, &vol, row.plugintype, &format!("{what} restore"), |_| {
                n += 1;
                let r = from(
                    req(&format!("restore-{i}-{n}"), &storage, row.format, 16 * MIB),
                    volume_content_source::Type::Snapshot(volume_content_source::SnapshotSource {
                        snapshot_id: snap.clone(),
                    }),
                );
                let c = &c;
                async move {
                    c.create_volume(r)
                        .await
                        .map(|r| Some(r.volume.unwrap().volume_id))
                }
            })
            .await;
            seen[3] = s;
            for r in &made {
                assert_eq!(
                    sha(&t, r),
                    at_snapshot,
                    "{what}: the restore has the snapshot's data"
                );
            }
            made_all.extend(made);
            c.delete_snapshot(DeleteSnapshotRequest {
                snapshot_id: snap.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{what}: delete snapshot: {e}"));
            assert!(
                snapshot_holders(&t).is_empty(),
                "{what}: DeleteSnapshot leaves no snapshot holder"
            );
        }

        // clone
        let mut n = 0;
        let (s, made) = observe(&c, &vol, row.plugintype, &format!("{what} clone"), |_| {
            n += 1;
            let r = from(
                req(&format!("clone-{i}-{n}"), &storage, row.format, 16 * MIB),
                volume_content_source::Type::Volume(volume_content_source::VolumeSource {
                    volume_id: vol.clone(),
                }),
            );
            let c = &c;
            async move {
                c.create_volume(r)
                    .await
                    .map(|r| Some(r.volume.unwrap().volume_id))
            }
        })
        .await;
        seen[4] = s;
        for r in &made {
            assert_eq!(sha(&t, r), now, "{what}: the clone has the source's data");
        }
        made_all.extend(made);

        // delete: every volume made on the type goes, with its image.
        made_all.push(vol.clone());
        for v in &made_all {
            c.delete_volume(DeleteVolumeRequest {
                volume_id: v.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{what}: delete {v}: {e}"));
            assert!(!image(&t, v).0.exists(), "{what}: the image of {v} is gone");
        }
        assert_eq!(volumes(&c).await, 0, "{what}: nothing is left");

        eprintln!(
            "measured {what}: {}",
            seen.iter().map(|s| s.cell()).collect::<Vec<_>>().join(" ")
        );
        for (k, op) in OPS.iter().enumerate() {
            if !same(seen[k], row.ops[k]) {
                failures.push(format!(
                    "{what} {}: table says {}, the simulator did {}",
                    op.label(),
                    row.ops[k].cell(),
                    seen[k].cell()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[tokio::test]
async fn qcow2_is_refused_on_block_storages_naming_parameter_and_type() {
    let t = start_sim(HotplugMode::None, layout).await;
    let c = controller(&t.url);
    for kind in ["lvmthin", "rbd", "zfspool", "lvm"] {
        let e = c
            .create_volume(req("q", &storage_id(kind), "qcow2", 8 * MIB))
            .await
            .unwrap_err();
        let s: tonic::Status = e.into();
        assert_eq!(s.code(), Code::InvalidArgument, "{}", s.message());
        assert!(
            s.message().contains("parameters.storageFormat") && s.message().contains(kind),
            "{}",
            s.message()
        );
    }
    let e = c
        .create_volume(req("q", &storage_id("dir"), "vmdk", 8 * MIB))
        .await
        .unwrap_err();
    let s: tonic::Status = e.into();
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(
        s.message().contains("parameters.storageFormat"),
        "{}",
        s.message()
    );
    assert_eq!(volumes(&c).await, 0, "nothing was made");
}
