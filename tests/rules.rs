//! One test per presence rule (ARCHITECTURE.md, "Presence rules"), with simulated time.
//! The seeded simulation (tests/sim.rs) checks the same rules over millions of random steps.

use presenced_core::clock::Now;
use presenced_core::config::CoreConfig;
use presenced_core::event::{Cause, Heartbeat, Presence, PublicState, Report, Transition};
use presenced_core::shard::Shard;

const MS: u64 = 1000;
const WALL0: u64 = 1_700_000_000_000;

/// Tick 10 ms, interval 1 s, grace 100 ms → timeout 1.2 s; idle after 5 s; retention 60 s.
fn config() -> CoreConfig {
    CoreConfig {
        tick_us: 10 * MS,
        heartbeat_interval_us: 1000 * MS,
        grace_us: 100 * MS,
        idle_after_us: 5000 * MS,
        last_seen_retention_us: 60_000 * MS,
        user_capacity: 16,
        max_devices_per_user: 3,
        multi_device_users: 2,
        hash_seed: 7,
        table_initial_slots: 1,
        table_max_load_permille: presenced_core::table::DEFAULT_MAX_LOAD_PERMILLE,
    }
}

struct Sim {
    shard: Shard,
    mono_ms: u64,
    wall_ms: u64,
}

impl Sim {
    fn new(config: CoreConfig) -> Sim {
        let now = Now {
            mono_us: 0,
            wall_ms: WALL0,
        };
        Sim {
            shard: Shard::new(config, now).unwrap(),
            mono_ms: 0,
            wall_ms: WALL0,
        }
    }

    fn now(&self) -> Now {
        Now {
            mono_us: self.mono_ms * MS,
            wall_ms: self.wall_ms,
        }
    }

    /// Moves both clocks forward by `ms` and fires what is due.
    fn wait(&mut self, ms: u64) -> Vec<Transition> {
        self.mono_ms += ms;
        self.wall_ms += ms;
        let mut out = Vec::new();
        self.shard.advance(self.now(), &mut out);
        out
    }

    fn beat(&mut self, user: u64, device: u32, report: Report, active: bool) -> Vec<Transition> {
        let mut out = Vec::new();
        let hb = Heartbeat {
            user,
            device,
            report,
            active,
        };
        self.shard.heartbeat(self.now(), &hb, &mut out);
        out
    }

    fn state(&self, user: u64) -> PublicState {
        self.shard.query(user).state
    }
}

fn states(ts: &[Transition]) -> Vec<(PublicState, Cause)> {
    ts.iter().map(|t| (t.state, t.cause)).collect()
}

#[test]
fn first_heartbeat_puts_user_online_at_once() {
    let mut sim = Sim::new(config());
    let out = sim.beat(1, 10, Report::Online, false);
    assert_eq!(states(&out), [(PublicState::Online, Cause::FirstHeartbeat)]);
    assert_eq!(out[0].prev, PublicState::Offline);
    assert_eq!(out[0].at_ms, WALL0);
    assert_eq!(sim.shard.query(1).last_seen_ms, Some(WALL0));
}

#[test]
fn silence_past_timeout_goes_offline_within_one_tick() {
    let mut sim = Sim::new(config());
    sim.beat(1, 10, Report::Online, true);
    // Exactly the timeout (1.2 s) of silence: still online.
    assert!(sim.wait(1200).is_empty());
    assert_eq!(sim.state(1), PublicState::Online);
    // The first tick boundary after it: offline, with cause Timeout.
    let out = sim.wait(10);
    assert_eq!(states(&out), [(PublicState::Offline, Cause::Timeout)]);
    assert_eq!(sim.shard.query(1).last_seen_ms, Some(WALL0 + 1210));
}

#[test]
fn heartbeats_within_the_deadline_produce_no_transition() {
    let mut sim = Sim::new(config());
    sim.beat(1, 10, Report::Online, true);
    for _ in 0..100 {
        assert!(sim.wait(1190).is_empty());
        assert!(sim.beat(1, 10, Report::Online, true).is_empty());
    }
    assert_eq!(sim.state(1), PublicState::Online);
}

#[test]
fn second_device_is_silent_and_last_device_gone_is_one_transition() {
    let mut sim = Sim::new(config());
    sim.beat(1, 10, Report::Online, true);
    assert!(sim.beat(1, 11, Report::Online, true).is_empty());
    assert_eq!(sim.shard.device_count(1), 2);
    sim.wait(600);
    sim.beat(1, 11, Report::Online, true); // device 11 lives on, device 10 goes silent
    assert!(
        sim.wait(700).is_empty(),
        "device 10 timed out but 11 is live"
    );
    assert_eq!(sim.shard.device_count(1), 1);
    let out = sim.wait(600);
    assert_eq!(states(&out), [(PublicState::Offline, Cause::Timeout)]);
}

#[test]
fn logout_is_immediate_and_only_the_last_device_counts() {
    let mut sim = Sim::new(config());
    sim.beat(1, 10, Report::Online, true);
    sim.beat(1, 11, Report::Online, true);
    assert!(sim.beat(1, 10, Report::Offline, false).is_empty());
    let out = sim.beat(1, 11, Report::Offline, false);
    assert_eq!(states(&out), [(PublicState::Offline, Cause::Logout)]);
    // Logout of what is not there changes nothing and is counted.
    assert!(sim.beat(1, 11, Report::Offline, false).is_empty());
    assert!(sim.beat(2, 11, Report::Offline, false).is_empty());
    assert_eq!(sim.shard.stats().logout_unknown, 2);
}

#[test]
fn idle_from_report_and_from_inactivity() {
    let mut sim = Sim::new(config());
    sim.beat(1, 10, Report::Online, true);
    let out = sim.beat(1, 10, Report::Idle, false);
    assert_eq!(states(&out), [(PublicState::Idle, Cause::StateChange)]);
    let out = sim.beat(1, 10, Report::Online, false);
    assert_eq!(states(&out), [(PublicState::Online, Cause::StateChange)]);
    // Heartbeats without the activity flag: idle once idle_after (5 s) has passed.
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.extend(sim.wait(1000));
        seen.extend(sim.beat(1, 10, Report::Online, false));
    }
    assert_eq!(states(&seen), [(PublicState::Idle, Cause::Inactivity)]);
    // Activity brings the user back.
    let out = sim.beat(1, 10, Report::Online, true);
    assert_eq!(states(&out), [(PublicState::Online, Cause::StateChange)]);
}

#[test]
fn idle_only_when_every_device_is_idle() {
    let mut sim = Sim::new(config());
    sim.beat(1, 10, Report::Idle, false);
    assert_eq!(sim.state(1), PublicState::Idle);
    let out = sim.beat(1, 11, Report::Online, false);
    assert_eq!(states(&out), [(PublicState::Online, Cause::StateChange)]);
    assert!(sim.beat(1, 10, Report::Idle, false).is_empty());
}

#[test]
fn invisible_reads_offline_with_frozen_last_seen_and_leaves_in_one_heartbeat() {
    let mut sim = Sim::new(config());
    sim.beat(1, 10, Report::Online, true);
    sim.wait(500);
    let out = sim.beat(1, 10, Report::Invisible, true);
    assert_eq!(states(&out), [(PublicState::Offline, Cause::StateChange)]);
    let frozen = Some(WALL0 + 500);
    for _ in 0..5 {
        sim.wait(1000);
        assert!(sim.beat(1, 10, Report::Invisible, true).is_empty());
    }
    assert_eq!(sim.shard.query(1).state, PublicState::Offline);
    assert_eq!(sim.shard.query(1).last_seen_ms, frozen);
    assert_eq!(sim.shard.device_count(1), 1, "devices are still tracked");
    let out = sim.beat(1, 10, Report::Online, false);
    assert_eq!(states(&out), [(PublicState::Online, Cause::StateChange)]);
    // Going silent while invisible: no transition, last seen stays frozen.
    sim.beat(1, 10, Report::Invisible, false);
    let frozen = sim.shard.query(1).last_seen_ms;
    assert!(sim.wait(2000).is_empty());
    assert_eq!(sim.shard.device_count(1), 0);
    assert_eq!(sim.shard.query(1).last_seen_ms, frozen);
}

#[test]
fn versions_grow_and_survive_retention_drop() {
    let mut sim = Sim::new(config());
    let mut versions = Vec::new();
    for _ in 0..3 {
        versions.extend(
            sim.beat(1, 10, Report::Online, true)
                .iter()
                .map(|t| t.version),
        );
        versions.extend(
            sim.beat(1, 10, Report::Offline, false)
                .iter()
                .map(|t| t.version),
        );
    }
    assert_eq!(versions.len(), 6);
    // Retention (60 s) passes: the record is dropped and the user is unknown.
    sim.wait(60_010);
    assert_eq!(sim.shard.query(1), Presence::UNKNOWN);
    assert_eq!(sim.shard.stats().records_dropped, 1);
    versions.extend(
        sim.beat(1, 10, Report::Online, true)
            .iter()
            .map(|t| t.version),
    );
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
}

#[test]
fn last_seen_kept_until_retention() {
    let mut sim = Sim::new(config());
    sim.beat(1, 10, Report::Online, true);
    sim.beat(1, 10, Report::Offline, false);
    sim.wait(60_000);
    assert_eq!(sim.shard.query(1).last_seen_ms, Some(WALL0));
    sim.wait(10);
    assert_eq!(sim.shard.query(1).last_seen_ms, None);
}

#[test]
fn wall_clock_step_does_not_move_deadlines() {
    let mut sim = Sim::new(config());
    sim.beat(1, 10, Report::Online, true);
    sim.wall_ms += 3_600_000; // NTP steps the wall clock an hour ahead
    assert!(sim.wait(1000).is_empty());
    sim.wall_ms -= 7_200_000; // and two hours back
    assert!(sim.wait(200).is_empty());
    let out = sim.wait(10);
    assert_eq!(states(&out), [(PublicState::Offline, Cause::Timeout)]);
}

#[test]
fn capacity_and_device_limits_refuse_and_count() {
    let mut sim = Sim::new(config());
    for user in 1..=16 {
        sim.beat(user, 1, Report::Online, true);
    }
    assert!(sim.beat(17, 1, Report::Online, true).is_empty());
    assert_eq!(sim.shard.stats().refused_user_capacity, 1);
    assert_eq!(sim.state(17), PublicState::Offline);
    assert!(!sim.shard.is_known(17));
    // Existing users keep working.
    assert!(sim.beat(16, 1, Report::Online, true).is_empty());
    // Devices per user: 3 at most.
    for dev in 2..=4 {
        sim.beat(1, dev, Report::Online, true);
    }
    assert_eq!(sim.shard.device_count(1), 3);
    assert_eq!(sim.shard.stats().refused_device_limit, 1);
    // Overflow blocks: 2 multi-device users at most (user 1 holds one).
    sim.beat(2, 2, Report::Online, true);
    sim.beat(3, 2, Report::Online, true);
    assert_eq!(sim.shard.device_count(3), 1);
    assert_eq!(sim.shard.stats().refused_overflow_full, 1);
    // User id 0 is refused.
    sim.beat(0, 1, Report::Online, true);
    assert_eq!(sim.shard.stats().refused_user_zero, 1);
}

#[test]
fn monotonic_clock_going_back_is_clamped() {
    let mut sim = Sim::new(config());
    sim.beat(1, 10, Report::Online, true);
    sim.wait(1000);
    sim.mono_ms -= 500;
    assert!(sim.wait(0).is_empty());
    assert_eq!(sim.shard.stats().clock_backwards, 1);
    let out = sim.wait(710);
    assert_eq!(states(&out), [(PublicState::Offline, Cause::Timeout)]);
}

#[test]
fn bad_config_names_the_key() {
    let mut cfg = config();
    cfg.max_devices_per_user = 0;
    let now = Now {
        mono_us: 0,
        wall_ms: 0,
    };
    let err = Shard::new(cfg, now).err().unwrap();
    assert_eq!(err.key, "max_devices_per_user");
    assert!(err.to_string().contains("max_devices_per_user"));
}
