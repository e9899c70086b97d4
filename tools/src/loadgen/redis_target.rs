//! `--target redis://…`: the seed designs' presence in Redis, loaded on the same schedule as
//! presenced so that the two can be compared with one tool.
//!
//! * A heartbeat of `user`'s `device` is `SET presence:<user>:<device> online PX <ttl>`, with
//!   ttl = interval + 2 × grace (presenced's timeout); a logout is `DEL`.
//! * Each simulated gateway has its own connection and sends its entries as pipelines of up to
//!   [`BATCH`] commands (the entries of one heartbeat datagram), flushed when full or after
//!   `--batch-delay`. Pipelines are synchronous: a gateway waits for the replies of one before
//!   it sends the next, so several gateways per sender thread keep Redis busy.
//! * Accepted operations are the replies counted back (presenced's "accepted" is the daemon's
//!   heartbeat counter).
//! * Offline detection: a separate connection sets `notify-keyspace-events Ex` and
//!   `PSUBSCRIBE __keyevent@<db>__:expired`; each expired key is an offline event of that
//!   device. Its lateness is the event's arrival minus the deadline (the send of the last
//!   pipeline that SET the key + ttl), as presenced's is measured from the last heartbeat's
//!   send. There is no per-user aggregation of devices: every device's expiry counts (with
//!   `--devices 1`, the default of benches/compare.sh, devices and users are the same).
//! * Memory: `INFO memory` used_memory before the load and once every device is online,
//!   divided by the users and keys.
//!
//! Scenarios: `steady` (with `--max`, or on schedule with `--rate`/`--interval`: every device
//! beats once per period, evenly spread, no jitter) and `storm` (every device beats on schedule
//! for `--storm-after`, then everything goes silent at once and every key must expire; one
//! cycle, no reconnect). Transition latency (a login reaching an observer) is not measured:
//! the Redis design has no login event to observe.

use super::cli::{Args, Scenario};
use super::clock::Clock;
use super::population;
use super::report::{grouped, ms, si, Percentiles};
use super::rng::Rng;
use super::RunError;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Commands per pipeline: the entries one heartbeat datagram holds.
pub const BATCH: usize = 89;
/// Default heartbeat interval (presenced's default).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(20);
/// Default grace (presenced's default).
const DEFAULT_GRACE: Duration = Duration::from_secs(12);

/// What a Redis run reports.
#[derive(Clone, Debug, Default)]
pub struct RedisSummary {
    /// The server, as given.
    pub target: String,
    /// Scenario name.
    pub scenario: String,
    /// Users.
    pub users: u32,
    /// Devices (keys) in total.
    pub devices: u64,
    /// Gateways (connections).
    pub gateways: u32,
    /// Sender threads.
    pub threads: u32,
    /// Per-device period, µs (None with `--max`).
    pub period_us: Option<u64>,
    /// Key TTL, µs.
    pub ttl_us: u64,
    /// Send window, seconds.
    pub seconds: f64,
    /// Commands sent in the window.
    pub sent: u64,
    /// Replies counted back in the window.
    pub accepted: u64,
    /// Pipelines sent.
    pub pipelines: u64,
    /// Failed pipelines.
    pub errors: u64,
    /// The last error.
    pub last_error: Option<String>,
    /// `used_memory` before the load, bytes.
    pub memory_before: u64,
    /// `used_memory` with every device online, bytes.
    pub memory_online: u64,
    /// Keys with every device online (`DBSIZE`).
    pub keys_online: u64,
    /// Expiry events of this run's keys.
    pub expired: u64,
    /// Devices expected to expire (storm).
    pub expected_expiries: u64,
    /// Expiry events of keys this run did not set (an earlier run's).
    pub foreign_expiries: u64,
    /// Offline-detection lateness.
    pub lateness: Percentiles,
}

impl RedisSummary {
    /// Replies per second.
    pub fn accepted_per_s(&self) -> f64 {
        self.accepted as f64 / self.seconds.max(1e-9)
    }

    /// Bytes of `used_memory` per online user.
    pub fn bytes_per_user(&self) -> f64 {
        self.memory_online.saturating_sub(self.memory_before) as f64 / f64::from(self.users.max(1))
    }

    /// Missing expiries (storm): devices that never expired within the wait.
    pub fn missing(&self) -> u64 {
        self.expected_expiries.saturating_sub(self.expired)
    }

    /// The summary as one JSON object (field names follow presenced's where they mean the
    /// same: `daemon.accepted_per_s`, `offline_lateness_us`).
    pub fn to_json(&self) -> Value {
        json!({
            "target": self.target,
            "scenario": self.scenario,
            "setup": {
                "users": self.users, "devices": self.devices, "gateways": self.gateways,
                "threads": self.threads, "max": self.period_us.is_none(),
                "period_us": self.period_us, "ttl_us": self.ttl_us,
            },
            "sent": {
                "seconds": self.seconds, "entries": self.sent, "pipelines": self.pipelines,
                "per_s": self.sent as f64 / self.seconds.max(1e-9),
                "send_errors": self.errors, "last_error": self.last_error,
            },
            "daemon": {
                "heartbeats": self.accepted, "accepted_per_s": self.accepted_per_s(),
                "used_memory_before": self.memory_before,
                "used_memory_online": self.memory_online, "keys_online": self.keys_online,
                "bytes_per_user": self.bytes_per_user(),
            },
            "expiries": {
                "expected": self.expected_expiries, "observed": self.expired,
                "missing": self.missing(), "foreign": self.foreign_expiries,
            },
            "offline_lateness_us": self.lateness.to_json(),
        })
    }

    /// The summary as a table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let rows = [
            ("target", format!("{} ({})", self.target, self.scenario)),
            (
                "setup",
                format!(
                    "{} users, {} devices, {} gateways on {} threads; key TTL {}",
                    grouped(u64::from(self.users)),
                    grouped(self.devices),
                    self.gateways,
                    self.threads,
                    ms(self.ttl_us)
                ),
            ),
            (
                "pacing",
                match self.period_us {
                    Some(p) => format!("each device every {}", ms(p)),
                    None => "--max: as fast as possible".into(),
                },
            ),
            (
                "sent",
                format!(
                    "{} commands in {:.1} s = {}/s, {} pipelines, {} errors{}",
                    grouped(self.sent),
                    self.seconds,
                    si(self.sent as f64 / self.seconds.max(1e-9)),
                    grouped(self.pipelines),
                    self.errors,
                    self.last_error
                        .as_ref()
                        .map_or(String::new(), |e| format!(" (last: {e})"))
                ),
            ),
            (
                "accepted",
                format!(
                    "{} replies = {}/s",
                    grouped(self.accepted),
                    si(self.accepted_per_s())
                ),
            ),
            (
                "memory",
                format!(
                    "used_memory {} → {} bytes with {} keys: {:.1} bytes per user",
                    grouped(self.memory_before),
                    grouped(self.memory_online),
                    grouped(self.keys_online),
                    self.bytes_per_user()
                ),
            ),
            (
                "expiries",
                format!(
                    "expected {}, observed {}, missing {}, foreign {}",
                    grouped(self.expected_expiries),
                    grouped(self.expired),
                    grouped(self.missing()),
                    grouped(self.foreign_expiries)
                ),
            ),
            ("lateness", self.lateness.line()),
        ];
        for (k, v) in rows {
            let _ = writeln!(out, "{k:>10}  {v}");
        }
        out
    }
}

fn failed(e: impl std::fmt::Display) -> RunError {
    RunError::failed(format!("redis: {e}"))
}

/// Key of a device.
fn key(user: u64, device: u32) -> String {
    format!("presence:{user}:{device}")
}

/// User id and device of a key of ours.
fn parse_key(k: &str) -> Option<(u64, u32)> {
    let rest = k.strip_prefix("presence:")?;
    let (u, d) = rest.split_once(':')?;
    Some((u.parse().ok()?, d.parse().ok()?))
}

/// What the senders and the expiry watcher share.
struct Shared {
    clock: Clock,
    user_base: u64,
    devices: Vec<u8>,
    /// First device slot of each user in `last_send`.
    offsets: Vec<u64>,
    /// Per device: the send time (µs on `clock`) of the last pipeline that SET it, 0 if none.
    last_send: Vec<AtomicU64>,
    ttl_us: u64,
    sent: AtomicU64,
    accepted: AtomicU64,
    pipelines: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
    stop: AtomicBool,
    expired: AtomicU64,
    foreign: AtomicU64,
    lateness: Mutex<Histogram<u64>>,
}

impl Shared {
    fn slot(&self, user: u64, device: u32) -> Option<usize> {
        let u = usize::try_from(user.checked_sub(self.user_base)?).ok()?;
        let d = *self.devices.get(u)?;
        if device == 0 || device > u32::from(d) {
            return None;
        }
        Some((self.offsets[u] + u64::from(device) - 1) as usize)
    }
}

/// One gateway: a connection and its pipeline.
struct Gw {
    con: redis::Connection,
    pipe: redis::Pipeline,
    /// Device slots SET by the queued commands (stamped when the pipeline is sent).
    slots: Vec<usize>,
}

impl Gw {
    fn push_set(&mut self, sh: &Shared, user: u64, device: u32, ttl_ms: u64) {
        self.pipe
            .cmd("SET")
            .arg(key(user, device))
            .arg("online")
            .arg("PX")
            .arg(ttl_ms);
        if let Some(s) = sh.slot(user, device) {
            self.slots.push(s);
        }
        if self.pipe.len() >= BATCH {
            self.flush(sh);
        }
    }

    fn push_del(&mut self, sh: &Shared, user: u64, device: u32) {
        self.pipe.cmd("DEL").arg(key(user, device));
        if self.pipe.len() >= BATCH {
            self.flush(sh);
        }
    }

    fn flush(&mut self, sh: &Shared) {
        let n = self.pipe.len() as u64;
        if n == 0 {
            return;
        }
        let now = sh.clock.now_us().max(1);
        for &s in &self.slots {
            sh.last_send[s].store(now, Ordering::Relaxed);
        }
        self.slots.clear();
        sh.sent.fetch_add(n, Ordering::Relaxed);
        sh.pipelines.fetch_add(1, Ordering::Relaxed);
        match self.pipe.query::<Vec<redis::Value>>(&mut self.con) {
            Ok(replies) => {
                sh.accepted
                    .fetch_add(replies.len() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                sh.errors.fetch_add(1, Ordering::Relaxed);
                *super::lock(&sh.last_error) = Some(e.to_string());
            }
        }
        self.pipe.clear();
    }
}

/// A sender thread's part: users `first..end`, split among its gateways.
struct Part {
    gws: Vec<Gw>,
    first: u32,
    end: u32,
    block: u32,
    first_gateway: u32,
}

impl Part {
    fn beat(&mut self, sh: &Shared, u: u32, ttl_ms: u64) {
        let g = (u / self.block - self.first_gateway) as usize;
        let user = sh.user_base + u64::from(u);
        let d = sh.devices[u as usize];
        if let Some(gw) = self.gws.get_mut(g) {
            for device in 1..=u32::from(d) {
                gw.push_set(sh, user, device, ttl_ms);
            }
        }
    }

    fn logout(&mut self, sh: &Shared, u: u32) {
        let g = (u / self.block - self.first_gateway) as usize;
        let user = sh.user_base + u64::from(u);
        let d = sh.devices[u as usize];
        if let Some(gw) = self.gws.get_mut(g) {
            for device in 1..=u32::from(d) {
                gw.push_del(sh, user, device);
            }
        }
    }

    fn flush(&mut self, sh: &Shared) {
        for g in &mut self.gws {
            g.flush(sh);
        }
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

/// Runs the load described by `args` against the Redis server `url`.
pub fn run(args: &Args, url: &str) -> Result<RedisSummary, RunError> {
    if !matches!(args.scenario, Scenario::Steady | Scenario::Storm) {
        return Err(RunError::usage(format!(
            "--target redis runs the steady and storm scenarios only, not {}",
            args.scenario.name()
        )));
    }
    if args.max && args.scenario == Scenario::Storm {
        return Err(RunError::usage(
            "--max has no schedule, and storm is about timing: use --rate or --interval",
        ));
    }
    if args.gateways > args.users {
        return Err(RunError::usage(format!(
            "--gateways {} is more than --users {}: every gateway needs a user",
            args.gateways, args.users
        )));
    }
    let interval = args.interval.unwrap_or(DEFAULT_INTERVAL);
    let grace = args.grace.unwrap_or(DEFAULT_GRACE);
    let ttl = interval + 2 * grace;
    let ttl_ms = (ttl.as_millis() as u64).max(1);
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

    let mut rng = Rng::new(args.seed);
    let devices = population::draw_devices(args.users, args.devices, &mut rng);
    let mut offsets = Vec::with_capacity(devices.len());
    let mut total = 0u64;
    for &d in &devices {
        offsets.push(total);
        total += u64::from(d);
    }
    let period_us = if args.max {
        None
    } else {
        Some(match (args.rate, args.interval) {
            (Some(rate), _) => ((total as f64 / rate * 1e6) as u64).max(1000),
            _ => interval.as_micros() as u64,
        })
    };
    if let Some(p) = period_us {
        if p >= ttl.as_micros() as u64 {
            return Err(RunError::usage(format!(
                "each device would beat every {} ms, not inside its key's TTL of {} ms: \
                 raise --rate or --grace",
                p / 1000,
                ttl_ms
            )));
        }
    }
    let clock = Clock::start();
    let sh = Arc::new(Shared {
        clock,
        user_base: args.user_base,
        devices,
        offsets,
        last_send: (0..total).map(|_| AtomicU64::new(0)).collect(),
        ttl_us: ttl_ms * 1000,
        sent: AtomicU64::new(0),
        accepted: AtomicU64::new(0),
        pipelines: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        last_error: Mutex::new(None),
        stop: AtomicBool::new(false),
        expired: AtomicU64::new(0),
        foreign: AtomicU64::new(0),
        lateness: Mutex::new(
            Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| failed(e.to_string()))?,
        ),
    });

    // The expiry watcher.
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("Ex")
        .query::<()>(&mut control)
        .map_err(failed)?;
    let mut sub = connect()?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let watcher = {
        let sh = sh.clone();
        std::thread::Builder::new()
            .name("redis-expiry".into())
            .spawn(move || watch_expiries(&mut sub, db, &sh, &ready_tx))
            .map_err(failed)?
    };
    match ready_rx.recv_timeout(Duration::from_secs(5)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(failed(e)),
        Err(_) => return Err(failed("the expiry subscription did not start")),
    }
    let memory_before = used_memory(&mut control)?;

    // Senders.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let threads = args.threads.unwrap_or(cores).min(args.gateways).max(1);
    let block = args.users.div_ceil(args.gateways);
    let duration_us = match (args.duration, args.scenario) {
        (Some(d), _) => d.as_micros() as u64,
        (None, Scenario::Storm) => args
            .storm_after
            .map_or(2 * period_us.unwrap_or(0), |d| d.as_micros() as u64),
        (None, _) => 30_000_000,
    };
    let start_us = clock.now_us() + 20_000;
    let end_us = start_us + duration_us;
    let batch_delay_us = (args.batch_delay.as_micros() as u64).max(100);
    let online_at = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for t in 0..threads {
        let g0 = t * args.gateways / threads;
        let g1 = (t + 1) * args.gateways / threads;
        let mut gws = Vec::new();
        for _ in g0..g1 {
            gws.push(Gw {
                con: connect()?,
                pipe: redis::pipe(),
                slots: Vec::new(),
            });
        }
        let mut part = Part {
            gws,
            first: (g0 * block).min(args.users),
            end: (g1 * block).min(args.users),
            block,
            first_gateway: g0,
        };
        let sh = sh.clone();
        let online_at = online_at.clone();
        let h = std::thread::Builder::new()
            .name(format!("redis-sender-{t}"))
            .spawn(move || {
                clock.sleep_until(start_us);
                send(
                    &mut part,
                    &sh,
                    period_us,
                    ttl_ms,
                    end_us,
                    batch_delay_us,
                    &online_at,
                );
                part
            })
            .map_err(failed)?;
        handles.push(h);
    }
    // Memory once every device is online (after the first pass of every thread).
    let mut memory_online = 0;
    let mut keys_online = 0;
    loop {
        std::thread::sleep(Duration::from_millis(20));
        if memory_online == 0 && online_at.load(Ordering::Acquire) == u64::from(threads) {
            memory_online = used_memory(&mut control)?;
            keys_online = dbsize(&mut control)?;
        }
        if handles.iter().all(|h| h.is_finished()) {
            break;
        }
    }
    let stop_us = clock.now_us();
    let seconds = stop_us.saturating_sub(start_us) as f64 / 1e6;
    let sent = sh.sent.load(Ordering::Relaxed);
    let accepted = sh.accepted.load(Ordering::Relaxed);
    let pipelines = sh.pipelines.load(Ordering::Relaxed);
    if memory_online == 0 {
        memory_online = used_memory(&mut control)?;
        keys_online = dbsize(&mut control)?;
    }
    let mut parts: Vec<Part> = handles.into_iter().filter_map(|h| h.join().ok()).collect();

    let mut expected_expiries = 0;
    if args.scenario == Scenario::Storm {
        // Everyone is silent: wait until every device has expired (or the settle time).
        expected_expiries = sh
            .last_send
            .iter()
            .filter(|a| a.load(Ordering::Relaxed) > 0)
            .count() as u64;
        let settle_us = args
            .settle
            .map_or(ttl_ms * 1000 + 10_000_000, |d| d.as_micros() as u64);
        let until = clock.now_us() + settle_us;
        while clock.now_us() < until && sh.expired.load(Ordering::Relaxed) < expected_expiries {
            std::thread::sleep(Duration::from_millis(50));
        }
    } else if !args.no_logout {
        for p in &mut parts {
            for u in p.first..p.end {
                p.logout(&sh, u);
            }
            p.flush(&sh);
        }
    }
    sh.stop.store(true, Ordering::Release);
    let _ = watcher.join();
    let lateness = Percentiles::of(&super::lock(&sh.lateness));
    let last_error = super::lock(&sh.last_error).clone();
    Ok(RedisSummary {
        target: url.to_string(),
        scenario: args.scenario.name().to_string(),
        users: args.users,
        devices: total,
        gateways: args.gateways,
        threads,
        period_us,
        ttl_us: ttl_ms * 1000,
        seconds,
        sent,
        accepted,
        pipelines,
        errors: sh.errors.load(Ordering::Relaxed),
        last_error,
        memory_before,
        memory_online,
        keys_online,
        expired: sh.expired.load(Ordering::Relaxed),
        expected_expiries,
        foreign_expiries: sh.foreign.load(Ordering::Relaxed),
        lateness,
    })
}

/// A sender thread: `--max` cycles through its users as fast as replies come back; on a
/// schedule, user j of n beats at start + k × period + j × period / n.
fn send(
    part: &mut Part,
    sh: &Shared,
    period_us: Option<u64>,
    ttl_ms: u64,
    end_us: u64,
    batch_delay_us: u64,
    online_at: &AtomicU64,
) {
    let n = u64::from(part.end - part.first);
    if n == 0 {
        online_at.fetch_add(1, Ordering::AcqRel);
        return;
    }
    let start = sh.clock.now_us();
    let mut done = 0u64;
    let mut last_flush = start;
    let mut reported = false;
    loop {
        let now = sh.clock.now_us();
        if now >= end_us || sh.stop.load(Ordering::Relaxed) {
            break;
        }
        let due = match period_us {
            None => done + 256,
            Some(p) => (u128::from(now - start) * u128::from(n) / u128::from(p)) as u64 + 1,
        };
        while done < due {
            let u = part.first + (done % n) as u32;
            part.beat(sh, u, ttl_ms);
            done += 1;
        }
        if !reported && done >= n {
            part.flush(sh);
            online_at.fetch_add(1, Ordering::AcqRel);
            reported = true;
        }
        let now = sh.clock.now_us();
        if now >= last_flush + batch_delay_us {
            part.flush(sh);
            last_flush = now;
        }
        if let Some(p) = period_us {
            let next = start + ((u128::from(done) * u128::from(p)) / u128::from(n)) as u64;
            let wake = next.min(last_flush + batch_delay_us).min(end_us);
            sh.clock.sleep_until(wake.max(now + 20));
        }
    }
    part.flush(sh);
    if !reported {
        online_at.fetch_add(1, Ordering::AcqRel);
    }
}

fn watch_expiries(
    con: &mut redis::Connection,
    db: i64,
    sh: &Shared,
    ready: &std::sync::mpsc::Sender<Result<(), String>>,
) {
    let mut ps = con.as_pubsub();
    let started = ps
        .psubscribe(format!("__keyevent@{db}__:expired"))
        .and_then(|()| ps.set_read_timeout(Some(Duration::from_millis(100))));
    let _ = ready.send(started.map_err(|e| e.to_string()));
    let mut local = Vec::new();
    loop {
        match ps.get_message() {
            Ok(msg) => {
                let now = sh.clock.now_us();
                let k: String = msg.get_payload().unwrap_or_default();
                let last = parse_key(&k)
                    .and_then(|(u, d)| sh.slot(u, d))
                    .map_or(0, |s| sh.last_send[s].load(Ordering::Relaxed));
                if last == 0 {
                    sh.foreign.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                local.push(now.saturating_sub(last + sh.ttl_us).max(1));
                if local.len() >= 1024 {
                    record(sh, &mut local);
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
    let mut h = super::lock(&sh.lateness);
    for &v in local.iter() {
        h.saturating_record(v);
    }
    sh.expired.fetch_add(local.len() as u64, Ordering::Relaxed);
    local.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_info_fields_parse() {
        assert_eq!(parse_key(&key(42, 3)), Some((42, 3)));
        assert_eq!(parse_key("other:1:2"), None);
        let info = "# Memory\r\nused_memory:123456\r\nused_memory_human:120K\r\n";
        assert_eq!(info_field(info, "used_memory"), 123_456);
        assert_eq!(info_field(info, "nothing"), 0);
    }
}
