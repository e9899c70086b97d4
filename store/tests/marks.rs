//! Replay marks: round trip, atomic replacement, every truncation and bit flip refused.

mod common;

use common::TempDir;
use presenced_store::marks::marks_path;
use presenced_store::{
    read_replay_marks, write_replay_marks, ErrorKind, ReplayMark, ReplayMarksWriter,
};

fn marks(n: u32) -> Vec<ReplayMark> {
    (0..n)
        .map(|i| ReplayMark {
            gateway: i * 7 + 1,
            boot_epoch: 3 + i,
            highest_seq: 1 << (i % 60),
            used_last_interval: i as u64 * 11,
        })
        .collect()
}

#[test]
fn round_trip_and_replace() {
    let root = TempDir::new("marks-rt");
    assert_eq!(read_replay_marks(root.path()).unwrap(), None);
    let mut w = ReplayMarksWriter::new(root.path()).unwrap();
    w.write(5, &marks(3)).unwrap();
    let got = read_replay_marks(root.path()).unwrap().unwrap();
    assert_eq!(got.written_ms, 5);
    assert_eq!(got.marks, marks(3));
    w.write(6, &marks(100)).unwrap();
    w.write(7, &[]).unwrap();
    let got = read_replay_marks(root.path()).unwrap().unwrap();
    assert_eq!((got.written_ms, got.marks.len()), (7, 0));
    write_replay_marks(root.path(), 8, &marks(4096)).unwrap();
    assert_eq!(
        read_replay_marks(root.path()).unwrap().unwrap().marks,
        marks(4096)
    );
    // Only the file itself is left (no temporary file).
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 1);
}

#[test]
fn every_truncation_and_bit_flip_is_refused() {
    let root = TempDir::new("marks-bad");
    write_replay_marks(root.path(), 1, &marks(4)).unwrap();
    let path = marks_path(root.path());
    let clean = std::fs::read(&path).unwrap();
    for cut in 0..clean.len() {
        std::fs::write(&path, &clean[..cut]).unwrap();
        let err = read_replay_marks(root.path()).unwrap_err();
        assert!(err.kind().is_content(), "cut {cut}: {err}");
        assert!(err.to_string().contains("replay-marks"), "{err}");
    }
    for byte in 0..clean.len() {
        for bit in 0..8 {
            let mut b = clean.clone();
            b[byte] ^= 1 << bit;
            std::fs::write(&path, &b).unwrap();
            let err = read_replay_marks(root.path()).unwrap_err();
            assert!(err.kind().is_content(), "byte {byte} bit {bit}: {err}");
        }
    }
    let mut long = clean.clone();
    long.push(0);
    std::fs::write(&path, &long).unwrap();
    assert_eq!(
        read_replay_marks(root.path()).unwrap_err().kind(),
        ErrorKind::Corrupt
    );
}
