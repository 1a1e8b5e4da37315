//! Paging for ListVolumes and ListSnapshots: the token is an index into the
//! sorted list. Validated before any PVE call, so a bad token costs nothing.

use super::error::{ControllerError, Result};

/// A checked page request.
pub struct PageRequest {
    start: usize,
    take: usize,
}

impl PageRequest {
    pub fn parse(max_entries: i32, starting_token: &str) -> Result<PageRequest> {
        if max_entries < 0 {
            return Err(ControllerError::InvalidArgument(
                "max_entries: must not be negative".into(),
            ));
        }
        let start = if starting_token.is_empty() {
            0
        } else {
            starting_token.parse().map_err(|_| {
                ControllerError::Aborted(format!(
                    "starting_token {starting_token:?}: not a token this driver issued"
                ))
            })?
        };
        let take = if max_entries == 0 {
            usize::MAX
        } else {
            max_entries as usize
        };
        Ok(PageRequest { start, take })
    }

    /// The page of `all` and the token for the next one ("" at the end).
    pub fn cut<T: Clone>(&self, all: &[T]) -> Result<(Vec<T>, String)> {
        if self.start > all.len() {
            return Err(ControllerError::Aborted(format!(
                "starting_token {}: past the end of the list ({} entries)",
                self.start,
                all.len()
            )));
        }
        let end = self.start.saturating_add(self.take).min(all.len());
        let next = if end < all.len() {
            end.to_string()
        } else {
            String::new()
        };
        Ok((all[self.start..end].to_vec(), next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_tokens() {
        let all: Vec<u32> = (0..5).collect();
        let p = PageRequest::parse(2, "").unwrap();
        assert_eq!(p.cut(&all).unwrap(), (vec![0, 1], "2".to_string()));
        let p = PageRequest::parse(2, "4").unwrap();
        assert_eq!(p.cut(&all).unwrap(), (vec![4], String::new()));
        assert_eq!(
            PageRequest::parse(0, "")
                .unwrap()
                .cut(&all)
                .unwrap()
                .0
                .len(),
            5
        );
        assert!(matches!(
            PageRequest::parse(0, "x"),
            Err(ControllerError::Aborted(_))
        ));
        assert!(matches!(
            PageRequest::parse(0, "9").unwrap().cut(&all),
            Err(ControllerError::Aborted(_))
        ));
        assert!(matches!(
            PageRequest::parse(-1, ""),
            Err(ControllerError::InvalidArgument(_))
        ));
    }
}
