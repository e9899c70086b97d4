//! Anti-replay for one gateway, shared by every shard without locks.
//!
//! A gateway's datagrams reach several shards (SO_REUSEPORT, per-shard ports), so its replay
//! state cannot live in one shard. It is a ring of `size` atomic slots: sequence number `s`
//! lives in slot `s mod size`, which holds the largest sequence number accepted there (tagged
//! with the boot epoch's generation). A datagram is accepted iff a compare-and-swap raises its
//! slot to it: a sequence number is accepted at most once, and one more than `size` behind an
//! accepted one in the same slot is refused as too old. Boot epochs only grow: a newer epoch is
//! adopted (a new generation, so the old epoch's slots count as empty), an older one refused.

use std::sync::atomic::{AtomicU64, Ordering};

/// Sequence numbers must be below this (48 bits): a gateway sending a million datagrams a
/// second reaches it after 8.9 years, and starts a new boot epoch before.
pub const SEQUENCE_LIMIT: u64 = (1 << 48) - 1;

const SEQ_MASK: u64 = (1 << 48) - 1;
/// State bit 63: an epoch has been adopted.
const ADOPTED: u64 = 1 << 63;

/// Why a datagram was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Replay {
    /// This sequence number was accepted before (in this boot epoch).
    Replayed,
    /// A sequence number `size` or more ahead in the same slot was accepted: too old to tell.
    TooOld,
    /// The boot epoch is older than one already seen.
    StaleEpoch,
    /// The sequence number is at or above [`SEQUENCE_LIMIT`].
    SequenceExhausted,
}

/// One gateway's replay window.
pub struct ReplayWindow {
    /// `ADOPTED | epoch << 16 | generation`, or 0 before the first datagram.
    state: AtomicU64,
    /// `generation << 48 | (sequence + 1)`; 0 is empty.
    slots: Box<[AtomicU64]>,
    mask: u64,
}

impl ReplayWindow {
    /// A window of `size` slots (a power of two, at least 64).
    pub fn new(size: usize) -> ReplayWindow {
        assert!(size.is_power_of_two() && size >= 64, "window size {size}");
        ReplayWindow {
            state: AtomicU64::new(0),
            slots: (0..size).map(|_| AtomicU64::new(0)).collect(),
            mask: size as u64 - 1,
        }
    }

    /// Bytes of memory the window holds.
    pub fn memory_bytes(&self) -> usize {
        self.slots.len() * 8 + std::mem::size_of::<ReplayWindow>()
    }

    /// Accepts `(epoch, sequence)` once; refuses replays, old epochs and sequence numbers too
    /// far behind. Call only for datagrams whose MAC verified.
    pub fn check(&self, epoch: u32, sequence: u64) -> Result<(), Replay> {
        if sequence >= SEQUENCE_LIMIT {
            return Err(Replay::SequenceExhausted);
        }
        let generation = self.adopt(epoch)?;
        let mine = u64::from(generation) << 48 | (sequence + 1);
        let slot = &self.slots[(sequence & self.mask) as usize];
        let mut held = slot.load(Ordering::Acquire);
        loop {
            if held != 0 {
                let held_generation = (held >> 48) as u16;
                let held_sequence = (held & SEQ_MASK) - 1;
                if held_generation == generation {
                    if held_sequence == sequence {
                        return Err(Replay::Replayed);
                    }
                    if held_sequence > sequence {
                        return Err(Replay::TooOld);
                    }
                } else if (held_generation.wrapping_sub(generation) as i16) > 0 {
                    // A newer boot epoch was adopted after we read the state.
                    return Err(Replay::StaleEpoch);
                }
            }
            match slot.compare_exchange_weak(held, mine, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Ok(()),
                Err(now) => held = now,
            }
        }
    }

    /// The high-water mark: the boot epoch and the largest sequence number accepted in it, or
    /// `None` before the first datagram. Reads every slot (a cold path: once per sync).
    pub fn mark(&self) -> Option<(u32, u64)> {
        let state = self.state.load(Ordering::Acquire);
        if state & ADOPTED == 0 {
            return None;
        }
        let epoch = (state >> 16) as u32;
        let generation = state as u16;
        let highest = self
            .slots
            .iter()
            .map(|slot| slot.load(Ordering::Acquire))
            .filter(|&held| held != 0 && (held >> 48) as u16 == generation)
            .map(|held| (held & SEQ_MASK) - 1)
            .max();
        // An adopted epoch with no accepted sequence yet: nothing below 0 to refuse.
        Some((epoch, highest.unwrap_or(0)))
    }

    /// After a restart: adopts `epoch` (unless a newer one is already adopted) and refuses
    /// every sequence number of it up to `floor`, as if each had been accepted: a datagram
    /// accepted before the restart cannot be replayed after it.
    pub fn restore(&self, epoch: u32, floor: u64) {
        let Ok(generation) = self.adopt(epoch) else {
            return;
        };
        if (self.state.load(Ordering::Acquire) >> 16) as u32 != epoch {
            return;
        }
        let floor = floor.min(SEQUENCE_LIMIT - 1);
        let size = self.mask + 1;
        for (i, slot) in self.slots.iter().enumerate() {
            // The largest sequence number at or below the floor that lives in slot `i`.
            let behind = (floor.wrapping_sub(i as u64)) & self.mask;
            if floor < i as u64 {
                continue;
            }
            let s = floor - behind;
            debug_assert!(s % size == i as u64 % size);
            let mine = u64::from(generation) << 48 | (s + 1);
            slot.fetch_max(mine, Ordering::AcqRel);
        }
    }

    /// The generation of `epoch`, adopting it if it is newer than the current one.
    fn adopt(&self, epoch: u32) -> Result<u16, Replay> {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            let current = (state >> 16) as u32;
            let generation = state as u16;
            if state & ADOPTED != 0 {
                if epoch == current {
                    return Ok(generation);
                }
                if epoch < current {
                    return Err(Replay::StaleEpoch);
                }
            }
            let next_generation = generation.wrapping_add(1);
            let next = ADOPTED | u64::from(epoch) << 16 | u64::from(next_generation);
            match self
                .state
                .compare_exchange(state, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(next_generation),
                Err(now) => state = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_xoshiro::rand_core::{RngCore, SeedableRng};
    use rand_xoshiro::Xoshiro256StarStar;
    use std::collections::{BTreeMap, BTreeSet};

    #[test]
    fn a_restored_window_refuses_everything_up_to_its_floor() {
        let w = ReplayWindow::new(64);
        assert_eq!(w.mark(), None);
        for s in [3, 90, 91, 1000] {
            w.check(5, s).unwrap();
        }
        assert_eq!(w.mark(), Some((5, 1000)));
        let back = ReplayWindow::new(64);
        back.restore(5, 1000);
        for s in [3, 90, 91, 999, 1000] {
            assert!(back.check(5, s).is_err(), "{s}");
        }
        // Never seen but below the floor: refused too (it may have been accepted).
        assert!(back.check(5, 998).is_err());
        assert_eq!(back.check(5, 1001), Ok(()));
        assert_eq!(back.mark(), Some((5, 1001)));
        // An older epoch stays refused, a newer one starts fresh.
        assert_eq!(back.check(4, 2000), Err(Replay::StaleEpoch));
        assert_eq!(back.check(6, 1), Ok(()));
        // A floor below the window's size leaves the slots above it free.
        let low = ReplayWindow::new(64);
        low.restore(1, 10);
        assert!(low.check(1, 10).is_err());
        assert_eq!(low.check(1, 11), Ok(()));
        assert_eq!(low.check(1, 40), Ok(()));
    }

    #[test]
    fn each_sequence_once_in_any_order() {
        let w = ReplayWindow::new(64);
        for s in [5u64, 3, 4, 0, 63, 1] {
            assert_eq!(w.check(1, s), Ok(()));
        }
        for s in [5u64, 3, 4, 0, 63, 1] {
            assert_eq!(w.check(1, s), Err(Replay::Replayed));
        }
        assert_eq!(w.check(1, 64 + 5), Ok(()));
        assert_eq!(w.check(1, 5), Err(Replay::TooOld));
        assert_eq!(w.check(1, SEQUENCE_LIMIT), Err(Replay::SequenceExhausted));
    }

    #[test]
    fn epochs_only_move_forward() {
        let w = ReplayWindow::new(64);
        assert_eq!(w.check(10, 100), Ok(()));
        assert_eq!(w.check(9, 0), Err(Replay::StaleEpoch));
        // A restart: the new epoch starts again at 0, the old one's slots do not count.
        assert_eq!(w.check(11, 0), Ok(()));
        assert_eq!(w.check(11, 100), Ok(()));
        assert_eq!(w.check(11, 100), Err(Replay::Replayed));
        assert_eq!(w.check(10, 101), Err(Replay::StaleEpoch));
    }

    /// Against a plain model: a set of accepted (epoch, sequence) and the rules above.
    #[test]
    fn agrees_with_a_model_on_random_traffic() {
        let w = ReplayWindow::new(64);
        let mut accepted: BTreeSet<(u32, u64)> = BTreeSet::new();
        let mut by_slot: BTreeMap<(u32, u64), BTreeSet<u64>> = BTreeMap::new();
        let mut epoch = 0u32;
        let mut rng = Xoshiro256StarStar::seed_from_u64(0x9e37_79b9_7f4a_7c15);
        for _ in 0..200_000 {
            let x = rng.next_u64();
            let e = if x % 97 == 0 {
                epoch + 1
            } else {
                epoch.saturating_sub((x % 13 == 0) as u32)
            };
            let s = (x >> 8) % 400;
            let got = w.check(e, s);
            let want = if e < epoch {
                Err(Replay::StaleEpoch)
            } else if by_slot
                .get(&(e, s % 64))
                .is_some_and(|seen| seen.range(s + 1..).next().is_some())
            {
                // The slot holds a later number: this one is too old to tell, replay or not.
                Err(Replay::TooOld)
            } else if accepted.contains(&(e, s)) {
                Err(Replay::Replayed)
            } else {
                Ok(())
            };
            assert_eq!(got, want, "epoch {e} sequence {s}");
            if got.is_ok() {
                epoch = e;
                accepted.insert((e, s));
                by_slot.entry((e, s % 64)).or_default().insert(s);
            }
            if e > epoch {
                epoch = e;
            }
        }
    }

    #[test]
    fn threads_never_accept_a_sequence_twice() {
        let w = std::sync::Arc::new(ReplayWindow::new(1024));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let w = w.clone();
                std::thread::spawn(move || {
                    (0..20_000u64).filter(|&s| w.check(1, s).is_ok()).count()
                })
            })
            .collect();
        let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        // Each thread tries every number in order, so a number is overtaken in its slot only
        // after it was tried: every one is accepted, exactly once.
        assert_eq!(total, 20_000);
    }
}
