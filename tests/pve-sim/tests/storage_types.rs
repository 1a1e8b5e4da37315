//! The simulated storage types answer as their pve-storage plugins do: names, formats and
//! sizes at allocation, and which snapshot, rollback and clone calls qemu-server lets through
//! (the plugin functions are cited in the simulator's `volumes.rs`, `features.rs` and
//! `handlers/snapshot.rs`).

mod support;

use pve_sim::StorageConfig;
use support::*;

fn storages(c: &mut pve_sim::SimConfig) {
    for (id, kind, shared) in [
        ("local-zfs", "zfspool", false),
        ("ceph", "rbd", true),
        ("san", "lvm", true),
        ("nfs", "nfs", true),
    ] {
        c.storages.push(StorageConfig {
            id: id.into(),
            kind: kind.into(),
            shared,
            ..Default::default()
        });
    }
}

async fn ok_task(h: &Harness, r: Resp) {
    let (s, b) = r;
    assert_eq!(s, 200, "{b}");
    assert_eq!(h.wait("pve1", b["data"].as_str().unwrap()).await, "OK");
}

async fn task_error(h: &Harness, r: Resp) -> String {
    let (s, b) = r;
    assert_eq!(s, 200, "{b}");
    h.wait("pve1", b["data"].as_str().unwrap()).await
}

/// A stopped VM `vmid` on pve1 with one disk `volid` in scsi0.
async fn vm_with(h: &Harness, vmid: &str, volid: &str) {
    let r = h
        .post(
            "/nodes/pve1/qemu",
            &[("vmid", vmid), ("name", "holder"), ("scsi0", volid)],
        )
        .await;
    ok_task(h, r).await;
}

async fn alloc_fmt(h: &Harness, storage: &str, vmid: &str, name: &str, fmt: &str) -> Resp {
    h.post(
        &format!("/nodes/pve1/storage/{storage}/content"),
        &[
            ("vmid", vmid),
            ("filename", name),
            ("size", "4096"),
            ("format", fmt),
        ],
    )
    .await
}

fn msg(b: &serde_json::Value) -> &str {
    b["message"].as_str().unwrap_or("")
}

// ZFSPoolPlugin/RBDPlugin/LVMPlugin alloc_image: names `vm-<vmid>-…`, raw only.
#[tokio::test]
async fn block_storages_name_and_format_rules() {
    let h = start(storages).await;
    let (s, b) = alloc_fmt(&h, "local-zfs", "300", "vm-300-disk-0", "raw").await;
    assert_eq!(
        (s, b["data"].as_str()),
        (200, Some("local-zfs:vm-300-disk-0"))
    );
    let (s, b) = alloc_fmt(&h, "ceph", "300", "vm-300-disk-0", "raw").await;
    assert_eq!((s, b["data"].as_str()), (200, Some("ceph:vm-300-disk-0")));
    let (s, b) = alloc_fmt(&h, "san", "300", "vm-300-disk-0", "raw").await;
    assert_eq!((s, b["data"].as_str()), (200, Some("san:vm-300-disk-0")));

    let (s, b) = alloc_fmt(&h, "local-zfs", "300", "vm-300-disk-1", "qcow2").await;
    assert_eq!((s, msg(&b)), (500, "unsupported format 'qcow2'\n"));
    let (s, b) = alloc_fmt(&h, "san", "300", "vm-300-disk-1", "qcow2").await;
    assert_eq!(
        (s, msg(&b)),
        (
            500,
            "snapshot-as-volume-chain option need to be enabled to use qcow2 format\n"
        )
    );
    for st in ["local-zfs", "ceph"] {
        let (s, b) = alloc_fmt(&h, st, "300", "vm-301-disk-0", "raw").await;
        assert_eq!(
            (s, msg(&b)),
            (500, "illegal name 'vm-301-disk-0' - should be 'vm-300-*'\n"),
            "{st}"
        );
    }
    let (s, b) = alloc_fmt(&h, "local-zfs", "300", "vm-300-disk-0", "raw").await;
    assert_eq!(
        (s, msg(&b)),
        (
            500,
            "zfs error: cannot create 'rpool/data/vm-300-disk-0': dataset already exists\n"
        )
    );
    let (s, b) = alloc_fmt(&h, "ceph", "300", "vm-300-disk-0", "raw").await;
    assert_eq!(
        (s, msg(&b)),
        (
            500,
            "rbd create 'vm-300-disk-0' error: rbd: create error: (17) File exists\n"
        )
    );
    // ZFSPoolPlugin zfs_create_zvol pads to 1 MiB; RBDPlugin asks for whole MiB.
    for st in ["local-zfs", "ceph"] {
        let (s, b) = h
            .post(
                &format!("/nodes/pve1/storage/{st}/content"),
                &[
                    ("vmid", "302"),
                    ("filename", "vm-302-disk-0"),
                    ("size", "1000"),
                ],
            )
            .await;
        assert_eq!(s, 200, "{b}");
        let (s, b) = h
            .get(
                &format!(
                    "/nodes/pve1/storage/{st}/content/{}",
                    urlencode(&format!("{st}:vm-302-disk-0"))
                ),
                &[],
            )
            .await;
        assert_eq!(
            (s, b["data"]["size"].as_u64()),
            (200, Some(1 << 20)),
            "{st}"
        );
    }
    // The storage configuration shows each type's own keys.
    let (s, b) = h.get("/storage/local-zfs", &[]).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (b["data"]["type"].as_str(), b["data"]["pool"].as_str()),
        (Some("zfspool"), Some("rpool/data"))
    );
}

// pve-guest-common snapshot_prepare -> has_feature 'snapshot': LVMPlugin has none for raw,
// Plugin.pm none for raw files; ZFS, RBD and qcow2 files snapshot.
#[tokio::test]
async fn snapshot_feature_by_type() {
    let h = start(storages).await;
    let cases = [
        ("local-zfs", "vm-300-disk-0", "raw", "OK"),
        ("ceph", "vm-301-disk-0", "raw", "OK"),
        ("local-lvm", "vm-302-disk-0", "raw", "OK"),
        ("nfs", "vm-303-disk-0.qcow2", "qcow2", "OK"),
        ("local", "vm-304-disk-0.qcow2", "qcow2", "OK"),
        (
            "san",
            "vm-305-disk-0",
            "raw",
            "snapshot feature is not available",
        ),
        (
            "local",
            "vm-306-disk-0.raw",
            "raw",
            "snapshot feature is not available",
        ),
    ];
    for (st, name, fmt, want) in cases {
        let vmid = &name[3..6];
        let (s, b) = alloc_fmt(&h, st, vmid, name, fmt).await;
        assert_eq!(s, 200, "{st}: {b}");
        vm_with(&h, vmid, b["data"].as_str().unwrap()).await;
        let r = h
            .post(
                &format!("/nodes/pve1/qemu/{vmid}/snapshot"),
                &[("snapname", "s1")],
            )
            .await;
        assert_eq!(task_error(&h, r).await, want, "{st}");
    }
}

// qemu-server clone_vm $load_and_check: a full clone needs 'copy' of the disk as of the
// snapshot; ZFSPoolPlugin has copy only for current and base, and clone only for base.
#[tokio::test]
async fn clone_from_a_snapshot_by_type() {
    let h = start(storages).await;
    let cases = [
        ("local-zfs", "vm-300-disk-0", "raw", false),
        ("ceph", "vm-301-disk-0", "raw", true),
        ("local-lvm", "vm-302-disk-0", "raw", true),
        ("nfs", "vm-303-disk-0.qcow2", "qcow2", true),
    ];
    for (st, name, fmt, copies) in cases {
        let vmid = &name[3..6];
        let (_, b) = alloc_fmt(&h, st, vmid, name, fmt).await;
        let volid = b["data"].as_str().unwrap().to_string();
        vm_with(&h, vmid, &volid).await;
        let r = h
            .post(
                &format!("/nodes/pve1/qemu/{vmid}/snapshot"),
                &[("snapname", "s1")],
            )
            .await;
        ok_task(&h, r).await;
        let newid = format!("4{}", &vmid[1..]);
        let r = h
            .post(
                &format!("/nodes/pve1/qemu/{vmid}/clone"),
                &[("newid", &newid), ("snapname", "s1"), ("full", "1")],
            )
            .await;
        if copies {
            ok_task(&h, r).await;
        } else {
            assert_eq!(
                (r.0, msg(&r.1)),
                (
                    500,
                    format!(
                        "Full clone feature is not supported for a snapshot of '{volid}' (scsi0)\n"
                    )
                    .as_str()
                )
            );
            // No VM was made.
            let (s, _) = h
                .get(&format!("/nodes/pve1/qemu/{newid}/config"), &[])
                .await;
            assert_eq!(s, 500);
            // Nor as a linked clone; a full clone of the current state works.
            let (s, b) = h
                .post(
                    &format!("/nodes/pve1/qemu/{vmid}/clone"),
                    &[("newid", &newid), ("snapname", "s1"), ("full", "0")],
                )
                .await;
            assert_eq!(
                (s, msg(&b)),
                (
                    500,
                    format!(
                        "Linked clone feature is not supported for a snapshot of '{volid}' (scsi0)\n"
                    )
                    .as_str()
                )
            );
            let r = h
                .post(
                    &format!("/nodes/pve1/qemu/{vmid}/clone"),
                    &[("newid", &newid)],
                )
                .await;
            ok_task(&h, r).await;
        }
    }
    // Linked clones take no target storage (clone_vm $load_and_check).
    let (s, b) = h
        .post(
            "/nodes/pve1/qemu/301/clone",
            &[("newid", "499"), ("full", "0"), ("storage", "ceph")],
        )
        .await;
    assert_eq!(
        (s, msg(&b)),
        (500, "parameter 'storage' not allowed for linked clones\n")
    );
}

// ZFSPoolPlugin volume_rollback_is_possible: only the most recent snapshot.
#[tokio::test]
async fn zfs_rolls_back_only_to_the_latest_snapshot() {
    let h = start(storages).await;
    let (_, b) = alloc_fmt(&h, "local-zfs", "300", "vm-300-disk-0", "raw").await;
    vm_with(&h, "300", b["data"].as_str().unwrap()).await;
    for snap in ["s1", "s2"] {
        let r = h
            .post("/nodes/pve1/qemu/300/snapshot", &[("snapname", snap)])
            .await;
        ok_task(&h, r).await;
    }
    let r = h
        .post("/nodes/pve1/qemu/300/snapshot/s1/rollback", &[])
        .await;
    assert_eq!(
        task_error(&h, r).await,
        "can't rollback, 's1' is not most recent snapshot on 'local-zfs:vm-300-disk-0'"
    );
    let r = h
        .post("/nodes/pve1/qemu/300/snapshot/s2/rollback", &[])
        .await;
    ok_task(&h, r).await;
    // Once s2 is gone, s1 is the latest.
    let r = h.delete("/nodes/pve1/qemu/300/snapshot/s2").await;
    ok_task(&h, r).await;
    let r = h
        .post("/nodes/pve1/qemu/300/snapshot/s1/rollback", &[])
        .await;
    ok_task(&h, r).await;
}

// A qcow2 image open in a running VM's QEMU is locked: qemu-img snapshot and convert for the
// stopped VM that owns it fail (Plugin::volume_snapshot runs qemu-img for a VM not running).
#[tokio::test]
async fn qcow2_open_in_a_running_vm_cannot_be_snapshotted_through_its_owner() {
    let h = start(storages).await;
    let (_, b) = alloc_fmt(&h, "local", "300", "vm-300-disk-0.qcow2", "qcow2").await;
    let volid = b["data"].as_str().unwrap().to_string();
    vm_with(&h, "300", &volid).await;
    // Taken while nobody has it open: works, and so does a clone from it.
    let r = h
        .post("/nodes/pve1/qemu/300/snapshot", &[("snapname", "s1")])
        .await;
    ok_task(&h, r).await;
    // The running worker VM 101 opens it.
    let (s, b) = h
        .put("/nodes/pve1/qemu/101/config", &[("scsi5", &volid)])
        .await;
    assert_eq!(s, 200, "{b}");
    let r = h
        .post("/nodes/pve1/qemu/300/snapshot", &[("snapname", "s2")])
        .await;
    let err = task_error(&h, r).await;
    assert!(
        err.starts_with("command '/usr/bin/qemu-img snapshot -c s2 ")
            && err.ends_with("vm-300-disk-0.qcow2' failed: exit code 1"),
        "{err}"
    );
    let r = h
        .post(
            "/nodes/pve1/qemu/300/clone",
            &[("newid", "400"), ("snapname", "s1")],
        )
        .await;
    let err = task_error(&h, r).await;
    assert!(
        err.starts_with("clone failed: copy failed: command '/usr/bin/qemu-img convert"),
        "{err}"
    );
    let r = h.delete("/nodes/pve1/qemu/300/snapshot/s1").await;
    let err = task_error(&h, r).await;
    assert!(err.contains("qemu-img snapshot -d s1"), "{err}");
    // Closed again: the snapshot calls work.
    let (s, b) = h
        .put("/nodes/pve1/qemu/101/unlink", &[("idlist", "scsi5")])
        .await;
    assert_eq!(s, 200, "{b}");
    let r = h
        .post(
            "/nodes/pve1/qemu/300/clone",
            &[("newid", "400"), ("snapname", "s1")],
        )
        .await;
    ok_task(&h, r).await;
    let r = h.delete("/nodes/pve1/qemu/300/snapshot/s1").await;
    ok_task(&h, r).await;
}

// Loop hot-plug of a qcow2 image: the guest sees its decoded contents (a storage daemon's raw
// export backs the loop device), the daemon holds QEMU's image lock, so the owner's
// `qemu-img snapshot` really fails, and a resize of the running disk goes through it
// (qemu-server qemu_block_resize) and reaches the guest's device.
#[tokio::test]
async fn hot_plugged_qcow2_is_decoded_locked_and_grows_live() {
    if !is_root() {
        eprintln!("SKIP: needs root for loop devices and the FUSE export");
        return;
    }
    let h = start(storages).await;
    let (_, b) = alloc_fmt(&h, "local", "300", "vm-300-disk-0.qcow2", "qcow2").await;
    let volid = b["data"].as_str().unwrap().to_string();
    vm_with(&h, "300", &volid).await;
    let image = h
        .sim
        .config()
        .storage("local")
        .unwrap()
        .dir(&h.sim.config().data_dir, "pve1")
        .join("images/300/vm-300-disk-0.qcow2");
    let out = std::process::Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "write -P 0x5a 0 64k"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(out.status.success());
    let wwn = "0x5000c500feedf00d";
    let (s, b) = h
        .put(
            "/nodes/pve1/qemu/101/config",
            &[("scsi5", &format!("{volid},wwn={wwn}"))],
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let dev = h.sim.guest_by_id_dir(101).join(format!("wwn-{wwn}"));
    assert!(is_block_device(&dev), "{} is a block device", dev.display());
    let mut head = vec![0u8; 4096];
    {
        use std::io::Read;
        std::fs::File::open(&dev)
            .unwrap()
            .read_exact(&mut head)
            .unwrap();
    }
    assert!(
        head.iter().all(|b| *b == 0x5a),
        "the guest reads the decoded data"
    );

    // The daemon's lock: qemu-img's own refusal, in the task log.
    let (s, b) = h
        .post("/nodes/pve1/qemu/300/snapshot", &[("snapname", "s1")])
        .await;
    assert_eq!(s, 200, "{b}");
    let upid = b["data"].as_str().unwrap().to_string();
    assert!(h
        .wait("pve1", &upid)
        .await
        .contains("qemu-img snapshot -c s1"));
    let direct = std::process::Command::new("qemu-img")
        .args(["snapshot", "-c", "s1"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&direct.stderr).contains("Failed to get \"write\" lock"),
        "{}",
        String::from_utf8_lossy(&direct.stderr)
    );

    // Grown while running: through the open image, seen by the guest's device.
    let (s, b) = h
        .put(
            "/nodes/pve1/qemu/101/resize",
            &[("disk", "scsi5"), ("size", "8M")],
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(h.wait("pve1", b["data"].as_str().unwrap()).await, "OK");
    let size = {
        use std::io::{Seek, SeekFrom};
        std::fs::File::open(&dev)
            .unwrap()
            .seek(SeekFrom::End(0))
            .unwrap()
    };
    assert_eq!(size, 8 << 20);

    // Unplugged: the lock is gone with the view.
    let (s, b) = h
        .put("/nodes/pve1/qemu/101/unlink", &[("idlist", "scsi5")])
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(!dev.exists());
    let r = h
        .post("/nodes/pve1/qemu/300/snapshot", &[("snapname", "s1")])
        .await;
    ok_task(&h, r).await;
}
