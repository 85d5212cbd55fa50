use std::sync::Arc;

use cairn_wait::{IndexWait, Wait};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_tasks_register_and_trigger_concurrently() {
    const TASKS: u64 = 16;
    const PER_TASK: u64 = 5_000;
    let wait: Wait<u64> = Wait::new();
    let (ids_tx, mut ids_rx) = tokio::sync::mpsc::unbounded_channel();

    // An "apply loop" triggers every ID it is told about with a value derived from it.
    let applier = {
        let wait = wait.clone();
        tokio::spawn(async move {
            let mut delivered = 0u64;
            while let Some(id) = ids_rx.recv().await {
                assert!(wait.trigger(id, id * 3));
                delivered += 1;
            }
            delivered
        })
    };

    let proposers: Vec<_> = (0..TASKS)
        .map(|task| {
            let (wait, ids_tx) = (wait.clone(), ids_tx.clone());
            tokio::spawn(async move {
                for n in 0..PER_TASK {
                    let id = task * PER_TASK + n;
                    let waiter = wait.register(id).unwrap();
                    ids_tx.send(id).unwrap();
                    assert_eq!(waiter.await, Ok(id * 3));
                }
            })
        })
        .collect();
    drop(ids_tx);
    for proposer in proposers {
        proposer.await.unwrap();
    }
    assert_eq!(applier.await.unwrap(), TASKS * PER_TASK);
    assert!(wait.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn index_waiters_across_threads_all_complete() {
    let wait = Arc::new(IndexWait::new());
    let waiters: Vec<_> = (1..=1_000u64)
        .map(|index| {
            let wait = Arc::clone(&wait);
            tokio::spawn(async move {
                wait.wait(index).await;
                assert!(wait.reached() >= index);
            })
        })
        .collect();
    for applied in 1..=1_000u64 {
        wait.trigger(applied);
        if applied % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    for waiter in waiters {
        waiter.await.unwrap();
    }
    assert_eq!(wait.pending(), 0);
}
