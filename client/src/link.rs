//! The push link's client: one QUIC connection and stream to the daemon, a reader task that
//! matches answers to requests and queues pushes, and request methods that split user lists to
//! the daemon's limits and keep within its in-flight limit.

use super::{tls, ClientError, ConnectOptions, Push, Trust, WelcomeInfo};
use bytes::BytesMut;
use presenced_wire::link::{
    self as wire, ErrorCode, PresenceRecord, ServerFrame, DEFAULT_MAX_FRAME_LEN,
    USER_REQUEST_HEADER_LEN,
};
use presenced_wire::stats::Stats;
use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore};

/// How long connecting (QUIC and TLS handshake, HELLO, WELCOME) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes asked of the stream per read.
const READ_CHUNK: usize = 64 * 1024;

/// What completes a request.
enum Answer {
    Records(Vec<PresenceRecord>),
    Ack,
    Stats(String),
}

type Reply = Result<Answer, ClientError>;

/// A request waiting for its answer.
struct Pending {
    records: Vec<PresenceRecord>,
    /// Records the answer may carry: one per user asked (SPEC.md, P6.1).
    expected: usize,
    done: oneshot::Sender<Reply>,
    /// Held until the answer arrives: the daemon's in-flight limit.
    _permit: OwnedSemaphorePermit,
}

/// Requests in flight, and why the link ended once it has.
#[derive(Default)]
struct Requests {
    pending: HashMap<u32, Pending>,
    ended: Option<(Option<ErrorCode>, String)>,
}

/// Pushes not yet taken by the application, bounded by buffered events.
#[derive(Default)]
struct Pushes {
    queue: VecDeque<Push>,
    /// The queue's total [`weight`].
    events: usize,
    /// A `LaggedAll` this client queued after dropping events is still in the queue.
    marker_queued: bool,
    dropped_events: u64,
    finished: bool,
}

struct Shared {
    requests: Mutex<Requests>,
    pushes: Mutex<Pushes>,
    pushed: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A connected push link (SPEC.md, "Push link"). Methods take `&self` and may be called from
/// many tasks at once; answers are matched to requests by id.
///
/// Pushes (transitions, lag signals) queue in the client until taken with
/// [`next_push`](LinkClient::next_push); if the application falls more than
/// [`MAX_BUFFERED_EVENTS`](LinkClient::MAX_BUFFERED_EVENTS) events behind, further events are
/// dropped and a [`Push::LaggedAll`] marks the gap, as the daemon does for a slow link.
pub struct LinkClient {
    shared: Arc<Shared>,
    send: tokio::sync::Mutex<quinn::SendStream>,
    permits: Arc<Semaphore>,
    next_request: AtomicU32,
    welcome: WelcomeInfo,
    connection: quinn::Connection,
    reader: tokio::task::JoinHandle<()>,
    endpoint: quinn::Endpoint,
}

impl LinkClient {
    /// Events the client holds for the application at most.
    pub const MAX_BUFFERED_EVENTS: usize = 1 << 20;

    /// Connects to the daemon's push link at `addr`: QUIC, TLS, HELLO, WELCOME.
    pub async fn connect(
        addr: SocketAddr,
        options: ConnectOptions,
    ) -> Result<LinkClient, ClientError> {
        let open = Opened::connect(addr, &options, None).await?;
        let permits = Arc::new(Semaphore::new(
            open.welcome.limits.max_requests_in_flight.max(1) as usize,
        ));
        let shared = Arc::new(Shared {
            requests: Mutex::new(Requests::default()),
            pushes: Mutex::new(Pushes::default()),
            pushed: Notify::new(),
        });
        let reader = tokio::spawn(read_loop(
            shared.clone(),
            open.recv,
            open.buf,
            open.welcome.limits.max_frame_len,
            open.connection.clone(),
        ));
        Ok(LinkClient {
            shared,
            send: tokio::sync::Mutex::new(open.send),
            permits,
            next_request: AtomicU32::new(1),
            welcome: open.welcome,
            connection: open.connection,
            reader,
            endpoint: open.endpoint,
        })
    }

    /// What the daemon said in WELCOME: shards, ports, limits, timings.
    pub fn welcome(&self) -> &WelcomeInfo {
        &self.welcome
    }

    /// Subscribes to `users` and returns their presence, one record per listed user in the
    /// order listed, taken atomically with the subscription (SPEC.md, P6.2). Lists longer than
    /// the daemon's per-request limit are split.
    pub async fn subscribe(&self, users: &[u64]) -> Result<Vec<PresenceRecord>, ClientError> {
        self.user_request(users, wire::encode_subscribe).await
    }

    /// Presence of `users`, one record per listed user in the order listed; subscribes to
    /// nothing.
    pub async fn query(&self, users: &[u64]) -> Result<Vec<PresenceRecord>, ClientError> {
        self.user_request(users, wire::encode_query).await
    }

    /// Unsubscribes from `users`; no transition of theirs follows the return (unless the
    /// firehose is on).
    pub async fn unsubscribe(&self, users: &[u64]) -> Result<(), ClientError> {
        self.user_request(users, wire::encode_unsubscribe).await?;
        Ok(())
    }

    /// Turns the firehose on: every transition of every user is pushed from now on.
    pub async fn subscribe_all(&self) -> Result<(), ClientError> {
        self.request(wire::encode_subscribe_all).await.map(drop)
    }

    /// Turns the firehose off.
    pub async fn unsubscribe_all(&self) -> Result<(), ClientError> {
        self.request(wire::encode_unsubscribe_all).await.map(drop)
    }

    /// The daemon's counters (datagram authentication, per shard, and the push link's), read
    /// from STATS_REPLY's JSON into the typed schema. Every field is required: a reply missing
    /// one, or naming it differently, is [`ClientError::StatsSchema`], never a silent 0.
    pub async fn stats(&self) -> Result<Stats, ClientError> {
        match self.request(wire::encode_stats).await? {
            Answer::Stats(json) => {
                Stats::from_json(&json).map_err(|e| ClientError::StatsSchema(e.to_string()))
            }
            _ => Err(ClientError::Protocol(
                "STATS not answered by STATS_REPLY".into(),
            )),
        }
    }

    /// The next push, waiting for one; `None` once the link has ended and every push was taken
    /// (the last one is [`Push::Closed`]).
    pub async fn next_push(&self) -> Option<Push> {
        loop {
            let notified = self.shared.pushed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match pop(&self.shared) {
                Some(push) => return Some(push),
                None if lock(&self.shared.pushes).finished => return None,
                None => notified.await,
            }
        }
    }

    /// The next push if one is waiting.
    pub fn try_next_push(&self) -> Option<Push> {
        pop(&self.shared)
    }

    /// Events this client dropped because the application did not take them in time.
    pub fn dropped_events(&self) -> u64 {
        lock(&self.shared.pushes).dropped_events
    }

    /// Closes the link and waits (up to a second) until the daemon has been told, so that a
    /// process exiting right after does not leave the daemon waiting for an idle timeout.
    pub async fn close(self) {
        self.connection.close(0u32.into(), b"closed by the gateway");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }

    async fn user_request(
        &self,
        users: &[u64],
        encode: fn(&mut BytesMut, u32, &[u64]) -> Result<(), wire::EncodeError>,
    ) -> Result<Vec<PresenceRecord>, ClientError> {
        let limits = self.welcome.limits;
        let by_frame = (limits.max_frame_len as usize).saturating_sub(USER_REQUEST_HEADER_LEN) / 8;
        let chunk = by_frame.min(limits.max_users_per_request as usize).max(1);
        // Send every part first, then collect: parts are answered concurrently.
        let mut waiting = Vec::with_capacity(users.len().div_ceil(chunk));
        for part in users.chunks(chunk) {
            waiting.push(
                self.start(part.len(), |out, id| encode(out, id, part))
                    .await?,
            );
        }
        let mut records = Vec::with_capacity(users.len());
        for rx in waiting {
            if let Answer::Records(r) = finish(rx).await? {
                records.extend(r);
            }
        }
        // Shards answer in any order: give the records back in the order asked.
        let mut first: HashMap<u64, usize> = HashMap::with_capacity(users.len());
        for (i, &u) in users.iter().enumerate() {
            first.entry(u).or_insert(i);
        }
        records.sort_by_cached_key(|r| first.get(&r.user).copied().unwrap_or(usize::MAX));
        Ok(records)
    }

    async fn request(
        &self,
        encode: fn(&mut BytesMut, u32) -> Result<(), wire::EncodeError>,
    ) -> Result<Answer, ClientError> {
        let rx = self.start(0, encode).await?;
        finish(rx).await
    }

    /// Registers a request (answered with at most `expected` records) and sends it; the
    /// receiver yields its answer.
    async fn start(
        &self,
        expected: usize,
        encode: impl FnOnce(&mut BytesMut, u32) -> Result<(), wire::EncodeError>,
    ) -> Result<oneshot::Receiver<Reply>, ClientError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| closed_error(&self.shared))?;
        let id = self.next_id();
        let mut frame = BytesMut::new();
        encode(&mut frame, id)?;
        let (done, rx) = oneshot::channel();
        {
            let mut requests = lock(&self.shared.requests);
            if let Some((code, message)) = &requests.ended {
                return Err(ClientError::Closed {
                    code: *code,
                    message: message.clone(),
                });
            }
            requests.pending.insert(
                id,
                Pending {
                    records: Vec::new(),
                    expected,
                    done,
                    _permit: permit,
                },
            );
        }
        let written = self.send.lock().await.write_all(&frame).await;
        if let Err(e) = written {
            lock(&self.shared.requests).pending.remove(&id);
            return Err(ClientError::Closed {
                code: None,
                message: e.to_string(),
            });
        }
        Ok(rx)
    }

    fn next_id(&self) -> u32 {
        loop {
            let id = self.next_request.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }
}

impl Drop for LinkClient {
    fn drop(&mut self) {
        self.connection.close(0u32.into(), b"closed by the gateway");
        self.reader.abort();
    }
}

async fn finish(rx: oneshot::Receiver<Reply>) -> Reply {
    rx.await.unwrap_or_else(|_| {
        Err(ClientError::Closed {
            code: None,
            message: "the link ended before the answer".into(),
        })
    })
}

fn closed_error(shared: &Shared) -> ClientError {
    let (code, message) = lock(&shared.requests)
        .ended
        .clone()
        .unwrap_or((None, "the link ended".into()));
    ClientError::Closed { code, message }
}

/// What a push counts against the bound: its events or users, at least 1, so that no kind of
/// push can pile up without limit.
fn weight(push: &Push) -> usize {
    match push {
        Push::Events(events) => events.len().max(1),
        Push::Lagged { users } => users.len().max(1),
        Push::LaggedAll => 1,
        Push::Closed { .. } => 0,
    }
}

fn pop(shared: &Shared) -> Option<Push> {
    let mut p = lock(&shared.pushes);
    let push = p.queue.pop_front()?;
    p.events -= weight(&push);
    if push == Push::LaggedAll {
        p.marker_queued = false;
    }
    Some(push)
}

/// Queues a push for the application, or drops it (marking the gap) past the bound.
fn queue_push(shared: &Shared, push: Push) {
    {
        let mut p = lock(&shared.pushes);
        let held = weight(&push);
        let over = p.events.saturating_add(held) > LinkClient::MAX_BUFFERED_EVENTS;
        if over && !matches!(push, Push::Closed { .. }) {
            if let Push::Events(events) = &push {
                p.dropped_events += events.len() as u64;
            }
            if !p.marker_queued {
                p.events += weight(&Push::LaggedAll);
                p.queue.push_back(Push::LaggedAll);
                p.marker_queued = true;
            }
        } else {
            if matches!(push, Push::Closed { .. }) {
                p.finished = true;
            }
            p.events += held;
            p.queue.push_back(push);
        }
    }
    shared.pushed.notify_waiters();
}

/// Reads the stream until it ends, completing requests and queueing pushes.
async fn read_loop(
    shared: Arc<Shared>,
    mut recv: quinn::RecvStream,
    mut buf: BytesMut,
    max_frame_len: u32,
    connection: quinn::Connection,
) {
    let reader = wire::FrameReader::new(max_frame_len.max(wire::MIN_MAX_FRAME_LEN));
    let (code, message) = 'link: loop {
        loop {
            match reader.next_frame(&buf) {
                Ok(Some((_, used))) => {
                    let frame = buf.split_to(used);
                    let decoded = wire::decode_server(&frame[wire::LENGTH_PREFIX_LEN..]);
                    let end = match decoded {
                        Ok(frame) => dispatch(&shared, frame),
                        Err(e) => Some(malformed(&connection, e)),
                    };
                    if let Some(end) = end {
                        break 'link end;
                    }
                }
                Ok(None) => break,
                Err(e) => break 'link malformed(&connection, e),
            }
        }
        match recv.read_chunk(READ_CHUNK, true).await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
            Ok(None) => break 'link close_reason(&connection, "the daemon ended the stream"),
            Err(e) => break 'link close_reason(&connection, &e.to_string()),
        }
    };
    // Whoever ended it, the link is over: make sure the connection is too.
    connection.close(0u32.into(), b"link ended");
    let pending = {
        let mut requests = lock(&shared.requests);
        requests.ended = Some((code, message.clone()));
        std::mem::take(&mut requests.pending)
    };
    for (_, p) in pending {
        let _ = p.done.send(Err(ClientError::Closed {
            code,
            message: message.clone(),
        }));
    }
    queue_push(&shared, Push::Closed { code, message });
}

fn malformed(connection: &quinn::Connection, e: wire::FrameError) -> (Option<ErrorCode>, String) {
    let message = format!("malformed frame from the daemon: {e}");
    connection.close(
        u32::from(e.error_code().to_u16()).into(),
        message.as_bytes(),
    );
    (Some(e.error_code()), message)
}

/// The daemon's close code and reason if it closed the connection, else `fallback`.
fn close_reason(connection: &quinn::Connection, fallback: &str) -> (Option<ErrorCode>, String) {
    match connection.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(close)) => {
            let code = u16::try_from(close.error_code.into_inner())
                .ok()
                .and_then(ErrorCode::from_u16);
            (code, String::from_utf8_lossy(&close.reason).into_owned())
        }
        Some(other) => (None, other.to_string()),
        None => (None, fallback.to_string()),
    }
}

/// Handles one frame; `Some` when it ends the link.
fn dispatch(shared: &Shared, frame: ServerFrame<'_>) -> Option<(Option<ErrorCode>, String)> {
    let complete = |id: u32, reply: Reply| {
        if let Some(p) = lock(&shared.requests).pending.remove(&id) {
            let _ = p.done.send(reply);
        }
    };
    match frame {
        ServerFrame::Presence(p) => {
            let mut requests = lock(&shared.requests);
            if let Some(pending) = requests.pending.get_mut(&p.request_id) {
                if pending.records.len() + p.records.len() > pending.expected {
                    return Some((
                        None,
                        format!(
                            "the daemon sent more records than the {} users asked in request {}",
                            pending.expected, p.request_id
                        ),
                    ));
                }
                pending.records.extend(p.records.iter());
                if p.is_final {
                    if let Some(done) = requests.pending.remove(&p.request_id) {
                        let _ = done.done.send(Ok(Answer::Records(done.records)));
                    }
                }
            }
        }
        ServerFrame::Ack { request_id } => complete(request_id, Ok(Answer::Ack)),
        ServerFrame::StatsReply { request_id, json } => {
            complete(request_id, Ok(Answer::Stats(json.to_string())));
        }
        ServerFrame::Error(e) if e.request_id != 0 => complete(
            e.request_id,
            Err(ClientError::Refused {
                code: e.error_code(),
                message: e.message.to_string(),
            }),
        ),
        ServerFrame::Error(e) => return Some((e.error_code(), e.message.to_string())),
        ServerFrame::Events(list) => queue_push(shared, Push::Events(list.iter().collect())),
        ServerFrame::Lagged(users) => queue_push(
            shared,
            Push::Lagged {
                users: users.iter().collect(),
            },
        ),
        ServerFrame::LaggedAll => queue_push(shared, Push::LaggedAll),
        ServerFrame::Welcome(_) => {
            return Some((None, "the daemon sent a second WELCOME".into()));
        }
    }
    None
}

/// A connection through HELLO and WELCOME.
struct Opened {
    endpoint: quinn::Endpoint,
    connection: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    /// Bytes read after WELCOME.
    buf: BytesMut,
    welcome: WelcomeInfo,
}

impl Opened {
    async fn connect(
        addr: SocketAddr,
        options: &ConnectOptions,
        stream_window: Option<u32>,
    ) -> Result<Opened, ClientError> {
        match tokio::time::timeout(
            CONNECT_TIMEOUT,
            Opened::handshake(addr, options, stream_window),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(ClientError::Connect(format!(
                "no WELCOME from {addr} within {CONNECT_TIMEOUT:?}"
            ))),
        }
    }

    async fn handshake(
        addr: SocketAddr,
        options: &ConnectOptions,
        stream_window: Option<u32>,
    ) -> Result<Opened, ClientError> {
        if options.trust == Trust::InsecureLocal && !addr.ip().is_loopback() {
            return Err(ClientError::Config(format!(
                "{addr} is not a loopback address: trusting any certificate is for local use \
                 only; give the CA of the daemon's certificate"
            )));
        }
        let rustls = tls::client_config(&options.trust)?;
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(rustls)
            .map_err(|e| ClientError::Tls(e.to_string()))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(Duration::from_secs(5)));
        if let Some(window) = stream_window {
            transport.stream_receive_window(window.into());
            transport.receive_window(window.into());
        }
        config.transport_config(Arc::new(transport));
        let bind: SocketAddr = match (addr.is_ipv6(), addr.ip().is_loopback()) {
            (false, true) => (Ipv4Addr::LOCALHOST, 0).into(),
            (false, false) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            (true, true) => (Ipv6Addr::LOCALHOST, 0).into(),
            (true, false) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let endpoint = quinn::Endpoint::client(bind)?;
        let connection = endpoint
            .connect_with(config, addr, &options.server_name)
            .map_err(|e| ClientError::Connect(e.to_string()))?
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let (mut send, mut recv) = connection
            .open_bi()
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let mut hello = BytesMut::new();
        let token = options.token.as_deref().unwrap_or_default().as_bytes();
        wire::encode_hello(
            &mut hello,
            &wire::Hello {
                token,
                ..wire::Hello::new(&options.client_name)
            },
        )?;
        send.write_all(&hello)
            .await
            .map_err(|e| ClientError::Connect(e.to_string()))?;
        let reader = wire::FrameReader::new(DEFAULT_MAX_FRAME_LEN);
        let mut buf = BytesMut::new();
        let welcome = loop {
            let next = reader
                .next_frame(&buf)
                .map_err(|e| ClientError::Protocol(format!("first frame: {e}")))?;
            if let Some((frame, used)) = next {
                let welcome = match wire::decode_server(frame) {
                    Ok(ServerFrame::Welcome(w)) => WelcomeInfo {
                        heartbeat_port: w.heartbeat_port,
                        shard_ports: w.shard_ports.iter().collect(),
                        shard_count: w.shard_count(),
                        limits: w.limits,
                        timings: w.timings,
                    },
                    Ok(ServerFrame::Error(e)) => {
                        return Err(ClientError::Closed {
                            code: e.error_code(),
                            message: e.message.to_string(),
                        })
                    }
                    Ok(other) => {
                        return Err(ClientError::Protocol(format!(
                            "expected WELCOME, got {}",
                            other.frame_type()
                        )))
                    }
                    Err(e) => return Err(ClientError::Protocol(format!("WELCOME: {e}"))),
                };
                let _ = buf.split_to(used);
                break welcome;
            }
            match recv.read_chunk(READ_CHUNK, true).await {
                Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
                Ok(None) => {
                    let (code, message) = close_reason(&connection, "closed before WELCOME");
                    return Err(ClientError::Closed { code, message });
                }
                Err(e) => {
                    let (code, message) = close_reason(&connection, &e.to_string());
                    return Err(ClientError::Closed { code, message });
                }
            }
        };
        Ok(Opened {
            endpoint,
            connection,
            send,
            recv,
            buf,
            welcome,
        })
    }
}

/// A push link that reads only when asked: for simulating a gateway that falls behind (its
/// small receive window fills and the daemon's writes stall) and for looking at raw frames.
pub struct RawLink {
    opened: Opened,
    next_request: u32,
}

impl RawLink {
    /// Connects with a stream and connection receive window of `stream_window` bytes.
    pub async fn connect(
        addr: SocketAddr,
        options: ConnectOptions,
        stream_window: u32,
    ) -> Result<RawLink, ClientError> {
        Ok(RawLink {
            opened: Opened::connect(addr, &options, Some(stream_window)).await?,
            next_request: 1,
        })
    }

    /// Turns the firehose on and reads until its ACK (dropping what arrives before it).
    pub async fn subscribe_all(&mut self) -> Result<(), ClientError> {
        let id = self.next_request;
        self.next_request += 1;
        let mut frame = BytesMut::new();
        wire::encode_subscribe_all(&mut frame, id)?;
        self.opened
            .send
            .write_all(&frame)
            .await
            .map_err(|e| ClientError::Closed {
                code: None,
                message: e.to_string(),
            })?;
        loop {
            match self
                .next_frame(|f| f.completes_request().then(|| f.request_id()))
                .await?
            {
                Some(Some(answered)) if answered == Some(id) => return Ok(()),
                Some(_) => {}
                None => {
                    return Err(ClientError::Closed {
                        code: None,
                        message: "the link ended before the ACK".into(),
                    })
                }
            }
        }
    }

    /// Writes `bytes` to the stream as they are (for tests of the daemon's validation).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.opened
            .send
            .write_all(bytes)
            .await
            .map_err(|e| ClientError::Closed {
                code: None,
                message: e.to_string(),
            })
    }

    /// Reads frames until an ERROR frame and returns it as `(request id, code, message)`;
    /// `None` if the link ends or `within` passes first.
    pub async fn next_error(
        &mut self,
        within: Duration,
    ) -> Result<Option<(u32, Option<ErrorCode>, String)>, ClientError> {
        let search = async {
            loop {
                let seen = self
                    .next_frame(|f| match f {
                        ServerFrame::Error(e) => {
                            Some((e.request_id, e.error_code(), e.message.to_string()))
                        }
                        _ => None,
                    })
                    .await?;
                match seen {
                    Some(Some(error)) => return Ok(Some(error)),
                    Some(None) => {}
                    None => return Ok(None),
                }
            }
        };
        tokio::time::timeout(within, search)
            .await
            .unwrap_or(Ok(None))
    }

    /// Reads frames until a LAGGED frame (`true`) or until `within` passes or the link ends
    /// (`false`).
    pub async fn read_until_lagged(&mut self, within: Duration) -> Result<bool, ClientError> {
        let search = async {
            loop {
                match self
                    .next_frame(|f| matches!(f, ServerFrame::Lagged(_) | ServerFrame::LaggedAll))
                    .await?
                {
                    Some(true) => return Ok(true),
                    Some(false) => {}
                    None => return Ok(false),
                }
            }
        };
        tokio::time::timeout(within, search)
            .await
            .unwrap_or(Ok(false))
    }

    /// Reads the next frame and returns what `look` makes of it; `None` at the end of the link.
    async fn next_frame<T>(
        &mut self,
        look: impl Fn(&ServerFrame<'_>) -> T,
    ) -> Result<Option<T>, ClientError> {
        let max = self.opened.welcome.limits.max_frame_len;
        let reader = wire::FrameReader::new(max.max(wire::MIN_MAX_FRAME_LEN));
        loop {
            let next = reader
                .next_frame(&self.opened.buf)
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            if let Some((frame, used)) = next {
                let seen = wire::decode_server(frame)
                    .map(|f| look(&f))
                    .map_err(|e| ClientError::Protocol(e.to_string()))?;
                let _ = self.opened.buf.split_to(used);
                return Ok(Some(seen));
            }
            match self.opened.recv.read_chunk(READ_CHUNK, true).await {
                Ok(Some(chunk)) => self.opened.buf.extend_from_slice(&chunk.bytes),
                Ok(None) | Err(_) => return Ok(None),
            }
        }
    }
}
