//! Snapshots: round trip, truncation at every byte, a bit flip anywhere, foreign versions
//! refused naming both, the two newest kept, stale temporary files.

mod common;

use common::TempDir;
use presenced_store::snapshot::{list_snapshots, SNAPSHOT_HEADER};
use presenced_store::{ErrorKind, SnapshotMeta, SnapshotReader, SnapshotWriter};

fn meta(position: u64) -> SnapshotMeta {
    SnapshotMeta {
        shard: 2,
        shard_count: 4,
        record_encoding: 1,
        began_ms: 1_700_000_000_000,
        log_position: position,
    }
}

/// Chunks of whole fake records (`k` records of 5 bytes each).
fn chunks() -> Vec<(Vec<u8>, u64)> {
    (1..6u8)
        .map(|k| ((0..k * 5).map(|b| b.wrapping_mul(k)).collect(), k as u64))
        .collect()
}

fn write(dir: &std::path::Path, position: u64) -> presenced_store::SnapshotInfo {
    let mut w = SnapshotWriter::create(dir, meta(position)).unwrap();
    for (c, n) in chunks() {
        w.push(&c, n).unwrap();
    }
    w.push(&[], 0).unwrap();
    w.finish().unwrap()
}

fn read_all(path: &std::path::Path) -> presenced_store::Result<Vec<(Vec<u8>, u64)>> {
    let mut r = SnapshotReader::open(path, Some(1))?;
    let mut out = Vec::new();
    while let Some(c) = r.next_chunk()? {
        out.push((c.bytes.to_vec(), c.records as u64));
    }
    Ok(out)
}

#[test]
fn round_trip() {
    let dir = TempDir::new("snap-rt");
    let info = write(dir.path(), 77);
    assert_eq!(info.meta, meta(77));
    assert_eq!(info.blocks, 5);
    assert_eq!(info.records, 15);
    assert_eq!(
        info.file_bytes,
        std::fs::metadata(&info.path).unwrap().len()
    );
    assert_eq!(read_all(&info.path).unwrap(), chunks());
    let r = SnapshotReader::open(&info.path, None).unwrap();
    assert_eq!(*r.meta(), meta(77));
    assert_eq!(r.records_claimed(), Some(15));
    assert_eq!(SnapshotMeta::read(&info.path).unwrap(), meta(77));
    assert_eq!(SnapshotReader::verify(&info.path, Some(1)).unwrap(), info);
}

#[test]
fn truncated_at_every_byte_is_refused() {
    let dir = TempDir::new("snap-trunc");
    let info = write(dir.path(), 1);
    let bytes = std::fs::read(&info.path).unwrap();
    let case = dir.path().join("case.snap");
    for cut in 0..bytes.len() {
        std::fs::write(&case, &bytes[..cut]).unwrap();
        if let Ok(r) = SnapshotReader::open(&case, Some(1)) {
            // No trailer at the end: no count read ahead.
            assert_eq!(r.records_claimed(), None, "cut at {cut}");
        }
        let err = match SnapshotReader::verify(&case, Some(1)) {
            Ok(_) => panic!("cut at {cut} accepted"),
            Err(e) => e,
        };
        assert!(
            matches!(err.kind(), ErrorKind::Truncated | ErrorKind::Corrupt),
            "cut at {cut}: {err}"
        );
        assert!(err.to_string().contains("case.snap"), "{err}");
    }
}

#[test]
fn a_flipped_bit_anywhere_is_detected() {
    let dir = TempDir::new("snap-flip");
    let info = write(dir.path(), 1);
    let clean = std::fs::read(&info.path).unwrap();
    let case = dir.path().join("case.snap");
    for byte in 0..clean.len() {
        for bit in 0..8 {
            let mut bytes = clean.clone();
            bytes[byte] ^= 1 << bit;
            std::fs::write(&case, &bytes).unwrap();
            let err = SnapshotReader::verify(&case, Some(1))
                .err()
                .unwrap_or_else(|| panic!("byte {byte} bit {bit} undetected"));
            assert!(err.kind().is_content(), "byte {byte}: {err}");
        }
    }
}

#[test]
fn foreign_versions_are_refused_naming_both() {
    let dir = TempDir::new("snap-foreign");
    let info = write(dir.path(), 1);
    let mut bytes = std::fs::read(&info.path).unwrap();
    // Format version 9, header checksum made right again.
    bytes[8..10].copy_from_slice(&9u16.to_le_bytes());
    let c = crc32c::crc32c(&bytes[..SNAPSHOT_HEADER - 4]);
    bytes[SNAPSHOT_HEADER - 4..SNAPSHOT_HEADER].copy_from_slice(&c.to_le_bytes());
    let case = dir.path().join("foreign.snap");
    std::fs::write(&case, &bytes).unwrap();
    let err = SnapshotReader::open(&case, Some(1)).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::ForeignVersion);
    let msg = err.to_string();
    assert!(
        msg.contains("version 9") && msg.contains("version 1"),
        "{msg}"
    );
    // Records of another encoding.
    let err = SnapshotReader::open(&info.path, Some(3)).err().unwrap();
    assert_eq!(err.kind(), ErrorKind::ForeignEncoding);
    let msg = err.to_string();
    assert!(
        msg.contains("version 1") && msg.contains("version 3"),
        "{msg}"
    );
    // Not a snapshot at all.
    std::fs::write(&case, b"hello, this is not a snapshot at all, not at all!!").unwrap();
    assert_eq!(
        SnapshotReader::open(&case, None).err().unwrap().kind(),
        ErrorKind::BadMagic
    );
}

#[test]
fn keeps_the_two_newest_and_cleans_up() {
    let dir = TempDir::new("snap-keep");
    for p in [10, 20, 30, 40] {
        write(dir.path(), p);
    }
    let kept: Vec<u64> = list_snapshots(dir.path())
        .unwrap()
        .iter()
        .map(|s| s.log_position)
        .collect();
    assert_eq!(kept, vec![40, 30]);
    // An unfinished writer leaves nothing behind.
    let mut w = SnapshotWriter::create(dir.path(), meta(50)).unwrap();
    w.push(b"abc", 1).unwrap();
    assert!(dir.path().join(format!("snap-{:016x}.tmp", 50)).exists());
    drop(w);
    assert!(!dir.path().join(format!("snap-{:016x}.tmp", 50)).exists());
    // A stale temporary file (a crash) is removed by the next finished snapshot.
    std::fs::write(dir.path().join(format!("snap-{:016x}.tmp", 45)), b"junk").unwrap();
    write(dir.path(), 60);
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    // Oversized chunks and bad arguments.
    let mut w = SnapshotWriter::create(dir.path(), meta(70)).unwrap();
    let big = vec![0u8; presenced_store::snapshot::MAX_BLOCK + 1];
    assert_eq!(w.push(&big, 1).unwrap_err().kind(), ErrorKind::TooLarge);
    let bad = SnapshotMeta {
        shard: 4,
        ..meta(1)
    };
    assert_eq!(
        SnapshotWriter::create(dir.path(), bad)
            .err()
            .unwrap()
            .kind(),
        ErrorKind::InvalidArgument
    );
}
