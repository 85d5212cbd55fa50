//! `AuthStore::is_permitted` for a user holding 1,000 range permissions across 10 roles.

use std::hint::black_box;

use cairn_auth::{Access, AuthInfo, AuthStore, Permission, PermissionType, UserPassword};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

fn store_with_many_grants() -> AuthStore {
    let mut store = AuthStore::new();
    store.user_add("root", UserPassword::NoPassword).unwrap();
    store.user_grant_role("root", "root").unwrap();
    store.user_add("app", UserPassword::NoPassword).unwrap();
    for role in 0..10 {
        let name = format!("role-{role}");
        store.role_add(&name).unwrap();
        for grant in 0..100 {
            // Ranges of every role interleave, so merging has real work to do.
            let n = grant * 10 + role;
            let permission = Permission::prefix(PermissionType::ReadWrite, format!("/app/{n:05}/"));
            store.role_grant_permission(&name, permission).unwrap();
        }
        store.user_grant_role("app", &name).unwrap();
    }
    store.enable().unwrap();
    store
}

fn is_permitted(c: &mut Criterion) {
    let store = store_with_many_grants();
    let app = AuthInfo::new("app", store.revision());
    let mut group = c.benchmark_group("auth");
    group.throughput(Throughput::Elements(1));
    group.bench_function("is_permitted/key-allowed", |b| {
        b.iter(|| {
            store.is_permitted(Some(black_box(&app)), black_box(b"/app/00457/config"), b"", Access::Write)
        })
    });
    group.bench_function("is_permitted/range-allowed", |b| {
        b.iter(|| {
            store.is_permitted(
                Some(black_box(&app)),
                black_box(b"/app/00457/"),
                b"/app/00457/z",
                Access::Read,
            )
        })
    });
    group.bench_function("is_permitted/key-denied", |b| {
        b.iter(|| store.is_permitted(Some(black_box(&app)), black_box(b"/app/99999/x"), b"", Access::Read))
    });
    group.finish();
}

criterion_group!(benches, is_permitted);
criterion_main!(benches);
