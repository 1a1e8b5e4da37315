//! Step 5: each worker VM can take hot-plugged disks.

use super::error::DoctorError;
use super::report::Recorder;
use crate::pve::drive::SCSI_SLOTS;
use crate::pve::types::{VmConfig, VmResource};
use crate::pve::PveClient;

/// The one VM named `node_id`, as the controller resolves it (templates excluded),
/// or why there is not exactly one.
pub(crate) fn find<'a>(guests: &'a [VmResource], node_id: &str) -> Result<&'a VmResource, String> {
    let matches: Vec<&VmResource> = guests
        .iter()
        .filter(|v| v.kind == "qemu" && !v.template && v.name.as_deref() == Some(node_id))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err("no VM has this name (the node id is the VM name; VMs without VM.Audit are hidden from the token)".into()),
        many => {
            let ids: Vec<String> = many.iter().map(|v| v.vmid.to_string()).collect();
            Err(format!("several VMs carry this name ({}); VM names must be unique", ids.join(", ")))
        }
    }
}

/// PVE's `hotplug` option: unset or `1` means its default `network,disk,usb`, `0` means nothing.
pub fn hotplug_allows_disk(value: Option<&str>) -> bool {
    match value.map(str::trim) {
        None | Some("1") => true,
        Some("0") => false,
        Some(list) => list.split(',').any(|f| f.trim() == "disk"),
    }
}

/// scsiN slots a new disk could take.
pub fn free_scsi_slots(cfg: &VmConfig) -> u32 {
    (0..SCSI_SLOTS)
        .filter(|n| cfg.get(&format!("scsi{n}")).is_none())
        .count() as u32
}

pub(crate) async fn check(rec: &mut Recorder, client: &PveClient, node_id: &str, vm: &VmResource) {
    let name = format!("worker {node_id}");
    let status = vm.status.as_deref().unwrap_or("unknown");
    let place = format!("vmid {} on {}", vm.vmid, vm.node);
    if status == "running" {
        rec.pass(name.clone(), format!("{place}, running"));
    } else {
        rec.fail(
            name.clone(),
            format!("{place} is {status}; disks can only be hot-plugged into a running VM"),
        );
    }
    // The running VM's view: a hotplug or controller change still pending does not help yet.
    let cfg = match client.vm_config(&vm.node, vm.vmid, true).await {
        Ok(c) => c,
        Err(e) => {
            rec.fail(
                format!("{name} config"),
                format!("cannot read config: {}", DoctorError::from_pve(&e, true)),
            );
            return;
        }
    };
    let hotplug = cfg.get("hotplug");
    let shown = hotplug.unwrap_or("unset, PVE default network,disk,usb");
    if hotplug_allows_disk(hotplug) {
        rec.pass(format!("{name} hotplug"), format!("hotplug {shown}"));
    } else {
        rec.fail(
            format!("{name} hotplug"),
            format!(
                "hotplug {shown} lacks disk; set it with: qm set {} --hotplug network,disk,usb",
                vm.vmid
            ),
        );
    }
    // PVE's default controller when scsihw is unset is the emulated LSI one.
    let scsihw = cfg.get("scsihw").unwrap_or("lsi");
    if matches!(scsihw, "virtio-scsi-pci" | "virtio-scsi-single") {
        rec.pass(format!("{name} scsihw"), scsihw.to_string());
    } else {
        rec.warn(
            format!("{name} scsihw"),
            format!("{scsihw}: not virtio-scsi; hot-plug and WWNs are tested with virtio-scsi-pci/virtio-scsi-single"),
        );
    }
    let free = free_scsi_slots(&cfg);
    if free == 0 {
        rec.fail(
            format!("{name} slots"),
            format!(
                "all {SCSI_SLOTS} scsi slots (scsi0..scsi{}) are taken",
                SCSI_SLOTS - 1
            ),
        );
    } else {
        rec.pass(
            format!("{name} slots"),
            format!("{free} of {SCSI_SLOTS} scsi slots free"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_hotplug_like_pve() {
        assert!(hotplug_allows_disk(None));
        assert!(hotplug_allows_disk(Some("1")));
        assert!(hotplug_allows_disk(Some("network,disk")));
        assert!(!hotplug_allows_disk(Some("0")));
        assert!(!hotplug_allows_disk(Some("network,usb")));
    }

    #[test]
    fn counts_free_slots() {
        let mut cfg = VmConfig::default();
        assert_eq!(free_scsi_slots(&cfg), 31);
        cfg.entries
            .insert("scsi0".into(), "local:1/vm-1-disk-0.raw".into());
        cfg.entries
            .insert("scsihw".into(), "virtio-scsi-single".into());
        assert_eq!(free_scsi_slots(&cfg), 30);
    }
}
