use std::time::Duration;

use cairn_wait::{Error, Wait, Waiter};
use futures::FutureExt;

#[tokio::test]
async fn trigger_completes_the_waiter_with_its_value() {
    let wait = Wait::new();
    let waiter = wait.register(1).unwrap();
    assert!(wait.trigger(1, "one"));
    assert_eq!(waiter.await, Ok("one"));
    assert!(wait.is_empty());
}

#[tokio::test]
async fn trigger_of_an_unknown_id_is_a_no_op_that_says_so() {
    let wait: Wait<u32> = Wait::new();
    assert!(!wait.trigger(42, 1));
    let waiter = wait.register(1).unwrap();
    assert!(!wait.trigger(2, 5));
    assert!(wait.is_registered(1));
    assert!(wait.trigger(1, 7));
    assert_eq!(waiter.await, Ok(7));
}

#[tokio::test]
async fn second_trigger_is_suppressed() {
    // etcd's TestTriggerDupSuppression: only the first value is delivered.
    let wait = Wait::new();
    let waiter = wait.register(1).unwrap();
    assert!(wait.trigger(1, "first"));
    assert!(!wait.trigger(1, "second"));
    assert_eq!(waiter.await, Ok("first"));
}

#[test]
fn is_registered_follows_register_trigger_and_drop() {
    let wait = Wait::new();
    assert!(!wait.is_registered(1));
    let waiter = wait.register(1).unwrap();
    assert!(wait.is_registered(1));
    wait.trigger(1, ());
    assert!(!wait.is_registered(1));
    drop(waiter);
    let waiter = wait.register(1).unwrap();
    drop(waiter);
    assert!(!wait.is_registered(1));
}

#[test]
fn duplicate_registration_is_an_error_and_keeps_the_first() {
    let wait = Wait::new();
    let first = wait.register(0xabc).unwrap();
    assert_eq!(wait.register(0xabc).unwrap_err(), Error::DuplicateId(0xabc));
    assert_eq!(Error::DuplicateId(0xabc).to_string(), "wait: duplicate id abc");
    assert!(wait.is_registered(0xabc));
    assert!(wait.trigger(0xabc, 1));
    assert_eq!(first.now_or_never(), Some(Ok(1)));
}

#[test]
fn an_id_can_be_registered_again_after_trigger() {
    let wait = Wait::new();
    let first = wait.register(5).unwrap();
    wait.trigger(5, 1);
    let second = wait.register(5).unwrap();
    // The first waiter is dropped after the second registration: it must not remove it.
    drop(first);
    assert!(wait.is_registered(5));
    wait.trigger(5, 2);
    assert_eq!(second.now_or_never(), Some(Ok(2)));
}

#[test]
fn dropped_waiter_unregisters_and_later_trigger_is_a_no_op() {
    let wait = Wait::new();
    let waiter = wait.register(9).unwrap();
    drop(waiter);
    assert!(wait.is_empty());
    assert!(!wait.trigger(9, ()));
}

#[test]
fn dropping_the_registry_closes_pending_waiters() {
    let wait: Wait<()> = Wait::new();
    let waiter = wait.register(3).unwrap();
    drop(wait);
    assert_eq!(waiter.now_or_never(), Some(Err(Error::Closed)));
}

#[tokio::test(start_paused = true)]
async fn registry_is_empty_after_timeouts_cancellations_and_drops() {
    let wait: Wait<u64> = Wait::new();

    // Timed out.
    for id in 0..100 {
        let waiter = wait.register(id).unwrap();
        let outcome = tokio::time::timeout(Duration::from_secs(1), waiter).await;
        assert!(outcome.is_err());
    }

    // Cancelled: the task awaiting the waiter is aborted.
    let mut tasks = Vec::new();
    for id in 100..200 {
        let waiter = wait.register(id).unwrap();
        tasks.push(tokio::spawn(waiter));
    }
    tokio::task::yield_now().await;
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        assert!(task.await.unwrap_err().is_cancelled());
    }

    // Lost in a select: another branch won.
    for id in 200..300 {
        let waiter = wait.register(id).unwrap();
        tokio::select! {
            _ = waiter => unreachable!("never triggered"),
            () = std::future::ready(()) => {}
        }
    }

    // Never polled.
    let unpolled: Vec<Waiter<u64>> = (300..400).map(|id| wait.register(id).unwrap()).collect();
    assert_eq!(wait.len(), 100);
    drop(unpolled);

    // Triggered but never awaited.
    for id in 400..500 {
        let _waiter = wait.register(id).unwrap();
        wait.trigger(id, id);
    }

    assert!(wait.is_empty());
    assert!((0..500).all(|id| !wait.is_registered(id)));
}

#[test]
fn one_shard_registry_works() {
    let wait = Wait::with_shards(0);
    let a = wait.register(1).unwrap();
    let b = wait.register(2).unwrap();
    assert_eq!(wait.len(), 2);
    wait.trigger(2, 'b');
    wait.trigger(1, 'a');
    assert_eq!(a.now_or_never(), Some(Ok('a')));
    assert_eq!(b.now_or_never(), Some(Ok('b')));
}

#[test]
fn types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>() {}
    assert_send_sync::<Wait<String>>();
    assert_send_sync::<cairn_wait::IndexWait>();
    assert_send::<Waiter<String>>();
    assert_send_sync::<cairn_wait::IndexWaiter>();
}
