//! The state directory at start (`[state]`): checking it can be written, restoring every
//! shard's snapshot and transition log into the new shard nodes (routing users to their owner
//! when the shard count changed), reading the anti-replay marks, and saying whether this is a
//! cold start. The files themselves are `presenced-store`'s; the restore rules are the core's
//! (ARCHITECTURE.md, rule 8).
//!
//! Presence matters more than history: state that cannot be read is reported (what, where,
//! why) and skipped, and the daemon starts from what is valid; a directory that cannot be
//! written at all leaves the daemon running without durable state, saying so.

use presenced_core::clock::Now;
use presenced_core::saved::{SavedUser, RECORD_ENCODING};
use presenced_node::auth::{Keys, ReplayMark as WindowMark};
use presenced_node::bus::owner;
use presenced_node::node::ShardNode;
use presenced_store as store;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The file a clean stop leaves in the state directory (removed at start): without it, the
/// last stop was a crash and the replay marks may be one sync interval behind.
pub const CLEAN_STOP: &str = "clean-stop";
/// Sequence numbers refused past a crash's last synced mark, beyond twice the gateway's usage
/// of one sync interval.
pub const CRASH_MARGIN: u64 = 1024;

/// What the start found and restored.
#[derive(Debug, Default)]
pub struct Restored {
    /// No usable state at all: the first start, or the directory lost. Answers are marked
    /// warming for one timeout.
    pub cold: bool,
    /// The last stop was clean (every log and the replay marks were synced at the stop).
    pub clean: bool,
    /// Users restored from snapshots.
    pub users: u64,
    /// Logged transitions replayed over them.
    pub transitions: u64,
    /// What could not be read, in a line each (file, place, why), at most a few dozen.
    pub skipped: Vec<String>,
    /// Skipped files and records, all of them.
    pub skipped_total: u64,
    /// Shard directories the current shard count no longer has: removed once every shard has
    /// a snapshot of its own.
    pub stale_shards: Vec<u32>,
    /// The shard directories to read history from (old ones too, after a change of count).
    pub history_dirs: Vec<PathBuf>,
    /// How long the restore took.
    pub elapsed: Duration,
}

/// Creates the state directory if needed and checks that it can be written, with an error
/// that names the setting and the fix.
pub fn prepare(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let probe = dir.join(".presenced-write-probe");
    std::fs::write(&probe, b"probe")
        .and_then(|()| std::fs::remove_file(&probe))
        .map_err(|e| format!("cannot write in {}: {e}", dir.display()))
}

/// Restores `nodes` (every shard of this start, in index order) from `dir` as of `now`.
pub fn restore(dir: &Path, nodes: &mut [ShardNode], now: Now) -> Result<Restored, store::Error> {
    let started = Instant::now();
    let mut restored = Restored {
        clean: dir.join(CLEAN_STOP).exists(),
        ..Restored::default()
    };
    // From now on a crash is a crash, whatever the last stop was.
    let _ = std::fs::remove_file(dir.join(CLEAN_STOP));
    let shards = nodes.len() as u32;
    let found = store::list_shards(dir)?;
    restored.cold = found.is_empty();
    restored.history_dirs = found.iter().map(|d| d.path.clone()).collect();
    restored.stale_shards = found
        .iter()
        .filter(|d| d.shard >= shards)
        .map(|d| d.shard)
        .collect();
    // Each directory of this shard count holds only its own shard's users: restore them in
    // parallel; otherwise route every user to its owner.
    let same_layout = found
        .iter()
        .all(|d| d.shard < shards && d.shard_counts.iter().all(|&n| n == shards));
    if same_layout {
        let mut jobs: Vec<(&store::ShardDirInfo, &mut ShardNode)> = Vec::new();
        let mut nodes_left: Vec<Option<&mut ShardNode>> = nodes.iter_mut().map(Some).collect();
        for d in &found {
            if let Some(node) = nodes_left[d.shard as usize].take() {
                jobs.push((d, node));
            }
        }
        let results: Vec<Result<Counts, store::Error>> = std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .into_iter()
                .map(|(d, node)| {
                    scope.spawn(move || {
                        let mut counts = Counts::default();
                        restore_dir(&d.path, &mut counts, |_, item| match item {
                            Item::Claimed(users) => {
                                node.reserve_users(usize::try_from(users).unwrap_or(usize::MAX));
                                true
                            }
                            Item::User(u) => node.restore_user(now, u),
                            Item::Transition(t) => {
                                node.restore_logged(now, t);
                                true
                            }
                        })?;
                        Ok(counts)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Ok(Counts::default())))
                .collect()
        });
        for r in results {
            r?.add_to(&mut restored);
        }
    } else {
        for d in &found {
            let mut counts = Counts::default();
            restore_dir(&d.path, &mut counts, |user, item| {
                let node = &mut nodes[owner(user, shards as usize)];
                match item {
                    // The users spread over every shard: the tables grow as they come.
                    Item::Claimed(_) => true,
                    Item::User(u) => node.restore_user(now, u),
                    Item::Transition(t) => {
                        node.restore_logged(now, t);
                        true
                    }
                }
            })?;
            counts.add_to(&mut restored);
        }
    }
    restored.elapsed = started.elapsed();
    Ok(restored)
}

/// The anti-replay marks saved at the last sync, restored into `keys`: after a clean stop up
/// to each gateway's mark, after a crash past it by twice what the gateway used in a sync
/// interval (the marks of the last interval may not have reached the disk). Returns how many
/// gateways got a mark.
pub fn restore_marks(dir: &Path, keys: &Keys, clean: bool) -> Result<usize, store::Error> {
    let Some(saved) = store::read_replay_marks(dir)? else {
        return Ok(0);
    };
    let marks: Vec<WindowMark> = saved
        .marks
        .iter()
        .map(|m| WindowMark {
            gateway: m.gateway,
            epoch: m.boot_epoch,
            highest: m.highest_seq,
        })
        .collect();
    let used: std::collections::HashMap<u32, u64> = saved
        .marks
        .iter()
        .map(|m| (m.gateway, m.used_last_interval))
        .collect();
    keys.restore_marks(&marks, |m| {
        if clean {
            m.highest
        } else {
            let used = used.get(&m.gateway).copied().unwrap_or(0);
            m.highest
                .saturating_add(used.saturating_mul(2))
                .saturating_add(CRASH_MARGIN)
        }
    });
    Ok(marks.len())
}

/// What one shard directory held.
#[derive(Default)]
struct Counts {
    users: u64,
    transitions: u64,
    skipped: Vec<String>,
    skipped_total: u64,
}

impl Counts {
    fn add_to(self, r: &mut Restored) {
        r.users += self.users;
        r.transitions += self.transitions;
        r.skipped_total += self.skipped_total;
        let room = 32usize.saturating_sub(r.skipped.len());
        r.skipped.extend(self.skipped.into_iter().take(room));
    }
}

/// One thing read back from a shard directory.
enum Item<'a> {
    /// The users the snapshot says it holds (a hint, so that a table grows once for them).
    Claimed(u64),
    User(&'a SavedUser),
    Transition(&'a presenced_core::event::Transition),
}

/// Reads one shard directory's snapshot and then its log, in order, handing each saved user
/// and logged transition to `apply` (with the user id, for routing), after the number of
/// users the snapshot claims (user id 0).
fn restore_dir(
    dir: &Path,
    counts: &mut Counts,
    mut apply: impl FnMut(u64, Item<'_>) -> bool,
) -> Result<(), store::Error> {
    let recovery = store::recover(dir, RECORD_ENCODING)?;
    note_skipped(counts, &recovery.skipped);
    if let Some(mut reader) = recovery.snapshot()? {
        if let Some(users) = reader.records_claimed() {
            apply(0, Item::Claimed(users));
        }
        while let Some(chunk) = reader.next_chunk()? {
            let mut bytes = chunk.bytes;
            while !bytes.is_empty() {
                match SavedUser::decode(bytes) {
                    Ok((user, used)) => {
                        bytes = &bytes[used..];
                        if apply(user.user, Item::User(&user)) {
                            counts.users += 1;
                        }
                    }
                    Err(e) => {
                        // A block checks (its checksum held) but a record does not decode:
                        // written by a bug; the rest of the block cannot be framed.
                        counts.skipped_total += 1;
                        counts.skipped.push(format!(
                            "{}: a saved record does not decode ({e}); the rest of its block \
                             is skipped",
                            dir.display()
                        ));
                        break;
                    }
                }
            }
        }
    }
    let mut log = recovery.log()?;
    while let Some((_, t)) = log.next_transition()? {
        apply(t.user, Item::Transition(&t));
        counts.transitions += 1;
    }
    note_skipped(counts, log.skipped());
    Ok(())
}

fn note_skipped(counts: &mut Counts, skipped: &store::Skipped) {
    counts.skipped_total += skipped.total();
    counts.skipped.extend(skipped.notes().iter().map(|n| {
        let at = n
            .offset
            .map(|o| format!(" at byte {o}"))
            .unwrap_or_default();
        format!(
            "{}{at}: {} ({})",
            n.path.display(),
            n.reason.label(),
            n.detail
        )
    }));
}
