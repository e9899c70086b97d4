//! The properties the fuzz targets check, shared by `fuzz/fuzz_targets/{datagram,link_frames}.rs`
//! (libFuzzer, nightly) and `tests/fuzz_props.rs` (proptest, in CI): whatever the input, the
//! codec never panics, every accessor of an accepted datagram or frame works, and re-encoding
//! what was decoded gives back exactly the input bytes (for an authenticated datagram: its
//! unsigned encoding with the `AUTH` flag and its tag; its MAC is checked against a fixed key).
//! Link frames are checked on links of both protocol versions: what a version-1 link accepts,
//! a version-2 link accepts too, as the same frame.
//!
//! Every check panics (`assert!`) on a violation, so that libFuzzer records a crash.

#![allow(dead_code)]

use bytes::BytesMut;
use presenced_wire::link::{
    decode_client, decode_server, encode_ack, encode_events, encode_goaway, encode_hello,
    encode_history, encode_history_reply, encode_lagged, encode_map, encode_members, encode_pace,
    encode_presence_v2, encode_query, encode_stats, encode_stats_reply, encode_subscribe,
    encode_subscribe_all, encode_unsubscribe, encode_unsubscribe_all, encode_welcome,
    encode_welcome_v2, ClientFrame, ErrorCode, Event, EventsWriter, FrameError, FrameReader,
    FrameType, GatewayFrame, PresenceRecord, PresenceWriter, ServerFrame, Span, Version,
    DEFAULT_MAX_FRAME_LEN, EVENT_LEN, LENGTH_PREFIX_LEN, MAX_CLIENT_NAME_LEN,
    MAX_ERROR_MESSAGE_LEN, MAX_GOAWAY_MESSAGE_LEN, MAX_SPAN_DEVICES, MAX_STATS_JSON_LEN,
    MAX_TOKEN_LEN, PRESENCE_RECORD_LEN, SPAN_LEN, USER_ID_LEN,
};
use presenced_wire::{
    auth, decode, encode, DecodeError, Encoder, Entry, Header, ENTRY_LEN, FLAG_AUTH, HEADER_LEN,
    MAX_DATAGRAM_LEN, MAX_ENTRIES, TAG_LEN,
};

// ---------------------------------------------------------------------------------------------
// Heartbeat datagrams

/// Decodes `bytes` as a heartbeat datagram and checks everything about the result; returns
/// whether it was accepted.
pub fn check_datagram(bytes: &[u8]) -> bool {
    match decode(bytes) {
        Ok(d) => {
            check_accepted_datagram(bytes, &d);
            true
        }
        Err(e) => {
            check_decode_error(bytes, &e);
            false
        }
    }
}

fn check_decode_error(bytes: &[u8], e: &DecodeError) {
    assert_eq!(DecodeError::REASONS[e.code()], e.reason());
    assert!(!e.to_string().is_empty());
    // The cheapest checks decide first (SPEC.md § 6).
    if bytes.len() < HEADER_LEN {
        assert_eq!(*e, DecodeError::TooShort);
    } else if bytes.len() > MAX_DATAGRAM_LEN {
        assert_eq!(*e, DecodeError::TooLong);
    } else if bytes[..4] != presenced_wire::MAGIC {
        assert_eq!(*e, DecodeError::BadMagic);
    }
}

/// The key [`check_accepted_datagram`] signs with: the fuzzer cannot forge its MACs, but every
/// datagram it makes is checked against it, and re-signed with it.
fn fuzz_key() -> auth::Key {
    auth::Key::new(*b"presenced fuzz key, 32 bytes ok!")
}

fn check_accepted_datagram(bytes: &[u8], d: &presenced_wire::Datagram<'_>) {
    let n = d.len();
    assert!((1..=MAX_ENTRIES).contains(&n), "{n} entries");
    assert!(!d.is_empty());
    let tag_at = HEADER_LEN + n * ENTRY_LEN;
    assert_eq!(bytes.len(), tag_at + TAG_LEN);
    assert_eq!(d.as_bytes().as_ptr(), bytes.as_ptr(), "decode is zero-copy");
    assert_eq!(d.as_bytes(), bytes);
    assert_eq!(d.entry_bytes(), &bytes[HEADER_LEN..tag_at]);
    assert_eq!(d.signed_bytes(), &bytes[..tag_at]);
    assert_eq!(d.tag(), bytes[tag_at..]);

    let h = *d.header();
    assert_ne!(h.gateway, 0);
    assert!(h.flags == 0 || h.flags == FLAG_AUTH, "flags {:#x}", h.flags);
    assert_eq!(d.is_authenticated(), h.flags == FLAG_AUTH);
    if !d.is_authenticated() {
        assert!(
            d.tag().iter().all(|&b| b == 0),
            "a nonzero tag without AUTH"
        );
    }
    assert_eq!(h.flags, bytes[5]);
    assert_eq!(h.gateway.to_le_bytes(), bytes[8..12]);
    assert_eq!(h.boot_epoch.to_le_bytes(), bytes[12..16]);
    assert_eq!(h.sequence.to_le_bytes(), bytes[16..24]);
    assert_eq!(h.send_time_ms.to_le_bytes(), bytes[24..32]);
    assert_eq!(usize::from(u16::from_le_bytes([bytes[6], bytes[7]])), n);

    let entries: Vec<Entry> = d.entries().collect();
    assert_eq!(entries.len(), n);
    assert_eq!(d.entries().len(), n);
    assert_eq!(d.entries().size_hint(), (n, Some(n)));
    let back: Vec<Entry> = d.entries().rev().collect();
    assert!(back.iter().rev().eq(entries.iter()));
    assert!(d.into_iter().eq(entries.iter().copied()));
    for (i, e) in entries.iter().enumerate() {
        assert_ne!(e.user, 0);
        assert_eq!(d.entry(i), Some(*e));
        assert_eq!(d.entries().nth(i), Some(*e));
        let raw = &bytes[HEADER_LEN + i * ENTRY_LEN..HEADER_LEN + (i + 1) * ENTRY_LEN];
        assert_eq!(&e.to_bytes()[..], raw, "entry {i} does not re-encode");
        assert!(!e.state.name().is_empty());
    }
    assert_eq!(d.entry(n), None);
    assert_eq!(d.entry(usize::MAX), None);
    assert_eq!(d.entries().nth(n), None);

    // Round trip: the encoders take the header without AUTH (they set it when signing), so
    // an authenticated datagram is its unsigned encoding with the flag set and its tag.
    let unsigned = Header { flags: 0, ..h };
    let mut want = bytes.to_vec();
    want[5] = 0;
    want[tag_at..].fill(0);
    let again = encode(&unsigned, &entries).expect("a decoded datagram re-encodes");
    assert_eq!(again, want, "encode(decode(b)) != b");
    if !d.is_authenticated() {
        assert_eq!(again, bytes);
    } else {
        assert!(
            encode(&h, &entries).is_err(),
            "encode takes AUTH from the header"
        );
        let mut signed = again.clone();
        signed[5] = FLAG_AUTH;
        signed[tag_at..].copy_from_slice(&d.tag());
        assert_eq!(signed, bytes, "unsigned encoding + flag + tag != b");
    }
    let mut enc = Encoder::new(unsigned);
    for e in &entries {
        enc.push(*e).expect("a decoded entry pushes");
    }
    assert_eq!(enc.len(), n);
    assert_eq!(enc.remaining(), MAX_ENTRIES - n);
    assert_eq!(enc.finish().expect("a decoded header encodes"), &want[..]);
    let mut out = BytesMut::from(&b"x"[..]);
    assert_eq!(enc.finish_into(&mut out), Ok(bytes.len()));
    assert_eq!(&out[1..], &want[..]);

    // The MAC check: true exactly when the tag is the key's MAC of the signed bytes; signing
    // the same header and entries gives a datagram that verifies.
    let key = fuzz_key();
    let mac = auth::tag(&key, d.signed_bytes());
    assert_eq!(
        auth::verify(d, &key),
        d.is_authenticated() && mac == d.tag()
    );
    let resigned = enc.finish_signed(&key).expect("signs").to_vec();
    let r = decode(&resigned).expect("a signed datagram decodes");
    assert!(r.is_authenticated() && auth::verify(&r, &key));
    assert_eq!(
        *r.header(),
        Header {
            flags: FLAG_AUTH,
            ..h
        }
    );
    assert!(r.entries().eq(entries.iter().copied()));
    assert_eq!(
        r.tag(),
        auth::tag(&key, r.signed_bytes()),
        "finish_signed's tag"
    );
    if d.is_authenticated() {
        assert_eq!(r.signed_bytes(), d.signed_bytes());
        assert_eq!(r.tag(), mac);
    }
    assert_eq!(&resigned[..5], &bytes[..5]);
    assert_eq!(&resigned[6..tag_at], &bytes[6..tag_at]);
}

// ---------------------------------------------------------------------------------------------
// Push-link frames

/// What [`check_stream`] saw.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamSummary {
    /// Whole frames split off the stream.
    pub frames: usize,
    /// Frames `decode_client` accepted (a version-1 link).
    pub client_ok: usize,
    /// Frames `decode_server` accepted (a version-1 link).
    pub server_ok: usize,
    /// Frames a version-2 daemon accepted.
    pub client_ok_v2: usize,
    /// Frames a version-2 gateway accepted.
    pub server_ok_v2: usize,
}

/// Splits `bytes` into frames with a reader of limit `max_frame_len` until it runs out or
/// fails, and checks every frame in both directions.
pub fn check_stream(bytes: &[u8], max_frame_len: u32) -> StreamSummary {
    let reader = FrameReader::new(max_frame_len);
    let mut summary = StreamSummary::default();
    let mut rest = bytes;
    loop {
        match reader.next_frame(rest) {
            Err(e) => {
                check_frame_error(&e);
                let len = u32::from_le_bytes(rest[..4].try_into().unwrap());
                match e {
                    FrameError::BadLength => assert_eq!(len, 0),
                    FrameError::FrameTooLarge { len: l, max } => {
                        assert_eq!((l, max), (len, max_frame_len));
                        assert!(len > max_frame_len);
                    }
                    other => panic!("next_frame failed with {other:?}"),
                }
                assert!(reader.next_client(rest).is_err());
                assert!(reader.next_server(rest).is_err());
                return summary;
            }
            Ok(None) => {
                if rest.len() >= LENGTH_PREFIX_LEN {
                    let len = u32::from_le_bytes(rest[..4].try_into().unwrap());
                    assert!(len >= 1 && len <= max_frame_len);
                    assert!(rest.len() < LENGTH_PREFIX_LEN + len as usize);
                }
                assert!(matches!(reader.next_client(rest), Ok(None)));
                assert!(matches!(reader.next_server(rest), Ok(None)));
                return summary;
            }
            Ok(Some((frame, used))) => {
                summary.frames += 1;
                assert_eq!(used, LENGTH_PREFIX_LEN + frame.len());
                assert!(!frame.is_empty() && frame.len() as u64 <= u64::from(max_frame_len));
                assert_eq!(
                    u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize,
                    frame.len()
                );
                assert_eq!(frame.as_ptr(), rest[LENGTH_PREFIX_LEN..].as_ptr());
                // Until its last byte has arrived, the frame is not there yet.
                for cut in [LENGTH_PREFIX_LEN, used - 1] {
                    assert_eq!(reader.next_frame(&rest[..cut]), Ok(None), "cut at {cut}");
                }
                let client = check_client_frame(frame, Version::V1);
                let server = check_server_frame(frame, Version::V1);
                let client_v2 = check_client_frame(frame, Version::V2);
                let server_v2 = check_server_frame(frame, Version::V2);
                let client_v3 = check_client_frame(frame, Version::V3);
                let server_v3 = check_server_frame(frame, Version::V3);
                let client_v4 = check_client_frame(frame, Version::V4);
                let server_v4 = check_server_frame(frame, Version::V4);
                // Version 4 keeps every version-3 frame as it is.
                assert!(
                    client_v4 || !client_v3,
                    "a version-3 frame refused on version 4"
                );
                assert!(
                    server_v4 || !server_v3,
                    "a version-3 frame refused on version 4"
                );
                if server_v3 {
                    assert_eq!(
                        Version::V3.decode_server(frame),
                        Version::V4.decode_server(frame)
                    );
                }
                // Version 3 keeps every version-2 frame as it is.
                assert!(
                    client_v3 || !client_v2,
                    "a version-2 frame refused on version 3"
                );
                assert!(
                    server_v3 || !server_v2,
                    "a version-2 frame refused on version 3"
                );
                if server_v2 {
                    assert_eq!(
                        Version::V2.decode_server(frame),
                        Version::V3.decode_server(frame)
                    );
                }
                summary.client_ok += usize::from(client);
                summary.server_ok += usize::from(server);
                summary.client_ok_v2 += usize::from(client_v2);
                summary.server_ok_v2 += usize::from(server_v2);
                assert!(!(client && server), "a frame decoded in both directions");
                assert!(
                    !(client_v2 && server_v2),
                    "a frame decoded in both directions"
                );
                // Version 2 keeps every version-1 frame as it is.
                assert!(
                    client_v2 || !client,
                    "a version-1 frame refused on version 2"
                );
                assert!(
                    server_v2 || !server,
                    "a version-1 frame refused on version 2"
                );
                if client {
                    let v1 = decode_client(frame).map(GatewayFrame::Common);
                    assert_eq!(v1, Version::V2.decode_client(frame));
                }
                if server {
                    assert_eq!(decode_server(frame), Version::V2.decode_server(frame));
                }
                // The reader's shortcuts agree with the two steps.
                match reader.next_client(rest) {
                    Ok(Some((_, u))) => assert!(client && u == used),
                    Ok(None) => panic!("next_client found no frame"),
                    Err(_) => assert!(!client),
                }
                match reader.next_server(rest) {
                    Ok(Some((_, u))) => assert!(server && u == used),
                    Ok(None) => panic!("next_server found no frame"),
                    Err(_) => assert!(!server),
                }
                rest = &rest[used..];
            }
        }
    }
}

fn check_frame_error(e: &FrameError) {
    assert_eq!(FrameError::REASONS[e.code()], e.reason());
    assert!(!e.to_string().is_empty());
    let code = e.error_code();
    assert!(code.closes_link());
    assert_eq!(ErrorCode::from_u16(code.to_u16()), Some(code));
}

/// Re-encodes a decoded frame with `encode` and checks it gives `frame` (type + body) back
/// behind a correct length prefix.
fn assert_reencodes(frame: &[u8], encoded: &[u8], what: &str) {
    assert!(
        encoded.len() >= LENGTH_PREFIX_LEN,
        "{what}: no length prefix"
    );
    let (prefix, body) = encoded.split_at(LENGTH_PREFIX_LEN);
    assert_eq!(
        u32::from_le_bytes(prefix.try_into().unwrap()) as usize,
        body.len(),
        "{what}: length prefix"
    );
    assert_eq!(body, frame, "{what}: re-encoding differs");
}

/// Decodes `frame` (type + body) as a gateway → daemon frame on a link of `version` (for
/// HELLO: a daemon speaking up to `version`); checks the result; returns whether it was
/// accepted.
pub fn check_client_frame(frame: &[u8], version: Version) -> bool {
    let decoded = version.decode_client(frame);
    if version == Version::V1 {
        assert_eq!(decode_client(frame).map(GatewayFrame::Common), decoded);
    }
    let g = match decoded {
        Ok(g) => g,
        Err(e) => {
            check_frame_error(&e);
            if frame.is_empty() {
                assert_eq!(e, FrameError::BadLength);
            }
            return false;
        }
    };
    let t = g.frame_type();
    assert_eq!(t.to_u8(), frame[0]);
    assert!(t.is_client());
    assert!(version.has(t));
    assert_eq!(FrameType::from_u8(frame[0]), Some(t));
    assert_eq!(
        version.decode_server(frame),
        Err(FrameError::UnknownType(frame[0])),
        "a client frame type decoded as a server frame"
    );
    let _ = format!("{g:?} {t}");

    let mut out = BytesMut::new();
    g.encode(&mut out)
        .expect("a decoded client frame re-encodes");
    assert_reencodes(frame, &out, "GatewayFrame::encode");

    let f = match g {
        GatewayFrame::Common(f) => f,
        GatewayFrame::History(h) => {
            assert_ne!(h.request_id, 0);
            assert_ne!(h.user, 0);
            assert_ne!(h.max_spans, 0);
            assert_eq!(g.request_id(), Some(h.request_id));
            assert!(g.users().is_none());
            let mut typed = BytesMut::new();
            encode_history(&mut typed, &h).expect("a decoded HISTORY encodes");
            assert_eq!(typed, out, "typed encoder of {t}");
            return true;
        }
        GatewayFrame::Map {
            request_id,
            revision,
        } => {
            assert!(version >= Version::V4);
            assert_ne!(request_id, 0);
            assert_eq!(g.request_id(), Some(request_id));
            assert!(g.users().is_none());
            let mut typed = BytesMut::new();
            encode_map(&mut typed, request_id, revision).expect("a decoded MAP encodes");
            assert_eq!(typed, out, "typed encoder of {t}");
            return true;
        }
    };
    assert_eq!(g.request_id(), f.request_id());
    let mut again = BytesMut::new();
    f.encode(&mut again)
        .expect("a decoded client frame re-encodes");
    assert_eq!(again, out, "ClientFrame::encode");

    // The typed encoders give the same bytes.
    let mut typed = BytesMut::new();
    match f {
        ClientFrame::Hello(h) => {
            let asked = h.version().expect("a decoded HELLO's version is known");
            assert!(asked <= version);
            assert!(h.client_name.len() <= MAX_CLIENT_NAME_LEN);
            assert!(h.token.len() <= MAX_TOKEN_LEN);
            let _ = h.wants_firehose();
            assert_eq!(f.request_id(), None);
            assert!(f.users().is_none());
            encode_hello(&mut typed, &h).expect("a decoded HELLO encodes");
        }
        ClientFrame::Subscribe { request_id, users }
        | ClientFrame::Unsubscribe { request_id, users }
        | ClientFrame::Query { request_id, users } => {
            assert_ne!(request_id, 0);
            assert_eq!(f.request_id(), Some(request_id));
            assert_eq!(f.users(), Some(users));
            let list = check_user_list(users);
            let enc = match t {
                FrameType::Subscribe => encode_subscribe,
                FrameType::Unsubscribe => encode_unsubscribe,
                _ => encode_query,
            };
            enc(&mut typed, request_id, &list).expect("a decoded user request encodes");
        }
        ClientFrame::SubscribeAll { request_id }
        | ClientFrame::UnsubscribeAll { request_id }
        | ClientFrame::Stats { request_id } => {
            assert_ne!(request_id, 0);
            assert_eq!(f.request_id(), Some(request_id));
            assert!(f.users().is_none());
            let enc = match t {
                FrameType::SubscribeAll => encode_subscribe_all,
                FrameType::UnsubscribeAll => encode_unsubscribe_all,
                _ => encode_stats,
            };
            enc(&mut typed, request_id).expect("a decoded request encodes");
        }
    }
    assert_eq!(typed, out, "typed encoder of {t}");
    true
}

/// Checks a decoded user list's accessors; returns its users.
fn check_user_list(users: presenced_wire::link::UserList<'_>) -> Vec<u64> {
    let list: Vec<u64> = users.iter().collect();
    assert_eq!(list.len(), users.len());
    assert_eq!(users.is_empty(), list.is_empty());
    assert_eq!(users.as_bytes().len(), list.len() * USER_ID_LEN);
    assert_eq!(users.iter().len(), list.len());
    assert!(users.iter().rev().eq(list.iter().rev().copied()));
    assert!(users.into_iter().eq(list.iter().copied()));
    for (i, &u) in list.iter().enumerate() {
        assert_ne!(u, 0);
        assert_eq!(users.get(i), Some(u));
    }
    assert_eq!(users.get(list.len()), None);
    assert_eq!(users.get(usize::MAX), None);
    let _ = format!("{users:?}");
    list
}

/// Decodes `frame` (type + body) as a daemon → gateway frame on a link of `version` (for
/// WELCOME: a gateway that asked for `version`); checks the result; returns whether it was
/// accepted.
pub fn check_server_frame(frame: &[u8], version: Version) -> bool {
    let decoded = version.decode_server(frame);
    if version == Version::V1 {
        assert_eq!(decode_server(frame), decoded);
    }
    let f = match decoded {
        Ok(f) => f,
        Err(e) => {
            check_frame_error(&e);
            if frame.is_empty() {
                assert_eq!(e, FrameError::BadLength);
            }
            return false;
        }
    };
    let t = f.frame_type();
    assert_eq!(t.to_u8(), frame[0]);
    assert!(!t.is_client());
    assert!(version.has(t));
    assert_eq!(
        version.decode_client(frame),
        Err(FrameError::UnknownType(frame[0])),
        "a server frame type decoded as a client frame"
    );
    assert_eq!(
        f.ends_link(),
        matches!(f, ServerFrame::GoAway(_))
            || matches!(f, ServerFrame::Error(e) if e.request_id == 0)
    );
    let _ = format!("{f:?} {t}");

    let mut out = BytesMut::new();
    f.encode(&mut out)
        .expect("a decoded server frame re-encodes");
    assert_reencodes(frame, &out, "ServerFrame::encode");
    // Frames no longer than the default limit fit any reader a daemon uses.
    let max = DEFAULT_MAX_FRAME_LEN.max(frame.len() as u32);

    // The typed encoders and writers give the same bytes (where they can express the frame).
    let mut typed = BytesMut::new();
    match f {
        ServerFrame::Welcome(w) => {
            assert!(w.version() <= version);
            assert_eq!(w.protocol_version, w.version().to_u16());
            assert_eq!(w.v2.is_some(), w.version() >= Version::V2);
            let ports: Vec<u16> = w.shard_ports.iter().collect();
            assert!(!ports.is_empty());
            assert_eq!(usize::from(w.shard_count()), ports.len());
            assert_eq!(w.shard_ports.len(), ports.len());
            assert!(!w.shard_ports.is_empty());
            for (i, &p) in ports.iter().enumerate() {
                assert_eq!(w.shard_ports.get(i), Some(p));
            }
            assert_eq!(w.shard_ports.get(ports.len()), None);
            assert_eq!(w.shard_ports.as_bytes().len(), 2 * ports.len());
            for user in [1u64, 1001, u64::MAX] {
                let port = w.heartbeat_port_for(user);
                assert!(port == w.heartbeat_port || ports.contains(&port));
            }
            assert_eq!(f.request_id(), None);
            assert!(!f.completes_request());
            match &w.v2 {
                None => encode_welcome(&mut typed, w.heartbeat_port, &ports, &w.limits, &w.timings),
                Some(v2) => encode_welcome_v2(
                    &mut typed,
                    w.version(),
                    w.heartbeat_port,
                    &ports,
                    &w.limits,
                    &w.timings,
                    v2,
                ),
            }
            .expect("a decoded WELCOME encodes");
        }
        ServerFrame::Presence(p) => {
            assert_ne!(p.request_id, 0);
            assert!(!p.warming || version >= Version::V2);
            assert_eq!(f.request_id(), Some(p.request_id));
            assert_eq!(f.completes_request(), p.is_final);
            let records: Vec<PresenceRecord> = p.records.iter().collect();
            assert_eq!(records.len(), p.records.len());
            assert_eq!(p.records.is_empty(), records.is_empty());
            assert_eq!(p.records.iter().len(), records.len());
            assert!(p.records.iter().rev().eq(records.iter().rev().copied()));
            assert!(p.records.into_iter().eq(records.iter().copied()));
            let raw = p.records.as_bytes();
            assert_eq!(raw.len(), records.len() * PRESENCE_RECORD_LEN);
            for (i, r) in records.iter().enumerate() {
                assert_ne!(r.user, 0);
                assert_eq!(p.records.get(i), Some(*r));
                let chunk = &raw[i * PRESENCE_RECORD_LEN..(i + 1) * PRESENCE_RECORD_LEN];
                assert_eq!(&r.to_bytes()[..], chunk, "record {i} does not re-encode");
            }
            assert_eq!(p.records.get(records.len()), None);
            if !records.is_empty() || p.is_final {
                let frames = encode_presence_v2(
                    &mut typed,
                    p.request_id,
                    &records,
                    p.is_final,
                    p.warming,
                    max,
                )
                .expect("decoded records encode");
                assert_eq!(frames, 1);
                let mut w = PresenceWriter::new(p.request_id, max)
                    .expect("a writer")
                    .with_warming(p.warming);
                for r in &records {
                    w.push(*r)
                        .expect("a decoded record fits its own frame's length");
                }
                assert_eq!(w.len(), records.len());
                let written = w.finish(p.is_final).expect("a frame");
                assert_eq!(written, typed, "PresenceWriter vs encode_presence");
            } else {
                // An empty non-final PRESENCE frame: the one-shot encoder writes nothing.
                assert_eq!(
                    encode_presence_v2(&mut typed, p.request_id, &[], false, p.warming, max),
                    Ok(0)
                );
                typed = out.clone();
            }
        }
        ServerFrame::Events(list) => {
            let events: Vec<Event> = list.iter().collect();
            assert_eq!(events.len(), list.len());
            assert_eq!(list.is_empty(), events.is_empty());
            assert!(list.iter().rev().eq(events.iter().rev().copied()));
            assert!(list.into_iter().eq(events.iter().copied()));
            let raw = list.as_bytes();
            assert_eq!(raw.len(), events.len() * EVENT_LEN);
            for (i, e) in events.iter().enumerate() {
                assert_ne!(e.user, 0);
                assert_eq!(list.get(i), Some(*e));
                let chunk = &raw[i * EVENT_LEN..(i + 1) * EVENT_LEN];
                assert_eq!(&e.to_bytes()[..], chunk, "event {i} does not re-encode");
            }
            assert_eq!(list.get(events.len()), None);
            assert_eq!(f.request_id(), None);
            assert!(!f.completes_request());
            if events.is_empty() {
                // Daemons send no empty EVENTS frame; the encoders cannot make one.
                assert_eq!(encode_events(&mut typed, &[], max), Ok(0));
                typed = out.clone();
            } else {
                assert_eq!(encode_events(&mut typed, &events, max), Ok(1));
                let mut w = EventsWriter::new(max).expect("a writer");
                for e in &events {
                    w.push(*e)
                        .expect("a decoded event fits its own frame's length");
                }
                let written = w.finish().expect("a frame");
                assert_eq!(written, typed, "EventsWriter vs encode_events");
            }
        }
        ServerFrame::Lagged(users) => {
            let list = check_user_list(users);
            assert_eq!(f.request_id(), None);
            encode_lagged(&mut typed, &list).expect("a decoded LAGGED encodes");
        }
        ServerFrame::LaggedAll => {
            assert_eq!(f.request_id(), None);
            presenced_wire::link::encode_lagged_all(&mut typed);
        }
        ServerFrame::Ack { request_id } => {
            assert_ne!(request_id, 0);
            assert_eq!(f.request_id(), Some(request_id));
            assert!(f.completes_request());
            encode_ack(&mut typed, request_id).expect("a decoded ACK encodes");
        }
        ServerFrame::Error(e) => {
            assert!(e.message.len() <= MAX_ERROR_MESSAGE_LEN);
            assert_eq!(e.closes_link(), e.request_id == 0);
            assert_eq!(f.completes_request(), e.request_id != 0);
            assert_eq!(
                f.request_id(),
                if e.request_id == 0 {
                    None
                } else {
                    Some(e.request_id)
                }
            );
            match e.error_code() {
                Some(code) => {
                    assert_eq!(code.to_u16(), e.code);
                    assert!(!code.name().is_empty());
                    presenced_wire::link::encode_error(&mut typed, e.request_id, code, e.message);
                }
                None => typed = out.clone(),
            }
        }
        ServerFrame::StatsReply { request_id, json } => {
            assert_ne!(request_id, 0);
            assert!(json.len() <= MAX_STATS_JSON_LEN);
            assert_eq!(f.request_id(), Some(request_id));
            assert!(f.completes_request());
            encode_stats_reply(&mut typed, request_id, json).expect("a decoded reply encodes");
        }
        ServerFrame::GoAway(g) => {
            assert!(g.message.len() <= MAX_GOAWAY_MESSAGE_LEN);
            assert_eq!(f.request_id(), None);
            assert!(!f.completes_request());
            match g.go_away_reason() {
                Some(reason) => {
                    assert_eq!(reason.to_u16(), g.reason);
                    encode_goaway(&mut typed, reason, g.reconnect_after_ms, g.message);
                }
                None => typed = out.clone(),
            }
        }
        ServerFrame::Members(m) => {
            assert!(version >= Version::V4);
            assert_eq!(f.request_id(), None);
            assert!(!f.completes_request());
            // The decoder checked the map; the typed encoder writes it in serde's own form
            // (which the sender need not have used), which reads back as the same map.
            let map = m.map().expect("a decoded MEMBERS' map");
            assert!(map.check().is_ok());
            assert!(map.members.windows(2).all(|w| w[0].id < w[1].id));
            let mut again = BytesMut::new();
            encode_members(&mut again, &map, u32::MAX).expect("a decoded map encodes");
            let Ok(ServerFrame::Members(back)) = version.decode_server(&again[LENGTH_PREFIX_LEN..])
            else {
                panic!("an encoded MEMBERS does not decode");
            };
            assert_eq!(back.map().ok(), Some(map));
            typed = out.clone();
        }
        ServerFrame::Pace { interval_ms } => {
            assert!(version >= Version::V3);
            assert_eq!(f.request_id(), None);
            assert!(!f.completes_request());
            encode_pace(&mut typed, interval_ms);
        }
        ServerFrame::HistoryReply(h) => {
            assert_ne!(h.request_id, 0);
            assert_eq!(f.request_id(), Some(h.request_id));
            assert!(f.completes_request());
            let spans: Vec<Span> = h.spans.iter().collect();
            assert_eq!(spans.len(), h.spans.len());
            assert!(h.spans.iter().rev().eq(spans.iter().rev().copied()));
            let raw = h.spans.as_bytes();
            assert_eq!(raw.len(), spans.len() * SPAN_LEN);
            for (i, s) in spans.iter().enumerate() {
                assert!(s.is_valid());
                assert!(s.devices <= MAX_SPAN_DEVICES);
                assert_eq!(s.end().is_none(), s.is_ongoing());
                assert_eq!(h.spans.get(i), Some(*s));
                let chunk = &raw[i * SPAN_LEN..(i + 1) * SPAN_LEN];
                assert_eq!(&s.to_bytes()[..], chunk, "span {i} does not re-encode");
            }
            assert_eq!(h.spans.get(spans.len()), None);
            encode_history_reply(
                &mut typed,
                h.request_id,
                h.more,
                h.last_seen_ms,
                &spans,
                max,
            )
            .expect("a decoded HISTORY_REPLY encodes");
        }
    }
    assert_eq!(typed, out, "typed encoder of {t}");
    true
}
