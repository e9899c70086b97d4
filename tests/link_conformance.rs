//! A real daemon's answers to malformed and refused push-link input (QUIC on loopback),
//! checked against SPEC.md alone:
//!
//! - every invalid gateway → daemon vector of `wire-format/vectors/link.txt` that the daemon's
//!   frame limit applies to, sent on a link of the vector's version, gets ERROR with request
//!   id 0 and the code § P6.8 names, whose message starts with the vector's § P7 reason (§ P4);
//! - the other refusals of § P6.8 carry their reason names too, and so does the QUIC close;
//! - § P1: no second stream, no QUIC datagrams.

mod common;
#[path = "../wire-format/tests/common/mod.rs"]
mod vector_files;

use bytes::{Buf, BytesMut};
use common::Daemon;
use presenced_client::Trust;
use presenced_wire::link::{self as wire, ErrorCode, FrameError, HistoryRequest, ServerFrame};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(5);
/// The daemon's default `link.max_frame_len`, which these daemons run with.
const MAX_FRAME_LEN: u32 = 1 << 20;

/// A QUIC connection to the daemon with its one stream, written and read byte for byte.
struct Raw {
    connection: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    buf: BytesMut,
    _endpoint: quinn::Endpoint,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        let tls = presenced_client::client_config(&Trust::InsecureLocal).expect("TLS");
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
        let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
        let connection = tokio::time::timeout(WAIT, endpoint.connect(addr, "localhost").unwrap())
            .await
            .expect("handshake in time")
            .expect("handshake");
        let (send, recv) = connection.open_bi().await.expect("the link's stream");
        Raw {
            connection,
            send,
            recv,
            buf: BytesMut::new(),
            _endpoint: endpoint,
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.send.write_all(bytes).await.expect("write");
    }

    /// Reads frames until an ERROR: `(request id, code, message)`; panics if the link ends or
    /// `WAIT` passes first.
    async fn error(&mut self, what: &str) -> (u32, u16, String) {
        let reader = wire::FrameReader::new(MAX_FRAME_LEN);
        let read = async {
            loop {
                match reader.next_frame(&self.buf) {
                    Ok(Some((frame, used))) => {
                        let error = match wire::Version::LATEST.decode_server(frame) {
                            Ok(ServerFrame::Error(e)) => {
                                Some((e.request_id, e.code, e.message.into()))
                            }
                            _ => None,
                        };
                        self.buf.advance(used);
                        if error.is_some() {
                            return error;
                        }
                        continue;
                    }
                    Ok(None) => {}
                    Err(e) => panic!("{what}: the daemon sent a malformed frame: {e}"),
                }
                match self.recv.read_chunk(64 * 1024, true).await {
                    Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk.bytes),
                    Ok(None) | Err(_) => return None,
                }
            }
        };
        match tokio::time::timeout(WAIT, read).await {
            Ok(Some(error)) => error,
            Ok(None) => panic!("{what}: the link ended without an ERROR"),
            Err(_) => panic!("{what}: no ERROR within {WAIT:?}"),
        }
    }

    /// The application close that ended the connection: `(code, reason phrase)`.
    async fn closed(&self) -> (u64, String) {
        let closed = tokio::time::timeout(WAIT, self.connection.closed())
            .await
            .expect("the daemon closes the connection");
        match closed {
            quinn::ConnectionError::ApplicationClosed(close) => (
                close.error_code.into_inner(),
                String::from_utf8_lossy(&close.reason).into_owned(),
            ),
            other => panic!("not an application close: {other}"),
        }
    }
}

/// HELLO, built from § P3's table (any version number, any token bytes).
fn hello(version: u16, name: &str, token: &[u8]) -> Vec<u8> {
    let mut body = vec![0x01];
    body.extend_from_slice(&version.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
    body.extend_from_slice(&(name.len() as u16).to_le_bytes());
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(&(token.len() as u16).to_le_bytes());
    body.extend_from_slice(token);
    let mut frame = (body.len() as u32).to_le_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

/// The code § P6.8 gives a frame refused by § P7 with `reason`.
fn code_for(reason: &str) -> ErrorCode {
    match reason {
        "frame_too_large" => ErrorCode::FrameTooLarge,
        "unsupported_version" => ErrorCode::ProtocolVersion,
        _ => ErrorCode::BadFrame,
    }
}

/// Asserts an ERROR against SPEC.md: its request id, its code, and the reason name its
/// message starts with (§ P4).
fn check(what: &str, got: &(u32, u16, String), request: u32, code: ErrorCode, reason: &str) {
    let (got_request, got_code, message) = got;
    assert_eq!(
        (*got_request, *got_code),
        (request, code.to_u16()),
        "{what}: {message}"
    );
    assert_eq!(
        wire::error_reason(message),
        Some(reason),
        "{what}: the message {message:?} starts with the reason"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_invalid_gateway_vector_gets_its_reason_from_the_daemon() {
    let d = Daemon::start(&["--shards", "2"]);
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/wire-format/vectors/link.txt"
    ))
    .unwrap();
    let blocks = vector_files::parse_vectors(&text).unwrap();
    let mut reasons = BTreeSet::new();
    let mut sent = 0;
    for v in &blocks {
        if v.get("dir") != Some("client") || v.get("error").is_none() {
            continue;
        }
        // Vectors read with another limit than the daemon's: frame_too_large is sent below.
        let limit = v
            .get("max_frame_len")
            .map_or(MAX_FRAME_LEN, |m| m.parse().unwrap());
        if limit != MAX_FRAME_LEN {
            continue;
        }
        let (reason, _) = v.error();
        let version: u16 = v.get("version").map_or(1, |n| n.parse().unwrap());
        let is_hello = v.bytes.get(4) == Some(&0x01);
        // A daemon reads HELLO knowing the newest version it speaks (4): a block of an older
        // version refusing HELLO's version is for an older daemon.
        if is_hello && version < 4 && reason == "unsupported_version" {
            continue;
        }
        let mut raw = Raw::connect(d.link).await;
        if !is_hello {
            raw.send(&hello(version, "conformance", &[])).await;
        }
        raw.send(&v.bytes).await;
        let got = raw.error(&v.name).await;
        check(&v.name, &got, 0, code_for(&reason), &reason);
        reasons.insert(reason);
        sent += 1;
    }
    // A length field above the daemon's max_frame_len, refused as soon as it is read.
    let mut raw = Raw::connect(d.link).await;
    raw.send(&hello(2, "conformance", &[])).await;
    raw.send(&(MAX_FRAME_LEN + 1).to_le_bytes()).await;
    let got = raw.error("frame_too_large").await;
    check(
        "frame_too_large",
        &got,
        0,
        ErrorCode::FrameTooLarge,
        "frame_too_large",
    );
    reasons.insert(FrameError::FrameTooLarge { len: 0, max: 0 }.reason().into());
    // Every § P7 reason a gateway's frame can cause (the rest only concern daemon → gateway
    // frames).
    let from_gateways: BTreeSet<String> = [
        "too_short",
        "bad_length",
        "frame_too_large",
        "unknown_type",
        "trailing_bytes",
        "count_mismatch",
        "bad_utf8",
        "string_too_long",
        "zero_user",
        "zero_request_id",
        "reserved_flags",
        "unsupported_version",
        "zero_max_spans",
    ]
    .iter()
    .map(|r| r.to_string())
    .collect();
    assert_eq!(reasons, from_gateways, "after {sent} vectors");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_errors_carry_their_reason_names() {
    let d = Daemon::start(&["--shards", "2"]);
    let link = d.link;
    let named = move |first: Vec<u8>| async move {
        let mut raw = Raw::connect(link).await;
        raw.send(&first).await;
        raw
    };

    // § P5.2: a version the daemon does not speak; the message lists those it does.
    let mut raw = named(hello(5, "conformance", &[])).await;
    let got = raw.error("HELLO version 5").await;
    check(
        "HELLO version 5",
        &got,
        0,
        ErrorCode::ProtocolVersion,
        "unsupported_version",
    );
    assert!(got.2.ends_with("supported: 1, 2, 3, 4"), "{}", got.2);
    // § P1: the QUIC close carries the code and the same message.
    let (code, reason) = raw.closed().await;
    assert_eq!(code, u64::from(ErrorCode::ProtocolVersion.to_u16()));
    assert_eq!(reason, got.2);

    // The first frame is not HELLO.
    let mut query = BytesMut::new();
    wire::encode_query(&mut query, 1, &[1]).unwrap();
    let mut raw = named(query.to_vec()).await;
    let got = raw.error("QUERY first").await;
    check(
        "QUERY first",
        &got,
        0,
        ErrorCode::HelloRequired,
        "hello_required",
    );

    // No frame at all: the stream ends before HELLO.
    let mut raw = Raw::connect(link).await;
    raw.send.finish().unwrap();
    let got = raw.error("no HELLO").await;
    check(
        "no HELLO",
        &got,
        0,
        ErrorCode::HelloRequired,
        "hello_required",
    );

    // A second HELLO.
    let mut raw = named(hello(2, "conformance", &[])).await;
    raw.send(&hello(2, "conformance", &[])).await;
    let got = raw.error("second HELLO").await;
    check(
        "second HELLO",
        &got,
        0,
        ErrorCode::HelloRequired,
        "hello_required",
    );

    // § P6.8: the stream ends inside a frame.
    let mut raw = named(hello(2, "conformance", &[])).await;
    raw.send(&query[..query.len() - 1]).await;
    raw.send.finish().unwrap();
    let got = raw.error("a frame cut short").await;
    check(
        "a frame cut short",
        &got,
        0,
        ErrorCode::BadFrame,
        "too_short",
    );

    // § P1: one stream, and no QUIC datagrams.
    let raw = named(hello(2, "conformance", &[])).await;
    assert_eq!(
        raw.connection.max_datagram_size(),
        None,
        "datagrams offered"
    );
    let second = tokio::time::timeout(Duration::from_millis(300), raw.connection.open_bi()).await;
    assert!(second.is_err(), "a second stream was opened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_requests_carry_their_reason_names() {
    let dir = common::StateDir::new();
    std::fs::create_dir_all(dir.path()).unwrap();
    let keys = dir.path().join("keys.toml");
    std::fs::write(
        &keys,
        "[links]\nconformance = { token = \"conformance-token-01\" }\n",
    )
    .unwrap();
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o600)).unwrap();
    let keys = format!("auth.keys_file={}", keys.display());
    let d = Daemon::start(&[
        "--shards",
        "2",
        "--set",
        &keys,
        "--set",
        "state.enabled=false",
        "--set",
        "link.max_users_per_request=3",
        "--set",
        "link.max_subscriptions=4",
        "--set",
        "link.max_requests_in_flight=1",
    ]);
    let token = b"conformance-token-01";

    // § P5.1: a wrong token.
    let mut raw = Raw::connect(d.link).await;
    raw.send(&hello(2, "conformance", b"conformance-token-02"))
        .await;
    let got = raw.error("wrong token").await;
    check(
        "wrong token",
        &got,
        0,
        ErrorCode::Unauthorized,
        "unauthorized",
    );

    let mut raw = Raw::connect(d.link).await;
    raw.send(&hello(2, "conformance", token)).await;
    // Too many users in one request.
    let mut frame = BytesMut::new();
    wire::encode_query(&mut frame, 5, &[1, 2, 3, 4]).unwrap();
    raw.send(&frame).await;
    let got = raw.error("four users").await;
    check(
        "four users",
        &got,
        5,
        ErrorCode::TooManyUsers,
        "too_many_users",
    );
    // The firehose without its grant.
    let mut frame = BytesMut::new();
    wire::encode_subscribe_all(&mut frame, 6).unwrap();
    raw.send(&frame).await;
    let got = raw.error("SUBSCRIBE_ALL").await;
    check(
        "SUBSCRIBE_ALL",
        &got,
        6,
        ErrorCode::Unauthorized,
        "unauthorized",
    );
    // HISTORY from a daemon without saved state.
    let mut frame = BytesMut::new();
    let history = HistoryRequest {
        request_id: 7,
        user: 1,
        since_ms: 0,
        after_version: 0,
        max_spans: 10,
    };
    wire::encode_history(&mut frame, &history).unwrap();
    raw.send(&frame).await;
    let got = raw.error("HISTORY").await;
    check(
        "HISTORY",
        &got,
        7,
        ErrorCode::HistoryUnavailable,
        "history_unavailable",
    );
    // Past max_subscriptions (3 + 3 > 4), once the first SUBSCRIBE is answered.
    let mut frame = BytesMut::new();
    wire::encode_subscribe(&mut frame, 8, &[1, 2, 3]).unwrap();
    raw.send(&frame).await;
    let mut frame = BytesMut::new();
    wire::encode_subscribe(&mut frame, 9, &[4, 5, 6]).unwrap();
    let mut tries = 0;
    let got = loop {
        tries += 1;
        assert!(tries <= 500, "the first SUBSCRIBE stays in flight");
        raw.send(&frame).await;
        let got = raw.error("SUBSCRIBE past the limit").await;
        // Still in flight: the first SUBSCRIBE's answer was not written yet.
        if got.1 != ErrorCode::TooManyRequests.to_u16() {
            break got;
        }
        check(
            "in flight",
            &got,
            9,
            ErrorCode::TooManyRequests,
            "too_many_requests",
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    check(
        "SUBSCRIBE",
        &got,
        9,
        ErrorCode::SubscriptionLimit,
        "subscription_limit",
    );
    // One request in flight at most: of many queries written at once, some are refused.
    let mut frames = BytesMut::new();
    for id in 10..60 {
        wire::encode_query(&mut frames, id, &[1]).unwrap();
    }
    raw.send(&frames).await;
    let got = raw.error("fifty queries").await;
    assert!((10..60).contains(&got.0), "{got:?}");
    check(
        "fifty queries",
        &got,
        got.0,
        ErrorCode::TooManyRequests,
        "too_many_requests",
    );
}
