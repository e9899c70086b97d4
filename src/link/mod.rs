//! The push link: gateways connect over QUIC, subscribe to users, query presence and receive
//! transitions (frames in `wire-format/SPEC.md`, "Push link").
//!
//! Threads drive it: the **hub threads** (`hub.rs`, `link.hubs` of them, `hub-0`, `hub-1`, …,
//! each serving the links whose id modulo the count is its index, each reading every shard's
//! transitions) move the shards' messages and their links' commands into a sans-IO
//! `presenced_node::hub::Hub` each and its output back out; the
//! **server** (`server.rs`), a tokio runtime running quinn with one task per gateway link,
//! parses frames, enforces the per-link limits and writes what the hub queues for the link.
//!
//! The daemon's metrics endpoint asks the hub for the same figures as STATS through a
//! [`Scraper`], and reads the latency histogram it keeps here.
//!
//! SIGHUP replaces the per-link limits ([`LinkLimits`], [`Handle::set_limits`]) without
//! closing a link: what an open link was promised in WELCOME stays its own.

pub mod hub;
pub mod server;
pub mod tls;

use crate::daemon::KeyRing;
use crate::settings::{LinkSettings, LinkSockets};
use crate::shard_thread::Peer;
use crate::time::Clock;
use bytes::Bytes;
use crossbeam_channel::TrySendError;
use presenced_node::bus::ToHub;
use presenced_node::hub::{Command, HubConfig, Outgoing, ServerStats};
use presenced_wire::stats::{AuthStats, LatencySummary, Stats};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a reload waits for the hub thread to take the new queue limit (it reads its
/// channel continually; only a stopping daemon's is full this long).
const RELOAD_TIMEOUT: Duration = Duration::from_secs(5);

/// The `[link]` limits a running daemon can change (SIGHUP, [`Handle::set_limits`]), and when
/// each takes effect:
///
/// - `max_links` is checked as each connection arrives: lowered, it refuses new links until
///   fewer are open, and closes none.
/// - `queue_bytes` applies to every link's queue from its next frame (the hub's
///   `Command::QueueBytes`); nothing already queued is dropped. The QUIC send window, which
///   is set to it too, applies to links that connect from then on.
/// - `max_frame_len`, `max_users_per_request`, `max_subscriptions`, `max_requests_in_flight`,
///   `stall_timeout` and `idle_timeout` apply to links that connect from then on. WELCOME announced them to
///   each open link as terms its gateway may rely on (and QUIC agreed the idle timeout at the
///   handshake), so an open link keeps them until it reconnects, as it keeps its grant
///   (wire-format/SPEC.md § P5.1).
///
/// The channel from the links' tasks to the hub is sized at start for
/// `max_links × (max_requests_in_flight + 3)` events. Raised beyond that product, a burst
/// against a stalled hub can fill it, and a link's task then waits for the hub (no request is
/// lost); a restart sizes it again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkLimits {
    /// Gateway links at once.
    pub max_links: usize,
    /// Largest frame accepted or sent, bytes.
    pub max_frame_len: usize,
    /// User ids in one subscribe, unsubscribe or query.
    pub max_users_per_request: usize,
    /// Users one link may be subscribed to.
    pub max_subscriptions: usize,
    /// Requests of one link being answered at once.
    pub max_requests_in_flight: usize,
    /// Bytes queued for one link past which it loses events; also the most QUIC holds for it
    /// unacknowledged (its send window).
    pub queue_bytes: usize,
    /// How long a link with frames waiting may take none of them before it is closed.
    pub stall_timeout: Duration,
    /// QUIC idle timeout of a link.
    pub idle_timeout: Duration,
}

impl LinkLimits {
    /// Which links a reloaded limit (`link.<key>`) applies to, as the reload's log line says.
    pub fn applies_to(key: &str) -> &'static str {
        match key {
            "link.queue_bytes" => "every link",
            _ => "new links",
        }
    }

    /// What WELCOME announces to a link (the settings keep each within a u32).
    pub fn announced(&self) -> presenced_wire::link::Limits {
        let u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        presenced_wire::link::Limits {
            max_frame_len: u32(self.max_frame_len),
            max_users_per_request: u32(self.max_users_per_request),
            max_subscriptions: u32(self.max_subscriptions),
            max_requests_in_flight: u32(self.max_requests_in_flight),
        }
    }
}

/// What the server tells a gateway in WELCOME about the daemon's shards.
#[derive(Clone, Debug)]
pub struct Welcome {
    /// Shard count.
    pub shards: usize,
    /// The shared heartbeat port.
    pub heartbeat_port: u16,
    /// Each shard's own heartbeat port (empty if disabled).
    pub shard_ports: Vec<u16>,
    /// The presence timings (`[presence]`).
    pub timings: presenced_wire::link::Timings,
    /// A cold start: answers are marked warming until this monotonic µs.
    pub warming_until_us: Option<u64>,
}

/// A frame for one link's task to write.
pub enum Frame {
    /// Queued by the hub: counted in its queue until the task reports it written.
    Hub(Outgoing),
    /// A frame the task made itself (an ERROR refusing a request, a history answer): not the
    /// hub's to count.
    Local {
        /// The encoded frame.
        frame: Bytes,
        /// It completes a request in flight.
        completes: bool,
    },
}

/// What a link's task tells the hub thread.
pub enum LinkEvent {
    /// A link passed HELLO: where its frames go.
    Open {
        /// The link's id.
        link: u32,
        /// The protocol version it speaks.
        version: presenced_wire::link::Version,
        /// The name it gave in HELLO.
        name: String,
        /// The gateway's address.
        peer: SocketAddr,
        /// The limits its WELCOME announced.
        limits: presenced_wire::link::Limits,
        /// Its task's frame queue (bounded by the hub's count of queued frames).
        frames: tokio::sync::mpsc::UnboundedSender<Frame>,
    },
    /// Any other command for the hub.
    Command(Command),
    /// The metrics endpoint's request for the STATS figures, and where they go.
    Scrape {
        /// The server's part, as of the request.
        server: Box<ServerStats>,
        /// The answer's way back.
        reply: tokio::sync::oneshot::Sender<Box<Stats>>,
    },
}

/// A HISTORY request for the store thread, and where its answer goes: the link's own frame
/// queue (a `Frame::Local` completing the request).
pub struct HistoryAsk {
    /// The request.
    pub request: presenced_wire::link::HistoryRequest,
    /// The link's frame limit.
    pub max_frame_len: usize,
    /// The link's frame queue.
    pub reply: tokio::sync::mpsc::UnboundedSender<Frame>,
}

/// Transition latency, from datagram receipt to the EVENTS frame written to the QUIC stream.
pub type Latency = Arc<Mutex<LatencyRecord>>;

/// The latency samples since start, µs: their distribution (STATS' percentiles, the metrics'
/// buckets) and their exact sum (the metrics' `_sum`).
pub struct LatencyRecord {
    /// The distribution (3 significant digits, 1 µs to 60 s; longer samples count as 60 s).
    pub histogram: hdrhistogram::Histogram<u64>,
    /// Every sample added, µs.
    pub sum_us: u64,
}

impl LatencyRecord {
    /// Adds a sample.
    pub fn record(&mut self, us: u64) {
        self.histogram.saturating_record(us);
        self.sum_us = self.sum_us.saturating_add(us);
    }
}

/// What the server's tasks measure, reported in STATS.
#[derive(Clone)]
pub struct Shared {
    /// Transition latency histogram.
    pub latency: Latency,
    /// Connections refused because `link.max_links` were open.
    pub links_refused: Arc<AtomicU64>,
    /// The gateway keys and link grants (per-gateway counters in the stats; HELLO checks).
    pub keys: KeyRing,
    /// Links closed at HELLO for a bad name or token.
    pub links_unauthorized: Arc<AtomicU64>,
    /// Links closed for taking nothing for `link.stall_timeout`.
    pub links_stalled: Arc<AtomicU64>,
    /// The store thread's history requests, when state is kept.
    pub history: Option<crossbeam_channel::Sender<HistoryAsk>>,
    /// The store's figures, for STATS.
    pub state: crate::store_thread::Figures,
}

impl Shared {
    /// The server's part of a STATS answer, as of now.
    pub fn server_stats(&self) -> ServerStats {
        let latency_us = {
            let l = self.latency.lock().unwrap_or_else(|e| e.into_inner());
            let h = &l.histogram;
            LatencySummary {
                p50: h.value_at_quantile(0.5),
                p99: h.value_at_quantile(0.99),
                max: h.max(),
                count: h.len(),
            }
        };
        let auth = match &*self.keys.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(keys) => keys.stats(),
            None => AuthStats::default(),
        };
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner()).clone();
        ServerStats {
            auth,
            state,
            links_refused: self.links_refused.load(Ordering::Relaxed),
            links_unauthorized: self.links_unauthorized.load(Ordering::Relaxed),
            links_stalled: self.links_stalled.load(Ordering::Relaxed),
            latency_us,
        }
    }
}

/// How the metrics endpoint asks for the STATS figures: through the hub, like a link's STATS,
/// so the shards answer from their own loop and nothing they touch is locked.
#[derive(Clone)]
pub struct Scraper {
    events: crossbeam_channel::Sender<LinkEvent>,
    shared: Shared,
}

impl Scraper {
    /// Asks the hub for every figure STATS reports (every link's too); `None` when the hub's
    /// channel is full or closed (the daemon is stopping). Never waits.
    pub fn ask(&self) -> Option<tokio::sync::oneshot::Receiver<Box<Stats>>> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let scrape = LinkEvent::Scrape {
            server: Box::new(self.shared.server_stats()),
            reply,
        };
        match self.events.try_send(scrape) {
            Ok(()) => Some(answer),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => None,
        }
    }

    /// The transition latency since start: for each bound (µs, ascending) the samples at or
    /// below it (to the histogram's 3 significant digits), then the count and the sum (µs).
    pub fn latency(&self, bounds_us: &[u64]) -> (Vec<u64>, u64, u64) {
        let l = self
            .shared
            .latency
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let h = &l.histogram;
        let below = bounds_us
            .iter()
            .map(|&b| h.count_between(0, b.min(h.high())))
            .collect();
        (below, h.len(), l.sum_us)
    }
}

/// The running push link.
pub struct Handle {
    /// The address the QUIC endpoint is bound to.
    pub addr: SocketAddr,
    /// The metrics endpoint's way to the figures.
    pub scraper: Scraper,
    hubs: Vec<JoinHandle<io::Result<()>>>,
    server: JoinHandle<io::Result<()>>,
    /// Each hub thread's channel, for a new queue depth.
    events: Vec<crossbeam_channel::Sender<LinkEvent>>,
    /// What new connections are admitted under.
    terms: tokio::sync::watch::Sender<Arc<server::Terms>>,
    tls: Arc<quinn::crypto::rustls::QuicServerConfig>,
}

impl Handle {
    /// Waits for both threads (after the daemon's stop flag is set).
    pub fn join(self) -> io::Result<()> {
        let mut hub = Ok(());
        for handle in self.hubs {
            let r = handle
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("hub thread panicked")));
            hub = hub.and(r);
        }
        let server = self
            .server
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("link thread panicked")));
        hub.and(server)
    }

    /// Whether either thread has stopped.
    pub fn is_finished(&self) -> bool {
        self.hubs.iter().any(JoinHandle::is_finished) || self.server.is_finished()
    }

    /// Puts new limits in force, each as [`LinkLimits`] says; on an error the old ones stay.
    pub fn set_limits(&self, limits: LinkLimits) -> Result<(), String> {
        let quic = server::quic_config(self.tls.clone(), &limits).map_err(|e| e.to_string())?;
        let queue = Command::QueueBytes {
            bytes: limits.queue_bytes,
        };
        for (index, events) in self.events.iter().enumerate() {
            events
                .send_timeout(LinkEvent::Command(queue.clone()), RELOAD_TIMEOUT)
                .map_err(|_| {
                    format!(
                        "hub thread {index} did not take them within {} s",
                        RELOAD_TIMEOUT.as_secs()
                    )
                })?;
        }
        self.terms
            .send_replace(Arc::new(server::Terms { limits, quic }));
        Ok(())
    }
}

/// What the push link is connected to.
pub struct Wiring {
    /// Per hub (`link.hubs`, at least one), each shard's channel to it.
    pub from_shards: Vec<Vec<crossbeam_channel::Receiver<ToHub>>>,
    /// The shards, for the hub's requests.
    pub peers: Vec<Peer>,
    /// The key set (link grants, per-gateway stats).
    pub keys: KeyRing,
    /// The store thread's history requests, when state is kept.
    pub history: Option<crossbeam_channel::Sender<HistoryAsk>>,
    /// The store's figures, for STATS.
    pub state: crate::store_thread::Figures,
    /// With `[cluster]`: this member's cluster and what the etcd thread learns of it.
    pub cluster: Option<ClusterWiring>,
}

/// The hubs' part of a cluster member: its settings and the etcd thread's news.
pub struct ClusterWiring {
    /// This member's entry, the replicas and the skew allowance.
    pub config: presenced_node::cluster::ClusterConfig,
    /// What the etcd thread learns, in order: one channel per hub (`crate::etcd::News`).
    pub events: Vec<crossbeam_channel::Receiver<presenced_node::cluster::EtcdEvent>>,
}

/// Starts the hub threads and the QUIC server thread with the push link's settings.
pub fn start(
    settings: LinkSettings,
    sockets: LinkSockets,
    welcome: Welcome,
    wiring: Wiring,
    clock: Clock,
    stop: Arc<AtomicBool>,
) -> io::Result<Handle> {
    let Wiring {
        from_shards,
        peers,
        keys,
        history,
        state,
        cluster,
    } = wiring;
    let hubs = from_shards.len();
    let (cluster_config, mut cluster_events) = match cluster {
        Some(c) => (Some(c.config), c.events.into_iter().map(Some).collect()),
        None => (None, vec![None; hubs]),
    };
    assert!(
        hubs >= 1 && cluster_events.len() == hubs,
        "one hub or more, each with its own news of the cluster"
    );
    let latency: Latency = Arc::new(Mutex::new(LatencyRecord {
        histogram: hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3)
            .map_err(|e| io::Error::other(e.to_string()))?,
        sum_us: 0,
    }));
    // Per hub: every link's requests in flight, plus its open, close and a write report each;
    // and the metrics endpoint's one scrape at a time.
    let (events_tx, events_rx): (Vec<_>, Vec<_>) = (0..hubs)
        .map(|_| {
            crossbeam_channel::bounded(
                settings.max_links * (settings.max_requests_in_flight + 3) + 1,
            )
        })
        .unzip();
    let tls = tls::server_config(&settings)?;
    let limits = settings.limits();
    let quic = server::quic_config(tls.clone(), &limits)?;
    let (terms, admitted) = tokio::sync::watch::channel(Arc::new(server::Terms { limits, quic }));
    let shared = Shared {
        latency,
        links_refused: Arc::new(AtomicU64::new(0)),
        keys,
        links_unauthorized: Arc::new(AtomicU64::new(0)),
        links_stalled: Arc::new(AtomicU64::new(0)),
        history,
        state,
    };
    let scraper = Scraper {
        // Hub 0 answers the daemon's scrapes, merging the other hubs' shares.
        events: events_tx[0].clone(),
        shared: shared.clone(),
    };
    let shards = welcome.shards;
    let (server, addr) = server::start(
        sockets,
        admitted,
        welcome,
        events_tx.clone(),
        shared,
        clock,
        stop.clone(),
    )?;
    let board = hub::Board::new(hubs);
    let mut threads = Vec::with_capacity(hubs);
    for (index, (from_shards, events)) in from_shards.into_iter().zip(events_rx).enumerate() {
        let hub = presenced_node::hub::Hub::new(HubConfig {
            shards,
            index,
            queue_bytes: limits.queue_bytes,
            cluster: cluster_config.clone(),
        });
        let cluster = cluster_events[index].take();
        let (peers, board, stop) = (peers.clone(), board.clone(), stop.clone());
        threads.push(
            std::thread::Builder::new()
                .name(format!("hub-{index}"))
                .spawn(move || {
                    let inputs = hub::Inputs {
                        index,
                        from_shards: &from_shards,
                        events: &events,
                        cluster: cluster.as_ref(),
                        board: &board,
                    };
                    hub::run(hub, inputs, &peers, &clock, &stop)
                })?,
        );
    }
    Ok(Handle {
        addr,
        scraper,
        hubs: threads,
        server,
        events: events_tx,
        terms,
        tls,
    })
}
