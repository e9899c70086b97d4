//! Heartbeats to a cluster: each entry to every replica of its user (SPEC.md § P6.14), one
//! [`HeartbeatClient`] per member, rebuilt as the member map changes.
//!
//! It exists because a replica keeps a user's state only from the heartbeats it receives
//! itself: a gateway that sent each entry to one member would leave the next replica without
//! the state a failover needs. Each member's sender keeps its sequence numbers growing across
//! map changes (a member's replay window would refuse a sender that started again at 0).

use super::ClusterCore;
use crate::{ClientError, HeartbeatClient};
use presenced_wire::auth::Key;
use presenced_wire::cluster::MemberMap;
use presenced_wire::Entry;
use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};

/// One member's sender, and what it was built from.
struct Sender {
    heartbeat: String,
    shard_ports: Vec<SocketAddr>,
    /// The sequence it started at.
    first: u64,
    client: HeartbeatClient,
}

impl Sender {
    /// Datagrams this member was sent since sequence `first_sequence` (its earlier senders'
    /// included: each rebuilt sender starts where the last stopped).
    fn sent_since(&self, first_sequence: u64) -> u64 {
        (self.first + self.client.datagrams_sent()).saturating_sub(first_sequence)
    }
}

/// Sends one gateway's heartbeat entries to every replica of each entry's user.
pub struct ClusterHeartbeats {
    gateway: u32,
    boot_epoch: u32,
    first_sequence: u64,
    key: Option<Key>,
    core: ClusterCore,
    senders: BTreeMap<String, Sender>,
    /// Datagrams sent by senders dropped with their member (see [`ClusterHeartbeats::datagrams_sent`]).
    retired_datagrams: u64,
}

impl ClusterHeartbeats {
    /// A sender for gateway `gateway` in boot epoch `boot_epoch`, sending nothing until
    /// [`set_map`](ClusterHeartbeats::set_map).
    pub fn new(gateway: u32, boot_epoch: u32) -> ClusterHeartbeats {
        ClusterHeartbeats {
            gateway,
            boot_epoch,
            first_sequence: 0,
            key: None,
            core: ClusterCore::new(),
            senders: BTreeMap::new(),
            retired_datagrams: 0,
        }
    }

    /// Signs every datagram with the gateway's key (SPEC.md § 9).
    pub fn with_key(mut self, key: Key) -> ClusterHeartbeats {
        self.key = Some(key);
        self
    }

    /// Starts every member's sequence numbers at `first` (see
    /// [`HeartbeatClient::with_first_sequence`]).
    pub fn with_first_sequence(mut self, first: u64) -> ClusterHeartbeats {
        self.first_sequence = first;
        self
    }

    /// Follows `map` (ignored, like [`ClusterCore::handle_map`] does, if older than the one
    /// held or from a non-member): one sender per member, to its `heartbeat` address or, where
    /// `shard_ports(id)` gives them (from that member's WELCOME), to its shards' ports. A
    /// member's sender is kept while its addresses stay; pending entries are sent first.
    pub fn set_map(
        &mut self,
        map: MemberMap,
        shard_ports: impl Fn(&str) -> Vec<SocketAddr>,
    ) -> Result<(), ClientError> {
        self.flush()?;
        let members = map.members.clone();
        self.core.handle_map(map);
        if !self.core.map().is_some_and(|held| held.members == members) {
            return Ok(());
        }
        let mut senders = BTreeMap::new();
        for m in &members {
            let ports = shard_ports(&m.id);
            let old = self.senders.remove(&m.id);
            if let Some(old) = old {
                if old.heartbeat == m.heartbeat && old.shard_ports == ports {
                    senders.insert(m.id.clone(), old);
                    continue;
                }
                let first = old.first + old.client.datagrams_sent();
                senders.insert(m.id.clone(), self.sender(&m.heartbeat, ports, first)?);
            } else {
                let first = self.first_sequence;
                senders.insert(m.id.clone(), self.sender(&m.heartbeat, ports, first)?);
            }
        }
        let first_sequence = self.first_sequence;
        self.retired_datagrams += self
            .senders
            .values()
            .map(|s| s.sent_since(first_sequence))
            .sum::<u64>();
        self.senders = senders;
        Ok(())
    }

    fn sender(
        &self,
        heartbeat: &str,
        shard_ports: Vec<SocketAddr>,
        first: u64,
    ) -> Result<Sender, ClientError> {
        let addr = heartbeat
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| ClientError::Config(format!("cannot resolve {heartbeat:?}")))?;
        let mut client = HeartbeatClient::new(self.gateway, self.boot_epoch, addr)?
            .with_shard_ports(shard_ports.clone())
            .with_first_sequence(first);
        if let Some(key) = &self.key {
            client = client.with_key(key.clone());
        }
        Ok(Sender {
            heartbeat: heartbeat.to_owned(),
            shard_ports,
            first,
            client,
        })
    }

    /// Queues `entry` for every replica of its user (nothing before a map is set).
    pub fn push(&mut self, entry: Entry) -> Result<(), ClientError> {
        let ids: Vec<String> = self
            .core
            .heartbeat_targets(entry.user)
            .map(|m| m.id.clone())
            .collect();
        for id in ids {
            if let Some(s) = self.senders.get_mut(&id) {
                s.client.push(entry)?;
            }
        }
        Ok(())
    }

    /// Sends every member's pending entries.
    pub fn flush(&mut self) -> Result<(), ClientError> {
        for s in self.senders.values_mut() {
            s.client.flush()?;
        }
        Ok(())
    }

    /// How many members get each entry of `user` under the map held (0 before a map).
    pub fn replicas_of(&self, user: u64) -> usize {
        self.core
            .heartbeat_targets(user)
            .filter(|m| self.senders.contains_key(&m.id))
            .count()
    }

    /// Datagrams sent so far, to every member ever in the map (a member's count goes on
    /// across its sender's rebuilds and after it leaves the map).
    pub fn datagrams_sent(&self) -> u64 {
        let first_sequence = self.first_sequence;
        self.retired_datagrams
            + self
                .senders
                .values()
                .map(|s| s.sent_since(first_sequence))
                .sum::<u64>()
    }

    /// Entries sent, per member id.
    pub fn entries_sent(&self) -> BTreeMap<String, u64> {
        self.senders
            .iter()
            .map(|(id, s)| (id.clone(), s.client.entries_sent()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry;
    use presenced_wire::cluster::Member;
    use presenced_wire::State;
    use std::net::UdpSocket;
    use std::time::Duration;

    /// Entries each socket receives (reads until 100 ms pass with none).
    fn received(socket: &UdpSocket) -> Vec<(u64, u64)> {
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok(n) = socket.recv(&mut buf) {
            let d = presenced_wire::decode(&buf[..n]).unwrap();
            got.extend(d.entries().map(|e| (e.user, d.header().sequence)));
        }
        got
    }

    #[test]
    fn every_replica_gets_each_entry_and_sequences_keep_growing() {
        let sockets: Vec<UdpSocket> = (0..3)
            .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        let map = |revision, replicas| MemberMap {
            from: "m0".into(),
            revision,
            replicas,
            etcd: true,
            members: sockets
                .iter()
                .enumerate()
                .map(|(i, s)| Member {
                    id: format!("m{i}"),
                    link: "127.0.0.1:1".into(),
                    heartbeat: s.local_addr().unwrap().to_string(),
                    warm_at_ms: 0,
                })
                .collect(),
        };
        let mut hb = ClusterHeartbeats::new(7, 1).with_first_sequence(100);
        hb.push(entry(1, 1, State::Online, true)).unwrap();
        hb.set_map(map(1, 2), |_| Vec::new()).unwrap();
        let users: Vec<u64> = (1..=30).collect();
        for &u in &users {
            hb.push(entry(u, 1, State::Online, true)).unwrap();
        }
        hb.flush().unwrap();
        let got: Vec<Vec<(u64, u64)>> = sockets.iter().map(received).collect();
        let placement = map(1, 2).placement();
        for &u in &users {
            let set = placement.replicas(u);
            for (i, g) in got.iter().enumerate() {
                let has = g.iter().any(|&(user, _)| user == u);
                assert_eq!(has, set.contains(i), "user {u} at member {i}");
            }
        }
        // One datagram each, from sequence 100.
        for g in &got {
            assert!(g.iter().all(|&(_, seq)| seq == 100), "{g:?}");
        }
        assert_eq!(hb.datagrams_sent(), 3);
        assert_eq!(hb.replicas_of(1), 2);
        // A map with one replica: each entry to one member; the senders go on from 101.
        hb.set_map(map(2, 1), |_| Vec::new()).unwrap();
        for &u in &users {
            hb.push(entry(u, 1, State::Online, true)).unwrap();
        }
        hb.flush().unwrap();
        let got: Vec<Vec<(u64, u64)>> = sockets.iter().map(received).collect();
        assert_eq!(got.iter().map(Vec::len).sum::<usize>(), users.len());
        assert_eq!(hb.replicas_of(1), 1);
        let busy = got.iter().filter(|g| !g.is_empty()).count() as u64;
        assert_eq!(hb.datagrams_sent(), 3 + busy);
        for g in got.iter().filter(|g| !g.is_empty()) {
            assert!(g.iter().all(|&(_, seq)| seq == 101), "{g:?}");
        }
        // An older map is ignored.
        hb.set_map(map(1, 3), |_| Vec::new()).unwrap();
        hb.push(entry(5, 1, State::Online, true)).unwrap();
        hb.flush().unwrap();
        let total: usize = sockets.iter().map(|s| received(s).len()).sum();
        assert_eq!(total, 1);
    }
}
