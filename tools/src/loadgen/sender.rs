//! A sender thread: a few simulated gateways and their contiguous block of users, driven
//! open-loop through the scenario. It owns its users' device state (which devices are
//! connected, a generation that retires stale schedule entries, the last beat's time) and
//! tells the shared [`Population`] which transitions it causes, before the datagrams that
//! cause them leave.

use super::clock::Clock;
use super::control::{Control, Phase};
use super::counters::{LocalCounts, SendCounters};
use super::gateway::{Deferred, Gateway};
use super::owners::{Owners, NO_MEMBER};
use super::plan::{Pacing, Plan, LATE_US};
use super::population::{Population, TIMEOUT, UNTIMED};
use super::rng::Rng;
use super::schedule::{ChurnPace, Wheel};
use super::users::Users;
use presenced_wire::cluster::{MemberMap, Placement};
use presenced_wire::State;
use std::io;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Users handled between two looks at the clock in `--max` mode.
const MAX_CHUNK_USERS: u32 = 256;
/// Retries of the final logout for users not yet seen offline.
const DRAIN_RETRIES: u32 = 3;
/// Wait between two retries.
const DRAIN_RETRY_US: u64 = 700_000;

/// What a sender thread needs.
pub struct SenderSetup {
    /// Thread number (for the seed).
    pub thread: u32,
    /// Gateway indices of this thread (gateway ids are index + 1).
    pub gateways: Range<u32>,
    /// The plan.
    pub plan: Arc<Plan>,
    /// The shared population.
    pub pop: Arc<Population>,
    /// Counters to publish to.
    pub counters: Arc<SendCounters>,
    /// Run control.
    pub control: Arc<Control>,
    /// The time base.
    pub clock: Clock,
    /// When the scenario starts, on `clock`.
    pub start_us: u64,
    /// Boot epoch of every gateway of this run.
    pub boot_epoch: u32,
    /// Against a cluster: the member map to follow and where to record each cause's member.
    pub cluster: Option<ClusterSetup>,
}

/// What a sender thread needs against a cluster (`--cluster`).
pub struct ClusterSetup {
    /// The newest member map the observers' links took (never `None` once the run starts).
    pub maps: watch::Receiver<Option<MemberMap>>,
    /// Each watched user's causes' members.
    pub owners: Arc<Owners>,
}

/// A sender's view of the cluster: the map it sends by, and each member's number.
struct ClusterView {
    maps: watch::Receiver<Option<MemberMap>>,
    owners: Arc<Owners>,
    placement: Placement,
    /// Member index in the map held → its number in `owners`.
    numbers: Vec<u16>,
}

impl ClusterView {
    /// The newest map, if it changed since the last look.
    fn changed(&mut self) -> Option<MemberMap> {
        if !self.maps.has_changed().unwrap_or(false) {
            return None;
        }
        let map = self.maps.borrow_and_update().clone()?;
        self.take(&map);
        Some(map)
    }

    fn take(&mut self, map: &MemberMap) {
        self.placement = map.placement();
        self.numbers = map
            .members
            .iter()
            .map(|m| self.owners.intern(&m.id))
            .collect();
    }

    /// The number of `user`'s primary now.
    fn primary(&self, user: u64) -> u16 {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.placement
            .primary(user, now_ms)
            .and_then(|i| self.numbers.get(i).copied())
            .unwrap_or(NO_MEMBER)
    }
}

/// The longest interval the senders obey, as a multiple of the daemon's heartbeat interval
/// (SPEC.md § P6.13 lets a gateway bound it): the schedule's horizon reaches this far.
pub const MAX_PACE_FACTOR: u64 = 16;

/// Starts a sender thread; its sockets are bound before it starts, so errors show here. The
/// thread returns the last send error it saw, if any.
pub fn spawn(setup: SenderSetup) -> io::Result<JoinHandle<Option<String>>> {
    let sender = Sender::new(setup)?;
    std::thread::Builder::new()
        .name(format!("sender-{}", sender.thread))
        .spawn(move || sender.run())
}

/// Packs a schedule entry: user index, its generation, device slot (0..8).
#[inline]
fn pack(user: u32, generation: u8, device: u8) -> u64 {
    (u64::from(user) << 16) | (u64::from(generation) << 8) | u64::from(device)
}

#[inline]
fn unpack(entry: u64) -> (u32, u8, u8) {
    ((entry >> 16) as u32, (entry >> 8) as u8, entry as u8)
}

struct Sender {
    thread: u32,
    plan: Arc<Plan>,
    pop: Arc<Population>,
    counters: Arc<SendCounters>,
    control: Arc<Control>,
    clock: Clock,
    start_us: u64,
    gateways: Vec<Gateway>,
    first_gateway: u32,
    block: u32,
    /// This thread's users: `first..end`.
    first: u32,
    end: u32,
    /// Per user (index − first): connected devices, generation, latest beat.
    users: Users,
    wheel: Option<Wheel>,
    rng: Rng,
    local: LocalCounts,
    published: (u64, u64, u64, u64),
    last_flush_us: u64,
    /// This thread's share of the churn.
    churn: ChurnPace,
    /// Storm: next silence and next reconnect.
    next_silence_us: u64,
    next_reconnect_us: u64,
    /// Users logged out by the final sweep (for retries).
    drained: Vec<u32>,
    /// Against a cluster: the map followed.
    cluster: Option<ClusterView>,
}

impl Sender {
    fn new(s: SenderSetup) -> io::Result<Sender> {
        let plan = s.plan;
        let block = plan.users_per_gateway();
        let first = (s.gateways.start * block).min(plan.users);
        let end = (s.gateways.end * block).min(plan.users);
        let mut gateways = Vec::with_capacity(s.gateways.len());
        let mut cluster = None;
        if let Some(c) = s.cluster {
            let map = c.maps.borrow().clone().ok_or_else(|| {
                io::Error::new(io::ErrorKind::NotFound, "no member map to send by")
            })?;
            for g in s.gateways.clone() {
                gateways.push(
                    Gateway::cluster(g + 1, s.boot_epoch, map.clone(), plan.key.as_ref())
                        .map_err(|e| io::Error::other(e.to_string()))?,
                );
            }
            let mut view = ClusterView {
                maps: c.maps,
                owners: c.owners,
                placement: Placement::default(),
                numbers: Vec::new(),
            };
            view.maps.mark_unchanged();
            view.take(&map);
            cluster = Some(view);
        } else {
            for g in s.gateways.clone() {
                gateways.push(Gateway::new(
                    g + 1,
                    s.boot_epoch,
                    plan.heartbeat,
                    &plan.shard_addrs,
                    plan.key.as_ref(),
                )?);
            }
        }
        let n = (end - first) as usize;
        let churn_rate = plan.churn_per_s * f64::from(end - first) / f64::from(plan.users) / 1e6;
        let (next_silence_us, next_reconnect_us) = match plan.storm {
            Some(storm) => (s.start_us + storm.after_us, s.start_us + storm.cycle_us()),
            None => (u64::MAX, u64::MAX),
        };
        let wheel = match plan.pacing {
            Pacing::Scheduled {
                period_us,
                gap_max_us,
                ..
            } => Some(Wheel::new(
                (period_us / 200).clamp(100, 1000),
                gap_max_us.max(period_us) * MAX_PACE_FACTOR,
                s.start_us,
            )),
            Pacing::Max => None,
        };
        Ok(Sender {
            thread: s.thread,
            rng: Rng::new(
                plan.seed ^ (u64::from(s.thread) + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ),
            plan,
            pop: s.pop,
            counters: s.counters,
            control: s.control,
            clock: s.clock,
            start_us: s.start_us,
            gateways,
            first_gateway: s.gateways.start,
            block,
            first,
            end,
            users: Users::new(n),
            wheel,
            local: LocalCounts::default(),
            published: (0, 0, 0, 0),
            last_flush_us: s.start_us,
            churn: ChurnPace::new(s.start_us, churn_rate),
            next_silence_us,
            next_reconnect_us,
            drained: Vec::new(),
            cluster,
        })
    }

    fn run(mut self) -> Option<String> {
        let end_us = self.start_us + self.plan.duration_us;
        self.clock.sleep_until(self.start_us);
        match self.plan.pacing {
            Pacing::Max => self.run_max(end_us),
            Pacing::Scheduled { .. } => self.run_scheduled(end_us),
        }
        self.flush_all();
        self.publish();
        self.control.sender_stopped();
        self.control.wait_for(Phase::Drain);
        if self.control.phase() == Phase::Drain && self.plan.logout_at_end {
            self.drain();
        }
        self.publish();
        self.control.sender_drained();
        self.gateways
            .iter()
            .rev()
            .find_map(|g| g.last_error.clone())
    }

    // ---- pacing ------------------------------------------------------------------------

    fn run_scheduled(&mut self, end_us: u64) {
        // Each device's first beat at a random phase within one period.
        let period = self.plan.period_us();
        for u in self.first..self.end {
            let d = self.devices(u);
            for slot in 0..d {
                let at = self.start_us + self.rng.below(period);
                if let Some(w) = self.wheel.as_mut() {
                    w.schedule(at, pack(u, 0, slot));
                }
            }
        }
        let storm = self.plan.storm.is_some();
        let slot_us = self.wheel.as_ref().map_or(1000, Wheel::slot_us);
        loop {
            let now = self.clock.now_us();
            if now >= end_us || self.control.phase() >= Phase::Stop {
                break;
            }
            self.follow_map();
            if now >= self.next_silence_us {
                self.silence(now);
            }
            if now >= self.next_reconnect_us {
                self.reconnect();
            }
            self.churn(now);
            // Every slot due by now, in order; a sender behind its schedule catches up at once.
            loop {
                let now = self.clock.now_us();
                let Some((at, entries)) = self.wheel.as_mut().and_then(|w| w.take_due(now)) else {
                    break;
                };
                let lag = now.saturating_sub(at);
                let mut beats = 0u64;
                // Start every user's cache miss first, so that they overlap.
                let mut touched = 0u64;
                for &e in &entries {
                    touched ^= self.users.touch((unpack(e).0 - self.first) as usize);
                }
                std::hint::black_box(touched);
                for &e in &entries {
                    beats += u64::from(self.scheduled_beat(e, at, now, lag));
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
                if storm && now + self.plan.batch_delay_us + 2 * slot_us >= self.next_silence_us {
                    // Just before a storm the last beats leave at once, so that a user's
                    // deadline is its last beat's time + timeout.
                    self.flush_all();
                }
                if self.control.phase() >= Phase::Stop {
                    break;
                }
            }
            let now = self.clock.now_us();
            if now >= self.last_flush_us + self.plan.batch_delay_us {
                self.flush_all();
            }
            self.publish();
            let mut wake = now + 1000;
            if let Some(w) = &self.wheel {
                wake = wake.min(w.next_us());
            }
            if self.pending() > 0 {
                wake = wake.min(self.last_flush_us + self.plan.batch_delay_us);
            }
            wake = wake
                .min(self.churn.next_us())
                .min(self.next_silence_us)
                .min(self.next_reconnect_us)
                .min(end_us);
            self.clock.sleep_until(wake.max(now + 20));
        }
    }

    /// One scheduled beat; returns whether it was sent (not a stale entry).
    fn scheduled_beat(&mut self, entry: u64, at: u64, now: u64, lag: u64) -> bool {
        let (u, generation, slot) = unpack(entry);
        let li = (u - self.first) as usize;
        if self.users.generation(li) != generation {
            return false;
        }
        let bit = 1u8 << slot;
        let mut stamp = None;
        let live = self.users.live(li);
        if live & bit == 0 {
            if live == 0 {
                self.cause(u);
                self.local.logins += 1;
                stamp = Some(Deferred {
                    index: u,
                    online: true,
                    flags: self.pop.untimed(),
                });
            }
            self.users.set_live(li, live | bit);
        }
        self.send(u, slot, State::Online, stamp);
        self.users.set_last_beat(li, now);
        if lag > self.plan.excuse_after_us {
            self.pop.excuse(u);
            self.local.excused_beats += 1;
        }
        if let Some(flap) = self.plan.flap {
            if self.rng.chance(flap.duplicate) {
                self.send(u, slot, State::Online, None);
            }
            let live = self.users.live(li);
            if live.count_ones() >= 2 && self.rng.chance(flap.drop_device) {
                // This device drops and comes back within a period, while another keeps the
                // user online: no user-level transition.
                self.send(u, slot, State::Offline, None);
                self.users.set_live(li, live & !bit);
                let back = at + self.rng.below(self.plan.period_us());
                if let Some(w) = self.wheel.as_mut() {
                    w.schedule(back, entry);
                }
                return true;
            }
        }
        let gap = self.plan.gap(&mut self.rng);
        let next = at + self.paced(gap);
        if let Some(w) = self.wheel.as_mut() {
            w.schedule(next, entry);
        }
        true
    }

    /// A gap drawn for the normal interval, stretched by the interval the daemon asks for now
    /// (PACE, SPEC.md § P6.13; at most [`MAX_PACE_FACTOR`] times): the gateways this generator
    /// simulates obey it, as a gateway built on presenced_client does.
    fn paced(&self, gap: u64) -> u64 {
        let normal = self.plan.daemon.interval_us.max(1);
        let asked = self.control.pace_us().min(normal * MAX_PACE_FACTOR);
        if asked > normal {
            gap.saturating_mul(asked) / normal
        } else {
            gap
        }
    }

    fn run_max(&mut self, end_us: u64) {
        let mut cursor = self.first;
        let mut first_pass = true;
        if self.first == self.end {
            self.idle_until(end_us);
            return;
        }
        loop {
            let now = self.clock.now_us();
            if now >= end_us || self.control.phase() >= Phase::Stop {
                break;
            }
            self.follow_map();
            self.churn(now);
            let stop = (cursor + MAX_CHUNK_USERS).min(self.end);
            for u in cursor..stop {
                let li = (u - self.first) as usize;
                if first_pass {
                    self.login(u, now);
                    continue;
                }
                let live = self.users.live(li);
                if live == 0 {
                    continue;
                }
                for slot in 0..self.devices(u) {
                    if live & (1 << slot) != 0 {
                        self.send(u, slot, State::Online, None);
                    }
                }
            }
            cursor = stop;
            if cursor == self.end {
                cursor = self.first;
                first_pass = false;
            }
            let now = self.clock.now_us();
            if now >= self.last_flush_us + self.plan.batch_delay_us {
                self.flush_all();
                self.publish();
            }
        }
    }

    fn idle_until(&mut self, end_us: u64) {
        while self.clock.now_us() < end_us && self.control.phase() < Phase::Stop {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    // ---- user-level actions ------------------------------------------------------------

    /// Connects every device of user `u` at once (a login, a churn login, a storm reconnect).
    fn login(&mut self, u: u32, now: u64) {
        let li = (u - self.first) as usize;
        let generation = self.users.bump(li);
        let stamp = if self.users.live(li) == 0 {
            self.cause(u);
            self.local.logins += 1;
            Some(Deferred {
                index: u,
                online: true,
                flags: self.pop.untimed(),
            })
        } else {
            None
        };
        let d = self.devices(u);
        self.users
            .set_live(li, if d >= 8 { 0xff } else { (1u8 << d) - 1 });
        for slot in 0..d {
            self.send(u, slot, State::Online, if slot == 0 { stamp } else { None });
        }
        self.users.set_last_beat(li, now);
        if self.wheel.is_some() {
            let period = self.plan.period_us();
            for slot in 0..d {
                let next = now + 1 + self.rng.below(period);
                if let Some(w) = self.wheel.as_mut() {
                    w.schedule(next, pack(u, generation, slot));
                }
            }
        }
    }

    /// Logs every connected device of user `u` out; `flags` go into the offline's stamp.
    fn logout(&mut self, u: u32, flags: u64) {
        let li = (u - self.first) as usize;
        let live = self.users.live(li);
        self.users.bump(li);
        if live == 0 {
            return;
        }
        self.cause(u);
        self.local.logouts += 1;
        let last = 7 - live.leading_zeros() as u8;
        for slot in 0..8u8 {
            if live & (1 << slot) != 0 {
                let stamp = (slot == last).then_some(Deferred {
                    index: u,
                    online: false,
                    flags,
                });
                self.send(u, slot, State::Offline, stamp);
            }
        }
        self.users.set_live(li, 0);
    }

    /// Churn: logs random settled users in or out, on schedule.
    fn churn(&mut self, now: u64) {
        if self.first == self.end {
            return;
        }
        let n = self.end - self.first;
        for _ in 0..self.churn.take_due(now) {
            let pop = &self.pop;
            match ChurnPace::pick(&mut self.rng, self.first, n, |u| pop.settled(u)) {
                Some(u) if self.users.live((u - self.first) as usize) != 0 => {
                    self.logout(u, self.pop.untimed());
                }
                Some(u) => self.login(u, now),
                None => self.local.churn_skipped += 1,
            }
        }
    }

    /// Storm: every gateway goes silent; every connected user must time out.
    fn silence(&mut self, now: u64) {
        self.flush_all();
        let timeout = self.plan.daemon.timeout_us;
        for u in self.first..self.end {
            let li = (u - self.first) as usize;
            self.users.bump(li);
            if self.users.live(li) != 0 {
                self.cause(u);
                self.pop
                    .stamp_offline(u, (self.users.last_beat(li) + timeout) | TIMEOUT);
                self.users.set_live(li, 0);
            }
        }
        if let Some(w) = self.wheel.as_mut() {
            w.clear();
        }
        if self.thread == 0 {
            self.counters.storms.fetch_add(1, Ordering::Relaxed);
        }
        let cycle = self.plan.storm.map_or(u64::MAX, |s| s.cycle_us());
        self.next_silence_us = self.next_silence_us.saturating_add(cycle);
        let _ = now;
    }

    /// Storm: every user reconnects at once.
    fn reconnect(&mut self) {
        let now = self.clock.now_us();
        for u in self.first..self.end {
            self.login(u, now);
        }
        self.flush_all();
        let cycle = self.plan.storm.map_or(u64::MAX, |s| s.cycle_us());
        self.next_reconnect_us = self.next_reconnect_us.saturating_add(cycle);
    }

    /// The final sweep: every connected user logs out; users not seen offline are sent their
    /// logouts again a few times.
    fn drain(&mut self) {
        self.follow_map();
        for u in self.first..self.end {
            if self.users.live((u - self.first) as usize) != 0 {
                self.logout(u, UNTIMED);
                self.drained.push(u);
            }
        }
        self.flush_all();
        self.publish();
        for _ in 0..DRAIN_RETRIES {
            let until = self.clock.now_us() + DRAIN_RETRY_US;
            while self.clock.now_us() < until {
                if self.control.phase() == Phase::Done {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let pop = self.pop.clone();
            self.drained.retain(|&u| !pop.settled(u));
            if self.drained.is_empty() {
                return;
            }
            self.follow_map();
            let again = std::mem::take(&mut self.drained);
            for &u in &again {
                for slot in 0..self.devices(u) {
                    self.send(u, slot, State::Offline, None);
                }
            }
            self.drained = again;
            self.flush_all();
            self.publish();
        }
    }

    // ---- plumbing ----------------------------------------------------------------------

    /// The simulation causes a transition of user `u` (against a cluster, recorded with the
    /// user's primary now).
    #[inline]
    fn cause(&mut self, u: u32) {
        self.pop.expect(u);
        if let Some(c) = &self.cluster {
            if u < self.pop.watch {
                let member = c.primary(self.pop.id(u));
                c.owners.caused(u, self.pop.expected(u), member);
            }
        }
    }

    /// Against a cluster: every gateway follows the newest map.
    fn follow_map(&mut self) {
        let Some(map) = self.cluster.as_mut().and_then(ClusterView::changed) else {
            return;
        };
        for g in &mut self.gateways {
            g.set_map(map.clone());
        }
    }

    #[inline]
    fn devices(&self, u: u32) -> u8 {
        self.pop.devices.get(u as usize).copied().unwrap_or(1)
    }

    #[inline]
    fn send(&mut self, u: u32, slot: u8, state: State, stamp: Option<Deferred>) {
        let g = (u / self.block - self.first_gateway) as usize;
        let user = self.pop.id(u);
        if let Some(gw) = self.gateways.get_mut(g) {
            gw.send(
                user,
                u32::from(slot) + 1,
                state,
                stamp,
                &self.pop,
                &self.clock,
            );
        }
    }

    fn pending(&self) -> usize {
        self.gateways.iter().map(Gateway::pending).sum()
    }

    fn flush_all(&mut self) {
        for g in &mut self.gateways {
            g.flush(&self.pop, &self.clock);
        }
        self.last_flush_us = self.clock.now_us();
    }

    fn publish(&mut self) {
        let (mut entries, mut datagrams, mut errors, mut user_entries) = (0, 0, 0, 0);
        for g in &self.gateways {
            entries += g.entries();
            datagrams += g.datagrams();
            errors += g.send_errors;
            user_entries += g.user_entries();
        }
        let (e0, d0, x0, u0) = self.published;
        let c = &self.counters;
        c.entries.fetch_add(entries - e0, Ordering::Relaxed);
        c.datagrams.fetch_add(datagrams - d0, Ordering::Relaxed);
        c.send_errors.fetch_add(errors - x0, Ordering::Relaxed);
        c.user_entries
            .fetch_add(user_entries - u0, Ordering::Relaxed);
        self.published = (entries, datagrams, errors, user_entries);
        self.counters.publish(&mut self.local);
    }
}

#[cfg(test)]
mod tests {
    use super::{pack, unpack};

    #[test]
    fn entries_pack_and_unpack() {
        for (u, g, d) in [(0, 0, 0), (99_999_999, 255, 7), (12, 3, 1)] {
            assert_eq!(unpack(pack(u, g, d)), (u, g, d));
        }
    }
}
