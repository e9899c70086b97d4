//! `--target ws://HOST:PORT`: load a `presence-gateway` instead of the daemon, as browsers do.
//! Each simulated user is one browser (a WebSocket with a token minted from
//! `--gateway-secret-file`) whose roster is its partner (users pair up: base and base + 1, …).
//! Once every browser sees its partner online, each flips its page's visibility every
//! `--toggle-every` (phases spread evenly), and its partner must see the user go idle, then
//! online again. Latency is the flip's send → the partner's presence message, so browser →
//! gateway → daemon → gateway → browser, on one clock. A flip not seen by the end (plus
//! [`DRAIN`]) is a violation, as is an error message from the gateway.

use super::cli::Args;
use super::report::{grouped, ms, Percentiles};
use super::RunError;
use crate::gateway::protocol::{GatewayMessage, State};
use crate::gateway::token::Secret;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

/// Browsers connecting at once.
const CONNECTING_AT_ONCE: usize = 64;
/// How long browsers keep reading after the end, for the last flips to arrive.
pub const DRAIN: Duration = Duration::from_secs(2);
/// How long all browsers may take to connect and see their partners online.
const READY_WITHIN: Duration = Duration::from_secs(60);

/// A flip waiting to be seen: the state the partner must see, and when it was sent.
type Pending = Arc<Mutex<HashMap<u64, (State, Instant)>>>;

/// What a gateway run reports.
pub struct BrowserSummary {
    browsers: u32,
    connect: Percentiles,
    ready: Duration,
    flips: u64,
    latency: Percentiles,
    missed: u64,
    errors: u64,
    duration: Duration,
}

impl BrowserSummary {
    /// Flips never seen, and gateway errors: the run's violations.
    pub fn violations(&self) -> u64 {
        self.missed + self.errors
    }

    /// One JSON object (latencies in µs).
    pub fn to_json(&self) -> Value {
        json!({
            "target": "gateway",
            "browsers": self.browsers,
            "connect_us": self.connect.to_json(),
            "ready_ms": self.ready.as_millis() as u64,
            "duration_s": self.duration.as_secs_f64(),
            "flips": self.flips,
            "latency_us": self.latency.to_json(),
            "missed": self.missed,
            "errors": self.errors,
        })
    }

    /// The summary for people.
    pub fn table(&self) -> String {
        let rate = self.flips as f64 / self.duration.as_secs_f64().max(1e-9);
        format!(
            "browsers       {}  (all ready in {})\n\
             connect        {}\n\
             flips          {} in {:.1} s ({rate:.0}/s)\n\
             latency        {}  (browser -> gateway -> daemon -> gateway -> browser)\n\
             missed         {}\n\
             errors         {}\n",
            grouped(u64::from(self.browsers)),
            ms(self.ready.as_micros() as u64),
            self.connect.line(),
            grouped(self.flips),
            self.duration.as_secs_f64(),
            self.latency.line(),
            grouped(self.missed),
            grouped(self.errors),
        )
    }
}

fn partner(base: u64, i: u64, n: u64) -> u64 {
    let j = i ^ 1;
    base + if j < n { j } else { 0 }
}

/// Runs the gateway scenario against `url` (`ws://HOST:PORT`).
pub fn run(args: &Args, url: &str) -> Result<BrowserSummary, RunError> {
    let Some(secret_file) = &args.gateway_secret_file else {
        return Err(RunError::usage(
            "a ws:// target needs --gateway-secret-file (the gateway's --secret-file)",
        ));
    };
    let secret = Secret::from_file(secret_file).map_err(RunError::usage)?;
    if args.users < 2 {
        return Err(RunError::usage("a ws:// target needs --users 2 or more"));
    }
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| RunError::failed(format!("cannot start the runtime: {e}")))?;
    runtime.block_on(drive(args, url, secret))
}

async fn drive(args: &Args, url: &str, secret: Secret) -> Result<BrowserSummary, RunError> {
    let n = u64::from(args.users);
    let base = args.user_base;
    let expires = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 3600;
    let duration = args.duration.unwrap_or(Duration::from_secs(30));
    let every = args.toggle_every;
    let pending: Pending = Arc::default();
    let latency = Arc::new(Mutex::new(Histogram::<u64>::new(3).expect("histogram")));
    let errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let gate = Arc::new(Semaphore::new(CONNECTING_AT_ONCE));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<Result<Duration, String>>(1024);
    let start = Instant::now();
    let (go_at_tx, go_at) = tokio::sync::watch::channel(None::<Instant>);
    let mut tasks = Vec::new();
    for i in 0..n {
        let user = base + i;
        let watch = partner(base, i, n);
        let address = format!(
            "{}/ws?token={}",
            url.trim_end_matches('/'),
            secret.mint(user, expires)
        );
        let phase = every.mul_f64(i as f64 / n as f64);
        let browser = Browser {
            user,
            watch,
            pending: pending.clone(),
            latency: latency.clone(),
            errors: errors.clone(),
        };
        let (gate, ready_tx, go_at) = (gate.clone(), ready_tx.clone(), go_at.clone());
        tasks.push(tokio::spawn(async move {
            browser
                .run(address, gate, ready_tx, go_at, phase, every, duration)
                .await
        }));
    }
    drop(ready_tx);
    let mut connect = Histogram::<u64>::new(3).expect("histogram");
    let deadline = tokio::time::Instant::now() + READY_WITHIN;
    for _ in 0..n {
        match tokio::time::timeout_at(deadline, ready_rx.recv()).await {
            Ok(Some(Ok(took))) => {
                let _ = connect.record(took.as_micros() as u64);
            }
            Ok(Some(Err(e))) => return Err(RunError::failed(e)),
            Ok(None) | Err(_) => {
                return Err(RunError::failed(format!(
                    "{} of {n} browsers ready after {READY_WITHIN:?}",
                    connect.len()
                )))
            }
        }
    }
    let ready = start.elapsed();
    let flips_start = Instant::now();
    let _ = go_at_tx.send(Some(flips_start));
    let mut flips = 0;
    for task in tasks {
        flips += task.await.unwrap_or(0);
    }
    let missed = pending.lock().unwrap_or_else(|e| e.into_inner()).len() as u64;
    let latency = Percentiles::of(&latency.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(BrowserSummary {
        browsers: args.users,
        connect: Percentiles::of(&connect),
        ready,
        flips,
        latency,
        missed,
        errors: errors.load(std::sync::atomic::Ordering::Relaxed),
        duration,
    })
}

struct Browser {
    user: u64,
    watch: u64,
    pending: Pending,
    latency: Arc<Mutex<Histogram<u64>>>,
    errors: Arc<std::sync::atomic::AtomicU64>,
}

impl Browser {
    /// Connects, reports ready once its partner shows online, then flips until the end; the
    /// flips it sent.
    #[allow(clippy::too_many_arguments)]
    async fn run(
        self,
        address: String,
        gate: Arc<Semaphore>,
        ready: tokio::sync::mpsc::Sender<Result<Duration, String>>,
        mut go_at: tokio::sync::watch::Receiver<Option<Instant>>,
        phase: Duration,
        every: Duration,
        duration: Duration,
    ) -> u64 {
        let started = Instant::now();
        let permit = gate.acquire_owned().await;
        let (mut socket, _) = match tokio_tungstenite::connect_async(address.as_str()).await {
            Ok(connected) => connected,
            Err(e) => {
                let _ = ready.send(Err(format!("browser {}: {e}", self.user))).await;
                return 0;
            }
        };
        drop(permit);
        let roster = json!({"type": "roster", "users": [self.watch]}).to_string();
        if socket.send(Message::text(roster)).await.is_err() {
            let _ = ready
                .send(Err(format!("browser {}: closed", self.user)))
                .await;
            return 0;
        }
        let mut is_ready = false;
        let mut flips = 0;
        let mut visible = true;
        let mut next_flip: Option<tokio::time::Instant> = None;
        let mut end: Option<tokio::time::Instant> = None;
        loop {
            let flip_at = next_flip
                .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                changed = go_at.changed(), if end.is_none() => {
                    if changed.is_err() {
                        return flips;
                    }
                    if let Some(at) = *go_at.borrow() {
                        let at = tokio::time::Instant::from_std(at);
                        next_flip = Some(at + phase);
                        end = Some(at + duration);
                    }
                }
                () = tokio::time::sleep_until(flip_at), if next_flip.is_some() => {
                    if end.is_some_and(|end| tokio::time::Instant::now() >= end) {
                        break;
                    }
                    visible = !visible;
                    let expect = if visible { State::Online } else { State::Idle };
                    self.pending
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(self.user, (expect, Instant::now()));
                    let message = json!({"type": "visibility", "visible": visible}).to_string();
                    if socket.send(Message::text(message)).await.is_err() {
                        break;
                    }
                    flips += 1;
                    next_flip = Some(flip_at + every);
                }
                incoming = socket.next() => {
                    let Some(Ok(Message::Text(text))) = incoming else {
                        match incoming {
                            Some(Ok(_)) => continue,
                            _ => break,
                        }
                    };
                    match serde_json::from_str::<GatewayMessage>(&text) {
                        Ok(GatewayMessage::Presence { user, state, .. }) if user == self.watch => {
                            if !is_ready && state == State::Online {
                                is_ready = true;
                                let _ = ready.send(Ok(started.elapsed())).await;
                            }
                            self.seen(user, state);
                        }
                        Ok(GatewayMessage::Error { .. }) => {
                            self.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        _ => {}
                    }
                }
            }
        }
        // Give the partner's last flip time to arrive before closing.
        let drain = tokio::time::sleep(DRAIN);
        tokio::pin!(drain);
        loop {
            tokio::select! {
                () = &mut drain => break,
                incoming = socket.next() => match incoming {
                    Some(Ok(Message::Text(text))) => {
                        if let Ok(GatewayMessage::Presence { user, state, .. }) = serde_json::from_str(&text) {
                            if user == self.watch {
                                self.seen(user, state);
                            }
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                },
            }
        }
        let _ = socket.close(None).await;
        flips
    }

    fn seen(&self, user: u64, state: State) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&(want, sent)) = pending.get(&user) {
            if want == state {
                pending.remove(&user);
                let _ = self
                    .latency
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .record(sent.elapsed().as_micros() as u64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::partner;

    #[test]
    fn browsers_pair_up_and_an_odd_one_watches_the_first() {
        let watched: Vec<u64> = (0..5).map(|i| partner(100, i, 5)).collect();
        assert_eq!(watched, [101, 100, 103, 102, 100]);
    }
}
