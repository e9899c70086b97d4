//! The gateway's tasks, which only move bytes: an HTTP server (the page, `/ws`, `/stats`),
//! one task per browser socket, the hub task that owns the [`GatewayCore`] and the heartbeat
//! sender and carries out its outputs, and the push-link task that owns the one link to the
//! daemon and reconnects it. Browsers and the link talk to the hub over channels, so a slow
//! or misbehaving browser never blocks the others: its outgoing queue is bounded, and a
//! browser that lets it fill is disconnected.

use super::core::{ConnId, Counters, GatewayCore, LinkRequest, Output, Refusal};
use super::protocol::GatewayMessage;
use super::Settings;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use presenced_client::watcher::{
    RECONNECT_JITTER_MS, RECONNECT_MAX_MS, RECONNECT_MIN_MS, WARMING_RECHECK_MS,
};
use presenced_client::{ClientError, ConnectOptions, HeartbeatClient, LinkClient, Push};
use presenced_wire::link::{ErrorCode, Event, PresenceRecord};
use serde::Deserialize;
use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// The page, embedded: no build step, nothing to install beside the binary.
const PAGE: &str = include_str!("page.html");

/// Messages queued for one browser at most; a browser that lets more pile up is disconnected.
const OUTBOX_MESSAGES: usize = 1024;

/// Inputs handled at most before the heartbeats they caused are flushed.
const BATCH_INPUTS: usize = 256;

/// Inputs queued for the hub at most (browser tasks wait when it is full).
const HUB_QUEUE: usize = 4096;

/// What the hub hears.
enum Input {
    Open {
        token: String,
        reply: oneshot::Sender<Result<(ConnId, mpsc::Receiver<GatewayMessage>), Refusal>>,
    },
    Text(ConnId, String),
    Binary(ConnId, usize),
    Closed(ConnId),
    LinkUp,
    Records(Vec<PresenceRecord>, bool),
    WarmingOver,
    Events(Vec<Event>),
    Lagged(Option<Vec<u64>>),
    /// The heartbeat interval the daemon asks for now (PACE; `None`: the normal one).
    Pace(Option<Duration>),
    Stats(oneshot::Sender<Counters>),
    Shutdown,
}

/// A started gateway: where it listens, and how to stop it.
pub struct Running {
    /// The HTTP address (the page at `/`, WebSockets at `/ws`, counters at `/stats`).
    pub addr: SocketAddr,
    hub: mpsc::Sender<Input>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    hub_task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Logs every browser out, closes their sockets and stops.
    pub async fn shutdown(self) {
        let _ = self.hub.send(Input::Shutdown).await;
        let _ = self.hub_task.await;
        self.server.abort();
    }
}

/// Connects the push link (the first connection must succeed), binds the HTTP listener and
/// starts every task.
pub async fn start(settings: Settings) -> Result<Running, String> {
    let link = LinkClient::connect(settings.link, settings.connect.clone())
        .await
        .map_err(|e| format!("cannot connect the push link to {}: {e}", settings.link))?;
    let welcome = link.welcome().clone();
    let (shared, shards) = welcome.heartbeat_addrs(settings.link.ip());
    let boot_epoch = unix_now().as_secs() as u32;
    let mut heartbeats = HeartbeatClient::new(settings.gateway_id, boot_epoch, shared)
        .map_err(|e| format!("cannot open the heartbeat socket: {e}"))?
        .with_shard_ports(shards);
    if let Some(key) = settings.key {
        heartbeats = heartbeats.with_key(key);
    }
    let heartbeat_every =
        Duration::from_millis(u64::from(welcome.timings.heartbeat_interval_ms).max(1));
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;

    let (hub_tx, hub_rx) = mpsc::channel(HUB_QUEUE);
    let (link_tx, link_rx) = mpsc::unbounded_channel();
    // Each gateway draws its own gaps: seeded anew at every start.
    let seed = RandomState::new().hash_one(settings.gateway_id);
    let core = GatewayCore::new(settings.limits, settings.secret, heartbeat_every, seed);
    let hub = Hub {
        core,
        heartbeats,
        browsers: HashMap::new(),
        link: link_tx,
    };
    let hub_task = tokio::spawn(hub.run(hub_rx));
    tokio::spawn(run_link(
        link,
        settings.link,
        settings.connect,
        link_rx,
        hub_tx.clone(),
    ));
    let max_message_bytes = settings.limits.max_message_bytes;
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/ws", get(upgrade))
        .route("/stats", get(stats))
        .with_state(AppState {
            hub: hub_tx.clone(),
            max_message_bytes,
            silence_timeout: settings.silence_timeout,
        });
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(Running {
        addr,
        hub: hub_tx,
        server,
        hub_task,
    })
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

#[derive(Clone)]
struct AppState {
    hub: mpsc::Sender<Input>,
    max_message_bytes: usize,
    silence_timeout: Duration,
}

#[derive(Deserialize)]
struct WsQuery {
    token: Option<String>,
}

async fn upgrade(
    ws: WebSocketUpgrade,
    Query(query): Query<WsQuery>,
    State(state): State<AppState>,
) -> Response {
    // Messages over the limit are refused by the core with a message to the browser; the
    // socket's own cap, well above it, only bounds what is buffered before that.
    let cap = state.max_message_bytes.saturating_mul(4).max(1024);
    let token = query.token.unwrap_or_default();
    ws.max_message_size(cap)
        .max_frame_size(cap)
        .on_upgrade(move |socket| browser(socket, token, state.hub, state.silence_timeout))
}

async fn stats(State(state): State<AppState>) -> Response {
    let (tx, rx) = oneshot::channel();
    if state.hub.send(Input::Stats(tx)).await.is_err() {
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "stopping").into_response();
    }
    match rx.await {
        Ok(counters) => (
            [(CONTENT_TYPE, "application/json")],
            serde_json::to_string(&counters).unwrap_or_default(),
        )
            .into_response(),
        Err(_) => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "stopping").into_response(),
    }
}

async fn close(mut socket: WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

/// One browser's socket: the hub's messages out, the browser's in. The browser is pinged
/// every third of `silence_timeout` and closed (so logged out) once it has been silent that
/// long: a browser whose network went away would otherwise stay online for ever.
async fn browser(
    mut socket: WebSocket,
    token: String,
    hub: mpsc::Sender<Input>,
    silence_timeout: Duration,
) {
    let (reply, answer) = oneshot::channel();
    if hub.send(Input::Open { token, reply }).await.is_err() {
        return close(socket, 1001, "gateway stopping").await;
    }
    let (id, mut outbox) = match answer.await {
        Ok(Ok(accepted)) => accepted,
        Ok(Err(refusal)) => return close(socket, refusal.code, &refusal.reason).await,
        Err(_) => return close(socket, 1001, "gateway stopping").await,
    };
    let mut ping = tokio::time::interval(silence_timeout / 3);
    ping.tick().await;
    let mut heard = tokio::time::Instant::now();
    let ending = loop {
        tokio::select! {
            now = ping.tick() => {
                if now.duration_since(heard) >= silence_timeout {
                    break Some("no answer to pings");
                }
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    break None;
                }
            }
            out = outbox.recv() => match out {
                Some(message) => {
                    let text = serde_json::to_string(&message).unwrap_or_default();
                    if socket.send(Message::Text(text.into())).await.is_err() {
                        break None;
                    }
                }
                None => break Some("gateway stopping, or this browser fell behind"),
            },
            incoming = socket.recv() => {
                heard = tokio::time::Instant::now();
                let input = match incoming {
                    Some(Ok(Message::Text(text))) => Input::Text(id, text.to_string()),
                    Some(Ok(Message::Binary(bytes))) => Input::Binary(id, bytes.len()),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Close(_)) | Err(_)) | None => break None,
                };
                if hub.send(input).await.is_err() {
                    break Some("gateway stopping");
                }
            }
        }
    };
    let _ = hub.send(Input::Closed(id)).await;
    if let Some(reason) = ending {
        close(socket, 1001, reason).await;
    }
}

/// Owns the core and the heartbeat sender.
struct Hub {
    core: GatewayCore,
    heartbeats: HeartbeatClient,
    browsers: HashMap<ConnId, mpsc::Sender<GatewayMessage>>,
    link: mpsc::UnboundedSender<LinkRequest>,
}

impl Hub {
    async fn run(mut self, mut inputs: mpsc::Receiver<Input>) {
        loop {
            let due = self.core.poll_timeout();
            let wake = tokio::time::Instant::from_std(due.unwrap_or_else(Instant::now));
            let input = tokio::select! {
                input = inputs.recv() => input,
                () = tokio::time::sleep_until(wake), if due.is_some() => {
                    self.core.handle_timeout(Instant::now());
                    self.carry_out();
                    continue;
                }
            };
            let Some(mut input) = input else { break };
            // What is already queued is handled before the heartbeats are flushed, so that a
            // busy gateway fills its datagrams; an idle one sends at once.
            let mut going_on = true;
            for _ in 0..BATCH_INPUTS {
                going_on = self.handle(input);
                if !going_on {
                    break;
                }
                self.carry_out_queued();
                match inputs.try_recv() {
                    Ok(next) => input = next,
                    Err(_) => break,
                }
            }
            self.flush();
            if !going_on {
                break;
            }
        }
        // Every browser logs out: the daemon's watchers see them offline at once.
        let ids: Vec<ConnId> = self.browsers.keys().copied().collect();
        for id in ids {
            self.core.close(id);
        }
        self.carry_out();
    }

    /// False when the gateway stops.
    fn handle(&mut self, input: Input) -> bool {
        let now = Instant::now();
        match input {
            Input::Open { token, reply } => {
                match self.core.open(now, unix_now().as_secs(), &token) {
                    Ok(id) => {
                        let (tx, rx) = mpsc::channel(OUTBOX_MESSAGES);
                        self.browsers.insert(id, tx);
                        if reply.send(Ok((id, rx))).is_err() {
                            self.browsers.remove(&id);
                            self.core.close(id);
                        }
                    }
                    Err(refusal) => {
                        let _ = reply.send(Err(refusal));
                    }
                }
            }
            Input::Text(id, text) => self.core.message(now, id, &text),
            Input::Binary(id, len) => self.core.binary(now, id, len),
            Input::Closed(id) => {
                self.browsers.remove(&id);
                self.core.close(id);
            }
            Input::LinkUp => self.core.link_up(),
            Input::Records(records, warming) => self.core.link_records(&records, warming),
            Input::WarmingOver => self.core.link_warming_over(),
            Input::Events(events) => self.core.link_events(&events),
            Input::Lagged(users) => self.core.link_lagged(users.as_deref()),
            Input::Pace(asked) => self.core.link_pace(asked),
            Input::Stats(reply) => {
                let _ = reply.send(self.core.counters());
            }
            Input::Shutdown => return false,
        }
        true
    }

    /// Carries out the core's outputs and sends the heartbeats they queued.
    fn carry_out(&mut self) {
        self.carry_out_queued();
        self.flush();
    }

    /// Sends any heartbeats queued.
    fn flush(&mut self) {
        if self.heartbeats.pending() > 0 {
            if let Err(e) = self.heartbeats.flush() {
                eprintln!("presence-gateway: heartbeats not sent: {e}");
            }
        }
    }

    /// Carries out the core's outputs; heartbeats wait in their datagrams (full ones go).
    fn carry_out_queued(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Send(id, message) => {
                    let Some(tx) = self.browsers.get(&id) else {
                        continue;
                    };
                    if tx.try_send(message).is_err() {
                        // Dropping its sender ends its task, which reports it closed.
                        self.browsers.remove(&id);
                        self.core.fell_behind(id);
                    }
                }
                Output::Link(request) => {
                    let _ = self.link.send(request);
                }
                Output::Heartbeat(entry) => {
                    if let Err(e) = self.heartbeats.push(entry) {
                        eprintln!("presence-gateway: heartbeat not sent: {e}");
                    }
                }
                Output::Notice(line) => eprintln!("presence-gateway: {line}"),
            }
        }
    }
}

/// The push link: requests out, records and pushes in; reconnected with jittered backoff
/// whenever it ends, after which the hub subscribes everyone again. After an answer marked
/// warming it looks every `WARMING_RECHECK_MS` whether the daemon still is, and tells the hub
/// when it no longer is.
async fn run_link(
    mut link: LinkClient,
    addr: SocketAddr,
    options: ConnectOptions,
    mut requests: mpsc::UnboundedReceiver<LinkRequest>,
    hub: mpsc::Sender<Input>,
) {
    let random = RandomState::new();
    loop {
        if hub.send(Input::LinkUp).await.is_err() {
            return;
        }
        // While the daemon is warming: when to look again whether it still is.
        let mut warm_check: Option<tokio::time::Instant> = None;
        // The interval the daemon asks for (SPEC.md § P6.13), back to normal with the link.
        let mut pace = link.pace();
        let wait_first = loop {
            let check_at = warm_check.unwrap_or_else(tokio::time::Instant::now);
            tokio::select! {
                changed = pace.changed() => {
                    let asked = if changed.is_ok() { *pace.borrow_and_update() } else { None };
                    if hub.send(Input::Pace(asked)).await.is_err() {
                        return;
                    }
                }
                () = tokio::time::sleep_until(check_at), if warm_check.is_some() => {
                    if link.is_warming() {
                        warm_check = Some(check_at + Duration::from_millis(WARMING_RECHECK_MS));
                    } else {
                        warm_check = None;
                        if hub.send(Input::WarmingOver).await.is_err() {
                            return;
                        }
                    }
                }
                request = requests.recv() => {
                    let Some(request) = request else { return };
                    let answer = match request {
                        LinkRequest::Subscribe(users) => {
                            link.subscribe_snapshot(&users).await.map(Some)
                        }
                        LinkRequest::Query(users) => link.query_snapshot(&users).await.map(Some),
                        LinkRequest::Unsubscribe(users) => link.unsubscribe(&users).await.map(|()| None),
                    };
                    match answer {
                        Ok(Some(snapshot)) => {
                            if snapshot.warming && warm_check.is_none() {
                                warm_check = Some(
                                    tokio::time::Instant::now()
                                        + Duration::from_millis(WARMING_RECHECK_MS),
                                );
                            }
                            let input = Input::Records(snapshot.records, snapshot.warming);
                            if hub.send(input).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => {}
                        // Refused (over the daemon's max_subscriptions, say): reconnecting
                        // would only be refused again.
                        Err(ClientError::Refused { code, message })
                            if code != Some(ErrorCode::ShuttingDown) =>
                        {
                            eprintln!("presence-gateway: the daemon refused a request: {message}");
                        }
                        Err(e) => {
                            eprintln!("presence-gateway: push link request failed: {e}");
                            break Duration::ZERO;
                        }
                    }
                }
                push = link.next_push() => {
                    let input = match push {
                        Some(Push::Events(events)) => Input::Events(events),
                        Some(Push::Lagged { users }) => Input::Lagged(Some(users)),
                        Some(Push::LaggedAll) => Input::Lagged(None),
                        Some(Push::Closed { message, go_away, .. }) => {
                            eprintln!("presence-gateway: push link closed: {message}");
                            if hub.send(Input::Pace(None)).await.is_err() {
                                return;
                            }
                            break go_away.map_or(Duration::ZERO, |g| g.reconnect_after);
                        }
                        None => break Duration::ZERO,
                    };
                    if hub.send(input).await.is_err() {
                        return;
                    }
                }
            }
        };
        let mut ceiling = Duration::from_millis(RECONNECT_MIN_MS);
        let mut wait = wait_first;
        link = loop {
            let jitter = random.hash_one(Instant::now()) % RECONNECT_JITTER_MS.max(1);
            tokio::time::sleep(wait + Duration::from_millis(jitter)).await;
            match LinkClient::connect(addr, options.clone()).await {
                Ok(link) => {
                    eprintln!("presence-gateway: push link to {addr} up again");
                    break link;
                }
                Err(e) => {
                    eprintln!("presence-gateway: push link to {addr}: {e}; retrying");
                    wait = ceiling;
                    ceiling = (ceiling * 2).min(Duration::from_millis(RECONNECT_MAX_MS));
                }
            }
        };
    }
}
