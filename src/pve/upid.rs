//! UPID: the id PVE gives a worker task. The node that runs the task is
//! inside it, and task status must be asked of that node.

/// Parsed `UPID:<node>:<pid>:<pstart>:<starttime>:<type>:<id>:<user>:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upid {
    pub node: String,
    pub task_type: String,
    pub id: String,
    pub user: String,
    pub raw: String,
}

impl Upid {
    pub fn parse(s: &str) -> Option<Upid> {
        let s = s.trim();
        let rest = s.strip_prefix("UPID:")?;
        let parts: Vec<&str> = rest.split(':').collect();
        // node, pid, pstart, starttime, type, id, user, "" (trailing colon)
        if parts.len() < 7 || parts[0].is_empty() {
            return None;
        }
        Some(Upid {
            node: parts[0].to_string(),
            task_type: parts[4].to_string(),
            id: parts[5].to_string(),
            user: parts[6].to_string(),
            raw: s.to_string(),
        })
    }
}

/// A task counts as successful when it stopped with "OK" or with warnings.
pub fn exitstatus_is_ok(exitstatus: &str) -> bool {
    exitstatus == "OK" || exitstatus.starts_with("WARNINGS")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upid_fields() {
        let u =
            Upid::parse("UPID:pve1:000A1B2C:0001E240:6745A1B2:qmconfig:101:csi@pve!csi:").unwrap();
        assert_eq!(u.node, "pve1");
        assert_eq!(u.task_type, "qmconfig");
        assert_eq!(u.id, "101");
        assert_eq!(u.user, "csi@pve!csi");
    }

    #[test]
    fn rejects_non_upid() {
        assert!(Upid::parse("pve1:123").is_none());
        assert!(Upid::parse("UPID::1:2:3").is_none());
    }

    #[test]
    fn warnings_count_as_success() {
        assert!(exitstatus_is_ok("OK"));
        assert!(exitstatus_is_ok("WARNINGS: 2"));
        assert!(!exitstatus_is_ok(
            "unable to create image: got lock timeout"
        ));
    }
}
