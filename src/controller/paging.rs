//! Paging for ListVolumes and ListSnapshots: entries are ordered by a key
//! the VM listing alone gives (region, holder vmid, snapshot name), and the
//! token is the key of the next page's first entry. A page then costs reads
//! for its own entries only, and resumes where it should when entries were
//! added or removed between pages (an index would shift). Tokens are checked
//! before any PVE call, so a bad one costs nothing.

use super::error::{ControllerError, Result};

/// Where an entry sits in a listing.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct PageKey {
    pub region: String,
    pub vmid: u64,
    /// The snapshot name; empty for volumes.
    pub name: String,
}

impl PageKey {
    pub fn new(region: &str, vmid: u64, name: &str) -> PageKey {
        PageKey {
            region: region.to_string(),
            vmid,
            name: name.to_string(),
        }
    }

    fn token(&self) -> String {
        format!("{}/{}/{}", self.region, self.vmid, self.name)
    }

    fn parse(token: &str) -> Option<PageKey> {
        let mut parts = token.splitn(3, '/');
        let region = parts.next()?;
        let vmid = parts.next()?.parse().ok()?;
        let name = parts.next()?;
        (!region.is_empty()).then(|| PageKey::new(region, vmid, name))
    }
}

/// A checked page request.
pub struct PageRequest {
    from: Option<PageKey>,
    take: usize,
}

impl PageRequest {
    pub fn parse(max_entries: i32, starting_token: &str) -> Result<PageRequest> {
        if max_entries < 0 {
            return Err(ControllerError::InvalidArgument(
                "max_entries: must not be negative".into(),
            ));
        }
        let from = if starting_token.is_empty() {
            None
        } else {
            Some(PageKey::parse(starting_token).ok_or_else(|| {
                ControllerError::Aborted(format!(
                    "starting_token {starting_token:?}: not a token this driver issued"
                ))
            })?)
        };
        let take = if max_entries == 0 {
            usize::MAX
        } else {
            max_entries as usize
        };
        Ok(PageRequest { from, take })
    }

    /// The page of `all` (any order; sorted here by key) and the token for
    /// the next one ("" at the end).
    pub fn cut<T>(&self, mut all: Vec<(PageKey, T)>) -> (Vec<(PageKey, T)>, String) {
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let mut rest = all
            .into_iter()
            .skip_while(|(k, _)| self.from.as_ref().is_some_and(|f| k < f));
        let page: Vec<(PageKey, T)> = rest.by_ref().take(self.take).collect();
        let next = rest.next().map(|(k, _)| k.token()).unwrap_or_default();
        (page, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(n: u64) -> Vec<(PageKey, u64)> {
        (0..n)
            .rev()
            .map(|i| (PageKey::new("r", 100 + i, ""), i))
            .collect()
    }

    #[test]
    fn pages_and_tokens() {
        let p = PageRequest::parse(2, "").unwrap();
        let (page, next) = p.cut(keys(5));
        assert_eq!(page.iter().map(|e| e.1).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(next, "r/102/");
        let (page, next) = PageRequest::parse(2, &next).unwrap().cut(keys(5));
        assert_eq!(page.iter().map(|e| e.1).collect::<Vec<_>>(), vec![2, 3]);
        let (page, next) = PageRequest::parse(2, &next).unwrap().cut(keys(5));
        assert_eq!(page.iter().map(|e| e.1).collect::<Vec<_>>(), vec![4]);
        assert_eq!(next, "");
        assert_eq!(PageRequest::parse(0, "").unwrap().cut(keys(5)).0.len(), 5);
        // The next page's first entry was removed: the page starts after it.
        let mut fewer = keys(5);
        fewer.retain(|e| e.1 != 2);
        let (page, _) = PageRequest::parse(2, "r/102/").unwrap().cut(fewer);
        assert_eq!(page.iter().map(|e| e.1).collect::<Vec<_>>(), vec![3, 4]);
        for bad in ["x", "bogus", "r/x/", "/1/", "invalid-token"] {
            assert!(
                matches!(PageRequest::parse(0, bad), Err(ControllerError::Aborted(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            PageRequest::parse(-1, ""),
            Err(ControllerError::InvalidArgument(_))
        ));
    }
}
