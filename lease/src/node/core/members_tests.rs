//! Membership at the node: a learner joins on the leader alone and says it
//! is a learner, a change that would lose the quorum is refused with a
//! typed error, and a removed node says so, then stops, with an error
//! naming its removal.

use super::*;
use std::collections::VecDeque;
use trexlock_paxos::{Change, ChangeError};

fn node(i: usize) -> NodeId {
    NodeId(i as u16 + 1)
}

/// Cores on a lossless in-memory network; a node stopped by an error is
/// kept with the error.
struct Cluster {
    cores: Vec<NodeCore>,
    down: Vec<bool>,
    stopped: Vec<Option<NodeError>>,
    in_flight: VecDeque<(NodeId, NodeId, PeerMessage)>,
    now: Duration,
}

impl Cluster {
    /// Three members with a leader, and `joiners` more nodes whose
    /// configuration lists the three, not themselves.
    fn new(joiners: usize) -> Cluster {
        let members: Vec<_> = (0..3).map(node).collect();
        let cores = (0..3 + joiners)
            .map(|i| {
                let cfg = NodeConfig::new(node(i), members.clone());
                let paxos = cfg.paxos_config(i as u64);
                // A member's journal holds a promise, so it votes at once;
                // a joiner's is empty.
                let promised = trexlock_paxos::Ballot {
                    counter: u64::from(i < 3),
                    node: node(0),
                };
                let state = JournalState {
                    promised,
                    ..JournalState::default()
                };
                NodeCore::new(cfg, paxos, state, Duration::ZERO).unwrap()
            })
            .collect();
        let n = 3 + joiners;
        let mut c = Cluster {
            cores,
            down: vec![false; n],
            stopped: (0..n).map(|_| None).collect(),
            in_flight: VecDeque::new(),
            now: Duration::ZERO,
        };
        c.run(2_000);
        assert!(c.leader().is_some());
        c
    }

    /// A one-member cluster (which elects itself) and a joiner, down,
    /// whose configuration lists that member.
    fn solo() -> Cluster {
        let cores = (0..2)
            .map(|i| {
                let cfg = NodeConfig::new(node(i), vec![node(0)]);
                let paxos = cfg.paxos_config(i as u64);
                NodeCore::new(cfg, paxos, JournalState::default(), Duration::ZERO).unwrap()
            })
            .collect();
        let mut c = Cluster {
            cores,
            down: vec![false, true],
            stopped: vec![None, None],
            in_flight: VecDeque::new(),
            now: Duration::ZERO,
        };
        c.run(2_000);
        assert_eq!(c.leader(), Some(0));
        c
    }

    fn live(&self, i: usize) -> bool {
        !self.down[i] && self.stopped[i].is_none()
    }

    fn settle(&mut self, i: usize) {
        loop {
            if let Err(e) = self.cores[i].end_round(self.now) {
                self.stopped[i] = Some(e);
            }
            let effects = self.cores[i].take_effects();
            if effects.is_empty() {
                return;
            }
            for effect in effects {
                match effect {
                    Effect::Persist { id, .. } => {
                        if let Err(e) = self.cores[i].synced(self.now, id) {
                            self.stopped[i] = Some(e);
                        }
                    }
                    Effect::Send { to, message } => {
                        self.in_flight.push_back((node(i), to, message));
                    }
                    _ => {}
                }
            }
        }
    }

    fn run(&mut self, ms: u64) {
        for _ in 0..ms {
            self.now += Duration::from_millis(1);
            for i in 0..self.cores.len() {
                if !self.live(i) {
                    continue;
                }
                if let Err(e) = self.cores[i].tick(self.now) {
                    self.stopped[i] = Some(e);
                }
                self.settle(i);
            }
            while let Some((from, to, message)) = self.in_flight.pop_front() {
                let (f, t) = (usize::from(from.0) - 1, usize::from(to.0) - 1);
                if !(self.live(f) && self.live(t)) {
                    continue;
                }
                if let Err(e) = self.cores[t].peer(self.now, from, message) {
                    self.stopped[t] = Some(e);
                }
                self.settle(t);
            }
        }
    }

    fn leader(&self) -> Option<usize> {
        (0..self.cores.len()).find(|i| self.live(*i) && self.cores[*i].replica().is_leader())
    }

    fn change(&mut self, change: Change) -> Result<(), ChangeError> {
        let l = self.leader().expect("a leader");
        let result = self.cores[l].change_members(self.now, change);
        self.settle(l);
        result
    }
}

#[test]
fn a_learner_catches_up_on_the_leader_alone_and_is_promoted() {
    let mut c = Cluster::new(1);
    let l = c.leader().unwrap();
    c.down[3] = true;
    c.change(Change::AddLearner {
        node: node(3),
        address: "10.0.0.4:7000".into(),
    })
    .unwrap();
    c.run(1_000);
    // The learner comes back far behind while the other members are gone
    // (for less than an election timeout): it has only the leader.
    for i in (0..3).filter(|i| *i != l) {
        c.down[i] = true;
    }
    c.down[3] = false;
    let leader_at = c.cores[l].replica().committed();
    assert!(c.cores[3].replica().committed() + 200 < leader_at);
    c.run(250);
    assert!(c.cores[3].replica().committed() >= leader_at);
    let status = c.cores[3].status();
    assert!(status.learner && !status.relearning, "{status:?}");
    assert_eq!(status.role(), "learner");
    for i in 0..3 {
        c.down[i] = false;
    }
    c.run(500);
    c.change(Change::Promote { node: node(3) }).unwrap();
    c.run(2_000);
    let status = c.cores[3].status();
    assert!(!status.learner, "{status:?}");
    assert_eq!(status.role(), "follower");
    let members = c.cores[l].members();
    assert!(
        members
            .iter()
            .any(|m| m.node == node(3) && m.role == Role::Voter),
        "{members:?}"
    );
}

#[test]
fn a_change_that_would_lose_the_quorum_is_refused_with_its_reason() {
    let mut c = Cluster::new(0);
    let l = c.leader().unwrap();
    let others: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    c.down[others[0]] = true;
    c.run(1_000);
    assert_eq!(
        c.change(Change::Remove {
            node: node(others[1])
        }),
        Err(ChangeError::WouldLoseQuorum {
            reachable: 1,
            needed: 2
        })
    );
}

#[test]
fn a_removed_node_stops_with_an_error_naming_its_removal() {
    let mut c = Cluster::new(0);
    let l = c.leader().unwrap();
    let gone = (0..3).find(|i| *i != l).unwrap();
    c.change(Change::Remove { node: node(gone) }).unwrap();
    c.run(10_000);
    match &c.stopped[gone] {
        Some(NodeError::Removed { node: n, .. }) => assert_eq!(*n, node(gone)),
        other => panic!("{other:?}"),
    }
    let message = c.stopped[gone].as_ref().unwrap().to_string();
    assert!(message.contains("removed from the membership"), "{message}");
    assert!(
        (0..3)
            .filter(|i| *i != gone)
            .all(|i| c.stopped[i].is_none())
    );
    assert!(c.leader().is_some_and(|l| l != gone));
}

#[test]
fn a_removed_node_says_it_was_removed_until_it_stops() {
    let mut c = Cluster::new(0);
    let l = c.leader().unwrap();
    let gone = (0..3).find(|i| *i != l).unwrap();
    c.change(Change::Remove { node: node(gone) }).unwrap();
    let mut said = 0;
    for _ in 0..10_000 {
        c.run(1);
        if c.stopped[gone].is_some() {
            break;
        }
        if c.cores[gone].replica().has_left() {
            let status = c.cores[gone].status();
            assert!(status.removed && !status.is_ready(), "{status:?}");
            assert_eq!(status.role(), "removed");
            said += 1;
        }
    }
    assert!(said > 0, "the removed node stopped before it knew");
    assert!(matches!(c.stopped[gone], Some(NodeError::Removed { .. })));
    assert!(!c.cores[l].status().removed);
}

#[test]
fn a_one_node_cluster_brings_a_learner_into_effect_and_promotes_it() {
    let mut c = Cluster::solo();
    c.change(Change::AddLearner {
        node: node(1),
        address: "10.0.0.2:7000".into(),
    })
    .unwrap();
    c.run(1_000);
    let learners = &c.cores[0].replica().membership_in_effect().learners;
    assert!(
        learners.contains(&node(1)),
        "in effect before the learner runs"
    );
    c.down[1] = false;
    c.run(1_000);
    c.change(Change::Promote { node: node(1) }).unwrap();
    c.run(1_000);
    for core in &c.cores {
        let voters = &core.replica().membership_in_effect().voters;
        assert_eq!(voters.len(), 2, "{voters:?}");
    }
}
