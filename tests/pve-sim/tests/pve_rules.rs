//! The simulator answers as Proxmox VE's own code does: one test per rule of issue 8, each
//! asserting PVE's status, text and task exit status (the PVE source is cited next to each
//! rule in the simulator).

mod support;

use pve_sim::StorageConfig;
use std::time::Duration;
use support::*;

const WWN: &str = "0x5000c500deadbeef";

// 1. pve-storage Status.pm fragmentDelimiter '' + RESTHandler::map_path_to_methods.
#[tokio::test]
async fn content_volume_takes_the_rest_of_the_path() {
    let h = start(|_| {}).await;
    let (s, b) = h
        .alloc("pve1", "local", "9999", "vm-9999-x.raw", "1024")
        .await;
    assert_eq!(
        (s, b["data"].as_str()),
        (200, Some("local:9999/vm-9999-x.raw"))
    );
    // A raw slash, as a client that does not encode the volume sends it.
    let (s, b) = h
        .get("/nodes/pve1/storage/local/content/9999/vm-9999-x.raw", &[])
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (b["data"]["format"].as_str(), b["data"]["size"].as_u64()),
        (Some("raw"), Some(1 << 20))
    );
    let (s, b) = h
        .send(
            reqwest::Method::DELETE,
            "/nodes/pve1/storage/local/content/9999/vm-9999-x.raw",
            Body::Form(&[]),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(h.wait("pve1", b["data"].as_str().unwrap()).await, "OK");
    let (s, _) = h
        .get("/nodes/pve1/storage/local/content/9999/vm-9999-x.raw", &[])
        .await;
    assert_eq!(s, 500);
    // The encoded form names the same volume.
    let (s, _) = h
        .alloc("pve1", "local", "9999", "vm-9999-y.raw", "1024")
        .await;
    assert_eq!(s, 200);
    let (s, b) = h
        .get(
            "/nodes/pve1/storage/local/content/9999%2Fvm-9999-y.raw",
            &[],
        )
        .await;
    assert_eq!(s, 200, "{b}");
}

// 2. pve-storage API2/Storage/Config.pm index/read ($api_storage_config).
#[tokio::test]
async fn storage_config_is_readable() {
    let h = start(|_| {}).await;
    let (s, b) = h.get("/storage", &[]).await;
    assert_eq!(s, 200, "{b}");
    let list = b["data"].as_array().unwrap();
    let ids: Vec<&str> = list
        .iter()
        .map(|e| e["storage"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["local", "shared", "local-lvm"]);
    let digest = list[0]["digest"].as_str().unwrap();
    assert_eq!(digest.len(), 40);
    assert!(list.iter().all(|e| e["digest"] == digest));
    assert_eq!(
        (list[0]["type"].as_str(), list[0]["content"].as_str()),
        (Some("dir"), Some("images"))
    );
    assert_eq!(list[1]["shared"], 1);
    assert!(list[0].get("shared").is_none());
    let (s, b) = h.get("/storage", &[("type", "lvmthin")]).await;
    assert_eq!(s, 200);
    assert_eq!(b["data"].as_array().unwrap().len(), 1);
    let (s, b) = h.get("/storage/local-lvm", &[]).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (
            b["data"]["type"].as_str(),
            b["data"]["vgname"].as_str(),
            b["data"]["thinpool"].as_str()
        ),
        (Some("lvmthin"), Some("pve"), Some("data"))
    );
    let (s, b) = h.get("/storage/nosuch", &[]).await;
    assert_eq!(
        (s, b["message"].as_str()),
        (500, Some("storage 'nosuch' does not exist\n"))
    );
}

// 3. pve-storage Content.pm copy declares no permissions:
//    pve-access-control RPCEnvironment::check_api2_permissions -> root@pam only.
#[tokio::test]
async fn volume_copy_is_root_only() {
    let mut h = start(|_| {}).await;
    let (s, _) = h
        .alloc("pve1", "local", "9999", "vm-9999-src.raw", "1024")
        .await;
    assert_eq!(s, 200);
    let copy = "/nodes/pve1/storage/local/content/9999/vm-9999-src.raw";
    let (s, b) = h.post(copy, &[("target", "9999/vm-9999-dst.raw")]).await;
    assert_eq!(
        (s, b["message"].as_str()),
        (403, Some("Permission check failed (user != root@pam)\n"))
    );
    h.login("root@pam", "sim").await;
    let (s, b) = h.post(copy, &[("target", "9999/vm-9999-dst.raw")]).await;
    assert_eq!(s, 200, "{b}");
    let upid = b["data"].as_str().unwrap().to_string();
    assert!(upid.contains(":imgcopy:"), "{upid}");
    assert_eq!(h.wait("pve1", &upid).await, "OK");
    let (s, b) = h
        .get(
            "/nodes/pve1/storage/local/content/local:9999%2Fvm-9999-dst.raw",
            &[],
        )
        .await;
    assert_eq!((s, b["data"]["size"].as_u64()), (200, Some(1 << 20)));
}

// 4. pve-storage Status.pm read_status over PVE::Storage::storage_info.
#[tokio::test]
async fn storage_status_for_other_nodes_and_unknown_ids() {
    let h = start(|c| {
        c.storages.push(StorageConfig {
            id: "only2".into(),
            nodes: Some(vec!["pve2".into()]),
            ..Default::default()
        })
    })
    .await;
    let (s, b) = h.get("/nodes/pve1/storage/only2/status", &[]).await;
    assert_eq!(s, 200, "{b}");
    let d = &b["data"];
    assert_eq!(
        (
            d["active"].as_i64(),
            d["enabled"].as_i64(),
            d["total"].as_i64()
        ),
        (Some(0), Some(0), Some(0))
    );
    let (s, b) = h.get("/nodes/pve2/storage/only2/status", &[]).await;
    assert_eq!(
        (
            s,
            b["data"]["active"].as_i64(),
            b["data"]["enabled"].as_i64()
        ),
        (200, Some(1), Some(1))
    );
    let (s, b) = h.get("/nodes/pve1/storage/nosuch/status", &[]).await;
    assert_eq!(
        (s, b["message"].as_str(), b["errors"]["storage"].as_str()),
        (
            400,
            Some("Parameter verification failed.\n"),
            Some("No such storage.")
        )
    );
}

// 5. pve-storage LvmThinPlugin::free_image vs Plugin::free_image.
#[tokio::test]
async fn freeing_a_gone_volume_ends_as_the_plugin_says() {
    let h = start(|_| {}).await;
    let (s, b) = h
        .delete("/nodes/pve1/storage/local-lvm/content/vm-9999-gone")
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(h.wait("pve1", b["data"].as_str().unwrap()).await, "OK");
    let (s, b) = h
        .delete("/nodes/pve1/storage/local/content/9999/vm-9999-gone.raw")
        .await;
    assert_eq!(s, 200, "{b}");
    let upid = b["data"].as_str().unwrap().to_string();
    assert_eq!(h.wait("pve1", &upid).await, "WARNINGS: 1");
    assert!(h.task_log("pve1", &upid).await[0].contains("does not exist"));
}

// 6. lvm2 validate_name (NAME_LEN 128) through pve-storage LVMPlugin::lvcreate.
#[tokio::test]
async fn lvm_names_longer_than_127_are_refused() {
    let h = start(|_| {}).await;
    let name = |len: usize| format!("vm-9999-{}", "a".repeat(len - 8));
    let long = name(128);
    let (s, b) = h.alloc("pve1", "local-lvm", "9999", &long, "4096").await;
    assert_eq!(
        (s, b["message"].as_str().map(str::to_string)),
        (
            500,
            Some(format!(
                "lvcreate 'pve/{long}' error:   Logical volume name \"{long}\" is invalid.\n"
            ))
        )
    );
    let (s, b) = h
        .alloc("pve1", "local-lvm", "9999", &name(127), "4096")
        .await;
    assert_eq!(s, 200, "{b}");
}

// 7a. pve-common JSONSchema pve_verify_dns_name / pve_verify_tag (pve-tag-list).
#[tokio::test]
async fn vm_names_and_tags_use_pve_formats() {
    let h = start(|_| {}).await;
    let (s, b) = h
        .put("/nodes/pve1/qemu/101/config", &[("name", "bad_name")])
        .await;
    assert_eq!(
        (s, b["errors"]["name"].as_str()),
        (
            400,
            Some("invalid format - value does not look like a valid DNS name\n")
        )
    );
    let (s, b) = h
        .put(
            "/nodes/pve1/qemu/101/config",
            &[("name", "csi-holder.vol-1")],
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = h
        .put("/nodes/pve1/qemu/101/config", &[("tags", "bad:tag;ok")])
        .await;
    assert_eq!(
        (s, b["errors"]["tags"].as_str()),
        (400, Some("invalid format - invalid characters in tag\n"))
    );
    let (s, b) = h
        .put(
            "/nodes/pve1/qemu/101/config",
            &[("tags", "csi;k8s.io+x vol_1")],
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = h
        .post("/nodes/pve1/qemu", &[("vmid", "300"), ("name", "-leading")])
        .await;
    assert_eq!(
        (s, b["errors"]["name"].as_str()),
        (
            400,
            Some("invalid format - value does not look like a valid DNS name\n")
        )
    );
}

// 7b. qemu-server API2/Qemu.pm snapshot: reserved names, checked before the config.
#[tokio::test]
async fn reserved_snapshot_names() {
    let h = start(|_| {}).await;
    for (name, want) in [
        (
            "current",
            "unable to use snapshot name 'current' (reserved name)\n",
        ),
        (
            "PENDING",
            "unable to use snapshot name 'pending' (reserved name)\n",
        ),
    ] {
        let (s, b) = h
            .post("/nodes/pve1/qemu/101/snapshot", &[("snapname", name)])
            .await;
        assert_eq!((s, b["message"].as_str()), (500, Some(want)));
    }
    // Before the config is read: also for a VM that does not exist.
    let (s, b) = h
        .post("/nodes/pve1/qemu/4242/snapshot", &[("snapname", "current")])
        .await;
    assert_eq!(
        (s, b["message"].as_str()),
        (
            500,
            Some("unable to use snapshot name 'current' (reserved name)\n")
        )
    );
}

// 7c. qemu-server QemuServer::vm_deviceunplug: "can't unplug bootdisk".
#[tokio::test]
async fn boot_disk_is_not_hot_unplugged() {
    let h = start(|_| {}).await;
    let (s, b) = h
        .post("/nodes/pve1/qemu/101/config", &[("delete", "scsi0")])
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        h.wait("pve1", b["data"].as_str().unwrap()).await,
        "400 Parameter verification failed. scsi0: hotplug problem - can't unplug bootdisk 'scsi0'"
    );
    assert!(h.config("pve1", 101, true).await.get("scsi0").is_some());
    assert_eq!(h.pending_entry("pve1", 101, "scsi0").await["delete"], 1);
    // Stopped, the delete applies (cold: no unplug).
    h.sim.set_vm_running(101, false).unwrap();
    h.sim.set_vm_running(101, true).unwrap();
    assert!(h.config("pve1", 101, true).await.get("scsi0").is_none());
}

// 7d. qemu-server API2/Qemu.pm vm_status + pve-ha-manager HA::Config::get_service_status.
#[tokio::test]
async fn status_current_has_the_ha_object() {
    let h = start(|_| {}).await;
    let (s, b) = h.get("/nodes/pve1/qemu/101/status/current", &[]).await;
    assert_eq!(s, 200);
    assert_eq!(b["data"]["ha"], serde_json::json!({ "managed": 0 }));
}

// 7e/7f. What the guest sees of a hot-plugged QEMU scsi-hd: by-id names and sysfs identity.
#[tokio::test]
async fn guest_sees_by_id_links_and_sysfs_identity() {
    if !is_root() {
        eprintln!("SKIP: needs root for loop devices");
        return;
    }
    let h = start(|_| {}).await;
    let (_, b) = h
        .alloc("pve1", "local", "101", "vm-101-id.raw", "1024")
        .await;
    let volid = b["data"].as_str().unwrap().to_string();
    let (s, b) = h
        .put(
            "/nodes/pve1/qemu/101/config",
            &[("scsi3", &format!("{volid},wwn={WWN}"))],
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let dir = h.sim.guest_by_id_dir(101);
    let by_wwn = dir.join(format!("wwn-{WWN}"));
    let by_drive = dir.join("scsi-0QEMU_QEMU_HARDDISK_drive-scsi3");
    assert!(is_block_device(&by_wwn) && is_block_device(&by_drive));
    let dev = std::fs::canonicalize(&by_wwn).unwrap();
    let sys = h
        .sim
        .guest_sys_block_dir(101)
        .join(dev.file_name().unwrap())
        .join("device");
    assert_eq!(
        std::fs::read_to_string(sys.join("wwid")).unwrap().trim(),
        "naa.5000c500deadbeef"
    );
    assert_eq!(
        std::fs::read_to_string(sys.join("vendor")).unwrap().trim(),
        "QEMU"
    );
    // With a serial, udev names it by the serial instead.
    let (_, b) = h
        .alloc("pve1", "local", "101", "vm-101-sn.raw", "1024")
        .await;
    let v2 = b["data"].as_str().unwrap().to_string();
    let (s, _) = h
        .put(
            "/nodes/pve1/qemu/101/config",
            &[("scsi4", &format!("{v2},serial=SN1"))],
        )
        .await;
    assert_eq!(s, 200);
    assert!(is_block_device(&dir.join("scsi-0QEMU_QEMU_HARDDISK_SN1")));
    assert!(!dir.join("scsi-0QEMU_QEMU_HARDDISK_drive-scsi4").exists());
    let (s, _) = h
        .put("/nodes/pve1/qemu/101/unlink", &[("idlist", "scsi3")])
        .await;
    assert_eq!(s, 200);
    assert!(!sys.exists() && std::fs::symlink_metadata(&by_drive).is_err());
}

// 8. qemu-server lock_config (in the worker) and pve-storage cluster_lock_storage.
#[tokio::test]
async fn storage_allocation_lock_per_storage() {
    let h = start(|c| {
        c.storage_op_ms = 600;
        c.storage_lock_timeout_ms = 200;
    })
    .await;
    let alloc = |st: &'static str, node: &'static str, name: &'static str| {
        let h = &h;
        async move { h.alloc(node, st, "9999", name, "1024").await }
    };
    // Local storage: one flock per node; the second allocation on the node times out.
    let (a, b, c) = tokio::join!(
        alloc("local", "pve1", "vm-9999-a.raw"),
        alloc("local", "pve1", "vm-9999-b.raw"),
        alloc("local", "pve2", "vm-9999-c.raw"),
    );
    let mut both = [a.clone(), b.clone()];
    both.sort_by_key(|r| r.0);
    assert_eq!(both[0].0, 200, "{:?}", both);
    assert_eq!(
        (both[1].0, both[1].1["message"].as_str()),
        (
            500,
            Some("can't lock file '/var/lock/pve-manager/pve-storage-local' - got timeout\n")
        )
    );
    assert_eq!(c.0, 200, "other node, other lock: {:?}", c);
    // Shared storage: one cluster-wide lock.
    let (a, b) = tokio::join!(
        alloc("shared", "pve1", "vm-9999-d.raw"),
        alloc("shared", "pve2", "vm-9999-e.raw"),
    );
    let mut both = [a, b];
    both.sort_by_key(|r| r.0);
    assert_eq!(both[0].0, 200);
    assert_eq!(
        (both[1].0, both[1].1["message"].as_str()),
        (
            500,
            Some("cfs-lock 'storage-shared' error: got lock request timeout\n")
        )
    );
}

#[tokio::test]
async fn parallel_clones_fail_on_the_storage_lock() {
    let h = start(|c| {
        c.storage_op_ms = 600;
        c.storage_lock_timeout_ms = 200;
    })
    .await;
    let (s, b) = h
        .post(
            "/nodes/pve1/qemu",
            &[("vmid", "300"), ("name", "src"), ("scsi0", "shared:1")],
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(h.wait("pve1", b["data"].as_str().unwrap()).await, "OK");
    let clone = |newid: &'static str| {
        let h = &h;
        async move {
            let (s, b) = h
                .post(
                    "/nodes/pve1/qemu/300/clone",
                    &[("newid", newid), ("full", "1")],
                )
                .await;
            assert_eq!(s, 200, "{b}");
            h.wait("pve1", b["data"].as_str().unwrap()).await
        }
    };
    let (a, b) = tokio::join!(clone("301"), clone("302"));
    let mut both = [a, b];
    both.sort();
    assert_eq!(
        both,
        [
            "OK".to_string(),
            "clone failed: cfs-lock 'storage-shared' error: got lock request timeout".to_string()
        ]
    );
}

// 9. qemu-server vm_deviceunplug/qemu_devicedelverify and Blockdev::attach's throttle group.
#[tokio::test]
async fn unplug_waits_for_the_guest_and_leaves_the_throttle_group() {
    if !is_root() {
        eprintln!("SKIP: needs root for loop devices");
        return;
    }
    let h = start(|c| c.unplug_verify_ms = 400).await;
    let (_, b) = h
        .alloc("pve1", "local", "101", "vm-101-busy.raw", "1024")
        .await;
    let volid = b["data"].as_str().unwrap().to_string();
    let (s, _) = h
        .put(
            "/nodes/pve1/qemu/101/config",
            &[("scsi1", &format!("{volid},wwn={WWN}"))],
        )
        .await;
    assert_eq!(s, 200);
    let link = h.sim.guest_by_id_dir(101).join(format!("wwn-{WWN}"));
    let dev = std::fs::canonicalize(&link).unwrap();

    // Released within the verify period: the unplug completes.
    let held = std::fs::File::open(&dev).unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(held);
    });
    let (s, b) = h
        .put("/nodes/pve1/qemu/101/unlink", &[("idlist", "scsi1")])
        .await;
    assert_eq!(s, 200, "{b}");
    release.await.unwrap();
    assert!(std::fs::symlink_metadata(&link).is_err());

    // Held past it: refused, still attached, the delete stays pending.
    let (s, _) = h
        .put(
            "/nodes/pve1/qemu/101/config",
            &[("scsi1", &format!("{volid},wwn={WWN}"))],
        )
        .await;
    assert_eq!(s, 200);
    let dev = std::fs::canonicalize(&link).unwrap();
    let held = std::fs::File::open(&dev).unwrap();
    let started = std::time::Instant::now();
    let (s, b) = h
        .put("/nodes/pve1/qemu/101/unlink", &[("idlist", "scsi1")])
        .await;
    assert!(started.elapsed() >= Duration::from_millis(400));
    assert_eq!(
        (s, b["errors"]["scsi1"].as_str()),
        (
            400,
            Some(
                "hotplug problem - error on hot-unplugging device 'scsi1' - still busy in guest?\n"
            )
        )
    );
    assert!(is_block_device(&link));
    assert!(h.config("pve1", 101, true).await.get("scsi1").is_some());
    assert_eq!(h.pending_entry("pve1", 101, "scsi1").await["delete"], 1);

    // The guest lets go later: QEMU drops the device without qemu_drivedel ...
    drop(held);
    let (s, b) = h
        .put("/nodes/pve1/qemu/101/unlink", &[("idlist", "scsi1")])
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(h.config("pve1", 101, true).await.get("scsi1").is_none());
    // ... so the next attach to that slot meets the left-over throttle group.
    let (_, b) = h
        .alloc("pve1", "local", "101", "vm-101-next.raw", "1024")
        .await;
    let next = b["data"].as_str().unwrap().to_string();
    let (s, b) = h
        .post("/nodes/pve1/qemu/101/config", &[("scsi1", &next)])
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        h.wait("pve1", b["data"].as_str().unwrap()).await,
        "400 Parameter verification failed. scsi1: hotplug problem - attempt to add duplicate property 'throttle-drive-scsi1' to object (type 'container')"
    );
    assert!(h.config("pve1", 101, true).await.get("scsi1").is_none());
    assert!(h.config("pve1", 101, false).await.get("scsi1").is_some());
    // Another slot is fine; a VM restart (new QEMU) clears the slot.
    let (s, _) = h
        .post("/nodes/pve1/qemu/101/config", &[("revert", "scsi1")])
        .await;
    assert_eq!(s, 200);
    let (s, b) = h
        .put("/nodes/pve1/qemu/101/config", &[("scsi2", &next)])
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, _) = h
        .put("/nodes/pve1/qemu/101/config", &[("delete", "scsi2")])
        .await;
    assert_eq!(s, 200);
    h.sim.set_vm_running(101, false).unwrap();
    h.sim.set_vm_running(101, true).unwrap();
    let (s, b) = h
        .put("/nodes/pve1/qemu/101/config", &[("scsi1", &next)])
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(is_block_device(
        &h.sim
            .guest_by_id_dir(101)
            .join("scsi-0QEMU_QEMU_HARDDISK_drive-scsi1")
    ));
}

// 10. qemu-server $update_vm_api: early checks, then the worker (lock, pending, hot-plug).
#[tokio::test]
async fn config_task_fails_after_writing_pending_in_pve_order() {
    let h = start(|_| {}).await;
    // Early checks answer the request itself, before any task.
    let (s, b) = h
        .post(
            "/nodes/pve1/qemu/101/config",
            &[("description", "x"), ("digest", "0000")],
        )
        .await;
    assert_eq!(
        (s, b["message"].as_str()),
        (
            500,
            Some("checksum mismatch (file change by other user?)\n")
        )
    );
    // A hot-plug failure is the task's: the pending section is written first.
    let (s, b) = h
        .post(
            "/nodes/pve1/qemu/101/config",
            &[("scsi5", "local:9999/vm-9999-missing.raw")],
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let upid = b["data"].as_str().unwrap().to_string();
    let exit = h.wait("pve1", &upid).await;
    assert_eq!(exit, "volume local:9999/vm-9999-missing.raw does not exist");
    let (_, b) = h
        .alloc("pve1", "local", "9999", "vm-9999-foreign.raw", "1024")
        .await;
    let volid = b["data"].as_str().unwrap().to_string();
    h.sim
        .faults()
        .add(pve_sim::Fault {
            method: None,
            path_regex: "/qemu/101/config$".into(),
            action: pve_sim::FaultAction::HotplugError("QEMU says no".into()),
            count: Some(1),
            skip: None,
        })
        .unwrap();
    let (s, b) = h
        .post(
            "/nodes/pve1/qemu/101/config",
            &[("scsi5", &volid), ("description", "d")],
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let upid = b["data"].as_str().unwrap().to_string();
    assert_eq!(
        h.wait("pve1", &upid).await,
        "400 Parameter verification failed. scsi5: hotplug problem - QEMU says no"
    );
    let log = h.task_log("pve1", &upid).await;
    assert!(log[0].starts_with("update VM 101: "), "{log:?}");
    assert!(
        log.iter()
            .any(|l| l == "scsi5: hotplug problem - QEMU says no"),
        "{log:?}"
    );
    assert_eq!(
        log.last().map(String::as_str),
        Some(
            "TASK ERROR: 400 Parameter verification failed. scsi5: hotplug problem - QEMU says no"
        )
    );
    // Written: the disk is pending, the fast-plug option applied.
    assert!(h.config("pve1", 101, true).await.get("scsi5").is_none());
    assert!(h.config("pve1", 101, false).await["scsi5"]
        .as_str()
        .unwrap()
        .starts_with(&volid));
    assert_eq!(h.config("pve1", 101, true).await["description"], "d");
    // background_delay: a worker that failed in time is the request's 500.
    h.sim
        .faults()
        .add(pve_sim::Fault {
            method: None,
            path_regex: "/qemu/101/config$".into(),
            action: pve_sim::FaultAction::HotplugError("QEMU says no".into()),
            count: Some(1),
            skip: None,
        })
        .unwrap();
    let (s, b) = h
        .post(
            "/nodes/pve1/qemu/101/config",
            &[("scsi5", &volid), ("background_delay", "5")],
        )
        .await;
    assert_eq!(
        (s, b["message"].as_str()),
        (500, Some("failed to update VM 101: 400 Parameter verification failed. scsi5: hotplug problem - QEMU says no\n"))
    );
}
