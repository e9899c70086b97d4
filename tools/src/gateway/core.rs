//! The gateway's rules, sans-IO: browsers' connections and messages and the push link's news
//! go in (`open`, `message`, `close`, `link_*`, with the time passed in); what to send to
//! browsers, to the push link and as heartbeats comes out of [`GatewayCore::poll_output`].
//! It never reads a clock or touches a socket, so every rule (tokens, limits, the
//! deduplicated subscriptions, what a browser is told and when) is unit-tested with fake time;
//! the tokio tasks in `server.rs` only move bytes.
//!
//! Subscriptions: the gateway has one push link. A user named by the rosters of any number of
//! browsers is subscribed once, when the first roster names them, and unsubscribed when the
//! last browser naming them drops them (or closes). The core keeps one view per subscribed
//! user, moving only forwards (a record if its version is at least the one known, a transition
//! if greater); after the link comes back (`link_up`) every view is stale and the next record
//! replaces it whatever its version, and after LAGGED the users named are queried again. A
//! daemon that started without its saved state ("warming") may answer offline for users who
//! are online: such an offline is not applied to a user known online or idle, and every
//! watched user is queried again when warming ends (as the client's watcher does).
//!
//! Heartbeats: each browser is one device of its user. It is announced online when it
//! connects, idle while its page is hidden, re-announced periodically (a visible page counts
//! as activity, SPEC.md § 5, so its user does not drift idle), and logged out (an `offline`
//! entry, SPEC.md § 5) when its socket closes, so watchers see it offline at once rather than
//! after the timeout. Each device keeps its own schedule: every gap between two of its
//! re-announcements is drawn by the client library's [`Pacer`] in [0.75, 1] × the interval in
//! force — the daemon's, or the longer one it asks for while it backs off under load (PACE,
//! SPEC.md § P6.13), at most [`MAX_PACE_FACTOR`] times the normal one. Drawn per device, the
//! gaps spread a gateway's beats instead of sending every device's in one burst; a gap
//! already drawn keeps its time when the interval changes (the daemon's deadlines cover it).
//! The randomness is a seeded PRNG, so the tests replay.

use super::protocol::{BrowserMessage, ErrorCode, GatewayMessage, State};
use super::token::Secret;
use presenced_client::{entry, Pacer};
use presenced_wire::link::{Event, PresenceRecord, WireState};
use presenced_wire::{Entry, State as DeviceState};
use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// A browser connection's id within the gateway.
pub type ConnId = u64;

/// The limits a gateway keeps (each a setting of `presence-gateway serve`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Browser connections at once; more are refused (close code 1013, try again later).
    pub max_connections: usize,
    /// Users in one browser's roster.
    pub max_roster_users: usize,
    /// Bytes in one browser message.
    pub max_message_bytes: usize,
    /// Messages a browser may send per second (and in one burst).
    pub max_messages_per_second: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 10_000,
            max_roster_users: 500,
            max_message_bytes: 16 * 1024,
            max_messages_per_second: 20,
        }
    }
}

/// What happened, for `/stats` and the logs; every limit has the counter of its refusals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Browsers connected now.
    pub connections: u64,
    /// Browsers accepted since the start.
    pub connections_opened: u64,
    /// Refused: `max_connections` reached.
    pub refused_max_connections: u64,
    /// Refused: a bad, malformed or expired token.
    pub refused_token: u64,
    /// Browser messages received.
    pub messages: u64,
    /// Refused: not JSON or not a message of the protocol (binary, user 0 included).
    pub bad_messages: u64,
    /// Refused: a roster over `max_roster_users`.
    pub roster_too_large: u64,
    /// Refused: a message over `max_message_bytes`.
    pub message_too_large: u64,
    /// Refused: over `max_messages_per_second`.
    pub rate_limited: u64,
    /// Browsers disconnected because they fell behind: their socket's outbox was full.
    pub fell_behind: u64,
    /// Users subscribed on the push link now (each once, however many browsers watch them).
    pub subscribed_users: u64,
    /// Transitions received from the daemon.
    pub transitions: u64,
    /// Times the push link came (back) up.
    pub link_ups: u64,
    /// LAGGED signals received (each answered with a query).
    pub lagged: u64,
    /// Offline records of users known online or idle, held back because the daemon was
    /// warming (SPEC.md § P6.10).
    pub held_while_warming: u64,
}

/// A request for the push link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkRequest {
    /// Subscribe to these users (their records answer it).
    Subscribe(Vec<u64>),
    /// Stop watching these users.
    Unsubscribe(Vec<u64>),
    /// Query these users again (their records answer it).
    Query(Vec<u64>),
}

/// Something for the driver to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send this message to this browser.
    Send(ConnId, GatewayMessage),
    /// Send this request on the push link.
    Link(LinkRequest),
    /// Queue this heartbeat entry (the driver flushes after draining the outputs).
    Heartbeat(Entry),
    /// A limit was hit or a browser refused: log this line.
    Notice(String),
}

/// Why a browser was refused at connecting: the WebSocket close code and reason it gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// 1008 (policy violation) for tokens, 1013 (try again later) for the connection limit.
    pub code: u16,
    /// The reason, shown by the page.
    pub reason: String,
}

struct Conn {
    user: u64,
    device: u32,
    visible: bool,
    roster: BTreeSet<u64>,
    /// Messages the browser may still send now (a token bucket refilled at the rate limit).
    allowance: f64,
    refilled: Instant,
    /// Told it is rate limited, and not yet let through since.
    throttled: bool,
    /// When its next periodic re-announcement is due (its entry in `GatewayCore::due`).
    next_beat: Instant,
}

#[derive(Clone, Copy)]
struct View {
    state: State,
    last_seen_ms: Option<u64>,
    version: u64,
    /// From before the link came back: the next record replaces it whatever its version.
    stale: bool,
}

#[derive(Default)]
struct Sub {
    watchers: BTreeSet<ConnId>,
    view: Option<View>,
}

/// The longest heartbeat interval the gateway obeys, as a multiple of the daemon's normal one
/// (SPEC.md § P6.13 lets a gateway bound it; beating more often is always allowed).
pub const MAX_PACE_FACTOR: u32 = 16;

/// The gateway's state (see the module's documentation).
pub struct GatewayCore {
    limits: Limits,
    secret: Secret,
    /// The heartbeat interval: the daemon's, or the longer one it asks for (PACE).
    pace: Pacer,
    /// Each device's next re-announcement, earliest first.
    due: BTreeSet<(Instant, ConnId)>,
    /// Draws each gap within the jitter range.
    rng: Xoshiro256PlusPlus,
    conns: BTreeMap<ConnId, Conn>,
    next_conn: ConnId,
    next_device: u32,
    subs: BTreeMap<u64, Sub>,
    devices_here: HashMap<u64, u32>,
    counters: Counters,
    outputs: VecDeque<Output>,
}

fn public(state: WireState) -> State {
    match state {
        WireState::Online => State::Online,
        WireState::Idle => State::Idle,
        WireState::Offline => State::Offline,
    }
}

impl GatewayCore {
    /// A gateway with these limits and token secret that re-announces each device at gaps
    /// of [0.75, 1] × `heartbeat_every` (the daemon's heartbeat interval) until the daemon
    /// asks for another; `seed` seeds the draws of those gaps.
    pub fn new(
        limits: Limits,
        secret: Secret,
        heartbeat_every: Duration,
        seed: u64,
    ) -> GatewayCore {
        GatewayCore {
            limits,
            secret,
            pace: Pacer::new(heartbeat_every, heartbeat_every * MAX_PACE_FACTOR),
            due: BTreeSet::new(),
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            conns: BTreeMap::new(),
            next_conn: 1,
            next_device: 1,
            subs: BTreeMap::new(),
            devices_here: HashMap::new(),
            counters: Counters::default(),
            outputs: VecDeque::new(),
        }
    }

    /// The counters now.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// When [`handle_timeout`](GatewayCore::handle_timeout) is next due; `None` while no
    /// browser is connected.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.due.first().map(|&(at, _)| at)
    }

    /// Re-announces every device whose next beat is due by `now`, and draws its next gap
    /// from `now` (when the beat is sent, so a late wake-up never stretches a gap past the
    /// interval).
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&(at, id)) = self.due.first() {
            if at > now {
                break;
            }
            self.due.pop_first();
            let conn = &self.conns[&id];
            let state = if conn.visible {
                DeviceState::Online
            } else {
                DeviceState::Idle
            };
            self.outputs.push_back(Output::Heartbeat(entry(
                conn.user,
                conn.device,
                state,
                conn.visible,
            )));
            self.schedule(id, now);
        }
    }

    /// The daemon asks for a heartbeat interval (PACE, SPEC.md § P6.13; `None`: the normal
    /// one, also when the link ends): each device's gaps follow it from its next beat on.
    pub fn link_pace(&mut self, asked: Option<Duration>) {
        self.pace.set_asked(asked);
    }

    /// Draws when device `id`, which beats at `now`, re-announces next.
    fn schedule(&mut self, id: ConnId, now: Instant) {
        // 53 random bits: uniform in [0, 1].
        let unit = (self.rng.next_u64() >> 11) as f64 / ((1u64 << 53) - 1) as f64;
        let at = self.pace.next_beat(now, unit);
        if let Some(conn) = self.conns.get_mut(&id) {
            conn.next_beat = at;
            self.due.insert((at, id));
        }
    }

    /// A browser connects with `token` at `now` (`unix_s`: the wall clock, for the expiry).
    pub fn open(&mut self, now: Instant, unix_s: u64, token: &str) -> Result<ConnId, Refusal> {
        let user = match self.secret.verify(token, unix_s) {
            Ok(user) => user,
            Err(e) => {
                self.counters.refused_token += 1;
                self.notice(format!("browser refused: {e}"));
                return Err(Refusal {
                    code: 1008,
                    reason: e.to_string(),
                });
            }
        };
        if self.conns.len() >= self.limits.max_connections {
            self.counters.refused_max_connections += 1;
            self.notice(format!(
                "browser of user {user} refused: max_connections ({}) reached",
                self.limits.max_connections
            ));
            return Err(Refusal {
                code: 1013,
                reason: "gateway full (max_connections)".into(),
            });
        }
        let id = self.next_conn;
        self.next_conn += 1;
        let device = self.next_device;
        self.next_device = self.next_device.wrapping_add(1);
        self.conns.insert(
            id,
            Conn {
                user,
                device,
                visible: true,
                roster: BTreeSet::new(),
                allowance: f64::from(self.limits.max_messages_per_second),
                refilled: now,
                throttled: false,
                next_beat: now,
            },
        );
        self.schedule(id, now);
        self.counters.connections_opened += 1;
        self.counters.connections = self.conns.len() as u64;
        self.outputs.push_back(Output::Send(
            id,
            GatewayMessage::Welcome {
                user,
                device,
                max_roster_users: self.limits.max_roster_users,
                max_message_bytes: self.limits.max_message_bytes,
                max_messages_per_second: self.limits.max_messages_per_second,
            },
        ));
        self.outputs.push_back(Output::Heartbeat(entry(
            user,
            device,
            DeviceState::Online,
            true,
        )));
        *self.devices_here.entry(user).or_default() += 1;
        self.tell_watchers(user);
        Ok(id)
    }

    /// A browser could not take what it was sent (its outbox was full): the driver drops its
    /// socket, and `close` follows when its task ends.
    pub fn fell_behind(&mut self, conn: ConnId) {
        self.counters.fell_behind += 1;
        self.notice(format!("browser {conn} fell behind: disconnected"));
    }

    /// A browser's socket closed: its device logs out and its roster is released.
    pub fn close(&mut self, conn: ConnId) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.due.remove(&(c.next_beat, conn));
        self.counters.connections = self.conns.len() as u64;
        self.outputs.push_back(Output::Heartbeat(entry(
            c.user,
            c.device,
            DeviceState::Offline,
            false,
        )));
        let unsubscribe = self.release(conn, &c.roster);
        self.unsubscribe(unsubscribe);
        if let Some(n) = self.devices_here.get_mut(&c.user) {
            *n -= 1;
            if *n == 0 {
                self.devices_here.remove(&c.user);
            }
        }
        self.tell_watchers(c.user);
    }

    /// A text message from a browser.
    pub fn message(&mut self, now: Instant, conn: ConnId, text: &str) {
        if !self.admit(now, conn, text.len()) {
            return;
        }
        match serde_json::from_str::<BrowserMessage>(text) {
            Ok(BrowserMessage::Roster { users }) => self.roster(conn, users),
            Ok(BrowserMessage::Visibility { visible }) => self.visibility(conn, visible),
            Err(e) => {
                self.counters.bad_messages += 1;
                self.refuse(
                    conn,
                    ErrorCode::BadJson,
                    format!("not a gateway message: {e}"),
                );
            }
        }
    }

    /// A binary message from a browser (refused: the protocol is text).
    pub fn binary(&mut self, now: Instant, conn: ConnId, len: usize) {
        if !self.admit(now, conn, len) {
            return;
        }
        self.counters.bad_messages += 1;
        self.refuse(
            conn,
            ErrorCode::BinaryUnsupported,
            "binary messages are not part of the protocol: send JSON text".into(),
        );
    }

    /// The push link is up (at the start, or again after it was lost): subscribe every
    /// watched user again; their records replace what is known.
    pub fn link_up(&mut self) {
        self.counters.link_ups += 1;
        for sub in self.subs.values_mut() {
            if let Some(view) = &mut sub.view {
                view.stale = true;
            }
        }
        if !self.subs.is_empty() {
            let users = self.subs.keys().copied().collect();
            self.outputs
                .push_back(Output::Link(LinkRequest::Subscribe(users)));
        }
    }

    /// Records answering a subscribe or query; `warming`: the daemon marked some of them
    /// warming (SPEC.md § P6.10), so an offline among them may be wrong.
    pub fn link_records(&mut self, records: &[PresenceRecord], warming: bool) {
        for record in records {
            let Some(sub) = self.subs.get_mut(&record.user) else {
                continue;
            };
            let known_present = sub.view.is_some_and(|v| v.state != State::Offline);
            if warming && record.state == WireState::Offline && known_present {
                // Held back: [`link_warming_over`](GatewayCore::link_warming_over) asks again.
                self.counters.held_while_warming += 1;
                continue;
            }
            let newer = match sub.view {
                None => true,
                Some(view) => view.stale || record.version >= view.version,
            };
            if newer {
                sub.view = Some(View {
                    state: public(record.state),
                    last_seen_ms: record.last_seen_ms,
                    version: record.version,
                    stale: false,
                });
                self.tell_watchers(record.user);
            }
        }
    }

    /// Transitions pushed by the daemon.
    pub fn link_events(&mut self, events: &[Event]) {
        for event in events {
            self.counters.transitions += 1;
            let Some(sub) = self.subs.get_mut(&event.user) else {
                continue;
            };
            if sub
                .view
                .is_some_and(|v| !v.stale && event.version <= v.version)
            {
                continue;
            }
            sub.view = Some(View {
                state: public(event.state),
                last_seen_ms: Some(event.at_ms),
                version: event.version,
                stale: false,
            });
            self.tell_watchers(event.user);
        }
    }

    /// The daemon is no longer warming: query every watched user again, so that offlines
    /// held back while it was are now applied or corrected.
    pub fn link_warming_over(&mut self) {
        if !self.subs.is_empty() {
            let users = self.subs.keys().copied().collect();
            self.outputs
                .push_back(Output::Link(LinkRequest::Query(users)));
        }
    }

    /// LAGGED: transitions of these users (`None`: of any) were dropped; query them again.
    pub fn link_lagged(&mut self, users: Option<&[u64]>) {
        self.counters.lagged += 1;
        let users: Vec<u64> = match users {
            Some(users) => users
                .iter()
                .copied()
                .filter(|u| self.subs.contains_key(u))
                .collect(),
            None => self.subs.keys().copied().collect(),
        };
        if !users.is_empty() {
            self.outputs
                .push_back(Output::Link(LinkRequest::Query(users)));
        }
    }

    /// Rate and size checks for one message; false (the browser told) when refused.
    fn admit(&mut self, now: Instant, conn: ConnId, len: usize) -> bool {
        let limits = self.limits;
        let Some(c) = self.conns.get_mut(&conn) else {
            return false;
        };
        self.counters.messages += 1;
        let rate = f64::from(limits.max_messages_per_second);
        let elapsed = now.saturating_duration_since(c.refilled).as_secs_f64();
        c.allowance = (c.allowance + elapsed * rate).min(rate);
        c.refilled = now;
        if c.allowance < 1.0 {
            self.counters.rate_limited += 1;
            if !c.throttled {
                c.throttled = true;
                let (user, device) = (c.user, c.device);
                self.notice(format!(
                    "user {user} device {device}: max_messages_per_second ({}) hit",
                    limits.max_messages_per_second
                ));
                self.refuse(
                    conn,
                    ErrorCode::RateLimited,
                    format!(
                        "more than {} messages a second: messages are dropped until the rate \
                         falls",
                        limits.max_messages_per_second
                    ),
                );
            }
            return false;
        }
        c.allowance -= 1.0;
        c.throttled = false;
        if len > limits.max_message_bytes {
            self.counters.message_too_large += 1;
            let (user, device) = (c.user, c.device);
            self.notice(format!(
                "user {user} device {device}: a message of {len} bytes, over \
                 max_message_bytes ({})",
                limits.max_message_bytes
            ));
            self.refuse(
                conn,
                ErrorCode::MessageTooLarge,
                format!(
                    "a message of {len} bytes; at most {} are accepted",
                    limits.max_message_bytes
                ),
            );
            return false;
        }
        true
    }

    fn roster(&mut self, conn: ConnId, users: Vec<u64>) {
        if users.contains(&0) {
            self.counters.bad_messages += 1;
            return self.refuse(conn, ErrorCode::BadUser, "user ids start at 1".into());
        }
        let wanted: BTreeSet<u64> = users.into_iter().collect();
        if wanted.len() > self.limits.max_roster_users {
            self.counters.roster_too_large += 1;
            self.notice(format!(
                "connection {conn}: a roster of {} users, over max_roster_users ({})",
                wanted.len(),
                self.limits.max_roster_users
            ));
            return self.refuse(
                conn,
                ErrorCode::RosterTooLarge,
                format!(
                    "a roster of {} users; at most {} are accepted (the roster is unchanged)",
                    wanted.len(),
                    self.limits.max_roster_users
                ),
            );
        }
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        let old = std::mem::replace(&mut c.roster, wanted.clone());
        let dropped: BTreeSet<u64> = old.difference(&wanted).copied().collect();
        let unsubscribe = self.release(conn, &dropped);
        self.unsubscribe(unsubscribe);
        let mut subscribe = Vec::new();
        for &user in wanted.difference(&old) {
            let sub = self.subs.entry(user).or_default();
            if sub.watchers.is_empty() {
                subscribe.push(user);
            }
            sub.watchers.insert(conn);
            if sub.view.is_some() {
                self.tell(conn, user);
            }
        }
        self.counters.subscribed_users = self.subs.len() as u64;
        if !subscribe.is_empty() {
            self.outputs
                .push_back(Output::Link(LinkRequest::Subscribe(subscribe)));
        }
    }

    fn visibility(&mut self, conn: ConnId, visible: bool) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.visible == visible {
            return;
        }
        c.visible = visible;
        let state = if visible {
            DeviceState::Online
        } else {
            DeviceState::Idle
        };
        self.outputs
            .push_back(Output::Heartbeat(entry(c.user, c.device, state, visible)));
    }

    /// Drops `conn` from the watchers of `users`; the users no one watches any more.
    fn release(&mut self, conn: ConnId, users: &BTreeSet<u64>) -> Vec<u64> {
        let mut gone = Vec::new();
        for user in users {
            if let Some(sub) = self.subs.get_mut(user) {
                sub.watchers.remove(&conn);
                if sub.watchers.is_empty() {
                    self.subs.remove(user);
                    gone.push(*user);
                }
            }
        }
        self.counters.subscribed_users = self.subs.len() as u64;
        gone
    }

    fn unsubscribe(&mut self, users: Vec<u64>) {
        if !users.is_empty() {
            self.outputs
                .push_back(Output::Link(LinkRequest::Unsubscribe(users)));
        }
    }

    /// Sends `user`'s presence to every browser watching them.
    fn tell_watchers(&mut self, user: u64) {
        let watchers: Vec<ConnId> = match self.subs.get(&user) {
            Some(sub) if sub.view.is_some() => sub.watchers.iter().copied().collect(),
            _ => return,
        };
        for conn in watchers {
            self.tell(conn, user);
        }
    }

    fn tell(&mut self, conn: ConnId, user: u64) {
        let Some(view) = self.subs.get(&user).and_then(|s| s.view) else {
            return;
        };
        let message = GatewayMessage::Presence {
            user,
            state: view.state,
            last_seen_ms: view.last_seen_ms,
            version: view.version,
            devices_here: self.devices_here.get(&user).copied().unwrap_or(0),
        };
        self.outputs.push_back(Output::Send(conn, message));
    }

    fn refuse(&mut self, conn: ConnId, code: ErrorCode, message: String) {
        self.outputs
            .push_back(Output::Send(conn, GatewayMessage::Error { code, message }));
    }

    fn notice(&mut self, line: String) {
        self.outputs.push_back(Output::Notice(line));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presenced_wire::link::WireCause;

    const HB: Duration = Duration::from_secs(20);

    fn secret() -> Secret {
        Secret::new(vec![9; 32]).unwrap()
    }

    fn core(limits: Limits) -> GatewayCore {
        GatewayCore::new(limits, secret(), HB, 7)
    }

    fn drain(core: &mut GatewayCore) -> Vec<Output> {
        std::iter::from_fn(|| core.poll_output()).collect()
    }

    fn open(core: &mut GatewayCore, now: Instant, user: u64) -> ConnId {
        let id = core
            .open(now, 100, &secret().mint(user, 1_000))
            .expect("accepted");
        drain(core);
        id
    }

    fn links(outputs: &[Output]) -> Vec<LinkRequest> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Link(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    fn sent_to(outputs: &[Output], conn: ConnId) -> Vec<GatewayMessage> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Send(c, m) if *c == conn => Some(m.clone()),
                _ => None,
            })
            .collect()
    }

    /// What `outputs` show browser `conn`: each a presence, as (user, state, version, devices
    /// here).
    fn shown(outputs: &[Output], conn: ConnId) -> Vec<(u64, State, u64, u32)> {
        sent_to(outputs, conn)
            .into_iter()
            .map(|m| match m {
                GatewayMessage::Presence {
                    user,
                    state,
                    version,
                    devices_here,
                    ..
                } => (user, state, version, devices_here),
                other => panic!("not a presence: {other:?}"),
            })
            .collect()
    }

    fn heartbeats(outputs: &[Output]) -> Vec<Entry> {
        outputs
            .iter()
            .filter_map(|o| match o {
                Output::Heartbeat(e) => Some(*e),
                _ => None,
            })
            .collect()
    }

    fn error_code(message: &GatewayMessage) -> Option<ErrorCode> {
        match message {
            GatewayMessage::Error { code, .. } => Some(*code),
            _ => None,
        }
    }

    fn record(user: u64, state: WireState, version: u64) -> PresenceRecord {
        PresenceRecord {
            user,
            state,
            last_seen_ms: Some(5),
            version,
        }
    }

    fn event(user: u64, state: WireState, prev: WireState, version: u64) -> Event {
        Event {
            user,
            state,
            prev,
            cause: WireCause::StateChange,
            at_ms: 7,
            version,
        }
    }

    #[test]
    fn tokens_decide_who_connects() {
        let t0 = Instant::now();
        let mut core = core(Limits::default());
        let expired = core.open(t0, 1_000, &secret().mint(1, 1_000));
        assert_eq!(expired.unwrap_err().reason, "token expired");
        let forged = Secret::new(vec![1; 32]).unwrap().mint(1, 1_000);
        let refused = core.open(t0, 100, &forged).unwrap_err();
        assert_eq!(
            (refused.code, refused.reason.as_str()),
            (1008, "bad token signature")
        );
        assert_eq!(core.counters().refused_token, 2);
        let id = core.open(t0, 100, &secret().mint(7, 1_000)).unwrap();
        let out = drain(&mut core);
        assert!(matches!(
            sent_to(&out, id)[0],
            GatewayMessage::Welcome { user: 7, .. }
        ));
        let hb = heartbeats(&out);
        assert_eq!(hb.len(), 1);
        assert_eq!((hb[0].user, hb[0].state), (7, DeviceState::Online));
    }

    #[test]
    fn max_connections_refuses_the_next_browser_until_one_leaves() {
        let t0 = Instant::now();
        let limits = Limits {
            max_connections: 2,
            ..Limits::default()
        };
        let mut core = core(limits);
        let a = open(&mut core, t0, 1);
        open(&mut core, t0, 2);
        let full = core.open(t0, 100, &secret().mint(3, 1_000)).unwrap_err();
        assert_eq!(full.code, 1013);
        assert_eq!(core.counters().refused_max_connections, 1);
        assert!(drain(&mut core)
            .iter()
            .any(|o| matches!(o, Output::Notice(l) if l.contains("max_connections"))));
        core.close(a);
        assert!(core.open(t0, 100, &secret().mint(3, 1_000)).is_ok());
    }

    #[test]
    fn subscriptions_are_shared_and_end_with_the_last_watcher() {
        let t0 = Instant::now();
        let mut core = core(Limits::default());
        let a = open(&mut core, t0, 1);
        let b = open(&mut core, t0, 2);
        core.message(t0, a, r#"{"type":"roster","users":[10,11,10]}"#);
        assert_eq!(
            links(&drain(&mut core)),
            [LinkRequest::Subscribe(vec![10, 11])]
        );
        core.link_records(&[record(10, WireState::Online, 3)], false);
        drain(&mut core);
        // b names 10 (already subscribed: answered from the view, no request) and 12.
        core.message(t0, b, r#"{"type":"roster","users":[10,12]}"#);
        let out = drain(&mut core);
        assert_eq!(links(&out), [LinkRequest::Subscribe(vec![12])]);
        assert_eq!(shown(&out, b), [(10, State::Online, 3, 0)]);
        assert_eq!(core.counters().subscribed_users, 3);
        // a drops 10 and 11: only 11 goes (b still watches 10).
        core.message(t0, a, r#"{"type":"roster","users":[]}"#);
        assert_eq!(
            links(&drain(&mut core)),
            [LinkRequest::Unsubscribe(vec![11])]
        );
        // b leaves: 10 and 12 go.
        core.close(b);
        let out = drain(&mut core);
        assert_eq!(links(&out), [LinkRequest::Unsubscribe(vec![10, 12])]);
        assert_eq!(core.counters().subscribed_users, 0);
    }

    #[test]
    fn transitions_reach_only_watchers_and_only_forwards() {
        let t0 = Instant::now();
        let mut core = core(Limits::default());
        let a = open(&mut core, t0, 1);
        let b = open(&mut core, t0, 2);
        core.message(t0, a, r#"{"type":"roster","users":[5]}"#);
        core.link_records(&[record(5, WireState::Online, 4)], false);
        drain(&mut core);
        core.link_events(&[event(5, WireState::Idle, WireState::Online, 5)]);
        let out = drain(&mut core);
        assert!(sent_to(&out, b).is_empty());
        assert!(matches!(
            sent_to(&out, a)[..],
            [GatewayMessage::Presence {
                user: 5,
                state: State::Idle,
                version: 5,
                last_seen_ms: Some(7),
                ..
            }]
        ));
        // An older record (a late answer) and a repeated event change nothing.
        core.link_records(&[record(5, WireState::Online, 4)], false);
        core.link_events(&[event(5, WireState::Idle, WireState::Online, 5)]);
        assert!(drain(&mut core).is_empty());
        // Events of users no one watches are counted and dropped.
        core.link_events(&[event(6, WireState::Online, WireState::Offline, 1)]);
        assert!(drain(&mut core).is_empty());
        assert_eq!(core.counters().transitions, 3);
    }

    #[test]
    fn a_new_link_resubscribes_and_its_records_replace_the_views() {
        let t0 = Instant::now();
        let mut core = core(Limits::default());
        let a = open(&mut core, t0, 1);
        core.message(t0, a, r#"{"type":"roster","users":[5,6]}"#);
        core.link_records(&[record(5, WireState::Online, 9)], false);
        drain(&mut core);
        core.link_up();
        assert_eq!(
            links(&drain(&mut core)),
            [LinkRequest::Subscribe(vec![5, 6])]
        );
        // A daemon that lost its state answers with a lower version: it still wins.
        core.link_records(&[record(5, WireState::Offline, 1)], false);
        assert_eq!(shown(&drain(&mut core), a), [(5, State::Offline, 1, 0)]);
        core.link_lagged(Some(&[6, 99]));
        assert_eq!(links(&drain(&mut core)), [LinkRequest::Query(vec![6])]);
        core.link_lagged(None);
        assert_eq!(links(&drain(&mut core)), [LinkRequest::Query(vec![5, 6])]);
    }

    #[test]
    fn a_warming_offline_is_held_back_until_warming_ends() {
        let t0 = Instant::now();
        let mut core = core(Limits::default());
        let a = open(&mut core, t0, 1);
        core.message(t0, a, r#"{"type":"roster","users":[5,6]}"#);
        core.link_records(&[record(5, WireState::Online, 9)], false);
        drain(&mut core);
        core.link_up();
        drain(&mut core);
        // 5 is known online: its warming offline waits; 6 is unknown: shown as answered.
        core.link_records(
            &[
                record(5, WireState::Offline, 9),
                record(6, WireState::Offline, 0),
            ],
            true,
        );
        let out = drain(&mut core);
        assert_eq!(shown(&out, a), [(6, State::Offline, 0, 0)]);
        assert_eq!(core.counters().held_while_warming, 1);
        core.link_warming_over();
        assert_eq!(links(&drain(&mut core)), [LinkRequest::Query(vec![5, 6])]);
        // The answer after warming is applied, offline included.
        core.link_records(&[record(5, WireState::Offline, 10)], false);
        assert_eq!(shown(&drain(&mut core), a), [(5, State::Offline, 10, 0)]);
    }

    #[test]
    fn visibility_sends_idle_at_once_and_close_logs_out() {
        let t0 = Instant::now();
        let mut core = core(Limits::default());
        let a = open(&mut core, t0, 1);
        core.message(t0, a, r#"{"type":"visibility","visible":false}"#);
        let hb = heartbeats(&drain(&mut core));
        assert_eq!((hb[0].state, hb[0].active), (DeviceState::Idle, false));
        // The same state again sends nothing; the next periodic beat re-announces it idle.
        core.message(t0, a, r#"{"type":"visibility","visible":false}"#);
        assert!(drain(&mut core).is_empty());
        let due = core.poll_timeout().expect("a device is connected");
        core.handle_timeout(due - Duration::from_millis(1));
        assert!(drain(&mut core).is_empty());
        core.handle_timeout(due);
        let hb = heartbeats(&drain(&mut core));
        assert_eq!((hb[0].state, hb[0].active), (DeviceState::Idle, false));
        core.message(due, a, r#"{"type":"visibility","visible":true}"#);
        let hb = heartbeats(&drain(&mut core));
        assert_eq!((hb[0].state, hb[0].active), (DeviceState::Online, true));
        core.close(a);
        let hb = heartbeats(&drain(&mut core));
        assert_eq!((hb[0].user, hb[0].state), (1, DeviceState::Offline));
        // Nothing is left to re-announce.
        assert_eq!(core.poll_timeout(), None);
    }

    /// Runs `core` from `from` until `until`, always to its next timeout; returns the times
    /// at which each device was re-announced.
    fn beats(core: &mut GatewayCore, from: Instant, until: Instant) -> BTreeMap<u32, Vec<Instant>> {
        let mut beats: BTreeMap<u32, Vec<Instant>> = BTreeMap::new();
        let mut now = from;
        while let Some(due) = core.poll_timeout() {
            assert!(due >= now, "a beat due in the past");
            if due > until {
                break;
            }
            now = due;
            core.handle_timeout(now);
            for e in heartbeats(&drain(core)) {
                beats.entry(e.device).or_default().push(now);
            }
        }
        beats
    }

    /// The gaps between consecutive beats, each checked to lie in [0.75, 1] × `interval`.
    fn gaps_within(beats: &[Instant], interval: Duration) -> Vec<Duration> {
        let gaps: Vec<Duration> = beats.windows(2).map(|w| w[1] - w[0]).collect();
        for &gap in &gaps {
            assert!(
                gap >= interval.mul_f64(0.75) && gap <= interval,
                "gap {gap:?} outside [0.75, 1] × {interval:?}"
            );
        }
        gaps
    }

    #[test]
    fn re_announcements_are_jittered_within_the_interval_the_daemon_asks_for() {
        let t0 = Instant::now();
        let mut core = core(Limits::default());
        open(&mut core, t0, 1);
        open(&mut core, t0, 2);
        // At the normal interval: every gap in [0.75, 1] × HB, per device.
        let t1 = t0 + 40 * HB;
        let normal = beats(&mut core, t0, t1);
        assert_eq!(normal.len(), 2);
        for b in normal.values() {
            assert!(b.len() >= 30);
            gaps_within(b, HB);
        }
        // PACE: the gaps follow the asked interval from each device's next beat on, drawn
        // anew each time, and two devices that connected together do not beat in step.
        core.link_pace(Some(3 * HB));
        let t2 = t1 + 120 * HB;
        let paced = beats(&mut core, t1, t2);
        let mut firsts = Vec::new();
        for b in paced.values() {
            assert!(b.len() >= 30);
            firsts.push(b[1]);
            let gaps = gaps_within(b, 3 * HB);
            assert!(gaps.iter().any(|&g| g != gaps[0]), "no jitter: {gaps:?}");
        }
        assert_ne!(firsts[0], firsts[1], "the devices beat in step");
        // Bounded by MAX_PACE_FACTOR.
        core.link_pace(Some(1000 * HB));
        let t3 = t2 + 400 * HB;
        for b in beats(&mut core, t2, t3).values() {
            assert!(b.len() >= 20);
            gaps_within(b, MAX_PACE_FACTOR * HB);
        }
        // Back to normal when the daemon (or the link's end) says: after the beat drawn
        // before, every gap is within the normal interval again.
        core.link_pace(None);
        let t4 = t3 + 60 * HB;
        for b in beats(&mut core, t3, t4).values() {
            assert!(b.len() >= 40);
            gaps_within(b, HB);
        }
    }

    #[test]
    fn devices_here_counts_the_users_browsers() {
        let t0 = Instant::now();
        let mut core = core(Limits::default());
        let a = open(&mut core, t0, 1);
        core.message(t0, a, r#"{"type":"roster","users":[2]}"#);
        core.link_records(&[record(2, WireState::Online, 1)], false);
        drain(&mut core);
        let b = core.open(t0, 100, &secret().mint(2, 1_000)).unwrap();
        assert_eq!(shown(&drain(&mut core), a), [(2, State::Online, 1, 1)]);
        core.close(b);
        assert_eq!(shown(&drain(&mut core), a), [(2, State::Online, 1, 0)]);
    }

    #[test]
    fn bad_messages_get_an_error_and_touch_no_one_else() {
        let t0 = Instant::now();
        let mut core = core(Limits::default());
        let a = open(&mut core, t0, 1);
        let b = open(&mut core, t0, 2);
        core.message(t0, b, r#"{"type":"roster","users":[1]}"#);
        drain(&mut core);
        let bad = [
            "not json",
            "{}",
            r#"{"type":"dance"}"#,
            r#"{"type":"roster","users":[-1]}"#,
            r#"{"type":"roster","users":"1"}"#,
            r#"{"type":"visibility","visible":false,"extra":1}"#,
            "\u{0}\u{ffff}",
        ];
        for (i, text) in bad.iter().enumerate() {
            let now = t0 + Duration::from_secs(i as u64);
            core.message(now, a, text);
            let out = drain(&mut core);
            assert_eq!(out.len(), 1, "{text}: {out:?}");
            assert_eq!(error_code(&sent_to(&out, a)[0]), Some(ErrorCode::BadJson));
        }
        core.message(
            t0 + Duration::from_secs(10),
            a,
            r#"{"type":"roster","users":[0]}"#,
        );
        assert_eq!(
            error_code(&sent_to(&drain(&mut core), a)[0]),
            Some(ErrorCode::BadUser)
        );
        core.binary(t0 + Duration::from_secs(11), a, 3);
        assert_eq!(
            error_code(&sent_to(&drain(&mut core), a)[0]),
            Some(ErrorCode::BinaryUnsupported)
        );
        assert_eq!(core.counters().bad_messages, 9);
        // b's subscription and a's connection are untouched.
        assert_eq!(core.counters().subscribed_users, 1);
        assert_eq!(core.counters().connections, 2);
    }

    #[test]
    fn size_and_roster_limits_refuse_and_keep_the_roster() {
        let t0 = Instant::now();
        let limits = Limits {
            max_roster_users: 2,
            max_message_bytes: 64,
            ..Limits::default()
        };
        let mut core = core(limits);
        let a = open(&mut core, t0, 1);
        core.message(t0, a, r#"{"type":"roster","users":[1,2]}"#);
        drain(&mut core);
        core.message(t0, a, r#"{"type":"roster","users":[1,2,3]}"#);
        let out = drain(&mut core);
        assert!(links(&out).is_empty());
        assert_eq!(
            error_code(&sent_to(&out, a)[0]),
            Some(ErrorCode::RosterTooLarge)
        );
        assert_eq!(core.counters().roster_too_large, 1);
        assert_eq!(core.counters().subscribed_users, 2);
        let long = format!(r#"{{"type":"roster","users":[{}]}}"#, "1,".repeat(30) + "1");
        core.message(t0, a, &long);
        assert_eq!(
            error_code(&sent_to(&drain(&mut core), a)[0]),
            Some(ErrorCode::MessageTooLarge)
        );
        assert_eq!(core.counters().message_too_large, 1);
    }

    #[test]
    fn the_rate_limit_drops_a_burst_and_says_so_once() {
        let t0 = Instant::now();
        let limits = Limits {
            max_messages_per_second: 4,
            ..Limits::default()
        };
        let mut core = core(limits);
        let a = open(&mut core, t0, 1);
        let visibility = |v: bool| format!(r#"{{"type":"visibility","visible":{v}}}"#);
        for i in 0..10 {
            core.message(t0, a, &visibility(i % 2 == 0));
        }
        let out = drain(&mut core);
        // Four let through (the first, visible, changes nothing), one error, the rest dropped.
        assert_eq!(heartbeats(&out).len(), 3);
        let errors: Vec<_> = sent_to(&out, a).iter().filter_map(error_code).collect();
        assert_eq!(errors, [ErrorCode::RateLimited]);
        assert_eq!(core.counters().rate_limited, 6);
        // A quarter of a second later one more is allowed.
        core.message(t0 + Duration::from_millis(250), a, &visibility(true));
        assert_eq!(heartbeats(&drain(&mut core)).len(), 1);
    }
}
