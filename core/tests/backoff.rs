//! The back-off deadline extension ([`Shard::set_deadline_extension`]) with fake time: a device
//! that beats at the interval it was last asked for (with jitter, as SPEC.md § P6.13 lets a
//! gateway) never goes offline by timeout, whether the interval is raised or lowered; a silent
//! device still does, once its extended deadline has passed.

use presenced_core::clock::Now;
use presenced_core::config::CoreConfig;
use presenced_core::event::{Cause, Heartbeat, Report, Transition};
use presenced_core::shard::Shard;
use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

const MS: u64 = 1000;
const TICK_MS: u64 = 10;
const INTERVAL_MS: u64 = 1000;
/// `heartbeat_interval + 2 × grace`.
const TIMEOUT_MS: u64 = 1200;

fn config() -> CoreConfig {
    CoreConfig {
        tick_us: TICK_MS * MS,
        heartbeat_interval_us: INTERVAL_MS * MS,
        grace_us: 100 * MS,
        idle_after_us: 3_600_000 * MS,
        last_seen_retention_us: 3_600_000 * MS,
        user_capacity: 64,
        max_devices_per_user: 2,
        multi_device_users: 8,
        hash_seed: 7,
        table_initial_slots: 1,
        table_max_load_permille: presenced_core::table::DEFAULT_MAX_LOAD_PERMILLE,
    }
}

/// The extension that lets a device beat every `asked_ms` (what the node asks for): the
/// difference from the normal interval, in ticks, rounded up.
fn extension_for(asked_ms: u64) -> u64 {
    (asked_ms - INTERVAL_MS).div_ceil(TICK_MS)
}

struct Sim {
    shard: Shard,
    ms: u64,
}

impl Sim {
    fn new() -> Sim {
        Sim {
            shard: Shard::new(
                config(),
                Now {
                    mono_us: 0,
                    wall_ms: 1_700_000_000_000,
                },
            )
            .unwrap(),
            ms: 0,
        }
    }

    fn now(&self) -> Now {
        Now {
            mono_us: self.ms * MS,
            wall_ms: 1_700_000_000_000 + self.ms,
        }
    }

    fn wait_until(&mut self, ms: u64) -> Vec<Transition> {
        self.ms = ms;
        let mut out = Vec::new();
        self.shard.advance(self.now(), &mut out);
        out
    }

    fn beat(&mut self, user: u64) -> Vec<Transition> {
        let hb = Heartbeat {
            user,
            device: 1,
            report: Report::Online,
            active: true,
        };
        let mut out = Vec::new();
        self.shard.heartbeat(self.now(), &hb, &mut out);
        out
    }
}

#[test]
fn a_device_beating_at_the_longer_interval_stays_online_only_with_the_extension() {
    for extend in [false, true] {
        let mut sim = Sim::new();
        if extend {
            sim.shard
                .set_deadline_extension(extension_for(2000))
                .unwrap();
        }
        assert_eq!(sim.beat(1).len(), 1);
        let mut timeouts = 0;
        for k in 1..=10 {
            timeouts += sim.wait_until(2000 * k).len();
            sim.beat(1);
        }
        assert_eq!(
            timeouts == 0,
            extend,
            "extension {extend}: {timeouts} timeouts"
        );
    }
}

#[test]
fn a_timer_set_before_the_extension_is_re_armed_and_a_silent_device_still_expires() {
    let mut sim = Sim::new();
    sim.beat(1);
    // The device's deadline: the first tick past 1200 ms, where its timer already waits.
    sim.shard.set_deadline_extension(50).unwrap();
    assert!(sim.wait_until(TIMEOUT_MS + 100).is_empty());
    assert_eq!(sim.shard.stats().deadlines_extended, 1);
    assert!(sim.wait_until(TIMEOUT_MS + 500 - TICK_MS).is_empty());
    let out = sim.wait_until(TIMEOUT_MS + 500 + TICK_MS);
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].cause, Cause::Timeout);
}

#[test]
fn lowering_waits_one_extended_timeout() {
    let mut sim = Sim::new();
    let ext = extension_for(2000);
    sim.shard.set_deadline_extension(ext).unwrap();
    sim.beat(1);
    // The last beat at the longer interval comes just before the normal interval is asked
    // again; the next comes one longer interval later (the gateway had scheduled it), then the
    // device beats at the normal interval.
    sim.wait_until(1990);
    sim.beat(1);
    sim.wait_until(2000);
    sim.shard.set_deadline_extension(0).unwrap();
    assert_eq!(sim.shard.deadline_extension_ticks(), ext);
    let mut t = 3990;
    assert!(sim.wait_until(t).is_empty(), "lowered too early");
    sim.beat(1);
    while t < 8000 {
        t += INTERVAL_MS;
        assert!(sim.wait_until(t).is_empty());
        sim.beat(1);
    }
    // One extended timeout after it was asked, the extension is gone: silence now ends at the
    // normal timeout.
    assert_eq!(sim.shard.deadline_extension_ticks(), 0);
    assert!(sim.wait_until(t + TIMEOUT_MS - TICK_MS).is_empty());
    assert_eq!(sim.wait_until(t + TIMEOUT_MS + TICK_MS).len(), 1);
}

#[test]
fn raising_again_while_a_lowering_waits_keeps_the_larger() {
    let mut sim = Sim::new();
    sim.shard.set_deadline_extension(200).unwrap();
    sim.shard.set_deadline_extension(100).unwrap();
    sim.shard.set_deadline_extension(150).unwrap();
    assert_eq!(sim.shard.deadline_extension_ticks(), 200);
    sim.shard.set_deadline_extension(300).unwrap();
    assert_eq!(sim.shard.deadline_extension_ticks(), 300);
    sim.wait_until(100_000);
    assert_eq!(sim.shard.deadline_extension_ticks(), 300);
}

#[test]
fn an_extension_past_the_horizon_is_refused() {
    let mut sim = Sim::new();
    let err = sim.shard.set_deadline_extension(1 << 30).unwrap_err();
    assert!(sim.shard.set_deadline_extension(err.max_ticks).is_ok());
    assert!(sim.shard.set_deadline_extension(err.max_ticks + 1).is_err());
}

/// Seeded random runs: the asked interval changes at random times among 1×, 2× and 3× the
/// normal one; each of 16 devices beats at a uniformly random point in [0.5, 1.0] × the
/// interval it last heard (rescheduling sooner when a shorter one is asked, SPEC.md § P6.13).
/// No device ever times out.
#[test]
fn devices_obeying_every_change_never_time_out() {
    const USERS: u64 = 16;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(13);
    let jittered = |interval: u64, rng: &mut Xoshiro256PlusPlus| {
        interval / 2 + rng.next_u64() % (interval / 2 + 1)
    };
    for run in 0..50 {
        let mut sim = Sim::new();
        let mut asked = INTERVAL_MS;
        let mut next_change = 0;
        let mut next_beat: Vec<u64> = (0..USERS).map(|u| u * 7).collect();
        let mut transitions = Vec::new();
        let mut t = 0;
        while t < 120_000 {
            t += TICK_MS;
            transitions.extend(sim.wait_until(t));
            if t >= next_change {
                let new = INTERVAL_MS * (1 + rng.next_u64() % 3);
                sim.shard
                    .set_deadline_extension(extension_for(new))
                    .unwrap();
                if new < asked {
                    for (u, at) in next_beat.iter_mut().enumerate() {
                        *at = (*at).min(t + jittered(new, &mut rng) + u as u64 % 3);
                    }
                }
                asked = new;
                next_change = t + 500 + rng.next_u64() % 6000;
            }
            for u in 0..USERS {
                if next_beat[u as usize] <= t {
                    transitions.extend(sim.beat(u + 1));
                    next_beat[u as usize] = t + jittered(asked, &mut rng);
                }
            }
        }
        let lost: Vec<_> = transitions
            .iter()
            .filter(|tr| tr.cause != Cause::FirstHeartbeat)
            .collect();
        assert!(lost.is_empty(), "run {run}: {lost:?}");
    }
}
