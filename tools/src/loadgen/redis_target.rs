//! `--target redis://…`: the seed design's presence in Redis, loaded with the same plan and
//! scenarios as presenced (steady, churn, storm, flap, fanout) so that the two compare with
//! one tool.
//!
//! The design:
//!
//! * A heartbeat of `user`'s `device` is `SET presence:<user>:<device> online PX <ttl> GET`
//!   (Redis ≥ 6.2), ttl = interval + 2 × grace (presenced's timeout). A nil reply means the key
//!   was absent: the device just came online, and the gateway publishes
//!   `PUBLISH presence:<user> "online <device>"` in a second pipeline sent as soon as the
//!   replies are back. A logout is `GETDEL presence:<user>:<device>`; if it found the key, the
//!   gateway publishes `"offline <device>"`. Presence is per device (no aggregation of a
//!   user's devices): with `--devices 1`, devices and users are the same. The payload names
//!   the device so that an observer can tell a user's devices apart.
//! * Offline by silence: Redis expires the key; a separate connection sets
//!   `notify-keyspace-events Ex` and `PSUBSCRIBE __keyevent@<db>__:expired`. An expiry of a
//!   key the simulation let go (storm) is timed: its lateness is the event's arrival minus
//!   the deadline (the send of the last pipeline that SET the key + ttl). An expiry of a key
//!   the simulation keeps alive is a spurious offline (a violation, unless the generator
//!   itself sent that device's beat too late: excused). Expiries are not published.
//! * Observers ([`watch`]): `--observers` connections that `SUBSCRIBE presence:<user>` for
//!   every watched user (`--watch`, default all; 1,000 channels per command), or, with
//!   `--firehose`, `PSUBSCRIBE presence:*`. Each published transition is checked against what
//!   the simulation caused, with presenced's observer checks ([`Tally`](super::observer::Tally)): missing and
//!   spurious per device and observer. Its *transition latency* is its arrival at the
//!   observer minus the send of the pipeline that carried the `SET` (login) or `GETDEL`
//!   (logout), on the same clock, in the same histograms and report as presenced's.
//! * Gateways ([`gateway`]): each has its own connection and sends its commands as pipelines
//!   of up to [`BATCH`] (the entries of one heartbeat datagram), flushed when full or after
//!   `--batch-delay`. Pipelines are synchronous: a gateway waits for one's replies (and its
//!   publications) before it sends the next, so several gateways per sender thread keep Redis
//!   busy. Accepted operations are the replies counted back.
//! * Memory: `INFO memory` used_memory before the load (after the observers subscribed) and
//!   once every device is online.
//!
//! Scenarios ([`sender`]), on presenced's [`Plan`] (a WELCOME made of `--interval`, default
//! 20 s, and `--grace`, default 12 s): `steady` (`--max`, or on schedule with jitter), `churn`
//! and `fanout` (plus `--churn` device logins and logouts per second; fanout's observers
//! default to 8), `flap` (wide jitter and duplicate beats, always inside the TTL: no
//! transition may follow the initial logins; devices do not drop and come back, as in
//! presenced's flap, since per-device presence would make those real transitions) and `storm`
//! (beats for `--storm-after`, then silence until every key has expired; one cycle, no
//! reconnect). Keys of this run's users left by an earlier run are deleted first.
//!
//! Restart (`--restart-cmd`, steady only; [`restart`]): mid-run the command restarts
//! redis-server while the gateways go on; every connection reconnects by itself
//! ([`reconnect`]), beats that found no connection are counted unsent, and every device's
//! key is read once the server is back: a missing key is a false offline.

mod gateway;
mod reconnect;
mod restart;
mod sender;
mod summary;
mod watch;

pub use gateway::BATCH;
pub use summary::{Connections, RedisSummary};

use super::cli::Args;
use super::clock::Clock;
use super::counters::SendCounters;
use super::daemon_stats::Reading;
use super::observer::{self, Hists};
use super::plan::Plan;
use super::population::{self, Population};
use super::progress::ProgressMeter;
use super::report::Percentiles;
use super::restart::{check_args, RestartHook};
use super::rng::Rng;
use super::verdict::setup_of;
use super::verdict::{check, merge, sent_of};
use super::warmup::Warmup;
use super::{lock, RunError};
use hdrhistogram::Histogram;
use presenced_client::WelcomeInfo;
use presenced_wire::link::{Limits, Timings};
use sender::Sender;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// Default heartbeat interval (presenced's default).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(20);
/// Default grace (presenced's default).
const DEFAULT_GRACE: Duration = Duration::from_secs(12);
/// Device flag: the simulation keeps this device's key alive.
const ALIVE: u8 = 1;
/// Device flag: one of its beats was sent too late to be sure it arrived inside the TTL.
const EXCUSED: u8 = 2;

fn failed(e: impl std::fmt::Display) -> RunError {
    RunError::failed(format!("redis: {e}"))
}

/// Key of a device.
fn key(user: u64, device: u32) -> String {
    format!("presence:{user}:{device}")
}

/// Pub/sub channel of a user.
fn channel(user: u64) -> String {
    format!("presence:{user}")
}

/// User id and device of a key of ours.
fn parse_key(k: &str) -> Option<(u64, u32)> {
    let rest = k.strip_prefix("presence:")?;
    let (u, d) = rest.split_once(':')?;
    Some((u.parse().ok()?, d.parse().ok()?))
}

/// What the senders, observers and the expiry watcher share. Devices are numbered in
/// *slots*: user index `u`'s devices are slots `offsets[u]..offsets[u + 1]`; slots are the
/// population's (and the observers') indices.
struct Shared {
    clock: Clock,
    user_base: u64,
    /// First slot of each user, then the total.
    offsets: Vec<u32>,
    /// User index of each slot.
    owner: Vec<u32>,
    /// Users per gateway.
    block: u32,
    /// Watched users and their slots (`0..watch_slots`).
    watch_users: u32,
    watch_slots: u32,
    ttl_ms: u64,
    /// Per slot: the send time (µs on `clock`) of the last pipeline that SET it, 0 if none.
    last_send: Vec<AtomicU64>,
    /// Per slot: [`ALIVE`], [`EXCUSED`].
    flags: Vec<AtomicU8>,
    counters: SendCounters,
    accepted: AtomicU64,
    publishes: AtomicU64,
    last_error: Mutex<Option<String>>,
    stop: AtomicBool,
    /// Sender threads whose every device has been SET once.
    online: AtomicU32,
    expired: AtomicU64,
    expected_expiries: AtomicU64,
    foreign: AtomicU64,
    spurious_expiries: AtomicU64,
    excused_expiries: AtomicU64,
    lateness: Mutex<Histogram<u64>>,
    /// Set by the restart step: gateways do not reconnect while it is.
    hold: AtomicBool,
    /// Commands that got no reply because their gateway's connection was down or broke.
    unsent: AtomicU64,
    /// Gateway connections opened again after a break.
    gateway_reconnects: AtomicU64,
    /// The longest a gateway's connection was down, µs.
    gateway_down_max_us: AtomicU64,
    /// Subscriptions (observers', the expiry watcher's) made again after a break.
    resubscribed: AtomicU64,
}

impl Shared {
    /// The slot of `user`'s `device`, if it is one of ours.
    fn slot(&self, user: u64, device: u32) -> Option<u32> {
        let u = usize::try_from(user.checked_sub(self.user_base)?).ok()?;
        let (first, end) = (*self.offsets.get(u)?, *self.offsets.get(u + 1)?);
        (device >= 1 && device <= end - first).then(|| first + device - 1)
    }

    /// User id and device of `slot`.
    fn owner_of(&self, slot: u32) -> (u64, u32) {
        let u = self.owner[slot as usize];
        (
            self.user_base + u64::from(u),
            slot - self.offsets[u as usize] + 1,
        )
    }

    /// The Redis keys of `slots`' devices.
    fn keys_of(&self, slots: &[u32]) -> Vec<String> {
        slots
            .iter()
            .map(|&s| {
                let (u, d) = self.owner_of(s);
                key(u, d)
            })
            .collect()
    }

    /// The slots of the users of `gateways`.
    fn slots_of(&self, gateways: &Range<u32>) -> Range<u32> {
        let users = self.offsets.len() - 1;
        let at = |g: u32| self.offsets[(g as usize * self.block as usize).min(users)];
        at(gateways.start)..at(gateways.end)
    }

    fn flag(&self, slot: u32, bit: u8, on: bool) {
        if let Some(f) = self.flags.get(slot as usize) {
            if on {
                f.fetch_or(bit, Ordering::Relaxed);
            } else {
                f.fetch_and(!bit, Ordering::Relaxed);
            }
        }
    }

    fn error(&self, e: &redis::RedisError) {
        self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
        *lock(&self.last_error) = Some(e.to_string());
    }
}

fn info_field(info: &str, field: &str) -> u64 {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn used_memory(con: &mut redis::Connection) -> Result<u64, RunError> {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query(con)
        .map_err(failed)?;
    Ok(info_field(&info, "used_memory"))
}

fn dbsize(con: &mut redis::Connection) -> Result<u64, RunError> {
    redis::cmd("DBSIZE").query(con).map_err(failed)
}

/// Turns on the keyspace `expired` events the expiry watcher listens to.
fn notify_expiries(con: &mut redis::Connection) -> Result<(), RunError> {
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("Ex")
        .query::<()>(con)
        .map_err(failed)
}

/// The WELCOME presenced would send with these timings: what [`Plan::resolve`] needs.
fn welcome(interval: Duration, grace: Duration) -> WelcomeInfo {
    WelcomeInfo {
        heartbeat_port: 0,
        shard_ports: Vec::new(),
        shard_count: 1,
        limits: Limits {
            max_subscriptions: u32::MAX,
            ..Limits::default()
        },
        timings: Timings {
            heartbeat_interval_ms: interval.as_millis().clamp(1, u128::from(u32::MAX)) as u32,
            grace_ms: grace.as_millis().min(u128::from(u32::MAX)) as u32,
            idle_after_ms: 0,
            tick_us: 1000,
        },
    }
}

/// Waits for a listener thread's word that it has subscribed.
fn wait_ready(rx: &mpsc::Receiver<Result<(), String>>, what: &str) -> Result<(), RunError> {
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(failed(format!("{what}: {e}"))),
        Err(_) => Err(failed(format!("{what} did not start"))),
    }
}

/// Runs the load described by `args` against the Redis server `url`; with `restart`, the
/// server is restarted by it mid-run (steady only; see `--restart-cmd`).
pub fn run(
    args: &Args,
    url: &str,
    mut restart: Option<RestartHook<'_>>,
) -> Result<RedisSummary, RunError> {
    let interval = args.interval.unwrap_or(DEFAULT_INTERVAL);
    let grace = args.grace.unwrap_or(DEFAULT_GRACE);
    let ttl_ms = ((interval + 2 * grace).as_millis() as u64).max(1);
    let mut rng = Rng::new(args.seed);
    let devices = population::draw_devices(args.users, args.devices, &mut rng);
    let mut offsets = Vec::with_capacity(devices.len() + 1);
    let mut owner = Vec::new();
    let mut total = 0u32;
    for (u, &d) in devices.iter().enumerate() {
        offsets.push(total);
        total += u32::from(d);
        owner.resize(owner.len() + usize::from(d), u as u32);
    }
    offsets.push(total);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let plan = Plan::resolve(args, &welcome(interval, grace), u64::from(total), cores)
        .map_err(RunError::usage)?;
    if !plan.ids_fit() {
        return Err(RunError::usage(
            "--user-base + --users runs past the largest user id",
        ));
    }
    if restart.is_some() {
        check_args(args, &plan)?;
    }
    let plan = Arc::new(plan);
    let watch_slots = offsets[plan.watch as usize];
    let pop = Arc::new(Population::new(
        0,
        vec![1; total as usize],
        watch_slots,
        plan.observers,
    ));

    let client = redis::Client::open(url).map_err(failed)?;
    let db = client.get_connection_info().redis.db;
    let connect = || {
        client.get_connection().map_err(|e| {
            RunError::failed(format!(
                "cannot connect to {url}: {e} (is redis-server running there?)"
            ))
        })
    };
    let mut control = connect()?;
    let clock = Clock::start();
    let sh = Arc::new(Shared {
        clock,
        user_base: plan.user_base,
        offsets,
        owner,
        block: plan.users_per_gateway(),
        watch_users: plan.watch,
        watch_slots,
        ttl_ms,
        last_send: (0..total).map(|_| AtomicU64::new(0)).collect(),
        flags: (0..total).map(|_| AtomicU8::new(0)).collect(),
        counters: SendCounters::default(),
        accepted: AtomicU64::new(0),
        publishes: AtomicU64::new(0),
        last_error: Mutex::new(None),
        stop: AtomicBool::new(false),
        online: AtomicU32::new(0),
        expired: AtomicU64::new(0),
        expected_expiries: AtomicU64::new(0),
        foreign: AtomicU64::new(0),
        spurious_expiries: AtomicU64::new(0),
        excused_expiries: AtomicU64::new(0),
        lateness: Mutex::new(observer::histogram()),
        hold: AtomicBool::new(false),
        unsent: AtomicU64::new(0),
        gateway_reconnects: AtomicU64::new(0),
        gateway_down_max_us: AtomicU64::new(0),
        resubscribed: AtomicU64::new(0),
    });

    // Keys an earlier run left: this run's first SET of each device must be a login.
    for chunk in (0..total).collect::<Vec<_>>().chunks(1000) {
        redis::cmd("DEL")
            .arg(sh.keys_of(chunk))
            .query::<()>(&mut control)
            .map_err(failed)?;
    }

    // The expiry watcher.
    notify_expiries(&mut control)?;
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
    let watcher = {
        let (sh, ready, client) = (sh.clone(), ready_tx.clone(), client.clone());
        let con = connect()?;
        std::thread::Builder::new()
            .name("redis-expiry".into())
            .spawn(move || watch::watch_expiries(&client, con, db, &sh, &ready))
            .map_err(failed)?
    };
    wait_ready(&ready_rx, "the expiry subscription")?;

    // Observers.
    let oshared = Arc::new(observer::Shared::default());
    let mut hists = Vec::new();
    let mut observers = Vec::new();
    for i in 0..plan.observers {
        let con = connect()?;
        let h = Arc::new(Mutex::new(Hists::default()));
        let (sh, pop, oshared, h2, ready, client) = (
            sh.clone(),
            pop.clone(),
            oshared.clone(),
            h.clone(),
            ready_tx.clone(),
            client.clone(),
        );
        let firehose = plan.firehose;
        observers.push(
            std::thread::Builder::new()
                .name(format!("redis-observer-{i}"))
                .spawn(move || {
                    watch::observe(&client, con, &sh, pop, oshared, &h2, firehose, &ready)
                })
                .map_err(failed)?,
        );
        hists.push(h);
        wait_ready(&ready_rx, "an observer's subscription")?;
    }
    if !plan.firehose && plan.watch > 0 {
        // An observer's SUBSCRIBE commands run in order: once the last watched user's
        // channel has every observer, every channel has.
        let last = channel(plan.user_base + u64::from(plan.watch - 1));
        let mut waited = 0;
        loop {
            let counts: Vec<(String, u64)> = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&last)
                .query(&mut control)
                .map_err(failed)?;
            if counts
                .first()
                .is_some_and(|c| c.1 >= u64::from(plan.observers))
            {
                break;
            }
            waited += 1;
            if waited > 3000 {
                return Err(failed(
                    "the observers' subscriptions did not complete in 30 s",
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    oshared.running.store(true, Ordering::Release);
    let memory_before = used_memory(&mut control)?;

    // Senders.
    let start_us = clock.now_us() + 20_000;
    let end_us = start_us
        + match plan.storm {
            Some(storm) => storm.after_us,
            None => plan.duration_us,
        };
    let mut handles = Vec::new();
    for t in 0..plan.threads {
        let g0 = t * plan.gateways / plan.threads;
        let g1 = (t + 1) * plan.gateways / plan.threads;
        let mut gws = Vec::new();
        for _ in g0..g1 {
            gws.push(gateway::Gw::new(client.clone(), connect()?));
        }
        let mut s = Sender::new(
            t,
            g0..g1,
            gws,
            sh.clone(),
            plan.clone(),
            pop.clone(),
            start_us,
        );
        handles.push(
            std::thread::Builder::new()
                .name(format!("redis-sender-{t}"))
                .spawn(move || {
                    s.run(end_us);
                    s
                })
                .map_err(failed)?,
        );
    }
    let readings: Reading = Arc::new(Mutex::new(Vec::new()));
    let mut progress = ProgressMeter::new(clock, start_us, args.quiet || args.json);
    let mut warmup = Warmup::new(&plan, &pop, start_us);
    let mut memory_online = 0;
    let mut keys_online = 0;
    let restart_at_us = start_us
        + args
            .restart_after
            .map_or(plan.duration_us / 2, |d| d.as_micros() as u64);
    let mut restarted = None;
    while !handles.iter().all(|h| h.is_finished()) {
        progress.tick(&sh.counters, &readings, &hists, &oshared, &pop);
        warmup.check(&pop, clock.now_us());
        if memory_online == 0 && sh.online.load(Ordering::Acquire) == plan.threads {
            memory_online = used_memory(&mut control)?;
            keys_online = dbsize(&mut control)?;
        }
        if clock.now_us() < restart_at_us {
            continue;
        }
        let Some(hook) = restart.take() else {
            continue;
        };
        let at_s = clock.now_us().saturating_sub(start_us) as f64 / 1e6;
        // The observers and the expiry watcher subscribe again.
        let subscribers = u64::from(plan.observers) + 1;
        let (mut report, con) = restart::restart(&client, args, hook, &sh, subscribers)
            .inspect_err(|_| sh.stop.store(true, Ordering::Release))?;
        report.at_s = at_s;
        restarted = Some(report);
        control = con;
    }
    let stop_us = clock.now_us();
    let mut sent = sent_of(&sh.counters, stop_us.saturating_sub(start_us) as f64 / 1e6);
    let accepted = sh.accepted.load(Ordering::Relaxed);
    if memory_online == 0 {
        memory_online = used_memory(&mut control)?;
        keys_online = dbsize(&mut control)?;
    }
    let mut senders: Vec<Sender> = handles.into_iter().filter_map(|h| h.join().ok()).collect();

    if plan.storm.is_some() {
        sent.storms = 1;
        // Everyone is silent: wait until every device has expired (or the settle time).
        let expected = sh.expected_expiries.load(Ordering::Relaxed);
        let settle_us = args
            .settle
            .map_or(ttl_ms * 1000 + 10_000_000, |d| d.as_micros() as u64);
        let until = clock.now_us() + settle_us;
        while clock.now_us() < until && sh.expired.load(Ordering::Relaxed) < expected {
            std::thread::sleep(Duration::from_millis(50));
        }
    } else if plan.logout_at_end {
        for s in &mut senders {
            s.drain();
        }
    } else {
        oshared.ended.store(true, Ordering::Release);
    }
    let until = clock.now_us() + plan.settle_us;
    while pop.in_flight() > 0 && clock.now_us() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    sh.stop.store(true, Ordering::Release);
    oshared.finishing.store(true, Ordering::Release);
    let _ = watcher.join();
    let findings: Vec<_> = observers
        .into_iter()
        .filter_map(|o| o.join().ok())
        .collect();
    let (latency, _) = merge(&hists);
    let lateness = Percentiles::of(&lock(&sh.lateness));
    sent.last_error = lock(&sh.last_error).clone();
    sent.send_errors = SendCounters::get(&sh.counters.send_errors);
    let checks = check(&pop, &findings, &oshared, false);
    let connections = Connections {
        unsent: sh.unsent.load(Ordering::Relaxed),
        gateway_reconnects: sh.gateway_reconnects.load(Ordering::Relaxed),
        gateway_down_max_us: sh.gateway_down_max_us.load(Ordering::Relaxed),
        observer_reconnects: findings.iter().map(|f| f.reconnects.len() as u64).sum(),
    };
    let restart_report = restarted.map(|mut r| {
        r.reconnects = findings.iter().map(|f| f.reconnects.clone()).collect();
        r.reconnects.resize(plan.observers as usize, Vec::new());
        r.not_reconnected = r.reconnects.iter().filter(|d| d.is_empty()).count() as u64;
        r.false_transitions = checks.spurious;
        r
    });
    Ok(RedisSummary {
        target: url.to_string(),
        setup: setup_of(&plan, args),
        ttl_us: ttl_ms * 1000,
        sent,
        accepted,
        publishes: sh.publishes.load(Ordering::Relaxed),
        memory_before,
        memory_online,
        keys_online,
        expired: sh.expired.load(Ordering::Relaxed),
        expected_expiries: sh.expected_expiries.load(Ordering::Relaxed),
        foreign_expiries: sh.foreign.load(Ordering::Relaxed),
        spurious_expiries: sh.spurious_expiries.load(Ordering::Relaxed),
        excused_expiries: sh.excused_expiries.load(Ordering::Relaxed),
        checks,
        connections,
        restart: restart_report,
        timed_from_s: warmup.started_us.map(|us| us as f64 / 1e6),
        latency: Percentiles::of(&latency),
        lateness,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_info_fields_parse() {
        assert_eq!(parse_key(&key(42, 3)), Some((42, 3)));
        assert_eq!(parse_key("other:1:2"), None);
        assert_eq!(channel(42), "presence:42");
        let info = "# Memory\r\nused_memory:123456\r\nused_memory_human:120K\r\n";
        assert_eq!(info_field(info, "used_memory"), 123_456);
        assert_eq!(info_field(info, "nothing"), 0);
    }
}
