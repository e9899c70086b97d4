//! The durable state of presenced: per shard, a **snapshot** and a **transition log** in the
//! state directory (`state.dir`), plus a daemon-wide file of **replay marks**; so that after a
//! SIGTERM or a crash the daemon restores every user's presence, last seen and version, refuses
//! replays of signed datagrams it accepted before, and serves each user's **history**.
//!
//! The storage engine only: file formats, writers, readers, recovery, retention, history. The
//! core owns the layout of a saved user record (this crate frames those bytes and never looks
//! inside); the daemon's store thread calls this crate and decides when. Plain `std::fs` IO,
//! no async, no threads, no sockets, no clock (times are passed in).
//!
//! Why segment files of our own rather than an embedded store: the write pattern is one
//! append-only, group-fsynced stream per shard, read back only at start and for history; an
//! append plus fdatasync is the cheapest durable write there is.
//!
//! Files and why each exists:
//!
//! - [`error`]: the one error type; kinds the daemon counts, messages naming the file.
//! - [`codec`]: the record framing and payload layouts, little-endian access that never panics.
//! - [`fsx`]: the directory layout and the durable file moves (fsync, atomic replace).
//! - [`segment`]: a log segment's header and [`segment::SegmentReader`], the one record parser.
//! - [`writer`]: [`writer::LogWriter`], appends, group sync, rotation and sealing, crash repair.
//! - [`index`]: the per-user index of a segment, in memory while open, a file once sealed.
//! - [`snapshot`]: streaming snapshot writer and validating reader.
//! - [`mod@recover`]: choosing the valid snapshot, streaming the log from its position, skip
//!   counts; listing shard directories across shard counts.
//! - [`retention`]: dropping old segments by age and size, never those a restart needs.
//! - [`mod@history`]: a user's sessions as spans, from the index.
//! - [`marks`]: the replay high-water marks file.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod codec;
pub mod error;
pub mod fsx;
pub mod history;
pub mod index;
pub mod marks;
pub mod recover;
pub mod retention;
pub mod segment;
pub mod snapshot;
pub mod writer;

pub use error::{Error, ErrorKind, Result};
pub use fsx::{log_dir, shard_dir};
pub use history::{history, history_in, History, HistoryQuery, Span};
pub use marks::{
    read_replay_marks, write_replay_marks, ReplayMark, ReplayMarks, ReplayMarksWriter,
};
pub use recover::{
    list_shards, recover, remove_shard_dir, LogCursor, Recovery, ShardDirInfo, SkipNote,
    SkipReason, Skipped,
};
pub use retention::{apply_retention, RetentionPolicy, RetentionReport};
pub use segment::{Entry, LogRecord, SegmentEnd, SegmentHeader, SegmentReader};
pub use snapshot::{Chunk, SnapshotInfo, SnapshotMeta, SnapshotReader, SnapshotWriter};
pub use writer::{LogOptions, LogWriter, OpenReport};
