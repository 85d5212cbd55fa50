//! Backups and raft snapshots carry the whole state out of one database and into
//! another, and a saved snapshot's trailer is checked as etcd checks it.

use std::io::Write as _;

use cairn_backend::{ALARMS, AUTH, KV, LEASES, META, RAFT_STATE, Store, backup, members, snapshot};
use cairn_mvcc::bbolt::BoltReader;
use cairn_mvcc::{KeyIndex, KeySpan, Revisions, Writer};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};

/// A database with three revisions of keys, a compaction, a lease, a member, an alarm
/// and an auth store with one user.
fn populated(dir: &std::path::Path) -> Database {
    let db = cairn_backend::open(dir).unwrap();
    let mut index = KeyIndex::default();
    let txn = db.begin_write().unwrap();
    {
        let mut tables = cairn_mvcc::open_tables(&txn).unwrap();
        Writer::new(&mut tables.kv, &mut index, 2).put(b"a", b"1".to_vec(), 0).unwrap();
        Writer::new(&mut tables.kv, &mut index, 3).put(b"b", b"2".to_vec(), 7).unwrap();
        Writer::new(&mut tables.kv, &mut index, 4).delete(KeySpan::Single(b"a")).unwrap();
        Revisions { current: 4, compacted: 2 }.save(&mut tables.meta).unwrap();
        tables.meta.insert("applied_index", 40).unwrap();
        txn.open_table(LEASES).unwrap().insert(7, (60, 45)).unwrap();
        txn.open_table(ALARMS).unwrap().insert((9, 1), ()).unwrap();
        let mut auth = cairn_auth::AuthStore::new();
        auth.user_add("alice", cairn_auth::UserPassword::NoPassword).unwrap();
        txn.open_table(AUTH).unwrap().insert("store", auth.snapshot().as_slice()).unwrap();
        let member = cairn_api::etcdserverpb::Member {
            id: 9,
            name: "one".into(),
            peer_ur_ls: vec!["http://127.0.0.1:2380".into()],
            ..Default::default()
        };
        members::save(&txn, &member).unwrap();
    }
    txn.commit().unwrap();
    db
}

fn kv_rows(db: &Database) -> Vec<((u64, u32), Vec<u8>)> {
    let read = db.begin_read().unwrap();
    let kv = read.open_table(KV).unwrap();
    kv.iter().unwrap().map(Result::unwrap).map(|(k, v)| (k.value(), v.value().to_vec())).collect()
}

#[test]
fn an_etcd_backup_restores_keys_revisions_leases_auth_and_alarms() {
    let dir = tempfile::tempdir().unwrap();
    let source = populated(&dir.path().join("a"));
    let file = std::fs::File::create(dir.path().join("backup.db")).unwrap();
    let (_, size, revision) = backup::write(&source, file, "3.5.0").unwrap();
    assert_eq!(revision, 4);

    let (status, total) = backup::status(&dir.path().join("backup.db")).unwrap();
    assert_eq!(total, size);
    assert_eq!(status.revision, 4, "the last change in the key bucket");
    let reader = BoltReader::open(&dir.path().join("backup.db")).unwrap();
    assert_eq!(backup::hash(&reader, false).unwrap(), status);
    assert_ne!(backup::hash(&reader, true).unwrap().hash, status.hash, "the applied index is left out");

    let target = cairn_backend::open(&dir.path().join("b")).unwrap();
    let txn = target.begin_write().unwrap();
    let restored = backup::restore(&reader, &txn).unwrap();
    txn.commit().unwrap();
    assert_eq!(restored.revisions, Revisions { current: 4, compacted: 2 });
    assert_eq!((restored.changes, restored.leases), (3, 1));
    assert_eq!(kv_rows(&target), kv_rows(&source));
    let read = target.begin_read().unwrap();
    assert_eq!(read.open_table(LEASES).unwrap().get(7).unwrap().unwrap().value(), (60, 45));
    assert!(read.open_table(ALARMS).unwrap().get((9, 1)).unwrap().is_some());
    let auth = read.open_table(AUTH).unwrap().get("store").unwrap().unwrap().value().to_vec();
    let auth = cairn_auth::EtcdAuthBuckets::from_snapshot(&auth).unwrap();
    assert_eq!(auth.users.iter().map(|(name, _)| name.as_slice()).collect::<Vec<_>>(), [b"alice"]);
    assert!(members::load(&target).unwrap().is_empty(), "the membership is the new cluster's");
}

#[test]
fn a_raft_snapshot_replaces_the_whole_state_with_the_applied_index() {
    let dir = tempfile::tempdir().unwrap();
    let source = populated(&dir.path().join("a"));
    let (applied, data) = snapshot::take(&source).unwrap();
    assert_eq!(applied, 40);

    let store = Store::open(&dir.path().join("b")).unwrap();
    let txn = store.begin_write().unwrap();
    txn.open_table(LEASES).unwrap().insert(99, (5, 5)).unwrap();
    members::store_ids(&txn, (3, 77)).unwrap();
    txn.open_table(RAFT_STATE).unwrap().insert("conf_state", b"old".as_slice()).unwrap();
    txn.commit().unwrap();
    let fresh = snapshot::restore(&store, data.as_slice(), 41).unwrap();
    let building = snapshot::restore_path(store.path());
    assert!(building.exists(), "built in a file of its own");
    // Until it is installed, the store is as it was.
    let before = store.begin_read().unwrap();
    assert!(before.open_table(LEASES).unwrap().get(99).unwrap().is_some());
    fresh
        .install(&store, |txn| -> Result<(), cairn_backend::Error> {
            txn.open_table(RAFT_STATE)?.insert("restored", b"at 41".as_slice())?;
            Ok(())
        })
        .unwrap();
    assert!(!building.exists(), "the new file took the database's place");
    // A read begun before still reads the old state.
    assert!(before.open_table(LEASES).unwrap().get(99).unwrap().is_some());
    drop(before);

    // Everything holds after a reopen: the file in place is the restored one.
    drop(store);
    let store = Store::open(&dir.path().join("b")).unwrap();
    let target = store.get();
    assert_eq!(kv_rows(&target), kv_rows(&source));
    let read = target.begin_read().unwrap();
    let leases: Vec<i64> =
        read.open_table(LEASES).unwrap().iter().unwrap().map(|e| e.unwrap().0.value()).collect();
    assert_eq!(leases, [7], "what the snapshot lacks is gone");
    assert_eq!(read.open_table(META).unwrap().get("applied_index").unwrap().unwrap().value(), 41);
    assert_eq!(members::load(&target).unwrap().keys().copied().collect::<Vec<_>>(), [9]);
    assert_eq!(members::stored_ids(&target).unwrap(), Some((3, 77)), "the member's IDs stay");
    let raft_state = read.open_table(RAFT_STATE).unwrap();
    assert_eq!(raft_state.get("conf_state").unwrap().unwrap().value(), b"old", "carried over");
    assert_eq!(raft_state.get("restored").unwrap().unwrap().value(), b"at 41", "the last transaction's");
    drop((read, raft_state));

    // One that is not a snapshot is refused, leaving no file and the store as it was.
    assert!(snapshot::restore(&store, b"\xff\xff not a snapshot".as_slice(), 1).is_err());
    assert!(!snapshot::restore_path(store.path()).exists());
    assert_eq!(kv_rows(&store.get()), kv_rows(&source));

    // A restore that stopped half way (the process killed) leaves a file that the
    // next start deletes, and the store as it was.
    std::fs::write(snapshot::restore_path(store.path()), b"half a database").unwrap();
    drop((store, target));
    let store = Store::open(&dir.path().join("b")).unwrap();
    assert!(!snapshot::restore_path(store.path()).exists());
    let applied = store.begin_read().unwrap().open_table(META).unwrap().get("applied_index").unwrap();
    assert_eq!(applied.unwrap().value(), 41);
}

#[test]
fn a_snapshot_streams_in_chunks_of_bounded_size_read_from_one_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let source = populated(&dir.path().join("a"));
    // Enough rows for many chunks of 4 KiB, and leases over several chunks.
    let txn = source.begin_write().unwrap();
    {
        let mut kv = txn.open_table(KV).unwrap();
        for revision in 100..400u64 {
            kv.insert((revision, 0), vec![revision as u8; 100].as_slice()).unwrap();
        }
        let mut leases = txn.open_table(LEASES).unwrap();
        for id in 100..1000 {
            leases.insert(id, (60, 30)).unwrap();
        }
    }
    txn.commit().unwrap();
    let (applied, chunks) = snapshot::Chunks::with_chunk_bytes(source.begin_read().unwrap(), 4096).unwrap();
    // A write after the transaction was opened is not in the snapshot.
    let txn = source.begin_write().unwrap();
    txn.open_table(KV).unwrap().insert((500, 0), b"later".as_slice()).unwrap();
    txn.commit().unwrap();
    let chunks: Vec<Vec<u8>> = chunks.map(Result::unwrap).collect();
    assert_eq!(applied, 40);
    assert!(chunks.len() > 10, "{} chunks", chunks.len());
    assert!(chunks.iter().all(|chunk| chunk.len() < 4096 + 200), "a chunk is one row past the size at most");

    let store = Store::open(&dir.path().join("b")).unwrap();
    let no_more = |_: &redb::WriteTransaction| -> Result<(), cairn_backend::Error> { Ok(()) };
    snapshot::restore(&store, chunks.concat().as_slice(), 41).unwrap().install(&store, no_more).unwrap();
    let target = store.get();
    let mut expected = kv_rows(&source);
    expected.retain(|(at, _)| *at != (500, 0));
    assert_eq!(kv_rows(&target), expected);
    let read = target.begin_read().unwrap();
    assert_eq!(read.open_table(LEASES).unwrap().len().unwrap(), 901);
    assert_eq!(members::load(&target).unwrap().keys().copied().collect::<Vec<_>>(), [9]);

    // A snapshot cut short anywhere is refused, not half restored.
    let whole = chunks.concat();
    let boundary = chunks[0].len() + chunks[1].len();
    let last = whole.len() - chunks.last().unwrap().len();
    for cut in [1, boundary, whole.len() / 2, last, whole.len() - 1] {
        assert!(snapshot::restore(&store, &whole[..cut], 42).is_err(), "cut at {cut}");
        assert!(!snapshot::restore_path(store.path()).exists(), "cut at {cut}");
    }
    // So is anything after the last chunk.
    let mut longer = whole.clone();
    longer.extend_from_slice(&chunks[1]);
    assert!(snapshot::restore(&store, longer.as_slice(), 42).is_err());
    assert_eq!(kv_rows(&store.get()), expected, "the store is as the whole snapshot left it");
}

#[test]
fn a_saved_snapshot_is_checked_by_its_sha256_trailer() {
    use sha2::Digest as _;
    let dir = tempfile::tempdir().unwrap();
    let body = vec![5u8; 1024];
    let digest = sha2::Sha256::digest(&body);
    let write = |name: &str, trailer: &[u8]| {
        let path = dir.path().join(name);
        let mut file = std::fs::File::create(&path).unwrap();
        file.write_all(&body).unwrap();
        file.write_all(trailer).unwrap();
        path
    };
    let good = write("good", &digest);
    backup::verify_hash(&good, false).unwrap();

    let mut flipped = digest.to_vec();
    flipped[0] ^= 1;
    let bad = write("bad", &flipped);
    let error = backup::verify_hash(&bad, false).unwrap_err().to_string();
    assert!(error.starts_with("expected sha256 ["), "{error}");
    backup::verify_hash(&bad, true).unwrap();

    let bare = write("bare", &[]);
    let error = backup::verify_hash(&bare, false).unwrap_err().to_string();
    assert_eq!(error, "snapshot missing hash but --skip-hash-check=false");
    backup::verify_hash(&bare, true).unwrap();
}

#[test]
fn a_streamed_backup_is_the_file_then_its_sha256_and_stops_when_the_receiver_goes() {
    let dir = tempfile::tempdir().unwrap();
    let db = cairn_backend::open(&dir.path().join("m")).unwrap();
    let mut blobs: Vec<(Vec<u8>, u64)> = Vec::new();
    cairn_backend::backup::stream(&db, dir.path(), "3.5.0", 4096, |blob, remaining| {
        blobs.push((blob, remaining));
        true
    })
    .unwrap();
    let (hash, last_remaining) = blobs.pop().unwrap();
    assert_eq!(last_remaining, 0);
    let file: Vec<u8> = blobs.iter().flat_map(|(blob, _)| blob.clone()).collect();
    assert!(blobs.iter().all(|(blob, _)| blob.len() <= 4096) && blobs.len() > 1);
    // Each blob says how much is still to come.
    let mut left = file.len() as u64;
    for (blob, remaining) in &blobs {
        left -= blob.len() as u64;
        assert_eq!(*remaining, left);
    }
    use sha2::Digest as _;
    assert_eq!(hash, sha2::Sha256::digest(&file).to_vec());
    // Saved with its trailer, the file passes etcd's check and reads as a backend.
    let saved = dir.path().join("saved.db");
    std::fs::write(&saved, [file.as_slice(), hash.as_slice()].concat()).unwrap();
    cairn_backend::backup::verify_hash(&saved, false).unwrap();
    assert!(cairn_backend::backup::status(&saved).is_ok());

    let mut taken = 0;
    cairn_backend::backup::stream(&db, dir.path(), "3.5.0", 4096, |_, _| {
        taken += 1;
        false
    })
    .unwrap();
    assert_eq!(taken, 1, "nothing more once the receiver has gone");
}
