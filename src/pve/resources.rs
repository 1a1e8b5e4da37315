//! A short-lived view of `GET /cluster/resources`, shared by the calls of
//! one client.
//!
//! Nearly every CSI call needs the cluster's VM list (holders, the worker
//! VM of a node, free vmids) and its storage list, and each read costs the
//! whole list (hundreds of kilobytes at a thousand volumes). The view is one
//! unfiltered read that answers both, reused until it is `ttl` old or this
//! client writes anything (every non-GET request and every finished task
//! invalidates it), so a call sees its own writes and at most `ttl`-old
//! changes of other writers. Concurrent readers wait for one fetch instead
//! of each sending their own.

use super::types::{StorageResource, VmResource};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// VMs (qemu only) and storages from one read.
#[derive(Debug, Clone, Default)]
pub struct Resources {
    pub vms: Vec<VmResource>,
    pub storages: Vec<StorageResource>,
}

impl Resources {
    /// Split an unfiltered `/cluster/resources` answer by entry type; other
    /// types (node, pool, sdn, lxc) are not the driver's.
    pub fn from_entries(entries: Vec<serde_json::Value>) -> Result<Resources, String> {
        let mut out = Resources::default();
        for e in entries {
            match e.get("type").and_then(|t| t.as_str()) {
                Some("qemu") => out
                    .vms
                    .push(serde_json::from_value(e).map_err(|err| format!("VM entry: {err}"))?),
                Some("storage") => out.storages.push(
                    serde_json::from_value(e).map_err(|err| format!("storage entry: {err}"))?,
                ),
                _ => {}
            }
        }
        Ok(out)
    }
}

struct Entry {
    generation: u64,
    at: Instant,
    view: Arc<Resources>,
}

pub struct ResourceCache {
    ttl: Duration,
    generation: AtomicU64,
    slot: tokio::sync::Mutex<Option<Entry>>,
}

impl ResourceCache {
    pub fn new(ttl: Duration) -> ResourceCache {
        ResourceCache {
            ttl,
            generation: AtomicU64::new(0),
            slot: tokio::sync::Mutex::new(None),
        }
    }

    /// Forget the view: something was written.
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The current view, fetched by `fetch` if there is none that is fresh.
    /// A write while the fetch runs leaves its result unused by later calls
    /// (it may predate the write).
    pub async fn get<F, Fut, E>(&self, fetch: F) -> Result<Arc<Resources>, E>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Resources, E>>,
    {
        let mut slot = self.slot.lock().await;
        let generation = self.generation.load(Ordering::SeqCst);
        if let Some(e) = slot.as_ref() {
            if e.generation == generation && e.at.elapsed() < self.ttl {
                return Ok(e.view.clone());
            }
        }
        let at = Instant::now();
        let view = Arc::new(fetch().await?);
        *slot = Some(Entry {
            generation,
            at,
            view: view.clone(),
        });
        Ok(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn reused_until_a_write_or_the_ttl() {
        let cache = ResourceCache::new(Duration::from_millis(200));
        let fetches = AtomicUsize::new(0);
        let fetch = || async {
            fetches.fetch_add(1, Ordering::SeqCst);
            Ok::<_, ()>(Resources::default())
        };
        cache.get(fetch).await.unwrap();
        cache.get(fetch).await.unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 1);
        cache.invalidate();
        cache.get(fetch).await.unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        tokio::time::sleep(Duration::from_millis(250)).await;
        cache.get(fetch).await.unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn splits_entries_by_type() {
        let entries = vec![
            serde_json::json!({"type": "qemu", "vmid": 101, "node": "pve1", "name": "w"}),
            serde_json::json!({"type": "lxc", "vmid": 200, "node": "pve1"}),
            serde_json::json!({"type": "node", "node": "pve1"}),
            serde_json::json!({"type": "storage", "storage": "local", "node": "pve1", "content": "images", "shared": 0}),
        ];
        let r = Resources::from_entries(entries).unwrap();
        assert_eq!(r.vms.len(), 1);
        assert_eq!(r.storages.len(), 1);
    }
}
