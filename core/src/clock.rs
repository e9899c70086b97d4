//! Time as the core sees it: passed in, never read.

/// The two clocks at one instant. Deadlines run on `mono_us`; stamps use `wall_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Now {
    /// Monotonic time in microseconds since an arbitrary origin (never steps).
    pub mono_us: u64,
    /// Wall-clock time, Unix milliseconds (may step, e.g. NTP).
    pub wall_ms: u64,
}

/// A tick number: `mono_us / tick_us`.
pub type Tick = u64;
