//! What happened, as the harness saw it, and the checker over it. Every
//! time is nanoseconds of the shared `CLOCK_MONOTONIC` (see `mono_ns`), so
//! times reported by client processes and by the harness compare.
//!
//! The fenced resource lives here too: it remembers the highest stamp
//! written per lease name, refuses lower ones, and records every write and
//! every refusal.

use std::collections::{BTreeMap, HashMap};

/// One grant, merged over reentrant re-acquisitions of the same stamp.
#[derive(Clone, Debug)]
pub struct Grant {
    pub name: String,
    pub owner: String,
    pub stamp: u64,
    /// Before the request that got it was sent.
    pub sent: u64,
    /// When its holder learned of it.
    pub acked: u64,
    /// Until when its holder believed it held it (`expire_time_unsafe`,
    /// cut short by a release, a loss or abandoning the handle).
    pub belief_end: u64,
    /// When an acknowledged release of it was answered.
    pub release_acked: Option<u64>,
}

/// One critical section: the validity check, then the fenced write.
#[derive(Clone, Debug)]
pub struct Write {
    pub name: String,
    pub owner: String,
    pub stamp: u64,
    pub checked: u64,
    pub done: u64,
    pub accepted: bool,
}

/// One read of a lease's holder through one node.
#[derive(Clone, Debug)]
pub struct Read {
    pub node: usize,
    pub name: String,
    pub sent: u64,
    pub replied: u64,
    pub holder: Option<(String, u64)>,
}

#[derive(Default)]
pub struct History {
    pub grants: Vec<Grant>,
    index: HashMap<(String, String, u64), usize>,
    pub writes: Vec<Write>,
    pub reads: Vec<Read>,
    /// Highest stamp written per name: the resource's fence.
    fence: HashMap<String, u64>,
    /// Operations acknowledged, by kind.
    pub acked: BTreeMap<&'static str, u64>,
    /// Violations found while running (the rest come from `check`).
    pub violations: Vec<String>,
}

impl History {
    pub fn count(&mut self, what: &'static str) {
        *self.acked.entry(what).or_default() += 1;
    }

    pub fn violation(&mut self, what: String) {
        eprintln!("nemesis: VIOLATION: {what}");
        self.violations.push(what);
    }

    fn grant_mut(&mut self, owner: &str, name: &str, stamp: u64) -> Option<&mut Grant> {
        let i = *self
            .index
            .get(&(owner.to_owned(), name.to_owned(), stamp))?;
        Some(&mut self.grants[i])
    }

    pub fn granted(
        &mut self,
        owner: &str,
        name: &str,
        stamp: u64,
        sent: u64,
        acked: u64,
        belief: u64,
    ) {
        self.count("acquire granted");
        if let Some(g) = self.grant_mut(owner, name, stamp) {
            // Reentrant: the same owner asked again and got the same stamp.
            g.belief_end = g.belief_end.max(belief);
            return;
        }
        self.index.insert(
            (owner.to_owned(), name.to_owned(), stamp),
            self.grants.len(),
        );
        self.grants.push(Grant {
            name: name.to_owned(),
            owner: owner.to_owned(),
            stamp,
            sent,
            acked,
            belief_end: belief,
            release_acked: None,
        });
    }

    pub fn renewed(&mut self, owner: &str, name: &str, stamp: u64, belief: u64) {
        self.count("renew");
        if let Some(g) = self.grant_mut(owner, name, stamp) {
            g.belief_end = g.belief_end.max(belief);
        }
    }

    /// The holder stopped believing at `at` (released, abandoned, or told
    /// it lost the lease).
    pub fn belief_ended(&mut self, owner: &str, name: &str, stamp: u64, at: u64) {
        if let Some(g) = self.grant_mut(owner, name, stamp) {
            g.belief_end = g.belief_end.min(at);
        }
    }

    /// A renewal answered "not the holder" at `at`.
    pub fn lost(&mut self, owner: &str, name: &str, stamp: u64, at: u64) {
        self.count("renew refused (lease lost)");
        let early = self
            .grant_mut(owner, name, stamp)
            .filter(|g| at < g.belief_end)
            .map(|g| (g.belief_end - at) / 1_000_000);
        if let Some(ms) = early {
            self.violation(format!(
                "{owner}'s lease {name} stamp {stamp} was refused a renewal {ms} ms before \
                 its holder's belief ended: an acknowledged grant vanished from the table"
            ));
        }
        self.belief_ended(owner, name, stamp, at);
    }

    pub fn released(&mut self, owner: &str, name: &str, stamp: u64, sent: u64, acked: u64) {
        self.count("release");
        self.belief_ended(owner, name, stamp, sent);
        if let Some(g) = self.grant_mut(owner, name, stamp) {
            g.release_acked = Some(acked);
        }
    }

    /// The fenced resource: accepts `stamp` unless a higher one was
    /// written to `name` before.
    pub fn write(&mut self, name: &str, owner: &str, stamp: u64, checked: u64, done: u64) -> bool {
        let highest = self.fence.entry(name.to_owned()).or_default();
        let accepted = stamp >= *highest;
        if accepted {
            *highest = stamp;
        }
        self.count(if accepted {
            "fenced write accepted"
        } else {
            "fenced write refused (stale stamp)"
        });
        self.writes.push(Write {
            name: name.to_owned(),
            owner: owner.to_owned(),
            stamp,
            checked,
            done,
            accepted,
        });
        accepted
    }

    /// Writes the history out, one event per line, for a post-mortem.
    pub fn dump(&self, path: &std::path::Path) -> std::io::Result<()> {
        use std::fmt::Write as _;
        let mut out = String::new();
        for g in &self.grants {
            let _ = writeln!(out, "{g:?}");
        }
        for w in &self.writes {
            let _ = writeln!(out, "{w:?}");
        }
        for r in &self.reads {
            let _ = writeln!(out, "{r:?}");
        }
        std::fs::write(path, out)
    }

    /// Checks the whole history; returns the violations (those found while
    /// running included) and the number of critical sections that ran
    /// longer than the safety gap (a pause the gap did not cover: the
    /// lease promises nothing for them, only the fence protects).
    pub fn check(&self, gap_ns: u64) -> (Vec<String>, u64) {
        let mut v = self.violations.clone();
        self.check_exclusive_beliefs(&mut v);
        let overruns = self.check_critical_sections(gap_ns, &mut v);
        self.check_stamp_order(&mut v);
        self.check_reads(&mut v);
        (v, overruns)
    }

    /// No grant is acknowledged while a holder with a lower stamp of the
    /// same lease still believes it holds it; no stamp goes to two owners.
    fn check_exclusive_beliefs(&self, v: &mut Vec<String>) {
        let mut by_name: BTreeMap<&str, Vec<&Grant>> = BTreeMap::new();
        for g in &self.grants {
            by_name.entry(&g.name).or_default().push(g);
        }
        for (name, mut grants) in by_name {
            grants.sort_by_key(|g| g.stamp);
            let mut believed: Option<&Grant> = None;
            for pair in grants.windows(2) {
                if pair[0].stamp == pair[1].stamp {
                    v.push(format!(
                        "{name} stamp {} granted to both {} and {}",
                        pair[0].stamp, pair[0].owner, pair[1].owner
                    ));
                }
            }
            for g in grants {
                if let Some(b) = believed
                    && g.acked < b.belief_end
                {
                    v.push(format!(
                        "{name} granted to {} (stamp {}) {} ms before {} (stamp {}) stopped \
                         believing it held it",
                        g.owner,
                        g.stamp,
                        (b.belief_end - g.acked) / 1_000_000,
                        b.owner,
                        b.stamp
                    ));
                }
                if believed.is_none_or(|b| g.belief_end > b.belief_end) {
                    believed = Some(g);
                }
            }
        }
    }

    /// By the resource's account, no two critical sections of different
    /// stamps overlap, and nobody is fenced out within its safety gap.
    fn check_critical_sections(&self, gap_ns: u64, v: &mut Vec<String>) -> u64 {
        let mut overruns = 0;
        let mut by_name: BTreeMap<&str, Vec<&Write>> = BTreeMap::new();
        for w in &self.writes {
            if w.done.saturating_sub(w.checked) > gap_ns {
                overruns += 1;
                continue;
            }
            if !w.accepted {
                v.push(format!(
                    "{}'s write to {} with stamp {} was fenced out {} ms after its validity \
                     check, within the safety gap: someone else held the lease meanwhile",
                    w.owner,
                    w.name,
                    w.stamp,
                    (w.done - w.checked) / 1_000_000
                ));
                continue;
            }
            by_name.entry(&w.name).or_default().push(w);
        }
        for (name, mut writes) in by_name {
            writes.sort_by_key(|w| w.checked);
            let mut open: Option<&Write> = None;
            for w in writes {
                if let Some(o) = open
                    && o.done > w.checked
                    && o.stamp != w.stamp
                {
                    v.push(format!(
                        "{name}: critical sections of {} (stamp {}) and {} (stamp {}) overlap \
                         by {} µs",
                        o.owner,
                        o.stamp,
                        w.owner,
                        w.stamp,
                        (o.done - w.checked) / 1000
                    ));
                }
                if open.is_none_or(|o| w.done > o.done) {
                    open = Some(w);
                }
            }
        }
        overruns
    }

    /// Per lease name, a grant acknowledged before another was requested
    /// has a lower stamp. (Every acquire attempt has an owner of its own,
    /// so no grant is ever returned reentrantly to a later attempt; across
    /// names, a reentrant acquire could otherwise return an older stamp.)
    fn check_stamp_order(&self, v: &mut Vec<String>) {
        let mut by_name: HashMap<&str, Vec<&Grant>> = HashMap::new();
        for g in &self.grants {
            by_name.entry(&g.name).or_default().push(g);
        }
        for grants in by_name.values() {
            let mut by_ack = grants.clone();
            by_ack.sort_by_key(|g| g.acked);
            let mut by_sent = grants.clone();
            by_sent.sort_by_key(|g| g.sent);
            let (mut i, mut highest): (usize, Option<&Grant>) = (0, None);
            for g in by_sent {
                while i < by_ack.len() && by_ack[i].acked < g.sent {
                    if highest.is_none_or(|h| by_ack[i].stamp > h.stamp) {
                        highest = Some(by_ack[i]);
                    }
                    i += 1;
                }
                if let Some(h) = highest
                    && h.stamp >= g.stamp
                    && !(h.owner == g.owner && h.stamp == g.stamp)
                {
                    v.push(format!(
                        "stamp went backwards: {} got {} stamp {} after {} had been granted it with stamp {}",
                        g.owner, g.name, g.stamp, h.owner, h.stamp
                    ));
                }
            }
        }
    }

    /// Every read shows every grant acknowledged before it and still
    /// believed after it, and no acknowledged release is undone.
    fn check_reads(&self, v: &mut Vec<String>) {
        let mut by_name: HashMap<&str, Vec<&Grant>> = HashMap::new();
        for g in &self.grants {
            by_name.entry(&g.name).or_default().push(g);
        }
        for r in &self.reads {
            for g in by_name.get(r.name.as_str()).into_iter().flatten() {
                let shows = r.holder.as_ref() == Some(&(g.owner.clone(), g.stamp));
                if g.acked < r.sent && r.replied < g.belief_end && !shows {
                    v.push(format!(
                        "node {} showed {} held by {:?} while {} held stamp {} (acknowledged, \
                         still believed): an acknowledged grant is missing from its table",
                        r.node + 1,
                        r.name,
                        r.holder,
                        g.owner,
                        g.stamp
                    ));
                }
                if g.release_acked.is_some_and(|at| at < r.sent) && shows {
                    v.push(format!(
                        "node {} showed {} held by {} stamp {} after its release was \
                         acknowledged",
                        r.node + 1,
                        r.name,
                        g.owner,
                        g.stamp
                    ));
                }
            }
        }
    }
}

/// The checker is only as good as what it catches: feed it histories with
/// one planted fault each.
#[test]
fn the_checker_catches_double_grants_overlaps_lost_grants_and_undone_releases() {
    const MS: u64 = 1_000_000;
    let gap = 300 * MS;
    let clean = || {
        let mut h = History::default();
        h.granted("a", "x", 5, 0, 10 * MS, 2_000 * MS);
        assert!(h.write("x", "a", 5, 100 * MS, 101 * MS));
        h.released("a", "x", 5, 500 * MS, 510 * MS);
        h.granted("b", "x", 6, 505 * MS, 520 * MS, 2_500 * MS);
        assert!(h.write("x", "b", 6, 600 * MS, 601 * MS));
        h
    };
    assert_eq!(clean().check(gap), (vec![], 0), "a correct history passes");

    // b is granted while a still believes (a never released).
    let mut h = History::default();
    h.granted("a", "x", 5, 0, 10 * MS, 2_000 * MS);
    h.granted("b", "x", 6, 900 * MS, 1_000 * MS, 3_000 * MS);
    assert!(h.check(gap).0[0].contains("stopped believing"));

    // One stamp, two owners.
    let mut h = clean();
    h.granted("c", "x", 6, 700 * MS, 710 * MS, 800 * MS);
    assert!(h.check(gap).0.iter().any(|v| v.contains("granted to both")));

    // Overlapping critical sections of different stamps.
    let mut h = clean();
    h.write("x", "a", 5, 599 * MS, 600 * MS + 500_000);
    let v = h.check(gap).0;
    assert!(v.iter().any(|v| v.contains("fenced out")), "{v:?}");
    let mut h = History::default();
    h.write("y", "a", 1, 0, 50 * MS);
    h.write("y", "b", 2, 10 * MS, 20 * MS);
    assert!(h.check(gap).0.iter().any(|v| v.contains("overlap")));

    // A stamp lower than one acknowledged (for the same lease) before it
    // was asked for; across leases that is no violation.
    let mut h = History::default();
    h.granted("a", "x", 9, 0, 10 * MS, 20 * MS);
    h.granted("b", "x", 8, 30 * MS, 40 * MS, 50 * MS);
    assert!(h.check(gap).0.iter().any(|v| v.contains("backwards")));
    let mut h = History::default();
    h.granted("a", "x", 9, 0, 10 * MS, 20 * MS);
    h.granted("b", "y", 8, 30 * MS, 40 * MS, 50 * MS);
    assert!(!h.check(gap).0.iter().any(|v| v.contains("backwards")));

    // A read that misses a believed grant, and one that undoes a release.
    let mut h = clean();
    h.reads.push(Read {
        node: 0,
        name: "x".into(),
        sent: 30 * MS,
        replied: 40 * MS,
        holder: None,
    });
    h.reads.push(Read {
        node: 1,
        name: "x".into(),
        sent: 515 * MS,
        replied: 516 * MS,
        holder: Some(("a".into(), 5)),
    });
    let v = h.check(gap).0;
    assert!(v.iter().any(|v| v.contains("missing")), "{v:?}");
    assert!(v.iter().any(|v| v.contains("after its release")), "{v:?}");

    // A renewal refused while its holder still believed.
    let mut h = History::default();
    h.granted("a", "x", 5, 0, 10 * MS, 2_000 * MS);
    h.lost("a", "x", 5, 500 * MS);
    assert!(h.check(gap).0.iter().any(|v| v.contains("vanished")));
}
