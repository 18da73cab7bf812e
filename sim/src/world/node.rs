//! A simulated node's steps, performed the way the runtime performs them:
//! persist, then send, then apply; plus the leader's lease duties.

use super::{Event, MS, World};
use crate::machine::{self, History};
use trexlock_lease::LeaseTable;
use trexlock_lease::command::{Body, Command};
use trexlock_lease::table::Event as LeaseEvent;
use trexlock_lease::time::LeaderClock;
use trexlock_paxos::{Journal, Leadership, PaxosError, Ready, Replica};

const SNAPSHOT_EVERY: u64 = 20;

impl World {
    pub(super) fn start_node(&mut self, i: usize) {
        let cfg = self.config(i);
        let now = self.local(i);
        let node = &mut self.nodes[i];
        let state = match node.journal.load() {
            Ok(s) => s,
            Err(e) => {
                self.checker
                    .violations
                    .push(format!("{}: journal load: {e}", node.id));
                return;
            }
        };
        node.history = History::default();
        node.table = LeaseTable::new();
        node.leader_clock = None;
        node.tick_for = None;
        node.granted.clear();
        match Replica::new(cfg, state, now) {
            Ok(replica) => {
                let (id, promised) = (node.id, replica.promised());
                node.replica = Some(replica);
                self.checker.saw_promise(id, promised);
            }
            Err(e) => self
                .checker
                .violations
                .push(format!("{}: restart refused: {e}", node.id)),
        }
    }

    pub(super) fn after_step(&mut self, i: usize, result: Option<Result<Ready, PaxosError>>) {
        let ready = match result {
            None => return,
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                let id = self.nodes[i].id;
                self.checker.violations.push(format!("{id} stopped: {e}"));
                return;
            }
        };
        let id = self.nodes[i].id;
        if let Err(e) = self.nodes[i].journal.persist(&ready.write) {
            self.checker.violations.push(format!("{id}: journal: {e}"));
            return;
        }
        for env in ready.messages {
            self.checker.on_send(&env);
            self.send(env);
        }
        match ready.leadership {
            Some(Leadership::Elected { ballot }) => {
                self.outcome.elections += 1;
                let now = self.local_us(i);
                self.nodes[i].leader_clock = Some(LeaderClock::new(ballot, now));
                self.nodes[i].tick_for = None;
                self.propose_stamped(i, Body::Tick);
            }
            Some(Leadership::Lost) => self.nodes[i].leader_clock = None,
            None => {}
        }
        if let Some(snapshot) = ready.install {
            match machine::split_snapshot(&snapshot) {
                Ok((history, table)) => {
                    for (slot, value) in history.iter() {
                        self.checker.on_apply(id, slot, value);
                    }
                    self.nodes[i].history = history;
                    self.nodes[i].table = table;
                    self.nodes[i].granted.clear();
                }
                Err(e) => self
                    .checker
                    .violations
                    .push(format!("{id}: bad snapshot: {e}")),
            }
        }
        let mut snapshot_due = false;
        for (slot, value) in ready.chosen {
            let last = self.nodes[i].history.last_slot();
            if slot != last + 1 {
                self.checker
                    .violations
                    .push(format!("{id} applied slot {slot} right after slot {last}"));
                return;
            }
            self.checker.on_apply(id, slot, &value);
            self.outcome.chosen = self.outcome.chosen.max(slot);
            for bytes in value.commands() {
                self.apply_command(i, bytes);
            }
            self.nodes[i].history.apply(value);
            snapshot_due |= slot.is_multiple_of(SNAPSHOT_EVERY);
        }
        if let Some(replica) = self.nodes[i].replica.as_ref() {
            self.checker.saw_promise(id, replica.promised());
        }
        if snapshot_due {
            let snapshot = machine::joint_snapshot(&self.nodes[i].history, &self.nodes[i].table);
            let result = self.replica(i).map(|r| r.snapshot_taken(snapshot));
            self.after_step(i, result);
        }
    }

    /// Applies one command to node `i`'s lease table, checks that its
    /// grants carry growing stamps, and answers this node's clients.
    fn apply_command(&mut self, i: usize, bytes: &[u8]) {
        let id = self.nodes[i].id;
        let command = match Command::decode(bytes) {
            Ok(c) => c,
            Err(e) => {
                self.checker
                    .violations
                    .push(format!("{id}: undecodable command: {e}"));
                return;
            }
        };
        let applied = self.nodes[i].table.apply(&command);
        for event in &applied.events {
            if let LeaseEvent::Granted { name, stamp, .. } = event {
                let last = self.nodes[i].granted.insert(name.clone(), *stamp);
                if last.is_some_and(|l| l >= *stamp) {
                    self.checker.violations.push(format!(
                        "{id}: lease {name} granted with stamp {stamp} after {}",
                        last.unwrap_or_default()
                    ));
                }
                if i == 0 {
                    self.outcome.lease_grants += 1;
                }
            }
        }
        for response in applied.responses {
            let Some(c) = self.clients.iter().position(|c| c.id == response.client) else {
                continue;
            };
            if self.clients[c].home == i {
                let delay = self.delay();
                self.schedule(
                    delay,
                    Event::ClientResponse {
                        client: c,
                        request: response.request,
                        outcome: response.outcome,
                    },
                );
            }
        }
    }

    /// Stamps a command with this leader's epoch clock and proposes it.
    pub(super) fn propose_stamped(&mut self, i: usize, body: Body) {
        let Some(clock) = self.nodes[i].leader_clock else {
            return;
        };
        let (epoch, elapsed_us) = clock.stamp(self.local_us(i));
        let bytes = Command {
            epoch,
            elapsed_us,
            body,
        }
        .encode();
        let now = self.local(i);
        if let Some(Ok(ready)) = self.replica(i).map(|r| r.propose(now, vec![bytes])) {
            self.after_step(i, Some(Ok(ready)));
        }
    }

    /// The leader proposes a tick when, by its clock, a lease someone
    /// waits for has run out.
    pub(super) fn tick_if_a_lease_is_due(&mut self, i: usize) {
        let node = &self.nodes[i];
        let (Some(clock), Some(deadline)) = (node.leader_clock, node.table.next_deadline_us())
        else {
            return;
        };
        if node.tick_for.is_some_and(|t| t >= deadline) {
            return;
        }
        let due = clock
            .local_time_for(&node.table, deadline)
            .is_some_and(|local| local <= self.local_us(i));
        if due {
            self.nodes[i].tick_for = Some(deadline);
            self.propose_stamped(i, Body::Tick);
        }
    }

    /// A client request reaching node `i`: proposed if it leads, else
    /// forwarded once toward the leader it knows.
    pub(super) fn node_request(&mut self, i: usize, request: trexlock_lease::Request, hops: u32) {
        if self.nodes[i].replica.is_none() {
            return;
        }
        if self.nodes[i].paused_until > self.now {
            let at = self.nodes[i].paused_until + self.rng.u64(0..MS);
            self.schedule_at(
                at,
                Event::ClientRequest {
                    node: i,
                    request,
                    hops,
                },
            );
            return;
        }
        if self.nodes[i].leader_clock.is_some() {
            self.propose_stamped(i, Body::Request(request));
            return;
        }
        let leader = self.nodes[i].replica.as_ref().and_then(Replica::leader);
        if let (Some(leader), true) = (leader, hops > 0) {
            let j = self.index(leader);
            if j != i && !self.blocked.contains(&(i, j)) && self.rng.f64() >= self.loss {
                let delay = self.delay();
                self.schedule(
                    delay,
                    Event::ClientRequest {
                        node: j,
                        request,
                        hops: hops - 1,
                    },
                );
            }
        }
    }
}
