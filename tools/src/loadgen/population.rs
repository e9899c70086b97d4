//! The simulated users and what the simulation expects of them, in flat arrays indexed by user
//! index (a million users cost tens of megabytes, not a HashMap of structs).
//!
//! Senders own their users' device state; what observers need is shared here through atomics,
//! one `Watched` per user: how many transitions the simulation has caused (`expected`), how
//! many observers have seen (`seen`), and the moment each pending transition was caused
//! (`online_at`, `offline_at`). They share half a cache line, so an observer's check of a
//! transition reads one shared line, not four. The simulation causes a user's next transition
//! only once the previous one has been seen (storms aside, where an offline and the following
//! online may both be in flight), and transitions alternate online / offline, so one stamp per
//! direction is enough to match every arriving transition with its cause.

use super::rng::Rng;
use presenced_core::cache::prefetch;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Flag in `offline_at`: the offline comes from silence; the stamp is the deadline.
pub const TIMEOUT: u64 = 1 << 63;
/// Flag in a stamp: do not record this transition's latency (the logout sweep at the end).
pub const UNTIMED: u64 = 1 << 62;
/// The stamp's time bits: microseconds since the run's start.
pub const TIME_MASK: u64 = UNTIMED - 1;

/// Most devices per user (device ids 1..=8).
pub const MAX_DEVICES: u8 = 8;

/// What senders and observers share of one watched user, aligned so that it never straddles
/// two cache lines.
#[repr(C, align(32))]
#[derive(Default)]
struct Watched {
    expected: AtomicU32,
    seen: AtomicU32,
    online_at: AtomicU64,
    offline_at: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<Watched>() == 32);

/// Per-user state shared by senders and observers.
pub struct Population {
    /// User id of index 0.
    pub base: u64,
    /// Devices of each user (1..=8).
    pub devices: Vec<u8>,
    /// Observers (each watched transition must be seen by all).
    pub observers: u32,
    /// Watched users: indices `0..watch` have a `Watched` and an `excused` flag.
    pub watch: u32,
    watched: Vec<Watched>,
    excused: Vec<AtomicBool>,
    /// Transitions caused so far, all watched users.
    pub expected_total: AtomicU64,
    /// Transitions seen so far, all observers and watched users.
    pub seen_total: AtomicU64,
    /// Whether transitions caused now are timed (false during the warm-up).
    pub timing: AtomicBool,
}

/// Draws each user's device count: 1 + a uniform draw from `[0, 2 × (mean − 1)]`, rounded up
/// with the probability of its fraction, so the mean is exactly `mean` (1 to 8 devices).
pub fn draw_devices(users: u32, mean: f64, rng: &mut Rng) -> Vec<u8> {
    let span = 2.0 * (mean - 1.0).max(0.0);
    (0..users)
        .map(|_| {
            let x = rng.unit() * span;
            let extra = x.floor() + f64::from(u8::from(rng.chance(x.fract())));
            (1.0 + extra).min(f64::from(MAX_DEVICES)) as u8
        })
        .collect()
}

impl Population {
    /// A population of `devices.len()` users from id `base`, the first `watch` of them
    /// watched by `observers` observers.
    pub fn new(base: u64, devices: Vec<u8>, watch: u32, observers: u32) -> Population {
        Population {
            base,
            devices,
            observers,
            watch,
            watched: (0..watch).map(|_| Watched::default()).collect(),
            excused: (0..watch).map(|_| AtomicBool::new(false)).collect(),
            expected_total: AtomicU64::new(0),
            seen_total: AtomicU64::new(0),
            timing: AtomicBool::new(false),
        }
    }

    /// Number of users.
    pub fn users(&self) -> u32 {
        self.devices.len() as u32
    }

    /// The user id of index `index`.
    #[inline]
    pub fn id(&self, index: u32) -> u64 {
        self.base + u64::from(index)
    }

    /// The index of user id `user`, if it is a watched simulated user.
    #[inline]
    pub fn watched_index(&self, user: u64) -> Option<u32> {
        let i = user.checked_sub(self.base)?;
        (i < u64::from(self.watch)).then_some(i as u32)
    }

    /// Total devices.
    pub fn total_devices(&self) -> u64 {
        self.devices.iter().map(|&d| u64::from(d)).sum()
    }

    /// Records that the simulation has caused user `index` to go online, stamp to follow
    /// (`stamp_online`) before the causing datagram leaves. No-op for unwatched users.
    #[inline]
    pub fn expect(&self, index: u32) {
        if let Some(w) = self.watched.get(index as usize) {
            w.expected.fetch_add(1, Ordering::Release);
            self.expected_total.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Stamps user `index`'s pending online with `stamp` (µs since the start, with flags).
    #[inline]
    pub fn stamp_online(&self, index: u32, stamp: u64) {
        if let Some(w) = self.watched.get(index as usize) {
            w.online_at.store(stamp, Ordering::Release);
        }
    }

    /// Stamps user `index`'s pending offline with `stamp` (µs since the start, with flags).
    #[inline]
    pub fn stamp_offline(&self, index: u32, stamp: u64) {
        if let Some(w) = self.watched.get(index as usize) {
            w.offline_at.store(stamp, Ordering::Release);
        }
    }

    /// The stamp of user `index`'s latest online or offline cause.
    #[inline]
    pub fn stamp(&self, index: u32, online: bool) -> u64 {
        self.watched.get(index as usize).map_or(UNTIMED, |w| {
            let stamp = if online { &w.online_at } else { &w.offline_at };
            stamp.load(Ordering::Acquire)
        })
    }

    /// Starts loading what is shared of user `index`, ahead of its check.
    #[inline]
    pub fn prefetch(&self, index: u32) {
        if let Some(w) = self.watched.get(index as usize) {
            prefetch(w);
        }
    }

    /// Transitions caused so far for user `index`.
    #[inline]
    pub fn expected(&self, index: u32) -> u32 {
        self.watched
            .get(index as usize)
            .map_or(0, |w| w.expected.load(Ordering::Acquire))
    }

    /// Notes that an observer has seen a transition of user `index`; true if the user is
    /// one of the population's, to be added to the total with [`saw_total`](Self::saw_total).
    #[inline]
    pub fn saw(&self, index: u32) -> bool {
        match self.watched.get(index as usize) {
            Some(w) => {
                w.seen.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Adds `n` transitions [`saw`](Self::saw) noted to the total seen.
    #[inline]
    pub fn saw_total(&self, n: u64) {
        if n != 0 {
            self.seen_total.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Whether every transition caused for user `index` has reached every observer (always,
    /// for an unwatched user).
    #[inline]
    pub fn settled(&self, index: u32) -> bool {
        self.watched.get(index as usize).map_or(true, |w| {
            u64::from(w.seen.load(Ordering::Relaxed))
                == u64::from(w.expected.load(Ordering::Acquire)) * u64::from(self.observers)
        })
    }

    /// Marks user `index` as excused: the generator sent one of its beats too late to be
    /// sure it arrived inside the deadline.
    #[inline]
    pub fn excuse(&self, index: u32) {
        if let Some(e) = self.excused.get(index as usize) {
            e.store(true, Ordering::Relaxed);
        }
    }

    /// Whether user `index` is excused.
    #[inline]
    pub fn is_excused(&self, index: u32) -> bool {
        self.excused
            .get(index as usize)
            .is_some_and(|e| e.load(Ordering::Relaxed))
    }

    /// The stamp flag of a transition caused now: [`UNTIMED`] during the warm-up.
    #[inline]
    pub fn untimed(&self) -> u64 {
        if self.timing.load(Ordering::Relaxed) {
            0
        } else {
            UNTIMED
        }
    }

    /// Transitions caused but not yet seen by every observer.
    pub fn in_flight(&self) -> u64 {
        let expected = self.expected_total.load(Ordering::Relaxed) * u64::from(self.observers);
        expected.saturating_sub(self.seen_total.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_counts_have_the_asked_mean_and_range() {
        let mut rng = Rng::new(1);
        for mean in [1.0, 1.5, 2.0, 3.3, 4.5] {
            let d = draw_devices(200_000, mean, &mut rng);
            let got = d.iter().map(|&n| f64::from(n)).sum::<f64>() / d.len() as f64;
            assert!((got - mean).abs() < 0.02, "mean {mean}: {got}");
            assert!(d.iter().all(|&n| (1..=MAX_DEVICES).contains(&n)));
        }
        let two = draw_devices(100_000, 2.0, &mut rng);
        assert_eq!(two.iter().copied().max(), Some(3));
    }

    #[test]
    fn settlement_counts_every_observer() {
        let p = Population::new(10, vec![1; 4], 2, 2);
        assert_eq!(p.watched_index(10), Some(0));
        assert_eq!(p.watched_index(12), None);
        assert_eq!(p.watched_index(9), None);
        p.expect(1);
        assert!(!p.settled(1));
        assert!(p.saw(1));
        assert!(!p.settled(1));
        assert!(p.saw(1));
        assert!(p.settled(1));
        assert!(p.settled(3));
        assert_eq!(p.in_flight(), 2);
        p.saw_total(2);
        assert_eq!(p.in_flight(), 0);
        assert!(!p.saw(10), "not one of the population's users");
    }
}
