//! The hub: one thread owning every subscription. It reads each shard's FIFO channel
//! (transitions, snapshot answers, counters) and the connection tasks' commands, fans
//! transitions out to the links that asked for them, and answers requests.
//!
//! Subscribe is atomic with the snapshot: the hub asks the owning shard for the users' presence;
//! the shard answers down the same FIFO channel as its transitions, and the hub registers the
//! subscription when it reads the answer. Transitions before it are in the snapshot; those after
//! it reach the new subscriber. A link whose queue is full loses events and is told which users
//! to re-query (LAGGED); the hub never blocks on a gateway.

use super::{Command, LinkOut, Outgoing, Shared};
use crate::bus::{Inbox, Request, ToHub};
use crate::route::owner;
use crate::settings::Settings;
use crate::worker::Peer;
use bytes::BytesMut;
use crossbeam_channel::{Receiver, Select};
use presenced_core::event::{Presence, Transition};
use presenced_wire::link as wire;
use presenced_wire::stats::{AuthStats, LatencySummary, LinkStats, ShardStats, Stats};
use std::collections::{HashMap, HashSet};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Users remembered per lagging link before the hub asks it to re-query everything (a LAGGED
/// frame of this many fits the smallest allowed frame limit, 64 KiB).
const LAG_USERS_LIMIT: usize = 8_000;
/// Messages read from one channel before looking at the others.
const DRAIN: usize = 256;

struct Link {
    out: LinkOut,
    users: HashSet<u64>,
    /// Subscriptions requested and not yet registered (counted against the limit).
    reserved: usize,
    firehose: bool,
    /// The open EVENTS frame and the users in it.
    events: wire::EventsWriter,
    event_users: Vec<u64>,
    events_since_us: u64,
    lagged: HashSet<u64>,
    lagged_all: bool,
}

struct Pending {
    shards_left: usize,
    counters: Vec<Arc<ShardStats>>,
}

/// Counters of the hub.
#[derive(Default, Debug, Clone)]
pub struct HubStats {
    /// Transitions read from the shards.
    pub transitions: u64,
    /// Events queued to links.
    pub events_sent: u64,
    /// Events dropped because a link's queue was full.
    pub events_dropped: u64,
    /// LAGGED frames sent.
    pub lag_signals: u64,
    /// Transitions the shards shed before they reached the hub.
    pub shard_shed: u64,
}

/// The hub's state.
pub struct Hub {
    settings: Arc<Settings>,
    from_shards: Vec<Receiver<ToHub>>,
    commands: Receiver<Command>,
    peers: Vec<Peer>,
    links: HashMap<u32, Link>,
    subscribers: HashMap<u64, Vec<u32>>,
    firehose: Vec<u32>,
    pending: HashMap<(u32, u32), Pending>,
    shared: Shared,
    stats: HubStats,
    touched: Vec<u32>,
}

impl Hub {
    /// A hub reading these channels.
    pub fn new(
        settings: Arc<Settings>,
        from_shards: Vec<Receiver<ToHub>>,
        commands: Receiver<Command>,
        peers: Vec<Peer>,
        shared: Shared,
    ) -> Hub {
        Hub {
            settings,
            from_shards,
            commands,
            peers,
            links: HashMap::new(),
            subscribers: HashMap::new(),
            firehose: Vec::new(),
            pending: HashMap::new(),
            shared,
            stats: HubStats::default(),
            touched: Vec::new(),
        }
    }

    /// Runs until `stop` is set.
    pub fn run(mut self, stop: &AtomicBool) -> io::Result<()> {
        let inputs = self.from_shards.clone();
        let commands = self.commands.clone();
        let mut select = Select::new();
        for r in &inputs {
            select.recv(r);
        }
        let command_index = select.recv(&commands);
        while !stop.load(Ordering::Relaxed) {
            match select.ready_timeout(Duration::from_millis(10)) {
                Ok(i) if i == command_index => {
                    for command in commands.try_iter().take(DRAIN) {
                        self.command(command);
                    }
                }
                Ok(i) => {
                    for message in inputs[i].try_iter().take(DRAIN) {
                        self.on_shard_message(message);
                    }
                }
                Err(_) => {}
            }
            self.flush_events();
            self.signal_lag();
        }
        Ok(())
    }

    fn on_shard_message(&mut self, message: ToHub) {
        match message {
            ToHub::Transitions {
                since_us,
                transitions,
            } => {
                self.stats.transitions += transitions.len() as u64;
                for t in &transitions {
                    self.fan_out(t, since_us);
                }
            }
            ToHub::Snapshot {
                link,
                request,
                subscribe,
                presence,
            } => self.snapshot(link, request, subscribe, &presence),
            ToHub::Stats {
                link,
                request,
                counters,
            } => self.shard_stats(link, request, counters),
            ToHub::Shed(n) => {
                self.stats.shard_shed += n;
                for link in self.links.values_mut() {
                    if link.firehose || !link.users.is_empty() {
                        link.lagged_all = true;
                    }
                }
            }
        }
    }

    fn fan_out(&mut self, t: &Transition, since_us: u64) {
        let event = wire_event(t);
        let targets = self.subscribers.get(&t.user).into_iter().flatten();
        // A subscribed link with the firehose on is reached through the firehose: once.
        let subscribed = targets.map(|&id| (id, true));
        let firehose = self.firehose.iter().map(|&id| (id, false));
        for (id, by_subscription) in subscribed.chain(firehose) {
            let Some(link) = self.links.get_mut(&id) else {
                continue;
            };
            if by_subscription && link.firehose {
                continue;
            }
            if link.events.is_empty() {
                link.events_since_us = since_us;
                self.touched.push(id);
            }
            if link.events.push(event).is_err() {
                // The frame is full: queue it and start the next one.
                queue_events(link, &mut self.stats, self.settings.queue_depth);
                link.events_since_us = since_us;
                let pushed = link.events.push(event);
                debug_assert!(pushed.is_ok(), "one event fits an empty frame");
            }
            link.event_users.push(t.user);
        }
    }

    fn flush_events(&mut self) {
        for id in std::mem::take(&mut self.touched) {
            self.flush_link(id);
        }
    }

    /// Queues the link's open EVENTS frame (so what follows is ordered after it).
    fn flush_link(&mut self, id: u32) {
        if let Some(link) = self.links.get_mut(&id) {
            queue_events(link, &mut self.stats, self.settings.queue_depth);
        }
    }

    fn signal_lag(&mut self) {
        let depth = self.settings.queue_depth;
        for link in self.links.values_mut() {
            let owes_lag = link.lagged_all || !link.lagged.is_empty();
            if !owes_lag || link.queued() >= depth {
                continue;
            }
            let mut buf = BytesMut::new();
            if link.lagged_all {
                wire::encode_lagged_all(&mut buf);
            } else {
                let users: Vec<u64> = link.lagged.iter().copied().collect();
                if wire::encode_lagged(&mut buf, &users).is_err() {
                    buf.clear();
                    wire::encode_lagged_all(&mut buf);
                }
            }
            link.lagged_all = false;
            link.lagged.clear();
            link.send(buf, false, None);
            self.stats.lag_signals += 1;
        }
    }

    fn snapshot(&mut self, id: u32, request: u32, subscribe: bool, presence: &[(u64, Presence)]) {
        self.flush_link(id);
        let key = (id, request);
        let last = match self.pending.get_mut(&key) {
            Some(p) => {
                p.shards_left -= 1;
                p.shards_left == 0
            }
            None => return,
        };
        if last {
            self.pending.remove(&key);
        }
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        if subscribe {
            link.reserved -= presence.len().min(link.reserved);
            for &(user, _) in presence {
                if link.users.insert(user) {
                    self.subscribers.entry(user).or_default().push(id);
                }
            }
        }
        let records: Vec<wire::PresenceRecord> =
            presence.iter().map(|&(u, p)| wire_presence(u, p)).collect();
        send_presence(link, request, &records, last, self.settings.max_frame_len);
    }

    fn shard_stats(&mut self, id: u32, request: u32, counters: Arc<ShardStats>) {
        let key = (id, request);
        let Some(p) = self.pending.get_mut(&key) else {
            return;
        };
        p.counters.push(counters);
        p.shards_left -= 1;
        if p.shards_left > 0 {
            return;
        }
        let p = self.pending.remove(&key).expect("present");
        let json = self.stats_json(p.counters);
        if let Some(link) = self.links.get_mut(&id) {
            let mut buf = BytesMut::new();
            match wire::encode_stats_reply(&mut buf, request, &json) {
                Ok(()) => link.send(buf, true, None),
                Err(e) => link.error(request, wire::ErrorCode::Internal, &e.to_string()),
            }
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Open { link, out } => {
                self.links.insert(
                    link,
                    Link {
                        out,
                        users: HashSet::new(),
                        reserved: 0,
                        firehose: false,
                        events: wire::EventsWriter::new(self.settings.max_frame_len as u32)
                            .expect("link.max_frame_len is validated at start"),
                        event_users: Vec::new(),
                        events_since_us: 0,
                        lagged: HashSet::new(),
                        lagged_all: false,
                    },
                );
            }
            Command::Close { link } => self.close(link),
            Command::Subscribe {
                link,
                request,
                users,
            } => self.ask_shards(link, request, users, true),
            Command::Query {
                link,
                request,
                users,
            } => self.ask_shards(link, request, users, false),
            Command::Unsubscribe {
                link: id,
                request,
                users,
            } => {
                let Some(link) = self.links.get_mut(&id) else {
                    return;
                };
                for user in users {
                    if link.users.remove(&user) {
                        unsubscribe(&mut self.subscribers, user, id);
                    }
                }
                link.ack(request);
            }
            Command::Firehose {
                link: id,
                request,
                on,
            } => {
                let Some(link) = self.links.get_mut(&id) else {
                    return;
                };
                link.firehose = on;
                self.firehose.retain(|&l| l != id);
                if on {
                    self.firehose.push(id);
                }
                link.ack(request);
            }
            Command::Stats { link, request } => {
                if !self.links.contains_key(&link) {
                    return;
                }
                self.pending.insert(
                    (link, request),
                    Pending {
                        shards_left: self.peers.len(),
                        counters: Vec::new(),
                    },
                );
                for peer in &self.peers {
                    send_request(peer, Request::Stats { link, request });
                }
            }
        }
    }

    fn ask_shards(&mut self, id: u32, request: u32, users: Vec<u64>, subscribe: bool) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        if subscribe {
            let total = link.users.len() + link.reserved + users.len();
            if total > self.settings.max_subscriptions {
                link.error(
                    request,
                    wire::ErrorCode::SubscriptionLimit,
                    &format!(
                        "subscribing to {} more users would pass link.max_subscriptions ({})",
                        users.len(),
                        self.settings.max_subscriptions
                    ),
                );
                return;
            }
            link.reserved += users.len();
        }
        let shards = self.peers.len();
        let mut groups: Vec<Vec<u64>> = vec![Vec::new(); shards];
        for user in users {
            groups[owner(user, shards)].push(user);
        }
        let asked = groups.iter().filter(|g| !g.is_empty()).count();
        if asked == 0 {
            send_presence(link, request, &[], true, self.settings.max_frame_len);
            return;
        }
        self.pending.insert(
            (id, request),
            Pending {
                shards_left: asked,
                counters: Vec::new(),
            },
        );
        for (shard, users) in groups.into_iter().enumerate() {
            if !users.is_empty() {
                let request = Request::Snapshot {
                    link: id,
                    request,
                    subscribe,
                    users,
                };
                send_request(&self.peers[shard], request);
            }
        }
    }

    fn close(&mut self, id: u32) {
        let Some(link) = self.links.remove(&id) else {
            return;
        };
        for user in link.users {
            unsubscribe(&mut self.subscribers, user, id);
        }
        self.firehose.retain(|&l| l != id);
        self.pending.retain(|&(l, _), _| l != id);
    }

    fn stats_json(&self, counters: Vec<Arc<ShardStats>>) -> String {
        let mut shards: Vec<ShardStats> = counters.iter().map(|c| (**c).clone()).collect();
        shards.sort_by_key(|c| c.shard);
        let latency_us = {
            let h = self
                .shared
                .latency
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            LatencySummary {
                p50: h.value_at_quantile(0.5),
                p99: h.value_at_quantile(0.99),
                max: h.max(),
                count: h.len(),
            }
        };
        let s = &self.stats;
        let auth = match &*self.shared.keys.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(keys) => keys.stats(),
            None => AuthStats::default(),
        };
        let stats = Stats {
            auth,
            shards,
            link: LinkStats {
                links: self.links.len() as u64,
                subscribed_users: self.subscribers.len() as u64,
                firehose_links: self.firehose.len() as u64,
                transitions: s.transitions,
                events_sent: s.events_sent,
                events_dropped: s.events_dropped,
                lag_signals: s.lag_signals,
                shard_shed: s.shard_shed,
                links_refused: self.shared.links_refused.load(Ordering::Relaxed),
                links_unauthorized: self.shared.links_unauthorized.load(Ordering::Relaxed),
                latency_us,
            },
        };
        stats.to_json().expect("the stats schema serialises")
    }
}

impl Link {
    fn queued(&self) -> usize {
        self.out.queued.load(Ordering::Relaxed)
    }

    fn send(&self, frame: BytesMut, completes: bool, since_us: Option<u64>) {
        self.out.queued.fetch_add(1, Ordering::Relaxed);
        let sent = self.out.tx.send(Outgoing {
            frame: frame.freeze(),
            completes,
            since_us,
        });
        if sent.is_err() {
            // The connection task is gone; its Close command is on its way.
            self.out.queued.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn ack(&self, request: u32) {
        let mut buf = BytesMut::new();
        if wire::encode_ack(&mut buf, request).is_ok() {
            self.send(buf, true, None);
        }
    }

    fn error(&self, request: u32, code: wire::ErrorCode, message: &str) {
        let mut buf = BytesMut::new();
        wire::encode_error(&mut buf, request, code, message);
        self.send(buf, true, None);
    }
}

/// Queues the link's open EVENTS frame, or drops it and remembers its users if the link's
/// queue is full.
fn queue_events(link: &mut Link, stats: &mut HubStats, queue_depth: usize) {
    let Some(frame) = link.events.flush() else {
        return;
    };
    let users = std::mem::take(&mut link.event_users);
    let n = users.len() as u64;
    if link.queued() >= queue_depth {
        stats.events_dropped += n;
        if !link.lagged_all {
            link.lagged.extend(users);
            if link.lagged.len() > LAG_USERS_LIMIT {
                link.lagged_all = true;
                link.lagged.clear();
            }
        }
        return;
    }
    stats.events_sent += n;
    link.send(frame, false, Some(link.events_since_us));
}

fn send_presence(
    link: &Link,
    request: u32,
    records: &[wire::PresenceRecord],
    last: bool,
    max_frame_len: usize,
) {
    let mut buf = BytesMut::new();
    match wire::encode_presence(&mut buf, request, records, last, max_frame_len as u32) {
        Ok(0) => {}
        Ok(_) => link.send(buf, last, None),
        Err(e) => link.error(request, wire::ErrorCode::Internal, &e.to_string()),
    }
}

fn send_request(peer: &Peer, request: Request) {
    // The hub may wait for a shard's inbox: shards drain it every round and never block on
    // the hub, so this cannot deadlock.
    if peer.inbox.send(Inbox::Request(request)).is_ok() {
        let _ = peer.waker.wake();
    }
}

fn unsubscribe(subscribers: &mut HashMap<u64, Vec<u32>>, user: u64, link: u32) {
    if let Some(links) = subscribers.get_mut(&user) {
        links.retain(|&l| l != link);
        if links.is_empty() {
            subscribers.remove(&user);
        }
    }
}

fn wire_event(t: &Transition) -> wire::Event {
    wire::Event {
        user: t.user,
        state: wire_state(t.state),
        prev: wire_state(t.prev),
        cause: match t.cause {
            presenced_core::event::Cause::FirstHeartbeat => wire::WireCause::FirstHeartbeat,
            presenced_core::event::Cause::StateChange => wire::WireCause::StateChange,
            presenced_core::event::Cause::Logout => wire::WireCause::Logout,
            presenced_core::event::Cause::Timeout => wire::WireCause::Timeout,
            presenced_core::event::Cause::Inactivity => wire::WireCause::Inactivity,
        },
        at_ms: t.at_ms,
        version: t.version,
    }
}

fn wire_state(s: presenced_core::event::PublicState) -> wire::WireState {
    match s {
        presenced_core::event::PublicState::Offline => wire::WireState::Offline,
        presenced_core::event::PublicState::Online => wire::WireState::Online,
        presenced_core::event::PublicState::Idle => wire::WireState::Idle,
    }
}

fn wire_presence(user: u64, p: Presence) -> wire::PresenceRecord {
    wire::PresenceRecord {
        user,
        state: wire_state(p.state),
        last_seen_ms: p.last_seen_ms,
        version: p.version,
    }
}
