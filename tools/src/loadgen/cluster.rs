//! `presence-loadgen --cluster`: the scenarios against a presenced cluster (SPEC.md § P6.14)
//! instead of one daemon, with the same population, schedule, senders and checks.
//!
//! What differs, and why:
//!
//! - **Heartbeats**: each simulated gateway is a [`ClusterHeartbeats`] sending each entry to
//!   every replica of its user, so a replica holds the state a failover needs; the senders
//!   follow every newer member map the observers' links take (a MEMBERS push).
//! - **Observers**: a [`ClusterLink`] each ([`ClusterObserver`]): every watched user
//!   subscribed at its primary, moved when the map changes or a member's link closes. A record
//!   from a new primary that shows another state than the one last seen counts as the
//!   transition it reports. A member killed or restarted mid-run therefore makes no false or
//!   missing transition while the cluster keeps every user on a live replica.
//! - **Timings**: every member's WELCOME must give the same timings (a cluster of mixed
//!   timings is a usage error: the checks would not know which deadline holds).
//! - **Daemon counters**: one control link per member of the first map; the summary's daemon
//!   counters are the sum over the members that answered STATS at both ends of the run (a
//!   member killed or restarted mid-run lost its counters and is left out, by name, in the
//!   cluster section and a warning). "sent entries" count each entry once per replica it went
//!   to, so loss compares like with like; the cluster section also gives the user entries
//!   (each once, however many replicas got it) and the user entries accepted: the members'
//!   applied heartbeats × user entries ÷ replica entries. PACE: the senders obey the longest
//!   interval any member asks for.
//! - **Per member**: false and missing transitions are charged to members by the rule in
//!   [`owners`](super::owners): the member that was the user's primary, under the generator's
//!   map, when the simulation caused the transition (a missing one: the transition that never
//!   came; a false one: the user's latest caused transition, whose state it contradicts).
//! - **Loss**: datagrams sent to a killed member are lost by design, so no missing transition
//!   is excused as `lost` (the single-daemon run excuses logins whose datagrams the daemon
//!   never received).

use super::cli::Args;
use super::clock::Clock;
use super::cluster_observer::{ClusterFindings, ClusterObserver};
use super::control::Control;
use super::counters::SendCounters;
use super::daemon_stats::{quiesce, read_stats, DaemonCounters, Reading};
use super::observer::{self, Findings, Hists};
use super::owners::Owners;
use super::plan::Plan;
use super::population::{self, Population};
use super::progress::ProgressMeter;
use super::report::{grouped, Summary};
use super::verdict::{check, sent_of, setup_of, warnings};
use super::warmup::Warmup;
use super::{
    connect_options, join_observers, lock, log_out_stale, rng, settle, start_senders,
    watch_interrupts, RunError,
};
use presenced_client::cluster::{ClusterHeartbeats, ClusterLink};
use presenced_client::{LinkClient, WelcomeInfo};
use presenced_wire::cluster::MemberMap;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// How long a member may take to answer STATS at the end (a killed one never does).
const STATS_WAIT: Duration = Duration::from_secs(3);

/// One member's part of the run.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MemberReport {
    /// Its id.
    pub id: String,
    /// Its push link address in the first map (empty: it joined later).
    pub link: String,
    /// Heartbeat entries it applied during the run; `None`: not read at both ends (killed or
    /// restarted mid-run, or joined later).
    pub heartbeats: Option<u64>,
    /// Datagrams it received during the run (`None` as for `heartbeats`).
    pub datagrams: Option<u64>,
    /// False transitions charged to it (see [`owners`](super::owners)).
    pub false_transitions: u64,
    /// Missing transitions charged to it.
    pub missing: u64,
}

/// What a cluster run adds to the summary.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ClusterReport {
    /// The seeds given.
    pub seeds: Vec<String>,
    /// Replicas per user, from the last map.
    pub replicas: u16,
    /// The first and the last map's revision.
    pub revisions: (u64, u64),
    /// Members in the first and in the last map.
    pub members_first: usize,
    /// Members in the last map.
    pub members_last: usize,
    /// User heartbeat entries sent, each once however many replicas got it.
    pub user_entries: u64,
    /// Entries sent to members, each once per replica it went to.
    pub replica_entries: u64,
    /// Heartbeat entries the members read at both ends applied, together.
    pub applied: u64,
    /// User entries accepted: `applied × user_entries ÷ replica_entries` (exact while every
    /// member was read at both ends).
    pub accepted_user_entries: f64,
    /// Member links the observers saw close, all observers.
    pub member_links_lost: u64,
    /// False and missing transitions charged to no member (the generator held no primary for
    /// the user), or missing because an observer did not finish.
    pub unattributed: u64,
    /// Every member seen, in the first map's order, then those that joined.
    pub members: Vec<MemberReport>,
}

impl ClusterReport {
    /// The rows of the table.
    pub fn rows(&self) -> Vec<(&'static str, String)> {
        let mut rows = vec![
            (
                "cluster",
                format!(
                    "{} replicas; {} members in the first map (revision {}), {} in the last \
                     (revision {}); {} member links lost",
                    self.replicas,
                    self.members_first,
                    self.revisions.0,
                    self.members_last,
                    self.revisions.1,
                    self.member_links_lost
                ),
            ),
            (
                "user entries",
                format!(
                    "{} sent (each once), {} to replicas; {} accepted (members' applied × user \
                     entries ÷ replica entries)",
                    grouped(self.user_entries),
                    grouped(self.replica_entries),
                    grouped(self.accepted_user_entries.round() as u64)
                ),
            ),
        ];
        for m in &self.members {
            let applied = match (m.heartbeats, m.datagrams) {
                (Some(h), Some(d)) => {
                    format!("{} heartbeats, {} datagrams", grouped(h), grouped(d))
                }
                _ => "counters not read at both ends".into(),
            };
            rows.push((
                "member",
                format!(
                    "{} {}: {applied}; false {}, missing {}",
                    m.id,
                    if m.link.is_empty() {
                        "(joined)"
                    } else {
                        &m.link
                    },
                    grouped(m.false_transitions),
                    grouped(m.missing)
                ),
            ));
        }
        if self.unattributed > 0 {
            rows.push((
                "unattributed",
                format!(
                    "{} false or missing transitions",
                    grouped(self.unattributed)
                ),
            ));
        }
        rows
    }
}

/// A control link to one member, and its counters at the start.
struct MemberControl {
    id: String,
    address: String,
    link: Arc<LinkClient>,
    baseline: DaemonCounters,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn resolve(address: &str) -> Result<SocketAddr, RunError> {
    address
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| RunError::failed(format!("the member map lists {address:?}: no address")))
}

/// The first map from the seeds, and a control link (with its counters) to each member.
fn connect_members(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    seeds: &[SocketAddr],
) -> Result<(MemberMap, Vec<MemberControl>), RunError> {
    let options = connect_options(args)?;
    let map = rt.block_on(async {
        let link = ClusterLink::connect(seeds, options.clone())
            .await
            .map_err(|e| {
                RunError::failed(format!(
                    "no cluster member answered at --cluster: {e} (are the members running, with \
                 [cluster] settings?)"
                ))
            })?;
        let map = link.map().await;
        link.close().await;
        map.ok_or_else(|| RunError::failed("the cluster sent no member map"))
    })?;
    let mut controls = Vec::new();
    for m in &map.members {
        let addr = resolve(&m.link)?;
        let link = rt
            .block_on(LinkClient::connect(addr, options.clone()))
            .map_err(|e| {
                RunError::failed(format!(
                    "cannot open a control link to member {}: {e}",
                    m.id
                ))
            })?;
        let link = Arc::new(link);
        let baseline = rt.block_on(read_stats(&link))?;
        controls.push(MemberControl {
            id: m.id.clone(),
            address: m.link.clone(),
            link,
            baseline,
        });
    }
    Ok((map, controls))
}

/// The timings every member announced; an error if they differ.
fn common_welcome(controls: &[MemberControl]) -> Result<WelcomeInfo, RunError> {
    let first = controls
        .first()
        .ok_or_else(|| RunError::failed("the member map lists no member"))?;
    let welcome = first.link.welcome().clone();
    for c in &controls[1..] {
        if c.link.welcome().timings != welcome.timings {
            return Err(RunError::usage(format!(
                "members {} and {} announce different timings ({:?} and {:?}): the checks need \
                 one deadline",
                first.id,
                c.id,
                welcome.timings,
                c.link.welcome().timings
            )));
        }
    }
    Ok(welcome)
}

/// Every member's counters together, once a second (those that answer), for the progress line.
async fn poll_members(links: Vec<Arc<LinkClient>>, readings: Reading, clock: Clock) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let mut sum = DaemonCounters::default();
        for link in &links {
            if let Ok(Ok(c)) = tokio::time::timeout(STATS_WAIT, read_stats(link)).await {
                sum = sum.plus(&c);
            }
        }
        let mut r = lock(&readings);
        r.push((clock.now_us(), sum));
        let n = r.len();
        if n > 2 {
            r.drain(..n - 2);
        }
    }
}

/// The senders obey the longest interval any member asks for (PACE).
fn follow_paces(rt: &tokio::runtime::Runtime, controls: &[MemberControl], control: &Arc<Control>) {
    let asked: Arc<Mutex<Vec<Option<Duration>>>> = Arc::new(Mutex::new(vec![None; controls.len()]));
    for (i, c) in controls.iter().enumerate() {
        let mut pace = c.link.pace();
        let (asked, control) = (asked.clone(), control.clone());
        rt.spawn(async move {
            while pace.changed().await.is_ok() {
                let value = *pace.borrow_and_update();
                let mut a = lock(&asked);
                if let Some(slot) = a.get_mut(i) {
                    *slot = value;
                }
                control.set_pace(a.iter().flatten().max().copied());
            }
        });
    }
}

/// Runs the load described by `args` against the cluster at `--cluster`.
pub fn run(args: &Args) -> Result<Summary, RunError> {
    let seeds = args
        .cluster
        .clone()
        .ok_or_else(|| RunError::usage("--cluster needs at least one member address"))?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let observer_threads = args.observer_threads.unwrap_or_else(|| {
        let links = super::plan::observers_asked(args) + 1;
        links.min(cores).max(2)
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(observer_threads as usize)
        .thread_name("loadgen-link")
        .enable_all()
        .build()
        .map_err(|e| RunError::failed(format!("cannot start the async runtime: {e}")))?;
    let clock = Clock::start();
    let (first_map, controls) = connect_members(&rt, args, &seeds)?;
    let welcome = common_welcome(&controls)?;

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
    let pop = Arc::new(Population::new(
        plan.user_base,
        devices,
        plan.watch,
        plan.observers,
    ));
    let owners = Arc::new(Owners::new(plan.watch));
    for m in &first_map.members {
        owners.intern(&m.id);
    }
    let boot_epoch = (unix_ms() / 1000) as u32;

    // Observers; their links' maps go to the senders.
    let (maps_tx, maps_rx) = watch::channel(Some(first_map.clone()));
    let maps_tx = Arc::new(maps_tx);
    let shared = Arc::new(observer::Shared::default());
    let (stop_observers, stop) = watch::channel(false);
    let mut stale = Vec::new();
    let mut hists: Vec<Arc<Mutex<Hists>>> = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..plan.observers {
        let o = rt
            .block_on(ClusterObserver::subscribe(
                &seeds,
                connect_options(args)?,
                pop.clone(),
                clock,
                shared.clone(),
                owners.clone(),
                maps_tx.clone(),
            ))
            .map_err(|e| RunError::failed(format!("cannot subscribe an observer: {e}")))?;
        stale.extend(o.stale_users());
        hists.push(o.hists());
        tasks.push(rt.spawn(o.run(stop.clone())));
    }
    stale.sort_unstable();
    stale.dedup();
    if !stale.is_empty() {
        let map = maps_rx
            .borrow()
            .clone()
            .unwrap_or_else(|| first_map.clone());
        let mut gw = ClusterHeartbeats::new(u32::MAX, boot_epoch);
        if let Some(key) = &plan.key {
            gw = gw.with_key(key.clone());
        }
        gw.set_map(map, |_| Vec::new())
            .map_err(|e| RunError::failed(format!("cannot open a UDP socket: {e}")))?;
        log_out_stale(&shared, &stale, args.quiet, &mut gw)?;
    }
    shared.running.store(true, Ordering::Release);

    let readings: Reading = Arc::new(Mutex::new(Vec::new()));
    let links: Vec<Arc<LinkClient>> = controls.iter().map(|c| c.link.clone()).collect();
    let poller = rt.spawn(poll_members(links, readings.clone(), clock));
    let control = Arc::new(Control::default());
    follow_paces(&rt, &controls, &control);
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
        || {
            Some(super::sender::ClusterSetup {
                maps: maps_rx.clone(),
                owners: owners.clone(),
            })
        },
    )?;
    let interrupts = watch_interrupts(&rt, &control);

    let mut progress = ProgressMeter::new(clock, start_us, args.quiet || args.json);
    let threads = plan.threads;
    let mut warmup = Warmup::new(&plan, &pop, start_us);
    while control.stopped() < threads {
        progress.tick(&counters, &readings, &hists, &shared, &pop);
        warmup.check(&pop, clock.now_us());
    }
    let stop_us = clock.now_us();
    // Senders publish before they report stopping, and again only in the drain: the send
    // window's figures, user entries and replica entries alike.
    let mut sent = sent_of(&counters, (stop_us.saturating_sub(start_us)) as f64 / 1e6);
    let user_entries = SendCounters::get(&counters.user_entries);
    if !plan.logout_at_end {
        shared.ended.store(true, Ordering::Release);
    }
    // Let the members drain their sockets (those that answer), then log everyone out.
    let window = Duration::from_micros(plan.quiet_window_us());
    let after_send: Vec<Option<DaemonCounters>> = controls
        .iter()
        .map(|c| {
            rt.block_on(async {
                tokio::time::timeout(window + STATS_WAIT, quiesce(&c.link, window)).await
            })
            .ok()
            .and_then(Result::ok)
        })
        .collect();
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
    let after_all: Vec<Option<DaemonCounters>> = controls
        .iter()
        .map(|c| {
            rt.block_on(async { tokio::time::timeout(STATS_WAIT, read_stats(&c.link)).await })
                .ok()
                .and_then(Result::ok)
        })
        .collect();
    shared.finishing.store(true, Ordering::Release);
    let _ = stop_observers.send(true);
    let found: Vec<ClusterFindings> = join_observers(&rt, tasks);
    poller.abort();
    let _ = rt.block_on(poller);
    let last_map = maps_rx
        .borrow()
        .clone()
        .unwrap_or_else(|| first_map.clone());
    interrupts.abort();
    let was_interrupted = control.interrupted();

    // The members read at both ends, summed.
    let mut daemon = DaemonCounters::default();
    let mut daemon_after = DaemonCounters::default();
    let mut members = Vec::new();
    for (i, c) in controls.iter().enumerate() {
        let (send, all) = (&after_send[i], &after_all[i]);
        let mut m = MemberReport {
            id: c.id.clone(),
            link: c.address.clone(),
            ..MemberReport::default()
        };
        if let (Some(send), Some(all)) = (send, all) {
            let d = send.since(&c.baseline);
            m.heartbeats = Some(d.heartbeats());
            m.datagrams = Some(d.datagrams);
            daemon = daemon.plus(&d);
            daemon_after = daemon_after.plus(&all.since(&c.baseline));
        }
        members.push(m);
    }
    let member_links_lost = found.iter().map(|f| f.members_lost.len() as u64).sum();
    let observers_done = found.len();
    let (findings, falses): (Vec<Findings>, Vec<Vec<(u32, u16)>>) =
        found.into_iter().map(|f| (f.findings, f.falses)).unzip();
    let checks = check(&pop, &findings, &shared, false);
    let mut report = ClusterReport {
        seeds: seeds.iter().map(ToString::to_string).collect(),
        replicas: last_map.replicas,
        revisions: (first_map.revision, last_map.revision),
        members_first: first_map.members.len(),
        members_last: last_map.members.len(),
        user_entries,
        replica_entries: sent.entries,
        applied: daemon.heartbeats(),
        accepted_user_entries: if sent.entries == 0 {
            0.0
        } else {
            daemon.heartbeats() as f64 * user_entries as f64 / sent.entries as f64
        },
        member_links_lost,
        ..ClusterReport::default()
    };
    let charged = charge(&pop, &owners, &findings, &falses);
    for (number, (falses, missing)) in &charged {
        let Some(id) = owners.name(*number) else {
            report.unattributed += falses + missing;
            continue;
        };
        if !members.iter().any(|m| m.id == id) {
            members.push(MemberReport {
                id: id.clone(),
                ..MemberReport::default()
            });
        }
        if let Some(m) = members.iter_mut().find(|m| m.id == id) {
            m.false_transitions += falses;
            m.missing += missing;
        }
    }
    let charged_total: u64 = charged.values().map(|(f, m)| f + m).sum();
    report.unattributed += (checks.spurious + checks.missing).saturating_sub(charged_total);
    report.members = members;

    let lossy = daemon_after.cross_shard_shed > 0;
    let mut summary = Summary {
        setup: setup_of(&plan, args),
        sent: {
            sent.last_error = last_error;
            // Over the whole run: a daemon may ask as late as the final logout sweep.
            sent.paced_max_ms = control.pace_max_us() / 1000;
            sent
        },
        daemon,
        daemon_after,
        checks,
        ..Summary::default()
    };
    summary.time(&hists, &warmup);
    summary.warnings = warnings(&summary, was_interrupted, observers_done, &plan);
    let unread: Vec<&str> = report
        .members
        .iter()
        .filter(|m| m.heartbeats.is_none())
        .map(|m| m.id.as_str())
        .collect();
    if !unread.is_empty() {
        summary.warnings.push(format!(
            "the counters of members {} were not read at both ends of the run (killed, restarted \
             or joined mid-run): the daemon counters and the accepted user entries leave them \
             out, and the loss counts the entries sent to them as lost",
            unread.join(", ")
        ));
    }
    if lossy {
        summary.warnings.push(
            "members shed entries between shards: transitions may be missing for that reason"
                .into(),
        );
    }
    summary.cluster = Some(report);
    drop(rt);
    Ok(summary)
}

/// False and missing transitions per member number, by the rule in
/// [`owners`](super::owners), with the verdict's arithmetic (per user and observer: fewer
/// seen than caused is missing; more, unless the user is excused, is false).
/// `falses[k]` are observer `k`'s false transitions as they arrived (user index, member).
fn charge(
    pop: &Population,
    owners: &Owners,
    findings: &[Findings],
    falses: &[Vec<(u32, u16)>],
) -> BTreeMap<u16, (u64, u64)> {
    let mut by: BTreeMap<u16, (u64, u64)> = BTreeMap::new();
    for (f, arrived) in findings.iter().zip(falses) {
        let mut first_false: BTreeMap<u32, u16> = BTreeMap::new();
        for &(index, member) in arrived {
            first_false.entry(index).or_insert(member);
        }
        for i in 0..pop.watch {
            let e = pop.expected(i);
            let seen = f.counts.get(i as usize).copied().unwrap_or(0);
            if seen < e {
                for cause in seen + 1..=e {
                    by.entry(owners.member_of(i, cause, e)).or_default().1 += 1;
                }
            } else if seen > e && !pop.is_excused(i) {
                let member = first_false
                    .get(&i)
                    .copied()
                    .unwrap_or_else(|| owners.member_of(i, e, e));
                by.entry(member).or_default().0 += u64::from(seen - e);
            }
        }
    }
    by
}
