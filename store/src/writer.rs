//! [`LogWriter`]: one shard's transition log, appended to by the daemon's store thread.
//!
//! - [`LogWriter::append`] frames a transition into an in-memory buffer and indexes it (no IO,
//!   no allocation once the buffer and the index have grown to a burst's size) and returns its
//!   sequence number.
//! - [`LogWriter::write`] hands the buffer to the file (plain `write(2)` calls, resumable: a
//!   full disk leaves the unwritten rest in the buffer for the next call) and rotates: once the
//!   segment is `segment_bytes` long it is sealed (seal record, fdatasync, index file written
//!   beside it) and the next write starts a new segment.
//! - [`LogWriter::sync`] writes, then fdatasyncs: every record below
//!   [`LogWriter::durable_seq`] survives a crash. The daemon calls it every
//!   `state.sync_interval`.
//!
//! **Failures.** The daemon keeps serving from memory and retries. A failed write loses
//! nothing (the buffer keeps what the file did not take; appends beyond `max_buffer_bytes` are
//! refused with [`ErrorKind::BufferFull`] and counted). A failed fdatasync may have lost
//! written data (Linux may drop the dirty pages and report the error once), so the segment is
//! abandoned unsealed and the next write starts a new one. Either loss sets
//! [`LogWriter::needs_snapshot`]: the log alone no longer brings a restart up to date, and a
//! snapshot begun after the loss ([`LogWriter::snapshot_written`]) does.
//!
//! **Opening** repairs what a crash left: every unsealed segment is cut at its last valid
//! record (a torn tail is never read by anyone: recovery stops there too), sealed and
//! indexed; an empty one is removed; a sealed segment with a missing or invalid index gets it
//! rebuilt. Sequence numbers go on from the last record found, and the first write starts a
//! new segment.
//!
//! The writer reads no clock: a new segment's creation time is the newest of the `now_ms`
//! given to [`LogWriter::open`] and the transition times appended since.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use presenced_core::event::Transition;

use crate::codec::{
    crc, transition_frame, Seal, FIRST_OTHER_KIND, FRAME_HEADER, MAX_PAYLOAD, SEAL_FRAME,
};
use crate::error::{Error, ErrorKind, Result};
use crate::fsx;
use crate::index::{IndexFile, OpenIndex};
use crate::segment::{
    list_segments, LogRecord, SegmentEnd, SegmentHeader, SegmentReader, SEGMENT_HEADER,
};
use std::os::unix::fs::FileExt;

/// Settings of a log writer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogOptions {
    /// A segment is sealed and a new one started once it is at least this long (4 KiB to
    /// 1 GiB; `state.segment_bytes`).
    pub segment_bytes: u64,
    /// Appends are refused while this many bytes wait to be written (4 KiB to 1 GiB).
    pub max_buffer_bytes: usize,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_bytes: 64 << 20,
            max_buffer_bytes: 256 << 20,
        }
    }
}

impl LogOptions {
    fn validate(&self, path: &Path) -> Result<()> {
        if !(4096..=1 << 30).contains(&self.segment_bytes) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                path,
                format!(
                    "segment_bytes {} is out of range (4 KiB to 1 GiB)",
                    self.segment_bytes
                ),
            ));
        }
        if !(4096..=1 << 30).contains(&self.max_buffer_bytes) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                path,
                format!(
                    "max_buffer_bytes {} is out of range (4 KiB to 1 GiB)",
                    self.max_buffer_bytes
                ),
            ));
        }
        Ok(())
    }
}

/// What [`LogWriter::open`] found and repaired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Segments cut at their last valid record and sealed, with the bytes cut off and why.
    pub repaired: Vec<(PathBuf, u64, &'static str)>,
    /// Segments without a valid record, removed.
    pub removed_empty: Vec<PathBuf>,
    /// Segments whose header was invalid, renamed to `<name>.bad` and left out from then on.
    pub set_aside: Vec<PathBuf>,
    /// Index files rebuilt.
    pub indexes_rebuilt: u32,
    /// The sequence number the next record gets.
    pub next_seq: u64,
}

/// The segment being written.
pub(crate) struct OpenSegment {
    pub(crate) file: File,
    pub(crate) path: PathBuf,
    pub(crate) first_seq: u64,
    /// Bytes in the file.
    pub(crate) len: u64,
    dirty: bool,
}

/// A segment being sealed: its stats, its index and how far its seal record got.
pub(crate) struct Sealing {
    pub(crate) seg: OpenSegment,
    pub(crate) index: OpenIndex,
    seal: Seal,
    seal_written: usize,
}

/// Appends records to one shard's log. See the module doc.
pub struct LogWriter {
    log_dir: PathBuf,
    shard: u32,
    shard_count: u32,
    opts: LogOptions,
    pub(crate) seg: Option<OpenSegment>,
    pub(crate) sealing: Option<Sealing>,
    pub(crate) buf: Vec<u8>,
    cursor: usize,
    /// The segment offset of `buf[0]`, in the segment the buffer goes to.
    seg_end: u64,
    next_seq: u64,
    seg_first_seq: u64,
    seg_records: u64,
    seg_min_at: u64,
    seg_max_at: u64,
    pub(crate) index: OpenIndex,
    spare: OpenIndex,
    clock_ms: u64,
    durable_seq: u64,
    loss_end: Option<u64>,
    dropped: u64,
}

impl LogWriter {
    /// Opens (creating it if needed) the log of the shard directory `shard_dir` (its `log/`
    /// subdirectory) for shard `shard` of `shard_count`, repairing what a crash left (see the
    /// module doc). `now_ms` is the wall clock, for new segments' headers.
    pub fn open(
        shard_dir: &Path,
        shard: u32,
        shard_count: u32,
        opts: LogOptions,
        now_ms: u64,
    ) -> Result<(LogWriter, OpenReport)> {
        let log_dir = fsx::log_dir(shard_dir);
        opts.validate(&log_dir)?;
        if shard_count == 0 || shard >= shard_count {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                shard_dir,
                format!("shard {shard} of {shard_count} shards"),
            ));
        }
        fsx::create_dirs(&log_dir)?;
        let mut report = OpenReport::default();
        for name in fsx::list_names(&log_dir)? {
            if name.ends_with(".idx-tmp") {
                fsx::remove_if_present(&log_dir.join(name))?;
            }
        }
        let mut index = OpenIndex::default();
        let mut next_seq = 0u64;
        let mut changed = false;
        for seg in list_segments(&log_dir)? {
            let mut reader = match SegmentReader::open(&seg.path) {
                Ok(r) => r,
                // A segment of another format (a newer build's): not ours to touch.
                Err(e) if e.kind() == ErrorKind::ForeignVersion => return Err(e),
                Err(e) if e.kind().is_content() => {
                    let aside = seg.path.with_extension("seg.bad");
                    std::fs::rename(&seg.path, &aside)
                        .map_err(|e| Error::io(&seg.path, "rename failed", e))?;
                    fsx::remove_if_present(&fsx::index_path(&log_dir, seg.first_seq))?;
                    report.set_aside.push(seg.path);
                    changed = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            let first_seq = reader.header().first_seq;
            let tail_seal = reader.tail_seal();
            let idx_path = fsx::index_path(&log_dir, first_seq);
            if let Some(seal) = tail_seal {
                next_seq = next_seq.max(seal.first_seq + seal.records);
                if matches!(IndexFile::open(&idx_path, first_seq, seg.len), Ok(Some(_))) {
                    continue;
                }
            }
            index.clear();
            let mut min_at = u64::MAX;
            let mut max_at = 0;
            while let Some(e) = reader.next_entry()? {
                if let LogRecord::Transition(t) = e.record {
                    index.push(t.user, e.offset as u32);
                    min_at = min_at.min(t.at_ms);
                    max_at = max_at.max(t.at_ms);
                }
            }
            let records = reader.next_seq() - first_seq;
            let end = reader.end().cloned();
            let valid_end = reader.offset();
            let created_ms = reader.header().created_ms;
            drop(reader);
            if tail_seal.is_some() && !matches!(end, Some(SegmentEnd::Torn { .. })) {
                // Sealed, its index missing or invalid: rebuild it. (A sealed segment corrupt
                // inside is left as it is, for recovery to count, and indexed up to the
                // corruption so history finds what is readable.)
                index.write(&idx_path, shard, first_seq, seg.len)?;
                report.indexes_rebuilt += 1;
                changed = true;
                next_seq = next_seq.max(first_seq + records);
                continue;
            }
            let reason = match end {
                Some(SegmentEnd::Torn { reason, .. })
                | Some(SegmentEnd::Corrupt { reason, .. }) => reason,
                _ => "not sealed",
            };
            if records == 0 {
                fsx::remove_if_present(&seg.path)?;
                fsx::remove_if_present(&idx_path)?;
                report.removed_empty.push(seg.path);
                changed = true;
                next_seq = next_seq.max(first_seq);
                continue;
            }
            let seal = Seal {
                records,
                first_seq,
                min_at_ms: if min_at == u64::MAX {
                    created_ms
                } else {
                    min_at
                },
                max_at_ms: if min_at == u64::MAX {
                    created_ms
                } else {
                    max_at
                },
            };
            let file = OpenOptions::new()
                .write(true)
                .open(&seg.path)
                .map_err(|e| Error::io(&seg.path, "cannot open for repair", e))?;
            file.set_len(valid_end)
                .map_err(|e| Error::io(&seg.path, "truncate failed", e))?;
            file.write_all_at(&seal.frame(), valid_end)
                .map_err(|e| Error::io(&seg.path, "write of the seal failed", e))?;
            file.sync_data()
                .map_err(|e| Error::io(&seg.path, "fdatasync failed", e))?;
            let sealed_len = valid_end + SEAL_FRAME as u64;
            index.write(&idx_path, shard, first_seq, sealed_len)?;
            report.indexes_rebuilt += 1;
            report
                .repaired
                .push((seg.path.clone(), seg.len - valid_end, reason));
            changed = true;
            next_seq = next_seq.max(first_seq + records);
        }
        if changed {
            fsx::sync_dir(&log_dir)?;
        }
        index.clear();
        report.next_seq = next_seq;
        Ok((
            LogWriter {
                log_dir,
                shard,
                shard_count,
                opts,
                seg: None,
                sealing: None,
                buf: Vec::new(),
                cursor: 0,
                seg_end: SEGMENT_HEADER as u64,
                next_seq,
                seg_first_seq: next_seq,
                seg_records: 0,
                seg_min_at: u64::MAX,
                seg_max_at: 0,
                index,
                spare: OpenIndex::default(),
                clock_ms: now_ms,
                durable_seq: next_seq,
                loss_end: None,
                dropped: 0,
            },
            report,
        ))
    }

    /// The log directory.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }

    /// The shard this log belongs to.
    pub fn shard(&self) -> u32 {
        self.shard
    }

    /// The sequence number the next record gets (a snapshot begun now says "replay from
    /// here").
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Every record below this sequence number is on disk (fdatasynced).
    pub fn durable_seq(&self) -> u64 {
        self.durable_seq
    }

    /// Bytes appended and not yet written to the file.
    pub fn buffered_bytes(&self) -> usize {
        self.buf.len() - self.cursor
    }

    /// Records refused since the writer opened (buffer full).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Whether records may have been lost (refused appends, a failed fdatasync) since the last
    /// snapshot that covers them: the daemon should write a snapshot.
    pub fn needs_snapshot(&self) -> bool {
        self.loss_end.is_some()
    }

    /// Tells the writer a snapshot beginning at log position `position` is durably written:
    /// it covers the losses before that position.
    pub fn snapshot_written(&mut self, position: u64) {
        if self.loss_end.is_some_and(|end| position >= end) {
            self.loss_end = None;
        }
    }

    fn note_loss(&mut self) {
        self.loss_end = Some(self.next_seq);
    }

    /// Appends a transition to the buffer and returns its sequence number. No IO.
    /// [`ErrorKind::BufferFull`] when `max_buffer_bytes` wait to be written (the record is
    /// dropped and counted).
    pub fn append(&mut self, t: &Transition) -> Result<u64> {
        let frame = transition_frame(t);
        self.reserve(frame.len())?;
        let offset = self.seg_end + self.buf.len() as u64;
        self.buf.extend_from_slice(&frame);
        self.index.push(t.user, offset as u32);
        self.seg_min_at = self.seg_min_at.min(t.at_ms);
        self.seg_max_at = self.seg_max_at.max(t.at_ms);
        self.clock_ms = self.clock_ms.max(t.at_ms);
        Ok(self.count_record())
    }

    /// Appends a record of a kind the daemon defines (`kind >= 16`, payload up to 65,534
    /// bytes). No IO.
    pub fn append_other(&mut self, kind: u8, payload: &[u8]) -> Result<u64> {
        if kind < FIRST_OTHER_KIND {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                &self.log_dir,
                format!("record kind {kind} is the store's own (daemon kinds are 16 to 255)"),
            ));
        }
        if payload.len() + 1 > MAX_PAYLOAD {
            return Err(Error::new(
                ErrorKind::TooLarge,
                &self.log_dir,
                format!(
                    "a record of {} bytes (at most {MAX_PAYLOAD})",
                    payload.len() + 1
                ),
            ));
        }
        let len = FRAME_HEADER + 1 + payload.len();
        self.reserve(len)?;
        let at = self.buf.len();
        let len16 = (1 + payload.len()) as u16;
        self.buf.extend_from_slice(&len16.to_le_bytes());
        self.buf.extend_from_slice(&[0; 4]);
        self.buf.push(kind);
        self.buf.extend_from_slice(payload);
        let c = crc(&[&len16.to_le_bytes(), &self.buf[at + FRAME_HEADER..]]);
        self.buf[at + 2..at + 6].copy_from_slice(&c.to_le_bytes());
        Ok(self.count_record())
    }

    fn reserve(&mut self, len: usize) -> Result<()> {
        if self.buf.len() - self.cursor + len > self.opts.max_buffer_bytes {
            self.dropped += 1;
            self.note_loss();
            return Err(Error::new(
                ErrorKind::BufferFull,
                &self.log_dir,
                format!(
                    "{} bytes wait to be written: record dropped",
                    self.buf.len() - self.cursor
                ),
            ));
        }
        Ok(())
    }

    fn count_record(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.seg_records += 1;
        seq
    }

    /// The segment offset where `buf[0]` goes.
    pub(crate) fn buf_seg_offset(&self) -> u64 {
        self.seg_end
    }

    /// Writes the buffer to the file, rotating to a new segment when the current one has
    /// reached `segment_bytes`. On an error nothing appended is lost: the next call goes on
    /// where this one stopped.
    pub fn write(&mut self) -> Result<()> {
        if self.sealing.is_some() {
            self.finish_sealing()?;
        }
        if self.buf.len() == self.cursor {
            return Ok(());
        }
        if self.seg.is_none() {
            self.create_segment()?;
        }
        self.flush_buf()?;
        let full = self
            .seg
            .as_ref()
            .is_some_and(|s| s.len >= self.opts.segment_bytes);
        if full {
            self.begin_sealing();
            self.finish_sealing()?;
        }
        Ok(())
    }

    /// Writes, then fdatasyncs the segment; returns [`LogWriter::durable_seq`].
    pub fn sync(&mut self) -> Result<u64> {
        self.write()?;
        if let Some(seg) = &mut self.seg {
            if seg.dirty {
                if let Err(e) = seg.file.sync_data() {
                    let err = Error::io(&seg.path, "fdatasync failed", e);
                    self.abandon_segment();
                    return Err(err);
                }
                seg.dirty = false;
            }
        }
        self.durable_seq = self.next_seq;
        Ok(self.durable_seq)
    }

    /// Writes, seals the current segment and syncs: the clean shutdown. The next writer
    /// finds nothing to repair.
    pub fn close(mut self) -> Result<u64> {
        self.write()?;
        if self.seg.is_some() {
            self.begin_sealing();
            self.finish_sealing()?;
        }
        self.durable_seq = self.next_seq;
        Ok(self.durable_seq)
    }

    fn abandon_segment(&mut self) {
        self.seg = None;
        self.index.clear();
        self.seg_end = SEGMENT_HEADER as u64;
        self.seg_first_seq = self.next_seq;
        self.seg_records = 0;
        self.seg_min_at = u64::MAX;
        self.seg_max_at = 0;
        self.note_loss();
    }

    fn create_segment(&mut self) -> Result<()> {
        debug_assert_eq!(self.cursor, 0);
        let first_seq = self.seg_first_seq;
        let path = fsx::segment_path(&self.log_dir, first_seq);
        let header = SegmentHeader {
            shard: self.shard,
            shard_count: self.shard_count,
            first_seq,
            created_ms: self.clock_ms,
        };
        let result = (|| {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(|e| Error::io(&path, "cannot create the segment", e))?;
            file.write_all(&header.encode())
                .map_err(|e| Error::io(&path, "write failed", e))?;
            fsx::sync_dir(&self.log_dir)?;
            Ok(file)
        })();
        let file = match result {
            Ok(f) => f,
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                return Err(e);
            }
        };
        self.seg = Some(OpenSegment {
            file,
            path,
            first_seq,
            len: SEGMENT_HEADER as u64,
            dirty: true,
        });
        Ok(())
    }

    fn flush_buf(&mut self) -> Result<()> {
        let Some(seg) = &mut self.seg else {
            return Ok(());
        };
        while self.cursor < self.buf.len() {
            match seg.file.write(&self.buf[self.cursor..]) {
                Ok(0) => {
                    return Err(Error::new(
                        ErrorKind::Io,
                        &seg.path,
                        "the file took no bytes",
                    ))
                }
                Ok(n) => {
                    self.cursor += n;
                    seg.len += n as u64;
                    seg.dirty = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(&seg.path, "write failed", e).at(seg.len)),
            }
        }
        self.seg_end += self.buf.len() as u64;
        self.buf.clear();
        self.cursor = 0;
        Ok(())
    }

    fn begin_sealing(&mut self) {
        let Some(seg) = self.seg.take() else {
            return;
        };
        let spare = std::mem::take(&mut self.spare);
        let index = std::mem::replace(&mut self.index, spare);
        let created = self.clock_ms;
        let seal = Seal {
            records: self.seg_records,
            first_seq: seg.first_seq,
            min_at_ms: if self.seg_min_at == u64::MAX {
                created
            } else {
                self.seg_min_at
            },
            max_at_ms: if self.seg_min_at == u64::MAX {
                created
            } else {
                self.seg_max_at
            },
        };
        self.sealing = Some(Sealing {
            seg,
            index,
            seal,
            seal_written: 0,
        });
        self.seg_end = SEGMENT_HEADER as u64;
        // Sealing begins with an empty buffer: the next segment starts at the next record.
        self.seg_first_seq = self.next_seq;
        self.seg_records = 0;
        self.seg_min_at = u64::MAX;
        self.seg_max_at = 0;
    }

    fn finish_sealing(&mut self) -> Result<()> {
        let Some(s) = &mut self.sealing else {
            return Ok(());
        };
        let frame = s.seal.frame();
        while s.seal_written < frame.len() {
            match s.seg.file.write(&frame[s.seal_written..]) {
                Ok(0) => {
                    return Err(Error::new(
                        ErrorKind::Io,
                        &s.seg.path,
                        "the file took no bytes",
                    ))
                }
                Ok(n) => {
                    s.seal_written += n;
                    s.seg.len += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io(&s.seg.path, "write of the seal failed", e)),
            }
        }
        if let Err(e) = s.seg.file.sync_data() {
            let err = Error::io(&s.seg.path, "fdatasync failed", e);
            let mut s = self.sealing.take().expect("sealing");
            s.index.clear();
            self.spare = s.index;
            self.note_loss();
            return Err(err);
        }
        let mut s = self.sealing.take().expect("sealing");
        let idx_path = fsx::index_path(&self.log_dir, s.seg.first_seq);
        // A failed index write loses nothing: history scans the segment instead, and the next
        // writer rebuilds the index.
        let indexed = s
            .index
            .write(&idx_path, self.shard, s.seg.first_seq, s.seg.len);
        s.index.clear();
        self.spare = s.index;
        self.durable_seq = self.durable_seq.max(s.seal.first_seq + s.seal.records);
        indexed?;
        fsx::sync_dir(&self.log_dir)
    }
}
