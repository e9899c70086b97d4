//! The daemon's clocks: one monotonic origin for the whole process and the wall clock, read
//! here and passed into the sans-IO node and hub as `Now`.

use presenced_core::clock::Now;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Both clocks, with the process's monotonic origin.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: Instant,
}

impl Clock {
    /// A clock whose monotonic time starts now.
    pub fn start() -> Clock {
        Clock {
            origin: Instant::now(),
        }
    }

    /// Monotonic µs since the origin.
    pub fn mono_us(&self) -> u64 {
        self.origin.elapsed().as_micros() as u64
    }

    /// Both clocks now.
    pub fn now(&self) -> Now {
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Now {
            mono_us: self.mono_us(),
            wall_ms,
        }
    }
}
