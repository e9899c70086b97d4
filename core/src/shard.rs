//! One shard's presence logic as a deterministic state machine (sans-IO).
//!
//! Heartbeat entries and the current time go in; user-level transitions come out. Nothing in
//! here reads a clock, touches a socket, spawns a thread or allocates after construction (the
//! caller owns the output buffer). The rules implemented are the normative ones in
//! ARCHITECTURE.md ("Presence rules").
//!
//! Hot path: a heartbeat of a known device only rewrites its deadline in the table; the user's
//! one timer (`crate::timers`: near entries, or the wheel for far ones) stays where it is and,
//! when it fires early, is re-checked and moved to the user's next real deadline (the
//! delayed-trigger check). The timers are touched only when a user's next deadline moves
//! earlier (a new device, a state change, activity after a lapse).
//!
//! Back-off (ARCHITECTURE.md "Back-off under load"): while the daemon asks gateways for a
//! longer heartbeat interval, [`Shard::set_deadline_extension`] makes every device's deadline
//! that much later. The extension is applied when a timer fires (a device is expired only once
//! `deadline + extension` has passed; a timer set before the extension is re-armed at the later
//! tick), so changing it touches neither the table nor the timers. Raising it takes effect at
//! once; lowering it waits one whole extended timeout, so that a device which last heard the
//! longer interval keeps the deadline it was promised.

use crate::clock::{Now, Tick};
use crate::config::{ConfigError, CoreConfig};
use crate::event::{Cause, Heartbeat, Presence, PublicState, Report, Transition};
use crate::record::{
    widen, Aggregate, Blocks, Device, DeviceState, Devices, Record, Timer, MAX_WALL_MS,
};
use crate::table::Table;
use crate::timers::Timers;

/// Timers fired per batch in `advance`.
const FIRE_BATCH: usize = 32;

/// Records a near timer's probe may drop (retention ended) before it stops to drop them (the
/// others due then, sharing its prefix, are fired by their own entries).
const PREFIX_DROPS: usize = 8;

/// Old table slots moved per `advance` while the table grows ([`Table::move_step`]): a few
/// tens of microseconds a round, so a move of millions of slots ends within seconds of busy
/// rounds however few new users come.
pub const MOVE_SLOTS_PER_ROUND: usize = 4096;

/// Counters of one shard; every refusal has its own. The STATS schema's type: the daemon
/// reports it as it is.
pub use presenced_wire::stats::CoreStats;

/// One shard: a presence table, its timers (a near ring and a timing wheel) and overflow device
/// blocks, all sized at start.
pub struct Shard {
    pub(crate) tick_us: u64,
    pub(crate) timeout_us: u64,
    pub(crate) idle_after_us: u64,
    pub(crate) retention_ticks: u64,
    pub(crate) max_devices: usize,
    pub(crate) table: Table<Record>,
    pub(crate) timers: Timers,
    pub(crate) blocks: Blocks,
    /// Largest monotonic time seen; moved by [`Shard::set_now`] only.
    pub(crate) now_us: u64,
    /// The ticks a heartbeat (or a restored record) sets, as of `now_us` ([`Shard::set_now`]):
    /// a batch's heartbeats share its time, so they need not divide it by the tick (three
    /// divisions a heartbeat).
    pub(crate) ticks: NowTicks,
    pub(crate) stats: CoreStats,
    /// Ticks added to every device's deadline when its timer fires (back-off; 0 normally).
    pub(crate) extension_ticks: u64,
    /// A lowered extension waiting to take over: (ticks, from tick).
    pub(crate) lower_extension: Option<(u64, Tick)>,
}

/// The shard's tick, and the ticks a heartbeat now sets, computed once per time.
#[derive(Clone, Copy, Debug)]
pub(crate) struct NowTicks {
    /// `now_us / tick_us`.
    pub(crate) now: Tick,
    /// [`Shard::due`] of the timeout: a device's deadline.
    pub(crate) timeout: Tick,
    /// [`Shard::due`] of the idle window: the end of a device's activity window.
    pub(crate) idle: Tick,
}

/// An extension [`Shard::set_deadline_extension`] refuses: with it a deadline would lie beyond
/// the horizon device ticks are stored with ([`crate::config::DEVICE_HORIZON_TICKS`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExtensionTooLong {
    /// The largest extension this shard takes, ticks.
    pub max_ticks: u64,
}

impl Shard {
    /// A shard with everything allocated for `config`'s capacities, its clock at `now`.
    pub fn new(config: CoreConfig, now: Now) -> Result<Shard, ConfigError> {
        config.validate()?;
        let blocks = if config.max_devices_per_user > 1 {
            config.multi_device_users
        } else {
            0
        };
        let table = Table::try_with_load(
            config.user_capacity,
            config.hash_seed,
            config.table_initial_slots,
            config.table_max_load_permille,
        )
        .map_err(|e| e.too_big("users_per_shard", "the presence table"))?;
        let timers = Timers::try_new(
            config.user_capacity,
            now.mono_us / config.tick_us,
            table.prefixer(),
        )
        .map_err(|e| e.too_big("users_per_shard", "the timers"))?;
        let mut shard = Shard {
            tick_us: config.tick_us,
            timeout_us: config.timeout_us(),
            idle_after_us: config.idle_after_us,
            retention_ticks: config.last_seen_retention_us / config.tick_us + 1,
            max_devices: config.max_devices_per_user as usize,
            table,
            timers,
            blocks: Blocks::new(blocks, config.max_devices_per_user)
                .map_err(|e| e.too_big("multi_device_users", "the device blocks"))?,
            now_us: 0,
            ticks: NowTicks {
                now: 0,
                timeout: 0,
                idle: 0,
            },
            stats: CoreStats::default(),
            extension_ticks: 0,
            lower_extension: None,
        };
        shard.set_now(now.mono_us);
        Ok(shard)
    }

    /// Advances time to `now`, then applies one heartbeat entry; transitions are appended to
    /// `out`.
    pub fn heartbeat(&mut self, now: Now, hb: &Heartbeat, out: &mut Vec<Transition>) {
        self.advance(now, out);
        self.stats.heartbeats += 1;
        if hb.user == 0 {
            self.stats.refused_user_zero += 1;
            return;
        }
        let state = match hb.report {
            Report::Offline => return self.logout(now.wall_ms, hb, out),
            Report::Online => DeviceState::Online,
            Report::Idle => DeviceState::Idle,
            Report::Invisible => DeviceState::Invisible,
        };
        let NowTicks {
            now: n,
            timeout: deadline,
            idle: active_until,
        } = self.ticks;
        let (deadline, active_until) = (deadline as u32, active_until as u32);
        let Shard {
            table,
            blocks,
            timers,
            stats,
            max_devices,
            ..
        } = self;
        let Ok((rec, created)) = table.get_or_insert_with(hb.user, Record::new) else {
            stats.refused_user_capacity += 1;
            return;
        };
        let can_overflow = blocks.available() > 0;
        let mut devices = Devices::new(rec, blocks, n);
        let had_devices = !devices.is_empty();
        // Whether the user's next deadline may have moved earlier than its timer. A device not
        // listed takes over a device restored after a restart, if the user has one.
        let found = devices.find(hb.device).or_else(|| devices.find_restored());
        let earlier = match found {
            Some(i) => {
                let mut dev = devices.get(i);
                let was_active = dev.state == DeviceState::Online && !dev.lapsed;
                let refresh = hb.active || dev.state != state;
                dev.id = hb.device;
                dev.restored = false;
                dev.deadline_tick = deadline;
                if refresh {
                    dev.active_until_tick = active_until;
                    dev.lapsed = false;
                }
                dev.state = state;
                devices.set(i, dev);
                refresh && !was_active
            }
            None => {
                if devices.len() >= *max_devices {
                    stats.refused_device_limit += 1;
                    return;
                }
                if devices.len() == 1 && !can_overflow {
                    stats.refused_overflow_full += 1;
                    return;
                }
                devices.push(Device {
                    id: hb.device,
                    deadline_tick: deadline,
                    active_until_tick: active_until,
                    state,
                    lapsed: false,
                    restored: false,
                });
                stats.devices += 1;
                true
            }
        };
        if created {
            stats.users += 1;
        }
        let prev = devices.rec.aggregate();
        let agg = evaluate(&mut devices, n);
        let cause = if had_devices {
            Cause::StateChange
        } else {
            Cause::FirstHeartbeat
        };
        let seen = hb.active && matches!(agg, Aggregate::Online | Aggregate::Idle);
        if seen {
            devices.rec.set_last_seen(now.wall_ms);
        }
        emit(
            devices.rec,
            hb.user,
            prev,
            agg,
            now.wall_ms,
            cause,
            seen,
            out,
            stats,
        );
        if earlier || devices.rec.timer() == Timer::None {
            let at = next_wake(&devices, n, self.retention_ticks, self.extension_ticks);
            timers.schedule(devices.rec, hb.user, at);
        }
    }

    /// Applies a batch of heartbeat entries in order, as `heartbeat` does one by one; the
    /// table's control bytes, then the slots, of the whole batch are touched first so their
    /// cache misses overlap.
    pub fn heartbeats(&mut self, now: Now, batch: &[Heartbeat], out: &mut Vec<Transition>) {
        for hb in batch {
            if hb.user != 0 {
                self.table.prefetch(hb.user);
            }
        }
        for hb in batch {
            if hb.user != 0 {
                self.table.prefetch_entry(hb.user);
            }
        }
        for hb in batch {
            self.heartbeat(now, hb, out);
        }
    }

    /// Fires every timer due up to `now`; transitions are appended to `out`. Also moves a
    /// step of a growing table's entries.
    pub fn advance(&mut self, now: Now, out: &mut Vec<Transition>) {
        if now.mono_us < self.now_us {
            self.stats.clock_backwards += 1;
        } else if now.mono_us != self.now_us {
            self.set_now(now.mono_us);
        }
        let target = self.tick();
        if let Some((ticks, from)) = self.lower_extension {
            if target >= from {
                self.extension_ticks = ticks;
                self.lower_extension = None;
            }
        }
        // Tick by tick, the wheel's timers then the near ones. Firing sets timers only after
        // the tick fired, so neither clock passes a timer still to come.
        if !self.timers.done_up_to(target) {
            while let Some(t) = self.timers.next_due().filter(|&t| t <= target) {
                self.fire_wheel(t, now.wall_ms, out);
                self.fire_near(t, now.wall_ms, out);
            }
            self.timers.catch_up(target);
        }
        // A growth's move ends even when no new user comes to drive it.
        self.table.move_step(MOVE_SLOTS_PER_ROUND);
    }

    /// Asks for every device's deadline to be `ticks` later than its heartbeat set it (0: no
    /// extension), as of the shard's latest time. A longer extension than the one in force
    /// applies at once; a shorter one once the extension in force has covered one whole
    /// extended timeout more (`timeout + extension in force`), so that a device which beat at
    /// the longer interval just before it was lowered is not expired before its next beat.
    /// Until then the extension in force stays. Refused when `timeout + ticks` would exceed
    /// the deadline horizon.
    pub fn set_deadline_extension(&mut self, ticks: u64) -> Result<(), ExtensionTooLong> {
        let max_ticks = crate::config::max_extension_ticks(self.timeout_us, self.tick_us);
        if ticks > max_ticks {
            return Err(ExtensionTooLong { max_ticks });
        }
        if ticks >= self.extension_ticks {
            self.extension_ticks = ticks;
            self.lower_extension = None;
        } else {
            let from = self.due(self.timeout_us) + self.extension_ticks;
            self.lower_extension = Some((ticks, from));
        }
        Ok(())
    }

    /// The deadline extension in force, ticks ([`Shard::set_deadline_extension`]).
    pub fn deadline_extension_ticks(&self) -> u64 {
        self.extension_ticks
    }

    /// The monotonic time (µs) from which [`Shard::advance`] has timers to fire (the start of
    /// the earliest busy tick), or `None` when no timer is set: a driver may sleep until it.
    pub fn next_deadline_us(&self) -> Option<u64> {
        self.timers
            .next_due()
            .map(|tick| tick.saturating_mul(self.tick_us))
    }

    /// The presence of `user` as of the last processed tick.
    pub fn query(&self, user: u64) -> Presence {
        match self.record(user) {
            None => Presence::UNKNOWN,
            Some(rec) => Presence {
                state: rec.aggregate().public(),
                last_seen_ms: rec.last_seen(),
                version: rec.version(),
            },
        }
    }

    /// Live devices of `user` (0 for an unknown user).
    pub fn device_count(&self, user: u64) -> usize {
        self.record(user).map_or(0, Record::device_count)
    }

    /// Whether the shard holds a record for `user`.
    pub fn is_known(&self, user: u64) -> bool {
        self.record(user).is_some()
    }

    /// The record of `user`; user 0 is reserved and never stored.
    fn record(&self, user: u64) -> Option<&Record> {
        if user == 0 {
            return None;
        }
        self.table.get(user)
    }

    /// The shard's counters (the timers' own counts read now: keeping a copy current on every
    /// heartbeat would cost the hot path).
    pub fn stats(&self) -> CoreStats {
        CoreStats {
            timers_cascaded: self.timers.wheel.cascaded(),
            timers_near_pool_full: self.timers.near_pool_full,
            ..self.stats.clone()
        }
    }

    /// Bytes allocated for the table's slots in use, the timers and the overflow blocks.
    pub fn memory_bytes(&self) -> usize {
        self.table.memory_bytes() + self.timers.memory_bytes() + self.blocks.memory_bytes()
    }

    /// Where the table's slots in use (with their control bytes), the timers' arrays and the
    /// overflow blocks lie, so the daemon may advise the kernel on their pages. The timers and
    /// the blocks never move; the table moves when it grows.
    pub fn regions(&self) -> [crate::slab::Region; 4] {
        let [near, wheel] = self.timers.regions();
        [self.table.region(), near, wheel, self.blocks.region()]
    }

    /// Has `advice` called on each of the table's arrays before its first record is written
    /// ([`Table::set_advice`]: the daemon's huge pages).
    pub fn set_table_advice(&mut self, advice: fn(crate::slab::Region)) {
        self.table.set_advice(advice);
    }

    /// Grows the table now so that `users` more fit without a growth on the way (a restore
    /// that knows how many records it brings).
    pub fn reserve_users(&mut self, users: usize) {
        self.table.reserve(users);
    }

    /// The presence table (for probe statistics).
    pub fn table(&self) -> &Table<Record> {
        &self.table
    }

    pub(crate) fn tick(&self) -> Tick {
        self.ticks.now
    }

    /// Moves the shard's time to `now_us`, and the ticks computed from it.
    pub(crate) fn set_now(&mut self, now_us: u64) {
        self.now_us = now_us;
        self.ticks = NowTicks {
            now: now_us / self.tick_us,
            timeout: self.due(self.timeout_us),
            idle: self.due(self.idle_after_us),
        };
    }

    /// The first tick at which more than `span_us` has passed since now.
    pub(crate) fn due(&self, span_us: u64) -> Tick {
        (self.now_us + span_us) / self.tick_us + 1
    }

    fn logout(&mut self, wall_ms: u64, hb: &Heartbeat, out: &mut Vec<Transition>) {
        let n = self.tick();
        let Shard {
            table,
            blocks,
            timers,
            stats,
            ..
        } = self;
        let Some(rec) = table.get_mut(hb.user) else {
            stats.logout_unknown += 1;
            return;
        };
        let mut devices = Devices::new(rec, blocks, n);
        let Some(i) = devices.find(hb.device) else {
            stats.logout_unknown += 1;
            return;
        };
        devices.swap_remove(i);
        stats.devices -= 1;
        if devices.is_empty() {
            devices.rec.set_offline_since(n);
        }
        let prev = devices.rec.aggregate();
        let agg = evaluate(&mut devices, n);
        emit(
            devices.rec,
            hb.user,
            prev,
            agg,
            wall_ms,
            Cause::Logout,
            false,
            out,
            stats,
        );
        // Fewer devices only move deadlines later, except retention, which may be shorter.
        let at = next_wake(&devices, n, self.retention_ticks, self.extension_ticks);
        timers.schedule(devices.rec, hb.user, at);
    }

    /// Fires the wheel's timers due at tick `t` (and cascades its far ones due then), in
    /// batches whose table slots are touched first. A batch's buffer is filled only once a
    /// timer is due: every heartbeat calls `advance`, and zeroing it each time was, most
    /// likely, the 4.7 % `memset` of a shard's profile under `--max` (benches/README.md).
    fn fire_wheel(&mut self, t: Tick, wall_ms: u64, out: &mut Vec<Transition>) {
        while let Some(first) = self.timers.wheel.poll(t) {
            let mut due = [first; FIRE_BATCH];
            // The rest of the first one's tick (the wheel's clock is at it now).
            let n = 1 + self
                .timers
                .wheel
                .poll_batch(self.timers.wheel.now(), &mut due[1..]);
            for &(user, _) in &due[..n] {
                self.table.prefetch(user);
            }
            for &(user, at) in &due[..n] {
                self.fire(user, at, wall_ms, out);
            }
        }
    }

    /// Fires the near timers due at tick `t`, in batches of entries whose table slots are
    /// touched first. Each entry fires the users of its prefix whose record says they are due
    /// at `t`; one that finds none was left by a timer since moved earlier (or fired by
    /// another user's entry of the same prefix and tick) and is counted stale.
    fn fire_near(&mut self, t: Tick, wall_ms: u64, out: &mut Vec<Transition>) {
        let mut prefixes = [0u32; FIRE_BATCH];
        loop {
            let (tick, n) = self.timers.near.poll_batch(t, &mut prefixes);
            if n == 0 {
                return;
            }
            for &prefix in &prefixes[..n] {
                self.table.prefetch_prefix(prefix);
            }
            for &prefix in &prefixes[..n] {
                self.fire_prefix(prefix, tick, wall_ms, out);
            }
        }
    }

    /// Fires, where the probe of `prefix` finds them, the users due at `tick` (a near entry's);
    /// counts the entry stale if none is.
    fn fire_prefix(&mut self, prefix: u32, tick: Tick, wall_ms: u64, out: &mut Vec<Transition>) {
        let (table, mut firing) = self.firing(wall_ms, out);
        // Records to drop once the probe is over (it must not move entries). A probe that
        // fills this stops early: every user due at `tick` has an entry of its own there, and
        // each probe fires one at least while any is left, so the tick's entries fire them all.
        let mut drops = [0u64; PREFIX_DROPS];
        let mut dropping = 0;
        let mut fired = 0u64;
        table.visit_prefix(prefix, |user, rec| {
            if !rec.near_due_at(tick) {
                return true;
            }
            fired += 1;
            if firing.fire(rec, user, tick) {
                drops[dropping] = user;
                dropping += 1;
            }
            dropping < PREFIX_DROPS
        });
        for &user in &drops[..dropping] {
            drop_record(table, firing.stats, user);
        }
        if fired == 0 {
            firing.stats.timers_stale += 1;
        }
    }

    /// The user's timer fired at tick `t` (a wheel timer: its record is looked up).
    fn fire(&mut self, user: u64, t: Tick, wall_ms: u64, out: &mut Vec<Transition>) {
        let (table, mut firing) = self.firing(wall_ms, out);
        let rec = table
            .get_mut(user)
            .expect("every timer belongs to a record");
        if firing.fire(rec, user, t) {
            drop_record(table, firing.stats, user);
        }
    }

    /// The table, and what firing timers needs besides it, borrowed apart.
    fn firing<'a>(
        &'a mut self,
        wall_ms: u64,
        out: &'a mut Vec<Transition>,
    ) -> (&'a mut Table<Record>, Firing<'a>) {
        let Shard {
            table,
            blocks,
            timers,
            stats,
            retention_ticks,
            extension_ticks,
            ..
        } = self;
        let firing = Firing {
            blocks,
            timers,
            stats,
            retention_ticks: *retention_ticks,
            extension_ticks: *extension_ticks,
            wall_ms,
            out,
        };
        (table, firing)
    }
}

/// Removes a record whose retention ended ([`Firing::fire`] said so).
fn drop_record(table: &mut Table<Record>, stats: &mut CoreStats, user: u64) {
    table.remove(user);
    stats.users -= 1;
    stats.records_dropped += 1;
}

/// What firing a user's timer needs besides the record: the shard's parts but the table, so
/// that a near timer's user is fired where the prefix probe found it.
struct Firing<'a> {
    blocks: &'a mut Blocks,
    timers: &'a mut Timers,
    stats: &'a mut CoreStats,
    retention_ticks: u64,
    extension_ticks: u64,
    wall_ms: u64,
    out: &'a mut Vec<Transition>,
}

impl Firing<'_> {
    /// The user's timer fired at tick `t`: expire, re-evaluate, reschedule; `true` when the
    /// record is to be dropped (retention ended), which the caller does.
    fn fire(&mut self, rec: &mut Record, user: u64, t: Tick) -> bool {
        let Firing {
            blocks,
            timers,
            stats,
            retention_ticks,
            extension_ticks,
            wall_ms,
            out,
        } = self;
        stats.timers_fired += 1;
        rec.set_timer(Timer::None);
        let mut devices = Devices::new(rec, blocks, t);
        if devices.is_empty() {
            let drop_at = devices.rec.offline_since(t) + *retention_ticks;
            if drop_at <= t {
                return true;
            }
            timers.schedule(devices.rec, user, drop_at);
            return false;
        }
        let mut removed = 0;
        let mut extended = false;
        let mut i = 0;
        while i < devices.len() {
            let deadline = widen(devices.get(i).deadline_tick, t);
            if deadline + *extension_ticks <= t {
                devices.swap_remove(i);
                removed += 1;
            } else {
                extended |= deadline <= t;
                i += 1;
            }
        }
        stats.devices -= removed;
        stats.deadlines_extended += u64::from(extended);
        if devices.is_empty() {
            devices.rec.set_offline_since(t);
        }
        let prev = devices.rec.aggregate();
        let agg = evaluate(&mut devices, t);
        let cause = if removed > 0 {
            Cause::Timeout
        } else {
            Cause::Inactivity
        };
        emit(
            devices.rec,
            user,
            prev,
            agg,
            *wall_ms,
            cause,
            false,
            out,
            stats,
        );
        let at = next_wake(&devices, t, *retention_ticks, *extension_ticks);
        timers.schedule(devices.rec, user, at);
        false
    }
}

/// The aggregate at tick `t`; marks devices whose activity window has passed as lapsed.
#[inline]
pub(crate) fn evaluate(devices: &mut Devices<'_>, t: Tick) -> Aggregate {
    if devices.is_empty() {
        return Aggregate::Offline;
    }
    let (mut invisible, mut active) = (false, false);
    for i in 0..devices.len() {
        let mut dev = devices.get(i);
        invisible |= dev.state == DeviceState::Invisible;
        if dev.state == DeviceState::Online && !dev.lapsed {
            if dev.active_at(t) {
                active = true;
            } else {
                dev.lapsed = true;
                devices.set(i, dev);
            }
        }
    }
    if invisible {
        Aggregate::Invisible
    } else if active {
        Aggregate::Online
    } else {
        Aggregate::Idle
    }
}

/// The next tick after `t` at which the user's state may change (call after `evaluate`), each
/// deadline extended by `extension_ticks`. A deadline that has passed under that extension
/// (a shorter one now in force, which moved no timer armed under the longer one: the device
/// expires at its user's next evaluation) is due at the next tick.
pub(crate) fn next_wake(
    devices: &Devices<'_>,
    t: Tick,
    retention_ticks: u64,
    extension_ticks: u64,
) -> Tick {
    if devices.is_empty() {
        return devices.rec.offline_since(t) + retention_ticks;
    }
    let mut at = Tick::MAX;
    for i in 0..devices.len() {
        let dev = devices.get(i);
        at = at.min((widen(dev.deadline_tick, t) + extension_ticks).max(t + 1));
        if dev.state == DeviceState::Online && !dev.lapsed {
            at = at.min(widen(dev.active_until_tick, t));
        }
    }
    debug_assert!(at > t);
    at
}

/// Stores the new aggregate and emits a transition if the public state changed; `seen`: the
/// call also set last seen to `wall_ms` (an activity heartbeat), which the transition says.
#[inline]
#[allow(clippy::too_many_arguments)]
fn emit(
    rec: &mut Record,
    user: u64,
    prev: Aggregate,
    agg: Aggregate,
    wall_ms: u64,
    cause: Cause,
    seen: bool,
    out: &mut Vec<Transition>,
    stats: &mut CoreStats,
) {
    rec.set_aggregate(agg);
    let (was, is) = (prev.public(), agg.public());
    if was == is {
        return;
    }
    // Saturating: a restored record may carry any version, u64::MAX included.
    rec.set_version(
        rec.version()
            .saturating_add(1)
            .max(wall_ms.min(MAX_WALL_MS) << 16),
    );
    if is != PublicState::Idle {
        rec.set_last_seen(wall_ms);
    }
    out.push(Transition {
        user,
        state: is,
        prev: was,
        at_ms: wall_ms,
        cause,
        version: rec.version(),
        devices: rec.device_count() as u8,
        seen: seen || is != PublicState::Idle,
    });
    stats.transitions += 1;
}
