//! A gateway's heartbeat schedule under the daemon's PACE (SPEC.md § P6.13), sans-IO: the
//! interval asked and the current time go in, each device's next beat comes out.
//!
//! A daemon running hot asks for a longer interval so that it receives fewer heartbeats and
//! keeps every device's presence right; a gateway that ignored it would keep the daemon
//! overloaded, and one that stretched every device's next beat at the same moment would make
//! them all beat together. So each gap between two beats of a device is drawn uniformly in
//! [`JITTER_MIN`, 1] × the interval in force. Beats already scheduled keep their time when the
//! interval changes: the daemon's deadlines cover them (it keeps a longer extension for one
//! extended timeout after lowering the interval).

use std::time::{Duration, Instant};

/// The shortest gap between two beats of a device, as a fraction of the interval in force: a
/// gap is uniform in `[JITTER_MIN, 1]` × the interval (SPEC.md § P6.13).
pub const JITTER_MIN: f64 = 0.75;

/// One gateway's heartbeat schedule: the normal interval (WELCOME's) and the one the daemon
/// asks for, bounded by the gateway's own limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pacer {
    normal: Duration,
    max: Duration,
    asked: Option<Duration>,
}

impl Pacer {
    /// A schedule at `normal` (WELCOME's `heartbeat_interval_ms`) that obeys asked intervals
    /// up to `max` (the gateway's bound; at least `normal`).
    pub fn new(normal: Duration, max: Duration) -> Pacer {
        Pacer {
            normal,
            max: max.max(normal),
            asked: None,
        }
    }

    /// Takes the interval the daemon asks for now ([`LinkClient::pace`](crate::LinkClient::pace):
    /// `None` for the normal one); the gaps drawn from now on follow it.
    pub fn set_asked(&mut self, asked: Option<Duration>) {
        self.asked = asked;
    }

    /// The interval in force: the asked one, no shorter than the normal one and no longer
    /// than the gateway's bound.
    pub fn interval(&self) -> Duration {
        self.asked
            .unwrap_or(self.normal)
            .clamp(self.normal, self.max)
    }

    /// Whether the daemon asks for a longer interval than the normal one.
    pub fn is_backed_off(&self) -> bool {
        self.interval() > self.normal
    }

    /// When a device that beats at `now` beats next: `now` + the interval in force × a point
    /// of `[JITTER_MIN, 1]` chosen by `unit` (uniform in `[0, 1]`, the caller's randomness).
    pub fn next_beat(&self, now: Instant, unit: f64) -> Instant {
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            1.0
        };
        now + self
            .interval()
            .mul_f64(JITTER_MIN + (1.0 - JITTER_MIN) * unit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn gaps_lie_in_the_jitter_range_of_the_interval_in_force() {
        let now = Instant::now();
        let mut p = Pacer::new(20 * S, 120 * S);
        assert_eq!(p.next_beat(now, 0.0), now + 15 * S);
        assert_eq!(p.next_beat(now, 1.0), now + 20 * S);
        p.set_asked(Some(40 * S));
        assert!(p.is_backed_off());
        assert_eq!(p.next_beat(now, 0.0), now + 30 * S);
        assert_eq!(p.next_beat(now, f64::NAN), now + 40 * S);
        // Bounded by the gateway's limit; never shorter than the normal interval.
        p.set_asked(Some(600 * S));
        assert_eq!(p.interval(), 120 * S);
        p.set_asked(Some(S));
        assert_eq!(p.interval(), 20 * S);
    }
}
