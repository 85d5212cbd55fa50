//! A one-member raft-rs node whose log lives in a `WalStorage`: it elects itself,
//! commits three proposals, stops, and finds every entry again when it restarts.
//!
//! Run with `cargo run -p cairn-wal --example single_node`.

use cairn_wal::WalStorage;
use raft::eraftpb::ConfState;
use raft::{Config, RawNode, Storage as _};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("cairn-wal-example-{}", std::process::id()));
    let voters = ConfState { voters: vec![1], ..Default::default() };
    let logger = slog::Logger::root(slog::Discard, slog::o!());
    let config = Config { id: 1, ..Default::default() };
    {
        let storage = WalStorage::open(&dir, voters.clone())?;
        let mut node = RawNode::new(&config, storage, &logger)?;
        node.campaign()?;
        let mut committed = Vec::new();
        for n in 0..3 {
            node.propose(vec![], format!("put key{n}").into_bytes())?;
        }
        // Drive raft: persist what each Ready asks for, then apply what is committed.
        while node.has_ready() {
            let mut ready = node.ready();
            node.mut_store().append(ready.entries(), ready.hs())?;
            committed.extend(ready.take_committed_entries());
            let mut light = node.advance(ready);
            if let Some(commit) = light.commit_index() {
                node.mut_store().commit_to(commit)?;
            }
            committed.extend(light.take_committed_entries());
            node.advance_apply();
        }
        let data: Vec<_> = committed.iter().filter(|e| !e.data.is_empty()).map(|e| e.data.to_vec()).collect();
        println!("committed {} proposals before the stop", data.len());
    }
    // A restart: the log gives raft-rs back its entries and hard state.
    let storage = WalStorage::open(&dir, voters)?;
    let (first, last) = (storage.first_index()?, storage.last_index()?);
    let entries = storage.entries(first, last + 1, None, raft::GetEntriesContext::empty(false))?;
    let proposals: Vec<String> = entries
        .iter()
        .filter(|e| !e.data.is_empty())
        .map(|e| String::from_utf8_lossy(&e.data).into_owned())
        .collect();
    let state = storage.initial_state()?;
    println!(
        "after the restart: entries {first}..={last}, commit {}, term {}",
        state.hard_state.commit, state.hard_state.term
    );
    println!("proposals: {proposals:?}");
    assert_eq!(proposals, ["put key0", "put key1", "put key2"]);
    assert_eq!(state.hard_state.commit, last);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
