//! Snapshots: a shard's records as the core encodes them, framed in checksummed blocks, in
//! `shard-N/snap-<log position as 016x>.snap`. [`SnapshotWriter`] is fed chunks over seconds
//! while the node keeps running; [`SnapshotReader`] yields the chunks back, each validated.
//!
//! **Layout** (little-endian):
//!
//! | bytes | field |
//! |---|---|
//! | 48 | header: `magic "PRSDSNAP" \| format u16 (1) \| record_encoding u16 \| shard u32 \| shard_count u32 \| flags u32 (0) \| began_ms u64 \| log_position u64 \| reserved u32 (0) \| crc u32` (CRC-32C of the 44 bytes before it) |
//! | 12 + len | a block: `len u32 (1 to 64 MiB) \| records u32 \| crc u32 \| bytes[len]`, crc over `len`, `records` and the bytes. One block per chunk the writer was given: a chunk is never split, so a block holds whole records |
//! | 32 | trailer: `0u32 \| blocks u64 \| records u64 \| bytes u64 \| crc u32` (crc over the 28 bytes before it), at the very end of the file |
//!
//! A snapshot is valid only whole: header, every block's checksum, the trailer's counts equal
//! to the blocks', nothing after the trailer. Anything else is an error naming the file and
//! the byte: [`ErrorKind::ForeignVersion`] (naming both versions) for another format,
//! [`ErrorKind::ForeignEncoding`] for records the core cannot read, [`ErrorKind::Truncated`]
//! when the file ends early, [`ErrorKind::Checksum`], [`ErrorKind::Corrupt`].
//!
//! **Durability.** Written to `snap-<pos>.tmp`, fdatasynced, renamed to `snap-<pos>.snap`, the
//! directory fsynced. The two newest snapshots are kept: when the newest does not validate,
//! recovery starts from the one before (and the log from *its* position, which retention
//! keeps); older ones and stale temporary files are removed when a snapshot is finished.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::codec::{crc, Rd, Wr};
use crate::error::{Error, ErrorKind, Result};
use crate::fsx;

/// The snapshot file format this build writes and reads.
pub const SNAPSHOT_FORMAT: u16 = 1;
const SNAPSHOT_MAGIC: [u8; 8] = *b"PRSDSNAP";
/// Bytes of a snapshot header.
pub const SNAPSHOT_HEADER: usize = 48;
/// Bytes of a block header.
pub const BLOCK_HEADER: usize = 12;
/// Bytes of the trailer.
pub const SNAPSHOT_TRAILER: usize = 32;
/// The largest block (and so the largest chunk a writer takes).
pub const MAX_BLOCK: usize = 64 << 20;
/// Snapshots kept per shard.
pub const SNAPSHOTS_KEPT: usize = 2;
const _: () = assert!(SNAPSHOT_HEADER == 8 + 2 + 2 + 4 + 4 + 4 + 8 + 8 + 4 + 4);
const _: () = assert!(BLOCK_HEADER == 4 + 4 + 4);
const _: () = assert!(SNAPSHOT_TRAILER == 4 + 8 + 8 + 8 + 4);

/// What a snapshot's header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The shard it is of.
    pub shard: u32,
    /// The number of shards when it was written.
    pub shard_count: u32,
    /// The core's record encoding version (`presenced_core::saved::RECORD_ENCODING`).
    pub record_encoding: u16,
    /// Wall clock when the snapshot pass began, Unix ms.
    pub began_ms: u64,
    /// The log position (sequence number) from which the log is replayed over it: the log
    /// writer's `next_seq` when the pass began.
    pub log_position: u64,
}

impl SnapshotMeta {
    fn encode(&self) -> [u8; SNAPSHOT_HEADER] {
        let mut h = [0u8; SNAPSHOT_HEADER];
        Wr::new(&mut h)
            .put(&SNAPSHOT_MAGIC)
            .u16(SNAPSHOT_FORMAT)
            .u16(self.record_encoding)
            .u32(self.shard)
            .u32(self.shard_count)
            .u32(0)
            .u64(self.began_ms)
            .u64(self.log_position)
            .u32(0);
        let c = crc(&[&h[..SNAPSHOT_HEADER - 4]]);
        h[SNAPSHOT_HEADER - 4..].copy_from_slice(&c.to_le_bytes());
        h
    }

    fn decode(bytes: &[u8], path: &Path) -> Result<SnapshotMeta> {
        if bytes.len() >= 8 && bytes[..8] != SNAPSHOT_MAGIC {
            return Err(Error::new(ErrorKind::BadMagic, path, "not a snapshot"));
        }
        if bytes.len() < SNAPSHOT_HEADER {
            return Err(Error::new(
                ErrorKind::Truncated,
                path,
                format!(
                    "snapshot header cut short: {} of {SNAPSHOT_HEADER} bytes",
                    bytes.len()
                ),
            ));
        }
        let mut r = Rd::new(&bytes[8..]);
        let format = r.u16().unwrap_or(0);
        if format != SNAPSHOT_FORMAT {
            return Err(Error::new(
                ErrorKind::ForeignVersion,
                path,
                format!(
                    "snapshot format version {format}, this build reads version {SNAPSHOT_FORMAT}"
                ),
            ));
        }
        let stored = u32::from_le_bytes(
            bytes[SNAPSHOT_HEADER - 4..SNAPSHOT_HEADER]
                .try_into()
                .unwrap_or_default(),
        );
        if crc(&[&bytes[..SNAPSHOT_HEADER - 4]]) != stored {
            return Err(Error::new(
                ErrorKind::Checksum,
                path,
                "snapshot header checksum mismatch",
            ));
        }
        let short = || Error::new(ErrorKind::Truncated, path, "snapshot header cut short");
        let record_encoding = r.u16().ok_or_else(short)?;
        let shard = r.u32().ok_or_else(short)?;
        let shard_count = r.u32().ok_or_else(short)?;
        let _flags = r.u32();
        Ok(SnapshotMeta {
            shard,
            shard_count,
            record_encoding,
            began_ms: r.u64().ok_or_else(short)?,
            log_position: r.u64().ok_or_else(short)?,
        })
    }

    /// Reads and validates the header of the snapshot at `path` (not its body).
    pub fn read(path: &Path) -> Result<SnapshotMeta> {
        let f = File::open(path).map_err(|e| Error::io(path, "cannot open the snapshot", e))?;
        let mut buf = Vec::with_capacity(SNAPSHOT_HEADER);
        f.take(SNAPSHOT_HEADER as u64)
            .read_to_end(&mut buf)
            .map_err(|e| Error::io(path, "read failed", e))?;
        SnapshotMeta::decode(&buf, path)
    }
}

/// A finished snapshot's totals.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotInfo {
    /// Its path.
    pub path: PathBuf,
    /// Its header.
    pub meta: SnapshotMeta,
    /// Blocks (chunks) in it.
    pub blocks: u64,
    /// Records in it, as the chunks' counts add up.
    pub records: u64,
    /// Bytes of record data.
    pub record_bytes: u64,
    /// The file's length.
    pub file_bytes: u64,
}

/// A snapshot file in a shard directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    /// The log position, from its name.
    pub log_position: u64,
    /// Its path.
    pub path: PathBuf,
}

/// The snapshots of a shard directory, newest (highest log position) first.
pub fn list_snapshots(shard_dir: &Path) -> Result<Vec<SnapshotFile>> {
    let mut out: Vec<SnapshotFile> = fsx::list_names(shard_dir)?
        .into_iter()
        .filter_map(|name| {
            let log_position = fsx::parse_hex_name(&name, "snap-", ".snap")?;
            Some(SnapshotFile {
                log_position,
                path: shard_dir.join(name),
            })
        })
        .collect();
    out.sort_by_key(|s| std::cmp::Reverse(s.log_position));
    Ok(out)
}

fn snapshot_path(shard_dir: &Path, position: u64, ext: &str) -> PathBuf {
    shard_dir.join(format!("snap-{position:016x}.{ext}"))
}

/// Writes one snapshot, streaming: [`SnapshotWriter::push`] each chunk as the core produces
/// it, then [`SnapshotWriter::finish`]. Dropped unfinished (or after an error), its temporary
/// file is removed and the previous snapshots stay as they were.
pub struct SnapshotWriter {
    file: Option<BufWriter<File>>,
    tmp: PathBuf,
    shard_dir: PathBuf,
    meta: SnapshotMeta,
    blocks: u64,
    records: u64,
    bytes: u64,
}

impl SnapshotWriter {
    /// Starts a snapshot of `shard_dir` (created if missing).
    pub fn create(shard_dir: &Path, meta: SnapshotMeta) -> Result<SnapshotWriter> {
        if meta.shard_count == 0 || meta.shard >= meta.shard_count {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                shard_dir,
                format!("shard {} of {} shards", meta.shard, meta.shard_count),
            ));
        }
        fsx::create_dirs(shard_dir)?;
        let tmp = snapshot_path(shard_dir, meta.log_position, "tmp");
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, "cannot create the snapshot", e))?;
        let mut w = SnapshotWriter {
            file: Some(BufWriter::with_capacity(1 << 20, file)),
            tmp,
            shard_dir: shard_dir.to_path_buf(),
            meta,
            blocks: 0,
            records: 0,
            bytes: 0,
        };
        w.put(&meta.encode())?;
        Ok(w)
    }

    /// The header it writes.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// Records pushed so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        let Some(f) = &mut self.file else {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                &self.tmp,
                "the snapshot writer failed earlier",
            ));
        };
        if let Err(e) = f.write_all(bytes) {
            self.file = None;
            return Err(Error::io(&self.tmp, "write failed", e));
        }
        Ok(())
    }

    /// Appends one chunk of whole encoded records (`records` of them) as one block. An empty
    /// chunk is ignored; one over [`MAX_BLOCK`] bytes is refused ([`ErrorKind::TooLarge`]).
    pub fn push(&mut self, chunk: &[u8], records: u64) -> Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        if chunk.len() > MAX_BLOCK || records > u32::MAX as u64 {
            return Err(Error::new(
                ErrorKind::TooLarge,
                &self.tmp,
                format!(
                    "a chunk of {} bytes and {records} records (at most {MAX_BLOCK} bytes)",
                    chunk.len()
                ),
            ));
        }
        let mut h = [0u8; BLOCK_HEADER];
        let len = chunk.len() as u32;
        let c = crc(&[&len.to_le_bytes(), &(records as u32).to_le_bytes(), chunk]);
        Wr::new(&mut h).u32(len).u32(records as u32).u32(c);
        self.put(&h)?;
        self.put(chunk)?;
        self.blocks += 1;
        self.records += records;
        self.bytes += chunk.len() as u64;
        Ok(())
    }

    /// Writes the trailer, fdatasyncs, renames the file into place and fsyncs the directory;
    /// then removes snapshots older than the two newest and stale temporary files (best
    /// effort). `Ok` means the snapshot is durable.
    pub fn finish(mut self) -> Result<SnapshotInfo> {
        let mut t = [0u8; SNAPSHOT_TRAILER];
        Wr::new(&mut t)
            .u32(0)
            .u64(self.blocks)
            .u64(self.records)
            .u64(self.bytes);
        let c = crc(&[&t[..SNAPSHOT_TRAILER - 4]]);
        t[SNAPSHOT_TRAILER - 4..].copy_from_slice(&c.to_le_bytes());
        self.put(&t)?;
        let w = self.file.take().expect("checked by put");
        let file = w
            .into_inner()
            .map_err(|e| Error::io(&self.tmp, "write failed", e.into_error()))?;
        file.sync_data()
            .map_err(|e| Error::io(&self.tmp, "fdatasync failed", e))?;
        let file_bytes = file
            .metadata()
            .map_err(|e| Error::io(&self.tmp, "cannot stat the snapshot", e))?
            .len();
        drop(file);
        let path = snapshot_path(&self.shard_dir, self.meta.log_position, "snap");
        std::fs::rename(&self.tmp, &path).map_err(|e| Error::io(&path, "rename failed", e))?;
        fsx::sync_dir(&self.shard_dir)?;
        let info = SnapshotInfo {
            path,
            meta: self.meta,
            blocks: self.blocks,
            records: self.records,
            record_bytes: self.bytes,
            file_bytes,
        };
        // The snapshot is in place and durable: failing to remove old files is not its failure
        // (the next snapshot tries again).
        let _ = prune_snapshots(&self.shard_dir, &info.path);
        Ok(info)
    }

    /// Gives up: removes the temporary file.
    pub fn abort(self) {}
}

impl Drop for SnapshotWriter {
    fn drop(&mut self) {
        if self.file.is_some() || self.tmp.exists() {
            self.file = None;
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

/// Removes snapshots beyond the [`SNAPSHOTS_KEPT`] newest and temporary files other than
/// `keep`'s.
fn prune_snapshots(shard_dir: &Path, keep: &Path) -> Result<()> {
    let mut removed = false;
    for (i, s) in list_snapshots(shard_dir)?.iter().enumerate() {
        if i >= SNAPSHOTS_KEPT && s.path != keep {
            removed |= fsx::remove_if_present(&s.path)?;
        }
    }
    for name in fsx::list_names(shard_dir)? {
        if fsx::parse_hex_name(&name, "snap-", ".tmp").is_some() {
            removed |= fsx::remove_if_present(&shard_dir.join(name))?;
        }
    }
    if removed {
        fsx::sync_dir(shard_dir)?;
    }
    Ok(())
}

/// The record count of the trailer at the end of a file `file_len` bytes long, if it reads and
/// its checksum holds.
fn claimed_records(file: &File, file_len: u64) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let at = file_len.checked_sub(SNAPSHOT_TRAILER as u64)?;
    let mut t = [0u8; SNAPSHOT_TRAILER];
    file.read_exact_at(&mut t, at).ok()?;
    let stored = u32::from_le_bytes(t[SNAPSHOT_TRAILER - 4..].try_into().ok()?);
    if t[..4] != [0; 4] || crc(&[&t[..SNAPSHOT_TRAILER - 4]]) != stored {
        return None;
    }
    let mut r = Rd::new(&t[12..]);
    r.u64()
}

/// One chunk read back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// The records' bytes, exactly as pushed.
    pub bytes: &'a [u8],
    /// How many records they are.
    pub records: u32,
}

/// Reads a snapshot's chunks back, validating each; the last `next_chunk` (`Ok(None)`)
/// validates the trailer. See the module doc for the errors.
pub struct SnapshotReader {
    path: PathBuf,
    file: BufReader<File>,
    meta: SnapshotMeta,
    file_len: u64,
    offset: u64,
    buf: Vec<u8>,
    blocks: u64,
    records: u64,
    bytes: u64,
    done: bool,
    /// The records the trailer claims, when it reads and checks at open.
    records_claimed: Option<u64>,
}

impl SnapshotReader {
    /// Opens the snapshot at `path`; with `record_encoding`, refuses a snapshot of records of
    /// another encoding.
    pub fn open(path: &Path, record_encoding: Option<u16>) -> Result<SnapshotReader> {
        let file = File::open(path).map_err(|e| Error::io(path, "cannot open the snapshot", e))?;
        let file_len = file
            .metadata()
            .map_err(|e| Error::io(path, "cannot stat the snapshot", e))?
            .len();
        let records_claimed = claimed_records(&file, file_len);
        let mut file = BufReader::with_capacity(1 << 20, file);
        let mut head = Vec::with_capacity(SNAPSHOT_HEADER);
        (&mut file)
            .take(SNAPSHOT_HEADER as u64)
            .read_to_end(&mut head)
            .map_err(|e| Error::io(path, "read failed", e))?;
        let meta = SnapshotMeta::decode(&head, path)?;
        if let Some(expected) = record_encoding {
            if meta.record_encoding != expected {
                return Err(Error::new(
                    ErrorKind::ForeignEncoding,
                    path,
                    format!(
                        "snapshot records are of encoding version {}, this build's core reads version {expected}",
                        meta.record_encoding
                    ),
                ));
            }
        }
        Ok(SnapshotReader {
            path: path.to_path_buf(),
            file,
            meta,
            file_len,
            offset: SNAPSHOT_HEADER as u64,
            buf: Vec::new(),
            blocks: 0,
            records: 0,
            bytes: 0,
            done: false,
            records_claimed,
        })
    }

    /// How many records the trailer says the file holds, read ahead at open: a hint for
    /// sizing what the records go into, not yet checked against the blocks (the read through
    /// does that); `None` when the trailer is cut short or its checksum fails.
    pub fn records_claimed(&self) -> Option<u64> {
        self.records_claimed
    }

    /// The header.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, kind: ErrorKind, msg: impl Into<String>) -> Error {
        Error::new(kind, &self.path, msg).at(self.offset)
    }

    fn read(&mut self, n: usize) -> Result<()> {
        self.buf.resize(n, 0);
        self.file
            .read_exact(&mut self.buf[..n])
            .map_err(|e| Error::io(&self.path, "read failed", e).at(self.offset))
    }

    /// The next chunk; `Ok(None)` once the trailer has been read and checked.
    pub fn next_chunk(&mut self) -> Result<Option<Chunk<'_>>> {
        if self.done {
            return Ok(None);
        }
        let remaining = self.file_len.saturating_sub(self.offset);
        if remaining < 4 {
            return Err(self.err(ErrorKind::Truncated, "snapshot ends before its trailer"));
        }
        self.read(4)?;
        let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        if len == 0 {
            if remaining < SNAPSHOT_TRAILER as u64 {
                return Err(self.err(ErrorKind::Truncated, "snapshot trailer cut short"));
            }
            let mut t = [0u8; SNAPSHOT_TRAILER];
            self.file
                .read_exact(&mut t[4..])
                .map_err(|e| Error::io(&self.path, "read failed", e).at(self.offset))?;
            let stored =
                u32::from_le_bytes(t[SNAPSHOT_TRAILER - 4..].try_into().unwrap_or_default());
            if crc(&[&t[..SNAPSHOT_TRAILER - 4]]) != stored {
                return Err(self.err(ErrorKind::Checksum, "snapshot trailer checksum mismatch"));
            }
            let mut r = Rd::new(&t[4..]);
            let (blocks, records, bytes) = (
                r.u64().unwrap_or(0),
                r.u64().unwrap_or(0),
                r.u64().unwrap_or(0),
            );
            if (blocks, records, bytes) != (self.blocks, self.records, self.bytes) {
                return Err(self.err(
                    ErrorKind::Corrupt,
                    format!(
                        "trailer counts {blocks} blocks, {records} records, {bytes} bytes; the file holds {}, {}, {}",
                        self.blocks, self.records, self.bytes
                    ),
                ));
            }
            if remaining != SNAPSHOT_TRAILER as u64 {
                return Err(self.err(ErrorKind::Corrupt, "data after the trailer"));
            }
            self.offset += SNAPSHOT_TRAILER as u64;
            self.done = true;
            return Ok(None);
        }
        if len as usize > MAX_BLOCK {
            return Err(self.err(
                ErrorKind::Corrupt,
                format!("block length {len} over the limit of {MAX_BLOCK}"),
            ));
        }
        if remaining < BLOCK_HEADER as u64 + len as u64 {
            return Err(self.err(ErrorKind::Truncated, "snapshot block cut short"));
        }
        let mut h = [0u8; 8];
        self.file
            .read_exact(&mut h)
            .map_err(|e| Error::io(&self.path, "read failed", e).at(self.offset))?;
        let records = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let stored = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        self.read(len as usize)?;
        if crc(&[&len.to_le_bytes(), &records.to_le_bytes(), &self.buf]) != stored {
            return Err(self.err(ErrorKind::Checksum, "snapshot block checksum mismatch"));
        }
        self.offset += BLOCK_HEADER as u64 + len as u64;
        self.blocks += 1;
        self.records += records as u64;
        self.bytes += len as u64;
        Ok(Some(Chunk {
            bytes: &self.buf,
            records,
        }))
    }

    /// Reads the snapshot at `path` through, validating everything; returns its totals.
    pub fn verify(path: &Path, record_encoding: Option<u16>) -> Result<SnapshotInfo> {
        let mut r = SnapshotReader::open(path, record_encoding)?;
        while r.next_chunk()?.is_some() {}
        Ok(SnapshotInfo {
            path: path.to_path_buf(),
            meta: r.meta,
            blocks: r.blocks,
            records: r.records,
            record_bytes: r.bytes,
            file_bytes: r.file_len,
        })
    }
}
