//! The shard core: heartbeats of known devices, and expiry of 1M users.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use presenced::memory::{advise, Pages};
use presenced_core::clock::Now;
use presenced_core::config::CoreConfig;
use presenced_core::event::{Heartbeat, Report, Transition};
use presenced_core::shard::Shard;
use presenced_wire::hash::mix64 as mix;
use std::hint::black_box;

const USERS: u32 = 1_000_000;
const BATCH: u64 = 1_000_000;
const WALL0: u64 = 1_700_000_000_000;

fn now(mono_us: u64) -> Now {
    Now {
        mono_us,
        wall_ms: WALL0 + mono_us / 1000,
    }
}

fn user(i: u64) -> u64 {
    mix(i) | 1
}

/// A shard with USERS single-device users online; time at 1 s.
fn online() -> Shard {
    let config = CoreConfig {
        user_capacity: USERS,
        multi_device_users: USERS / 4,
        ..CoreConfig::default()
    };
    let mut shard = Shard::new(config, now(0)).unwrap();
    // The daemon's page policy for a dense shard: the table on huge pages, the rest small.
    let [table, near, wheel, blocks] = shard.regions();
    advise(table, Pages::Huge);
    for region in [near, wheel, blocks] {
        advise(region, Pages::Small);
    }
    let mut out = Vec::with_capacity(USERS as usize);
    for i in 0..u64::from(USERS) {
        let hb = Heartbeat {
            user: user(i),
            device: 1,
            report: Report::Online,
            active: true,
        };
        shard.heartbeat(now(i), &hb, &mut out);
    }
    assert_eq!(out.len(), USERS as usize);
    shard
}

/// This process's resident memory (VmRSS), bytes.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS");
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("VmRSS in kB");
    kb * 1024
}

fn bench(c: &mut Criterion) {
    let before = resident_bytes();
    let mut shard = online();
    let grown = resident_bytes().saturating_sub(before);
    eprintln!(
        "shard: {} users, {} bytes allocated = {:.1} bytes/user, resident growth {} bytes = \
         {:.1} bytes/user; probe {:?}",
        USERS,
        shard.memory_bytes(),
        shard.memory_bytes() as f64 / f64::from(USERS),
        grown,
        grown as f64 / f64::from(USERS),
        shard.table().probe_stats()
    );
    let mut g = c.benchmark_group("shard");
    g.sample_size(10);
    g.throughput(Throughput::Elements(BATCH));
    // Heartbeats of known devices in random user order, time moving 1 µs a heartbeat: the
    // steady state of a loaded daemon (no transition, no wheel operation).
    let mut out: Vec<Transition> = Vec::with_capacity(1024);
    let mut clock = 2_000_000u64;
    let mut i = 0u64;
    g.bench_function("heartbeat_known_device_1m_users", |b| {
        b.iter(|| {
            for _ in 0..BATCH {
                let hb = Heartbeat {
                    user: user(mix(i) % u64::from(USERS)),
                    device: 1,
                    report: Report::Online,
                    active: i % 4 == 0,
                };
                shard.heartbeat(now(clock), &hb, &mut out);
                i += 1;
                clock += 1;
            }
            out.clear();
        })
    });
    // The same, a datagram's worth (89 entries) at a time through `heartbeats`, which touches
    // the batch's table slots first so their cache misses overlap.
    let mut batch = Vec::with_capacity(89);
    g.bench_function("heartbeat_batch_89_1m_users", |b| {
        b.iter(|| {
            for _ in 0..BATCH / 89 {
                batch.clear();
                for _ in 0..89 {
                    batch.push(Heartbeat {
                        user: user(mix(i) % u64::from(USERS)),
                        device: 1,
                        report: Report::Online,
                        active: i % 4 == 0,
                    });
                    i += 1;
                }
                shard.heartbeats(now(clock), &batch, &mut out);
                clock += 89;
            }
            out.clear();
        })
    });
    assert_eq!(shard.stats().transitions, u64::from(USERS));
    // Every user goes silent; advance past the timeout: 1M Timeout transitions.
    g.throughput(Throughput::Elements(u64::from(USERS)));
    g.bench_function("expire_1m_users", |b| {
        b.iter_batched(
            || (online(), Vec::with_capacity(USERS as usize)),
            |(mut shard, mut out)| {
                shard.advance(now(60_000_000), &mut out);
                assert_eq!(out.len(), USERS as usize);
                black_box((shard, out))
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
