//! A backup restored into the data dirs of a new three-member cluster, and each
//! member's raft log recovered from its data dir as a server does at start: every
//! member starts from the same state, after the same raft index.
//!
//! Run with `cargo run -p cairn-utl --example restore`.

use cairn_backend::{Store, backup};
use cairn_mvcc::{KeyIndex, Revisions, Writer};
use cairn_utl::snapshot::{NewCluster, restore};
use raft::Storage as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("cairn-utl-example-{}", std::process::id()));

    // A member's state, 100 revisions of keys, saved as an etcd backup.
    let store = Store::open(&dir.join("source"))?;
    let mut index = KeyIndex::default();
    let txn = store.begin_write()?;
    {
        let mut tables = cairn_mvcc::open_tables(&txn)?;
        for revision in 2..102 {
            let key = format!("key/{revision:03}");
            Writer::new(&mut tables.kv, &mut index, revision).put(key.as_bytes(), b"v".to_vec(), 0)?;
        }
        Revisions { current: 101, compacted: 0 }.save(&mut tables.meta)?;
    }
    txn.commit()?;
    let file = dir.join("backup.db");
    backup::write(&store.get(), std::fs::File::create(&file)?, "3.5.0")?;
    println!("{}", cairn_utl::snapshot::status(&file, "table")?);

    let initial_cluster = "m0=http://10.0.0.1:2380,m1=http://10.0.0.2:2380,m2=http://10.0.0.3:2380";
    for (n, peer) in
        ["http://10.0.0.1:2380", "http://10.0.0.2:2380", "http://10.0.0.3:2380"].iter().enumerate()
    {
        let cluster = NewCluster {
            name: format!("m{n}"),
            initial_cluster: initial_cluster.into(),
            token: "example".into(),
            peer_urls: (*peer).into(),
        };
        // `backup::write` adds no SHA-256 trailer (`Maintenance.Snapshot` streams one
        // after the file): restore it as a copy of a database file.
        let data_dir = dir.join(format!("m{n}"));
        let done = restore(&file, &data_dir, &cluster, true)?;

        // What the member finds at start: the backup's state, and a raft log that
        // begins after one entry per member, with all three as voters.
        let db = cairn_backend::open(&data_dir)?;
        let (mut wal, recovered) = cairn_wal::Wal::open(&data_dir.join("member").join("wal"))?;
        let log = cairn_utl::raft_state::recover(&db, &mut wal, recovered)?.expect("a restored member");
        let state = log.initial_state()?;
        println!(
            "m{n}: revision {}, cluster {:x}, log after index {}, voters {:?}",
            done.restored.revisions.current,
            done.cluster_id,
            log.first_index()? - 1,
            state.conf_state.voters.len()
        );
        assert_eq!(done.restored.revisions.current, 101);
        assert_eq!(log.first_index()?, 4);
        assert_eq!(state.conf_state.voters.len(), 3);
    }

    // A second restore into a data dir that is not empty is refused, as etcdutl does.
    let cluster = NewCluster {
        name: "m0".into(),
        initial_cluster: initial_cluster.into(),
        token: "example".into(),
        peer_urls: "http://10.0.0.1:2380".into(),
    };
    let refused = restore(&file, &dir.join("m0"), &cluster, true).unwrap_err();
    println!("again: {refused}");

    drop(store);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
