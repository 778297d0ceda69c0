//! Flag evaluation cost with 1,000 flags loaded: a snapshot lookup plus a canary evaluation
//! (SHA-1 bucketing), as the proxy does once per routed request. Goal: ≤ 1 µs.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use flags::{Context, FlagSet, FlagStore, RouteMode};

fn bench(c: &mut Criterion) {
    let set = FlagSet::new((0..1000).map(|i| {
        let mode = match i % 4 {
            0 => RouteMode::Monolith,
            1 => RouteMode::Service,
            2 => RouteMode::Shadow,
            _ => RouteMode::Canary { percent: 25.0 },
        };
        mode.to_flag(&format!("route.{i}"), 1, &format!("salt-{i}"))
    }))
    .expect("valid flags");
    let store = FlagStore::new(set);
    let users: Vec<Context> = (0..1024)
        .map(|i| Context::new(format!("user-{i}")))
        .collect();
    let mut n = 0usize;
    c.bench_function("evaluate canary flag among 1000", |b| {
        b.iter(|| {
            n = (n + 1) & 1023;
            black_box(store.evaluate_str(black_box("route.999"), &users[n]))
        })
    });
    c.bench_function("evaluate fixed flag among 1000", |b| {
        b.iter(|| {
            n = (n + 1) & 1023;
            black_box(store.evaluate_str(black_box("route.1"), &users[n]))
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
