//! The metrics endpoint (`[metrics] listen`, off unless set): `GET /metrics` answers in the
//! Prometheus text exposition format, `GET /healthz` with the daemon's health as typed JSON
//! (`presenced_wire::health`: 200 `ok`, 503 `degraded` and the reasons).
//!
//! **Nothing here touches a shard.** The counters are the ones STATS reports, asked of hub 0
//! the way a link's STATS is (`link::Scraper`; with several hubs it merges the others' latest
//! shares, `presenced_node::hub::share`): each shard answers from its own loop, between
//! datagrams, and nothing on its path is locked. The answer is kept for [`STATS_MAX_AGE`], so
//! scraping ten times a second still asks the shards once a second; only one request is in
//! flight at a time. The latency histogram is read where the link tasks record it. Shard
//! progress is each shard's loop counter (`notify::Beat`, a relaxed atomic): a background check
//! every [`SHARD_CHECK_EVERY`] wakes a shard that did not move (an idle shard sleeps) and calls
//! it stuck if it still has not moved at the next check (`notify::Liveness`, the watchdog's
//! rule). The state directory counts as writable while the store thread's last write of every
//! part of it succeeded (`StateStats::writable`).
//!
//! **Why hyper (1, HTTP/1.1 server only) on a current-thread tokio runtime of its own:** two
//! paths and no routing, so a framework (axum, and tower under it) would add only
//! dependencies; hyper gives the limits this endpoint needs as settings of its own (request
//! head size, header count, a read timeout that also closes idle keep-alive connections). The
//! runtime is not the push link's: a slow or hostile scraper can then never take a worker from
//! the gateways' links, and the endpoint's one thread sleeps between requests. The exposition
//! text is written by `prometheus-client` (the Prometheus project's Rust client), from a
//! collector over the typed `Stats`, so every name, label and escape follows the format.
//!
//! Limits, each counted when hit: `metrics.max_connections` connections at once (more are
//! closed at once, `presenced_metrics_connections_refused_total`); a request head of at most
//! [`MAX_REQUEST_HEAD_BYTES`] and [`MAX_REQUEST_HEADERS`] headers (431, then closed;
//! `presenced_metrics_bad_requests_total`); `metrics.read_timeout` to send a request head or
//! between requests, and [`CONNECTION_LIFETIME`] in all
//! (`presenced_metrics_connections_timed_out_total`).

use crate::link::Scraper;
use crate::log::Every;
use crate::notify::{Beat, Liveness};
use crate::settings::MetricsSettings;
use crate::shard_thread::Peer;
use crate::store_thread::Figures;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use presenced_wire::health::{Health, Status};
use presenced_wire::stats::{
    AuthStats, ClusterStats, CoreStats, GatewayStats, LinkStats, PerLinkStats, ShardStats,
    StateStats, Stats,
};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// The longest request head (request line and headers) read, bytes: hyper's smallest buffer.
pub const MAX_REQUEST_HEAD_BYTES: usize = 8192;
/// The most headers one request may carry (a scraper sends about five).
pub const MAX_REQUEST_HEADERS: usize = 32;
/// How long one connection may stay open in all (a keep-alive scraper reconnects).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);
/// How long the shards' counters are reused before the hub is asked again.
pub const STATS_MAX_AGE: Duration = Duration::from_secs(1);
/// How long a scrape waits for the shards' counters; past it the last ones are served (their
/// age is `presenced_metrics_stats_age_seconds`).
pub const STATS_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the shards' progress is checked: a stuck shard is reported within two checks.
pub const SHARD_CHECK_EVERY: Duration = Duration::from_secs(1);
/// How often the server looks at the daemon's stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);
/// After a failed accept (out of file descriptors), the pause before the next.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// The transition latency histogram's bucket bounds, µs (then +Inf).
const LATENCY_BUCKETS_US: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 10_000_000,
];
/// The Prometheus text format's content type.
const METRICS_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// What the endpoint reads, all of it made by the daemon before it starts.
pub struct Probes {
    /// The way to the STATS figures and the latency histogram.
    pub scraper: Scraper,
    /// Each shard's loop counter, in shard order.
    pub beats: Vec<Arc<Beat>>,
    /// The shards, to wake an idle one for the progress check.
    pub peers: Vec<Peer>,
    /// The store's figures (writable or not).
    pub state: Figures,
    /// `state.enabled`: whether the daemon is meant to keep state.
    pub state_wanted: bool,
    /// When the daemon started.
    pub started: Instant,
    /// In a cluster: the etcd thread's events a hub's channel had no room for (once per hub).
    pub etcd_dropped: Option<Arc<AtomicU64>>,
}

/// The running endpoint.
pub struct Handle {
    /// The address it listens on.
    pub addr: SocketAddr,
    thread: JoinHandle<()>,
}

impl Handle {
    /// Waits for the endpoint's thread (after the daemon's stop flag is set).
    pub fn join(self) -> io::Result<()> {
        self.thread
            .join()
            .map_err(|_| io::Error::other("metrics thread panicked"))
    }
}

/// Binds the endpoint's socket, if `metrics.listen` is set (before any thread starts, so a
/// taken port fails the start cleanly).
pub fn bind(settings: &MetricsSettings) -> io::Result<Option<std::net::TcpListener>> {
    let Some(listen) = settings.listen else {
        return Ok(None);
    };
    let listener = std::net::TcpListener::bind(listen).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("setting `metrics.listen`: cannot bind TCP {listen}: {e}"),
        )
    })?;
    listener.set_nonblocking(true)?;
    Ok(Some(listener))
}

/// Starts the endpoint's thread on the socket [`bind`] gave.
pub fn start(
    listener: std::net::TcpListener,
    settings: &MetricsSettings,
    probes: Probes,
    stop: Arc<AtomicBool>,
) -> io::Result<Handle> {
    let addr = listener.local_addr()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listener = {
        let _guard = runtime.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    let endpoint = Arc::new(Endpoint {
        liveness: Mutex::new(Shards {
            check: Liveness::new(probes.beats.len()),
            stuck: Vec::new(),
        }),
        probes,
        cache: tokio::sync::Mutex::new(None),
        read_timeout: settings.read_timeout,
        refused: AtomicU64::new(0),
        timed_out: AtomicU64::new(0),
        bad_requests: AtomicU64::new(0),
    });
    let limit = Arc::new(Semaphore::new(settings.max_connections));
    let thread = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            runtime.block_on(async move {
                tokio::spawn(check_shards(endpoint.clone()));
                serve(&listener, &endpoint, &limit, &stop).await;
            });
            // Connections still open are dropped with the runtime.
            runtime.shutdown_timeout(Duration::from_millis(100));
        })?;
    tracing::info!(%addr, "metrics endpoint listening: GET /metrics, GET /healthz");
    Ok(Handle { addr, thread })
}

/// The endpoint's state, shared by its connections.
struct Endpoint {
    probes: Probes,
    /// The shards' progress check.
    liveness: Mutex<Shards>,
    /// The last STATS answer and when it came; one refresh at a time holds the lock.
    cache: tokio::sync::Mutex<Option<(Instant, Arc<Stats>)>>,
    read_timeout: Duration,
    /// Connections closed at once at `metrics.max_connections`.
    refused: AtomicU64,
    /// Connections closed by the read timeout or the lifetime.
    timed_out: AtomicU64,
    /// Requests hyper refused (malformed, head too large, too many headers).
    bad_requests: AtomicU64,
}

/// The progress check's state and its last finding.
struct Shards {
    check: Liveness,
    /// Shards that did not move although woken.
    stuck: Vec<usize>,
}

async fn serve(
    listener: &tokio::net::TcpListener,
    endpoint: &Arc<Endpoint>,
    limit: &Arc<Semaphore>,
    stop: &AtomicBool,
) {
    let accept_errors = Every::new(Duration::from_secs(10));
    while !stop.load(Ordering::Relaxed) {
        let accepted = match tokio::time::timeout(STOP_POLL, listener.accept()).await {
            Err(_) => continue,
            Ok(accepted) => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                let now_ms = endpoint.probes.started.elapsed().as_millis() as u64;
                if let Some(unsaid) = accept_errors.due(now_ms) {
                    tracing::warn!(errors_unlogged = unsaid, "metrics endpoint: accept: {e}");
                }
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            endpoint.refused.fetch_add(1, Ordering::Relaxed);
            // Dropped: closed at once.
            continue;
        };
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            connection(stream, &endpoint).await;
            drop(permit);
        });
    }
}

async fn connection(stream: tokio::net::TcpStream, endpoint: &Arc<Endpoint>) {
    let service = {
        let endpoint = endpoint.clone();
        service_fn(move |request| {
            let endpoint = endpoint.clone();
            async move { Ok::<_, Infallible>(answer(&endpoint, &request).await) }
        })
    };
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(endpoint.read_timeout)
        .max_buf_size(MAX_REQUEST_HEAD_BYTES)
        .max_header_size(MAX_REQUEST_HEAD_BYTES)
        .max_headers(MAX_REQUEST_HEADERS)
        .serve_connection(TokioIo::new(stream), service);
    match tokio::time::timeout(CONNECTION_LIFETIME, served).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) if e.is_timeout() => {
            endpoint.timed_out.fetch_add(1, Ordering::Relaxed);
        }
        Ok(Err(e)) if e.is_parse() || e.is_parse_too_large() => {
            endpoint.bad_requests.fetch_add(1, Ordering::Relaxed);
        }
        // The peer went away mid-request: nothing to count.
        Ok(Err(_)) => {}
        Err(_) => {
            endpoint.timed_out.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Checks every shard's progress every [`SHARD_CHECK_EVERY`], waking those that did not move.
async fn check_shards(endpoint: Arc<Endpoint>) {
    let mut every = tokio::time::interval(SHARD_CHECK_EVERY);
    loop {
        every.tick().await;
        let progress: Vec<u64> = endpoint.probes.beats.iter().map(|b| b.read()).collect();
        let mut shards = endpoint.liveness.lock().unwrap_or_else(|e| e.into_inner());
        let check = shards.check.check(&progress);
        for &i in &check.poke {
            // Fails only when the shard is stopping.
            let _ = endpoint.probes.peers[i].waker.wake();
        }
        shards.stuck = check.stuck;
    }
}

async fn answer(endpoint: &Endpoint, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n".into());
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET"));
        return response;
    }
    match request.uri().path() {
        "/metrics" => {
            let body = endpoint.metrics().await;
            let mut response = text(StatusCode::OK, body);
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static(METRICS_CONTENT_TYPE));
            response
        }
        "/healthz" => {
            let health = endpoint.health();
            let status = match health.status {
                Status::Ok => StatusCode::OK,
                Status::Degraded => StatusCode::SERVICE_UNAVAILABLE,
            };
            // The schema serialises (strings, numbers and a list of strings).
            let body = health.to_json().unwrap_or_default();
            let mut response = text(status, body);
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: GET /metrics or /healthz\n".into(),
        ),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

impl Endpoint {
    /// The STATS figures, at most [`STATS_MAX_AGE`] old unless the hub did not answer in
    /// [`STATS_TIMEOUT`]; `None` before the first answer.
    async fn stats(&self) -> Option<(Arc<Stats>, Duration)> {
        let mut cache = self.cache.lock().await;
        let fresh = cache
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < STATS_MAX_AGE);
        if !fresh {
            if let Some(answer) = self.probes.scraper.ask() {
                if let Ok(Ok(stats)) = tokio::time::timeout(STATS_TIMEOUT, answer).await {
                    *cache = Some((Instant::now(), Arc::from(stats)));
                }
            }
        }
        cache
            .as_ref()
            .map(|(at, stats)| (stats.clone(), at.elapsed()))
    }

    /// The exposition text.
    async fn metrics(&self) -> String {
        let stats = self.stats().await;
        let (below, count, sum_us) = self.probes.scraper.latency(&LATENCY_BUCKETS_US);
        let snapshot = Snapshot {
            stats_age: stats.as_ref().map(|(_, age)| *age),
            stats: stats.map(|(stats, _)| stats),
            latency: Latency {
                below,
                count,
                sum_us,
            },
            uptime: self.probes.started.elapsed(),
            stuck: self.stuck(),
            shards: self.probes.beats.len(),
            refused: self.refused.load(Ordering::Relaxed),
            timed_out: self.timed_out.load(Ordering::Relaxed),
            bad_requests: self.bad_requests.load(Ordering::Relaxed),
            etcd_dropped: self
                .probes
                .etcd_dropped
                .as_ref()
                .map(|d| d.load(Ordering::Relaxed)),
        };
        let mut registry = Registry::default();
        registry.register_collector(Box::new(snapshot));
        let mut body = String::new();
        // Writing to a String does not fail; an encoding error would be a bug of ours.
        if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut body, &registry) {
            tracing::error!("metrics endpoint: encoding failed: {e}");
        }
        body
    }

    fn stuck(&self) -> Vec<usize> {
        self.liveness
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .stuck
            .clone()
    }

    /// The health answer: degraded while a shard is stuck or state that should be kept is not
    /// being written.
    fn health(&self) -> Health {
        let mut reasons: Vec<String> = self
            .stuck()
            .into_iter()
            .map(|i| {
                format!(
                    "shard {i}: its loop has not turned for over {} s, even when woken",
                    SHARD_CHECK_EVERY.as_secs()
                )
            })
            .collect();
        if self.probes.state_wanted {
            let state = self.probes.state.lock().unwrap_or_else(|e| e.into_inner());
            if !state.enabled {
                reasons.push(format!(
                    "state: {} could not be used at start: running without durable state (see \
                     the log)",
                    state.dir
                ));
            } else if !state.writable {
                let errors: Vec<String> = state
                    .errors
                    .iter()
                    .map(|(kind, n)| format!("{kind} {n}"))
                    .collect();
                reasons.push(format!(
                    "state: the last write to {} failed (errors so far: {}); durable state \
                     is behind",
                    state.dir,
                    errors.join(", ")
                ));
            }
        }
        Health {
            status: if reasons.is_empty() {
                Status::Ok
            } else {
                Status::Degraded
            },
            reasons,
            uptime_s: self.probes.started.elapsed().as_secs(),
        }
    }
}

/// The transition latency, read for one scrape.
#[derive(Debug)]
struct Latency {
    /// Samples at or below each of [`LATENCY_BUCKETS_US`].
    below: Vec<u64>,
    count: u64,
    sum_us: u64,
}

/// Everything one scrape reports; the collector that writes it.
#[derive(Debug)]
struct Snapshot {
    stats: Option<Arc<Stats>>,
    stats_age: Option<Duration>,
    latency: Latency,
    uptime: Duration,
    stuck: Vec<usize>,
    shards: usize,
    refused: u64,
    timed_out: u64,
    bad_requests: u64,
    etcd_dropped: Option<u64>,
}

/// Writes metrics of one kind into a collector's encoder.
struct Out<'a>(DescriptorEncoder<'a>);

impl Out<'_> {
    fn one(&mut self, name: &str, help: &str, kind: MetricType, v: Value) -> fmt::Result {
        let metric = self.0.encode_descriptor(name, help, None, kind)?;
        v.encode(metric, kind)
    }

    fn counter(&mut self, name: &str, help: &str, v: u64) -> fmt::Result {
        self.one(name, help, MetricType::Counter, Value::Int(v))
    }

    fn gauge(&mut self, name: &str, help: &str, v: impl Into<Value>) -> fmt::Result {
        self.one(name, help, MetricType::Gauge, v.into())
    }

    /// One metric with a member per label set.
    fn family<L: EncodeLabelSet>(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        members: impl IntoIterator<Item = (L, Value)>,
    ) -> fmt::Result {
        let mut metric = self.0.encode_descriptor(name, help, None, kind)?;
        for (labels, v) in members {
            v.encode(metric.encode_family(&labels)?, kind)?;
        }
        Ok(())
    }
}

/// A sample's value.
#[derive(Clone, Copy)]
enum Value {
    Int(u64),
    Float(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Value {
        Value::Int(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Value {
        Value::Float(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Int(u64::from(v))
    }
}

impl Value {
    fn encode(self, metric: MetricEncoder<'_>, kind: MetricType) -> fmt::Result {
        match (kind, self) {
            (MetricType::Counter, Value::Int(v)) => ConstCounter::new(v).encode(metric),
            (MetricType::Counter, Value::Float(v)) => ConstCounter::new(v).encode(metric),
            // Gauges are signed in the format's client; the figures fit.
            (_, Value::Int(v)) => {
                ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX)).encode(metric)
            }
            (_, Value::Float(v)) => ConstGauge::new(v).encode(metric),
        }
    }
}

fn secs_of_us(us: u64) -> f64 {
    us as f64 / 1e6
}

fn secs_of_ms(ms: u64) -> f64 {
    ms as f64 / 1e3
}

type Labels1 = [(&'static str, String); 1];
type Labels2 = [(&'static str, String); 2];

impl Collector for Snapshot {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        let mut out = Out(encoder);
        let info = Info::new([("version", env!("CARGO_PKG_VERSION"))]);
        let metric = out.0.encode_descriptor(
            "presenced_build",
            "The daemon's version (always 1).",
            None,
            MetricType::Info,
        )?;
        info.encode(metric)?;
        out.gauge(
            "presenced_uptime_seconds",
            "Seconds since the daemon started.",
            self.uptime.as_secs_f64(),
        )?;
        out.gauge("presenced_shards", "Shard threads.", self.shards as u64)?;
        let stuck =
            (0..self.shards).map(|i| (shard_label(i as u32), self.stuck.contains(&i).into()));
        out.family::<Labels1>(
            "presenced_shard_stuck",
            "1 while the shard's loop has not turned for over a check interval although woken \
             (the health check's reason).",
            MetricType::Gauge,
            stuck,
        )?;
        self.endpoint(&mut out)?;
        self.latency(&mut out)?;
        if let Some(stats) = &self.stats {
            out.gauge(
                "presenced_metrics_stats_age_seconds",
                "Age of the counters below (they are asked of the shards at most once a second; \
                 older when the shards did not answer).",
                self.stats_age.unwrap_or_default().as_secs_f64(),
            )?;
            shards(&mut out, &stats.shards)?;
            auth(&mut out, &stats.auth)?;
            state(&mut out, &stats.state)?;
            link(&mut out, &stats.link)?;
            if let Some(c) = &stats.cluster {
                cluster(&mut out, c)?;
            }
        }
        if let Some(dropped) = self.etcd_dropped {
            out.counter(
                "presenced_cluster_etcd_events_dropped",
                "What the etcd thread learnt that a hub's channel had no room for, once per hub \
                 (the next renewal or read of the member map says it again).",
                dropped,
            )?;
        }
        Ok(())
    }
}

impl Snapshot {
    fn endpoint(&self, out: &mut Out<'_>) -> fmt::Result {
        out.counter(
            "presenced_metrics_connections_refused",
            "Connections to this endpoint closed at once: metrics.max_connections were open.",
            self.refused,
        )?;
        out.counter(
            "presenced_metrics_connections_timed_out",
            "Connections to this endpoint closed by metrics.read_timeout (a slow request head, \
             or idle between requests) or by their lifetime.",
            self.timed_out,
        )?;
        out.counter(
            "presenced_metrics_bad_requests",
            "Requests to this endpoint refused as malformed or too large.",
            self.bad_requests,
        )
    }

    fn latency(&self, out: &mut Out<'_>) -> fmt::Result {
        let l = &self.latency;
        let mut buckets = Vec::with_capacity(LATENCY_BUCKETS_US.len());
        let mut before = 0;
        for (&bound, &below) in LATENCY_BUCKETS_US.iter().zip(&l.below) {
            // Per-bucket counts: the encoder adds them up (`le` is cumulative).
            buckets.push((secs_of_us(bound), below.saturating_sub(before)));
            before = below.max(before);
        }
        let mut metric = out.0.encode_descriptor(
            "presenced_push_latency_seconds",
            "Transition latency: from the datagram's receipt to the EVENTS frame written to the \
             gateway's QUIC stream (bucket edges to 3 significant digits).",
            None,
            MetricType::Histogram,
        )?;
        metric.encode_histogram::<NoLabelSet>(secs_of_us(l.sum_us), l.count, &buckets, None)
    }
}

fn shard_label(shard: u32) -> Labels1 {
    [("shard", shard.to_string())]
}

/// One shard's figure: name, help, type, value.
type Figure = (&'static str, &'static str, MetricType, u64);

/// A shard's figures but the refusals and drops by reason (the destructuring makes a field
/// added to the schema a compile error here until it is exported).
fn shard_figures(s: &ShardStats) -> [Figure; 28] {
    use MetricType::{Counter, Gauge};
    let ShardStats {
        shard: _,
        core:
            CoreStats {
                users,
                devices,
                heartbeats,
                transitions,
                // By reason, below.
                refused_user_capacity: _,
                refused_device_limit: _,
                refused_overflow_full: _,
                refused_user_zero: _,
                logout_unknown,
                clock_backwards,
                records_dropped,
                timers_fired,
                timers_cascaded,
                timers_stale,
                timers_near_pool_full,
                deadlines_extended,
            },
        datagrams,
        // By reason, below.
        dropped: _,
        sources_blocked,
        kernel_blocks_full,
        recv_calls,
        kernel_dropped,
        routed_out,
        routed_in,
        cross_shard_shed,
        transitions_shed,
        log_shed,
        snapshots,
        restored_users,
        restore_refused,
        backoff_interval_ms,
        backoff_entered,
        deadline_extension_ms,
    } = *s;
    [
        (
            "presenced_shard_datagrams",
            "Datagrams received.",
            Counter,
            datagrams,
        ),
        (
            "presenced_shard_heartbeats",
            "Heartbeat entries applied or refused.",
            Counter,
            heartbeats,
        ),
        (
            "presenced_shard_transitions",
            "Transitions emitted.",
            Counter,
            transitions,
        ),
        (
            "presenced_shard_recv_calls",
            "Receive calls made.",
            Counter,
            recv_calls,
        ),
        (
            "presenced_shard_kernel_dropped_datagrams",
            "Datagrams the kernel dropped: the receive buffer was full \
             (ingest.socket_recv_buffer), or the source is not in ingest.allow.",
            Counter,
            kernel_dropped,
        ),
        (
            "presenced_shard_sources_blocked",
            "Times a source address was blocked for failing authentication (its datagrams \
             then dropped unread, reason source_blocked).",
            Counter,
            sources_blocked,
        ),
        (
            "presenced_shard_kernel_blocks_full",
            "Blocks that found ingest.kernel_blocks sources already in the kernel's socket \
             filter (that source's datagrams dropped unread by the shard instead).",
            Counter,
            kernel_blocks_full,
        ),
        (
            "presenced_shard_routed_out_entries",
            "Entries sent to the shards that own them.",
            Counter,
            routed_out,
        ),
        (
            "presenced_shard_routed_in_entries",
            "Entries received from other shards.",
            Counter,
            routed_in,
        ),
        (
            "presenced_shard_cross_shard_shed_entries",
            "Entries shed: another shard's inbox was full (shards.cross_shard_queue).",
            Counter,
            cross_shard_shed,
        ),
        (
            "presenced_shard_transitions_shed",
            "Transitions shed: the outbox to the push link was full (shards.link_outbox).",
            Counter,
            transitions_shed,
        ),
        (
            "presenced_shard_log_shed_transitions",
            "Transitions not logged: the store's queue was full (state.queue).",
            Counter,
            log_shed,
        ),
        (
            "presenced_shard_snapshots",
            "Snapshot passes completed.",
            Counter,
            snapshots,
        ),
        (
            "presenced_shard_logouts_unknown",
            "Logouts of a user or device the shard did not know.",
            Counter,
            logout_unknown,
        ),
        (
            "presenced_shard_clock_backwards",
            "Calls whose monotonic time was behind an earlier one's.",
            Counter,
            clock_backwards,
        ),
        (
            "presenced_shard_records_dropped",
            "Offline records dropped after presence.last_seen_retention.",
            Counter,
            records_dropped,
        ),
        (
            "presenced_shard_timers_fired",
            "Timers that fired (including early ones re-checked and moved).",
            Counter,
            timers_fired,
        ),
        (
            "presenced_shard_timers_cascaded",
            "Far timers moved down a level of the wheel.",
            Counter,
            timers_cascaded,
        ),
        (
            "presenced_shard_timers_stale",
            "Near timer entries that found no user due at their tick (left by a timer moved earlier).",
            Counter,
            timers_stale,
        ),
        (
            "presenced_shard_timers_near_pool_full",
            "Near timers set in the wheel because the near ring's pool was spent.",
            Counter,
            timers_near_pool_full,
        ),
        (
            "presenced_shard_deadlines_extended",
            "Fired timers re-armed by the back-off deadline extension.",
            Counter,
            deadlines_extended,
        ),
        (
            "presenced_shard_backoff_interval_ms",
            "The heartbeat interval this shard asks for because it runs hot, ms; 0: none.",
            Gauge,
            backoff_interval_ms,
        ),
        (
            "presenced_shard_backoff_entered",
            "Times this shard began asking gateways for a longer heartbeat interval.",
            Counter,
            backoff_entered,
        ),
        (
            "presenced_shard_deadline_extension_ms",
            "How much later than normal every device's deadline is now (back-off), ms.",
            Gauge,
            deadline_extension_ms,
        ),
        (
            "presenced_shard_users",
            "Records held (online, or offline and remembered).",
            Gauge,
            users,
        ),
        ("presenced_shard_devices", "Live devices.", Gauge, devices),
        (
            "presenced_shard_restored_users",
            "Users restored at start.",
            Gauge,
            restored_users,
        ),
        (
            "presenced_shard_restore_refused",
            "Saved users or logged transitions not restored at start.",
            Gauge,
            restore_refused,
        ),
    ]
}

/// Every per-shard figure, labelled by shard.
fn shards(out: &mut Out<'_>, shards: &[ShardStats]) -> fmt::Result {
    let figures: Vec<(u32, [Figure; 28])> =
        shards.iter().map(|s| (s.shard, shard_figures(s))).collect();
    let Some((_, first)) = figures.first() else {
        return Ok(());
    };
    for (k, &(name, help, kind, _)) in first.iter().enumerate() {
        let members = figures
            .iter()
            .map(|(shard, f)| (shard_label(*shard), Value::Int(f[k].3)));
        out.family::<Labels1>(name, help, kind, members)?;
    }
    let refused = shards.iter().flat_map(|s| {
        let c = &s.core;
        [
            ("user_capacity", c.refused_user_capacity),
            ("device_limit", c.refused_device_limit),
            ("overflow_full", c.refused_overflow_full),
            ("user_zero", c.refused_user_zero),
        ]
        .map(|(reason, n)| {
            let labels = [
                ("shard", s.shard.to_string()),
                ("reason", reason.to_string()),
            ];
            (labels, Value::Int(n))
        })
    });
    out.family::<Labels2>(
        "presenced_shard_refused_entries",
        "Heartbeat entries refused by the presence core, by reason (presence.users_per_shard, \
         presence.max_devices_per_user, presence.multi_device_users, user id 0).",
        MetricType::Counter,
        refused,
    )?;
    let dropped = shards.iter().flat_map(|s| {
        s.dropped.iter().map(|(reason, &n)| {
            let labels = [("shard", s.shard.to_string()), ("reason", reason.clone())];
            (labels, Value::Int(n))
        })
    });
    out.family::<Labels2>(
        "presenced_shard_dropped_datagrams",
        "Datagrams dropped, by reason (wire-format/SPEC.md § 6 and § 9).",
        MetricType::Counter,
        dropped,
    )
}

fn auth(out: &mut Out<'_>, auth: &AuthStats) -> fmt::Result {
    let AuthStats {
        enabled,
        gateways,
        replay_memory_bytes,
        per_gateway,
    } = auth;
    out.gauge(
        "presenced_auth_enabled",
        "1 when datagrams must be signed (auth.keys_file).",
        *enabled,
    )?;
    out.gauge(
        "presenced_auth_gateways",
        "Gateways in the key file.",
        *gateways,
    )?;
    out.gauge(
        "presenced_auth_replay_memory_bytes",
        "Memory held by the anti-replay windows.",
        *replay_memory_bytes,
    )?;
    let accepted = per_gateway.iter().map(|(id, g)| {
        let GatewayStats {
            accepted,
            refused: _,
        } = g;
        ([("gateway", id.to_string())], Value::Int(*accepted))
    });
    out.family::<Labels1>(
        "presenced_gateway_accepted_datagrams",
        "Signed datagrams accepted, by gateway.",
        MetricType::Counter,
        accepted,
    )?;
    let refused = per_gateway.iter().flat_map(|(id, g)| {
        g.refused.iter().map(move |(reason, &n)| {
            let labels = [("gateway", id.to_string()), ("reason", reason.clone())];
            (labels, Value::Int(n))
        })
    });
    out.family::<Labels2>(
        "presenced_gateway_refused_datagrams",
        "Datagrams refused, by gateway and authentication reason.",
        MetricType::Counter,
        refused,
    )
}

fn state(out: &mut Out<'_>, state: &StateStats) -> fmt::Result {
    let StateStats {
        enabled,
        dir: _,
        cold_start,
        restored_users,
        restored_transitions,
        restore_skipped,
        restore_ms,
        log_records,
        log_dropped,
        syncs,
        last_sync_us,
        max_sync_us,
        snapshots,
        last_snapshot_bytes,
        last_snapshot_ms,
        segments_removed,
        history_requests,
        errors,
        writable,
    } = state;
    out.gauge(
        "presenced_state_enabled",
        "1 when durable state is kept (state.enabled, and the directory was usable at start).",
        *enabled,
    )?;
    out.gauge(
        "presenced_state_writable",
        "1 while the last write of every log, snapshot and the replay marks succeeded.",
        *writable,
    )?;
    out.gauge(
        "presenced_state_cold_start",
        "1 when this start found no saved state.",
        *cold_start,
    )?;
    out.gauge(
        "presenced_state_restored_users",
        "Users restored at start.",
        *restored_users,
    )?;
    out.gauge(
        "presenced_state_restored_transitions",
        "Logged transitions replayed at start.",
        *restored_transitions,
    )?;
    out.gauge(
        "presenced_state_restore_skipped",
        "Files or records skipped at start because they could not be read.",
        *restore_skipped,
    )?;
    out.gauge(
        "presenced_state_restore_duration_seconds",
        "How long the restore at start took.",
        secs_of_ms(*restore_ms),
    )?;
    out.counter(
        "presenced_state_log_records",
        "Transitions appended to the logs.",
        *log_records,
    )?;
    out.counter(
        "presenced_state_log_dropped",
        "Transitions the logs refused (the disk is not keeping up); a snapshot covers them.",
        *log_dropped,
    )?;
    out.counter(
        "presenced_state_syncs",
        "Group syncs of the logs and the replay marks.",
        *syncs,
    )?;
    out.gauge(
        "presenced_state_last_sync_duration_seconds",
        "The last group sync's duration.",
        secs_of_us(*last_sync_us),
    )?;
    out.gauge(
        "presenced_state_max_sync_duration_seconds",
        "The longest group sync's duration.",
        secs_of_us(*max_sync_us),
    )?;
    out.counter(
        "presenced_state_snapshots",
        "Snapshots written.",
        *snapshots,
    )?;
    out.gauge(
        "presenced_state_last_snapshot_bytes",
        "The last snapshot's size.",
        *last_snapshot_bytes,
    )?;
    out.gauge(
        "presenced_state_last_snapshot_duration_seconds",
        "The last snapshot pass's duration, from its start to its file's rename.",
        secs_of_ms(*last_snapshot_ms),
    )?;
    out.counter(
        "presenced_state_segments_removed",
        "Log segments removed by retention.",
        *segments_removed,
    )?;
    out.counter(
        "presenced_state_history_requests",
        "HISTORY requests answered.",
        *history_requests,
    )?;
    let errors = errors
        .iter()
        .map(|(kind, &n)| ([("kind", kind.clone())], Value::Int(n)));
    out.family::<Labels1>(
        "presenced_state_errors",
        "Storage errors, by kind.",
        MetricType::Counter,
        errors,
    )
}

/// The roles a member may be in (`presenced_node::cluster::Role`), one gauge each.
const CLUSTER_ROLES: [&str; 3] = ["joining", "active", "stepped_down"];

fn cluster(out: &mut Out<'_>, cluster: &ClusterStats) -> fmt::Result {
    let ClusterStats {
        map,
        role,
        maps,
        bad_values,
        etcd_errors,
        step_downs,
        takeovers,
        stale_maps,
        not_primary,
        gained,
        shards,
    } = cluster;
    out.gauge(
        "presenced_cluster_members",
        "Members in the member map this member holds.",
        map.members.len() as u64,
    )?;
    out.gauge(
        "presenced_cluster_revision",
        "The etcd revision the member map was read at (0: none read yet).",
        map.revision,
    )?;
    out.gauge(
        "presenced_cluster_etcd_up",
        "1 while this member reaches etcd (else it serves its last member map).",
        map.etcd,
    )?;
    let roles = CLUSTER_ROLES
        .iter()
        .map(|r| ([("role", r.to_string())], Value::from(role == r)));
    out.family::<Labels1>(
        "presenced_cluster_role",
        "1 for this member's role: joining (not in the map yet), active (pushes for the users \
         it is primary for) or stepped_down (its lease about to lapse unrenewed: pushes for no \
         one).",
        MetricType::Gauge,
        roles,
    )?;
    for (name, help, v) in [
        (
            "presenced_cluster_maps",
            "Member maps read from etcd and taken.",
            maps,
        ),
        (
            "presenced_cluster_bad_values",
            "Values under the member prefix skipped as not a valid member (not JSON, another \
             id than the key's, a bad address).",
            bad_values,
        ),
        (
            "presenced_cluster_etcd_errors",
            "Times etcd turned unreachable.",
            etcd_errors,
        ),
        (
            "presenced_cluster_step_downs",
            "Times this member stepped down (its lease about to lapse unrenewed).",
            step_downs,
        ),
        (
            "presenced_cluster_takeovers",
            "Member maps in which a member left while this one was active (its users fell to \
             their next replica).",
            takeovers,
        ),
        (
            "presenced_cluster_stale_maps",
            "Gateways' requests answered with this member's map because theirs was another.",
            stale_maps,
        ),
        (
            "presenced_cluster_not_primary_transitions",
            "Transitions not pushed because this member was not the user's primary.",
            not_primary,
        ),
        (
            "presenced_cluster_gained_users",
            "Users named in LAGGED frames because this member became their primary.",
            gained,
        ),
    ] {
        out.counter(name, help, *v)?;
    }
    let roles = shards.iter().enumerate().flat_map(|(shard, r)| {
        [("primary", r.primary), ("replica", r.replica)].map(|(role, v)| {
            (
                [("shard", shard.to_string()), ("role", role.to_owned())],
                Value::from(v),
            )
        })
    });
    out.family::<Labels2>(
        "presenced_cluster_shard_transitions",
        "Per shard: its transitions this member pushed as the users' primary (role=primary) \
         and those it kept as a replica, unpushed (role=replica).",
        MetricType::Counter,
        roles,
    )?;
    Ok(())
}

fn link(out: &mut Out<'_>, link: &LinkStats) -> fmt::Result {
    let LinkStats {
        links,
        subscribed_users,
        firehose_links,
        transitions,
        events_sent,
        events_dropped,
        lag_signals,
        shard_shed,
        links_refused,
        links_unauthorized,
        links_stalled,
        // Exported as the histogram, from the samples themselves.
        latency_us: _,
        per_link,
        // Only a STATS_REPLY leaves links out.
        per_link_omitted: _,
        backoff_active,
        pace_interval_ms,
        pace_frames,
    } = link;
    out.gauge(
        "presenced_backoff_active",
        "1 while gateways are asked for a longer heartbeat interval (back-off under load).",
        u64::from(*backoff_active),
    )?;
    out.gauge(
        "presenced_backoff_interval_ms",
        "The heartbeat interval asked of the gateways, ms; 0: the normal one.",
        *pace_interval_ms,
    )?;
    out.counter(
        "presenced_push_pace_frames",
        "PACE frames sent to links (back-off under load), all links.",
        *pace_frames,
    )?;
    out.gauge("presenced_push_links", "Gateway links open.", *links)?;
    out.gauge(
        "presenced_push_subscribed_users",
        "Users with at least one subscriber.",
        *subscribed_users,
    )?;
    out.gauge(
        "presenced_push_firehose_links",
        "Links subscribed to everyone.",
        *firehose_links,
    )?;
    out.counter(
        "presenced_push_transitions",
        "Transitions the hub read from the shards.",
        *transitions,
    )?;
    out.counter(
        "presenced_push_events_sent",
        "Events queued to links, all links.",
        *events_sent,
    )?;
    out.counter(
        "presenced_push_events_dropped",
        "Events dropped because a link's queue was full (link.queue_bytes), all links.",
        *events_dropped,
    )?;
    out.counter(
        "presenced_push_lag_signals",
        "LAGGED frames sent, all links.",
        *lag_signals,
    )?;
    out.counter(
        "presenced_push_shard_shed_transitions",
        "Transitions the shards shed before they reached the push link.",
        *shard_shed,
    )?;
    out.counter(
        "presenced_push_links_refused",
        "Connections refused: link.max_links were open.",
        *links_refused,
    )?;
    out.counter(
        "presenced_push_links_unauthorized",
        "Links closed at HELLO for a bad name or token.",
        *links_unauthorized,
    )?;
    out.counter(
        "presenced_push_links_stalled",
        "Links closed because they took nothing for link.stall_timeout with frames waiting.",
        *links_stalled,
    )?;
    type Field = fn(&PerLinkStats) -> Value;
    let per_link_metrics: [(&str, &str, MetricType, Field); 6] = [
        (
            "presenced_link_queued_bytes",
            "Bytes queued for the link and not yet written, 64 a frame besides its own \
             (link.queue_bytes, and one LAGGED frame above it).",
            MetricType::Gauge,
            |l| l.queued_bytes.into(),
        ),
        (
            "presenced_link_subscribed_users",
            "Users the link is subscribed to.",
            MetricType::Gauge,
            |l| l.subscribed_users.into(),
        ),
        (
            "presenced_link_firehose",
            "1 when the link is subscribed to everyone.",
            MetricType::Gauge,
            |l| l.firehose.into(),
        ),
        (
            "presenced_link_events_sent",
            "Events queued to the link.",
            MetricType::Counter,
            |l| l.events_sent.into(),
        ),
        (
            "presenced_link_events_dropped",
            "Events dropped because the link's queue was full.",
            MetricType::Counter,
            |l| l.events_dropped.into(),
        ),
        (
            "presenced_link_lag_signals",
            "LAGGED frames sent to the link.",
            MetricType::Counter,
            |l| l.lag_signals.into(),
        ),
    ];
    for (name, help, kind, field) in per_link_metrics {
        let members = per_link.iter().map(|l| (link_labels(l), field(l)));
        out.family::<[(&'static str, String); 3]>(name, help, kind, members)?;
    }
    Ok(())
}

/// A link's labels: its name from HELLO, its address, and its id (two links of one name from
/// one address stay apart). The destructuring makes a field added to the schema a compile
/// error here until it is exported above.
fn link_labels(l: &PerLinkStats) -> [(&'static str, String); 3] {
    let PerLinkStats {
        id,
        name,
        peer,
        queued_bytes: _,
        subscribed_users: _,
        firehose: _,
        events_sent: _,
        events_dropped: _,
        lag_signals: _,
    } = l;
    [
        ("link", name.clone()),
        ("peer", peer.to_string()),
        ("id", id.to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(stats: Stats, etcd_dropped: Option<u64>) -> String {
        let snapshot = Snapshot {
            stats: Some(Arc::new(stats)),
            stats_age: Some(Duration::ZERO),
            latency: Latency {
                below: vec![0; LATENCY_BUCKETS_US.len()],
                count: 0,
                sum_us: 0,
            },
            uptime: Duration::ZERO,
            stuck: Vec::new(),
            shards: 0,
            refused: 0,
            timed_out: 0,
            bad_requests: 0,
            etcd_dropped,
        };
        let mut registry = Registry::default();
        registry.register_collector(Box::new(snapshot));
        let mut body = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut body, &registry).unwrap();
        body
    }

    #[test]
    fn a_cluster_member_exports_its_map_role_and_counters_and_others_nothing_of_it() {
        assert!(!text(Stats::default(), None).contains("presenced_cluster"));
        let member = |id: &str| presenced_wire::cluster::Member {
            id: id.to_owned(),
            link: "127.0.0.1:7060".to_owned(),
            heartbeat: "127.0.0.1:7070".to_owned(),
            warm_at_ms: 0,
        };
        let stats = Stats {
            cluster: Some(ClusterStats {
                map: presenced_wire::cluster::MemberMap {
                    from: "a".to_owned(),
                    revision: 17,
                    replicas: 2,
                    etcd: true,
                    members: vec![member("a"), member("b")],
                },
                role: "active".to_owned(),
                maps: 3,
                bad_values: 4,
                etcd_errors: 5,
                step_downs: 6,
                takeovers: 7,
                stale_maps: 8,
                not_primary: 9,
                gained: 10,
                shards: vec![
                    presenced_wire::stats::ShardRole {
                        primary: 12,
                        replica: 13,
                    },
                    presenced_wire::stats::ShardRole {
                        primary: 14,
                        replica: 15,
                    },
                ],
            }),
            ..Stats::default()
        };
        let body = text(stats, Some(11));
        for line in [
            "presenced_cluster_members 2",
            "presenced_cluster_revision 17",
            "presenced_cluster_etcd_up 1",
            "presenced_cluster_role{role=\"joining\"} 0",
            "presenced_cluster_role{role=\"active\"} 1",
            "presenced_cluster_role{role=\"stepped_down\"} 0",
            "presenced_cluster_maps_total 3",
            "presenced_cluster_bad_values_total 4",
            "presenced_cluster_etcd_errors_total 5",
            "presenced_cluster_step_downs_total 6",
            "presenced_cluster_takeovers_total 7",
            "presenced_cluster_stale_maps_total 8",
            "presenced_cluster_not_primary_transitions_total 9",
            "presenced_cluster_gained_users_total 10",
            "presenced_cluster_etcd_events_dropped_total 11",
            "presenced_cluster_shard_transitions_total{shard=\"0\",role=\"primary\"} 12",
            "presenced_cluster_shard_transitions_total{shard=\"1\",role=\"replica\"} 15",
        ] {
            assert!(body.lines().any(|l| l == line), "{line} in\n{body}");
        }
    }
}
