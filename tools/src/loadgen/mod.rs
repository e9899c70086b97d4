//! `presence-loadgen`: simulated gateways × users × devices heartbeating a presenced daemon,
//! with push-link observers that check every transition and measure its latency.
//!
//! A run, in order ([`run`]):
//!
//! 1. connect a control link; its WELCOME gives the timings and heartbeat ports ([`plan`]);
//! 2. draw the population ([`population`]) and subscribe the observers ([`observer`]);
//! 3. log out watched users an earlier run left online, and wait until every observer sees
//!    them offline (so this run's first heartbeats are logins);
//! 4. read the daemon's counters, start the sender threads ([`sender`]) and print progress;
//! 5. at the end, wait for the daemon to drain its sockets and read its counters again;
//! 6. log every simulated user out, wait for the outstanding transitions, close the links;
//! 7. compare what each observer saw with what the simulation caused ([`report`]).
//!
//! `--cluster ADDR,…` runs them against a presenced cluster ([`cluster`]): every entry to
//! every replica of its user, observers at each user's primary, both following the map.
//!
//! `--target redis://…` runs the same scenarios against the Redis design ([`redis_target`]);
//! `--target ws://…` loads a `presence-gateway` with browsers instead ([`browsers`]).

pub mod browsers;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod cluster_observer;
pub mod control;
pub mod counters;
pub mod daemon_stats;
pub mod gateway;
pub mod observer;
pub mod owners;
pub mod plan;
pub mod population;
pub mod progress;
pub mod redis_target;
pub mod report;
pub mod restart;
pub mod rng;
pub mod schedule;
pub mod sender;
pub mod users;
pub mod verdict;
pub mod warmup;
pub mod watch_observer;

use cli::Args;
use clock::Clock;
use control::{Control, Phase};
use counters::SendCounters;
use daemon_stats::{poll_stats, quiesce, read_stats, Reading};
use observer::{Findings, Hists, Observer};
use plan::Plan;
use population::Population;
use presenced_client::{entry, ConnectOptions, HeartbeatClient, LinkClient, Trust};
use presenced_wire::State;
use progress::ProgressMeter;
use report::Summary;
use restart::RestartHook;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use verdict::{check, sent_of, setup_of, warnings};
use warmup::Warmup;
use watch_observer::WatchObserver;

/// Exit status: violations found.
pub const EXIT_VIOLATIONS: u8 = 1;
/// Exit status: bad arguments (also clap's).
pub const EXIT_USAGE: u8 = 2;
/// Exit status: the run could not be done.
pub const EXIT_FAILED: u8 = 3;

/// Why a run could not be done.
#[derive(Debug)]
pub struct RunError {
    /// Exit status.
    pub code: u8,
    /// What went wrong and what to do.
    pub message: String,
}

impl RunError {
    fn failed(message: impl Into<String>) -> RunError {
        RunError {
            code: EXIT_FAILED,
            message: message.into(),
        }
    }

    fn usage(message: impl Into<String>) -> RunError {
        RunError {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }
}

/// Runs, prints the summary and returns the exit status. With `--restart-cmd`, the restart
/// runs the command.
pub fn main(args: &Args) -> u8 {
    let mut shell;
    let hook: Option<RestartHook<'_>> = match &args.restart_cmd {
        Some(command) => {
            shell = move || restart::run_command(command);
            Some(&mut shell)
        }
        None => None,
    };
    let outcome = match &args.target {
        Some(url) if url.starts_with("ws://") => browsers::run(args, url)
            .map(|summary| (summary.to_json(), summary.table(), summary.violations())),
        Some(url) => redis_target::run(args, url, hook)
            .map(|summary| (summary.to_json(), summary.table(), summary.violations())),
        None if args.cluster.is_some() => cluster::run(args)
            .map(|summary| (summary.to_json(), summary.table(), summary.violations())),
        None => run(args, hook)
            .map(|summary| (summary.to_json(), summary.table(), summary.violations())),
    };
    match outcome {
        Ok((json, table, bad)) => {
            if args.json {
                println!("{json}");
            } else {
                print!("{table}");
            }
            if bad > 0 {
                EXIT_VIOLATIONS
            } else {
                0
            }
        }
        Err(e) => {
            eprintln!("presence-loadgen: {}", e.message);
            e.code
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn connect_options(args: &Args) -> Result<ConnectOptions, RunError> {
    let token = match &args.token_file {
        Some(path) => Some(
            presenced_client::read_token_file(path)
                .map_err(|e| RunError::usage(format!("--token-file {}: {e}", path.display())))?,
        ),
        None => None,
    };
    Ok(ConnectOptions {
        client_name: args.link_name.clone(),
        trust: match &args.ca {
            Some(path) => Trust::CaFile(path.clone()),
            None => Trust::InsecureLocal,
        },
        server_name: args.server_name.clone(),
        token,
    })
}

async fn connect(args: &Args) -> Result<LinkClient, RunError> {
    LinkClient::connect(args.link, connect_options(args)?)
        .await
        .map_err(|e| {
            RunError::failed(format!(
                "cannot open a push link to {}: {e} (is presenced running there? see --link)",
                args.link
            ))
        })
}

/// Runs the load described by `args` and returns its summary. With `restart`, the daemon is
/// restarted by it mid-run (steady only; see `--restart-cmd`): the observers are then
/// [`WatchObserver`]s, which reconnect by themselves.
pub fn run(args: &Args, mut restart: Option<RestartHook<'_>>) -> Result<Summary, RunError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let observer_threads = args.observer_threads.unwrap_or_else(|| {
        let links = plan::observers_asked(args) + 1;
        links.min(cores).max(2)
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(observer_threads as usize)
        .thread_name("loadgen-link")
        .enable_all()
        .build()
        .map_err(|e| RunError::failed(format!("cannot start the async runtime: {e}")))?;
    let clock = Clock::start();
    let mut control_link = Arc::new(rt.block_on(connect(args))?);
    let welcome = control_link.welcome().clone();

    let mut rng = rng::Rng::new(args.seed);
    let devices = population::draw_devices(args.users, args.devices, &mut rng);
    let total_devices = devices.iter().map(|&d| u64::from(d)).sum();
    let plan =
        Arc::new(Plan::resolve(args, &welcome, total_devices, cores).map_err(RunError::usage)?);
    if !plan.ids_fit() {
        return Err(RunError::usage(
            "--user-base + --users runs past the largest user id",
        ));
    }
    if restart.is_some() {
        restart::check_args(args, &plan)?;
    }
    let pop = Arc::new(Population::new(
        plan.user_base,
        devices,
        plan.watch,
        plan.observers,
    ));
    let boot_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_secs() as u32);

    // Observers: plain push links, or watchers that survive the restart.
    let shared = Arc::new(observer::Shared::default());
    let (stop_observers, stop) = tokio::sync::watch::channel(false);
    let mut links = Vec::new();
    let mut stale = Vec::new();
    let mut hists: Vec<Arc<Mutex<Hists>>> = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..plan.observers {
        let subscribe_failed =
            |e: String| RunError::failed(format!("cannot subscribe an observer: {e}"));
        if restart.is_some() {
            let o = rt
                .block_on(WatchObserver::subscribe(
                    args.link,
                    connect_options(args)?,
                    pop.clone(),
                    clock,
                    shared.clone(),
                    plan.firehose,
                    args.restart_wait,
                ))
                .map_err(subscribe_failed)?;
            stale.extend(o.stale_users());
            hists.push(o.hists());
            tasks.push(rt.spawn(o.run(stop.clone())));
        } else {
            let link = Arc::new(rt.block_on(connect(args))?);
            let o = rt
                .block_on(Observer::subscribe(
                    link.clone(),
                    pop.clone(),
                    clock,
                    shared.clone(),
                    plan.firehose,
                ))
                .map_err(|e| subscribe_failed(e.to_string()))?;
            links.push(link);
            stale.extend(o.stale_users());
            hists.push(o.hists());
            tasks.push(rt.spawn(o.run(stop.clone())));
        }
    }
    stale.sort_unstable();
    stale.dedup();
    if !stale.is_empty() {
        let mut gw = HeartbeatClient::new(u32::MAX, boot_epoch, plan.heartbeat)
            .map_err(|e| RunError::failed(format!("cannot open a UDP socket: {e}")))?;
        if let Some(key) = &plan.key {
            gw = gw.with_key(key.clone());
        }
        log_out_stale(&shared, &stale, args.quiet, &mut gw)?;
    }
    shared.running.store(true, Ordering::Release);

    // Daemon counters: a baseline now, a reading every second.
    let readings: Reading = Arc::new(Mutex::new(Vec::new()));
    let mut poller = rt.spawn(poll_stats(control_link.clone(), readings.clone(), clock));
    let mut baseline = rt.block_on(read_stats(&control_link))?;

    // Senders.
    let control = Arc::new(Control::default());
    // The simulated gateways obey the daemon's PACE, read on the control link.
    let mut pace = control_link.pace();
    let paced = control.clone();
    rt.spawn(async move {
        while pace.changed().await.is_ok() {
            let asked = *pace.borrow_and_update();
            paced.set_pace(asked);
        }
    });
    let counters = Arc::new(SendCounters::default());
    let start_us = clock.now_us() + 20_000;
    let senders = start_senders(
        &plan,
        &pop,
        &counters,
        &control,
        clock,
        start_us,
        boot_epoch,
        || None,
    )?;
    let interrupts = watch_interrupts(&rt, &control);

    let mut progress = ProgressMeter::new(clock, start_us, args.quiet || args.json);
    let threads = plan.threads;
    let mut warmup = Warmup::new(&plan, &pop, start_us);
    let restart_at_us = start_us
        + args
            .restart_after
            .map_or(plan.duration_us / 2, |d| d.as_micros() as u64);
    let mut restarted = None;
    while control.stopped() < threads {
        progress.tick(&counters, &readings, &hists, &shared, &pop);
        warmup.check(&pop, clock.now_us());
        if clock.now_us() < restart_at_us {
            continue;
        }
        let Some(hook) = restart.take() else {
            continue;
        };
        // The restarted daemon's counters start from zero: they are read from it alone.
        poller.abort();
        let _ = rt.block_on(poller);
        let old = Arc::try_unwrap(control_link)
            .map_err(|_| RunError::failed("the control link is still in use"))?;
        let at_s = clock.now_us().saturating_sub(start_us) as f64 / 1e6;
        let users: Vec<u64> = (0..pop.watch).map(|i| pop.id(i)).collect();
        let observers = u64::from(plan.observers);
        let (mut report, link) =
            restart::presenced(&rt, args, old, hook, &users, &shared, observers)?;
        report.at_s = at_s;
        restarted = Some(report);
        control_link = Arc::new(link);
        lock(&readings).clear();
        baseline = daemon_stats::DaemonCounters::default();
        poller = rt.spawn(poll_stats(control_link.clone(), readings.clone(), clock));
    }
    let stop_us = clock.now_us();
    // Senders publish before they report stopping: these are the send window's figures.
    let mut sent = sent_of(&counters, (stop_us.saturating_sub(start_us)) as f64 / 1e6);

    if !plan.logout_at_end {
        // Users are left to time out: transitions after this are not the run's.
        shared.ended.store(true, Ordering::Release);
    }
    // Let the daemon drain its sockets, then read what it applied; the logout sweep must
    // start before the first device could time out.
    let window = Duration::from_micros(plan.quiet_window_us());
    let after_send = rt.block_on(quiesce(&control_link, window))?;
    let last_error = settle(&control, &pop, &plan, clock, senders, || {
        progress.tick_for(
            Duration::from_millis(100),
            &counters,
            &readings,
            &hists,
            &shared,
            &pop,
        );
    });
    let after_all = rt.block_on(read_stats(&control_link))?;
    shared.finishing.store(true, Ordering::Release);
    let _ = stop_observers.send(true);
    let findings: Vec<Findings> = join_observers(&rt, tasks);
    poller.abort();
    let _ = rt.block_on(poller);
    links.push(control_link);
    rt.block_on(async {
        for link in links {
            if let Ok(link) = Arc::try_unwrap(link) {
                link.close().await;
            }
        }
    });
    interrupts.abort();
    let was_interrupted = control.interrupted();

    // Across a restart the daemon's counters start again: datagrams sent to the first daemon
    // are not among the second's.
    let lossy = (restarted.is_none()
        && SendCounters::get(&counters.datagrams) > after_all.since(&baseline).datagrams)
        || after_all.since(&baseline).cross_shard_shed > 0;
    let mut summary = Summary {
        setup: setup_of(&plan, args),
        sent: {
            sent.last_error = last_error;
            // Over the whole run: a daemon may ask as late as the final logout sweep.
            sent.paced_max_ms = control.pace_max_us() / 1000;
            sent
        },
        daemon: after_send.since(&baseline),
        daemon_after: after_all.since(&baseline),
        checks: check(&pop, &findings, &shared, lossy),
        ..Summary::default()
    };
    summary.time(&hists, &warmup);
    summary.restart = restarted.map(|mut r| {
        r.reconnects = findings.iter().map(|f| f.reconnects.clone()).collect();
        r.reconnects.resize(plan.observers as usize, Vec::new());
        r.not_reconnected = r.reconnects.iter().filter(|d| d.is_empty()).count() as u64;
        r.changed_records = findings.iter().map(|f| f.changed_records).sum();
        r.false_transitions = summary.checks.spurious;
        r
    });
    summary.warnings = warnings(&summary, was_interrupted, findings.len(), &plan);
    drop(rt);
    Ok(summary)
}

/// Ctrl-C, for as long as the run lasts: each press moves the run on ([`Control::interrupt`]).
fn watch_interrupts(
    rt: &tokio::runtime::Runtime,
    control: &Arc<Control>,
) -> tokio::task::JoinHandle<()> {
    let control = control.clone();
    rt.spawn(async move {
        while tokio::signal::ctrl_c().await.is_ok() {
            control.interrupt();
        }
    })
}

/// The drain: the senders log their users out while the observers catch up, until both are
/// done, `plan.settle_us` has passed or a second Ctrl-C ends it (`tick` runs between looks);
/// then the senders are joined. Returns the last send error.
fn settle(
    control: &Control,
    pop: &Population,
    plan: &Plan,
    clock: Clock,
    senders: Vec<std::thread::JoinHandle<Option<String>>>,
    mut tick: impl FnMut(),
) -> Option<String> {
    control.set(Phase::Drain);
    let settle_until = clock.now_us() + plan.settle_us;
    loop {
        let done = control.drained() == plan.threads && pop.in_flight() == 0;
        if done || clock.now_us() >= settle_until || control.phase() == Phase::Done {
            break;
        }
        tick();
    }
    control.set(Phase::Done);
    senders
        .into_iter()
        .filter_map(|s| s.join().ok().flatten())
        .last()
}

/// How long an observer may take to hand in its findings once told to stop; one that takes
/// longer is left out (and its transitions count as missing).
const OBSERVER_WAIT: Duration = Duration::from_secs(10);

/// The observers' findings, from those that finish within [`OBSERVER_WAIT`].
fn join_observers<T>(
    rt: &tokio::runtime::Runtime,
    tasks: Vec<tokio::task::JoinHandle<T>>,
) -> Vec<T> {
    tasks
        .into_iter()
        .filter_map(|t| {
            rt.block_on(async { tokio::time::timeout(OBSERVER_WAIT, t).await })
                .ok()
                .and_then(Result::ok)
        })
        .collect()
}

/// The sender threads, each with its share of the gateways; `cluster` gives each its
/// cluster setup (`None`: one daemon). On failure, the threads already started are told to
/// finish.
#[allow(clippy::too_many_arguments)]
fn start_senders(
    plan: &Arc<Plan>,
    pop: &Arc<Population>,
    counters: &Arc<SendCounters>,
    control: &Arc<Control>,
    clock: Clock,
    start_us: u64,
    boot_epoch: u32,
    cluster: impl Fn() -> Option<sender::ClusterSetup>,
) -> Result<Vec<std::thread::JoinHandle<Option<String>>>, RunError> {
    let mut senders = Vec::new();
    for t in 0..plan.threads {
        let g0 = t * plan.gateways / plan.threads;
        let g1 = (t + 1) * plan.gateways / plan.threads;
        let setup = sender::SenderSetup {
            thread: t,
            gateways: g0..g1,
            plan: plan.clone(),
            pop: pop.clone(),
            counters: counters.clone(),
            control: control.clone(),
            clock,
            start_us,
            boot_epoch,
            cluster: cluster(),
        };
        match sender::spawn(setup) {
            Ok(handle) => senders.push(handle),
            Err(e) => {
                control.set(Phase::Done);
                return Err(RunError::failed(format!(
                    "cannot open the gateways' UDP sockets: {e}"
                )));
            }
        }
    }
    Ok(senders)
}

/// The gateway that logs stale users out: heartbeats to the daemon, or to every replica in a
/// cluster.
trait StaleSender {
    fn push(&mut self, entry: presenced_wire::Entry) -> Result<(), presenced_client::ClientError>;
    fn flush(&mut self) -> Result<(), presenced_client::ClientError>;
}

impl StaleSender for HeartbeatClient {
    fn push(&mut self, entry: presenced_wire::Entry) -> Result<(), presenced_client::ClientError> {
        HeartbeatClient::push(self, entry)
    }
    fn flush(&mut self) -> Result<(), presenced_client::ClientError> {
        HeartbeatClient::flush(self)
    }
}

impl StaleSender for presenced_client::cluster::ClusterHeartbeats {
    fn push(&mut self, entry: presenced_wire::Entry) -> Result<(), presenced_client::ClientError> {
        presenced_client::cluster::ClusterHeartbeats::push(self, entry)
    }
    fn flush(&mut self) -> Result<(), presenced_client::ClientError> {
        presenced_client::cluster::ClusterHeartbeats::flush(self)
    }
}

/// Logs out (devices 1..=8 of) watched users left online by an earlier run and waits until
/// every observer has seen them offline, sending as one gateway (id 4294967295). A datagram
/// the kernel refuses is sent again with the next of three rounds.
fn log_out_stale(
    shared: &observer::Shared,
    stale: &[u64],
    quiet: bool,
    gw: &mut impl StaleSender,
) -> Result<(), RunError> {
    if !quiet {
        eprintln!(
            "presence-loadgen: {} watched users are online from an earlier run; logging them out",
            stale.len()
        );
    }
    for _ in 0..3 {
        let mut sent = 0u64;
        for &u in stale {
            for device in 1..=u32::from(population::MAX_DEVICES) {
                let _ = gw.push(entry(u, device, State::Offline, false));
                sent += 1;
                if sent % 4096 == 0 {
                    // Paced, so the daemon's socket buffer does not overflow.
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        let _ = gw.flush();
        for _ in 0..200 {
            if shared.not_offline.load(Ordering::Acquire) <= 0 {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Err(RunError::failed(format!(
        "{} watched users are still online after logging out their devices 1 to 8 three times: \
         another gateway keeps them online; choose other users with --user-base",
        shared.not_offline.load(Ordering::Acquire)
    )))
}
