//! History lookups in a 30-day-like log (`STORE_BENCH_HISTORY_RECORDS`, default 50M
//! transitions over 1M users, one demanding user with 20,000 of them, 64 MiB segments, the last
//! one open): a random user's whole history; the demanding user's newest page (since the last
//! hour), first page and all 20,000 spans; from the files (the open segment scanned) and from
//! the writer (its in-memory index). Building the log is timed and printed too. Files under
//! `STORE_BENCH_DIR` or the temp dir.

mod common;

use std::path::Path;
use std::time::Instant;

use common::{mix, transition, Dir, T0};
use criterion::{criterion_group, criterion_main, Criterion};
use presenced_store::{history, HistoryQuery, LogOptions, LogWriter};

/// Builds the history bench's log; returns the writer (its last segment open).
fn build_log(dir: &Path, records: u64) -> (LogWriter, u64) {
    const DAY: u64 = 86_400_000;
    const HEAVY: u64 = 424_242;
    let heavy_every = (records / 20_000).max(1);
    let step = (30 * DAY) as f64 / records as f64;
    let opts = LogOptions {
        segment_bytes: 64 << 20,
        max_buffer_bytes: 256 << 20,
    };
    let (mut w, _) = LogWriter::open(dir, 0, 1, opts, T0).unwrap();
    let start = Instant::now();
    for i in 0..records {
        let at = T0 + (i as f64 * step) as u64;
        let user = if i % heavy_every == 0 {
            HEAVY
        } else {
            1 + mix(i) % 1_000_000
        };
        w.append(&transition(user, i, at)).unwrap();
        if i % 100_000 == 99_999 {
            w.sync().unwrap();
        }
    }
    w.sync().unwrap();
    let secs = start.elapsed().as_secs_f64();
    let bytes: u64 = std::fs::read_dir(presenced_store::log_dir(dir))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    eprintln!(
        "  history log: {records} transitions in {secs:.1} s ({:.2} M records/s), {:.0} MB of segments and indexes",
        records as f64 / secs / 1e6,
        bytes as f64 / 1e6
    );
    (w, HEAVY)
}

fn histories(c: &mut Criterion) {
    let records: u64 = std::env::var("STORE_BENCH_HISTORY_RECORDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50_000_000);
    let dir = Dir::new("history");
    let (mut w, heavy) = build_log(&dir.0, records);
    let end_ms = T0 + 30 * 86_400_000;
    let mut g = c.benchmark_group("history");
    g.sample_size(50);
    let mut i = 0u64;
    let random_user = |i: &mut u64| {
        *i += 1;
        HistoryQuery {
            user: 1 + mix(*i * 7919) % 1_000_000,
            since_ms: 0,
            after_version: 0,
            max_spans: 100,
        }
    };
    g.bench_function("random_user_all/files", |b| {
        b.iter(|| history(&dir.0, &random_user(&mut i)).unwrap())
    });
    g.bench_function("random_user_all/writer", |b| {
        b.iter(|| w.history(&random_user(&mut i)).unwrap())
    });
    let newest = HistoryQuery {
        user: heavy,
        since_ms: end_ms - 3_600_000,
        after_version: 0,
        max_spans: 100,
    };
    let first = HistoryQuery {
        user: heavy,
        since_ms: 0,
        after_version: 0,
        max_spans: 100,
    };
    let h = w.history(&first).unwrap();
    eprintln!(
        "  demanding user: first page {} spans, more {}; newest page {} spans",
        h.spans.len(),
        h.more,
        w.history(&newest).unwrap().spans.len()
    );
    g.bench_function("heavy_user_last_hour/files", |b| {
        b.iter(|| history(&dir.0, &newest).unwrap())
    });
    g.bench_function("heavy_user_last_hour/writer", |b| {
        b.iter(|| w.history(&newest).unwrap())
    });
    g.bench_function("heavy_user_first_page/writer", |b| {
        b.iter(|| w.history(&first).unwrap())
    });
    let all = HistoryQuery {
        max_spans: 100_000,
        ..first
    };
    g.sample_size(10);
    g.bench_function("heavy_user_all_20k/writer", |b| {
        b.iter(|| w.history(&all).unwrap())
    });
    g.finish();
    drop(w);
}

criterion_group!(benches, histories);
criterion_main!(benches);
