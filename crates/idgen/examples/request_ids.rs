//! Draws request IDs the way an etcd member does: exact IDs from a fixed clock, the
//! fields they are made of, the counter carrying into the time, and no duplicates
//! when four threads share one generator.
//!
//! Run with `cargo run -p cairn-idgen --example request_ids`.

use std::collections::HashSet;
use std::sync::Arc;

use cairn_idgen::Generator;

/// Splits an ID into its member prefix, millisecond field and counter.
fn fields(id: u64) -> (u64, u64, u64) {
    (id >> 48, (id >> 8) & ((1 << 40) - 1), id & 0xff)
}

fn main() {
    // A fixed start time makes IDs exact: member 0x12, millisecond 0x3456.
    let ids = Generator::new(0x12, 0x3456);
    let (first, second) = (ids.next(), ids.next());
    println!("member 0x12 at ms 0x3456: {first:#018x}, {second:#018x}");
    assert_eq!(first, 0x0012_0000_0034_5601);
    assert_eq!(second, first + 1);
    assert_eq!(fields(first), (0x12, 0x3456, 1));

    // Another member started in the same millisecond: same suffixes, other prefix.
    let other = Generator::new(0x13, 0x3456);
    let theirs = other.next();
    println!("member 0x13 at ms 0x3456: {theirs:#018x}");
    assert_ne!(theirs, first);
    assert_eq!(theirs & 0xffff_ffff_ffff, first & 0xffff_ffff_ffff);

    // Past 256 IDs in a millisecond the counter carries into the millisecond field:
    // the time is where the counter starts, not a timestamp to read back.
    let busy = Generator::new(1, 7);
    let last = (0..256).map(|_| busy.next()).last().expect("256 IDs");
    println!("the 256th ID of ms 7 reads as ms {}, counter {}", fields(last).1, fields(last).2);
    assert_eq!(fields(last), (1, 8, 0));

    // One generator shared by four threads: every ID is distinct.
    let shared = Arc::new(Generator::with_system_clock(7));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || (0..10_000).map(|_| shared.next()).collect::<Vec<u64>>())
        })
        .collect();
    let drawn: Vec<u64> = threads.into_iter().flat_map(|thread| thread.join().expect("no panic")).collect();
    let unique: HashSet<u64> = drawn.iter().copied().collect();
    println!("4 threads drew {} IDs, {} distinct, all with member prefix 7", drawn.len(), unique.len());
    assert_eq!(unique.len(), 40_000);
    assert!(drawn.iter().all(|&id| fields(id).0 == 7));
}
