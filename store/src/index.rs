//! The per-user index of a log segment, so a history lookup reads only the user's records.
//!
//! **In memory** (`OpenIndex`), for the open segment: appending a record pushes
//! `(user, offset)` onto a vector (16 bytes a record, bounded by the segment's size; no hashing
//! on the append path). A lookup binary-searches the sorted prefix and scans the unsorted tail;
//! a lookup that finds the tail over 64K entries first sorts it and merges it into the prefix,
//! so lookups pay for sorting only when there are lookups. Sealing sorts what is left and
//! writes the file.
//!
//! **Index file**, `<first_seq as 016x>.idx` beside its sealed segment (little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 56 | header: `magic "PRSDIDX\0" \| format u16 (1) \| flags u16 (0) \| shard u32 \| first_seq u64 \| segment_len u64 \| users u32 \| records u32 \| offsets u32 \| reserved u32 (0) \| body_crc u32 \| header_crc u32` |
//! | 16 × users | sorted by user: `user u64 \| first u32 \| count u32`; with `count` 1, `first` is the byte offset of the user's one transition frame in the segment; with more, it indexes the offsets table |
//! | 4 × offsets | byte offsets of the transition frames of users with several, grouped by user, ascending within a user |
//!
//! `header_crc` covers the 52 bytes before it; `body_crc` the tables (checked by
//! [`verify_index`], not by every lookup: a lookup is a binary search of a few positioned
//! reads). The index is a hint, the segment is the truth: every record an index points to is
//! checked (frame checksum, kind, user) and a mismatch makes the lookup scan the segment
//! instead. An index whose header does not match its segment (`first_seq`, `segment_len`) is
//! ignored (and rebuilt by the next writer).

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::codec::{crc, Rd, Wr};
use crate::error::{Error, ErrorKind, Result};
use crate::fsx;

/// The index file format this build writes and reads.
pub const INDEX_FORMAT: u16 = 1;
const INDEX_MAGIC: [u8; 8] = *b"PRSDIDX\0";
/// Bytes of an index header.
pub const INDEX_HEADER: usize = 56;
/// Bytes of one user entry.
pub const USER_ENTRY: usize = 16;
const _: () = assert!(INDEX_HEADER == 8 + 2 + 2 + 4 + 8 + 8 + 4 + 4 + 4 + 4 + 4 + 4);
const _: () = assert!(USER_ENTRY == 8 + 4 + 4);

/// Tail entries past which a lookup sorts the tail into the prefix first.
const TAIL_SORT: usize = 1 << 16;

/// One user's entry in an index: where their offsets are and how many.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct UserEntry {
    pub first: u32,
    pub count: u32,
}

/// The index of the open segment, in memory (see the module doc). Cleared (capacity kept)
/// when the segment is sealed.
#[derive(Default)]
pub(crate) struct OpenIndex {
    /// `user << 32 | offset`: sorted up to `sorted`, in append order after.
    keys: Vec<u128>,
    sorted: usize,
    scratch: Vec<u128>,
}

fn key(user: u64, offset: u32) -> u128 {
    (user as u128) << 32 | offset as u128
}

impl OpenIndex {
    pub(crate) fn push(&mut self, user: u64, offset: u32) {
        self.keys.push(key(user, offset));
    }

    pub(crate) fn clear(&mut self) {
        self.keys.clear();
        self.sorted = 0;
    }

    /// Sorts the tail and merges it into the sorted prefix.
    pub(crate) fn sort(&mut self) {
        if self.sorted == self.keys.len() {
            return;
        }
        self.keys[self.sorted..].sort_unstable();
        if self.sorted > 0 {
            let (a, b) = self.keys.split_at(self.sorted);
            self.scratch.clear();
            self.scratch.reserve(a.len() + b.len());
            let (mut i, mut j) = (0, 0);
            while i < a.len() && j < b.len() {
                if a[i] <= b[j] {
                    self.scratch.push(a[i]);
                    i += 1;
                } else {
                    self.scratch.push(b[j]);
                    j += 1;
                }
            }
            self.scratch.extend_from_slice(&a[i..]);
            self.scratch.extend_from_slice(&b[j..]);
            std::mem::swap(&mut self.keys, &mut self.scratch);
        }
        self.sorted = self.keys.len();
    }

    /// Sorts first if the unsorted tail is long (see the module doc).
    pub(crate) fn prepare_lookup(&mut self) {
        if self.keys.len() - self.sorted > TAIL_SORT {
            self.sort();
        }
    }

    /// Appends the offsets of `user`'s records, ascending, to `out`; returns how many.
    pub(crate) fn offsets_of(&self, user: u64, out: &mut Vec<u32>) -> u32 {
        let from = out.len();
        let sorted = &self.keys[..self.sorted];
        let lo = sorted.partition_point(|&k| k < key(user, 0));
        let hi = sorted.partition_point(|&k| k <= key(user, u32::MAX));
        out.extend(sorted[lo..hi].iter().map(|&k| k as u32));
        out.extend(
            self.keys[self.sorted..]
                .iter()
                .filter(|&&k| (k >> 32) as u64 == user)
                .map(|&k| k as u32),
        );
        (out.len() - from) as u32
    }

    /// Sorts, then writes the index file for the segment (temporary file, fsync, rename; the
    /// caller fsyncs the directory).
    pub(crate) fn write(
        &mut self,
        path: &Path,
        shard: u32,
        first_seq: u64,
        segment_len: u64,
    ) -> Result<()> {
        self.sort();
        let tmp = path.with_extension("idx-tmp");
        let result = self.write_tmp(&tmp, shard, first_seq, segment_len);
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, "rename failed", e))
    }

    fn write_tmp(&self, tmp: &Path, shard: u32, first_seq: u64, segment_len: u64) -> Result<()> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(tmp)
            .map_err(|e| Error::io(tmp, "cannot create the index", e))?;
        let mut w = BufWriter::with_capacity(1 << 20, &file);
        let io = |e| Error::io(tmp, "write failed", e);
        w.write_all(&[0u8; INDEX_HEADER]).map_err(io)?;
        let mut body_crc = 0u32;
        let mut users = 0u32;
        let mut offsets = 0u32;
        // Users, one run of equal users at a time.
        let mut i = 0;
        while i < self.keys.len() {
            let user = (self.keys[i] >> 32) as u64;
            let mut j = i + 1;
            while j < self.keys.len() && (self.keys[j] >> 32) as u64 == user {
                j += 1;
            }
            let count = (j - i) as u32;
            let first = if count == 1 {
                self.keys[i] as u32
            } else {
                offsets += count;
                offsets - count
            };
            let mut e = [0u8; USER_ENTRY];
            Wr::new(&mut e).u64(user).u32(first).u32(count);
            body_crc = crc32c::crc32c_append(body_crc, &e);
            w.write_all(&e).map_err(io)?;
            users += 1;
            i = j;
        }
        let mut i = 0;
        while i < self.keys.len() {
            let user = self.keys[i] >> 32;
            let mut j = i + 1;
            while j < self.keys.len() && self.keys[j] >> 32 == user {
                j += 1;
            }
            if j - i > 1 {
                for &k in &self.keys[i..j] {
                    let b = (k as u32).to_le_bytes();
                    body_crc = crc32c::crc32c_append(body_crc, &b);
                    w.write_all(&b).map_err(io)?;
                }
            }
            i = j;
        }
        w.flush().map_err(io)?;
        drop(w);
        let header = IndexHeader {
            shard,
            first_seq,
            segment_len,
            users,
            records: self.keys.len() as u32,
            offsets,
            body_crc,
        }
        .encode();
        file.write_all_at(&header, 0).map_err(io)?;
        file.sync_data()
            .map_err(|e| Error::io(tmp, "fdatasync failed", e))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct IndexHeader {
    shard: u32,
    first_seq: u64,
    segment_len: u64,
    users: u32,
    records: u32,
    offsets: u32,
    body_crc: u32,
}

impl IndexHeader {
    fn encode(&self) -> [u8; INDEX_HEADER] {
        let mut h = [0u8; INDEX_HEADER];
        Wr::new(&mut h)
            .put(&INDEX_MAGIC)
            .u16(INDEX_FORMAT)
            .u16(0)
            .u32(self.shard)
            .u64(self.first_seq)
            .u64(self.segment_len)
            .u32(self.users)
            .u32(self.records)
            .u32(self.offsets)
            .u32(0)
            .u32(self.body_crc);
        let c = crc(&[&h[..INDEX_HEADER - 4]]);
        h[INDEX_HEADER - 4..].copy_from_slice(&c.to_le_bytes());
        h
    }

    fn decode(h: &[u8; INDEX_HEADER], path: &Path) -> Result<IndexHeader> {
        let mut r = Rd::new(h);
        if r.take(8) != Some(&INDEX_MAGIC[..]) {
            return Err(Error::new(ErrorKind::BadMagic, path, "not a segment index"));
        }
        let format = r.u16().unwrap_or(0);
        if format != INDEX_FORMAT {
            return Err(Error::new(
                ErrorKind::ForeignVersion,
                path,
                format!("index format version {format}, this build reads version {INDEX_FORMAT}"),
            ));
        }
        let stored = u32::from_le_bytes(h[INDEX_HEADER - 4..].try_into().unwrap_or_default());
        if crc(&[&h[..INDEX_HEADER - 4]]) != stored {
            return Err(Error::new(
                ErrorKind::Checksum,
                path,
                "index header checksum mismatch",
            ));
        }
        let _flags = r.u16();
        let short = || Error::new(ErrorKind::Truncated, path, "index header cut short");
        Ok(IndexHeader {
            shard: r.u32().ok_or_else(short)?,
            first_seq: r.u64().ok_or_else(short)?,
            segment_len: r.u64().ok_or_else(short)?,
            users: r.u32().ok_or_else(short)?,
            records: r.u32().ok_or_else(short)?,
            offsets: r.u32().ok_or_else(short)?,
            body_crc: {
                let _reserved = r.u32();
                r.u32().ok_or_else(short)?
            },
        })
    }

    fn file_len(&self) -> u64 {
        INDEX_HEADER as u64 + USER_ENTRY as u64 * self.users as u64 + 4 * self.offsets as u64
    }
}

/// A sealed segment's index file, opened for lookups.
pub(crate) struct IndexFile {
    file: File,
    path: PathBuf,
    header: IndexHeader,
}

/// Entries read at once when the binary search has narrowed to this many (4 KiB).
const SCAN_ENTRIES: u32 = 128;

impl IndexFile {
    /// Opens the index at `path` for the segment starting at `first_seq`, `segment_len` bytes
    /// long. `Ok(None)` when it is missing; `Err` when it is invalid or does not match.
    pub(crate) fn open(path: &Path, first_seq: u64, segment_len: u64) -> Result<Option<IndexFile>> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, "cannot open the index", e)),
        };
        let len = file
            .metadata()
            .map_err(|e| Error::io(path, "cannot stat the index", e))?
            .len();
        if len < INDEX_HEADER as u64 {
            return Err(Error::new(
                ErrorKind::Truncated,
                path,
                "index shorter than its header",
            ));
        }
        let mut h = [0u8; INDEX_HEADER];
        fsx::read_at(&file, path, &mut h, 0)?;
        let header = IndexHeader::decode(&h, path)?;
        if header.file_len() != len {
            return Err(Error::new(
                ErrorKind::Truncated,
                path,
                format!(
                    "index is {len} bytes, its header says {}",
                    header.file_len()
                ),
            ));
        }
        if header.first_seq != first_seq || header.segment_len != segment_len {
            return Err(Error::new(
                ErrorKind::Corrupt,
                path,
                format!(
                    "index is for a segment at {} of {} bytes, the segment is at {first_seq} of {segment_len} bytes",
                    header.first_seq, header.segment_len
                ),
            ));
        }
        Ok(Some(IndexFile {
            file,
            path: path.to_path_buf(),
            header,
        }))
    }

    fn user_at(&self, i: u32) -> Result<u64> {
        let mut b = [0u8; 8];
        fsx::read_at(
            &self.file,
            &self.path,
            &mut b,
            INDEX_HEADER as u64 + USER_ENTRY as u64 * i as u64,
        )?;
        Ok(u64::from_le_bytes(b))
    }

    /// The user's entry, if the segment holds records of the user.
    pub(crate) fn lookup(&self, user: u64, scratch: &mut Vec<u8>) -> Result<Option<UserEntry>> {
        let (mut lo, mut hi) = (0u32, self.header.users);
        while hi - lo > SCAN_ENTRIES {
            let mid = lo + (hi - lo) / 2;
            if self.user_at(mid)? <= user {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let n = (hi - lo) as usize;
        scratch.resize(n * USER_ENTRY, 0);
        fsx::read_at(
            &self.file,
            &self.path,
            scratch,
            INDEX_HEADER as u64 + USER_ENTRY as u64 * lo as u64,
        )?;
        for e in scratch.chunks_exact(USER_ENTRY) {
            let mut r = Rd::new(e);
            let u = r.u64().unwrap_or(0);
            if u == user {
                let entry = UserEntry {
                    first: r.u32().unwrap_or(0),
                    count: r.u32().unwrap_or(0),
                };
                let bad = if entry.count == 1 {
                    entry.first as u64 >= self.header.segment_len
                } else {
                    entry.count == 0
                        || entry.first as u64 + entry.count as u64 > self.header.offsets as u64
                };
                if bad {
                    return Err(Error::new(
                        ErrorKind::Corrupt,
                        &self.path,
                        "index entry points past its tables",
                    ));
                }
                return Ok(Some(entry));
            }
            if u > user {
                break;
            }
        }
        Ok(None)
    }

    /// Appends the offsets of an entry (ascending) to `out`.
    pub(crate) fn offsets(
        &self,
        entry: &UserEntry,
        scratch: &mut Vec<u8>,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        if entry.count == 1 {
            out.push(entry.first);
            return Ok(());
        }
        scratch.resize(entry.count as usize * 4, 0);
        let at = INDEX_HEADER as u64
            + USER_ENTRY as u64 * self.header.users as u64
            + 4 * entry.first as u64;
        fsx::read_at(&self.file, &self.path, scratch, at)?;
        out.extend(
            scratch
                .chunks_exact(4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        );
        Ok(())
    }
}

/// Checks an index file whole: header, length and body checksum.
pub fn verify_index(path: &Path) -> Result<()> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, "read failed", e))?;
    let Some(h) = bytes.get(..INDEX_HEADER) else {
        return Err(Error::new(
            ErrorKind::Truncated,
            path,
            "index shorter than its header",
        ));
    };
    let h: &[u8; INDEX_HEADER] = h
        .try_into()
        .map_err(|_| Error::new(ErrorKind::Truncated, path, "index shorter than its header"))?;
    let header = IndexHeader::decode(h, path)?;
    if header.file_len() != bytes.len() as u64 {
        return Err(Error::new(
            ErrorKind::Truncated,
            path,
            "index length disagrees with its header",
        ));
    }
    if crc(&[&bytes[INDEX_HEADER..]]) != header.body_crc {
        return Err(Error::new(
            ErrorKind::Checksum,
            path,
            "index body checksum mismatch",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_index_lookups_match_a_scan_whatever_is_sorted() {
        let mut idx = OpenIndex::default();
        let mut all: Vec<(u64, u32)> = Vec::new();
        let mut x = 7u64;
        for i in 0..200_000u32 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let user = 1 + (x >> 33) % 5000;
            idx.push(user, i * 36);
            all.push((user, i * 36));
            if i % 70_000 == 69_999 {
                idx.prepare_lookup();
            }
            if i % 50_021 == 0 {
                idx.sort();
            }
        }
        for user in [1u64, 2, 77, 4999, 5000, 5001] {
            let mut got = Vec::new();
            let n = idx.offsets_of(user, &mut got);
            let want: Vec<u32> = all.iter().filter(|p| p.0 == user).map(|p| p.1).collect();
            assert_eq!(got, want);
            assert_eq!(n as usize, want.len());
        }
    }
}
