//! The metrics endpoint of the real `presenced` binary, over loopback HTTP: `/metrics` read with
//! a Prometheus exposition-format parser (`prometheus-parse`), `/healthz` read as the typed
//! health answer, the endpoint's own limits, and health turning degraded when the state
//! directory cannot be written.

mod common;

use bytes::Bytes;
use common::{Daemon, StateDir, FAST};
use http_body_util::{BodyExt, Empty};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use presenced_client::{entry, ConnectOptions, HeartbeatClient, LinkClient, Push, Trust};
use presenced_wire::health::{Health, Status};
use presenced_wire::State;
use prometheus_parse::{Scrape, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(10);

/// `FAST` with the endpoint on an ephemeral loopback port, then `extra`.
fn start(extra: &[&str]) -> Daemon {
    Daemon::start(&args(extra))
}

fn args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args: Vec<&str> = FAST.to_vec();
    args.extend(["--set", "metrics.listen=127.0.0.1:0"]);
    args.extend(extra);
    args
}

fn endpoint(d: &Daemon) -> SocketAddr {
    d.metrics
        .expect("the ready line names the metrics endpoint")
}

/// One HTTP/1.1 request on a connection of its own: status, content type and body.
async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
) -> Result<(StatusCode, String, String), String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let content_type = response
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let body = String::from_utf8(body.to_vec()).map_err(|e| e.to_string())?;
    Ok((status, content_type, body))
}

async fn get(addr: SocketAddr, path: &str) -> (StatusCode, String, String) {
    request(addr, Method::GET, path)
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"))
}

async fn scrape(addr: SocketAddr) -> Scrape {
    let (status, content_type, body) = get(addr, "/metrics").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("exposition text")
}

async fn health(addr: SocketAddr) -> (StatusCode, Health) {
    let (status, content_type, body) = get(addr, "/healthz").await;
    assert_eq!(content_type, "application/json");
    let health = Health::from_json(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, health)
}

/// Asks `/healthz` until `done` holds of the answer (failing after [`WAIT`]).
async fn health_until(addr: SocketAddr, done: impl Fn(&Health) -> bool) -> (StatusCode, Health) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, h) = health(addr).await;
        if done(&h) {
            return (status, h);
        }
        assert!(Instant::now() < deadline, "health stayed {h:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Puts a file where the state directory `dir` is, the directory kept at `aside`. The daemon
/// may recreate the directory it finds missing before the file is in place: that one goes.
fn swap_in_file(dir: &Path, aside: &Path) {
    std::fs::rename(dir, aside).unwrap();
    for _ in 0..100 {
        match std::fs::write(dir, b"not a directory") {
            Ok(()) => return,
            Err(_) => {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
    panic!("{} kept coming back", dir.display());
}

/// Puts the directory back where [`swap_in_file`] put the file.
fn swap_back(dir: &Path, aside: &Path) {
    std::fs::remove_file(dir).unwrap();
    for _ in 0..100 {
        match std::fs::rename(aside, dir) {
            Ok(()) => return,
            Err(_) => {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
    panic!("{} kept coming back", dir.display());
}

/// Scrapes until `done` holds of the scrape (failing after [`WAIT`]).
async fn scrape_until(addr: SocketAddr, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = scrape(addr).await;
        if done(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "the metrics never got there");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of every sample of `metric` whose labels include `labels`.
fn values(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    s.samples
        .iter()
        .filter(|x| x.metric == metric)
        .filter(|x| labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
        .map(|x| match x.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
            ref other => panic!("{metric} is {other:?}"),
        })
        .collect()
}

fn one(s: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    match values(s, metric, labels)[..] {
        [v] => v,
        ref all => panic!("{metric}{labels:?}: {all:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_every_shard_the_links_by_name_and_the_latency_histogram() {
    let d = start(&[]);
    let addr = endpoint(&d);
    let options = ConnectOptions {
        client_name: "gw-metrics".into(),
        trust: Trust::InsecureLocal,
        server_name: "localhost".into(),
        token: None,
    };
    let link = LinkClient::connect(d.link, options).await.expect("connect");
    let users: Vec<u64> = (1..=5).collect();
    link.subscribe(&users).await.unwrap();
    let mut gw = HeartbeatClient::new(1, 1, d.heartbeat).expect("udp");
    for &user in &users {
        gw.push(entry(user, 1, State::Online, true)).unwrap();
    }
    gw.flush().unwrap();
    let mut seen = 0;
    while seen < users.len() {
        match tokio::time::timeout(WAIT, link.next_push()).await {
            Ok(Some(Push::Events(events))) => seen += events.len(),
            other => panic!("{other:?} after {seen} events"),
        }
    }

    let s = scrape(addr).await;
    // Per shard, labelled: two shards, five heartbeats between them.
    let heartbeats = values(&s, "presenced_shard_heartbeats_total", &[]);
    assert_eq!(heartbeats.len(), 2, "{heartbeats:?}");
    assert_eq!(heartbeats.iter().sum::<f64>(), 5.0);
    for shard in ["0", "1"] {
        one(&s, "presenced_shard_datagrams_total", &[("shard", shard)]);
        one(&s, "presenced_shard_users", &[("shard", shard)]);
    }
    assert_eq!(one(&s, "presenced_shards", &[]), 2.0);
    // The link, by the name it gave in HELLO and its address.
    let link_labels = [("link", "gw-metrics")];
    assert_eq!(
        one(&s, "presenced_link_subscribed_users", &link_labels),
        5.0
    );
    // (Users time out after 500 ms: more events may have followed.)
    assert!(one(&s, "presenced_link_events_sent_total", &link_labels) >= 5.0);
    assert_eq!(
        one(&s, "presenced_link_events_dropped_total", &link_labels),
        0.0
    );
    assert!(one(&s, "presenced_link_queued_bytes", &link_labels) <= f64::from(4u32 << 20));
    let peer = s
        .samples
        .iter()
        .find(|x| x.metric == "presenced_link_lag_signals_total")
        .and_then(|x| x.labels.get("peer"))
        .expect("a peer label");
    assert!(
        peer.parse::<SocketAddr>().unwrap().ip().is_loopback(),
        "{peer}"
    );
    assert_eq!(one(&s, "presenced_push_links", &[]), 1.0);
    // The latency histogram: cumulative buckets ending at +Inf = the count of samples.
    let histogram = s
        .samples
        .iter()
        .find(|x| x.metric == "presenced_push_latency_seconds")
        .expect("the latency histogram");
    let Value::Histogram(buckets) = &histogram.value else {
        panic!("{histogram:?}")
    };
    assert!(buckets.len() > 10, "{buckets:?}");
    assert!(buckets
        .windows(2)
        .all(|w| w[0].less_than < w[1].less_than && w[0].count <= w[1].count));
    let last = buckets.last().unwrap();
    assert!(last.less_than.is_infinite());
    let count = one(&s, "presenced_push_latency_seconds_count", &[]);
    assert_eq!(last.count, count);
    assert!(count >= 1.0, "the events written gave latency samples");
    assert!(one(&s, "presenced_push_latency_seconds_sum", &[]) > 0.0);
    // Build, uptime, state.
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        one(&s, "presenced_build_info", &[("version", version)]),
        1.0
    );
    assert!(one(&s, "presenced_uptime_seconds", &[]) > 0.0);
    assert_eq!(one(&s, "presenced_state_writable", &[]), 1.0);

    let (status, h) = health(addr).await;
    assert_eq!((status, h.status), (StatusCode::OK, Status::Ok), "{h:?}");
    assert!(h.reasons.is_empty());
    let (status, _, _) = get(addr, "/nothing").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = request(addr, Method::POST, "/metrics").await.unwrap();
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_refuses_connections_past_its_limit_and_closes_idle_ones() {
    let d = start(&[
        "--set",
        "metrics.max_connections=2",
        "--set",
        "metrics.read_timeout=300ms",
    ]);
    let addr = endpoint(&d);
    // Two connections that send nothing hold both places.
    let mut idle = Vec::new();
    for _ in 0..2 {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        request(addr, Method::GET, "/metrics").await.is_err(),
        "a third connection is closed at once"
    );
    // The read timeout closes the idle ones: the peer sees the end of the stream.
    for stream in &mut idle {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(stream, &mut buf));
        assert_eq!(read.await.expect("closed in time").unwrap_or(0), 0);
    }
    let s = scrape(addr).await;
    assert!(one(&s, "presenced_metrics_connections_refused_total", &[]) >= 1.0);
    assert!(one(&s, "presenced_metrics_connections_timed_out_total", &[]) >= 2.0);
    // A request head past the limit is refused.
    let long = format!(
        "/metrics?{}",
        "x".repeat(presenced::metrics::MAX_REQUEST_HEAD_BYTES)
    );
    let refused = request(addr, Method::GET, &long).await;
    assert!(
        matches!(
            refused,
            Ok((StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, _, _)) | Err(_)
        ),
        "{refused:?}"
    );
    let s = scrape(addr).await;
    assert!(one(&s, "presenced_metrics_bad_requests_total", &[]) >= 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_degraded_while_the_state_directory_cannot_be_written() {
    let dir = StateDir::new();
    let d = Daemon::start_in(dir.path(), &args(&["--set", "state.snapshot_interval=1s"]));
    let addr = endpoint(&d);
    let (status, _) = health_until(addr, |h| h.status == Status::Ok).await;
    assert_eq!(status, StatusCode::OK);
    // The store has its files open once both shards' first snapshots are written.
    scrape_until(addr, |s| {
        one(s, "presenced_state_snapshots_total", &[]) >= 2.0
    })
    .await;

    // A file where the directory was (the directory kept aside): every snapshot fails, as
    // root too.
    let aside = dir.path().with_extension("aside");
    swap_in_file(dir.path(), &aside);
    let (status, h) = health_until(addr, |h| h.status == Status::Degraded).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(h.reasons.iter().any(|r| r.starts_with("state:")), "{h:?}");
    // The counters are at most a second old.
    let s = scrape_until(addr, |s| one(s, "presenced_state_writable", &[]) == 0.0).await;
    assert!(
        values(&s, "presenced_state_errors_total", &[])
            .iter()
            .sum::<f64>()
            >= 1.0
    );

    // The directory back: the next snapshots succeed and health recovers.
    swap_back(dir.path(), &aside);
    let (status, _) = health_until(addr, |h| h.status == Status::Ok).await;
    assert_eq!(status, StatusCode::OK);

    // Permissions: only bite when not root.
    // SAFETY: geteuid(2) only reads the process's credentials.
    if unsafe { libc::geteuid() } == 0 {
        println!("note: running as root, where permissions do not bite: chmod 0500 not tested");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let mut dirs = vec![dir.path().to_path_buf()];
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            dirs.push(path);
        }
    }
    let set = |mode: u32| {
        for d in &dirs {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    };
    set(0o500);
    let degraded = health_until(addr, |h| h.status == Status::Degraded).await;
    set(0o700);
    assert_eq!(degraded.0, StatusCode::SERVICE_UNAVAILABLE);
    health_until(addr, |h| h.status == Status::Ok).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_degraded_when_state_cannot_be_kept_from_the_start() {
    let dir = StateDir::new();
    std::fs::write(dir.path(), b"a file, not a directory").unwrap();
    let d = Daemon::start_in(dir.path(), &args(&[]));
    let (status, h) = health(endpoint(&d)).await;
    assert_eq!(
        (status, h.status),
        (StatusCode::SERVICE_UNAVAILABLE, Status::Degraded)
    );
    assert!(
        h.reasons
            .iter()
            .any(|r| r.contains("could not be used at start")),
        "{h:?}"
    );
    drop(d);
    let _ = std::fs::remove_file(dir.path());
}

#[test]
fn without_metrics_listen_there_is_no_endpoint() {
    let d = Daemon::start(FAST);
    assert_eq!(d.metrics, None);
}
