//! Timing wheel and near ring: scheduling and expiring 1M timers.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use presenced::memory::{advise, Pages};
use presenced_core::near::Near;
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

/// An empty near ring at tick 0 with the daemon's page policy.
fn empty_near() -> Near {
    let near = Near::try_new(N, 0).unwrap();
    advise(near.region(), Pages::Small);
    near
}

/// A near ring at tick 0 holding N entries spread over `spread` ticks from `start`.
fn filled_near(start: u64, spread: u64) -> Near {
    let mut near = empty_near();
    for key in 0..u64::from(N) {
        near.file(key as u32, start + mix(key) % spread).unwrap();
    }
    near
}

/// Polls every entry due up to `target`, in batches as the shard does.
fn drain_near(near: &mut Near, target: u64) -> u64 {
    let mut batch = [0u32; 32];
    let mut sum = 0u64;
    loop {
        let (_, n) = near.poll_batch(target, &mut batch);
        if n == 0 {
            return sum;
        }
        sum = batch[..n]
            .iter()
            .fold(sum, |s, &p| s.wrapping_add(u64::from(p)));
    }
}

/// The near ring (the timers of online users): the same cases as the wheel's. Its poll
/// returns entries only; the shard's probe of the table for each is in the `shard` bench.
fn bench_near(c: &mut Criterion) {
    let mut g = c.benchmark_group("near");
    g.sample_size(10);
    g.throughput(Throughput::Elements(u64::from(N)));
    g.bench_function("file_1m_spread_3000_ticks", |b| {
        b.iter_batched(
            empty_near,
            |mut near| {
                for key in 0..u64::from(N) {
                    near.file(key as u32, 3000 + mix(key) % 3000).unwrap();
                }
                near
            },
            BatchSize::PerIteration,
        )
    });
    g.bench_function("expire_1m_spread_3000_ticks", |b| {
        b.iter_batched(
            || filled_near(3000, 3000),
            |mut near| black_box(drain_near(&mut near, 10_000)),
            BatchSize::PerIteration,
        )
    });
    g.bench_function("expire_1m_same_tick", |b| {
        b.iter_batched(
            || filled_near(3000, 1),
            |mut near| black_box(drain_near(&mut near, 3000)),
            BatchSize::PerIteration,
        )
    });
    g.finish();
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

criterion_group!(benches, bench, bench_near);
criterion_main!(benches);
