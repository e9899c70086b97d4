//! The QUIC server: a tokio runtime on its own thread running quinn; one task per gateway link.
//! A task reads frames, checks them and the per-link limits, forwards requests to the hub, and
//! writes what the hub queues for it, coalescing queued frames into one write.

use super::{Command, LinkOut, Outgoing, Shared, Welcome};
use crate::settings::Settings;
use bytes::{Bytes, BytesMut};
use crossbeam_channel::Sender;
use presenced_wire::link as wire;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// How long a new connection has to open its stream and send HELLO.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames written per QUIC write at most.
const WRITE_BATCH: usize = 64;

struct Context {
    settings: Arc<Settings>,
    welcome: Welcome,
    commands: Sender<Command>,
    shared: Shared,
    origin: Instant,
    next_link: AtomicU32,
    links: AtomicUsize,
}

/// Binds the endpoint and starts the server thread; returns it and the bound address.
pub fn start(
    settings: Arc<Settings>,
    welcome: Welcome,
    tls: Arc<quinn::crypto::rustls::QuicServerConfig>,
    commands: Sender<Command>,
    shared: Shared,
    origin: Instant,
    stop: Arc<AtomicBool>,
) -> io::Result<(JoinHandle<io::Result<()>>, SocketAddr)> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("link")
        .enable_all()
        .build()?;
    let mut server_config = quinn::ServerConfig::with_crypto(tls);
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(1u8.into());
    transport.max_concurrent_uni_streams(0u8.into());
    transport.keep_alive_interval(Some(Duration::from_secs(5)));
    server_config.transport_config(Arc::new(transport));
    let listen = settings.link_listen;
    let endpoint = {
        let _guard = runtime.enter();
        quinn::Endpoint::server(server_config, listen).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("setting `link.listen`: cannot bind {listen}: {e}"),
            )
        })?
    };
    let addr = endpoint.local_addr()?;
    let context = Arc::new(Context {
        settings,
        welcome,
        commands,
        shared,
        origin,
        next_link: AtomicU32::new(1),
        links: AtomicUsize::new(0),
    });
    let thread = std::thread::Builder::new()
        .name("link".into())
        .spawn(move || {
            runtime.block_on(async move {
                let accept = tokio::spawn(accept_loop(endpoint.clone(), context));
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                endpoint.close(
                    (wire::ErrorCode::ShuttingDown as u32).into(),
                    b"shutting down",
                );
                accept.abort();
            });
            runtime.shutdown_timeout(Duration::from_secs(1));
            Ok(())
        })?;
    Ok((thread, addr))
}

async fn accept_loop(endpoint: quinn::Endpoint, context: Arc<Context>) {
    while let Some(incoming) = endpoint.accept().await {
        let max = context.settings.max_links;
        if context.links.fetch_add(1, Ordering::Relaxed) >= max {
            context.links.fetch_sub(1, Ordering::Relaxed);
            context.shared.links_refused.fetch_add(1, Ordering::Relaxed);
            incoming.refuse();
            continue;
        }
        let context = context.clone();
        tokio::spawn(async move {
            if let Ok(connection) = incoming.await {
                let id = context.next_link.fetch_add(1, Ordering::Relaxed);
                serve(connection, id, &context).await;
            }
            context.links.fetch_sub(1, Ordering::Relaxed);
        });
    }
}

/// Why a link ended, if it was the gateway's fault.
struct Fatal(wire::ErrorCode, String);

async fn serve(connection: quinn::Connection, id: u32, context: &Context) {
    let opened = tokio::time::timeout(HELLO_TIMEOUT, connection.accept_bi()).await;
    let Ok(Ok((mut send, mut recv))) = opened else {
        connection.close((wire::ErrorCode::HelloRequired as u32).into(), b"no stream");
        return;
    };
    let mut link = LinkTask {
        id,
        context,
        buf: BytesMut::with_capacity(64 * 1024),
        in_flight: 0,
        queued: Arc::new(AtomicUsize::new(0)),
        firehose_allowed: true,
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
    let queued = link.queued.clone();
    let mut out = Some(LinkOut {
        tx: tx.clone(),
        queued: queued.clone(),
    });
    let result: Result<(), Fatal> = async {
        let hello = tokio::time::timeout(HELLO_TIMEOUT, link.next_frame(&mut recv)).await;
        match hello {
            Ok(Ok(Some(frame))) => link.hello(&frame, &mut send).await?,
            Ok(Err(fatal)) => return Err(fatal),
            _ => {
                return Err(Fatal(
                    wire::ErrorCode::HelloRequired,
                    "HELLO was not sent in time".into(),
                ))
            }
        }
        if let Some(out) = out.take() {
            link.command(Command::Open { link: id, out })?;
        }
        let mut chunks: Vec<Bytes> = Vec::with_capacity(WRITE_BATCH);
        loop {
            tokio::select! {
                frame = link.next_frame(&mut recv) => match frame? {
                    Some(frame) => link.request(&frame, &tx)?,
                    None => return Ok(()),
                },
                first = rx.recv() => {
                    let Some(first) = first else { return Ok(()) };
                    let mut batch = vec![first];
                    while batch.len() < WRITE_BATCH {
                        match rx.try_recv() {
                            Ok(o) => batch.push(o),
                            Err(_) => break,
                        }
                    }
                    chunks.clear();
                    chunks.extend(batch.iter().map(|o| o.frame.clone()));
                    if send.write_all_chunks(&mut chunks).await.is_err() {
                        return Ok(());
                    }
                    let written_us = context.origin.elapsed().as_micros() as u64;
                    queued.fetch_sub(batch.len(), Ordering::Relaxed);
                    let mut latency = None;
                    for o in &batch {
                        if o.completes {
                            link.in_flight = link.in_flight.saturating_sub(1);
                        }
                        if let Some(since) = o.since_us {
                            latency.get_or_insert_with(Vec::new).push(written_us.saturating_sub(since).max(1));
                        }
                    }
                    if let Some(samples) = latency {
                        let mut h = context.shared.latency.lock().unwrap_or_else(|e| e.into_inner());
                        for us in samples {
                            h.saturating_record(us);
                        }
                    }
                }
            }
        }
    }
    .await;
    if let Err(Fatal(code, message)) = result {
        let mut buf = BytesMut::new();
        wire::encode_error(&mut buf, 0, code, &message);
        // A gateway whose window is full never takes the frame: the close below says it too.
        let _ = tokio::time::timeout(Duration::from_secs(1), send.write_all(&buf)).await;
        let _ = send.finish();
        // Give the ERROR frame a moment to leave before the close frame.
        tokio::time::sleep(Duration::from_millis(50)).await;
        connection.close((code as u32).into(), message.as_bytes());
    }
    if out.is_none() {
        let _ = context.commands.send(Command::Close { link: id });
    }
}

struct LinkTask<'a> {
    id: u32,
    context: &'a Context,
    buf: BytesMut,
    in_flight: usize,
    /// Frames queued for this link and not yet written (shared with the hub).
    queued: Arc<AtomicUsize>,
    /// Whether SUBSCRIBE_ALL is allowed (always, unless `[links]` grants say otherwise).
    firehose_allowed: bool,
}

impl LinkTask<'_> {
    /// Reads until one whole frame (type + body) is buffered; `None` at end of stream.
    async fn next_frame(&mut self, recv: &mut quinn::RecvStream) -> Result<Option<Bytes>, Fatal> {
        let reader = wire::FrameReader::new(self.context.settings.max_frame_len as u32);
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
                Ok(None) | Err(_) => return Ok(None),
            }
        }
    }

    async fn hello(&mut self, frame: &[u8], send: &mut quinn::SendStream) -> Result<(), Fatal> {
        // A HELLO of another protocol version fails to decode with `protocol_version`.
        let wire::ClientFrame::Hello(hello) = wire::decode_client(frame).map_err(fatal_frame)?
        else {
            return Err(Fatal(
                wire::ErrorCode::HelloRequired,
                "the first frame must be HELLO".into(),
            ));
        };
        self.authorize(&hello)?;
        let s = &self.context.settings;
        let w = &self.context.welcome;
        let limits = wire::Limits {
            max_frame_len: s.max_frame_len as u32,
            max_users_per_request: s.max_users_per_request as u32,
            max_subscriptions: s.max_subscriptions as u32,
            max_requests_in_flight: s.max_requests_in_flight as u32,
        };
        let timings = wire::Timings {
            heartbeat_interval_ms: (s.core.heartbeat_interval_us / 1000) as u32,
            grace_ms: (s.core.grace_us / 1000) as u32,
            idle_after_ms: (s.core.idle_after_us / 1000) as u32,
            tick_us: s.core.tick_us as u32,
        };
        let ports: Vec<u16> = if w.shard_ports.is_empty() {
            vec![0; w.shards]
        } else {
            w.shard_ports.clone()
        };
        let mut buf = BytesMut::new();
        wire::encode_welcome(&mut buf, w.heartbeat_port, &ports, &limits, &timings)
            .map_err(|e| Fatal(wire::ErrorCode::Internal, e.to_string()))?;
        send.write_all(&buf)
            .await
            .map_err(|e| Fatal(wire::ErrorCode::Internal, e.to_string()))
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
                Err(Fatal(
                    wire::ErrorCode::Unauthorized,
                    "unknown link name or wrong token (see [links] in auth.keys_file)".into(),
                ))
            }
        }
    }

    fn command(&self, command: Command) -> Result<(), Fatal> {
        self.context.commands.send(command).map_err(|_| {
            Fatal(
                wire::ErrorCode::ShuttingDown,
                "the daemon is stopping".into(),
            )
        })
    }

    /// Checks one request frame against the link's limits and forwards it to the hub.
    fn request(&mut self, frame: &[u8], tx: &mpsc::UnboundedSender<Outgoing>) -> Result<(), Fatal> {
        let s = &self.context.settings;
        let link = self.id;
        let queued = &self.queued;
        let refuse = |request: u32, code: wire::ErrorCode, message: String| {
            queued.fetch_add(1, Ordering::Relaxed);
            let mut buf = BytesMut::new();
            wire::encode_error(&mut buf, request, code, &message);
            let _ = tx.send(Outgoing {
                frame: buf.freeze(),
                completes: false,
                since_us: None,
            });
        };
        let (request, command) = match wire::decode_client(frame).map_err(fatal_frame)? {
            wire::ClientFrame::Hello(_) => {
                return Err(Fatal(
                    wire::ErrorCode::HelloRequired,
                    "HELLO was already sent".into(),
                ))
            }
            wire::ClientFrame::Subscribe { request_id, users }
            | wire::ClientFrame::Unsubscribe { request_id, users }
            | wire::ClientFrame::Query { request_id, users }
                if users.len() > s.max_users_per_request =>
            {
                refuse(
                    request_id,
                    wire::ErrorCode::TooManyUsers,
                    format!(
                        "{} users in one request; link.max_users_per_request is {}",
                        users.len(),
                        s.max_users_per_request
                    ),
                );
                return Ok(());
            }
            wire::ClientFrame::Subscribe { request_id, users } => (
                request_id,
                Command::Subscribe {
                    link,
                    request: request_id,
                    users: users.iter().collect(),
                },
            ),
            wire::ClientFrame::Unsubscribe { request_id, users } => (
                request_id,
                Command::Unsubscribe {
                    link,
                    request: request_id,
                    users: users.iter().collect(),
                },
            ),
            wire::ClientFrame::Query { request_id, users } => (
                request_id,
                Command::Query {
                    link,
                    request: request_id,
                    users: users.iter().collect(),
                },
            ),
            wire::ClientFrame::SubscribeAll { request_id } if !self.firehose_allowed => {
                refuse(
                    request_id,
                    wire::ErrorCode::Unauthorized,
                    "this link may not use the firehose; grant it with firehose = true in \
                     [links] of auth.keys_file"
                        .into(),
                );
                return Ok(());
            }
            wire::ClientFrame::SubscribeAll { request_id } => (
                request_id,
                Command::Firehose {
                    link,
                    request: request_id,
                    on: true,
                },
            ),
            wire::ClientFrame::UnsubscribeAll { request_id } => (
                request_id,
                Command::Firehose {
                    link,
                    request: request_id,
                    on: false,
                },
            ),
            wire::ClientFrame::Stats { request_id } => (
                request_id,
                Command::Stats {
                    link,
                    request: request_id,
                },
            ),
        };
        if self.in_flight >= s.max_requests_in_flight {
            refuse(
                request,
                wire::ErrorCode::TooManyRequests,
                format!(
                    "{} requests already in flight; link.max_requests_in_flight is {}",
                    self.in_flight, s.max_requests_in_flight
                ),
            );
            return Ok(());
        }
        self.in_flight += 1;
        self.command(command)
    }
}

fn fatal_frame(e: wire::FrameError) -> Fatal {
    Fatal(e.error_code(), format!("malformed frame: {e}"))
}
