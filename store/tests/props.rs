//! Property tests: random record streams round trip through the log whatever the write,
//! sync and rotation pattern; random corruption of any file never makes a reader, recovery,
//! the writer's repair or history panic, and never makes the log yield a record that was not
//! written.

mod common;

use common::{stream, TempDir};
use presenced_store::{
    history, log_dir, read_replay_marks, recover, write_replay_marks, HistoryQuery, LogOptions,
    LogWriter, ReplayMark, SnapshotMeta, SnapshotReader, SnapshotWriter,
};
use proptest::prelude::*;

const T0: u64 = 1_700_000_000_000;

#[derive(Clone, Debug)]
enum Op {
    Append,
    Other(u8, Vec<u8>),
    Write,
    Sync,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => Just(Op::Append),
        1 => (16u8..=255, proptest::collection::vec(any::<u8>(), 0..300)).prop_map(|(k, p)| Op::Other(k, p)),
        2 => Just(Op::Write),
        1 => Just(Op::Sync),
    ]
}

#[derive(Clone, Debug)]
enum Damage {
    Flip {
        file: usize,
        at: usize,
        mask: u8,
    },
    Truncate {
        file: usize,
        at: usize,
    },
    Splat {
        file: usize,
        at: usize,
        bytes: Vec<u8>,
    },
    Remove {
        file: usize,
    },
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), any::<usize>(), 1u8..=255).prop_map(|(file, at, mask)| Damage::Flip {
            file,
            at,
            mask
        }),
        (any::<usize>(), any::<usize>()).prop_map(|(file, at)| Damage::Truncate { file, at }),
        (
            any::<usize>(),
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..64)
        )
            .prop_map(|(file, at, bytes)| Damage::Splat { file, at, bytes }),
        any::<usize>().prop_map(|file| Damage::Remove { file }),
    ]
}

fn files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

fn apply(root: &std::path::Path, d: &Damage) {
    let mut all = Vec::new();
    files(root, &mut all);
    if all.is_empty() {
        return;
    }
    let pick = |i: usize| &all[i % all.len()];
    match d {
        Damage::Flip { file, at, mask } => {
            let p = pick(*file);
            let mut b = std::fs::read(p).unwrap();
            if !b.is_empty() {
                let i = at % b.len();
                b[i] ^= mask;
                std::fs::write(p, b).unwrap();
            }
        }
        Damage::Truncate { file, at } => {
            let p = pick(*file);
            let len = std::fs::metadata(p).unwrap().len() as usize;
            let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
            f.set_len((at % (len + 1)) as u64).unwrap();
        }
        Damage::Splat { file, at, bytes } => {
            let p = pick(*file);
            let mut b = std::fs::read(p).unwrap();
            let i = at % (b.len() + 1);
            for (k, x) in bytes.iter().enumerate() {
                if i + k < b.len() {
                    b[i + k] = *x;
                } else {
                    b.push(*x);
                }
            }
            std::fs::write(p, b).unwrap();
        }
        Damage::Remove { file } => {
            let _ = std::fs::remove_file(pick(*file));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(48),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_streams_round_trip(
        ops in proptest::collection::vec(op(), 1..400),
        segment_bytes in 4096u64..16384,
        seed in any::<u64>(),
    ) {
        let dir = TempDir::new("prop-rt");
        let ts = stream(seed, ops.len(), 9, T0, 17);
        let o = LogOptions { segment_bytes, max_buffer_bytes: 1 << 20 };
        let (mut w, _) = LogWriter::open(dir.path(), 0, 1, o, T0).unwrap();
        let mut want = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            match op {
                Op::Append => { let seq = w.append(&ts[i]).unwrap(); want.push((seq, Some(ts[i]), 1u8, vec![])); }
                Op::Other(k, p) => { let seq = w.append_other(*k, p).unwrap(); want.push((seq, None, *k, p.clone())); }
                Op::Write => w.write().unwrap(),
                Op::Sync => { w.sync().unwrap(); }
            }
        }
        let close = seed % 2 == 0;
        if close { w.close().unwrap(); } else { w.sync().unwrap(); drop(w); }
        let mut c = presenced_store::LogCursor::open(&log_dir(dir.path()), 0).unwrap();
        let mut got = Vec::new();
        while let Some(e) = c.next_entry().unwrap() {
            got.push(match e.record {
                presenced_store::LogRecord::Transition(t) => (e.seq, Some(t), 1u8, vec![]),
                presenced_store::LogRecord::Other { kind, payload } => (e.seq, None, kind, payload.to_vec()),
            });
        }
        prop_assert_eq!(c.skipped().total(), 0);
        prop_assert_eq!(got, want);
    }

    #[test]
    fn random_corruption_never_panics(
        damages in proptest::collection::vec(damage(), 1..6),
        seed in any::<u64>(),
    ) {
        let root = TempDir::new("prop-bad");
        let sd = presenced_store::shard_dir(root.path(), 0);
        let ts = stream(seed, 700, 6, T0, 100);
        let o = LogOptions { segment_bytes: 4096, max_buffer_bytes: 1 << 20 };
        let (mut w, _) = LogWriter::open(&sd, 0, 1, o, T0).unwrap();
        for (i, t) in ts.iter().enumerate() {
            w.append(t).unwrap();
            if i % 10 == 0 { w.write().unwrap(); }
            if i == 300 {
                w.sync().unwrap();
                let mut s = SnapshotWriter::create(&sd, SnapshotMeta {
                    shard: 0, shard_count: 1, record_encoding: 1, began_ms: T0, log_position: w.next_seq(),
                }).unwrap();
                for k in 0..5u8 { s.push(&[k; 40], 4).unwrap(); }
                s.finish().unwrap();
            }
        }
        w.sync().unwrap();
        drop(w);
        write_replay_marks(root.path(), 1, &[ReplayMark { gateway: 1, boot_epoch: 2, highest_seq: 3, used_last_interval: 4 }]).unwrap();
        for d in &damages { apply(root.path(), d); }

        let _ = read_replay_marks(root.path());
        if let Ok(rec) = recover(&sd, 1) {
            if let Ok(Some(mut r)) = rec.snapshot() {
                while let Ok(Some(_)) = r.next_chunk() {}
            }
            if let Ok(mut c) = rec.log() {
                // Whatever is read was written, at its sequence number.
                while let Ok(Some((seq, t))) = c.next_transition() {
                    prop_assert_eq!(Some(&t), ts.get(seq as usize));
                }
            }
        }
        for s in presenced_store::snapshot::list_snapshots(&sd).unwrap_or_default() {
            let _ = SnapshotReader::verify(&s.path, None);
        }
        for user in 0..8 {
            let q = HistoryQuery { user, since_ms: 0, after_version: 0, max_spans: 100 };
            if let Ok(h) = history(&sd, &q) {
                for s in &h.spans {
                    prop_assert!(ts.iter().any(|t| t.user == user && t.version == s.version && t.at_ms == s.start_ms));
                }
            }
        }
        let _ = presenced_store::list_shards(root.path());
        let _ = presenced_store::apply_retention(&sd, T0, &presenced_store::RetentionPolicy { max_age_ms: 1000, max_bytes: 10_000 });
        // The next writer repairs what it can and goes on.
        if let Ok((mut w, _)) = LogWriter::open(&sd, 0, 1, o, T0) {
            let _ = w.append(&ts[0]);
            let _ = w.sync();
            let _ = w.history(&HistoryQuery { user: 1, since_ms: 0, after_version: 0, max_spans: 10 });
        }
    }
}
