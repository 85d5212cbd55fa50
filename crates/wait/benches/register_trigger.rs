//! Register + trigger + await pairs per second, on one thread and from two.

use std::future::Future;
use std::hint::black_box;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use cairn_wait::Wait;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// One full pair, awaited by polling once: the trigger came first, so the poll is ready.
fn pair(wait: &Wait<u64>, id: u64) {
    let mut waiter = wait.register(id).expect("ids are unique");
    wait.trigger(id, id);
    let mut cx = Context::from_waker(Waker::noop());
    match Future::poll(Pin::new(&mut waiter), &mut cx) {
        Poll::Ready(value) => {
            black_box(value.expect("registry alive"));
        }
        Poll::Pending => panic!("a triggered waiter is ready"),
    }
}

fn register_trigger(c: &mut Criterion) {
    let mut group = c.benchmark_group("wait");
    group.throughput(Throughput::Elements(1));

    let wait = Wait::new();
    let mut next = 0u64;
    group.bench_function("pair/1-thread", |b| {
        b.iter(|| {
            next += 1;
            pair(&wait, next);
        })
    });

    // Two threads, each doing its share of the pairs on one shared registry.
    let wait = Wait::new();
    let ids = Arc::new(AtomicU64::new(0));
    group.bench_function("pair/2-threads", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|scope| {
                for _ in 0..2 {
                    let (wait, ids) = (&wait, &ids);
                    scope.spawn(move || {
                        for _ in 0..iters / 2 {
                            pair(wait, ids.fetch_add(1, Ordering::Relaxed));
                        }
                    });
                }
            });
            start.elapsed()
        })
    });
    group.finish();
}

criterion_group!(benches, register_trigger);
criterion_main!(benches);
