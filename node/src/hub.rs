//! The hub: who is subscribed to whom, and the frames each gateway link is owed. A state
//! machine in quinn-proto's manner: the shards' messages (`handle_shard`) and the links'
//! commands (`handle_command`) go in; requests for the shards (`poll_request`) and frames for
//! the links (`poll_transmit`) come out. It never blocks, reads a clock or touches a channel;
//! the daemon's hub thread moves the messages and the link tasks write the frames.
//!
//! **Subscribe is atomic with its snapshot.** The hub asks the owning shards for the users'
//! presence; a shard answers down the same FIFO as its transitions, and the hub registers the
//! subscription when it reads the answer. Transitions before the answer are in the snapshot;
//! those after it reach the new subscriber. A link subscribed to a user many times, or both to
//! the user and to everyone (the firehose), gets each transition once.
//!
//! **The hub never waits for a gateway.** It counts the bytes queued for each link and not
//! yet written (`Command::Written` gives them back); an EVENTS frame that would take a link
//! past `queue_bytes` is dropped, and the link is owed a LAGGED frame naming the users to
//! re-query.
//!
//! **A LAGGED frame is always deliverable.** It is not held to `queue_bytes`: a link that
//! loses events is sent its LAGGED frame at once (at most [`LAGGED_MAX_BYTES`] above the
//! limit), so even a gateway that has stopped reading finds it in order when it reads again.
//! One is queued at a time: events lost after it are owed in the next, sent once the first is
//! written.
//!
//! **A link keeps the limits its WELCOME announced.** `Command::Open` carries them (frame
//! length, subscriptions), and a reload (SIGHUP) does not change them under an open link: its
//! gateway was promised them. Only the queue limit, which no gateway is told, is the hub's
//! own; `Command::QueueBytes` replaces it for every link at once.
//!
//! **Back-off is daemon-wide.** Each shard says which heartbeat interval it asks for
//! (`ToHub::Pace`, [`crate::backoff`]); the hub tells every shard the longest of them
//! (`Request::Pace`) so that all extend their deadlines alike, and asks every gateway for it
//! with a PACE frame on each version-3 link (and on each new one while it is not the normal
//! one): a gateway paces all its users at one interval, whichever shard owns them (SPEC.md
//! § P6.13). A longer interval goes to the gateways only once every shard has said its
//! deadlines stretch for it (`ToHub::Paced`), so no gateway beats at it before they do; a
//! shorter one goes at once, each shard keeping the longer deadlines one more timeout.
//!
//! **Several hubs share the links** (`link.hubs`): each serves its own links and reads every
//! shard's transitions, so each works out the same pace; only hub 0 tells the shards
//! (`HubConfig::index`), so a shard hears each change once. A STATS answer merges this hub's
//! figures with the others' latest shares ([`share`], `Hub::handle_peers`). In a cluster each
//! hub has its own [`Cluster`], fed the same etcd news, and decides for its own links.
//!
//! **The daemon asks too.** Its metrics endpoint gathers the same figures as STATS
//! (`Command::Scrape`), answered as a typed [`Stats`] through `poll_scrape` rather than a frame;
//! the figures of every open link (`LinkStats::per_link`) are kept here, where the frames are
//! counted.

pub mod share;

use crate::bus::{owner, Request, ToHub};
use crate::cluster::{Cluster, ClusterConfig, ClusterEvent, EtcdEvent, Roles};
use bytes::{Bytes, BytesMut};
use presenced_core::cache::prefetch_at;
use presenced_core::clock::Now;
use presenced_core::event::{Cause, Presence, PublicState, Transition};
use presenced_wire::link as wire;
use presenced_wire::stats::{
    AuthStats, ClusterStats, LatencySummary, LinkStats, PerLinkStats, ShardRole, ShardStats,
    StateStats, Stats,
};
use share::{ClusterCounts, HubShare};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// The hub's maps, looked up once per transition and per subscriber: foldhash, seeded per
/// process (SipHash, std's default, cost a fifth of the hub's time in a fan-out profile).
type Map<K, V> = HashMap<K, V, foldhash::fast::RandomState>;
type Set<K> = HashSet<K, foldhash::fast::RandomState>;
use std::net::SocketAddr;

/// Users remembered per lagging link before the hub asks it to re-query everything (a LAGGED
/// frame of this many fits the smallest allowed frame limit, 64 KiB).
pub const LAG_USERS_LIMIT: usize = 8_000;
const _: () = assert!(
    wire::LAGGED_HEADER_LEN + LAG_USERS_LIMIT * wire::USER_ID_LEN
        <= wire::MIN_MAX_FRAME_LEN as usize
);

/// What a queued frame costs beyond its bytes (its handle, its place in the link's channel),
/// counted with them against `queue_bytes`.
pub const FRAME_OVERHEAD_BYTES: usize = 64;

/// The most a LAGGED frame takes in a link's queue, overhead included: the room it has above
/// `queue_bytes`.
pub const LAGGED_MAX_BYTES: usize = wire::LENGTH_PREFIX_LEN
    + wire::LAGGED_HEADER_LEN
    + LAG_USERS_LIMIT * wire::USER_ID_LEN
    + FRAME_OVERHEAD_BYTES;

/// The daemon's own stats requests (`Command::Scrape`) awaiting the shards' answers; a newer
/// one beyond it drops the oldest (whose asker has given up: the metrics endpoint asks one at a
/// time and stops waiting after a timeout).
pub const SCRAPES_PENDING: usize = 4;

/// The hub's shape and its own limit; each link's other limits come with `Command::Open`.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// Shards in the daemon (≥ 1).
    pub shards: usize,
    /// This hub's index among the daemon's hubs (`link.hubs`); hub 0 alone paces the shards
    /// and gives the daemon's per-transition counters.
    pub index: usize,
    /// Bytes queued for one link (frames and their overhead) past which it loses events
    /// (`link.queue_bytes`; replaced by `Command::QueueBytes`).
    pub queue_bytes: usize,
    /// This member's cluster (`[cluster]`), if it is a member of one: it then pushes only the
    /// transitions of the users it is primary for ([`crate::cluster`]).
    pub cluster: Option<ClusterConfig>,
}

/// What the server's part of STATS is: figures the link tasks and the store keep.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Datagram authentication.
    pub auth: AuthStats,
    /// Durable state.
    pub state: StateStats,
    /// Connections refused because `link.max_links` were open.
    pub links_refused: u64,
    /// Links closed at HELLO for a bad name or token.
    pub links_unauthorized: u64,
    /// Links closed for taking nothing for `link.stall_timeout`.
    pub links_stalled: u64,
    /// Transition latency, receipt to frame written.
    pub latency_us: LatencySummary,
}

/// What a link's task tells the hub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// A link passed HELLO.
    Open {
        /// The link's id.
        link: u32,
        /// The protocol version it speaks.
        version: wire::Version,
        /// The name it gave in HELLO.
        name: String,
        /// The gateway's address.
        peer: SocketAddr,
        /// The limits its WELCOME announced, kept for the link's life: no frame sent to it is
        /// longer than `max_frame_len` (at least `wire::MIN_MAX_FRAME_LEN`: the settings
        /// ensure it), and it may be subscribed to `max_subscriptions` users.
        limits: wire::Limits,
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
    /// STATS, with the server's figures as of the request.
    Stats {
        /// The link.
        link: u32,
        /// Its request id.
        request: u32,
        /// The server's part of the answer.
        server: Box<ServerStats>,
    },
    /// The daemon's own STATS (its metrics endpoint), with the server's figures as of the
    /// request; answered through [`Hub::poll_scrape`].
    Scrape {
        /// The daemon's request id.
        request: u32,
        /// The server's part of the answer.
        server: Box<ServerStats>,
    },
    /// MAP: the revision of the member map the gateway holds.
    Map {
        /// The link.
        link: u32,
        /// Its request id.
        request: u32,
        /// The gateway's revision (0: none).
        revision: u64,
    },
    /// The link's task wrote frames the hub queued for it.
    Written {
        /// The link.
        link: u32,
        /// What they took in the queue: the sum of [`Outgoing::queued_bytes`].
        bytes: usize,
    },
    /// The link closed: its subscriptions end.
    Close {
        /// The link.
        link: u32,
    },
    /// A new `link.queue_bytes` (SIGHUP), for every link from the next frame. Nothing already
    /// queued is taken back: a link with more queued than a lowered limit loses events (and
    /// is owed LAGGED) until its gateway has read below it.
    QueueBytes {
        /// Bytes queued for one link past which it loses events (≥ 1).
        bytes: usize,
    },
}

/// A frame for one link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// The encoded frame, length prefix included.
    pub frame: Bytes,
    /// This frame ends the answer to a request (the link's in-flight count drops).
    pub completes: bool,
    /// For EVENTS frames: monotonic µs at which the earliest datagram behind them was received.
    pub since_us: Option<u64>,
}

impl Outgoing {
    /// What the frame takes in its link's queue: its bytes and [`FRAME_OVERHEAD_BYTES`].
    pub fn queued_bytes(&self) -> usize {
        self.frame.len() + FRAME_OVERHEAD_BYTES
    }
}

/// Counters of the hub.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
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
    /// PACE frames sent to links.
    pub pace_frames: u64,
    /// Transitions not pushed because this member was not the user's primary.
    pub not_primary: u64,
    /// In a cluster, per shard: its transitions pushed as primary and kept as a replica.
    pub shard_roles: Vec<ShardRole>,
    /// Subscribed users named in LAGGED frames because this member became their primary.
    pub gained: u64,
    /// MAP requests answered with this member's map because the gateway held another.
    pub stale_maps: u64,
    /// MEMBERS frames queued to links.
    pub members_frames: u64,
    /// MEMBERS frames not sent because the map did not fit the link's frame limit.
    pub members_unsent: u64,
}

struct Link {
    /// The protocol version the link speaks (WARMING exists from version 2).
    version: wire::Version,
    /// The limits its WELCOME announced.
    limits: wire::Limits,
    /// Its name in HELLO and its address, for the per-link figures.
    name: String,
    peer: SocketAddr,
    /// Its share of the hub's counters.
    events_sent: u64,
    events_dropped: u64,
    lag_signals: u64,
    users: Set<u64>,
    /// Subscriptions requested and not yet registered (counted against the limit).
    reserved: usize,
    firehose: bool,
    /// Bytes ever queued to the link, and ever written by its task (the difference is what
    /// it holds now).
    queued_total: u64,
    written_total: u64,
    /// While a LAGGED frame is queued and not yet written: `queued_total` once it is written.
    lag_in_queue_until: Option<u64>,
    /// The open EVENTS frame and the users in it.
    events: wire::EventsWriter,
    event_users: Vec<u64>,
    events_since_us: u64,
    lagged: Set<u64>,
    lagged_all: bool,
}

impl Link {
    fn owes_lag(&self) -> bool {
        self.lagged_all || !self.lagged.is_empty()
    }

    /// Bytes queued and not yet written.
    fn queued(&self) -> u64 {
        self.queued_total - self.written_total
    }
}

struct Pending {
    shards_left: usize,
    /// For STATS: the server's figures and the shards' answers so far.
    server: Option<Box<ServerStats>>,
    shard_stats: Vec<ShardStats>,
}

/// The hub (see the module docs).
pub struct Hub {
    /// Shards in the daemon.
    shards: usize,
    /// This hub's index among the daemon's hubs.
    index: usize,
    /// The other hubs' latest shares, merged into every STATS answer.
    peers: Vec<Arc<HubShare>>,
    links: Map<u32, Link>,
    subscribers: Map<u64, Vec<u32>>,
    firehose: Vec<u32>,
    pending: Map<(u32, u32), Pending>,
    /// The daemon's stats requests awaiting shards, by request id (at most
    /// [`SCRAPES_PENDING`]), and those answered, for `poll_scrape`.
    scrapes: BTreeMap<u32, Pending>,
    scraped: VecDeque<(u32, Box<Stats>)>,
    /// Links with an open EVENTS frame.
    touched: Vec<u32>,
    requests: VecDeque<(usize, Request)>,
    out: Outbox,
    /// The interval each shard asks for, ms (0: the normal one), and the longest of them: the
    /// one the shards are asked to stretch their deadlines for.
    paces: Vec<u32>,
    asked_ms: u32,
    /// The interval each shard has stretched its deadlines for (`ToHub::Paced`), ms.
    paced: Vec<u32>,
    /// The interval asked of the gateways, ms: a shorter one at once, a longer one once every
    /// shard has stretched its deadlines for it.
    pace_ms: u32,
    /// This member's view of its cluster, if it is a member of one.
    cluster: Option<Cluster>,
}

/// What the hub owes the links: the frames queued for them, and which are owed a LAGGED frame.
struct Outbox {
    /// Bytes queued for one link past which it loses events (`Command::QueueBytes` replaces
    /// it).
    queue_bytes: usize,
    transmits: VecDeque<(u32, Outgoing)>,
    /// Links owed a LAGGED frame, checked when the one they have queued is written.
    owing: Vec<u32>,
    stats: HubStats,
}

impl Outbox {
    /// Queues a frame for a link and counts it against the link's queue.
    fn send(
        &mut self,
        id: u32,
        link: &mut Link,
        frame: BytesMut,
        completes: bool,
        since_us: Option<u64>,
    ) {
        let out = Outgoing {
            frame: frame.freeze(),
            completes,
            since_us,
        };
        link.queued_total += out.queued_bytes() as u64;
        self.transmits.push_back((id, out));
    }

    /// Queues the link's open EVENTS frame, or drops it and remembers its users if it would
    /// take the link's queue past `queue_bytes` (an empty queue takes any frame) or the link
    /// is owed a LAGGED frame not yet queued (no transition goes ahead of it).
    fn flush_events(&mut self, id: u32, link: &mut Link) {
        let Some(frame) = link.events.flush() else {
            return;
        };
        // The users' list keeps its room for the next frame.
        let n = link.event_users.len() as u64;
        let queued = link.queued();
        let after = queued + (frame.len() + FRAME_OVERHEAD_BYTES) as u64;
        if link.owes_lag() || (queued > 0 && after > self.queue_bytes as u64) {
            self.stats.events_dropped += n;
            link.events_dropped += n;
            if !link.owes_lag() {
                self.owing.push(id);
            }
            if !link.lagged_all {
                link.lagged.extend(link.event_users.drain(..));
                if link.lagged.len() > LAG_USERS_LIMIT {
                    link.lagged_all = true;
                    link.lagged.clear();
                }
            }
            link.event_users.clear();
            return;
        }
        link.event_users.clear();
        self.stats.events_sent += n;
        link.events_sent += n;
        let since_us = Some(link.events_since_us);
        self.send(id, link, frame, false, since_us);
    }
}

impl Hub {
    /// A hub with no link. Panics without a shard or with a queue depth of 0 (the settings
    /// refuse both).
    pub fn new(config: HubConfig) -> Hub {
        assert!(config.shards >= 1, "at least one shard");
        assert!(config.queue_bytes >= 1, "room for a frame");
        Hub {
            shards: config.shards,
            index: config.index,
            peers: Vec::new(),
            links: Map::default(),
            subscribers: Map::default(),
            firehose: Vec::new(),
            pending: Map::default(),
            scrapes: BTreeMap::new(),
            scraped: VecDeque::new(),
            touched: Vec::new(),
            requests: VecDeque::new(),
            out: Outbox {
                queue_bytes: config.queue_bytes,
                transmits: VecDeque::new(),
                owing: Vec::new(),
                stats: HubStats {
                    shard_roles: if config.cluster.is_some() {
                        vec![ShardRole::default(); config.shards]
                    } else {
                        Vec::new()
                    },
                    ..HubStats::default()
                },
            },
            paces: vec![0; config.shards],
            asked_ms: 0,
            paced: vec![0; config.shards],
            pace_ms: 0,
            cluster: config.cluster.map(Cluster::new),
        }
    }

    /// What the daemon's etcd thread learnt, at `now` (ignored outside a cluster).
    pub fn handle_etcd(&mut self, now: Now, event: EtcdEvent) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let (before, revision) = (cluster.roles().clone(), cluster.map().revision);
        cluster.handle_etcd(now, event);
        self.cluster_changed(&before, revision);
    }

    /// Time passed: a lease about to lapse, a member turning warm (see
    /// [`Hub::poll_timeout`]).
    pub fn handle_timeout(&mut self, now: Now) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let (before, revision) = (cluster.roles().clone(), cluster.map().revision);
        cluster.handle_timeout(now);
        self.cluster_changed(&before, revision);
    }

    /// When the hub next needs `handle_timeout`, monotonic µs (`None`: only on news).
    pub fn poll_timeout(&self, now: Now) -> Option<u64> {
        self.cluster.as_ref().and_then(|c| c.poll_timeout(now))
    }

    /// The next cluster event worth a log line.
    pub fn poll_cluster_event(&mut self) -> Option<ClusterEvent> {
        self.cluster.as_mut().and_then(Cluster::poll_event)
    }

    /// This member's view of its cluster, if it is a member of one.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.cluster.as_ref()
    }

    /// Queues a MEMBERS frame with this member's map for the link, if its version has MEMBERS
    /// and this daemon is a cluster member (SPEC.md § P6.14).
    fn send_members(&mut self, id: u32) {
        let (Some(cluster), Some(link)) = (&self.cluster, self.links.get_mut(&id)) else {
            return;
        };
        if !link.version.has(wire::FrameType::Members) {
            return;
        }
        let mut frame = BytesMut::new();
        match wire::encode_members(&mut frame, cluster.map(), link.limits.max_frame_len) {
            Ok(()) => {
                self.out.stats.members_frames += 1;
                self.out.send(id, link, frame, false, None);
            }
            // A map too large for the link's frames (more members than fit its limit): the
            // gateway keeps the map it has.
            Err(_) => self.out.stats.members_unsent += 1,
        }
    }

    /// After news or time in a cluster: every link is sent the member map again when it
    /// changed or the roles did (a member turning warm, this member stepping down or back), the
    /// links' open EVENTS frames first, so nothing pushed under the old roles follows the
    /// news. Each subscribed user this member became the primary of is owed a LAGGED frame at
    /// the links subscribed to it here (they may have missed transitions while another member
    /// pushed them, or none did), and a firehose link one naming everyone.
    fn cluster_changed(&mut self, before: &Roles, revision_before: u64) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        let after = cluster.roles().clone();
        let differs = after.differs(before);
        if !differs && cluster.map().revision == revision_before {
            return;
        }
        let ids: Vec<u32> = self.links.keys().copied().collect();
        for &id in &ids {
            self.flush_link(id);
            self.send_members(id);
        }
        if !differs {
            return;
        }
        for (&user, links) in &self.subscribers {
            if before.is_primary(user) || !after.is_primary(user) {
                continue;
            }
            self.out.stats.gained += 1;
            for id in links {
                let Some(link) = self.links.get_mut(id) else {
                    continue;
                };
                if link.firehose || link.lagged_all {
                    continue;
                }
                link.lagged.insert(user);
                if link.lagged.len() > LAG_USERS_LIMIT {
                    link.lagged_all = true;
                    link.lagged.clear();
                }
                self.out.owing.push(*id);
            }
        }
        for &id in &self.firehose {
            if let Some(link) = self.links.get_mut(&id) {
                link.lagged_all = true;
                link.lagged.clear();
                self.out.owing.push(id);
            }
        }
    }

    /// One message from a shard, in that shard's order.
    pub fn handle_shard(&mut self, message: ToHub) {
        match message {
            ToHub::Transitions(batch) => {
                self.out.stats.transitions += batch.len() as u64;
                // The users' subscriber lists lie apart on the heap: load a batch's at once
                // (the lookups do not wait on each other) before fanning out. A lone
                // transition's would only be looked up twice.
                if batch.len() > 1 {
                    for t in batch.items() {
                        if let Some(links) = self.subscribers.get(&t.user) {
                            prefetch_at(links.as_ptr().cast::<u8>());
                        }
                    }
                }
                for t in batch.items() {
                    self.fan_out(t, batch.since_us);
                }
            }
            ToHub::Snapshot {
                link,
                request,
                subscribe,
                presence,
                warming,
            } => self.snapshot(link, request, subscribe, &presence, warming),
            ToHub::Stats {
                link,
                request,
                stats,
            } => self.shard_stats(link, request, *stats),
            ToHub::Pace { shard, interval_ms } => {
                if let Some(pace) = self.paces.get_mut(shard) {
                    *pace = interval_ms;
                }
                let asked = self.paces.iter().copied().max().unwrap_or(0);
                if asked != self.asked_ms {
                    self.asked_ms = asked;
                    // Every hub reads every shard's pace: one tells the shards.
                    for shard in (0..self.shards).filter(|_| self.index == 0) {
                        let request = Request::Pace { interval_ms: asked };
                        self.requests.push_back((shard, request));
                    }
                }
                self.pace_links();
            }
            ToHub::Paced { shard, interval_ms } => {
                if let Some(paced) = self.paced.get_mut(shard) {
                    *paced = interval_ms;
                }
                self.pace_links();
            }
            ToHub::Shed(n) => {
                self.out.stats.shard_shed += n;
                for (&id, link) in &mut self.links {
                    if link.firehose || !link.users.is_empty() {
                        link.lagged_all = true;
                        self.out.owing.push(id);
                    }
                }
            }
        }
    }

    /// One command from a link's task.
    pub fn handle_command(&mut self, command: Command) {
        match command {
            Command::Open {
                link,
                version,
                name,
                peer,
                limits,
            } => {
                let events = wire::EventsWriter::new(limits.max_frame_len)
                    .expect("a frame limit of at least 64 KiB holds an event");
                self.links.insert(
                    link,
                    Link {
                        version,
                        limits,
                        name,
                        peer,
                        events_sent: 0,
                        events_dropped: 0,
                        lag_signals: 0,
                        users: Set::default(),
                        reserved: 0,
                        firehose: false,
                        queued_total: 0,
                        written_total: 0,
                        lag_in_queue_until: None,
                        events,
                        event_users: Vec::new(),
                        events_since_us: 0,
                        lagged: Set::default(),
                        lagged_all: false,
                    },
                );
                if self.pace_ms != 0 {
                    self.send_pace(link);
                }
                self.send_members(link);
            }
            Command::Map {
                link,
                request,
                revision,
            } => {
                let held = self.cluster.as_ref().map(|c| c.map().revision);
                if held.is_some_and(|held| held != revision) {
                    self.out.stats.stale_maps += 1;
                    self.send_members(link);
                }
                self.ack(link, request);
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
                self.ack(id, request);
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
                self.ack(id, request);
            }
            Command::Stats {
                link,
                request,
                server,
            } => {
                if !self.links.contains_key(&link) {
                    return;
                }
                self.pending.insert(
                    (link, request),
                    Pending {
                        shards_left: self.shards,
                        server: Some(server),
                        shard_stats: Vec::with_capacity(self.shards),
                    },
                );
                for shard in 0..self.shards {
                    let link = Some(link);
                    self.requests
                        .push_back((shard, Request::Stats { link, request }));
                }
            }
            Command::Scrape { request, server } => {
                while self.scrapes.len() >= SCRAPES_PENDING {
                    self.scrapes.pop_first();
                }
                self.scrapes.insert(
                    request,
                    Pending {
                        shards_left: self.shards,
                        server: Some(server),
                        shard_stats: Vec::with_capacity(self.shards),
                    },
                );
                for shard in 0..self.shards {
                    let link = None;
                    self.requests
                        .push_back((shard, Request::Stats { link, request }));
                }
            }
            Command::Written { link: id, bytes } => {
                if let Some(link) = self.links.get_mut(&id) {
                    // A task never reports more than it was given; if it did, the queue reads
                    // empty rather than negative.
                    link.written_total = (link.written_total + bytes as u64).min(link.queued_total);
                    if link
                        .lag_in_queue_until
                        .is_some_and(|until| link.written_total >= until)
                    {
                        link.lag_in_queue_until = None;
                        if link.owes_lag() {
                            self.out.owing.push(id);
                        }
                    }
                }
            }
            Command::QueueBytes { bytes } => {
                assert!(bytes >= 1, "room for a frame");
                self.out.queue_bytes = bytes;
            }
        }
    }

    /// The next request for a shard: `(shard, request)`.
    pub fn poll_request(&mut self) -> Option<(usize, Request)> {
        self.requests.pop_front()
    }

    /// The next frame for a link: `(link, frame)`. The open EVENTS frames of the messages
    /// handled so far are queued first (so a driver that polls after each batch of messages
    /// sends full frames), then the LAGGED frames owed to links with none queued.
    pub fn poll_transmit(&mut self) -> Option<(u32, Outgoing)> {
        if self.out.transmits.is_empty() {
            for id in std::mem::take(&mut self.touched) {
                self.flush_link(id);
            }
            self.signal_lag();
        }
        self.out.transmits.pop_front()
    }

    /// The next answer to the daemon's own stats request (`Command::Scrape`): `(request,
    /// stats)`, every open link in `per_link`.
    pub fn poll_scrape(&mut self) -> Option<(u32, Box<Stats>)> {
        self.scraped.pop_front()
    }

    /// The hub's counters.
    pub fn stats(&self) -> &HubStats {
        &self.out.stats
    }

    /// Links open.
    pub fn links(&self) -> usize {
        self.links.len()
    }

    fn fan_out(&mut self, t: &Transition, since_us: u64) {
        if let Some(cluster) = &self.cluster {
            let role = &mut self.out.stats.shard_roles[owner(t.user, self.shards)];
            if !cluster.is_primary(t.user) {
                role.replica += 1;
                self.out.stats.not_primary += 1;
                return;
            }
            role.primary += 1;
        }
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
                self.out.flush_events(id, link);
                link.events_since_us = since_us;
                let pushed = link.events.push(event);
                debug_assert!(pushed.is_ok(), "one event fits an empty frame");
            }
            link.event_users.push(t.user);
        }
    }

    /// Queues the link's open EVENTS frame (so what follows is ordered after it).
    fn flush_link(&mut self, id: u32) {
        if let Some(link) = self.links.get_mut(&id) {
            self.out.flush_events(id, link);
        }
    }

    fn signal_lag(&mut self) {
        let mut owing = std::mem::take(&mut self.out.owing);
        owing.sort_unstable();
        owing.dedup();
        for id in owing {
            let Some(link) = self.links.get_mut(&id) else {
                continue;
            };
            if !link.owes_lag() {
                continue;
            }
            if link.lag_in_queue_until.is_some() {
                // Checked again when the link's task reports that one written.
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
            self.out.send(id, link, buf, false, None);
            link.lag_in_queue_until = Some(link.queued_total);
            self.out.stats.lag_signals += 1;
            link.lag_signals += 1;
        }
    }

    fn snapshot(
        &mut self,
        id: u32,
        request: u32,
        subscribe: bool,
        presence: &[(u64, Presence)],
        warming: bool,
    ) {
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
        let mut buf = BytesMut::new();
        let max = link.limits.max_frame_len;
        // A version-1 link has no WARMING flag (its gateway would read a reserved bit).
        let warming = warming && link.version >= wire::Version::V2;
        match wire::encode_presence_v2(&mut buf, request, &records, last, warming, max) {
            Ok(0) => {}
            Ok(_) => self.out.send(id, link, buf, last, None),
            Err(e) => self.error(id, request, wire::ErrorCode::Internal, &e.to_string()),
        }
    }

    fn shard_stats(&mut self, link: Option<u32>, request: u32, stats: ShardStats) {
        let Some(id) = link else {
            let Some(p) = self.scrapes.get_mut(&request) else {
                return;
            };
            p.shard_stats.push(stats);
            p.shards_left -= 1;
            if p.shards_left == 0 {
                if let Some(p) = self.scrapes.remove(&request) {
                    let stats = Box::new(self.gather(p));
                    self.scraped.push_back((request, stats));
                }
            }
            return;
        };
        let key = (id, request);
        let Some(p) = self.pending.get_mut(&key) else {
            return;
        };
        p.shard_stats.push(stats);
        p.shards_left -= 1;
        if p.shards_left > 0 {
            return;
        }
        let Some(p) = self.pending.remove(&key) else {
            return;
        };
        let json = stats_json(self.gather(p));
        let mut buf = BytesMut::new();
        match wire::encode_stats_reply(&mut buf, request, &json) {
            Ok(()) => {
                if let Some(link) = self.links.get_mut(&id) {
                    self.out.send(id, link, buf, true, None);
                }
            }
            Err(e) => self.error(id, request, wire::ErrorCode::Internal, &e.to_string()),
        }
    }

    fn ask_shards(&mut self, id: u32, request: u32, users: Vec<u64>, subscribe: bool) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        if subscribe {
            let total = link.users.len() + link.reserved + users.len();
            let max = link.limits.max_subscriptions as usize;
            if total > max {
                let message = format!(
                    "subscribing to {} more users would pass link.max_subscriptions ({max})",
                    users.len(),
                );
                self.error(id, request, wire::ErrorCode::SubscriptionLimit, &message);
                return;
            }
            link.reserved += users.len();
        }
        let shards = self.shards;
        let mut groups: Vec<Vec<u64>> = vec![Vec::new(); shards];
        for user in users {
            groups[owner(user, shards)].push(user);
        }
        let asked = groups.iter().filter(|g| !g.is_empty()).count();
        if asked == 0 {
            let mut buf = BytesMut::new();
            let max = link.limits.max_frame_len;
            if wire::encode_presence(&mut buf, request, &[], true, max).is_ok() {
                self.out.send(id, link, buf, true, None);
            }
            return;
        }
        self.pending.insert(
            (id, request),
            Pending {
                shards_left: asked,
                server: None,
                shard_stats: Vec::new(),
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
                self.requests.push_back((shard, request));
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
        self.out.transmits.retain(|&(l, _)| l != id);
    }

    fn ack(&mut self, id: u32, request: u32) {
        let mut buf = BytesMut::new();
        if wire::encode_ack(&mut buf, request).is_ok() {
            if let Some(link) = self.links.get_mut(&id) {
                self.out.send(id, link, buf, true, None);
            }
        }
    }

    fn error(&mut self, id: u32, request: u32, code: wire::ErrorCode, message: &str) {
        let mut buf = BytesMut::new();
        // SPEC.md § P4: the message starts with the code's name.
        wire::encode_error(
            &mut buf,
            request,
            code,
            &wire::error_message(code.name(), message),
        );
        if let Some(link) = self.links.get_mut(&id) {
            self.out.send(id, link, buf, true, None);
        }
    }

    /// This hub's own figures, for the other hubs' STATS answers (see [`share`]).
    pub fn share(&self) -> HubShare {
        let s = &self.out.stats;
        HubShare {
            hub: self.index,
            link: LinkStats {
                links: self.links.len() as u64,
                subscribed_users: self.subscribers.len() as u64,
                firehose_links: self.firehose.len() as u64,
                transitions: s.transitions,
                events_sent: s.events_sent,
                events_dropped: s.events_dropped,
                lag_signals: s.lag_signals,
                shard_shed: s.shard_shed,
                per_link: self.per_link(),
                backoff_active: self.pace_ms != 0,
                pace_interval_ms: u64::from(self.pace_ms),
                pace_frames: s.pace_frames,
                ..LinkStats::default()
            },
            cluster: ClusterCounts {
                stale_maps: s.stale_maps,
                gained: s.gained,
                not_primary: s.not_primary,
                shards: s.shard_roles.clone(),
            },
        }
    }

    /// The other hubs' latest shares (each once, this hub's own left out), merged into the
    /// STATS answers from now on.
    pub fn handle_peers(&mut self, peers: Vec<Arc<HubShare>>) {
        self.peers = peers;
    }

    /// Everything STATS reports, from the shards' answers, the server's figures and every
    /// hub's share.
    fn gather(&self, pending: Pending) -> Stats {
        let server = pending.server.unwrap_or_default();
        let mut shards = pending.shard_stats;
        shards.sort_by_key(|s| s.shard);
        let own = self.share();
        let peers = self.peers.iter().map(|p| &**p);
        let (link, counts) = share::merge(std::iter::once(&own).chain(peers));
        Stats {
            auth: server.auth,
            state: server.state,
            shards,
            link: LinkStats {
                links_refused: server.links_refused,
                links_unauthorized: server.links_unauthorized,
                links_stalled: server.links_stalled,
                latency_us: server.latency_us,
                ..link
            },
            cluster: self.cluster.as_ref().map(|c| {
                let cs = c.stats();
                ClusterStats {
                    map: c.map().clone(),
                    role: c.role().name().to_owned(),
                    maps: cs.maps,
                    bad_values: cs.bad_values,
                    etcd_errors: cs.etcd_errors,
                    step_downs: cs.step_downs,
                    takeovers: cs.takeovers,
                    stale_maps: counts.stale_maps,
                    not_primary: counts.not_primary,
                    gained: counts.gained,
                    shards: counts.shards,
                }
            }),
        }
    }

    /// Asks the gateways for the interval the shards were asked for, if it changed: a shorter
    /// one at once (each shard keeps the longer deadlines for one more timeout), a longer one
    /// once every shard has stretched its deadlines for it (SPEC.md § P6.13: a device's timeout
    /// stretches from before its gateway can hear of the longer interval).
    fn pace_links(&mut self) {
        let asked = self.asked_ms;
        let ready = asked < self.pace_ms || self.paced.iter().all(|&p| p >= asked);
        if asked == self.pace_ms || !ready {
            return;
        }
        self.pace_ms = asked;
        let ids: Vec<u32> = self.links.keys().copied().collect();
        for id in ids {
            self.send_pace(id);
        }
    }

    /// Queues a PACE frame with the interval asked now for the link, if its version has PACE
    /// (SPEC.md § P6.13; links of versions 1 and 2 are never paced).
    fn send_pace(&mut self, id: u32) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        if !link.version.has(wire::FrameType::Pace) {
            return;
        }
        let mut frame = BytesMut::new();
        wire::encode_pace(&mut frame, self.pace_ms);
        self.out.stats.pace_frames += 1;
        self.out.send(id, link, frame, false, None);
    }

    /// Every open link's figures, by id.
    fn per_link(&self) -> Vec<PerLinkStats> {
        let mut all: Vec<PerLinkStats> = self
            .links
            .iter()
            .map(|(&id, link)| PerLinkStats {
                id,
                name: link.name.clone(),
                peer: link.peer,
                queued_bytes: link.queued(),
                subscribed_users: link.users.len() as u64,
                firehose: link.firehose,
                events_sent: link.events_sent,
                events_dropped: link.events_dropped,
                lag_signals: link.lag_signals,
            })
            .collect();
        all.sort_unstable_by_key(|l| l.id);
        all
    }
}

/// STATS_REPLY's JSON: with too many links for its limit (`wire::MAX_STATS_JSON_LEN`), the
/// per-link list is halved until it fits, the number left out in `per_link_omitted`.
fn stats_json(mut stats: Stats) -> String {
    loop {
        let json = stats.to_json().expect("the stats schema serialises");
        let links = &mut stats.link;
        if json.len() <= wire::MAX_STATS_JSON_LEN || links.per_link.is_empty() {
            return json;
        }
        let keep = links.per_link.len() / 2;
        links.per_link_omitted += (links.per_link.len() - keep) as u64;
        links.per_link.truncate(keep);
    }
}

fn unsubscribe(subscribers: &mut Map<u64, Vec<u32>>, user: u64, link: u32) {
    if let Some(links) = subscribers.get_mut(&user) {
        links.retain(|&l| l != link);
        if links.is_empty() {
            subscribers.remove(&user);
        }
    }
}

/// A transition as the push link carries it.
pub fn wire_event(t: &Transition) -> wire::Event {
    wire::Event {
        user: t.user,
        state: wire_state(t.state),
        prev: wire_state(t.prev),
        cause: match t.cause {
            Cause::FirstHeartbeat => wire::WireCause::FirstHeartbeat,
            Cause::StateChange => wire::WireCause::StateChange,
            Cause::Logout => wire::WireCause::Logout,
            Cause::Timeout => wire::WireCause::Timeout,
            Cause::Inactivity => wire::WireCause::Inactivity,
        },
        at_ms: t.at_ms,
        version: t.version,
    }
}

fn wire_state(s: PublicState) -> wire::WireState {
    match s {
        PublicState::Offline => wire::WireState::Offline,
        PublicState::Online => wire::WireState::Online,
        PublicState::Idle => wire::WireState::Idle,
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

#[cfg(test)]
mod tests;
