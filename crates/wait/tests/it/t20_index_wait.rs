use std::sync::{Arc, Mutex};

use cairn_wait::IndexWait;
use futures::FutureExt;

#[test]
fn an_index_already_reached_completes_at_once() {
    let wait = IndexWait::starting_at(10);
    assert!(wait.wait(10).now_or_never().is_some());
    assert!(wait.wait(3).now_or_never().is_some());
    assert!(wait.wait(0).now_or_never().is_some());
    assert!(wait.wait(11).now_or_never().is_none());
    assert_eq!(wait.pending(), 0, "the unfinished waiter was dropped");
}

#[tokio::test]
async fn trigger_wakes_waiters_at_or_below_it_lowest_first() {
    let wait = IndexWait::new();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for index in [5u64, 3, 9, 4, 7, 3] {
        let (wait, order) = (wait.clone(), Arc::clone(&order));
        tasks.push(tokio::spawn(async move {
            wait.wait(index).await;
            order.lock().unwrap().push(index);
        }));
    }
    // Let every task park.
    while wait.pending() < 6 {
        tokio::task::yield_now().await;
    }
    wait.trigger(5);
    assert_eq!(wait.reached(), 5);
    assert_eq!(wait.pending(), 2);
    // The current-thread runtime runs woken tasks in the order they were woken.
    while order.lock().unwrap().len() < 4 {
        tokio::task::yield_now().await;
    }
    assert_eq!(*order.lock().unwrap(), vec![3, 3, 4, 5]);

    wait.trigger(u64::MAX);
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![3, 3, 4, 5, 7, 9]);
}

#[test]
fn the_index_only_moves_forward() {
    let wait = IndexWait::new();
    wait.trigger(8);
    wait.trigger(2);
    assert_eq!(wait.reached(), 8);
    assert!(wait.wait(8).now_or_never().is_some());
}

#[test]
fn a_dropped_index_waiter_leaves_nothing_behind() {
    let wait = IndexWait::new();
    let mut parked = Box::pin(wait.wait(4));
    assert!((&mut parked).now_or_never().is_none());
    assert!((&mut parked).now_or_never().is_none(), "a second poll parks in the same place");
    assert_eq!(wait.pending(), 1);
    drop(parked);
    assert_eq!(wait.pending(), 0);
}

#[test]
fn a_woken_waiter_completes_even_if_polled_late() {
    let wait = IndexWait::new();
    let mut parked = Box::pin(wait.wait(2));
    assert!((&mut parked).now_or_never().is_none());
    wait.trigger(2);
    assert_eq!(wait.pending(), 0);
    assert!(parked.now_or_never().is_some());
}
