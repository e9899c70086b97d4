//! The warm-up: when the transitions the simulation causes start being timed, so that the
//! initial logins (and the push backlog they leave) do not swamp the latency figures.

use super::plan::Plan;
use super::population::Population;
use std::sync::atomic::Ordering;

/// How long the default warm-up waits at most, after one period, for the push path to
/// catch up with the initial logins.
const MAX_WAIT_US: u64 = 5_000_000;

/// Decides when transitions start being timed: after `--warmup`, or by default after one
/// period once the initial logins have been observed (at most 1 % of the watched users, and
/// at least 1000, still in flight), or 5 s later at the latest.
pub struct Warmup {
    from_us: u64,
    until_settled: bool,
    /// Transitions in flight at most for the push path to count as caught up.
    threshold: u64,
    /// When timing started, µs after the start.
    pub started_us: Option<u64>,
    start_us: u64,
}

impl Warmup {
    /// Starts the warm-up of a scenario starting at `start_us` (timing at once if none).
    pub fn new(plan: &Plan, pop: &Population, start_us: u64) -> Warmup {
        let mut w = Warmup {
            from_us: start_us + plan.warmup_us,
            until_settled: plan.warmup_until_settled,
            threshold: (u64::from(plan.watch) / 100).max(1000) * u64::from(plan.observers),
            started_us: None,
            start_us,
        };
        if plan.warmup_us == 0 && !w.until_settled {
            pop.timing.store(true, Ordering::Relaxed);
            w.started_us = Some(0);
        }
        w
    }

    /// Ends the warm-up once its time has come.
    pub fn check(&mut self, pop: &Population, now: u64) {
        if self.started_us.is_some() || now < self.from_us {
            return;
        }
        let caught_up = pop.in_flight() <= self.threshold || now >= self.from_us + MAX_WAIT_US;
        if self.until_settled && !caught_up {
            return;
        }
        pop.timing.store(true, Ordering::Relaxed);
        self.started_us = Some(now.saturating_sub(self.start_us));
    }
}
