//! The List calls, once per run after the lifecycle phase: the first page of
//! ListVolumes and ListSnapshots and, when there is one, the page after it
//! (a token that resumes must not cost a whole listing again). Page size as a
//! CO would ask; one call at a time, so their PVE traffic is theirs.

use super::lifecycle::{call, Clients, Plan};
use super::report::{Op, Sample};
use crate::csi::{ListSnapshotsRequest, ListVolumesRequest};

/// Entries asked for per page (external-snapshotter and external-health-monitor
/// page their lists; 100 is a plain choice, not theirs).
pub(super) const PAGE: i32 = 100;

pub(super) async fn list_pages(c: &mut Clients, plan: &Plan, s: &mut Vec<Sample>) {
    let meter = plan.meter.as_ref();
    let mut token = String::new();
    for _ in 0..2 {
        let req = ListVolumesRequest {
            max_entries: PAGE,
            starting_token: token.clone(),
        };
        match call(s, meter, Op::ListVolumes, c.controller.list_volumes(req)).await {
            Some(r) if !r.next_token.is_empty() => token = r.next_token,
            _ => break,
        }
    }
    let mut token = String::new();
    for _ in 0..2 {
        let req = ListSnapshotsRequest {
            max_entries: PAGE,
            starting_token: token.clone(),
            ..Default::default()
        };
        match call(
            s,
            meter,
            Op::ListSnapshots,
            c.controller.list_snapshots(req),
        )
        .await
        {
            Some(r) if !r.next_token.is_empty() => token = r.next_token,
            _ => break,
        }
    }
}
