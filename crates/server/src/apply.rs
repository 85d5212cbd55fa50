//! What the apply loop hands back to a request's waiter: `cairn-apply`'s answer, or
//! its refusal as the server's error.

pub(crate) use cairn_apply::Applied;

/// The result the apply loop hands to the waiting caller.
pub(crate) type ApplyResult = Result<Applied, crate::error::Error>;
