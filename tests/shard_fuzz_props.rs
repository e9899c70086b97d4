//! The `shard` fuzz target's property (`fuzz/fuzz_targets/shard.rs`) as a short property test,
//! so that CI, which cannot run libFuzzer, checks it too: arbitrary bytes drive the daemon's
//! shard node around a small `Shard` through datagrams, time passing, jumps and clock steps,
//! and every invariant of
//! `shard_harness` (among them: the reference model of `tests/model` agrees on every output)
//! holds after every operation.

mod shard_harness;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use shard_harness::{run, Summary};

/// Cases (`PROPTEST_CASES` overrides it): the file runs in a few seconds.
const CASES: u32 = 3000;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES)
}

#[test]
fn arbitrary_operations_keep_every_invariant() {
    let mut runner = TestRunner::new(Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    });
    let total = std::cell::RefCell::new(Summary::default());
    // Short inputs (a few operations) and long ones (hundreds).
    let strategy = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec(any::<u8>(), 0..4096),
    ];
    runner
        .run(&strategy, |bytes| {
            let s = run(&bytes);
            let mut t = total.borrow_mut();
            t.ops += s.ops;
            t.datagrams += s.datagrams;
            t.refused_datagrams += s.refused_datagrams;
            for (a, b) in t.causes.iter_mut().zip(s.causes) {
                *a += b;
            }
            t.stats.records_dropped += s.stats.records_dropped;
            t.stats.refused_user_capacity += s.stats.refused_user_capacity;
            t.stats.refused_device_limit += s.stats.refused_device_limit;
            t.stats.refused_overflow_full += s.stats.refused_overflow_full;
            t.stats.clock_backwards += s.stats.clock_backwards;
            t.stats.logout_unknown += s.stats.logout_unknown;
            t.excused_version_drops += s.excused_version_drops;
            Ok(())
        })
        .unwrap();
    // Every path the invariants guard was exercised.
    let t = total.into_inner();
    assert!(t.datagrams > 10 * u64::from(cases()), "{t:?}");
    assert!(t.refused_datagrams > 0, "{t:?}");
    assert!(t.causes.iter().all(|&n| n > 100), "{t:?}");
    let s = &t.stats;
    for (what, n) in [
        ("records_dropped", s.records_dropped),
        ("refused_user_capacity", s.refused_user_capacity),
        ("refused_device_limit", s.refused_device_limit),
        ("refused_overflow_full", s.refused_overflow_full),
        ("clock_backwards", s.clock_backwards),
        ("logout_unknown", s.logout_unknown),
        // A record dropped and made anew after the wall clock stepped back.
        ("excused_version_drops", t.excused_version_drops),
    ] {
        assert!(n > 0, "{what} never happened: {t:?}");
    }
}
