//! A linearizability checker for histories of one register with compare-and-swap,
//! by depth-first search over the orders the real-time order allows, with memoized
//! states (Wing & Gong, with Lowe's memoization). Histories are checked per key, so
//! they stay small.

use std::collections::HashSet;

/// One operation on the register. Values are never empty; `None` is "no value".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    Put(String),
    Get(Option<String>),
    /// Compare-and-swap: set `new` if the value is `expected`; whether it did.
    Cas {
        expected: Option<String>,
        new: String,
        swapped: bool,
    },
}

/// An operation with the times it was invoked and answered; an operation without an
/// answer (it failed, outcome unknown) may have taken effect at any time after its
/// invocation, or never.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub(crate) invoked: u64,
    pub(crate) answered: Option<u64>,
    pub(crate) op: Op,
}

/// Whether `history` (starting from no value) is linearizable.
pub(crate) fn linearizable(history: &[Call]) -> bool {
    assert!(history.len() <= 64, "split the history: at most 64 calls a key");
    let mut seen = HashSet::new();
    search(history, 0, None, &mut seen)
}

fn search(
    history: &[Call],
    done: u64,
    value: Option<String>,
    seen: &mut HashSet<(u64, Option<String>)>,
) -> bool {
    let pending = |index: usize| done & (1 << index) == 0;
    // Finished when every call that was answered is placed; unanswered ones may never
    // have happened.
    if (0..history.len()).all(|index| !pending(index) || history[index].answered.is_none()) {
        return true;
    }
    if !seen.insert((done, value.clone())) {
        return false;
    }
    // The earliest answer among calls not yet placed bounds which may go next.
    let horizon = (0..history.len())
        .filter(|&i| pending(i))
        .filter_map(|i| history[i].answered)
        .min()
        .unwrap_or(u64::MAX);
    for index in (0..history.len()).filter(|&i| pending(i) && history[i].invoked < horizon) {
        let call = &history[index];
        let next = match &call.op {
            Op::Put(new) => Some(Some(new.clone())),
            Op::Get(read) => (*read == value).then(|| value.clone()),
            Op::Cas { expected, new, swapped } => {
                let matches = *expected == value;
                match (call.answered.is_some(), *swapped, matches) {
                    (true, true, true) | (false, _, true) => Some(Some(new.clone())),
                    (true, false, false) => Some(value.clone()),
                    _ => None,
                }
            }
        };
        if let Some(next) = next
            && search(history, done | (1 << index), next, seen)
        {
            return true;
        }
    }
    false
}

#[test]
fn the_checker_accepts_linearizable_histories() {
    let put = |v: &str, invoked, answered| Call { invoked, answered: Some(answered), op: Op::Put(v.into()) };
    let get = |v: Option<&str>, invoked, answered| Call {
        invoked,
        answered: Some(answered),
        op: Op::Get(v.map(Into::into)),
    };
    // Sequential.
    assert!(linearizable(&[put("a", 0, 1), get(Some("a"), 2, 3), put("b", 4, 5), get(Some("b"), 6, 7)]));
    // Overlapping put and get: either order.
    assert!(linearizable(&[put("a", 0, 10), get(None, 1, 2)]));
    assert!(linearizable(&[put("a", 0, 10), get(Some("a"), 1, 2)]));
    // A failed put may or may not have happened.
    let maybe = Call { invoked: 0, answered: None, op: Op::Put("x".into()) };
    assert!(linearizable(&[maybe.clone(), get(Some("x"), 5, 6)]));
    assert!(linearizable(&[maybe, get(None, 5, 6)]));
    // A swap that lost to a concurrent put.
    let cas = Call {
        invoked: 2,
        answered: Some(3),
        op: Op::Cas { expected: None, new: "c".into(), swapped: false },
    };
    assert!(linearizable(&[put("a", 0, 1), cas, get(Some("a"), 4, 5)]));
}

#[test]
fn the_checker_rejects_histories_that_are_not_linearizable() {
    let put = |v: &str, invoked, answered| Call { invoked, answered: Some(answered), op: Op::Put(v.into()) };
    let get = |v: Option<&str>, invoked, answered| Call {
        invoked,
        answered: Some(answered),
        op: Op::Get(v.map(Into::into)),
    };
    // A stale read after the write completed.
    assert!(!linearizable(&[put("a", 0, 1), get(None, 2, 3)]));
    // Reading a value never written.
    assert!(!linearizable(&[get(Some("z"), 0, 1)]));
    // Two reads that see the writes in opposite orders.
    assert!(!linearizable(&[
        put("a", 0, 10),
        put("b", 0, 10),
        get(Some("a"), 11, 12),
        get(Some("b"), 13, 14),
        get(Some("a"), 15, 16),
    ]));
    // A swap that claims success against the wrong value.
    let cas = Call {
        invoked: 2,
        answered: Some(3),
        op: Op::Cas { expected: Some("x".into()), new: "c".into(), swapped: true },
    };
    assert!(!linearizable(&[put("a", 0, 1), cas]));
}
