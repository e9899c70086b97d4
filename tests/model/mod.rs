//! A plain reference model of one shard's presence logic, written from the normative rules in
//! ARCHITECTURE.md ("Presence rules") and nothing else. It is slow and obvious on purpose:
//! ordered maps, one `BTreeSet` of `(tick, user)` timers, every aggregate recomputed from the
//! device list each time.
//!
//! Readings of the rules this model takes where the text leaves room (see also `sim.rs`):
//! - The `Now` given to `new` counts as the first monotonic value seen.
//! - A backwards `mono_us` is replaced by the largest seen so far and counted once per call;
//!   `wall_ms` is always used as given.
//! - An entry for user 0 is counted as `refused_user_zero` whatever its report (rule 7 before
//!   rule 3).
//! - Rule 4's activity flag applies to Online / Idle / Invisible heartbeats only; a logout
//!   (report Offline) never updates last seen except through the transition it emits.
//! - The overflow block of a multi-device user is taken when its live device count goes from
//!   1 to 2 and given back as soon as the count is 1 or 0 again (timeout or logout).
//! - The deadline extension (ARCHITECTURE.md "Back-off under load", SPEC.md § P6.13): PACE
//!   with interval `A` above the normal `I` asks every deadline to be `(A − I) × timeout / I`
//!   later, rounded up to whole ticks. A longer extension applies at once; a shorter one from
//!   the tick `due(latest mono, timeout) + the extension in force` on (one extended timeout
//!   after it was asked), as of the tick of the call that reaches it. A device expires when
//!   its user is evaluated at a tick `T` with `deadline + extension in force <= T`.
//! - When a user is evaluated: at its timer. A lowered extension does not move timers armed
//!   under the longer one, and a heartbeat moves its user's timer only earlier, and only when
//!   it adds a device or opens an activity window (otherwise no deadline can be earlier than
//!   the timer); a logout only earlier. The core's timers work so; without a lowering an
//!   evaluation before the exact next change changes nothing, so this only matters once a
//!   shorter extension is in force, where a device past its shorter extended deadline expires
//!   at its user's next evaluation (late, never early); a timer armed when such a deadline has
//!   passed is due at the next tick.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use presenced_core::clock::Now;
use presenced_core::config::CoreConfig;
use presenced_core::event::{Cause, Heartbeat, Presence, PublicState, Report, Transition};

/// A tick number.
pub type Tick = u64;

/// A live device's reported state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DevState {
    Online,
    Idle,
    Invisible,
}

/// One live device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceModel {
    pub state: DevState,
    /// Removed at the first tick `T` with `deadline <= T`.
    pub deadline_tick: Tick,
    /// Active at tick `T` iff Online and `active_until > T`.
    pub active_until_tick: Tick,
    /// Stands in, after a restart, for the devices that made the user's logged state: the
    /// user's next heartbeat from a device not listed takes it over (rule 8).
    pub restored: bool,
}

/// The internal aggregate of a user at one tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregate {
    Offline,
    Invisible,
    Online,
    Idle,
}

impl Aggregate {
    pub fn public(self) -> PublicState {
        match self {
            Aggregate::Offline | Aggregate::Invisible => PublicState::Offline,
            Aggregate::Online => PublicState::Online,
            Aggregate::Idle => PublicState::Idle,
        }
    }
}

/// One user record (online, or remembered offline).
#[derive(Clone, Debug)]
pub struct UserModel {
    pub devices: BTreeMap<u32, DeviceModel>,
    /// The public state last emitted (Offline for a new record).
    pub public: PublicState,
    pub last_seen: Option<u64>,
    pub version: u64,
    /// The tick at which the record became deviceless (`T_off`), while it has no device.
    pub off_since: Option<Tick>,
    /// The tick of this user's entry in `Model::timers`, if any.
    pub timer: Option<Tick>,
}

impl UserModel {
    fn new() -> UserModel {
        UserModel {
            devices: BTreeMap::new(),
            public: PublicState::Offline,
            last_seen: None,
            version: 0,
            off_since: None,
            timer: None,
        }
    }

    /// The aggregate at tick `t`, straight from the definition.
    pub fn aggregate(&self, t: Tick) -> Aggregate {
        if self.devices.is_empty() {
            Aggregate::Offline
        } else if self
            .devices
            .values()
            .any(|d| d.state == DevState::Invisible)
        {
            Aggregate::Invisible
        } else if self
            .devices
            .values()
            .any(|d| d.state == DevState::Online && d.active_until_tick > t)
        {
            Aggregate::Online
        } else {
            Aggregate::Idle
        }
    }
}

/// Counters the model keeps, named like `CoreStats`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModelStats {
    pub users: u64,
    pub devices: u64,
    pub heartbeats: u64,
    pub transitions: u64,
    pub refused_user_capacity: u64,
    pub refused_device_limit: u64,
    pub refused_overflow_full: u64,
    pub refused_user_zero: u64,
    pub logout_unknown: u64,
    pub clock_backwards: u64,
    pub records_dropped: u64,
}

/// The reference model of one shard.
#[derive(Clone)]
pub struct Model {
    pub cfg: CoreConfig,
    pub users: BTreeMap<u64, UserModel>,
    /// `(tick, user)`: the next tick at which something is due for `user`.
    pub timers: BTreeSet<(Tick, u64)>,
    /// Largest `mono_us` seen.
    pub max_mono: u64,
    /// The last processed tick.
    pub tick: Tick,
    /// Users with two live devices or more (each holds one overflow block).
    pub multi_in_use: u32,
    pub stats: ModelStats,
    /// The deadline extension in force, ticks.
    pub extension: Tick,
    /// A shorter extension asked, and the tick from which it is in force.
    pub lower_extension: Option<(Tick, Tick)>,
    /// The longest extension ever in force: no device outlives its deadline by more.
    pub max_extension: Tick,
}

impl Model {
    pub fn new(cfg: CoreConfig, now: Now) -> Model {
        cfg.validate().expect("model given an invalid config");
        let tick = now.mono_us / cfg.tick_us;
        Model {
            cfg,
            users: BTreeMap::new(),
            timers: BTreeSet::new(),
            max_mono: now.mono_us,
            tick,
            multi_in_use: 0,
            stats: ModelStats::default(),
            extension: 0,
            lower_extension: None,
            max_extension: 0,
        }
    }

    /// The daemon asks its gateways for heartbeats every `interval_ms` (PACE; 0 or up to the
    /// normal interval: the normal one), and every deadline is extended to match.
    pub fn pace(&mut self, interval_ms: u32) {
        let normal = self.cfg.heartbeat_interval_us;
        let asked = u64::from(interval_ms) * 1000;
        let extra_us =
            asked.saturating_sub(normal) as u128 * self.cfg.timeout_us() as u128 / normal as u128;
        let ticks = (extra_us as u64).div_ceil(self.cfg.tick_us);
        if ticks >= self.extension {
            self.extension = ticks;
            self.lower_extension = None;
            self.max_extension = self.max_extension.max(ticks);
        } else {
            let from = self.due(self.max_mono, self.cfg.timeout_us()) + self.extension;
            self.lower_extension = Some((ticks, from));
        }
    }

    /// `tick(t) = t / tick_us`.
    pub fn tick_of(&self, t_us: u64) -> Tick {
        t_us / self.cfg.tick_us
    }

    /// `due(t, d) = (t + d) / tick_us + 1`.
    pub fn due(&self, t_us: u64, d_us: u64) -> Tick {
        (t_us + d_us) / self.cfg.tick_us + 1
    }

    /// The tick at which a record deviceless since `t_off` is dropped.
    pub fn drop_tick(&self, t_off: Tick) -> Tick {
        self.due(t_off * self.cfg.tick_us, self.cfg.last_seen_retention_us)
    }

    /// Clamps the monotonic clock; returns the effective `mono_us`.
    fn clock(&mut self, now: Now) -> u64 {
        if now.mono_us < self.max_mono {
            self.stats.clock_backwards += 1;
        } else {
            self.max_mono = now.mono_us;
        }
        self.max_mono
    }

    /// Rule 1 then rules 2, 3, 7 for one entry. Returns the transitions, per user in time order.
    pub fn heartbeat(&mut self, now: Now, hb: &Heartbeat) -> Vec<Transition> {
        let mut out = Vec::new();
        let mono = self.clock(now);
        let n = self.tick_of(mono);
        self.run_timers(n, now.wall_ms, &mut out);
        self.stats.heartbeats += 1;
        if hb.user == 0 {
            self.stats.refused_user_zero += 1;
            return out;
        }
        let timeout = self.cfg.timeout_us();
        let deadline = self.due(mono, timeout);
        let fresh_active = self.due(mono, self.cfg.idle_after_us);
        let new_state = match hb.report {
            Report::Offline => {
                self.logout(n, now.wall_ms, hb, &mut out);
                return out;
            }
            Report::Online => DevState::Online,
            Report::Idle => DevState::Idle,
            Report::Invisible => DevState::Invisible,
        };

        // Refusals first: a refused entry changes nothing.
        let known_user = self.users.contains_key(&hb.user);
        if !known_user {
            if self.users.len() as u64 == self.cfg.user_capacity as u64 {
                self.stats.refused_user_capacity += 1;
                return out;
            }
        } else {
            let u = &self.users[&hb.user];
            let adopts = u.devices.values().any(|d| d.restored);
            if !u.devices.contains_key(&hb.device) && !adopts {
                let len = u.devices.len();
                if len >= self.cfg.max_devices_per_user as usize {
                    self.stats.refused_device_limit += 1;
                    return out;
                }
                if len == 1 && self.multi_in_use >= self.cfg.multi_device_users {
                    self.stats.refused_overflow_full += 1;
                    return out;
                }
            }
        }

        // Apply.
        if !known_user {
            self.users.insert(hb.user, UserModel::new());
            self.stats.users += 1;
        }
        let u = self.users.get_mut(&hb.user).unwrap();
        let had_devices = !u.devices.is_empty();
        let had_timer = u.timer.is_some();
        if !u.devices.contains_key(&hb.device) {
            // Rule 8: a device not listed takes over a restored device.
            if let Some(&id) = u.devices.iter().find(|(_, d)| d.restored).map(|(id, _)| id) {
                let d = u.devices.remove(&id).unwrap();
                u.devices.insert(hb.device, d);
            }
        }
        // Whether the user's next change may now come before its timer.
        let earlier = match u.devices.get_mut(&hb.device) {
            Some(d) => {
                let was_active = d.state == DevState::Online && d.active_until_tick > n;
                let refresh = hb.active || d.state != new_state;
                d.deadline_tick = deadline;
                if refresh {
                    d.active_until_tick = fresh_active;
                }
                d.state = new_state;
                d.restored = false;
                refresh && !was_active
            }
            None => {
                u.devices.insert(
                    hb.device,
                    DeviceModel {
                        state: new_state,
                        deadline_tick: deadline,
                        active_until_tick: fresh_active,
                        restored: false,
                    },
                );
                self.stats.devices += 1;
                if u.devices.len() == 2 {
                    self.multi_in_use += 1;
                }
                true
            }
        };
        u.off_since = None;
        let agg = u.aggregate(n);
        let cause = if had_devices {
            Cause::StateChange
        } else {
            Cause::FirstHeartbeat
        };
        let seen = hb.active && matches!(agg, Aggregate::Online | Aggregate::Idle);
        Self::emit(
            &mut self.stats,
            hb.user,
            u,
            agg.public(),
            cause,
            now.wall_ms,
            seen,
            &mut out,
        );
        if seen {
            u.last_seen = Some(now.wall_ms);
        }
        if earlier || !had_timer {
            self.reschedule_earlier(hb.user, n);
        }
        out
    }

    /// Rule 3.
    fn logout(&mut self, n: Tick, wall_ms: u64, hb: &Heartbeat, out: &mut Vec<Transition>) {
        let Some(u) = self.users.get_mut(&hb.user) else {
            self.stats.logout_unknown += 1;
            return;
        };
        if u.devices.remove(&hb.device).is_none() {
            self.stats.logout_unknown += 1;
            return;
        }
        self.stats.devices -= 1;
        if u.devices.len() == 1 {
            self.multi_in_use -= 1;
        }
        if u.devices.is_empty() {
            u.off_since = Some(n);
        }
        let agg = u.aggregate(n);
        Self::emit(
            &mut self.stats,
            hb.user,
            u,
            agg.public(),
            Cause::Logout,
            wall_ms,
            false,
            out,
        );
        self.reschedule_earlier(hb.user, n);
    }

    /// Rule 1 alone.
    pub fn advance(&mut self, now: Now) -> Vec<Transition> {
        let mut out = Vec::new();
        let mono = self.clock(now);
        let n = self.tick_of(mono);
        self.run_timers(n, now.wall_ms, &mut out);
        out
    }

    /// Processes every due `(tick, user)` with `tick <= n`, in increasing tick order.
    fn run_timers(&mut self, n: Tick, wall_ms: u64, out: &mut Vec<Transition>) {
        if let Some((ticks, from)) = self.lower_extension {
            if n >= from {
                self.extension = ticks;
                self.lower_extension = None;
            }
        }
        while let Some(&(t, user)) = self.timers.first() {
            if t > n {
                break;
            }
            self.timers.pop_first();
            self.users.get_mut(&user).unwrap().timer = None;
            self.evaluate(user, t, wall_ms, out);
        }
        assert!(n >= self.tick);
        self.tick = n;
    }

    /// Rule 1 for one user at tick `t`.
    fn evaluate(&mut self, user: u64, t: Tick, wall_ms: u64, out: &mut Vec<Transition>) {
        let drop_at = {
            let u = &self.users[&user];
            u.off_since.map(|off| self.drop_tick(off))
        };
        let u = self.users.get_mut(&user).unwrap();
        if u.devices.is_empty() {
            let drop_at = drop_at.expect("deviceless record without T_off");
            if drop_at > t {
                // A timer a logout kept, from before the record lost its last device.
                self.reschedule(user, t);
                return;
            }
            assert_eq!(drop_at, t, "deviceless record evaluated past its drop tick");
            self.users.remove(&user);
            self.stats.users -= 1;
            self.stats.records_dropped += 1;
            return;
        }
        let before = u.devices.len();
        let extension = self.extension;
        u.devices.retain(|_, d| d.deadline_tick + extension > t);
        let after = u.devices.len();
        let removed = before - after;
        self.stats.devices -= removed as u64;
        if before >= 2 && after <= 1 {
            self.multi_in_use -= 1;
        }
        if after == 0 {
            u.off_since = Some(t);
        }
        let agg = u.aggregate(t);
        let cause = if removed > 0 {
            Cause::Timeout
        } else {
            Cause::Inactivity
        };
        Self::emit(
            &mut self.stats,
            user,
            u,
            agg.public(),
            cause,
            wall_ms,
            false,
            out,
        );
        self.reschedule(user, t);
    }

    /// Emits a transition if the public state changes (rules 4 and 5); `seen`: an activity
    /// heartbeat sets last seen with it.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        stats: &mut ModelStats,
        user: u64,
        u: &mut UserModel,
        state: PublicState,
        cause: Cause,
        wall_ms: u64,
        seen: bool,
        out: &mut Vec<Transition>,
    ) {
        if state == u.public {
            return;
        }
        u.version = std::cmp::max(u.version + 1, wall_ms << 16);
        if matches!(state, PublicState::Online | PublicState::Offline) {
            u.last_seen = Some(wall_ms);
        }
        out.push(Transition {
            user,
            state,
            prev: u.public,
            at_ms: wall_ms,
            cause,
            version: u.version,
            devices: u.devices.len() as u8,
            seen: seen || state != PublicState::Idle,
        });
        u.public = state;
        stats.transitions += 1;
    }

    /// Makes sure the user's timer fires no later than its next due tick after `t`.
    fn reschedule_earlier(&mut self, user: u64, t: Tick) {
        let old = self.users[&user].timer;
        self.reschedule(user, t);
        let u = self.users.get_mut(&user).unwrap();
        if let (Some(old), Some(new)) = (old, u.timer) {
            if old < new {
                assert!(self.timers.remove(&(new, user)));
                self.timers.insert((old, user));
                u.timer = Some(old);
            }
        }
    }

    /// Recomputes the user's next due tick after tick `t` and files it in `timers`.
    fn reschedule(&mut self, user: u64, t: Tick) {
        let drop_tick = self
            .users
            .get(&user)
            .and_then(|u| u.off_since)
            .map(|off| self.drop_tick(off));
        let u = self.users.get_mut(&user).unwrap();
        if let Some(old) = u.timer.take() {
            assert!(self.timers.remove(&(old, user)));
        }
        let mut next: Option<Tick> = None;
        let mut consider = |x: Tick| {
            assert!(x > t, "timer at {x} not after {t}");
            next = Some(next.map_or(x, |n: Tick| n.min(x)));
        };
        for d in u.devices.values() {
            // Past under a shorter extension now in force: due at the next tick.
            consider((d.deadline_tick + self.extension).max(t + 1));
            if d.state == DevState::Online && d.active_until_tick > t {
                consider(d.active_until_tick);
            }
        }
        if u.devices.is_empty() {
            consider(drop_tick.expect("deviceless record without T_off"));
        }
        if let Some(x) = next {
            u.timer = Some(x);
            self.timers.insert((x, user));
        }
    }

    /// Rule 6.
    pub fn query(&self, user: u64) -> Presence {
        match self.users.get(&user) {
            None => Presence::UNKNOWN,
            Some(u) => Presence {
                state: u.public,
                last_seen_ms: u.last_seen,
                version: u.version,
            },
        }
    }

    pub fn device_count(&self, user: u64) -> usize {
        self.users.get(&user).map_or(0, |u| u.devices.len())
    }

    pub fn is_known(&self, user: u64) -> bool {
        self.users.contains_key(&user)
    }

    /// Rule 8: the model of a daemon restarted at `now` from `saved` (this model as it was when
    /// a snapshot was taken at `saved_at`) and the transitions logged after it, in order.
    /// Times cross the restart as wall-clock ms, converted as the core converts them; every
    /// device's deadline starts over, an open activity window is kept at least
    /// `min(timeout, idle_after)` and at most `idle_after`; a logged transition newer than a record replaces its
    /// devices by one restored device unless they already give the logged state. Counters
    /// start over from the users and devices restored.
    pub fn restored(saved: &Model, saved_at: Now, log: &[Transition], now: Now) -> Model {
        let cfg = saved.cfg.clone();
        let tick_us = i128::from(cfg.tick_us);
        let wall_of = |t: Tick| -> u64 {
            let ms = i128::from(saved_at.wall_ms)
                + (i128::from(t) * tick_us - i128::from(saved.max_mono)) / 1000;
            ms.clamp(0, i128::from(presenced_core::record::MAX_WALL_MS)) as u64
        };
        let mut m = Model::new(cfg.clone(), now);
        let mono = now.mono_us;
        let n = m.tick;
        let tick_of = |ms: u64| -> Tick {
            let t = i128::from(mono) + (i128::from(ms) - i128::from(now.wall_ms)) * 1000;
            (t.max(0) / tick_us) as Tick
        };
        let retention_ticks = cfg.last_seen_retention_us / cfg.tick_us + 1;
        let floor = n.saturating_sub(retention_ticks);
        let deadline = m.due(mono, cfg.timeout_us());
        let active_floor = m.due(mono, cfg.timeout_us().min(cfg.idle_after_us));
        let active_cap = m.due(mono, cfg.idle_after_us);
        for (&id, u) in &saved.users {
            let mut r = UserModel::new();
            r.version = u.version;
            r.last_seen = u.last_seen;
            for (&dev, d) in &u.devices {
                let active = d.state == DevState::Online && d.active_until_tick > saved.tick;
                let lapsed = d.state == DevState::Online && !active;
                let active_until = if lapsed {
                    n
                } else {
                    tick_of(wall_of(d.active_until_tick)).clamp(active_floor, active_cap)
                };
                r.devices.insert(
                    dev,
                    DeviceModel {
                        state: d.state,
                        deadline_tick: deadline,
                        active_until_tick: active_until,
                        restored: d.restored,
                    },
                );
            }
            if let Some(off) = u.off_since {
                r.off_since = Some(tick_of(wall_of(off)).clamp(floor, n));
            }
            r.public = r.aggregate(n).public();
            assert_eq!(r.public, u.public, "a saved user {id} reads as saved");
            m.users.insert(id, r);
        }
        for t in log {
            let created = !m.users.contains_key(&t.user);
            if created && m.users.len() as u64 == cfg.user_capacity as u64 {
                continue;
            }
            let r = m.users.entry(t.user).or_insert_with(UserModel::new);
            if !created && t.version <= r.version {
                continue;
            }
            r.version = t.version;
            if t.seen {
                r.last_seen = Some(t.at_ms);
            }
            let keeps = !r.devices.is_empty() && r.public == t.state;
            if !keeps {
                r.devices.clear();
                r.off_since = None;
                match t.state {
                    PublicState::Offline => {
                        r.off_since = Some(tick_of(t.at_ms).clamp(floor, n));
                    }
                    PublicState::Online | PublicState::Idle => {
                        let idle = t.state == PublicState::Idle;
                        r.devices.insert(
                            0,
                            DeviceModel {
                                state: DevState::Online,
                                deadline_tick: deadline,
                                active_until_tick: if idle { n } else { active_cap },
                                restored: true,
                            },
                        );
                    }
                }
            }
            r.public = r.aggregate(n).public();
            assert_eq!(
                r.public, t.state,
                "a replayed user {} reads as logged",
                t.user
            );
        }
        m.stats.users = m.users.len() as u64;
        m.stats.devices = m.users.values().map(|u| u.devices.len() as u64).sum();
        m.multi_in_use = m.users.values().filter(|u| u.devices.len() >= 2).count() as u32;
        let users: Vec<u64> = m.users.keys().copied().collect();
        for user in users {
            m.reschedule_restored(user, n);
        }
        m
    }

    /// `reschedule` for a restored record, whose drop tick may already have come.
    fn reschedule_restored(&mut self, user: u64, n: Tick) {
        let off = self.users[&user].off_since;
        if let Some(off) = off {
            let drop = self.drop_tick(off).max(n);
            let u = self.users.get_mut(&user).unwrap();
            u.timer = Some(drop);
            self.timers.insert((drop, user));
        } else {
            self.reschedule(user, n);
        }
    }

    /// Cross-checks the model's own bookkeeping (counters against the maps).
    pub fn self_check(&self) {
        assert_eq!(self.stats.users, self.users.len() as u64);
        let devices: usize = self.users.values().map(|u| u.devices.len()).sum();
        assert_eq!(self.stats.devices, devices as u64);
        let multi = self.users.values().filter(|u| u.devices.len() >= 2).count();
        assert_eq!(self.multi_in_use as usize, multi);
        assert!(multi <= self.cfg.multi_device_users as usize);
        assert!(self.users.len() <= self.cfg.user_capacity as usize);
        for (&id, u) in &self.users {
            assert_ne!(id, 0);
            assert!(u.devices.len() <= self.cfg.max_devices_per_user as usize);
            assert_eq!(u.public, u.aggregate(self.tick).public(), "user {id}");
            assert_eq!(u.devices.is_empty(), u.off_since.is_some(), "user {id}");
            assert!(u.timer.is_some(), "user {id} has no timer");
            for d in u.devices.values() {
                assert!(d.deadline_tick + self.max_extension > self.tick);
            }
        }
        assert_eq!(self.timers.len(), self.users.len());
    }
}
