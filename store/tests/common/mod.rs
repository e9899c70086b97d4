//! Helpers shared by the store's tests: a temporary directory removed on drop, and
//! transition generators.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use presenced_core::event::{Cause, PublicState, Transition};

/// A fresh directory under the system temp dir, removed (with everything in it) on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let dir = std::env::temp_dir().join(format!(
            "presenced-store-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A small deterministic generator (splitmix64).
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

pub const STATES: [PublicState; 3] = [PublicState::Offline, PublicState::Online, PublicState::Idle];
pub const CAUSES: [Cause; 5] = [
    Cause::FirstHeartbeat,
    Cause::StateChange,
    Cause::Logout,
    Cause::Timeout,
    Cause::Inactivity,
];

/// A transition of `user` at `at_ms` with `version`, its other fields from `rng`.
pub fn transition(rng: &mut Rng, user: u64, at_ms: u64, version: u64) -> Transition {
    let state = STATES[rng.below(3) as usize];
    Transition {
        user,
        state,
        prev: STATES[rng.below(3) as usize],
        at_ms,
        cause: CAUSES[rng.below(5) as usize],
        version,
        devices: rng.below(9) as u8,
        seen: state != PublicState::Idle || rng.below(2) == 0,
    }
}

/// `n` transitions over `users` users, times from `t0` by `step_ms`, per-user versions
/// growing as the core's do.
pub fn stream(seed: u64, n: usize, users: u64, t0: u64, step_ms: u64) -> Vec<Transition> {
    let mut rng = Rng(seed);
    let mut versions = std::collections::HashMap::new();
    (0..n)
        .map(|i| {
            let user = 1 + rng.below(users);
            let at = t0 + i as u64 * step_ms;
            let v = versions.entry(user).or_insert(0u64);
            *v = (*v + 1).max(at << 16);
            transition(&mut rng, user, at, *v)
        })
        .collect()
}

/// Every transition in the log of `shard_dir` from `from` on.
pub fn read_log(shard_dir: &Path, from: u64) -> (Vec<(u64, Transition)>, presenced_store::Skipped) {
    let mut c =
        presenced_store::LogCursor::open(&presenced_store::log_dir(shard_dir), from).unwrap();
    let mut out = Vec::new();
    while let Some(x) = c.next_transition().unwrap() {
        out.push(x);
    }
    (out, c.skipped().clone())
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}
