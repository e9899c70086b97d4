//! A Redis sender thread: a few gateways and the device slots of their users, driven through
//! the scenario on the same plan as presenced's senders (the slot wheel of per-device
//! deadlines, jitter, churn, flap's duplicates, storm's silence). Every device is simulated on
//! its own (the design aggregates per device): a churn event logs one device in or out.

use super::gateway::Gw;
use super::{Shared, ALIVE, EXCUSED};
use crate::loadgen::counters::LocalCounts;
use crate::loadgen::plan::{Pacing, Plan, LATE_US};
use crate::loadgen::population::{Population, UNTIMED};
use crate::loadgen::rng::Rng;
use crate::loadgen::schedule::{ChurnPace, Wheel};
use crate::loadgen::users::Users;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Slots handled between two looks at the clock in `--max` mode.
const MAX_CHUNK: u32 = 256;

/// Packs a schedule entry: device slot and its generation.
#[inline]
fn pack(slot: u32, generation: u8) -> u64 {
    (u64::from(slot) << 8) | u64::from(generation)
}

#[inline]
fn unpack(entry: u64) -> (u32, u8) {
    ((entry >> 8) as u32, entry as u8)
}

/// One sender thread's gateways and device slots.
pub struct Sender {
    sh: Arc<Shared>,
    plan: Arc<Plan>,
    pop: Arc<Population>,
    gws: Vec<Gw>,
    first_gateway: u32,
    /// Device slots `first..end`.
    first: u32,
    end: u32,
    /// Per slot (index − first): connected (bit 0) and generation.
    users: Users,
    wheel: Option<Wheel>,
    rng: Rng,
    local: LocalCounts,
    /// This thread's share of the churn.
    churn: ChurnPace,
    start_us: u64,
    last_flush_us: u64,
    reported_online: bool,
}

impl Sender {
    /// Sender `thread` for the gateways `gateways` (each with its connection in `gws`) and
    /// their users' device slots, starting at `start_us`.
    pub fn new(
        thread: u32,
        gateways: Range<u32>,
        gws: Vec<Gw>,
        sh: Arc<Shared>,
        plan: Arc<Plan>,
        pop: Arc<Population>,
        start_us: u64,
    ) -> Sender {
        let slots = sh.slots_of(&gateways);
        let n = slots.end - slots.start;
        let total = sh.owner.len().max(1) as f64;
        let wheel = match plan.pacing {
            Pacing::Scheduled {
                period_us,
                gap_max_us,
                ..
            } => Some(Wheel::new(
                (period_us / 200).clamp(100, 1000),
                gap_max_us.max(period_us),
                start_us,
            )),
            Pacing::Max => None,
        };
        Sender {
            rng: Rng::new(plan.seed ^ (u64::from(thread) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
            churn: ChurnPace::new(start_us, plan.churn_per_s * f64::from(n) / total / 1e6),
            sh,
            plan,
            pop,
            gws,
            first_gateway: gateways.start,
            first: slots.start,
            end: slots.end,
            users: Users::new(n as usize),
            wheel,
            local: LocalCounts::default(),
            start_us,
            last_flush_us: start_us,
            reported_online: false,
        }
    }

    /// Runs the scenario until `end_us` (or a stop); storm then goes silent.
    pub fn run(&mut self, end_us: u64) {
        self.sh.clock.sleep_until(self.start_us);
        if self.first == self.end {
            self.report_online();
        }
        match self.plan.pacing {
            Pacing::Max => self.run_max(end_us),
            Pacing::Scheduled { .. } => self.run_scheduled(end_us),
        }
        self.flush_all();
        self.report_online();
        if self.plan.storm.is_some() {
            self.silence();
        }
        self.publish();
    }

    fn stopped(&self, now: u64, end_us: u64) -> bool {
        now >= end_us || self.sh.stop.load(Ordering::Relaxed)
    }

    fn run_scheduled(&mut self, end_us: u64) {
        let period = self.plan.period_us();
        for slot in self.first..self.end {
            let at = self.start_us + self.rng.below(period);
            if let Some(w) = self.wheel.as_mut() {
                w.schedule(at, pack(slot, 0));
            }
        }
        loop {
            let now = self.sh.clock.now_us();
            if self.stopped(now, end_us) {
                break;
            }
            self.churn(now);
            loop {
                let now = self.sh.clock.now_us();
                let Some((at, entries)) = self.wheel.as_mut().and_then(|w| w.take_due(now)) else {
                    break;
                };
                let lag = now.saturating_sub(at);
                let mut beats = 0u64;
                for &e in &entries {
                    beats += u64::from(self.scheduled_beat(e, at, lag));
                }
                if let Some(w) = self.wheel.as_mut() {
                    w.recycle(entries);
                }
                if beats > 0 {
                    self.local.max_lag_us = self.local.max_lag_us.max(lag);
                    if lag > LATE_US {
                        self.local.late += beats;
                    }
                }
                if self.stopped(now, end_us) {
                    break;
                }
            }
            let now = self.sh.clock.now_us();
            if now >= self.last_flush_us + self.plan.batch_delay_us {
                self.flush_all();
            }
            if now >= self.start_us + period + self.plan.batch_delay_us {
                // Every device's first beat (within one period) has left.
                self.report_online();
            }
            self.publish();
            let mut wake = now + 1000;
            if let Some(w) = &self.wheel {
                wake = wake.min(w.next_us());
            }
            if self.gws.iter().any(|g| g.pending() > 0) {
                wake = wake.min(self.last_flush_us + self.plan.batch_delay_us);
            }
            wake = wake.min(self.churn.next_us()).min(end_us);
            self.sh.clock.sleep_until(wake.max(now + 20));
        }
    }

    /// One scheduled beat; returns whether it was sent (not a stale entry).
    fn scheduled_beat(&mut self, entry: u64, at: u64, lag: u64) -> bool {
        let (slot, generation) = unpack(entry);
        let li = (slot - self.first) as usize;
        if self.users.generation(li) != generation {
            return false;
        }
        let stamp = self.connect(slot);
        self.gw(slot, |gw, sh, pop| gw.set(sh, pop, slot, stamp));
        if lag > self.plan.excuse_after_us {
            self.pop.excuse(slot);
            self.sh.flag(slot, EXCUSED, true);
            self.local.excused_beats += 1;
        }
        if let Some(flap) = self.plan.flap {
            if self.rng.chance(flap.duplicate) {
                self.gw(slot, |gw, sh, pop| gw.set(sh, pop, slot, None));
            }
        }
        let next = at + self.plan.gap(&mut self.rng);
        if let Some(w) = self.wheel.as_mut() {
            w.schedule(next, entry);
        }
        true
    }

    fn run_max(&mut self, end_us: u64) {
        let mut cursor = self.first;
        let mut first_pass = true;
        while self.first < self.end {
            let now = self.sh.clock.now_us();
            if self.stopped(now, end_us) {
                break;
            }
            self.churn(now);
            let stop = (cursor + MAX_CHUNK).min(self.end);
            for slot in cursor..stop {
                if first_pass {
                    self.login(slot, now);
                } else if self.users.live((slot - self.first) as usize) != 0 {
                    self.gw(slot, |gw, sh, pop| gw.set(sh, pop, slot, None));
                }
            }
            cursor = stop;
            if cursor == self.end {
                cursor = self.first;
                if first_pass {
                    self.flush_all();
                    self.report_online();
                }
                first_pass = false;
            }
            let now = self.sh.clock.now_us();
            if now >= self.last_flush_us + self.plan.batch_delay_us {
                self.flush_all();
                self.publish();
            }
        }
        while !self.stopped(self.sh.clock.now_us(), end_us) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    // ---- device-level actions -----------------------------------------------------------

    /// Marks `slot` connected; if it was not, the simulation expects a login and this returns
    /// the flags of its stamp.
    fn connect(&mut self, slot: u32) -> Option<u64> {
        let li = (slot - self.first) as usize;
        if self.users.live(li) != 0 {
            return None;
        }
        self.users.set_live(li, 1);
        self.sh.flag(slot, ALIVE, true);
        self.pop.expect(slot);
        self.local.logins += 1;
        Some(self.pop.untimed())
    }

    /// Connects `slot` now (churn, `--max`'s first pass) and schedules its next beat.
    fn login(&mut self, slot: u32, now: u64) {
        let li = (slot - self.first) as usize;
        let generation = self.users.bump(li);
        let stamp = self.connect(slot);
        self.gw(slot, |gw, sh, pop| gw.set(sh, pop, slot, stamp));
        if self.wheel.is_some() {
            let next = now + 1 + self.rng.below(self.plan.period_us());
            if let Some(w) = self.wheel.as_mut() {
                w.schedule(next, pack(slot, generation));
            }
        }
    }

    /// Logs `slot` out if it is connected; `flags` go into the offline's stamp.
    fn logout(&mut self, slot: u32, flags: u64) {
        let li = (slot - self.first) as usize;
        self.users.bump(li);
        if self.users.live(li) == 0 {
            return;
        }
        self.users.set_live(li, 0);
        self.sh.flag(slot, ALIVE, false);
        self.pop.expect(slot);
        self.local.logouts += 1;
        self.gw(slot, |gw, sh, pop| gw.del(sh, pop, slot, Some(flags)));
    }

    /// Churn: logs random settled devices in or out, on schedule.
    fn churn(&mut self, now: u64) {
        if self.first == self.end {
            return;
        }
        let n = self.end - self.first;
        for _ in 0..self.churn.take_due(now) {
            let pop = &self.pop;
            match ChurnPace::pick(&mut self.rng, self.first, n, |s| pop.settled(s)) {
                Some(slot) if self.users.live((slot - self.first) as usize) != 0 => {
                    self.logout(slot, self.pop.untimed());
                }
                Some(slot) => self.login(slot, now),
                None => self.local.churn_skipped += 1,
            }
        }
    }

    /// Storm: every gateway goes silent; every connected device's key must expire.
    fn silence(&mut self) {
        let mut expected = 0;
        for slot in self.first..self.end {
            let li = (slot - self.first) as usize;
            self.users.bump(li);
            if self.users.live(li) != 0 {
                self.users.set_live(li, 0);
                self.sh.flag(slot, ALIVE, false);
                expected += 1;
            }
        }
        self.sh
            .expected_expiries
            .fetch_add(expected, Ordering::Relaxed);
    }

    /// The final sweep: every connected device logs out (not timed).
    pub fn drain(&mut self) {
        for slot in self.first..self.end {
            self.logout(slot, UNTIMED);
        }
        self.flush_all();
        self.publish();
    }

    // ---- plumbing -----------------------------------------------------------------------

    fn gw(&mut self, slot: u32, f: impl FnOnce(&mut Gw, &Shared, &Population)) {
        let g = (self.sh.owner[slot as usize] / self.sh.block - self.first_gateway) as usize;
        if let Some(gw) = self.gws.get_mut(g) {
            f(gw, &self.sh, &self.pop);
        }
    }

    fn flush_all(&mut self) {
        for g in &mut self.gws {
            g.flush(&self.sh, &self.pop);
        }
        self.last_flush_us = self.sh.clock.now_us();
    }

    fn report_online(&mut self) {
        if !self.reported_online {
            self.reported_online = true;
            self.sh.online.fetch_add(1, Ordering::AcqRel);
        }
    }

    fn publish(&mut self) {
        self.sh.counters.publish(&mut self.local);
    }
}

#[cfg(test)]
mod tests {
    use super::{pack, unpack};

    #[test]
    fn entries_pack_and_unpack() {
        for (s, g) in [(0, 0), (799_999_999, 255), (12, 3)] {
            assert_eq!(unpack(pack(s, g)), (s, g));
        }
    }
}
