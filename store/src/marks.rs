//! Replay marks: per gateway, the anti-replay high-water mark of signed datagrams, so a
//! restarted daemon refuses datagrams it accepted before. One small daemon-wide file,
//! `<state.dir>/replay-marks`, replaced atomically (temporary file, fdatasync, rename,
//! directory fsync) at every sync; how the windows are restored from it is the daemon's
//! business.
//!
//! **Layout** (little-endian): `magic "PRSDMARK" | format u16 (1) | flags u16 (0) | count u32 |
//! written_ms u64`, then `count` entries of `gateway u32 | boot_epoch u32 | highest_seq u64 |
//! used_last_interval u64`, then a CRC-32C u32 of everything before it. The file is valid only
//! whole: exactly that length, that checksum, that format.

use std::path::{Path, PathBuf};

use crate::codec::{crc, Rd, Wr};
use crate::error::{Error, ErrorKind, Result};
use crate::fsx;

/// The replay-marks file format this build writes and reads.
pub const MARKS_FORMAT: u16 = 1;
const MARKS_MAGIC: [u8; 8] = *b"PRSDMARK";
const MARKS_HEADER: usize = 24;
/// Bytes of one mark.
pub const MARK_BYTES: usize = 24;
const _: () = assert!(MARKS_HEADER == 8 + 2 + 2 + 4 + 8);
const _: () = assert!(MARK_BYTES == 4 + 4 + 8 + 8);
/// The file's name in the state directory.
pub const MARKS_FILE: &str = "replay-marks";

/// One gateway's mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReplayMark {
    /// The gateway's id.
    pub gateway: u32,
    /// The gateway's boot epoch the sequence numbers belong to.
    pub boot_epoch: u32,
    /// The highest sequence number accepted.
    pub highest_seq: u64,
    /// How many sequence numbers were accepted during the last sync interval (how far the
    /// gateway may have got past `highest_seq` before a crash).
    pub used_last_interval: u64,
}

/// The marks read back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayMarks {
    /// When they were written, Unix ms.
    pub written_ms: u64,
    /// The marks, as written.
    pub marks: Vec<ReplayMark>,
}

/// The replay-marks file's path in a state directory.
pub fn marks_path(root: &Path) -> PathBuf {
    root.join(MARKS_FILE)
}

/// Writes replay marks, reusing its buffer (no allocation once warm).
#[derive(Debug)]
pub struct ReplayMarksWriter {
    path: PathBuf,
    buf: Vec<u8>,
}

impl ReplayMarksWriter {
    /// A writer of `<root>/replay-marks` (the directory is created if missing).
    pub fn new(root: &Path) -> Result<ReplayMarksWriter> {
        fsx::create_dirs(root)?;
        Ok(ReplayMarksWriter {
            path: marks_path(root),
            buf: Vec::new(),
        })
    }

    /// Replaces the file with `marks`, atomically.
    pub fn write(&mut self, written_ms: u64, marks: &[ReplayMark]) -> Result<()> {
        encode(&mut self.buf, written_ms, marks);
        fsx::write_atomic(&self.path, &self.buf)
    }
}

fn encode(buf: &mut Vec<u8>, written_ms: u64, marks: &[ReplayMark]) {
    buf.clear();
    let mut h = [0u8; MARKS_HEADER];
    Wr::new(&mut h)
        .put(&MARKS_MAGIC)
        .u16(MARKS_FORMAT)
        .u16(0)
        .u32(marks.len() as u32)
        .u64(written_ms);
    buf.extend_from_slice(&h);
    for m in marks {
        let mut e = [0u8; MARK_BYTES];
        Wr::new(&mut e)
            .u32(m.gateway)
            .u32(m.boot_epoch)
            .u64(m.highest_seq)
            .u64(m.used_last_interval);
        buf.extend_from_slice(&e);
    }
    let c = crc(&[buf]);
    buf.extend_from_slice(&c.to_le_bytes());
}

/// Writes `<root>/replay-marks` atomically (see [`ReplayMarksWriter`] to reuse the buffer).
pub fn write_replay_marks(root: &Path, written_ms: u64, marks: &[ReplayMark]) -> Result<()> {
    ReplayMarksWriter::new(root)?.write(written_ms, marks)
}

/// Reads `<root>/replay-marks`: `Ok(None)` when there is none; an error when it does not
/// validate.
pub fn read_replay_marks(root: &Path) -> Result<Option<ReplayMarks>> {
    let path = marks_path(root);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, "read failed", e)),
    };
    decode(&bytes, &path).map(Some)
}

fn decode(bytes: &[u8], path: &Path) -> Result<ReplayMarks> {
    if bytes.len() >= 8 && bytes[..8] != MARKS_MAGIC {
        return Err(Error::new(
            ErrorKind::BadMagic,
            path,
            "not a replay-marks file",
        ));
    }
    if bytes.len() < MARKS_HEADER + 4 {
        return Err(Error::new(
            ErrorKind::Truncated,
            path,
            format!("{} bytes, shorter than a header", bytes.len()),
        ));
    }
    let mut r = Rd::new(&bytes[8..]);
    let format = r.u16().unwrap_or(0);
    if format != MARKS_FORMAT {
        return Err(Error::new(
            ErrorKind::ForeignVersion,
            path,
            format!(
                "replay-marks format version {format}, this build reads version {MARKS_FORMAT}"
            ),
        ));
    }
    let _flags = r.u16();
    let count = r.u32().unwrap_or(0) as u64;
    let written_ms = r.u64().unwrap_or(0);
    let expected = MARKS_HEADER as u64 + MARK_BYTES as u64 * count + 4;
    if bytes.len() as u64 != expected {
        return Err(Error::new(
            if (bytes.len() as u64) < expected {
                ErrorKind::Truncated
            } else {
                ErrorKind::Corrupt
            },
            path,
            format!("{} bytes, {count} marks take {expected}", bytes.len()),
        ));
    }
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes(tail.try_into().unwrap_or_default());
    if crc(&[body]) != stored {
        return Err(Error::new(
            ErrorKind::Checksum,
            path,
            "replay-marks checksum mismatch",
        ));
    }
    let mut r = Rd::new(&body[MARKS_HEADER..]);
    let mut marks = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let (Some(gateway), Some(boot_epoch), Some(highest_seq), Some(used_last_interval)) =
            (r.u32(), r.u32(), r.u64(), r.u64())
        else {
            return Err(Error::new(ErrorKind::Truncated, path, "marks cut short"));
        };
        marks.push(ReplayMark {
            gateway,
            boot_epoch,
            highest_seq,
            used_last_interval,
        });
    }
    Ok(ReplayMarks { written_ms, marks })
}
