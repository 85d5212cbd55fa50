//! A versioned store in a few lines: writes at successive revisions, a read of the
//! past, the change feed a watcher would catch up from, a compaction, and etcd's
//! HashKV of the result.
//!
//! Run with `cargo run -p cairn-mvcc --example history`.

use cairn_mvcc::{KeyIndex, KeySpan, Revisions, Writer};
use redb::ReadableDatabase as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::temp_dir().join(format!("cairn-mvcc-example-{}.redb", std::process::id()));
    let db = redb::Database::create(&path)?;
    let mut index = KeyIndex::default();
    let mut revisions = Revisions { current: 1, compacted: 0 };

    // Four writes, one revision each, committed in one transaction of the caller's.
    let txn = db.begin_write()?;
    {
        let mut tables = cairn_mvcc::open_tables(&txn)?;
        for (key, value) in [("config/a", "1"), ("config/b", "1"), ("config/a", "2")] {
            revisions.current += 1;
            Writer::new(&mut tables.kv, &mut index, revisions.current).put(
                key.as_bytes(),
                value.into(),
                0,
            )?;
        }
        revisions.current += 1;
        Writer::new(&mut tables.kv, &mut index, revisions.current).delete(KeySpan::Single(b"config/b"))?;
        revisions.save(&mut tables.meta)?;
    }
    txn.commit()?;

    let read = db.begin_read()?;
    let kv = read.open_table(cairn_mvcc::KV)?;
    let show = |kvs: Vec<cairn_api::mvccpb::KeyValue>| -> Vec<String> {
        kvs.iter()
            .map(|kv| format!("{}={}", String::from_utf8_lossy(&kv.key), String::from_utf8_lossy(&kv.value)))
            .collect()
    };
    let now = show(cairn_mvcc::range(&kv, &index, KeySpan::From(b"config/"), revisions.current)?);
    let then = show(cairn_mvcc::range(&kv, &index, KeySpan::From(b"config/"), 3)?);
    println!("at revision {}: {now:?}; at revision 3: {then:?}", revisions.current);
    assert_eq!(now, ["config/a=2"]);
    assert_eq!(then, ["config/a=1", "config/b=1"]);

    // What a watcher from revision 3 is sent: each change, with the value before it.
    let events = cairn_mvcc::events_since(&kv, &index, KeySpan::From(b""), 3, 100, true)?;
    for (revision, event) in &events {
        let key = String::from_utf8_lossy(&event.kv.as_ref().unwrap().key).into_owned();
        println!("revision {revision}: {} {key}", if event.r#type == 0 { "PUT" } else { "DELETE" });
    }
    assert_eq!(events.iter().map(|(revision, _)| *revision).collect::<Vec<_>>(), [3, 4, 5]);
    let before = cairn_mvcc::hash_kv(&kv, &index, revisions.compacted, revisions.current)?;
    drop((kv, read));

    // Compaction at revision 4 drops what no read at 4 or later can see.
    let txn = db.begin_write()?;
    let dropped = {
        let mut tables = cairn_mvcc::open_tables(&txn)?;
        let dropped = cairn_mvcc::compact(&mut tables.kv, &index, 4)?;
        revisions.compacted = 4;
        revisions.save(&mut tables.meta)?;
        dropped
    };
    txn.commit()?;
    index.compact(4);
    println!("compaction at 4 dropped {dropped} old versions");
    assert_eq!(dropped, 1, "config/a=1; config/b=1 is still what a read at 4 sees");

    // etcd's HashKV: after a compaction it covers only what reads at or after the
    // compaction revision can see, so it changes, on Cairn as on etcd.
    let read = db.begin_read()?;
    let kv = read.open_table(cairn_mvcc::KV)?;
    let after = cairn_mvcc::hash_kv(&kv, &index, revisions.compacted, revisions.current)?;
    println!("HashKV before the compaction {before:#010x}, after {after:#010x}");
    drop((kv, read, db));
    std::fs::remove_file(&path)?;
    Ok(())
}
