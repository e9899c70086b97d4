//! The reference gateway in a real browser: a daemon (in this process, loopback ports), the
//! `presence-gateway` binary, and headless Chromium driven through chromedriver (WebDriver,
//! with fantoccini). Two pages as users 1 and 2 see each other online; a page that really
//! goes hidden (its window minimized: the Page Visibility API reports `hidden`) shows its
//! user idle on the other; closing its browser shows the user offline at once (the gateway
//! logs the device out; the daemon's timeout is made far longer than the wait allowed); a
//! message that is not JSON gets its page an error and no one else anything; a bad and an
//! expired token are refused with the close reason shown, and `/stats` counts it all. A page
//! keeps following its roster across a daemon restart (the gateway reconnects its push link
//! and subscribes again). Needs `chromium` and `chromium-driver` (Debian's packages; CI
//! installs them). Set `PRESENCE_GATEWAY_SCREENSHOT=path.png` to save the roster page's
//! screenshot.

mod common;

use common::gateway::{start_gateway, Proc};

use fantoccini::{Client, ClientBuilder};
use presenced_client::{entry, HeartbeatClient};
use presenced_tools::gateway::token::Secret;
use presenced_wire::State;
use serde_json::{json, Value};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The whole test, browsers included, ends within this.
const TEST_LIMIT: Duration = Duration::from_secs(120);
/// How long a page may take to show what the test waits for.
const SHOW_WITHIN: Duration = Duration::from_secs(10);
/// "At once": the offline after a close must come well before the daemon's timeout (6 s).
const LOGOUT_WITHIN: Duration = Duration::from_secs(2);

fn find(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn wait_listening(addr: SocketAddr, what: &str) {
    let deadline = Instant::now() + SHOW_WITHIN;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} is not listening on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_chromedriver() -> (Proc, String, PathBuf) {
    let install = "install them: `apt-get install -y chromium chromium-driver` (CI does)";
    let chromium = find("chromium")
        .or_else(|| find("chromium-browser"))
        .unwrap_or_else(|| {
            panic!("this test needs Chromium, and no `chromium` is on PATH: {install}")
        });
    let driver = find("chromedriver")
        .unwrap_or_else(|| panic!("this test needs chromedriver, and none is on PATH: {install}"));
    let port = free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let proc = Proc(child);
    wait_listening(SocketAddr::from(([127, 0, 0, 1], port)), "chromedriver");
    (proc, format!("http://127.0.0.1:{port}"), chromium)
}

async fn browser(driver: &str, chromium: &Path, profile: &Path) -> Result<Client, String> {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": chromium,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=760,400", format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(driver)
        .await
        .map_err(|e| format!("cannot start a browser session: {e}"))
}

/// Runs `script` in the page until it returns `want`; how long that took.
async fn wait_for(page: &Client, what: &str, script: &str, want: &str) -> Result<Duration, String> {
    let start = Instant::now();
    let mut last = Value::Null;
    while start.elapsed() < SHOW_WITHIN {
        last = page
            .execute(script, vec![])
            .await
            .map_err(|e| e.to_string())?;
        if last.as_str() == Some(want) {
            return Ok(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Err(format!(
        "{what}: still {last} after {SHOW_WITHIN:?}, wanted {want}"
    ))
}

fn state_of(user: u64) -> String {
    format!(
        "const r = document.getElementById('user-{user}'); return r ? r.dataset.state : 'no row';"
    )
}

async fn go(page: &Client, url: &str) -> Result<(), String> {
    page.goto(url).await.map_err(|e| e.to_string())
}

const STATUS: &str = "return document.getElementById('status').textContent;";

fn unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn scenario(base: &str, secret: &Secret, one: &Client, two: &Client) -> Result<(), String> {
    let url = |user: u64, watch: &str| {
        format!(
            "{base}/?token={}&watch={watch}",
            secret.mint(user, unix_s() + 600)
        )
    };
    go(one, &url(1, "2,3")).await?;
    go(two, &url(2, "1")).await?;
    wait_for(one, "page 1 sees user 2", &state_of(2), "online").await?;
    wait_for(two, "page 2 sees user 1", &state_of(1), "online").await?;
    wait_for(one, "page 1 sees user 3", &state_of(3), "offline").await?;

    // Nonsense from page 1 gets page 1 an error, and changes nothing for anyone.
    one.execute("socket.send('not json'); return true;", vec![])
        .await
        .map_err(|e| e.to_string())?;
    let error_code = "return document.getElementById('error').dataset.code || '';";
    wait_for(one, "page 1's error", error_code, "bad_json").await?;
    wait_for(two, "page 2 after page 1's nonsense", error_code, "").await?;

    // Page 2 really goes hidden: its window is minimized.
    two.minimize_window().await.map_err(|e| e.to_string())?;
    wait_for(
        two,
        "page 2's visibility",
        "return document.visibilityState;",
        "hidden",
    )
    .await?;
    wait_for(one, "page 1 sees user 2 idle", &state_of(2), "idle").await?;
    if let Some(path) = std::env::var_os("PRESENCE_GATEWAY_SCREENSHOT") {
        let png = one.screenshot().await.map_err(|e| e.to_string())?;
        std::fs::write(&path, png).map_err(|e| e.to_string())?;
    }
    let two = two.clone();
    two.close().await.map_err(|e| e.to_string())?;
    let took = wait_for(one, "page 1 sees user 2 offline", &state_of(2), "offline").await?;
    if took > LOGOUT_WITHIN {
        return Err(format!(
            "user 2 went offline {took:?} after the browser closed: a timeout, not a logout"
        ));
    }

    // Refused tokens: the page shows the close reason.
    let forged = Secret::new(vec![3; 32])
        .expect("secret")
        .mint(1, unix_s() + 600);
    go(one, &format!("{base}/?token={forged}")).await?;
    wait_for(
        one,
        "a forged token",
        STATUS,
        "disconnected (1008: bad token signature)",
    )
    .await?;
    let expired = secret.mint(1, unix_s() - 1);
    go(one, &format!("{base}/?token={expired}")).await?;
    wait_for(
        one,
        "an expired token",
        STATUS,
        "disconnected (1008: token expired)",
    )
    .await?;

    // The gateway's counters: no one left, so nothing subscribed; what was refused, counted.
    // (Page 1 went to other pages: without closing its socket at `pagehide`, Chromium keeps
    // the first page, connected, in its back/forward cache, and user 1 would stay online.)
    let stats = "const r = new XMLHttpRequest(); r.open('GET', '/stats', false); r.send(); \
                 return r.responseText;";
    // The page leaving closes its socket (pagehide), which the gateway hears a moment later.
    let start = Instant::now();
    let counters = loop {
        let text = one
            .execute(stats, vec![])
            .await
            .map_err(|e| e.to_string())?;
        let counters: Value = serde_json::from_str(text.as_str().unwrap_or_default())
            .map_err(|e| format!("/stats is not JSON: {e}: {text}"))?;
        if counters["connections"] == 0 || start.elapsed() > SHOW_WITHIN {
            break counters;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let expected = json!({
        "connections": 0, "connections_opened": 2, "refused_token": 2, "bad_messages": 1,
        "subscribed_users": 0,
    });
    for (name, want) in expected.as_object().expect("an object") {
        if &counters[name] != want {
            return Err(format!(
                "/stats {name}: {}, wanted {want}: {counters}",
                counters[name]
            ));
        }
    }
    Ok(())
}

#[test]
fn two_browsers_see_each_other_come_go_idle_and_leave() {
    let (_driver, driver_url, chromium) = start_chromedriver();
    // The daemon's timeout (2 s + 2 × 2 s) is far longer than LOGOUT_WITHIN.
    let daemon = common::InProcess::start(&[
        ("presence.heartbeat_interval", "2s"),
        ("presence.grace", "2s"),
        ("presence.idle_after", "30s"),
    ]);
    let dir = std::env::temp_dir().join(format!("presence-gateway-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let secret_file = dir.join("gateway.secret");
    let (_gateway, base) = start_gateway(daemon.running().link, &secret_file);
    let secret = Secret::from_file(&secret_file).expect("the gateway wrote its secret");

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let outcome = runtime.block_on(async {
        tokio::time::timeout(TEST_LIMIT, async {
            let one = browser(&driver_url, &chromium, &dir.join("profile-1")).await?;
            let two = match browser(&driver_url, &chromium, &dir.join("profile-2")).await {
                Ok(two) => two,
                Err(e) => {
                    let _ = one.close().await;
                    return Err(e);
                }
            };
            let outcome = scenario(&base, &secret, &one, &two).await;
            let _ = one.close().await;
            let _ = two.close().await;
            outcome
        })
        .await
        .unwrap_or_else(|_| Err(format!("not done within {TEST_LIMIT:?}")))
    });
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = outcome {
        panic!("{e}");
    }
}

/// Heartbeats from the test itself, as another gateway would send them.
fn send(heartbeat: SocketAddr, user: u64, state: State) {
    let mut client = HeartbeatClient::new(9, 1, heartbeat).expect("socket");
    client.push(entry(user, 1, state, true)).expect("entry");
    client.flush().expect("sent");
}

async fn follows_restart(
    base: &str,
    secret: &Secret,
    page: &Client,
    daemon: &mut common::Restartable,
) -> Result<(), String> {
    go(
        page,
        &format!("{base}/?token={}&watch=2", secret.mint(1, unix_s() + 600)),
    )
    .await?;
    wait_for(page, "user 2 before", &state_of(2), "offline").await?;
    send(daemon.heartbeat, 2, State::Online);
    wait_for(page, "user 2 online", &state_of(2), "online").await?;
    // The daemon stops (GOAWAY to the gateway's link) and starts again with its state.
    daemon.stop();
    daemon.start_again();
    // Only a link subscribed again hears this.
    send(daemon.heartbeat, 2, State::Offline);
    wait_for(
        page,
        "user 2 offline after the restart",
        &state_of(2),
        "offline",
    )
    .await?;
    Ok(())
}

#[test]
fn a_page_follows_its_roster_across_a_daemon_restart() {
    let (_driver, driver_url, chromium) = start_chromedriver();
    let dir = std::env::temp_dir().join(format!("presence-gateway-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let state = common::StateDir::new();
    // No timeout falls within the test: user 2 goes offline only by the logout.
    let mut daemon = common::Restartable::start(
        state.path(),
        &[
            ("presence.heartbeat_interval", "5s"),
            ("presence.grace", "5s"),
            ("presence.idle_after", "30s"),
        ],
    );
    let secret_file = dir.join("gateway.secret");
    let (_gateway, base) = start_gateway(daemon.link, &secret_file);
    let secret = Secret::from_file(&secret_file).expect("the gateway wrote its secret");

    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let outcome = runtime.block_on(async {
        tokio::time::timeout(TEST_LIMIT, async {
            let page = browser(&driver_url, &chromium, &dir.join("profile")).await?;
            let outcome = follows_restart(&base, &secret, &page, &mut daemon).await;
            let _ = page.close().await;
            outcome
        })
        .await
        .unwrap_or_else(|_| Err(format!("not done within {TEST_LIMIT:?}")))
    });
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = outcome {
        panic!("{e}");
    }
}
