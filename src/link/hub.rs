//! The hub thread: moves the shards' messages and the links' events into the sans-IO hub
//! (`presenced_node::hub::Hub`) and its requests and frames out to the shards' inboxes and the
//! links' tasks. It never blocks on a gateway: a link's frame queue is bounded by the hub's own
//! count of frames queued and not yet written. The metrics endpoint's scrapes come through the
//! same channel as the links' events; their answers go back on the scrape's own reply channel.
//!
//! With several hubs (`link.hubs`) each thread serves its own links and reads every shard's
//! channel to it; every [`SHARE_EVERY`] it publishes its share of the figures on the
//! [`Board`] and takes the others' latest for its STATS answers, which may so be that old.
//!
//! In a cluster, every hub keeps its own view of it: the etcd thread's news comes to each hub on
//! a channel of its own (`crate::etcd::News`), stamped with the time when read, and the thread
//! wakes at its hub's deadline (a lease about to lapse, a member turning warm).

use super::{Frame, LinkEvent};

use crate::shard_thread::Peer;
use crate::time::Clock;
use crossbeam_channel::{Receiver, Select};
use presenced_node::bus::{Inbox, ToHub};
use presenced_node::cluster::{ClusterEvent, EtcdEvent};
use presenced_node::hub::share::HubShare;
use presenced_node::hub::{Command, Hub};
use presenced_wire::stats::Stats;
use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::oneshot;

/// Messages read from one channel before the hub's output is sent.
const DRAIN: usize = 256;
/// How long a shard's inbox may stay full before a request for it is given up (a shard drains
/// its inbox every round; only a stopped shard keeps it full).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the thread looks at the stop flag when nothing arrives.
const IDLE_WAKE: Duration = Duration::from_millis(100);

/// How often a hub publishes its share of the figures and takes the others' (with several
/// hubs): a STATS answer's other hubs' figures are at most about this old.
pub const SHARE_EVERY: Duration = Duration::from_millis(100);

/// Each hub's latest share of the figures, by index (`presenced_node::hub::share`).
#[derive(Clone)]
pub struct Board {
    shares: Arc<[Mutex<Arc<HubShare>>]>,
}

impl Board {
    /// A board for `hubs` hubs, each share empty until its hub publishes.
    pub fn new(hubs: usize) -> Board {
        Board {
            shares: (0..hubs)
                .map(|hub| {
                    Mutex::new(Arc::new(HubShare {
                        hub,
                        ..HubShare::default()
                    }))
                })
                .collect(),
        }
    }

    /// Puts hub `index`'s share up and gives the others' latest.
    fn trade(&self, index: usize, share: HubShare) -> Vec<Arc<HubShare>> {
        *lock(&self.shares[index]) = Arc::new(share);
        (0..self.shares.len())
            .filter(|&i| i != index)
            .map(|i| lock(&self.shares[i]).clone())
            .collect()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the hub thread reads.
pub struct Inputs<'a> {
    /// This hub's index among the hubs.
    pub index: usize,
    /// Each shard's messages.
    pub from_shards: &'a [Receiver<ToHub>],
    /// The links' events and the metrics endpoint's scrapes.
    pub events: &'a Receiver<LinkEvent>,
    /// The etcd thread's news for this hub, in a cluster.
    pub cluster: Option<&'a Receiver<EtcdEvent>>,
    /// Where the hubs trade their shares of the figures.
    pub board: &'a Board,
}

/// Runs the hub until `stop` is set.
pub fn run(
    mut hub: Hub,
    inputs: Inputs<'_>,
    peers: &[Peer],
    clock: &Clock,
    stop: &AtomicBool,
) -> io::Result<()> {
    let Inputs {
        index,
        from_shards,
        events,
        cluster,
        board,
    } = inputs;
    let several = board.shares.len() > 1;
    let share_every_us = SHARE_EVERY.as_micros() as u64;
    let mut shared_us = 0;
    let mut links: HashMap<u32, UnboundedSender<Frame>> = HashMap::new();
    // Scrapes awaiting the shards, by the request id given here; one whose asker gave up
    // (timed out) is forgotten at the next scrape, as the hub forgets it.
    let mut scrapes: HashMap<u32, oneshot::Sender<Box<Stats>>> = HashMap::new();
    let mut next_scrape: u32 = 0;
    let mut select = Select::new();
    for r in from_shards {
        select.recv(r);
    }
    let events_index = select.recv(events);
    let cluster_index = cluster.map(|c| select.recv(c));
    while !stop.load(Ordering::Relaxed) {
        let now = clock.now();
        let wait = hub.poll_timeout(now).map_or(IDLE_WAKE, |at| {
            Duration::from_micros(at.saturating_sub(now.mono_us)).min(IDLE_WAKE)
        });
        match select.ready_timeout(wait) {
            Ok(i) if Some(i) == cluster_index => {
                if let Some(news) = cluster {
                    for event in news.try_iter().take(DRAIN) {
                        hub.handle_etcd(clock.now(), event);
                    }
                }
            }
            Ok(i) if i == events_index => {
                for event in events.try_iter().take(DRAIN) {
                    match event {
                        LinkEvent::Open {
                            link,
                            version,
                            name,
                            peer,
                            limits,
                            frames,
                        } => {
                            links.insert(link, frames);
                            hub.handle_command(Command::Open {
                                link,
                                version,
                                name,
                                peer,
                                limits,
                            });
                        }
                        LinkEvent::Scrape { server, reply } => {
                            scrapes.retain(|_, r| !r.is_closed());
                            next_scrape = next_scrape.wrapping_add(1);
                            scrapes.insert(next_scrape, reply);
                            hub.handle_command(Command::Scrape {
                                request: next_scrape,
                                server,
                            });
                        }
                        LinkEvent::Command(command) => {
                            if let Command::Close { link } = command {
                                links.remove(&link);
                            }
                            hub.handle_command(command);
                        }
                    }
                }
            }
            Ok(i) => {
                for message in from_shards[i].try_iter().take(DRAIN) {
                    hub.handle_shard(message);
                }
            }
            Err(_) => {}
        }
        hub.handle_timeout(clock.now());
        if several && clock.mono_us() >= shared_us + share_every_us {
            shared_us = clock.mono_us();
            hub.handle_peers(board.trade(index, hub.share()));
        }
        while let Some(event) = hub.poll_cluster_event() {
            log_cluster(event);
        }
        while let Some((shard, request)) = hub.poll_request() {
            // Lost only when the shard has stopped (the daemon is going down).
            let _ = peers[shard].send(Inbox::Request(request), REQUEST_TIMEOUT);
        }
        while let Some((link, frame)) = hub.poll_transmit() {
            if let Some(frames) = links.get(&link) {
                // A task that is gone has its Close on the way.
                let _ = frames.send(Frame::Hub(frame));
            }
        }
        while let Some((request, stats)) = hub.poll_scrape() {
            if let Some(reply) = scrapes.remove(&request) {
                // The asker may have given up.
                let _ = reply.send(stats);
            }
        }
    }
    Ok(())
}

/// One log line per cluster event.
fn log_cluster(event: ClusterEvent) {
    match event {
        ClusterEvent::Map { revision, members } => {
            tracing::info!("cluster: member map of revision {revision}: {members} member(s)");
        }
        ClusterEvent::BadValue { key, reason } => {
            tracing::warn!("cluster: skipped the etcd value of member {key:?}: {reason}");
        }
        ClusterEvent::Role(role) => tracing::info!("cluster: this member is now {}", role.name()),
    }
}
