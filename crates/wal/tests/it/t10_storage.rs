use cairn_wal::WalStorage;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, Storage};

fn voters() -> ConfState {
    ConfState { voters: vec![1, 2, 3], ..Default::default() }
}

fn entry(index: u64, term: u64) -> Entry {
    Entry { index, term, data: format!("e{index}").into_bytes().into(), ..Default::default() }
}

fn all(storage: &WalStorage) -> Vec<(u64, u64)> {
    let (first, last) = (storage.first_index().unwrap(), storage.last_index().unwrap());
    let entries = storage.entries(first, last + 1, None, GetEntriesContext::empty(false)).unwrap();
    entries.iter().map(|entry| (entry.index, entry.term)).collect()
}

#[test]
fn raft_sees_the_same_log_and_hard_state_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = WalStorage::open(dir.path(), voters()).unwrap();
    assert_eq!((storage.first_index().unwrap(), storage.last_index().unwrap()), (1, 0));
    let hard_state = HardState { term: 2, vote: 1, commit: 2, ..Default::default() };
    storage.append(&[entry(1, 1), entry(2, 1), entry(3, 2)], Some(&hard_state)).unwrap();
    // A new leader's entries replace the conflicting suffix.
    storage.append(&[entry(3, 3), entry(4, 3)], None).unwrap();
    storage.commit_to(4).unwrap();
    drop(storage);

    let storage = WalStorage::open(dir.path(), voters()).unwrap();
    assert_eq!(all(&storage), [(1, 1), (2, 1), (3, 3), (4, 3)]);
    let state = storage.initial_state().unwrap();
    assert_eq!((state.hard_state.term, state.hard_state.vote, state.hard_state.commit), (2, 1, 4));
    assert_eq!(state.conf_state, voters());
}

#[test]
fn compacted_entries_stay_gone_and_the_term_before_them_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = WalStorage::open(dir.path(), voters()).unwrap();
    let entries: Vec<Entry> = (1..=10).map(|index| entry(index, 1 + index / 5)).collect();
    storage.append(&entries, Some(&HardState { term: 3, commit: 10, ..Default::default() })).unwrap();
    storage.compact(6).unwrap();
    assert_eq!(storage.first_index().unwrap(), 6);
    drop(storage);

    let storage = WalStorage::open(dir.path(), voters()).unwrap();
    assert_eq!(storage.first_index().unwrap(), 6);
    assert_eq!(storage.term(5).unwrap(), 2, "the term of the last compacted entry, for matching");
    assert_eq!(all(&storage), [(6, 2), (7, 2), (8, 2), (9, 2), (10, 3)]);
}

#[test]
fn a_snapshot_from_the_leader_replaces_the_whole_log_for_good() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = WalStorage::open(dir.path(), voters()).unwrap();
    storage.append(&[entry(1, 1), entry(2, 1)], None).unwrap();
    let mut snapshot = Snapshot::default();
    let mut meta = SnapshotMetadata { index: 100, term: 4, ..Default::default() };
    meta.set_conf_state(voters());
    snapshot.set_metadata(meta);
    storage.apply_snapshot(snapshot).unwrap();
    storage
        .append(&[entry(101, 4)], Some(&HardState { term: 4, commit: 101, ..Default::default() }))
        .unwrap();
    drop(storage);

    let storage = WalStorage::open(dir.path(), voters()).unwrap();
    assert_eq!(all(&storage), [(101, 4)]);
    assert_eq!(storage.term(100).unwrap(), 4);
    assert_eq!(storage.first_index().unwrap(), 101);
}

#[test]
fn a_flipped_byte_is_refused_not_read_past() {
    let dir = tempfile::tempdir().unwrap();
    let mut storage = WalStorage::open(dir.path(), voters()).unwrap();
    let entries: Vec<Entry> = (1..=20).map(|index| entry(index, 1)).collect();
    storage.append(&entries, None).unwrap();
    drop(storage);
    let segment = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|item| item.unwrap().path())
        .find(|path| path.extension().is_some_and(|ext| ext == "wal"))
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = bytes.iter().rposition(|&byte| byte == b'e').unwrap() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&segment, bytes).unwrap();
    let error = WalStorage::open(dir.path(), voters()).unwrap_err();
    assert!(matches!(error, cairn_wal::Error::Corrupt(_)), "{error}");
    assert!(error.to_string().contains("corrupt write-ahead log"), "{error}");
}
