//! A browser that goes silent (its network gone: it answers no ping, sends nothing, and its
//! socket is never closed) is closed by the gateway after `--browser-silence-timeout` and
//! logged out, so its user goes offline by `logout` long before the daemon's own timeout.

mod common;

use common::gateway::start_gateway_with;
use common::InProcess;
use presenced_client::{ConnectOptions, LinkClient, Push};
use presenced_tools::gateway::token::Secret;
use presenced_wire::link::{WireCause, WireState};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_browser_is_closed_and_logged_out() {
    // The daemon's own timeout (5 s + 2 × 5 s) is far beyond the test's wait.
    let daemon = InProcess::start(&[
        ("presence.heartbeat_interval", "5s"),
        ("presence.grace", "5s"),
        ("presence.idle_after", "60s"),
    ]);
    let dir = std::env::temp_dir().join(format!("presence-gateway-live-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let secret_file = dir.join("gateway.secret");
    let link = daemon.running().link;
    let (_gateway, base) =
        start_gateway_with(link, &secret_file, &["--browser-silence-timeout", "600ms"]);
    let secret = Secret::from_file(&secret_file).expect("secret");
    let _ = std::fs::remove_dir_all(&dir);

    let watcher = LinkClient::connect(link, ConnectOptions::local("test"))
        .await
        .expect("link");
    watcher.subscribe(&[7]).await.expect("subscribed");
    let expires = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let url = format!(
        "{}/ws?token={}",
        base.replacen("http://", "ws://", 1),
        secret.mint(7, expires)
    );
    // Connected, then never read again: no pong ever goes back.
    let (_silent, _) = tokio_tungstenite::connect_async(url.as_str())
        .await
        .expect("connected");
    let connected = Instant::now();
    let mut online = false;
    let logout = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match watcher.next_push().await {
                Some(Push::Events(events)) => {
                    for e in events {
                        if e.state == WireState::Online {
                            online = true;
                        }
                        if e.state == WireState::Offline {
                            return (e.cause, connected.elapsed());
                        }
                    }
                }
                Some(other) => panic!("unexpected push {other:?}"),
                None => panic!("the link ended"),
            }
        }
    })
    .await
    .expect("user 7 offline within 10 s");
    assert!(online, "user 7 came online first");
    assert_eq!(logout.0, WireCause::Logout);
    // Silent for the timeout (600 ms), noticed at the next ping (every 200 ms).
    assert!(logout.1 >= Duration::from_millis(600), "{:?}", logout.1);
    assert!(logout.1 < Duration::from_secs(3), "{:?}", logout.1);
}
