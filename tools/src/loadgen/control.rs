//! How the main thread steers the sender threads through a run: run the scenario, stop, log
//! everyone out, done.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

/// A phase of the run, as the senders see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Run the scenario until its end time.
    Run = 0,
    /// Stop sending now (end time reached early, or interrupted).
    Stop = 1,
    /// Log every simulated user out, and retry for those not yet seen offline.
    Drain = 2,
    /// Finish.
    Done = 3,
}

/// Shared by the main thread and the senders.
#[derive(Default)]
pub struct Control {
    phase: AtomicU8,
    stopped: AtomicU32,
    drained: AtomicU32,
    interrupts: AtomicU32,
    /// The heartbeat interval the daemon asks for (PACE, SPEC.md § P6.13), µs; 0: the normal
    /// one. The senders stretch every device's next gap by it.
    pace_us: AtomicU64,
    /// The longest interval the daemon has asked for in this run, µs; 0: never more than the
    /// normal one.
    pace_max_us: AtomicU64,
}

impl Control {
    /// The current phase.
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Run,
            1 => Phase::Stop,
            2 => Phase::Drain,
            _ => Phase::Done,
        }
    }

    /// Moves to `phase` (never back).
    pub fn set(&self, phase: Phase) {
        self.phase.fetch_max(phase as u8, Ordering::AcqRel);
    }

    /// The daemon asks for `interval` between a device's heartbeats (`None`: the normal one).
    pub fn set_pace(&self, interval: Option<Duration>) {
        let us = interval.map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        self.pace_us.store(us, Ordering::Release);
        self.pace_max_us.fetch_max(us, Ordering::AcqRel);
    }

    /// The longest interval the daemon has asked for in this run, µs; 0: none asked.
    pub fn pace_max_us(&self) -> u64 {
        self.pace_max_us.load(Ordering::Acquire)
    }

    /// The interval the daemon asks for now, µs; 0: the normal one.
    pub fn pace_us(&self) -> u64 {
        self.pace_us.load(Ordering::Acquire)
    }

    /// A sender has finished the scenario.
    pub fn sender_stopped(&self) {
        self.stopped.fetch_add(1, Ordering::AcqRel);
    }

    /// A sender has finished its logout sweep.
    pub fn sender_drained(&self) {
        self.drained.fetch_add(1, Ordering::AcqRel);
    }

    /// Senders that have finished the scenario.
    pub fn stopped(&self) -> u32 {
        self.stopped.load(Ordering::Acquire)
    }

    /// Senders that have finished their logout sweep.
    pub fn drained(&self) -> u32 {
        self.drained.load(Ordering::Acquire)
    }

    /// Ctrl-C: the first stops the scenario (the run still drains, settles and reports), the
    /// second skips the drain and the wait, the third exits at once.
    pub fn interrupt(&self) {
        match self.interrupts.fetch_add(1, Ordering::AcqRel) {
            0 => self.set(Phase::Stop),
            1 => self.set(Phase::Done),
            _ => std::process::exit(130),
        }
    }

    /// Whether the run was interrupted.
    pub fn interrupted(&self) -> bool {
        self.interrupts.load(Ordering::Acquire) > 0
    }

    /// Waits (polling) until the phase is at least `phase`.
    pub fn wait_for(&self, phase: Phase) {
        while self.phase() < phase {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}
