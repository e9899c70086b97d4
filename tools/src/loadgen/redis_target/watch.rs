//! What listens to Redis: the observers (pub/sub connections subscribed to the watched users'
//! channels, checking every published transition with the same [`Tally`] as presenced's
//! observers) and the expiry watcher (keyspace `expired` events: offline lateness, and
//! spurious offlines of devices the simulation keeps alive).

use super::{Shared, ALIVE, EXCUSED};
use crate::loadgen::lock;
use crate::loadgen::observer::{self, Findings, Hists, Seen, Tally};
use crate::loadgen::population::Population;
use presenced_wire::link::WireState;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender as Ready;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// One observer: subscribes (per watched user, or `PSUBSCRIBE presence:*` with `firehose`),
/// says so on `ready`, then checks every message until the run is finishing and the
/// connection has been quiet for a moment. Returns its findings.
pub fn observe(
    mut con: redis::Connection,
    sh: &Shared,
    pop: Arc<Population>,
    shared: Arc<observer::Shared>,
    hists: &Mutex<Hists>,
    firehose: bool,
    ready: &Ready<Result<(), String>>,
) -> Findings {
    let mut tally = Tally::new(pop, shared.clone());
    let mut ps = con.as_pubsub();
    let started = if firehose {
        ps.psubscribe("presence:*")
    } else {
        let channels: Vec<String> = (0..sh.watch_users)
            .map(|u| super::channel(sh.user_base + u64::from(u)))
            .collect();
        channels
            .chunks(SUBSCRIBE_CHUNK)
            .try_for_each(|chunk| ps.subscribe(chunk))
    };
    let started = started.and_then(|()| ps.set_read_timeout(Some(READ_TIMEOUT)));
    let failed = started.is_err();
    let _ = ready.send(started.map_err(|e| e.to_string()));
    if failed {
        return tally.into_findings(0);
    }
    loop {
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
                    break;
                }
            }
            Err(e) => {
                tally.closed(format!("redis observer connection: {e}"));
                break;
            }
        }
    }
    tally.into_findings(0)
}

/// The expiry watcher: `PSUBSCRIBE __keyevent@<db>__:expired` (says so on `ready`), then every
/// expired key of this run until `sh.stop`: lateness (arrival − (last SET's send + ttl)) of
/// keys the simulation let go, spurious (or excused) expiries of keys it keeps alive.
pub fn watch_expiries(
    con: &mut redis::Connection,
    db: i64,
    sh: &Shared,
    ready: &Ready<Result<(), String>>,
) {
    let mut ps = con.as_pubsub();
    let started = ps
        .psubscribe(format!("__keyevent@{db}__:expired"))
        .and_then(|()| ps.set_read_timeout(Some(READ_TIMEOUT)));
    let _ = ready.send(started.map_err(|e| e.to_string()));
    let mut local = Vec::new();
    loop {
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
                    break;
                }
            }
            Err(_) => break,
        }
    }
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
