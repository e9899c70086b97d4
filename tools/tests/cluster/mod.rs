//! A real etcd and presenced cluster members for the tools' tests, each member its own
//! process (so it can be killed with SIGKILL, as in a crash).
//!
//! Cargo builds the `presenced` binary only for the daemon's own tests, so a member is this
//! test binary started again with [`MEMBER_ENV`] set: it then runs the daemon library
//! (`presenced::daemon::start`, the binary's own start) with the settings the variable gives,
//! prints the ready line, and runs until killed, until its stdin closes (the test ended), or
//! for [`MEMBER_LIFETIME`] at most. The etcd helper follows tests/common/etcd.rs at the root:
//! one etcd on loopback ports of its own, its data in a temporary directory, killed when
//! dropped.

use presenced_client::{ConnectOptions, LinkClient, Trust};
use presenced_wire::stats::ClusterStats;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Set in a member's environment: its settings, one `key=value` per line.
pub const MEMBER_ENV: &str = "LOADGEN_CLUSTER_TEST_MEMBER";
/// A member stops by itself after this long, whatever happens to the test.
pub const MEMBER_LIFETIME: Duration = Duration::from_secs(300);
/// How long etcd, and a member, may take to be ready.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// FAST timings (as the tools' other tests): tick 5 ms, interval 300 ms, grace 100 ms (offline
/// after 500 ms of silence), idle after 1 s, two shards, not pinned.
const FAST: &[(&str, &str)] = &[
    ("ingest.listen", "127.0.0.1:0"),
    ("link.listen", "127.0.0.1:0"),
    ("shards.count", "2"),
    ("shards.pin", "false"),
    ("presence.tick", "5ms"),
    ("presence.heartbeat_interval", "300ms"),
    ("presence.grace", "100ms"),
    ("presence.idle_after", "1s"),
];

/// A directory of this test process's own, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh, empty directory.
    pub fn new(what: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "presenced-tools-{what}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A loopback port free now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A running etcd (`/usr/bin/etcd`, Debian's etcd-server).
pub struct Etcd {
    child: Child,
    client_port: u16,
    _dir: TempDir,
}

impl Etcd {
    /// Starts etcd and waits until it says it is healthy.
    pub fn start() -> Etcd {
        let dir = TempDir::new("etcd");
        let (client_port, peer_port) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let child = Command::new("etcd")
            .args(["--name", "default", "--data-dir"])
            .arg(&dir.0)
            .args(["--listen-client-urls", &url])
            .args(["--advertise-client-urls", &url])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--log-level", "error", "--logger", "zap"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd (Debian's etcd-server)");
        let etcd = Etcd {
            child,
            client_port,
            _dir: dir,
        };
        let until = Instant::now() + READY_WITHIN;
        while !etcd.healthy() {
            assert!(
                Instant::now() < until,
                "etcd not healthy within {READY_WITHIN:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        etcd
    }

    /// The client URL, for `cluster.etcd`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Whether `GET /health` says so.
    fn healthy(&self) -> bool {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.client_port));
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /health HTTP/1.0\r\n\r\n").is_err() {
            return false;
        }
        let mut reply = String::new();
        let _ = s.read_to_string(&mut reply);
        reply.contains("\"health\":\"true\"")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A member process and the addresses it bound.
pub struct Member {
    child: Child,
    /// Its id.
    pub id: String,
    /// Its push link.
    pub link: SocketAddr,
    _dir: TempDir,
}

impl Member {
    /// Starts member `id` of cluster `name` on `etcd`, with FAST timings and `extra` settings.
    pub fn start(etcd: &Etcd, name: &str, id: &str, extra: &[(&str, &str)]) -> Member {
        let dir = TempDir::new("member");
        let mut settings: Vec<(String, String)> = FAST
            .iter()
            .chain(extra)
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        settings.push(("state.dir".into(), dir.0.display().to_string()));
        settings.push(("cluster.etcd".into(), etcd.url()));
        settings.push(("cluster.name".into(), name.into()));
        settings.push(("cluster.member".into(), id.into()));
        let env: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut child = Command::new(std::env::current_exe().expect("the test binary"))
            .env(MEMBER_ENV, env.join("\n"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a member");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = rx
            .recv_timeout(READY_WITHIN)
            .unwrap_or_else(|_| panic!("member {id} printed no ready line"));
        let link = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("link="))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no link= in {line:?}"));
        Member {
            child,
            id: id.into(),
            link,
            _dir: dir,
        }
    }

    /// Kills the member with SIGKILL, as in a crash (its lease lapses in etcd).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// In a member process: runs the daemon with the settings in [`MEMBER_ENV`] until stdin closes
/// or [`MEMBER_LIFETIME`] passes.
pub fn run_member(settings: &str) -> ! {
    let mut sources = presenced::settings::Sources::default();
    for line in settings.lines() {
        let (key, value) = line.split_once('=').expect("key=value");
        sources.set(key, value).expect("a setting");
    }
    let running =
        presenced::daemon::start(sources.build(2).expect("settings")).expect("the daemon starts");
    println!("{}", running.ready_line());
    let _ = std::io::stdout().flush();
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        std::process::exit(0);
    });
    std::thread::sleep(MEMBER_LIFETIME);
    let _ = running.shutdown();
    std::process::exit(0);
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Waits until every member is active and warm in a map of all of them.
pub fn wait_settled(members: &[Member]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let options = ConnectOptions {
        client_name: "loadgen-cluster-test".into(),
        trust: Trust::InsecureLocal,
        server_name: "localhost".into(),
        token: None,
    };
    let settled = |s: &ClusterStats| {
        s.role == "active"
            && s.map.members.len() == members.len()
            && s.map.members.iter().all(|m| m.warm_at_ms <= now_ms())
    };
    rt.block_on(async {
        for m in members {
            let link = LinkClient::connect(m.link, options.clone())
                .await
                .expect("a link to the member");
            let until = Instant::now() + READY_WITHIN;
            loop {
                let stats = link.stats().await.expect("STATS");
                let cluster = stats.cluster.expect("a cluster section");
                if settled(&cluster) {
                    break;
                }
                assert!(Instant::now() < until, "member {}: {cluster:?}", m.id);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            link.close().await;
        }
    });
}
