//! `proxmox-csi bench` smoke test: tiny runs, checking the report's shape and
//! that the run cleaned up. No timing assertions: figures come from the command.
//! One volume at a time, so the run is sequential and must be free of errors.

use std::process::{Command, Output};

fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_proxmox-csi"))
        .arg("bench")
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

#[test]
fn controller_only_json_report() {
    // --parallel above the per-VM attachment limit is clamped, and says so.
    let out = bench(&[
        "--controller-only",
        "--volumes",
        "1",
        "--parallel",
        "30",
        "--output",
        "json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--parallel 30 clamped to 24"), "{stderr}");
    let out = bench(&[
        "--controller-only",
        "--volumes",
        "3",
        "--parallel",
        "1",
        "--storage",
        "local-lvm",
        "--output",
        "json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\n{stderr}", out.status);
    // Progress: one line per volume, on stderr.
    assert_eq!(
        stderr
            .lines()
            .filter(|l| l.contains(" bench-000") && l.contains(" ok "))
            .count(),
        3,
        "{stderr}"
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["config"]["volumes"], 3);
    assert_eq!(r["config"]["controller_only"], true);
    assert_eq!(r["errors"], 0);
    assert_eq!(r["volumes_ok"], 3);
    assert_eq!(r["cleanup"]["ok"], true, "{}", r["cleanup"]);
    assert!(r["wall_seconds"].as_f64().unwrap() > 0.0);
    let ops: Vec<&str> = r["operations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["operation"].as_str().unwrap())
        .collect();
    assert_eq!(
        ops,
        [
            "CreateVolume",
            "ControllerPublishVolume",
            "ControllerExpandVolume",
            "CreateSnapshot",
            "ControllerUnpublishVolume",
            "DeleteSnapshot",
            "DeleteVolume",
            "ListVolumes",
            "ListSnapshots"
        ]
    );
    for o in r["operations"].as_array().unwrap() {
        // The List calls run once (a second page only when there is one).
        let want = if o["operation"].as_str().unwrap().starts_with("List") {
            1
        } else {
            3
        };
        assert_eq!(o["count"], want, "{o}");
        assert_eq!(o["errors"], 0, "{o}");
        for k in ["p50_ms", "p90_ms", "p95_ms", "p99_ms", "max_ms"] {
            assert!(o[k].as_f64().is_some(), "{k} in {o}");
        }
    }
}

/// The scale flags: existing volumes, worker VMs, the latency model, PVE
/// traffic per call and the parallel-create phase, at a tiny size.
#[test]
fn scale_flags_report_pve_traffic() {
    let out = bench(&[
        "--controller-only",
        "--volumes",
        "2",
        "--parallel",
        "1",
        "--existing",
        "3",
        "--workers",
        "2",
        "--burst-creates",
        "3",
        "--burst-parallel",
        "2",
        "--sim-request-ms",
        "1",
        "--sim-max-workers",
        "3",
        "--sim-task-ms",
        "5",
        "--sim-task-type-ms",
        "qmclone=10",
        "--output",
        "json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\n{stderr}", out.status);
    assert!(stderr.contains("making 3 existing volumes"), "{stderr}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let c = &r["config"];
    assert_eq!(
        (c["existing"].as_u64(), c["workers"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(c["sim_request_ms"], 1);
    assert_eq!(c["sim_max_workers"], 3);
    assert_eq!(c["sim_task_ms"], 5);
    assert_eq!(c["sim_task_type_ms"]["qmclone"], 10);
    assert_eq!(c["pve_counted"], true);
    assert_eq!(r["errors"], 0, "{}", r["error_messages"]);
    assert_eq!(r["cleanup"]["ok"], true, "{}", r["cleanup"]);
    for o in r["operations"].as_array().unwrap() {
        // Every controller call but a List page asks PVE something and gets an
        // answer; a ListSnapshots page of volumes without snapshots can be
        // answered from the client's shared listing view alone.
        let req = o["pve_requests_per_call"].as_f64();
        let bytes = o["pve_response_bytes_per_call"].as_f64();
        assert!(req.is_some() && bytes.is_some(), "counted: {o}");
        if o["operation"] != "ListSnapshots" {
            assert!(req >= Some(1.0) && bytes > Some(0.0), "{o}");
        }
        let (lo, hi) = (
            o["pve_requests_min"].as_u64(),
            o["pve_requests_max"].as_u64(),
        );
        assert!(lo.is_some() && lo <= hi, "{o}");
    }
    let b = &r["parallel_creates"];
    assert_eq!(
        (b["creates"].as_u64(), b["parallel"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(b["create_volume"]["count"], 3);
    assert!(b["creates_per_second"].as_f64().unwrap() > 0.0, "{b}");

    // Text: the two traffic columns beside the latencies, a parallel-creates
    // section; with calls overlapping, no per-call counts.
    let out = bench(&[
        "--controller-only",
        "--volumes",
        "2",
        "--parallel",
        "2",
        "--workers",
        "2",
        "--burst-creates",
        "2",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("cluster: 0 existing volumes") && stdout.contains("2 worker VMs"),
        "{stdout}"
    );
    let header = stdout.lines().find(|l| l.starts_with("operation")).unwrap();
    assert!(header.ends_with("PVE req   PVE KiB"), "{header}");
    let row = stdout
        .lines()
        .find(|l| l.starts_with("ControllerPublishVolume"))
        .unwrap();
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols.len(), 9, "{row}");
    assert_eq!((cols[7], cols[8]), ("-", "-"), "{row}");
    assert!(
        stdout.contains("counted with --parallel 1 only"),
        "{stdout}"
    );
    assert!(
        stdout.contains("parallel creates: 2 CreateVolume, 2 at a time"),
        "{stdout}"
    );
}

#[test]
fn full_lifecycle_text_report() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: node calls need root (loop devices, mkfs, mount)");
        let out = bench(&["--volumes", "1"]);
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("--controller-only"));
        return;
    }
    // A dir storage: no snapshots, so those rows are absent.
    let out = bench(&[
        "--volumes",
        "2",
        "--parallel",
        "1",
        "--storage",
        "local",
        "--fs-type",
        "ext4",
        "--size-mib",
        "64",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for op in [
        "CreateVolume",
        "ControllerPublishVolume",
        "NodeStageVolume",
        "NodePublishVolume",
        "ControllerExpandVolume",
        "NodeUnpublishVolume",
        "NodeUnstageVolume",
        "ControllerUnpublishVolume",
        "DeleteVolume",
    ] {
        let row = stdout
            .lines()
            .find(|l| l.starts_with(op))
            .unwrap_or_else(|| panic!("no {op} row in\n{stdout}"));
        let cols: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cols.len(), 9, "{row}");
        assert_eq!((cols[1], cols[2]), ("2", "0"), "{row}");
    }
    for op in ["CreateSnapshot", "DeleteSnapshot"] {
        assert!(!stdout.contains(op), "{stdout}");
    }
    assert!(stdout.contains("2 of 2 volumes without error"), "{stdout}");
    assert!(stdout.contains("cleanup: ok"), "{stdout}");
}
