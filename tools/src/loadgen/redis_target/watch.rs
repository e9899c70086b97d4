//! What listens to Redis: the observers (pub/sub connections subscribed to the watched users'
//! channels, checking every published transition with the same [`Tally`] as presenced's
//! observers) and the expiry watcher (keyspace `expired` events: offline lateness, and
//! spurious offlines of devices the simulation keeps alive).
//!
//! Both survive a restart of the server: a broken connection is opened again after a bounded
//! backoff ([`reconnect`](super::reconnect)) and subscribed again (counted in
//! [`Shared::resubscribed`], which the restart step waits for); what was published while it
//! was down is lost, as it would be for a real subscriber. An observer's time down is in its
//! findings; one still down when the run finishes is a closed link.

use super::reconnect::{self, Backoff};
use super::{Shared, ALIVE, EXCUSED};
use crate::loadgen::lock;
use crate::loadgen::observer::{self, Findings, Hists, Seen, Tally};
use crate::loadgen::population::Population;
use presenced_wire::link::WireState;
use redis::{Client, Connection, PubSub, RedisResult};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender as Ready;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Channels per SUBSCRIBE command.
const SUBSCRIBE_CHUNK: usize = 1000;
/// How often a blocked read looks at the stop flags.
const READ_TIMEOUT: Duration = Duration::from_millis(100);

/// Channel and payload of a published transition: `presence:<user>`, `online <device>` or
/// `offline <device>`.
fn parse_message(channel: &str, payload: &[u8]) -> Option<(u64, u32, bool)> {
    let user = channel.strip_prefix("presence:")?.parse().ok()?;
    let (state, device) = std::str::from_utf8(payload).ok()?.split_once(' ')?;
    let online = match state {
        "online" => true,
        "offline" => false,
        _ => return None,
    };
    Some((user, device.parse().ok()?, online))
}

/// A subscription that outlives its connections: `subscribe` is run on the first connection
/// (its outcome goes to `ready`) and on every one opened after a break.
struct Resubscriber<'a> {
    client: &'a Client,
    sh: &'a Shared,
    /// Stop reconnecting once this is set.
    done: &'a AtomicBool,
}

/// How a connection's reading ended.
enum Ended {
    /// The run is over.
    Done,
    /// The connection broke, for this reason.
    Broken(String),
}

impl Resubscriber<'_> {
    /// Runs `read` on subscribed connections until it returns [`Ended::Done`], reconnecting
    /// after each break; `down` gets each outage's length once subscribed again. Returns why
    /// the last connection broke if it was still down when `done` was set.
    fn run(
        &self,
        first: Connection,
        ready: &Ready<Result<(), String>>,
        subscribe: impl Fn(&mut PubSub<'_>) -> RedisResult<()>,
        mut read: impl FnMut(&mut PubSub<'_>) -> Ended,
        mut down: impl FnMut(Duration),
    ) -> Option<String> {
        let mut con = first;
        let mut ps = con.as_pubsub();
        let started = subscribe(&mut ps);
        let failed = started.is_err();
        let _ = ready.send(started.map_err(|e| e.to_string()));
        if failed {
            return None;
        }
        let mut why = match read(&mut ps) {
            Ended::Done => return None,
            Ended::Broken(why) => why,
        };
        drop(ps);
        let mut since = Instant::now();
        let mut backoff = Backoff::default();
        loop {
            std::thread::sleep(backoff.next());
            if self.done.load(Ordering::Acquire) {
                return Some(why);
            }
            let Ok(mut con) = reconnect::connect(self.client) else {
                continue;
            };
            let mut ps = con.as_pubsub();
            if let Err(e) = subscribe(&mut ps) {
                why = e.to_string();
                continue;
            }
            down(since.elapsed());
            backoff.reset();
            self.sh.resubscribed.fetch_add(1, Ordering::AcqRel);
            match read(&mut ps) {
                Ended::Done => return None,
                Ended::Broken(e) => {
                    why = e;
                    since = Instant::now();
                }
            }
        }
    }
}

/// One observer: subscribes (per watched user, or `PSUBSCRIBE presence:*` with `firehose`),
/// says so on `ready`, then checks every message until the run is finishing and the
/// connection has been quiet for a moment, resubscribing after a break. Returns its findings.
#[allow(clippy::too_many_arguments)]
pub fn observe(
    client: &Client,
    con: Connection,
    sh: &Shared,
    pop: Arc<Population>,
    shared: Arc<observer::Shared>,
    hists: &Mutex<Hists>,
    firehose: bool,
    ready: &Ready<Result<(), String>>,
) -> Findings {
    let mut tally = Tally::new(pop, shared.clone());
    let channels: Vec<String> = (0..sh.watch_users)
        .map(|u| super::channel(sh.user_base + u64::from(u)))
        .collect();
    let subscribe = |ps: &mut PubSub<'_>| {
        if firehose {
            ps.psubscribe("presence:*")?;
        } else {
            channels
                .chunks(SUBSCRIBE_CHUNK)
                .try_for_each(|chunk| ps.subscribe(chunk))?;
        }
        ps.set_read_timeout(Some(READ_TIMEOUT))
    };
    let mut downs = Vec::new();
    let read = |ps: &mut PubSub<'_>| loop {
        match ps.get_message() {
            Ok(msg) => {
                let now = sh.clock.now_us();
                let running = shared.running.load(Ordering::Acquire);
                let seen = parse_message(msg.get_channel_name(), msg.get_payload_bytes()).and_then(
                    |(user, device, online)| {
                        let slot = sh.slot(user, device)?;
                        (slot < sh.watch_slots).then_some(Seen {
                            index: slot,
                            state: if online {
                                WireState::Online
                            } else {
                                WireState::Offline
                            },
                            prev: None,
                            version: None,
                            timeout: false,
                        })
                    },
                );
                match seen {
                    Some(seen) => tally.note(seen, now, running, &mut lock(hists)),
                    None => tally.foreign(),
                }
            }
            Err(e) if e.is_timeout() => {
                if shared.finishing.load(Ordering::Acquire) {
                    return Ended::Done;
                }
            }
            Err(e) => return Ended::Broken(format!("redis observer connection: {e}")),
        }
    };
    let r = Resubscriber {
        client,
        sh,
        done: &shared.finishing,
    };
    let still_down = r.run(con, ready, subscribe, read, |d| downs.push(d));
    if let Some(why) = still_down {
        tally.closed(why);
    }
    let mut findings = tally.into_findings(0);
    findings.reconnects = downs;
    findings
}

/// The expiry watcher: `PSUBSCRIBE __keyevent@<db>__:expired` (says so on `ready`), then every
/// expired key of this run until `sh.stop`: lateness (arrival − (last SET's send + ttl)) of
/// keys the simulation let go, spurious (or excused) expiries of keys it keeps alive.
pub fn watch_expiries(
    client: &Client,
    con: Connection,
    db: i64,
    sh: &Shared,
    ready: &Ready<Result<(), String>>,
) {
    let subscribe = |ps: &mut PubSub<'_>| {
        ps.psubscribe(format!("__keyevent@{db}__:expired"))?;
        ps.set_read_timeout(Some(READ_TIMEOUT))
    };
    let mut local = Vec::new();
    let mut read = |ps: &mut PubSub<'_>| loop {
        match ps.get_message() {
            Ok(msg) => {
                let now = sh.clock.now_us();
                let k: String = msg.get_payload().unwrap_or_default();
                let Some(slot) = super::parse_key(&k).and_then(|(u, d)| sh.slot(u, d)) else {
                    sh.foreign.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let last = sh.last_send[slot as usize].load(Ordering::Relaxed);
                let flags = sh.flags[slot as usize].load(Ordering::Relaxed);
                if last == 0 {
                    sh.foreign.fetch_add(1, Ordering::Relaxed);
                } else if flags & ALIVE != 0 && flags & EXCUSED != 0 {
                    sh.excused_expiries.fetch_add(1, Ordering::Relaxed);
                } else if flags & ALIVE != 0 {
                    sh.spurious_expiries.fetch_add(1, Ordering::Relaxed);
                } else {
                    local.push(now.saturating_sub(last + sh.ttl_ms * 1000).max(1));
                    if local.len() >= 1024 {
                        record(sh, &mut local);
                    }
                }
            }
            Err(e) if e.is_timeout() => {
                record(sh, &mut local);
                if sh.stop.load(Ordering::Acquire) {
                    return Ended::Done;
                }
            }
            Err(e) => return Ended::Broken(e.to_string()),
        }
    };
    let r = Resubscriber {
        client,
        sh,
        done: &sh.stop,
    };
    r.run(con, ready, subscribe, &mut read, |_| {});
    record(sh, &mut local);
}

fn record(sh: &Shared, local: &mut Vec<u64>) {
    if local.is_empty() {
        return;
    }
    let mut h = lock(&sh.lateness);
    for &v in local.iter() {
        h.saturating_record(v);
    }
    sh.expired.fetch_add(local.len() as u64, Ordering::Relaxed);
    local.clear();
}

#[cfg(test)]
mod tests {
    use super::parse_message;

    #[test]
    fn messages_parse() {
        assert_eq!(
            parse_message("presence:42", b"online 3"),
            Some((42, 3, true))
        );
        assert_eq!(
            parse_message("presence:7", b"offline 1"),
            Some((7, 1, false))
        );
        assert_eq!(parse_message("presence:7", b"idle 1"), None);
        assert_eq!(parse_message("other:7", b"online 1"), None);
    }
}
