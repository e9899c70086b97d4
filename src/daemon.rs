//! Starting and stopping the daemon: sockets, channels, the shard nodes on their pinned
//! threads, and the push link.

use crate::ingest::bind_udp;
use crate::link::{self, LinkLimits};
use crate::log::Log;
use crate::notify::Beat;
use crate::reload::Reload;
use crate::settings::{LinkSockets, Settings};
use crate::shard_thread::{self, Peer, ShardSetup, WAKER};
use crate::state;
use crate::store_thread::{Figures, StoreSetup};
use crate::time::Clock;
use mio::{Poll, Waker};
use presenced_core::config::MAX_HORIZON_TICKS;
use presenced_node::auth::{Keys, Verifier};
use presenced_node::bus::{Inbox, ToHub, ToStore};
use presenced_node::cluster::ClusterConfig;
use presenced_node::node::{NodeConfig, ShardNode, StoreLimits};
use presenced_wire::cluster::Member;
use presenced_wire::stats::StateStats;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Messages a shard's channel to the store holds (a batch of transitions or a snapshot chunk
/// each); more wait in the shard's journal, bounded by `state.queue` transitions.
pub const STORE_CHANNEL_MESSAGES: usize = 1024;
/// HISTORY requests waiting for the store thread; more are refused (`internal`, "busy").
pub const HISTORY_QUEUE: usize = 256;

/// Messages a shard's channel to each hub holds (about 1 KiB each: a batch of transitions).
/// More wait in the shard's outbox for that hub, bounded by `shards.link_outbox` transitions.
pub const HUB_CHANNEL_MESSAGES: usize = 1024;

/// The current key set, shared by the push link (HELLO checks, stats) and the reload; `None`
/// when authentication is off. Read on cold paths only: shards get theirs by message.
pub type KeyRing = Arc<Mutex<Option<Arc<Keys>>>>;

/// A running daemon.
pub struct Running {
    /// The shared heartbeat address(es) actually bound.
    pub heartbeat: Vec<SocketAddr>,
    /// Each shard's own heartbeat address, if `ingest.shard_ports`.
    pub shard_ports: Vec<SocketAddr>,
    /// The push link's address.
    pub link: SocketAddr,
    /// The smallest receive buffer the kernel gave a heartbeat socket (bytes, as set).
    pub recv_buffer_bytes: usize,
    /// The metrics endpoint's address, if `metrics.listen` is set.
    pub metrics: Option<SocketAddr>,
    /// The cores the shards and the service threads were given.
    pub cores: crate::cpu::Layout,
    /// The push link's endpoints, threads and socket buffers.
    pub link_sockets: LinkSockets,
    /// Hub threads (`link.hubs` resolved).
    pub hubs: usize,
    metrics_handle: Option<crate::metrics::Handle>,
    /// The etcd thread, in a cluster.
    etcd: Option<crate::etcd::Handle>,
    stop: Arc<AtomicBool>,
    shards: Vec<JoinHandle<io::Result<()>>>,
    /// Each shard thread's sign of life.
    beats: Vec<Arc<Beat>>,
    /// The store thread, when state is kept: it ends after every shard's final snapshot.
    store: Option<JoinHandle<()>>,
    link_handle: link::Handle,
    peers: Vec<Peer>,
    key_ring: KeyRing,
    settings: Arc<Settings>,
}

/// Binds every socket, reserves every shard's memory and starts every thread.
pub fn start(settings: Settings) -> io::Result<Running> {
    let started = std::time::Instant::now();
    let settings = Arc::new(settings);
    let n = settings.shards.count;
    let core = settings
        .presence
        .core_config()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    // Monotonic time starts past the longest timer horizon: times restored from before this
    // start (a user offline for weeks) then still lie after zero.
    let clock = Clock::start_at(MAX_HORIZON_TICKS * core.tick_us);
    let stop = Arc::new(AtomicBool::new(false));
    let cores = crate::cpu::Layout::new(
        &crate::cpu::allowed_cpus(),
        if settings.shards.pin {
            settings.shards.service_cores
        } else {
            0
        },
    );

    // The shared port: the first bind picks the port if it is 0, the others join its group.
    let mut shared: Vec<Vec<std::net::UdpSocket>> = (0..n).map(|_| Vec::new()).collect();
    let mut heartbeat = Vec::new();
    for addr in [Some(settings.ingest.listen), settings.ingest.listen_v6]
        .into_iter()
        .flatten()
    {
        let mut addr = addr;
        for sockets in shared.iter_mut() {
            let socket = bind_udp(
                addr,
                true,
                settings.ingest.socket_recv_buffer_bytes,
                &settings.ingest.allow,
            )
            .map_err(|e| annotate(e, "ingest.listen", addr))?;
            addr = socket.local_addr()?;
            sockets.push(socket);
        }
        heartbeat.push(addr);
    }
    let mut shard_ports = Vec::new();
    if settings.ingest.shard_ports {
        for (i, sockets) in shared.iter_mut().enumerate() {
            let mut addr = settings.ingest.listen;
            if addr.port() != 0 {
                addr.set_port(addr.port() + 1 + i as u16);
            }
            let socket = bind_udp(
                addr,
                false,
                settings.ingest.socket_recv_buffer_bytes,
                &settings.ingest.allow,
            )
            .map_err(|e| annotate(e, "ingest.shard_ports", addr))?;
            shard_ports.push(socket.local_addr()?);
            sockets.push(socket);
        }
    }

    let metrics_listener = crate::metrics::bind(&settings.metrics)?;
    let recv_buffer_bytes = shared
        .iter()
        .flatten()
        .map(crate::ingest::recv_buffer_of)
        .min()
        .unwrap_or(0);

    let keys = match &settings.auth.keys_file {
        Some(path) => Some(Arc::new(
            crate::keyfile::load(
                path,
                settings.auth.replay_window,
                settings.auth.max_gateways,
                None,
            )
            .map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("setting `auth.keys_file`: {e}"),
                )
            })?,
        )),
        None => None,
    };
    if let (Some(keys), Some(path)) = (&keys, &settings.auth.keys_file) {
        if keys.is_empty() {
            tracing::warn!(
                "auth.keys_file {} lists no gateway: every heartbeat will be refused until \
                 one is added (then SIGHUP)",
                path.display()
            );
        }
    }
    let key_ring: KeyRing = Arc::new(Mutex::new(keys.clone()));
    let max_clock_skew_ms =
        u64::try_from(settings.auth.max_clock_skew.as_millis()).unwrap_or(u64::MAX);
    let verifier = Verifier::new(keys.clone(), max_clock_skew_ms);
    let seed = RandomState::new().hash_one(0u64);

    // The state directory, if state is kept and the directory can be written; a cold start
    // when nothing is saved there.
    let state_dir = if settings.state.enabled {
        match state::prepare(&settings.state.dir) {
            Ok(()) => Some(settings.state.dir.clone()),
            Err(e) => {
                tracing::error!(
                    "setting `state.dir`: {e}; running without durable state (a restart will \
                     lose presence): make the directory writable by the daemon's user, or set \
                     state.enabled = false"
                );
                None
            }
        }
    } else {
        None
    };
    let cold = state_dir.as_deref().map_or(true, |dir| {
        presenced_store::list_shards(dir).map_or(true, |found| found.is_empty())
    });
    let warming_until_us = cold.then(|| clock.mono_us() + core.timeout_us());
    let store_limits = state_dir.as_ref().map(|_| StoreLimits {
        queue_transitions: settings.state.queue,
        snapshot_slots_per_round: settings.state.snapshot_slots_per_round,
    });

    let hubs = settings.link.hubs(cores.service.len());
    // Every node (its table, wheel and blocks reserved) before any thread starts.
    let mut nodes = Vec::with_capacity(n);
    for index in 0..n {
        let mut core = core.clone();
        core.hash_seed = seed.wrapping_add(index as u64);
        let config = NodeConfig {
            index,
            shards: n,
            hubs,
            core,
            cross_shard_batch: settings.shards.cross_shard_batch,
            link_outbox: settings.shards.link_outbox,
            store: store_limits,
            warming_until_us,
            sources: settings.ingest.source_limits(),
            backoff: settings.ingest.backoff_config(&settings.presence),
        };
        let mut node = ShardNode::new(config, verifier.clone(), clock.now()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("setting `presence.{}`: {}", e.key, e.problem),
            )
        })?;
        for region in node.regions() {
            crate::memory::advise(region, crate::memory::Pages::Small);
        }
        node.set_table_advice(crate::memory::huge);
        nodes.push(node);
    }
    let mut figures = match &state_dir {
        Some(dir) => StateStats {
            enabled: true,
            writable: true,
            dir: dir.display().to_string(),
            cold_start: cold,
            ..StateStats::default()
        },
        None => crate::store_thread::disabled_figures(&settings.state.dir),
    };
    let mut restored = state::Restored::default();
    if let Some(dir) = &state_dir {
        match state::restore(dir, &mut nodes, clock.now()) {
            Ok(r) => restored = r,
            Err(e) => tracing::error!(
                "state: {e}; starting without what it holds (the files are left as they are)"
            ),
        }
        for line in &restored.skipped {
            tracing::warn!("state: skipped {line}");
        }
        if let Some(keys) = &keys {
            if let Err(e) = state::restore_marks(dir, keys, restored.clean) {
                tracing::warn!("state: anti-replay marks not restored: {e}");
            }
        }
        figures.restored_users = restored.users;
        figures.restored_transitions = restored.transitions;
        figures.restore_skipped = restored.skipped_total;
        figures.restore_ms = restored.elapsed.as_millis() as u64;
    }
    let figures: Figures = Arc::new(Mutex::new(figures));

    let mut polls = Vec::with_capacity(n);
    let mut peers = Vec::with_capacity(n);
    let mut inboxes = Vec::with_capacity(n);
    for _ in 0..n {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::bounded::<Inbox>(settings.shards.cross_shard_queue);
        peers.push(Peer { inbox: tx, waker });
        inboxes.push(rx);
        polls.push(poll);
    }
    // Per hub, each shard's channel to it.
    let mut hub_inputs: Vec<Vec<_>> = (0..hubs).map(|_| Vec::with_capacity(n)).collect();
    let mut store_inputs = Vec::with_capacity(n);
    let mut shards = Vec::with_capacity(n);
    let mut beats = Vec::with_capacity(n);
    let threads = nodes.into_iter().zip(polls).zip(shared).zip(inboxes);
    for (index, (((node, poll), sockets), inbox)) in threads.enumerate() {
        let mut to_hubs = Vec::with_capacity(hubs);
        for inputs in &mut hub_inputs {
            let (to_hub, from_shard) = crossbeam_channel::bounded::<ToHub>(HUB_CHANNEL_MESSAGES);
            inputs.push(from_shard);
            to_hubs.push(to_hub);
        }
        let to_store = state_dir.as_ref().map(|_| {
            let (tx, rx) = crossbeam_channel::bounded::<ToStore>(STORE_CHANNEL_MESSAGES);
            store_inputs.push(rx);
            tx
        });
        let beat = Arc::new(Beat::default());
        beats.push(beat.clone());
        let setup = ShardSetup {
            beat,
            node,
            poll,
            sockets,
            inbox,
            peers: peers.clone(),
            to_hubs,
            to_store,
            recv_batch: settings.ingest.recv_batch,
            allow: settings.ingest.allow.clone(),
            clock,
            stop: stop.clone(),
            cpu: settings
                .shards
                .pin
                .then(|| cores.shard_core(index))
                .flatten(),
        };
        shards.push(
            std::thread::Builder::new()
                .name(format!("shard-{index}"))
                .spawn(move || shard_thread::run(setup))?,
        );
    }
    // The store, the hub, the link's runtime and the metrics thread, spawned from here on,
    // keep to the service cores; this thread gets its own back at the end of the scope.
    let confined = crate::cpu::Confined::to(&cores.service);
    let (history_tx, history_rx) = crossbeam_channel::bounded(HISTORY_QUEUE);
    let store = match &state_dir {
        Some(dir) => {
            let setup = StoreSetup {
                dir: dir.clone(),
                settings: settings.state.clone(),
                retention_ms: core.last_seen_retention_us / 1000,
                from_shards: store_inputs,
                peers: peers.clone(),
                history: history_rx,
                keys: key_ring.clone(),
                stale_shards: restored.stale_shards,
                history_dirs: restored.history_dirs,
                clock,
                stop: stop.clone(),
                figures: figures.clone(),
            };
            Some(
                std::thread::Builder::new()
                    .name("store".into())
                    .spawn(move || crate::store_thread::run(setup))?,
            )
        }
        None => None,
    };
    // In a cluster: the hubs' view of it and the channels the etcd thread feeds them by.
    let cluster = settings.cluster.enabled().then(|| {
        let warm = settings.cluster.warm_for(&core);
        let warm_at_ms = clock
            .now()
            .wall_ms
            .saturating_add(u64::try_from(warm.as_millis()).unwrap_or(u64::MAX));
        // The addresses as configured: the ports the kernel picks (port 0) are put in etcd
        // once bound, below; the hub needs only the id.
        let (link, heartbeat) = settings
            .cluster
            .advertised(settings.link.listen, settings.ingest.listen);
        let member = Member {
            id: settings.cluster.member.clone().unwrap_or_default(),
            link,
            heartbeat,
            warm_at_ms,
        };
        let config = ClusterConfig {
            member,
            replicas: settings.cluster.replicas,
            lease_ms: u64::try_from(settings.cluster.lease.as_millis()).unwrap_or(u64::MAX),
            skew_ms: u64::try_from(settings.cluster.skew_allowance.as_millis()).unwrap_or(u64::MAX),
        };
        let (news, ends) = crate::etcd::News::channels(hubs);
        (config, news, ends)
    });
    let (hub_cluster, etcd_side) = match cluster {
        Some((config, news, ends)) => (
            Some(link::ClusterWiring {
                config: config.clone(),
                events: ends,
            }),
            Some((config.member, news)),
        ),
        None => (None, None),
    };
    let link_sockets = settings.link.sockets(cores.service.len());
    let link_handle = link::start(
        settings.link.clone(),
        link_sockets,
        link::Welcome {
            shards: n,
            heartbeat_port: heartbeat.first().map_or(0, SocketAddr::port),
            shard_ports: shard_ports.iter().map(SocketAddr::port).collect(),
            timings: settings.presence.wire_timings(),
            warming_until_us,
        },
        link::Wiring {
            from_shards: hub_inputs,
            peers: peers.clone(),
            keys: key_ring.clone(),
            history: state_dir.as_ref().map(|_| history_tx),
            state: figures.clone(),
            cluster: hub_cluster,
        },
        clock,
        stop.clone(),
    )?;
    // The etcd thread, once the push link's port is bound (it is advertised in etcd).
    let etcd = match etcd_side {
        Some((member, events)) => {
            let (link, heartbeat) = settings.cluster.advertised(
                link_handle.addr,
                heartbeat.first().copied().unwrap_or(settings.ingest.listen),
            );
            let setup = crate::etcd::EtcdSetup {
                endpoints: settings
                    .cluster
                    .etcd
                    .iter()
                    .map(|u| u.as_str().to_string())
                    .collect(),
                prefix: settings.cluster.prefix(),
                member: Member {
                    link,
                    heartbeat,
                    ..member
                },
                lease: settings.cluster.lease,
                warm: settings.cluster.warm_for(&core),
                timeout: settings.cluster.connect_timeout,
                events,
                clock,
                stop: stop.clone(),
                probe: peer_probe(&settings, keys.as_deref())?,
            };
            Some(crate::etcd::start(setup)?)
        }
        None => None,
    };
    let metrics_handle = match metrics_listener {
        Some(listener) => Some(crate::metrics::start(
            listener,
            &settings.metrics,
            crate::metrics::Probes {
                scraper: link_handle.scraper.clone(),
                beats: beats.clone(),
                peers: peers.clone(),
                state: figures,
                state_wanted: settings.state.enabled,
                started,
                etcd_dropped: etcd.as_ref().map(|e| e.dropped.clone()),
            },
            stop.clone(),
        )?),
        None => None,
    };
    drop(confined);
    Ok(Running {
        cores,
        link_sockets,
        hubs,
        heartbeat,
        shard_ports,
        link: link_handle.addr,
        recv_buffer_bytes,
        metrics: metrics_handle.as_ref().map(|m| m.addr),
        metrics_handle,
        etcd,
        stop,
        shards,
        beats,
        store,
        link_handle,
        peers,
        key_ring,
        settings,
    })
}

fn annotate(e: io::Error, key: &str, addr: SocketAddr) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("setting `{key}`: cannot bind UDP {addr}: {e}"),
    )
}

impl Running {
    /// Which cores the shards and the service threads run on, for the start log.
    pub fn cores_line(&self) -> String {
        let list = |cpus: &[usize]| {
            cpus.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        let shards = if self.settings.shards.pin {
            format!("shards pinned to {}", list(&self.cores.shards))
        } else {
            "shards not pinned (shards.pin = false)".to_string()
        };
        let count = |n: usize, what: &str| format!("{n} {what}{}", if n == 1 { "" } else { "s" });
        let threads = format!(
            "{}, link ({}, {}), store and metrics threads",
            count(self.hubs, "hub"),
            count(self.link_sockets.endpoints, "endpoint"),
            count(self.link_sockets.threads, "thread")
        );
        let service = if self.cores.service.is_empty() {
            format!("{threads} on any core")
        } else {
            format!("{threads} on {}", list(&self.cores.service))
        };
        format!("{shards}; {service}")
    }

    /// A warning if the kernel capped the heartbeat sockets' receive buffers below
    /// `ingest.socket_recv_buffer` (bursts then overflow sooner), naming the fix.
    pub fn recv_buffer_warning(&self) -> Option<String> {
        let asked = self.settings.ingest.socket_recv_buffer_bytes;
        (self.recv_buffer_bytes < asked).then(|| {
            format!(
                "ingest.socket_recv_buffer: asked for {asked} bytes, the kernel gave \
                 {}; raise net.core.rmem_max (sysctl -w net.core.rmem_max={asked}) or grant \
                 CAP_NET_ADMIN, or lower the setting to silence this",
                self.recv_buffer_bytes
            )
        })
    }

    /// One line for people and for tests: every address actually bound.
    pub fn ready_line(&self) -> String {
        let join = |v: &[SocketAddr]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            "presenced ready heartbeat={} shard_ports={} link={} metrics={}",
            join(&self.heartbeat),
            join(&self.shard_ports),
            self.link,
            join(self.metrics.as_slice())
        )
    }

    /// Stops every thread and waits for them; returns the first error a thread hit.
    pub fn shutdown(self) -> io::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        for peer in &self.peers {
            let _ = peer.waker.wake();
        }
        let mut result = Ok(());
        for handle in self.shards {
            let r = handle
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("shard thread panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        // The shards sent their final snapshots; the store writes them and syncs.
        if let Some(store) = self.store {
            if store.join().is_err() && result.is_ok() {
                result = Err(io::Error::other("store thread panicked"));
            }
        }
        let r = self.link_handle.join();
        let m = self
            .metrics_handle
            .map_or(Ok(()), crate::metrics::Handle::join);
        // It revoked this member's lease on seeing the stop flag.
        let e = self.etcd.map_or(Ok(()), crate::etcd::Handle::join);
        result.and(r).and(m).and(e)
    }

    /// SIGHUP: puts in force what can change without a restart from `fresh` (the settings
    /// just read): `log.level` (on `log`), the link limits (each as [`LinkLimits`] says), and
    /// the gateway keys (`auth.keys_file`'s contents, read again). What fails to reload keeps
    /// its old value; the changed keys that need a restart are named, not applied.
    pub fn reload(&mut self, fresh: &Settings, log: &Log) -> Reload {
        let changed = self.settings.reloadable_differences(fresh);
        let mut report = Reload {
            restart: self.settings.differences_needing_restart(fresh),
            ..Reload::default()
        };
        if changed.iter().any(|key| key == "log.level") {
            log.set_level(fresh.log.level);
            Arc::make_mut(&mut self.settings).log.level = fresh.log.level;
            report.reloaded.push("log.level".into());
        }
        let link_keys: Vec<&String> = changed.iter().filter(|k| k.starts_with("link.")).collect();
        if !link_keys.is_empty() {
            let limits = fresh.link.limits();
            match self.link_handle.set_limits(limits) {
                Ok(()) => {
                    Arc::make_mut(&mut self.settings).link.set_limits(limits);
                    report.reloaded.extend(
                        link_keys
                            .iter()
                            .map(|key| format!("{key} ({})", LinkLimits::applies_to(key))),
                    );
                }
                Err(e) => {
                    let keys: Vec<&str> = link_keys.iter().map(|k| k.as_str()).collect();
                    report.failed.push(format!("{} ({e})", keys.join(", ")));
                }
            }
        }
        if let Some(path) = &self.settings.auth.keys_file {
            match self.reload_keys(path) {
                Ok(n) => report
                    .reloaded
                    .push(format!("auth.keys_file ({n} gateways)")),
                Err(e) => report.failed.push(format!("auth.keys_file ({e})")),
            }
        }
        report
    }

    /// Reads the gateway key file at `path` again and hands the new keys to every shard;
    /// gateways that remain keep their replay windows. Returns the number of gateways now
    /// configured.
    fn reload_keys(&self, path: &std::path::Path) -> Result<usize, String> {
        let previous = self
            .key_ring
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let keys = Arc::new(crate::keyfile::load(
            path,
            self.settings.auth.replay_window,
            self.settings.auth.max_gateways,
            previous.as_deref(),
        )?);
        for (i, peer) in self.peers.iter().enumerate() {
            peer.send(Inbox::Keys(keys.clone()), Duration::from_secs(5))
                .map_err(|_| format!("shard {i} did not take the new keys"))?;
        }
        let n = keys.len();
        *self.key_ring.lock().unwrap_or_else(|e| e.into_inner()) = Some(keys);
        Ok(n)
    }

    /// A thread that has stopped (which only happens on an error or shutdown), if any.
    pub fn stopped_thread(&self) -> Option<&'static str> {
        if self.shards.iter().any(JoinHandle::is_finished) {
            Some("shard")
        } else if self.store.as_ref().is_some_and(JoinHandle::is_finished) {
            Some("store")
        } else if self.link_handle.is_finished() {
            Some("link")
        } else if self
            .etcd
            .as_ref()
            .is_some_and(crate::etcd::Handle::is_finished)
        {
            Some("etcd")
        } else {
            None
        }
    }

    /// The settings in force: those it started with, and what reloads changed since.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Asks the hub for every figure STATS reports; the answer comes on the receiver (`None`
    /// when the hub cannot take the question now). Never waits.
    pub fn ask_stats(
        &self,
    ) -> Option<tokio::sync::oneshot::Receiver<Box<presenced_wire::stats::Stats>>> {
        self.link_handle.scraper.ask()
    }

    /// Each shard thread's turns of its loop so far, in shard order.
    pub fn shard_progress(&self) -> Vec<u64> {
        self.beats.iter().map(|b| b.read()).collect()
    }

    /// Wakes shard `index` for one turn of its loop (a thread with nothing to do sleeps).
    pub fn poke_shard(&self, index: usize) {
        // Fails only when the shard is stopping, which the watchdog then sees.
        let _ = self.peers[index].waker.wake();
    }
}

/// The peer probe's setup (`crate::peer_probe`), or `None` with a log line saying why this
/// member will step down when it loses etcd even if every member lost it. A `cluster.peer_ca`
/// (or `link.cert`) that gives no certificate to trust stops the start, naming the key.
fn peer_probe(
    settings: &Settings,
    keys: Option<&Keys>,
) -> io::Result<Option<crate::peer_probe::ProbeSetup>> {
    let Some(ca) = settings.cluster.peer_ca(&settings.link) else {
        tracing::warn!(
            "cluster: no cluster.peer_ca nor link.cert, so this member cannot check the other \
             members' push links: it asks none of them whether they reach etcd, and steps down \
             when it loses etcd, even if every member lost it"
        );
        return Ok(None);
    };
    let token = match &settings.cluster.peer_token_file {
        Some(path) => Some(presenced_client::read_token_file(path).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "setting `cluster.peer_token_file` ({}): {e}",
                    path.display()
                ),
            )
        })?),
        None => None,
    };
    if token.is_none() && keys.is_some_and(Keys::links_required) {
        tracing::warn!(
            "cluster: push links need a token ([links] in auth.keys_file) and the peer probe has \
             none (cluster.peer_token_file): this member asks no other member whether it \
             reaches etcd, and steps down when it loses etcd, even if every member lost it"
        );
        return Ok(None);
    }
    let key = if settings.cluster.peer_ca.is_some() {
        "cluster.peer_ca"
    } else {
        "link.cert"
    };
    let trust = presenced_client::Trust::CaFile(ca.clone());
    presenced_client::client_config(&trust).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("setting `{key}` (the peer probe's trust): {e}"),
        )
    })?;
    Ok(Some(crate::peer_probe::ProbeSetup {
        own: settings.cluster.member.clone().unwrap_or_default(),
        trust,
        token,
        lease: settings.cluster.lease,
        timeout: settings.cluster.connect_timeout,
    }))
}
