//! The run's plan: the command line resolved against what the daemon announced in WELCOME
//! (timings, ports) and the drawn population, with the checks that need both.

use super::cli::{Args, Scenario};
use super::rng::Rng;
use presenced_client::WelcomeInfo;
use std::net::SocketAddr;

/// A lateness beyond which a heartbeat counts as sent late.
pub const LATE_US: u64 = 10_000;

/// The daemon's presence timings, in microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    /// `heartbeat_interval`.
    pub interval_us: u64,
    /// `grace`.
    pub grace_us: u64,
    /// The timer tick.
    pub tick_us: u64,
    /// `interval + 2 × grace`: silence after which a device is offline.
    pub timeout_us: u64,
}

impl Timings {
    /// The timings of a WELCOME.
    pub fn from_welcome(welcome: &WelcomeInfo) -> Timings {
        let t = welcome.timings;
        let interval_us = u64::from(t.heartbeat_interval_ms) * 1000;
        let grace_us = u64::from(t.grace_ms) * 1000;
        Timings {
            interval_us,
            grace_us,
            tick_us: u64::from(t.tick_us).max(1),
            timeout_us: interval_us + 2 * grace_us,
        }
    }
}

/// How heartbeats are paced.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pacing {
    /// Every connected device in turn, as fast as possible.
    Max,
    /// Each device on its own schedule in absolute time: one beat per `period_us` on average,
    /// each gap drawn uniformly from `gap_min_us..=gap_max_us`.
    Scheduled {
        /// Mean gap between two beats of one device.
        period_us: u64,
        /// Shortest gap.
        gap_min_us: u64,
        /// Longest gap.
        gap_max_us: u64,
    },
}

/// Storm timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Storm {
    /// How long users heartbeat before each storm.
    pub after_us: u64,
    /// How long every gateway stays silent.
    pub silence_us: u64,
}

impl Storm {
    /// One cycle: heartbeating, then silence.
    pub fn cycle_us(&self) -> u64 {
        self.after_us + self.silence_us
    }
}

/// Flap's extra disorder, per heartbeat.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Flap {
    /// Probability that a device of a user with another connected device logs out, to come
    /// back within one period.
    pub drop_device: f64,
    /// Probability that a beat is sent twice.
    pub duplicate: f64,
}

/// Everything a run needs to know, resolved and checked.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The scenario.
    pub scenario: Scenario,
    /// The gateways' key: datagrams are signed with it.
    pub key: Option<presenced_wire::auth::Key>,
    /// Simulated users.
    pub users: u32,
    /// User id of user index 0.
    pub user_base: u64,
    /// Simulated gateways.
    pub gateways: u32,
    /// Sender threads.
    pub threads: u32,
    /// Mean devices per user asked for.
    pub devices_mean: f64,
    /// Devices drawn in total.
    pub total_devices: u64,
    /// Shared heartbeat address.
    pub heartbeat: SocketAddr,
    /// Per-shard heartbeat addresses when shard-aware, else empty.
    pub shard_addrs: Vec<SocketAddr>,
    /// The daemon's shard count.
    pub shards: u16,
    /// The daemon's timings.
    pub daemon: Timings,
    /// Heartbeat pacing.
    pub pacing: Pacing,
    /// Scenario run time.
    pub duration_us: u64,
    /// Logins plus logouts per second (churn, fanout).
    pub churn_per_s: f64,
    /// Push links observing.
    pub observers: u32,
    /// Users observed and checked: indices `0..watch`.
    pub watch: u32,
    /// Observers use the firehose.
    pub firehose: bool,
    /// Storm timing (storm only).
    pub storm: Option<Storm>,
    /// Flap's disorder (flap only).
    pub flap: Option<Flap>,
    /// Transitions caused before this much of the run has passed are not timed.
    pub warmup_us: u64,
    /// Whether timing also waits, after `warmup_us`, for the initial logins to be observed.
    pub warmup_until_settled: bool,
    /// Longest wait of a partial datagram.
    pub batch_delay_us: u64,
    /// Longest wait for outstanding transitions at the end.
    pub settle_us: u64,
    /// Log every user out at the end.
    pub logout_at_end: bool,
    /// Seed of every draw.
    pub seed: u64,
    /// A beat sent later than this after its time may have left its device's deadline: its
    /// user's extra transitions are excused, not counted as violations.
    pub excuse_after_us: u64,
}

/// The largest gap a regular beat may have: one grace (at least two ticks) inside the timeout.
fn gap_limit(t: &Timings) -> u64 {
    t.timeout_us.saturating_sub(t.grace_us.max(2 * t.tick_us))
}

impl Plan {
    /// Resolves `args` against the daemon's `welcome`, for a population of `total_devices`,
    /// on a machine with `cores` cores.
    pub fn resolve(
        args: &Args,
        welcome: &WelcomeInfo,
        total_devices: u64,
        cores: u32,
    ) -> Result<Plan, String> {
        let daemon = Timings::from_welcome(welcome);
        let scenario = args.scenario;
        let heartbeat = args
            .heartbeat
            .unwrap_or_else(|| SocketAddr::new(args.link.ip(), welcome.heartbeat_port));
        let shard_addrs = if args.shard_aware {
            welcome.heartbeat_addrs(heartbeat.ip()).1
        } else {
            Vec::new()
        };
        if args.gateways > args.users {
            return Err(format!(
                "--gateways {} is more than --users {}: every gateway needs a user",
                args.gateways, args.users
            ));
        }
        if args.max && matches!(scenario, Scenario::Storm | Scenario::Flap) {
            return Err(format!(
                "--max has no schedule, and {} is about timing: use --rate or --interval",
                scenario.name()
            ));
        }
        if args.churn.is_some() && !scenario.churns() {
            return Err(format!(
                "--churn applies to the churn and fanout scenarios, not {}",
                scenario.name()
            ));
        }
        let limit = gap_limit(&daemon);
        let pacing = if args.max {
            Pacing::Max
        } else {
            let period_us = match (args.rate, args.interval) {
                (Some(rate), _) => (total_devices as f64 / rate * 1e6) as u64,
                (None, Some(interval)) => interval.as_micros() as u64,
                (None, None) => daemon.interval_us,
            };
            if period_us < 1000 {
                return Err(format!(
                    "each device would heartbeat every {period_us} µs (under 1 ms): \
                     use --max, a lower --rate or more --users"
                ));
            }
            let (gap_min_us, gap_max_us) = if scenario == Scenario::Flap {
                let room = limit.saturating_sub(period_us);
                let w = (period_us * 3 / 4).min(room);
                (period_us - w, period_us + w)
            } else {
                let w = (period_us as f64 * args.jitter) as u64;
                (period_us - w, period_us + w)
            };
            if gap_max_us > limit || period_us > limit {
                return Err(format!(
                    "heartbeat gaps of up to {} ms would not stay one grace inside the daemon's \
                     timeout of {} ms (interval {} ms + 2 × grace {} ms): raise --rate, shorten \
                     --interval, lower --jitter or --users",
                    gap_max_us.max(period_us) / 1000,
                    daemon.timeout_us / 1000,
                    daemon.interval_us / 1000,
                    daemon.grace_us / 1000
                ));
            }
            Pacing::Scheduled {
                period_us,
                gap_min_us,
                gap_max_us,
            }
        };
        let period_us = match pacing {
            Pacing::Scheduled { period_us, .. } => period_us,
            Pacing::Max => daemon.interval_us,
        };
        let storm = (scenario == Scenario::Storm).then(|| Storm {
            after_us: args
                .storm_after
                .map_or(2 * period_us, |d| d.as_micros() as u64),
            silence_us: daemon.timeout_us + (daemon.grace_us / 2).max(4 * daemon.tick_us),
        });
        if let Some(storm) = storm {
            if storm.after_us < period_us {
                return Err(format!(
                    "--storm-after {} ms is shorter than one heartbeat period ({} ms): not every \
                     user would be online before the storm",
                    storm.after_us / 1000,
                    period_us / 1000
                ));
            }
        }
        let duration_us = match (args.duration, storm) {
            (Some(d), _) => d.as_micros() as u64,
            (None, Some(s)) => s.cycle_us() + period_us,
            (None, None) => 30_000_000,
        };
        if let Some(storm) = storm {
            if duration_us <= storm.cycle_us() {
                return Err(format!(
                    "--duration {} ms ends before the first reconnect ({} ms of heartbeats, then \
                     {} ms of silence): give a longer --duration or a shorter --storm-after",
                    duration_us / 1000,
                    storm.after_us / 1000,
                    storm.silence_us / 1000
                ));
            }
        }
        if duration_us == 0 {
            return Err("--duration must be more than 0".into());
        }
        let observers = observers_asked(args);
        let watch = args.watch.unwrap_or(args.users);
        if watch > args.users {
            return Err(format!(
                "--watch {watch} is more than --users {}",
                args.users
            ));
        }
        let max_subscriptions = welcome.limits.max_subscriptions;
        if !args.firehose && watch > max_subscriptions {
            return Err(format!(
                "the daemon lets a link subscribe to {max_subscriptions} users, fewer than the \
                 {watch} watched: lower --watch or use --firehose"
            ));
        }
        let churn_per_s = if scenario.churns() {
            args.churn
                .unwrap_or_else(|| (f64::from(args.users) / 100.0).max(1.0))
        } else {
            0.0
        };
        let threads = args
            .threads
            .unwrap_or(cores.max(1))
            .min(args.gateways)
            .max(1);
        let gap_max = match pacing {
            Pacing::Scheduled { gap_max_us, .. } => gap_max_us,
            Pacing::Max => 0,
        };
        let key = match &args.key_file {
            Some(path) => Some(
                presenced_client::read_key_file(path)
                    .map_err(|e| format!("--key-file {}: {e}", path.display()))?,
            ),
            None => None,
        };
        Ok(Plan {
            scenario,
            key,
            users: args.users,
            user_base: args.user_base,
            gateways: args.gateways,
            threads,
            devices_mean: args.devices,
            total_devices,
            heartbeat,
            shard_addrs,
            shards: welcome.shard_count,
            daemon,
            pacing,
            duration_us,
            churn_per_s,
            observers,
            watch,
            firehose: args.firehose,
            storm,
            flap: (scenario == Scenario::Flap).then_some(Flap {
                drop_device: 0.02,
                duplicate: 0.02,
            }),
            warmup_us: match (args.warmup, scenario) {
                (Some(w), _) => w.as_micros() as u64,
                (None, Scenario::Churn | Scenario::Fanout | Scenario::Storm) => period_us,
                (None, _) => 0,
            },
            warmup_until_settled: args.warmup.is_none()
                && matches!(
                    scenario,
                    Scenario::Churn | Scenario::Fanout | Scenario::Storm
                ),
            batch_delay_us: (args.batch_delay.as_micros() as u64).max(100),
            settle_us: args
                .settle
                .map_or(daemon.timeout_us + 2_000_000, |d| d.as_micros() as u64),
            logout_at_end: !args.no_logout,
            seed: args.seed,
            excuse_after_us: daemon
                .timeout_us
                .saturating_sub(gap_max)
                .saturating_sub(2 * daemon.tick_us),
        })
    }

    /// How long the daemon may be left to drain its sockets after the senders stop before the
    /// logout sweep must start: until the first device could time out (less a margin), and
    /// at most 3 s.
    pub fn quiet_window_us(&self) -> u64 {
        let t = &self.daemon;
        let left = match self.pacing {
            Pacing::Scheduled { gap_max_us, .. } => t.timeout_us.saturating_sub(gap_max_us),
            Pacing::Max => t.timeout_us / 2,
        };
        left.saturating_sub(2 * t.tick_us + 30_000).min(3_000_000)
    }

    /// A device's heartbeat period (with `--max`, the daemon's interval, used to place
    /// reconnects and drops).
    pub fn period_us(&self) -> u64 {
        match self.pacing {
            Pacing::Scheduled { period_us, .. } => period_us.max(1),
            Pacing::Max => self.daemon.interval_us.max(1),
        }
    }

    /// The next gap between a device's beats, drawn from the jitter range (0 with `--max`).
    #[inline]
    pub fn gap(&self, rng: &mut Rng) -> u64 {
        match self.pacing {
            Pacing::Scheduled {
                gap_min_us,
                gap_max_us,
                ..
            } => gap_min_us + rng.below(gap_max_us - gap_min_us + 1),
            Pacing::Max => 0,
        }
    }

    /// Users per gateway block (the last block may be shorter).
    pub fn users_per_gateway(&self) -> u32 {
        self.users.div_ceil(self.gateways)
    }

    /// Whether the last user id fits in 64 bits.
    pub fn ids_fit(&self) -> bool {
        self.user_base.checked_add(u64::from(self.users)).is_some()
    }
}

/// The observers `args` ask for: `--observers`, by default 8 for fanout and 1 otherwise.
pub fn observers_asked(args: &Args) -> u32 {
    args.observers
        .unwrap_or(if args.scenario == Scenario::Fanout {
            8
        } else {
            1
        })
}
