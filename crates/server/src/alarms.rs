//! Alarms (etcd's `v3alarm`): raised and cleared through raft, kept in the `alarms`
//! table, the same on every member. While any member's NOSPACE alarm is raised,
//! every member refuses the writes that would grow the store (etcd's capped
//! applier); reads, deletes, compaction and lease revocations go on.
//!
//! A member raises NOSPACE itself when the file system holding its data dir runs
//! low (`cairn-backend`'s [`watch_disk`]), before a write could fail for want of space.

pub(crate) use cairn_apply::{SharedAlarms, alarms as lock};
pub(crate) use cairn_backend::alarms::{Watermarks, corrupt, cost, fits, list, load, no_space, watch_disk};
