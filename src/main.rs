//! `presenced`: the presence daemon. Heartbeats in over UDP, presence out over QUIC.

use clap::Parser;
use presenced::cli::Cli;
use presenced::daemon;
use presenced::log::Log;
use presenced::notify::{self, Liveness, Notifier};
use presenced::settings::{Settings, SettingsError, Sources};
use presenced_wire::stats::Stats;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The settings: defaults, then the file, then the shortcuts, then each `--set` in order.
fn settings(cli: &Cli) -> Result<Settings, SettingsError> {
    let mut sources = Sources::default();
    if let Some(path) = cli.config_file() {
        sources.merge_file(path)?;
    }
    for (key, value) in [
        ("ingest.listen", &cli.listen),
        ("link.listen", &cli.link_listen),
        ("shards.count", &cli.shards),
    ] {
        if let Some(value) = value {
            sources.set(key, value)?;
        }
    }
    for pair in &cli.set {
        sources.set_pair(pair)?;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    sources.build(cores)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match settings(&cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("presenced: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(file) = &cli.check_config {
        return presenced::cli::check_config(&settings, file);
    }
    let log = Log::install(settings.log.level);
    let signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ]) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    for warning in settings.warnings() {
        tracing::warn!("{warning}");
    }
    let notifier = Notifier::from_env();
    let notify = |message: &str| {
        if let Some(n) = &notifier {
            n.send(message);
        }
    };
    let shards = settings.shards.count;
    let mut running = match daemon::start(settings) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("not started: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(warning) = running.recv_buffer_warning() {
        tracing::warn!("{warning}");
    }
    tracing::info!("cores: {}", running.cores_line());
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        shards,
        "started: {}",
        running.ready_line()
    );
    println!("{}", running.ready_line());
    notify(&format!("READY=1\nSTATUS=serving, {shards} shard(s)"));
    let mut signals = signals;
    // WATCHDOG=1 while every shard thread turns its loop, checked four times per interval.
    let watchdog = notify::watchdog_interval().filter(|_| notifier.is_some());
    let mut liveness = Liveness::new(shards);
    let mut next_check = Instant::now();
    let mut stuck_reported = false;
    let mut status = Status::default();
    let reason = 'run: loop {
        for signal in signals.pending() {
            match signal {
                signal_hook::consts::SIGHUP => reload(&cli, &mut running, &log),
                signal_hook::consts::SIGINT => break 'run "SIGINT".to_string(),
                _ => break 'run "SIGTERM".to_string(),
            }
        }
        if let Some(which) = running.stopped_thread() {
            break 'run format!("the {which} thread stopped");
        }
        if notifier.is_some() {
            if let Some(line) = status.turn(&running, Instant::now()) {
                notify(&line);
            }
        }
        if let Some(interval) = watchdog.filter(|_| Instant::now() >= next_check) {
            next_check = Instant::now() + interval / 4;
            let check = liveness.check(&running.shard_progress());
            for &shard in &check.poke {
                running.poke_shard(shard);
            }
            if check.alive() {
                notify("WATCHDOG=1");
                stuck_reported = false;
            } else if !stuck_reported {
                tracing::error!(
                    stuck_shards = ?check.stuck,
                    "shard threads make no progress: the watchdog is no longer fed, systemd \
                     will restart the daemon"
                );
                stuck_reported = true;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    tracing::info!("stopping: {reason}");
    notify(&format!("STOPPING=1\nSTATUS=stopping: {reason}"));
    match running.shutdown() {
        Ok(()) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("stopped with an error: {e}");
            ExitCode::from(1)
        }
    }
}

/// `STATUS=` lines for `systemctl status`, every [`Status::EVERY`]: users and devices now,
/// heartbeats and transitions per second since the last line, links open. Asked of the hub
/// like any STATS, and read when it comes, so the main loop never waits.
#[derive(Default)]
struct Status {
    asked: Option<tokio::sync::oneshot::Receiver<Box<Stats>>>,
    next: Option<Instant>,
    /// When the last answer came, with its heartbeats and transitions.
    last: Option<(Instant, u64, u64)>,
}

impl Status {
    const EVERY: Duration = Duration::from_secs(10);

    /// Asks when due, and returns the notification once the answer is there.
    fn turn(&mut self, running: &daemon::Running, now: Instant) -> Option<String> {
        if self.asked.is_none() && self.next.map_or(true, |at| now >= at) {
            self.asked = running.ask_stats();
            self.next = Some(now + Self::EVERY);
        }
        let stats = match self.asked.as_mut()?.try_recv() {
            Ok(stats) => stats,
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => return None,
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => {
                self.asked = None;
                return None;
            }
        };
        self.asked = None;
        let sum = |f: fn(&presenced_wire::stats::ShardStats) -> u64| -> u64 {
            stats.shards.iter().map(f).sum()
        };
        let (users, devices) = (sum(|s| s.core.users), sum(|s| s.core.devices));
        let (beats, moves) = (sum(|s| s.core.heartbeats), sum(|s| s.core.transitions));
        let rates = match self.last {
            Some((at, b, t)) => {
                let secs = now.duration_since(at).as_secs_f64().max(1e-3);
                format!(
                    ", {:.0} heartbeats/s, {:.0} transitions/s",
                    beats.saturating_sub(b) as f64 / secs,
                    moves.saturating_sub(t) as f64 / secs
                )
            }
            None => String::new(),
        };
        self.last = Some((now, beats, moves));
        Some(format!(
            "STATUS=serving: {users} users, {devices} devices{rates}, {} links",
            stats.link.links
        ))
    }
}

/// SIGHUP: reads the settings again (the file, then the command line) and puts in force what
/// can change without a restart ([`daemon::Running::reload`]); one line says what it reloaded,
/// what it could not, and which changed settings wait for a restart. On an error reading the
/// settings the old ones all stay in force.
fn reload(cli: &Cli, running: &mut daemon::Running, log: &Log) {
    let fresh = match settings(cli) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("SIGHUP: settings not reloaded, the old ones stay: {e}");
            return;
        }
    };
    let report = running.reload(&fresh, log);
    if report.is_complete() {
        tracing::info!("{report}");
    } else {
        tracing::warn!("{report}");
    }
}
