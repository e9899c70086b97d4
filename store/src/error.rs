//! The one error type of the store. Every error names the file it is about and has a
//! [`ErrorKind`] the daemon counts (`ErrorKind::label` is a stable counter name) and logs
//! (`Display` says what, where and why). IO errors keep their cause: a full disk
//! ([`ErrorKind::NoSpace`]) and an unwritable directory ([`ErrorKind::PermissionDenied`]) stay
//! distinguishable, so the daemon can report them and retry while it goes on serving from
//! memory.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// What went wrong, coarse enough to count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file system is full or a quota is exhausted (`ENOSPC`, `EDQUOT`).
    NoSpace,
    /// The file or directory may not be read or written (`EACCES`, `EPERM`, `EROFS`).
    PermissionDenied,
    /// The file does not exist.
    NotFound,
    /// Any other IO error (see [`Error::io_kind`]).
    Io,
    /// The file does not start with the magic bytes of its kind: not a file of ours.
    BadMagic,
    /// The file's format version is not the one this build reads.
    ForeignVersion,
    /// The snapshot holds records of another encoding version than the core's.
    ForeignEncoding,
    /// A checksum does not match the bytes it covers.
    Checksum,
    /// The file ends before its structure does.
    Truncated,
    /// The bytes check but make no sense (a field out of range, counts that disagree).
    Corrupt,
    /// Something is too large for its format (a record over 65,535 bytes, a block over the
    /// snapshot block limit).
    TooLarge,
    /// The log writer's buffer is full (the disk has not taken writes for a while): the record
    /// was dropped.
    BufferFull,
    /// The caller passed an argument out of range.
    InvalidArgument,
}

impl ErrorKind {
    /// A short stable name, for counters and log fields.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::NoSpace => "no_space",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Io => "io",
            ErrorKind::BadMagic => "bad_magic",
            ErrorKind::ForeignVersion => "foreign_version",
            ErrorKind::ForeignEncoding => "foreign_encoding",
            ErrorKind::Checksum => "checksum",
            ErrorKind::Truncated => "truncated",
            ErrorKind::Corrupt => "corrupt",
            ErrorKind::TooLarge => "too_large",
            ErrorKind::BufferFull => "buffer_full",
            ErrorKind::InvalidArgument => "invalid_argument",
        }
    }

    /// Whether the error is about a file's content (the file is bad; retrying cannot help),
    /// rather than about the file system or the caller.
    pub fn is_content(self) -> bool {
        matches!(
            self,
            ErrorKind::BadMagic
                | ErrorKind::ForeignVersion
                | ErrorKind::ForeignEncoding
                | ErrorKind::Checksum
                | ErrorKind::Truncated
                | ErrorKind::Corrupt
        )
    }
}

/// An error of the store: its kind, the file it is about, where in the file if that is known,
/// and a message; IO errors keep the OS error.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    path: PathBuf,
    offset: Option<u64>,
    message: String,
    source: Option<io::Error>,
}

/// The store's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of `kind` about `path`.
    pub fn new(kind: ErrorKind, path: &Path, message: impl Into<String>) -> Error {
        Error {
            kind,
            path: path.to_path_buf(),
            offset: None,
            message: message.into(),
            source: None,
        }
    }

    /// An IO error while doing `what` on `path`, classified by its OS error.
    pub fn io(path: &Path, what: &str, err: io::Error) -> Error {
        let kind = match err.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => ErrorKind::NoSpace,
            Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) => {
                ErrorKind::PermissionDenied
            }
            Some(libc::ENOENT) => ErrorKind::NotFound,
            _ => match err.kind() {
                io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
                io::ErrorKind::NotFound => ErrorKind::NotFound,
                io::ErrorKind::UnexpectedEof => ErrorKind::Truncated,
                _ => ErrorKind::Io,
            },
        };
        Error {
            kind,
            path: path.to_path_buf(),
            offset: None,
            message: what.to_string(),
            source: Some(err),
        }
    }

    /// Sets the byte offset in the file the error is about.
    pub fn at(mut self, offset: u64) -> Error {
        self.offset = Some(offset);
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The file (or directory) the error is about.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where in the file, when known.
    pub fn offset(&self) -> Option<u64> {
        self.offset
    }

    /// The message, without the path.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// For IO errors, the standard library's kind of the OS error.
    pub fn io_kind(&self) -> Option<io::ErrorKind> {
        self.source.as_ref().map(io::Error::kind)
    }

    /// For IO errors, the OS error number.
    pub fn os_error(&self) -> Option<i32> {
        self.source.as_ref().and_then(io::Error::raw_os_error)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.message)?;
        if let Some(offset) = self.offset {
            write!(f, " at byte {offset}")?;
        }
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        write!(f, " [{}]", self.kind.label())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
