//! Many CreateVolume or DeleteVolume calls, P at a time: the volumes that exist
//! before the timed phases (`--existing`), the parallel-create phase, and their
//! removal. Everything goes through the driver's own CreateVolume, so existing
//! volumes are exactly what the driver makes (holder VMs and all) and stay
//! valid whatever the driver's layout becomes; the run makes and removes them
//! with the simulator's latency model off, so a thousand take seconds, not the
//! many minutes a real cluster's latency would cost.

use super::lifecycle::{call, create_request, Clients, Plan};
use super::report::{Op, Sample};
use crate::csi::DeleteVolumeRequest;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Creates the volumes `names`, `parallel` at a time. Returns the ids made, in
/// no particular order, and every call's sample.
pub(super) async fn create_many(
    c: &Clients,
    plan: &Arc<Plan>,
    names: Vec<String>,
    parallel: usize,
) -> (Vec<String>, Vec<Sample>) {
    let (n, names, c, plan) = (names.len(), Arc::new(names), c.clone(), plan.clone());
    let results = fan_out(parallel, n, move |i| {
        let (mut c, plan, names) = (c.clone(), plan.clone(), names.clone());
        async move {
            let mut s = Vec::new();
            let req = create_request(&plan, &names[i]);
            let r = call(
                &mut s,
                plan.meter.as_ref(),
                Op::CreateVolume,
                c.controller.create_volume(req),
            )
            .await;
            (r.and_then(|r| r.volume).map(|v| v.volume_id), s)
        }
    })
    .await;
    let mut ids = Vec::new();
    let mut samples = Vec::new();
    for (id, s) in results {
        ids.extend(id);
        samples.extend(s);
    }
    (ids, samples)
}

/// Deletes the volumes `ids`, `parallel` at a time; every call's sample.
pub(super) async fn delete_many(c: &Clients, ids: Vec<String>, parallel: usize) -> Vec<Sample> {
    let (n, ids, c) = (ids.len(), Arc::new(ids), c.clone());
    let results = fan_out(parallel, n, move |i| {
        let (mut c, ids) = (c.clone(), ids.clone());
        async move {
            let mut s = Vec::new();
            let req = DeleteVolumeRequest {
                volume_id: ids[i].clone(),
                secrets: Default::default(),
            };
            call(
                &mut s,
                None,
                Op::DeleteVolume,
                c.controller.delete_volume(req),
            )
            .await;
            s
        }
    })
    .await;
    results.into_iter().flatten().collect()
}

/// Runs `job(0..n)` on `parallel` tasks, each taking the next index when done;
/// the results in no particular order.
async fn fan_out<T, F, Fut>(parallel: usize, n: usize, job: F) -> Vec<T>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let job = Arc::new(job);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..parallel.clamp(1, n.max(1)) {
        let (next, job) = (next.clone(), job.clone());
        set.spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    return out;
                }
                out.push(job(i).await);
            }
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        // A panicking task would lose its volumes; make that loud.
        out.extend(r.expect("bench task panicked"));
    }
    out
}
