//! `presencectl health` against a real daemon's metrics endpoint on loopback: its exit status
//! says ok (0), degraded (1) or down (2), the last also when nothing answers within its 1 s.

mod common;

use common::InProcess;
use std::net::SocketAddr;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

const METRICS: (&str, &str) = ("metrics.listen", "127.0.0.1:0");

fn health(metrics: SocketAddr) -> Output {
    Command::new(env!("CARGO_BIN_EXE_presencectl"))
        .args(["health", "--metrics", &metrics.to_string()])
        .output()
        .expect("run presencectl")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_healthy_daemon_is_ok() {
    let d = InProcess::start(&[METRICS]);
    let out = health(d.running().metrics.expect("metrics endpoint"));
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).starts_with("ok (up "), "{}", stdout(&out));
}

#[test]
fn a_daemon_that_cannot_keep_its_state_is_degraded_with_the_reason() {
    let file = std::env::temp_dir().join(format!("presenced-health-{}", std::process::id()));
    std::fs::write(&file, b"a file where the state directory should be").unwrap();
    let path = file.display().to_string();
    let d = InProcess::start(&[METRICS, ("state.dir", &path)]);
    let out = health(d.running().metrics.expect("metrics endpoint"));
    drop(d);
    let _ = std::fs::remove_file(&file);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.starts_with("degraded"), "{text}");
    assert!(text.contains("could not be used at start"), "{text}");
}

#[test]
fn nothing_listening_or_nothing_answering_is_down() {
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let out = health(addr);
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stdout(&out).starts_with("down: "), "{}", stdout(&out));

    // A listener that accepts and never answers: down after the 1 s timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let started = Instant::now();
    let out = health(silent.local_addr().unwrap());
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    assert!(stdout(&out).contains("no answer"), "{}", stdout(&out));
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(10),
        "{took:?}"
    );
}
