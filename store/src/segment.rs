//! One transition-log segment file: its header, its name, and [`SegmentReader`], the one
//! place that parses a segment's records (recovery, history scans, the writer's repair and
//! index rebuilds all go through it). A segment is `<first_seq as 016x>.seg` in the shard's
//! `log/` directory.
//!
//! **Header** (40 bytes, little-endian): `magic "PRSDLOG\0" | format u16 (1) | flags u16 (0) |
//! shard u32 | shard_count u32 | first_seq u64 | created_ms u64 | crc u32` (CRC-32C of the 36
//! bytes before it). Then record frames (see [`crate::codec`]), the k-th of which has sequence
//! number `first_seq + k`; a sealed segment ends with a seal record.
//!
//! **Where reading stops.** A frame that is cut short, zero-filled, runs past the end of the
//! file or fails its checksum ends the segment. In a segment that ends with a valid seal this
//! is corruption ([`SegmentEnd::Corrupt`]: counted, the caller moves on to the next segment);
//! in an unsealed one it is the torn tail a crash leaves ([`SegmentEnd::Torn`]: normal). A
//! frame whose checksum holds but whose content does not make sense (an unknown store kind, a
//! state out of range) is skipped and counted. No file content makes the reader panic.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use presenced_core::event::Transition;

use crate::codec::{
    crc, decode_transition, Rd, Seal, Wr, FIRST_OTHER_KIND, FRAME_HEADER, KIND_SEAL,
    KIND_TRANSITION, SEAL_FRAME,
};
use crate::error::{Error, ErrorKind, Result};
use crate::fsx;

/// The segment file format this build writes and reads.
pub const SEGMENT_FORMAT: u16 = 1;
/// Bytes of a segment header.
pub const SEGMENT_HEADER: usize = 40;
const SEGMENT_MAGIC: [u8; 8] = *b"PRSDLOG\0";
const _: () = assert!(SEGMENT_HEADER == 8 + 2 + 2 + 4 + 4 + 8 + 8 + 4);

/// A segment's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The shard whose log this is.
    pub shard: u32,
    /// The number of shards when it was written.
    pub shard_count: u32,
    /// Sequence number of its first record.
    pub first_seq: u64,
    /// When it was created, Unix ms.
    pub created_ms: u64,
}

impl SegmentHeader {
    pub(crate) fn encode(&self) -> [u8; SEGMENT_HEADER] {
        let mut h = [0u8; SEGMENT_HEADER];
        let mut w = Wr::new(&mut h);
        w.put(&SEGMENT_MAGIC)
            .u16(SEGMENT_FORMAT)
            .u16(0)
            .u32(self.shard)
            .u32(self.shard_count)
            .u64(self.first_seq)
            .u64(self.created_ms);
        let c = crc(&[&h[..SEGMENT_HEADER - 4]]);
        h[SEGMENT_HEADER - 4..].copy_from_slice(&c.to_le_bytes());
        h
    }

    pub(crate) fn decode(bytes: &[u8], path: &Path) -> Result<SegmentHeader> {
        if bytes.len() < SEGMENT_HEADER {
            if bytes.len() >= 8 && bytes[..8] != SEGMENT_MAGIC {
                return Err(Error::new(ErrorKind::BadMagic, path, "not a log segment"));
            }
            return Err(Error::new(
                ErrorKind::Truncated,
                path,
                format!(
                    "segment header cut short: {} of {SEGMENT_HEADER} bytes",
                    bytes.len()
                ),
            ));
        }
        let mut r = Rd::new(bytes);
        if r.take(8) != Some(&SEGMENT_MAGIC[..]) {
            return Err(Error::new(ErrorKind::BadMagic, path, "not a log segment"));
        }
        let format = r.u16().unwrap_or(0);
        if format != SEGMENT_FORMAT {
            return Err(Error::new(
                ErrorKind::ForeignVersion,
                path,
                format!("log segment format version {format}, this build reads version {SEGMENT_FORMAT}"),
            ));
        }
        let stored = u32::from_le_bytes(
            bytes[SEGMENT_HEADER - 4..SEGMENT_HEADER]
                .try_into()
                .unwrap_or_default(),
        );
        if crc(&[&bytes[..SEGMENT_HEADER - 4]]) != stored {
            return Err(Error::new(
                ErrorKind::Checksum,
                path,
                "segment header checksum mismatch",
            ));
        }
        let _flags = r.u16();
        let bad = || Error::new(ErrorKind::Truncated, path, "segment header cut short");
        Ok(SegmentHeader {
            shard: r.u32().ok_or_else(bad)?,
            shard_count: r.u32().ok_or_else(bad)?,
            first_seq: r.u64().ok_or_else(bad)?,
            created_ms: r.u64().ok_or_else(bad)?,
        })
    }

    /// Reads and validates the header of the segment at `path`.
    pub fn read(path: &Path) -> Result<SegmentHeader> {
        let mut f = File::open(path).map_err(|e| Error::io(path, "cannot open the segment", e))?;
        let mut buf = Vec::with_capacity(SEGMENT_HEADER);
        (&mut f)
            .take(SEGMENT_HEADER as u64)
            .read_to_end(&mut buf)
            .map_err(|e| Error::io(path, "read failed", e))?;
        SegmentHeader::decode(&buf, path)
    }
}

/// A segment file found in a log directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentFile {
    /// The first sequence number, from its name.
    pub first_seq: u64,
    /// Its path.
    pub path: PathBuf,
    /// Its length in bytes when listed.
    pub len: u64,
}

/// The segments of a log directory, oldest first (files whose name is not a segment's are
/// ignored; a missing directory has none).
pub fn list_segments(log_dir: &Path) -> Result<Vec<SegmentFile>> {
    let mut out = Vec::new();
    for name in fsx::list_names(log_dir)? {
        let Some(first_seq) = fsx::parse_hex_name(&name, "", ".seg") else {
            continue;
        };
        let path = log_dir.join(&name);
        let len = match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => m.len(),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(&path, "cannot stat the segment", e)),
        };
        out.push(SegmentFile {
            first_seq,
            path,
            len,
        });
    }
    out.sort_by_key(|s| s.first_seq);
    Ok(out)
}

/// Reads the seal at the end of a segment file, if it ends with a valid one.
pub(crate) fn read_tail_seal(file: &File, path: &Path, file_len: u64) -> Result<Option<Seal>> {
    if file_len < (SEGMENT_HEADER + SEAL_FRAME) as u64 {
        return Ok(None);
    }
    let mut tail = [0u8; SEAL_FRAME];
    fsx::read_at(file, path, &mut tail, file_len - SEAL_FRAME as u64)?;
    Ok(Seal::from_frame(&tail))
}

/// One record of the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogRecord<'a> {
    /// A user's transition.
    Transition(Transition),
    /// A record of a kind the daemon defines (`kind >= 16`), as logged.
    Other {
        /// Its kind byte.
        kind: u8,
        /// Its payload after the kind byte.
        payload: &'a [u8],
    },
}

/// A record with its position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Its sequence number.
    pub seq: u64,
    /// Byte offset of its frame in the segment.
    pub offset: u64,
    /// The record.
    pub record: LogRecord<'a>,
}

/// How reading a segment ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SegmentEnd {
    /// At its seal: the segment is whole.
    Sealed(Seal),
    /// At the end of the file, on a frame boundary, without a seal (the open segment, or one
    /// whose writer stopped between two writes).
    Clean,
    /// At a frame that is cut short or does not check, in an unsealed segment: the torn tail a
    /// crash leaves. Everything from `offset` on is ignored.
    Torn {
        /// Where the bad frame starts.
        offset: u64,
        /// Why it does not count.
        reason: &'static str,
    },
    /// At a frame that does not check in a sealed segment (or a seal that disagrees with the
    /// segment): corruption. The rest of the segment is skipped.
    Corrupt {
        /// Where the bad frame starts.
        offset: u64,
        /// Why it does not count.
        reason: &'static str,
    },
}

const READ_BUFFER: usize = 1 << 20;

/// Reads a segment's records in order. See the module doc for where it stops.
pub struct SegmentReader {
    path: PathBuf,
    reader: BufReader<File>,
    header: SegmentHeader,
    file_len: u64,
    offset: u64,
    next_seq: u64,
    tail_seal: Option<Seal>,
    payload: Vec<u8>,
    end: Option<SegmentEnd>,
    invalid: u64,
    pub(crate) current: Option<(u64, u64, Option<Transition>)>,
    transitions: u64,
    min_at_ms: u64,
    max_at_ms: u64,
}

impl SegmentReader {
    /// Opens the segment at `path` and validates its header. Only its length at this moment
    /// is read (a segment being appended to reads as what it held then).
    pub fn open(path: &Path) -> Result<SegmentReader> {
        let file = File::open(path).map_err(|e| Error::io(path, "cannot open the segment", e))?;
        let file_len = file
            .metadata()
            .map_err(|e| Error::io(path, "cannot stat the segment", e))?
            .len();
        let mut head = [0u8; SEGMENT_HEADER];
        let n = (file_len as usize).min(SEGMENT_HEADER);
        fsx::read_at(&file, path, &mut head[..n], 0)?;
        let header = SegmentHeader::decode(&head[..n], path)?;
        let tail_seal = read_tail_seal(&file, path, file_len)?;
        let mut reader = BufReader::with_capacity(READ_BUFFER, file);
        std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(SEGMENT_HEADER as u64))
            .map_err(|e| Error::io(path, "seek failed", e))?;
        Ok(SegmentReader {
            path: path.to_path_buf(),
            reader,
            header,
            file_len,
            offset: SEGMENT_HEADER as u64,
            next_seq: header.first_seq,
            tail_seal,
            payload: Vec::with_capacity(64),
            end: None,
            invalid: 0,
            current: None,
            transitions: 0,
            min_at_ms: u64::MAX,
            max_at_ms: 0,
        })
    }

    /// The segment's header.
    pub fn header(&self) -> &SegmentHeader {
        &self.header
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's length when opened.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Whether the file ends with a valid seal.
    pub fn sealed(&self) -> bool {
        self.tail_seal.is_some()
    }

    /// The seal the file ends with, if it ends with a valid one.
    pub fn tail_seal(&self) -> Option<Seal> {
        self.tail_seal
    }

    /// The sequence number of the next record.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The byte offset of the next frame: after the last valid record once reading has ended.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// How reading ended, once it has.
    pub fn end(&self) -> Option<&SegmentEnd> {
        self.end.as_ref()
    }

    /// Records skipped because their checksum held but their content did not make sense.
    pub fn invalid_records(&self) -> u64 {
        self.invalid
    }

    /// Oldest and newest transition time read so far (`None` before the first transition).
    pub fn at_range(&self) -> Option<(u64, u64)> {
        (self.transitions > 0).then_some((self.min_at_ms, self.max_at_ms))
    }

    fn stop(&mut self, reason: &'static str) {
        self.end = Some(if self.tail_seal.is_some() {
            SegmentEnd::Corrupt {
                offset: self.offset,
                reason,
            }
        } else {
            SegmentEnd::Torn {
                offset: self.offset,
                reason,
            }
        });
    }

    fn read_exact(&mut self, n: usize) -> Result<bool> {
        self.payload.resize(n, 0);
        match self.reader.read_exact(&mut self.payload[..n]) {
            Ok(()) => Ok(true),
            // The file shrank under us: it ends here.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(Error::io(&self.path, "read failed", e).at(self.offset)),
        }
    }

    /// The next record, or `None` at the end (see [`SegmentReader::end`]). `Err` only for IO
    /// errors.
    pub fn next_entry(&mut self) -> Result<Option<Entry<'_>>> {
        if self.advance()? {
            Ok(self.current_entry())
        } else {
            Ok(None)
        }
    }

    /// The record the last successful [`SegmentReader::advance`] read.
    pub(crate) fn current_entry(&self) -> Option<Entry<'_>> {
        let (seq, offset, t) = self.current?;
        Some(Entry {
            seq,
            offset,
            record: match t {
                Some(t) => LogRecord::Transition(t),
                None => LogRecord::Other {
                    kind: self.payload[0],
                    payload: &self.payload[1..],
                },
            },
        })
    }

    /// Reads the next record (see [`SegmentReader::current_entry`]); `false` at the end.
    pub(crate) fn advance(&mut self) -> Result<bool> {
        self.current = None;
        loop {
            if self.end.is_some() {
                return Ok(false);
            }
            let remaining = self.file_len - self.offset.min(self.file_len);
            if remaining == 0 {
                // (A tail that only looked like a seal was inside the last record.)
                self.end = Some(SegmentEnd::Clean);
                return Ok(false);
            }
            if remaining < FRAME_HEADER as u64 {
                self.stop("partial frame header");
                return Ok(false);
            }
            if !self.read_exact(FRAME_HEADER)? {
                self.stop("file shrank while read");
                return Ok(false);
            }
            let len = u16::from_le_bytes([self.payload[0], self.payload[1]]);
            let stored = u32::from_le_bytes([
                self.payload[2],
                self.payload[3],
                self.payload[4],
                self.payload[5],
            ]);
            if len == 0 {
                self.stop("zero-length frame");
                return Ok(false);
            }
            let frame_len = FRAME_HEADER as u64 + len as u64;
            if frame_len > remaining {
                self.stop("frame runs past the end of the file");
                return Ok(false);
            }
            if !self.read_exact(len as usize)? {
                self.stop("file shrank while read");
                return Ok(false);
            }
            if crc(&[&len.to_le_bytes(), &self.payload]) != stored {
                self.stop("record checksum mismatch");
                return Ok(false);
            }
            let offset = self.offset;
            self.offset += frame_len;
            let kind = self.payload[0];
            if kind == KIND_SEAL {
                let seal = Seal::decode(&self.payload);
                let records = self.next_seq - self.header.first_seq;
                self.offset = offset;
                match seal {
                    Some(_) if offset + frame_len != self.file_len => {
                        self.stop("data after the seal");
                    }
                    Some(s) if s.records != records || s.first_seq != self.header.first_seq => {
                        self.end = Some(SegmentEnd::Corrupt {
                            offset,
                            reason: "the seal disagrees with the segment",
                        });
                    }
                    Some(s) => {
                        self.offset = offset + frame_len;
                        self.end = Some(SegmentEnd::Sealed(s));
                    }
                    None => self.stop("invalid seal record"),
                }
                return Ok(false);
            }
            if kind == KIND_TRANSITION {
                let Some(t) = decode_transition(&self.payload) else {
                    self.invalid += 1;
                    self.next_seq += 1;
                    continue;
                };
                let seq = self.next_seq;
                self.next_seq += 1;
                self.transitions += 1;
                self.min_at_ms = self.min_at_ms.min(t.at_ms);
                self.max_at_ms = self.max_at_ms.max(t.at_ms);
                self.current = Some((seq, offset, Some(t)));
                return Ok(true);
            }
            let seq = self.next_seq;
            self.next_seq += 1;
            if kind < FIRST_OTHER_KIND {
                self.invalid += 1;
                continue;
            }
            self.current = Some((seq, offset, None));
            return Ok(true);
        }
    }

    /// Reads to the end, counting records (for repair and retention of unsealed segments).
    pub fn skip_to_end(&mut self) -> Result<()> {
        while self.advance()? {}
        Ok(())
    }
}
