//! The client against a scripted daemon on loopback, built on the wire codec: version
//! negotiation and the fallback to version 1 (SPEC.md § P5.2), WELCOME's warming and idle
//! timeout (the keep-alive follows it), PRESENCE's `WARMING` flag, HISTORY paging, GOAWAY, and
//! a version-1 daemon's ERROR `shutting_down`, and a cluster member's MEMBERS and MAP (which
//! maps the client takes, which it ignores).

use bytes::BytesMut;
use presenced_client::{
    ClientError, ConnectOptions, GoAway, GoAwayReason, LinkClient, Push, RawLink, Span, Version,
};
use presenced_wire::cluster::{Member, MemberMap};
use presenced_wire::link::{
    self as wire, ClientFrame, ErrorCode, FrameError, FrameReader, GatewayFrame, HistoryRequest,
    Limits, PresenceRecord, Timings, WelcomeV2, WireCause, WireState,
};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBljCCATugAwIBAgIUVSD7TjdK1ku65a9cH7JBda5jRiQwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyNzA2NDAwM1oYDzIxMjYxMTAz
MDY0MDAzWjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAAQFUeoMGkVEyZW3mLlOLAELwna3KFyD6sAkrncv0XEtBK6tzYsYn8Ye
puSKY15q3GpG0Yn6BcyOyve8lkcWjQI/o2kwZzAdBgNVHQ4EFgQUoehZxWsLGl0h
uG7z/e+CtI7LCccwHwYDVR0jBBgwFoAUoehZxWsLGl0huG7z/e+CtI7LCccwDwYD
VR0TAQH/BAUwAwEB/zAUBgNVHREEDTALgglsb2NhbGhvc3QwCgYIKoZIzj0EAwID
SQAwRgIhAJ3PdwHYqJ8DcX64xA3CzQXvhkOdIiy2S2/G13ZNbvJ+AiEAtawNCm1L
qnyXGR5XKNgF+FJN3FVgTMylEFSX7pRFkYI=
-----END CERTIFICATE-----
";

const KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgBt/bk0RyqdLU7j/V
5OYbH9IMtHuCennnCeck5/WXzB+hRANCAAQFUeoMGkVEyZW3mLlOLAELwna3KFyD
6sAkrncv0XEtBK6tzYsYn8YepuSKY15q3GpG0Yn6BcyOyve8lkcWjQI/
-----END PRIVATE KEY-----
";

/// Querying this user makes the scripted daemon go away.
const GO_AWAY_USER: u64 = 999;

/// A request naming this user is never answered (as by a daemon killed after it arrived).
const SILENT_USER: u64 = 998;

/// How the scripted daemon behaves.
#[derive(Clone, Copy)]
struct Script {
    /// The newest version it speaks.
    speaks: Version,
    /// WELCOME's `warm_remaining_ms` on version-2 links (PRESENCE then says `WARMING` too).
    warming_ms: Option<u32>,
    /// WELCOME's `idle_timeout_ms` on version-2 links.
    idle_timeout_ms: u32,
    /// Whether it keeps history (else HISTORY gets `history_unavailable`).
    history: bool,
    /// On version-3 links: a PACE with this interval right after WELCOME.
    pace_ms: Option<u32>,
    /// On version-4 links: MEMBERS with each of these maps right after WELCOME, and again
    /// before the ACK answering MAP (none: no cluster member).
    members: fn() -> Vec<MemberMap>,
}

impl Script {
    fn v2() -> Script {
        Script {
            speaks: Version::V2,
            warming_ms: None,
            idle_timeout_ms: 30_000,
            history: true,
            pace_ms: None,
            members: Vec::new,
        }
    }
}

/// A scripted daemon: the protocol versions every HELLO asked for, in order.
struct Daemon {
    addr: SocketAddr,
    hellos: Arc<Mutex<Vec<u16>>>,
    _endpoint: quinn::Endpoint,
}

impl Daemon {
    fn start(script: Script) -> Daemon {
        let certs: Vec<_> = rustls_pemfile::certs(&mut CERT.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
        let key = rustls_pemfile::private_key(&mut KEY.as_bytes())
            .unwrap()
            .unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        tls.alpn_protocols = vec![wire::ALPN.to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).unwrap();
        let config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let endpoint =
            quinn::Endpoint::server(config, (Ipv4Addr::LOCALHOST, 0).into()).expect("bind");
        let addr = endpoint.local_addr().unwrap();
        let hellos = Arc::new(Mutex::new(Vec::new()));
        let accepting = endpoint.clone();
        let seen = hellos.clone();
        tokio::spawn(async move {
            while let Some(incoming) = accepting.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    if let Ok(connection) = incoming.await {
                        serve(connection, script, seen).await;
                    }
                });
            }
        });
        Daemon {
            addr,
            hellos,
            _endpoint: endpoint,
        }
    }

    fn hellos(&self) -> Vec<u16> {
        self.hellos.lock().unwrap().clone()
    }
}

/// The scripted user's history: five spans, a transition every 10 s from t = 1 000 000 ms,
/// versions 1 to 5, the last one still going on.
fn spans() -> Vec<Span> {
    (1..=5u64)
        .map(|v| Span {
            version: v,
            start_ms: 1_000_000 + 10_000 * v,
            end_ms: if v == 5 {
                0
            } else {
                1_000_000 + 10_000 * (v + 1)
            },
            state: if v % 2 == 1 {
                WireState::Online
            } else {
                WireState::Offline
            },
            cause: if v % 2 == 1 {
                WireCause::FirstHeartbeat
            } else {
                WireCause::Logout
            },
            devices: (v % 2) as u8,
        })
        .collect()
}

/// Serves one link as the script says; two spans per HISTORY_REPLY at most, so that paging is
/// exercised.
async fn serve(connection: quinn::Connection, script: Script, hellos: Arc<Mutex<Vec<u16>>>) {
    let Ok((mut send, mut recv)) = connection.accept_bi().await else {
        return;
    };
    let reader = FrameReader::default();
    let mut buf = BytesMut::new();
    let mut link: Option<Version> = None;
    loop {
        let Ok(Some((frame, used))) = reader.next_frame(&buf) else {
            match recv.read_chunk(64 * 1024, true).await {
                Ok(Some(chunk)) => {
                    buf.extend_from_slice(&chunk.bytes);
                    continue;
                }
                _ => return,
            }
        };
        let frame = frame.to_vec();
        let _ = buf.split_to(used);
        let mut out = BytesMut::new();
        let version = link.unwrap_or(script.speaks);
        match version.decode_client(&frame) {
            Err(FrameError::UnsupportedVersion(v)) => {
                hellos.lock().unwrap().push(v);
                wire::encode_error(&mut out, 0, ErrorCode::ProtocolVersion, "supported: 1");
                let _ = send.write_all(&out).await;
                let _ = send.finish();
                tokio::time::sleep(Duration::from_millis(50)).await;
                connection.close(3u32.into(), b"supported: 1");
                return;
            }
            Err(e) => panic!("the client sent a bad frame: {e}"),
            Ok(GatewayFrame::Common(ClientFrame::Hello(h))) => {
                hellos.lock().unwrap().push(h.protocol_version);
                let v = h.version().unwrap();
                link = Some(v);
                let limits = Limits {
                    max_frame_len: 1 << 20,
                    max_users_per_request: 1000,
                    max_subscriptions: 1000,
                    max_requests_in_flight: 8,
                };
                let timings = Timings {
                    heartbeat_interval_ms: 20_000,
                    grace_ms: 12_000,
                    idle_after_ms: 300_000,
                    tick_us: 10_000,
                };
                let v2 = WelcomeV2 {
                    warm_remaining_ms: script.warming_ms,
                    idle_timeout_ms: script.idle_timeout_ms,
                };
                match v {
                    Version::V1 => wire::encode_welcome(&mut out, 7400, &[0], &limits, &timings),
                    v => wire::encode_welcome_v2(&mut out, v, 7400, &[0], &limits, &timings, &v2),
                }
                .unwrap();
                if v == Version::V4 {
                    for map in (script.members)() {
                        wire::encode_members(&mut out, &map, 1 << 20).unwrap();
                    }
                }
                if v >= Version::V3 {
                    if let Some(ms) = script.pace_ms {
                        wire::encode_pace(&mut out, ms);
                    }
                }
            }
            Ok(GatewayFrame::Common(ClientFrame::Query { request_id, users }))
            | Ok(GatewayFrame::Common(ClientFrame::Subscribe { request_id, users })) => {
                if users.iter().any(|u| u == SILENT_USER) {
                    continue;
                }
                if users.iter().any(|u| u == GO_AWAY_USER) {
                    match version {
                        Version::V1 => wire::encode_error(
                            &mut out,
                            0,
                            ErrorCode::ShuttingDown,
                            "the daemon is stopping",
                        ),
                        Version::V2 | Version::V3 | Version::V4 => wire::encode_goaway(
                            &mut out,
                            GoAwayReason::Restarting,
                            1500,
                            "restarting",
                        ),
                    }
                    let _ = send.write_all(&out).await;
                    let _ = send.finish();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    connection.close(9u32.into(), b"shutting down");
                    return;
                }
                let records: Vec<PresenceRecord> = users
                    .iter()
                    .map(|user| PresenceRecord {
                        user,
                        state: if user % 2 == 1 {
                            WireState::Online
                        } else {
                            WireState::Offline
                        },
                        last_seen_ms: (user % 2 == 1).then_some(1_000_000),
                        version: user % 2,
                    })
                    .collect();
                let warming = version >= Version::V2 && script.warming_ms.is_some();
                wire::encode_presence_v2(&mut out, request_id, &records, true, warming, 1 << 20)
                    .unwrap();
            }
            Ok(GatewayFrame::History(h)) => history(&mut out, script, &h),
            Ok(GatewayFrame::Map { request_id, .. }) => {
                for map in (script.members)() {
                    wire::encode_members(&mut out, &map, 1 << 20).unwrap();
                }
                wire::encode_ack(&mut out, request_id).unwrap();
            }
            Ok(other) => panic!("the script does not answer {other:?}"),
        }
        if send.write_all(&out).await.is_err() {
            return;
        }
    }
}

fn history(out: &mut BytesMut, script: Script, h: &HistoryRequest) {
    if !script.history {
        wire::encode_error(
            out,
            h.request_id,
            ErrorCode::HistoryUnavailable,
            "no saved state",
        );
        return;
    }
    let matching: Vec<Span> = spans()
        .into_iter()
        .filter(|s| s.version > h.after_version && (s.end_ms == 0 || s.end_ms >= h.since_ms))
        .collect();
    let n = matching.len().min(2).min(h.max_spans as usize);
    let more = matching.len() > n;
    wire::encode_history_reply(
        out,
        h.request_id,
        more,
        Some(1_040_000),
        &matching[..n],
        1 << 20,
    )
    .unwrap();
}

fn options() -> ConnectOptions {
    ConnectOptions::local("versions-test")
}

#[tokio::test]
async fn a_version_1_daemon_gets_version_1_after_one_refused_hello() {
    let d = Daemon::start(Script {
        speaks: Version::V1,
        ..Script::v2()
    });
    let link = LinkClient::connect(d.addr, options()).await.unwrap();
    assert_eq!(
        d.hellos(),
        [4, 3, 2, 1],
        "HELLO 4, 3 and 2 refused, then HELLO 1"
    );
    assert_eq!(link.version(), Version::V1);
    let info = *link.link_info();
    assert!(!info.warming && !link.is_warming());
    assert_eq!(info.idle_timeout, None);
    assert_eq!(info.keep_alive, Duration::from_secs(5));
    let snapshot = link.query_snapshot(&[1, 2]).await.unwrap();
    assert!(!snapshot.warming);
    assert_eq!(snapshot.records.len(), 2);
    match link.history(1, 0, 0, 10).await {
        Err(ClientError::Unsupported(m)) => assert!(m.contains("version 1"), "{m}"),
        other => panic!("{other:?}"),
    }
    // The daemon stops: a version-1 link gets ERROR shutting_down, no GOAWAY.
    let gone = link.query(&[GO_AWAY_USER]).await;
    assert!(
        matches!(
            gone,
            Err(ClientError::Closed {
                code: Some(ErrorCode::ShuttingDown),
                ..
            })
        ),
        "{gone:?}"
    );
    match link.next_push().await {
        Some(Push::Closed { code, go_away, .. }) => {
            assert_eq!(code, Some(ErrorCode::ShuttingDown));
            assert_eq!(go_away, None);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(link.next_push().await, None);
}

#[tokio::test]
async fn a_version_2_daemon_says_warming_history_and_goaway() {
    let d = Daemon::start(Script {
        warming_ms: Some(60_000),
        ..Script::v2()
    });
    let link = LinkClient::connect(d.addr, options()).await.unwrap();
    assert_eq!(d.hellos(), [4, 3, 2], "HELLO 4 and 3 refused, then HELLO 2");
    let info = *link.link_info();
    assert_eq!(info.version, Version::V2);
    assert!(info.warming && link.is_warming());
    assert_eq!(info.warm_remaining, Duration::from_secs(60));
    assert_eq!(info.idle_timeout, Some(Duration::from_secs(30)));
    assert_eq!(info.keep_alive, Duration::from_secs(5));

    let snapshot = link.subscribe_snapshot(&[1, 2]).await.unwrap();
    assert!(snapshot.warming);
    assert_eq!(
        snapshot
            .records
            .iter()
            .map(|r| (r.user, r.state))
            .collect::<Vec<_>>(),
        [(1, WireState::Online), (2, WireState::Offline)]
    );
    assert_eq!(link.query(&[3]).await.unwrap()[0].state, WireState::Online);

    // One page, then all of it, then all of it up to a bound.
    let page = link.history(7, 0, 0, 100).await.unwrap();
    assert_eq!(page.spans, spans()[..2]);
    assert!(page.more);
    assert_eq!(page.last_seen_ms, Some(1_040_000));
    let next = link
        .history(7, 0, page.spans[1].version, 100)
        .await
        .unwrap();
    assert_eq!(next.spans, spans()[2..4]);
    let all = link.history_all(7, 0, 100).await.unwrap();
    assert_eq!(all.spans, spans());
    assert!(!all.more);
    assert!(all.spans.last().unwrap().is_ongoing());
    let some = link.history_all(7, 0, 3).await.unwrap();
    assert_eq!(some.spans, spans()[..3]);
    assert!(some.more, "spans were left out");
    // since_ms: spans ending before it are left out.
    let recent = link.history_all(7, 1_040_000, 100).await.unwrap();
    assert_eq!(recent.spans, spans()[2..]);

    // GOAWAY: the request in flight fails, the last push says why and when to come back.
    let gone = link.query(&[GO_AWAY_USER]).await;
    assert!(
        matches!(
            gone,
            Err(ClientError::Closed {
                code: Some(ErrorCode::ShuttingDown),
                ..
            })
        ),
        "{gone:?}"
    );
    match link.next_push().await {
        Some(Push::Closed {
            code,
            message,
            go_away,
        }) => {
            assert_eq!(code, Some(ErrorCode::ShuttingDown));
            assert_eq!(message, "restarting");
            assert_eq!(
                go_away,
                Some(GoAway {
                    reason: GoAwayReason::Restarting,
                    reconnect_after: Duration::from_millis(1500),
                })
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(link.next_push().await, None);
    assert!(matches!(
        link.query(&[1]).await,
        Err(ClientError::Closed { .. })
    ));
}

#[tokio::test]
async fn asking_for_version_1_makes_a_version_1_link_with_a_version_2_daemon() {
    let d = Daemon::start(Script {
        warming_ms: Some(60_000),
        ..Script::v2()
    });
    let link = LinkClient::connect_version(d.addr, options(), Version::V1)
        .await
        .unwrap();
    assert_eq!(d.hellos(), [1]);
    assert_eq!(link.version(), Version::V1);
    assert!(!link.link_info().warming);
    // The daemon marks nothing warming on a version-1 link.
    assert!(!link.query_snapshot(&[1]).await.unwrap().warming);
}

#[tokio::test]
async fn a_short_idle_timeout_shortens_the_keep_alive() {
    let d = Daemon::start(Script {
        idle_timeout_ms: 6_000,
        ..Script::v2()
    });
    let link = LinkClient::connect(d.addr, options()).await.unwrap();
    // The first connection pinged every 5 s, too seldom for 6 s: one more, pinging every 2 s.
    assert_eq!(d.hellos(), [4, 3, 2, 2]);
    let info = *link.link_info();
    assert_eq!(info.idle_timeout, Some(Duration::from_secs(6)));
    assert_eq!(info.keep_alive, Duration::from_secs(2));
    assert_eq!(link.query(&[1]).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_version_3_daemon_paces_the_link_until_it_ends() {
    let d = Daemon::start(Script {
        speaks: Version::V3,
        pace_ms: Some(40_000),
        ..Script::v2()
    });
    let link = LinkClient::connect(d.addr, options()).await.unwrap();
    assert_eq!(d.hellos(), [4, 3]);
    assert_eq!(link.version(), Version::V3);
    let mut pace = link.pace();
    let asked = *pace
        .wait_for(Option::is_some)
        .await
        .expect("the link's pace");
    assert_eq!(asked, Some(Duration::from_secs(40)));
    // The link ends: back to the normal interval (SPEC.md § P6.13).
    assert!(link.query(&[GO_AWAY_USER]).await.is_err());
    let asked = *pace
        .wait_for(Option::is_none)
        .await
        .expect("the link's pace");
    assert_eq!(asked, None);

    // A version-2 daemon never paces.
    let d = Daemon::start(Script {
        pace_ms: Some(40_000),
        ..Script::v2()
    });
    let link = LinkClient::connect(d.addr, options()).await.unwrap();
    assert_eq!(link.query(&[1]).await.unwrap().len(), 1);
    assert_eq!(*link.pace().borrow(), None);
}

#[tokio::test]
async fn an_aborted_link_fails_its_requests_in_flight_at_once() {
    let daemon = Daemon::start(Script::v2());
    let link = Arc::new(LinkClient::connect(daemon.addr, options()).await.unwrap());
    let waiting = tokio::spawn({
        let link = link.clone();
        async move { link.subscribe(&[SILENT_USER]).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "the script does not answer");
    // The link's idle timeout is 30 s: only the abort ends the request now.
    link.abort("the member left the map");
    let got = tokio::time::timeout(Duration::from_secs(1), waiting)
        .await
        .expect("the request fails at once")
        .unwrap();
    assert!(matches!(got, Err(ClientError::Closed { .. })), "{got:?}");
    let last = tokio::time::timeout(Duration::from_secs(1), link.next_push()).await;
    assert!(
        matches!(last, Ok(Some(Push::Closed { .. }))),
        "the pushes end: {last:?}"
    );
}

#[tokio::test]
async fn history_unavailable_is_a_refusal() {
    let d = Daemon::start(Script {
        history: false,
        ..Script::v2()
    });
    let link = LinkClient::connect(d.addr, options()).await.unwrap();
    match link.history(1, 0, 0, 10).await {
        Err(ClientError::Refused { code, .. }) => {
            assert_eq!(code, Some(ErrorCode::HistoryUnavailable))
        }
        other => panic!("{other:?}"),
    }
    // The link goes on.
    assert!(!link.is_warming());
    assert_eq!(link.query(&[1]).await.unwrap().len(), 1);
}

#[tokio::test]
async fn raw_links_negotiate_and_see_goaway() {
    let d = Daemon::start(Script::v2());
    let mut raw = RawLink::connect(d.addr, options(), 1 << 20).await.unwrap();
    assert_eq!(raw.link_info().version, Version::V2);
    let mut query = BytesMut::new();
    wire::encode_query(&mut query, 1, &[GO_AWAY_USER]).unwrap();
    raw.send_raw(&query).await.unwrap();
    let (go_away, message) = raw
        .next_go_away(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("a GOAWAY");
    assert_eq!(go_away.reason, GoAwayReason::Restarting);
    assert_eq!(message, "restarting");

    let d = Daemon::start(Script {
        speaks: Version::V1,
        ..Script::v2()
    });
    let mut raw = RawLink::connect(d.addr, options(), 1 << 20).await.unwrap();
    assert_eq!(raw.link_info().version, Version::V1);
    raw.send_raw(&query).await.unwrap();
    let error = raw.next_error(Duration::from_secs(5)).await.unwrap();
    assert_eq!(
        error.map(|(id, code, _)| (id, code)),
        Some((0, Some(ErrorCode::ShuttingDown)))
    );
}

/// A map from `from` of `revision`, members `a` and `b` (and `c` when `three`).
fn cluster_map(from: &str, revision: u64, three: bool) -> MemberMap {
    let ids: &[&str] = if three { &["a", "b", "c"] } else { &["a", "b"] };
    MemberMap {
        from: from.into(),
        revision,
        replicas: 2,
        etcd: true,
        members: ids
            .iter()
            .map(|id| Member {
                id: (*id).into(),
                link: format!("{id}:7500"),
                heartbeat: format!("{id}:7400"),
                warm_at_ms: 0,
            })
            .collect(),
    }
}

/// After WELCOME: revision 5, then an older map (ignored), then one from a member absent from
/// its own map (ignored); MAP brings revision 6.
#[tokio::test]
async fn a_cluster_members_maps_are_taken_forwards_only_and_from_members_only() {
    let d = Daemon::start(Script {
        speaks: Version::V4,
        members: || {
            vec![
                cluster_map("a", 5, false),
                cluster_map("b", 4, true),
                cluster_map("x", 9, true),
            ]
        },
        ..Script::v2()
    });
    let link = LinkClient::connect(d.addr, options()).await.unwrap();
    assert_eq!(d.hellos(), [4]);
    assert_eq!(link.version(), Version::V4);
    let mut watch = link.members_watch();
    let first = watch
        .wait_for(Option::is_some)
        .await
        .expect("a map")
        .clone();
    assert_eq!(first, Some(cluster_map("a", 5, false)));
    // A query after WELCOME's frames: every MEMBERS before it has been read.
    link.query(&[1]).await.unwrap();
    assert_eq!(link.members(), Some(cluster_map("a", 5, false)));
    let ignored = link.ignored_maps();
    assert_eq!((ignored.stale, ignored.not_a_member), (1, 1));
    // MAP: the same three again, all but the first ignored (revision 5 is taken again).
    link.map(5).await.unwrap();
    assert_eq!(link.members(), Some(cluster_map("a", 5, false)));
    let ignored = link.ignored_maps();
    assert_eq!((ignored.stale, ignored.not_a_member), (2, 2));
}

/// A daemon that is no member: MAP is answered by ACK alone, and no map is held; before
/// version 4 MAP is not sent at all.
#[tokio::test]
async fn no_map_from_a_daemon_that_is_no_member() {
    let d = Daemon::start(Script {
        speaks: Version::V4,
        ..Script::v2()
    });
    let link = LinkClient::connect(d.addr, options()).await.unwrap();
    link.map(0).await.unwrap();
    assert_eq!(link.members(), None);
    let d = Daemon::start(Script {
        speaks: Version::V3,
        ..Script::v2()
    });
    let link = LinkClient::connect(d.addr, options()).await.unwrap();
    match link.map(0).await {
        Err(ClientError::Unsupported(m)) => assert!(m.contains("version 3"), "{m}"),
        other => panic!("{other:?}"),
    }
}
