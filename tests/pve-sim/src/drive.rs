//! Drive property strings (`<volid>,wwn=0x..,serial=..`): parsing and PVE's canonical printing.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub struct Drive {
    pub file: String,
    pub opts: BTreeMap<String, String>,
}

impl Drive {
    pub fn parse(s: &str) -> Drive {
        let mut file = String::new();
        let mut opts = BTreeMap::new();
        for part in s.split(',').filter(|p| !p.is_empty()) {
            match part.split_once('=') {
                Some(("file" | "volume", v)) => file = v.to_string(),
                Some((k, v)) => {
                    opts.insert(k.to_string(), v.to_string());
                }
                None => file = part.to_string(),
            }
        }
        Drive { file, opts }
    }

    /// PVE prints the default key first, then the rest sorted by name.
    pub fn print(&self) -> String {
        let mut out = self.file.clone();
        for (k, v) in &self.opts {
            out.push_str(&format!(",{k}={v}"));
        }
        out
    }

    pub fn is_cdrom(&self) -> bool {
        self.opts.get("media").map(String::as_str) == Some("cdrom") || self.file == "cdrom"
    }

    /// A storage-backed volume id, if the drive refers to one.
    pub fn volid(&self) -> Option<&str> {
        if self.is_cdrom() || self.file == "none" || self.file.starts_with('/') {
            return None;
        }
        self.file.contains(':').then_some(self.file.as_str())
    }

    pub fn wwn(&self) -> Option<&str> {
        self.opts.get("wwn").map(String::as_str)
    }

    pub fn serial(&self) -> Option<&str> {
        self.opts.get("serial").map(String::as_str)
    }
}
