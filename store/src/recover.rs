//! Recovery: what a restarting daemon reads back, and what it had to skip.
//!
//! [`recover`] picks a shard directory's newest snapshot that validates whole (the one before
//! it when the newest does not: "start from what is valid"; none at all when neither does,
//! and then the whole log is replayed), and says from which log position to replay.
//! [`Recovery::snapshot`] streams the chosen snapshot's chunks; [`Recovery::log`] streams the
//! log records from that position on, across segments ([`LogCursor`]), stopping at each
//! segment's torn tail or corruption and going on with the next segment. What was skipped is
//! counted by reason ([`Skipped`]), with a note per event naming the file, the byte and why.
//!
//! Refused rather than skipped (an `Err`, the daemon does not start): a snapshot or segment
//! of another format version or record encoding (a downgrade must not silently drop the
//! newer state), and IO errors other than a file's content (permissions, a failing disk).
//!
//! [`list_shards`] lists a state directory's shard directories with the shard counts their
//! headers carry, for a daemon restarted with another `shards.count`: it recovers every
//! directory, routes each user to its new owner (keeping, for a user found twice, the record
//! of the higher version), writes the new shards' snapshots, then removes the directories of
//! shards that no longer exist ([`remove_shard_dir`]).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use presenced_core::event::Transition;

use crate::error::{Error, ErrorKind, Result};
use crate::fsx;
use crate::segment::{
    list_segments, Entry, LogRecord, SegmentEnd, SegmentFile, SegmentHeader, SegmentReader,
};
use crate::snapshot::{list_snapshots, SnapshotInfo, SnapshotMeta, SnapshotReader};

/// Why something was skipped during recovery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// A snapshot did not validate (truncated, checksum, corrupt); an older one or none was
    /// used.
    SnapshotInvalid,
    /// A segment ended in a torn record (normal after a crash: the unsynced tail).
    TornTail,
    /// A sealed segment held a record that does not check: the rest of it was skipped.
    CorruptSegment,
    /// A segment's header did not validate: the whole segment was skipped.
    BadSegment,
    /// A record's checksum held but its content made no sense: that record was skipped.
    InvalidRecord,
    /// Sequence numbers are missing between the replay position and the log, or between two
    /// segments (retention, a lost sync, a removed segment).
    LogGap,
    /// A record whose sequence number was already read (overlapping segments) was skipped.
    Duplicate,
}

impl SkipReason {
    /// Every reason, in counter order.
    pub const ALL: [SkipReason; 7] = [
        SkipReason::SnapshotInvalid,
        SkipReason::TornTail,
        SkipReason::CorruptSegment,
        SkipReason::BadSegment,
        SkipReason::InvalidRecord,
        SkipReason::LogGap,
        SkipReason::Duplicate,
    ];

    /// A short stable name, for counters and log fields.
    pub fn label(self) -> &'static str {
        match self {
            SkipReason::SnapshotInvalid => "snapshot_invalid",
            SkipReason::TornTail => "torn_tail",
            SkipReason::CorruptSegment => "corrupt_segment",
            SkipReason::BadSegment => "bad_segment",
            SkipReason::InvalidRecord => "invalid_record",
            SkipReason::LogGap => "log_gap",
            SkipReason::Duplicate => "duplicate",
        }
    }
}

/// One thing skipped: which file, where, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkipNote {
    /// The reason.
    pub reason: SkipReason,
    /// The file.
    pub path: PathBuf,
    /// The byte, when it is about one.
    pub offset: Option<u64>,
    /// What exactly.
    pub detail: String,
}

/// Notes kept (counts go on past it).
const MAX_NOTES: usize = 64;

/// What was skipped, counted by reason, with the first 64 notes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    counts: [u64; SkipReason::ALL.len()],
    notes: Vec<SkipNote>,
}

impl Skipped {
    /// How many of `reason` (records for `InvalidRecord` and `Duplicate`, events otherwise).
    pub fn count(&self, reason: SkipReason) -> u64 {
        self.counts[reason as usize]
    }

    /// All counts added up.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The notes, in the order things were found (the first 64).
    pub fn notes(&self) -> &[SkipNote] {
        &self.notes
    }

    pub(crate) fn add(
        &mut self,
        reason: SkipReason,
        n: u64,
        path: &Path,
        offset: Option<u64>,
        detail: String,
    ) {
        if n == 0 {
            return;
        }
        self.counts[reason as usize] += n;
        if self.notes.len() < MAX_NOTES {
            self.notes.push(SkipNote {
                reason,
                path: path.to_path_buf(),
                offset,
                detail,
            });
        }
    }

    /// Adds another's counts and notes.
    pub fn merge(&mut self, other: &Skipped) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        for n in &other.notes {
            if self.notes.len() < MAX_NOTES {
                self.notes.push(n.clone());
            }
        }
    }
}

/// What [`recover`] chose for one shard directory.
#[derive(Clone, Debug)]
pub struct Recovery {
    shard_dir: PathBuf,
    record_encoding: u16,
    /// The snapshot to restore (validated whole), if any.
    pub snapshot: Option<SnapshotInfo>,
    /// The log position to replay from: the snapshot's, or 0 without one.
    pub replay_from: u64,
    /// Snapshots skipped.
    pub skipped: Skipped,
}

/// Chooses what to restore for the shard directory `shard_dir` (see the module doc). Reads
/// every snapshot it considers whole once (to validate it); [`Recovery::snapshot`] reads it
/// again.
pub fn recover(shard_dir: &Path, record_encoding: u16) -> Result<Recovery> {
    let mut skipped = Skipped::default();
    let mut chosen = None;
    for snap in list_snapshots(shard_dir)? {
        match SnapshotReader::verify(&snap.path, Some(record_encoding)) {
            Ok(info) if info.meta.log_position == snap.log_position => {
                chosen = Some(info);
                break;
            }
            Ok(info) => skipped.add(
                SkipReason::SnapshotInvalid,
                1,
                &snap.path,
                None,
                format!(
                    "its header says log position {}, its name {}",
                    info.meta.log_position, snap.log_position
                ),
            ),
            Err(e)
                if e.kind().is_content()
                    && !matches!(
                        e.kind(),
                        ErrorKind::ForeignVersion | ErrorKind::ForeignEncoding
                    ) =>
            {
                skipped.add(
                    SkipReason::SnapshotInvalid,
                    1,
                    &snap.path,
                    e.offset(),
                    e.to_string(),
                )
            }
            Err(e) => return Err(e),
        }
    }
    let replay_from = chosen.as_ref().map_or(0, |s| s.meta.log_position);
    Ok(Recovery {
        shard_dir: shard_dir.to_path_buf(),
        record_encoding,
        snapshot: chosen,
        replay_from,
        skipped,
    })
}

impl Recovery {
    /// The shard directory.
    pub fn shard_dir(&self) -> &Path {
        &self.shard_dir
    }

    /// A reader of the chosen snapshot's chunks (validated again as they are read).
    pub fn snapshot(&self) -> Result<Option<SnapshotReader>> {
        self.snapshot
            .as_ref()
            .map(|s| SnapshotReader::open(&s.path, Some(self.record_encoding)))
            .transpose()
    }

    /// A cursor over the log records from [`Recovery::replay_from`] on.
    pub fn log(&self) -> Result<LogCursor> {
        LogCursor::open(&fsx::log_dir(&self.shard_dir), self.replay_from)
    }
}

/// Streams a log's records from a position on, across segments (see the module doc).
pub struct LogCursor {
    segments: VecDeque<SegmentFile>,
    current: Option<SegmentReader>,
    from: u64,
    expected: u64,
    skipped: Skipped,
    log_dir: PathBuf,
}

impl LogCursor {
    /// A cursor over the log in `log_dir`, from sequence number `from` on.
    pub fn open(log_dir: &Path, from: u64) -> Result<LogCursor> {
        let all = list_segments(log_dir)?;
        // Begin with the last segment starting at or before `from`.
        let start = all.iter().rposition(|s| s.first_seq <= from).unwrap_or(0);
        Ok(LogCursor {
            segments: all.into_iter().skip(start).collect(),
            current: None,
            from,
            expected: from,
            skipped: Skipped::default(),
            log_dir: log_dir.to_path_buf(),
        })
    }

    /// What was skipped so far.
    pub fn skipped(&self) -> &Skipped {
        &self.skipped
    }

    /// The sequence number after the last record read (the position the log goes on from).
    pub fn next_seq(&self) -> u64 {
        self.expected
    }

    /// The header of the segment being read.
    pub fn segment(&self) -> Option<&SegmentHeader> {
        self.current.as_ref().map(SegmentReader::header)
    }

    fn finish_segment(&mut self) {
        let Some(r) = self.current.take() else {
            return;
        };
        let path = r.path().to_path_buf();
        self.skipped.add(
            SkipReason::InvalidRecord,
            r.invalid_records(),
            &path,
            None,
            format!("{} records with invalid content", r.invalid_records()),
        );
        match r.end() {
            Some(SegmentEnd::Torn { offset, reason }) => self.skipped.add(
                SkipReason::TornTail,
                1,
                &path,
                Some(*offset),
                format!(
                    "{reason}: the last {} bytes ignored",
                    r.file_len().saturating_sub(*offset)
                ),
            ),
            Some(SegmentEnd::Corrupt { offset, reason }) => {
                let lost = r
                    .tail_seal()
                    .map(|s| (s.first_seq + s.records).saturating_sub(r.next_seq()))
                    .unwrap_or(0);
                self.skipped.add(
                    SkipReason::CorruptSegment,
                    1,
                    &path,
                    Some(*offset),
                    format!("{reason}: {lost} records after it skipped"),
                );
            }
            _ => {}
        }
    }

    /// The next record, or `None` at the end of the log. `Err` for IO errors and foreign
    /// format versions.
    pub fn next_entry(&mut self) -> Result<Option<Entry<'_>>> {
        loop {
            if self.current.is_none() {
                let Some(seg) = self.segments.pop_front() else {
                    return Ok(None);
                };
                let reader = match SegmentReader::open(&seg.path) {
                    Ok(r) => r,
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) if e.kind().is_content() && e.kind() != ErrorKind::ForeignVersion => {
                        self.skipped.add(
                            SkipReason::BadSegment,
                            1,
                            &seg.path,
                            e.offset(),
                            e.to_string(),
                        );
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let first = reader.header().first_seq;
                if first != seg.first_seq {
                    self.skipped.add(
                        SkipReason::BadSegment,
                        1,
                        &seg.path,
                        None,
                        format!(
                            "its header says first record {first}, its name {}",
                            seg.first_seq
                        ),
                    );
                    continue;
                }
                if first > self.expected {
                    self.skipped.add(
                        SkipReason::LogGap,
                        1,
                        &seg.path,
                        None,
                        format!("records {} to {} are missing", self.expected, first - 1),
                    );
                    self.expected = first;
                }
                self.current = Some(reader);
            }
            let reader = self.current.as_mut().expect("set above");
            let mut duplicates = 0u64;
            let mut found = None;
            while reader.advance()? {
                let (seq, _, _) = reader.current.expect("advance read a record");
                if seq >= self.expected {
                    found = Some(seq);
                    break;
                }
                if seq >= self.from {
                    duplicates += 1;
                }
            }
            if duplicates > 0 {
                let path = reader.path().to_path_buf();
                self.skipped.add(
                    SkipReason::Duplicate,
                    duplicates,
                    &path,
                    None,
                    format!("{duplicates} records already read"),
                );
            }
            let Some(seq) = found else {
                self.finish_segment();
                continue;
            };
            self.expected = seq + 1;
            return Ok(self.current.as_ref().and_then(SegmentReader::current_entry));
        }
    }

    /// The next transition (records of other kinds are passed over), with its sequence
    /// number.
    pub fn next_transition(&mut self) -> Result<Option<(u64, Transition)>> {
        while let Some(e) = self.next_entry()? {
            if let LogRecord::Transition(t) = e.record {
                return Ok(Some((e.seq, t)));
            }
        }
        Ok(None)
    }

    /// The log directory.
    pub fn log_dir(&self) -> &Path {
        &self.log_dir
    }
}

impl Iterator for LogCursor {
    type Item = Result<(u64, Transition)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_transition().transpose()
    }
}

/// A shard directory found in a state directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardDirInfo {
    /// Its shard index, from its name.
    pub shard: u32,
    /// Its path.
    pub path: PathBuf,
    /// The newest snapshot's header that reads, if any.
    pub snapshot: Option<SnapshotMeta>,
    /// The shard counts found in its snapshot and segment headers, ascending.
    pub shard_counts: Vec<u32>,
    /// Its log segments.
    pub segments: usize,
}

/// The shard directories of a state directory, by shard index, with the shard counts their
/// headers carry (headers only: cheap).
pub fn list_shards(root: &Path) -> Result<Vec<ShardDirInfo>> {
    let mut out = Vec::new();
    for name in fsx::list_names(root)? {
        let Some(shard) = fsx::parse_shard_name(&name) else {
            continue;
        };
        let path = root.join(&name);
        if !path.is_dir() {
            continue;
        }
        let mut counts = Vec::new();
        let mut snapshot = None;
        for s in list_snapshots(&path)? {
            if let Ok(meta) = SnapshotMeta::read(&s.path) {
                counts.push(meta.shard_count);
                snapshot.get_or_insert(meta);
            }
        }
        let segments = list_segments(&fsx::log_dir(&path))?;
        for s in &segments {
            if let Ok(h) = SegmentHeader::read(&s.path) {
                counts.push(h.shard_count);
            }
        }
        counts.sort_unstable();
        counts.dedup();
        out.push(ShardDirInfo {
            shard,
            path,
            snapshot,
            shard_counts: counts,
            segments: segments.len(),
        });
    }
    out.sort_by_key(|s| s.shard);
    Ok(out)
}

/// Removes a shard directory (after its users moved to other shards): renamed out of the way
/// first, so a crash never leaves half a directory that looks like a shard.
pub fn remove_shard_dir(root: &Path, shard: u32) -> Result<()> {
    let dir = fsx::shard_dir(root, shard);
    if !dir.exists() {
        return Ok(());
    }
    let gone = root.join(format!(".removed-shard-{shard}"));
    if gone.exists() {
        std::fs::remove_dir_all(&gone).map_err(|e| Error::io(&gone, "cannot remove", e))?;
    }
    std::fs::rename(&dir, &gone).map_err(|e| Error::io(&dir, "rename failed", e))?;
    fsx::sync_dir(root)?;
    std::fs::remove_dir_all(&gone).map_err(|e| Error::io(&gone, "cannot remove", e))?;
    fsx::sync_dir(root)
}
