//! The server's side of the lessor (crate `cairn-lease`): one shared behind a lock
//! for the apply loop and the request handlers, and loaded from the database at start.

pub(crate) use cairn_apply::{SharedLessor, lessor as lock};
pub(crate) use cairn_lease::{Renewal, min_ttl};
