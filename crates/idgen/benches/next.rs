//! Throughput of `Generator::next`, alone and contended from two threads.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use cairn_idgen::Generator;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn next(c: &mut Criterion) {
    let mut group = c.benchmark_group("idgen");
    group.throughput(Throughput::Elements(1));

    let ids = Generator::new(1, 0);
    group.bench_function("next/1-thread", |b| b.iter(|| black_box(ids.next())));

    // One thread measured while a second draws from the same generator without pause.
    let shared = Arc::new(Generator::new(1, 0));
    let stop = Arc::new(AtomicBool::new(false));
    let rival = {
        let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                black_box(shared.next());
            }
        })
    };
    group.bench_function("next/2-threads-contended", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(shared.next());
            }
            start.elapsed()
        })
    });
    stop.store(true, Ordering::Relaxed);
    rival.join().expect("rival thread panicked");
    group.finish();
}

criterion_group!(benches, next);
criterion_main!(benches);
