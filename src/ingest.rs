//! Heartbeat sockets: creation with socket2 (SO_REUSEPORT group, large receive buffer,
//! non-blocking) and batched receive with `recvmmsg` (many datagrams per system call).

use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

/// Receive buffer per datagram: larger than the largest valid datagram, so an oversized one is
/// seen as oversized (and refused) instead of silently truncated to a length that may pass.
pub const SLOT_LEN: usize = 2048;

/// Binds a non-blocking UDP socket for heartbeats; `reuse_port` joins the SO_REUSEPORT group
/// in which the kernel spreads datagrams over the shards by source address.
pub fn bind_udp(
    addr: SocketAddr,
    reuse_port: bool,
    recv_buffer: usize,
) -> io::Result<std::net::UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_port(reuse_port)?;
    socket.set_recv_buffer_size(recv_buffer)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Buffers for one `recvmmsg` call of up to `batch` datagrams, allocated once.
pub struct RecvBatch {
    buffers: Box<[u8]>,
    iovecs: Box<[libc::iovec]>,
    headers: Box<[libc::mmsghdr]>,
    received: usize,
}

// SAFETY: the raw pointers inside `iovecs`/`headers` point into `buffers`/`iovecs`, which are
// owned by the same struct and never reallocated; moving the struct moves only the boxes.
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
            received: 0,
        }
    }

    /// Receives up to the batch size of datagrams without blocking; returns how many (0 when
    /// none is waiting).
    pub fn recv(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        for (h, iov) in self.headers.iter_mut().zip(self.iovecs.iter_mut()) {
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: `headers` holds `len` valid mmsghdr whose iovecs point at SLOT_LEN-byte
        // regions of `buffers`, all alive for the call; a null timeout is allowed.
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

    /// Datagram `i` of the last `recv`, and whether the kernel truncated it.
    pub fn datagram(&self, i: usize) -> (&[u8], bool) {
        assert!(i < self.received);
        let h = &self.headers[i];
        let len = (h.msg_len as usize).min(SLOT_LEN);
        let truncated = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
        (&self.buffers[i * SLOT_LEN..i * SLOT_LEN + len], truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receives_a_batch_over_loopback() {
        let rx = bind_udp("127.0.0.1:0".parse().unwrap(), false, 1 << 20).unwrap();
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
                let (d, truncated) = batch.datagram(i);
                got.push((d.len(), truncated));
            }
            if got.len() == 6 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let mut expected: Vec<(usize, bool)> = (0..5).map(|i| (10 + i, false)).collect();
        expected.push((SLOT_LEN, true));
        assert_eq!(got, expected);
    }
}
