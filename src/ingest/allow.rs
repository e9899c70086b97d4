//! `ingest.allow`: the source networks heartbeat sockets accept, compiled to a classic BPF
//! socket filter, with the source addresses the shard has blocked for failing decoding or
//! authentication (`ingest.kernel_blocks` of them, re-attached as blocks begin and end).
//!
//! The filter runs in the kernel before a datagram is queued on the socket, so a datagram from
//! an unlisted source takes no receive-buffer room and costs the daemon nothing: a flood from
//! elsewhere cannot crowd valid datagrams out of the buffer. The kernel counts each datagram
//! the filter drops among the socket's drops, so they appear in `kernel_dropped` (SO_RXQ_OVFL).
//!
//! The filter reads the source address in the IP header (`SKF_NET_OFF`) as the kernel delivers
//! the packet, after any NAT on this host. Heartbeat sockets on IPv6 are IPv6-only (`ingest.rs`),
//! so an IPv4 datagram always arrives at an IPv4 socket with its IPv4 address: an IPv4-mapped
//! entry (`::ffff:10.0.0.0/104`) is read as the IPv4 network it maps (`10.0.0.0/8`), and an
//! IPv4 socket's filter holds the IPv4 entries, an IPv6 socket's the others. A family with no
//! entry accepts nothing once the list is not empty.
//!
//! The program is data ([`Insn`], the layout of `struct sock_filter`), built by a pure
//! function and tested by interpreting it; `ingest.rs` attaches it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The most instructions a classic BPF program may have (the kernel's `BPF_MAXINSNS`).
pub const BPF_MAXINSNS: usize = 4096;
/// The most instructions one entry compiles to: an IPv6 prefix compares up to four 32-bit
/// words, each a load and a jump, the last also a mask (a partial word); then the accept.
pub const MAX_ENTRY_INSNS: usize = 4 * 2 + 1 + 1;
/// The most blocked sources a filter drops (`ingest.kernel_blocks` at most): each an exact
/// address, at most [`MAX_ENTRY_INSNS`].
pub const MAX_KERNEL_BLOCKS: usize = 64;
/// The most entries `ingest.allow` may list: any such list compiles within [`BPF_MAXINSNS`]
/// beside [`MAX_KERNEL_BLOCKS`] blocked sources (each entry at most [`MAX_ENTRY_INSNS`], and
/// the final return).
pub const MAX_ALLOW_ENTRIES: usize =
    (BPF_MAXINSNS - 1 - MAX_KERNEL_BLOCKS * MAX_ENTRY_INSNS) / MAX_ENTRY_INSNS;

/// One classic BPF instruction, laid out as the kernel's `struct sock_filter`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Insn {
    /// Operation.
    pub code: u16,
    /// Jump offset when true.
    pub jt: u8,
    /// Jump offset when false.
    pub jf: u8,
    /// Operand.
    pub k: u32,
}

const _: () = assert!(std::mem::size_of::<Insn>() == std::mem::size_of::<libc::sock_filter>());

/// `BPF_LD | BPF_W | BPF_ABS`: load the 32-bit big-endian word at `k`.
const LD_W_ABS: u16 = 0x20;
/// `BPF_ALU | BPF_AND | BPF_K`.
const AND_K: u16 = 0x54;
/// `BPF_JMP | BPF_JEQ | BPF_K`.
const JEQ_K: u16 = 0x15;
/// `BPF_RET | BPF_K`: the bytes of the packet to keep (0: drop it).
const RET_K: u16 = 0x06;
/// `SKF_NET_OFF`: loads at this offset plus `n` read byte `n` of the network header.
const SKF_NET_OFF: u32 = (-0x10_0000i32) as u32;
/// The source address in an IPv4 header, and in an IPv6 header.
const IPV4_SOURCE: u32 = 12;
const IPV6_SOURCE: u32 = 8;
const ACCEPT: u32 = u32::MAX;

/// A network, `10.0.0.0/8` or `2001:db8::/32`; an address alone is one host. IPv4-mapped IPv6
/// networks are held as IPv4 (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// The mask of the first `prefix` bits of a 32-bit word (`prefix` ≤ 32).
fn mask32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    /// Reads `ADDRESS[/PREFIX]`; the error says what is wrong and what to write.
    fn from_str(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| {
            format!("`{text}` is not a network such as 10.0.0.0/8, 2001:db8::/32 or 192.0.2.7")
        })?;
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= bits)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {bits}"))?,
        };
        let (addr, prefix) = match addr {
            IpAddr::V6(v6) if prefix >= 96 => match v6.to_ipv4_mapped() {
                Some(v4) => (IpAddr::V4(v4), prefix - 96),
                None => (addr, prefix),
            },
            _ => (addr, prefix),
        };
        let network = match addr {
            IpAddr::V4(v4) => IpAddr::V4(Ipv4Addr::from_bits(v4.to_bits() & mask32(prefix))),
            IpAddr::V6(v6) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from_bits(v6.to_bits() & mask))
            }
        };
        if network != addr {
            return Err(format!(
                "`{text}` has address bits set past its prefix length; write {network}/{prefix} \
                 for the network, or {addr} alone for the one host"
            ));
        }
        Ok(Cidr { addr, prefix })
    }
}

/// The filter for a socket of `family` (the address it is bound to): drops a datagram whose
/// source is one of `deny`'s addresses (at most [`MAX_KERNEL_BLOCKS`]); then, with `allow`
/// empty, accepts the rest; otherwise accepts a source that lies in one of `allow`'s networks
/// of that family and drops the rest. At most `(deny.len() + allow.len()) × MAX_ENTRY_INSNS
/// + 1` instructions.
pub fn program(allow: &[Cidr], deny: &[IpAddr], family: IpAddr) -> Vec<Insn> {
    let mut program = Vec::new();
    for &addr in deny {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        entry(&mut program, Cidr { addr, prefix }, family, 0);
    }
    if allow.is_empty() {
        program.push(insn(RET_K, ACCEPT));
        return program;
    }
    for &cidr in allow {
        entry(&mut program, cidr, family, ACCEPT);
    }
    program.push(insn(RET_K, 0));
    program
}

/// Appends the test of one network, which returns `verdict` for a source in it and goes on to
/// what follows for any other; nothing for a network of the other family.
fn entry(program: &mut Vec<Insn>, cidr: Cidr, family: IpAddr, verdict: u32) {
    let (words, source): (Vec<u32>, u32) = match (cidr.addr, family) {
        (IpAddr::V4(net), IpAddr::V4(_)) => (vec![net.to_bits()], IPV4_SOURCE),
        (IpAddr::V6(net), IpAddr::V6(_)) => {
            let o = net.octets();
            let words = o
                .chunks(4)
                .map(|w| u32::from_be_bytes([w[0], w[1], w[2], w[3]]))
                .collect();
            (words, IPV6_SOURCE)
        }
        _ => return,
    };
    let start = program.len();
    let mut jumps = Vec::new();
    let mut left = cidr.prefix;
    for (i, word) in words.into_iter().enumerate() {
        if left == 0 {
            break;
        }
        let bits = left.min(32);
        left -= bits;
        program.push(insn(LD_W_ABS, SKF_NET_OFF + source + 4 * i as u32));
        if bits < 32 {
            program.push(insn(AND_K, mask32(bits)));
        }
        jumps.push(program.len());
        program.push(insn(JEQ_K, word));
    }
    program.push(insn(RET_K, verdict));
    // A word that differs skips to the next entry.
    let next = program.len();
    for at in jumps {
        program[at].jf = u8::try_from(next - at - 1).expect("an entry is short");
    }
    debug_assert!(program.len() - start <= MAX_ENTRY_INSNS);
}

fn insn(code: u16, k: u32) -> Insn {
    Insn {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Runs `program` over a packet whose network header is `header`, as the kernel's socket
    /// filter would: `Some(bytes kept)`, or `None` for a program the kernel would stop.
    fn run(program: &[Insn], header: &[u8]) -> Option<u32> {
        let (mut pc, mut a) = (0usize, 0u32);
        loop {
            let i = program.get(pc)?;
            pc += 1;
            match i.code {
                LD_W_ABS => {
                    let at = i.k.checked_sub(SKF_NET_OFF)? as usize;
                    a = u32::from_be_bytes(header.get(at..at + 4)?.try_into().ok()?);
                }
                AND_K => a &= i.k,
                JEQ_K => pc += usize::from(if a == i.k { i.jt } else { i.jf }),
                RET_K => return Some(i.k),
                _ => return None,
            }
        }
    }

    /// A network header from `source`: IPv4 (20 bytes) or IPv6 (40).
    fn header(source: IpAddr) -> Vec<u8> {
        match source {
            IpAddr::V4(v4) => {
                let mut h = vec![0x45; 20];
                h[12..16].copy_from_slice(&v4.octets());
                h
            }
            IpAddr::V6(v6) => {
                let mut h = vec![0x60; 40];
                h[8..24].copy_from_slice(&v6.octets());
                h
            }
        }
    }

    fn accepts(allow: &[Cidr], source: IpAddr) -> bool {
        accepts_unless(allow, &[], source)
    }

    fn accepts_unless(allow: &[Cidr], deny: &[IpAddr], source: IpAddr) -> bool {
        let program = program(allow, deny, source);
        run(&program, &header(source)).expect("the program runs to a return") != 0
    }

    /// The reference: whether `ip` lies in `cidr`, by masks over whole addresses.
    fn contains(cidr: Cidr, ip: IpAddr) -> bool {
        match (cidr.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                ip.to_bits() & mask32(cidr.prefix) == net.to_bits()
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(cidr.prefix))
                    .unwrap_or(0);
                ip.to_bits() & mask == net.to_bits()
            }
            _ => false,
        }
    }

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|c| c.parse().unwrap()).collect()
    }

    #[test]
    fn accepts_listed_sources_only() {
        let allow = cidrs(&[
            "10.0.0.0/8",
            "192.0.2.7",
            "2001:db8::/32",
            "::ffff:198.51.100.0/120",
        ]);
        for (source, expected) in [
            ("10.200.3.4", true),
            ("11.0.0.1", false),
            ("192.0.2.7", true),
            ("192.0.2.8", false),
            ("198.51.100.77", true),
            ("198.51.101.1", false),
            ("2001:db8:ffff::1", true),
            ("2001:db9::1", false),
            ("::ffff:10.0.0.1", false),
        ] {
            let ip: IpAddr = source.parse().unwrap();
            assert_eq!(accepts(&allow, ip), expected, "{source}");
        }
    }

    #[test]
    fn a_family_without_entries_accepts_nothing_and_zero_prefixes_everything() {
        let v4_only = cidrs(&["10.0.0.0/8"]);
        assert!(!accepts(&v4_only, "2001:db8::1".parse().unwrap()));
        let everyone = cidrs(&["0.0.0.0/0", "::/0"]);
        assert!(accepts(&everyone, "203.0.113.9".parse().unwrap()));
        assert!(accepts(&everyone, "fe80::1".parse().unwrap()));
        assert_eq!(
            program(&everyone, &[], "127.0.0.1".parse().unwrap()).len(),
            2
        );
    }

    #[test]
    fn blocked_sources_are_dropped_and_the_rest_judged_by_the_list() {
        let blocked: Vec<IpAddr> = ["127.0.0.3", "10.1.2.3", "2001:db8::7"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
        let allow = cidrs(&["10.0.0.0/8", "2001:db8::/32"]);
        for (source, everyone, listed) in [
            ("127.0.0.3", false, false),
            ("127.0.0.1", true, false),
            ("10.1.2.3", false, false),
            ("10.1.2.4", true, true),
            ("2001:db8::7", false, false),
            ("2001:db8::8", true, true),
            ("fe80::1", true, false),
        ] {
            let ip: IpAddr = source.parse().unwrap();
            assert_eq!(
                accepts_unless(&[], &blocked, ip),
                everyone,
                "{source}, no list"
            );
            assert_eq!(
                accepts_unless(&allow, &blocked, ip),
                listed,
                "{source}, listed"
            );
        }
        assert_eq!(program(&[], &[], "::1".parse().unwrap()).len(), 1);
    }

    #[test]
    fn parse_errors_say_what_to_write() {
        for (text, says) in [
            ("10.0.0.1/8", "write 10.0.0.0/8"),
            ("10.0.0.0/33", "0 to 32"),
            ("2001:db8::/129", "0 to 128"),
            ("example.com", "not a network"),
            ("10.0.0.0/", "0 to 32"),
        ] {
            let e = text.parse::<Cidr>().unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
        let mapped: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
        assert_eq!(mapped, "10.0.0.0/8".parse().unwrap());
        assert_eq!(mapped.to_string(), "10.0.0.0/8");
    }

    #[test]
    fn the_most_entries_fit_a_program() {
        // The longest entry: an IPv6 prefix ending inside its last word.
        let longest: Cidr = "2001:db8::/127".parse().unwrap();
        let family: IpAddr = "::1".parse().unwrap();
        assert_eq!(program(&[longest], &[], family).len(), MAX_ENTRY_INSNS + 1);
        let blocked: Vec<IpAddr> = (1..=MAX_KERNEL_BLOCKS as u128)
            .map(|n| IpAddr::V6(Ipv6Addr::from_bits(n)))
            .collect();
        let program = program(&vec![longest; MAX_ALLOW_ENTRIES], &blocked, family);
        assert!(program.len() <= BPF_MAXINSNS, "{}", program.len());
    }

    fn any_cidr() -> impl Strategy<Value = Cidr> {
        prop_oneof![
            (any::<u32>(), 0u8..=32).prop_map(|(a, p)| {
                let addr = Ipv4Addr::from_bits(a & mask32(p));
                format!("{addr}/{p}").parse().unwrap()
            }),
            (any::<u128>(), 0u8..=128).prop_map(|(a, p)| {
                let mask = u128::MAX.checked_shl(128 - u32::from(p)).unwrap_or(0);
                format!("{}/{p}", Ipv6Addr::from_bits(a & mask))
                    .parse()
                    .unwrap()
            }),
        ]
    }

    /// A source near one of the networks: inside it or a bit flip away, of either family.
    fn source_near(allow: &[Cidr], pick: usize, flip: u32, v4: u32, v6: u128) -> IpAddr {
        match allow.get(pick % allow.len().max(1)).map(|c| c.addr) {
            Some(IpAddr::V4(a)) => IpAddr::V4(Ipv4Addr::from_bits(a.to_bits() ^ (v4 >> flip))),
            Some(IpAddr::V6(a)) => {
                IpAddr::V6(Ipv6Addr::from_bits(a.to_bits() ^ (v6 >> (flip * 4))))
            }
            None => IpAddr::V4(Ipv4Addr::from_bits(v4)),
        }
    }

    proptest! {
        /// The program accepts exactly the sources some entry contains.
        #[test]
        fn the_program_agrees_with_contains(
            allow in proptest::collection::vec(any_cidr(), 0..12),
            pick in any::<usize>(),
            flip in 0u32..32,
            v4 in any::<u32>(),
            v6 in any::<u128>(),
        ) {
            let source = source_near(&allow, pick, flip, v4, v6);
            let expected = allow.is_empty() || allow.iter().any(|&c| contains(c, source));
            prop_assert_eq!(accepts(&allow, source), expected);
        }
    }
}
