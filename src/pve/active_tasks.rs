//! Running tasks of one VM, and who started them: how a controller tells a VM that an
//! earlier instance of itself is still creating from one another Kubernetes cluster's
//! controller is creating on the same Proxmox cluster.

use super::client::PveClient;
use super::error::PveError;
use super::upid::Upid;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct TaskEntry {
    upid: String,
}

impl PveClient {
    /// The principals (`user@realm` or `user@realm!token`, from each UPID) of the running
    /// tasks on `node` that this client may see (pve-manager API2/Tasks.pm node_tasks with
    /// `source=active`: its own tasks, or all with Sys.Audit on /nodes/<node>), of one VM
    /// (the task id is the vmid: a create's new VM, a clone's source) and/or one task type.
    pub async fn active_task_users(
        &self,
        node: &str,
        vmid: Option<u64>,
        task_type: Option<&str>,
    ) -> Result<Vec<String>, PveError> {
        let mut p = vec![("source".to_string(), "active".to_string())];
        if let Some(v) = vmid {
            p.push(("vmid".to_string(), v.to_string()));
        }
        if let Some(t) = task_type {
            p.push(("typefilter".to_string(), t.to_string()));
        }
        let tasks: Vec<TaskEntry> = self.get(&format!("/nodes/{node}/tasks"), &p).await?;
        Ok(tasks
            .iter()
            .filter_map(|t| Upid::parse(&t.upid))
            .map(|u| u.user)
            .collect())
    }
}
