//! SPEC.md § 5.3's table of transitions, checked against the core: every row is produced by a
//! scripted scenario, every scenario's transition is a row, and a long seeded random run
//! produces no (prev, state, cause) outside the table. § 5.4's clocks are checked too.

use presenced_core::clock::Now;
use presenced_core::config::CoreConfig;
use presenced_core::event::{Cause, Heartbeat, PublicState, Report, Transition};
use presenced_core::shard::Shard;
use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use std::collections::BTreeSet;

const MS: u64 = 1000;
const WALL0: u64 = 1_700_000_000_000;
const USER: u64 = 42;

/// Tick 10 ms, interval 1 s, grace 100 ms → timeout 1.2 s; idle after 5 s.
fn config() -> CoreConfig {
    CoreConfig {
        tick_us: 10 * MS,
        heartbeat_interval_us: 1000 * MS,
        grace_us: 100 * MS,
        idle_after_us: 5000 * MS,
        last_seen_retention_us: 60_000 * MS,
        user_capacity: 16,
        max_devices_per_user: 3,
        multi_device_users: 8,
        hash_seed: 7,
        table_initial_slots: 1,
        table_max_load_permille: presenced_core::table::DEFAULT_MAX_LOAD_PERMILLE,
    }
}

/// A (prev, state, cause) triple: one row of the table.
type Row = (PublicState, PublicState, Cause);

fn state_named(name: &str) -> PublicState {
    match name {
        "offline" => PublicState::Offline,
        "online" => PublicState::Online,
        "idle" => PublicState::Idle,
        _ => panic!("SPEC.md § 5.3: unknown state {name:?}"),
    }
}

fn cause_named(name: &str) -> Cause {
    match name {
        "first_heartbeat" => Cause::FirstHeartbeat,
        "state_change" => Cause::StateChange,
        "logout" => Cause::Logout,
        "timeout" => Cause::Timeout,
        "inactivity" => Cause::Inactivity,
        _ => panic!("SPEC.md § 5.3: unknown cause {name:?}"),
    }
}

/// The rows of SPEC.md § 5.3's table, between its markers; each (from, to, cause) once.
fn spec_rows() -> BTreeSet<Row> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../wire-format/SPEC.md");
    let spec = std::fs::read_to_string(path).expect("SPEC.md");
    let begin = spec
        .find("<!-- transitions:begin -->")
        .expect("begin marker");
    let end = spec.find("<!-- transitions:end -->").expect("end marker");
    let mut rows = BTreeSet::new();
    // The header row and the separator row come first.
    for line in spec[begin..end].lines().skip(3) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        assert!(cells.len() >= 5, "SPEC.md § 5.3: a table row, got {line:?}");
        let row = (
            state_named(cells[1]),
            state_named(cells[2]),
            cause_named(cells[3].trim_matches('`')),
        );
        assert!(rows.insert(row), "SPEC.md § 5.3: {row:?} listed twice");
    }
    rows
}

/// One shard and its two clocks, moved together.
struct Sim {
    shard: Shard,
    mono_ms: u64,
    wall_ms: u64,
}

impl Sim {
    fn new() -> Sim {
        Sim {
            shard: Shard::new(
                config(),
                Now {
                    mono_us: 0,
                    wall_ms: WALL0,
                },
            )
            .unwrap(),
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

    /// Both clocks forward by `ms`, then what is due fires.
    fn wait(&mut self, ms: u64) -> Vec<Transition> {
        self.mono_ms += ms;
        self.wall_ms += ms;
        let mut out = Vec::new();
        self.shard.advance(self.now(), &mut out);
        out
    }

    fn beat_user(
        &mut self,
        user: u64,
        device: u32,
        report: Report,
        active: bool,
    ) -> Vec<Transition> {
        let hb = Heartbeat {
            user,
            device,
            report,
            active,
        };
        let mut out = Vec::new();
        self.shard.heartbeat(self.now(), &hb, &mut out);
        out
    }

    fn beat(&mut self, device: u32, report: Report, active: bool) -> Vec<Transition> {
        self.beat_user(USER, device, report, active)
    }
}

use Report::{Idle, Invisible, Offline, Online};

/// A scenario: steps on a fresh shard; its last step emits exactly the transition named.
struct Scenario {
    what: &'static str,
    expect: Row,
    steps: fn(&mut Sim) -> Vec<Transition>,
}

fn scenarios() -> Vec<Scenario> {
    use Cause::*;
    use PublicState::{Idle as I, Offline as O, Online as N};
    vec![
        Scenario {
            what: "a first heartbeat reports online",
            expect: (O, N, FirstHeartbeat),
            steps: |s| s.beat(1, Online, false),
        },
        Scenario {
            what: "a first heartbeat reports idle",
            expect: (O, I, FirstHeartbeat),
            steps: |s| s.beat(1, Idle, false),
        },
        Scenario {
            what: "an invisible-only user's device reports online",
            expect: (O, N, StateChange),
            steps: |s| {
                assert!(s.beat(1, Invisible, true).is_empty());
                s.beat(1, Online, false)
            },
        },
        Scenario {
            what: "an invisible-only user's device reports idle",
            expect: (O, I, StateChange),
            steps: |s| {
                assert!(s.beat(1, Invisible, false).is_empty());
                s.beat(1, Idle, false)
            },
        },
        Scenario {
            what: "the invisible device of an active user logs out",
            expect: (O, N, Logout),
            steps: |s| {
                s.beat(1, Online, false);
                s.beat(2, Invisible, false);
                s.beat(2, Offline, false)
            },
        },
        Scenario {
            what: "the invisible device of an idle user logs out",
            expect: (O, I, Logout),
            steps: |s| {
                s.beat(1, Idle, false);
                s.beat(2, Invisible, false);
                s.beat(2, Offline, false)
            },
        },
        Scenario {
            what: "the invisible device of an active user times out",
            expect: (O, N, Timeout),
            steps: |s| {
                s.beat(2, Invisible, false);
                s.wait(600);
                s.beat(1, Online, false);
                s.wait(700)
            },
        },
        Scenario {
            what: "the invisible device of an idle user times out",
            expect: (O, I, Timeout),
            steps: |s| {
                s.beat(2, Invisible, false);
                s.wait(600);
                s.beat(1, Idle, false);
                s.wait(700)
            },
        },
        Scenario {
            what: "the only device reports idle",
            expect: (N, I, StateChange),
            steps: |s| {
                s.beat(1, Online, false);
                s.beat(1, Idle, false)
            },
        },
        Scenario {
            what: "a device reports invisible",
            expect: (N, O, StateChange),
            steps: |s| {
                s.beat(1, Online, false);
                s.beat(1, Invisible, false)
            },
        },
        Scenario {
            what: "a new device reports invisible",
            expect: (N, O, StateChange),
            steps: |s| {
                s.beat(1, Online, false);
                s.beat(2, Invisible, false)
            },
        },
        Scenario {
            what: "the last active device logs out, an idle one stays",
            expect: (N, I, Logout),
            steps: |s| {
                s.beat(1, Idle, false);
                s.beat(2, Online, false);
                s.beat(2, Offline, false)
            },
        },
        Scenario {
            what: "the last device of an online user logs out",
            expect: (N, O, Logout),
            steps: |s| {
                s.beat(1, Online, false);
                s.beat(1, Offline, false)
            },
        },
        Scenario {
            what: "the last active device times out, an idle one stays",
            expect: (N, I, Timeout),
            steps: |s| {
                s.beat(2, Online, false);
                s.wait(600);
                assert!(s.beat(1, Idle, false).is_empty());
                s.wait(700)
            },
        },
        Scenario {
            what: "the last device of an online user times out",
            expect: (N, O, Timeout),
            steps: |s| {
                s.beat(1, Online, false);
                s.wait(1300)
            },
        },
        Scenario {
            what: "a device heartbeating without ACTIVITY is inferred idle",
            expect: (N, I, Inactivity),
            steps: inferred_idle,
        },
        Scenario {
            what: "an idle device reports online",
            expect: (I, N, StateChange),
            steps: |s| {
                s.beat(1, Idle, false);
                s.beat(1, Online, false)
            },
        },
        Scenario {
            what: "a new device of an idle user reports online",
            expect: (I, N, StateChange),
            steps: |s| {
                s.beat(1, Idle, false);
                s.beat(2, Online, false)
            },
        },
        Scenario {
            what: "ACTIVITY returns on an inferred-idle device",
            expect: (I, N, StateChange),
            steps: |s| {
                inferred_idle(s);
                s.beat(1, Online, true)
            },
        },
        Scenario {
            what: "an idle device reports invisible",
            expect: (I, O, StateChange),
            steps: |s| {
                s.beat(1, Idle, false);
                s.beat(1, Invisible, false)
            },
        },
        Scenario {
            what: "the last device of an idle user logs out",
            expect: (I, O, Logout),
            steps: |s| {
                s.beat(1, Idle, false);
                s.beat(1, Offline, false)
            },
        },
        Scenario {
            what: "the last device of an idle user times out",
            expect: (I, O, Timeout),
            steps: |s| {
                s.beat(1, Idle, false);
                s.wait(1300)
            },
        },
    ]
}

/// Online, then a heartbeat without ACTIVITY every second until the activity window (5 s)
/// ends: the window's end is found at the next tick's processing.
fn inferred_idle(s: &mut Sim) -> Vec<Transition> {
    s.beat(1, Online, false);
    for _ in 0..5 {
        assert!(s.wait(1000).is_empty());
        assert!(s.beat(1, Online, false).is_empty());
    }
    s.wait(100)
}

fn row_of(t: &Transition) -> Row {
    (t.prev, t.state, t.cause)
}

#[test]
fn every_row_of_the_table_is_a_scenario_and_every_scenario_a_row() {
    let rows = spec_rows();
    let mut produced = BTreeSet::new();
    for scenario in scenarios() {
        let mut sim = Sim::new();
        let last = (scenario.steps)(&mut sim);
        let got: Vec<Row> = last.iter().map(row_of).collect();
        assert_eq!(got, vec![scenario.expect], "{}", scenario.what);
        assert!(
            rows.contains(&scenario.expect),
            "{}: {:?} is not in SPEC.md § 5.3",
            scenario.what,
            scenario.expect
        );
        produced.insert(scenario.expect);
    }
    let missing: Vec<&Row> = rows.difference(&produced).collect();
    assert!(missing.is_empty(), "rows without a scenario: {missing:?}");
}

#[test]
fn a_random_run_stays_in_the_table_and_reaches_every_row() {
    let rows = spec_rows();
    let mut seen = BTreeSet::new();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(14);
    let mut sim = Sim::new();
    for step in 0..200_000 {
        let r = rng.next_u64();
        let out = if r % 16 == 0 {
            // Up to 2 s: deadlines (1.2 s) pass.
            sim.wait((r >> 8) % 2000)
        } else {
            // Two users of two devices, each beating about every 0.5 s, mostly online without
            // ACTIVITY, so activity windows (5 s) end too.
            let user = 1 + (r >> 8) % 2;
            let device = ((r >> 16) % 2) as u32;
            let report = match (r >> 24) % 20 {
                0..=13 => Online,
                14..=15 => Idle,
                16 => Offline,
                _ => Invisible,
            };
            let active = (r >> 32) % 8 == 0;
            let out = sim.beat_user(user, device, report, active);
            sim.wait((r >> 40) % 100);
            out
        };
        for t in &out {
            assert!(
                rows.contains(&row_of(t)),
                "step {step}: {t:?} is not in SPEC.md § 5.3"
            );
            seen.insert(row_of(t));
        }
    }
    let missing: Vec<&Row> = rows.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "the random run never produced {missing:?}"
    );
}

#[test]
fn the_clocks_of_section_5_4() {
    let mut s = Sim::new();
    // Last seen: a transition to online sets it to the receive time.
    s.beat(1, Online, false);
    assert_eq!(s.shard.query(USER).last_seen_ms, Some(WALL0));
    // A state change without ACTIVITY does not move it: not to idle (a transition) ...
    s.wait(100);
    assert_eq!(s.beat(1, Idle, false).len(), 1);
    assert_eq!(s.shard.query(USER).last_seen_ms, Some(WALL0));
    // ... nor a second device's, which leaves the user as they were.
    s.wait(100);
    assert!(s.beat(2, Idle, false).is_empty());
    assert!(s.beat(2, Online, false).len() == 1, "idle -> online");
    assert!(s.beat(2, Idle, false).len() == 1, "online -> idle");
    assert_eq!(
        s.shard.query(USER).last_seen_ms,
        Some(WALL0 + 200),
        "the transition to online set it"
    );
    s.wait(100);
    assert!(s.beat(1, Online, false).len() == 1, "idle -> online");
    assert!(s.beat(2, Online, false).is_empty());
    assert_eq!(s.shard.query(USER).last_seen_ms, Some(WALL0 + 300));
    // Going invisible sets it once (the transition to offline), then it stays frozen.
    s.wait(100);
    assert_eq!(s.beat(2, Invisible, true).len(), 1);
    s.wait(100);
    assert!(s.beat(1, Online, true).is_empty());
    assert_eq!(s.shard.query(USER).last_seen_ms, Some(WALL0 + 400));
    // ACTIVITY moves it without a transition.
    assert_eq!(s.beat(2, Idle, false).len(), 1, "offline -> online");
    s.wait(100);
    assert!(s.beat(2, Idle, true).is_empty());
    assert_eq!(s.shard.query(USER).last_seen_ms, Some(WALL0 + 600));
    // A transition to idle moves it only when its heartbeat carries ACTIVITY.
    s.wait(100);
    assert_eq!(s.beat(2, Invisible, false).len(), 1, "online -> offline");
    assert_eq!(s.beat(2, Offline, false).len(), 1, "offline -> online");
    s.wait(100);
    assert_eq!(s.beat(1, Idle, true).len(), 1, "online -> idle");
    assert_eq!(s.shard.query(USER).last_seen_ms, Some(WALL0 + 800));
    // A timeout's at_ms is the time the daemon processed the tick, not the deadline.
    let mut s = Sim::new();
    s.beat(1, Online, false);
    let out = s.wait(3000);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].cause, Cause::Timeout);
    assert_eq!(out[0].at_ms, WALL0 + 3000, "the deadline was at +1.2 s");
    assert_eq!(out[0].version, (WALL0 + 3000) << 16);
}
