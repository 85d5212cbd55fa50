//! A toy apply loop hands each result back to the task that proposed it with `Wait`,
//! and a reader waits for the applied index with `IndexWait`. A caller that gives up,
//! and a registry that goes away, leave nothing behind.
//!
//! Run with `cargo run -p cairn-wait --example apply_loop`.

use std::time::Duration;

use cairn_wait::{Error, IndexWait, Wait};
use tokio::sync::mpsc;

// Paused time: the timeout below elapses at once instead of after 100 ms.
#[tokio::main(flavor = "current_thread", start_paused = true)]
async fn main() {
    let results: Wait<String> = Wait::new();
    let applied = IndexWait::new();

    // The apply loop: applies commands in order, hands each result to its waiter,
    // then advances the applied index.
    let (log, mut entries) = mpsc::unbounded_channel::<(u64, &'static str)>();
    let apply = tokio::spawn({
        let (results, applied) = (results.clone(), applied.clone());
        async move {
            let mut index = 0;
            while let Some((id, command)) = entries.recv().await {
                index += 1;
                results.trigger(id, format!("{command} applied at index {index}"));
                applied.trigger(index);
            }
        }
    });

    // Three writers: register before proposing, so the result cannot be missed.
    let mut writers = Vec::new();
    for (id, command) in [(101, "put a=1"), (102, "put b=2"), (103, "delete a")] {
        let waiter = results.register(id).expect("IDs are unique");
        log.send((id, command)).expect("the apply loop is running");
        writers.push(tokio::spawn(waiter));
    }
    // A reader that must see at least index 3 (a linearizable read, say).
    let reader = tokio::spawn({
        let applied = applied.clone();
        async move {
            applied.wait(3).await;
            applied.reached()
        }
    });
    for writer in writers {
        let result = writer.await.expect("no panic").expect("triggered");
        println!("writer got: {result}");
    }
    let seen = reader.await.expect("no panic");
    println!("reader resumed at applied index {seen}");
    assert_eq!(seen, 3);
    assert!(results.is_empty(), "triggered waiters are unregistered");

    // An ID can have one live waiter only.
    let first = results.register(200).expect("200 is free");
    assert_eq!(results.register(200).unwrap_err(), Error::DuplicateId(200));
    drop(first);
    println!("a second register(200) is refused while the first waiter lives");

    // A caller that times out drops its waiter, which unregisters it: no manual cleanup.
    let waiter = results.register(300).expect("300 is free");
    assert!(tokio::time::timeout(Duration::from_millis(100), waiter).await.is_err());
    assert!(!results.is_registered(300));
    assert!(!results.trigger(300, "too late".into()), "nobody waits for 300 any more");
    println!("after a timeout, 300 is no longer registered: {} waiters left", results.len());

    // Dropping every handle to the registry ends the waiters still pending.
    drop(log);
    apply.await.expect("no panic");
    let orphan = results.register(400).expect("400 is free");
    drop(results);
    assert_eq!(orphan.await, Err(Error::Closed));
    println!("a waiter outliving its registry ends with: {}", Error::Closed);
}
