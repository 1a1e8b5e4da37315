//! The README's first command with ext4, on this host: it must pass whether
//! or not the host lets a mounted ext4 grow (without CAP_SYS_RESOURCE the
//! sandbox grows it offline and says so).

use std::process::Command;

#[test]
fn sandbox_passes_with_ext4() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIP: the sandbox needs root (loop devices, mkfs, mount); tests/run-all.sh runs as root");
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_proxmox-csi"))
        .args([
            "sandbox",
            "--fs-type",
            "ext4",
            "--size-mib",
            "64",
            "--write-mib",
            "8",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "sandbox failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("sandbox finished: every step passed"),
        "{stdout}"
    );
    assert!(stdout.contains("filesystem now"), "{stdout}");
}

/// `--storage` by PVE storage type: on one without snapshots of a mounted volume (zfspool:
/// copies of detached volumes only) the sandbox says why it skips them and runs every
/// other step; an unknown storage is
/// refused naming the choices.
#[test]
fn sandbox_runs_on_a_storage_type_and_skips_what_it_lacks() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("SKIP: the sandbox needs root (loop devices, mkfs, mount); tests/run-all.sh runs as root");
        return;
    }
    let run = |storage: &str| {
        Command::new(env!("CARGO_BIN_EXE_proxmox-csi"))
            .args([
                "sandbox",
                "--fs-type",
                "ext4",
                "--size-mib",
                "64",
                "--write-mib",
                "4",
                "--storage",
                storage,
            ])
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap()
    };
    let out = run("zfspool");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("on zfspool storage 'local-zfs'"),
        "{stdout}"
    );
    assert!(
        // Its snapshots are copies of a detached volume; the sandbox snapshots a mounted one.
        stdout.contains(
            "snapshot and restore steps skipped: zfspool can snapshot only a detached volume"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains("CreateSnapshot"), "{stdout}");
    assert!(
        stdout.contains("sandbox finished: every step passed"),
        "{stdout}"
    );

    let out = run("nope");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--storage \"nope\"") && stderr.contains("ceph (rbd)"),
        "{stderr}"
    );
}
