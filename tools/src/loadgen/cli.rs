//! The command line of `presence-loadgen`: every flag with its help, and value parsers that
//! say what is wrong with a bad value.

use crate::parse_duration;
use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What the simulated gateways do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// Every user comes online (first heartbeats spread over one period) and keeps
    /// heartbeating. Expected transitions: one online per user.
    Steady,
    /// Steady, plus `--churn` users per second logging in or out (each a full login of all
    /// the user's devices, or a logout of all of them).
    Churn,
    /// Users heartbeat for `--storm-after`, then every gateway goes silent for longer than the
    /// daemon's deadline (every user must time out), then all users reconnect at once; repeats.
    Storm,
    /// Heartbeats with wide jitter, duplicates, and devices of multi-device users dropping and
    /// reconnecting, always inside the deadline: zero transitions are allowed after the
    /// initial onlines.
    Flap,
    /// Churn watched by `--observers` push links (default 8), all subscribed to the same users:
    /// every transition must reach every observer.
    Fanout,
}

impl Scenario {
    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Steady => "steady",
            Scenario::Churn => "churn",
            Scenario::Storm => "storm",
            Scenario::Flap => "flap",
            Scenario::Fanout => "fanout",
        }
    }

    /// Whether users log in and out at `--churn` per second.
    pub fn churns(self) -> bool {
        matches!(self, Scenario::Churn | Scenario::Fanout)
    }
}

const ABOUT: &str = "Load generator for presenced: simulated gateways send heartbeats of \
simulated users' devices over UDP while push-link observers check every transition and measure \
its latency.";

const LONG_ABOUT: &str = "Load generator for presenced: simulated gateways send heartbeats of \
simulated users' devices over UDP while push-link observers check every transition and measure \
its latency.

The run: connect a control link (WELCOME gives the timings and heartbeat ports), subscribe the \
observers, log out users left online by an earlier run, run the scenario for --duration, let the \
daemon drain, read its counters, log every simulated user out (unless --no-logout) and wait for \
the last transitions (--settle). Heartbeats are open-loop: each device has its own schedule in \
absolute time, and a sender that falls behind sends the backlog at once instead of slowing down; \
beats sent more than 10 ms after their time are counted as late.

Every entry carries the ACTIVITY flag, so no user goes idle. Device ids are 1..=8 per user; user \
ids are --user-base onwards.

Measures: transition latency (from the send of the datagram that causes a login or logout to \
the push reaching an observer), offline-detection lateness (arrival of a timeout push minus the \
deadline: last heartbeat sent + interval + 2 × grace), heartbeats per second offered and \
accepted (the daemon's per-shard \"heartbeats\" counters), and datagram and entry loss.

Checks: every transition the simulation causes must reach every observer once (missing and \
spurious are violations; flap expects none after the initial onlines), each continues from the \
state seen before, and each user's versions only grow. Users the generator itself served too \
late to stay inside the deadline are reported as excused; logins that never reached the daemon \
while it was losing datagrams are reported as lost; neither counts as a violation.

With --cluster the generator loads a presenced cluster: each entry goes to every replica of its user and each user is observed at its primary, both following the member map while members are killed, restarted, join or leave; false and missing transitions are also counted per member (see --cluster for how each is charged).

Exit status: 0 no violation; 1 violations found; 2 bad arguments; 3 the run could not be done \
(no daemon, users still online after the initial logout, ...).";

/// Command line.
#[derive(Parser, Debug, Clone)]
#[command(name = "presence-loadgen", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Args {
    /// The daemon's push link (QUIC, UDP) address. Its WELCOME gives the heartbeat interval,
    /// grace, tick and heartbeat ports.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7060")]
    pub link: SocketAddr,

    /// Load a presenced cluster (SPEC.md § P6.14) instead of one daemon: the push-link
    /// addresses of one or more of its members, comma-separated (each a seed: the first that
    /// answers with a member map gives it). Every heartbeat entry goes to every replica of its
    /// user, and the observers subscribe each user at its primary (presenced_client's
    /// ClusterHeartbeats and ClusterLink), both following the member map as it changes, so a
    /// member killed or restarted mid-run (by an operator or a test) changes nothing the
    /// checks see while the cluster keeps every user on a live replica. Timings come from the
    /// members' WELCOMEs (they must agree); the daemon counters reported are every member's,
    /// summed, from a control link to each member of the first map (a member killed or
    /// restarted during the run is left out of the sums, and said so). A transition latency
    /// counts from the moment its entry is queued (up to --batch-delay before its datagrams
    /// leave). False and missing transitions are also counted per member: each is attributed
    /// to the member that was its user's primary, under the generator's map, when the
    /// simulation caused the transition (a missing one: the transition that never came; a
    /// false one: the user's latest caused transition, whose state it contradicts). Not with
    /// --link, --heartbeat, --shard-aware, --firehose, --target or --restart-cmd.
    #[arg(
        long,
        value_name = "ADDR[,ADDR...]",
        value_delimiter = ',',
        num_args = 1..,
        conflicts_with_all = ["link", "heartbeat", "shard_aware", "firehose", "target", "restart_cmd"]
    )]
    pub cluster: Option<Vec<SocketAddr>>,

    /// What to load: presenced (the default; --link, --heartbeat) or a Redis server given as
    /// `redis://HOST:PORT[/DB]`, which gets the seed design's presence in Redis instead, with
    /// the same scenarios, checks and report. Each heartbeat is `SET presence:<user>:<device>
    /// online PX <interval + 2 × grace> GET` (Redis 6.2 or later), pipelined: one pipeline per
    /// gateway batch of up to 89 entries, the entries of one datagram. A nil reply is a login:
    /// the gateway publishes `online <device>` on channel `presence:<user>` in its next
    /// pipeline, sent at once. A logout is `GETDEL`, and `offline <device>` is published if the
    /// key was there. Presence is per device (a user's devices are not aggregated; with
    /// --devices 1 devices and users are the same). Observers SUBSCRIBE to the watched users'
    /// channels (--firehose: PSUBSCRIBE presence:*); transition latency is the send of the
    /// pipeline with the SET or GETDEL → the publication's arrival at an observer. Offline by
    /// silence is the keyspace `expired` event (a separate connection sets
    /// `notify-keyspace-events Ex`); an expiry of a key still kept alive is a violation. Redis
    /// has no WELCOME: the timings come from --interval (default 20s) and --grace (default
    /// 12s). Storm runs one cycle (no reconnect); flap drops no devices. Keys of this run's
    /// users are deleted first.
    ///
    /// Or a presence-gateway given as `ws://HOST:PORT`: each of --users is one browser on a
    /// WebSocket, watching a partner, flipping its page's visibility every --toggle-every;
    /// latency is browser → gateway → daemon → gateway → browser (needs
    /// --gateway-secret-file; the gateway's own --link names the daemon).
    #[arg(long, value_name = "URL", value_parser = parse_target)]
    pub target: Option<String>,

    /// ws:// target only: the gateway's token secret file, to mint the browsers' tokens.
    #[arg(long, value_name = "FILE")]
    pub gateway_secret_file: Option<std::path::PathBuf>,

    /// ws:// target only: how often each browser flips its visibility (hidden, visible, …).
    #[arg(long, value_name = "DURATION", default_value = "2s", value_parser = parse_duration)]
    pub toggle_every: Duration,

    /// Redis target only: the grace of the simulated deadline (a key's TTL is --interval +
    /// 2 × GRACE). Default: 12s, presenced's default.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub grace: Option<Duration>,

    /// Where heartbeats go. Default: WELCOME's shared heartbeat port on the link's IP.
    #[arg(long, value_name = "ADDR")]
    pub heartbeat: Option<SocketAddr>,

    /// Send each entry to its owning shard's own port (from WELCOME) instead of the shared
    /// port, sparing the daemon the cross-shard hop.
    #[arg(long)]
    pub shard_aware: bool,

    /// What the simulated gateways do.
    #[arg(long, value_enum, default_value_t = Scenario::Steady)]
    pub scenario: Scenario,

    /// Simulated gateways: each has its own UDP socket, gateway id (1..=N) and sequence
    /// numbers, and a contiguous block of the users.
    #[arg(long, value_name = "N", default_value = "4", value_parser = parse_gateways)]
    pub gateways: u32,

    /// Simulated users (suffixes k and M allowed: 100k, 1M).
    #[arg(long, value_name = "N", default_value = "100k", value_parser = parse_users)]
    pub users: u32,

    /// Mean devices per user, 1 to 4.5. Each user gets 1 + a uniform draw from
    /// [0, 2 × (MEAN − 1)] rounded at random, so 2 gives 1, 2 or 3 devices (¼, ½, ¼). Multi-device
    /// users need the daemon's presence.multi_device_users to be large enough.
    #[arg(long, value_name = "MEAN", default_value = "1.5", value_parser = parse_devices)]
    pub devices: f64,

    /// The first simulated user id; users are USER_BASE .. USER_BASE + users.
    #[arg(long, value_name = "ID", default_value = "1", value_parser = parse_user_base)]
    pub user_base: u64,

    /// Each device's heartbeat period. Default: the daemon's heartbeat interval from WELCOME.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub interval: Option<Duration>,

    /// Offered heartbeats per second in total (suffixes k and M allowed): each device's period
    /// becomes devices ÷ RATE, held on schedule even when the daemon or this generator is
    /// slow.
    #[arg(long, value_name = "N", value_parser = parse_rate, conflicts_with_all = ["interval", "max"])]
    pub rate: Option<f64>,

    /// Send as fast as possible: every connected device in turn, with no schedule (steady,
    /// churn and fanout only).
    #[arg(long, conflicts_with = "interval")]
    pub max: bool,

    /// Jitter of each heartbeat gap, as a fraction of the period: gaps are drawn uniformly from
    /// period × (1 ± JITTER). Phases are drawn at random too, so senders never synchronise.
    #[arg(long, value_name = "FRACTION", default_value = "0.1", value_parser = parse_jitter)]
    pub jitter: f64,

    /// How long the scenario runs (e.g. 30s, 2m). Default: 30 s; for storm, one full cycle
    /// (--storm-after, the silence, and one period after the reconnect).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Logins plus logouts per second in churn and fanout (suffixes allowed). Default: 1 % of
    /// the users per second.
    #[arg(long, value_name = "N", value_parser = parse_churn)]
    pub churn: Option<f64>,

    /// Push links observing transitions, each subscribed to the same users. Default: 8 for
    /// fanout, else 1.
    #[arg(long, value_name = "K", value_parser = parse_observers)]
    pub observers: Option<u32>,

    /// Observe and check only the first N users (default: all). Observers hold about 13 bytes
    /// per watched user each.
    #[arg(long, value_name = "N", value_parser = parse_users)]
    pub watch: Option<u32>,

    /// Observers turn the firehose on (SUBSCRIBE_ALL) instead of subscribing to the watched
    /// users; transitions of other users are ignored.
    #[arg(long)]
    pub firehose: bool,

    /// Storm: how long users heartbeat before each storm (default: two heartbeat periods).
    /// The silence then lasts the daemon's timeout plus half a grace.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub storm_after: Option<Duration>,

    /// Transitions caused during this first part of the run are checked but not timed, so the
    /// initial logins do not swamp the latency figures. Default: for churn, fanout and storm,
    /// until one heartbeat period has passed and the initial logins have been observed (their
    /// push backlog is gone; at most 5 s more); for steady and flap, none (their only timed
    /// transitions are those logins).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub warmup: Option<Duration>,

    /// How long a gateway may hold a partial datagram before sending it.
    #[arg(long, value_name = "DURATION", default_value = "5ms", value_parser = parse_duration)]
    pub batch_delay: Duration,

    /// Sender threads; gateways are shared out among them. Default: one per core, at most one
    /// per gateway.
    #[arg(long, value_name = "N", value_parser = parse_threads)]
    pub threads: Option<u32>,

    /// Threads of the push links' runtime, which receives and checks what the observers are
    /// pushed. Default: one per observer (and the control link), at most one per core, at
    /// least 2: with fewer, the observers limit a fan-out measurement before the daemon does.
    #[arg(long, value_name = "N", value_parser = parse_threads)]
    pub observer_threads: Option<u32>,

    /// After the run, how long to wait at most for outstanding transitions. Default: the
    /// daemon's timeout plus 2 s (the wait ends as soon as every transition has arrived).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub settle: Option<Duration>,

    /// Leave the simulated users online at the end instead of logging them out (they then
    /// time out after the run).
    #[arg(long)]
    pub no_logout: bool,

    /// Seed of every random draw (devices per user, phases, jitter, churn picks).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,

    /// Restart the target mid-run with this shell command (run by `sh -c`; steady only),
    /// while the simulated gateways keep heartbeating every user. For presenced the observers
    /// then reconnect by themselves (presenced_client::Watcher: jittered backoff, subscribe
    /// again, only records whose version differs are reported), and the run counts false
    /// transitions: any transition or changed record an observer sees that the simulation did
    /// not cause (a user going offline, or offline and online again, across the restart); it
    /// reports each observer's reconnect time and the watched users whose state or version
    /// changed, or whose last seen went back, across the restart (read before and after). With
    /// durable state none may. For Redis (--target) the command restarts redis-server; the
    /// generator's connections reconnect by themselves (beats that found no connection are
    /// counted unsent), and every device whose key is missing once the server answers again
    /// (keys vanish without persistence) counts as a false offline. The command must return
    /// once the restart is under way; the target is waited for (--restart-wait). Examples: `systemctl restart presenced`;
    /// `kill -TERM $(cat presenced.pid) && while kill -0 $(cat presenced.pid) 2>/dev/null; do
    /// sleep 0.1; done && (presenced --config presenced.toml & echo $! > presenced.pid)`;
    /// `redis-cli -p 6379 shutdown nosave; redis-server --port 6379 --daemonize yes`.
    #[arg(long, value_name = "CMD")]
    pub restart_cmd: Option<String>,

    /// When --restart-cmd runs, from the start of the heartbeats. Default: half of --duration.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "restart_cmd")]
    pub restart_after: Option<Duration>,

    /// After --restart-cmd, how long the target and the observers are waited for.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
    pub restart_wait: Duration,

    /// Print the summary as one JSON object on stdout instead of a table.
    #[arg(long)]
    pub json: bool,

    /// No progress line on stderr.
    #[arg(long)]
    pub quiet: bool,

    /// Trust the daemon's certificate if issued by this CA (PEM). Default: trust any
    /// certificate, which is allowed for a loopback --link only.
    #[arg(long, value_name = "PEM")]
    pub ca: Option<PathBuf>,

    /// The name the daemon's certificate must carry.
    #[arg(long, value_name = "NAME", default_value = "localhost")]
    pub server_name: String,

    /// Sign every datagram with this key (a file of 64 hex digits), for a daemon with
    /// `auth.keys_file`: list gateway ids 1..=--gateways and 4294967295 (the clean-up gateway)
    /// there, each with this key.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,

    /// The observers' link token (a file), for a daemon whose key file lists `[links]`; the
    /// links are named by --link-name.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// The observers' link name (in the daemon's logs and its `[links]`).
    #[arg(long, value_name = "NAME", default_value = "presence-loadgen")]
    pub link_name: String,
}

/// Parses a count such as `2000`, `100k`, `1.5M` or `1_000_000`.
pub fn parse_count(text: &str) -> Result<f64, String> {
    let clean: String = text.trim().chars().filter(|&c| c != '_').collect();
    let (number, scale) = match clean.chars().last() {
        Some('k' | 'K') => (&clean[..clean.len() - 1], 1e3),
        Some('M') => (&clean[..clean.len() - 1], 1e6),
        Some('G') => (&clean[..clean.len() - 1], 1e9),
        _ => (clean.as_str(), 1.0),
    };
    match number.parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 => Ok(n * scale),
        _ => Err(format!(
            "`{text}` is not a count: give a number, optionally with k, M or G (100k, 1.5M)"
        )),
    }
}

fn whole(text: &str, min: u64, max: u64, what: &str) -> Result<u64, String> {
    let n = parse_count(text)?;
    if n.fract() != 0.0 {
        return Err(format!("`{text}` is not a whole number of {what}"));
    }
    if n < min as f64 || n > max as f64 {
        return Err(format!(
            "{what} must be between {min} and {max}, not {text}"
        ));
    }
    Ok(n as u64)
}

fn parse_gateways(text: &str) -> Result<u32, String> {
    whole(text, 1, 65_535, "gateways").map(|n| n as u32)
}

fn parse_users(text: &str) -> Result<u32, String> {
    whole(text, 1, 100_000_000, "users").map(|n| n as u32)
}

fn parse_threads(text: &str) -> Result<u32, String> {
    whole(text, 1, 256, "threads").map(|n| n as u32)
}

fn parse_observers(text: &str) -> Result<u32, String> {
    whole(text, 1, 1000, "observers").map(|n| n as u32)
}

fn parse_user_base(text: &str) -> Result<u64, String> {
    match text.trim().parse::<u64>() {
        Ok(0) => Err("user id 0 is reserved; the user base must be 1 or more".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{text}` is not a user id (1 to 2^64 − 1)")),
    }
}

fn parse_devices(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(n) if (1.0..=4.5).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{text}`: the mean devices per user must be a number from 1 to 4.5 \
             (each user then has 1 to 8 devices)"
        )),
    }
}

fn parse_jitter(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(n) if (0.0..=0.5).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{text}`: the jitter must be a fraction from 0 to 0.5 (0.1 = ±10 %)"
        )),
    }
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let n = parse_count(text)?;
    if !(1.0..=1e9).contains(&n) {
        return Err(format!(
            "`{text}`: the rate must be from 1 to 1G heartbeats per second"
        ));
    }
    Ok(n)
}

fn parse_churn(text: &str) -> Result<f64, String> {
    let n = parse_count(text)?;
    if n > 1e8 {
        return Err(format!(
            "`{text}`: at most 100M logins and logouts per second"
        ));
    }
    Ok(n)
}

fn parse_target(text: &str) -> Result<String, String> {
    let t = text.trim();
    if t.starts_with("redis://") || t.starts_with("ws://") {
        Ok(t.to_string())
    } else {
        Err(format!(
            "`{text}` is not a target: give redis://HOST:PORT, ws://HOST:PORT (a \
             presence-gateway), or leave --target out for presenced"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn counts_take_suffixes_and_refuse_junk() {
        assert_eq!(parse_count("100k"), Ok(100_000.0));
        assert_eq!(parse_count("1.5M"), Ok(1_500_000.0));
        assert_eq!(parse_count("1_000"), Ok(1000.0));
        assert!(parse_count("ten").is_err());
        assert!(parse_count("-3").is_err());
        assert!(parse_users("0").is_err());
        assert!(parse_users("1.5").is_err());
        assert_eq!(parse_users("1M"), Ok(1_000_000));
    }

    #[test]
    fn durations_and_fractions() {
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
        assert!(parse_duration("3").is_err());
        assert!(parse_jitter("0.6").is_err());
        assert!(parse_devices("0.5").is_err());
        assert!(parse_user_base("0").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        Args::command().debug_assert();
        assert!(Args::try_parse_from(["x", "--rate", "10k", "--max"]).is_err());
        assert!(Args::try_parse_from(["x", "--restart-after", "5s"]).is_err());
        let c = Args::try_parse_from(["x", "--cluster", "127.0.0.1:1,127.0.0.1:2"]).unwrap();
        assert_eq!(c.cluster.map(|seeds| seeds.len()), Some(2));
        for other in ["--link", "--heartbeat"] {
            let both = ["x", "--cluster", "127.0.0.1:1", other, "127.0.0.1:3"];
            assert!(Args::try_parse_from(both).is_err(), "{other}");
        }
        assert!(Args::try_parse_from(["x", "--cluster", "127.0.0.1:1", "--firehose"]).is_err());
        let a = Args::try_parse_from(["x", "--scenario", "flap", "--users", "2k"]).unwrap();
        assert_eq!((a.scenario, a.users), (Scenario::Flap, 2000));
    }
}
