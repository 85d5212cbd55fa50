use std::sync::Arc;

use cairn_proposal::Config;
use cairn_proposal::memory::MemRequest;

use crate::support::harness;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_proposals_each_get_their_own_result() {
    const TASKS: usize = 100;
    const PER_TASK: usize = 1_000;
    let mut h = harness(Config::default());
    let applier = h.spawn_applier();
    let callers: Vec<_> = (0..TASKS)
        .map(|task| {
            let gate = Arc::clone(&h.gate);
            tokio::spawn(async move {
                let mut ids = Vec::with_capacity(PER_TASK);
                for n in 0..PER_TASK {
                    let payload = format!("{task}/{n}");
                    let token = if n % 2 == 0 { "alice-token" } else { "" };
                    let metadata: &[(&str, &str)] = if token.is_empty() { &[] } else { &[("token", token)] };
                    let applied = gate.propose(MemRequest::new(payload.clone()), metadata).await.unwrap();
                    assert_eq!(applied.payload, payload.as_bytes(), "every caller gets its own result");
                    assert_eq!(applied.header.username, if token.is_empty() { "" } else { "alice" });
                    ids.push(applied.header.id);
                }
                ids
            })
        })
        .collect();
    let mut ids = Vec::with_capacity(TASKS * PER_TASK);
    for caller in callers {
        ids.extend(caller.await.unwrap());
    }
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), TASKS * PER_TASK, "every request had its own ID");
    assert!(h.wait.is_empty());
    drop(h.gate);
    drop(h.proposer);
    assert_eq!(applier.await.unwrap(), (TASKS * PER_TASK) as u64);
}
