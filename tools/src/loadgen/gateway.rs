//! One simulated gateway: a [`HeartbeatClient`] (its own socket, gateway id and sequence
//! numbers) plus the stamps of the transitions its queued entries will cause. A stamp is
//! written just before the datagram carrying its entry leaves, so transition latency counts
//! from the send, not from the moment the entry was queued.
//!
//! Against a cluster (`--cluster`) the gateway is a [`ClusterHeartbeats`] instead: each entry
//! goes to every replica of its user, through one sender per member that the library owns, so
//! the datagram an entry leaves in is not known here; its stamp is written when it is queued
//! (at most `--batch-delay` before it leaves).

use super::clock::Clock;
use super::population::Population;
use presenced_client::cluster::ClusterHeartbeats;
use presenced_client::{entry, ClientError, HeartbeatClient};
use presenced_wire::cluster::MemberMap;
use presenced_wire::State;
use std::net::SocketAddr;

/// Which stamp a queued entry sets when its datagram leaves.
#[derive(Clone, Copy, Debug)]
pub struct Deferred {
    /// The user index.
    pub index: u32,
    /// Online (true) or offline (false).
    pub online: bool,
    /// Flags ORed into the stamp (`population::UNTIMED`).
    pub flags: u64,
}

/// Where a gateway's entries go.
enum Sink {
    /// One daemon: stamps wait, per destination, for their datagram to leave.
    Daemon {
        client: HeartbeatClient,
        /// Per destination: stamps to write when its datagram leaves.
        waiting: Vec<Vec<Deferred>>,
    },
    /// A cluster: every replica of each entry's user.
    Cluster(ClusterSink),
}

/// A gateway's cluster sender and what it counts that the library does not.
struct ClusterSink {
    heartbeats: ClusterHeartbeats,
    /// Entries queued since the last flush.
    pending: usize,
    /// Entries sent to members, each once per replica it went to.
    replica_entries: u64,
    /// User entries, each once however many replicas it went to.
    user_entries: u64,
}

/// A simulated gateway.
pub struct Gateway {
    sink: Sink,
    /// Failed sends (each loses one datagram).
    pub send_errors: u64,
    /// Last error, for the report.
    pub last_error: Option<String>,
}

impl Gateway {
    /// Gateway `id` (nonzero) sending to `shared`, or to `shards[owner]` when `shards` is not
    /// empty (shard-aware).
    pub fn new(
        id: u32,
        boot_epoch: u32,
        shared: SocketAddr,
        shards: &[SocketAddr],
        key: Option<&presenced_wire::auth::Key>,
    ) -> std::io::Result<Gateway> {
        let mut client = HeartbeatClient::new(id, boot_epoch, shared)?;
        if let Some(key) = key {
            client = client.with_key(key.clone());
        }
        if !shards.is_empty() {
            client = client.with_shard_ports(shards.to_vec());
        }
        let waiting = (0..client.destinations()).map(|_| Vec::new()).collect();
        Ok(Gateway {
            sink: Sink::Daemon { client, waiting },
            send_errors: 0,
            last_error: None,
        })
    }

    /// Gateway `id` (nonzero) sending each entry to every replica of its user under `map`
    /// (followed by [`set_map`](Gateway::set_map)).
    pub fn cluster(
        id: u32,
        boot_epoch: u32,
        map: MemberMap,
        key: Option<&presenced_wire::auth::Key>,
    ) -> Result<Gateway, ClientError> {
        let mut heartbeats = ClusterHeartbeats::new(id, boot_epoch);
        if let Some(key) = key {
            heartbeats = heartbeats.with_key(key.clone());
        }
        heartbeats.set_map(map, |_| Vec::new())?;
        Ok(Gateway {
            sink: Sink::Cluster(ClusterSink {
                heartbeats,
                pending: 0,
                replica_entries: 0,
                user_entries: 0,
            }),
            send_errors: 0,
            last_error: None,
        })
    }

    /// A cluster gateway follows `map` (its pending entries are sent first); no-op for one
    /// daemon.
    pub fn set_map(&mut self, map: MemberMap) {
        if let Sink::Cluster(c) = &mut self.sink {
            c.pending = 0;
            if let Err(e) = c.heartbeats.set_map(map, |_| Vec::new()) {
                self.send_errors += 1;
                self.last_error = Some(e.to_string());
            }
        }
    }

    /// Queues `user`'s `device` reporting `state` (with the ACTIVITY flag unless a logout);
    /// `stamp` is written when the datagram carrying it leaves.
    #[inline]
    pub fn send(
        &mut self,
        user: u64,
        device: u32,
        state: State,
        stamp: Option<Deferred>,
        pop: &Population,
        clock: &Clock,
    ) {
        let active = state != State::Offline;
        let e = entry(user, device, state, active);
        let sent = match &mut self.sink {
            Sink::Daemon { client, waiting } => {
                let dest = client.destination_of(user);
                if let Some(s) = stamp {
                    if let Some(w) = waiting.get_mut(dest) {
                        w.push(s);
                    }
                }
                if client.pending_for(dest) + 1 >= client.capacity(dest) {
                    if let Some(w) = waiting.get_mut(dest) {
                        write_stamps(w, pop, clock);
                    }
                }
                client.push(e)
            }
            Sink::Cluster(c) => {
                if let Some(d) = stamp {
                    write_stamp(d, clock.now_us(), pop);
                }
                c.pending += 1;
                c.user_entries += 1;
                c.replica_entries += c.heartbeats.replicas_of(user) as u64;
                c.heartbeats.push(e)
            }
        };
        if let Err(e) = sent {
            self.send_errors += 1;
            self.last_error = Some(e.to_string());
        }
    }

    /// Sends every partial datagram.
    pub fn flush(&mut self, pop: &Population, clock: &Clock) {
        let flushed = match &mut self.sink {
            Sink::Daemon { client, waiting } => {
                if client.pending() == 0 {
                    return;
                }
                for w in waiting.iter_mut() {
                    write_stamps(w, pop, clock);
                }
                client.flush()
            }
            Sink::Cluster(c) => {
                if c.pending == 0 {
                    return;
                }
                c.pending = 0;
                c.heartbeats.flush()
            }
        };
        if let Err(e) = flushed {
            self.send_errors += 1;
            self.last_error = Some(e.to_string());
        }
    }

    /// Entries queued, not yet sent.
    pub fn pending(&self) -> usize {
        match &self.sink {
            Sink::Daemon { client, .. } => client.pending(),
            Sink::Cluster(c) => c.pending,
        }
    }

    /// Datagrams sent so far (to every member, against a cluster).
    pub fn datagrams(&self) -> u64 {
        match &self.sink {
            Sink::Daemon { client, .. } => client.datagrams_sent(),
            Sink::Cluster(c) => c.heartbeats.datagrams_sent(),
        }
    }

    /// Entries sent so far; against a cluster, each once per replica it went to.
    pub fn entries(&self) -> u64 {
        match &self.sink {
            Sink::Daemon { client, .. } => client.entries_sent(),
            Sink::Cluster(c) => c.replica_entries,
        }
    }

    /// User entries sent so far, each once however many members it went to.
    pub fn user_entries(&self) -> u64 {
        match &self.sink {
            Sink::Daemon { client, .. } => client.entries_sent(),
            Sink::Cluster(c) => c.user_entries,
        }
    }
}

/// Writes (and clears) the stamps in `waiting`, as of now.
fn write_stamps(waiting: &mut Vec<Deferred>, pop: &Population, clock: &Clock) {
    if waiting.is_empty() {
        return;
    }
    let now = clock.now_us();
    for d in waiting.drain(..) {
        write_stamp(d, now, pop);
    }
}

/// Writes one stamp: its transition was caused at `now`.
fn write_stamp(d: Deferred, now: u64, pop: &Population) {
    if d.online {
        pop.stamp_online(d.index, now | d.flags);
    } else {
        pop.stamp_offline(d.index, now | d.flags);
    }
}
