//! Unique 64-bit request IDs, laid out as etcd's `pkg/idutil` lays them out.
//!
//! ```text
//! | member: 16 bits | unix milliseconds: 40 bits | counter: 8 bits |
//! ```
//!
//! **Invariant:** IDs from one [`Generator`] never repeat, and IDs from two
//! generators never collide when they run on members whose IDs differ in the low 16
//! bits, or on the same member when the later generator was created at least one
//! millisecond after the earlier one last drew an ID at the rate of at most 256 per
//! millisecond.
//!
//! The 48 bits below the member prefix are one counter, started at
//! `(milliseconds mod 2^40) << 8` and incremented for every ID. When more than 256
//! IDs are drawn in a millisecond the counter carries into the timestamp field; this
//! is intended (etcd does the same): the timestamp is only the starting point, and a
//! generator re-created later starts above every value an earlier one reached as long
//! as it averaged fewer than 256 IDs per millisecond. When the 48 bits wrap (after
//! about 35 years of milliseconds) the suffix starts again at zero and the member
//! prefix is kept.
//!
//! The clock is injected so that IDs can be asserted exactly:
//!
//! ```
//! use cairn_idgen::Generator;
//!
//! let ids = Generator::new(0x12, 0x3456);
//! assert_eq!(ids.next(), 0x0012_0000_0034_5601);
//! assert_eq!(ids.next(), 0x0012_0000_0034_5602);
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

const TIMESTAMP_BITS: u32 = 40;
const COUNTER_BITS: u32 = 8;
const SUFFIX_BITS: u32 = TIMESTAMP_BITS + COUNTER_BITS;
const SUFFIX_MASK: u64 = (1 << SUFFIX_BITS) - 1;
const TIMESTAMP_MASK: u64 = (1 << TIMESTAMP_BITS) - 1;

/// A lock-free source of unique request IDs for one member.
///
/// `Generator` is `Send + Sync`; share it by reference or in an `Arc` between all the
/// tasks that stamp requests.
#[derive(Debug)]
pub struct Generator {
    /// The low 16 bits of the member ID, shifted into the top 16 bits of every ID.
    prefix: u64,
    /// The last suffix handed out. Only its low 48 bits are used; it is allowed to
    /// grow past them, which [`Generator::next`] masks off.
    suffix: AtomicU64,
}

impl Generator {
    /// Creates a generator for `member_id` whose counter starts at the Unix time
    /// `now_unix_ms`, in milliseconds.
    ///
    /// Only the low 16 bits of `member_id` are used, as in etcd, and only the low 40
    /// bits of the time.
    pub fn new(member_id: u64, now_unix_ms: u64) -> Self {
        let prefix = (member_id & 0xffff) << SUFFIX_BITS;
        let suffix = (now_unix_ms & TIMESTAMP_MASK) << COUNTER_BITS;
        Self { prefix, suffix: AtomicU64::new(suffix) }
    }

    /// Creates a generator for `member_id` started at the system clock's current time.
    pub fn with_system_clock(member_id: u64) -> Self {
        // A clock set before 1970 gives 0, which keeps IDs unique within this
        // generator; uniqueness across restarts then relies on the clock, as in etcd.
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
        Self::new(member_id, u64::try_from(now).unwrap_or(u64::MAX))
    }

    /// Returns the next ID.
    #[inline]
    #[allow(clippy::should_implement_trait)] // Not an iterator: it never ends and takes &self.
    pub fn next(&self) -> u64 {
        // Relaxed suffices: uniqueness comes from the atomicity of the increment, and
        // no other memory is published through the ID.
        let suffix = self.suffix.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        self.prefix | (suffix & SUFFIX_MASK)
    }
}

#[cfg(test)]
mod tests;
