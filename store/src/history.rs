//! A user's history of sessions, from the log: [`history`] (any thread, from the files) and
//! [`LogWriter::history`] (the store thread, using the writer's in-memory index of the open
//! segment).
//!
//! **Spans.** The user's transitions, in version order, each begin a [`Span`] that ends where
//! the next begins (`end_ms` is clamped to be at least `start_ms` should the wall clock have
//! stepped back). The newest span is ongoing (`end_ms: None`) whatever its state: an offline
//! span is a span too, so "offline since 14:02, cause timeout" shows. A span is in the answer
//! when its version is above `after_version` and it ends at or after `since_ms` (or is
//! ongoing), as `wire-format/SPEC.md` § P6.12 says; the
//! first `max_spans` such spans, oldest first, are returned, and `more` says whether others
//! follow (ask again with `after_version` = the last span's version). History reaches back as
//! far as the log does (`last_seen_retention`); a span may have begun before the oldest
//! segment kept, and then starts at the oldest transition kept.
//!
//! **Cost.** Per segment, one index lookup (a binary search of a few positioned reads in a
//! sealed segment's index file, then one read of the user's offsets; a binary search in the
//! open segment's in-memory index), then only the user's records are read, several adjacent
//! ones per read. Within a segment, the records before `after_version` and before `since_ms`
//! are skipped by binary searches (a few single-record reads), the rest are read in batches of
//! `max_spans + 2`, and reading stops once the page is full. A segment without a valid index
//! (the open segment, read by [`history`] from another thread; one whose index is missing
//! until the next writer rebuilds it) is scanned whole. Every record read is checked
//! (checksum, kind, user); an index that points wrong makes that segment scanned instead.
//!
//! **Clock steps.** The binary search on `since_ms` within a segment assumes a user's wall
//! times grow with their versions there; after the wall clock stepped back, spans around the
//! step may be left out of a `since_ms` answer (never made up). Paging by `after_version` is
//! exact regardless (versions always grow).
//!
//! **Last seen** is the time of the user's newest logged transition that set it
//! (`Transition::seen`, rule 4; heartbeats that only carry activity make no transition, so the
//! live query's last seen can be later).

use std::fs::File;
use std::path::{Path, PathBuf};

use presenced_core::event::{Cause, PublicState, Transition};

use crate::codec::{crc, decode_transition, FRAME_HEADER, TRANSITION_FRAME, TRANSITION_PAYLOAD};
use crate::error::{Error, ErrorKind, Result};
use crate::fsx;
use crate::index::{IndexFile, OpenIndex};
use crate::segment::{list_segments, LogRecord, SegmentReader};
use crate::writer::LogWriter;

/// What to look up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryQuery {
    /// The user.
    pub user: u64,
    /// Only spans that end at or after this (or are ongoing), Unix ms; 0 for all.
    pub since_ms: u64,
    /// Only spans whose version is above this (paging); 0 for all.
    pub after_version: u64,
    /// At most this many spans.
    pub max_spans: usize,
}

/// A stretch of time in one public state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    /// Version of the transition that began it.
    pub version: u64,
    /// When it began, Unix ms.
    pub start_ms: u64,
    /// When it ended, Unix ms; `None` while it goes on.
    pub end_ms: Option<u64>,
    /// The public state.
    pub state: PublicState,
    /// Why it began.
    pub cause: Cause,
    /// The user's live devices when it began.
    pub devices: u8,
}

/// The answer to a [`HistoryQuery`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    /// The spans, oldest first.
    pub spans: Vec<Span>,
    /// More spans follow the last one returned.
    pub more: bool,
    /// When the newest logged transition that set the user's last seen happened, Unix ms.
    pub last_seen_ms: Option<u64>,
    /// Segments read whole for want of a valid index.
    pub segments_scanned: u32,
}

/// Where one segment's records of the user come from.
enum Source<'a> {
    /// A sealed segment with its index.
    Indexed {
        path: PathBuf,
        file: File,
        index: IndexFile,
    },
    /// A segment without a valid index: read whole.
    Scan { path: PathBuf },
    /// The writer's open (or sealing) segment: its in-memory index; records below `split`
    /// are in `file`, the rest in `buf` (which begins at segment offset `split`).
    Memory {
        path: &'a Path,
        index: &'a OpenIndex,
        file: Option<&'a File>,
        split: u64,
        buf: &'a [u8],
    },
}

/// One segment's records of the user, by position (in log order, so in version order).
struct Hits<'a, 's> {
    source: &'s Source<'a>,
    /// The log (shard directory) it belongs to.
    group: usize,
    records: Records,
}

enum Records {
    /// Offsets (ascending) of frames still to be read.
    Offsets(Vec<u32>),
    /// Already decoded (a scan).
    Decoded(Vec<Transition>),
}

impl Hits<'_, '_> {
    fn len(&self) -> usize {
        match &self.records {
            Records::Offsets(o) => o.len(),
            Records::Decoded(d) => d.len(),
        }
    }
}

/// Reads the transition frames at `offsets` from `file` (a few adjacent ones per read),
/// checking each is a valid transition of `user`. `Ok(false)` when one is not.
fn read_frames(
    file: &File,
    path: &Path,
    offsets: &[u32],
    user: u64,
    scratch: &mut Vec<u8>,
    out: &mut Vec<Transition>,
) -> Result<bool> {
    const WINDOW: u64 = 64 << 10;
    // Ascending, frames apart (an index could say anything).
    if offsets
        .windows(2)
        .any(|w| (w[1] as u64) < w[0] as u64 + TRANSITION_FRAME as u64)
    {
        return Ok(false);
    }
    let mut i = 0;
    while i < offsets.len() {
        let start = offsets[i] as u64;
        let mut j = i + 1;
        while j < offsets.len() && offsets[j] as u64 + TRANSITION_FRAME as u64 - start <= WINDOW {
            j += 1;
        }
        let end = offsets[j - 1] as u64 + TRANSITION_FRAME as u64;
        scratch.resize((end - start) as usize, 0);
        if let Err(e) = fsx::read_at(file, path, scratch, start) {
            if e.kind() == ErrorKind::Truncated {
                return Ok(false);
            }
            return Err(e);
        }
        for &off in &offsets[i..j] {
            let at = (off as u64 - start) as usize;
            match parse_frame(&scratch[at..at + TRANSITION_FRAME], user) {
                Some(t) => out.push(t),
                None => return Ok(false),
            }
        }
        i = j;
    }
    Ok(true)
}

/// A transition frame of `user`, checked.
fn parse_frame(frame: &[u8], user: u64) -> Option<Transition> {
    let len = u16::from_le_bytes([*frame.first()?, *frame.get(1)?]) as usize;
    if len != TRANSITION_PAYLOAD {
        return None;
    }
    let stored = u32::from_le_bytes(frame.get(2..6)?.try_into().ok()?);
    let payload = frame.get(FRAME_HEADER..FRAME_HEADER + len)?;
    if crc(&[&frame[..2], payload]) != stored {
        return None;
    }
    decode_transition(payload).filter(|t| t.user == user)
}

fn scan(path: &Path, user: u64) -> Result<Vec<Transition>> {
    let mut out = Vec::new();
    let mut r = match SegmentReader::open(path) {
        Ok(r) => r,
        Err(e) if e.kind().is_content() || e.kind() == ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    while let Some(e) = r.next_entry()? {
        if let LogRecord::Transition(t) = e.record {
            if t.user == user {
                out.push(t);
            }
        }
    }
    Ok(out)
}

struct Lookup {
    user: u64,
    scratch: Vec<u8>,
    scanned: u32,
}

impl Lookup {
    /// The user's records in one segment, if it holds any.
    fn find<'a, 's>(
        &mut self,
        source: &'s Source<'a>,
        group: usize,
    ) -> Result<Option<Hits<'a, 's>>> {
        let records = match source {
            Source::Indexed { index, .. } => {
                let Some(entry) = index.lookup(self.user, &mut self.scratch)? else {
                    return Ok(None);
                };
                let mut offs = Vec::with_capacity(entry.count as usize);
                index.offsets(&entry, &mut self.scratch, &mut offs)?;
                Records::Offsets(offs)
            }
            Source::Scan { path } => {
                self.scanned += 1;
                Records::Decoded(scan(path, self.user)?)
            }
            Source::Memory { index, .. } => {
                let mut offs = Vec::new();
                index.offsets_of(self.user, &mut offs);
                Records::Offsets(offs)
            }
        };
        let hits = Hits {
            source,
            group,
            records,
        };
        Ok((hits.len() > 0).then_some(hits))
    }

    /// The user's records `lo..hi` of a segment (fewer if an index pointed wrong and the
    /// segment had to be scanned).
    fn range(&mut self, h: &mut Hits<'_, '_>, lo: usize, hi: usize) -> Result<Vec<Transition>> {
        let mut out = Vec::with_capacity(hi.saturating_sub(lo));
        let user = self.user;
        let fallback = match (&h.records, h.source) {
            (Records::Decoded(d), _) => {
                out.extend_from_slice(d.get(lo..hi.min(d.len())).unwrap_or(&[]));
                None
            }
            (Records::Offsets(o), Source::Indexed { path, file, .. }) => {
                if read_frames(file, path, &o[lo..hi], user, &mut self.scratch, &mut out)? {
                    None
                } else {
                    Some(path)
                }
            }
            (
                Records::Offsets(o),
                Source::Memory {
                    path,
                    file,
                    split,
                    buf,
                    ..
                },
            ) => {
                let o = &o[lo..hi];
                let cut = o.partition_point(|&x| (x as u64) < *split);
                let in_file = match file {
                    Some(f) => read_frames(f, path, &o[..cut], user, &mut self.scratch, &mut out)?,
                    None => cut == 0,
                };
                let in_buf = o[cut..].iter().all(|&x| {
                    let at = (x as u64 - split) as usize;
                    match buf
                        .get(at..at + TRANSITION_FRAME)
                        .and_then(|f| parse_frame(f, user))
                    {
                        Some(t) => {
                            out.push(t);
                            true
                        }
                        None => false,
                    }
                });
                if !(in_file && in_buf) {
                    return Err(Error::new(
                        ErrorKind::Corrupt,
                        path,
                        "the open segment does not hold what its index says",
                    ));
                }
                None
            }
            (Records::Offsets(_), Source::Scan { path }) => Some(path),
        };
        if let Some(path) = fallback {
            // The index points wrong: read the segment instead.
            self.scanned += 1;
            let d = scan(path, user)?;
            out.clear();
            out.extend_from_slice(d.get(lo.min(d.len())..hi.min(d.len())).unwrap_or(&[]));
            h.records = Records::Decoded(d);
        }
        Ok(out)
    }

    fn get(&mut self, h: &mut Hits<'_, '_>, i: usize) -> Result<Option<Transition>> {
        Ok(self.range(h, i, i + 1)?.first().copied())
    }

    /// The first position whose record does not satisfy `pred` (which holds for a prefix),
    /// by a binary search of single reads.
    fn partition(
        &mut self,
        h: &mut Hits<'_, '_>,
        pred: impl Fn(&Transition) -> bool,
    ) -> Result<usize> {
        let (mut lo, mut hi) = (0, h.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.get(h, mid)? {
                Some(t) if pred(&t) => lo = mid + 1,
                Some(_) => hi = mid,
                None => hi = hi.min(h.len()).min(mid),
            }
        }
        Ok(lo)
    }
}

/// The transitions that can begin or end an answered span, gathered in log order: counts the
/// spans whose end is known to be answered, to stop reading once the page is full.
struct Gather<'q> {
    q: &'q HistoryQuery,
    ts: Vec<Transition>,
    determined: usize,
}

impl Gather<'_> {
    fn push(&mut self, t: Transition) {
        if t.version <= self.q.after_version {
            return;
        }
        if let Some(p) = self.ts.last() {
            if p.version > self.q.after_version && t.at_ms.max(p.at_ms) >= self.q.since_ms {
                self.determined += 1;
            }
        }
        self.ts.push(t);
    }

    fn full(&self) -> bool {
        self.determined > self.q.max_spans
    }
}

fn indexed_or_scan(
    log_dir: &Path,
    first_seq: u64,
    path: PathBuf,
    len: u64,
) -> Result<Source<'static>> {
    let idx = fsx::index_path(log_dir, first_seq);
    match IndexFile::open(&idx, first_seq, len) {
        Ok(Some(index)) => match File::open(&path) {
            Ok(file) => Ok(Source::Indexed { path, file, index }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Source::Scan { path }),
            Err(e) => Err(Error::io(&path, "cannot open the segment", e)),
        },
        Ok(None) => Ok(Source::Scan { path }),
        Err(e) if e.kind().is_content() => Ok(Source::Scan { path }),
        Err(e) => Err(e),
    }
}

/// Answers `q` from `groups` of sources, each one log in log order (so in version order for
/// the user). With several logs, reading does not stop early (their versions interleave).
fn answer(groups: &[Vec<Source<'_>>], q: &HistoryQuery) -> Result<History> {
    let mut lookup = Lookup {
        user: q.user,
        scratch: Vec::new(),
        scanned: 0,
    };
    let mut found = Vec::new();
    for (g, sources) in groups.iter().enumerate() {
        for s in sources {
            if let Some(h) = lookup.find(s, g)? {
                found.push(h);
            }
        }
    }
    let early_stop = groups.len() == 1;
    let batch = q.max_spans.saturating_add(2).clamp(16, 4096);
    let mut gather = Gather {
        q,
        ts: Vec::new(),
        determined: 0,
    };
    'segments: for h in &mut found {
        let n = h.len();
        let Some(last) = lookup.get(h, n - 1)? else {
            continue;
        };
        if last.version <= q.after_version {
            continue;
        }
        if last.at_ms < q.since_ms {
            // Every span this segment begins ended before `since_ms`, except maybe the last.
            gather.push(last);
            continue;
        }
        let after = lookup.partition(h, |t| t.version <= q.after_version)?;
        let since = lookup.partition(h, |t| t.at_ms < q.since_ms)?;
        let mut i = after.max(since.saturating_sub(1));
        while i < h.len() {
            let hi = (i + batch).min(h.len());
            for t in lookup.range(h, i, hi)? {
                gather.push(t);
            }
            i = hi;
            if early_stop && gather.full() {
                break 'segments;
            }
        }
    }
    let mut ts = gather.ts;
    ts.sort_by_key(|t| t.version);
    ts.dedup_by_key(|t| t.version);
    let mut spans = Vec::new();
    let mut more = false;
    for (i, t) in ts.iter().enumerate() {
        let end_ms = ts.get(i + 1).map(|n| n.at_ms.max(t.at_ms));
        if t.version <= q.after_version || end_ms.is_some_and(|e| e < q.since_ms) {
            continue;
        }
        if spans.len() == q.max_spans {
            more = true;
            break;
        }
        spans.push(Span {
            version: t.version,
            start_ms: t.at_ms,
            end_ms,
            state: t.state,
            cause: t.cause,
            devices: t.devices,
        });
    }
    // Backward, per log: the newest transition that set last seen.
    let mut last_seen: Option<(u64, u64)> = None;
    for g in 0..groups.len() {
        'newest: for h in found.iter_mut().rev().filter(|h| h.group == g) {
            let mut hi = h.len();
            while hi > 0 {
                let lo = hi.saturating_sub(64);
                if let Some(t) = lookup.range(h, lo, hi)?.iter().rev().find(|t| t.seen) {
                    if last_seen.map_or(true, |(v, _)| t.version > v) {
                        last_seen = Some((t.version, t.at_ms));
                    }
                    break 'newest;
                }
                hi = lo.min(h.len());
            }
        }
    }
    Ok(History {
        spans,
        more,
        last_seen_ms: last_seen.map(|(_, at)| at),
        segments_scanned: lookup.scanned,
    })
}

/// The history of `q.user` from the log of `shard_dir` (see the module doc). Safe from any
/// thread while a writer appends: the open segment is read as far as it was written.
pub fn history(shard_dir: &Path, q: &HistoryQuery) -> Result<History> {
    history_in(&[shard_dir.to_path_buf()], q)
}

/// The history of `q.user` from the logs of several shard directories, merged by version
/// (after a change of `shards.count`, a user's older transitions are in their old shard's
/// log).
pub fn history_in(shard_dirs: &[PathBuf], q: &HistoryQuery) -> Result<History> {
    let mut groups = Vec::new();
    for dir in shard_dirs {
        let log_dir = fsx::log_dir(dir);
        let mut sources = Vec::new();
        for seg in list_segments(&log_dir)? {
            sources.push(indexed_or_scan(&log_dir, seg.first_seq, seg.path, seg.len)?);
        }
        groups.push(sources);
    }
    answer(&groups, q)
}

impl LogWriter {
    /// The history of `q.user` from this shard's log, using the in-memory index of the open
    /// segment and its unwritten buffer (see the module doc). `&mut` because a lookup may
    /// first sort the in-memory index's tail.
    pub fn history(&mut self, q: &HistoryQuery) -> Result<History> {
        self.index.prepare_lookup();
        if let Some(s) = &mut self.sealing {
            s.index.prepare_lookup();
        }
        let log_dir = self.log_dir();
        let sealing_first = self.sealing.as_ref().map(|s| s.seg.first_seq);
        let open_first = self.seg.as_ref().map(|s| s.first_seq);
        let mut sources = Vec::new();
        for seg in list_segments(log_dir)? {
            if Some(seg.first_seq) == sealing_first || Some(seg.first_seq) == open_first {
                continue;
            }
            sources.push(indexed_or_scan(log_dir, seg.first_seq, seg.path, seg.len)?);
        }
        if let Some(s) = &self.sealing {
            sources.push(Source::Memory {
                path: &s.seg.path,
                index: &s.index,
                file: Some(&s.seg.file),
                split: u64::MAX,
                buf: &[],
            });
        }
        if self.seg.is_some() || !self.buf.is_empty() {
            sources.push(Source::Memory {
                path: self.seg.as_ref().map_or(log_dir, |s| &s.path),
                index: &self.index,
                file: self.seg.as_ref().map(|s| &s.file),
                split: self.buf_seg_offset(),
                buf: &self.buf,
            });
        }
        answer(&[sources], q)
    }
}
