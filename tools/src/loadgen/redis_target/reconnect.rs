//! Reconnecting to a Redis server that went away (`--restart-cmd` restarts it mid-run): every
//! connection of the generator (gateways, observers, the expiry watcher, the control
//! connection) drops a broken connection and opens a new one after a bounded, doubling
//! backoff, so that the run goes on across the restart and reports what the outage cost
//! instead of failing or losing commands silently.

use redis::{Client, Connection, RedisError, RedisResult};
use std::time::Duration;

/// Wait before the first attempt after a connection broke.
pub const BACKOFF_FIRST_MS: u64 = 10;
/// Longest wait between two attempts: a connection comes back at most this long after the
/// server does.
pub const BACKOFF_MAX_MS: u64 = 500;
/// Longest one attempt to connect may block its thread (a server that is down refuses at
/// once; this bounds a stalled one).
pub const CONNECT_TIMEOUT_MS: u64 = 1000;

/// The waits between attempts to reconnect: [`BACKOFF_FIRST_MS`], doubling, at most
/// [`BACKOFF_MAX_MS`].
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    next_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next_ms: BACKOFF_FIRST_MS,
        }
    }
}

impl Backoff {
    /// The wait before the next attempt; the one after it is twice as long, up to the cap.
    pub fn next(&mut self) -> Duration {
        let wait = self.next_ms;
        self.next_ms = (wait * 2).min(BACKOFF_MAX_MS);
        Duration::from_millis(wait)
    }

    /// After a successful connection: the next outage starts from the first wait again.
    pub fn reset(&mut self) {
        *self = Backoff::default();
    }
}

/// Whether `e` means the connection is gone (I/O error, closed by the server, refused):
/// replace it rather than count a failed command.
pub fn broken(e: &RedisError) -> bool {
    e.is_io_error() || e.is_unrecoverable_error()
}

/// One attempt to connect, blocking at most [`CONNECT_TIMEOUT_MS`].
pub fn connect(client: &Client) -> RedisResult<Connection> {
    client.get_connection_with_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_up_to_its_cap_and_resets() {
        let mut b = Backoff::default();
        let waits: Vec<u64> = (0..8).map(|_| b.next().as_millis() as u64).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 500, 500]);
        b.reset();
        assert_eq!(b.next(), Duration::from_millis(BACKOFF_FIRST_MS));
    }
}
