//! Conformance with real PVE clients: the simulator driven with the request shapes that
//! public clients written against real Proxmox VE send, and their answers checked the way those
//! clients read them. The shapes are facts taken from the Go CSI driver
//! sergelogvinov/proxmox-csi-plugin (over its libraries sergelogvinov/go-proxmox and
//! luthermonson/go-proxmox): JSON bodies with numbers where Go has ints, node/storage repeated
//! in the body, volume names put raw into the path, UPIDs polled at tasks/{upid}/status; and the
//! form-encoded bodies of pvesh-style clients.

mod support;

use serde_json::json;
use support::*;

/// The Go driver's volume life cycle on thin LVM: find the storage, allocate, attach by wwn,
/// resize, detach, free.
#[tokio::test]
async fn go_csi_driver_volume_lifecycle_on_lvmthin() {
    let h = start(|_| {}).await;
    // GetNodesForStorage / GetClusterStorage: /cluster/resources?type=storage, status available.
    let (s, b) = h.get("/cluster/resources", &[("type", "storage")]).await;
    assert_eq!(s, 200);
    let nodes: Vec<&str> = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["type"] == "storage" && r["storage"] == "local-lvm" && r["status"] == "available"
        })
        .map(|r| r["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, ["pve1", "pve2"]);
    // ClusterStorages: GET /storage.
    let (s, b) = h.get("/storage", &[]).await;
    assert_eq!(s, 200);
    assert!(b["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["storage"] == "local-lvm" && e["type"] == "lvmthin"));
    // GetCapacity: storage status per zone.
    let (s, b) = h.get("/nodes/pve1/storage/local-lvm/status", &[]).await;
    assert_eq!(s, 200);
    assert!(b["data"]["avail"].as_u64().unwrap() > 0 && b["data"]["active"] == 1);
    // GetNextID(vmid): GetWithParams -> query; a taken id is a 400 the client steps over.
    let (s, b) = h.get("/cluster/nextid", &[("vmid", "101")]).await;
    assert_eq!(
        (s, b["errors"]["vmid"].as_str()),
        (400, Some("VM 101 already exists"))
    );
    let (s, b) = h.get("/cluster/nextid", &[("vmid", "9999")]).await;
    assert_eq!((s, b["data"].as_str()), (200, Some("9999")));

    // CreateVMDisk: size in KiB as a bare number string, vmid as a JSON number.
    let (s, b) = h
        .send(
            reqwest::Method::POST,
            "/nodes/pve1/storage/local-lvm/content",
            Body::Json(json!({
                "vmid": 9999, "node": "pve1", "storage": "local-lvm",
                "filename": "vm-9999-pvc-abc", "size": "1048576",
            })),
        )
        .await;
    assert_eq!(
        (s, b["data"].as_str()),
        (200, Some("local-lvm:vm-9999-pvc-abc")),
        "{b}"
    );
    // getVolumeSize: the content listing.
    let (s, b) = h.get("/nodes/pve1/storage/local-lvm/content", &[]).await;
    assert_eq!(s, 200);
    let entry = b["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["volid"] == "local-lvm:vm-9999-pvc-abc")
        .cloned()
        .unwrap();
    assert_eq!(entry["size"], 1u64 << 30);

    // attachVolume: find the VM, Ping (status/current + config), POST config JSON with wwn
    // hex("PVC-ID01"), wait for the qmconfig task.
    let (s, b) = h.get("/cluster/resources", &[("type", "vm")]).await;
    assert_eq!(s, 200);
    assert!(b["data"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["vmid"] == 101 && r["node"] == "pve1"));
    let (s, b) = h.get("/nodes/pve1/qemu/101/status/current", &[]).await;
    assert_eq!((s, b["data"]["status"].as_str()), (200, Some("running")));
    assert_eq!(b["data"]["ha"]["managed"], 0);
    let wwn = "0x5056432d49443031";
    let drive = format!("local-lvm:vm-9999-pvc-abc,backup=0,iothread=1,wwn={wwn}");
    let (s, b) = h
        .send(
            reqwest::Method::POST,
            "/nodes/pve1/qemu/101/config",
            Body::Json(json!({ "scsi1": drive })),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let upid = b["data"].as_str().unwrap().to_string();
    assert!(
        upid.starts_with("UPID:pve1:") && upid.contains(":qmconfig:101:"),
        "{upid}"
    );
    assert_eq!(h.wait("pve1", &upid).await, "OK");
    let current = h.config("pve1", 101, true).await;
    assert_eq!(
        current["scsi1"].as_str(),
        Some(format!("local-lvm:vm-9999-pvc-abc,backup=0,iothread=1,size=1G,wwn={wwn}").as_str())
    );
    if is_root() {
        assert!(is_block_device(
            &h.sim.guest_by_id_dir(101).join(format!("wwn-{wwn}"))
        ));
    }

    // ResizeVMDisk: PUT resize {disk, size "<n>M"} -> UPID.
    let (s, b) = h
        .send(
            reqwest::Method::PUT,
            "/nodes/pve1/qemu/101/resize",
            Body::Json(json!({ "disk": "scsi1", "size": "2048M" })),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(h.wait("pve1", b["data"].as_str().unwrap()).await, "OK");
    assert!(h.config("pve1", 101, true).await["scsi1"]
        .as_str()
        .unwrap()
        .contains("size=2G"));

    // DetachVMDisk: PUT unlink {idlist} answers null (PVE's unlink is synchronous).
    let (s, b) = h
        .send(
            reqwest::Method::PUT,
            "/nodes/pve1/qemu/101/unlink",
            Body::Json(json!({ "idlist": "scsi1" })),
        )
        .await;
    assert_eq!((s, &b["data"]), (200, &serde_json::Value::Null), "{b}");
    assert!(h.config("pve1", 101, true).await.get("scsi1").is_none());

    // The volume copy the driver uses for snapshots/clones is root-only: a token gets 403.
    let (s, b) = h
        .send(
            reqwest::Method::POST,
            "/nodes/pve1/storage/local-lvm/content/vm-9999-pvc-abc",
            Body::Json(json!({ "target": "vm-9999-pvc-copy" })),
        )
        .await;
    assert_eq!(
        (s, b["message"].as_str()),
        (403, Some("Permission check failed (user != root@pam)\n"))
    );

    // DeleteVMDisk: DELETE content/{disk} -> UPID, then WaitFor + ExitStatus.
    let (s, b) = h
        .delete("/nodes/pve1/storage/local-lvm/content/vm-9999-pvc-abc")
        .await;
    assert_eq!(s, 200, "{b}");
    let upid = b["data"].as_str().unwrap().to_string();
    assert!(upid.contains(":imgdel:"), "{upid}");
    assert_eq!(h.wait("pve1", &upid).await, "OK");
    // Deleting again (a retried DeleteVolume) still ends OK on thin LVM.
    let (_, b) = h
        .delete("/nodes/pve1/storage/local-lvm/content/vm-9999-pvc-abc")
        .await;
    assert_eq!(h.wait("pve1", b["data"].as_str().unwrap()).await, "OK");
}

/// The same client on a dir storage: the volume name holds a slash it does not encode.
#[tokio::test]
async fn go_csi_driver_on_dir_storage_uses_raw_slashes() {
    let mut h = start(|_| {}).await;
    let (s, b) = h
        .send(
            reqwest::Method::POST,
            "/nodes/pve1/storage/local/content",
            Body::Json(json!({
                "vmid": 9999, "node": "pve1", "storage": "local",
                "filename": "vm-9999-pvc-d.raw", "size": "1024",
            })),
        )
        .await;
    assert_eq!(
        (s, b["data"].as_str()),
        (200, Some("local:9999/vm-9999-pvc-d.raw")),
        "{b}"
    );
    // The copy as root (ticket), target on the same storage, name relative to it.
    h.login("root@pam", "sim").await;
    let (s, b) = h
        .send(
            reqwest::Method::POST,
            "/nodes/pve1/storage/local/content/9999/vm-9999-pvc-d.raw",
            Body::Json(json!({ "target": "9999/vm-9999-pvc-e.raw" })),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(h.wait("pve1", b["data"].as_str().unwrap()).await, "OK");
    for name in ["vm-9999-pvc-d.raw", "vm-9999-pvc-e.raw"] {
        let (s, b) = h
            .delete(&format!("/nodes/pve1/storage/local/content/9999/{name}"))
            .await;
        assert_eq!(s, 200, "{name}: {b}");
        assert_eq!(h.wait("pve1", b["data"].as_str().unwrap()).await, "OK");
    }
    let (s, b) = h
        .get("/nodes/pve1/storage/local/content", &[("vmid", "9999")])
        .await;
    assert_eq!((s, b["data"].as_array().map(Vec::len)), (200, Some(0)));
}

/// Form-encoded bodies (pvesh, proxmoxer and the PVE web UI send these), booleans as 0/1, and
/// the errors such clients parse: `errors` per parameter on 400, `message` otherwise.
#[tokio::test]
async fn form_clients_and_error_shapes() {
    let h = start(|_| {}).await;
    let (s, b) = h
        .post(
            "/nodes/pve1/storage/local-lvm/content",
            &[("vmid", "9999"), ("filename", "vm-9999-f"), ("size", "4M")],
        )
        .await;
    assert_eq!((s, b["data"].as_str()), (200, Some("local-lvm:vm-9999-f")));
    let (s, b) = h
        .post(
            "/nodes/pve1/storage/local-lvm/content",
            &[("vmid", "9999"), ("filename", "vm-9999-f"), ("size", "4M")],
        )
        .await;
    assert_eq!(s, 500);
    assert!(
        b["message"].as_str().unwrap().contains("already exists"),
        "{b}"
    );
    let (s, b) = h
        .post(
            "/nodes/pve1/storage/local-lvm/content",
            &[("vmid", "x"), ("filename", "vm-9999-g"), ("size", "4M")],
        )
        .await;
    assert_eq!(s, 400);
    assert!(
        b["errors"]["vmid"]
            .as_str()
            .unwrap()
            .starts_with("type check ('integer') failed"),
        "{b}"
    );
    let (s, b) = h.get("/nodes/pve1/storage/nosuch/status", &[]).await;
    assert_eq!(
        (s, b["errors"]["storage"].as_str()),
        (400, Some("No such storage."))
    );
    let (s, b) = h
        .post(
            "/nodes/pve1/qemu/101/config",
            &[("onboot", "1"), ("background_delay", "5")],
        )
        .await;
    assert_eq!((s, &b["data"]), (200, &serde_json::Value::Null), "{b}");
    assert_eq!(h.config("pve1", 101, true).await["onboot"], 1);
}
