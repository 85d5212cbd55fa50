use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use etcd_client::GetOptions;

use crate::support::Cairn;

const ROUNDS: usize = 20;
const WRITERS: usize = 4;

/// Acknowledged writes: key to the revision the server answered with.
type Acked = Arc<Mutex<BTreeMap<String, i64>>>;

/// Writers put unique keys without pause until the server goes away, recording every
/// acknowledged put.
fn start_writers(
    cairn: &Cairn,
    round: usize,
    acked: &Acked,
    count: &Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..WRITERS)
        .map(|writer| {
            let (endpoint, acked, count) = (cairn.endpoint(), Arc::clone(acked), Arc::clone(count));
            tokio::spawn(async move {
                let Ok(mut client) = etcd_client::Client::connect([endpoint], None).await else { return };
                for n in 0.. {
                    let key = format!("r{round:02}/w{writer}/{n:06}");
                    match client.put(key.clone(), key.clone(), None).await {
                        Ok(response) => {
                            let revision = response.header().expect("a header").revision();
                            acked.lock().unwrap().insert(key, revision);
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(_) => return,
                    }
                }
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    // A small snapshot count makes log compaction happen between the kills too.
    let mut cairn = Cairn::start(dir.path(), &["--snapshot-count=50"]);
    let acked: Acked = Arc::default();
    // A cheap deterministic spread of kill points: after 1 to 60 acknowledged writes.
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for round in 0..ROUNDS {
        let count = Arc::new(AtomicUsize::new(0));
        let writers = start_writers(&cairn, round, &acked, &count);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let kill_after = 1 + (seed % 60) as usize;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        while count.load(Ordering::SeqCst) < kill_after {
            assert!(tokio::time::Instant::now() < deadline, "writers made no progress in round {round}");
            tokio::task::yield_now().await;
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        // Writes are in flight at this moment: kill without warning, then restart.
        cairn = tokio::task::spawn_blocking(move || cairn.kill_and_restart()).await.unwrap();
        for writer in writers {
            writer.await.unwrap();
        }
    }

    let mut client = cairn.client().await;
    let all = client.get("r", Some(GetOptions::new().with_prefix())).await.unwrap();
    let stored: BTreeMap<String, (i64, i64, String)> = all
        .kvs()
        .iter()
        .map(|kv| {
            let key = kv.key_str().unwrap().to_owned();
            (key, (kv.mod_revision(), kv.version(), kv.value_str().unwrap().to_owned()))
        })
        .collect();
    let acked = acked.lock().unwrap();
    assert!(acked.len() >= ROUNDS, "every round acknowledged writes");
    for (key, revision) in acked.iter() {
        let (stored_revision, _, value) =
            stored.get(key).unwrap_or_else(|| panic!("acknowledged {key} is lost"));
        assert_eq!((stored_revision, value), (revision, key), "{key} kept its revision and value");
    }
    // Nothing was applied twice: every key was put once, and every revision since the
    // first is one put.
    assert!(stored.values().all(|(_, version, _)| *version == 1), "a put was applied twice");
    let revision = all.header().unwrap().revision();
    assert_eq!(revision as usize, 1 + stored.len(), "one revision per stored put, no gaps, no repeats");
}
