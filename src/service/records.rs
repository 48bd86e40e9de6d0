//! What the tools read back: actions and appeals by id or a page at a time (keyset paging,
//! newest first), and their counts by status.

use std::collections::BTreeMap;
use std::time::SystemTime;

use super::Services;
use crate::domain::{Action, ActionFilter, Appeal, AppealFilter, PageAfter, unix_millis};
use crate::infra::store::StoreError;

/// One page of a listing, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// At most the page size.
    pub items: Vec<T>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<PageAfter>,
}

impl<T> Page<T> {
    /// A page of at most `limit` of `rows`, which were read with a limit of `limit + 1`: the
    /// extra row only says that another page exists.
    pub fn of(mut rows: Vec<T>, limit: u32, key: impl Fn(&T) -> PageAfter) -> Self {
        let next = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(key)
        } else {
            None
        };
        Self { items: rows, next }
    }
}

/// Counts by status over a period.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutcomeCounts {
    /// Actions by status.
    pub actions: BTreeMap<String, u64>,
    /// Appeals by status.
    pub appeals: BTreeMap<String, u64>,
}

impl Services {
    /// The action `id`, if recorded.
    pub async fn action(&self, id: &str) -> Result<Option<Action>, StoreError> {
        self.store.action(id).await
    }

    /// A page of the actions matching `filter`, starting after `after`; `limit` is at least 1.
    pub async fn actions(
        &self,
        filter: &ActionFilter,
        after: Option<&PageAfter>,
        limit: u32,
    ) -> Result<Page<Action>, StoreError> {
        let rows = self.store.actions(filter, after, limit + 1).await?;
        Ok(Page::of(rows, limit, |a| PageAfter {
            created_at_ms: unix_millis(a.created_at),
            id: a.id.clone(),
        }))
    }

    /// The appeal `id`, if filed.
    pub async fn appeal(&self, id: &str) -> Result<Option<Appeal>, StoreError> {
        self.store.appeal(id).await
    }

    /// A page of the appeals matching `filter`, starting after `after`; `limit` is at least 1.
    pub async fn appeals(
        &self,
        filter: &AppealFilter,
        after: Option<&PageAfter>,
        limit: u32,
    ) -> Result<Page<Appeal>, StoreError> {
        let rows = self.store.appeals(filter, None, after, limit + 1).await?;
        Ok(Page::of(rows, limit, |a| PageAfter {
            created_at_ms: unix_millis(a.created_at),
            id: a.id.clone(),
        }))
    }

    /// Every replica's actions and appeals by status, in `channel` (all when `None`), created
    /// since `since` (ever when `None`).
    pub async fn outcome_counts(
        &self,
        channel: Option<&str>,
        since: Option<SystemTime>,
    ) -> Result<OutcomeCounts, StoreError> {
        let (actions, appeals) = tokio::try_join!(
            self.store.action_counts(channel, since),
            self.store.appeal_counts(channel, since),
        )?;
        Ok(OutcomeCounts { actions, appeals })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(row: &(i64, &str)) -> PageAfter {
        PageAfter {
            created_at_ms: row.0,
            id: row.1.to_owned(),
        }
    }

    #[test]
    fn a_page_drops_the_look_ahead_row_and_starts_the_next_after_its_last() {
        let page = Page::of(vec![(5, "c"), (4, "b"), (3, "a")], 2, key);
        assert_eq!(page.items, vec![(5, "c"), (4, "b")]);
        assert_eq!(page.next, Some(key(&(4, "b"))));

        let last = Page::of(vec![(5, "c"), (4, "b")], 2, key);
        assert_eq!(last.items.len(), 2);
        assert_eq!(last.next, None, "no look-ahead row: the last page");
    }
}
