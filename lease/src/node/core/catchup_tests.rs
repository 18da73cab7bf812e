//! A node far behind catches up from a snapshot several times the message
//! limit: three cores on a lossless in-memory network, one of them cut
//! off while the others grant and compact.

use super::*;
use crate::command::{LeaseToken, Op, SessionId};
use std::collections::VecDeque;
use trexlock_paxos::Message;

const MESSAGE_LIMIT: usize = 8 * 1024;
const LEASES: u64 = 1_500;

struct Cluster {
    cores: Vec<NodeCore>,
    connected: [bool; 3],
    in_flight: VecDeque<(NodeId, NodeId, PeerMessage)>,
    now: Duration,
    /// Snapshot chunks delivered to each node.
    chunks: [usize; 3],
    installed: [bool; 3],
    /// The slot of each snapshot each node wrote to its journal.
    snapshots: [Vec<u64>; 3],
}

fn node(i: usize) -> NodeId {
    NodeId(i as u16 + 1)
}

impl Cluster {
    fn new() -> Cluster {
        let members: Vec<_> = (0..3).map(node).collect();
        let cores = (0..3)
            .map(|i| {
                let mut cfg = NodeConfig::new(node(i), members.clone());
                cfg.max_message_bytes = MESSAGE_LIMIT;
                cfg.max_batch_bytes = 4 * 1024;
                cfg.snapshot_every = 100;
                let mut paxos = cfg.paxos_config(i as u64);
                paxos.keep_after_snapshot = 8;
                // A journal holding a promise: the node votes at once
                // instead of first hearing from every member.
                let state = JournalState {
                    promised: trexlock_paxos::Ballot {
                        counter: 1,
                        node: node(1),
                    },
                    ..JournalState::default()
                };
                NodeCore::new(cfg, paxos, state, Duration::ZERO).unwrap()
            })
            .collect();
        Cluster {
            cores,
            connected: [true, true, false],
            in_flight: VecDeque::new(),
            now: Duration::ZERO,
            chunks: [0; 3],
            installed: [false; 3],
            snapshots: Default::default(),
        }
    }

    /// Performs every effect: writes are synced at once, messages go to
    /// connected nodes (checked against the limit), answers are counted.
    fn settle(&mut self) -> usize {
        let mut answers = 0;
        for i in 0..3 {
            loop {
                self.cores[i].end_round(self.now).unwrap();
                let effects = self.cores[i].take_effects();
                if effects.is_empty() {
                    break;
                }
                for effect in effects {
                    match effect {
                        Effect::Persist { id, write } => {
                            self.snapshots[i].extend(write.snapshot.map(|s| s.slot));
                            self.cores[i].synced(self.now, id).unwrap();
                        }
                        Effect::Send { to, message } => {
                            let bytes = postcard::to_stdvec(&message).unwrap().len();
                            assert!(bytes <= MESSAGE_LIMIT, "a message of {bytes} bytes");
                            self.in_flight.push_back((node(i), to, message));
                        }
                        Effect::Answer { outcome, .. } => {
                            assert!(
                                matches!(
                                    outcome,
                                    Outcome::Granted { .. }
                                        | Outcome::SessionOpened { .. }
                                        | Outcome::SessionKept
                                ),
                                "{outcome:?}"
                            );
                            answers += 1;
                        }
                        Effect::Installed { .. } => self.installed[i] = true,
                        Effect::Abandoned { .. }
                        | Effect::Applied { .. }
                        | Effect::Watch { .. } => {}
                    }
                }
            }
        }
        answers
    }

    /// One millisecond: every node ticks, every message in flight arrives.
    fn step(&mut self) -> usize {
        self.now += Duration::from_millis(1);
        for core in &mut self.cores {
            core.tick(self.now).unwrap();
        }
        let mut answers = self.settle();
        for (from, to, message) in std::mem::take(&mut self.in_flight) {
            let (f, t) = (from.0 as usize - 1, to.0 as usize - 1);
            if !(self.connected[f] && self.connected[t]) {
                continue;
            }
            if matches!(message, PeerMessage::Paxos(Message::SnapshotChunk { .. })) {
                self.chunks[t] += 1;
            }
            self.cores[t].peer(self.now, from, message).unwrap();
        }
        answers += self.settle();
        answers
    }

    fn leader(&self) -> Option<usize> {
        (0..3).find(|i| self.cores[*i].status().is_leader)
    }
}

fn acquire(i: u64) -> Request {
    Request {
        client: ClientId(i % 50),
        request: i,
        acked_below: i,
        op: Op::Acquire {
            name: format!("lease-{i:06}"),
            owner: format!("owner-{}", i % 50),
            token: LeaseToken(u128::from(i % 50)),
            ttl_ms: 3_600_000,
            wait_ms: 0,
        },
    }
}

/// Runs `requests` through the leader of n1 and n2, one per step, until
/// each is answered; returns the leader.
fn run_without_n3(c: &mut Cluster, requests: impl IntoIterator<Item = Request>) -> usize {
    let leader = (0..5_000)
        .find_map(|_| {
            c.step();
            c.leader()
        })
        .expect("n1 and n2 elect a leader");
    let (mut sent, mut answered) = (0, 0);
    for request in requests {
        c.cores[leader].request(c.now, request);
        sent += 1;
        answered += c.step();
    }
    while answered < sent {
        answered += c.step();
    }
    leader
}

/// Reconnects n3 and steps until it applied what the leader had.
fn bring_back_n3(c: &mut Cluster, leader: usize) {
    c.connected[2] = true;
    let target = c.cores[leader].status().applied;
    for _ in 0..5_000 {
        c.step();
        if c.cores[2].status().applied >= target {
            break;
        }
    }
    assert!(c.installed[2], "n3 installed a snapshot");
    assert!(c.cores[2].status().applied >= target);
}

const SESSION_OWNER: &str = "session-owner";

fn session_request(i: u64, op: Op) -> Request {
    Request {
        client: ClientId(999),
        request: i,
        acked_below: i,
        op,
    }
}

#[test]
fn a_node_that_installs_a_snapshot_keeps_the_lease_sessions_and_their_leases() {
    let mut c = Cluster::new();
    let token = LeaseToken(0xfeed);
    let open = session_request(
        1,
        Op::OpenSession {
            owner: SESSION_OWNER.into(),
            token,
            ttl_ms: 3_600_000,
        },
    );
    // The table numbers sessions from 1.
    let session = SessionId(1);
    let bound = (0..20).map(|i| {
        session_request(
            2 + i,
            Op::AcquireInSession {
                name: format!("bound-{i:02}"),
                owner: SESSION_OWNER.into(),
                token,
                session,
                wait_ms: 0,
            },
        )
    });
    let requests = std::iter::once(open)
        .chain(bound)
        .chain((0..LEASES).map(acquire));
    let leader = run_without_n3(&mut c, requests);
    bring_back_n3(&mut c, leader);
    let table = c.cores[2].table();
    assert_eq!(table.lease_sessions_len(), 1);
    assert_eq!(table.leases_bound_to(session).len(), 20);
    assert_eq!(table, c.cores[leader].table());
    // The session works through the node that installed it.
    let keep = session_request(
        100,
        Op::KeepSession {
            session,
            owner: SESSION_OWNER.into(),
            token,
        },
    );
    c.cores[2].request(c.now, keep);
    let kept = (0..1_000).map(|_| c.step()).sum::<usize>();
    assert_eq!(kept, 1, "the keep is answered");
}

#[test]
fn a_node_far_behind_catches_up_from_a_snapshot_several_times_the_message_limit() {
    let mut c = Cluster::new();
    let leader = run_without_n3(&mut c, (0..LEASES).map(acquire));
    let snapshot = c.cores[leader].table().to_snapshot().len();
    assert!(
        snapshot > 4 * MESSAGE_LIMIT,
        "the table's snapshot is {snapshot} bytes"
    );
    bring_back_n3(&mut c, leader);
    assert!(c.chunks[2] >= 4, "in {} chunks", c.chunks[2]);
    assert_eq!(c.cores[2].table().len(), LEASES as usize);
    let applied = c.cores[2].status().applied;
    assert_eq!(
        c.cores[2].table(),
        c.cores[leader].table(),
        "at slot {applied}"
    );
}

#[test]
fn members_snapshot_at_different_slots_so_that_they_never_all_pause_at_once() {
    let mut c = Cluster::new();
    c.connected[2] = true;
    run_without_n3(&mut c, (0..LEASES / 3).map(acquire));
    for (i, slots) in c.snapshots.iter().enumerate() {
        assert!(slots.len() >= 3, "n{} took {slots:?}", i + 1);
        assert!(
            slots.windows(2).all(|w| w[1] - w[0] == 100),
            "n{} snapshots once every 100 slots: {slots:?}",
            i + 1
        );
    }
    let phases: Vec<_> = c.snapshots.iter().map(|s| s[0] % 100).collect();
    assert!(
        phases[0] != phases[1] && phases[1] != phases[2] && phases[0] != phases[2],
        "each member at its own phase: {:?}",
        c.snapshots
    );
}

#[test]
fn no_snapshot_period_overflows_the_phase() {
    let members: Vec<_> = (1..=8).map(NodeId).collect();
    for id in &members {
        let mut cfg = NodeConfig::new(*id, members.clone());
        cfg.snapshot_every = u64::MAX;
        let paxos = cfg.paxos_config(u64::from(id.0));
        let core = NodeCore::new(cfg, paxos, JournalState::default(), Duration::ZERO).unwrap();
        for slot in [1, 1_000, 1 << 40] {
            assert!(!core.snapshot_due(slot), "{id} at slot {slot}");
        }
    }
}
