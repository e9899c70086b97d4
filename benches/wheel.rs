//! Timing wheel: scheduling and expiring 1M timers.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use presenced::memory::{advise, Pages};
use presenced_core::wheel::Wheel;
use presenced_wire::hash::mix64 as mix;
use std::hint::black_box;

const N: u32 = 1_000_000;

/// An empty wheel at tick 0 with the daemon's page policy.
fn empty() -> Wheel {
    let wheel = Wheel::new(N, 0);
    advise(wheel.region(), Pages::Small);
    wheel
}

/// A wheel at tick 0 holding N timers spread over `spread` ticks from `start`.
fn filled(start: u64, spread: u64) -> Wheel {
    let mut wheel = empty();
    for key in 0..u64::from(N) {
        wheel.insert(key, start + mix(key) % spread).unwrap();
    }
    wheel
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("wheel");
    g.sample_size(10);
    g.throughput(Throughput::Elements(u64::from(N)));
    g.bench_function("insert_1m_spread_3000_ticks", |b| {
        b.iter_batched(
            empty,
            |mut wheel| {
                for key in 0..u64::from(N) {
                    wheel.insert(key, 3000 + mix(key) % 3000).unwrap();
                }
                wheel
            },
            BatchSize::PerIteration,
        )
    });
    // Heartbeat deadlines 30 s out at 10 ms ticks, spread by jitter over 30 s: the cascade from
    // level 2 and level 1 down to level 0 is included.
    g.bench_function("expire_1m_spread_3000_ticks", |b| {
        b.iter_batched(
            || filled(3000, 3000),
            |mut wheel| {
                let mut sum = 0u64;
                while let Some((key, _)) = wheel.poll(10_000) {
                    sum = sum.wrapping_add(key);
                }
                black_box(sum)
            },
            BatchSize::PerIteration,
        )
    });
    // 1M users expiring in the same tick (a gateway outage).
    g.bench_function("expire_1m_same_tick", |b| {
        b.iter_batched(
            || filled(3000, 1),
            |mut wheel| {
                let mut sum = 0u64;
                while let Some((key, _)) = wheel.poll(3000) {
                    sum = sum.wrapping_add(key);
                }
                black_box(sum)
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
