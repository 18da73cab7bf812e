//! A lease's wait line, one pointer wide while nobody waits: most leases
//! never have a waiter, and an empty `VecDeque` alone takes 32 bytes in
//! every one of them.

use super::Waiter;
use std::collections::VecDeque;

/// Waiters in FIFO order; allocates only while someone waits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
// Boxed on purpose: the point is one pointer per lease, not 32 bytes.
#[allow(clippy::box_collection)]
pub(super) struct Line(Option<Box<VecDeque<Waiter>>>);

impl Line {
    pub(super) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |q| q.len())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Waiter> {
        self.0.iter().flat_map(|q| q.iter())
    }

    pub(super) fn push_back(&mut self, waiter: Waiter) {
        self.0.get_or_insert_default().push_back(waiter);
    }

    pub(super) fn pop_front(&mut self) -> Option<Waiter> {
        let waiter = self.0.as_mut()?.pop_front();
        self.shrink();
        waiter
    }

    pub(super) fn retain(&mut self, keep: impl FnMut(&Waiter) -> bool) {
        if let Some(q) = self.0.as_mut() {
            q.retain(keep);
        }
        self.shrink();
    }

    /// Empties the line, returning who was in it, in order.
    pub(super) fn take(&mut self) -> VecDeque<Waiter> {
        self.0.take().map(|q| *q).unwrap_or_default()
    }

    /// Frees the allocation once the line is empty.
    fn shrink(&mut self) {
        if self.0.as_ref().is_some_and(|q| q.is_empty()) {
            self.0 = None;
        }
    }
}

impl From<VecDeque<Waiter>> for Line {
    fn from(waiters: VecDeque<Waiter>) -> Line {
        let mut line = Line(Some(Box::new(waiters)));
        line.shrink();
        line
    }
}
