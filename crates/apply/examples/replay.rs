//! A log of etcd requests applied to a fresh member's state in batches, as a raft
//! loop applies committed entries, then a restart that finds the same state.
//!
//! Run with `cargo run -p cairn-apply --example replay`.

use std::time::Instant;

use cairn_api::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, InternalRaftRequest, LeaseGrantRequest, LeaseRevokeRequest,
    PutRequest,
};
use cairn_apply::{Applied, Applier, Limits, State};

fn put(key: &str, value: &str, lease: i64) -> InternalRaftRequest {
    let put = PutRequest { key: key.into(), value: value.into(), lease, ..Default::default() };
    InternalRaftRequest { put: Some(put), ..Default::default() }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("cairn-apply-example-{}", std::process::id()));
    let db = cairn_backend::open(&dir)?;
    let tokens = cairn_auth::AuthStore::default().tokens().clone();
    let mut applier = Applier::new(State::load(&db, tokens.clone())?, Limits::default());

    let log = vec![
        vec![
            InternalRaftRequest {
                lease_grant: Some(LeaseGrantRequest { id: 7, ttl: 60 }),
                ..Default::default()
            },
            put("/config/a", "1", 0),
            put("/session/worker-1", "up", 7),
        ],
        vec![
            put("/config/a", "2", 0),
            InternalRaftRequest {
                delete_range: Some(DeleteRangeRequest { key: "/nothing".into(), ..Default::default() }),
                ..Default::default()
            },
            InternalRaftRequest {
                compaction: Some(CompactionRequest { revision: 3, physical: false }),
                ..Default::default()
            },
        ],
        vec![InternalRaftRequest { lease_revoke: Some(LeaseRevokeRequest { id: 7 }), ..Default::default() }],
    ];
    let mut index = 0;
    for entries in log {
        // One transaction per batch of committed entries, committed once.
        let txn = db.begin_write()?;
        let mut batch = applier.begin(&txn, 0, Instant::now())?;
        for request in &entries {
            index += 1;
            let answer = match applier.apply(&mut batch, request, index) {
                Ok(Applied::Put(response)) => {
                    format!("put at revision {}", response.header.unwrap().revision)
                }
                Ok(Applied::DeleteRange(response)) => format!("deleted {}", response.deleted),
                Ok(Applied::LeaseRevoke(response)) => {
                    format!("revoked, keys gone at revision {}", response.header.unwrap().revision)
                }
                Ok(other) => format!("{other:?}").chars().take(40).collect(),
                Err(refused) => format!("refused: {refused}"),
            };
            println!("entry {index}: {answer}");
        }
        applier.commit(batch, index)?;
        txn.commit()?;
        for (revision, events) in applier.take_changes() {
            println!("  watchers: revision {revision}, {} event(s)", events.len());
        }
    }

    // A restart: everything comes back from the database.
    let revisions = applier.revisions();
    drop(applier);
    let restarted = State::load(&db, tokens)?;
    println!(
        "after a restart: revision {}, compacted at {}",
        restarted.revisions.current, restarted.revisions.compacted
    );
    assert_eq!(restarted.revisions, revisions);
    assert_eq!(cairn_apply::lessor(&restarted.lessor).ids(), Vec::<i64>::new());

    drop((restarted, db));
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
