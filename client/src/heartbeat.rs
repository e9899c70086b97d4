//! The gateway's heartbeat sender: entries batched into full datagrams, each sent to the port of
//! the shard that owns its user when the shard ports are known (SPEC.md, P6.9).

use super::ClientError;
use presenced_wire::auth::Key;
use presenced_wire::{shard_of, Encoder, Entry, Header, State, MAX_ENTRIES, MAX_ENTRIES_IPV6};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::{SystemTime, UNIX_EPOCH};

/// A heartbeat entry: `user`'s `device` reports `state`; `active` is the ACTIVITY flag.
pub fn entry(user: u64, device: u32, state: State, active: bool) -> Entry {
    Entry {
        user,
        device,
        state,
        active,
    }
}

/// One destination: its address, the datagram being filled for it, and how many entries fill
/// a datagram there (fewer over IPv6, whose headers are larger).
struct Destination {
    addr: SocketAddr,
    encoder: Encoder,
    capacity: usize,
}

impl Destination {
    fn new(addr: SocketAddr, header: Header) -> Destination {
        let capacity = if addr.is_ipv6() {
            MAX_ENTRIES_IPV6
        } else {
            MAX_ENTRIES
        };
        Destination {
            addr,
            encoder: Encoder::new(header),
            capacity,
        }
    }
}

/// Sends heartbeats of one gateway (one `gateway` id and boot epoch) over UDP.
///
/// Entries are batched: [`push`](HeartbeatClient::push) sends a datagram as soon as one is
/// full, [`flush`](HeartbeatClient::flush) sends what is pending. Sequence numbers grow by one
/// per datagram; the send time is the wall clock at sending.
pub struct HeartbeatClient {
    socket: UdpSocket,
    gateway: u32,
    boot_epoch: u32,
    sequence: u64,
    /// One per shard when routing by shard, else just the shared address.
    destinations: Vec<Destination>,
    datagrams_sent: u64,
    entries_sent: u64,
    /// The gateway's key: datagrams are signed with it (SPEC.md § 9).
    key: Option<Key>,
}

impl HeartbeatClient {
    /// A sender for gateway `gateway` (nonzero) in boot epoch `boot_epoch`, sending every entry
    /// to `addr` (the daemon's shared heartbeat address). Binds an ephemeral UDP port on the
    /// loopback interface when `addr` is loopback, else on every interface.
    pub fn new(gateway: u32, boot_epoch: u32, addr: SocketAddr) -> io::Result<HeartbeatClient> {
        let bind: SocketAddr = match (addr.is_ipv6(), addr.ip().is_loopback()) {
            (false, true) => (Ipv4Addr::LOCALHOST, 0).into(),
            (false, false) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            (true, true) => (Ipv6Addr::LOCALHOST, 0).into(),
            (true, false) => (Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(bind)?;
        let header = Header::new(gateway, boot_epoch, 0, 0);
        Ok(HeartbeatClient {
            socket,
            gateway,
            boot_epoch,
            sequence: 0,
            destinations: vec![Destination::new(addr, header)],
            datagrams_sent: 0,
            entries_sent: 0,
            key: None,
        })
    }

    /// Routes each entry to its owning shard's address instead: `shard_ports[i]` is shard `i`'s
    /// heartbeat address, in the order of WELCOME (see `WelcomeInfo::heartbeat_addrs`).
    /// Pending entries are dropped; call it before pushing. An empty list keeps the shared
    /// address.
    pub fn with_shard_ports(mut self, shard_ports: Vec<SocketAddr>) -> HeartbeatClient {
        if shard_ports.is_empty() || shard_ports.len() > usize::from(u16::MAX) {
            return self;
        }
        let header = Header::new(self.gateway, self.boot_epoch, 0, 0);
        self.destinations = shard_ports
            .into_iter()
            .map(|addr| Destination::new(addr, header))
            .collect();
        self
    }

    /// Starts the sequence numbers at `first` instead of 0 (below 2^48 − 1; SPEC.md § 8): for
    /// short-lived senders that share a boot epoch, each starting above the one before.
    pub fn with_first_sequence(mut self, first: u64) -> HeartbeatClient {
        self.sequence = first;
        self
    }

    /// Signs every datagram with the gateway's key (for a daemon with `auth.keys_file`).
    pub fn with_key(mut self, key: Key) -> HeartbeatClient {
        self.key = Some(key);
        self
    }

    /// Queues an entry, sending its destination's datagram once full. Refuses user 0.
    pub fn push(&mut self, entry: Entry) -> Result<(), ClientError> {
        let index = self.destination_of(entry.user);
        let Some(dest) = self.destinations.get_mut(index) else {
            return Err(ClientError::Protocol(format!("no destination {index}")));
        };
        dest.encoder.push(entry)?;
        if dest.encoder.len() >= dest.capacity {
            self.send(index)?;
        }
        Ok(())
    }

    /// Number of destinations: the shard count when routing by shard, else 1.
    pub fn destinations(&self) -> usize {
        self.destinations.len()
    }

    /// The destination `user`'s entries go to (an index below
    /// [`destinations`](HeartbeatClient::destinations)): its owning shard when routing by
    /// shard, else 0. A [`push`](HeartbeatClient::push) of such an entry sends that
    /// destination's datagram when it makes it [`capacity`](HeartbeatClient::capacity) long,
    /// so a caller can note the moment a given entry leaves.
    pub fn destination_of(&self, user: u64) -> usize {
        match self.destinations.len() {
            1 => 0,
            n => usize::from(shard_of(user, u16::try_from(n).unwrap_or(u16::MAX))),
        }
    }

    /// Entries queued for destination `index` (0 for an index out of range).
    pub fn pending_for(&self, index: usize) -> usize {
        self.destinations.get(index).map_or(0, |d| d.encoder.len())
    }

    /// Entries one datagram to destination `index` holds: 89, or 87 over IPv6 (0 for an index
    /// out of range).
    pub fn capacity(&self, index: usize) -> usize {
        self.destinations.get(index).map_or(0, |d| d.capacity)
    }

    /// Sends every pending entry.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        for index in 0..self.destinations.len() {
            if self
                .destinations
                .get(index)
                .is_some_and(|d| !d.encoder.is_empty())
            {
                self.send(index)?;
            }
        }
        Ok(())
    }

    /// Sends `bytes` as one datagram to the shared address, as they are (for tests and tools
    /// that need a malformed datagram).
    pub fn send_raw(&self, bytes: &[u8]) -> io::Result<usize> {
        let addr = self.destinations.first().map(|d| d.addr);
        match addr {
            Some(addr) => self.socket.send_to(bytes, addr),
            None => Err(io::Error::other("no destination")),
        }
    }

    /// Datagrams sent so far.
    pub fn datagrams_sent(&self) -> u64 {
        self.datagrams_sent
    }

    /// Entries sent so far (excluding [`send_raw`](HeartbeatClient::send_raw)).
    pub fn entries_sent(&self) -> u64 {
        self.entries_sent
    }

    /// Entries queued and not yet sent.
    pub fn pending(&self) -> usize {
        self.destinations.iter().map(|d| d.encoder.len()).sum()
    }

    /// The local address the datagrams come from.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    fn send(&mut self, index: usize) -> Result<(), ClientError> {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let header = Header::new(self.gateway, self.boot_epoch, self.sequence, now_ms);
        let Some(dest) = self.destinations.get_mut(index) else {
            return Ok(());
        };
        dest.encoder.set_header(header);
        let entries = dest.encoder.len() as u64;
        let datagram = match &self.key {
            Some(key) => dest.encoder.finish_signed(key)?,
            None => dest.encoder.finish()?,
        };
        let sent = self.socket.send_to(datagram, dest.addr);
        // The datagram is spent either way: a failed send loses it like the network would.
        dest.encoder.clear();
        self.sequence += 1;
        sent?;
        self.datagrams_sent += 1;
        self.entries_sent += entries;
        Ok(())
    }
}
