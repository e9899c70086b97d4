//! The log writer under a storm: append 1M transitions, `sync` (write + fdatasync) every
//! 100,000 (100 ms worth at 1M transitions a second), with 64 MiB segments (no rotation) and
//! 8 MiB segments (rotation: seal, fdatasync, index file). Throughput in records/s, 36 bytes a
//! record on disk; the worst sync is printed. Files under `STORE_BENCH_DIR` or the temp dir.

mod common;

use std::time::{Duration, Instant};

use common::{storm, Dir, T0};
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use presenced_store::{LogOptions, LogWriter};

fn log_throughput(c: &mut Criterion) {
    const N: u64 = 1_000_000;
    const GROUP: usize = 100_000;
    let ts = storm(N);
    let mut g = c.benchmark_group("log");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(N));
    for seg_mib in [64u64, 8] {
        g.bench_function(
            BenchmarkId::new("append_write_sync", format!("{seg_mib}MiB-segments")),
            |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    let mut worst_sync = Duration::ZERO;
                    for _ in 0..iters {
                        let dir = Dir::new("log");
                        let opts = LogOptions {
                            segment_bytes: seg_mib << 20,
                            max_buffer_bytes: 256 << 20,
                        };
                        let (mut w, _) = LogWriter::open(&dir.0, 0, 1, opts, T0).unwrap();
                        let start = Instant::now();
                        for chunk in ts.chunks(GROUP) {
                            for t in chunk {
                                w.append(t).unwrap();
                            }
                            let s = Instant::now();
                            w.sync().unwrap();
                            worst_sync = worst_sync.max(s.elapsed());
                        }
                        total += start.elapsed();
                        drop(w);
                    }
                    eprintln!(
                        "  [{seg_mib} MiB segments] worst sync (write + fdatasync of {GROUP} records, {:.1} MB): {worst_sync:?}",
                        (GROUP * presenced_store::codec::TRANSITION_FRAME) as f64 / 1e6
                    );
                    total
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, log_throughput);
criterion_main!(benches);
