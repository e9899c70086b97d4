//! The real binary as an operator runs it: systemd's notify protocol on a real notify socket
//! (READY=1 only once serving, STATUS= lines, WATCHDOG=1 while the shards turn, even idle
//! ones, STOPPING=1), the log's two formats (journald's priorities, or timestamps), a size the
//! machine cannot hold refused with a clear error before READY, risky settings refused or
//! warned about, SIGHUP putting edited link limits in force for new links, and the shards on
//! cores of their own with the service threads kept off them.

mod common;

use common::StateDir;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The daemon on ephemeral loopback ports with its own state directory, the environment
/// given, stdout and stderr piped.
fn spawn(state: &StateDir, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_presenced"));
    cmd.args([
        "--listen",
        "127.0.0.1:0",
        "--link-listen",
        "127.0.0.1:0",
        "--shards",
        "2",
        "--set",
        "shards.pin=false",
        "--set",
        &state.setting(),
    ])
    .args(args)
    .env_remove("NOTIFY_SOCKET")
    .env_remove("JOURNAL_STREAM")
    .env_remove("WATCHDOG_USEC")
    .env_remove("WATCHDOG_PID")
    .envs(env.iter().copied())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    cmd
}

/// Lines of a pipe, as they come.
fn lines<R: Read + Send + 'static>(r: R) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Waits (at most 20 s) for a line containing `needle`; returns it.
fn wait_line(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(_) => panic!("no line with {needle:?} within 20 s"),
        }
    }
}

fn sigterm(child: &Child) {
    // SAFETY: kill(2) on our own child's pid has no memory effects.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
}

fn wait_exit(child: &mut Child) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    panic!("presenced did not exit within 20 s of SIGTERM");
}

/// Notifications received on `socket` within `within`.
fn notifications(socket: &UnixDatagram, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        socket
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match socket.recv(&mut buf) {
            Ok(n) => out.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => break,
        }
    }
    out
}

#[test]
fn systemd_hears_ready_then_watchdog_pings_while_idle_shards_turn_then_stopping() {
    let state = StateDir::new();
    std::fs::create_dir_all(state.path()).unwrap();
    let path = state.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let notify_socket = path.display().to_string();
    // 400 ms: checked every 100 ms; idle shards sleep and must be woken to prove life.
    let env = [
        ("NOTIFY_SOCKET", notify_socket.as_str()),
        ("WATCHDOG_USEC", "400000"),
    ];
    let mut child = spawn(&state, &[], &env).spawn().unwrap();
    let stdout = lines(child.stdout.take().unwrap());
    let _stderr = lines(child.stderr.take().unwrap());
    let first = notifications(&socket, Duration::from_secs(20));
    assert!(
        first
            .first()
            .is_some_and(|m| m.starts_with("READY=1\nSTATUS=")),
        "{first:?}"
    );
    // READY=1 comes after the ready line's sockets are bound.
    wait_line(&stdout, "presenced ready");
    let pings = notifications(&socket, Duration::from_millis(1500));
    let fed = pings.iter().filter(|m| *m == "WATCHDOG=1").count();
    assert!(fed >= 5, "{fed} pings in 1.5 s: {pings:?}");
    assert!(
        pings
            .iter()
            .any(|m| m.starts_with("STATUS=serving: 0 users, 0 devices")),
        "{pings:?}"
    );
    sigterm(&child);
    let last = notifications(&socket, Duration::from_secs(5));
    assert!(
        last.iter()
            .any(|m| m.starts_with("STOPPING=1\nSTATUS=stopping: SIGTERM")),
        "{last:?}"
    );
    assert_eq!(wait_exit(&mut child), Some(0));
}

#[test]
fn under_journald_lines_carry_priorities_and_no_timestamp_elsewhere_a_timestamp() {
    let state = StateDir::new();
    let mut child = spawn(&state, &[], &[("JOURNAL_STREAM", "8:1234")])
        .spawn()
        .unwrap();
    let stderr = lines(child.stderr.take().unwrap());
    let started = wait_line(&stderr, "started");
    assert!(started.starts_with("<6>started"), "{started}");
    assert!(started.contains("shards=2"), "{started}");
    sigterm(&child);
    assert!(wait_line(&stderr, "stopping").starts_with("<6>stopping: SIGTERM"));
    assert!(wait_line(&stderr, "stopped").starts_with("<6>stopped"));
    assert_eq!(wait_exit(&mut child), Some(0));

    let mut child = spawn(&state, &["--set", "log.level=warn"], &[])
        .spawn()
        .unwrap();
    let stderr = lines(child.stderr.take().unwrap());
    let stdout = lines(child.stdout.take().unwrap());
    wait_line(&stdout, "presenced ready");
    sigterm(&child);
    assert_eq!(wait_exit(&mut child), Some(0));
    let said: Vec<String> = stderr.try_iter().collect();
    assert!(
        said.iter().all(|l| !l.contains("INFO")),
        "log.level=warn keeps info lines out: {said:?}"
    );
    let mut child = spawn(&state, &[], &[]).spawn().unwrap();
    let stderr = lines(child.stderr.take().unwrap());
    let started = wait_line(&stderr, "started");
    // 2026-11-27T07:36:26.123Z  INFO started: ...
    let (stamp, rest) = started.split_once(' ').unwrap();
    assert!(stamp.len() == 24 && stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T');
    assert!(rest.trim_start().starts_with("INFO started"), "{started}");
    sigterm(&child);
    assert_eq!(wait_exit(&mut child), Some(0));
}

#[test]
fn a_size_the_machine_cannot_hold_is_a_clear_error_before_ready() {
    let state = StateDir::new();
    let path = state.path().with_extension("sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let notify_socket = path.display().to_string();
    let mut cmd = spawn(
        &state,
        &["--set", "presence.users_per_shard=100M"],
        &[("NOTIFY_SOCKET", notify_socket.as_str())],
    );
    // 2 GiB of address space: a table for 100M users (4.6 GB) cannot be had.
    // SAFETY: setrlimit only changes this child's limits, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 2 << 30,
                rlim_max: 2 << 30,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("presence.users_per_shard"), "{err}");
    assert!(err.contains("address space"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let heard = notifications(&socket, Duration::from_millis(100));
    assert!(heard.iter().all(|m| !m.contains("READY=1")), "{heard:?}");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_daemon_reachable_beyond_loopback_without_keys_is_refused_and_risky_values_warned() {
    let state = StateDir::new();
    let out = Command::new(env!("CARGO_BIN_EXE_presenced"))
        .args(["--listen", "0.0.0.0:0", "--set", &state.setting()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("auth.keys_file"), "{err}");
    assert!(err.contains("allow_unauthenticated"), "{err}");

    let mut child = spawn(&state, &["--set", "presence.grace=0s"], &[])
        .spawn()
        .unwrap();
    let stderr = lines(child.stderr.take().unwrap());
    let stdout = lines(child.stdout.take().unwrap());
    let warning = wait_line(&stderr, "presence.grace");
    assert!(warning.contains("WARN"), "{warning}");
    wait_line(&stdout, "presenced ready");
    sigterm(&child);
    assert_eq!(wait_exit(&mut child), Some(0));
}

/// The push link's address in the ready line.
fn link_addr(ready: &str) -> std::net::SocketAddr {
    let field = ready.split(' ').find_map(|f| f.strip_prefix("link="));
    field.expect("link= in the ready line").parse().unwrap()
}

#[test]
fn sighup_reloads_the_link_limits_for_new_links_and_says_which_keys() {
    use presenced_client::{ConnectOptions, LinkClient, RawLink};
    use presenced_wire::link::{encode_subscribe, ErrorCode};

    let state = StateDir::new();
    let config = state.path().with_extension("toml");
    std::fs::write(
        &config,
        "[link]\nmax_users_per_request = 100\nidle_timeout = \"30s\"\n",
    )
    .unwrap();
    let config_arg = config.display().to_string();
    let mut child = spawn(&state, &["--config", &config_arg], &[])
        .spawn()
        .unwrap();
    let stdout = lines(child.stdout.take().unwrap());
    let stderr = lines(child.stderr.take().unwrap());
    let link = link_addr(&wait_line(&stdout, "presenced ready"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let old = runtime
        .block_on(LinkClient::connect(link, ConnectOptions::local("old")))
        .unwrap();
    assert_eq!(old.welcome().limits.max_users_per_request, 100);

    std::fs::write(
        &config,
        "[link]\nmax_users_per_request = 10\nidle_timeout = \"20s\"\nmax_links = 2\n\
         [presence]\ngrace = \"5s\"\n",
    )
    .unwrap();
    // SAFETY: kill(2) on our own child's pid has no memory effects.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGHUP);
    }
    let said = wait_line(&stderr, "SIGHUP:");
    assert!(
        said.contains(
            "SIGHUP: reloaded link.idle_timeout (new links), link.max_links (new links), \
             link.max_users_per_request (new links); changed settings that need a restart: \
             presence.grace"
        ),
        "{said}"
    );

    runtime.block_on(async {
        // A new link is told the new limits and held to them.
        let mut new = RawLink::connect(link, ConnectOptions::local("new"), 1 << 20)
            .await
            .unwrap();
        assert_eq!(new.link_info().idle_timeout, Some(Duration::from_secs(20)));
        let mut frame = bytes::BytesMut::new();
        let eleven: Vec<u64> = (1..=11).collect();
        encode_subscribe(&mut frame, 7, &eleven).unwrap();
        new.send_raw(&frame).await.unwrap();
        let (request, code, message) = new
            .next_error(Duration::from_secs(10))
            .await
            .unwrap()
            .expect("the 11-user SUBSCRIBE is refused");
        assert_eq!((request, code), (7, Some(ErrorCode::TooManyUsers)));
        assert!(
            message.contains("link.max_users_per_request is 10"),
            "{message}"
        );
        // The open link keeps what its WELCOME announced: 50 users in one request.
        let users: Vec<u64> = (1..=50).collect();
        assert_eq!(old.subscribe(&users).await.unwrap().len(), 50);
        // Two links are open: a third is refused, and neither open one is closed.
        let third = tokio::time::timeout(
            Duration::from_secs(10),
            LinkClient::connect(link, ConnectOptions::local("third")),
        )
        .await
        .expect("refused at once");
        assert!(third.is_err());
        assert_eq!(old.query(&[1]).await.unwrap().len(), 1);
    });
    sigterm(&child);
    assert_eq!(wait_exit(&mut child), Some(0));
    let _ = std::fs::remove_file(&config);
}

/// Each thread of `pid` by name, with the CPUs it may run on (`Cpus_allowed_list`, as written).
fn thread_cpus(pid: u32) -> Vec<(String, String)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap_or_default();
        threads.push((name.trim().to_string(), cpus.trim().to_string()));
    }
    threads
}

#[test]
fn pinned_shards_keep_their_cores_and_the_service_threads_keep_off_them() {
    let allowed: Vec<usize> = {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let list = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
            .to_string();
        list.split(',')
            .flat_map(|part| match part.split_once('-') {
                Some((a, b)) => (a.parse().unwrap()..=b.parse().unwrap()).collect::<Vec<_>>(),
                None => vec![part.parse().unwrap()],
            })
            .collect()
    };
    let state = StateDir::new();
    let mut child = spawn(
        &state,
        &[
            "--set",
            "shards.count=1",
            "--set",
            "shards.pin=true",
            "--set",
            "shards.service_cores=1",
        ],
        &[],
    )
    .spawn()
    .unwrap();
    let stderr = lines(child.stderr.take().unwrap());
    let cores = wait_line(&stderr, "cores:");
    wait_line(&stderr, "started");
    // A thread names itself once it first runs, which on a busy machine may come after the
    // start line.
    let named = ["shard-0", "hub-0", "link", "store"];
    let deadline = Instant::now() + Duration::from_secs(10);
    let threads = loop {
        let threads = thread_cpus(child.id());
        let all = named.iter().all(|&n| threads.iter().any(|(t, _)| t == n));
        if all || Instant::now() > deadline {
            break threads;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let of = |name: &str| {
        threads
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, cpus)| cpus.clone())
            .unwrap_or_else(|| panic!("no thread {name} in {threads:?}"))
    };
    if allowed.len() >= 2 {
        let (service, shard) = (allowed[0].to_string(), allowed[1].to_string());
        assert!(
            cores.contains(&format!(
                "shards pinned to {shard}; 1 hub, link (1 endpoint, 2 threads), store and \
                 metrics threads on {service}"
            )),
            "{cores}"
        );
        assert_eq!(of("shard-0"), shard, "{threads:?}");
        for name in ["hub-0", "link", "store"] {
            assert_eq!(of(name), service, "{name}: {threads:?}");
        }
    } else {
        assert!(
            cores.contains("threads on any core"),
            "one core: nothing kept; {cores}"
        );
        assert_eq!(of("shard-0"), allowed[0].to_string());
    }
    sigterm(&child);
    assert_eq!(wait_exit(&mut child), Some(0));
}
