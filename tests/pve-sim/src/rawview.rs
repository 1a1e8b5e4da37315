//! The guest's view of a qcow2 image in loop-device hot-plug: a loop device needs raw bytes,
//! so a hot-plugged qcow2 image is opened by a `qemu-storage-daemon` that exports it, decoded,
//! as a FUSE file, and the loop device is set up on that file. The daemon stands in for the
//! worker VM's QEMU: it holds the image open with QEMU's own image locking, so a `qemu-img`
//! run on the image meanwhile (PVE's snapshot calls for the stopped holder VM) fails as it
//! would on a real node, and a resize of the running disk goes over its QMP socket
//! (`block_resize`, as qemu-server's qemu_block_resize does for a running VM).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Name of the decoded node in the daemon (for `block_resize`).
const NODE: &str = "fmt";

pub struct RawView {
    child: Child,
    /// The FUSE file with the image's raw contents.
    pub file: PathBuf,
    qmp: PathBuf,
}

fn is_mounted(p: &Path) -> bool {
    let Ok(m) = std::fs::read_to_string("/proc/self/mounts") else {
        return false;
    };
    let p = p.to_string_lossy();
    m.lines()
        .any(|l| l.split_whitespace().nth(1) == Some(p.as_ref()))
}

impl RawView {
    /// Exports `image` (in `format`) at `<dir>/<name>.raw`; waits until the export is mounted.
    pub fn start(image: &Path, format: &str, dir: &Path, name: &str) -> Result<RawView, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let file = dir.join(format!("{name}.raw"));
        let qmp = dir.join(format!("{name}.qmp"));
        let _ = std::fs::remove_file(&qmp);
        std::fs::write(&file, b"").map_err(|e| e.to_string())?;
        let child = Command::new("qemu-storage-daemon")
            .arg("--blockdev")
            .arg(format!(
                "driver=file,node-name=file,filename={}",
                image.display()
            ))
            .arg("--blockdev")
            .arg(format!("driver={format},node-name={NODE},file=file"))
            .arg("--export")
            .arg(format!(
                "type=fuse,id=exp,node-name={NODE},mountpoint={},writable=on",
                file.display()
            ))
            .arg("--chardev")
            .arg(format!(
                "socket,id=qmp,path={},server=on,wait=off",
                qmp.display()
            ))
            .arg("--monitor")
            .arg("chardev=qmp")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("qemu-storage-daemon: {e}"))?;
        let mut view = RawView { child, file, qmp };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(is_mounted(&view.file) && view.qmp.exists()) {
            if let Ok(Some(_)) = view.child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = view.child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Err(format!("qemu-storage-daemon: {}", err.trim()));
            }
            if Instant::now() >= deadline {
                view.stop();
                return Err("qemu-storage-daemon: the FUSE export did not appear".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(view)
    }

    /// `block_resize` of the open image to `bytes` over QMP.
    pub fn resize(&self, bytes: u64) -> Result<(), String> {
        let s = UnixStream::connect(&self.qmp).map_err(|e| format!("QMP: {e}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| e.to_string())?;
        let mut r = BufReader::new(s.try_clone().map_err(|e| e.to_string())?);
        let mut w = s;
        let mut line = String::new();
        let mut read = |r: &mut BufReader<UnixStream>| -> Result<serde_json::Value, String> {
            loop {
                line.clear();
                r.read_line(&mut line).map_err(|e| format!("QMP: {e}"))?;
                let v: serde_json::Value =
                    serde_json::from_str(&line).map_err(|e| format!("QMP: {e}: {line}"))?;
                // Events come in between; answers carry `return` or `error`.
                if v.get("event").is_none() {
                    return Ok(v);
                }
            }
        };
        read(&mut r)?; // greeting
        for cmd in [
            serde_json::json!({"execute": "qmp_capabilities"}),
            serde_json::json!({"execute": "block_resize", "arguments": {"node-name": NODE, "size": bytes}}),
        ] {
            writeln!(w, "{cmd}").map_err(|e| format!("QMP: {e}"))?;
            let v = read(&mut r)?;
            if let Some(e) = v.get("error") {
                return Err(e["desc"].as_str().unwrap_or("QMP error").to_string());
            }
        }
        // The kernel caches the FUSE file's size (attribute timeout, 1 s): the loop device
        // can only pick up the new size once the file shows it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::metadata(&self.file).map(|m| m.len()).unwrap_or(0) < bytes {
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} did not grow to {bytes} bytes",
                    self.file.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Ends the export (the image is closed and its lock released).
    pub fn stop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => break,
                _ if Instant::now() >= deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                _ => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        if is_mounted(&self.file) {
            let _ = Command::new("umount").arg("-l").arg(&self.file).status();
        }
        let _ = std::fs::remove_file(&self.file);
        let _ = std::fs::remove_file(&self.qmp);
    }
}

impl Drop for RawView {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}
