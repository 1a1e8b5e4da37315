//! A per-storage bound on this controller's concurrent allocations and clones.
//!
//! PVE serializes every allocate, free and clone of a storage behind one lock (pve-storage
//! Plugin::cluster_lock_storage: a cluster-wide pmxcfs lock for shared storages, a node-local
//! flock otherwise) that waits 10 s before failing with "got lock request timeout". Sending
//! PVE more parallel work per storage than it can take in that window only turns waiting into
//! failures, so the controller keeps a few permits per storage and queues the rest itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct StorageLimit {
    permits: usize,
    by_storage: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl StorageLimit {
    /// `permits` concurrent operations per storage; 0 is taken as 1.
    pub fn new(permits: usize) -> StorageLimit {
        StorageLimit {
            permits: permits.max(1),
            by_storage: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for a permit for `storage` of cluster `region`. Node-local storages of the same
    /// id share the permits: a bound per id is the conservative reading of "per storage".
    pub async fn acquire(&self, region: &str, storage: &str) -> OwnedSemaphorePermit {
        let sem = {
            let mut m = self.by_storage.lock().unwrap_or_else(|p| p.into_inner());
            m.entry(format!("{region}/{storage}"))
                .or_insert_with(|| Arc::new(Semaphore::new(self.permits)))
                .clone()
        };
        sem.acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn bounds_each_storage_separately() {
        let l = StorageLimit::new(2);
        let a = l.acquire("r", "s").await;
        let _b = l.acquire("r", "s").await;
        // A third on the same storage waits ...
        let third = tokio::time::timeout(Duration::from_millis(50), l.acquire("r", "s")).await;
        assert!(third.is_err());
        // ... another storage does not.
        let _other = l.acquire("r", "t").await;
        drop(a);
        let third = tokio::time::timeout(Duration::from_millis(50), l.acquire("r", "s")).await;
        assert!(third.is_ok());
    }
}
