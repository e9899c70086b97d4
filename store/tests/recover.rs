//! Recovery: snapshot plus log, no snapshot, an invalid newest snapshot, foreign versions,
//! several shard counts in one state directory.

mod common;

use common::{stream, TempDir};
use presenced_store::{
    list_shards, recover, remove_shard_dir, shard_dir, ErrorKind, LogOptions, LogWriter,
    SkipReason, SnapshotMeta, SnapshotWriter,
};

const T0: u64 = 1_700_000_000_000;
const ENC: u16 = 1;

fn opts() -> LogOptions {
    LogOptions {
        segment_bytes: 4096,
        max_buffer_bytes: 1 << 20,
    }
}

fn snapshot(dir: &std::path::Path, shard: u32, count: u32, position: u64, tag: u8) {
    let mut w = SnapshotWriter::create(
        dir,
        SnapshotMeta {
            shard,
            shard_count: count,
            record_encoding: ENC,
            began_ms: T0,
            log_position: position,
        },
    )
    .unwrap();
    w.push(&[tag; 10], 2).unwrap();
    w.finish().unwrap();
}

/// Replays a recovery: the snapshot's chunks and the transitions after its position.
fn replay(rec: &presenced_store::Recovery) -> (Vec<Vec<u8>>, Vec<u64>, presenced_store::Skipped) {
    let mut chunks = Vec::new();
    if let Some(mut r) = rec.snapshot().unwrap() {
        while let Some(c) = r.next_chunk().unwrap() {
            chunks.push(c.bytes.to_vec());
        }
    }
    let mut cursor = rec.log().unwrap();
    let mut seqs = Vec::new();
    for x in &mut cursor {
        seqs.push(x.unwrap().0);
    }
    (chunks, seqs, cursor.skipped().clone())
}

#[test]
fn snapshot_then_log_and_falling_back() {
    let root = TempDir::new("rec-basic");
    let sd = shard_dir(root.path(), 0);
    let ts = stream(1, 1000, 30, T0, 3);
    let (mut w, _) = LogWriter::open(&sd, 0, 1, opts(), T0).unwrap();
    for (i, t) in ts.iter().enumerate() {
        w.append(t).unwrap();
        if i == 300 {
            w.sync().unwrap();
            snapshot(&sd, 0, 1, w.next_seq(), 1);
            w.snapshot_written(w.next_seq());
        }
        if i == 700 {
            w.sync().unwrap();
            snapshot(&sd, 0, 1, w.next_seq(), 2);
        }
        if i % 50 == 0 {
            w.write().unwrap();
        }
    }
    w.sync().unwrap();
    drop(w); // a crash: the open segment stays unsealed

    let rec = recover(&sd, ENC).unwrap();
    assert_eq!(rec.replay_from, 701);
    let (chunks, seqs, skipped) = replay(&rec);
    assert_eq!(chunks, vec![vec![2u8; 10]]);
    assert_eq!(seqs, (701..1000).collect::<Vec<_>>());
    assert_eq!(skipped.total(), 0, "{skipped:?}");

    // The newest snapshot corrupt: the one before, and the log from its position.
    let newest = rec.snapshot.as_ref().unwrap().path.clone();
    let mut bytes = std::fs::read(&newest).unwrap();
    let n = bytes.len();
    bytes[n - 40] ^= 1;
    std::fs::write(&newest, &bytes).unwrap();
    let rec = recover(&sd, ENC).unwrap();
    assert_eq!(rec.replay_from, 301);
    assert_eq!(rec.skipped.count(SkipReason::SnapshotInvalid), 1);
    assert_eq!(rec.skipped.notes()[0].path, newest);
    let (chunks, seqs, _) = replay(&rec);
    assert_eq!(chunks, vec![vec![1u8; 10]]);
    assert_eq!(seqs, (301..1000).collect::<Vec<_>>());

    // A snapshot of a foreign encoding is refused, not skipped.
    let err = recover(&sd, ENC + 1).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ForeignEncoding);
}

#[test]
fn without_a_snapshot_the_whole_log() {
    let root = TempDir::new("rec-nosnap");
    let sd = shard_dir(root.path(), 3);
    let ts = stream(2, 500, 30, T0, 3);
    let (mut w, _) = LogWriter::open(&sd, 3, 4, opts(), T0).unwrap();
    for t in &ts {
        w.append(t).unwrap();
    }
    w.sync().unwrap();
    drop(w);
    let rec = recover(&sd, ENC).unwrap();
    assert!(rec.snapshot.is_none());
    assert_eq!(rec.replay_from, 0);
    let mut cursor = rec.log().unwrap();
    let mut got = Vec::new();
    while let Some((_, t)) = cursor.next_transition().unwrap() {
        got.push(t);
    }
    assert_eq!(got, ts);
    assert_eq!(cursor.next_seq(), 500);
    // An empty directory recovers to nothing.
    let empty = shard_dir(root.path(), 9);
    let rec = recover(&empty, ENC).unwrap();
    assert!(rec.snapshot.is_none());
    let (chunks, seqs, skipped) = replay(&rec);
    assert!(chunks.is_empty() && seqs.is_empty() && skipped.total() == 0);
}

#[test]
fn a_log_trimmed_past_the_snapshot_reports_a_gap() {
    let root = TempDir::new("rec-gap");
    let sd = shard_dir(root.path(), 0);
    let ts = stream(3, 600, 30, T0, 3);
    let (mut w, _) = LogWriter::open(&sd, 0, 1, opts(), T0).unwrap();
    for t in &ts {
        w.append(t).unwrap();
        w.write().unwrap();
    }
    w.close().unwrap();
    snapshot(&sd, 0, 1, 10, 1);
    let segs = presenced_store::segment::list_segments(&presenced_store::log_dir(&sd)).unwrap();
    std::fs::remove_file(&segs[0].path).unwrap();
    let rec = recover(&sd, ENC).unwrap();
    let (_, seqs, skipped) = replay(&rec);
    assert_eq!(skipped.count(SkipReason::LogGap), 1, "{skipped:?}");
    assert_eq!(seqs.first().copied(), Some(segs[1].first_seq));
    assert!(
        skipped.notes()[0].detail.contains("10 to"),
        "{:?}",
        skipped.notes()
    );
}

#[test]
fn several_shard_counts_in_one_state_directory() {
    let root = TempDir::new("rec-reshard");
    // Four shards' worth of state, then the daemon restarts with two.
    let mut all = Vec::new();
    for shard in 0..4u32 {
        let sd = shard_dir(root.path(), shard);
        let ts = stream(10 + shard as u64, 100, 20, T0, 3);
        let (mut w, _) = LogWriter::open(&sd, shard, 4, opts(), T0).unwrap();
        for t in &ts[..50] {
            w.append(t).unwrap();
        }
        w.sync().unwrap();
        snapshot(&sd, shard, 4, w.next_seq(), shard as u8);
        for t in &ts[50..] {
            w.append(t).unwrap();
        }
        w.sync().unwrap();
        all.push(ts);
    }
    let shards = list_shards(root.path()).unwrap();
    assert_eq!(shards.len(), 4);
    for (i, s) in shards.iter().enumerate() {
        assert_eq!(s.shard, i as u32);
        assert_eq!(s.shard_counts, vec![4]);
        assert_eq!(s.snapshot.unwrap().shard_count, 4);
    }
    // The lead's migration: read every old shard, route, write the new state.
    let mut snapshots = 0;
    let mut transitions = 0;
    for s in &shards {
        let rec = recover(&s.path, ENC).unwrap();
        let (chunks, seqs, skipped) = replay(&rec);
        assert_eq!(skipped.total(), 0);
        snapshots += chunks.len();
        transitions += seqs.len();
    }
    assert_eq!((snapshots, transitions), (4, 200));
    for shard in 0..2u32 {
        let sd = shard_dir(root.path(), shard);
        let (mut w, report) = LogWriter::open(&sd, shard, 2, opts(), T0).unwrap();
        assert_eq!(report.next_seq, 100);
        snapshot(&sd, shard, 2, w.next_seq(), 9);
        w.append(&all[0][0]).unwrap();
        w.sync().unwrap();
    }
    for shard in 2..4 {
        remove_shard_dir(root.path(), shard).unwrap();
    }
    let shards = list_shards(root.path()).unwrap();
    assert_eq!(shards.len(), 2);
    for s in &shards {
        // Old segments stay (history); the newest snapshot says two shards.
        assert_eq!(s.shard_counts, vec![2, 4]);
        assert_eq!(s.snapshot.unwrap().shard_count, 2);
        let rec = recover(&s.path, ENC).unwrap();
        assert_eq!(rec.snapshot.as_ref().unwrap().meta.shard_count, 2);
        let mut cursor = rec.log().unwrap();
        let mut n = 0;
        while cursor.next_transition().unwrap().is_some() {
            assert_eq!(cursor.segment().unwrap().shard_count, 2);
            n += 1;
        }
        assert_eq!(n, 1);
    }
}
