//! Retention: which log segments to drop, so the log keeps `last_seen_retention` of history
//! within `state.log_max_bytes`, and never what a restart needs.
//!
//! [`apply_retention`] removes whole sealed segments (and their index files), oldest first:
//!
//! 1. **By age**: a segment whose newest record is older than `now_ms - max_age_ms`.
//! 2. **By size**: while the log (segments and indexes) is over `max_bytes`, the oldest.
//!
//! Never removed: the last segment (the open one), and any segment holding records at or
//! after the newest snapshot's log position (a restart replays them). By age, the segments
//! the previous snapshot needs are kept too (it is the fallback when the newest does not
//! validate; a snapshot interval of log at most); the size cap may drop those. When the size
//! cap cannot be met without a segment the newest snapshot needs, nothing more is removed and
//! [`RetentionReport::needs_snapshot`] is set: the daemon writes a snapshot (which moves the
//! replay position past those segments) and applies retention again. Without any snapshot the
//! whole log is needed, so nothing is removed.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsx;
use crate::segment::{list_segments, read_tail_seal, SegmentHeader, SegmentReader};
use crate::snapshot::{list_snapshots, SnapshotMeta};

/// How much log to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Segments whose newest record is older than this are dropped (`last_seen_retention`).
    pub max_age_ms: u64,
    /// The log's size cap in bytes (`state.log_max_bytes`).
    pub max_bytes: u64,
}

/// What [`apply_retention`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionReport {
    /// Segments removed.
    pub removed: Vec<PathBuf>,
    /// Bytes removed (segments and indexes).
    pub removed_bytes: u64,
    /// Bytes of log left.
    pub kept_bytes: u64,
    /// The log is over its size cap and only segments the newest snapshot needs are left to
    /// drop: write a snapshot.
    pub needs_snapshot: bool,
    /// Records from this position on are kept for the newest snapshot.
    pub needed_from: u64,
}

struct Seg {
    path: PathBuf,
    first_seq: u64,
    /// The first sequence number of the next segment (this one's records are below it).
    end_seq: u64,
    bytes: u64,
}

fn newest_at(path: &Path, len: u64) -> Result<u64> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, "cannot open", e))?;
    if let Some(seal) = read_tail_seal(&file, path, len)? {
        return Ok(seal.max_at_ms);
    }
    // Unsealed (abandoned after a failed sync, or not yet repaired): read it through.
    let mut r = SegmentReader::open(path)?;
    r.skip_to_end()?;
    Ok(match r.at_range() {
        Some((_, max)) => max,
        None => SegmentHeader::read(path)?.created_ms,
    })
}

/// Applies `policy` to the log of `shard_dir` as of `now_ms` (see the module doc).
pub fn apply_retention(
    shard_dir: &Path,
    now_ms: u64,
    policy: &RetentionPolicy,
) -> Result<RetentionReport> {
    let log_dir = fsx::log_dir(shard_dir);
    let positions: Vec<u64> = list_snapshots(shard_dir)?
        .iter()
        .filter_map(|s| SnapshotMeta::read(&s.path).ok())
        .map(|m| m.log_position)
        .take(2)
        .collect();
    let newest = positions.first().copied().unwrap_or(0);
    let fallback = positions.get(1).copied().unwrap_or(newest).min(newest);
    let files = list_segments(&log_dir)?;
    let mut segs = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let idx = fsx::index_path(&log_dir, f.first_seq);
        let idx_bytes = std::fs::metadata(&idx).map(|m| m.len()).unwrap_or(0);
        segs.push(Seg {
            path: f.path.clone(),
            first_seq: f.first_seq,
            end_seq: files.get(i + 1).map_or(u64::MAX, |n| n.first_seq),
            bytes: f.len + idx_bytes,
        });
    }
    let mut report = RetentionReport {
        needed_from: newest,
        ..RetentionReport::default()
    };
    let mut total: u64 = segs.iter().map(|s| s.bytes).sum();
    let cutoff = now_ms.saturating_sub(policy.max_age_ms);
    let last = segs.len().saturating_sub(1);
    let mut removed = vec![false; segs.len()];
    // Candidates: everything but the open segment, oldest first, while not needed.
    for i in 0..last {
        let s = &segs[i];
        if s.end_seq > fallback {
            break;
        }
        let len = std::fs::metadata(&s.path).map_or(0, |m| m.len());
        let max_at = newest_at(&s.path, len)?;
        if max_at < cutoff {
            remove(&log_dir, &segs[i], &mut report)?;
            removed[i] = true;
            total -= segs[i].bytes;
        }
    }
    for i in 0..last {
        if total <= policy.max_bytes {
            break;
        }
        if removed[i] {
            continue;
        }
        if segs[i].end_seq > newest {
            report.needs_snapshot = true;
            break;
        }
        remove(&log_dir, &segs[i], &mut report)?;
        removed[i] = true;
        total -= segs[i].bytes;
    }
    if !report.removed.is_empty() {
        fsx::sync_dir(&log_dir)?;
    }
    report.kept_bytes = total;
    Ok(report)
}

fn remove(log_dir: &Path, seg: &Seg, report: &mut RetentionReport) -> Result<()> {
    fsx::remove_if_present(&fsx::index_path(log_dir, seg.first_seq))?;
    fsx::remove_if_present(&seg.path)?;
    report.removed.push(seg.path.clone());
    report.removed_bytes += seg.bytes;
    Ok(())
}
