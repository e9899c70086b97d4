//! The daemon's clocks: one monotonic origin for the whole process and the wall clock, read
//! here and passed into the sans-IO node and hub as `Now`.

use presenced_core::clock::Now;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Both clocks, with the process's monotonic origin.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    origin: Instant,
    offset_us: u64,
}

impl Clock {
    /// A clock whose monotonic time starts now at `offset_us`: a daemon starts it past the
    /// longest timer horizon, so that times restored from before the start (a record offline
    /// for weeks) still lie after zero.
    pub fn start_at(offset_us: u64) -> Clock {
        Clock {
            origin: Instant::now(),
            offset_us,
        }
    }

    /// Monotonic µs since the origin, plus the offset.
    pub fn mono_us(&self) -> u64 {
        self.offset_us + self.origin.elapsed().as_micros() as u64
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
