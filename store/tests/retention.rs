//! Retention by age and by size, never what the newest snapshot needs nor the open segment.

mod common;

use common::{stream, TempDir};
use presenced_store::segment::list_segments;
use presenced_store::{
    apply_retention, log_dir, recover, LogOptions, LogWriter, RetentionPolicy, SnapshotMeta,
    SnapshotWriter,
};

const T0: u64 = 1_700_000_000_000;
const DAY: u64 = 86_400_000;

fn snapshot(dir: &std::path::Path, position: u64) {
    let mut w = SnapshotWriter::create(
        dir,
        SnapshotMeta {
            shard: 0,
            shard_count: 1,
            record_encoding: 1,
            began_ms: T0,
            log_position: position,
        },
    )
    .unwrap();
    w.push(b"records", 1).unwrap();
    w.finish().unwrap();
}

/// Ten days of log, 100 transitions a day, small segments.
fn ten_days(dir: &std::path::Path) -> LogWriter {
    let ts = stream(1, 1000, 40, T0, DAY / 100);
    let (mut w, _) = LogWriter::open(
        dir,
        0,
        1,
        LogOptions {
            segment_bytes: 4096,
            max_buffer_bytes: 1 << 20,
        },
        T0,
    )
    .unwrap();
    for t in &ts {
        w.append(t).unwrap();
        w.write().unwrap();
    }
    w.sync().unwrap();
    w
}

fn first_seqs(dir: &std::path::Path) -> Vec<u64> {
    list_segments(&log_dir(dir))
        .unwrap()
        .iter()
        .map(|s| s.first_seq)
        .collect()
}

#[test]
fn by_age_keeps_what_snapshots_need() {
    let dir = TempDir::new("ret-age");
    let w = ten_days(dir.path());
    let before = first_seqs(dir.path());
    assert!(before.len() >= 9, "{before:?}");
    let now = T0 + 10 * DAY;
    let policy = RetentionPolicy {
        max_age_ms: 3 * DAY,
        max_bytes: u64::MAX,
    };
    // No snapshot: the whole log is needed, nothing goes.
    let r = apply_retention(dir.path(), now, &policy).unwrap();
    assert!(r.removed.is_empty());
    // Snapshots at day 2 (older) and day 5 (newer): the age cut is day 7, but the older
    // snapshot's replay needs the log from day 2.
    snapshot(dir.path(), 200);
    snapshot(dir.path(), 500);
    let r = apply_retention(dir.path(), now, &policy).unwrap();
    let after = first_seqs(dir.path());
    assert!(!r.removed.is_empty());
    assert!(after[0] <= 200 && after.len() < before.len(), "{after:?}");
    // A newer pair of snapshots releases the rest of what is old.
    snapshot(dir.path(), 950);
    snapshot(dir.path(), 990);
    apply_retention(dir.path(), now, &policy).unwrap();
    let after = first_seqs(dir.path());
    // Whatever remains holds records younger than 3 days (seq 700 on) or is still needed.
    let kept_first = after[0];
    let next = after.get(1).copied().unwrap_or(u64::MAX);
    assert!(next > 700, "{after:?}");
    assert!(kept_first <= 990);
    // The log still replays from the newest snapshot.
    let rec = recover(dir.path(), 1).unwrap();
    assert_eq!(rec.replay_from, 990);
    let mut c = rec.log().unwrap();
    let mut n = 0;
    while c.next_transition().unwrap().is_some() {
        n += 1;
    }
    assert_eq!(n, 10);
    assert_eq!(c.skipped().total(), 0);
    // Index files went with their segments.
    for e in std::fs::read_dir(log_dir(dir.path())).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "idx") {
            assert!(p.with_extension("seg").exists(), "{p:?}");
        }
    }
    drop(w);
}

#[test]
fn by_size_oldest_first_until_the_snapshot_blocks() {
    let dir = TempDir::new("ret-size");
    let mut w = ten_days(dir.path());
    let now = T0 + 10 * DAY;
    snapshot(dir.path(), 600);
    let total: u64 = std::fs::read_dir(log_dir(dir.path()))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    let policy = RetentionPolicy {
        max_age_ms: 365 * DAY,
        max_bytes: total / 2,
    };
    let r = apply_retention(dir.path(), now, &policy).unwrap();
    assert!(!r.removed.is_empty());
    assert!(r.kept_bytes <= total / 2 || r.needs_snapshot);
    let after = first_seqs(dir.path());
    // Oldest first: what is left is a suffix of the log.
    assert!(after[0] > 0);
    // A cap below what the snapshot needs: as much as allowed goes, then a snapshot is asked.
    let tiny = RetentionPolicy {
        max_age_ms: 365 * DAY,
        max_bytes: 1,
    };
    let r = apply_retention(dir.path(), now, &tiny).unwrap();
    assert!(r.needs_snapshot);
    assert_eq!(r.needed_from, 600);
    let after = first_seqs(dir.path());
    assert!(
        after[0] <= 600 && after.get(1).map_or(true, |&n| n > 600),
        "{after:?}"
    );
    // After a snapshot at the log's end, only the open segment stays.
    w.sync().unwrap();
    snapshot(dir.path(), w.next_seq());
    snapshot(dir.path(), w.next_seq());
    let r = apply_retention(dir.path(), now, &tiny).unwrap();
    assert!(!r.needs_snapshot, "{r:?}");
    assert_eq!(first_seqs(dir.path()).len(), 1);
    // The writer goes on.
    w.append(&stream(9, 1, 2, now, 1)[0]).unwrap();
    w.sync().unwrap();
}
