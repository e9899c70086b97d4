//! The progress line: once a second on stderr, what was sent, what the daemon applied, the
//! transitions seen and their latency over the last second.

use super::clock::Clock;
use super::counters::SendCounters;
use super::daemon_stats::Reading;
use super::lock;
use super::observer::{self, Hists};
use super::population::Population;
use super::report::{Percentiles, Progress};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Prints the progress line once a second.
pub struct ProgressMeter {
    clock: Clock,
    start_us: u64,
    quiet: bool,
    next_us: u64,
    last_entries: u64,
    last_events: u64,
    last_us: u64,
}

impl ProgressMeter {
    /// A meter for a scenario starting at `start_us`; `quiet` prints nothing.
    pub fn new(clock: Clock, start_us: u64, quiet: bool) -> ProgressMeter {
        ProgressMeter {
            clock,
            start_us,
            quiet,
            next_us: start_us + 1_000_000,
            last_entries: 0,
            last_events: 0,
            last_us: start_us,
        }
    }

    /// Sleeps a little; prints when a second has passed.
    pub fn tick(
        &mut self,
        counters: &SendCounters,
        readings: &Reading,
        hists: &[Arc<Mutex<Hists>>],
        shared: &observer::Shared,
        pop: &Population,
    ) {
        self.tick_for(
            Duration::from_millis(20),
            counters,
            readings,
            hists,
            shared,
            pop,
        );
    }

    /// Sleeps `pause`; prints when a second has passed.
    pub fn tick_for(
        &mut self,
        pause: Duration,
        counters: &SendCounters,
        readings: &Reading,
        hists: &[Arc<Mutex<Hists>>],
        shared: &observer::Shared,
        pop: &Population,
    ) {
        std::thread::sleep(pause);
        let now = self.clock.now_us();
        if now < self.next_us {
            return;
        }
        self.next_us += 1_000_000;
        let seconds = (now - self.last_us) as f64 / 1e6;
        self.last_us = now;
        let entries = SendCounters::get(&counters.entries);
        let events = shared.events.load(Ordering::Relaxed);
        let mut recent = observer::histogram();
        for h in hists {
            let mut h = lock(h);
            let _ = recent.add(&h.recent);
            h.recent.reset();
        }
        let accepted_per_s = {
            let r = lock(readings);
            match r.as_slice() {
                [(t0, a), (t1, b)] if t1 > t0 => Some(
                    b.heartbeats().saturating_sub(a.heartbeats()) as f64 / ((t1 - t0) as f64 / 1e6),
                ),
                _ => None,
            }
        };
        let p = Progress {
            elapsed_s: now.saturating_sub(self.start_us) as f64 / 1e6,
            sent_per_s: (entries - self.last_entries) as f64 / seconds,
            accepted_per_s,
            late: SendCounters::get(&counters.late),
            events_per_s: (events - self.last_events) as f64 / seconds,
            recent: Percentiles::of(&recent),
            in_flight: pop.in_flight(),
            spurious: shared.spurious_now.load(Ordering::Relaxed),
        };
        self.last_entries = entries;
        self.last_events = events;
        if !self.quiet {
            eprintln!("{}", p.line());
        }
    }
}
