//! A cluster of three real daemons on one real etcd, driven by a gateway that uses the client
//! library as a gateway team would (`ClusterHeartbeats`: every entry to every replica;
//! `ClusterLink`: subscriptions at each user's primary, moved when the map changes), while
//! members are killed or restarted under churn. What a subscriber sees is compared with what
//! the gateway did: no user who kept heartbeating is ever seen offline, every login and logout
//! is seen, and the survivors keep every user's last seen.

mod common;

use common::etcd::Etcd;
use common::{Daemon, StateDir, FAST};
use presenced_client::cluster::{ClusterHeartbeats, ClusterLink, ClusterPush};
use presenced_client::{ConnectOptions, LinkClient, Trust};
use presenced_wire::cluster::MemberMap;
use presenced_wire::link::WireState;
use presenced_wire::stats::ClusterStats;
use presenced_wire::{Entry, State};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Users who heartbeat all along.
const STEADY: std::ops::RangeInclusive<u64> = 1..=150;
/// Users who log in and out in turn, each `TOGGLE` after the other, staggered.
const CHURN: std::ops::RangeInclusive<u64> = 1_001..=1_040;
const TOGGLE: Duration = Duration::from_secs(4);
/// How often the gateway sends every online device's heartbeat (FAST's timeout is 500 ms).
const BEAT: Duration = Duration::from_millis(100);
/// The members' lease (the default).
const LEASE: Duration = Duration::from_secs(2);

/// One cluster test at a time: each runs three daemons and an etcd on a small machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn cluster_name() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("c{}-{n}", std::process::id())
}

/// Member `id` of cluster `name`, its state kept in `dir`, with `hubs` hub threads.
fn member(etcd: &Etcd, name: &str, id: &str, dir: &StateDir, hubs: u32) -> Daemon {
    let settings = [
        format!("cluster.etcd={}", etcd.url()),
        format!("cluster.name={name}"),
        format!("cluster.member={id}"),
        format!("link.hubs={hubs}"),
    ];
    let mut args: Vec<&str> = FAST.to_vec();
    for s in &settings {
        args.extend(["--set", s]);
    }
    Daemon::start_in(dir.path(), &args)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn options() -> ConnectOptions {
    ConnectOptions {
        client_name: "cluster-test".into(),
        trust: Trust::InsecureLocal,
        server_name: "localhost".into(),
        token: None,
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Asks `d` for its STATS cluster section until `done` holds (at most `within`).
fn wait_cluster(
    rt: &tokio::runtime::Runtime,
    d: &Daemon,
    within: Duration,
    done: impl Fn(&ClusterStats) -> bool,
) -> ClusterStats {
    rt.block_on(async {
        let link = LinkClient::connect(d.link, options()).await.unwrap();
        let until = Instant::now() + within;
        loop {
            let cluster = link.stats().await.unwrap().cluster.unwrap();
            if done(&cluster) {
                return cluster;
            }
            assert!(Instant::now() < until, "STATS' cluster: {cluster:?}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
}

/// Whether `s` is an active member of a warm cluster of `n`.
fn settled(s: &ClusterStats, n: usize) -> bool {
    s.role == "active"
        && s.map.members.len() == n
        && s.map.members.iter().all(|m| m.warm_at_ms <= now_ms())
}

/// What the gateway did and what one of its subscribers saw.
#[derive(Clone, Default)]
struct Log {
    /// Per churn user, each state it was put in (true: online) and when (Unix ms), in order.
    truth: BTreeMap<u64, Vec<(u64, bool)>>,
    /// Per user, each state reported (records and events), in order.
    seen: BTreeMap<u64, Vec<(WireState, u64)>>,
}

/// The gateway: heartbeats to every replica following the map, churn, and subscribers to
/// every user, each through a `ClusterLink` of its own.
struct Gateway {
    /// One per subscriber; the first also has what the gateway did.
    logs: Vec<Arc<Mutex<Log>>>,
    stop: Arc<AtomicBool>,
    /// Toggling goes on while set; cleared, churn users keep their last state.
    churning: Arc<AtomicBool>,
    map: Arc<Mutex<Option<MemberMap>>>,
    /// A link of its own for the test's queries (the subscriber's is its thread's).
    queries: ClusterLink,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Gateway {
    /// Connects `subscribers` links in turn (so a member with two hubs serves consecutive
    /// ones from different hubs), then the test's own.
    fn start(
        rt: &tokio::runtime::Runtime,
        seeds: &[std::net::SocketAddr],
        subscribers: usize,
    ) -> Gateway {
        let stop = Arc::new(AtomicBool::new(false));
        let churning = Arc::new(AtomicBool::new(true));
        let map = Arc::new(Mutex::new(None));
        let users: Vec<u64> = STEADY.chain(CHURN).collect();
        let (links, queries, first) = rt.block_on(async {
            let mut links = Vec::new();
            for _ in 0..subscribers {
                links.push(ClusterLink::connect(seeds, options()).await.unwrap());
            }
            let queries = ClusterLink::connect(seeds, options()).await.unwrap();
            let first = links[0].map().await.expect("a member sends its map");
            (links, queries, first)
        });
        *map.lock().unwrap() = Some(first.clone());
        let (maps_tx, maps_rx) = mpsc::channel::<MemberMap>();
        let mut logs = Vec::new();
        let mut threads = Vec::new();
        for (i, mut link) in links.into_iter().enumerate() {
            let log = Arc::new(Mutex::new(Log::default()));
            let records = rt.block_on(link.subscribe(&users)).unwrap();
            {
                let mut l = log.lock().unwrap();
                for r in records {
                    l.seen.entry(r.user).or_default().push((r.state, r.version));
                }
            }
            // The first subscriber passes the maps on to the heartbeats.
            let maps = (i == 0).then(|| (map.clone(), maps_tx.clone()));
            // The subscriber: everything the link reports.
            let (stop, handle, seen) = (stop.clone(), rt.handle().clone(), log.clone());
            threads.push(std::thread::spawn(move || {
                handle.block_on(async {
                    while !stop.load(Ordering::Relaxed) {
                        let next =
                            tokio::time::timeout(Duration::from_millis(100), link.next()).await;
                        let Ok(Some(push)) = next else { continue };
                        let mut l = seen.lock().unwrap();
                        match push {
                            ClusterPush::Events(events) => {
                                for e in events {
                                    l.seen.entry(e.user).or_default().push((e.state, e.version));
                                }
                            }
                            ClusterPush::Records(records) => {
                                for r in records {
                                    l.seen.entry(r.user).or_default().push((r.state, r.version));
                                }
                            }
                            ClusterPush::Map(m) => {
                                if let Some((map, maps_tx)) = &maps {
                                    *map.lock().unwrap() = Some(m.clone());
                                    let _ = maps_tx.send(m);
                                }
                            }
                            ClusterPush::MemberLost(_) => {}
                        }
                    }
                    link.close().await;
                })
            }));
            logs.push(log);
        }
        let log = logs[0].clone();
        // The heartbeats: every online device each BEAT, churn users toggling.
        let beats = {
            let (log, stop, churning) = (log.clone(), stop.clone(), churning.clone());
            std::thread::spawn(move || {
                let epoch = (now_ms() / 1000) as u32;
                let mut hb = ClusterHeartbeats::new(1, epoch);
                hb.set_map(first, |_| Vec::new()).unwrap();
                let start = Instant::now();
                let mut online: BTreeMap<u64, bool> = CHURN.map(|u| (u, false)).collect();
                while !stop.load(Ordering::Relaxed) {
                    for m in maps_rx.try_iter() {
                        hb.set_map(m, |_| Vec::new()).unwrap();
                    }
                    for user in STEADY {
                        hb.push(entry(user, State::Online)).unwrap();
                    }
                    let churn = churning.load(Ordering::Relaxed);
                    for user in CHURN {
                        let phase = Duration::from_millis((user - CHURN.start()) * 97);
                        let on = if churn {
                            ((start.elapsed() + phase).as_millis() / TOGGLE.as_millis()) % 2 == 0
                        } else {
                            online[&user]
                        };
                        if on != online[&user] {
                            online.insert(user, on);
                            log.lock()
                                .unwrap()
                                .truth
                                .entry(user)
                                .or_default()
                                .push((now_ms(), on));
                        }
                        let state = if on { State::Online } else { State::Offline };
                        // A logged-out device's logout is repeated each beat (UDP).
                        hb.push(entry(user, state)).unwrap();
                    }
                    hb.flush().unwrap();
                    std::thread::sleep(BEAT);
                }
            })
        };
        threads.push(beats);
        Gateway {
            logs,
            stop,
            churning,
            map,
            queries,
            threads,
        }
    }

    fn map(&self) -> MemberMap {
        self.map.lock().unwrap().clone().unwrap()
    }

    /// Stops churn, lets the last transitions arrive, stops, and returns what happened, as
    /// each subscriber saw it.
    fn finish(mut self, settle: Duration) -> Vec<Log> {
        self.churning.store(false, Ordering::Relaxed);
        std::thread::sleep(settle);
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
        let truth = self.logs[0].lock().unwrap().truth.clone();
        self.logs
            .iter()
            .map(|log| Log {
                truth: truth.clone(),
                seen: std::mem::take(&mut log.lock().unwrap().seen),
            })
            .collect()
    }
}

fn entry(user: u64, state: State) -> Entry {
    Entry {
        user,
        device: 1,
        state,
        // Activity on every beat: users stay online, never idle.
        active: true,
    }
}

/// Steady users seen offline after they were seen online: false offlines.
fn false_offlines(log: &Log) -> Vec<u64> {
    STEADY
        .filter(|u| {
            let seen = log.seen.get(u).map(Vec::as_slice).unwrap_or(&[]);
            let first_online = seen.iter().position(|(s, _)| *s == WireState::Online);
            first_online.is_some_and(|i| seen[i..].iter().any(|(s, _)| *s == WireState::Offline))
        })
        .collect()
}

/// Churn users whose logins and logouts, as seen, are not what the gateway did: the states
/// seen (runs of the same state as one) must be offline (before the first login) and then
/// exactly the gateway's sequence.
fn missing_or_false(log: &Log) -> Vec<(u64, Vec<bool>, Vec<bool>)> {
    let mut wrong = Vec::new();
    for user in CHURN {
        let mut seen: Vec<bool> = Vec::new();
        for (s, _) in log.seen.get(&user).map(Vec::as_slice).unwrap_or(&[]) {
            let on = *s != WireState::Offline;
            if seen.last() != Some(&on) {
                seen.push(on);
            }
        }
        let mut truth = vec![false];
        for &(_, on) in log.truth.get(&user).map(Vec::as_slice).unwrap_or(&[]) {
            if truth.last() != Some(&on) {
                truth.push(on);
            }
        }
        if seen != truth {
            wrong.push((user, truth, seen));
        }
    }
    wrong
}

/// What was seen of `user`: each state with its version's ms.
fn story(log: &Log, user: u64) -> Vec<(WireState, u64)> {
    log.seen[&user].iter().map(|&(s, v)| (s, v >> 16)).collect()
}

/// Versions seen per user only grow.
fn versions_grow(log: &Log) -> bool {
    log.seen
        .values()
        .all(|seen| seen.windows(2).all(|w| w[0].1 < w[1].1))
}

/// The members' ids.
const IDS: [&str; 3] = ["a", "b", "c"];

/// An etcd and three members on it, each with a state directory of its own and `hubs` hub
/// threads.
struct Cluster {
    etcd: Etcd,
    name: String,
    dirs: Vec<StateDir>,
    members: Vec<Option<Daemon>>,
    hubs: u32,
}

impl Cluster {
    /// Starts them and waits until every member is active and warm in a map of three.
    fn start(rt: &tokio::runtime::Runtime, hubs: u32) -> Cluster {
        let etcd = Etcd::start();
        let name = cluster_name();
        let dirs: Vec<StateDir> = IDS.iter().map(|_| StateDir::new()).collect();
        let members: Vec<Option<Daemon>> = IDS
            .iter()
            .zip(&dirs)
            .map(|(id, dir)| Some(member(&etcd, &name, id, dir, hubs)))
            .collect();
        for m in members.iter().flatten() {
            wait_cluster(rt, m, Duration::from_secs(20), |s| settled(s, 3));
        }
        Cluster {
            etcd,
            name,
            dirs,
            members,
            hubs,
        }
    }
}

#[test]
fn a_killed_primary_s_users_move_to_their_next_replica_with_no_false_or_missing_transition() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    // Two hubs a member and two subscribers: each member serves one subscriber from each hub,
    // and each hub keeps its own view of the cluster.
    let Cluster {
        etcd,
        name,
        dirs,
        mut members,
        hubs,
    } = Cluster::start(&rt, 2);
    let seeds: Vec<_> = members.iter().flatten().map(|m| m.link).collect();
    let gateway = Gateway::start(&rt, &seeds, 2);
    std::thread::sleep(Duration::from_secs(3));

    // CLUSTER_FAILOVERS=20 repeats the kill (the victim comes back on its state each time)
    // and prints the failover times: benches/README.md "Cluster".
    let rounds: usize = std::env::var("CLUSTER_FAILOVERS").map_or(1, |n| n.parse().unwrap());
    let (mut expiry, mut takeover) = (Vec::new(), Vec::new());
    let (mut victims, mut killed_ms) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        // The member that is primary for the most steady users goes, as in a crash.
        let map = gateway.map();
        let placement = map.placement();
        let mut load = vec![0usize; map.members.len()];
        for user in STEADY {
            load[placement.primary(user, now_ms()).unwrap()] += 1;
        }
        let victim = (0..load.len()).max_by_key(|&i| load[i]).unwrap();
        let victim_id = map.members[victim].id.clone();
        let index = IDS.iter().position(|id| *id == victim_id).unwrap();
        let users: Vec<u64> = STEADY.collect();
        let before = rt.block_on(gateway.queries.query(&users)).unwrap();
        let killed_at = Instant::now();
        members[index].take().unwrap().signal(libc::SIGKILL);
        victims.push(victim_id.clone());
        killed_ms.push(now_ms());

        // etcd lets its lease lapse; each survivor then takes over: its map no longer has the
        // victim and it is active, so it pushes the victim's users' transitions.
        let key = format!("/{name}/members/{victim_id}");
        etcd.wait_for(&key, Duration::from_secs(10), |e| e.is_empty());
        let lapsed_at = Instant::now();
        for m in members.iter().flatten() {
            let s = wait_cluster(&rt, m, Duration::from_secs(10), |s| {
                s.role == "active" && s.map.member(&victim_id).is_none()
            });
            assert!(s.takeovers >= 1, "{s:?}");
        }
        let took = killed_at.elapsed();
        assert!(
            took <= LEASE + Duration::from_secs(1),
            "took over {took:?} after the kill"
        );
        expiry.push(lapsed_at - killed_at);
        takeover.push(took.saturating_sub(lapsed_at - killed_at));

        // Churn goes on for a toggle after the takeover.
        std::thread::sleep(TOGGLE);
        // Last seen of every user is intact at its new primary.
        let after = rt.block_on(gateway.queries.query(&users)).unwrap();
        for (b, a) in before.iter().zip(&after) {
            assert_eq!(a.user, b.user);
            assert_eq!(a.state, WireState::Online, "user {}", a.user);
            assert!(
                a.last_seen_ms >= b.last_seen_ms,
                "user {}: last seen {:?} after, {:?} before",
                a.user,
                a.last_seen_ms,
                b.last_seen_ms
            );
        }
        // The victim comes back on its state and warms.
        members[index] = Some(member(&etcd, &name, &victim_id, &dirs[index], hubs));
        for m in members.iter().flatten() {
            wait_cluster(&rt, m, Duration::from_secs(20), |s| settled(s, 3));
        }
    }
    if rounds > 1 {
        let ms = |v: &mut Vec<Duration>, q: f64| {
            v.sort();
            v[((v.len() - 1) as f64 * q).round() as usize].as_millis()
        };
        eprintln!(
            "{rounds} failovers: kill to lease expiry p50 {} ms p99 {} ms; lease expiry to \
             takeover p50 {} ms p99 {} ms",
            ms(&mut expiry, 0.5),
            ms(&mut expiry, 0.99),
            ms(&mut takeover, 0.5),
            ms(&mut takeover, 0.99)
        );
    }
    for (i, log) in gateway.finish(Duration::from_secs(2)).iter().enumerate() {
        let wrong = false_offlines(log);
        assert!(
            wrong.is_empty(),
            "subscriber {i}: false offlines: {wrong:?}; killed {victims:?} at {killed_ms:?}; \
             first seen {:?}",
            wrong.first().map(|u| story(log, *u))
        );
        let missing = missing_or_false(log);
        // On a miss, the first user's story: what was done when, what was seen (state,
        // version, the version's ms), and when each kill was.
        let story = missing
            .first()
            .map(|(user, _, _)| (user, log.truth.get(user).cloned(), story(log, *user)));
        assert_eq!(
            missing,
            vec![],
            "subscriber {i}: (user, done, seen); killed {victims:?} at {killed_ms:?}; first: \
             {story:?}"
        );
        assert!(versions_grow(log));
    }
}

#[test]
fn a_rolling_restart_of_every_member_shows_no_false_transition() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let rt = runtime();
    let Cluster {
        etcd,
        name,
        dirs,
        mut members,
        hubs,
    } = Cluster::start(&rt, 1);
    let seeds: Vec<_> = members.iter().flatten().map(|m| m.link).collect();
    let gateway = Gateway::start(&rt, &seeds, 1);
    std::thread::sleep(Duration::from_secs(2));
    for i in 0..3 {
        // A deploy: the member stops (revoking its lease: the others take its users at once)
        // and starts again on its state, warming before it is anyone's primary again.
        let old = members[i].take().unwrap();
        assert_eq!(old.stop(), Some(0));
        members[i] = Some(member(&etcd, &name, IDS[i], &dirs[i], hubs));
        for m in members.iter().flatten() {
            wait_cluster(&rt, m, Duration::from_secs(20), |s| settled(s, 3));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    std::thread::sleep(TOGGLE);
    let [log] = &gateway.finish(Duration::from_secs(2))[..] else {
        unreachable!("one subscriber")
    };
    let wrong = false_offlines(log);
    assert!(
        wrong.is_empty(),
        "false offlines: {wrong:?}; first seen {:?}",
        wrong.first().map(|u| &log.seen[u])
    );
    assert_eq!(missing_or_false(log), vec![], "(user, done, seen)");
    assert!(versions_grow(log));
}
