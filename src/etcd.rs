//! The etcd thread (`[cluster]`, off unless `cluster.etcd` is set): this member's key and lease
//! in etcd, and every member's key, moved as bytes to the hub's `Cluster`
//! (`presenced_node::cluster`), which makes every decision about roles.
//!
//! A current-thread tokio runtime of its own (the `etcd-client` crate is async), so nothing
//! etcd does can take a worker from the push link. The loop: connect → grant a lease of
//! `cluster.lease` (or, after a reconnect, renew the one held if etcd still has it: etcd keeps
//! leases across its own restart) → put `/NAME/members/MEMBER` = the member's JSON with that
//! lease → [`EtcdEvent::Lease`] → read every key under the prefix → [`EtcdEvent::Members`] →
//! watch the prefix from the next revision, reading it all again after every change; renew the
//! lease every third of its TTL ([`EtcdEvent::Lease`] with what etcd answered). A lease etcd
//! says is gone is replaced by a new one, with a new warm time. Any error or a request past
//! `cluster.connect_timeout` sends [`EtcdEvent::Unreachable`] and reconnects after a back-off
//! of 250 ms doubling to 1 s. On the daemon's stop the lease is revoked, so the others take
//! this member's users over at once rather than at the lease's expiry.
//!
//! The events go to every hub thread (each keeps its own view of the cluster), on a bounded
//! channel per hub ([`News`]); a full one drops the event for that hub and counts it (the next
//! read of the map or renewal says it again).
//!
//! While etcd is unreachable, the peer probe (`crate::peer_probe`, a task on this thread's
//! runtime, when `cluster.peer_ca` or `link.cert` lets it trust the other members) asks the
//! members of the last map read whether they reach etcd, so that an etcd no member reaches does
//! not make every member step down. The thread keeps that list parsed as the hub parses it
//! (`presenced_node::cluster::parse_members`) and tells the probe when to start and stop; a
//! member that says it reaches etcd cuts the back-off short.

use crate::log::Every;
use crate::peer_probe::{Probe, ProbeSetup};
use crate::time::Clock;
use crossbeam_channel::{Receiver, Sender, TrySendError};
use etcd_client::{Client, ConnectOptions, GetOptions, PutOptions, WatchOptions};
use presenced_node::cluster::{parse_members, EtcdEvent};
use presenced_wire::cluster::Member;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// Events the channel to each hub holds; more are dropped and counted.
pub const EVENTS_CHANNEL: usize = 64;

/// Where the etcd thread and the peer probe put what they learn: one bounded channel per hub
/// thread, every hub given every event in the same order, so each hub's view of the cluster
/// follows the same news.
#[derive(Clone)]
pub struct News {
    hubs: Vec<Sender<EtcdEvent>>,
    /// Events a full channel lost, one per hub that lost it.
    dropped: Arc<AtomicU64>,
}

impl News {
    /// News for `hubs` hubs, and each hub's end.
    pub fn channels(hubs: usize) -> (News, Vec<Receiver<EtcdEvent>>) {
        let (senders, receivers) = (0..hubs)
            .map(|_| crossbeam_channel::bounded(EVENTS_CHANNEL))
            .unzip();
        let news = News {
            hubs: senders,
            dropped: Arc::new(AtomicU64::new(0)),
        };
        (news, receivers)
    }

    /// Gives `event` to every hub whose channel has room (a hub that is gone is the daemon
    /// stopping).
    pub fn send(&self, event: EtcdEvent) {
        for hub in &self.hubs {
            match hub.try_send(event.clone()) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => {}
                Err(TrySendError::Full(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// The count of events lost to full channels.
    pub fn dropped(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }
}

/// The first pause before reconnecting; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(250);
/// The longest pause before reconnecting.
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How often the thread looks at the daemon's stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);
/// While etcd stays unreachable, one reminder line per this period.
const REMIND_EVERY: Duration = Duration::from_secs(30);

/// Everything the etcd thread needs, built by the daemon.
pub struct EtcdSetup {
    /// etcd's client URLs (`cluster.etcd`).
    pub endpoints: Vec<String>,
    /// The member prefix, `/NAME/members/`.
    pub prefix: String,
    /// This member's entry; its `warm_at_ms` is used for the first lease.
    pub member: Member,
    /// The lease's TTL (`cluster.lease`, whole seconds).
    pub lease: Duration,
    /// How long a member warms after it (re)joins (`cluster.warm`, resolved).
    pub warm: Duration,
    /// How long connecting, or one request, may take (`cluster.connect_timeout`).
    pub timeout: Duration,
    /// What the thread learns, for the hubs.
    pub events: News,
    /// The daemon's clocks.
    pub clock: Clock,
    /// Set when the daemon stops.
    pub stop: Arc<AtomicBool>,
    /// The peer probe's settings (`None`: no probe; an outage makes this member step down).
    pub probe: Option<ProbeSetup>,
}

/// The running thread.
pub struct Handle {
    /// Events dropped because a hub's channel was full.
    pub dropped: Arc<AtomicU64>,
    thread: JoinHandle<()>,
}

impl Handle {
    /// Waits for the thread (after the daemon's stop flag is set; it revokes the lease first).
    pub fn join(self) -> io::Result<()> {
        self.thread
            .join()
            .map_err(|_| io::Error::other("etcd thread panicked"))
    }

    /// Whether the thread has ended (only after the stop flag, or on a panic).
    pub fn is_finished(&self) -> bool {
        self.thread.is_finished()
    }
}

/// Starts the `etcd` thread.
pub fn start(setup: EtcdSetup) -> io::Result<Handle> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let dropped = setup.events.dropped();
    let wake = Arc::new(Notify::new());
    let (outage, outage_rx) = watch::channel(None);
    let mut setup = setup;
    let probe = setup
        .probe
        .take()
        .map(|probe| Probe::new(probe, setup.events.clone(), wake.clone()));
    let mut etcd = Etcd {
        member: setup.member.clone(),
        setup,
        client: None,
        lease_id: None,
        leases: 0,
        up: None,
        members: Vec::new(),
        outage,
        wake,
    };
    let thread = std::thread::Builder::new()
        .name("etcd".into())
        .spawn(move || {
            runtime.block_on(async move {
                if let Some(probe) = probe {
                    tokio::spawn(probe.run(outage_rx));
                }
                etcd.run().await;
            });
        })?;
    Ok(Handle { dropped, thread })
}

/// Why a session with etcd ended.
enum End {
    /// The daemon is stopping.
    Stop,
    /// etcd said the lease is gone: grant a new one on the same connection.
    LeaseLost,
}

/// A failed or timed-out call, as one line.
type Failure = String;

struct Etcd {
    setup: EtcdSetup,
    /// This member's value in etcd (its warm time changes with each lease after a lost one).
    member: Member,
    client: Option<Client>,
    /// The lease held, if any: kept across reconnects while etcd still has it.
    lease_id: Option<i64>,
    /// Leases granted so far.
    leases: u64,
    /// Whether etcd was reachable at the last change (`None`: not tried yet), for the log.
    up: Option<bool>,
    /// The members of the last map read (kept while etcd is unreachable).
    members: Vec<Member>,
    /// What the peer probe should do: `Some(members)` to ask while etcd is unreachable.
    outage: watch::Sender<Option<Vec<Member>>>,
    /// Notified by the probe when a member reaches etcd: retry now.
    wake: Arc<Notify>,
}

impl Etcd {
    async fn run(&mut self) {
        let remind = Every::new(REMIND_EVERY);
        let mut backoff = BACKOFF_MIN;
        loop {
            match self.session().await {
                Ok(End::Stop) => break,
                Ok(End::LeaseLost) => {
                    self.send(EtcdEvent::Lease {
                        sent_us: self.setup.clock.mono_us(),
                        ttl_ms: 0,
                        fresh: false,
                    });
                    tracing::warn!(
                        "etcd: this member's lease lapsed (it could not renew it in time): \
                         taking a new one and warming again for {} ms",
                        self.setup.warm.as_millis()
                    );
                    self.lease_id = None;
                    backoff = BACKOFF_MIN;
                }
                Err(e) => {
                    if self.up == Some(true) {
                        backoff = BACKOFF_MIN;
                    }
                    self.send(EtcdEvent::Unreachable);
                    // No map read yet: no one to ask (and no role to keep).
                    self.probe((!self.members.is_empty()).then(|| self.members.clone()));
                    self.client = None;
                    if self.up != Some(false) {
                        tracing::warn!(
                            "etcd: unreachable ({e}); keeping the last member map and serving, \
                             retrying every {} ms at most",
                            BACKOFF_MAX.as_millis()
                        );
                        self.up = Some(false);
                        let _ = remind.due(self.setup.clock.now().wall_ms);
                    } else if let Some(n) = remind.due(self.setup.clock.now().wall_ms) {
                        tracing::warn!("etcd: still unreachable ({e}; {n} more tries failed)");
                    }
                    if self.sleep(backoff).await {
                        break;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
            if self.stopping() {
                break;
            }
        }
        self.revoke().await;
    }

    fn stopping(&self) -> bool {
        self.setup.stop.load(Ordering::Relaxed)
    }

    /// Sleeps for `d`, or less when the daemon stops or the probe heard that a member reaches
    /// etcd; true if it is stopping.
    async fn sleep(&self, d: Duration) -> bool {
        let until = tokio::time::Instant::now() + d;
        while tokio::time::Instant::now() < until {
            if self.stopping() {
                return true;
            }
            let poll = until.min(tokio::time::Instant::now() + STOP_POLL);
            tokio::select! {
                () = tokio::time::sleep_until(poll) => {}
                () = self.wake.notified() => break,
            }
        }
        self.stopping()
    }

    /// Tells the peer probe what to ask (`None`: nothing, etcd answers).
    fn probe(&self, members: Option<Vec<Member>>) {
        self.outage.send_if_modified(|now| {
            let changed = *now != members;
            *now = members;
            changed
        });
    }

    fn send(&self, event: EtcdEvent) {
        self.setup.events.send(event);
    }

    /// `call`, or a failure past `cluster.connect_timeout`.
    async fn timed<T, E: std::fmt::Display>(
        &self,
        what: &str,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(self.setup.timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("{what}: {e}")),
            Err(_) => Err(format!(
                "{what}: no answer within cluster.connect_timeout = {} ms",
                self.setup.timeout.as_millis()
            )),
        }
    }

    /// One connection: the lease, this member's key, the map and its watch, the renewals;
    /// until the daemon stops, the lease is lost, or a call fails.
    async fn session(&mut self) -> Result<End, Failure> {
        let mut client = match self.client.take() {
            Some(c) => c,
            None => {
                let options = ConnectOptions::new()
                    .with_connect_timeout(self.setup.timeout)
                    .with_keep_alive(self.setup.timeout, self.setup.timeout);
                let endpoints = self.setup.endpoints.clone();
                self.timed("connect", Client::connect(endpoints, Some(options)))
                    .await?
            }
        };
        self.client = Some(client.clone());
        let (mut keeper, mut renewals) = {
            // The lease held before a reconnect, if etcd still has it; else a new one.
            let (id, sent_us, ttl_s, fresh) = match self.lease_id {
                Some(id) => {
                    let sent_us = self.setup.clock.mono_us();
                    let ttl = self
                        .timed("lease time-to-live", client.lease_time_to_live(id, None))
                        .await?
                        .ttl();
                    if ttl <= 0 {
                        return Ok(End::LeaseLost);
                    }
                    (id, sent_us, ttl, false)
                }
                None => {
                    let sent_us = self.setup.clock.mono_us();
                    let ttl = i64::try_from(self.setup.lease.as_secs()).unwrap_or(i64::MAX);
                    let granted = self
                        .timed("lease grant", client.lease_grant(ttl, None))
                        .await?;
                    if granted.id() == 0 || granted.ttl() <= 0 {
                        return Err(format!(
                            "lease grant: etcd answered lease {} of TTL {} s",
                            granted.id(),
                            granted.ttl()
                        ));
                    }
                    if self.leases > 0 {
                        // Not the first lease: the one before was lost, so others may have
                        // taken this member's users over; it warms again before it pushes.
                        let warm_ms =
                            u64::try_from(self.setup.warm.as_millis()).unwrap_or(u64::MAX);
                        self.member.warm_at_ms =
                            self.setup.clock.now().wall_ms.saturating_add(warm_ms);
                    }
                    self.leases += 1;
                    (granted.id(), sent_us, granted.ttl(), true)
                }
            };
            self.lease_id = Some(id);
            let value =
                serde_json::to_vec(&self.member).map_err(|e| format!("this member's JSON: {e}"))?;
            let key = format!("{}{}", self.setup.prefix, self.member.id);
            let put = PutOptions::new().with_lease(id);
            self.timed("put", client.put(key, value, Some(put))).await?;
            let (keeper, renewals) = self
                .timed("lease keep-alive", client.lease_keep_alive(id))
                .await?;
            self.send(EtcdEvent::Lease {
                sent_us,
                ttl_ms: ttl_ms(ttl_s),
                fresh,
            });
            if self.up != Some(true) {
                tracing::info!(
                    "etcd: reachable; this member's key {}{} held with lease {id:x} ({ttl_s} s{})",
                    self.setup.prefix,
                    self.member.id,
                    if fresh { ", new" } else { ", kept" }
                );
            }
            self.up = Some(true);
            self.probe(None);
            (keeper, renewals)
        };
        let revision = self.read_members(&mut client).await?;
        let watch = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision.saturating_add(1));
        let mut watch = self
            .timed(
                "watch",
                client.watch(self.setup.prefix.clone(), Some(watch)),
            )
            .await?;
        let renew_every = self.setup.lease / 3;
        let mut renew =
            tokio::time::interval_at(tokio::time::Instant::now() + renew_every, renew_every);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut stop_poll = tokio::time::interval(STOP_POLL);
        loop {
            tokio::select! {
                _ = renew.tick() => {
                    let sent_us = self.setup.clock.mono_us();
                    self.timed("lease keep-alive", keeper.keep_alive()).await?;
                    let answer = self.timed("lease keep-alive", renewals.message()).await?;
                    let ttl = answer
                        .ok_or_else(|| "lease keep-alive: the stream ended".to_string())?
                        .ttl();
                    if ttl <= 0 {
                        return Ok(End::LeaseLost);
                    }
                    self.send(EtcdEvent::Lease { sent_us, ttl_ms: ttl_ms(ttl), fresh: false });
                }
                message = watch.message() => {
                    let response = message
                        .map_err(|e| format!("watch: {e}"))?
                        .ok_or_else(|| "watch: the stream ended".to_string())?;
                    if response.canceled() {
                        return Err(format!(
                            "watch: cancelled by etcd ({})",
                            response.cancel_reason()
                        ));
                    }
                    if !response.events().is_empty() {
                        self.read_members(&mut client).await?;
                    }
                }
                _ = stop_poll.tick() => {
                    if self.stopping() {
                        return Ok(End::Stop);
                    }
                }
            }
        }
    }

    /// Reads every key under the prefix and sends the map; returns the read's revision.
    async fn read_members(&mut self, client: &mut Client) -> Result<i64, Failure> {
        let read = self
            .timed(
                "get",
                client.get(
                    self.setup.prefix.clone(),
                    Some(GetOptions::new().with_prefix()),
                ),
            )
            .await?;
        let revision = read
            .header()
            .map(|h| h.revision())
            .filter(|&r| r > 0)
            .ok_or_else(|| "get: etcd's answer has no revision".to_string())?;
        let values = read
            .kvs()
            .iter()
            .map(|kv| {
                let key = kv
                    .key()
                    .strip_prefix(self.setup.prefix.as_bytes())
                    .unwrap_or(kv.key());
                (
                    String::from_utf8_lossy(key).into_owned(),
                    kv.value().to_vec(),
                )
            })
            .collect::<Vec<_>>();
        // The probe's list, parsed as the hub parses its map (what is skipped is the hub's to
        // count and log).
        self.members = parse_members(values.clone()).0;
        self.send(EtcdEvent::Members {
            revision: u64::try_from(revision).unwrap_or(0),
            values,
        });
        Ok(revision)
    }

    /// On a clean stop: revokes the lease, so this member's key goes at once.
    async fn revoke(&mut self) {
        let (Some(id), Some(mut client)) = (self.lease_id, self.client.take()) else {
            return;
        };
        match self.timed("lease revoke", client.lease_revoke(id)).await {
            Ok(_) => tracing::info!(
                "etcd: lease {id:x} revoked: this member's key {}{} is gone",
                self.setup.prefix,
                self.member.id
            ),
            Err(e) => tracing::warn!(
                "etcd: could not revoke lease {id:x} ({e}): this member's key stays until the \
                 lease lapses"
            ),
        }
    }
}

/// etcd's TTL in seconds as ms (0: gone).
fn ttl_ms(ttl_s: i64) -> u64 {
    u64::try_from(ttl_s).unwrap_or(0).saturating_mul(1_000)
}
