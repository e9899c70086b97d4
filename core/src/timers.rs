//! A user's one timer, near or far: where the shard sets it.
//!
//! A timer due within the near ring's span ([`crate::near`], 2^16 ticks: 655 s at a 10 ms
//! tick) is a 4-byte entry there; that is every heartbeat deadline and activity window at the
//! default settings, so an online user costs the ring 4 bytes where a wheel node costs 20.
//! A timer further ahead (last-seen retention, or a timeout or idle window set longer than the
//! ring) is a wheel timer ([`crate::wheel`]), as is any timer while the ring's pool is spent
//! (counted). The record says which ([`Timer`]).
//!
//! A timer is only ever moved earlier (a later one fires early and is re-checked: the shard's
//! delayed-trigger rule). A near one moved earlier is filed again and its old entry left to go
//! stale; a wheel one is moved in the wheel, or cancelled and filed near once it is near.

use crate::clock::Tick;
use crate::near::{Near, NearFull};
use crate::record::{widen_near, Record, Timer};
use crate::slab::{OutOfMemory, Region};
use crate::table::Prefixer;
use crate::wheel::{TimerId, Wheel};

/// The near ring and the wheel of one shard.
pub(crate) struct Timers {
    pub(crate) near: Near,
    pub(crate) wheel: Wheel,
    prefixer: Prefixer,
    /// Timers set in the wheel, though near, because the ring's pool was spent.
    pub(crate) near_pool_full: u64,
}

impl Timers {
    /// Room for one timer per user of `capacity`, the clocks at tick `now`.
    pub(crate) fn try_new(
        capacity: u32,
        now: Tick,
        prefixer: Prefixer,
    ) -> Result<Timers, OutOfMemory> {
        Ok(Timers {
            near: Near::try_new(capacity, now)?,
            wheel: Wheel::try_new(capacity, now)?,
            prefixer,
            near_pool_full: 0,
        })
    }

    /// Makes sure the user's one timer fires no later than `at`.
    pub(crate) fn schedule(&mut self, rec: &mut Record, user: u64, at: Tick) {
        match rec.timer() {
            Timer::None => self.set(rec, user, at),
            Timer::Near(due) => {
                if at < widen_near(due, at) {
                    self.set(rec, user, at);
                }
            }
            Timer::Far(index) => {
                let id = TimerId::from_index(index);
                if at >= self.wheel.due(id) {
                    return;
                }
                if self.near.covers(at) {
                    self.wheel.cancel(id);
                    self.set(rec, user, at);
                } else {
                    self.wheel.reschedule(id, at);
                }
            }
        }
    }

    /// Sets a timer at `at` for a user with none (or a near one, which goes stale).
    fn set(&mut self, rec: &mut Record, user: u64, at: Tick) {
        if self.near.covers(at) {
            match self.near.file(self.prefixer.prefix(user), at) {
                Ok(filed) => {
                    rec.set_timer(Timer::Near(filed as u32));
                    return;
                }
                Err(NearFull) => self.near_pool_full += 1,
            }
        }
        let id = self
            .wheel
            .insert(user, at)
            .expect("the wheel holds one timer per record");
        rec.set_timer(Timer::Far(id.index()));
    }

    /// Whether nothing is due up to `target`: both clocks are at it or past it and no timer is
    /// filed at their tick (a few loads: every heartbeat asks, nearly always within the tick
    /// the clocks are at).
    #[inline]
    pub(crate) fn done_up_to(&self, target: Tick) -> bool {
        target <= self.near.now() && !self.near.due_at_clock() && !self.wheel.due_at_clock()
    }

    /// The earliest tick with a timer due (or a wheel cascade), if any.
    pub(crate) fn next_due(&self) -> Option<Tick> {
        match (self.near.next_due(), self.wheel.next_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Moves both clocks to `target`, which no timer is due at or before.
    pub(crate) fn catch_up(&mut self, target: Tick) {
        self.near.advance_to(target);
        let none = self.wheel.poll(target);
        debug_assert!(none.is_none());
    }

    /// Bytes reserved for both.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.near.memory_bytes() + self.wheel.memory_bytes()
    }

    /// Where their large arrays lie (for the daemon's page policy); they never move.
    pub(crate) fn regions(&self) -> [Region; 2] {
        [self.near.region(), self.wheel.region()]
    }
}

#[cfg(test)]
mod tests {
    use crate::clock::Now;
    use crate::config::CoreConfig;
    use crate::event::{Heartbeat, PublicState, Report};
    use crate::shard::Shard;

    const MS: u64 = 1000;

    fn at(ms: u64) -> Now {
        Now {
            mono_us: ms * MS,
            wall_ms: 1_700_000_000_000 + ms,
        }
    }

    fn beat(shard: &mut Shard, ms: u64, user: u64) {
        let hb = Heartbeat {
            user,
            device: 1,
            report: Report::Online,
            active: true,
        };
        shard.heartbeat(at(ms), &hb, &mut Vec::new());
    }

    /// Users sharing a prefix (their entries name each other's records): each goes offline at
    /// its own deadline, none early, none late, and their records are dropped when their
    /// retention ends, more of them at once than one probe drops.
    #[test]
    fn users_sharing_a_prefix_expire_at_their_own_deadlines() {
        // Tick 10 ms, timeout 1.2 s, last seen kept 2 s.
        let config = CoreConfig {
            tick_us: 10 * MS,
            heartbeat_interval_us: 1000 * MS,
            grace_us: 100 * MS,
            last_seen_retention_us: 2_000 * MS,
            user_capacity: 100,
            multi_device_users: 8,
            ..CoreConfig::default()
        };
        let mut shard = Shard::new(config, at(0)).unwrap();
        let prefix = 0x1234_5678u64 << 32;
        let users: Vec<u64> = (1..=20)
            .map(|low| shard.table.key_of(prefix | low))
            .collect();
        for &u in &users {
            beat(&mut shard, 0, u);
        }
        // Half of them beat again, so their timers fire early at 1.2 s and move to 1.8 s.
        for &u in &users[..10] {
            beat(&mut shard, 600, u);
        }
        let online = |shard: &Shard| {
            users
                .iter()
                .map(|&u| shard.query(u).state == PublicState::Online)
                .collect::<Vec<_>>()
        };
        let mut out = Vec::new();
        shard.advance(at(1_200), &mut out);
        assert!(online(&shard).iter().all(|&on| on));
        shard.advance(at(1_220), &mut out);
        assert_eq!(online(&shard), [vec![true; 10], vec![false; 10]].concat());
        shard.advance(at(1_800), &mut out);
        assert_eq!(online(&shard), [vec![true; 10], vec![false; 10]].concat());
        shard.advance(at(1_820), &mut out);
        assert!(online(&shard).iter().all(|&on| !on));
        assert_eq!(out.len(), 20);
        // The first entry of each tick fired every user due: the others found none due.
        assert!(shard.stats().timers_stale >= 18, "{:?}", shard.stats());
        // Retention ends at 3.2 s for ten of them, at 3.8 s for the others.
        shard.advance(at(3_220), &mut out);
        assert_eq!(shard.stats().records_dropped, 10);
        assert!(users[10..].iter().all(|&u| shard.table.get(u).is_none()));
        assert!(users[..10].iter().all(|&u| shard.table.get(u).is_some()));
        shard.advance(at(3_820), &mut out);
        assert_eq!(shard.stats().records_dropped, 20);
        assert_eq!(shard.stats().users, 0);
        assert_eq!(out.len(), 20);
    }

    /// A near timer moved earlier leaves its old entry stale; a far one (retention) is
    /// cancelled once the user comes back, and the pool's refusals fall back to the wheel.
    #[test]
    fn timers_move_between_the_ring_and_the_wheel() {
        let config = CoreConfig {
            tick_us: 10 * MS,
            heartbeat_interval_us: 1000 * MS,
            grace_us: 100 * MS,
            last_seen_retention_us: 3_600_000 * MS,
            user_capacity: 4,
            multi_device_users: 2,
            ..CoreConfig::default()
        };
        let mut shard = Shard::new(config, at(0)).unwrap();
        beat(&mut shard, 0, 7);
        assert_eq!(shard.timers.near.len(), 1);
        // Offline at 1.2 s: the retention timer (an hour) is far.
        shard.advance(at(1_300), &mut Vec::new());
        assert_eq!(shard.query(7).state, PublicState::Offline);
        assert_eq!((shard.timers.near.len(), shard.timers.wheel.len()), (0, 1));
        // Back: the far timer is cancelled for a near one.
        beat(&mut shard, 2_000, 7);
        assert_eq!((shard.timers.near.len(), shard.timers.wheel.len()), (1, 0));
    }

    /// With the near ring's pool spent, a timer is set in the wheel, and counted.
    #[test]
    fn a_spent_pool_sends_timers_to_the_wheel() {
        use super::{Timer, Timers};
        use crate::record::Record;
        use crate::table::Table;
        // One timer: one chunk of entries and one part-filled chunk.
        let table: Table<Record> = Table::new(1, 3);
        let mut timers = Timers::try_new(1, 0, table.prefixer()).unwrap();
        let mut rec = Record::new();
        // Each earlier tick files a new entry, in a slot of its own.
        timers.schedule(&mut rec, 5, 100);
        timers.schedule(&mut rec, 5, 90);
        assert_eq!(rec.timer(), Timer::Near(90));
        assert_eq!(timers.near_pool_full, 0);
        timers.schedule(&mut rec, 5, 80);
        assert!(matches!(rec.timer(), Timer::Far(_)));
        assert_eq!(timers.near_pool_full, 1);
        assert_eq!((timers.near.len(), timers.wheel.len()), (2, 1));
        // Later: unchanged. Earlier: tried near again, refused again, set in the wheel.
        timers.schedule(&mut rec, 5, 85);
        assert_eq!(timers.near_pool_full, 1);
        timers.schedule(&mut rec, 5, 70);
        assert_eq!((timers.near.len(), timers.wheel.len()), (2, 1));
        assert_eq!(timers.near_pool_full, 2);
        assert_eq!(
            timers
                .wheel
                .due(crate::wheel::TimerId::from_index(match rec.timer() {
                    Timer::Far(index) => index,
                    other => panic!("{other:?}"),
                })),
            70
        );
    }
}
