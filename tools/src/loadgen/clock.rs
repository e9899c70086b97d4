//! The run's time base: microseconds since the run started, on the monotonic clock, shared by
//! senders and observers so that a send and the push it causes compare directly.

use std::time::{Duration, Instant};

/// Microseconds since a fixed start.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    start: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn start() -> Clock {
        Clock {
            start: Instant::now(),
        }
    }

    /// Microseconds since the start.
    #[inline]
    pub fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Sleeps until `at_us` (returns at once if it has passed).
    pub fn sleep_until(&self, at_us: u64) {
        let now = self.now_us();
        if at_us > now {
            std::thread::sleep(Duration::from_micros(at_us - now));
        }
    }
}
