//! The transition log: round trips, rotation and sealing, torn tails at every byte, bit flips
//! anywhere, repair by the next writer, full buffers, records of other kinds.

mod common;

use std::fs::OpenOptions;

use common::{read_log, stream, TempDir};
use presenced_store::codec::{SEAL_FRAME, TRANSITION_FRAME};
use presenced_store::segment::{list_segments, SEGMENT_HEADER};
use presenced_store::{
    log_dir, ErrorKind, LogOptions, LogRecord, LogWriter, SegmentEnd, SegmentReader, SkipReason,
};

const T0: u64 = 1_700_000_000_000;

fn opts(segment_bytes: u64) -> LogOptions {
    LogOptions {
        segment_bytes,
        max_buffer_bytes: 1 << 20,
    }
}

#[test]
fn round_trip_across_segments_and_reopen() {
    let dir = TempDir::new("log-rt");
    let ts = stream(1, 3000, 50, T0, 10);
    let (mut w, report) = LogWriter::open(dir.path(), 0, 1, opts(8192), T0).unwrap();
    assert_eq!(report.next_seq, 0);
    for (i, t) in ts[..2000].iter().enumerate() {
        assert_eq!(w.append(t).unwrap(), i as u64);
        if i % 97 == 0 {
            w.write().unwrap();
        }
        if i % 301 == 0 {
            w.sync().unwrap();
        }
    }
    assert_eq!(w.close().unwrap(), 2000);
    let segs = list_segments(&log_dir(dir.path())).unwrap();
    assert!(segs.len() > 5, "{} segments", segs.len());
    // Every segment is sealed, indexed and within its size (plus one write's worth).
    for s in &segs {
        let mut r = SegmentReader::open(&s.path).unwrap();
        assert_eq!(r.header().first_seq, s.first_seq);
        r.skip_to_end().unwrap();
        assert!(
            matches!(r.end(), Some(SegmentEnd::Sealed(_))),
            "{:?}",
            r.end()
        );
        assert!(s.path.with_extension("idx").exists());
    }
    // A second writer goes on numbering in a new segment.
    let (mut w, report) = LogWriter::open(dir.path(), 0, 1, opts(8192), T0).unwrap();
    assert_eq!(report.next_seq, 2000);
    assert!(report.repaired.is_empty());
    for t in &ts[2000..] {
        w.append(t).unwrap();
    }
    w.sync().unwrap();
    assert_eq!(w.durable_seq(), 3000);
    drop(w);
    let (got, skipped) = read_log(dir.path(), 0);
    assert_eq!(skipped.total(), 0, "{:?}", skipped);
    assert_eq!(got.len(), 3000);
    for (i, (seq, t)) in got.iter().enumerate() {
        assert_eq!(*seq, i as u64);
        assert_eq!(*t, ts[i]);
    }
    // From a position in the middle.
    let (got, _) = read_log(dir.path(), 1234);
    assert_eq!(got.first().map(|x| x.0), Some(1234));
    assert_eq!(got.len(), 3000 - 1234);
}

#[test]
fn other_kinds_round_trip_and_store_kinds_refused() {
    let dir = TempDir::new("log-other");
    let ts = stream(2, 10, 5, T0, 1);
    let (mut w, _) = LogWriter::open(dir.path(), 1, 2, opts(4096), T0).unwrap();
    w.append(&ts[0]).unwrap();
    assert_eq!(w.append_other(16, b"hello").unwrap(), 1);
    assert_eq!(w.append_other(255, &[]).unwrap(), 2);
    assert_eq!(
        w.append_other(2, b"x").unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        w.append_other(20, &vec![0; 65535]).unwrap_err().kind(),
        ErrorKind::TooLarge
    );
    w.append(&ts[1]).unwrap();
    w.sync().unwrap();
    let segs = list_segments(&log_dir(dir.path())).unwrap();
    let mut r = SegmentReader::open(&segs[0].path).unwrap();
    assert_eq!(r.header().shard, 1);
    assert_eq!(r.header().shard_count, 2);
    let mut got = Vec::new();
    while let Some(e) = r.next_entry().unwrap() {
        got.push(match e.record {
            LogRecord::Transition(t) => (e.seq, 1, t.user.to_le_bytes().to_vec()),
            LogRecord::Other { kind, payload } => (e.seq, kind, payload.to_vec()),
        });
    }
    assert_eq!(
        got,
        vec![
            (0, 1, ts[0].user.to_le_bytes().to_vec()),
            (1, 16, b"hello".to_vec()),
            (2, 255, vec![]),
            (3, 1, ts[1].user.to_le_bytes().to_vec()),
        ]
    );
    assert_eq!(r.end(), Some(&SegmentEnd::Clean));
}

/// Writes `n` transitions without closing (the segment stays open, unsealed, as after a
/// crash); returns the segment's path and the transitions.
fn crashed_log(
    dir: &std::path::Path,
    n: usize,
) -> (std::path::PathBuf, Vec<presenced_core::event::Transition>) {
    let ts = stream(3, n, 7, T0, 5);
    let (mut w, _) = LogWriter::open(dir, 0, 1, opts(1 << 20), T0).unwrap();
    for t in &ts {
        w.append(t).unwrap();
    }
    w.sync().unwrap();
    drop(w);
    let segs = list_segments(&log_dir(dir)).unwrap();
    assert_eq!(segs.len(), 1);
    (segs[0].path.clone(), ts)
}

#[test]
fn torn_tail_at_every_byte_of_the_last_record() {
    let dir = TempDir::new("log-torn");
    let n = 12;
    let (seg, ts) = crashed_log(dir.path(), n);
    let full = std::fs::read(&seg).unwrap();
    assert_eq!(full.len(), SEGMENT_HEADER + n * TRANSITION_FRAME);
    let last = SEGMENT_HEADER + (n - 1) * TRANSITION_FRAME;
    for cut in last..full.len() {
        let case = TempDir::new("log-torn-case");
        let seg_dir = log_dir(case.path());
        std::fs::create_dir_all(&seg_dir).unwrap();
        let copy = seg_dir.join(seg.file_name().unwrap());
        std::fs::write(&copy, &full[..cut]).unwrap();
        // Read: everything before the last record, the tail reported torn (or a clean end
        // exactly at the boundary).
        let (got, skipped) = read_log(case.path(), 0);
        assert_eq!(got.len(), n - 1, "cut at {cut}");
        assert!(got.iter().zip(&ts).all(|((_, a), b)| a == b));
        let torn = skipped.count(SkipReason::TornTail);
        assert_eq!(torn, u64::from(cut != last), "cut at {cut}: {skipped:?}");
        // The next writer repairs: cuts the tail, seals, and numbering goes on.
        let (mut w, report) = LogWriter::open(case.path(), 0, 1, opts(1 << 20), T0).unwrap();
        assert_eq!(report.next_seq, (n - 1) as u64, "cut at {cut}");
        assert_eq!(report.repaired.len(), 1);
        assert_eq!(report.repaired[0].1, (cut - last) as u64);
        assert_eq!(w.append(&ts[n - 1]).unwrap(), (n - 1) as u64);
        w.sync().unwrap();
        drop(w);
        let (got, skipped) = read_log(case.path(), 0);
        assert_eq!(skipped.total(), 0, "cut at {cut}: {skipped:?}");
        assert_eq!(got.len(), n);
        assert!(got.iter().zip(&ts).all(|((_, a), b)| a == b));
        assert_eq!(list_segments(&seg_dir).unwrap().len(), 2);
    }
}

#[test]
fn zero_filled_tail_is_torn() {
    let dir = TempDir::new("log-zero");
    let (seg, _) = crashed_log(dir.path(), 5);
    let f = OpenOptions::new().append(true).open(&seg).unwrap();
    f.set_len(f.metadata().unwrap().len() + 4096).unwrap();
    let (got, skipped) = read_log(dir.path(), 0);
    assert_eq!(got.len(), 5);
    assert_eq!(skipped.count(SkipReason::TornTail), 1);
    assert!(
        skipped.notes()[0].detail.contains("zero-length"),
        "{:?}",
        skipped.notes()
    );
}

#[test]
fn a_flipped_bit_anywhere_is_detected() {
    let dir = TempDir::new("log-flip");
    let ts = stream(4, 8, 3, T0, 5);
    let (mut w, _) = LogWriter::open(dir.path(), 0, 1, opts(1 << 20), T0).unwrap();
    for t in &ts {
        w.append(t).unwrap();
    }
    w.close().unwrap();
    let seg = list_segments(&log_dir(dir.path())).unwrap()[0].path.clone();
    let clean = std::fs::read(&seg).unwrap();
    assert_eq!(
        clean.len(),
        SEGMENT_HEADER + 8 * TRANSITION_FRAME + SEAL_FRAME
    );
    let case = dir.path().join("case.seg");
    for byte in 0..clean.len() {
        for bit in 0..8 {
            let mut bytes = clean.clone();
            bytes[byte] ^= 1 << bit;
            std::fs::write(&case, &bytes).unwrap();
            let mut r = match SegmentReader::open(&case) {
                Ok(r) => r,
                Err(e) => {
                    assert!(byte < SEGMENT_HEADER, "byte {byte}: {e}");
                    assert!(e.kind().is_content());
                    continue;
                }
            };
            assert!(byte >= SEGMENT_HEADER, "header flip at {byte} undetected");
            let mut got = Vec::new();
            while let Some(e) = r.next_entry().unwrap() {
                if let LogRecord::Transition(t) = e.record {
                    got.push(t);
                }
            }
            // Never a wrong record: what is read is a prefix of what was written, and the
            // segment does not read as whole.
            assert!(
                got.len() < 8 || !matches!(r.end(), Some(SegmentEnd::Sealed(_))),
                "byte {byte} bit {bit}"
            );
            assert!(
                got.iter().zip(&ts).all(|(a, b)| a == b),
                "byte {byte} bit {bit}"
            );
            assert!(
                !matches!(r.end(), Some(SegmentEnd::Sealed(_))),
                "byte {byte} bit {bit}: {:?}",
                r.end()
            );
        }
    }
}

#[test]
fn corruption_inside_a_sealed_segment_skips_to_the_next() {
    let dir = TempDir::new("log-corrupt");
    let ts = stream(5, 400, 20, T0, 5);
    let (mut w, _) = LogWriter::open(dir.path(), 0, 1, opts(4096), T0).unwrap();
    for t in &ts {
        w.append(t).unwrap();
        w.write().unwrap();
    }
    w.close().unwrap();
    let segs = list_segments(&log_dir(dir.path())).unwrap();
    assert!(segs.len() >= 3);
    // Flip a byte in the third record of the second segment.
    let victim = &segs[1];
    let mut bytes = std::fs::read(&victim.path).unwrap();
    let at = SEGMENT_HEADER + 2 * TRANSITION_FRAME + 10;
    bytes[at] ^= 0x40;
    std::fs::write(&victim.path, &bytes).unwrap();
    let (got, skipped) = read_log(dir.path(), 0);
    assert_eq!(skipped.count(SkipReason::CorruptSegment), 1, "{skipped:?}");
    assert_eq!(skipped.count(SkipReason::LogGap), 1, "{skipped:?}");
    let lost = (segs[2].first_seq - segs[1].first_seq - 2) as usize;
    assert_eq!(got.len(), 400 - lost);
    // Everything else is read, in order, exactly.
    for (seq, t) in &got {
        assert_eq!(*t, ts[*seq as usize]);
    }
    let note = &skipped.notes()[0];
    assert_eq!(note.path, victim.path);
    assert_eq!(
        note.offset,
        Some((SEGMENT_HEADER + 2 * TRANSITION_FRAME) as u64)
    );
    // The next writer leaves a sealed corrupt segment alone.
    let (_, report) = LogWriter::open(dir.path(), 0, 1, opts(4096), T0).unwrap();
    assert!(report.repaired.is_empty());
    assert_eq!(report.next_seq, 400);
}

#[test]
fn a_full_buffer_refuses_and_asks_for_a_snapshot() {
    let dir = TempDir::new("log-full");
    let ts = stream(6, 200, 20, T0, 5);
    let o = LogOptions {
        segment_bytes: 1 << 20,
        max_buffer_bytes: 4096,
    };
    let (mut w, _) = LogWriter::open(dir.path(), 0, 1, o, T0).unwrap();
    let mut accepted = 0;
    for t in &ts {
        match w.append(t) {
            Ok(_) => accepted += 1,
            Err(e) => assert_eq!(e.kind(), ErrorKind::BufferFull),
        }
    }
    assert_eq!(accepted, 4096 / TRANSITION_FRAME);
    assert_eq!(w.dropped(), 200 - accepted as u64);
    assert!(w.needs_snapshot());
    w.snapshot_written(w.next_seq() - 1);
    assert!(w.needs_snapshot());
    w.snapshot_written(w.next_seq());
    assert!(!w.needs_snapshot());
    w.sync().unwrap();
    assert_eq!(w.buffered_bytes(), 0);
    assert!(w.append(&ts[0]).is_ok());
}

#[test]
fn an_unwritable_directory_keeps_what_was_appended() {
    // Root ignores permissions: fall back to a path that cannot be a directory.
    let dir = TempDir::new("log-perm");
    let (mut w, _) = LogWriter::open(dir.path(), 0, 1, opts(1 << 20), T0).unwrap();
    let ts = stream(7, 20, 5, T0, 5);
    // Make the log directory unusable: replace it with a file.
    let ld = log_dir(dir.path());
    std::fs::remove_dir_all(&ld).unwrap();
    std::fs::write(&ld, b"not a directory").unwrap();
    for t in &ts {
        w.append(t).unwrap();
    }
    let err = w.sync().unwrap_err();
    assert!(!err.kind().is_content(), "{err}");
    assert!(err.to_string().contains("log"), "{err}");
    assert_eq!(w.buffered_bytes(), 20 * TRANSITION_FRAME);
    // The disk comes back: nothing appended was lost.
    std::fs::remove_file(&ld).unwrap();
    std::fs::create_dir(&ld).unwrap();
    assert_eq!(w.sync().unwrap(), 20);
    drop(w);
    let (got, _) = read_log(dir.path(), 0);
    assert_eq!(got.len(), 20);
}

#[test]
fn empty_and_headerless_segments_left_by_a_crash() {
    let dir = TempDir::new("log-empty");
    let (mut w, _) = LogWriter::open(dir.path(), 0, 1, opts(4096), T0).unwrap();
    for t in &stream(8, 10, 3, T0, 1) {
        w.append(t).unwrap();
    }
    w.close().unwrap();
    let ld = log_dir(dir.path());
    // A crash right after creating the next segment: a header and nothing else; and one
    // that did not even get its header.
    std::fs::write(ld.join(format!("{:016x}.seg", 10)), [0u8; 0]).unwrap();
    let (_, skipped) = read_log(dir.path(), 0);
    assert_eq!(skipped.count(SkipReason::BadSegment), 1);
    let (w, report) = LogWriter::open(dir.path(), 0, 1, opts(4096), T0).unwrap();
    assert_eq!(report.next_seq, 10);
    assert_eq!(report.set_aside.len(), 1);
    drop(w);
    let (got, skipped) = read_log(dir.path(), 0);
    assert_eq!(got.len(), 10);
    assert_eq!(skipped.total(), 0);
}
