//! Gate overhead per proposal, with a proposer that applies each proposal at once.

use std::sync::Arc;

use cairn_idgen::Generator;
use cairn_proposal::memory::{MemIndexes, MemLeadership, MemRequest, NoAuth};
use cairn_proposal::{Config, Gate, Parts, Proposer, Result};
use cairn_wait::Wait;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Applies a proposal inside `propose`: reads its ID and triggers the waiter, so what
/// is measured is the gate and nothing behind it.
struct ApplyAtOnce {
    wait: Wait<u64>,
}

impl Proposer for ApplyAtOnce {
    async fn propose(&self, data: Vec<u8>) -> Result<()> {
        let id = u64::from_le_bytes(data[..8].try_into().expect("a MemRequest"));
        self.wait.trigger(id, id);
        Ok(())
    }
}

fn gate(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
    let wait = Wait::new();
    let parts = Parts {
        proposer: ApplyAtOnce { wait: wait.clone() },
        indexes: MemIndexes::new(1, 1),
        leadership: runtime.block_on(async { MemLeadership::single(1, tokio::time::Instant::now()) }),
        auth: NoAuth,
        ids: Arc::new(Generator::new(1, 0)),
        wait,
    };
    let gate = Gate::new(parts, Config::default());
    let payload = vec![b'v'; 256];

    let mut group = c.benchmark_group("proposal");
    group.throughput(Throughput::Elements(1));
    group.bench_function("gate/propose-apply-at-once", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let start = std::time::Instant::now();
                for _ in 0..iters {
                    let applied = gate.propose(MemRequest::new(payload.clone()), &[]).await.unwrap();
                    std::hint::black_box(applied);
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, gate);
criterion_main!(benches);
