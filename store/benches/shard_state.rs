//! A shard's durable state through the daemon's own code path, at 1M and 10M single-device
//! users online (every user one device, active; one shard, as `presenced --shards 1` has it):
//!
//! - `pass`: the shard side of a snapshot alone. `Inbox::Snapshot` into a `ShardNode` that
//!   keeps state, then `handle_timeout` rounds (each cuts `state.snapshot_slots_per_round`,
//!   4Ki table slots, the default) until `SnapshotEnd`; the chunks are dropped. This is the
//!   time the shard thread spends on a pass, spread over its rounds.
//! - `write`: the same pass with every chunk handed to a `SnapshotWriter` in a shard directory
//!   with an open `LogWriter`, and the end handled as the store thread does (log sync, then
//!   `finish`: fdatasync, rename, directory fsync). Shard thread and store thread in one here.
//! - `restore`: what the daemon does at start for one shard directory (`src/state.rs`):
//!   `store::recover` (which validates the newest snapshot, a full read), the snapshot's chunks
//!   read back, every record decoded and `ShardNode::restore_user` into a fresh node, then the
//!   log after the snapshot (empty here). The fresh node is made outside the timed part, as
//!   the daemon makes its nodes before the restore, and has a table seed of its own, as each
//!   start of the daemon draws one (with the writer's seed the records would arrive in slot
//!   order, and restore twice as fast as they do); the file is in the page cache (it was just
//!   written, as after a restart on the same host). Unlike the daemon, no huge pages are
//!   advised for the node's arrays.
//!
//! Printed on stderr: the file size, the records, the time per round of the pass and the
//! parts of a restore. Files under `STORE_BENCH_DIR` or the temp dir (10M users: 540 MB).
//! One sample is seconds long at 10M: `cargo bench -p presenced-store --bench shard_state`
//! takes about 5 minutes and 2.5 GB of memory. `SHARD_STATE_USERS=1M` (or `10M`) runs one
//! size only (the other is not even filled).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{Dir, T0};
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use presenced_core::clock::Now;
use presenced_core::config::{CoreConfig, MAX_HORIZON_TICKS};
use presenced_core::event::{Heartbeat, Report};
use presenced_core::saved::{SavedUser, RECORD_ENCODING};
use presenced_node::auth::Verifier;
use presenced_node::bus::{EntryBatch, Inbox, ToStore};
use presenced_node::node::{NodeConfig, ShardNode, StoreLimits, Transmit};
use presenced_store::{LogOptions, LogWriter, SnapshotMeta, SnapshotWriter};

/// The daemon's default `state.snapshot_slots_per_round`.
const SLOTS_PER_ROUND: usize = 4 << 10;
/// The daemon's monotonic origin (`daemon::start`): past the longest timer horizon.
const MONO0: u64 = MAX_HORIZON_TICKS * 10_000;

fn at(ms: u64) -> Now {
    Now {
        mono_us: MONO0 + ms * 1000,
        wall_ms: T0 + ms,
    }
}

/// A one-shard node as `presenced --shards 1 --set presence.users_per_shard=N` builds it,
/// with state kept (default `state.queue` and `state.snapshot_slots_per_round`). Each start
/// of the daemon draws a new table seed; so does each node here, so that a restore inserts
/// the saved users in an order unrelated to their new slots, as the daemon's restore does.
fn node(users: u64, now: Now) -> ShardNode {
    static NODES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NODES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let capacity = users as u32;
    let config = NodeConfig {
        index: 0,
        shards: 1,
        hubs: 1,
        core: CoreConfig {
            user_capacity: capacity,
            // `presence.multi_device_users` auto: a quarter of the users.
            multi_device_users: capacity / 4,
            hash_seed: common::mix(0x5eed ^ n),
            ..CoreConfig::default()
        },
        cross_shard_batch: 64,
        link_outbox: 1 << 20,
        store: Some(StoreLimits {
            queue_transitions: 1 << 20,
            snapshot_slots_per_round: SLOTS_PER_ROUND,
        }),
        warming_until_us: None,
        sources: presenced_node::auth::sources::SourceLimits::default(),
        backoff: presenced_node::backoff::BackoffConfig::disabled(),
    };
    ShardNode::new(config, Verifier::new(None, 30_000), now).unwrap()
}

/// Drops whatever the node has for the hub and the store (transitions of the fill).
fn discard(node: &mut ShardNode) {
    while node.poll_transmit().is_some() {}
}

/// A node with `users` single-device users online (ids 1..=users, first heartbeats over 1 s).
fn filled(users: u64) -> ShardNode {
    let mut n = node(users, at(0));
    let mut batch = EntryBatch::new();
    let mut user = 1;
    while user <= users {
        batch.clear();
        while !batch.is_full() && user <= users {
            batch.push(Heartbeat {
                user,
                device: 1,
                report: Report::Online,
                active: true,
            });
            user += 1;
        }
        let now = at(user * 1000 / users);
        n.handle_inbox(now, Inbox::Entries(batch));
        n.handle_timeout(now);
        discard(&mut n);
    }
    assert_eq!(n.stats().core.users, users);
    n
}

/// One snapshot pass through the node: each chunk goes to `chunk`; returns the rounds.
fn pass(n: &mut ShardNode, now: Now, mut message: impl FnMut(ToStore)) -> u64 {
    n.handle_inbox(now, Inbox::Snapshot);
    let mut rounds = 0;
    loop {
        n.handle_timeout(now);
        rounds += 1;
        let mut ended = false;
        while let Some(t) = n.poll_transmit() {
            if let Transmit::Store(m) = t {
                ended |= matches!(m, ToStore::SnapshotEnd { .. });
                message(m);
            }
        }
        if ended {
            return rounds;
        }
    }
}

/// A pass written as the store thread writes it (`src/store_thread.rs`): returns the file.
fn write_snapshot(n: &mut ShardNode, now: Now, shard_dir: &Path, log: &mut LogWriter) -> PathBuf {
    let mut writer = None;
    let mut path = None;
    pass(n, now, |m| match m {
        ToStore::SnapshotBegin { wall_ms } => {
            let meta = SnapshotMeta {
                shard: 0,
                shard_count: 1,
                record_encoding: RECORD_ENCODING,
                began_ms: wall_ms,
                log_position: log.next_seq(),
            };
            writer = Some(SnapshotWriter::create(shard_dir, meta).unwrap());
        }
        ToStore::SnapshotChunk { bytes, records } => {
            writer
                .as_mut()
                .unwrap()
                .push(&bytes, u64::from(records))
                .unwrap();
        }
        ToStore::SnapshotEnd { .. } => {
            log.sync().unwrap();
            let info = writer.take().unwrap().finish().unwrap();
            log.snapshot_written(info.meta.log_position);
            path = Some(info.path);
        }
        ToStore::Transitions(_) | ToStore::Gap(_) => {}
    });
    path.unwrap()
}

/// Time spent in each part of a restore.
#[derive(Default)]
struct Parts {
    recover: Duration,
    read_decode_import: Duration,
    log: Duration,
}

/// `src/state.rs`'s `restore_dir` for one shard directory, into `n`; returns the users.
fn restore(shard_dir: &Path, n: &mut ShardNode, now: Now, parts: &mut Parts) -> u64 {
    let t = Instant::now();
    let recovery = presenced_store::recover(shard_dir, RECORD_ENCODING).unwrap();
    parts.recover += t.elapsed();
    let t = Instant::now();
    let mut users = 0;
    let mut reader = recovery.snapshot().unwrap().expect("a snapshot");
    if let Some(claimed) = reader.records_claimed() {
        n.reserve_users(claimed as usize);
    }
    while let Some(chunk) = reader.next_chunk().unwrap() {
        let mut bytes = chunk.bytes;
        while !bytes.is_empty() {
            let (user, used) = SavedUser::decode(bytes).unwrap();
            bytes = &bytes[used..];
            if n.restore_user(now, &user) {
                users += 1;
            }
        }
    }
    parts.read_decode_import += t.elapsed();
    let t = Instant::now();
    let mut log = recovery.log().unwrap();
    while let Some((_, tr)) = log.next_transition().unwrap() {
        n.restore_logged(now, &tr);
    }
    parts.log += t.elapsed();
    users
}

fn shard_state(c: &mut Criterion) {
    let mut g = c.benchmark_group("shard_state");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(1));
    g.measurement_time(Duration::from_secs(5));
    let only = std::env::var("SHARD_STATE_USERS").ok();
    for users in [1_000_000u64, 10_000_000] {
        let label = format!("{}M", users / 1_000_000);
        if only.as_ref().is_some_and(|o| *o != label) {
            continue;
        }
        let label = format!("{}M_users", users / 1_000_000);
        let started = Instant::now();
        let mut source = filled(users);
        eprintln!(
            "  [{label}] filled in {:.2?} ({} users)",
            started.elapsed(),
            source.stats().core.users
        );
        let now = at(2_000);
        g.throughput(Throughput::Elements(users));

        g.bench_function(BenchmarkId::new("pass", &label), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut records = 0u64;
                    let t = Instant::now();
                    let rounds = pass(&mut source, now, |m| {
                        if let ToStore::SnapshotChunk { records: r, .. } = m {
                            records += u64::from(r);
                        }
                    });
                    let took = t.elapsed();
                    total += took;
                    assert_eq!(records, users);
                    eprintln!(
                        "  [{label}] pass: {took:.2?}, {rounds} rounds of {SLOTS_PER_ROUND} \
                         slots, {:.0} µs a round",
                        took.as_secs_f64() * 1e6 / rounds as f64
                    );
                }
                total
            })
        });

        let dir = Dir::new(&format!("shard-state-{label}"));
        let shard_dir = presenced_store::shard_dir(&dir.0, 0);
        let options = LogOptions {
            segment_bytes: 64 << 20,
            max_buffer_bytes: 256 << 20,
        };
        let (mut log, _) = LogWriter::open(&shard_dir, 0, 1, options, T0).unwrap();
        g.bench_function(BenchmarkId::new("write", &label), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let path = write_snapshot(&mut source, now, &shard_dir, &mut log);
                    let took = t.elapsed();
                    total += took;
                    eprintln!(
                        "  [{label}] write: {took:.2?}, {} bytes on disk ({:.1} bytes a user)",
                        std::fs::metadata(&path).unwrap().len(),
                        std::fs::metadata(&path).unwrap().len() as f64 / users as f64
                    );
                }
                total
            })
        });
        // The file the restore reads, whether or not the write bench ran.
        let path = write_snapshot(&mut source, now, &shard_dir, &mut log);
        let file_bytes = std::fs::metadata(&path).unwrap().len();
        eprintln!(
            "  [{label}] snapshot file: {file_bytes} bytes ({:.1} bytes a user)",
            file_bytes as f64 / users as f64
        );
        drop(source);

        // A restart 10 s later.
        let later = at(12_000);
        g.bench_function(BenchmarkId::new("restore", &label), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut fresh = node(users, later);
                    let mut parts = Parts::default();
                    let t = Instant::now();
                    let restored = restore(&shard_dir, &mut fresh, later, &mut parts);
                    let took = t.elapsed();
                    total += took;
                    assert_eq!(restored, users);
                    assert_eq!(fresh.stats().core.users, users);
                    eprintln!(
                        "  [{label}] restore: {took:.2?} = recover (validating read) {:.2?} + \
                         read, decode, import {:.2?} + log {:.2?}",
                        parts.recover, parts.read_decode_import, parts.log
                    );
                    drop(fresh);
                }
                total
            })
        });
        drop(log);
    }
    g.finish();
}

criterion_group!(benches, shard_state);
criterion_main!(benches);
