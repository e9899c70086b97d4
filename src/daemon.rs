//! Starting and stopping the daemon: sockets, channels, pinned shard threads and the push link.

use crate::auth::{KeyRing, Keys, Verifier};
use crate::bus::{Inbox, ToHub};
use crate::ingest::bind_udp;
use crate::link;
use crate::settings::Settings;
use crate::worker::{self, Peer, ShardSetup, WAKER};
use mio::{Poll, Waker};
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

/// A running daemon.
pub struct Running {
    /// The shared heartbeat address(es) actually bound.
    pub heartbeat: Vec<SocketAddr>,
    /// Each shard's own heartbeat address, if `ingest.shard_ports`.
    pub shard_ports: Vec<SocketAddr>,
    /// The push link's address.
    pub link: SocketAddr,
    /// The smallest receive buffer the kernel gave a heartbeat socket (bytes, as set).
    pub recv_buffer: usize,
    stop: Arc<AtomicBool>,
    wakers: Vec<Arc<Waker>>,
    shards: Vec<JoinHandle<io::Result<()>>>,
    link_handle: link::Handle,
    peers: Vec<Peer>,
    key_ring: KeyRing,
    settings: Arc<Settings>,
}

/// Binds every socket and starts every thread.
pub fn start(settings: Settings) -> io::Result<Running> {
    let settings = Arc::new(settings);
    let n = settings.shards;
    let origin = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let cpus = worker::allowed_cpus();

    // The shared port: the first bind picks the port if it is 0, the others join its group.
    let mut shared: Vec<Vec<std::net::UdpSocket>> = (0..n).map(|_| Vec::new()).collect();
    let mut heartbeat = Vec::new();
    for addr in [Some(settings.listen), settings.listen_v6]
        .into_iter()
        .flatten()
    {
        let mut addr = addr;
        for sockets in shared.iter_mut() {
            let socket = bind_udp(addr, true, settings.socket_recv_buffer)
                .map_err(|e| annotate(e, "ingest.listen", addr))?;
            addr = socket.local_addr()?;
            sockets.push(socket);
        }
        heartbeat.push(addr);
    }
    let mut shard_ports = Vec::new();
    if settings.shard_ports {
        for (i, sockets) in shared.iter_mut().enumerate() {
            let mut addr = settings.listen;
            if addr.port() != 0 {
                addr.set_port(addr.port() + 1 + i as u16);
            }
            let socket = bind_udp(addr, false, settings.socket_recv_buffer)
                .map_err(|e| annotate(e, "ingest.shard_ports", addr))?;
            shard_ports.push(socket.local_addr()?);
            sockets.push(socket);
        }
    }

    let recv_buffer = shared
        .iter()
        .flatten()
        .map(crate::ingest::recv_buffer_of)
        .min()
        .unwrap_or(0);

    let mut polls = Vec::with_capacity(n);
    let mut peers = Vec::with_capacity(n);
    let mut inboxes = Vec::with_capacity(n);
    for _ in 0..n {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::bounded::<Inbox>(settings.cross_shard_queue);
        peers.push(Peer { inbox: tx, waker });
        inboxes.push(rx);
        polls.push(poll);
    }
    let mut hub_inputs = Vec::with_capacity(n);
    let mut shards = Vec::with_capacity(n);
    let seed = RandomState::new().hash_one(0u64);
    let keys = match &settings.keys_file {
        Some(path) => Some(Arc::new(
            Keys::load(path, settings.replay_window, settings.max_gateways, None).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("setting `auth.keys_file`: {e}"),
                )
            })?,
        )),
        None => None,
    };
    let key_ring: KeyRing = Arc::new(Mutex::new(keys.clone()));
    let verifier = Verifier::new(keys, settings.max_clock_skew_ms);
    for (index, ((poll, sockets), inbox)) in polls.into_iter().zip(shared).zip(inboxes).enumerate()
    {
        let (to_hub, from_shard) = crossbeam_channel::bounded::<ToHub>(settings.link_outbox);
        hub_inputs.push(from_shard);
        let mut core = settings.core.clone();
        core.hash_seed = seed.wrapping_add(index as u64);
        let setup = ShardSetup {
            index,
            core,
            poll,
            sockets,
            inbox,
            peers: peers.clone(),
            to_hub,
            recv_batch: settings.recv_batch,
            cross_shard_batch: settings.cross_shard_batch,
            link_outbox: settings.link_outbox,
            origin,
            stop: stop.clone(),
            cpu: settings
                .pin
                .then(|| cpus.get(index % cpus.len().max(1)).copied())
                .flatten(),
            verifier: verifier.clone(),
        };
        shards.push(
            std::thread::Builder::new()
                .name(format!("shard-{index}"))
                .spawn(move || worker::run(setup))?,
        );
    }
    let wakers = peers.iter().map(|p| p.waker.clone()).collect();
    let shard_peers = peers.clone();
    let link_handle = link::start(
        settings.clone(),
        link::Welcome {
            shards: n,
            heartbeat_port: heartbeat.first().map_or(0, SocketAddr::port),
            shard_ports: shard_ports.iter().map(SocketAddr::port).collect(),
        },
        hub_inputs,
        peers,
        key_ring.clone(),
        origin,
        stop.clone(),
    )?;
    Ok(Running {
        heartbeat,
        shard_ports,
        link: link_handle.addr,
        recv_buffer,
        stop,
        wakers,
        shards,
        link_handle,
        peers: shard_peers,
        key_ring,
        settings,
    })
}

fn annotate(e: io::Error, key: &str, addr: SocketAddr) -> io::Error {
    io::Error::new(
        e.kind(),
        format!("setting `{key}`: cannot bind UDP {addr}: {e}"),
    )
}

impl Running {
    /// A warning if the kernel capped the heartbeat sockets' receive buffers below
    /// `ingest.socket_recv_buffer` (bursts then overflow sooner), naming the fix.
    pub fn recv_buffer_warning(&self) -> Option<String> {
        let asked = self.settings.socket_recv_buffer;
        (self.recv_buffer < asked).then(|| {
            format!(
                "presenced: ingest.socket_recv_buffer: asked for {asked} bytes, the kernel gave \
                 {}; raise net.core.rmem_max (sysctl -w net.core.rmem_max={asked}) or grant \
                 CAP_NET_ADMIN, or lower the setting to silence this",
                self.recv_buffer
            )
        })
    }

    /// One line for people and for tests: every address actually bound.
    pub fn ready_line(&self) -> String {
        let join = |v: &[SocketAddr]| {
            v.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        format!(
            "presenced ready heartbeat={} shard_ports={} link={}",
            join(&self.heartbeat),
            join(&self.shard_ports),
            self.link
        )
    }

    /// Stops every thread and waits for them; returns the first error a thread hit.
    pub fn shutdown(self) -> io::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        for waker in &self.wakers {
            let _ = waker.wake();
        }
        let mut result = Ok(());
        for handle in self.shards {
            let r = handle
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("shard thread panicked")));
            if result.is_ok() {
                result = r;
            }
        }
        let r = self.link_handle.join();
        result.and(r)
    }

    /// Reads the gateway key file again and hands the new keys to every shard; gateways that
    /// remain keep their replay windows. Returns the number of gateways now configured.
    pub fn reload_keys(&self) -> Result<usize, String> {
        let Some(path) = &self.settings.keys_file else {
            return Err("auth.keys_file is not set: authentication is off".into());
        };
        let previous = self
            .key_ring
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let keys = Arc::new(Keys::load(
            path,
            self.settings.replay_window,
            self.settings.max_gateways,
            previous.as_deref(),
        )?);
        for (i, peer) in self.peers.iter().enumerate() {
            peer.inbox
                .send_timeout(Inbox::Keys(keys.clone()), std::time::Duration::from_secs(5))
                .map_err(|_| format!("shard {i} did not take the new keys"))?;
            let _ = peer.waker.wake();
        }
        let n = keys.len();
        *self.key_ring.lock().unwrap_or_else(|e| e.into_inner()) = Some(keys);
        Ok(n)
    }

    /// Whether any thread has stopped (which only happens on an error or shutdown).
    pub fn any_stopped(&self) -> bool {
        self.shards.iter().any(JoinHandle::is_finished) || self.link_handle.is_finished()
    }
}

/// Tells systemd that start-up is complete (`Type=notify` units); does nothing elsewhere.
pub fn notify_ready() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let path = path.to_string_lossy().into_owned();
    let addr = match path.strip_prefix('@') {
        Some(name) => UnixAddr::from_abstract_name(name.as_bytes()),
        None => UnixAddr::from_pathname(&path),
    };
    if let (Ok(addr), Ok(socket)) = (addr, UnixDatagram::unbound()) {
        // Best effort: systemd times the unit out if the notification is lost.
        let _ = socket.send_to_addr(b"READY=1", &addr);
    }
}
