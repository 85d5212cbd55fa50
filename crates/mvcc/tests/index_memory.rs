//! What the key index costs in memory per key, counted by an allocator that tracks
//! the bytes live (this test binary holds this one test, so nothing else allocates
//! meanwhile). The scale figures in the README use it to say where a member's
//! memory goes.

use cairn_mvcc::{KeyIndex, Writer};
use redb::ReadableDatabase as _;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<std::alloc::System> = &INSTRUMENTED_SYSTEM;

const KEYS: u64 = 20_000;

#[test]
fn the_key_index_takes_under_200_bytes_per_32_byte_key_written_once() {
    let db = redb::Database::builder().create_with_backend(redb::backends::InMemoryBackend::new()).unwrap();
    let txn = db.begin_write().unwrap();
    {
        let mut tables = cairn_mvcc::open_tables(&txn).unwrap();
        let mut index = KeyIndex::default();
        for n in 0..KEYS {
            let key = format!("key/{n:028}");
            Writer::new(&mut tables.kv, &mut index, n + 2).put(key.as_bytes(), vec![b'v'; 256], 0).unwrap();
        }
    }
    txn.commit().unwrap();

    let read = db.begin_read().unwrap();
    let kv = read.open_table(cairn_mvcc::KV).unwrap();
    let region = Region::new(ALLOCATOR);
    let (index, attached) = KeyIndex::load(&kv).unwrap();
    drop(attached);
    let change = region.change();
    let bytes =
        change.bytes_allocated as isize - change.bytes_deallocated as isize + change.bytes_reallocated;
    let per_key = bytes as f64 / KEYS as f64;
    println!("key index: {per_key:.0} bytes per key ({bytes} bytes for {KEYS} keys of 32 bytes)");
    assert!((80.0..200.0).contains(&per_key), "{per_key:.0} bytes per key");
    drop(index);
}
