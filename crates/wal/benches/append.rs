//! Append + `fdatasync` throughput and latency of the log at 1, 16 and 256 entries
//! per batch (256-byte entries, a hard state with each batch), beside raft-rs's
//! `MemStorage`, which keeps nothing across a crash: the price of durability.

use cairn_wal::Wal;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use raft::eraftpb::{Entry, HardState};
use raft::storage::MemStorage;

fn batch(first: u64, count: u64) -> Vec<Entry> {
    (first..first + count)
        .map(|index| Entry { index, term: 1, data: vec![7; 256].into(), ..Default::default() })
        .collect()
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append_sync");
    for count in [1_u64, 16, 256] {
        group.throughput(Throughput::Elements(count));
        group.bench_with_input(BenchmarkId::new("cairn-wal", count), &count, |b, &count| {
            let dir = tempfile::tempdir().unwrap();
            let (mut wal, _) = Wal::open(dir.path()).unwrap();
            let mut next = 1;
            b.iter(|| {
                let entries = batch(next, count);
                next += count;
                let hard_state = HardState { term: 1, vote: 1, commit: next - 1, ..Default::default() };
                wal.append(&entries, Some(&hard_state), true).unwrap();
            });
        });
        group.bench_with_input(BenchmarkId::new("MemStorage", count), &count, |b, &count| {
            let storage = MemStorage::new();
            let mut next = 1;
            b.iter(|| {
                let entries = batch(next, count);
                next += count;
                let mut core = storage.wl();
                core.append(&entries).unwrap();
                core.mut_hard_state().commit = next - 1;
            });
        });
    }
    group.finish();
}

criterion_group!(benches, append);
criterion_main!(benches);
