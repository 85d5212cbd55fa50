use super::*;
use std::collections::HashSet;
use std::sync::Arc;

#[test]
fn first_ids_are_exact() {
    // The example of etcd's TestNewGenerator: member 0x12 at millisecond 0x3456.
    let ids = Generator::new(0x12, 0x3456);
    assert_eq!(ids.next(), 0x0012_0000_0034_5601);
    assert_eq!(ids.next(), 0x0012_0000_0034_5602);
}

#[test]
fn only_low_16_bits_of_member_and_low_40_bits_of_time_are_used() {
    let ids = Generator::new(0xdead_beef_0012, (1 << 40) | 0x3456);
    assert_eq!(ids.next(), 0x0012_0000_0034_5601);
}

#[test]
fn counter_carries_into_the_timestamp() {
    let ids = Generator::new(1, 7);
    let drawn: Vec<u64> = (0..256).map(|_| ids.next()).collect();
    assert_eq!(drawn[254], 0x0001_0000_0000_07ff);
    // The 256th ID of millisecond 7 reads as millisecond 8, counter 0.
    assert_eq!(drawn[255], 0x0001_0000_0000_0800);
}

#[test]
fn carry_across_the_48_bit_boundary_keeps_the_member_prefix() {
    let ids = Generator::new(0xabcd, (1 << 40) - 1);
    let drawn: Vec<u64> = (0..257).map(|_| ids.next()).collect();
    assert_eq!(drawn[254], 0xabcd_ffff_ffff_ffff);
    assert_eq!(drawn[255], 0xabcd_0000_0000_0000);
    assert_eq!(drawn[256], 0xabcd_0000_0000_0001);
    assert!(drawn.iter().all(|id| id >> 48 == 0xabcd));
    let unique: HashSet<_> = drawn.iter().collect();
    assert_eq!(unique.len(), drawn.len());
}

#[test]
fn a_generator_recreated_a_millisecond_later_never_repeats() {
    // The earlier generator draws at the full rate of 256 IDs in its millisecond.
    let earlier = Generator::new(3, 1_700_000_000_000);
    let before: HashSet<u64> = (0..256).map(|_| earlier.next()).collect();
    let later = Generator::new(3, 1_700_000_000_001);
    let after: Vec<u64> = (0..100_000).map(|_| later.next()).collect();
    assert!(after.iter().all(|id| !before.contains(id)));
    assert!(after.iter().min() > before.iter().max());
}

#[test]
fn members_differing_in_low_bits_never_collide() {
    let a = Generator::new(1, 5);
    let b = Generator::new(2, 5);
    let from_a: HashSet<u64> = (0..10_000).map(|_| a.next()).collect();
    assert!((0..10_000).all(|_| !from_a.contains(&b.next())));
}

#[test]
fn no_duplicates_across_threads() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 1_000_000;
    let ids = Arc::new(Generator::new(9, 42));
    let handles: Vec<_> = (0..THREADS)
        .map(|_| {
            let ids = Arc::clone(&ids);
            std::thread::spawn(move || (0..PER_THREAD).map(|_| ids.next()).collect::<Vec<_>>())
        })
        .collect();
    let mut all: Vec<u64> = handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), THREADS * PER_THREAD);
    // Every ID in the contiguous run that was handed out, no more and no fewer.
    let first = Generator::new(9, 42).next();
    assert_eq!(all[0], first);
    assert_eq!(all[all.len() - 1], first + (THREADS * PER_THREAD) as u64 - 1);
}

#[test]
fn generator_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Generator>();
}

#[test]
fn system_clock_generator_uses_the_member_prefix() {
    let ids = Generator::with_system_clock(0x1_0007);
    assert_eq!(ids.next() >> 48, 7);
}
