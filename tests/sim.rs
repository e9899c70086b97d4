//! Seeded simulation: the daemon's shard node (`presenced_node::node::ShardNode`, around the
//! real `Shard`) and the reference model (`tests/model`) get the same random inputs, call by
//! call, and must give identical outputs. Each heartbeat reaches the node as a datagram, as it
//! does in the daemon; time passes through the node's `handle_timeout`.
//!
//! - `SIM_SEED=<n>` (decimal or 0x-hex) overrides the base seed (each scenario mixes its name in).
//! - `SIM_STEPS=<n>` overrides the number of steps of every scenario.
//!
//! On a divergence the test panics with the scenario, the base seed, the step, the failing call
//! and the last calls before it; rerun with the printed `SIM_SEED` (and `SIM_STEPS` = step + 1 to
//! stop right there) and the scenario's test name.

mod model;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;

use model::{Model, ModelStats};
use presenced_core::clock::Now;
use presenced_core::config::CoreConfig;
use presenced_core::event::{Cause, Heartbeat, Presence, PublicState, Report, Transition};
use presenced_core::shard::Shard;
use presenced_node::auth::Verifier;
use presenced_node::backoff::BackoffConfig;
use presenced_node::bus::{Inbox, Request, ToHub, ToStore};
use presenced_node::node::{NodeConfig, ShardNode, StoreLimits, Transmit};
use presenced_wire::hash::mix64;
use presenced_wire::{encode, Entry, Header, State};
use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256StarStar;

// ---------------------------------------------------------------------------------------------
// PRNG: xoshiro256** seeded through splitmix64 (rand_xoshiro).

struct Rng(Xoshiro256StarStar);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(Xoshiro256StarStar::seed_from_u64(seed))
    }

    fn next(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `0..n` (`n > 0`); the tiny modulo bias does not matter here.
    fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0);
        self.next() % n
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi);
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `per_mille / 1000`.
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
}

fn env_u64(key: &str) -> Option<u64> {
    let v = std::env::var(key).ok()?;
    let v = v.trim();
    let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{key}={v:?} is not a number")))
}

const DEFAULT_SEED: u64 = 0x51b5_eed0_2026_0001;

fn base_seed() -> u64 {
    env_u64("SIM_SEED").unwrap_or(DEFAULT_SEED)
}

fn scenario_seed(base: u64, name: &str) -> u64 {
    name.bytes()
        .fold(mix64(base), |h, b| mix64(h ^ u64::from(b)).wrapping_add(1))
}

// ---------------------------------------------------------------------------------------------
// The two implementations behind one interface.

/// Counters both sides keep.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Counters {
    users: u64,
    devices: u64,
    heartbeats: u64,
    transitions: u64,
    refused_user_capacity: u64,
    refused_device_limit: u64,
    refused_overflow_full: u64,
    refused_user_zero: u64,
    logout_unknown: u64,
    clock_backwards: u64,
    records_dropped: u64,
}

impl Counters {
    fn of_model(s: &ModelStats) -> Counters {
        Counters {
            users: s.users,
            devices: s.devices,
            heartbeats: s.heartbeats,
            transitions: s.transitions,
            refused_user_capacity: s.refused_user_capacity,
            refused_device_limit: s.refused_device_limit,
            refused_overflow_full: s.refused_overflow_full,
            refused_user_zero: s.refused_user_zero,
            logout_unknown: s.logout_unknown,
            clock_backwards: s.clock_backwards,
            records_dropped: s.records_dropped,
        }
    }
}

trait Core {
    fn heartbeat(&mut self, now: Now, hb: &Heartbeat, out: &mut Vec<Transition>);
    /// The hub asks the shard for the deadlines of heartbeats every `interval_ms` (PACE).
    fn pace(&mut self, now: Now, interval_ms: u32);
    fn advance(&mut self, now: Now, out: &mut Vec<Transition>);
    fn query(&self, user: u64) -> Presence;
    fn device_count(&self, user: u64) -> usize;
    fn is_known(&self, user: u64) -> bool;
    fn counters(&self) -> Counters;
    /// Checks of the side's own bookkeeping, run at every full check.
    fn self_check(&self) -> Result<(), String>;
}

impl Core for Model {
    fn heartbeat(&mut self, now: Now, hb: &Heartbeat, out: &mut Vec<Transition>) {
        out.extend(Model::heartbeat(self, now, hb));
    }
    fn pace(&mut self, _now: Now, interval_ms: u32) {
        Model::pace(self, interval_ms);
    }
    fn advance(&mut self, now: Now, out: &mut Vec<Transition>) {
        out.extend(Model::advance(self, now));
    }
    fn query(&self, user: u64) -> Presence {
        Model::query(self, user)
    }
    fn device_count(&self, user: u64) -> usize {
        Model::device_count(self, user)
    }
    fn is_known(&self, user: u64) -> bool {
        Model::is_known(self, user)
    }
    fn counters(&self) -> Counters {
        Counters::of_model(&self.stats)
    }
    fn self_check(&self) -> Result<(), String> {
        Model::self_check(self);
        Ok(())
    }
}

/// The daemon's shard node around the real core, driven as its shard thread drives it: each
/// heartbeat arrives as a one-entry datagram, time passes through `handle_timeout`, and the
/// transitions are what the node queues for the hub.
struct Node {
    node: ShardNode,
    config: NodeConfig,
    sequence: u64,
    /// Datagrams naming user 0 sent (each one entry, refused at decode).
    zero_user: u64,
    /// What the store would hold: the last complete snapshot, the chunks of the pass going
    /// on, the transitions logged since the last pass began, and how many of them are synced.
    snapshot: Vec<u8>,
    pass: Vec<u8>,
    log: Vec<Transition>,
    synced: usize,
    /// The interval the node's back-off last asked the hub for (`ToHub::Pace`), not yet taken.
    asked_ms: Option<u32>,
}

impl Node {
    fn new(core: CoreConfig, backoff: BackoffConfig, now: Now) -> Node {
        let config = NodeConfig {
            index: 0,
            shards: 1,
            hubs: 1,
            core,
            cross_shard_batch: presenced_node::bus::MAX_ENTRY_BATCH,
            link_outbox: usize::MAX,
            store: Some(StoreLimits {
                queue_transitions: usize::MAX / 2,
                snapshot_slots_per_round: 64,
            }),
            warming_until_us: None,
            // The source defence is not the model's: a source is never blocked here.
            sources: presenced_node::auth::sources::SourceLimits {
                failure_burst: u32::MAX,
                ..presenced_node::auth::sources::SourceLimits::default()
            },
            backoff,
        };
        let node =
            ShardNode::new(config.clone(), Verifier::new(None, u64::MAX), now).expect("config");
        Node {
            node,
            config,
            sequence: 0,
            zero_user: 0,
            snapshot: Vec::new(),
            pass: Vec::new(),
            log: Vec::new(),
            synced: 0,
            asked_ms: None,
        }
    }

    /// A receive call that filled its batch while the kernel dropped datagrams (a shard
    /// running hot), then the end of its round.
    fn hot_round(&mut self, now: Now, out: &mut Vec<Transition>) {
        self.node.handle_receive(true, 1);
        self.advance(now, out);
    }

    fn datagram(&mut self, hb: &Heartbeat) -> Vec<u8> {
        self.sequence += 1;
        let entry = Entry {
            // The encoder refuses user 0; the datagram is patched to carry it below.
            user: hb.user.max(1),
            device: hb.device,
            state: match hb.report {
                Report::Online => State::Online,
                Report::Idle => State::Idle,
                Report::Invisible => State::Invisible,
                Report::Offline => State::Offline,
            },
            active: hb.active,
        };
        let header = Header::new(1, 1, self.sequence, 1_700_000_000_000);
        let mut bytes = encode(&header, &[entry]).expect("one valid entry");
        if hb.user == 0 {
            let at = presenced_wire::HEADER_LEN;
            bytes[at..at + 8].fill(0);
        }
        bytes
    }

    fn sent(&mut self, out: &mut Vec<Transition>) {
        while let Some(t) = self.node.poll_transmit() {
            match t {
                Transmit::Hub(_, ToHub::Transitions(batch)) => out.extend(batch.items()),
                Transmit::Store(ToStore::Transitions(batch)) => self.log.extend(batch.items()),
                Transmit::Store(ToStore::SnapshotBegin { .. }) => {
                    self.pass.clear();
                    self.log.clear();
                    self.synced = 0;
                }
                Transmit::Store(ToStore::SnapshotChunk { bytes, .. }) => {
                    self.pass.extend_from_slice(&bytes);
                }
                Transmit::Store(ToStore::SnapshotEnd { .. }) => {
                    self.snapshot = std::mem::take(&mut self.pass);
                }
                Transmit::Hub(_, ToHub::Pace { interval_ms, .. }) => {
                    self.asked_ms = Some(interval_ms);
                }
                // The hub's part in the model is `relay_pace`, which paces at once.
                Transmit::Hub(_, ToHub::Paced { .. }) => {}
                Transmit::Hub(..) | Transmit::Peer { .. } | Transmit::Store(ToStore::Gap(_)) => {
                    panic!(
                        "one shard with unbounded outboxes sends only transitions, state and \
                         its pace"
                    )
                }
            }
        }
    }

    /// A whole snapshot now (as the store asks for one), its transitions before the mark.
    fn snapshot(&mut self, now: Now, out: &mut Vec<Transition>) {
        self.node.handle_inbox(now, Inbox::Snapshot);
        while self.node.snapshot_final(now) {}
        self.sent(out);
    }

    /// A crash and a start at `now` from what was synced: the last snapshot and the log up to
    /// the last sync; what came after is lost.
    fn restart(&mut self, now: Now) {
        let mut node = ShardNode::new(self.config.clone(), Verifier::new(None, u64::MAX), now)
            .expect("config");
        node.restore_saved(now, &self.snapshot)
            .expect("a snapshot restores");
        for t in &self.log[..self.synced] {
            node.restore_logged(now, t);
        }
        self.node = node;
        self.zero_user = 0;
        self.log.clear();
        self.synced = 0;
    }
}

impl Core for Node {
    fn heartbeat(&mut self, now: Now, hb: &Heartbeat, out: &mut Vec<Transition>) {
        let bytes = self.datagram(hb);
        self.node.handle_datagram(now, GATEWAY, &bytes);
        if hb.user == 0 {
            self.zero_user += 1;
            // The node refuses a datagram naming user 0 when it decodes it (SPEC.md § 8); the
            // round that received it still advances time, as the model's refused entry does.
            self.node.handle_timeout(now);
        }
        self.sent(out);
    }
    fn pace(&mut self, now: Now, interval_ms: u32) {
        self.node
            .handle_inbox(now, Inbox::Request(Request::Pace { interval_ms }));
    }
    fn advance(&mut self, now: Now, out: &mut Vec<Transition>) {
        self.node.handle_timeout(now);
        self.sent(out);
    }
    fn query(&self, user: u64) -> Presence {
        self.node.shard().query(user)
    }
    fn device_count(&self, user: u64) -> usize {
        self.node.shard().device_count(user)
    }
    fn is_known(&self, user: u64) -> bool {
        self.node.shard().is_known(user)
    }
    fn counters(&self) -> Counters {
        // Entries for user 0 never reach the core: their datagrams are refused at decode (the
        // node's own count of them is checked at every full check).
        let zero = self.zero_user;
        let s = self.node.shard().stats();
        Counters {
            users: s.users,
            devices: s.devices,
            heartbeats: s.heartbeats + zero,
            transitions: s.transitions,
            refused_user_capacity: s.refused_user_capacity,
            refused_device_limit: s.refused_device_limit,
            refused_overflow_full: s.refused_overflow_full,
            refused_user_zero: s.refused_user_zero + zero,
            logout_unknown: s.logout_unknown,
            clock_backwards: s.clock_backwards,
            records_dropped: s.records_dropped,
        }
    }
    fn self_check(&self) -> Result<(), String> {
        let stats = self.node.stats();
        if stats.dropped["zero_user"] != self.zero_user || stats.dropped_total() != self.zero_user {
            return Err(format!(
                "the node counted {:?} dropped datagrams; {} named user 0",
                stats.dropped, self.zero_user
            ));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WallMode {
    /// Wall = mono + an offset that steps within a window narrower than the retention, so
    /// versions must grow across drops (rule 5's condition holds).
    Bounded,
    /// Wall steps by days either way: only model equality is demanded of versions.
    Wild,
}

#[derive(Clone, Debug)]
struct Scenario {
    name: &'static str,
    cfg: CoreConfig,
    steps: u64,
    /// Number of distinct user ids drawn from.
    pool: usize,
    /// Draw users skewed toward the start of the pool (hot and cold users).
    skew: bool,
    /// Device ids are drawn from `0..devices`.
    devices: u32,
    /// Per mille of heartbeat entries for user 0.
    p_user_zero: u64,
    /// Per mille of heartbeat entries for a random id outside the pool.
    p_stranger: u64,
    /// Per mille of steps that are `advance` calls.
    p_advance: u64,
    /// Relative weights of Online, Idle, Invisible, Offline reports.
    reports: [u64; 4],
    /// Per mille of entries with the activity flag.
    p_active: u64,
    /// Time step per call is uniform in `0..=2 * mean_dt_us`...
    mean_dt_us: u64,
    /// ...except with this per mille, a jump uniform in `jump_us`.
    p_jump: u64,
    jump_us: (u64, u64),
    /// Per mille of calls whose `mono_us` is behind the largest seen, by up to `back_max_us`.
    p_back: u64,
    back_max_us: u64,
    /// Per mille of calls before which the wall clock steps.
    p_wall_step: u64,
    wall: WallMode,
    /// Full query sweep every this many steps.
    check_every: u64,
    /// Every device heartbeats strictly within its deadline; never a Timeout.
    flapping: bool,
    /// Start shortly before a multiple of the wheel's span (2^36 ticks) instead of at a random
    /// origin, so timers set early on cross that boundary.
    near_span_boundary: bool,
    /// Per mille of steps that take a snapshot, sync the log, or crash and restart (rule 8);
    /// a restart is down for a time uniform in `downtime_us`.
    p_snapshot: u64,
    p_sync: u64,
    p_restart: u64,
    downtime_us: (u64, u64),
    /// Back-off under load on (SPEC.md § P6.13), or off.
    pace: Option<PaceLoad>,
}

/// Back-off under load: the node judges its own load (`ingest.backoff`) and the simulation
/// plays the hub, which asks the node (and the model) for the longest interval any shard
/// asks, the node's own and that of other shards drawn at random, so that the interval is
/// raised and lowered, to the normal one and to shorter longer ones.
#[derive(Clone, Copy, Debug)]
struct PaceLoad {
    /// The node's `ingest.backoff_interval` and `ingest.backoff_calm`, ms.
    backoff_interval_ms: u64,
    calm_ms: u64,
    /// Per mille of steps that are a hot receive round of the node.
    p_hot: u64,
    /// Per mille of steps before which the other shards' longest ask changes: to the normal
    /// interval (a third of them) or to one uniform up to `other_max_ms`.
    p_other: u64,
    other_max_ms: u64,
}

const MS: u64 = 1_000;
const SEC: u64 = 1_000_000;
/// The source address of every datagram.
const GATEWAY: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

/// The shipped timings and a fixed hash seed, but small capacities (every scenario sets its own
/// on top of these), and a table that starts at two slots, so that it grows, and moves its
/// entries, while the rules run.
fn base_cfg() -> CoreConfig {
    CoreConfig {
        hash_seed: 0x0123_4567_89ab_cdef,
        user_capacity: 64,
        multi_device_users: 16,
        table_initial_slots: 2,
        ..CoreConfig::default()
    }
}

/// Every scenario, each run by its own test below.
const SCENARIOS: [&str; 15] = [
    "tiny_churn",
    "idle_after_timeout",
    "large_pool",
    "odd_timings_single_device",
    "no_overflow_blocks",
    "multi_device_invisible",
    "wild_wall_clock",
    "default_timings",
    "tick_100us_huge_jumps",
    "degenerate_timings",
    "one_user_many_devices",
    "flapping",
    "wheel_span_boundary",
    "restarts",
    "pace",
];

/// The simulation must cover at least this many steps in total (heartbeat and advance calls,
/// summed over the scenarios) in a default run.
const MIN_TOTAL_STEPS: u64 = 1_000_000;

/// The wheel spans `2^WHEEL_SPAN_BITS` ticks (6 levels of 64 slots).
const WHEEL_SPAN_BITS: u32 = 36;

fn scenario(name: &str) -> Scenario {
    // Common defaults, overridden per scenario below.
    let mut s = Scenario {
        name: "",
        cfg: base_cfg(),
        steps: 300_000,
        pool: 20,
        skew: true,
        devices: 4,
        p_user_zero: 5,
        p_stranger: 5,
        p_advance: 150,
        reports: [700, 120, 60, 120],
        p_active: 500,
        mean_dt_us: 300,
        p_jump: 5,
        jump_us: (0, 0),
        p_back: 20,
        back_max_us: 0,
        p_wall_step: 10,
        wall: WallMode::Bounded,
        check_every: 256,
        flapping: false,
        near_span_boundary: false,
        p_snapshot: 0,
        p_sync: 0,
        p_restart: 0,
        downtime_us: (0, 0),
        pace: None,
    };
    match name {
        // Tiny table, short everything: heavy churn per user, every refusal path.
        "tiny_churn" => {
            s.name = "tiny_churn";
            s.cfg.tick_us = MS;
            s.cfg.heartbeat_interval_us = 20 * MS;
            s.cfg.grace_us = 5 * MS;
            s.cfg.idle_after_us = 12 * MS;
            s.cfg.last_seen_retention_us = 150 * MS;
            s.cfg.user_capacity = 16;
            s.cfg.max_devices_per_user = 3;
            s.cfg.multi_device_users = 3;
            // The fullest table allowed: the longest probes, and near timers' prefixes in them.
            s.cfg.table_max_load_permille = 950;
            s.pool = 20;
            s.devices = 4;
            s.mean_dt_us = 300;
            s.jump_us = (20 * MS, 500 * MS);
            s.back_max_us = 5 * MS;
            s.p_snapshot = 2;
            s.p_sync = 20;
            s.p_restart = 1;
            s.downtime_us = (0, 100 * MS);
        }
        // idle_after longer than the timeout; a mid-size pool.
        "idle_after_timeout" => {
            s.name = "idle_after_timeout";
            s.cfg.tick_us = 10 * MS;
            s.cfg.heartbeat_interval_us = 100 * MS;
            s.cfg.grace_us = 20 * MS;
            s.cfg.idle_after_us = 500 * MS;
            s.cfg.last_seen_retention_us = 3 * SEC;
            s.cfg.user_capacity = 64;
            s.cfg.max_devices_per_user = 4;
            s.cfg.multi_device_users = 6;
            s.pool = 80;
            s.devices = 5;
            s.reports = [800, 100, 30, 70];
            s.p_active = 40;
            s.mean_dt_us = 300;
            s.jump_us = (100 * MS, 10 * SEC);
            s.back_max_us = 30 * MS;
        }
        // A larger pool and table; retention short so records get dropped all the time.
        "large_pool" => {
            s.name = "large_pool";
            s.cfg.tick_us = 5 * MS;
            s.cfg.heartbeat_interval_us = 50 * MS;
            s.cfg.grace_us = 10 * MS;
            s.cfg.idle_after_us = 60 * MS;
            s.cfg.last_seen_retention_us = 400 * MS;
            s.cfg.user_capacity = 1500;
            // The emptiest table allowed: the most growths.
            s.cfg.table_max_load_permille = 500;
            s.cfg.max_devices_per_user = 2;
            s.cfg.multi_device_users = 40;
            s.pool = 2000;
            s.devices = 3;
            s.p_advance = 100;
            s.mean_dt_us = 40;
            s.jump_us = (50 * MS, 2 * SEC);
            s.p_jump = 2;
            s.back_max_us = 20 * MS;
            s.check_every = 4096;
        }
        // Timings that are not multiples of the tick; one device per user; a tiny table.
        "odd_timings_single_device" => {
            s.name = "odd_timings_single_device";
            s.cfg.tick_us = 7 * MS;
            s.cfg.heartbeat_interval_us = 33_333;
            s.cfg.grace_us = 7_777;
            s.cfg.idle_after_us = 12_345;
            s.cfg.last_seen_retention_us = 99_999;
            s.cfg.user_capacity = 12;
            s.cfg.max_devices_per_user = 1;
            s.cfg.multi_device_users = 0;
            s.pool = 16;
            s.devices = 3;
            s.reports = [500, 200, 150, 150];
            s.mean_dt_us = 600;
            s.jump_us = (10 * MS, 400 * MS);
            s.back_max_us = 20 * MS;
        }
        // No overflow block at all: every second device is refused; grace 0; idle = timeout.
        "no_overflow_blocks" => {
            s.name = "no_overflow_blocks";
            s.cfg.tick_us = 2 * MS;
            s.cfg.heartbeat_interval_us = 40 * MS;
            s.cfg.grace_us = 0;
            s.cfg.idle_after_us = 40 * MS;
            s.cfg.last_seen_retention_us = 60 * MS;
            s.cfg.user_capacity = 30;
            s.cfg.max_devices_per_user = 4;
            s.cfg.multi_device_users = 0;
            s.pool = 40;
            s.devices = 3;
            s.mean_dt_us = 500;
            s.jump_us = (40 * MS, 300 * MS);
            s.back_max_us = 10 * MS;
        }
        // Many devices per user, one overflow block, invisibility common.
        "multi_device_invisible" => {
            s.name = "multi_device_invisible";
            s.cfg.tick_us = MS;
            s.cfg.heartbeat_interval_us = 25 * MS;
            s.cfg.grace_us = 3 * MS;
            s.cfg.idle_after_us = 8 * MS;
            s.cfg.last_seen_retention_us = 500 * MS;
            s.cfg.user_capacity = 10;
            s.cfg.max_devices_per_user = 4;
            s.cfg.multi_device_users = 2;
            s.pool = 12;
            s.devices = 6;
            s.reports = [500, 200, 200, 100];
            s.p_active = 300;
            s.mean_dt_us = 250;
            s.jump_us = (5 * MS, 1200 * MS);
            s.back_max_us = 3 * MS;
            s.p_snapshot = 3;
            s.p_sync = 30;
            s.p_restart = 1;
            s.downtime_us = (MS, 60 * MS);
        }
        // The wall clock steps by days either way, independently of mono.
        "wild_wall_clock" => {
            s.name = "wild_wall_clock";
            s.cfg.tick_us = MS;
            s.cfg.heartbeat_interval_us = 15 * MS;
            s.cfg.grace_us = 2 * MS;
            s.cfg.idle_after_us = 30 * MS;
            s.cfg.last_seen_retention_us = 80 * MS;
            s.cfg.user_capacity = 16;
            s.cfg.max_devices_per_user = 3;
            s.cfg.multi_device_users = 3;
            s.pool = 24;
            s.devices = 4;
            s.mean_dt_us = 200;
            s.jump_us = (10 * MS, 300 * MS);
            s.back_max_us = 5 * MS;
            s.p_wall_step = 50;
            s.wall = WallMode::Wild;
        }
        // The shipped timings (tick 10 ms, 30 s interval, 5 min idle, 30 d retention), time
        // running fast, jumps of up to 60 days.
        "default_timings" => {
            s.name = "default_timings";
            s.cfg.user_capacity = 32;
            s.cfg.multi_device_users = 8;
            s.pool = 40;
            s.devices = 4;
            s.p_active = 150;
            s.mean_dt_us = 200 * MS;
            s.p_jump = 3;
            s.jump_us = (30 * SEC, 60 * 24 * 3600 * SEC);
            s.back_max_us = 5 * SEC;
        }
        // The smallest tick and jumps of up to 2^33 ticks (about 10 days at 100 µs): time far
        // beyond any timer horizon must still fire everything that is due.
        "tick_100us_huge_jumps" => {
            s.name = "tick_100us_huge_jumps";
            s.cfg.tick_us = 100;
            s.cfg.heartbeat_interval_us = 3 * MS;
            s.cfg.grace_us = MS;
            s.cfg.idle_after_us = 4 * MS;
            s.cfg.last_seen_retention_us = 50 * MS;
            s.cfg.user_capacity = 24;
            s.cfg.max_devices_per_user = 3;
            s.cfg.multi_device_users = 4;
            s.pool = 30;
            s.devices = 4;
            s.mean_dt_us = 60;
            s.p_jump = 4;
            s.jump_us = (5 * MS, (1 << 33) * 100);
            s.back_max_us = MS;
        }
        // Degenerate timings: grace 0, idle_after 1 µs (active only in the tick of the
        // heartbeat), retention 0 (dropped the tick after going deviceless).
        "degenerate_timings" => {
            s.name = "degenerate_timings";
            s.cfg.tick_us = MS;
            s.cfg.heartbeat_interval_us = 5 * MS;
            s.cfg.grace_us = 0;
            s.cfg.idle_after_us = 1;
            s.cfg.last_seen_retention_us = 0;
            s.cfg.user_capacity = 10;
            s.cfg.max_devices_per_user = 2;
            s.cfg.multi_device_users = 2;
            s.pool = 14;
            s.devices = 3;
            s.mean_dt_us = 200;
            s.jump_us = (MS, 20 * MS);
            s.back_max_us = 2 * MS;
        }
        // One record, up to the largest device limit, device ids up to u32::MAX.
        "one_user_many_devices" => {
            s.name = "one_user_many_devices";
            s.cfg.tick_us = MS;
            s.cfg.heartbeat_interval_us = 60 * MS;
            s.cfg.grace_us = 10 * MS;
            s.cfg.idle_after_us = 20 * MS;
            s.cfg.last_seen_retention_us = 30 * MS;
            s.cfg.user_capacity = 1;
            s.cfg.max_devices_per_user = presenced_core::config::MAX_DEVICES_LIMIT;
            s.cfg.multi_device_users = 1;
            s.pool = 3;
            s.devices = 40;
            s.reports = [750, 100, 50, 100];
            s.mean_dt_us = 100;
            s.jump_us = (20 * MS, 200 * MS);
            s.back_max_us = 2 * MS;
        }
        // Every live device heartbeats strictly within its deadline: no Timeout ever.
        "flapping" => {
            s.name = "flapping";
            s.cfg.tick_us = MS;
            s.cfg.heartbeat_interval_us = 20 * MS;
            s.cfg.grace_us = 5 * MS;
            s.cfg.idle_after_us = 15 * MS;
            s.cfg.last_seen_retention_us = 200 * MS;
            s.cfg.user_capacity = 45;
            s.cfg.max_devices_per_user = 3;
            s.cfg.multi_device_users = 25;
            s.pool = 50;
            s.devices = 4;
            s.reports = [700, 150, 80, 70];
            s.p_user_zero = 0;
            s.p_stranger = 0;
            s.p_back = 0;
            s.flapping = true;
        }
        // Time starts shortly before a multiple of 2^36 ticks: the first timers cross the
        // wheel's span boundary, where a timer's level once came out above the top one (a panic
        // found by the simulation). The wheel's own test covers the wheel alone; this covers the
        // shard around it, against the model.
        "wheel_span_boundary" => {
            s.name = "wheel_span_boundary";
            s.cfg.tick_us = MS;
            s.cfg.heartbeat_interval_us = 20 * MS;
            s.cfg.grace_us = 5 * MS;
            s.cfg.idle_after_us = 12 * MS;
            s.cfg.last_seen_retention_us = 150 * MS;
            s.cfg.user_capacity = 16;
            s.cfg.max_devices_per_user = 3;
            s.cfg.multi_device_users = 3;
            s.steps = 60_000;
            s.pool = 20;
            s.devices = 4;
            s.mean_dt_us = 300;
            s.jump_us = (20 * MS, 500 * MS);
            s.back_max_us = 5 * MS;
            s.check_every = 64;
            s.near_span_boundary = true;
        }
        // Crashes and restarts all the time (rule 8): snapshots taken at random, the log synced
        // at random, a crash losing what came after the last sync, down for up to two
        // timeouts; multi-device users and invisibility to exercise restored devices.
        "restarts" => {
            s.name = "restarts";
            s.cfg.tick_us = MS;
            s.cfg.heartbeat_interval_us = 20 * MS;
            s.cfg.grace_us = 5 * MS;
            s.cfg.idle_after_us = 12 * MS;
            s.cfg.last_seen_retention_us = 400 * MS;
            s.cfg.user_capacity = 32;
            s.cfg.max_devices_per_user = 4;
            s.cfg.multi_device_users = 8;
            s.steps = 200_000;
            s.pool = 40;
            s.devices = 5;
            s.reports = [600, 150, 100, 150];
            s.mean_dt_us = 300;
            s.jump_us = (20 * MS, 600 * MS);
            s.back_max_us = 5 * MS;
            s.p_snapshot = 5;
            s.p_sync = 50;
            s.p_restart = 4;
            s.downtime_us = (0, 60 * MS);
        }
        // Back-off on: the node goes hot at random and calms down, other shards ask for
        // intervals of their own, and every change of the longest reaches the node and the
        // model, which must extend (and stop extending) the same deadlines at the same ticks.
        // Jumps past the normal timeout make the extension decide who times out.
        "pace" => {
            s.name = "pace";
            s.cfg.tick_us = MS;
            s.cfg.heartbeat_interval_us = 20 * MS;
            s.cfg.grace_us = 5 * MS;
            s.cfg.idle_after_us = 200 * MS;
            s.cfg.last_seen_retention_us = 400 * MS;
            s.cfg.user_capacity = 32;
            s.cfg.max_devices_per_user = 4;
            s.cfg.multi_device_users = 8;
            s.steps = 200_000;
            s.pool = 30;
            s.devices = 4;
            s.mean_dt_us = 300;
            s.p_jump = 10;
            s.jump_us = (20 * MS, 300 * MS);
            s.back_max_us = 5 * MS;
            s.pace = Some(PaceLoad {
                backoff_interval_ms: 60,
                calm_ms: 150,
                p_hot: 2,
                p_other: 3,
                other_max_ms: 100,
            });
        }
        _ => panic!("unknown scenario {name}"),
    }
    if let Some(steps) = env_u64("SIM_STEPS") {
        s.steps = steps;
    }
    s.cfg.validate().expect("scenario config");
    s
}

// ---------------------------------------------------------------------------------------------
// The driver.

#[derive(Clone, Debug)]
enum Call {
    Heartbeat(Now, Heartbeat),
    Advance(Now),
    /// A snapshot of the whole shard (the store's request).
    Snapshot(Now),
    /// The log is synced: a crash after this keeps what was logged before it.
    Sync,
    /// A crash, then a start at this time from the synced state (rule 8).
    Restart(Now),
    /// A receive round of the node's that filled its batch while the kernel dropped datagrams;
    /// the model only advances.
    Hot(Now),
    /// The hub asks for this heartbeat interval, ms (0: the normal one).
    Pace(Now, u32),
}

struct Record {
    step: u64,
    call: Call,
    out: Vec<Transition>,
}

/// Checks on the real side's outputs alone.
#[derive(Default)]
struct OutputInvariants {
    /// Per user: (last version, at_ms of it, last public state).
    last: BTreeMap<u64, (u64, u64, PublicState)>,
    /// The largest `at_ms` of any transition before the last restart: until the wall clock
    /// passes it, a version may repeat one a crash lost (rule 5's wall-clock condition).
    restart_wall_ms: u64,
    /// The largest `at_ms` of any transition so far.
    max_at_ms: u64,
    /// Version drops explained by a wall clock that did not advance (see `check`).
    excused_version_drops: u64,
}

impl OutputInvariants {
    fn check(&mut self, scen: &Scenario, now: Now, out: &[Transition]) -> Result<(), String> {
        for t in out {
            if t.user == 0 {
                return Err(format!("transition for user 0: {t:?}"));
            }
            if t.state == t.prev {
                return Err(format!("transition with state == prev: {t:?}"));
            }
            if t.at_ms != now.wall_ms {
                return Err(format!(
                    "at_ms {} != now.wall_ms {}: {t:?}",
                    t.at_ms, now.wall_ms
                ));
            }
            if scen.flapping && t.cause == Cause::Timeout {
                return Err(format!("Timeout in the flapping scenario: {t:?}"));
            }
            let (last_v, last_at, last_state) =
                self.last
                    .get(&t.user)
                    .copied()
                    .unwrap_or((0, 0, PublicState::Offline));
            if t.prev != last_state {
                return Err(format!(
                    "prev {:?} is not the last public state {last_state:?}: {t:?}",
                    t.prev
                ));
            }
            if t.version <= last_v {
                // Within a record max(v + 1, ..) always grows. Across a dropped record, rule 5
                // only promises growth while the wall clock moves forward: with a Wild wall,
                // or when the wall has not advanced since the user's previous transition (e.g.
                // the timeout and the drop both fired in the same call after a mono jump), a
                // new record's `wall_ms << 16` can tie or trail. The model, which the version
                // is also compared with, decides correctness there.
                if scen.wall == WallMode::Wild
                    || t.at_ms <= last_at
                    || t.at_ms <= self.restart_wall_ms
                {
                    self.excused_version_drops += 1;
                } else {
                    return Err(format!(
                        "version {} not above the previous {last_v} (at {last_at} ms): {t:?}",
                        t.version
                    ));
                }
            }
            self.last.insert(t.user, (t.version, t.at_ms, t.state));
            self.max_at_ms = self.max_at_ms.max(t.at_ms);
        }
        Ok(())
    }
}

/// Per-scenario coverage counts, printed at the end so a scenario that stops exercising a path
/// is noticed.
#[derive(Default, Debug)]
struct Coverage {
    heartbeats: u64,
    advances: u64,
    snapshots: u64,
    restarts: u64,
    /// Longer and shorter intervals asked of the shard.
    paces_raised: u64,
    paces_lowered: u64,
    causes: [u64; 5],
    states: [u64; 3],
    full_checks: u64,
}

struct Sim<'a> {
    scen: &'a Scenario,
    base_seed: u64,
    real: Node,
    model: Model,
    /// The model as it was at the last snapshot, and when.
    model_saved: Option<(Model, Now)>,
    /// The transitions the model emitted since the last snapshot, and how many are synced.
    model_log: Vec<Transition>,
    model_synced: usize,
    recent: VecDeque<Record>,
    inv: OutputInvariants,
    cov: Coverage,
    step: u64,
    real_out: Vec<Transition>,
    model_out: Vec<Transition>,
    /// The hub's view of back-off: the node's ask, the other shards' longest, and the
    /// interval last asked of the shard (ms; 0: normal).
    node_asks_ms: u32,
    others_ask_ms: u32,
    paced_ms: u32,
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

fn state_index(s: PublicState) -> usize {
    match s {
        PublicState::Offline => 0,
        PublicState::Online => 1,
        PublicState::Idle => 2,
    }
}

impl<'a> Sim<'a> {
    fn new(scen: &'a Scenario, base_seed: u64, real: Node, start: Now) -> Sim<'a> {
        Sim {
            scen,
            base_seed,
            real,
            model: Model::new(scen.cfg.clone(), start),
            model_saved: None,
            model_log: Vec::new(),
            model_synced: 0,
            recent: VecDeque::new(),
            inv: OutputInvariants::default(),
            cov: Coverage::default(),
            step: 0,
            real_out: Vec::new(),
            model_out: Vec::new(),
            node_asks_ms: 0,
            others_ask_ms: 0,
            paced_ms: 0,
        }
    }

    /// The hub's part in back-off: takes the node's new ask, if any, and asks the shard for
    /// the longest of all shards' asks when it changed.
    fn relay_pace(&mut self, now: Now) {
        if let Some(ms) = self.real.asked_ms.take() {
            self.node_asks_ms = ms;
        }
        let normal_ms = self.scen.cfg.heartbeat_interval_us / MS;
        let longest = self.node_asks_ms.max(self.others_ask_ms);
        let ms = if u64::from(longest) > normal_ms {
            longest
        } else {
            0
        };
        if ms != self.paced_ms {
            if ms > self.paced_ms {
                self.cov.paces_raised += 1;
            } else {
                self.cov.paces_lowered += 1;
            }
            self.paced_ms = ms;
            self.call(Call::Pace(now, ms));
        }
    }

    fn fail(&self, what: &str) -> ! {
        let mut m = String::new();
        let _ = writeln!(
            m,
            "\n=== SIM DIVERGENCE in scenario `{}` at step {} ===",
            self.scen.name, self.step
        );
        let _ = writeln!(m, "{what}");
        let _ = writeln!(
            m,
            "reproduce: SIM_SEED={:#x} SIM_STEPS={} cargo test --test sim {} -- --exact",
            self.base_seed,
            self.step + 1,
            self.scen.name
        );
        let _ = writeln!(m, "config: {:?}", self.scen.cfg);
        let _ = writeln!(
            m,
            "model: tick {} max_mono {} multi_in_use {}",
            self.model.tick, self.model.max_mono, self.model.multi_in_use
        );
        let _ = writeln!(m, "last {} calls (oldest first):", self.recent.len());
        for r in &self.recent {
            let _ = writeln!(m, "  #{} {:?}", r.step, r.call);
            for t in &r.out {
                let _ = writeln!(m, "      -> {t:?}");
            }
        }
        panic!("{m}");
    }

    fn remember(&mut self, call: Call) {
        if self.recent.len() == 48 {
            self.recent.pop_front();
        }
        self.recent.push_back(Record {
            step: self.step,
            call,
            out: self.real_out.clone(),
        });
    }

    /// Runs one call on both sides and compares everything it touched.
    fn call(&mut self, call: Call) {
        self.real_out.clear();
        self.model_out.clear();
        let real_result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &call {
            Call::Heartbeat(now, hb) => self.real.heartbeat(*now, hb, &mut self.real_out),
            Call::Advance(now) => self.real.advance(*now, &mut self.real_out),
            Call::Snapshot(now) => self.real.snapshot(*now, &mut self.real_out),
            Call::Sync => self.real.synced = self.real.log.len(),
            Call::Restart(now) => {
                self.real.restart(*now);
                self.real.advance(*now, &mut self.real_out);
            }
            Call::Hot(now) => self.real.hot_round(*now, &mut self.real_out),
            Call::Pace(now, ms) => Core::pace(&mut self.real, *now, *ms),
        }));
        let now = match &call {
            Call::Heartbeat(now, hb) => {
                self.cov.heartbeats += 1;
                Core::heartbeat(&mut self.model, *now, hb, &mut self.model_out);
                *now
            }
            Call::Advance(now) | Call::Hot(now) => {
                self.cov.advances += 1;
                Core::advance(&mut self.model, *now, &mut self.model_out);
                *now
            }
            Call::Pace(now, ms) => {
                Core::pace(&mut self.model, *now, *ms);
                *now
            }
            Call::Snapshot(now) => {
                self.cov.snapshots += 1;
                Core::advance(&mut self.model, *now, &mut self.model_out);
                *now
            }
            Call::Sync => {
                self.model_synced = self.model_log.len();
                // No call time: nothing is emitted.
                Now {
                    mono_us: self.model.max_mono,
                    wall_ms: 0,
                }
            }
            Call::Restart(now) => {
                self.cov.restarts += 1;
                let (saved, saved_at) = self.model_saved.as_ref().expect("a snapshot first");
                let log = &self.model_log[..self.model_synced];
                self.model = Model::restored(saved, *saved_at, log, *now);
                Core::advance(&mut self.model, *now, &mut self.model_out);
                *now
            }
        };
        self.model_log.extend_from_slice(&self.model_out);
        if let Call::Snapshot(now) | Call::Restart(now) = &call {
            if matches!(call, Call::Restart(_)) {
                // A restart changes no one's presence.
                if !self.real_out.is_empty() || !self.model_out.is_empty() {
                    self.fail("a restart emitted transitions");
                }
            }
            self.model_saved = Some((self.model.clone(), *now));
            if matches!(call, Call::Restart(_)) {
                // The daemon saves the restored state at once: the old log is then done with.
                self.real.snapshot(*now, &mut self.real_out);
            }
            self.model_log.clear();
            self.model_synced = 0;
        }
        if let Err(payload) = real_result {
            let msg = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("(non-string panic)")
                .to_string();
            self.remember(call);
            let mut m = format!("the real shard panicked: {msg}\n  model output of this call:\n");
            for t in &self.model_out {
                let _ = writeln!(m, "    {t:?}");
            }
            self.fail(&m);
        }
        let touched = match &call {
            Call::Heartbeat(_, hb) => Some(hb.user),
            Call::Advance(_)
            | Call::Snapshot(_)
            | Call::Sync
            | Call::Restart(_)
            | Call::Hot(_)
            | Call::Pace(..) => None,
        };
        let restarted = matches!(call, Call::Restart(_));
        self.remember(call);
        if restarted {
            // Every user the model restored reads the same on both sides.
            let users: Vec<u64> = self.model.users.keys().copied().collect();
            for u in users {
                self.compare_user(u);
            }
            // A crash loses the transitions after the last sync: each user continues from
            // the state restored, while versions must still grow past every one emitted
            // (rule 5, with its wall-clock condition).
            for (user, last) in self.inv.last.iter_mut() {
                last.2 = self.model.query(*user).state;
            }
            self.inv.restart_wall_ms = self.inv.max_at_ms;
        }

        // Same transitions, per user in the same order.
        let mut real_sorted = self.real_out.clone();
        let mut model_sorted = self.model_out.clone();
        real_sorted.sort_by_key(|t| t.user);
        model_sorted.sort_by_key(|t| t.user);
        if real_sorted != model_sorted {
            let mut m = String::from("transitions differ\n  real (sorted by user):\n");
            for t in &real_sorted {
                let _ = writeln!(m, "    {t:?}");
            }
            m.push_str("  model (sorted by user):\n");
            for t in &model_sorted {
                let _ = writeln!(m, "    {t:?}");
            }
            let users: BTreeSet<u64> = real_sorted
                .iter()
                .chain(&model_sorted)
                .map(|t| t.user)
                .collect();
            for u in users {
                let _ = writeln!(m, "  model user {u}: {:?}", self.model.users.get(&u));
            }
            self.fail(&m);
        }
        if let Err(e) = self.inv.check(self.scen, now, &self.real_out) {
            self.fail(&format!("invariant on the real outputs: {e}"));
        }
        for t in &self.real_out {
            self.cov.causes[cause_index(t.cause)] += 1;
            self.cov.states[state_index(t.state)] += 1;
        }

        // Counters.
        let (rc, mc) = (self.real.counters(), Core::counters(&self.model));
        if rc != mc {
            self.fail(&format!(
                "counters differ\n  real:  {rc:?}\n  model: {mc:?}"
            ));
        }

        // The users this call touched.
        if let Some(u) = touched.filter(|&u| u != 0) {
            self.compare_user(u);
        }
        for i in 0..self.real_out.len() {
            let u = self.real_out[i].user;
            self.compare_user(u);
        }
    }

    fn compare_user(&self, user: u64) {
        let (rq, mq) = (self.real.query(user), self.model.query(user));
        let (rd, md) = (self.real.device_count(user), self.model.device_count(user));
        let (rk, mk) = (self.real.is_known(user), self.model.is_known(user));
        if rq != mq || rd != md || rk != mk {
            self.fail(&format!(
                "user {user} differs\n  real:  {rq:?} devices {rd} known {rk}\n  model: {mq:?} devices {md} known {mk}\n  model record: {:?}",
                self.model.users.get(&user)
            ));
        }
    }

    fn full_check(&mut self, pool: &[u64], rng: &mut Rng) {
        self.cov.full_checks += 1;
        self.model.self_check();
        if let Err(e) = self.real.self_check() {
            self.fail(&e);
        }
        let model_users: Vec<u64> = self.model.users.keys().copied().collect();
        for u in model_users {
            self.compare_user(u);
        }
        for &u in pool {
            self.compare_user(u);
        }
        // User 0 is queried by the dedicated `user_zero_reads_unknown` test instead.
        for _ in 0..4 {
            let u = rng.next();
            self.compare_user(u);
        }
    }
}

/// The wall clock: true time plus an offset that NTP-like steps move.
struct Wall {
    offset_ms: i64,
    base_ms: i64,
    window_ms: i64,
}

impl Wall {
    fn new(true_us: u64, scen: &Scenario) -> Wall {
        let base_ms = 1_700_000_000_000i64 - (true_us / 1000) as i64;
        // Narrower than the retention, so a record dropped after retention is always followed
        // by a later wall clock (rule 5's condition).
        let window_ms = (scen.cfg.last_seen_retention_us / 1000) as i64 * 45 / 100;
        Wall {
            offset_ms: base_ms,
            base_ms,
            window_ms,
        }
    }

    fn step(&mut self, rng: &mut Rng, mode: WallMode) {
        match mode {
            WallMode::Bounded => {
                let w = self.window_ms.max(0) as u64;
                self.offset_ms = self.base_ms - w as i64 + rng.range(0, 2 * w) as i64;
            }
            WallMode::Wild => {
                const DAY_MS: i64 = 24 * 3600 * 1000;
                let delta = rng.range(0, 20 * DAY_MS as u64) as i64 - 10 * DAY_MS;
                let lo = self.base_ms - 400 * DAY_MS;
                let hi = self.base_ms + 400 * DAY_MS;
                self.offset_ms = (self.offset_ms + delta).clamp(lo, hi);
            }
        }
    }

    fn at(&self, true_us: u64) -> u64 {
        ((true_us / 1000) as i64 + self.offset_ms) as u64
    }
}

fn pick_report(rng: &mut Rng, w: &[u64; 4]) -> Report {
    let total: u64 = w.iter().sum();
    let mut r = rng.below(total);
    for (i, &wi) in w.iter().enumerate() {
        if r < wi {
            return [
                Report::Online,
                Report::Idle,
                Report::Invisible,
                Report::Offline,
            ][i];
        }
        r -= wi;
    }
    unreachable!()
}

/// Device index `i` of `n`: small ids, and the last one of four or more is `u32::MAX`.
fn device_id(i: u32, n: u32) -> u32 {
    if n >= 4 && i == n - 1 {
        u32::MAX
    } else {
        i
    }
}

fn make_pool(rng: &mut Rng, n: usize) -> Vec<u64> {
    let mut ids = BTreeSet::new();
    // Small ids, huge ids, and the extremes.
    ids.insert(1);
    if n > 2 {
        ids.insert(u64::MAX);
    }
    while ids.len() < n {
        let id = if rng.chance(500) {
            rng.range(1, 4 * n as u64)
        } else {
            rng.next() | 1
        };
        ids.insert(id);
    }
    let mut v: Vec<u64> = ids.into_iter().collect();
    // Shuffle so the skewed draw does not favour small ids.
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
    v
}

fn run_scenario(name: &str) {
    let scen = scenario(name);
    let base = base_seed();
    let seed = scenario_seed(base, scen.name);
    let mut rng = Rng::new(seed);
    let started = std::time::Instant::now();

    // An arbitrary origin, up to 2^42 µs (about 50 days), so tick numbers are large.
    let mut true_us: u64 = rng.below(1 << 42);
    if scen.near_span_boundary {
        // Up to four timeouts before the 1st, 2nd or 3rd multiple of the wheel's span.
        let boundary_us = (rng.range(1, 3) << WHEEL_SPAN_BITS) * scen.cfg.tick_us;
        true_us = boundary_us - rng.range(1, 4 * scen.cfg.timeout_us());
    }
    let mut wall = Wall::new(true_us, &scen);
    let start = Now {
        mono_us: true_us,
        wall_ms: wall.at(true_us),
    };
    let backoff = match scen.pace {
        Some(p) => BackoffConfig {
            enabled: true,
            normal_ms: scen.cfg.heartbeat_interval_us / MS,
            interval_ms: p.backoff_interval_ms,
            calm_ms: p.calm_ms,
        },
        None => BackoffConfig::disabled(),
    };
    let real = Node::new(scen.cfg.clone(), backoff, start);
    let mut sim = Sim::new(&scen, base, real, start);
    let pool = make_pool(&mut rng, scen.pool);
    let timeout = scen.cfg.timeout_us();

    if scen.p_restart > 0 {
        sim.call(Call::Snapshot(start));
    }
    if scen.flapping {
        run_flapping(&mut sim, &mut rng, &pool, true_us, &mut wall);
    } else {
        for step in 0..scen.steps {
            sim.step = step;
            if scen.p_restart > 0 {
                if rng.chance(scen.p_sync) {
                    sim.call(Call::Sync);
                }
                if rng.chance(scen.p_restart) {
                    true_us += rng.range(scen.downtime_us.0, scen.downtime_us.1);
                    let now = Now {
                        mono_us: true_us,
                        wall_ms: wall.at(true_us),
                    };
                    sim.call(Call::Restart(now));
                    continue;
                }
            }
            if rng.chance(scen.p_jump) {
                true_us += rng.range(scen.jump_us.0, scen.jump_us.1);
            } else if rng.chance(300) {
                // Same instant as the previous call (entries of one datagram).
            } else {
                true_us += rng.range(0, 2 * scen.mean_dt_us);
            }
            if rng.chance(scen.p_wall_step) {
                wall.step(&mut rng, scen.wall);
            }
            let mono_us = if scen.p_back > 0 && rng.chance(scen.p_back) {
                let back = if rng.chance(500) {
                    rng.range(1, scen.cfg.tick_us)
                } else {
                    rng.range(1, scen.back_max_us.max(1))
                };
                true_us.saturating_sub(back)
            } else {
                true_us
            };
            let now = Now {
                mono_us,
                wall_ms: wall.at(true_us),
            };
            if scen.p_restart > 0 && rng.chance(scen.p_snapshot) {
                sim.call(Call::Snapshot(now));
            }
            if let Some(p) = scen.pace {
                if rng.chance(p.p_other) {
                    sim.others_ask_ms = if rng.chance(333) {
                        0
                    } else {
                        rng.range(1, p.other_max_ms) as u32
                    };
                    sim.relay_pace(now);
                }
            }
            if scen.pace.is_some_and(|p| rng.chance(p.p_hot)) {
                sim.call(Call::Hot(now));
            } else if rng.chance(scen.p_advance) {
                sim.call(Call::Advance(now));
            } else {
                let user = if rng.chance(scen.p_user_zero) {
                    0
                } else if rng.chance(scen.p_stranger) {
                    rng.next()
                } else {
                    let n = pool.len() as u64;
                    let i = if scen.skew {
                        rng.below(n).min(rng.below(n))
                    } else {
                        rng.below(n)
                    };
                    pool[i as usize]
                };
                let hb = Heartbeat {
                    user,
                    device: device_id(rng.below(scen.devices as u64) as u32, scen.devices),
                    report: pick_report(&mut rng, &scen.reports),
                    active: rng.chance(scen.p_active),
                };
                sim.call(Call::Heartbeat(now, hb));
            }
            if scen.pace.is_some() {
                sim.relay_pace(now);
            }
            if (step + 1) % scen.check_every == 0 {
                sim.full_check(&pool, &mut rng);
            }
        }
        // A final jump past every deadline and every retention: everything must drain.
        sim.step = scen.steps;
        true_us += timeout + scen.cfg.idle_after_us + scen.cfg.last_seen_retention_us;
        true_us += 4 * scen.cfg.tick_us;
        let now = Now {
            mono_us: true_us,
            wall_ms: wall.at(true_us),
        };
        sim.call(Call::Advance(now));
        sim.full_check(&pool, &mut rng);
        if sim.model.stats.users != 0 && scen.steps > 0 {
            sim.fail("records left after a jump past every retention");
        }
    }
    sim.full_check(&pool, &mut rng);
    if scen.pace.is_some()
        && scen.steps >= 10_000
        && (sim.cov.paces_raised < 10 || sim.cov.paces_lowered < 10)
    {
        sim.fail("the interval asked was hardly raised or lowered: back-off went unexercised");
    }

    let c = Core::counters(&sim.model);
    eprintln!(
        "scenario {}: seed {:#x}, {} steps ({} heartbeats + {} advances; {} snapshots, {} \
         restarts, {} longer and {} shorter intervals asked) in {:.2?}; causes \
         [first, change, logout, timeout, inactivity] {:?}; states [off, on, idle] {:?}; \
         {:?}; excused version ties {}; full checks {}",
        scen.name,
        base,
        sim.cov.heartbeats + sim.cov.advances,
        sim.cov.heartbeats,
        sim.cov.advances,
        sim.cov.snapshots,
        sim.cov.restarts,
        sim.cov.paces_raised,
        sim.cov.paces_lowered,
        started.elapsed(),
        sim.cov.causes,
        sim.cov.states,
        c,
        sim.inv.excused_version_drops,
        sim.cov.full_checks,
    );
}

/// The flapping workload: a fixed fleet of (user, device); each live device's next heartbeat
/// comes strictly less than `timeout` after its previous one, so no deadline can pass.
fn run_flapping(sim: &mut Sim<'_>, rng: &mut Rng, pool: &[u64], start_us: u64, wall: &mut Wall) {
    let scen = sim.scen;
    let timeout = scen.cfg.timeout_us();
    // (next heartbeat time, index in the fleet)
    let mut queue: BTreeSet<(u64, usize)> = BTreeSet::new();
    let mut fleet: Vec<(u64, u32)> = Vec::new();
    for &u in pool {
        for d in 0..scen.devices {
            let i = fleet.len();
            fleet.push((u, device_id(d, scen.devices)));
            queue.insert((start_us + rng.range(0, 3 * timeout), i));
        }
    }
    let mut true_us = start_us;
    for step in 0..scen.steps {
        sim.step = step;
        let &(next_us, i) = queue.first().unwrap();
        if rng.chance(scen.p_wall_step) {
            wall.step(rng, scen.wall);
        }
        if rng.chance(scen.p_advance) {
            // Somewhere before the next heartbeat is due: no live device has expired.
            if next_us > true_us {
                true_us = rng.range(true_us, next_us - 1);
            }
            let now = Now {
                mono_us: true_us,
                wall_ms: wall.at(true_us),
            };
            sim.call(Call::Advance(now));
        } else {
            queue.pop_first();
            true_us = next_us;
            let (user, device) = fleet[i];
            let report = pick_report(rng, &scen.reports);
            let hb = Heartbeat {
                user,
                device,
                report,
                active: rng.chance(scen.p_active),
            };
            let now = Now {
                mono_us: true_us,
                wall_ms: wall.at(true_us),
            };
            sim.call(Call::Heartbeat(now, hb));
            // A live device comes back strictly within its deadline; a logged-out one
            // (or a refused one, which is not live either) whenever.
            let gap = if report == Report::Offline {
                rng.range(1, 3 * timeout)
            } else {
                rng.range(1, timeout - 1)
            };
            queue.insert((true_us + gap, i));
        }
        if (step + 1) % scen.check_every == 0 {
            sim.full_check(pool, rng);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The real node against the model, one test per scenario (they run in parallel).

fn real(name: &str) {
    run_scenario(name);
}

#[test]
fn tiny_churn() {
    real("tiny_churn");
}

#[test]
fn idle_after_timeout() {
    real("idle_after_timeout");
}

#[test]
fn large_pool() {
    real("large_pool");
}

#[test]
fn odd_timings_single_device() {
    real("odd_timings_single_device");
}

#[test]
fn no_overflow_blocks() {
    real("no_overflow_blocks");
}

#[test]
fn multi_device_invisible() {
    real("multi_device_invisible");
}

#[test]
fn wild_wall_clock() {
    real("wild_wall_clock");
}

#[test]
fn default_timings() {
    real("default_timings");
}

#[test]
fn tick_100us_huge_jumps() {
    real("tick_100us_huge_jumps");
}

#[test]
fn degenerate_timings() {
    real("degenerate_timings");
}

#[test]
fn one_user_many_devices() {
    real("one_user_many_devices");
}

#[test]
fn flapping() {
    real("flapping");
}

#[test]
fn wheel_span_boundary() {
    real("wheel_span_boundary");
}

#[test]
fn restarts() {
    real("restarts");
}

#[test]
fn pace() {
    real("pace");
}

/// The scenarios above add up to at least `MIN_TOTAL_STEPS` steps (unless `SIM_STEPS`
/// overrides them), and each one has a test of its own name.
#[test]
fn scenarios_total_at_least_a_million_steps() {
    let total: u64 = SCENARIOS.iter().map(|name| scenario(name).steps).sum();
    eprintln!("{} scenarios, {total} steps in total", SCENARIOS.len());
    if std::env::var_os("SIM_STEPS").is_none() {
        assert!(
            total >= MIN_TOTAL_STEPS,
            "the scenarios run {total} steps in total; at least {MIN_TOTAL_STEPS} are required"
        );
    }
    let source = include_str!("sim.rs");
    for name in SCENARIOS {
        assert!(
            source.contains(&format!("fn {name}() {{\n    real(\"{name}\");")),
            "scenario {name} has no test"
        );
    }
}

/// Rules 6 and 7: user 0 is never stored, so it reads as unknown (and the calls do not panic).
#[test]
fn user_zero_reads_unknown() {
    let cfg = base_cfg();
    let now = Now {
        mono_us: 5 * SEC,
        wall_ms: 1_700_000_000_000,
    };
    let mut shard = Shard::new(cfg, now).expect("Shard::new");
    let mut out = Vec::new();
    let hb = Heartbeat {
        user: 0,
        device: 1,
        report: Report::Online,
        active: true,
    };
    shard.heartbeat(now, &hb, &mut out);
    assert!(out.is_empty());
    assert_eq!(shard.stats().refused_user_zero, 1);
    assert!(!shard.is_known(0));
    assert_eq!(shard.device_count(0), 0);
    assert_eq!(shard.query(0), Presence::UNKNOWN);
}

// ---------------------------------------------------------------------------------------------
// The model on its own: hand-made checks of the rules.

mod model_alone {
    use super::*;

    fn cfg() -> CoreConfig {
        CoreConfig {
            tick_us: 10 * MS,
            heartbeat_interval_us: 100 * MS,
            grace_us: 50 * MS, // timeout 200 ms
            idle_after_us: 500 * MS,
            last_seen_retention_us: 10 * SEC,
            user_capacity: 4,
            max_devices_per_user: 3,
            multi_device_users: 1,
            ..base_cfg()
        }
    }

    const T0: u64 = 1_000 * SEC;
    const W0: u64 = 1_700_000_000_000;

    fn at(ms: u64) -> Now {
        Now {
            mono_us: T0 + ms * MS,
            wall_ms: W0 + ms,
        }
    }

    fn hb(user: u64, device: u32, report: Report, active: bool) -> Heartbeat {
        Heartbeat {
            user,
            device,
            report,
            active,
        }
    }

    fn tr(
        user: u64,
        prev: PublicState,
        state: PublicState,
        ms: u64,
        cause: Cause,
    ) -> (u64, PublicState, PublicState, u64, Cause) {
        (user, prev, state, W0 + ms, cause)
    }

    fn strip(v: &[Transition]) -> Vec<(u64, PublicState, PublicState, u64, Cause)> {
        v.iter()
            .map(|t| (t.user, t.prev, t.state, t.at_ms, t.cause))
            .collect()
    }

    use PublicState::{Idle, Offline, Online};

    #[test]
    fn first_heartbeat_second_device_timeout_logout() {
        let mut m = Model::new(cfg(), at(0));
        // First heartbeat: Online at once.
        let out = m.heartbeat(at(5), &hb(7, 1, Report::Online, true));
        assert_eq!(
            strip(&out),
            vec![tr(7, Offline, Online, 5, Cause::FirstHeartbeat)]
        );
        assert_eq!(out[0].version, (W0 + 5) << 16);
        assert_eq!(m.query(7).last_seen_ms, Some(W0 + 5));
        // A second device of an online user: nothing.
        assert!(m
            .heartbeat(at(20), &hb(7, 2, Report::Online, false))
            .is_empty());
        assert_eq!(m.device_count(7), 2);
        // Device 1 keeps heartbeating, device 2 goes silent. Device 2's deadline:
        // due(T0 + 20 ms, 200 ms) = (T0 + 220 ms) / 10 ms + 1 = tick(T0) + 23.
        assert!(m
            .heartbeat(at(150), &hb(7, 1, Report::Online, false))
            .is_empty());
        assert!(m.advance(at(229)).is_empty());
        assert_eq!(m.device_count(7), 2);
        assert!(m.advance(at(230)).is_empty());
        assert_eq!(m.device_count(7), 1);
        // Device 1's deadline: due(T0 + 150 ms, 200 ms) = tick(T0) + 36; one Timeout.
        assert!(m.advance(at(359)).is_empty());
        let out = m.advance(at(400));
        assert_eq!(
            strip(&out),
            vec![tr(7, Online, Offline, 400, Cause::Timeout)]
        );
        assert_eq!(m.query(7).state, Offline);
        assert_eq!(m.query(7).last_seen_ms, Some(W0 + 400));
        assert!(m.is_known(7));
        assert_eq!(m.device_count(7), 0);
        // Back; then logout is immediate.
        let out = m.heartbeat(at(410), &hb(7, 3, Report::Online, false));
        assert_eq!(
            strip(&out),
            vec![tr(7, Offline, Online, 410, Cause::FirstHeartbeat)]
        );
        let out = m.heartbeat(at(411), &hb(7, 3, Report::Offline, false));
        assert_eq!(
            strip(&out),
            vec![tr(7, Online, Offline, 411, Cause::Logout)]
        );
        // Logout of an unknown device / user: counted only.
        assert!(m
            .heartbeat(at(412), &hb(7, 3, Report::Offline, false))
            .is_empty());
        assert!(m
            .heartbeat(at(412), &hb(8, 3, Report::Offline, false))
            .is_empty());
        assert_eq!(m.stats.logout_unknown, 2);
        // Retention: deviceless since tick(T0) + 41; dropped at tick(T0) + 41 + 1000 + 1.
        assert!(m.advance(at(10_419)).is_empty());
        assert!(m.is_known(7));
        assert!(m.advance(at(10_420)).is_empty());
        assert!(!m.is_known(7));
        assert_eq!(m.query(7), Presence::UNKNOWN);
        assert_eq!(m.stats.records_dropped, 1);
        m.self_check();
    }

    #[test]
    fn idle_inferred_and_invisible() {
        let mut m = Model::new(cfg(), at(0));
        m.heartbeat(at(0), &hb(1, 1, Report::Online, true));
        // Keep it alive without activity: idle at due(T0, 500 ms) = tick(T0) + 51.
        for t in (100..=500).step_by(100) {
            assert!(m
                .heartbeat(at(t), &hb(1, 1, Report::Online, false))
                .is_empty());
        }
        assert!(m.advance(at(509)).is_empty());
        let out = m.advance(at(510));
        assert_eq!(
            strip(&out),
            vec![tr(1, Online, Idle, 510, Cause::Inactivity)]
        );
        // Inferred idle does not move last seen.
        assert_eq!(m.query(1).last_seen_ms, Some(W0));
        // Activity: online again, last seen moves.
        let out = m.heartbeat(at(520), &hb(1, 1, Report::Online, true));
        assert_eq!(
            strip(&out),
            vec![tr(1, Idle, Online, 520, Cause::StateChange)]
        );
        // A second device goes invisible: the user reads offline, last seen frozen.
        let out = m.heartbeat(at(530), &hb(1, 2, Report::Invisible, true));
        assert_eq!(
            strip(&out),
            vec![tr(1, Online, Offline, 530, Cause::StateChange)]
        );
        assert_eq!(m.query(1).last_seen_ms, Some(W0 + 530));
        assert!(m
            .heartbeat(at(540), &hb(1, 1, Report::Online, true))
            .is_empty());
        assert_eq!(m.query(1).last_seen_ms, Some(W0 + 530));
        // Leaving invisible is one heartbeat.
        let out = m.heartbeat(at(550), &hb(1, 2, Report::Online, false));
        assert_eq!(
            strip(&out),
            vec![tr(1, Offline, Online, 550, Cause::StateChange)]
        );
        // A record created invisible: nothing emitted, last seen None.
        assert!(m
            .heartbeat(at(560), &hb(2, 1, Report::Invisible, true))
            .is_empty());
        assert_eq!(
            m.query(2),
            Presence {
                state: Offline,
                last_seen_ms: None,
                version: 0
            }
        );
        assert!(m.is_known(2));
        m.self_check();
    }

    #[test]
    fn refusals() {
        let mut m = Model::new(cfg(), at(0));
        // User 0.
        assert!(m
            .heartbeat(at(0), &hb(0, 1, Report::Online, true))
            .is_empty());
        assert_eq!(m.stats.refused_user_zero, 1);
        assert!(!m.is_known(0));
        // Table of 4.
        for u in 1..=4 {
            assert_eq!(m.heartbeat(at(1), &hb(u, 1, Report::Online, true)).len(), 1);
        }
        assert!(m
            .heartbeat(at(1), &hb(5, 1, Report::Online, true))
            .is_empty());
        assert_eq!(m.stats.refused_user_capacity, 1);
        // One overflow block.
        assert!(m
            .heartbeat(at(2), &hb(1, 2, Report::Online, true))
            .is_empty());
        assert!(m
            .heartbeat(at(2), &hb(2, 2, Report::Online, true))
            .is_empty());
        assert_eq!(m.stats.refused_overflow_full, 1);
        assert_eq!(m.device_count(2), 1);
        // Three devices at most.
        m.heartbeat(at(3), &hb(1, 3, Report::Online, true));
        m.heartbeat(at(3), &hb(1, 4, Report::Online, true));
        assert_eq!(m.stats.refused_device_limit, 1);
        // User 1 logs out down to one device: the block is free for user 2.
        m.heartbeat(at(4), &hb(1, 3, Report::Offline, false));
        m.heartbeat(at(4), &hb(1, 2, Report::Offline, false));
        m.heartbeat(at(5), &hb(2, 2, Report::Online, true));
        assert_eq!(m.device_count(2), 2);
        // A known device whose deadline has passed comes back as a new device: first
        // heartbeat again once the user had none left.
        let out = m.heartbeat(at(1000), &hb(3, 1, Report::Online, false));
        assert_eq!(
            strip(&out)
                .into_iter()
                .filter(|t| t.0 == 3)
                .collect::<Vec<_>>(),
            vec![
                tr(3, Online, Offline, 1000, Cause::Timeout),
                tr(3, Offline, Online, 1000, Cause::FirstHeartbeat),
            ]
        );
        // Clock backwards: clamped and counted.
        m.advance(at(900));
        assert_eq!(m.stats.clock_backwards, 1);
        m.self_check();
    }
}
