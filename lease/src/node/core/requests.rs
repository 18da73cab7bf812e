//! Requests that arrived at this node: admission, routing to the leader,
//! retries, and what the leader proposes.

use super::{Effect, NodeCore};
use crate::command::{Body, ClientId, Command, Op, Outcome, Refusal, Request};
use crate::error::NodeError;
use crate::network::PeerMessage;
use crate::table::{MAX_LEASE_SESSIONS, admit};
use std::time::Duration;
use trexlock_paxos::{NodeId, PaxosError, ProposeError};

/// How long past its own wait a request may stay pending here. A caller
/// with the default call timeout ([`crate::client::DEFAULT_CALL_TIMEOUT`])
/// gave up long before; an entry this old is one nobody is likely to
/// collect: a duplicate acquire of a waiting owner that the table answers
/// only with `Queued`, or a remote caller gone silently. A caller whose own
/// call timeout is longer than this sees its call end with
/// [`crate::LeaseError::Stopped`].
pub(super) const PENDING_GRACE: Duration = Duration::from_secs(60);

/// A request that arrived at this node and awaits its final answer.
#[derive(Clone, Debug)]
pub(super) struct Pending {
    pub(super) request: Request,
    pub(super) arrived: Duration,
    pub(super) routed_at: Option<Duration>,
    pub(super) queued: bool,
    /// Forgotten at this time if still unanswered.
    pub(super) expires: Duration,
}

/// How long a request's caller may wait for its answer.
fn wait_of(request: &Request) -> Duration {
    match request.op {
        Op::Acquire { wait_ms, .. } | Op::AcquireShare { wait_ms, .. } => {
            Duration::from_millis(wait_ms)
        }
        _ => Duration::ZERO,
    }
}

impl NodeCore {
    /// Admits a client's request (its fields and its encoded size within
    /// the table's limits, and a new lease within the node's
    /// [`super::NodeConfig::max_leases`]), then routes it. A request refused here is
    /// answered at once: it never reaches the log.
    pub(super) fn admit(&mut self, mut request: Request) {
        let full = matches!(&request.op, Op::Acquire { name, .. } | Op::AcquireShare { name, .. } | Op::AcquireInSession { name, .. }
            if self.table.len() >= self.cfg.max_leases && !self.table.tracks(name));
        let sessions_full = matches!(request.op, Op::OpenSession { .. })
            && self.table.lease_sessions_len() >= MAX_LEASE_SESSIONS;
        let admitted = if full {
            Err(Refusal::TooManyLeases)
        } else if sessions_full {
            Err(Refusal::TooManyLeaseSessions)
        } else {
            admit(&request)
        };
        if let Err(refusal) = admitted {
            self.metrics.refused(refusal);
            self.effects.push(Effect::Answer {
                client: request.client,
                request: request.request,
                outcome: Outcome::Refused(refusal),
            });
            return;
        }
        if sabotaged!(self, ListFromLocalTable)
            && let Op::List {
                prefix,
                after,
                limit,
            } = &request.op
        {
            let outcome = self.table.list(prefix, after.as_deref(), *limit);
            self.effects.push(Effect::Answer {
                client: request.client,
                request: request.request,
                outcome,
            });
            return;
        }
        if sabotaged!(self, LockDelayDropped)
            && let Op::SetLockDelay { lock_delay_ms, .. } = &mut request.op
        {
            *lock_delay_ms = 0;
        }
        let key = (request.client, request.request);
        let expires = self.now + wait_of(&request) + PENDING_GRACE;
        self.pending.insert(
            key,
            Box::new(Pending {
                request,
                arrived: self.now,
                routed_at: None,
                queued: false,
                expires,
            }),
        );
        self.route(key);
    }

    /// Sends a pending request toward the leader (or queues it for
    /// proposal here, if this node leads).
    pub(super) fn route(&mut self, key: (ClientId, u64)) {
        let now = self.now;
        let leading = self.leader_clock.is_some();
        let leader = self.replica.leader().filter(|l| *l != self.cfg.node);
        let Some(p) = self.pending.get_mut(&key) else {
            return;
        };
        if leading {
            p.routed_at = Some(now);
            let body = Body::Request(p.request.clone());
            self.stamp_and_queue(body);
        } else if let Some(leader) = leader {
            p.routed_at = Some(now);
            let forward = PeerMessage::Forward(vec![p.request.clone()]);
            self.send(leader, forward);
        }
    }

    /// Requests a peer forwarded: proposed here if this node leads, else
    /// passed on once to the leader it knows (never back to the sender).
    /// Each is validated again: a peer is not trusted to have done it.
    pub(super) fn on_forward(&mut self, from: NodeId, requests: Vec<Request>) {
        let requests: Vec<Request> = requests.into_iter().filter(|r| admit(r).is_ok()).collect();
        if requests.is_empty() {
            return;
        }
        if self.leader_clock.is_some() {
            for request in requests {
                self.stamp_and_queue(Body::Request(request));
            }
        } else if let Some(leader) = self
            .replica
            .leader()
            .filter(|l| *l != self.cfg.node && *l != from)
        {
            self.send(leader, PeerMessage::Forward(requests));
        }
    }

    /// Forgets requests nobody will collect (see [`PENDING_GRACE`]).
    pub(super) fn expire_pending(&mut self) {
        let now = self.now;
        let expired: Vec<(ClientId, u64)> = self
            .pending
            .iter()
            .filter(|(_, p)| p.expires <= now)
            .map(|(k, _)| *k)
            .collect();
        for (client, request) in expired {
            self.pending.remove(&(client, request));
            self.effects.push(Effect::Abandoned { client, request });
        }
    }

    /// Re-sends every request unanswered for a retry interval (a retry is
    /// answered from the table, never executed twice).
    pub(super) fn retry_due(&mut self) {
        let (now, retry) = (self.now, self.cfg.retry_interval);
        let due: Vec<(ClientId, u64)> = self
            .pending
            .iter()
            .filter(|(_, p)| {
                !p.queued && p.routed_at.is_none_or(|t| now.saturating_sub(t) >= retry)
            })
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            self.route(key);
        }
    }

    /// A new leader is known: send it what is still waiting.
    pub(super) fn follow_leader_change(&mut self) {
        let leader = self.replica.leader();
        if leader == self.known_leader {
            return;
        }
        self.known_leader = leader;
        let keys: Vec<_> = self
            .pending
            .iter()
            .filter(|(_, p)| !p.queued)
            .map(|(k, _)| *k)
            .collect();
        for key in keys {
            self.route(key);
        }
    }

    /// Stamps a command with this leader's epoch clock and queues it for
    /// the round's proposal.
    pub(super) fn stamp_and_queue(&mut self, body: Body) {
        let Some(clock) = self.leader_clock else {
            return;
        };
        let (epoch, elapsed_us) = clock.stamp(self.now_us());
        let command = Command {
            epoch,
            elapsed_us,
            body,
        };
        self.to_propose.push(command.encode());
    }

    pub(super) fn propose_queued(&mut self) -> Result<(), NodeError> {
        if self.to_propose.is_empty() {
            return Ok(());
        }
        let mut commands = std::mem::take(&mut self.to_propose);
        // Admission keeps every request far below a slot; a command that
        // still would not fit is dropped here, so that it cannot take the
        // rest of the round's batch down with it.
        let slot_bytes = self.replica.config().max_batch_bytes;
        commands.retain(|c| {
            let fits = c.len() + trexlock_paxos::COMMAND_OVERHEAD_BYTES <= slot_bytes;
            if !fits {
                tracing::warn!(node = %self.cfg.node, bytes = c.len(), "command larger than a slot dropped");
            }
            fits
        });
        match self.replica.propose(self.now, commands) {
            Ok(ready) => self.perform(ready),
            // Lost leadership meanwhile: origins retry with the new leader.
            Err(ProposeError::NotLeader { .. }) => Ok(()),
            Err(e @ ProposeError::CommandTooLarge { .. }) => {
                tracing::warn!(node = %self.cfg.node, error = %e, "proposal refused");
                Ok(())
            }
            Err(ProposeError::Stopped) => Err(PaxosError::Stopped.into()),
        }
    }

    /// Hands the table's answers to the requests waiting here.
    pub(super) fn answer(&mut self, client: ClientId, request: u64, outcome: &Outcome) {
        let key = (client, request);
        let Some(p) = self.pending.get_mut(&key) else {
            return;
        };
        if *outcome == Outcome::Queued {
            p.queued = true;
            crate::metrics::Metrics::add(&self.metrics.waits, 1);
        } else {
            let latency = self.now.saturating_sub(p.arrived);
            crate::metrics::Metrics::add(&self.metrics.commit_latency_count, 1);
            crate::metrics::Metrics::add(
                &self.metrics.commit_latency_us_total,
                u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
            );
            self.metrics.commit_latency.observe(latency);
            match outcome {
                Outcome::Granted { .. } if p.queued => self.metrics.acquire_wait.observe(latency),
                Outcome::Refused(refusal) => self.metrics.refused(*refusal),
                _ => {}
            }
            self.pending.remove(&key);
        }
        self.effects.push(Effect::Answer {
            client,
            request,
            outcome: outcome.clone(),
        });
    }
}
