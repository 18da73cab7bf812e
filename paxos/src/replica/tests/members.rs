//! Membership changes: a learner joins on the leader alone and is promoted
//! once caught up, one change at a time, never one that loses the quorum,
//! each slot chosen by the majority of the membership governing it, and a
//! removed leader hands over.

use super::*;
use crate::membership::{CONFIG_DELAY, Change, ChangeError};
use std::collections::BTreeSet;

const N4: NodeId = NodeId(4);

/// Replicas that deliver every message at once, except to or from nodes
/// that are down.
struct Cluster {
    replicas: BTreeMap<NodeId, Replica>,
    down: BTreeSet<NodeId>,
    now: Duration,
}

impl Cluster {
    /// A brand-new three-node cluster with a leader.
    fn three() -> Cluster {
        let replicas = [N1, N2, N3]
            .into_iter()
            .map(|n| {
                (
                    n,
                    Replica::new(config(n), JournalState::default(), T0).unwrap(),
                )
            })
            .collect();
        let mut c = Cluster {
            replicas,
            down: BTreeSet::new(),
            now: T0,
        };
        c.run(2_000);
        assert!(c.leader().is_some(), "a leader was elected");
        c
    }

    fn run(&mut self, ms_total: u64) {
        let end = self.now + ms(ms_total);
        while self.now < end {
            self.now += ms(5);
            let ids: Vec<NodeId> = self.replicas.keys().copied().collect();
            let mut queue = VecDeque::new();
            for id in ids.iter().filter(|id| !self.down.contains(id)) {
                let ready = self.replicas.get_mut(id).unwrap().tick(self.now).unwrap();
                queue.extend(ready.messages);
            }
            self.deliver(queue);
        }
    }

    fn deliver(&mut self, mut queue: VecDeque<Envelope>) {
        while let Some(envelope) = queue.pop_front() {
            if self.down.contains(&envelope.from) || self.down.contains(&envelope.to) {
                continue;
            }
            let Some(replica) = self.replicas.get_mut(&envelope.to) else {
                continue;
            };
            queue.extend(replica.handle(self.now, envelope).unwrap().messages);
        }
    }

    fn leader(&self) -> Option<NodeId> {
        self.replicas
            .iter()
            .find(|(id, r)| r.is_leader() && !self.down.contains(id))
            .map(|(id, _)| *id)
    }

    fn change(&mut self, change: Change) -> Result<(), ChangeError> {
        let leader = self.leader().expect("a leader");
        let now = self.now;
        let ready = self
            .replicas
            .get_mut(&leader)
            .unwrap()
            .change_membership(now, change)?;
        self.deliver(ready.messages.into());
        Ok(())
    }

    /// Starts node `node` as a joiner: its configuration lists the
    /// bootstrap voters, not itself.
    fn join(&mut self, node: NodeId) {
        let replica = Replica::new(config(node), JournalState::default(), self.now).unwrap();
        assert!(
            !replica.is_learner(),
            "a joiner needs no other member's answer"
        );
        self.replicas.insert(node, replica);
    }

    fn in_effect(&self, node: NodeId) -> &Membership {
        self.replicas[&node].membership_in_effect()
    }
}

fn add(node: NodeId) -> Change {
    Change::AddLearner {
        node,
        address: format!("host-{}:7000", node.0),
    }
}

#[test]
fn a_joiner_learns_from_the_leader_and_is_promoted_only_once_caught_up() {
    let mut c = Cluster::three();
    c.join(N4);
    c.down.insert(N4);
    c.change(add(N4)).unwrap();
    c.run(500);
    let leader = c.leader().unwrap();
    assert!(c.in_effect(leader).learners.contains(&N4));
    assert!(matches!(
        c.change(Change::Promote { node: N4 }),
        Err(ChangeError::LearnerBehind { node: N4, .. })
    ));
    c.down.remove(&N4);
    c.run(1_000);
    assert!(c.replicas[&N4].committed() >= CONFIG_DELAY, "it caught up");
    c.change(Change::Promote { node: N4 }).unwrap();
    c.run(1_000);
    for node in [N1, N2, N3, N4] {
        let voters = &c.in_effect(node).voters;
        assert_eq!(voters, &BTreeSet::from([N1, N2, N3, N4]), "at {node}");
    }
}

#[test]
fn a_second_change_before_the_first_is_in_effect_is_refused() {
    let mut c = Cluster::three();
    c.join(N4);
    let leader = c.leader().unwrap();
    // The followers hold their answers, so the first change stays in flight.
    let followers: Vec<NodeId> = [N1, N2, N3].into_iter().filter(|n| *n != leader).collect();
    c.down.extend(followers.iter().copied());
    c.change(add(N4)).unwrap();
    let second = c.change(Change::Remove { node: N3 });
    assert!(
        matches!(second, Err(ChangeError::ChangePending { .. })),
        "{second:?}"
    );
    for f in followers {
        c.down.remove(&f);
    }
    c.run(1_000);
    c.change(Change::Remove { node: N4 }).unwrap();
}

#[test]
fn a_change_that_would_leave_no_reachable_majority_is_refused() {
    let mut c = Cluster::three();
    let leader = c.leader().unwrap();
    let others: Vec<NodeId> = [N1, N2, N3].into_iter().filter(|n| *n != leader).collect();
    // One follower goes silent; removing the other would leave the leader
    // and the silent one, of which only the leader answers.
    c.down.insert(others[0]);
    c.run(1_000);
    assert_eq!(c.leader(), Some(leader));
    assert_eq!(
        c.change(Change::Remove { node: others[1] }),
        Err(ChangeError::WouldLoseQuorum {
            reachable: 1,
            needed: 2
        })
    );
    c.change(Change::Remove { node: others[0] }).unwrap();
}

#[test]
fn slots_governed_by_a_grown_membership_need_its_majority() {
    let mut c = Cluster::three();
    c.join(N4);
    c.change(add(N4)).unwrap();
    c.run(1_000);
    c.change(Change::Promote { node: N4 }).unwrap();
    c.run(1_000);
    let leader = c.leader().unwrap();
    // N4 first: the one follower left answering is then an old voter, so
    // counting the old membership's majority would choose.
    let others: Vec<NodeId> = [N4, N1, N2, N3]
        .into_iter()
        .filter(|n| *n != leader)
        .collect();
    // Two of four voters answer: a majority of the old three, not of the
    // four that govern now.
    c.down.insert(others[0]);
    c.down.insert(others[1]);
    let before = c.replicas[&leader].committed();
    let now = c.now;
    let ready = c
        .replicas
        .get_mut(&leader)
        .unwrap()
        .propose(now, vec![cmd("x")])
        .unwrap();
    c.deliver(ready.messages.into());
    assert_eq!(
        c.replicas[&leader].committed(),
        before,
        "not chosen by 2 of 4"
    );
    c.down.remove(&others[0]);
    c.run(200);
    assert!(c.replicas[&leader].committed() > before, "chosen by 3 of 4");
}

#[test]
fn a_removed_leader_hands_over_and_knows_it_was_removed() {
    let mut c = Cluster::three();
    let old = c.leader().unwrap();
    c.change(Change::Remove { node: old }).unwrap();
    // It answers for a while after the change (see `is_removed`).
    c.run(8_000);
    let removed = &c.replicas[&old];
    assert!(!removed.is_leader());
    assert!(removed.is_removed());
    let new = c.leader().expect("the others elected a leader");
    assert_ne!(new, old);
    assert_eq!(c.in_effect(new).voters.len(), 2);
    let now = c.now;
    let ready = c
        .replicas
        .get_mut(&new)
        .unwrap()
        .propose(now, vec![cmd("after")])
        .unwrap();
    let before = c.replicas[&new].committed();
    c.deliver(ready.messages.into());
    assert!(c.replicas[&new].committed() > before, "two voters choose");
}

/// A member that was down while the cluster grew, compacted and elected a
/// newcomer as leader knows neither the newcomer nor the slots it missed:
/// it must take the snapshot from that leader (3-node `--reconfig` seed
/// 89 once stayed at slot 0 for good, refusing the chunks).
#[test]
fn a_member_far_behind_installs_a_snapshot_from_a_leader_it_has_not_learned_of() {
    let state = JournalState {
        promised: b(1, N2),
        ..JournalState::default()
    };
    let mut n1 = replica_with(N1, state);
    let commit = Message::Commit {
        ballot: b(8, N4),
        committed: 2_000,
    };
    let ready = n1.handle(ms(1), env(N4, N1, commit)).unwrap();
    assert!(
        ready
            .messages
            .iter()
            .any(|e| e.to == N4 && matches!(e.message, Message::CatchupRequest { from: 1 })),
        "{:?}",
        ready.messages
    );
    let grown = Membership::of_voters([N1, N2, N3, N4]);
    let epochs = vec![crate::membership::Epoch {
        chosen_at: 300,
        effective: 300 + CONFIG_DELAY,
        membership: grown.clone(),
    }];
    let data = crate::membership::frame(&epochs, &cmd("table"));
    let chunk = Message::SnapshotChunk {
        slot: 1_990,
        total_len: data.len() as u64,
        checksum: crc32fast::hash(&data),
        offset: 0,
        data: data.clone(),
    };
    let ready = n1.handle(ms(2), env(N4, N1, chunk)).unwrap();
    assert_eq!(ready.refused, None);
    assert_eq!(ready.install.map(|s| s.data), Some(cmd("table")));
    assert_eq!(n1.committed(), 1_990);
    assert_eq!(n1.membership_in_effect(), &grown);
}

/// The two followers of a fresh three-node cluster: (one that stays, one
/// that the tests remove).
fn followers(c: &Cluster) -> (NodeId, NodeId) {
    let leader = c.leader().unwrap();
    let others: Vec<NodeId> = [N1, N2, N3].into_iter().filter(|n| *n != leader).collect();
    (others[0], others[1])
}

#[test]
fn a_removed_voter_keeps_promising_until_a_majority_of_the_new_membership_knows_the_change() {
    let mut c = Cluster::three();
    let leader = c.leader().unwrap();
    let (stays, leaves) = followers(&c);
    // The voter that stays is lost right after the change passed the
    // quorum check: the leader and the leaving voter choose every slot the
    // old membership governs, and the voter that stays learns none of them.
    let now = c.now;
    let ready = c
        .replicas
        .get_mut(&leader)
        .unwrap()
        .change_membership(now, Change::Remove { node: leaves })
        .unwrap();
    c.down.insert(stays);
    c.deliver(ready.messages.into());
    // Longer than the ten election timeouts after which a removed node
    // once stopped on its own.
    c.run(8_000);
    let before = c.replicas[&leader].membership_effective() - 1;
    assert!(c.replicas[&leader].committed() >= before);
    assert!(c.replicas[&stays].committed() < before);
    assert!(
        !c.replicas[&leaves].is_removed(),
        "with the leader lost now, the voter that stays would need it"
    );
    // ... and its promise: the slots before the change are still the old
    // membership's to it.
    let ballot = b(c.replicas[&leaves].promised().counter + 1, stays);
    let from = c.replicas[&stays].committed() + 1;
    let now = c.now;
    let ready = c
        .replicas
        .get_mut(&leaves)
        .unwrap()
        .handle(now, env(stays, leaves, Message::Prepare { ballot, from }))
        .unwrap();
    assert!(
        ready
            .messages
            .iter()
            .any(|e| matches!(e.message, Message::Promise { .. })),
        "{:?}",
        ready.messages
    );
    c.down.remove(&stays);
    c.run(5_000);
    assert!(c.replicas[&stays].committed() >= before);
    assert!(c.replicas[&leaves].is_removed());
}

#[test]
fn a_voter_removed_while_it_was_away_learns_its_removal_from_a_peer_and_stops() {
    let mut c = Cluster::three();
    let (_, away) = followers(&c);
    c.down.insert(away);
    c.change(Change::Remove { node: away }).unwrap();
    c.run(3_000);
    // Nobody sends to it any more, nor takes its prepares.
    c.down.remove(&away);
    c.run(5_000);
    let back = &c.replicas[&away];
    assert!(!back.membership().contains(away), "it learned its removal");
    assert!(back.is_removed());
}

#[test]
fn a_voter_whose_removal_is_chosen_does_not_campaign_and_seeks_the_cluster_instead() {
    let mut entries = BTreeMap::new();
    let without_n3 = Membership::of_voters([N1, N2]);
    let value = Value::Reconfig(without_n3);
    let ballot = b(1, N1);
    entries.insert(1, LogEntry { ballot, value });
    let state = JournalState {
        promised: ballot,
        committed: 1,
        entries,
        ..JournalState::default()
    };
    let mut n3 = replica_with(N3, state);
    assert!(n3.membership_in_effect().voters.contains(&N3));
    let ready = n3.tick(ms(10_000)).unwrap();
    assert!(!n3.is_leader() && n3.promised() == ballot);
    let probed: BTreeSet<NodeId> = ready
        .messages
        .iter()
        .filter(|e| e.message == Message::Probe)
        .map(|e| e.to)
        .collect();
    assert_eq!(ready.messages.len(), probed.len(), "{:?}", ready.messages);
    // Every peer: only the leader releases it, and it does not know which
    // peer leads.
    assert_eq!(probed, BTreeSet::from([N1, N2]));
}

#[test]
fn a_node_that_votes_in_no_membership_it_knows_makes_no_promise_and_follows_the_leader() {
    // A joiner: its configuration lists the voters, not itself.
    let mut n4 = Replica::new(config(N4), JournalState::default(), T0).unwrap();
    let hopeless = Message::Prepare {
        ballot: b(24, N3),
        from: 1,
    };
    let ready = n4.handle(ms(1), env(N3, N4, hopeless)).unwrap();
    assert!(ready.messages.is_empty(), "{:?}", ready.messages);
    let commit = Message::Commit {
        ballot: b(2, N1),
        committed: 10,
    };
    let ready = n4.handle(ms(2), env(N1, N4, commit)).unwrap();
    assert!(
        ready
            .messages
            .iter()
            .all(|e| !matches!(e.message, Message::Nack { .. })),
        "{:?}",
        ready.messages
    );
    assert_eq!(n4.leader(), Some(N1));
}

/// Adds n4 as a learner that stays down (so it answers no Commit), lets
/// it vote for the leader's newest slot reporting the commit index
/// `committed(newest)`, and asks to promote it.
fn promote_n4_after_one_vote(committed: impl Fn(Slot) -> Slot) -> Result<(), ChangeError> {
    let mut c = Cluster::three();
    c.join(N4);
    c.down.insert(N4);
    c.change(add(N4)).unwrap();
    c.run(500);
    let leader = c.leader().unwrap();
    let (ballot, last) = {
        let l = &c.replicas[&leader];
        (l.promised(), l.committed())
    };
    let now = c.now;
    let voted = Message::Accepted {
        ballot,
        slots: vec![last],
        committed: committed(last),
    };
    let _ = c
        .replicas
        .get_mut(&leader)
        .unwrap()
        .handle(now, env(N4, leader, voted))
        .unwrap();
    c.change(Change::Promote { node: N4 })
}

/// A learner that votes on the newest slots while it still misses the
/// old ones is not caught up (3-node `--reconfig` seed 7959 promoted one
/// still at slot 0; with a voter relearning beside it, no majority was
/// left).
#[test]
fn a_learner_voting_on_new_slots_but_missing_old_ones_is_not_promoted() {
    assert!(matches!(
        promote_n4_after_one_vote(|_| 0),
        Err(ChangeError::LearnerBehind {
            node: N4,
            at: 0,
            ..
        })
    ));
}

/// The leader learns a follower's commit index from its votes too, so a
/// learner that keeps up is promoted though it answers no Commit (under
/// load followers answer most commit notices with nothing).
#[test]
fn a_learner_whose_votes_carry_a_caught_up_commit_index_can_be_promoted() {
    assert_eq!(promote_n4_after_one_vote(|newest| newest), Ok(()));
}

/// A voter relearning after a disk loss cannot vote: it does not answer
/// heartbeats, so the leader does not count it among the voters it hears
/// when it checks that a change keeps a majority.
#[test]
fn a_voter_relearning_after_a_disk_loss_does_not_look_reachable() {
    let mut n3 = replica_with(N3, JournalState::default());
    assert!(n3.is_learner());
    let commit = Message::Commit {
        ballot: b(2, N1),
        committed: 0,
    };
    let ready = n3.handle(ms(1), env(N1, N3, commit)).unwrap();
    assert!(
        ready
            .messages
            .iter()
            .all(|e| !matches!(e.message, Message::CommitAck { .. })),
        "{:?}",
        ready.messages
    );
}

/// A sole voter chooses with its own vote: while the learner it added is
/// not yet running, nobody's answer comes to make room in its window, so
/// it must keep filling the window by itself until the change takes
/// effect (a one-node cluster once stopped at the window's end, short of
/// the change's effective slot).
#[test]
fn a_one_node_cluster_adds_a_learner_and_promotes_it() {
    let solo = |node| Config::new(node, vec![N1]);
    let n1 = Replica::new(solo(N1), JournalState::default(), T0).unwrap();
    let mut c = Cluster {
        replicas: BTreeMap::from([(N1, n1)]),
        down: BTreeSet::new(),
        now: T0,
    };
    c.run(1_000);
    assert_eq!(c.leader(), Some(N1));
    c.change(add(N2)).unwrap();
    c.run(1_000);
    assert!(c.in_effect(N1).learners.contains(&N2), "the learner joined");
    let n2 = Replica::new(solo(N2), JournalState::default(), c.now).unwrap();
    c.replicas.insert(N2, n2);
    c.run(1_000);
    c.change(Change::Promote { node: N2 }).unwrap();
    c.run(1_000);
    for node in [N1, N2] {
        let voters = &c.in_effect(node).voters;
        assert_eq!(voters, &BTreeSet::from([N1, N2]), "at {node}");
    }
    let leader = c.leader().expect("a leader");
    let now = c.now;
    let before = c.replicas[&leader].committed();
    let ready = c
        .replicas
        .get_mut(&leader)
        .unwrap()
        .propose(now, vec![cmd("two voters")])
        .unwrap();
    c.deliver(ready.messages.into());
    assert!(
        c.replicas[&leader].committed() > before,
        "both voters choose"
    );
}

/// 5-node `--reconfig` seed 652: a leader elected by three of five removed
/// itself at once; the two voters cut off from it counted as reachable
/// (every peer did, right after an election), and the four that stayed
/// had no majority without them.
#[test]
fn right_after_an_election_only_the_voters_that_promised_count_as_reachable() {
    let (mut r, _) = elect_n1(vec![], 0);
    assert_eq!(
        r.change_membership(ms(10_002), Change::Remove { node: N2 }),
        Err(ChangeError::WouldLoseQuorum {
            reachable: 1,
            needed: 2
        })
    );
    assert!(
        r.change_membership(ms(10_002), Change::Remove { node: N3 })
            .is_ok()
    );
}

/// 5-node `--reconfig` seed 8383: a leader proposed a removal while an
/// earlier slot was still open, and that slot was later chosen with a
/// promotion an earlier leader had proposed there: two changes at once.
/// A change goes in only once every slot before it is chosen.
#[test]
fn a_change_is_proposed_only_once_every_slot_before_it_is_chosen() {
    let (mut r, _) = elect_n1(vec![], 0);
    let ballot = r.promised();
    let ready = r.propose(ms(10_002), vec![cmd("open")]).unwrap();
    assert_eq!(first_accept(&ready), &vec![(1, batch("open"))]);
    let ready = r.change_membership(ms(10_003), add(N4)).unwrap();
    let reconfig = |ready: &Ready| {
        ready.messages.iter().any(|e| match &e.message {
            Message::Accept { entries, .. } => {
                entries.iter().any(|(_, v)| matches!(v, Value::Reconfig(_)))
            }
            _ => false,
        })
    };
    assert!(!reconfig(&ready), "{:?}", ready.messages);
    let voted = Message::Accepted {
        ballot,
        slots: vec![1],
        committed: 0,
    };
    let ready = r.handle(ms(10_004), env(N2, N1, voted)).unwrap();
    assert_eq!(r.committed(), 1);
    assert!(reconfig(&ready), "{:?}", ready.messages);
}

/// Node 3 knows its removal (slot 1, in effect from slot 257) and nothing
/// after it: the state of a removed node that was added back, whose log
/// is still catching up to the membership that names it again.
fn removed_n3_catching_up() -> Replica {
    let ballot = b(1, N1);
    let mut entries = BTreeMap::new();
    let value = Value::Reconfig(Membership::of_voters([N1, N2]));
    entries.insert(1, LogEntry { ballot, value });
    for slot in 2..=CONFIG_DELAY {
        let value = Value::Noop;
        entries.insert(slot, LogEntry { ballot, value });
    }
    let state = JournalState {
        promised: ballot,
        committed: CONFIG_DELAY,
        entries,
        ..JournalState::default()
    };
    let n3 = replica_with(N3, state);
    assert!(n3.has_left());
    n3
}

#[test]
fn a_leaders_heartbeat_past_a_nodes_removal_does_not_stop_it_only_a_release_does() {
    let mut n3 = removed_n3_catching_up();
    let ballot = b(1, N1);
    let committed = 2 * CONFIG_DELAY;
    let commit = Message::Commit { ballot, committed };
    let _ = n3.handle(ms(1), env(N1, N3, commit)).unwrap();
    assert!(
        !n3.is_removed(),
        "a heartbeat is for members, added back too"
    );
    let release = Message::Release { ballot, committed };
    let _ = n3.handle(ms(2), env(N1, N3, release)).unwrap();
    assert!(n3.is_removed());
}
