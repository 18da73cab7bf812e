//! Who may ask what over the network: the check a node makes on every
//! remote request, from the identity of the connection it came on, before
//! the request is admitted and proposed.
//!
//! With mutual TLS every connection carries the identity its verified
//! certificate names (see [`Identity`]), and each identity speaks for one
//! **principal**:
//!
//! | certificate | principal |
//! |---|---|
//! | `trexlock://<cluster>/client/<name>` | `<name>` |
//! | `trexlock://<cluster>/admin/<name>` | `<name>` |
//! | `trexlock://<cluster>/node/<id>` | `node:<id>` |
//!
//! A request that names an owner (acquire, renew, release, cancel, write,
//! and every lease-session operation) is allowed only if the owner is the principal or starts with
//! `<principal>/` (so `billing` may use `billing` and `billing/worker-3`,
//! never `alice`). Certificate names cannot contain `/` or `:`, so no
//! certificate's owners overlap another's except a client's and an
//! administrator's of the same name, which the operator issued to the
//! same party. Reads name no owner and are allowed to every certificate of
//! the cluster. [`Op::ForceRelease`] is allowed only to an administrator's
//! certificate.
//!
//! Without TLS nothing proves who is on the other end: owners are not
//! bound (a lease's secret [`crate::LeaseToken`] still keeps others from
//! renewing, releasing or overwriting it), and no remote connection may
//! force a release. A client in a node's own process is not checked at
//! all: it shares the node's trust.

use crate::command::{Op, Refusal};
use trexlock_transport::Identity;

/// The name a certificate's holder acts as: lease owners it may use are
/// this name and names starting with `<principal>/` (see the module docs).
///
/// ```
/// use trexlock_lease::remote::principal;
/// use trexlock_paxos::NodeId;
/// use trexlock_transport::Identity;
///
/// let client = Identity::Client { cluster: "orders".into(), name: "billing".into() };
/// assert_eq!(principal(&client), "billing");
/// let node = Identity::Node { cluster: "orders".into(), node: NodeId(2) };
/// assert_eq!(principal(&node), "node:2");
/// ```
pub fn principal(identity: &Identity) -> String {
    match identity {
        Identity::Client { name, .. } | Identity::Admin { name, .. } => name.clone(),
        Identity::Node { node, .. } => format!("node:{}", node.0),
    }
}

/// Whether `owner` is one that `principal` may act for: the principal
/// itself, or a name under it (`<principal>/…`).
fn owns(principal: &str, owner: &str) -> bool {
    owner
        .strip_prefix(principal)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Checks that the sender of `op` may ask for it. `identity` is what the
/// connection's verified certificate names, or `None` on a plain TCP
/// connection (nothing proves who sent it).
///
/// # Errors
/// [`Refusal::OwnerNotCertified`] when the op names an owner the
/// certificate does not speak for; [`Refusal::NotPermitted`] for a forced
/// release from anyone but an administrator.
///
/// ```
/// use trexlock_lease::remote::authorize;
/// use trexlock_lease::{LeaseToken, Op, Refusal};
/// use trexlock_transport::Identity;
///
/// let billing = Identity::Client { cluster: "orders".into(), name: "billing".into() };
/// let acquire = |owner: &str| Op::Acquire {
///     name: "invoices".into(),
///     owner: owner.into(),
///     token: LeaseToken(7),
///     ttl_ms: 1_000,
///     wait_ms: 0,
/// };
/// assert_eq!(authorize(Some(&billing), &acquire("billing/worker-3")), Ok(()));
/// assert_eq!(authorize(Some(&billing), &acquire("alice")), Err(Refusal::OwnerNotCertified));
/// let force = Op::ForceRelease { name: "invoices".into() };
/// assert_eq!(authorize(Some(&billing), &force), Err(Refusal::NotPermitted));
/// let ops = Identity::Admin { cluster: "orders".into(), name: "ops".into() };
/// assert_eq!(authorize(Some(&ops), &force), Ok(()));
/// ```
pub fn authorize(identity: Option<&Identity>, op: &Op) -> Result<(), Refusal> {
    let owner = match op {
        Op::ForceRelease { .. } => {
            return match identity {
                Some(Identity::Admin { .. }) => Ok(()),
                _ => Err(Refusal::NotPermitted),
            };
        }
        Op::Read { .. } | Op::List { .. } => return Ok(()),
        Op::Acquire { owner, .. }
        | Op::Renew { owner, .. }
        | Op::Release { owner, .. }
        | Op::Cancel { owner, .. }
        | Op::Write { owner, .. }
        | Op::SetLockDelay { owner, .. }
        | Op::AcquireShare { owner, .. }
        | Op::OpenSession { owner, .. }
        | Op::KeepSession { owner, .. }
        | Op::CloseSession { owner, .. }
        | Op::AcquireInSession { owner, .. } => owner,
    };
    match identity {
        Some(identity) if !owns(&principal(identity), owner) => Err(Refusal::OwnerNotCertified),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{LeaseToken, SessionId, Stamp};
    use trexlock_paxos::NodeId;

    fn client(name: &str) -> Identity {
        Identity::Client {
            cluster: "orders".into(),
            name: name.into(),
        }
    }

    fn admin(name: &str) -> Identity {
        Identity::Admin {
            cluster: "orders".into(),
            name: name.into(),
        }
    }

    /// Every op that names an owner, for `owner`.
    fn owned_ops(owner: &str) -> Vec<Op> {
        let (name, owner, token, stamp) =
            ("job".to_owned(), owner.to_owned(), LeaseToken(1), Stamp(1));
        vec![
            Op::Acquire {
                name: name.clone(),
                owner: owner.clone(),
                token,
                ttl_ms: 10,
                wait_ms: 0,
            },
            Op::Renew {
                name: name.clone(),
                owner: owner.clone(),
                stamp,
                token,
                ttl_ms: 10,
            },
            Op::Release {
                name: name.clone(),
                owner: owner.clone(),
                stamp,
                token,
            },
            Op::Cancel {
                name: name.clone(),
                owner: owner.clone(),
                token,
            },
            Op::Write {
                name: name.clone(),
                owner: owner.clone(),
                stamp,
                token,
                value: bytes::Bytes::new(),
            },
            Op::OpenSession {
                owner: owner.clone(),
                token,
                ttl_ms: 10,
            },
            Op::KeepSession {
                session: SessionId(1),
                owner: owner.clone(),
                token,
            },
            Op::CloseSession {
                session: SessionId(1),
                owner: owner.clone(),
                token,
            },
            Op::AcquireInSession {
                name,
                owner,
                token,
                session: SessionId(1),
                wait_ms: 0,
            },
        ]
    }

    #[test]
    fn a_certificate_acts_for_its_name_and_the_names_under_it_only() {
        let billing = client("billing");
        for owner in ["billing", "billing/worker-3", "billing/a/b"] {
            for op in owned_ops(owner) {
                assert_eq!(authorize(Some(&billing), &op), Ok(()), "{op:?}");
            }
        }
        for owner in ["alice", "billing-2", "billingx", "billin", "x/billing", ""] {
            for op in owned_ops(owner) {
                assert_eq!(
                    authorize(Some(&billing), &op),
                    Err(Refusal::OwnerNotCertified),
                    "{op:?}"
                );
            }
        }
    }

    #[test]
    fn a_node_certificate_acts_only_for_its_node_principal() {
        let node = Identity::Node {
            cluster: "orders".into(),
            node: NodeId(2),
        };
        for op in owned_ops("node:2/probe") {
            assert_eq!(authorize(Some(&node), &op), Ok(()));
        }
        for owner in ["node:1", "node:20", "node-2", "alice"] {
            for op in owned_ops(owner) {
                assert_eq!(authorize(Some(&node), &op), Err(Refusal::OwnerNotCertified));
            }
        }
    }

    #[test]
    fn only_an_administrator_may_force_a_release() {
        let force = Op::ForceRelease { name: "job".into() };
        assert_eq!(authorize(Some(&admin("ops")), &force), Ok(()));
        let node = Identity::Node {
            cluster: "orders".into(),
            node: NodeId(1),
        };
        for identity in [Some(&client("ops")), Some(&node), None] {
            assert_eq!(authorize(identity, &force), Err(Refusal::NotPermitted));
        }
    }

    #[test]
    fn an_administrator_acts_for_its_own_name_only() {
        assert_eq!(
            authorize(Some(&admin("ops")), &owned_ops("ops/cleanup")[0]),
            Ok(())
        );
        assert_eq!(
            authorize(Some(&admin("ops")), &owned_ops("alice")[0]),
            Err(Refusal::OwnerNotCertified)
        );
    }

    #[test]
    fn reads_are_open_to_every_certificate_and_plain_connections_are_not_bound() {
        let read = Op::Read { name: "job".into() };
        assert_eq!(authorize(Some(&client("billing")), &read), Ok(()));
        for op in owned_ops("anyone") {
            assert_eq!(authorize(None, &op), Ok(()));
        }
    }
}
