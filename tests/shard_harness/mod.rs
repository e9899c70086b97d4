//! A stateful harness for the presence core, shared by the `shard` fuzz target
//! (`fuzz/fuzz_targets/shard.rs`, libFuzzer) and `tests/shard_fuzz_props.rs` (proptest, in CI).
//!
//! [`run`] reads arbitrary bytes as a small shard's configuration, its start time and a
//! sequence of operations — heartbeat datagrams (encoded with `presenced_wire::encode`, or made
//! of raw bytes) handed to the daemon's own sans-IO shard node
//! (`presenced_node::node::ShardNode::handle_datagram`, which decodes, checks and applies them
//! with one `Now` per datagram), time passing (`ShardNode::handle_timeout`), jumps
//! far beyond every timer horizon, wall-clock steps either way, and calls whose monotonic time
//! is behind an earlier one's — and panics as soon as an invariant breaks:
//!
//! - every transition: a nonzero user that was sent, `state != prev`, `prev` the user's last
//!   public state, `at_ms` the call's wall clock, a cause that fits the call (no heartbeat cause
//!   from `advance`, a logout only for a user logged out by the datagram, `first_heartbeat` only
//!   from offline, `inactivity` only online → idle), and a version above the user's previous one
//!   (except across a record dropped after retention while the wall clock had not moved past
//!   the user's earlier transitions: ARCHITECTURE.md rule 5's stated condition);
//! - after every operation, for every user ever sent: `query` agrees with the last transition
//!   (state and version; last seen is the call's wall clock after a transition to online or
//!   offline), an unknown user answers `Presence::UNKNOWN` and was offline, device counts are
//!   within the limit and consistent with the state, a device heartbeated without refusal stays
//!   until its deadline, the counters add up (users, devices, heartbeats, transitions) and the
//!   table's structural invariants hold;
//! - liveness: once `timeout` (plus a tick) has passed since the last heartbeat every device is
//!   gone, and once the retention has passed too every record is; every run ends that way;
//! - and, while the wall clock stays within what a record stores (`1..=MAX_WALL_MS`), the
//!   reference model of `tests/model` (the simulation's oracle) gets the same calls and must
//!   give the same transitions (per user, in order), counters and answers for every user.
//!
//! The shard is small (at most 64 users) so that one input runs in well under a millisecond.

#![allow(dead_code)]

use std::collections::BTreeMap;

use presenced_core::clock::Now;
use presenced_core::config::{CoreConfig, DEVICE_HORIZON_TICKS, MAX_HORIZON_TICKS};
use presenced_core::event::{Cause, Heartbeat, Presence, PublicState, Report, Transition};
use presenced_core::record::MAX_WALL_MS;
use presenced_core::shard::{CoreStats, Shard};
use presenced_node::auth::Verifier;
use presenced_node::bus::ToHub;
use presenced_node::node::{NodeConfig, ShardNode, Transmit};
use presenced_wire::{decode, encode, Entry, Header, State};

#[path = "../model/mod.rs"]
mod model;

use model::Model;

/// Most operations read from one input.
pub const MAX_OPS: usize = 600;

const MS: u64 = 1_000;
const SEC: u64 = 1_000_000;
/// The source address of every datagram.
const GATEWAY: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// What one run exercised, for coverage checks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Operations run.
    pub ops: u64,
    /// Datagrams decoded and applied.
    pub datagrams: u64,
    /// Datagrams `decode` refused.
    pub refused_datagrams: u64,
    /// Transitions by cause (first_heartbeat, state_change, logout, timeout, inactivity).
    pub causes: [u64; 5],
    /// The shard's counters at the end (before the final drain).
    pub stats: CoreStats,
    /// Version decreases excused by rule 5's condition.
    pub excused_version_drops: u64,
}

/// The configurations an input picks from (its first byte): small capacities, and timings from
/// degenerate (grace 0, idle after 1 µs, retention 0) to the largest horizon allowed.
pub fn config(i: u8) -> CoreConfig {
    let base = CoreConfig {
        hash_seed: 0x0123_4567_89ab_cdef,
        user_capacity: 64,
        max_devices_per_user: 3,
        multi_device_users: 4,
        ..CoreConfig::default()
    };
    match i % 8 {
        // Short everything: heavy churn per user.
        0 => CoreConfig {
            tick_us: MS,
            heartbeat_interval_us: 20 * MS,
            grace_us: 5 * MS,
            idle_after_us: 12 * MS,
            last_seen_retention_us: 150 * MS,
            ..base
        },
        // The shipped timings (tick 10 ms, timeout 44 s, idle 5 min, retention 30 d).
        1 => CoreConfig {
            user_capacity: 32,
            max_devices_per_user: 4,
            multi_device_users: 8,
            ..base
        },
        // The smallest tick.
        2 => CoreConfig {
            tick_us: 100,
            heartbeat_interval_us: 3 * MS,
            grace_us: MS,
            idle_after_us: 4 * MS,
            last_seen_retention_us: 50 * MS,
            user_capacity: 24,
            ..base
        },
        // Degenerate timings.
        3 => CoreConfig {
            tick_us: MS,
            heartbeat_interval_us: 5 * MS,
            grace_us: 0,
            idle_after_us: 1,
            last_seen_retention_us: 0,
            user_capacity: 10,
            max_devices_per_user: 2,
            multi_device_users: 2,
            ..base
        },
        // Timings that are not multiples of the tick; one device per user; no blocks.
        4 => CoreConfig {
            tick_us: 7 * MS,
            heartbeat_interval_us: 33_333,
            grace_us: 7_777,
            idle_after_us: 12_345,
            last_seen_retention_us: 99_999,
            user_capacity: 12,
            max_devices_per_user: 1,
            multi_device_users: 0,
            ..base
        },
        // Few users, the most devices per user, one overflow block.
        5 => CoreConfig {
            tick_us: MS,
            heartbeat_interval_us: 60 * MS,
            grace_us: 10 * MS,
            idle_after_us: 20 * MS,
            last_seen_retention_us: 30 * MS,
            user_capacity: 4,
            max_devices_per_user: presenced_core::config::MAX_DEVICES_LIMIT,
            multi_device_users: 1,
            ..base
        },
        // The largest horizons allowed: the timeout and idle just under 2^20 ticks (a device's
        // ticks wrap in 22 bits), retention just under 2^30.
        6 => CoreConfig {
            tick_us: 100,
            heartbeat_interval_us: (DEVICE_HORIZON_TICKS - 1) * 100 - 2 * SEC,
            grace_us: SEC,
            idle_after_us: (DEVICE_HORIZON_TICKS - 1) * 100,
            last_seen_retention_us: (MAX_HORIZON_TICKS - 1) * 100,
            user_capacity: 16,
            ..base
        },
        // No overflow blocks; idle after = timeout; one user fits.
        _ => CoreConfig {
            tick_us: 2 * MS,
            heartbeat_interval_us: 40 * MS,
            grace_us: 0,
            idle_after_us: 40 * MS,
            last_seen_retention_us: 60 * MS,
            user_capacity: 1,
            max_devices_per_user: 4,
            multi_device_users: 0,
            ..base
        },
    }
}

/// The users compact datagrams draw from: small ids, the extremes, and spread ids; more than
/// any configuration's capacity, so that new users get refused.
const POOL: [u64; 72] = {
    let mut pool = [0u64; 72];
    let mut i = 0;
    while i < 40 {
        pool[i] = i as u64 + 1;
        i += 1;
    }
    pool[40] = u64::MAX;
    pool[41] = u64::MAX - 1;
    pool[42] = 1 << 63;
    pool[43] = u32::MAX as u64;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while i < 72 {
        if i >= 44 {
            x = x
                .wrapping_mul(0x5851_f42d_4c95_7f2d)
                .wrapping_add(0x1405_7b7e_f767_814f);
            pool[i] = x | 1;
        }
        i += 1;
    }
    pool
};

/// Device ids compact datagrams draw from.
const DEVICES: [u32; 8] = [0, 1, 2, 3, 4, 0x8000_0000, u32::MAX - 1, u32::MAX];

/// Reads the input; past its end every read is 0.
struct Input<'a> {
    data: &'a [u8],
}

impl Input<'_> {
    fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) | u64::from(self.u32()) << 32
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.data.len());
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        head
    }
}

/// What the harness knows about one user from the shard's outputs.
#[derive(Clone, Copy, Debug)]
struct UserView {
    /// Public state after the last transition (offline before any).
    state: PublicState,
    /// Version of the last transition (0 before any).
    version: u64,
    /// The version `query` must answer: the last transition's, or 0 once the record is gone.
    query_version: u64,
    /// Largest `at_ms` (clamped to what a record stores) of the user's transitions.
    max_at: u64,
    /// The record may have been dropped since the last transition.
    maybe_dropped: bool,
    /// A device of the user is live at least while the largest mono time is at most this.
    live_until: Option<u64>,
}

impl Default for UserView {
    fn default() -> Self {
        UserView {
            state: PublicState::Offline,
            version: 0,
            query_version: 0,
            max_at: 0,
            maybe_dropped: false,
            live_until: None,
        }
    }
}

/// What a datagram did to one user (for the cause checks).
#[derive(Clone, Copy, Debug, Default)]
struct Sent {
    heartbeat: bool,
    logout: bool,
}

struct Harness {
    cfg: CoreConfig,
    node: ShardNode,
    /// Largest mono time passed so far (the shard's clock).
    mono: u64,
    /// Wall clock, Unix ms: follows mono, and steps.
    wall: u64,
    users: BTreeMap<u64, UserView>,
    /// Mono time of the last call that applied a heartbeat entry.
    last_entry_mono: Option<u64>,
    transitions: u64,
    entries: u64,
    gateway_seq: u64,
    summary: Summary,
    /// The op being run, for failure messages.
    op: usize,
    /// The reference model (`tests/model`), fed the same calls, while the wall clock stays in
    /// the range a record stores (`1..=MAX_WALL_MS`: the model does not clamp).
    model: Option<Model>,
}

fn clamp_wall(ms: u64) -> u64 {
    ms.clamp(1, MAX_WALL_MS)
}

fn report(state: State) -> Report {
    match state {
        State::Online => Report::Online,
        State::Idle => Report::Idle,
        State::Offline => Report::Offline,
        State::Invisible => Report::Invisible,
    }
}

fn cause_index(c: Cause) -> usize {
    match c {
        Cause::FirstHeartbeat => 0,
        Cause::StateChange => 1,
        Cause::Logout => 2,
        Cause::Timeout => 3,
        Cause::Inactivity => 4,
    }
}

impl Harness {
    fn tick(&self) -> u64 {
        self.cfg.tick_us
    }

    fn now(&self) -> Now {
        Now {
            mono_us: self.mono,
            wall_ms: self.wall,
        }
    }

    /// Moves mono forward by `dt` µs (the wall clock follows); refuses to leave 2^62.
    fn pass(&mut self, dt: u64) {
        let to = self.mono.saturating_add(dt).min(1 << 62);
        self.wall = self.wall.saturating_add(to / 1000 - self.mono / 1000);
        self.mono = to;
        if self.wall > MAX_WALL_MS {
            self.model = None;
        }
    }

    fn fail(&self, what: String) -> ! {
        panic!(
            "op {}: {what}\n  config {:?}\n  mono {} wall {}\n  stats {:?}",
            self.op,
            self.cfg,
            self.mono,
            self.wall,
            self.shard().stats()
        );
    }

    /// The node's presence core.
    fn shard(&self) -> &Shard {
        self.node.shard()
    }

    /// The transitions the node queued for the hub since the last call (a single shard routes
    /// nothing elsewhere, and the outbox never fills here).
    fn sent_transitions(&mut self) -> Vec<Transition> {
        let mut out = Vec::new();
        while let Some(t) = self.node.poll_transmit() {
            match t {
                Transmit::Hub(_, ToHub::Transitions(batch)) => out.extend(batch.items()),
                Transmit::Hub(..) => self.fail("only transitions were expected".into()),
                Transmit::Peer { shard, .. } => {
                    self.fail(format!("a single shard routed entries to shard {shard}"))
                }
                Transmit::Store(_) => self.fail("no store was configured".into()),
            }
        }
        out
    }

    /// Hands a datagram to the node, which decodes it and applies every entry with one `Now`.
    /// With `pre_advance`, time is advanced first (the shard thread advances between rounds of
    /// datagrams; here both orders are exercised).
    fn datagram(&mut self, bytes: &[u8], now: Now, pre_advance: bool) {
        // The node decodes, then (with no key file, as here) refuses authenticated ones: a
        // refused datagram is counted by reason and changes nothing else.
        let d = match decode(bytes) {
            Ok(d) if !d.is_authenticated() => d,
            _ => {
                self.summary.refused_datagrams += 1;
                let before = (self.node.stats().dropped_total(), self.shard().stats());
                self.node.handle_datagram(now, GATEWAY, bytes);
                let after = (self.node.stats().dropped_total(), self.shard().stats());
                if after.0 != before.0 + 1 || after.1 != before.1 {
                    self.fail(format!("a refused datagram: {before:?} -> {after:?}"));
                }
                if !self.sent_transitions().is_empty() {
                    self.fail("a refused datagram caused transitions".into());
                }
                return;
            }
        };
        self.summary.datagrams += 1;
        let mut batch = Vec::with_capacity(d.len());
        let mut sent: BTreeMap<u64, Sent> = BTreeMap::new();
        for e in d.entries() {
            batch.push(Heartbeat {
                user: e.user,
                device: e.device,
                report: report(e.state),
                active: e.active,
            });
            self.users.entry(e.user).or_default();
            let s = sent.entry(e.user).or_default();
            if e.state == State::Offline {
                s.logout = true;
            } else {
                s.heartbeat = true;
            }
        }
        if pre_advance {
            self.advance(now);
        }
        let before = self.shard().stats();
        self.node.handle_datagram(now, GATEWAY, bytes);
        let out = self.sent_transitions();
        self.entries += batch.len() as u64;
        self.last_entry_mono = Some(self.mono);
        let model_out = self.model.as_mut().map(|m| {
            batch
                .iter()
                .flat_map(|hb| m.heartbeat(now, hb))
                .collect::<Vec<_>>()
        });
        self.compare_with_model(&out, model_out);
        self.after_datagram(&out, &sent, &before, now);
    }

    /// The model must have emitted the same transitions (per user in the same order; the
    /// order between users is unspecified) and agree on every counter and every user.
    fn compare_with_model(&mut self, out: &[Transition], model_out: Option<Vec<Transition>>) {
        let (Some(model), Some(mut want)) = (self.model.as_ref(), model_out) else {
            return;
        };
        let mut got = out.to_vec();
        got.sort_by_key(|t| t.user);
        want.sort_by_key(|t| t.user);
        if got != want {
            self.fail(format!(
                "transitions differ from the model's\n  shard: {got:?}\n  model: {want:?}"
            ));
        }
        let (s, m) = (self.shard().stats(), &model.stats);
        let shard_counters = [
            s.users,
            s.devices,
            s.heartbeats,
            s.transitions,
            s.refused_user_capacity,
            s.refused_device_limit,
            s.refused_overflow_full,
            s.refused_user_zero,
            s.logout_unknown,
            s.clock_backwards,
            s.records_dropped,
        ];
        let model_counters = [
            m.users,
            m.devices,
            m.heartbeats,
            m.transitions,
            m.refused_user_capacity,
            m.refused_device_limit,
            m.refused_overflow_full,
            m.refused_user_zero,
            m.logout_unknown,
            m.clock_backwards,
            m.records_dropped,
        ];
        if shard_counters != model_counters {
            self.fail(format!("counters differ from the model's: {m:?}"));
        }
        model.self_check();
        for &user in self.users.keys() {
            let shard = (
                self.shard().query(user),
                self.shard().device_count(user),
                self.shard().is_known(user),
            );
            let want = (
                model.query(user),
                model.device_count(user),
                model.is_known(user),
            );
            if shard != want {
                self.fail(format!(
                    "user {user}: shard {shard:?}, model {want:?} ({:?})",
                    model.users.get(&user)
                ));
            }
        }
    }

    fn after_datagram(
        &mut self,
        out: &[Transition],
        sent: &BTreeMap<u64, Sent>,
        before: &CoreStats,
        now: Now,
    ) {
        self.check_transitions(out, sent, before, now);
        let after = self.shard().stats();
        // Without a refusal every heartbeat entry was applied: each device it named is live
        // until its deadline, i.e. while mono stays within `timeout` of now.
        let refused = after.refused_user_capacity != before.refused_user_capacity
            || after.refused_device_limit != before.refused_device_limit
            || after.refused_overflow_full != before.refused_overflow_full;
        for (&user, s) in sent {
            let view = self.users.entry(user).or_default();
            if s.logout {
                view.live_until = None;
            } else if !refused {
                view.live_until = Some(self.mono + self.cfg.timeout_us());
            }
        }
        self.check_users(out, before, now);
        self.check_counters(before, true);
    }

    fn advance(&mut self, now: Now) {
        let before = self.shard().stats();
        self.node.handle_timeout(now);
        let out = self.sent_transitions();
        let model_out = self.model.as_mut().map(|m| m.advance(now));
        self.compare_with_model(&out, model_out);
        self.check_transitions(&out, &BTreeMap::new(), &before, now);
        self.check_users(&out, &before, now);
        self.check_counters(&before, false);
    }

    /// Checks the transitions of one call, in order, and records them.
    fn check_transitions(
        &mut self,
        out: &[Transition],
        sent: &BTreeMap<u64, Sent>,
        before: &CoreStats,
        now: Now,
    ) {
        // Records dropped during the call: a user's may be among them.
        let dropped_now = self.shard().stats().records_dropped != before.records_dropped;
        for t in out {
            self.transitions += 1;
            self.summary.causes[cause_index(t.cause)] += 1;
            let Some(view) = self.users.get(&t.user).copied() else {
                self.fail(format!("transition for a user never sent: {t:?}"));
            };
            if t.state == t.prev {
                self.fail(format!("state == prev: {t:?}"));
            }
            if t.at_ms != now.wall_ms {
                self.fail(format!("at_ms is not the call's wall clock: {t:?}"));
            }
            if t.prev != view.state {
                self.fail(format!(
                    "prev is not the last public state {:?}: {t:?}",
                    view.state
                ));
            }
            let s = sent.get(&t.user).copied().unwrap_or_default();
            let cause_ok = match t.cause {
                Cause::FirstHeartbeat => s.heartbeat && t.prev == PublicState::Offline,
                Cause::StateChange => s.heartbeat,
                Cause::Logout => s.logout,
                Cause::Timeout => true,
                Cause::Inactivity => t.prev == PublicState::Online && t.state == PublicState::Idle,
            };
            if !cause_ok {
                self.fail(format!("cause does not fit the call ({s:?}): {t:?}"));
            }
            let at = clamp_wall(t.at_ms);
            if t.version <= view.version {
                // Within a record a version always grows. A new record (after the old one was
                // dropped) starts from the wall clock: it is only promised to be above the old
                // versions when the wall clock has moved past the old transitions.
                if (view.maybe_dropped || dropped_now) && at <= view.max_at {
                    self.summary.excused_version_drops += 1;
                } else {
                    self.fail(format!(
                        "version not above the previous {} (dropped: {}, max at {}): {t:?}",
                        view.version, view.maybe_dropped, view.max_at
                    ));
                }
            }
            let v = self.users.get_mut(&t.user).expect("present");
            v.state = t.state;
            v.version = t.version;
            v.query_version = t.version;
            v.max_at = v.max_at.max(at);
            v.maybe_dropped = false;
        }
    }

    /// Checks every user's answers after a call.
    fn check_users(&mut self, out: &[Transition], before: &CoreStats, now: Now) {
        let dropped_now = self.shard().stats().records_dropped != before.records_dropped;
        let max_devices = usize::from(self.cfg.max_devices_per_user);
        let users: Vec<u64> = self.users.keys().copied().collect();
        let mut known = 0u64;
        let mut devices = 0u64;
        for user in users {
            let view = self.users[&user];
            let q = self.shard().query(user);
            let n = self.shard().device_count(user);
            let is_known = self.shard().is_known(user);
            if let Some(until) = view.live_until {
                if self.mono <= until && (!is_known || n == 0) {
                    self.fail(format!(
                        "user {user}: a device heartbeated without refusal is gone before its \
                         deadline (live until mono {until}; known {is_known}, {n} devices)"
                    ));
                }
            }
            if !is_known {
                if q != Presence::UNKNOWN || n != 0 {
                    self.fail(format!("unknown user {user}: query {q:?}, {n} devices"));
                }
                if view.state != PublicState::Offline {
                    self.fail(format!(
                        "user {user}: record dropped while {:?}",
                        view.state
                    ));
                }
                let v = self.users.get_mut(&user).expect("present");
                v.query_version = 0;
                v.maybe_dropped = true;
                v.live_until = None;
                continue;
            }
            known += 1;
            devices += n as u64;
            if q.state != view.state {
                self.fail(format!(
                    "user {user}: query state {:?}, last transition {:?}",
                    q.state, view.state
                ));
            }
            if q.version != view.query_version {
                // Dropped and made anew within this call by an invisible heartbeat (no
                // transition): the new record reads like an unknown user.
                let remade = dropped_now
                    && q.version == 0
                    && q.last_seen_ms.is_none()
                    && q.state == PublicState::Offline;
                if !remade {
                    self.fail(format!(
                        "user {user}: query version {}, expected {}: {q:?}",
                        q.version, view.query_version
                    ));
                }
                let v = self.users.get_mut(&user).expect("present");
                v.query_version = 0;
                v.maybe_dropped = true;
            }
            if n == 0 && q.state != PublicState::Offline {
                self.fail(format!("user {user}: no device but {:?}", q.state));
            }
            if n > max_devices {
                self.fail(format!("user {user}: {n} devices, limit {max_devices}"));
            }
            if let Some(last) = out.iter().rev().find(|t| t.user == user) {
                if last.state != PublicState::Idle
                    && q.version == last.version
                    && q.last_seen_ms != Some(clamp_wall(now.wall_ms))
                {
                    self.fail(format!(
                        "user {user}: last seen {:?} after a transition to {:?} at {}",
                        q.last_seen_ms, last.state, now.wall_ms
                    ));
                }
            }
        }
        let stats = self.shard().stats();
        if stats.users != known || self.shard().table().len() as u64 != known {
            self.fail(format!(
                "{known} users known, stats say {}, table holds {}",
                stats.users,
                self.shard().table().len()
            ));
        }
        if stats.devices != devices {
            self.fail(format!(
                "{devices} devices counted, stats say {}",
                stats.devices
            ));
        }
        self.shard().table().check_invariants();
    }

    /// Counters and liveness.
    fn check_counters(&mut self, before: &CoreStats, applied_entries: bool) {
        let stats = self.shard().stats();
        if stats.transitions != self.transitions {
            self.fail(format!(
                "{} transitions seen, stats say {}",
                self.transitions, stats.transitions
            ));
        }
        if stats.heartbeats != self.entries {
            self.fail(format!(
                "{} entries applied, stats say {}",
                self.entries, stats.heartbeats
            ));
        }
        if stats.users > u64::from(self.cfg.user_capacity) {
            self.fail(format!(
                "{} users, capacity {}",
                stats.users, self.cfg.user_capacity
            ));
        }
        if !applied_entries && stats.heartbeats != before.heartbeats {
            self.fail("advance counted heartbeats".to_string());
        }
        if let Some(last) = self.last_entry_mono {
            let tick = self.tick();
            let gone = last + self.cfg.timeout_us() + tick;
            if self.mono >= gone && stats.devices != 0 {
                self.fail(format!(
                    "{} devices left {} µs after the last heartbeat (timeout {} µs)",
                    stats.devices,
                    self.mono - last,
                    self.cfg.timeout_us()
                ));
            }
            let dropped = gone + self.cfg.last_seen_retention_us + 2 * tick;
            if self.mono >= dropped && stats.users != 0 {
                self.fail(format!(
                    "{} records left {} µs after the last heartbeat (retention {} µs)",
                    stats.users,
                    self.mono - last,
                    self.cfg.last_seen_retention_us
                ));
            }
        }
    }

    /// A datagram of 1 to 8 entries from the pool, two input bytes each.
    fn compact_datagram(&mut self, input: &mut Input<'_>) -> Vec<u8> {
        let n = usize::from(input.u8() % 8) + 1;
        let entries: Vec<Entry> = (0..n)
            .map(|_| {
                let (a, b) = (input.u8(), input.u8());
                // Half the entries go to 8 hot users, and most to 2 hot devices, so that
                // devices live long enough to change state, time out and log out.
                let user = if a & 0x80 != 0 {
                    a & 7
                } else {
                    a % POOL.len() as u8
                };
                let device = if b & 0xc0 != 0 { b & 1 } else { b & 7 };
                Entry {
                    user: POOL[usize::from(user)],
                    device: DEVICES[usize::from(device)],
                    state: State::ALL[usize::from(b >> 3 & 3)],
                    active: b & 0x20 != 0,
                }
            })
            .collect();
        self.encode(&entries)
    }

    fn encode(&mut self, entries: &[Entry]) -> Vec<u8> {
        self.gateway_seq += 1;
        let header = Header::new(7, 1, self.gateway_seq, self.wall);
        encode(&header, entries).expect("valid entries encode")
    }

    /// A datagram whose entries are raw input bytes (users, devices, flags), or one hot user's
    /// many devices, or raw bytes altogether.
    fn raw_datagram(&mut self, input: &mut Input<'_>, kind: u8) -> Vec<u8> {
        if kind & 4 != 0 {
            // Up to 40 consecutive device ids of one user: past every device limit (31 at
            // most) and into the overflow blocks.
            let user = POOL[usize::from(input.u8() & 7)];
            let n = usize::from(input.u8() % 40) + 1;
            let first = input.u32();
            let b = input.u8();
            let entries: Vec<Entry> = (0..n)
                .map(|i| Entry {
                    user,
                    device: first.wrapping_add(i as u32),
                    state: State::ALL[usize::from(b >> (i % 4 * 2) & 3)],
                    active: b & 0x80 != 0,
                })
                .collect();
            self.encode(&entries)
        } else if kind & 1 == 0 {
            // Any user id and device id; the state/flags byte mostly valid.
            let n = usize::from(input.u8() % 6) + 1;
            let entries: Vec<Entry> = (0..n)
                .map(|_| {
                    let user = input.u64();
                    let device = input.u32();
                    let b = input.u8();
                    Entry {
                        user: user.max(1),
                        device,
                        state: State::ALL[usize::from(b & 3)],
                        active: b & 4 != 0,
                    }
                })
                .collect();
            self.encode(&entries)
        } else {
            let len = usize::from(input.u8() % 80);
            input.bytes(len).to_vec()
        }
    }

    fn step_wall(&mut self, input: &mut Input<'_>, kind: u8) {
        let amount = u64::from(input.u32());
        self.wall = match kind % 6 {
            0 => self.wall.saturating_sub(amount),
            1 => self.wall.saturating_add(amount),
            // Back by up to ~12 days in ms, or forward.
            2 => self.wall.saturating_sub(amount % (1 << 30)),
            3 => 0,
            4 => MAX_WALL_MS - u64::from(input.u8()),
            _ => u64::MAX - amount,
        };
        if !(1..=MAX_WALL_MS).contains(&self.wall) {
            self.model = None;
        }
    }

    fn run_op(&mut self, input: &mut Input<'_>) {
        let tag = input.u8();
        let param = tag >> 3;
        match tag & 7 {
            // A compact datagram, possibly a little later, possibly after an explicit advance.
            0..=2 => {
                let dt = u64::from(param >> 1) * self.tick() / 4;
                self.pass(dt);
                let bytes = self.compact_datagram(input);
                self.datagram(&bytes, self.now(), param & 1 != 0);
            }
            3 => {
                let bytes = self.raw_datagram(input, param);
                self.datagram(&bytes, self.now(), param & 2 != 0);
            }
            // Time passes: scaled to the tick, the timeout, idle_after or the retention.
            4 | 5 => {
                let unit = match param & 3 {
                    0 => self.tick(),
                    1 => self.cfg.timeout_us(),
                    2 => self.cfg.idle_after_us.max(1),
                    _ => self.cfg.last_seen_retention_us.max(self.tick()),
                };
                let dt = (u128::from(input.u16()) * u128::from(unit) / 4096) as u64;
                self.pass(dt);
                self.advance(self.now());
            }
            6 => {
                self.step_wall(input, param);
                self.advance(self.now());
            }
            // A jump far beyond the timer horizon (up to 2^36 ticks), or a stale mono.
            _ => {
                if param & 1 == 0 {
                    let ticks = u64::from(input.u32()) << (param >> 1 & 7);
                    self.pass(ticks.saturating_mul(self.tick()));
                    self.advance(self.now());
                } else {
                    let back = u64::from(input.u16()) * self.tick() / 64;
                    let stale = Now {
                        mono_us: self.mono.saturating_sub(back),
                        wall_ms: self.wall,
                    };
                    if param & 2 == 0 {
                        self.advance(stale);
                    } else {
                        let bytes = self.compact_datagram(input);
                        self.datagram(&bytes, stale, param & 4 != 0);
                    }
                }
            }
        }
    }

    /// Lets every timer run out: all devices, then all records, go.
    fn drain(&mut self) {
        let dt = self.cfg.timeout_us() + self.cfg.last_seen_retention_us + 3 * self.tick();
        self.pass(dt);
        self.advance(self.now());
        let stats = self.shard().stats();
        if stats.devices != 0 || stats.users != 0 || !self.shard().table().is_empty() {
            self.fail("records left after every timer ran out".to_string());
        }
    }
}

/// Runs one input through a fresh shard; panics on the first broken invariant.
pub fn run(data: &[u8]) -> Summary {
    let mut input = Input { data };
    let cfg = config(input.u8());
    let origin = input.u8();
    let tick = cfg.tick_us;
    // Start at 0, at a large tick, or just before tick numbers wrap 32 bits or cross the
    // wheel's 2^36-tick span.
    let mono = match origin % 5 {
        0 => 0,
        1 => u64::from(input.u32()) * 1_000,
        2 => ((1u64 << 32) - u64::from(input.u16())) * tick,
        3 => ((1u64 << 36) - u64::from(input.u16())) * tick,
        _ => ((3u64 << 36) - u64::from(input.u32())) * tick,
    };
    let wall = match origin / 5 % 4 {
        0 | 1 => 1_700_000_000_000,
        2 => u64::from(input.u16()),
        _ => MAX_WALL_MS - u64::from(input.u32()),
    };
    let now = Now {
        mono_us: mono,
        wall_ms: wall,
    };
    let node_config = NodeConfig {
        index: 0,
        shards: 1,
        hubs: 1,
        core: cfg.clone(),
        cross_shard_batch: presenced_node::bus::MAX_ENTRY_BATCH,
        link_outbox: usize::MAX,
        store: None,
        warming_until_us: None,
        // The source defence is not the model's: a source is never blocked here.
        sources: presenced_node::auth::sources::SourceLimits {
            failure_burst: u32::MAX,
            ..presenced_node::auth::sources::SourceLimits::default()
        },
        backoff: presenced_node::backoff::BackoffConfig::disabled(),
    };
    let node = ShardNode::new(node_config, Verifier::new(None, u64::MAX), now)
        .expect("the harness's configs are valid");
    let model = (1..=MAX_WALL_MS)
        .contains(&wall)
        .then(|| Model::new(cfg.clone(), now));
    let mut h = Harness {
        cfg,
        node,
        mono,
        wall,
        users: BTreeMap::new(),
        last_entry_mono: None,
        transitions: 0,
        entries: 0,
        gateway_seq: 0,
        summary: Summary::default(),
        op: 0,
        model,
    };
    while !input.is_empty() && h.op < MAX_OPS {
        h.run_op(&mut input);
        h.op += 1;
    }
    h.summary.ops = h.op as u64;
    h.summary.stats = h.shard().stats();
    h.drain();
    h.summary
}
