//! Snapshots of 1M and 10M records of 50 bytes in chunks of 4096 records (what
//! `Shard::snapshot_step` hands over): write = create, push, finish (fdatasync, rename,
//! directory fsync); read = a validating pass over every block. The file size is printed.
//! Files under `STORE_BENCH_DIR` or the temp dir.

mod common;

use std::time::Duration;

use common::{mix, Dir, T0};
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use presenced_store::{SnapshotMeta, SnapshotReader, SnapshotWriter};

fn snapshot_chunks(n: u64) -> Vec<(Vec<u8>, u64)> {
    const PER_CHUNK: u64 = 4096;
    (0..n.div_ceil(PER_CHUNK))
        .map(|c| {
            let k = PER_CHUNK.min(n - c * PER_CHUNK);
            let mut v = Vec::with_capacity((k * 50) as usize);
            for r in 0..k {
                let x = mix(c * PER_CHUNK + r);
                for j in 0..6 {
                    v.extend_from_slice(&x.rotate_left(j * 7).to_le_bytes());
                }
                v.extend_from_slice(&[1, 2]);
            }
            (v, k)
        })
        .collect()
}

fn snapshots(c: &mut Criterion) {
    let mut g = c.benchmark_group("snapshot");
    g.sampling_mode(SamplingMode::Flat);
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(30));
    for n in [1_000_000u64, 10_000_000] {
        let chunks = snapshot_chunks(n);
        let meta = SnapshotMeta {
            shard: 0,
            shard_count: 1,
            record_encoding: 1,
            began_ms: T0,
            log_position: 0,
        };
        let dir = Dir::new("snap");
        g.throughput(Throughput::Elements(n));
        g.bench_function(BenchmarkId::new("write", n), |b| {
            b.iter(|| {
                let mut w = SnapshotWriter::create(&dir.0, meta).unwrap();
                for (bytes, k) in &chunks {
                    w.push(bytes, *k).unwrap();
                }
                w.finish().unwrap()
            })
        });
        // The file the read bench reads (whether or not the write bench ran).
        let mut w = SnapshotWriter::create(&dir.0, meta).unwrap();
        for (bytes, k) in &chunks {
            w.push(bytes, *k).unwrap();
        }
        let path = w.finish().unwrap().path;
        eprintln!(
            "  snapshot of {n} records of 50 bytes: {} bytes on disk",
            std::fs::metadata(&path).unwrap().len()
        );
        g.bench_function(BenchmarkId::new("read", n), |b| {
            b.iter(|| {
                let mut r = SnapshotReader::open(&path, Some(1)).unwrap();
                let mut records = 0u64;
                while let Some(c) = r.next_chunk().unwrap() {
                    records += c.records as u64;
                }
                assert_eq!(records, n);
            })
        });
    }
    g.finish();
}

criterion_group!(benches, snapshots);
criterion_main!(benches);
