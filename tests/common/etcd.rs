//! A real `etcd` (Debian's etcd-server) for integration tests: one member on loopback ports
//! of its own, its data in a temporary directory; stopped and started again on demand (on the
//! same ports and data, as a restart), killed when dropped. A client of its own reads and
//! writes keys for the test.

use super::StateDir;
use etcd_client::{Client, GetOptions};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long etcd may take to answer after it is started.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// One key under a prefix, as etcd holds it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// Its value.
    pub value: Vec<u8>,
    /// The lease it is attached to (0: none).
    pub lease: i64,
}

/// A running etcd.
pub struct Etcd {
    child: Option<Child>,
    dir: StateDir,
    client_port: u16,
    peer_port: u16,
    runtime: tokio::runtime::Runtime,
}

/// A loopback port free now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Etcd {
    /// Starts etcd and waits until it answers.
    pub fn start() -> Etcd {
        let mut etcd = Etcd::stopped();
        etcd.resume();
        etcd
    }

    /// An etcd with its ports chosen but not started yet (its URL refuses connections until
    /// [`Etcd::resume`]).
    pub fn stopped() -> Etcd {
        Etcd {
            child: None,
            dir: StateDir::new(),
            client_port: free_port(),
            peer_port: free_port(),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime"),
        }
    }

    /// The client URL, for `cluster.etcd`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Starts etcd (again, on the same ports and data) and waits until it answers.
    pub fn resume(&mut self) {
        assert!(self.child.is_none(), "etcd is running");
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .args(["--name", "default", "--data-dir"])
            .arg(self.dir.path())
            .args(["--listen-client-urls", &self.url()])
            .args(["--advertise-client-urls", &self.url()])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("default={peer}")])
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--log-level", "error", "--logger", "zap"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd (Debian's etcd-server; .ci/run installs it)");
        self.child = Some(child);
        let until = Instant::now() + READY_WITHIN;
        loop {
            if self.try_get("/").is_ok() {
                return;
            }
            assert!(
                Instant::now() < until,
                "etcd did not answer within {READY_WITHIN:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops etcd (SIGTERM, then kill after 5 s) and waits for it to exit.
    pub fn pause(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    fn try_get(&self, prefix: &str) -> Result<Vec<Entry>, etcd_client::Error> {
        let url = self.url();
        let prefix = prefix.to_string();
        self.runtime.block_on(async move {
            let call = async {
                let mut client = Client::connect([url], None).await?;
                let read = client
                    .get(prefix, Some(GetOptions::new().with_prefix()))
                    .await?;
                Ok(read
                    .kvs()
                    .iter()
                    .map(|kv| Entry {
                        key: String::from_utf8_lossy(kv.key()).into_owned(),
                        value: kv.value().to_vec(),
                        lease: kv.lease(),
                    })
                    .collect())
            };
            tokio::time::timeout(Duration::from_secs(2), call)
                .await
                .unwrap_or_else(|_| Err(etcd_client::Error::InvalidArgs("timed out".into())))
        })
    }

    /// Every key under `prefix`.
    pub fn get(&self, prefix: &str) -> Vec<Entry> {
        self.try_get(prefix).expect("read etcd")
    }

    /// Puts `value` at `key` (no lease).
    pub fn put(&self, key: &[u8], value: &[u8]) {
        let url = self.url();
        let (key, value) = (key.to_vec(), value.to_vec());
        self.runtime
            .block_on(async move {
                let mut client = Client::connect([url], None).await?;
                client.put(key, value, None).await
            })
            .expect("write etcd");
    }

    /// The lease's remaining TTL, seconds (-1: gone).
    pub fn lease_ttl(&self, lease: i64) -> i64 {
        let url = self.url();
        self.runtime
            .block_on(async move {
                let mut client = Client::connect([url], None).await?;
                client.lease_time_to_live(lease, None).await
            })
            .expect("read etcd")
            .ttl()
    }

    /// Revokes `lease` (its keys go with it).
    pub fn revoke(&self, lease: i64) {
        let url = self.url();
        self.runtime
            .block_on(async move {
                let mut client = Client::connect([url], None).await?;
                client.lease_revoke(lease).await
            })
            .expect("revoke in etcd");
    }

    /// Waits up to `within` for `done` to hold of the keys under `prefix`; returns them.
    pub fn wait_for(
        &self,
        prefix: &str,
        within: Duration,
        done: impl Fn(&[Entry]) -> bool,
    ) -> Vec<Entry> {
        let until = Instant::now() + within;
        loop {
            let entries = self.try_get(prefix).unwrap_or_default();
            if done(&entries) {
                return entries;
            }
            assert!(
                Instant::now() < until,
                "etcd's keys under {prefix} did not come right within {within:?}: {entries:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
