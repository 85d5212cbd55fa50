//! A user's key-range permissions, merged across roles for fast checks.
//!
//! etcd keeps an interval tree per user; here the intervals are merged into a sorted
//! list of disjoint ranges, so "is `[key, end)` covered" is one binary search.

use crate::store::{Access, Permission, PermissionType};

/// The end of a key range: a key (exclusive), or past every key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum End {
    Key(Vec<u8>),
    Unbounded,
}

/// The end of a range being checked, borrowed from the request.
#[derive(Debug, Clone, Copy)]
enum QueryEnd<'a> {
    /// Just past this key: the range holds exactly the key itself.
    After(&'a [u8]),
    Key(&'a [u8]),
    Unbounded,
}

impl End {
    /// Whether a range ending here reaches at least to `query`.
    fn reaches(&self, query: QueryEnd<'_>) -> bool {
        match (self, query) {
            (Self::Unbounded, _) => true,
            (Self::Key(_), QueryEnd::Unbounded) => false,
            (Self::Key(end), QueryEnd::Key(query)) => end.as_slice() >= query,
            // `key + "\0"` is the smallest key above `key`, so it is <= end iff key < end.
            (Self::Key(end), QueryEnd::After(key)) => end.as_slice() > key,
        }
    }
}

/// Disjoint, non-adjacent `[start, end)` ranges sorted by start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct KeyRanges {
    ranges: Vec<(Vec<u8>, End)>,
}

impl KeyRanges {
    fn merged(mut intervals: Vec<(Vec<u8>, End)>) -> Self {
        intervals.sort_unstable();
        let mut ranges: Vec<(Vec<u8>, End)> = Vec::with_capacity(intervals.len());
        for (start, end) in intervals {
            if let Some((_, last_end)) = ranges.last_mut() {
                let touches = match last_end {
                    End::Unbounded => true,
                    End::Key(last) => last.as_slice() >= start.as_slice(),
                };
                if touches {
                    if end > *last_end {
                        *last_end = end;
                    }
                    continue;
                }
            }
            ranges.push((start, end));
        }
        Self { ranges }
    }

    /// Whether `[start, end)` lies within one range (ranges are merged, so coverage by
    /// several would mean they touch, which merging rules out).
    fn covers(&self, start: &[u8], end: QueryEnd<'_>) -> bool {
        let after = self.ranges.partition_point(|(range_start, _)| range_start.as_slice() <= start);
        match after.checked_sub(1) {
            Some(index) => self.ranges[index].1.reaches(end),
            None => false,
        }
    }
}

/// The read and write ranges one user holds through all of their roles.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct MergedPermissions {
    read: KeyRanges,
    write: KeyRanges,
}

impl MergedPermissions {
    pub(crate) fn new<'a>(permissions: impl IntoIterator<Item = &'a Permission>) -> Self {
        let (mut read, mut write) = (Vec::new(), Vec::new());
        for permission in permissions {
            let interval = interval_of(permission);
            match permission.perm_type {
                PermissionType::Read => read.push(interval),
                PermissionType::Write => write.push(interval),
                PermissionType::ReadWrite => {
                    read.push(interval.clone());
                    write.push(interval);
                }
            }
        }
        Self { read: KeyRanges::merged(read), write: KeyRanges::merged(write) }
    }

    /// Whether the key `key` (when `range_end` is empty) or the range
    /// `[key, range_end)` is covered for `access`. A `range_end` of `"\0"` means every
    /// key from `key` on. An empty or inverted range is not covered, as in etcd.
    pub(crate) fn allows(&self, key: &[u8], range_end: &[u8], access: Access) -> bool {
        let ranges = match access {
            Access::Read => &self.read,
            Access::Write => &self.write,
        };
        let end = match range_end {
            [] => QueryEnd::After(key),
            [0] => QueryEnd::Unbounded,
            end if end <= key => return false,
            end => QueryEnd::Key(end),
        };
        ranges.covers(key, end)
    }
}

/// The interval a permission grants: a single key is `[key, key + "\0")`, a
/// `range_end` of `"\0"` reaches past every key.
fn interval_of(permission: &Permission) -> (Vec<u8>, End) {
    let end = match permission.range_end.as_slice() {
        [] => {
            let mut after = Vec::with_capacity(permission.key.len() + 1);
            after.extend_from_slice(&permission.key);
            after.push(0);
            End::Key(after)
        }
        [0] => End::Unbounded,
        end => End::Key(end.to_vec()),
    };
    (permission.key.clone(), end)
}
