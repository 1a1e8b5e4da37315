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
            "CreateSnapshot",
            "ControllerUnpublishVolume",
            "DeleteSnapshot",
            "DeleteVolume"
        ]
    );
    for o in r["operations"].as_array().unwrap() {
        assert_eq!(o["count"], 3, "{o}");
        assert_eq!(o["errors"], 0, "{o}");
        for k in ["p50_ms", "p90_ms", "p99_ms", "max_ms"] {
            assert!(o[k].as_f64().is_some(), "{k} in {o}");
        }
    }
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
        assert_eq!(cols.len(), 7, "{row}");
        assert_eq!((cols[1], cols[2]), ("2", "0"), "{row}");
    }
    assert!(!stdout.contains("Snapshot"), "{stdout}");
    assert!(stdout.contains("2 of 2 volumes without error"), "{stdout}");
    assert!(stdout.contains("cleanup: ok"), "{stdout}");
}
