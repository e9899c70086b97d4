//! The store thread: moves what the shards send for the state directory (their transitions and
//! snapshot chunks) into `presenced-store`'s files, syncs the logs and the anti-replay marks
//! every `state.sync_interval`, asks each shard for a snapshot every `state.snapshot_interval`
//! (and at once when its log lost records), applies retention after each snapshot, and answers
//! HISTORY. At stop it waits for every shard's final snapshot, syncs, and leaves the clean-stop
//! file. Storage errors are counted by kind and logged, never fatal: presence matters more than
//! history, and the shards never wait for this thread. Whether the last write of each shard's
//! log, of its snapshots and of the marks succeeded is published as `writable` in the figures
//! (the health check's "state directory writable") at every sync.

use crate::daemon::KeyRing;
use crate::link::{Frame, HistoryAsk};
use crate::settings::StateSettings;
use crate::shard_thread::Peer;
use crate::time::Clock;
use bytes::BytesMut;
use crossbeam_channel::{Receiver, RecvTimeoutError, Select};
use presenced_core::event::{Cause, PublicState};
use presenced_core::saved::RECORD_ENCODING;
use presenced_node::bus::{owner, Inbox, ToStore};
use presenced_store as store;
use presenced_wire::link as wire;
use presenced_wire::stats::StateStats;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// A shard's largest snapshot chunk fits one block of a snapshot file.
const _: () = assert!(presenced_node::node::MAX_SNAPSHOT_CHUNK_BYTES <= store::snapshot::MAX_BLOCK);

/// Messages read from one shard before the others get a turn.
const DRAIN: usize = 256;
/// A log's write buffer, at most (then appends are refused and counted, and a snapshot asked).
const MAX_LOG_BUFFER_BYTES: usize = 256 << 20;
/// Storage errors of one kind are logged at most this often.
const LOG_ERRORS_EVERY: Duration = Duration::from_secs(10);
/// How long to wait for a shard's inbox when asking it for a snapshot.
const ASK_TIMEOUT: Duration = Duration::from_millis(100);

/// The store's figures, shared with the push link for STATS.
pub type Figures = Arc<Mutex<StateStats>>;

/// Everything the store thread needs, built by the daemon.
pub struct StoreSetup {
    /// The state directory.
    pub dir: PathBuf,
    /// The `[state]` settings.
    pub settings: StateSettings,
    /// `presence.last_seen_retention`, ms: the log's age limit.
    pub retention_ms: u64,
    /// Each shard's channel to the store, by index.
    pub from_shards: Vec<Receiver<ToStore>>,
    /// The shards, to ask for snapshots.
    pub peers: Vec<Peer>,
    /// HISTORY requests from the links.
    pub history: Receiver<HistoryAsk>,
    /// The key set, for the anti-replay marks.
    pub keys: KeyRing,
    /// Shard directories of an earlier shard count, removed once every shard has a snapshot.
    pub stale_shards: Vec<u32>,
    /// Every shard directory history may be in (old ones too).
    pub history_dirs: Vec<PathBuf>,
    /// The daemon's clocks.
    pub clock: Clock,
    /// Set when the daemon stops.
    pub stop: Arc<AtomicBool>,
    /// Shared figures.
    pub figures: Figures,
}

/// One shard's files.
struct ShardFiles {
    dir: PathBuf,
    log: Option<store::LogWriter>,
    /// The snapshot being written, and when its pass began.
    snapshot: Option<(store::SnapshotWriter, Instant)>,
    /// The shard's channel is closed (it stopped after its final snapshot).
    done: bool,
    /// A snapshot was asked and not yet begun.
    asked: bool,
    /// Has a snapshot of this start's shard count.
    snapshotted: bool,
    /// The last sync of the log failed (or the log could not be opened).
    log_failing: bool,
    /// The last snapshot (or the retention after it) failed.
    files_failing: bool,
}

struct Store {
    setup: StoreSetup,
    shards: Vec<ShardFiles>,
    marks: Option<store::ReplayMarksWriter>,
    /// The last write of the marks failed (or their writer could not be made).
    marks_failing: bool,
    last_marks: HashMap<u32, u64>,
    /// Per error kind: when it was last logged, and how many since.
    error_log: HashMap<&'static str, (Instant, u64)>,
    next_sync: Instant,
    next_snapshot: Instant,
    /// The shard asked next for its periodic snapshot.
    next_shard: usize,
}

/// Runs the store thread until every shard has stopped (after the daemon's stop flag).
pub fn run(setup: StoreSetup) {
    let now_ms = setup.clock.now().wall_ms;
    let count = setup.peers.len() as u32;
    let log_options = store::LogOptions {
        segment_bytes: setup.settings.segment_bytes as u64,
        max_buffer_bytes: MAX_LOG_BUFFER_BYTES,
    };
    let mut shards = Vec::with_capacity(count as usize);
    let mut errors = Vec::new();
    for i in 0..count {
        let dir = store::shard_dir(&setup.dir, i);
        let log = match store::LogWriter::open(&dir, i, count, log_options, now_ms) {
            Ok((log, report)) => {
                for (path, cut, why) in &report.repaired {
                    tracing::warn!(
                        "state: {}: cut {cut} bytes after the last valid record ({why})",
                        path.display()
                    );
                }
                Some(log)
            }
            Err(e) => {
                errors.push(e);
                None
            }
        };
        shards.push(ShardFiles {
            dir,
            log_failing: log.is_none(),
            log,
            snapshot: None,
            done: false,
            asked: false,
            snapshotted: false,
            files_failing: false,
        });
    }
    let marks = match store::ReplayMarksWriter::new(&setup.dir) {
        Ok(w) => Some(w),
        Err(e) => {
            errors.push(e);
            None
        }
    };
    let now = Instant::now();
    let mut s = Store {
        next_sync: now + setup.settings.sync_interval,
        // Every shard is snapshotted right after a start: the restored state (or the new
        // shard count's) then stands on its own, and the old log can go.
        next_snapshot: now,
        next_shard: 0,
        setup,
        shards,
        marks_failing: marks.is_none(),
        marks,
        last_marks: HashMap::new(),
        error_log: HashMap::new(),
    };
    for e in errors {
        s.error(&e);
    }
    s.publish_writable();
    for i in 0..s.shards.len() {
        s.ask_snapshot(i);
    }
    s.run();
}

impl Store {
    fn run(&mut self) {
        let inputs = self.setup.from_shards.clone();
        let history = self.setup.history.clone();
        let mut select = Select::new();
        for r in &inputs {
            select.recv(r);
        }
        let history_index = select.recv(&history);
        loop {
            if self.shards.iter().all(|f| f.done) {
                break;
            }
            let now = Instant::now();
            let wake = self.next_sync.min(self.next_snapshot);
            match select.ready_timeout(wake.saturating_duration_since(now)) {
                Ok(i) if i == history_index => {
                    for ask in history.try_iter().take(DRAIN) {
                        self.history(ask);
                    }
                }
                Ok(i) => self.drain(i, &inputs[i]),
                Err(_) => {}
            }
            let now = Instant::now();
            if now >= self.next_sync {
                self.sync();
                self.next_sync = now + self.setup.settings.sync_interval;
            }
            if now >= self.next_snapshot && !self.setup.stop.load(Ordering::Relaxed) {
                self.periodic_snapshot();
            }
        }
        // Clean: every log and the replay marks are on disk as of the stop (a failed final
        // snapshot is not a loss: the log replays over the one before).
        let mut clean = self.sync();
        let logs: Vec<store::LogWriter> = self
            .shards
            .iter_mut()
            .filter_map(|f| f.log.take())
            .collect();
        clean &= logs.len() == self.shards.len();
        for log in logs {
            if let Err(e) = log.close() {
                clean = false;
                self.error(&e);
            }
        }
        if clean {
            let clean = self.setup.dir.join(crate::state::CLEAN_STOP);
            if let Err(e) = std::fs::write(&clean, b"") {
                tracing::warn!("state: cannot write {}: {e}", clean.display());
            }
        }
    }

    /// Reads what shard `i` sent; its closed channel means it stopped.
    fn drain(&mut self, i: usize, input: &Receiver<ToStore>) {
        for _ in 0..DRAIN {
            match input.recv_timeout(Duration::ZERO) {
                Ok(message) => self.handle(i, message),
                Err(RecvTimeoutError::Timeout) => return,
                Err(RecvTimeoutError::Disconnected) => {
                    self.shards[i].done = true;
                    return;
                }
            }
        }
    }

    fn handle(&mut self, i: usize, message: ToStore) {
        match message {
            ToStore::Transitions(batch) => {
                let mut appended = 0;
                let mut dropped = 0;
                if let Some(log) = &mut self.shards[i].log {
                    for t in batch.items() {
                        match log.append(t) {
                            Ok(_) => appended += 1,
                            Err(_) => dropped += 1,
                        }
                    }
                } else {
                    dropped = batch.len() as u64;
                }
                let mut f = self.figures();
                f.log_records += appended;
                f.log_dropped += dropped;
            }
            ToStore::Gap(n) => {
                self.figures().log_dropped += n;
                self.ask_snapshot(i);
            }
            ToStore::SnapshotBegin { wall_ms } => {
                let f = &mut self.shards[i];
                f.asked = false;
                let Some(log) = &f.log else {
                    return;
                };
                let meta = store::SnapshotMeta {
                    shard: i as u32,
                    shard_count: self.setup.peers.len() as u32,
                    record_encoding: RECORD_ENCODING,
                    began_ms: wall_ms,
                    log_position: log.next_seq(),
                };
                match store::SnapshotWriter::create(&f.dir, meta) {
                    Ok(w) => f.snapshot = Some((w, Instant::now())),
                    Err(e) => {
                        f.files_failing = true;
                        self.error(&e);
                    }
                }
            }
            ToStore::SnapshotChunk { bytes, records } => {
                let Some((w, _)) = &mut self.shards[i].snapshot else {
                    return;
                };
                if let Err(e) = w.push(&bytes, u64::from(records)) {
                    self.shards[i].snapshot = None;
                    self.shards[i].files_failing = true;
                    self.error(&e);
                }
            }
            ToStore::SnapshotEnd { .. } => {
                let Some((w, began)) = self.shards[i].snapshot.take() else {
                    return;
                };
                // The log before the snapshot's position must be on disk before the snapshot
                // replaces what restores it.
                if let Some(Err(e)) = self.shards[i].log.as_mut().map(|l| l.sync()) {
                    self.shards[i].log_failing = true;
                    self.error(&e);
                    return;
                }
                match w.finish() {
                    Ok(info) => {
                        let f = &mut self.shards[i];
                        f.snapshotted = true;
                        f.files_failing = false;
                        if let Some(log) = &mut f.log {
                            log.snapshot_written(info.meta.log_position);
                        }
                        {
                            let mut figures = self.figures();
                            figures.snapshots += 1;
                            figures.last_snapshot_bytes = info.file_bytes;
                            figures.last_snapshot_ms = began.elapsed().as_millis() as u64;
                        }
                        self.retention(i);
                        self.remove_stale_shards();
                    }
                    Err(e) => {
                        self.shards[i].files_failing = true;
                        self.error(&e);
                    }
                }
            }
        }
    }

    /// Writes and fdatasyncs every log, then the anti-replay marks; whether all of it worked.
    fn sync(&mut self) -> bool {
        let started = Instant::now();
        let mut errors = Vec::new();
        for f in &mut self.shards {
            if let Some(log) = &mut f.log {
                let synced = log.sync();
                f.log_failing = synced.is_err();
                if let Err(e) = synced {
                    errors.push(e);
                }
                if log.needs_snapshot() && !f.asked && f.snapshot.is_none() {
                    f.asked = true;
                }
            }
        }
        let asked: Vec<usize> = (0..self.shards.len())
            .filter(|&i| self.shards[i].asked && self.shards[i].snapshot.is_none())
            .collect();
        for i in asked {
            self.ask_snapshot(i);
        }
        self.write_marks(&mut errors);
        let synced = errors.is_empty();
        for e in errors {
            self.error(&e);
        }
        self.publish_writable();
        let us = started.elapsed().as_micros() as u64;
        let mut f = self.figures();
        f.syncs += 1;
        f.last_sync_us = us;
        f.max_sync_us = f.max_sync_us.max(us);
        synced
    }

    fn write_marks(&mut self, errors: &mut Vec<store::Error>) {
        let Some(writer) = &mut self.marks else {
            return;
        };
        let keys = self
            .setup
            .keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(keys) = keys else {
            return;
        };
        let marks: Vec<store::ReplayMark> = keys
            .marks()
            .into_iter()
            .map(|m| {
                let before = self.last_marks.insert(m.gateway, m.highest);
                store::ReplayMark {
                    gateway: m.gateway,
                    boot_epoch: m.epoch,
                    highest_seq: m.highest,
                    used_last_interval: before.map_or(0, |b| m.highest.saturating_sub(b)),
                }
            })
            .collect();
        let written = writer.write(self.setup.clock.now().wall_ms, &marks);
        self.marks_failing = written.is_err();
        if let Err(e) = written {
            errors.push(e);
        }
    }

    /// Publishes whether the last write of every part of the state succeeded.
    fn publish_writable(&self) {
        let failing =
            self.marks_failing || self.shards.iter().any(|f| f.log_failing || f.files_failing);
        self.figures().writable = !failing;
    }

    /// Asks the next shard for its periodic snapshot; spreads the shards over the interval.
    fn periodic_snapshot(&mut self) {
        let n = self.shards.len().max(1) as u32;
        let i = self.next_shard % self.shards.len().max(1);
        self.next_shard = i + 1;
        self.ask_snapshot(i);
        self.next_snapshot = Instant::now() + self.setup.settings.snapshot_interval / n;
    }

    fn ask_snapshot(&mut self, i: usize) {
        let f = &mut self.shards[i];
        if f.snapshot.is_some() || f.log.is_none() {
            return;
        }
        f.asked = self.setup.peers[i]
            .send(Inbox::Snapshot, ASK_TIMEOUT)
            .is_ok();
    }

    fn retention(&mut self, i: usize) {
        let policy = store::RetentionPolicy {
            max_age_ms: self.setup.retention_ms,
            max_bytes: (self.setup.settings.log_max_bytes / self.shards.len().max(1)) as u64,
        };
        let now_ms = self.setup.clock.now().wall_ms;
        match store::apply_retention(&self.shards[i].dir, now_ms, &policy) {
            Ok(report) => {
                self.figures().segments_removed += report.removed.len() as u64;
                if report.needs_snapshot {
                    self.shards[i].asked = true;
                }
            }
            Err(e) => {
                self.shards[i].files_failing = true;
                self.error(&e);
            }
        }
    }

    /// Once every shard of this count has a snapshot, the directories of an earlier count go.
    fn remove_stale_shards(&mut self) {
        if self.setup.stale_shards.is_empty() || !self.shards.iter().all(|f| f.snapshotted) {
            return;
        }
        for shard in std::mem::take(&mut self.setup.stale_shards) {
            if let Err(e) = store::remove_shard_dir(&self.setup.dir, shard) {
                self.error(&e);
            }
            let dir = store::shard_dir(&self.setup.dir, shard);
            self.setup.history_dirs.retain(|d| *d != dir);
        }
    }

    /// HISTORY (SPEC.md § P6.12): the user's shard's log through its writer (the open
    /// segment's index in memory), merged with the directories of an earlier shard count.
    fn history(&mut self, ask: HistoryAsk) {
        let r = ask.request;
        let cap = wire::max_history_spans(ask.max_frame_len as u32);
        let query = store::HistoryQuery {
            user: r.user,
            since_ms: r.since_ms,
            after_version: r.after_version,
            max_spans: (r.max_spans as usize).min(cap),
        };
        let i = owner(r.user, self.shards.len());
        let old: Vec<PathBuf> = self
            .setup
            .history_dirs
            .iter()
            .filter(|d| **d != self.shards[i].dir)
            .cloned()
            .collect();
        let answer = match &mut self.shards[i].log {
            Some(log) if old.is_empty() => log.history(&query),
            _ => {
                let mut dirs = old;
                dirs.push(self.shards[i].dir.clone());
                store::history_in(&dirs, &query)
            }
        };
        let mut buf = BytesMut::new();
        match answer {
            Ok(h) => {
                let spans: Vec<wire::Span> = h.spans.iter().map(wire_span).collect();
                let encoded = wire::encode_history_reply(
                    &mut buf,
                    r.request_id,
                    h.more,
                    h.last_seen_ms,
                    &spans,
                    ask.max_frame_len as u32,
                );
                if let Err(e) = encoded {
                    buf.clear();
                    let code = wire::ErrorCode::Internal;
                    let message = wire::error_message(code.name(), &e.to_string());
                    wire::encode_error(&mut buf, r.request_id, code, &message);
                }
            }
            Err(e) => {
                self.error(&e);
                let code = wire::ErrorCode::Internal;
                let detail = format!("the history could not be read: {e}");
                let message = wire::error_message(code.name(), &detail);
                wire::encode_error(&mut buf, r.request_id, code, &message);
            }
        }
        self.figures().history_requests += 1;
        // The link may be gone; its task would have abandoned the request.
        let _ = ask.reply.send(Frame::Local {
            frame: buf.freeze(),
            completes: true,
        });
    }

    fn figures(&self) -> std::sync::MutexGuard<'_, StateStats> {
        self.setup.figures.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn error_count(&self, e: &store::Error) {
        *self
            .figures()
            .errors
            .entry(e.kind().label().to_string())
            .or_default() += 1;
    }

    /// Counts a storage error by kind and logs it, at most once per kind every 10 s.
    fn error(&mut self, e: &store::Error) {
        self.error_count(e);
        let kind = e.kind().label();
        let now = Instant::now();
        let entry = self
            .error_log
            .entry(kind)
            .or_insert((now - LOG_ERRORS_EVERY, 0));
        entry.1 += 1;
        if now.duration_since(entry.0) >= LOG_ERRORS_EVERY {
            tracing::warn!(
                "state: {e} ({} such error(s) since the last report; presence goes on, \
                 durable state may lag)",
                entry.1
            );
            *entry = (now, 0);
        }
    }
}

fn wire_span(s: &store::Span) -> wire::Span {
    let state = |p: PublicState| match p {
        PublicState::Offline => wire::WireState::Offline,
        PublicState::Online => wire::WireState::Online,
        PublicState::Idle => wire::WireState::Idle,
    };
    wire::Span {
        version: s.version,
        start_ms: s.start_ms,
        end_ms: s.end_ms.unwrap_or(0),
        state: state(s.state),
        cause: match s.cause {
            Cause::FirstHeartbeat => wire::WireCause::FirstHeartbeat,
            Cause::StateChange => wire::WireCause::StateChange,
            Cause::Logout => wire::WireCause::Logout,
            Cause::Timeout => wire::WireCause::Timeout,
            Cause::Inactivity => wire::WireCause::Inactivity,
        },
        devices: s.devices,
    }
}

/// The figures of a daemon keeping no state.
pub fn disabled_figures(dir: &std::path::Path) -> StateStats {
    StateStats {
        enabled: false,
        dir: dir.display().to_string(),
        errors: BTreeMap::new(),
        ..StateStats::default()
    }
}
