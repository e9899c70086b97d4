//! One simulated gateway: a [`HeartbeatClient`] (its own socket, gateway id and sequence
//! numbers) plus the stamps of the transitions its queued entries will cause. A stamp is
//! written just before the datagram carrying its entry leaves, so transition latency counts
//! from the send, not from the moment the entry was queued.

use super::clock::Clock;
use super::population::Population;
use presenced_client::{entry, HeartbeatClient};
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

/// A simulated gateway.
pub struct Gateway {
    client: HeartbeatClient,
    /// Per destination: stamps to write when its datagram leaves.
    waiting: Vec<Vec<Deferred>>,
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
            client,
            waiting,
            send_errors: 0,
            last_error: None,
        })
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
        let dest = self.client.destination_of(user);
        if let Some(s) = stamp {
            if let Some(w) = self.waiting.get_mut(dest) {
                w.push(s);
            }
        }
        if self.client.pending_for(dest) + 1 >= self.client.capacity(dest) {
            self.stamp(dest, pop, clock);
        }
        let active = state != State::Offline;
        if let Err(e) = self.client.push(entry(user, device, state, active)) {
            self.send_errors += 1;
            self.last_error = Some(e.to_string());
        }
    }

    /// Sends every partial datagram.
    pub fn flush(&mut self, pop: &Population, clock: &Clock) {
        if self.client.pending() == 0 {
            return;
        }
        for dest in 0..self.waiting.len() {
            self.stamp(dest, pop, clock);
        }
        if let Err(e) = self.client.flush() {
            self.send_errors += 1;
            self.last_error = Some(e.to_string());
        }
    }

    /// Entries queued, not yet sent.
    pub fn pending(&self) -> usize {
        self.client.pending()
    }

    /// Datagrams sent so far.
    pub fn datagrams(&self) -> u64 {
        self.client.datagrams_sent()
    }

    /// Entries sent so far.
    pub fn entries(&self) -> u64 {
        self.client.entries_sent()
    }

    fn stamp(&mut self, dest: usize, pop: &Population, clock: &Clock) {
        let Some(waiting) = self.waiting.get_mut(dest) else {
            return;
        };
        if waiting.is_empty() {
            return;
        }
        let now = clock.now_us();
        for d in waiting.drain(..) {
            if d.online {
                pop.stamp_online(d.index, now | d.flags);
            } else {
                pop.stamp_offline(d.index, now | d.flags);
            }
        }
    }
}
