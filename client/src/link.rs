//! The push link's client: one QUIC connection and stream to the daemon, a reader task that
//! matches answers to requests and queues pushes, and request methods that split user lists to
//! the daemon's limits and keep within its in-flight limit.
//!
//! Connecting offers the newest protocol version (4) and falls back one version at a time
//! when the daemon answers ERROR `protocol_version` (SPEC.md § P5.2); every frame is then read
//! as of the link's version. A version-3 daemon under load asks for a longer heartbeat
//! interval (PACE, § P6.13): the client publishes it on a watch channel
//! ([`LinkClient::pace`]) for the gateway's heartbeat schedule ([`crate::Pacer`]). A version-4
//! daemon that is a cluster member sends its member map (MEMBERS, § P6.14): the client keeps
//! the newest one it may believe ([`crate::cluster::judge_map`]) on a watch channel
//! ([`LinkClient::members`]).

use super::{
    tls, ClientError, ConnectOptions, GoAway, HistoryPage, LinkInfo, Push, Snapshot, Trust,
    WelcomeInfo,
};
use crate::cluster::{judge_map, IgnoredMaps, MapVerdict};
use bytes::BytesMut;
use presenced_wire::cluster::MemberMap;
use presenced_wire::link::{
    self as wire, ErrorCode, GoAwayReason, HistoryRequest, PresenceRecord, ServerFrame, Version,
    DEFAULT_MAX_FRAME_LEN, USER_REQUEST_HEADER_LEN,
};
use presenced_wire::stats::Stats;
use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify, OwnedSemaphorePermit, Semaphore};

/// How long connecting (QUIC and TLS handshake, HELLO, WELCOME; the fallback to version 1
/// included) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes asked of the stream per read.
const READ_CHUNK: usize = 64 * 1024;
/// The QUIC keep-alive interval before the daemon's idle timeout is known: a third of idle
/// timeouts of 15 s and more.
const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(5);
/// The shortest keep-alive interval this client uses, however short the idle timeout.
const MIN_KEEP_ALIVE: Duration = Duration::from_millis(100);

/// What completes a request.
enum Answer {
    Records(Vec<PresenceRecord>, bool),
    Ack,
    Stats(String),
    History(HistoryPage),
}

type Reply = Result<Answer, ClientError>;

/// A request waiting for its answer.
struct Pending {
    records: Vec<PresenceRecord>,
    /// Some PRESENCE frame of the answer was marked `WARMING`.
    warming: bool,
    /// Records the answer may carry: one per user asked (SPEC.md, P6.1).
    expected: usize,
    done: oneshot::Sender<Reply>,
    /// Held until the answer arrives: the daemon's in-flight limit.
    _permit: OwnedSemaphorePermit,
}

/// Why the link ended.
#[derive(Clone, Debug)]
struct End {
    code: Option<ErrorCode>,
    message: String,
    go_away: Option<GoAway>,
}

impl End {
    fn new(code: Option<ErrorCode>, message: impl Into<String>) -> End {
        End {
            code,
            message: message.into(),
            go_away: None,
        }
    }

    fn error(&self) -> ClientError {
        ClientError::Closed {
            code: self.code,
            message: self.message.clone(),
        }
    }
}

/// Requests in flight, and why the link ended once it has.
#[derive(Default)]
struct Requests {
    pending: HashMap<u32, Pending>,
    ended: Option<End>,
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
    /// Until when the daemon is warming, as far as this link knows: from WELCOME, and cleared
    /// by a PRESENCE frame read after warming ended.
    warm_until: Mutex<Option<Instant>>,
    /// The heartbeat interval the daemon asks for (PACE), when longer than WELCOME's; `None`:
    /// the normal one, and again once the link has ended (SPEC.md § P6.13).
    pace: tokio::sync::watch::Sender<Option<Duration>>,
    /// WELCOME's heartbeat interval.
    normal_interval: Duration,
    /// The newest member map taken from MEMBERS (version 4); `None` until one comes (always,
    /// from a daemon that is no cluster member). Kept after the link ends.
    members: tokio::sync::watch::Sender<Option<MemberMap>>,
    /// MEMBERS maps ignored, by reason.
    ignored_maps: Mutex<IgnoredMaps>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A connected push link (SPEC.md, "Push link"). Methods take `&self` and may be called from
/// many tasks at once; answers are matched to requests by id.
///
/// [`connect`](LinkClient::connect) negotiates the newest protocol version the daemon speaks
/// ([`link_info`](LinkClient::link_info) says which).
/// Pushes (transitions, lag signals) queue in the client until taken with
/// [`next_push`](LinkClient::next_push); if the application falls more than
/// [`MAX_BUFFERED_EVENTS`](LinkClient::MAX_BUFFERED_EVENTS) events behind, further events are
/// dropped and a [`Push::LaggedAll`] marks the gap, as the daemon does for a slow link. When
/// the daemon goes away the last push is [`Push::Closed`], with its GOAWAY on a version-2 link.
pub struct LinkClient {
    shared: Arc<Shared>,
    send: tokio::sync::Mutex<quinn::SendStream>,
    permits: Arc<Semaphore>,
    next_request: AtomicU32,
    welcome: WelcomeInfo,
    info: LinkInfo,
    connection: quinn::Connection,
    reader: tokio::task::JoinHandle<()>,
    endpoint: quinn::Endpoint,
}

impl LinkClient {
    /// Events the client holds for the application at most.
    pub const MAX_BUFFERED_EVENTS: usize = 1 << 20;

    /// Spans [`history_all`](LinkClient::history_all) asks for per HISTORY request.
    pub const HISTORY_PAGE: u32 = 10_000;

    /// Connects to the daemon's push link at `addr`: QUIC, TLS, HELLO asking for protocol
    /// version 4 ([`Version::LATEST`]), WELCOME. An older daemon refuses that HELLO (ERROR
    /// `protocol_version`); the client then connects again asking for the next lower version
    /// (SPEC.md § P5.2).
    pub async fn connect(
        addr: SocketAddr,
        options: ConnectOptions,
    ) -> Result<LinkClient, ClientError> {
        LinkClient::connect_version(addr, options, Version::LATEST).await
    }

    /// [`connect`](LinkClient::connect), asking for `version` at most: [`Version::V1`] makes
    /// a version-1 link with any daemon.
    pub async fn connect_version(
        addr: SocketAddr,
        options: ConnectOptions,
        version: Version,
    ) -> Result<LinkClient, ClientError> {
        let open = Opened::connect(addr, &options, None, version).await?;
        let permits = Arc::new(Semaphore::new(
            open.welcome.limits.max_requests_in_flight.max(1) as usize,
        ));
        let shared = Arc::new(Shared {
            requests: Mutex::new(Requests::default()),
            pushes: Mutex::new(Pushes::default()),
            pushed: Notify::new(),
            warm_until: Mutex::new(
                open.info
                    .warming
                    .then(|| open.welcomed + open.info.warm_remaining),
            ),
            pace: tokio::sync::watch::Sender::new(None),
            normal_interval: Duration::from_millis(u64::from(
                open.welcome.timings.heartbeat_interval_ms,
            )),
            members: tokio::sync::watch::Sender::new(None),
            ignored_maps: Mutex::new(IgnoredMaps::default()),
        });
        let reader = tokio::spawn(read_loop(
            shared.clone(),
            open.recv,
            open.buf,
            open.welcome.limits.max_frame_len,
            open.info.version,
            open.connection.clone(),
        ));
        Ok(LinkClient {
            shared,
            send: tokio::sync::Mutex::new(open.send),
            permits,
            next_request: AtomicU32::new(1),
            welcome: open.welcome,
            info: open.info,
            connection: open.connection,
            reader,
            endpoint: open.endpoint,
        })
    }

    /// What the daemon said in WELCOME: shards, ports, limits, timings.
    pub fn welcome(&self) -> &WelcomeInfo {
        &self.welcome
    }

    /// What the link negotiated: its protocol version, whether the daemon was warming, its
    /// idle timeout and the keep-alive this client uses.
    pub fn link_info(&self) -> &LinkInfo {
        &self.info
    }

    /// The link's protocol version.
    pub fn version(&self) -> Version {
        self.info.version
    }

    /// The heartbeat interval the daemon asks for (PACE, version 3; SPEC.md § P6.13), as it
    /// changes: `Some` while it asks for a longer interval than WELCOME's, `None` for the
    /// normal one (always on a link of version 1 or 2, and once the link has ended). Feed it
    /// to the gateway's [`Pacer`](crate::Pacer).
    pub fn pace(&self) -> tokio::sync::watch::Receiver<Option<Duration>> {
        self.shared.pace.subscribe()
    }

    /// The newest member map the daemon sent (MEMBERS, version 4; SPEC.md § P6.14): `None`
    /// from a daemon that is no cluster member (and on links before version 4). A map whose
    /// `from` is not among its members, or older than the one held, is ignored and counted
    /// ([`ignored_maps`](LinkClient::ignored_maps)).
    pub fn members(&self) -> Option<MemberMap> {
        self.shared.members.borrow().clone()
    }

    /// The member map as it changes ([`members`](LinkClient::members)): `changed().await` on
    /// the receiver waits for the next map taken.
    pub fn members_watch(&self) -> tokio::sync::watch::Receiver<Option<MemberMap>> {
        self.shared.members.subscribe()
    }

    /// MEMBERS maps this link ignored, by reason.
    pub fn ignored_maps(&self) -> IgnoredMaps {
        *lock(&self.shared.ignored_maps)
    }

    /// Asks for the member map (MAP, version 4; SPEC.md § P6.14), saying the gateway holds the
    /// map of `revision` (0: none). A member whose map's revision differs sends MEMBERS before
    /// its ACK, so [`members`](LinkClient::members) holds it (if taken) when this returns; a
    /// daemon that is no member only answers ACK. Fails with [`ClientError::Unsupported`] on a
    /// link before version 4 (nothing is sent).
    pub async fn map(&self, revision: u64) -> Result<(), ClientError> {
        if self.info.version < Version::V4 {
            return Err(ClientError::Unsupported(format!(
                "the member map needs push-link protocol version 4; this daemon speaks version {}",
                self.info.version
            )));
        }
        self.request(0, |out: &mut BytesMut, id| {
            wire::encode_map(out, id, revision)
        })
        .await
        .map(drop)
    }

    /// Whether the daemon may still be warming (SPEC.md § P6.10): WELCOME said so and its
    /// `warm_remaining` has not passed, and no PRESENCE frame since came without `WARMING`.
    pub fn is_warming(&self) -> bool {
        lock(&self.shared.warm_until).is_some_and(|until| Instant::now() < until)
    }

    /// Subscribes to `users` and returns their presence, one record per listed user in the
    /// order listed, taken atomically with the subscription (SPEC.md, P6.2). Lists longer than
    /// the daemon's per-request limit are split. [`subscribe_snapshot`] also says whether the
    /// daemon was warming.
    ///
    /// [`subscribe_snapshot`]: LinkClient::subscribe_snapshot
    pub async fn subscribe(&self, users: &[u64]) -> Result<Vec<PresenceRecord>, ClientError> {
        Ok(self.subscribe_snapshot(users).await?.records)
    }

    /// [`subscribe`](LinkClient::subscribe), with whether any record was read while the
    /// daemon was warming (version 2).
    pub async fn subscribe_snapshot(&self, users: &[u64]) -> Result<Snapshot, ClientError> {
        self.user_request(users, wire::encode_subscribe).await
    }

    /// Presence of `users`, one record per listed user in the order listed; subscribes to
    /// nothing. [`query_snapshot`](LinkClient::query_snapshot) also says whether the daemon
    /// was warming.
    pub async fn query(&self, users: &[u64]) -> Result<Vec<PresenceRecord>, ClientError> {
        Ok(self.query_snapshot(users).await?.records)
    }

    /// [`query`](LinkClient::query), with whether any record was read while the daemon was
    /// warming (version 2).
    pub async fn query_snapshot(&self, users: &[u64]) -> Result<Snapshot, ClientError> {
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
        self.request(0, wire::encode_subscribe_all).await.map(drop)
    }

    /// Turns the firehose off.
    pub async fn unsubscribe_all(&self) -> Result<(), ClientError> {
        self.request(0, wire::encode_unsubscribe_all)
            .await
            .map(drop)
    }

    /// The daemon's counters (datagram authentication, per shard, and the push link's), read
    /// from STATS_REPLY's JSON into the typed schema. Every field is required: a reply missing
    /// one, or naming it differently, is [`ClientError::StatsSchema`], never a silent 0.
    pub async fn stats(&self) -> Result<Stats, ClientError> {
        match self.request(0, wire::encode_stats).await? {
            Answer::Stats(json) => {
                Stats::from_json(&json).map_err(|e| ClientError::StatsSchema(e.to_string()))
            }
            _ => Err(ClientError::Protocol(
                "STATS not answered by STATS_REPLY".into(),
            )),
        }
    }

    /// One page of `user`'s presence history (HISTORY, SPEC.md § P6.12): the spans that end at
    /// or after `since_ms` (Unix ms; 0: all the daemon keeps) and began with a transition of
    /// version greater than `after_version` (0: from the first), at most `max_spans` of them
    /// (the daemon may send fewer, with `more` set). Fails with [`ClientError::Unsupported`] on
    /// a version-1 link (nothing is sent), and with [`ClientError::Refused`] (code
    /// `history_unavailable`) from a daemon that keeps no history.
    pub async fn history(
        &self,
        user: u64,
        since_ms: u64,
        after_version: u64,
        max_spans: u32,
    ) -> Result<HistoryPage, ClientError> {
        if self.info.version < Version::V2 {
            return Err(ClientError::Unsupported(
                "history needs push-link protocol version 2; this daemon speaks version 1".into(),
            ));
        }
        let request = HistoryRequest {
            request_id: 0,
            user,
            since_ms,
            after_version,
            max_spans,
        };
        let encode = |out: &mut BytesMut, request_id| {
            wire::encode_history(
                out,
                &HistoryRequest {
                    request_id,
                    ..request
                },
            )
        };
        match self.request(0, encode).await? {
            Answer::History(page) => Ok(page),
            _ => Err(ClientError::Protocol(
                "HISTORY not answered by HISTORY_REPLY".into(),
            )),
        }
    }

    /// `user`'s whole presence history since `since_ms` (0: all the daemon keeps), paging
    /// through [`history`](LinkClient::history) until the daemon has no more or `max_spans`
    /// spans are in; `more` is then whether spans were left out.
    pub async fn history_all(
        &self,
        user: u64,
        since_ms: u64,
        max_spans: usize,
    ) -> Result<HistoryPage, ClientError> {
        let mut all = HistoryPage {
            spans: Vec::new(),
            last_seen_ms: None,
            more: false,
        };
        let mut after = 0;
        while all.spans.len() < max_spans {
            let want = (max_spans - all.spans.len()).min(Self::HISTORY_PAGE as usize);
            let page = self
                .history(
                    user,
                    since_ms,
                    after,
                    u32::try_from(want).unwrap_or(u32::MAX),
                )
                .await?;
            all.last_seen_ms = page.last_seen_ms;
            all.more = page.more;
            let Some(last) = page.spans.last() else {
                // MORE comes with a span (SPEC.md § P6.12); without one there is nothing to
                // page from.
                break;
            };
            after = last.version;
            all.spans.extend_from_slice(&page.spans);
            if !page.more {
                break;
            }
        }
        all.spans.truncate(max_spans);
        Ok(all)
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

    /// Ends the link now from any task holding it, waiting for nothing: requests in flight
    /// fail with [`ClientError::Closed`] and the pushes end with [`Push::Closed`]. For a link
    /// that must hold no one up any longer (a cluster member gone from the map, whose process
    /// may be dead and would otherwise keep requests waiting until QUIC's idle timeout).
    pub fn abort(&self, reason: &str) {
        self.connection.close(0u32.into(), reason.as_bytes());
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
    ) -> Result<Snapshot, ClientError> {
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
        let mut warming = false;
        for rx in waiting {
            if let Answer::Records(r, warm) = finish(rx).await? {
                records.extend(r);
                warming |= warm;
            }
        }
        // Shards answer in any order: give the records back in the order asked.
        let mut first: HashMap<u64, usize> = HashMap::with_capacity(users.len());
        for (i, &u) in users.iter().enumerate() {
            first.entry(u).or_insert(i);
        }
        records.sort_by_cached_key(|r| first.get(&r.user).copied().unwrap_or(usize::MAX));
        Ok(Snapshot { records, warming })
    }

    async fn request(
        &self,
        expected: usize,
        encode: impl FnOnce(&mut BytesMut, u32) -> Result<(), wire::EncodeError>,
    ) -> Result<Answer, ClientError> {
        let rx = self.start(expected, encode).await?;
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
            if let Some(end) = &requests.ended {
                return Err(end.error());
            }
            requests.pending.insert(
                id,
                Pending {
                    records: Vec::new(),
                    warming: false,
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
    lock(&shared.requests)
        .ended
        .clone()
        .unwrap_or_else(|| End::new(None, "the link ended"))
        .error()
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
    version: Version,
    connection: quinn::Connection,
) {
    let reader = wire::FrameReader::new(max_frame_len.max(wire::MIN_MAX_FRAME_LEN));
    let end = 'link: loop {
        loop {
            match reader.next_frame(&buf) {
                Ok(Some((_, used))) => {
                    let frame = buf.split_to(used);
                    let decoded = version.decode_server(&frame[wire::LENGTH_PREFIX_LEN..]);
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
        requests.ended = Some(end.clone());
        std::mem::take(&mut requests.pending)
    };
    for (_, p) in pending {
        let _ = p.done.send(Err(end.error()));
    }
    // The asked interval holds only while the link lives (SPEC.md § P6.13).
    shared.pace.send_replace(None);
    queue_push(
        &shared,
        Push::Closed {
            code: end.code,
            message: end.message,
            go_away: end.go_away,
        },
    );
}

fn malformed(connection: &quinn::Connection, e: wire::FrameError) -> End {
    let message = format!("malformed frame from the daemon: {e}");
    connection.close(
        u32::from(e.error_code().to_u16()).into(),
        message.as_bytes(),
    );
    End::new(Some(e.error_code()), message)
}

/// The daemon's close code and reason if it closed the connection, else `fallback`.
fn close_reason(connection: &quinn::Connection, fallback: &str) -> End {
    match connection.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(close)) => {
            let code = u16::try_from(close.error_code.into_inner())
                .ok()
                .and_then(ErrorCode::from_u16);
            End::new(code, String::from_utf8_lossy(&close.reason))
        }
        Some(other) => End::new(None, other.to_string()),
        None => End::new(None, fallback),
    }
}

/// Handles one frame; `Some` when it ends the link.
fn dispatch(shared: &Shared, frame: ServerFrame<'_>) -> Option<End> {
    let complete = |id: u32, reply: Reply| {
        if let Some(p) = lock(&shared.requests).pending.remove(&id) {
            let _ = p.done.send(reply);
        }
    };
    match frame {
        ServerFrame::Presence(p) => {
            if !p.warming {
                // Read after warming ended (or the daemon was never warming).
                *lock(&shared.warm_until) = None;
            }
            let mut requests = lock(&shared.requests);
            if let Some(pending) = requests.pending.get_mut(&p.request_id) {
                if pending.records.len() + p.records.len() > pending.expected {
                    return Some(End::new(
                        None,
                        format!(
                            "the daemon sent more records than the {} users asked in request {}",
                            pending.expected, p.request_id
                        ),
                    ));
                }
                pending.records.extend(p.records.iter());
                pending.warming |= p.warming;
                if p.is_final {
                    if let Some(done) = requests.pending.remove(&p.request_id) {
                        let answer = Answer::Records(done.records, done.warming);
                        let _ = done.done.send(Ok(answer));
                    }
                }
            }
        }
        ServerFrame::Ack { request_id } => complete(request_id, Ok(Answer::Ack)),
        ServerFrame::StatsReply { request_id, json } => {
            complete(request_id, Ok(Answer::Stats(json.to_string())));
        }
        ServerFrame::HistoryReply(h) => complete(
            h.request_id,
            Ok(Answer::History(HistoryPage {
                spans: h.spans.iter().collect(),
                last_seen_ms: h.last_seen_ms,
                more: h.more,
            })),
        ),
        ServerFrame::Error(e) if e.request_id != 0 => complete(
            e.request_id,
            Err(ClientError::Refused {
                code: e.error_code(),
                message: e.message.to_string(),
            }),
        ),
        ServerFrame::Error(e) => return Some(End::new(e.error_code(), e.message)),
        ServerFrame::GoAway(g) => {
            return Some(End {
                code: Some(ErrorCode::ShuttingDown),
                message: if g.message.is_empty() {
                    "the daemon is going away".into()
                } else {
                    g.message.to_string()
                },
                go_away: Some(go_away(g.reason, g.reconnect_after_ms)),
            })
        }
        ServerFrame::Events(list) => queue_push(shared, Push::Events(list.iter().collect())),
        ServerFrame::Lagged(users) => queue_push(
            shared,
            Push::Lagged {
                users: users.iter().collect(),
            },
        ),
        ServerFrame::LaggedAll => queue_push(shared, Push::LaggedAll),
        ServerFrame::Pace { interval_ms } => {
            let asked = Duration::from_millis(u64::from(interval_ms));
            shared
                .pace
                .send_replace((asked > shared.normal_interval).then_some(asked));
        }
        ServerFrame::Members(m) => match m.map() {
            Ok(map) => take_map(shared, map),
            Err(e) => return Some(End::new(None, format!("MEMBERS: {e}"))),
        },
        ServerFrame::Welcome(_) => {
            return Some(End::new(None, "the daemon sent a second WELCOME"));
        }
    }
    None
}

/// Takes a MEMBERS map, or ignores and counts it (SPEC.md § P6.14).
fn take_map(shared: &Shared, map: MemberMap) {
    let verdict = judge_map(shared.members.borrow().as_ref(), &map);
    lock(&shared.ignored_maps).count(verdict);
    if verdict == MapVerdict::Accept {
        shared.members.send_replace(Some(map));
    }
}

/// A GOAWAY's reason and wait, an unknown reason read as `shutting_down` (SPEC.md § P4).
fn go_away(reason: u16, reconnect_after_ms: u32) -> GoAway {
    GoAway {
        reason: GoAwayReason::from_u16(reason).unwrap_or(GoAwayReason::ShuttingDown),
        reconnect_after: Duration::from_millis(u64::from(reconnect_after_ms)),
    }
}

/// The keep-alive interval for a link whose idle timeout is `idle_timeout`: a third of it,
/// or the default when there is none (or it is long).
fn keep_alive_for(idle_timeout: Option<Duration>) -> Duration {
    match idle_timeout {
        Some(t) => (t / 3).clamp(MIN_KEEP_ALIVE, DEFAULT_KEEP_ALIVE),
        None => DEFAULT_KEEP_ALIVE,
    }
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
    info: LinkInfo,
    /// When WELCOME was read.
    welcomed: Instant,
}

/// How one connection attempt ended, short of success.
enum Attempt {
    Opened(Box<Opened>),
    /// The daemon does not speak the version asked (ERROR or close `protocol_version`).
    VersionRefused(ClientError),
    Failed(ClientError),
}

impl Opened {
    /// Connects asking for `version`, then for version 1 if the daemon refuses it; and again
    /// once if WELCOME's idle timeout needs a shorter keep-alive than the one the connection
    /// was made with (quinn sets it per connection).
    async fn connect(
        addr: SocketAddr,
        options: &ConnectOptions,
        stream_window: Option<u32>,
        version: Version,
    ) -> Result<Opened, ClientError> {
        let attempts = async {
            let endpoint = Opened::endpoint(addr, options)?;
            let mut version = version;
            let mut keep_alive = DEFAULT_KEEP_ALIVE;
            let mut kept_alive_again = false;
            loop {
                let attempt =
                    Opened::handshake(&endpoint, addr, options, stream_window, version, keep_alive)
                        .await;
                match attempt {
                    Attempt::Opened(opened) => {
                        let needed = keep_alive_for(opened.info.idle_timeout);
                        if needed >= keep_alive || kept_alive_again {
                            return Ok(*opened);
                        }
                        opened
                            .connection
                            .close(0u32.into(), b"reconnecting with a shorter keep-alive");
                        keep_alive = needed;
                        kept_alive_again = true;
                        // The daemon spoke this version: ask for it again.
                        version = opened.info.version;
                    }
                    // The next lower version (SPEC.md § P5.2: a gateway that does not read the
                    // daemon's list of versions steps down).
                    Attempt::VersionRefused(_) if version > Version::V1 => {
                        version = Version::ALL
                            [Version::ALL.iter().position(|v| *v == version).unwrap_or(1) - 1];
                    }
                    Attempt::VersionRefused(e) | Attempt::Failed(e) => return Err(e),
                }
            }
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, attempts).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Connect(format!(
                "no WELCOME from {addr} within {CONNECT_TIMEOUT:?}"
            ))),
        }
    }

    fn endpoint(
        addr: SocketAddr,
        options: &ConnectOptions,
    ) -> Result<quinn::Endpoint, ClientError> {
        if options.trust == Trust::InsecureLocal && !addr.ip().is_loopback() {
            return Err(ClientError::Config(format!(
                "{addr} is not a loopback address: trusting any certificate is for local use \
                 only; give the CA of the daemon's certificate"
            )));
        }
        let bind: SocketAddr = match (addr.is_ipv6(), addr.ip().is_loopback()) {
            (false, true) => (Ipv4Addr::LOCALHOST, 0).into(),
            (false, false) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            (true, true) => (Ipv6Addr::LOCALHOST, 0).into(),
            (true, false) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        Ok(quinn::Endpoint::client(bind)?)
    }

    async fn handshake(
        endpoint: &quinn::Endpoint,
        addr: SocketAddr,
        options: &ConnectOptions,
        stream_window: Option<u32>,
        version: Version,
        keep_alive: Duration,
    ) -> Attempt {
        let refused = |code: Option<ErrorCode>, message: String| {
            let e = ClientError::Closed { code, message };
            if code == Some(ErrorCode::ProtocolVersion) {
                Attempt::VersionRefused(e)
            } else {
                Attempt::Failed(e)
            }
        };
        let rustls = match tls::client_config(&options.trust) {
            Ok(c) => c,
            Err(e) => return Attempt::Failed(e),
        };
        let crypto = match quinn::crypto::rustls::QuicClientConfig::try_from(rustls) {
            Ok(c) => c,
            Err(e) => return Attempt::Failed(ClientError::Tls(e.to_string())),
        };
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        transport.keep_alive_interval(Some(keep_alive));
        if let Some(window) = stream_window {
            transport.stream_receive_window(window.into());
            transport.receive_window(window.into());
        }
        config.transport_config(Arc::new(transport));
        let connecting = match endpoint.connect_with(config, addr, &options.server_name) {
            Ok(c) => c,
            Err(e) => return Attempt::Failed(ClientError::Connect(e.to_string())),
        };
        let connection = match connecting.await {
            Ok(c) => c,
            Err(e) => return Attempt::Failed(ClientError::Connect(e.to_string())),
        };
        let (mut send, mut recv) = match connection.open_bi().await {
            Ok(s) => s,
            Err(e) => return Attempt::Failed(ClientError::Connect(e.to_string())),
        };
        let mut hello = BytesMut::new();
        let token = options.token.as_deref().unwrap_or_default().as_bytes();
        let asked = wire::Hello {
            token,
            ..wire::Hello::new(&options.client_name)
        }
        .asking(version);
        if let Err(e) = wire::encode_hello(&mut hello, &asked) {
            return Attempt::Failed(e.into());
        }
        if let Err(e) = send.write_all(&hello).await {
            return Attempt::Failed(ClientError::Connect(e.to_string()));
        }
        let reader = wire::FrameReader::new(DEFAULT_MAX_FRAME_LEN);
        let mut buf = BytesMut::new();
        let (welcome, info) = loop {
            let next = match reader.next_frame(&buf) {
                Ok(next) => next,
                Err(e) => {
                    return Attempt::Failed(ClientError::Protocol(format!("first frame: {e}")))
                }
            };
            if let Some((frame, used)) = next {
                let read = match version.decode_server(frame) {
                    Ok(ServerFrame::Welcome(w)) => (
                        WelcomeInfo {
                            heartbeat_port: w.heartbeat_port,
                            shard_ports: w.shard_ports.iter().collect(),
                            shard_count: w.shard_count(),
                            limits: w.limits,
                            timings: w.timings,
                        },
                        link_info(&w),
                    ),
                    Ok(ServerFrame::Error(e)) => {
                        connection.close(0u32.into(), b"refused");
                        return refused(e.error_code(), e.message.to_string());
                    }
                    Ok(other) => {
                        return Attempt::Failed(ClientError::Protocol(format!(
                            "expected WELCOME, got {}",
                            other.frame_type()
                        )))
                    }
                    Err(e) => {
                        return Attempt::Failed(ClientError::Protocol(format!("WELCOME: {e}")))
                    }
                };
                let _ = buf.split_to(used);
                break read;
            }
            match recv.read_chunk(READ_CHUNK, true).await {
                Ok(Some(chunk)) => buf.extend_from_slice(&chunk.bytes),
                Ok(None) => {
                    let end = close_reason(&connection, "closed before WELCOME");
                    return refused(end.code, end.message);
                }
                Err(e) => {
                    let end = close_reason(&connection, &e.to_string());
                    return refused(end.code, end.message);
                }
            }
        };
        Attempt::Opened(Box::new(Opened {
            endpoint: endpoint.clone(),
            connection,
            send,
            recv,
            buf,
            welcome,
            info: LinkInfo { keep_alive, ..info },
            welcomed: Instant::now(),
        }))
    }
}

/// What WELCOME says beyond shards, limits and timings (the keep-alive is the caller's).
fn link_info(w: &wire::Welcome<'_>) -> LinkInfo {
    let v2 = w.v2.unwrap_or_default();
    let idle = Duration::from_millis(u64::from(v2.idle_timeout_ms));
    LinkInfo {
        version: w.version(),
        warming: v2.warm_remaining_ms.is_some(),
        warm_remaining: Duration::from_millis(u64::from(v2.warm_remaining_ms.unwrap_or(0))),
        idle_timeout: (!idle.is_zero()).then_some(idle),
        keep_alive: DEFAULT_KEEP_ALIVE,
    }
}

/// A push link that reads only when asked: for simulating a gateway that falls behind (its
/// small receive window fills and the daemon's writes stall) and for looking at raw frames.
pub struct RawLink {
    opened: Opened,
    next_request: u32,
}

impl RawLink {
    /// Connects with a stream and connection receive window of `stream_window` bytes, asking
    /// for protocol version 2 and falling back to 1 like [`LinkClient::connect`].
    pub async fn connect(
        addr: SocketAddr,
        options: ConnectOptions,
        stream_window: u32,
    ) -> Result<RawLink, ClientError> {
        RawLink::connect_version(addr, options, stream_window, Version::LATEST).await
    }

    /// [`connect`](RawLink::connect), asking for `version` at most.
    pub async fn connect_version(
        addr: SocketAddr,
        options: ConnectOptions,
        stream_window: u32,
        version: Version,
    ) -> Result<RawLink, ClientError> {
        Ok(RawLink {
            opened: Opened::connect(addr, &options, Some(stream_window), version).await?,
            next_request: 1,
        })
    }

    /// What the link negotiated.
    pub fn link_info(&self) -> &LinkInfo {
        &self.opened.info
    }

    /// Turns the firehose on and reads until its ACK (dropping what arrives before it).
    pub async fn subscribe_all(&mut self) -> Result<(), ClientError> {
        let id = self.next_request;
        self.next_request += 1;
        let mut frame = BytesMut::new();
        wire::encode_subscribe_all(&mut frame, id)?;
        self.send_raw(&frame).await?;
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
        self.search(within, |f| match f {
            ServerFrame::Error(e) => Some((e.request_id, e.error_code(), e.message.to_string())),
            _ => None,
        })
        .await
    }

    /// Reads frames until a GOAWAY (version 2) and returns it with its message; `None` if the
    /// link ends or `within` passes first.
    pub async fn next_go_away(
        &mut self,
        within: Duration,
    ) -> Result<Option<(GoAway, String)>, ClientError> {
        self.search(within, |f| match f {
            ServerFrame::GoAway(g) => Some((
                go_away(g.reason, g.reconnect_after_ms),
                g.message.to_string(),
            )),
            _ => None,
        })
        .await
    }

    /// Reads frames until a LAGGED frame (`true`) or until `within` passes or the link ends
    /// (`false`).
    pub async fn read_until_lagged(&mut self, within: Duration) -> Result<bool, ClientError> {
        let found = self
            .search(within, |f| {
                matches!(f, ServerFrame::Lagged(_) | ServerFrame::LaggedAll).then_some(())
            })
            .await?;
        Ok(found.is_some())
    }

    /// Reads frames until `look` finds something in one; `None` if the link ends or `within`
    /// passes first.
    async fn search<T>(
        &mut self,
        within: Duration,
        look: impl Fn(&ServerFrame<'_>) -> Option<T>,
    ) -> Result<Option<T>, ClientError> {
        let search = async {
            loop {
                match self.next_frame(&look).await? {
                    Some(Some(found)) => return Ok(Some(found)),
                    Some(None) => {}
                    None => return Ok(None),
                }
            }
        };
        tokio::time::timeout(within, search)
            .await
            .unwrap_or(Ok(None))
    }

    /// Reads the next frame and returns what `look` makes of it; `None` at the end of the link.
    async fn next_frame<T>(
        &mut self,
        look: impl Fn(&ServerFrame<'_>) -> T,
    ) -> Result<Option<T>, ClientError> {
        let max = self.opened.welcome.limits.max_frame_len;
        let reader = wire::FrameReader::new(max.max(wire::MIN_MAX_FRAME_LEN));
        let version = self.opened.info.version;
        loop {
            let next = reader
                .next_frame(&self.opened.buf)
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
            if let Some((frame, used)) = next {
                let seen = version
                    .decode_server(frame)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_is_a_third_of_the_idle_timeout_at_most() {
        assert_eq!(keep_alive_for(None), DEFAULT_KEEP_ALIVE);
        assert_eq!(
            keep_alive_for(Some(Duration::from_secs(30))),
            DEFAULT_KEEP_ALIVE
        );
        assert_eq!(
            keep_alive_for(Some(Duration::from_secs(9))),
            Duration::from_secs(3)
        );
        assert_eq!(
            keep_alive_for(Some(Duration::from_millis(1))),
            MIN_KEEP_ALIVE
        );
    }

    #[test]
    fn unknown_go_away_reasons_read_as_shutting_down() {
        assert_eq!(
            go_away(1, 2000),
            GoAway {
                reason: GoAwayReason::Restarting,
                reconnect_after: Duration::from_secs(2)
            }
        );
        assert_eq!(go_away(77, 0).reason, GoAwayReason::ShuttingDown);
    }
}
