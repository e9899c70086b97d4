//! The state directory's layout (which file lives where, under which name) and the few file
//! system moves every writer needs: directory fsync, atomic replacement (temporary file, fsync,
//! rename, directory fsync) and positioned reads. One place, so every file is made durable the
//! same way.
//!
//! ```text
//! <state.dir>/
//!   replay-marks                      replay high-water marks (daemon-wide)
//!   shard-<N>/
//!     snap-<log position, 016x>.snap  snapshots (the newest two are kept)
//!     snap-<log position, 016x>.tmp   a snapshot being written
//!     log/<first seq, 016x>.seg       transition log segments
//!     log/<first seq, 016x>.idx       a sealed segment's user index
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The directory of shard `shard` under the state directory.
pub fn shard_dir(root: &Path, shard: u32) -> PathBuf {
    root.join(format!("shard-{shard}"))
}

/// The log directory inside a shard directory.
pub fn log_dir(shard_dir: &Path) -> PathBuf {
    shard_dir.join("log")
}

/// Parses `shard-<N>`.
pub(crate) fn parse_shard_name(name: &str) -> Option<u32> {
    let n = name.strip_prefix("shard-")?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || (n.len() > 1 && n.starts_with('0'))
    {
        return None;
    }
    n.parse().ok()
}

/// Parses `<16 hex digits><suffix>`.
pub(crate) fn parse_hex_name(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let hex = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

pub(crate) fn segment_path(log_dir: &Path, first_seq: u64) -> PathBuf {
    log_dir.join(format!("{first_seq:016x}.seg"))
}

pub(crate) fn index_path(log_dir: &Path, first_seq: u64) -> PathBuf {
    log_dir.join(format!("{first_seq:016x}.idx"))
}

/// Fsyncs a directory, so the names created, renamed or removed in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, "fsync of the directory failed", e))
}

/// Creates `dir` and its missing parents, making each new name durable.
pub(crate) fn create_dirs(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        if !parent.as_os_str().is_empty() {
            create_dirs(parent)?;
        }
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => return Ok(()),
        Err(e) => return Err(Error::io(dir, "cannot create the directory", e)),
    }
    if let Some(parent) = dir.parent() {
        if !parent.as_os_str().is_empty() {
            sync_dir(parent)?;
        }
    }
    Ok(())
}

/// Replaces `path` with `bytes` atomically: a temporary file beside it, written, fsynced,
/// renamed over `path`, and the directory fsynced. A crash leaves either the old file or the
/// new one (and maybe a stale temporary file, overwritten next time).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, "cannot create the file", e))?;
        f.write_all(bytes)
            .map_err(|e| Error::io(&tmp, "write failed", e))?;
        f.sync_data()
            .map_err(|e| Error::io(&tmp, "fdatasync failed", e))?;
        fs::rename(&tmp, path).map_err(|e| Error::io(path, "rename failed", e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Reads exactly `buf.len()` bytes at `offset`.
pub(crate) fn read_at(file: &File, path: &Path, buf: &mut [u8], offset: u64) -> Result<()> {
    file.read_exact_at(buf, offset)
        .map_err(|e| Error::io(path, "read failed", e).at(offset))
}

/// Removes a file; a file already gone is not an error.
pub(crate) fn remove_if_present(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(path, "cannot remove the file", e)),
    }
}

/// The names in a directory; a directory that does not exist is empty.
pub(crate) fn list_names(dir: &Path) -> Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(dir, "cannot list the directory", e)),
    };
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| Error::io(dir, "cannot list the directory", e))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(parse_shard_name("shard-0"), Some(0));
        assert_eq!(parse_shard_name("shard-12"), Some(12));
        assert_eq!(parse_shard_name("shard-012"), None);
        assert_eq!(parse_shard_name("shard-"), None);
        assert_eq!(parse_shard_name("shard-x"), None);
        assert_eq!(
            parse_hex_name("00000000000000ff.seg", "", ".seg"),
            Some(255)
        );
        assert_eq!(parse_hex_name("ff.seg", "", ".seg"), None);
        assert_eq!(
            parse_hex_name("snap-0000000000000010.snap", "snap-", ".snap"),
            Some(16)
        );
    }
}
