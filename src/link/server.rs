//! The QUIC server: a tokio runtime on its own thread running quinn; one task per gateway link.
//! A task reads frames, checks them and the per-link limits, forwards requests to the hub, and
//! writes what the hub queues for it, coalescing queued frames into one write.
//!
//! Each connection is admitted under the [`Terms`] in force when it arrives: `max_links` is
//! checked against them, the QUIC handshake uses their idle timeout, and the link announces
//! and enforces their limits for its whole life. A reload replaces the terms for the
//! connections that come after it.

use super::{Frame, HistoryAsk, LinkEvent, LinkLimits, Shared, Welcome};
use crate::log::Every;
use crate::settings::LinkSockets;
use crate::time::Clock;
use bytes::{Bytes, BytesMut};
use crossbeam_channel::{Sender, TrySendError};
use presenced_node::hub::Command;
use presenced_wire::link as wire;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a new connection has to open its stream and send HELLO.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames written per QUIC write at most.
const WRITE_BATCH: usize = 64;
/// How often the server looks at the daemon's stop flag.
const STOP_POLL: Duration = Duration::from_millis(20);
/// How long a stopping server waits for its links to take their goodbye, and then for their
/// connections to close.
const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);
/// What GOAWAY asks gateways to wait before they reconnect (a restart takes about this).
const GOAWAY_RECONNECT_AFTER: Duration = Duration::from_millis(250);
/// How long a link's last frame may wait for the gateway's acknowledgement before the close.
const ACK_WAIT: Duration = Duration::from_millis(200);
/// The least QUIC send window a link gets, whatever `link.queue_bytes` says: below a few
/// packets' worth a link could not keep its frames moving at all.
const MIN_SEND_WINDOW_BYTES: usize = wire::MIN_MAX_FRAME_LEN as usize;
/// How soon a link's task tries again to report written frames to a busy hub.
const REPORT_RETRY: Duration = Duration::from_millis(1);

/// What new connections are admitted under: the limits, and the QUIC configuration that
/// carries their idle timeout.
pub struct Terms {
    /// The limits.
    pub limits: LinkLimits,
    /// The endpoint's configuration for a connection admitted under them.
    pub quic: Arc<quinn::ServerConfig>,
}

/// The endpoint's configuration: the TLS configuration, one bidirectional stream per link and
/// no other (SPEC.md § P1: a gateway gets no credit for a second one), no QUIC datagrams, the
/// limits' `idle_timeout`, and their `queue_bytes` as the send window (what QUIC holds for a
/// link unacknowledged, so a stuck link holds at most that beside its queue; at least
/// [`MIN_SEND_WINDOW_BYTES`]).
pub fn quic_config(
    tls: Arc<quinn::crypto::rustls::QuicServerConfig>,
    limits: &LinkLimits,
) -> io::Result<Arc<quinn::ServerConfig>> {
    let idle_timeout = limits.idle_timeout;
    let mut server_config = quinn::ServerConfig::with_crypto(tls);
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(1u8.into());
    transport.max_concurrent_uni_streams(0u8.into());
    // The link uses no QUIC datagrams: not advertised (no max_datagram_frame_size parameter).
    transport.datagram_receive_buffer_size(None);
    transport.keep_alive_interval(Some(Duration::from_secs(5)));
    let idle = quinn::IdleTimeout::try_from(idle_timeout).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "setting `link.idle_timeout`: too long for QUIC",
        )
    })?;
    transport.max_idle_timeout(Some(idle));
    transport.send_window(limits.queue_bytes.max(MIN_SEND_WINDOW_BYTES) as u64);
    server_config.transport_config(Arc::new(transport));
    Ok(Arc::new(server_config))
}

struct Context {
    /// The terms in force for new connections (replaced by a reload).
    terms: tokio::sync::watch::Receiver<Arc<Terms>>,
    welcome: Welcome,
    /// Each hub's channel, by index: a link's events go to its hub's (`bus::hub_of`).
    events: Vec<Sender<LinkEvent>>,
    shared: Shared,
    clock: Clock,
    next_link: AtomicU32,
    links: AtomicUsize,
    /// Becomes true when the daemon stops: every link says goodbye and ends.
    draining: tokio::sync::watch::Receiver<bool>,
    /// Log lines for connections refused at `link.max_links`, and for unauthorized links.
    refused_log: Every,
    unauthorized_log: Every,
}

impl Context {
    /// The channel of the hub that serves `link`.
    fn hub(&self, link: u32) -> &Sender<LinkEvent> {
        &self.events[presenced_node::bus::hub_of(Some(link), self.events.len())]
    }
}

/// A peer-caused refusal is logged at most this often (the rest are counted in the line).
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Binds the endpoints on `sockets.listen` and starts the server thread; returns it and the bound
/// address.
pub fn start(
    sockets: LinkSockets,
    terms: tokio::sync::watch::Receiver<Arc<Terms>>,
    welcome: Welcome,
    events: Vec<Sender<LinkEvent>>,
    shared: Shared,
    clock: Clock,
    stop: Arc<AtomicBool>,
) -> io::Result<(JoinHandle<io::Result<()>>, SocketAddr)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(sockets.threads)
        .thread_name("link")
        .enable_all()
        .build()?;
    let server_config = (*terms.borrow().quic).clone();
    let listen = sockets.listen;
    let bound = bind_sockets(&sockets).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("setting `link.listen`: cannot bind {listen}: {e}"),
        )
    })?;
    let addr = bound[0].local_addr()?;
    let endpoints = {
        let _guard = runtime.enter();
        let mut endpoints = Vec::with_capacity(bound.len());
        for socket in bound {
            endpoints.push(quinn::Endpoint::new(
                quinn::EndpointConfig::default(),
                Some(server_config.clone()),
                socket,
                Arc::new(quinn::TokioRuntime),
            )?);
        }
        endpoints
    };
    let (drain, draining) = tokio::sync::watch::channel(false);
    let context = Arc::new(Context {
        terms,
        welcome,
        events,
        shared,
        clock,
        next_link: AtomicU32::new(1),
        links: AtomicUsize::new(0),
        draining,
        refused_log: Every::new(REFUSAL_LOG_EVERY),
        unauthorized_log: Every::new(REFUSAL_LOG_EVERY),
    });
    let thread = std::thread::Builder::new()
        .name("link".into())
        .spawn(move || {
            runtime.block_on(async move {
                let accepts: Vec<_> = endpoints
                    .iter()
                    .map(|endpoint| tokio::spawn(accept_loop(endpoint.clone(), context.clone())))
                    .collect();
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(STOP_POLL).await;
                }
                // Going away: no new link; every link is told, then closed; the closes are
                // sent before the thread ends, so gateways know at once, not at an idle timeout.
                for accept in &accepts {
                    accept.abort();
                }
                let _ = drain.send(true);
                let told = async {
                    while context.links.load(Ordering::Relaxed) > 0 {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                };
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, told).await;
                let code = wire::ErrorCode::ShuttingDown;
                let message = wire::error_message(code.name(), "the daemon is stopping");
                for endpoint in &endpoints {
                    endpoint.close((code as u32).into(), message.as_bytes());
                }
                let idle = async {
                    for endpoint in &endpoints {
                        endpoint.wait_idle().await;
                    }
                };
                let _ = tokio::time::timeout(DRAIN_TIMEOUT, idle).await;
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
            Ok(())
        })?;
    Ok((thread, addr))
}

/// The endpoints' sockets: `sockets.endpoints` UDP sockets on `sockets.listen` (the first
/// one's port when it asks for any), in one SO_REUSEPORT group when there are several, so the
/// kernel spreads gateways over them by address and keeps each gateway's packets on one.
fn bind_sockets(sockets: &LinkSockets) -> io::Result<Vec<std::net::UdpSocket>> {
    let mut bound: Vec<std::net::UdpSocket> = Vec::with_capacity(sockets.endpoints);
    let mut addr = sockets.listen;
    for _ in 0..sockets.endpoints.max(1) {
        let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.set_reuse_port(sockets.endpoints > 1)?;
        // Capped by the kernel's rmem_max / wmem_max: a smaller buffer only drops more in a
        // burst, so the cap is not an error.
        socket.set_recv_buffer_size(sockets.buffer_bytes)?;
        socket.set_send_buffer_size(sockets.buffer_bytes)?;
        socket.bind(&addr.into())?;
        let socket: std::net::UdpSocket = socket.into();
        addr = socket.local_addr()?;
        bound.push(socket);
    }
    Ok(bound)
}

async fn accept_loop(endpoint: quinn::Endpoint, context: Arc<Context>) {
    while let Some(incoming) = endpoint.accept().await {
        let terms = context.terms.borrow().clone();
        let max = terms.limits.max_links;
        if context.links.fetch_add(1, Ordering::Relaxed) >= max {
            context.links.fetch_sub(1, Ordering::Relaxed);
            context.shared.links_refused.fetch_add(1, Ordering::Relaxed);
            if let Some(unsaid) = context.refused_log.due(context.clock.now().wall_ms) {
                tracing::warn!(
                    addr = %incoming.remote_address(),
                    max_links = max,
                    refused_unlogged = unsaid,
                    "link refused: link.max_links links are open"
                );
            }
            incoming.refuse();
            continue;
        }
        let context = context.clone();
        tokio::spawn(async move {
            if let Ok(connecting) = incoming.accept_with(terms.quic.clone()) {
                if let Ok(connection) = connecting.await {
                    let id = context.next_link.fetch_add(1, Ordering::Relaxed);
                    serve(connection, id, &context, terms.limits).await;
                }
            }
            context.links.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Why a link ended, if it was the gateway's fault: the ERROR code, the reason name its
/// message starts with (SPEC.md § P4), and the detail after it.
struct Fatal {
    code: wire::ErrorCode,
    reason: &'static str,
    detail: String,
}

impl Fatal {
    /// A link error whose reason is its code's name.
    fn new(code: wire::ErrorCode, detail: String) -> Fatal {
        Fatal {
            code,
            reason: code.name(),
            detail,
        }
    }

    /// The ERROR's message, also the QUIC close's reason.
    fn message(&self) -> String {
        wire::error_message(self.reason, &self.detail)
    }
}

async fn serve(connection: quinn::Connection, id: u32, context: &Context, limits: LinkLimits) {
    let opened = tokio::time::timeout(HELLO_TIMEOUT, connection.accept_bi()).await;
    let Ok(Ok((mut send, mut recv))) = opened else {
        let code = wire::ErrorCode::HelloRequired;
        let message = wire::error_message(code.name(), "no stream was opened in time");
        connection.close((code as u32).into(), message.as_bytes());
        return;
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
    let mut link = LinkTask {
        id,
        name: String::new(),
        addr: connection.remote_address(),
        context,
        limits,
        version: wire::Version::V1,
        buf: BytesMut::with_capacity(64 * 1024),
        in_flight: 0,
        firehose_allowed: true,
        local: tx.clone(),
        unreported_bytes: 0,
    };
    let mut opened = Some(tx);
    let mut draining = context.draining.clone();
    let result: Result<&'static str, Fatal> = async {
        let hello = tokio::time::timeout(HELLO_TIMEOUT, link.next_frame(&mut recv)).await;
        match hello {
            Ok(Ok(Some(frame))) => link.hello(&frame, &mut send).await?,
            Ok(Err(fatal)) => return Err(fatal),
            Ok(Ok(None)) => {
                return Err(Fatal::new(
                    wire::ErrorCode::HelloRequired,
                    "the stream ended before HELLO".into(),
                ))
            }
            Err(_) => {
                return Err(Fatal::new(
                    wire::ErrorCode::HelloRequired,
                    format!("HELLO was not sent within {} s", HELLO_TIMEOUT.as_secs()),
                ))
            }
        }
        tracing::info!(
            link = id,
            name = link.name,
            addr = %link.addr,
            version = link.version.to_u16(),
            "link open"
        );
        if let Some(frames) = opened.take() {
            let version = link.version;
            link.event(LinkEvent::Open {
                link: id,
                version,
                name: link.name.clone(),
                peer: link.addr,
                limits: link.limits.announced(),
                frames,
            })?;
        }
        let mut chunks: Vec<Bytes> = Vec::with_capacity(WRITE_BATCH);
        let mut batch: Vec<Frame> = Vec::with_capacity(WRITE_BATCH);
        loop {
            tokio::select! {
                frame = link.next_frame(&mut recv) => match frame? {
                    Some(frame) => link.request(&frame)?,
                    None => return Ok("the gateway closed it"),
                },
                first = rx.recv() => {
                    let Some(first) = first else { return Ok("the hub closed it") };
                    batch.clear();
                    batch.push(first);
                    while batch.len() < WRITE_BATCH {
                        match rx.try_recv() {
                            Ok(frame) => batch.push(frame),
                            Err(_) => break,
                        }
                    }
                    chunks.clear();
                    chunks.extend(batch.iter().map(|f| match f {
                        Frame::Hub(o) => o.frame.clone(),
                        Frame::Local { frame, .. } => frame.clone(),
                    }));
                    if !link.write(&mut send, &mut chunks).await? {
                        return Ok("the connection was lost");
                    }
                    link.written(&batch);
                }
                () = tokio::time::sleep(REPORT_RETRY), if link.unreported_bytes > 0 => {
                    link.report_written();
                }
                _ = draining.changed() => {
                    return Err(Fatal::new(
                        wire::ErrorCode::ShuttingDown,
                        "the daemon is going away (a restart or a stop); reconnect after a \
                         short, jittered backoff"
                            .into(),
                    ));
                }
            }
        }
    }
    .await;
    match &result {
        Ok(why) if !link.name.is_empty() => {
            tracing::info!(link = id, name = link.name, addr = %link.addr, "link closed: {why}");
        }
        Ok(_) => {}
        Err(fatal) if fatal.code == wire::ErrorCode::Stalled => {
            context.shared.links_stalled.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                link = id,
                name = link.name,
                addr = %link.addr,
                "link closed: {}",
                fatal.message()
            );
        }
        Err(fatal) => tracing::info!(
            link = id,
            name = link.name,
            addr = %link.addr,
            code = %fatal.code,
            "link closed: {}",
            fatal.message()
        ),
    }
    if let Err(fatal) = result {
        let (code, message) = (fatal.code, fatal.message());
        // SPEC.md § P6.7: a stalled link is not reading; the close alone says why.
        if code != wire::ErrorCode::Stalled {
            say_goodbye(&mut send, link.version, &fatal).await;
        }
        connection.close((code as u32).into(), message.as_bytes());
    }
    if opened.is_none() {
        let _ = context
            .hub(id)
            .send(LinkEvent::Command(Command::Close { link: id }));
    }
}

/// Writes the frame that ends a link for `fatal` (GOAWAY on a version-2 link the daemon
/// leaves, else ERROR with request id 0) and finishes the stream, waiting a little for the
/// gateway to have it before the connection closes.
async fn say_goodbye(send: &mut quinn::SendStream, version: wire::Version, fatal: &Fatal) {
    let mut buf = BytesMut::new();
    if fatal.code == wire::ErrorCode::ShuttingDown && version >= wire::Version::V2 {
        // SPEC.md § P6.11: the daemon is going away; reconnect, to this address. GOAWAY
        // carries its reason in a field of its own: the message is the detail alone.
        let after = GOAWAY_RECONNECT_AFTER.as_millis() as u32;
        let detail = &fatal.detail;
        wire::encode_goaway(&mut buf, wire::GoAwayReason::Restarting, after, detail);
    } else {
        wire::encode_error(&mut buf, 0, fatal.code, &fatal.message());
    }
    // A gateway whose window is full never takes the frame: the close after says it too.
    let _ = tokio::time::timeout(Duration::from_secs(1), send.write_all(&buf)).await;
    let _ = send.finish();
    // The close frame would discard stream data in flight: wait until the gateway has the
    // frame (acknowledged), but not for long.
    let _ = tokio::time::timeout(ACK_WAIT, send.stopped()).await;
}

struct LinkTask<'a> {
    id: u32,
    /// The gateway's name from HELLO (empty until then).
    name: String,
    addr: SocketAddr,
    context: &'a Context,
    /// The limits it was admitted under, announced in WELCOME: its own for its life.
    limits: LinkLimits,
    /// The protocol version HELLO asked for (version 1 until then).
    version: wire::Version,
    buf: BytesMut,
    in_flight: usize,
    /// Whether SUBSCRIBE_ALL is allowed (always, unless `[links]` grants say otherwise).
    firehose_allowed: bool,
    /// This link's own frame queue, for the ERROR frames of requests the task refuses.
    local: mpsc::UnboundedSender<Frame>,
    /// What hub frames written and not yet reported to the hub took in its queue (its events
    /// channel was full).
    unreported_bytes: usize,
}

impl LinkTask<'_> {
    /// Reads until one whole frame (type + body) is buffered; `None` at end of stream between
    /// frames, or when the stream or connection is lost. A stream that ends inside a frame cut
    /// it short: `too_short` (SPEC.md § P7).
    async fn next_frame(&mut self, recv: &mut quinn::RecvStream) -> Result<Option<Bytes>, Fatal> {
        let reader = wire::FrameReader::new(self.limits.max_frame_len as u32);
        loop {
            match reader.next_frame(&self.buf) {
                Ok(Some((_, consumed))) => {
                    let frame = self.buf.split_to(consumed).freeze();
                    return Ok(Some(frame.slice(4..)));
                }
                Ok(None) => {}
                Err(e) => return Err(fatal_frame(e)),
            }
            // quinn hands over its own buffer (no zeroed scratch buffer per read); cancel-safe.
            match recv.read_chunk(64 * 1024, true).await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk.bytes),
                Ok(None) if !self.buf.is_empty() => {
                    return Err(Fatal {
                        code: wire::ErrorCode::BadFrame,
                        reason: wire::FrameError::TooShort.reason(),
                        detail: "the stream ended inside a frame".into(),
                    })
                }
                Ok(None) | Err(_) => return Ok(None),
            }
        }
    }

    async fn hello(&mut self, frame: &[u8], send: &mut quinn::SendStream) -> Result<(), Fatal> {
        // A HELLO of a version this daemon does not speak fails with `protocol_version`.
        let frame = wire::Version::LATEST
            .decode_client(frame)
            .map_err(fatal_frame)?;
        let wire::GatewayFrame::Common(wire::ClientFrame::Hello(hello)) = frame else {
            return Err(Fatal::new(
                wire::ErrorCode::HelloRequired,
                "the first frame must be HELLO".into(),
            ));
        };
        self.authorize(&hello)?;
        self.name = hello.client_name.to_string();
        self.version = hello.version().unwrap_or(wire::Version::V1);
        let s = &self.limits;
        let w = &self.context.welcome;
        let limits = s.announced();
        let ports: Vec<u16> = if w.shard_ports.is_empty() {
            vec![0; w.shards]
        } else {
            w.shard_ports.clone()
        };
        let mut buf = BytesMut::new();
        let encoded = match self.version {
            wire::Version::V1 => {
                wire::encode_welcome(&mut buf, w.heartbeat_port, &ports, &limits, &w.timings)
            }
            version @ (wire::Version::V2 | wire::Version::V3 | wire::Version::V4) => {
                let now_us = self.context.clock.mono_us();
                let v2 = wire::WelcomeV2 {
                    warm_remaining_ms: w
                        .warming_until_us
                        .filter(|&until| until > now_us)
                        .map(|until| ((until - now_us) / 1000).min(u64::from(u32::MAX)) as u32),
                    idle_timeout_ms: s.idle_timeout.as_millis().min(u128::from(u32::MAX)) as u32,
                };
                let timings = &w.timings;
                wire::encode_welcome_v2(
                    &mut buf,
                    version,
                    w.heartbeat_port,
                    &ports,
                    &limits,
                    timings,
                    &v2,
                )
            }
        };
        encoded.map_err(|e| Fatal::new(wire::ErrorCode::Internal, e.to_string()))?;
        send.write_all(&buf)
            .await
            .map_err(|e| Fatal::new(wire::ErrorCode::Internal, e.to_string()))
    }

    /// With `[links]` grants in the key file, HELLO must name a granted link and carry its
    /// token; the grant says whether the link may use the firehose.
    fn authorize(&mut self, hello: &wire::Hello<'_>) -> Result<(), Fatal> {
        let keys = self
            .context
            .shared
            .keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let Some(keys) = keys.filter(|k| k.links_required()) else {
            return Ok(());
        };
        match keys.link(hello.client_name, hello.token) {
            Some(grant) => {
                self.firehose_allowed = grant.firehose;
                Ok(())
            }
            None => {
                self.context
                    .shared
                    .links_unauthorized
                    .fetch_add(1, Ordering::Relaxed);
                let now_ms = self.context.clock.now().wall_ms;
                if let Some(unsaid) = self.context.unauthorized_log.due(now_ms) {
                    tracing::warn!(
                        link = self.id,
                        name = hello.client_name,
                        addr = %self.addr,
                        unauthorized_unlogged = unsaid,
                        "link refused: unknown link name or wrong token"
                    );
                }
                Err(Fatal::new(
                    wire::ErrorCode::Unauthorized,
                    "unknown link name or wrong token (see [links] in auth.keys_file)".into(),
                ))
            }
        }
    }

    fn event(&self, event: LinkEvent) -> Result<(), Fatal> {
        self.context.hub(self.id).send(event).map_err(|_| {
            Fatal::new(
                wire::ErrorCode::ShuttingDown,
                "the daemon is stopping".into(),
            )
        })
    }

    /// Refuses one request with an ERROR frame of its own (the hub never sees it).
    fn refuse(&self, request: u32, code: wire::ErrorCode, message: &str) {
        let mut buf = BytesMut::new();
        wire::encode_error(
            &mut buf,
            request,
            code,
            &wire::error_message(code.name(), message),
        );
        // The receiver lives as long as this task.
        let _ = self.local.send(Frame::Local {
            frame: buf.freeze(),
            completes: false,
        });
    }

    /// Checks one request frame against the link's limits, in SPEC.md § P6.8's order, and
    /// forwards it to the hub.
    fn request(&mut self, frame: &[u8]) -> Result<(), Fatal> {
        let max_users = self.limits.max_users_per_request;
        let link = self.id;
        let decoded = match self.version.decode_client(frame).map_err(fatal_frame)? {
            wire::GatewayFrame::Common(frame) => frame,
            wire::GatewayFrame::History(history) => return self.history(history),
            wire::GatewayFrame::Map {
                request_id,
                revision,
            } => return self.map(request_id, revision),
        };
        let hello_again = || {
            Fatal::new(
                wire::ErrorCode::HelloRequired,
                "HELLO was already sent".into(),
            )
        };
        // Every frame but HELLO carries a request id.
        let Some(request) = decoded.request_id() else {
            return Err(hello_again());
        };
        if self.refused_in_flight(request) {
            return Ok(());
        }
        if let Some(users) = decoded.users().filter(|u| u.len() > max_users) {
            let message = format!(
                "{} users in one request; link.max_users_per_request is {max_users}",
                users.len(),
            );
            self.refuse(request, wire::ErrorCode::TooManyUsers, &message);
            return Ok(());
        }
        let command = match decoded {
            wire::ClientFrame::Hello(_) => return Err(hello_again()),
            wire::ClientFrame::Subscribe { users, .. } => Command::Subscribe {
                link,
                request,
                users: users.iter().collect(),
            },
            wire::ClientFrame::Unsubscribe { users, .. } => Command::Unsubscribe {
                link,
                request,
                users: users.iter().collect(),
            },
            wire::ClientFrame::Query { users, .. } => Command::Query {
                link,
                request,
                users: users.iter().collect(),
            },
            wire::ClientFrame::SubscribeAll { .. } if !self.firehose_allowed => {
                self.refuse(
                    request,
                    wire::ErrorCode::Unauthorized,
                    "this link may not use the firehose; grant it with firehose = true in \
                     [links] of auth.keys_file",
                );
                return Ok(());
            }
            wire::ClientFrame::SubscribeAll { .. } => Command::Firehose {
                link,
                request,
                on: true,
            },
            wire::ClientFrame::UnsubscribeAll { .. } => Command::Firehose {
                link,
                request,
                on: false,
            },
            wire::ClientFrame::Stats { .. } => Command::Stats {
                link,
                request,
                server: Box::new(self.context.shared.server_stats()),
            },
        };
        self.in_flight += 1;
        self.event(LinkEvent::Command(command))
    }

    /// Refuses `request` (`too_many_requests`) when the link has `link.max_requests_in_flight`
    /// requests in flight already; whether it did.
    fn refused_in_flight(&mut self, request: u32) -> bool {
        let max = self.limits.max_requests_in_flight;
        if self.in_flight < max {
            return false;
        }
        let message = format!(
            "{} requests already in flight; link.max_requests_in_flight is {max}",
            self.in_flight
        );
        self.refuse(request, wire::ErrorCode::TooManyRequests, &message);
        true
    }

    /// MAP (SPEC.md § P6.14): in flight like any request; the hub answers with its member map
    /// when the gateway's differs, then ACK.
    fn map(&mut self, request: u32, revision: u64) -> Result<(), Fatal> {
        if self.refused_in_flight(request) {
            return Ok(());
        }
        self.in_flight += 1;
        let link = self.id;
        self.event(LinkEvent::Command(Command::Map {
            link,
            request,
            revision,
        }))
    }

    /// HISTORY (SPEC.md § P6.12): in flight like any request, answered by the store thread on
    /// the link's own queue; refused when no state is kept or the store is too busy.
    fn history(&mut self, request: wire::HistoryRequest) -> Result<(), Fatal> {
        let id = request.request_id;
        if self.refused_in_flight(id) {
            return Ok(());
        }
        let Some(store) = &self.context.shared.history else {
            let message = "this daemon keeps no history (state.enabled = false)";
            self.refuse(id, wire::ErrorCode::HistoryUnavailable, message);
            return Ok(());
        };
        let ask = HistoryAsk {
            request,
            max_frame_len: self.limits.max_frame_len,
            reply: self.local.clone(),
        };
        match store.try_send(ask) {
            Ok(()) => self.in_flight += 1,
            Err(_) => {
                let message = "the store is too busy to read history now; ask again later";
                self.refuse(id, wire::ErrorCode::Internal, message);
            }
        }
        Ok(())
    }

    /// Writes `chunks` (each a whole frame); false if the connection was lost. Fails the link
    /// if the gateway takes none of it for `stall_timeout`: every write that returns is
    /// progress, and the wait starts again.
    async fn write(
        &mut self,
        send: &mut quinn::SendStream,
        chunks: &mut [Bytes],
    ) -> Result<bool, Fatal> {
        let stall = self.limits.stall_timeout;
        let mut first = 0;
        while first < chunks.len() {
            match tokio::time::timeout(stall, send.write_chunks(&mut chunks[first..])).await {
                Ok(Ok(written)) => first += written.chunks,
                Ok(Err(_)) => return Ok(false),
                Err(_) => {
                    return Err(Fatal::new(
                        wire::ErrorCode::Stalled,
                        format!(
                            "the gateway took nothing for link.stall_timeout ({} ms) with \
                             frames waiting",
                            stall.as_millis()
                        ),
                    ))
                }
            }
        }
        Ok(true)
    }

    /// After a write: requests answered leave the in-flight count, EVENTS frames give latency
    /// samples, and the hub learns how many of its frames were written.
    fn written(&mut self, batch: &[Frame]) {
        let written_us = self.context.clock.mono_us();
        let mut samples = Vec::new();
        for frame in batch {
            let out = match frame {
                Frame::Hub(out) => out,
                Frame::Local { completes, .. } => {
                    if *completes {
                        self.in_flight = self.in_flight.saturating_sub(1);
                    }
                    continue;
                }
            };
            self.unreported_bytes += out.queued_bytes();
            if out.completes {
                self.in_flight = self.in_flight.saturating_sub(1);
            }
            if let Some(since) = out.since_us {
                samples.push(written_us.saturating_sub(since).max(1));
            }
        }
        if !samples.is_empty() {
            let mut latency = self
                .context
                .shared
                .latency
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            for us in samples {
                latency.record(us);
            }
        }
        self.report_written();
    }

    /// Tells the hub how many of its frames were written. Never waits for the hub: with its
    /// channel full the count is kept, and the task's loop tries again shortly.
    fn report_written(&mut self) {
        if self.unreported_bytes == 0 {
            return;
        }
        let report = Command::Written {
            link: self.id,
            bytes: self.unreported_bytes,
        };
        match self
            .context
            .hub(self.id)
            .try_send(LinkEvent::Command(report))
        {
            Ok(()) | Err(TrySendError::Disconnected(_)) => self.unreported_bytes = 0,
            Err(TrySendError::Full(_)) => {}
        }
    }
}

/// A refused frame's link error: its reason is the § P7 reason (SPEC.md § P4).
fn fatal_frame(e: wire::FrameError) -> Fatal {
    let detail = match e {
        // SPEC.md § P5.2: the message lists the versions this daemon speaks.
        wire::FrameError::UnsupportedVersion(asked) => {
            let supported: Vec<String> = wire::Version::ALL
                .iter()
                .map(|v| v.to_u16().to_string())
                .collect();
            format!("version {asked}; supported: {}", supported.join(", "))
        }
        _ => e.to_string(),
    };
    Fatal {
        code: e.error_code(),
        reason: e.reason(),
        detail,
    }
}
