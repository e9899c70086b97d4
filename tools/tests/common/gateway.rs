//! The `presence-gateway` binary for the tools' tests: started on an ephemeral loopback port
//! against a daemon's push link, killed when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long the gateway may take to say where it listens.
const START_WITHIN: Duration = Duration::from_secs(10);

/// A child process killed and reaped when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the gateway with a new secret in `secret` (created); the process and its base URL
/// (`http://127.0.0.1:PORT`).
pub fn start_gateway(link: SocketAddr, secret: &Path) -> (Proc, String) {
    start_gateway_with(link, secret, &[])
}

/// As [`start_gateway`], with `extra` arguments to `serve`.
pub fn start_gateway_with(link: SocketAddr, secret: &Path, extra: &[&str]) -> (Proc, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_presence-gateway"))
        .args(["serve", "--listen", "127.0.0.1:0", "--create-secret"])
        .args(extra)
        .arg("--link")
        .arg(link.to_string())
        .arg("--secret-file")
        .arg(secret)
        .stdout(Stdio::piped())
        .spawn()
        .expect("presence-gateway starts");
    let stdout = child.stdout.take().expect("stdout");
    let proc = Proc(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(START_WITHIN)
        .expect("the gateway says where it listens");
    let base = line
        .strip_prefix("presence-gateway: listening on ")
        .unwrap_or_else(|| panic!("unexpected first line: {line}"))
        .trim_end_matches('/')
        .to_string();
    (proc, base)
}
