//! The push link: gateways connect over QUIC, subscribe to users, query presence and receive
//! transitions (frames in `wire-format/SPEC.md`, "Push link").
//!
//! Two threads drive it: the **hub thread** (`hub.rs`) moves the shards' messages and the
//! links' commands into the sans-IO `presenced_node::hub::Hub` and its output back out; the
//! **server** (`server.rs`), a tokio runtime running quinn with one task per gateway link,
//! parses frames, enforces the per-link limits and writes what the hub queues for the link.

pub mod hub;
pub mod server;
pub mod tls;

use crate::daemon::KeyRing;
use crate::settings::LinkSettings;
use crate::shard_thread::Peer;
use crate::time::Clock;
use bytes::Bytes;
use presenced_node::bus::ToHub;
use presenced_node::hub::{Command, HubConfig, Outgoing};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

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
        /// Its task's frame queue (bounded by the hub's count of queued frames).
        frames: tokio::sync::mpsc::UnboundedSender<Frame>,
    },
    /// Any other command for the hub.
    Command(Command),
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
pub type Latency = Arc<Mutex<hdrhistogram::Histogram<u64>>>;

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
    /// The store thread's history requests, when state is kept.
    pub history: Option<crossbeam_channel::Sender<HistoryAsk>>,
    /// The store's figures, for STATS.
    pub state: crate::store_thread::Figures,
}

/// The running push link.
pub struct Handle {
    /// The address the QUIC endpoint is bound to.
    pub addr: SocketAddr,
    hub: JoinHandle<io::Result<()>>,
    server: JoinHandle<io::Result<()>>,
}

impl Handle {
    /// Waits for both threads (after the daemon's stop flag is set).
    pub fn join(self) -> io::Result<()> {
        let hub = self
            .hub
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("hub thread panicked")));
        let server = self
            .server
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("link thread panicked")));
        hub.and(server)
    }

    /// Whether either thread has stopped.
    pub fn is_finished(&self) -> bool {
        self.hub.is_finished() || self.server.is_finished()
    }
}

/// What the push link is connected to.
pub struct Wiring {
    /// Each shard's channel to the hub.
    pub from_shards: Vec<crossbeam_channel::Receiver<ToHub>>,
    /// The shards, for the hub's requests.
    pub peers: Vec<Peer>,
    /// The key set (link grants, per-gateway stats).
    pub keys: KeyRing,
    /// The store thread's history requests, when state is kept.
    pub history: Option<crossbeam_channel::Sender<HistoryAsk>>,
    /// The store's figures, for STATS.
    pub state: crate::store_thread::Figures,
}

/// Starts the hub thread and the QUIC server thread with the push link's settings.
pub fn start(
    settings: LinkSettings,
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
    } = wiring;
    let latency: Latency = Arc::new(Mutex::new(
        hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3)
            .map_err(|e| io::Error::other(e.to_string()))?,
    ));
    // Every link's requests in flight, plus its open, close and a write report each.
    let (events_tx, events_rx) =
        crossbeam_channel::bounded(settings.max_links * (settings.max_requests_in_flight + 3));
    let tls = tls::server_config(&settings)?;
    let shared = Shared {
        latency,
        links_refused: Arc::new(AtomicU64::new(0)),
        keys,
        links_unauthorized: Arc::new(AtomicU64::new(0)),
        history,
        state,
    };
    let hub = presenced_node::hub::Hub::new(HubConfig {
        shards: welcome.shards,
        max_frame_len: settings.max_frame_len,
        max_subscriptions: settings.max_subscriptions,
        queue_depth: settings.queue_depth,
    });
    let (server, addr) = server::start(
        settings,
        welcome,
        tls,
        events_tx,
        shared,
        clock,
        stop.clone(),
    )?;
    let hub = std::thread::Builder::new()
        .name("hub".into())
        .spawn(move || hub::run(hub, &from_shards, &events_rx, &peers, &stop))?;
    Ok(Handle { addr, hub, server })
}
