//! Helpers shared by the store's benches: a scratch directory on the bench disk, transitions.
#![allow(dead_code)]

use std::path::PathBuf;

use presenced_core::event::{Cause, PublicState, Transition};

pub const T0: u64 = 1_700_000_000_000;

/// A scratch directory under `STORE_BENCH_DIR` or the system temp directory, removed on drop.
pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(tag: &str) -> Dir {
        let base = std::env::var_os("STORE_BENCH_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        let d = base.join(format!(
            "presenced-store-bench-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The splitmix64 finaliser: random-looking, a bijection.
pub fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// A transition of `user`, the i-th of the bench, at `at_ms`.
pub fn transition(user: u64, i: u64, at_ms: u64) -> Transition {
    let state = [PublicState::Online, PublicState::Idle, PublicState::Offline][(i % 3) as usize];
    Transition {
        user,
        state,
        prev: PublicState::Offline,
        at_ms,
        cause: Cause::StateChange,
        version: (at_ms << 16) + i % 65_536,
        devices: (i % 4) as u8,
        seen: state != PublicState::Idle,
    }
}

/// `n` transitions over 1M users, 1000 per wall ms.
pub fn storm(n: u64) -> Vec<Transition> {
    (0..n)
        .map(|i| transition(1 + mix(i) % 1_000_000, i, T0 + i / 1000))
        .collect()
}
