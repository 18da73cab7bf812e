//! CPU per request of the shipped node cores, without I/O: three
//! `NodeCore`s (the code every node runs) wired in memory, each journal
//! write reported synced at once, each peer message encoded and decoded
//! with postcard as the transport does. One iteration is one closed-loop
//! round of the cluster bench's `uncontended` case: `k` sessions each
//! take their own lease, then give it back (2·k requests, two consensus
//! rounds), measured until every answer is out.
//!
//! ```text
//! cargo bench --bench node_core
//! ```
//!
//! The time per request here is the part of the cluster benchmark's
//! round that belongs to the node cores across all three nodes (it leaves
//! out sockets, the tokio shells, the client and the disk; it allocates
//! with mimalloc, as the `trexlock` binary does), so it moves
//! when a change to the cores' per-request work does, on a machine too
//! noisy for the cluster benchmark to show it.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::collections::VecDeque;
use std::hint::black_box;
use std::time::Duration;
use trexlock::lease::command::{ClientId, LeaseToken, Op, Outcome, Request, Stamp};
use trexlock::lease::network::PeerMessage;
use trexlock::lease::node::{Effect, NodeConfig, NodeCore};
use trexlock::paxos::{JournalState, NodeId};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NODES: usize = 3;

struct Cluster {
    cores: Vec<NodeCore>,
    wire: VecDeque<(NodeId, usize, Vec<u8>)>,
    now: Duration,
    leader: usize,
    /// Answers to the current round, by session.
    answers: Vec<Option<Outcome>>,
}

fn node(i: usize) -> NodeId {
    NodeId(u16::try_from(i + 1).expect("a few nodes"))
}

impl Cluster {
    fn elected() -> Cluster {
        let members: Vec<_> = (0..NODES).map(node).collect();
        let cores = (0..NODES)
            .map(|i| {
                let cfg = NodeConfig::new(node(i), members.clone());
                let paxos = cfg.paxos_config(i as u64);
                NodeCore::new(cfg, paxos, JournalState::default(), Duration::ZERO)
                    .expect("a fresh core")
            })
            .collect();
        let mut c = Cluster {
            cores,
            wire: VecDeque::new(),
            now: Duration::ZERO,
            leader: 0,
            answers: Vec::new(),
        };
        for _ in 0..10_000 {
            c.now += Duration::from_millis(1);
            for core in &mut c.cores {
                core.tick(c.now).expect("tick");
            }
            c.settle();
            if let Some(i) = (0..NODES).find(|i| c.cores[*i].status().is_leader) {
                c.leader = i;
                return c;
            }
        }
        panic!("no leader elected");
    }

    /// Ends each core's round and performs its effects until nothing is
    /// left to do anywhere.
    fn settle(&mut self) {
        loop {
            let mut busy = false;
            for i in 0..NODES {
                self.cores[i].end_round(self.now).expect("round");
                loop {
                    let effects = self.cores[i].take_effects();
                    if effects.is_empty() {
                        break;
                    }
                    busy = true;
                    self.perform(i, effects);
                }
            }
            while let Some((from, to, bytes)) = self.wire.pop_front() {
                busy = true;
                let message: PeerMessage = postcard::from_bytes(&bytes).expect("decodes");
                self.cores[to].peer(self.now, from, message).expect("peer");
            }
            if !busy {
                return;
            }
        }
    }

    fn perform(&mut self, i: usize, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Persist { id, .. } => self.cores[i].synced(self.now, id).expect("synced"),
                Effect::Send { to, message } => {
                    let bytes = postcard::to_stdvec(&message).expect("encodes");
                    self.wire.push_back((node(i), usize::from(to.0) - 1, bytes));
                }
                Effect::Answer {
                    client, outcome, ..
                } if outcome != Outcome::Queued => {
                    let session = usize::try_from(client.0).expect("small ids");
                    self.answers[session] = Some(outcome);
                }
                _ => {}
            }
        }
    }

    /// Sends one request per session to the leader and returns the
    /// answers once all are in.
    fn round(&mut self, requests: Vec<Request>) -> Vec<Outcome> {
        self.answers = vec![None; requests.len()];
        self.now += Duration::from_micros(500);
        for request in requests {
            self.cores[self.leader].request(self.now, request);
        }
        self.settle();
        std::mem::take(&mut self.answers)
            .into_iter()
            .map(|a| a.expect("every request answered"))
            .collect()
    }
}

/// Request `id` of session `i` (every earlier one answered).
fn request(i: usize, id: u64, op: Op) -> Request {
    Request {
        client: ClientId(i as u64),
        request: id,
        acked_below: id,
        op,
    }
}

/// Session `i`'s own lease, its owner and its token.
fn holder(i: usize) -> (String, String, LeaseToken) {
    (
        format!("own-{i}"),
        format!("owner-{i}"),
        LeaseToken(i as u128 + 1),
    )
}

/// The cluster bench's `uncontended` pair for `k` sessions: each takes
/// `own-i` and releases it; `next` numbers the requests.
fn acquire_release(c: &mut Cluster, k: usize, next: &mut u64) {
    let acquires = (0..k)
        .map(|i| {
            let (name, owner, token) = holder(i);
            request(
                i,
                *next,
                Op::Acquire {
                    name,
                    owner,
                    token,
                    ttl_ms: 30_000,
                    wait_ms: 0,
                },
            )
        })
        .collect();
    let stamps: Vec<Stamp> = c
        .round(acquires)
        .into_iter()
        .map(|outcome| match outcome {
            Outcome::Granted { stamp, .. } => stamp,
            other => panic!("not granted: {other:?}"),
        })
        .collect();
    *next += 1;
    let releases = stamps
        .into_iter()
        .enumerate()
        .map(|(i, stamp)| {
            let (name, owner, token) = holder(i);
            request(
                i,
                *next,
                Op::Release {
                    name,
                    owner,
                    stamp,
                    token,
                },
            )
        })
        .collect();
    for outcome in c.round(releases) {
        assert_eq!(outcome, Outcome::Released);
    }
    *next += 1;
}

fn uncontended_round(c: &mut Criterion) {
    let mut group = c.benchmark_group("node_core_uncontended");
    for k in [1usize, 64] {
        group.throughput(Throughput::Elements(2 * k as u64));
        group.bench_function(BenchmarkId::from_parameter(k), |b| {
            let mut cluster = Cluster::elected();
            let mut next = 1;
            b.iter(|| acquire_release(black_box(&mut cluster), k, &mut next));
        });
    }
    group.finish();
}

criterion_group!(benches, uncontended_round);
criterion_main!(benches);
