//! Heartbeat sockets: creation with socket2 (SO_REUSEPORT group, large receive buffer, the
//! `ingest.allow` filter, non-blocking) and batched receive with `recvmmsg` (many datagrams
//! and their source addresses per system call).

pub mod allow;

use allow::Cidr;
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd};

/// Receive buffer per datagram: larger than the largest valid datagram, so an oversized one is
/// seen as oversized (and refused) instead of silently truncated to a length that may pass.
pub const SLOT_LEN: usize = 2048;
const _: () = assert!(SLOT_LEN > presenced_wire::MAX_DATAGRAM_LEN);

/// Binds a non-blocking UDP socket for heartbeats; `reuse_port` joins the SO_REUSEPORT group
/// in which the kernel spreads datagrams over the shards by source address. A non-empty
/// `allow` (at most [`allow::MAX_ALLOW_ENTRIES`]) is attached as a socket filter before the
/// socket is bound, so no datagram from elsewhere is ever queued.
pub fn bind_udp(
    addr: SocketAddr,
    reuse_port: bool,
    recv_buffer_bytes: usize,
    allow: &[Cidr],
) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_port(reuse_port)?;
    socket.set_recv_buffer_size(recv_buffer_bytes)?;
    if recv_buffer_of(&socket) < recv_buffer_bytes {
        // Capped at net.core.rmem_max: a process with CAP_NET_ADMIN may go past it. Without
        // the capability this fails and the capped size stays (the daemon says so at start).
        force_recv_buffer(&socket, recv_buffer_bytes);
    }
    enable_drop_counter(&socket)?;
    if !allow.is_empty() {
        attach_filter(&socket, &allow::program(allow, &[], addr.ip()))?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// SO_RXQ_OVFL: every received datagram carries the socket's count of datagrams the kernel
/// dropped for want of buffer room, which the shard turns into its `kernel_dropped` counter.
fn enable_drop_counter(socket: &Socket) -> io::Result<()> {
    set_int_option(socket, libc::SO_RXQ_OVFL, 1)
}

/// Replaces the filter of a bound heartbeat socket with `allow` and the blocked sources
/// `deny` (at most [`allow::MAX_KERNEL_BLOCKS`]); with neither, the socket takes every
/// datagram again.
pub fn set_filter(socket: &impl AsFd, allow: &[Cidr], deny: &[IpAddr]) -> io::Result<()> {
    let socket = socket2::SockRef::from(socket);
    let family = socket
        .local_addr()?
        .as_socket()
        .map(|a| a.ip())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket"))?;
    attach_filter(&socket, &allow::program(allow, deny, family))
}

/// SO_ATTACH_FILTER: the kernel runs `program` on every datagram before queueing it (a
/// filter attached before is replaced).
fn attach_filter(socket: &Socket, program: &[allow::Insn]) -> io::Result<()> {
    let len = u16::try_from(program.len())
        .ok()
        .filter(|&n| usize::from(n) <= allow::BPF_MAXINSNS)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "socket filter too long"))?;
    let fprog = libc::sock_fprog {
        len,
        // The kernel copies the program and never writes through this pointer.
        filter: program.as_ptr().cast_mut().cast(),
    };
    // SAFETY: `fprog` points at `len` instructions laid out as `struct sock_filter` (checked
    // in `allow`), alive for the call; the kernel reads `size_of::<sock_fprog>()` bytes.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            std::ptr::from_ref(&fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A SOL_SOCKET option whose value is a C int (socket2 has no setter for these two).
fn set_int_option(socket: &Socket, option: libc::c_int, value: libc::c_int) -> io::Result<()> {
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live local.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The receive buffer a socket got, in the units SO_RCVBUF is set in (Linux reports twice the
/// size set, the other half being its bookkeeping allowance).
pub fn recv_buffer_of(socket: impl std::os::fd::AsFd) -> usize {
    socket2::SockRef::from(&socket)
        .recv_buffer_size()
        .map_or(0, |doubled| doubled / 2)
}

/// The socket's count of datagrams the kernel dropped (full buffer or its filter), read with
/// SO_MEMINFO: the same count SO_RXQ_OVFL hands out with each datagram received, for a socket
/// that receives none (its filter drops all that comes).
pub fn socket_drops(socket: &impl AsFd) -> io::Result<u32> {
    let mut info = [0u32; libc::SK_MEMINFO_DROPS as usize + 1];
    let mut len = std::mem::size_of_val(&info) as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `info`, a live local, and the
    // length it wrote into `len`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_MEMINFO,
            info.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if (len as usize) < std::mem::size_of_val(&info) {
        return Err(io::Error::other("SO_MEMINFO without the drop count"));
    }
    Ok(info[libc::SK_MEMINFO_DROPS as usize])
}

/// A socket's kernel drop count as last seen. The kernel hands the count out two ways: with
/// each datagram received (SO_RXQ_OVFL: the count when that datagram was queued) and on request
/// ([`socket_drops`]: the count now). A datagram queued before a read therefore brings an older
/// count than the read gave, so the count only moves forwards here: an older one adds nothing
/// (taken as new, it would have wrapped to some 4 billion drops).
#[derive(Clone, Copy, Debug, Default)]
pub struct DropCount(u32);

impl DropCount {
    /// Takes a count read from the kernel; returns the drops since the newest seen (the
    /// kernel's count wraps at 2^32: a count less than 2^31 ahead is newer).
    pub fn advance(&mut self, seen: u32) -> u32 {
        let ahead = seen.wrapping_sub(self.0);
        if ahead == 0 || ahead > i32::MAX as u32 {
            return 0;
        }
        self.0 = seen;
        ahead
    }
}

/// SO_RCVBUFFORCE: sets the receive buffer past net.core.rmem_max (needs CAP_NET_ADMIN).
/// A failure (no capability) only leaves the size already set.
fn force_recv_buffer(socket: &Socket, bytes: usize) {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let _ = set_int_option(socket, libc::SO_RCVBUFFORCE, value);
}

/// Control-message room per datagram, in u64 words: one SO_RXQ_OVFL message (a u32) needs
/// `CMSG_SPACE(4)` = 16 bytes on 64-bit Linux, 32 leaves room for anything else the kernel adds.
const CONTROL_WORDS: usize = 4;

/// Buffers for one `recvmmsg` call of up to `batch` datagrams, allocated once.
pub struct RecvBatch {
    buffers: Box<[u8]>,
    iovecs: Box<[libc::iovec]>,
    headers: Box<[libc::mmsghdr]>,
    /// Control messages, `CONTROL_WORDS` per datagram (u64 words: cmsghdr alignment).
    control: Box<[u64]>,
    /// Each datagram's source address.
    names: Box<[libc::sockaddr_storage]>,
    received: usize,
}

// SAFETY: the raw pointers inside `iovecs`/`headers` point into `buffers`/`iovecs`/`control`/`names`,
// which are owned by the same struct and never reallocated; moving the struct moves only the
// boxes.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    /// Buffers for `batch` datagrams.
    pub fn new(batch: usize) -> RecvBatch {
        assert!(batch > 0);
        let mut buffers = vec![0u8; batch * SLOT_LEN].into_boxed_slice();
        let mut iovecs: Box<[libc::iovec]> = buffers
            .chunks_mut(SLOT_LEN)
            .map(|chunk| libc::iovec {
                iov_base: chunk.as_mut_ptr().cast(),
                iov_len: SLOT_LEN,
            })
            .collect();
        let headers = iovecs
            .iter_mut()
            .map(|iov| {
                // SAFETY: mmsghdr is plain data; all-zero is a valid value (null name/control).
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        RecvBatch {
            buffers,
            iovecs,
            headers,
            control: vec![0u64; batch * CONTROL_WORDS].into_boxed_slice(),
            // SAFETY: sockaddr_storage is plain data; all-zero is a valid value.
            names: vec![unsafe { std::mem::zeroed::<libc::sockaddr_storage>() }; batch]
                .into_boxed_slice(),
            received: 0,
        }
    }

    /// Datagrams one call receives at most (the batch size).
    pub fn capacity(&self) -> usize {
        self.headers.len()
    }

    /// Receives up to the batch size of datagrams without blocking; returns how many (0 when
    /// none is waiting).
    pub fn recv(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        let controls = self.control.chunks_mut(CONTROL_WORDS);
        for (((h, iov), control), name) in self
            .headers
            .iter_mut()
            .zip(self.iovecs.iter_mut())
            .zip(controls)
            .zip(self.names.iter_mut())
        {
            h.msg_hdr.msg_name = std::ptr::from_mut(name).cast();
            h.msg_hdr.msg_namelen = std::mem::size_of_val(name) as libc::socklen_t;
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = control.as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = std::mem::size_of_val(control) as _;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: `headers` holds `len` valid mmsghdr whose iovecs point at SLOT_LEN-byte
        // regions of `buffers`, whose control buffers at `control` and whose names at `names`,
        // all alive for the call;
        // a null timeout is allowed.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                self.headers.as_mut_ptr(),
                self.headers.len() as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            self.received = 0;
            return match err.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(err),
            };
        }
        self.received = n as usize;
        Ok(self.received)
    }

    /// Datagram `i` of the last `recv`. One the kernel truncated fills its whole slot, which
    /// is longer than any valid datagram, so it is refused as too long.
    pub fn datagram(&self, i: usize) -> &[u8] {
        assert!(i < self.received);
        let h = &self.headers[i];
        let len = (h.msg_len as usize).min(SLOT_LEN);
        &self.buffers[i * SLOT_LEN..i * SLOT_LEN + len]
    }

    /// The source address of datagram `i` of the last `recv` (unspecified in the unexpected
    /// case of an address that is neither IPv4 nor IPv6).
    pub fn source(&self, i: usize) -> IpAddr {
        assert!(i < self.received);
        let name = &self.names[i];
        match libc::c_int::from(name.ss_family) {
            libc::AF_INET => {
                // SAFETY: the kernel wrote a sockaddr_in here (its family says so), which
                // sockaddr_storage is large and aligned enough to hold.
                let v4 = unsafe { &*std::ptr::from_ref(name).cast::<libc::sockaddr_in>() };
                IpAddr::V4(Ipv4Addr::from(v4.sin_addr.s_addr.to_ne_bytes()))
            }
            libc::AF_INET6 => {
                // SAFETY: as above, a sockaddr_in6.
                let v6 = unsafe { &*std::ptr::from_ref(name).cast::<libc::sockaddr_in6>() };
                IpAddr::V6(Ipv6Addr::from(v6.sin6_addr.s6_addr))
            }
            _ => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }
    }

    /// The socket's running count of datagrams the kernel dropped (SO_RXQ_OVFL), as carried
    /// by the last datagram of the last `recv`; `None` if it carried none (no drop yet).
    pub fn kernel_drops(&self) -> Option<u32> {
        let h = &self.headers[self.received.checked_sub(1)?].msg_hdr;
        // SAFETY: `h` was filled by recvmmsg: msg_control/msg_controllen describe control
        // messages inside `self.control`, which CMSG_FIRSTHDR/CMSG_NXTHDR stay within; the
        // data of an SO_RXQ_OVFL message is a u32, read unaligned.
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(h);
            while !cmsg.is_null() {
                let c = &*cmsg;
                if c.cmsg_level == libc::SOL_SOCKET && c.cmsg_type == libc::SO_RXQ_OVFL {
                    return Some(std::ptr::read_unaligned(
                        libc::CMSG_DATA(cmsg).cast::<u32>(),
                    ));
                }
                cmsg = libc::CMSG_NXTHDR(h, cmsg);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_drop_count_only_moves_forwards() {
        let mut count = DropCount::default();
        assert_eq!(count.advance(1000), 1000);
        // A datagram queued before the last read brings an older count: no drops, no change.
        assert_eq!(count.advance(900), 0);
        assert_eq!(count.advance(1000), 0);
        assert_eq!(count.advance(1005), 5);
        // Across the wrap at 2^32, reached in steps of less than 2^31.
        let mut count = DropCount::default();
        count.advance(i32::MAX as u32);
        count.advance(u32::MAX - 1);
        assert_eq!(count.advance(3), 5);
        assert_eq!(count.advance(u32::MAX), 0);
    }

    #[test]
    fn receives_a_batch_over_loopback() {
        let rx = bind_udp("127.0.0.1:0".parse().unwrap(), false, 1 << 20, &[]).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        for i in 0..5u8 {
            tx.send_to(&vec![i; 10 + i as usize], to).unwrap();
        }
        tx.send_to(&[7u8; 3000], to).unwrap();
        let mut batch = RecvBatch::new(4);
        let mut got = Vec::new();
        for _ in 0..200 {
            let n = batch.recv(&rx).unwrap();
            for i in 0..n {
                got.push(batch.datagram(i).len());
                assert_eq!(batch.source(i), tx.local_addr().unwrap().ip());
            }
            if got.len() == 6 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mut expected: Vec<usize> = (0..5).map(|i| 10 + i).collect();
        expected.push(SLOT_LEN);
        assert_eq!(got, expected);
    }

    #[test]
    fn reports_the_receive_buffer_it_set() {
        // 64 KiB is below every kernel's default rmem_max: it is granted exactly.
        let socket = bind_udp("127.0.0.1:0".parse().unwrap(), false, 64 << 10, &[]).unwrap();
        assert_eq!(recv_buffer_of(&socket), 64 << 10);
    }

    #[test]
    fn counts_what_the_kernel_dropped() {
        let rx = bind_udp("127.0.0.1:0".parse().unwrap(), false, 4096, &[]).unwrap();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = rx.local_addr().unwrap();
        let mut batch = RecvBatch::new(64);
        // Far more than a 4 KiB buffer holds: most are dropped.
        for _ in 0..200 {
            tx.send_to(&[1u8; 1000], to).unwrap();
        }
        let mut queued = 0;
        loop {
            let n = batch.recv(&rx).unwrap();
            if n == 0 {
                break;
            }
            queued += n;
        }
        assert!(queued < 200);
        // The count rides on datagrams queued after the drops.
        tx.send_to(&[2u8; 10], to).unwrap();
        let mut drops = None;
        for _ in 0..200 {
            if batch.recv(&rx).unwrap() > 0 {
                drops = batch.kernel_drops();
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(drops, Some(200 - queued as u32));
    }

    #[test]
    fn the_allow_list_filters_in_the_kernel() {
        let allow = ["127.0.0.2/32".parse().unwrap()];
        let rx = bind_udp("127.0.0.1:0".parse().unwrap(), false, 1 << 20, &allow).unwrap();
        let to = rx.local_addr().unwrap();
        // Every address of 127.0.0.0/8 is loopback on Linux.
        let listed = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
        let unlisted = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..3u8 {
            unlisted.send_to(&[i; 10], to).unwrap();
            listed.send_to(&[i; 20], to).unwrap();
        }
        let mut batch = RecvBatch::new(8);
        let mut got = Vec::new();
        for _ in 0..100 {
            let n = batch.recv(&rx).unwrap();
            got.extend((0..n).map(|i| (batch.source(i), batch.datagram(i).len())));
            if got.len() >= 3 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // Anything unlisted would be queued before the last listed one: none was.
        let from = listed.local_addr().unwrap().ip();
        assert_eq!(got, vec![(from, 20); 3]);
        // The kernel counts what the filter dropped among the socket's drops.
        assert_eq!(batch.kernel_drops(), Some(3));
    }

    #[test]
    fn blocked_sources_are_dropped_in_the_kernel_and_counted_without_a_receive() {
        let rx = bind_udp("127.0.0.1:0".parse().unwrap(), false, 1 << 20, &[]).unwrap();
        let to = rx.local_addr().unwrap();
        let flooder = std::net::UdpSocket::bind("127.0.0.3:0").unwrap();
        let gateway = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
        let blocked = [flooder.local_addr().unwrap().ip()];
        set_filter(&rx, &[], &blocked).unwrap();
        for i in 0..5u8 {
            flooder.send_to(&[i; 10], to).unwrap();
        }
        // Nothing to receive, and yet the drops are known.
        let mut batch = RecvBatch::new(8);
        assert_eq!(batch.recv(&rx).unwrap(), 0);
        assert_eq!(socket_drops(&rx).unwrap(), 5);
        gateway.send_to(&[9; 20], to).unwrap();
        // The block ends: the filter takes everyone again.
        set_filter(&rx, &[], &[]).unwrap();
        flooder.send_to(&[7; 30], to).unwrap();
        let mut got = Vec::new();
        for _ in 0..100 {
            let n = batch.recv(&rx).unwrap();
            got.extend((0..n).map(|i| (batch.source(i), batch.datagram(i).len())));
            if got.len() >= 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let gateway = gateway.local_addr().unwrap().ip();
        assert_eq!(got, vec![(gateway, 20), (blocked[0], 30)]);
        assert_eq!(socket_drops(&rx).unwrap(), 5);
    }
}
