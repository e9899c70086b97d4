//! systemd's notify protocol (`Type=notify`, `WatchdogSec=`): `READY=1` once the daemon
//! serves, `STATUS=` lines an operator sees in `systemctl status`, `WATCHDOG=1` while every
//! thread makes progress, `STOPPING=1` when it goes away. Outside systemd (no
//! `NOTIFY_SOCKET`) every call does nothing.
//!
//! Whether to send `WATCHDOG=1` is [`Liveness`]'s decision, a state machine fed the threads'
//! progress counters: a thread that sleeps because it has nothing to do is woken once (a
//! "poke") and must have moved by the next check, so an idle daemon keeps its watchdog fed and
//! a stuck thread stops it within two checks.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// One thread's progress counter: every turn of its loop bumps it (a relaxed add on a cache
/// line of its own, so threads never share one); the watchdog and the health check read it.
#[repr(align(128))]
#[derive(Debug, Default)]
pub struct Beat(AtomicU64);

impl Beat {
    /// One more turn of the loop.
    #[inline]
    pub fn bump(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Turns so far.
    pub fn read(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

const _: () = assert!(std::mem::size_of::<Beat>() == 128);

/// The manager's notify socket, when started by one.
pub struct Notifier {
    socket: UnixDatagram,
    addr: UnixAddr,
}

impl Notifier {
    /// The socket `NOTIFY_SOCKET` names (a path, or `@name` in the abstract namespace);
    /// `None` outside systemd or when it cannot be used.
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let path = path.to_string_lossy().into_owned();
        let addr = match path.strip_prefix('@') {
            Some(name) => UnixAddr::from_abstract_name(name.as_bytes()),
            None => UnixAddr::from_pathname(&path),
        }
        .ok()?;
        let socket = UnixDatagram::unbound().ok()?;
        Some(Notifier { socket, addr })
    }

    /// Sends one notification (`KEY=value` lines). Best effort: a lost one is what the
    /// manager's timeouts are for.
    pub fn send(&self, message: &str) {
        let _ = self.socket.send_to_addr(message.as_bytes(), &self.addr);
    }
}

/// How often the manager wants `WATCHDOG=1` (`WATCHDOG_USEC`, for this process when
/// `WATCHDOG_PID` is set); `None` when it does not watch.
pub fn watchdog_interval() -> Option<Duration> {
    if let Some(pid) = std::env::var_os("WATCHDOG_PID") {
        if pid.to_str()?.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// What one liveness check found ([`Liveness::check`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Check {
    /// Threads that did not move since the last check: wake them, they must move by the next.
    pub poke: Vec<usize>,
    /// Threads that did not move although woken at the last check.
    pub stuck: Vec<usize>,
}

impl Check {
    /// Whether the watchdog may be fed.
    pub fn alive(&self) -> bool {
        self.stuck.is_empty()
    }
}

/// Per thread: the progress counter at the last check, and whether it was poked then.
#[derive(Clone, Debug, Default)]
pub struct Liveness {
    last: Vec<(u64, bool)>,
}

impl Liveness {
    /// Watches `threads` threads, none poked yet.
    pub fn new(threads: usize) -> Liveness {
        Liveness {
            last: vec![(u64::MAX, false); threads],
        }
    }

    /// Takes each thread's progress counter now (a counter that every turn of its loop
    /// bumps) and says which to poke and which are stuck.
    pub fn check(&mut self, progress: &[u64]) -> Check {
        let mut check = Check::default();
        for (i, (&now, (last, poked))) in progress.iter().zip(self.last.iter_mut()).enumerate() {
            if now != *last {
                (*last, *poked) = (now, false);
            } else if *poked {
                check.stuck.push(i);
            } else {
                *poked = true;
                check.poke.push(i);
            }
        }
        check
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moving_thread_is_alive_and_never_poked() {
        let mut l = Liveness::new(2);
        for n in 1..5 {
            assert_eq!(l.check(&[n, 10 * n]), Check::default());
        }
    }

    #[test]
    fn an_idle_thread_is_poked_and_alive_once_it_moves() {
        let mut l = Liveness::new(2);
        l.check(&[1, 1]);
        let c = l.check(&[2, 1]);
        assert_eq!((c.poke, c.stuck.is_empty()), (vec![1], true));
        // Woken, it turned its loop once: alive, and poked again when idle again.
        assert!(l.check(&[3, 2]).alive());
        assert_eq!(l.check(&[4, 2]).poke, vec![1]);
        assert!(l.check(&[5, 3]).alive());
    }

    #[test]
    fn a_thread_that_does_not_move_when_poked_is_stuck_until_it_moves() {
        let mut l = Liveness::new(3);
        l.check(&[7, 7, 7]);
        assert_eq!(l.check(&[8, 7, 8]).poke, vec![1]);
        let c = l.check(&[9, 7, 9]);
        assert_eq!(c.stuck, vec![1]);
        assert!(!c.alive());
        assert!(!l.check(&[10, 7, 10]).alive(), "still stuck");
        assert!(l.check(&[11, 8, 11]).alive(), "it moved again");
    }
}
