//! `presence-flood`: floods a presenced heartbeat port with hostile datagrams as fast as it
//! can — random bytes, well-formed datagrams with forged tags, and replays of datagrams signed
//! with a real key — to measure what the daemon loses meanwhile. For testing your own daemon
//! on a network you own.

use clap::{Parser, ValueEnum};
use presenced_wire::auth::Key;
use presenced_wire::{Encoder, Entry, Header, State, MAX_ENTRIES};
use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus as Rng;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Flood a presenced heartbeat port with hostile datagrams.
#[derive(Parser, Debug)]
#[command(name = "presence-flood", version)]
struct Cli {
    /// The heartbeat address to flood.
    #[arg(long, default_value = "127.0.0.1:7070", value_name = "ADDR")]
    target: SocketAddr,
    /// What to send (repeatable; default: all kinds, in turn).
    #[arg(long = "kind", value_enum)]
    kinds: Vec<Kind>,
    /// The gateway whose signed datagrams are replayed (with --key-file).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    gateway: u32,
    /// Key of --gateway (64 hex digits): `replay` sends datagrams signed with it, again and
    /// again, as an eavesdropper would.
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// The local address to send from (default: any, the kernel picks): a flood from its own
    /// address, e.g. 127.0.0.3 on loopback, next to gateways that send from others.
    #[arg(long, value_name = "IP")]
    source: Option<std::net::IpAddr>,
    /// Sending threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    threads: u16,
    /// How long to flood, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = presenced_tools::parse_duration)]
    duration: Duration,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// A kind of hostile datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// Random bytes of random length (1 to 1600).
    Random,
    /// Well-formed, signed, with a random tag: refused as `bad_mac` (or `unknown_gateway`).
    Forged,
    /// Datagrams signed with --key-file, sent again and again: refused as `replayed`.
    Replay,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A full datagram of `gateway` with random users, signed with `key`.
fn signed(rng: &mut Rng, gateway: u32, sequence: u64, key: &Key) -> Vec<u8> {
    let mut enc = Encoder::new(Header::new(gateway, 1, sequence, now_ms()));
    for _ in 0..MAX_ENTRIES {
        let entry = Entry {
            user: rng.next_u64() | 1,
            device: 1,
            state: State::Online,
            active: true,
        };
        if enc.push(entry).is_err() {
            break;
        }
    }
    enc.finish_signed(key)
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let kinds = if cli.kinds.is_empty() {
        let mut all = vec![Kind::Random, Kind::Forged];
        if cli.key_file.is_some() {
            all.push(Kind::Replay);
        }
        all
    } else {
        cli.kinds.clone()
    };
    let key = match &cli.key_file {
        Some(path) => match presenced_client::read_key_file(path) {
            Ok(key) => Some(key),
            Err(e) => {
                eprintln!("presence-flood: --key-file {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
        None => None,
    };
    if kinds.contains(&Kind::Replay) && key.is_none() {
        eprintln!("presence-flood: --kind replay needs --key-file (the key of --gateway)");
        return ExitCode::from(2);
    }
    // Replays: a few datagrams signed once. The first copy of each may be accepted (as the
    // original would have been); every later one is a replay.
    let mut rng = Rng::seed_from_u64(now_ms());
    let replays: Vec<Vec<u8>> = match &key {
        Some(k) => (0..16)
            .map(|i| signed(&mut rng, cli.gateway, (1 << 40) + i, k))
            .collect(),
        None => Vec::new(),
    };
    let forged_key = Key::new([0x66; 32]);
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let handles: Vec<_> = (0..cli.threads)
        .map(|t| {
            let (stop, sent, errors) = (stop.clone(), sent.clone(), errors.clone());
            let (kinds, replays, forged_key) = (kinds.clone(), replays.clone(), forged_key.clone());
            let target = cli.target;
            let gateway = cli.gateway;
            let source = cli.source;
            std::thread::spawn(move || {
                let bind: SocketAddr = match source {
                    Some(ip) => (ip, 0).into(),
                    None if target.is_ipv6() => "[::]:0".parse().unwrap_or(target),
                    None => "0.0.0.0:0".parse().unwrap_or(target),
                };
                let Ok(socket) = UdpSocket::bind(bind) else {
                    errors.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let mut rng = Rng::seed_from_u64(now_ms() ^ ((u64::from(t) + 1) << 48));
                // Forged datagrams: made once per thread with a wrong key, then their tags
                // randomised per send.
                let mut forged = signed(&mut rng, gateway, 0, &forged_key);
                let mut buf = vec![0u8; 1600];
                let (mut n, mut local_errors) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..256 {
                        let kind = kinds[(n as usize) % kinds.len()];
                        let result = match kind {
                            Kind::Random => {
                                let len = 1 + (rng.next_u64() % 1600) as usize;
                                rng.fill_bytes(&mut buf[..len]);
                                socket.send_to(&buf[..len], target)
                            }
                            Kind::Forged => {
                                let at = forged.len() - 16;
                                rng.fill_bytes(&mut forged[at..]);
                                socket.send_to(&forged, target)
                            }
                            Kind::Replay => {
                                let d = &replays[(rng.next_u64() as usize) % replays.len()];
                                socket.send_to(d, target)
                            }
                        };
                        if result.is_err() {
                            local_errors += 1;
                        }
                        n += 1;
                    }
                }
                sent.fetch_add(n, Ordering::Relaxed);
                errors.fetch_add(local_errors, Ordering::Relaxed);
            })
        })
        .collect();
    std::thread::sleep(cli.duration);
    stop.store(true, Ordering::Relaxed);
    for h in handles {
        let _ = h.join();
    }
    let secs = started.elapsed().as_secs_f64();
    let sent = sent.load(Ordering::Relaxed);
    let errors = errors.load(Ordering::Relaxed);
    let rate = sent as f64 / secs;
    let kinds: Vec<String> = kinds
        .iter()
        .map(|k| format!("{k:?}").to_lowercase())
        .collect();
    if cli.json {
        println!(
            "{{\"sent\":{sent},\"send_errors\":{errors},\"seconds\":{secs:.3},\"rate_per_s\":{rate:.0},\"threads\":{},\"kinds\":{:?}}}",
            cli.threads, kinds
        );
    } else {
        println!(
            "sent {sent} hostile datagrams ({}) in {secs:.1} s: {rate:.0}/s from {} thread(s), {errors} send errors",
            kinds.join(", "),
            cli.threads
        );
    }
    ExitCode::SUCCESS
}
