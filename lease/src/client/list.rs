//! Listing held leases: one linearizable read per page.

use super::{LeaseClient, unexpected};
use crate::command::{ListedHolder, ListedLease, Op, Outcome};
use crate::error::LeaseError;
use crate::table::MAX_LIST_ENTRIES;

/// One page of held names (plain leases, leases bound to a session,
/// semaphores and read-write leases), in name order, as of one point in
/// the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListPage {
    /// The held names of this page: each holder with its stamp, time left,
    /// share and session; the waiters.
    pub leases: Vec<ListedLease>,
    /// Pass to [`LeaseClient::list_page`] as `after` for the next page;
    /// `None` when this page ends the list.
    pub next: Option<String>,
}

impl ListPage {
    /// Every holder on the page with the name it holds, in page order
    /// (a shared name's holders oldest grant first).
    pub fn holders(&self) -> impl Iterator<Item = (&str, &ListedHolder)> {
        self.leases
            .iter()
            .flat_map(|l| l.holders.iter().map(move |h| (l.name.as_str(), h)))
    }
}

impl LeaseClient {
    /// The held names that start with `prefix` (empty: all), in name
    /// order, with every holder (a semaphore's permit holders, a
    /// read-write lease's readers or writer, a lease's session): the first
    /// page, of up to [`MAX_LIST_ENTRIES`] names
    /// (fewer when names and owners are long; see
    /// [`crate::table::MAX_LIST_PAGE_BYTES`]). The page is a linearizable
    /// read: it goes through the log like [`LeaseClient::holder`].
    ///
    /// ```no_run
    /// # async fn run(client: trexlock_lease::LeaseClient) -> Result<(), trexlock_lease::LeaseError> {
    /// let mut page = client.list("jobs/").await?;
    /// loop {
    ///     for lease in &page.leases {
    ///         for holder in &lease.holders {
    ///             println!("{} {} stamp {} {} ms left", lease.name, holder.owner,
    ///                      holder.stamp, holder.remaining_ms);
    ///         }
    ///     }
    ///     let Some(after) = page.next else { break };
    ///     page = client.list_page("jobs/", Some(&after), 100).await?;
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`LeaseError::Invalid`] for a prefix longer than a name; otherwise
    /// as [`LeaseClient::holder`].
    pub async fn list(&self, prefix: &str) -> Result<ListPage, LeaseError> {
        self.list_page(prefix, None, MAX_LIST_ENTRIES).await
    }

    /// One page of the list: names after `after` (the `next` of the page
    /// before), at most `limit` leases. Each page is read at its own point
    /// in the log: a lease granted or released between two pages may be
    /// missed or seen, as with any paged listing.
    ///
    /// # Errors
    /// [`LeaseError::Invalid`] for a limit of 0 or over
    /// [`MAX_LIST_ENTRIES`], or an overlong prefix or `after`; otherwise
    /// as [`LeaseClient::holder`].
    pub async fn list_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: u32,
    ) -> Result<ListPage, LeaseError> {
        let op = Op::List {
            prefix: prefix.to_owned(),
            after: after.map(str::to_owned),
            limit,
        };
        match self.call(op, self.inner.call_timeout).await?.outcome {
            Outcome::Listed { leases, next } => Ok(ListPage { leases, next }),
            other => Err(unexpected(other)),
        }
    }
}
