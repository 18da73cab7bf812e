//! The replica's side of membership changes (the method and why it is
//! safe are in the crate's `membership` module): which membership governs
//! a slot, who to talk to, proposing a change, and leaving.

use super::{Ready, Replica, Role};
use crate::error::PaxosError;
use crate::membership::{self, Change, ChangeError, Epoch, History, Membership};
use crate::types::{NodeId, Slot, Snapshot, Value};
use std::collections::BTreeSet;
use std::time::Duration;

/// How many election timeouts a removed node keeps answering before it
/// reports itself removed.
pub const REMOVAL_GRACE_TIMEOUTS: u32 = 10;

/// The history a recovered snapshot carries (`None` for an unframed one).
pub(super) fn snapshot_history(snapshot: &Snapshot) -> Result<Option<History>, PaxosError> {
    membership::unframe(&snapshot.data)
        .map(|framed| framed.map(|(history, _)| history))
        .map_err(PaxosError::InconsistentJournal)
}

/// The application's part of a snapshot the replica framed.
pub(super) fn application_snapshot(snapshot: &Snapshot) -> Snapshot {
    let data = match membership::unframe(&snapshot.data) {
        Ok(Some((_, data))) => data,
        // Checked when the snapshot was recovered or received.
        _ => snapshot.data.clone(),
    };
    Snapshot {
        slot: snapshot.slot,
        data,
    }
}

impl Replica {
    /// The newest membership chosen (it may not govern yet: see
    /// [`Replica::membership_in_effect`]).
    pub fn membership(&self) -> &Membership {
        &self.history.latest().membership
    }

    /// The slot from which [`Replica::membership`] governs.
    pub fn membership_effective(&self) -> Slot {
        self.history.latest().effective
    }

    /// The membership governing this replica's first unchosen slot.
    pub fn membership_in_effect(&self) -> &Membership {
        &self.governing(self.committed.saturating_add(1)).membership
    }

    /// True once this node, a member before, has been out of the
    /// membership in effect for [`REMOVAL_GRACE_TIMEOUTS`] election
    /// timeouts: it was removed, and must stop serving. Until then it
    /// still answers, since peers that have not yet learned every slot
    /// before the change may need its votes for them; a removed leader
    /// first hands over (see `fill_window`).
    pub fn is_removed(&self) -> bool {
        self.removed_at.is_some_and(|(since, now)| {
            now.saturating_sub(since) >= self.cfg.election_timeout * REMOVAL_GRACE_TIMEOUTS
        })
    }

    /// Notes when this node left the membership in effect (see
    /// [`Replica::is_removed`]).
    pub(super) fn note_removal(&mut self, now: Duration) {
        let out = self.joined
            && !self.is_leader()
            && !self.membership_in_effect().contains(self.cfg.node)
            && !self.membership().contains(self.cfg.node);
        self.removed_at = match self.removed_at {
            Some((since, _)) if out => Some((since, now)),
            None if out => Some((now, now)),
            _ => None,
        };
    }

    /// At the leader: the highest slot each peer is known to hold (from its
    /// votes and heartbeat answers), for lag reports and promotions.
    pub fn peer_progress(&self) -> Vec<(NodeId, Slot)> {
        match &self.role {
            Role::Leader(l) => l.progress.iter().map(|(n, s)| (*n, *s)).collect(),
            _ => Vec::new(),
        }
    }

    /// Proposes a membership change (leader only): one at a time, a
    /// learner promoted only once caught up, and never a change that
    /// leaves the voters this leader hears from short of a majority.
    ///
    /// # Errors
    /// A [`ChangeError`] saying why nothing was proposed.
    pub fn change_membership(
        &mut self,
        now: Duration,
        change: Change,
    ) -> Result<Ready, ChangeError> {
        if self.stopped {
            return Err(ChangeError::Stopped);
        }
        let next = self.check_change(now, &change)?;
        let Role::Leader(leader) = &mut self.role else {
            return Err(ChangeError::NotLeader {
                leader: self.leader_hint,
            });
        };
        leader.changes.push_back(next);
        self.fill_window(now);
        self.finish(Ok(())).map_err(|_| ChangeError::Stopped)
    }

    fn check_change(&self, now: Duration, change: &Change) -> Result<Membership, ChangeError> {
        let Role::Leader(leader) = &self.role else {
            return Err(ChangeError::NotLeader {
                leader: self.leader_hint,
            });
        };
        let latest = self.history.latest();
        let proposed = leader.changes.back().or_else(|| {
            leader
                .in_flight
                .values()
                .rev()
                .find_map(|f| match &f.value {
                    Value::Reconfig(m) => Some(m),
                    _ => None,
                })
        });
        let one_at_a_time = !sabotaged!(self, ConcurrentChanges);
        if one_at_a_time {
            if proposed.is_some() || leader.recovered.values().any(is_reconfig) {
                return Err(ChangeError::ChangePending { effective: 0 });
            }
            if latest.effective > self.committed.saturating_add(1) {
                return Err(ChangeError::ChangePending {
                    effective: latest.effective,
                });
            }
        }
        let base = proposed.unwrap_or(&latest.membership);
        let next = base.apply(change)?;
        if base.voters.len() > 1 && next.voters.len() < 2 {
            return Err(ChangeError::TooFewVoters);
        }
        if let Change::Promote { node } = change {
            let at = leader.progress.get(node).copied().unwrap_or(0);
            let lag = self.cfg.window as Slot;
            if at.saturating_add(lag) < self.committed {
                return Err(ChangeError::LearnerBehind {
                    node: *node,
                    at,
                    committed: self.committed,
                });
            }
        }
        if next.voters != base.voters {
            let timeout = self.cfg.election_timeout;
            let me = self.cfg.node;
            let reachable = next
                .voters
                .iter()
                .filter(|v| {
                    **v == me || leader.last_heard.get(v).is_some_and(|t| now < *t + timeout)
                })
                .count();
            if reachable < next.majority() {
                return Err(ChangeError::WouldLoseQuorum {
                    reachable,
                    needed: next.majority(),
                });
            }
        }
        Ok(next)
    }

    /// Records the memberships chosen since the last call, and forgets
    /// those that govern only compacted slots (a snapshot needs the one
    /// governing the slot after it).
    pub(super) fn sync_configs(&mut self) {
        while self.configs_through < self.committed {
            let slot = self.configs_through + 1;
            if let Some(Value::Reconfig(m)) = self.log.get(&slot).map(|e| &e.value) {
                if m.contains(self.cfg.node) {
                    self.joined = true;
                }
                self.history.record(slot, m.clone());
            }
            self.configs_through = slot;
        }
        self.history.prune(self.truncated);
    }

    /// The membership governing slot `t`.
    pub(super) fn governing(&self, t: Slot) -> &Epoch {
        self.history.governing(t)
    }

    /// Everyone this replica talks to: the members of every membership
    /// governing a slot it may still act on.
    pub(super) fn peers(&self) -> Vec<NodeId> {
        let me = self.cfg.node;
        let all: BTreeSet<NodeId> = self
            .history
            .governing_from(self.committed.saturating_add(1))
            .flat_map(|e| e.membership.members())
            .filter(|n| *n != me)
            .collect();
        all.into_iter().collect()
    }

    /// What `node` is to this replica. A replica that is joining or
    /// relearning after a disk loss knows too little to tell: everyone is a
    /// member to it (peer authentication keeps strangers out).
    pub(super) fn standing(&self, node: NodeId) -> Standing {
        let current = self
            .history
            .governing_from(self.committed.saturating_add(1))
            .any(|e| e.membership.contains(node));
        if current || !self.history.knows(self.cfg.node) || self.rejoin.is_some() {
            Standing::Member
        } else if self.history.knows(node) || self.cfg.members.contains(&node) {
            Standing::Removed
        } else {
            Standing::Unknown
        }
    }

    /// True when this node may campaign: it votes in the membership
    /// governing its first unchosen slot.
    pub(super) fn may_campaign(&self) -> bool {
        self.membership_in_effect().voters.contains(&self.cfg.node)
    }

    /// Frames an application snapshot with the membership history as of
    /// its slot (`None` while this replica only assumes that history).
    pub(super) fn framed(&self, snapshot: Snapshot) -> Option<Snapshot> {
        let epochs = self.history.as_of(snapshot.slot)?;
        Some(Snapshot {
            slot: snapshot.slot,
            data: membership::frame(epochs, snapshot.data),
        })
    }

    /// Replaces the history with the one a received snapshot carries.
    pub(super) fn install_history(&mut self, history: Option<History>, slot: Slot) {
        if let Some(history) = history {
            self.history = history;
        }
        if self.history.knows(self.cfg.node) {
            self.joined = true;
        }
        self.configs_through = self.configs_through.max(slot);
    }
}

/// What a peer is to a replica, for admission.
pub(super) enum Standing {
    /// In a membership governing a slot this replica may still act on.
    Member,
    /// In no membership this replica knows: perhaps one it has not learned.
    Unknown,
    /// In an earlier membership only, or a bootstrap member since removed.
    Removed,
}

fn is_reconfig(value: &Value) -> bool {
    matches!(value, Value::Reconfig(_))
}
