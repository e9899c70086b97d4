//! The push link: gateways connect over QUIC, subscribe to users, query presence and receive
//! transitions (frames in `wire-format/SPEC.md`, "Push link").
//!
//! Two parts: the **hub** (`hub.rs`), one plain thread that owns every subscription, reads the
//! shards' FIFO channels and fans transitions out; and the **server** (`server.rs`), a tokio
//! runtime running quinn, one task per gateway connection, which parses frames, enforces the
//! per-link limits and writes what the hub queues for it.

pub mod hub;
pub mod server;
pub mod tls;

use crate::bus::ToHub;
use crate::settings::Settings;
use crate::worker::Peer;
use bytes::Bytes;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
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
}

/// A frame queued for one gateway.
pub struct Outgoing {
    /// The encoded frame, length prefix included.
    pub frame: Bytes,
    /// This frame ends the answer to a request (the link's in-flight count drops).
    pub completes: bool,
    /// For EVENTS frames: monotonic µs at which the earliest datagram behind them was received.
    pub since_us: Option<u64>,
}

/// The hub's side of one link: where to queue frames and how many are queued.
pub struct LinkOut {
    /// Frames for the connection task to write.
    pub tx: tokio::sync::mpsc::UnboundedSender<Outgoing>,
    /// Frames queued and not yet written (the hub adds, the connection task subtracts).
    pub queued: Arc<AtomicUsize>,
}

/// What a connection task asks the hub.
pub enum Command {
    /// A link passed HELLO.
    Open {
        /// The link's id.
        link: u32,
        /// Where its frames go.
        out: LinkOut,
    },
    /// SUBSCRIBE.
    Subscribe {
        /// The link.
        link: u32,
        /// Its request id.
        request: u32,
        /// Users (nonzero, at most `link.max_users_per_request`).
        users: Vec<u64>,
    },
    /// UNSUBSCRIBE.
    Unsubscribe {
        /// The link.
        link: u32,
        /// Its request id.
        request: u32,
        /// Users.
        users: Vec<u64>,
    },
    /// SUBSCRIBE_ALL (true) or UNSUBSCRIBE_ALL (false).
    Firehose {
        /// The link.
        link: u32,
        /// Its request id.
        request: u32,
        /// Subscribe or unsubscribe.
        on: bool,
    },
    /// QUERY.
    Query {
        /// The link.
        link: u32,
        /// Its request id.
        request: u32,
        /// Users.
        users: Vec<u64>,
    },
    /// STATS.
    Stats {
        /// The link.
        link: u32,
        /// Its request id.
        request: u32,
    },
    /// The link closed: its subscriptions end.
    Close {
        /// The link.
        link: u32,
    },
}

/// Transition latency, from datagram receipt to the EVENTS frame written to the QUIC stream.
pub type Latency = Arc<Mutex<hdrhistogram::Histogram<u64>>>;

/// Measurements shared by the server tasks and the hub (which reports them).
#[derive(Clone)]
pub struct Shared {
    /// Transition latency histogram.
    pub latency: Latency,
    /// Connections refused because `link.max_links` were open.
    pub links_refused: Arc<AtomicU64>,
    /// The gateway keys and link grants (per-gateway counters in the stats; HELLO checks).
    pub keys: crate::auth::KeyRing,
    /// Links closed at HELLO for a bad name or token.
    pub links_unauthorized: Arc<AtomicU64>,
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

/// Starts the hub thread and the QUIC server thread.
pub fn start(
    settings: Arc<Settings>,
    welcome: Welcome,
    from_shards: Vec<crossbeam_channel::Receiver<ToHub>>,
    peers: Vec<Peer>,
    keys: crate::auth::KeyRing,
    origin: std::time::Instant,
    stop: Arc<AtomicBool>,
) -> io::Result<Handle> {
    let latency: Latency = Arc::new(Mutex::new(
        hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3)
            .map_err(|e| io::Error::other(e.to_string()))?,
    ));
    let (commands_tx, commands_rx) =
        crossbeam_channel::bounded(settings.max_links * settings.max_requests_in_flight);
    let tls = tls::server_config(&settings)?;
    let refused = Arc::new(AtomicU64::new(0));
    let unauthorized = Arc::new(AtomicU64::new(0));
    let (server, addr) = server::start(
        settings.clone(),
        welcome,
        tls,
        commands_tx,
        Shared {
            latency: latency.clone(),
            links_refused: refused.clone(),
            keys: keys.clone(),
            links_unauthorized: unauthorized.clone(),
        },
        origin,
        stop.clone(),
    )?;
    let shared = Shared {
        latency,
        links_refused: refused,
        keys,
        links_unauthorized: unauthorized,
    };
    let hub = hub::Hub::new(settings, from_shards, commands_rx, peers, shared);
    let hub = std::thread::Builder::new()
        .name("hub".into())
        .spawn(move || hub.run(&stop))?;
    Ok(Handle { addr, hub, server })
}
