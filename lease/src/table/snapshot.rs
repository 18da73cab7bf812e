//! The table's snapshot encoding: compact, streamed, and checked on load.
//!
//! A snapshot holds only the leases and sessions; every index (expiries,
//! awaited leases, session expiries, counters) is rebuilt on load, so it is
//! never stored twice nor trusted from the bytes. Owners are written once,
//! in a table, and holders and waiters refer to them by position; tokens
//! take their 16 bytes rather than a 19-byte varint. Leases are encoded one
//! after another into one buffer and decoded one at a time, so neither
//! direction builds a second copy of the table in between.
//!
//! Layout: the format byte, a [`Header`], `lease_sessions` lease-session
//! records in id order (so that holders can be checked against them),
//! `leases` lease records in name order, `sessions` request-dedup session
//! records, the lock-delay records, then the share lines (semaphores and
//! read-write leases). A lease session's list of leases is an index: it is
//! rebuilt from the holders bound to it.

use super::lease_sessions::LeaseSession;
use super::line::Line;
use super::owners::Shared;
use super::{
    Holder, Lease, LeaseTable, MAX_LEASE_SESSIONS, MAX_LEASES, MAX_LEASES_PER_SESSION,
    MAX_NAME_BYTES, MAX_OUTCOMES_PER_SESSION, MAX_SESSIONS, MAX_TOTAL_VALUE_BYTES, MAX_WAITERS,
    MAX_WAITERS_PER_LEASE, Session, Waiter,
};
use crate::command::{ClientId, LeaseToken, SessionId, Stamp};
use bytes::Bytes;
use serde::ser::SerializeSeq;
use serde::{Deserialize, Serialize, Serializer};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use trexlock_paxos::Ballot;

/// The encoding written by this build. A snapshot of another format is
/// refused with [`SnapshotError::Format`]: format 2 had no lock-delays (a
/// node installing it would grant blocked names at once), format 3 no
/// semaphores or read-write leases, format 4 no lease sessions (no session
/// on holders and waiters).
const FORMAT: u8 = 5;

/// Why bytes could not be loaded as a table.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The first byte names another encoding.
    #[error(
        "snapshot format {found} is not the supported format {FORMAT} (written by another version of trexlock)"
    )]
    Format {
        /// The format byte found.
        found: u8,
    },
    /// The bytes do not decode.
    #[error("snapshot does not decode: {0}")]
    Decode(#[from] postcard::Error),
    /// The bytes decode to a table no sequence of commands could build.
    #[error("snapshot breaks a table limit or invariant: {0}")]
    Invalid(&'static str),
}

#[derive(Serialize, Deserialize)]
struct Header<'a> {
    now: u64,
    epoch: Ballot,
    epoch_base: u64,
    next_stamp: u64,
    #[serde(borrow)]
    owners: Vec<&'a str>,
    leases: u64,
    sessions: u64,
    last_lease_session: u64,
    lease_sessions: u64,
}

#[derive(Serialize, Deserialize)]
struct HolderRecord {
    owner: u32,
    token: [u8; 16],
    stamp: u64,
    expires_at: u64,
    session: Option<SessionId>,
}

#[derive(Serialize, Deserialize)]
struct LeaseSessionRecord {
    id: SessionId,
    owner: u32,
    token: [u8; 16],
    ttl_us: u64,
    expires_at: u64,
}

#[derive(Serialize, Deserialize)]
struct WaiterRecord {
    owner: u32,
    token: [u8; 16],
    client: ClientId,
    request: u64,
    ttl_us: u64,
    give_up_at: u64,
    session: Option<SessionId>,
}

#[derive(Serialize)]
struct LeaseOut<'a> {
    name: &'a str,
    holder: Option<HolderRecord>,
    waiters: WaitersOut<'a>,
    value: Option<&'a Bytes>,
}

#[derive(Deserialize)]
struct LeaseIn<'a> {
    name: &'a str,
    holder: Option<HolderRecord>,
    waiters: Vec<WaiterRecord>,
    value: Option<Bytes>,
}

/// A wait line written straight from the table, owners by position.
struct WaitersOut<'a> {
    line: &'a Line,
    owners: &'a Positions,
}

impl Serialize for WaitersOut<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.line.len()))?;
        for w in self.line.iter() {
            seq.serialize_element(&WaiterRecord {
                owner: self.owners.of(&w.owner),
                token: w.token.0.to_le_bytes(),
                client: w.client,
                request: w.request,
                ttl_us: w.ttl_us,
                give_up_at: w.give_up_at,
                session: w.session,
            })?;
        }
        seq.end()
    }
}

impl LeaseTable {
    /// Serialises the table (a snapshot): its leases, sessions and clock,
    /// not its indexes.
    pub fn to_snapshot(&self) -> Bytes {
        Bytes::from(self.to_snapshot_after(0))
    }

    /// The bytes of [`LeaseTable::to_snapshot`] after `room` zero bytes,
    /// in one buffer: room for a frame in front of the data (see
    /// [`trexlock_paxos::Replica::snapshot_taken_in`]) without copying it.
    ///
    /// ```
    /// use trexlock_lease::LeaseTable;
    ///
    /// let table = LeaseTable::new();
    /// let buf = table.to_snapshot_after(16);
    /// assert!(buf[..16].iter().all(|b| *b == 0));
    /// assert_eq!(&buf[16..], &table.to_snapshot()[..]);
    /// ```
    pub fn to_snapshot_after(&self, room: usize) -> Vec<u8> {
        let mut positions = Positions::default();
        let mut owners: Vec<&str> = Vec::new();
        let session_owners = self.lease_sessions.open.values().map(|s| &s.owner);
        let lease_owners = self.leases.values().flat_map(|lease| {
            let holder = lease.holder.iter().map(|h| &h.owner);
            holder.chain(lease.waiters.iter().map(|w| &w.owner))
        });
        {
            for owner in session_owners.chain(lease_owners) {
                positions.0.entry(key(owner)).or_insert_with(|| {
                    owners.push(owner);
                    owners.len() as u32 - 1
                });
            }
        }
        let header = Header {
            now: self.now,
            epoch: self.epoch,
            epoch_base: self.epoch_base,
            next_stamp: self.next_stamp,
            owners,
            leases: self.leases.len() as u64,
            sessions: self.sessions.len() as u64,
            last_lease_session: self.lease_sessions.last_id,
            lease_sessions: self.lease_sessions.open.len() as u64,
        };
        let mut out = Vec::with_capacity(room + 64 + self.leases.len() * 48);
        out.resize(room, 0);
        out.push(FORMAT);
        let mut out = encode(&header, out);
        for (id, s) in &self.lease_sessions.open {
            let record = LeaseSessionRecord {
                id: *id,
                owner: positions.of(&s.owner),
                token: s.token.0.to_le_bytes(),
                ttl_us: s.ttl_us,
                expires_at: s.expires_at,
            };
            out = encode(&record, out);
        }
        for (name, lease) in &self.leases {
            let record = LeaseOut {
                name,
                holder: lease.holder.as_ref().map(|h| HolderRecord {
                    owner: positions.of(&h.owner),
                    token: h.token.0.to_le_bytes(),
                    stamp: h.stamp.0,
                    expires_at: h.expires_at,
                    session: h.session,
                }),
                waiters: WaitersOut {
                    line: &lease.waiters,
                    owners: &positions,
                },
                value: lease.value.as_deref(),
            };
            out = encode(&record, out);
        }
        for session in &self.sessions {
            out = encode(&session, out);
        }
        out = encode(&self.lock_delay_records(), out);
        encode(&self.share_records(), out)
    }

    /// Restores a table from [`LeaseTable::to_snapshot`], rebuilding its
    /// indexes. Every limit the table keeps is checked again.
    ///
    /// # Errors
    /// [`SnapshotError`] naming what is wrong with the bytes.
    pub fn from_snapshot(bytes: &[u8]) -> Result<LeaseTable, SnapshotError> {
        let Some((&format, rest)) = bytes.split_first() else {
            return Err(SnapshotError::Invalid("empty snapshot"));
        };
        if format != FORMAT {
            return Err(SnapshotError::Format { found: format });
        }
        let (header, rest) = postcard::take_from_bytes::<Header>(rest)?;
        if header.leases > MAX_LEASES as u64
            || header.sessions > MAX_SESSIONS as u64
            || header.lease_sessions > MAX_LEASE_SESSIONS as u64
        {
            return Err(SnapshotError::Invalid(
                "more leases or sessions than allowed",
            ));
        }
        let mut table = LeaseTable {
            now: header.now,
            epoch: header.epoch,
            epoch_base: header.epoch_base,
            next_stamp: header.next_stamp,
            ..LeaseTable::default()
        };
        let owners = OwnerTable(
            header
                .owners
                .iter()
                .map(|o| table.owners.intern(o))
                .collect(),
        );
        let rest = table.restore_lease_sessions(&header, &owners, rest)?;
        let rest = table.restore_leases(header.leases, &owners, rest)?;
        let rest = table.restore_sessions(header.sessions, rest)?;
        let (lock_delays, rest) = postcard::take_from_bytes(rest)?;
        table.restore_lock_delays(lock_delays)?;
        let (shares, rest) = postcard::take_from_bytes(rest)?;
        table.restore_shares(shares)?;
        if !rest.is_empty() {
            return Err(SnapshotError::Invalid("bytes after the last record"));
        }
        Ok(table)
    }

    /// Reads the header's count of lease sessions from `rest`, in id order
    /// and none above the last id given; returns the bytes after them.
    fn restore_lease_sessions<'a>(
        &mut self,
        header: &Header<'_>,
        owners: &OwnerTable,
        mut rest: &'a [u8],
    ) -> Result<&'a [u8], SnapshotError> {
        self.lease_sessions.last_id = header.last_lease_session;
        let mut previous: Option<SessionId> = None;
        for _ in 0..header.lease_sessions {
            let (record, after) = postcard::take_from_bytes::<LeaseSessionRecord>(rest)?;
            rest = after;
            if previous.is_some_and(|p| p >= record.id) || record.id.0 > header.last_lease_session {
                return Err(SnapshotError::Invalid(
                    "lease sessions out of order or above the last id",
                ));
            }
            previous = Some(record.id);
            let session = LeaseSession {
                owner: owners.get(record.owner)?,
                token: LeaseToken(u128::from_le_bytes(record.token)),
                ttl_us: record.ttl_us,
                expires_at: record.expires_at,
                held: Default::default(),
            };
            self.lease_sessions.insert(record.id, session);
        }
        Ok(rest)
    }

    /// Reads `count` leases from `rest`, in name order, and builds the
    /// lease tree and the indexes over it; returns the bytes after them.
    fn restore_leases<'a>(
        &mut self,
        count: u64,
        owners: &OwnerTable,
        mut rest: &'a [u8],
    ) -> Result<&'a [u8], SnapshotError> {
        // Collected in name order and built in bulk: far faster than
        // inserting a million leases one by one, and the trees come out
        // full instead of half full.
        let room = usize::try_from(count)
            .unwrap_or(usize::MAX)
            .min(rest.len() / MIN_LEASE_RECORD_BYTES);
        let mut leases: Vec<(Shared, Lease)> = Vec::with_capacity(room);
        let mut expiries = Vec::with_capacity(room);
        let mut awaited = Vec::new();
        for _ in 0..count {
            let (record, after) = postcard::take_from_bytes::<LeaseIn>(rest)?;
            rest = after;
            let previous = leases.last().map(|(name, _)| &**name);
            if record.name.is_empty()
                || record.name.len() > MAX_NAME_BYTES
                || previous.is_some_and(|p| p >= record.name)
            {
                return Err(SnapshotError::Invalid("lease names out of order or bounds"));
            }
            let key = Shared::from(record.name);
            let lease = record.into_lease(owners)?;
            let marks = lease.marks();
            if let Some(id) = marks.session {
                let Some(session) = self.lease_sessions.open.get_mut(&id) else {
                    return Err(SnapshotError::Invalid("a lease bound to no open session"));
                };
                if session.held.len() >= MAX_LEASES_PER_SESSION {
                    return Err(SnapshotError::Invalid("too many leases in one session"));
                }
                session.held.insert(key.clone());
                self.lease_sessions.bound += 1;
            }
            if let Some(at) = marks.expires_at {
                expiries.push((at, key.clone()));
                if marks.awaited {
                    awaited.push((at, key.clone()));
                }
            }
            self.value_bytes = self.value_bytes.saturating_add(marks.value_bytes);
            self.waiters = self.waiters.saturating_add(marks.waiters);
            leases.push((key, lease));
        }
        if self.waiters > MAX_WAITERS || self.value_bytes > MAX_TOTAL_VALUE_BYTES as u64 {
            return Err(SnapshotError::Invalid(
                "more waiters or value bytes than allowed",
            ));
        }
        self.leases = leases.into_iter().collect();
        expiries.sort_unstable();
        self.expiries = expiries.into_iter().collect();
        awaited.sort_unstable();
        self.awaited = awaited.into_iter().collect();
        Ok(rest)
    }

    /// Reads `count` client sessions from `rest`, in client order; returns
    /// the bytes after them.
    fn restore_sessions<'a>(
        &mut self,
        count: u64,
        mut rest: &'a [u8],
    ) -> Result<&'a [u8], SnapshotError> {
        let mut previous: Option<ClientId> = None;
        for _ in 0..count {
            let ((client, session), after) =
                postcard::take_from_bytes::<(ClientId, Session)>(rest)?;
            rest = after;
            if previous.is_some_and(|p| p >= client) {
                return Err(SnapshotError::Invalid("sessions out of order"));
            }
            if session.outcomes.len() > MAX_OUTCOMES_PER_SESSION {
                return Err(SnapshotError::Invalid("too many outcomes for one session"));
            }
            previous = Some(client);
            self.outcomes += session.outcomes.len();
            self.session_expiries.insert((session.expires_at, client));
            self.sessions.insert(client, session);
        }
        Ok(rest)
    }
}

/// The header's owners, interned, by position.
struct OwnerTable(Vec<Shared>);

impl OwnerTable {
    /// The owner at position `i`.
    fn get(&self, i: u32) -> Result<Shared, SnapshotError> {
        self.0
            .get(i as usize)
            .cloned()
            .ok_or(SnapshotError::Invalid("owner out of range"))
    }
}

impl LeaseIn<'_> {
    /// The lease this record describes, its owners taken from `owners`;
    /// refused if its line is too long or nobody holds or waits for it.
    fn into_lease(self, owners: &OwnerTable) -> Result<Lease, SnapshotError> {
        if self.waiters.len() > MAX_WAITERS_PER_LEASE {
            return Err(SnapshotError::Invalid("too many waiters for one lease"));
        }
        let holder = match self.holder {
            Some(h) => Some(Holder {
                owner: owners.get(h.owner)?,
                token: LeaseToken(u128::from_le_bytes(h.token)),
                stamp: Stamp(h.stamp),
                expires_at: h.expires_at,
                session: h.session,
            }),
            None => None,
        };
        let waiters = self
            .waiters
            .into_iter()
            .map(|w| {
                Ok(Waiter {
                    owner: owners.get(w.owner)?,
                    token: LeaseToken(u128::from_le_bytes(w.token)),
                    client: w.client,
                    request: w.request,
                    ttl_us: w.ttl_us,
                    give_up_at: w.give_up_at,
                    session: w.session,
                })
            })
            .collect::<Result<VecDeque<_>, SnapshotError>>()?;
        let lease = Lease {
            holder,
            waiters: Line::from(waiters),
            value: self.value.map(Box::new),
        };
        if lease.is_idle() {
            return Err(SnapshotError::Invalid("a lease nobody holds or waits for"));
        }
        Ok(lease)
    }
}

/// The fewest bytes a lease record takes (a one-byte name, no holder, no
/// waiters, no value): bounds what a header's count may make us reserve.
const MIN_LEASE_RECORD_BYTES: usize = 5;

/// Each owner's position in the header's owner table, keyed by the
/// address of its interned string: a table holds one allocation per owner
/// (see [`super::owners`]), and hashing an address instead of the string
/// takes a sizeable share off encoding a million leases.
#[derive(Default)]
struct Positions(HashMap<usize, u32, BuildHasherDefault<AddressHasher>>);

impl Positions {
    fn of(&self, owner: &Shared) -> u32 {
        self.0[&key(owner)]
    }
}

fn key(owner: &Shared) -> usize {
    Arc::as_ptr(owner).cast::<u8>() as usize
}

/// Hashes an address with one multiplication (Fibonacci hashing): the
/// keys are allocations, not input anyone chooses.
#[derive(Default)]
struct AddressHasher(u64);

impl Hasher for AddressHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_usize(&mut self, address: usize) {
        self.0 = (address as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

fn encode<T: Serialize>(value: &T, out: Vec<u8>) -> Vec<u8> {
    postcard::to_extend(value, out).expect("serialising to a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Body, Command, Op, Outcome, Request};
    use trexlock_paxos::NodeId;

    /// `leases` leases over `owners` owners, each its own session's.
    fn table(leases: u64, owners: u64) -> LeaseTable {
        let mut t = LeaseTable::new();
        let epoch = Ballot {
            counter: 1,
            node: NodeId(1),
        };
        for i in 0..leases {
            let o = i % owners;
            let request = Request {
                client: ClientId(o),
                request: i + 1,
                acked_below: i + 1,
                op: Op::Acquire {
                    name: format!("lease-{i:07}"),
                    owner: format!("owner-{o:05}"),
                    token: LeaseToken(u128::from(o) << 64 | 0xdead_beef),
                    ttl_ms: 3_600_000,
                    wait_ms: 0,
                },
            };
            let command = Command {
                epoch,
                elapsed_us: i,
                body: Body::Request(request),
            };
            let applied = t.apply(&command);
            assert!(matches!(
                applied.responses[0].outcome,
                Outcome::Granted { .. }
            ));
        }
        t
    }

    #[test]
    fn a_snapshot_stores_each_owner_once_and_no_index() {
        let t = table(10_000, 100);
        let bytes = t.to_snapshot();
        // A 13-byte name, a 16-byte token, an owner position, a stamp and
        // an expiry: about 40 bytes a lease. Owners written with every
        // holder and expiries written again with their names took 80.
        assert!(bytes.len() < 10_000 * 45, "{} bytes", bytes.len());
        assert_eq!(LeaseTable::from_snapshot(&bytes).unwrap(), t);
    }

    #[test]
    fn a_snapshot_of_format_2_which_had_no_lock_delays_is_refused_naming_both_formats() {
        let mut old = table(3, 1).to_snapshot().to_vec();
        old[0] = 2;
        let error = LeaseTable::from_snapshot(&old).unwrap_err();
        assert!(matches!(error, SnapshotError::Format { found: 2 }));
        let text = error.to_string();
        assert!(text.contains("format 2"), "{text}");
        assert!(text.contains(&format!("format {FORMAT}")), "{text}");
    }

    #[test]
    fn a_snapshot_of_another_format_or_damaged_is_refused_with_the_reason() {
        let bytes = table(10, 3).to_snapshot();
        let mut other = bytes.to_vec();
        other[0] = FORMAT + 1;
        assert!(matches!(
            LeaseTable::from_snapshot(&other),
            Err(SnapshotError::Format { found }) if found == FORMAT + 1
        ));
        let cut = &bytes[..bytes.len() - 1];
        assert!(matches!(
            LeaseTable::from_snapshot(cut),
            Err(SnapshotError::Decode(_))
        ));
        let mut longer = bytes.to_vec();
        longer.push(0);
        assert!(matches!(
            LeaseTable::from_snapshot(&longer),
            Err(SnapshotError::Invalid(_))
        ));
        assert!(matches!(
            LeaseTable::from_snapshot(&[]),
            Err(SnapshotError::Invalid(_))
        ));
    }
}
