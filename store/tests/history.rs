//! History: spans across segments, sealing and the write buffer; paging with after_version;
//! since_ms; the writer's answer equal to the files' answer and to a brute-force model; a
//! wrong index falls back to a scan.

mod common;

use common::{stream, Rng, TempDir};
use presenced_core::event::Transition;
use presenced_store::{
    history, history_in, log_dir, History, HistoryQuery, LogOptions, LogWriter, Span,
};

const T0: u64 = 1_700_000_000_000;

/// The answer computed from every transition, the slow way, as SPEC.md § P6.12 words it:
/// every span (a transition to the next), then those selected, then the first `max_spans`.
fn model(all: &[Transition], q: &HistoryQuery) -> History {
    let mut ts: Vec<Transition> = all.iter().filter(|t| t.user == q.user).copied().collect();
    ts.sort_by_key(|t| t.version);
    let every: Vec<Span> = ts
        .iter()
        .zip(ts.iter().skip(1).map(Some).chain([None]))
        .map(|(t, next)| Span {
            version: t.version,
            start_ms: t.at_ms,
            end_ms: next.map(|n| n.at_ms.max(t.at_ms)),
            state: t.state,
            cause: t.cause,
            devices: t.devices,
        })
        .collect();
    let selected: Vec<Span> = every
        .into_iter()
        .filter(|s| s.version > q.after_version)
        .filter(|s| s.end_ms.map_or(true, |e| e >= q.since_ms))
        .collect();
    let more = selected.len() > q.max_spans;
    let spans: Vec<Span> = selected.into_iter().take(q.max_spans).collect();
    let last_seen_ms = ts.iter().rev().find(|t| t.seen).map(|t| t.at_ms);
    History {
        spans,
        more,
        last_seen_ms,
        segments_scanned: 0,
    }
}

fn same(a: &History, b: &History) -> bool {
    a.spans == b.spans && a.more == b.more && a.last_seen_ms == b.last_seen_ms
}

fn queries(rng: &mut Rng, ts: &[Transition], users: u64) -> Vec<HistoryQuery> {
    let span = ts.last().map_or(0, |t| t.at_ms) - T0;
    (0..40)
        .map(|_| {
            let user = 1 + rng.below(users + 2);
            let mine: Vec<u64> = ts
                .iter()
                .filter(|t| t.user == user)
                .map(|t| t.version)
                .collect();
            HistoryQuery {
                user,
                since_ms: match rng.below(3) {
                    0 => 0,
                    1 => T0 + rng.below(span + 1),
                    // Exactly a transition's time: the boundary.
                    _ => ts[rng.below(ts.len() as u64) as usize].at_ms,
                },
                after_version: if mine.is_empty() || rng.below(2) == 0 {
                    0
                } else {
                    mine[rng.below(mine.len() as u64) as usize]
                },
                max_spans: [0, 1, 3, 10, 1000][rng.below(5) as usize],
            }
        })
        .collect()
}

#[test]
fn answers_match_the_model_throughout_a_log_life() {
    let dir = TempDir::new("hist-model");
    let users = 12;
    let ts = stream(5, 1500, users, T0, 1000);
    let o = LogOptions {
        segment_bytes: 4096,
        max_buffer_bytes: 1 << 20,
    };
    let (mut w, _) = LogWriter::open(dir.path(), 0, 1, o, T0).unwrap();
    let mut rng = Rng(99);
    for (i, t) in ts.iter().enumerate() {
        w.append(t).unwrap();
        if i % 7 == 0 {
            w.write().unwrap();
        }
        if i % 13 == 0 {
            w.sync().unwrap();
        }
        if i % 250 == 249 {
            // Records in the buffer, the open segment, sealed segments.
            let seen = &ts[..=i];
            for q in queries(&mut rng, seen, users) {
                let want = model(seen, &q);
                let mem = w.history(&q).unwrap();
                assert!(same(&mem, &want), "writer, {q:?}:\n{mem:?}\n{want:?}");
                if w.buffered_bytes() == 0 {
                    let files = history(dir.path(), &q).unwrap();
                    assert!(same(&files, &want), "files, {q:?}:\n{files:?}\n{want:?}");
                }
            }
        }
    }
    w.close().unwrap();
    // After a restart: every segment sealed and indexed, nothing scanned.
    for q in queries(&mut rng, &ts, users) {
        let got = history(dir.path(), &q).unwrap();
        assert!(same(&got, &model(&ts, &q)), "{q:?}");
        assert_eq!(got.segments_scanned, 0);
    }
}

#[test]
fn paging_walks_every_span_once() {
    let dir = TempDir::new("hist-page");
    let ts = stream(6, 2000, 3, T0, 500);
    let o = LogOptions {
        segment_bytes: 8192,
        max_buffer_bytes: 1 << 20,
    };
    let (mut w, _) = LogWriter::open(dir.path(), 0, 1, o, T0).unwrap();
    for t in &ts {
        w.append(t).unwrap();
        w.write().unwrap();
    }
    w.sync().unwrap();
    for user in 1..=3 {
        let all = model(
            &ts,
            &HistoryQuery {
                user,
                since_ms: 0,
                after_version: 0,
                max_spans: usize::MAX,
            },
        );
        assert!(all.spans.len() > 500);
        let mut got = Vec::new();
        let mut after = 0;
        loop {
            let page = w
                .history(&HistoryQuery {
                    user,
                    since_ms: 0,
                    after_version: after,
                    max_spans: 64,
                })
                .unwrap();
            got.extend_from_slice(&page.spans);
            if !page.more {
                break;
            }
            after = page.spans.last().unwrap().version;
        }
        assert_eq!(got, all.spans);
        // Only the newest span is ongoing, whatever its state.
        assert!(got[..got.len() - 1].iter().all(|s| s.end_ms.is_some()));
        assert_eq!(got.last().unwrap().end_ms, None);
    }
}

#[test]
fn since_ms_includes_the_span_in_progress() {
    let dir = TempDir::new("hist-since");
    let (mut w, _) = LogWriter::open(dir.path(), 0, 1, LogOptions::default(), T0).unwrap();
    let mut rng = Rng(1);
    let mk = |rng: &mut Rng, at: u64, v: u64| common::transition(rng, 7, at, v);
    let a = mk(&mut rng, T0, 1);
    let b = mk(&mut rng, T0 + 100, 2);
    let c = mk(&mut rng, T0 + 200, 3);
    for t in [a, b, c] {
        w.append(&t).unwrap();
    }
    let q = |since_ms| HistoryQuery {
        user: 7,
        since_ms,
        after_version: 0,
        max_spans: 10,
    };
    // A span ending exactly at since_ms is in; one ending before is out.
    let h = w.history(&q(T0 + 100)).unwrap();
    assert_eq!(h.spans.len(), 3);
    let h = w.history(&q(T0 + 101)).unwrap();
    assert_eq!(h.spans.len(), 2);
    let h = w.history(&q(T0 + 150)).unwrap();
    assert_eq!(h.spans.len(), 2);
    assert_eq!(h.spans[0].start_ms, T0 + 100);
    assert_eq!(h.spans[0].end_ms, Some(T0 + 200));
    assert_eq!(h.spans[1].end_ms, None);
    let h = w.history(&q(T0 + 1_000_000)).unwrap();
    assert_eq!(h.spans.len(), 1);
    assert_eq!(h.spans[0].version, 3);
    // Nothing for a user never seen.
    let h = w.history(&HistoryQuery { user: 8, ..q(0) }).unwrap();
    assert!(h.spans.is_empty() && !h.more && h.last_seen_ms.is_none());
}

#[test]
fn a_wrong_index_falls_back_to_the_segment() {
    let dir = TempDir::new("hist-badidx");
    let ts = stream(7, 600, 5, T0, 100);
    let o = LogOptions {
        segment_bytes: 4096,
        max_buffer_bytes: 1 << 20,
    };
    let (mut w, _) = LogWriter::open(dir.path(), 0, 1, o, T0).unwrap();
    for t in &ts {
        w.append(t).unwrap();
        w.write().unwrap();
    }
    w.close().unwrap();
    // Scramble the offsets table of every index (the header still checks).
    let mut n = 0;
    for e in std::fs::read_dir(log_dir(dir.path())).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "idx") {
            let mut b = std::fs::read(&p).unwrap();
            let len = b.len();
            for x in &mut b[len - 40..len] {
                *x = x.wrapping_add(36);
            }
            std::fs::write(&p, &b).unwrap();
            assert!(presenced_store::index::verify_index(&p).is_err());
            n += 1;
        }
    }
    assert!(n > 3);
    for user in 1..=5 {
        let q = HistoryQuery {
            user,
            since_ms: 0,
            after_version: 0,
            max_spans: 10_000,
        };
        let got = history(dir.path(), &q).unwrap();
        assert!(same(&got, &model(&ts, &q)), "user {user}");
    }
    // A missing index: scanned, and rebuilt by the next writer.
    for e in std::fs::read_dir(log_dir(dir.path())).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "idx") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let q = HistoryQuery {
        user: 1,
        since_ms: 0,
        after_version: 0,
        max_spans: 10_000,
    };
    let got = history(dir.path(), &q).unwrap();
    assert!(same(&got, &model(&ts, &q)));
    assert_eq!(got.segments_scanned as usize, n);
    let (_, report) = LogWriter::open(dir.path(), 0, 1, o, T0).unwrap();
    assert_eq!(report.indexes_rebuilt as usize, n);
    assert_eq!(history(dir.path(), &q).unwrap().segments_scanned, 0);
}

#[test]
fn history_across_shard_directories() {
    let root = TempDir::new("hist-multi");
    let ts = stream(8, 400, 4, T0, 100);
    let dirs: Vec<_> = (0..2)
        .map(|s| presenced_store::shard_dir(root.path(), s))
        .collect();
    // The first half in one shard's log (before a re-shard), the rest in another's.
    for (half, dir) in [&ts[..200], &ts[200..]].iter().zip(&dirs) {
        let (mut w, _) = LogWriter::open(dir, 0, 2, LogOptions::default(), T0).unwrap();
        for t in half.iter() {
            w.append(t).unwrap();
        }
        w.close().unwrap();
    }
    for user in 1..=4 {
        let q = HistoryQuery {
            user,
            since_ms: T0 + 10_000,
            after_version: 0,
            max_spans: 50,
        };
        let got = history_in(&dirs, &q).unwrap();
        assert!(same(&got, &model(&ts, &q)), "user {user}");
    }
}
