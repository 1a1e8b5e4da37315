//! Per-key in-flight guard: a second call for a volume (or name) that is
//! still being worked on gets `Aborted` at once instead of racing the first.
//! The CO retries with backoff, which is what the CSI spec asks for.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Default)]
pub struct InFlight {
    keys: Arc<Mutex<HashSet<String>>>,
}

/// Held while an operation runs; releases its key on drop (also on panic or cancel).
pub struct InFlightGuard {
    keys: Arc<Mutex<HashSet<String>>>,
    key: String,
}

impl InFlight {
    /// `None` when another operation holds `key`.
    pub fn try_acquire(&self, key: &str) -> Option<InFlightGuard> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if !keys.insert(key.to_string()) {
            return None;
        }
        Some(InFlightGuard {
            keys: self.keys.clone(),
            key: key.to_string(),
        })
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_acquire_fails_until_release() {
        let f = InFlight::default();
        let g = f.try_acquire("v1").unwrap();
        assert!(f.try_acquire("v1").is_none());
        assert!(f.try_acquire("v2").is_some());
        drop(g);
        assert!(f.try_acquire("v1").is_some());
    }
}
