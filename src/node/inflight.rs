//! Refuses overlapping operations on the same volume.
//!
//! The CO may retry an RPC while the first attempt is still formatting or
//! mounting; letting both run would race on the same device. CSI asks for
//! ABORTED in that case, and the CO retries later.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use super::error::NodeError;

#[derive(Debug, Default, Clone)]
pub struct InFlight {
    busy: Arc<Mutex<HashSet<String>>>,
}

/// Marks a volume busy until dropped, so early returns and panics release it.
#[derive(Debug)]
pub struct Guard {
    busy: Arc<Mutex<HashSet<String>>>,
    volume_id: String,
}

impl InFlight {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn begin(&self, volume_id: &str) -> Result<Guard, NodeError> {
        let mut set = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert(volume_id.to_string()) {
            return Err(NodeError::Busy(volume_id.to_string()));
        }
        Ok(Guard {
            busy: Arc::clone(&self.busy),
            volume_id: volume_id.to_string(),
        })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let mut set = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        set.remove(&self.volume_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_begin_is_refused_until_release() {
        let f = InFlight::new();
        let g = f.begin("r/z/s/v").unwrap();
        assert!(matches!(f.begin("r/z/s/v"), Err(NodeError::Busy(_))));
        assert!(f.begin("r/z/s/other").is_ok());
        drop(g);
        assert!(f.begin("r/z/s/v").is_ok());
    }
}
