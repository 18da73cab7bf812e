//! Commands chosen per second through three in-memory replicas: the cost of
//! the consensus core alone, with no disk and no network.

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::collections::VecDeque;
use std::time::Duration;
use trexlock::paxos::{
    Config, Envelope, Journal, JournalState, MemJournal, NodeId, Ready, Replica, Snapshot,
};

struct Cluster {
    replicas: Vec<Replica>,
    journals: Vec<MemJournal>,
    inflight: VecDeque<Envelope>,
    now: Duration,
    chosen: u64,
}

impl Cluster {
    fn new() -> Cluster {
        let members: Vec<NodeId> = (1..=3).map(NodeId).collect();
        let replicas = members
            .iter()
            .map(|id| {
                let cfg = Config::new(*id, members.clone());
                Replica::new(cfg, JournalState::default(), Duration::ZERO).unwrap()
            })
            .collect();
        let mut cluster = Cluster {
            replicas,
            journals: vec![MemJournal::new(); 3],
            inflight: VecDeque::new(),
            now: Duration::from_secs(10),
            chosen: 0,
        };
        let ready = cluster.replicas[0].tick(cluster.now).unwrap();
        cluster.perform(0, ready);
        cluster.pump();
        assert!(cluster.replicas[0].is_leader());
        cluster
    }

    fn perform(&mut self, i: usize, ready: Ready) {
        self.journals[i].persist(&ready.write).unwrap();
        self.inflight.extend(ready.messages);
        if i == 0 {
            for (slot, value) in ready.chosen {
                self.chosen += value.commands().len() as u64;
                if slot % 4096 == 0 {
                    let snap = Snapshot {
                        slot,
                        data: Bytes::new(),
                    };
                    let ready = self.replicas[0].snapshot_taken(snap).unwrap();
                    self.journals[0].persist(&ready.write).unwrap();
                }
            }
        }
    }

    fn pump(&mut self) {
        while let Some(env) = self.inflight.pop_front() {
            let i = usize::from(env.to.0) - 1;
            let ready = self.replicas[i].handle(self.now, env).unwrap();
            self.perform(i, ready);
        }
    }

    /// Proposes `batch` commands in one call and runs the cluster until
    /// they are chosen at the leader.
    fn round(&mut self, batch: &[Bytes]) {
        let target = self.chosen + batch.len() as u64;
        let ready = self.replicas[0].propose(self.now, batch.to_vec()).unwrap();
        self.perform(0, ready);
        self.pump();
        assert_eq!(self.chosen, target);
    }
}

fn chosen_per_second(c: &mut Criterion) {
    let mut group = c.benchmark_group("paxos_core_3_replicas");
    for batch in [1usize, 64] {
        let commands: Vec<Bytes> = (0..batch)
            .map(|i| Bytes::from(format!("acquire lease-{i} ttl=10s")))
            .collect();
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("batch", batch), &commands, |b, cmds| {
            let mut cluster = Cluster::new();
            b.iter(|| cluster.round(cmds));
        });
    }
    group.finish();
}

criterion_group!(benches, chosen_per_second);
criterion_main!(benches);
