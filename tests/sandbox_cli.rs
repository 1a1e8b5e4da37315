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
