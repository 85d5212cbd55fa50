//! A member's state saved as an etcd backup, inspected as `etcdutl snapshot status`
//! would, restored into a fresh database, and defragmented.
//!
//! Run with `cargo run -p cairn-backend --example backup`.

use cairn_backend::{LEASES, Store, backup, defrag};
use cairn_mvcc::bbolt::BoltReader;
use cairn_mvcc::{KeyIndex, Revisions, Writer};
use redb::ReadableDatabase as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("cairn-backend-example-{}", std::process::id()));
    let store = Store::open(&dir.join("source"))?;

    // Ten revisions of one key and a lease, written as a server's apply loop would.
    let mut index = KeyIndex::default();
    let txn = store.begin_write()?;
    {
        let mut tables = cairn_mvcc::open_tables(&txn)?;
        for revision in 2..12 {
            Writer::new(&mut tables.kv, &mut index, revision).put(b"config", vec![b'x'; 64], 0)?;
        }
        Revisions { current: 11, compacted: 0 }.save(&mut tables.meta)?;
        txn.open_table(LEASES)?.insert(7, (60, 60))?;
    }
    txn.commit()?;

    // The backup etcd's tools read.
    let path = dir.join("backup.db");
    let (_, size, revision) = backup::write(&store.get(), std::fs::File::create(&path)?, "3.5.0")?;
    let (status, _) = backup::status(&path)?;
    println!(
        "backup: {size} bytes at revision {revision}, hash {:x}, {} keys",
        status.hash, status.total_keys
    );

    // Restored into another member's database, in one transaction.
    let restored_db = cairn_backend::open(&dir.join("restored"))?;
    let txn = restored_db.begin_write()?;
    let restored = backup::restore(&BoltReader::open(&path)?, &txn)?;
    txn.commit()?;
    println!(
        "restored: {} changes, {} leases, revision {}",
        restored.changes, restored.leases, restored.revisions.current
    );
    assert_eq!(restored.changes, 10);
    assert_eq!(restored_db.begin_read()?.open_table(LEASES)?.get(7)?.map(|ttl| ttl.value()), Some((60, 60)));

    // Defragmentation: the copy off the writer's path, then the short last step.
    let turn = store.try_defrag_turn().expect("no other defragmentation");
    let copy = defrag::copy(&store, turn)?;
    let outcome = defrag::finish(&store, copy)?;
    println!("defragmented: {} -> {} bytes", outcome.size_before, outcome.size_after);

    drop((store, restored_db));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
