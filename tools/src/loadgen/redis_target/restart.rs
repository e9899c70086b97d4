//! The restart step against Redis (`--restart-cmd`): what a restart of redis-server costs the
//! seed design while its gateways keep heartbeating. Without persistence every key vanishes,
//! so every device reads offline until its gateway's next beat re-creates the key, and that
//! beat's `SET … GET` finds no key and publishes a login the simulation never caused (a false
//! transition, counted by the observers' checks).
//!
//! The gateways are held back from reconnecting ([`Shared::hold`]) from the command until the
//! server answers, the observers and the expiry watcher have subscribed again and every
//! device's key has been read: the read then sees what the restart left, not what the
//! gateways wrote since, and every republished login reaches every observer. Their beats
//! meanwhile count as unsent.

use super::reconnect::{self, Backoff};
use super::{failed, Shared, ALIVE};
use crate::loadgen::cli::Args;
use crate::loadgen::restart::{RestartHook, RestartReport};
use crate::loadgen::RunError;
use redis::{Client, Connection};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Keys per `MGET` when the devices are read after the restart.
const READ_CHUNK: usize = 1000;
/// How often the step looks whether the subscribers are back.
const POLL_MS: u64 = 10;

/// Restarts Redis with `hook` while the gateways are held back, waits (at most
/// `--restart-wait`) until it answers `PING` on a new control connection (returned), sets
/// `notify-keyspace-events` again (a restarted server without a config file has lost it),
/// waits until the `subscribers` (observers and the expiry watcher) have subscribed again,
/// and reads every live device's key. Releases the gateways however it ends.
pub(super) fn restart(
    client: &Client,
    args: &Args,
    hook: RestartHook<'_>,
    sh: &Shared,
    subscribers: u64,
) -> Result<(RestartReport, Connection), RunError> {
    sh.hold.store(true, Ordering::Release);
    let outcome = held(client, args, hook, sh, subscribers);
    sh.hold.store(false, Ordering::Release);
    outcome
}

fn held(
    client: &Client,
    args: &Args,
    hook: RestartHook<'_>,
    sh: &Shared,
    subscribers: u64,
) -> Result<(RestartReport, Connection), RunError> {
    let resubscribed = sh.resubscribed.load(Ordering::Acquire);
    let started = Instant::now();
    hook().map_err(|e| RunError::failed(format!("the restart failed: {e}")))?;
    let command_s = started.elapsed().as_secs_f64();
    let deadline = started + args.restart_wait;
    let mut backoff = Backoff::default();
    let mut control = loop {
        let answered = reconnect::connect(client).and_then(|mut con| {
            redis::cmd("PING").query::<String>(&mut con)?;
            Ok(con)
        });
        match answered {
            Ok(con) => break con,
            Err(e) if Instant::now() >= deadline => {
                return Err(failed(format!(
                    "the server did not answer within --restart-wait {:?}: {e}",
                    args.restart_wait
                )))
            }
            Err(_) => std::thread::sleep(backoff.next()),
        }
    };
    let back_after_s = started.elapsed().as_secs_f64();
    super::notify_expiries(&mut control)?;
    while sh.resubscribed.load(Ordering::Acquire) < resubscribed + subscribers
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(POLL_MS));
    }
    let (devices_read, missing) = read_live_keys(&mut control, sh)?;
    let report = RestartReport {
        command: args.restart_cmd.clone(),
        command_s,
        back_after_s,
        false_offline: Some(missing),
        devices_read: Some(devices_read),
        ..RestartReport::default()
    };
    Ok((report, control))
}

/// Reads the key of every device the simulation keeps alive: (devices read, keys missing).
fn read_live_keys(con: &mut Connection, sh: &Shared) -> Result<(u64, u64), RunError> {
    let live: Vec<u32> = (0..sh.owner.len() as u32)
        .filter(|&s| sh.flags[s as usize].load(Ordering::Relaxed) & ALIVE != 0)
        .collect();
    let mut missing = 0;
    for chunk in live.chunks(READ_CHUNK) {
        let values: Vec<Option<String>> = redis::cmd("MGET")
            .arg(sh.keys_of(chunk))
            .query(con)
            .map_err(failed)?;
        missing += values.iter().filter(|v| v.is_none()).count() as u64;
    }
    Ok((live.len() as u64, missing))
}
