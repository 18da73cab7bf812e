//! The replica's side of membership changes (the method and why it is
//! safe are in the crate's `membership` module): which membership governs
//! a slot, who to talk to, proposing a change, and leaving.

use super::{Ready, Replica, Role, Taken};
use crate::error::PaxosError;
use crate::membership::{self, Change, ChangeError, Epoch, History, Membership};
use crate::message::Message;
use crate::types::{Ballot, NodeId, Slot, Snapshot, Value};
use std::collections::BTreeSet;
use std::time::Duration;

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

/// What a replica knows of the memberships chosen, and its own place in
/// them. Only ever learns: a flag once set stays set.
#[derive(Clone, Debug)]
pub(super) struct Members {
    /// The memberships governing the slots the replica may still act on.
    pub(super) history: History,
    /// Reconfigs chosen up to here are recorded in `history`.
    recorded_through: Slot,
    /// This node has been in a membership it knew (so leaving one later
    /// means it was removed, not that it has yet to join).
    pub(super) joined: bool,
    /// This node was removed, and a leader told it that it is needed no
    /// more (see `Replica::is_removed`).
    pub(super) released: bool,
    /// This node voted in a membership it knew (bootstrap or chosen).
    pub(super) was_voter: bool,
}

impl Members {
    /// `history` as recovered, with every reconfig up to `through` in it.
    pub(super) fn new(history: History, through: Slot, me: NodeId) -> Members {
        let was_voter = history
            .governing_from(0)
            .any(|e| e.membership.voters.contains(&me));
        Members {
            joined: history.knows(me),
            was_voter,
            released: false,
            recorded_through: through,
            history,
        }
    }

    /// Records `reconfig`, chosen at `slot`, if there is one; either way
    /// every reconfig through `slot` is recorded after.
    fn record(&mut self, slot: Slot, reconfig: Option<&Membership>, me: NodeId) {
        if let Some(m) = reconfig {
            self.joined |= m.contains(me);
            self.was_voter |= m.voters.contains(&me);
            self.history.record(slot, m.clone());
        }
        self.recorded_through = slot;
    }
}

impl Replica {
    /// The newest membership chosen (it may not govern yet: see
    /// [`Replica::membership_in_effect`]).
    pub fn membership(&self) -> &Membership {
        &self.members.history.latest().membership
    }

    /// The slot from which [`Replica::membership`] governs.
    pub fn membership_effective(&self) -> Slot {
        self.members.history.latest().effective
    }

    /// The membership governing this replica's first unchosen slot.
    pub fn membership_in_effect(&self) -> &Membership {
        &self.governing(self.committed.saturating_add(1)).membership
    }

    /// True once this node, a member before, was removed and released: it
    /// must stop serving. Until the release it still answers: members that
    /// have not yet learned every slot the old membership governs may need
    /// its votes, or its log, to learn them (with another voter down, it
    /// can be the one that makes their majority). A removed leader first
    /// hands over (see `fill_window`).
    ///
    /// The release comes from a leader of a later membership, once a
    /// majority of that membership's voters has told it that they know
    /// every slot before it chosen (see `release`): from then on, no
    /// election and no catch-up needs the removed node.
    pub fn is_removed(&self) -> bool {
        self.members.released
    }

    /// True once the newest chosen membership no longer lists this node,
    /// which was a member before: it was removed (a node still joining,
    /// which has not yet learned a membership naming it, has not left).
    /// It still answers its peers until released (see
    /// [`Replica::is_removed`]), but its table ends at its removal, so it
    /// has nothing to tell a client.
    pub fn has_left(&self) -> bool {
        self.members.joined && !self.membership().contains(self.cfg.node)
    }

    /// At the leader: a node outside every membership it may still act on
    /// has asked something; once that node is needed no more, it is told
    /// so by a [`Message::Release`] announcing a commit index at or past
    /// the last slot before the membership in effect (see
    /// `note_release`). A heartbeat never releases: a node removed and
    /// added back hears heartbeats past its removal while its log still
    /// replays it.
    pub(super) fn release(&mut self, node: NodeId) {
        if matches!(self.standing(node), Standing::Member) {
            return;
        }
        let me = self.cfg.node;
        let committed = self.committed;
        let epoch = self.governing(committed.saturating_add(1));
        let before = epoch.effective.saturating_sub(1);
        let Role::Leader(leader) = &self.role else {
            return;
        };
        let knowing: Vec<NodeId> = epoch
            .membership
            .voters
            .iter()
            .filter(|v| {
                let at = if **v == me {
                    Some(committed)
                } else {
                    leader.commit_acked.get(v).copied()
                };
                at.is_some_and(|at| at >= before)
            })
            .copied()
            .collect();
        if !epoch.membership.is_quorum(knowing.iter()) {
            return;
        }
        let ballot = leader.ballot;
        self.send(node, Message::Release { ballot, committed });
    }

    /// A [`Message::Release`] of `ballot` announcing `committed` arrived:
    /// if this node was removed (it is out of the membership in effect and
    /// of the newest one) and the index reaches the slot before the
    /// membership in effect, it is the release (see `release`). Checked
    /// before the ballot: a removed node may have promised a ballot that
    /// never led.
    pub(super) fn note_release(&mut self, ballot: Ballot, committed: Slot) {
        let me = self.cfg.node;
        let effective = self.governing(self.committed.saturating_add(1)).effective;
        let out = self.members.joined
            && !self.membership_in_effect().contains(me)
            && !self.membership().contains(me);
        if out && ballot.node != me && committed.saturating_add(1) >= effective {
            self.members.released = true;
        }
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
                leader: self.known_leader.hint,
            });
        };
        leader.changes.push_back(next);
        self.fill_window(now);
        self.finish(Ok(())).map_err(|_| ChangeError::Stopped)
    }

    fn check_change(&self, now: Duration, change: &Change) -> Result<Membership, ChangeError> {
        let Role::Leader(leader) = &self.role else {
            return Err(ChangeError::NotLeader {
                leader: self.known_leader.hint,
            });
        };
        let latest = self.members.history.latest();
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
            // Its own commit index, not the slots it voted for: a learner
            // that votes on new slots may still miss the old ones.
            let at = leader.commit_acked.get(node).copied().unwrap_or(0);
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
        while self.members.recorded_through < self.committed {
            let slot = self.members.recorded_through + 1;
            let reconfig = match self.log.get(&slot).map(|e| &e.value) {
                Some(Value::Reconfig(m)) => Some(m),
                _ => None,
            };
            self.members.record(slot, reconfig, self.cfg.node);
        }
        self.members.history.prune(self.truncated);
    }

    /// The membership governing slot `t`.
    pub(super) fn governing(&self, t: Slot) -> &Epoch {
        self.members.history.governing(t)
    }

    /// Everyone this replica talks to: the members of every membership
    /// governing a slot it may still act on.
    pub(super) fn peers(&self) -> Vec<NodeId> {
        let me = self.cfg.node;
        let all: BTreeSet<NodeId> = self
            .members
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
            .members
            .history
            .governing_from(self.committed.saturating_add(1))
            .any(|e| e.membership.contains(node));
        if current || !self.members.history.knows(self.cfg.node) || self.rejoin.is_some() {
            Standing::Member
        } else if self.members.history.knows(node) || self.cfg.members.contains(&node) {
            Standing::Removed
        } else {
            Standing::Unknown
        }
    }

    /// True when this node may campaign: it votes in the membership
    /// governing its first unchosen slot, and no change removing it was
    /// chosen. A voter being removed still promises and votes for the
    /// slots it governs, but leaves leading to the voters that stay: they
    /// are a majority of both memberships (one change at a time), so no
    /// election needs it to stand.
    pub(super) fn may_campaign(&self) -> bool {
        let me = self.cfg.node;
        self.membership_in_effect().voters.contains(&me) && self.membership().voters.contains(&me)
    }

    /// True when a promise of this node may count: it votes in some
    /// membership governing a slot it may still act on, or it voted before
    /// and was not released yet (members behind it may still need its
    /// promise for the slots the old membership governs). Any other node
    /// ignores prepares. Its promise would count for nothing, and could
    /// only make it refuse the leader's lower ballot: a joiner that
    /// promised the ballot of a removed voter's hopeless campaign refused
    /// the leader for good, and never caught up.
    pub(super) fn may_promise(&self) -> bool {
        let me = self.cfg.node;
        let votes = self
            .members
            .history
            .governing_from(self.committed.saturating_add(1))
            .any(|e| e.membership.voters.contains(&me));
        votes || (self.members.was_voter && !self.members.released)
    }

    /// Frames an application snapshot with the membership history as of
    /// its slot (`None` while this replica only assumes that history).
    pub(super) fn framed(&self, slot: Slot, data: Taken) -> Option<Snapshot> {
        let epochs = self.members.history.as_of(slot)?;
        let data = match data {
            Taken::Data(data) => membership::frame(&epochs, &data),
            Taken::In { buf, start } => membership::frame_in(&epochs, buf, start),
        };
        Some(Snapshot { slot, data })
    }

    /// Replaces the history with the one a received snapshot carries.
    pub(super) fn install_history(&mut self, history: Option<History>, slot: Slot) {
        let m = &mut self.members;
        if let Some(history) = history {
            m.history = history;
        }
        m.joined |= m.history.knows(self.cfg.node);
        m.recorded_through = m.recorded_through.max(slot);
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
