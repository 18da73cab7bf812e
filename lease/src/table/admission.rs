//! The limits every request must respect, checked by a node before it
//! proposes and by the table again when it applies.

use super::{
    MAX_NAME_BYTES, MAX_OWNER_BYTES, MAX_REQUEST_BYTES, MAX_TTL_MS, MAX_VALUE_BYTES, MAX_WAIT_MS,
    lease_sessions, list, lock_delay, shares,
};
use crate::command::{Op, Refusal, Request};

/// Checks the limits every operation must respect. Pure: the same answer
/// on every node, before proposing and when applying.
///
/// # Errors
/// The [`Refusal`] naming the first limit broken.
pub fn validate(op: &Op) -> Result<(), Refusal> {
    if let Op::List { .. } = op {
        return list::validate(op);
    }
    if let Some(checked) = lease_sessions::validate(op) {
        return checked;
    }
    lock_delay::validate(op)?;
    shares::validate(op)?;
    let name = op.name();
    if name.is_empty() {
        return Err(Refusal::EmptyName);
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(Refusal::NameTooLong);
    }
    let (owner, ttl_ms, wait_ms) = match op {
        Op::Acquire {
            owner,
            ttl_ms,
            wait_ms,
            ..
        }
        | Op::AcquireShare {
            owner,
            ttl_ms,
            wait_ms,
            ..
        } => (Some(owner), Some(*ttl_ms), *wait_ms),
        Op::AcquireInSession { owner, wait_ms, .. } => (Some(owner), None, *wait_ms),
        Op::Renew { owner, ttl_ms, .. } => (Some(owner), Some(*ttl_ms), 0),
        Op::Release { owner, .. } | Op::Cancel { owner, .. } | Op::SetLockDelay { owner, .. } => {
            (Some(owner), None, 0)
        }
        Op::Write { owner, value, .. } => {
            if value.len() > MAX_VALUE_BYTES {
                return Err(Refusal::ValueTooLarge);
            }
            (Some(owner), None, 0)
        }
        Op::Read { .. }
        | Op::ForceRelease { .. }
        | Op::List { .. }
        | Op::OpenSession { .. }
        | Op::KeepSession { .. }
        | Op::CloseSession { .. } => (None, None, 0),
    };
    if let Some(owner) = owner {
        check_owner(owner)?;
    }
    if let Some(ttl) = ttl_ms
        && !(1..=MAX_TTL_MS).contains(&ttl)
    {
        return Err(Refusal::TtlOutOfRange);
    }
    if wait_ms > MAX_WAIT_MS {
        return Err(Refusal::WaitTooLong);
    }
    Ok(())
}

/// An owner must be present and within [`MAX_OWNER_BYTES`].
pub(super) fn check_owner(owner: &str) -> Result<(), Refusal> {
    if owner.is_empty() {
        return Err(Refusal::EmptyOwner);
    }
    if owner.len() > MAX_OWNER_BYTES {
        return Err(Refusal::OwnerTooLong);
    }
    Ok(())
}

/// Admission: what a node checks before it proposes a client's request,
/// so that nothing out of bounds is written to every journal. Pure, and
/// the table applies the same limits again when the request is applied.
///
/// It does not check who sent the request: that [`Op::ForceRelease`]
/// comes from an administrator is for the node to enforce before calling
/// this, from the identity of the connection it came on.
///
/// # Errors
/// The [`Refusal`] naming the first limit broken: [`validate`]'s, then
/// [`Refusal::RequestTooLarge`] when the encoded request is larger than
/// [`MAX_REQUEST_BYTES`] (implied by the field limits today; checked so
/// that a field added later without a limit cannot slip past).
pub fn admit(request: &Request) -> Result<(), Refusal> {
    validate(&request.op)?;
    let size =
        postcard::experimental::serialized_size(request).map_err(|_| Refusal::RequestTooLarge)?;
    if size > MAX_REQUEST_BYTES {
        return Err(Refusal::RequestTooLarge);
    }
    Ok(())
}
