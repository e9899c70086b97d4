//! A sender's heartbeat schedule: a ring of time slots, each holding the packed entries due in
//! it. Scheduling and taking a slot are O(1); a million devices cost 8 bytes each. Also the
//! pacing of churn (logins and logouts at a rate).

use super::rng::Rng;

/// The time slots of one sender, from `cursor` (the next slot to take) to `cursor + len − 1`.
pub struct Wheel {
    slot_us: u64,
    slots: Vec<Vec<u64>>,
    cursor: u64,
    spare: Vec<u64>,
}

impl Wheel {
    /// A wheel of `slot_us`-wide slots reaching `horizon_us` ahead, its first slot the one of
    /// `start_us`.
    pub fn new(slot_us: u64, horizon_us: u64, start_us: u64) -> Wheel {
        let slot_us = slot_us.max(1);
        let len = horizon_us.div_ceil(slot_us) + 2;
        Wheel {
            slot_us,
            slots: (0..len).map(|_| Vec::new()).collect(),
            cursor: start_us / slot_us,
            spare: Vec::new(),
        }
    }

    /// The slot width.
    pub fn slot_us(&self) -> u64 {
        self.slot_us
    }

    /// When the next slot to take starts.
    pub fn next_us(&self) -> u64 {
        self.cursor * self.slot_us
    }

    /// Schedules `entry` at `at_us`: times already past go to the next slot to take, times
    /// beyond the horizon to its last slot.
    #[inline]
    pub fn schedule(&mut self, at_us: u64, entry: u64) {
        let len = self.slots.len() as u64;
        let slot = (at_us / self.slot_us).clamp(self.cursor, self.cursor + len - 1);
        if let Some(s) = self.slots.get_mut((slot % len) as usize) {
            s.push(entry);
        }
    }

    /// Takes the next slot if it has started by `now_us`: its start time and entries. Give the
    /// entries back with [`recycle`](Wheel::recycle) to reuse their memory.
    pub fn take_due(&mut self, now_us: u64) -> Option<(u64, Vec<u64>)> {
        let at = self.next_us();
        if at > now_us {
            return None;
        }
        let len = self.slots.len() as u64;
        let index = (self.cursor % len) as usize;
        let fresh = std::mem::take(&mut self.spare);
        let entries = std::mem::replace(self.slots.get_mut(index)?, fresh);
        self.cursor += 1;
        Some((at, entries))
    }

    /// Returns a taken slot's vector for reuse.
    pub fn recycle(&mut self, mut entries: Vec<u64>) {
        entries.clear();
        if entries.capacity() > self.spare.capacity() {
            self.spare = entries;
        }
    }

    /// Drops every scheduled entry.
    pub fn clear(&mut self) {
        for s in &mut self.slots {
            s.clear();
        }
    }
}

/// A sender's churn, paced open-loop from its start: `per_us` logins or logouts per µs.
pub struct ChurnPace {
    start_us: u64,
    per_us: f64,
    done: u64,
}

impl ChurnPace {
    /// Churn at `per_us` events per µs from `start_us` (none if `per_us` ≤ 0).
    pub fn new(start_us: u64, per_us: f64) -> ChurnPace {
        ChurnPace {
            start_us,
            per_us,
            done: 0,
        }
    }

    /// How many events fell due by `now` since the last call (they count as done).
    pub fn take_due(&mut self, now: u64) -> u64 {
        if self.per_us <= 0.0 {
            return 0;
        }
        let due = (now.saturating_sub(self.start_us) as f64 * self.per_us) as u64;
        let n = due.saturating_sub(self.done);
        self.done += n;
        n
    }

    /// When the next event falls due (`u64::MAX`: never).
    pub fn next_us(&self) -> u64 {
        if self.per_us <= 0.0 {
            return u64::MAX;
        }
        self.start_us + ((self.done + 1) as f64 / self.per_us) as u64
    }

    /// One of `first .. first + n` that `settled` accepts, from up to four random draws.
    pub fn pick(rng: &mut Rng, first: u32, n: u32, settled: impl Fn(u32) -> bool) -> Option<u32> {
        (0..4)
            .map(|_| first + rng.below(u64::from(n)) as u32)
            .find(|&s| settled(s))
    }
}

#[cfg(test)]
mod tests {
    use super::{ChurnPace, Wheel};
    use crate::loadgen::rng::Rng;

    #[test]
    fn entries_come_out_in_slot_order_and_past_times_come_next() {
        let mut w = Wheel::new(1000, 10_000, 5_000);
        w.schedule(7_500, 2);
        w.schedule(5_200, 1);
        w.schedule(100, 0); // past: next slot
        w.schedule(1_000_000, 9); // beyond the horizon: last slot
        let mut out = Vec::new();
        let mut now = 5_000;
        while now < 40_000 {
            while let Some((at, entries)) = w.take_due(now) {
                assert!(at <= now);
                out.extend(entries.iter().map(|&e| (e, at)));
                w.recycle(entries);
            }
            now += 500;
        }
        assert_eq!(out, vec![(1, 5_000), (0, 5_000), (2, 7_000), (9, 16_000)]);
    }

    #[test]
    fn churn_is_paced_from_the_start_and_picks_only_settled() {
        let mut pace = ChurnPace::new(1_000, 0.001); // one per ms
        assert_eq!(pace.take_due(1_000), 0);
        assert_eq!(pace.next_us(), 2_000);
        assert_eq!(pace.take_due(5_500), 4);
        assert_eq!(pace.take_due(5_900), 0);
        assert_eq!(pace.next_us(), 6_000);
        let mut off = ChurnPace::new(0, 0.0);
        assert_eq!((off.take_due(u64::MAX / 2), off.next_us()), (0, u64::MAX));
        let mut rng = Rng::new(7);
        for _ in 0..100 {
            let got = ChurnPace::pick(&mut rng, 10, 50, |s| s % 2 == 0);
            assert!(
                got.map_or(true, |s| (10..60).contains(&s) && s % 2 == 0),
                "{got:?}"
            );
        }
        assert_eq!(ChurnPace::pick(&mut rng, 10, 50, |_| false), None);
    }
}
