//! The committed test vectors (`vectors/*.txt`), in both directions, and the worked example
//! of SPEC.md.

mod common;

use std::collections::BTreeSet;

use bytes::{Bytes, BytesMut};
use common::{load, parse_hex, to_hex, Block};
use presenced_wire::auth::{self, Key};
use presenced_wire::{
    decode, encode, DecodeError, Encoder, Header, State, MAX_DATAGRAM_LEN, MAX_ENTRIES,
    MAX_ENTRIES_IPV6,
};

fn details(e: &DecodeError) -> Vec<(String, String)> {
    let kv = |k: &str, v: &dyn ToString| (k.to_string(), v.to_string());
    match *e {
        DecodeError::BadVersion(v) => vec![kv("value", &v)],
        DecodeError::BadCount(n) => vec![kv("value", &n)],
        DecodeError::LengthMismatch { expected, actual } => {
            vec![kv("expected", &expected), kv("actual", &actual)]
        }
        DecodeError::ZeroUser { index } | DecodeError::ReservedEntryBits { index } => {
            vec![kv("index", &index)]
        }
        DecodeError::BadState { index, value } => vec![kv("index", &index), kv("value", &value)],
        _ => vec![],
    }
}

fn check_valid(v: &Block) {
    let header = v.header();
    let entries = v.entries();
    // Decode: the expected fields.
    let d = decode(&v.bytes).unwrap_or_else(|e| panic!("{}: decode failed: {e}", v.name));
    assert_eq!(*d.header(), header, "{}: header", v.name);
    assert_eq!(d.len(), entries.len(), "{}: len", v.name);
    assert_eq!(
        d.entries().collect::<Vec<_>>(),
        entries,
        "{}: entries",
        v.name
    );
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(d.entry(i), Some(*e), "{}: entry({i})", v.name);
    }
    assert_eq!(d.entry(entries.len()), None);
    // Encode: the expected bytes, by both encoders.
    let enc = encode(&header, &entries).unwrap_or_else(|e| panic!("{}: encode: {e}", v.name));
    assert_eq!(to_hex(&enc), to_hex(&v.bytes), "{}: encode", v.name);
    let mut encoder = Encoder::new(header);
    for e in &entries {
        encoder.push(*e).unwrap();
    }
    assert_eq!(
        encoder.finish().unwrap(),
        &v.bytes[..],
        "{}: Encoder",
        v.name
    );
    let mut out = BytesMut::new();
    encoder.finish_into(&mut out).unwrap();
    assert_eq!(&out[..], &v.bytes[..]);
    // Zero-copy over Bytes.
    let b = Bytes::from(v.bytes.clone());
    let d = decode(&b).unwrap();
    assert_eq!(d.as_bytes().as_ptr(), b.as_ptr());
    assert_eq!(d.entry_bytes().as_ptr(), b[32..].as_ptr());
    // One byte less or more is always an error.
    assert!(decode(&v.bytes[..v.bytes.len() - 1]).is_err());
    let mut longer = v.bytes.clone();
    longer.push(0);
    assert!(decode(&longer).is_err());
}

#[test]
fn valid_vectors() {
    let vectors = load("valid.txt");
    assert!(vectors.len() >= 6);
    for v in &vectors {
        check_valid(v);
    }
}

#[test]
fn valid_vectors_cover_the_brief() {
    let vectors = load("valid.txt");
    let all: Vec<_> = vectors.iter().flat_map(|v| v.entries()).collect();
    for s in State::ALL {
        for active in [false, true] {
            assert!(
                all.iter().any(|e| e.state == s && e.active == active),
                "no entry {s} active={active}"
            );
        }
    }
    assert!(all.iter().any(|e| e.user == u64::MAX));
    assert!(all.iter().any(|e| e.user == 1));
    assert!(all.iter().any(|e| e.device == u32::MAX));
    assert!(all.iter().any(|e| e.device == 0));
    let lens: BTreeSet<usize> = vectors.iter().map(|v| v.bytes.len()).collect();
    assert!(lens.contains(&64));
    assert!(lens.contains(&MAX_DATAGRAM_LEN));
    assert!(lens.contains(&(32 + 16 * MAX_ENTRIES_IPV6 + 16)));
    let headers: Vec<_> = vectors.iter().map(|v| v.header()).collect();
    assert!(headers.iter().any(|h| h.gateway == u32::MAX
        && h.boot_epoch == u32::MAX
        && h.sequence == u64::MAX
        && h.send_time_ms == u64::MAX));
    assert!(headers
        .iter()
        .any(|h| h.gateway == 1 && h.boot_epoch == 0 && h.sequence == 0 && h.send_time_ms == 0));
    assert!(vectors.iter().any(|v| v.entries().len() == MAX_ENTRIES));
}

#[test]
fn invalid_vectors() {
    let vectors = load("invalid.txt");
    let mut seen = BTreeSet::new();
    for v in &vectors {
        let (reason, want) = v.error();
        let err = match decode(&v.bytes) {
            Ok(d) => panic!("{}: decoded, expected {reason}: {d:?}", v.name),
            Err(e) => e,
        };
        assert_eq!(err.reason(), reason, "{}: {err}", v.name);
        assert_eq!(details(&err), want, "{}: {err}", v.name);
        seen.insert(err.reason());
    }
    // Every DecodeError variant has at least one vector.
    let all: BTreeSet<&str> = DecodeError::REASONS.into_iter().collect();
    assert_eq!(seen, all);
    let names: Vec<&str> = vectors.iter().map(|v| v.name.as_str()).collect();
    for required in ["truncated_by_one", "trailing_byte"] {
        assert!(names.contains(&required), "missing {required}");
    }
}

#[test]
fn auth_vectors() {
    let vectors = load("auth.txt");
    assert!(vectors.len() >= 6);
    let mut outcomes = BTreeSet::new();
    for v in &vectors {
        let key = Key::from_hex(v.get("key").expect("key")).expect("a 32-byte key");
        let d = decode(&v.bytes).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        let verifies = v.get("verifies") == Some("yes");
        assert_eq!(auth::verify(&d, &key), verifies, "{}", v.name);
        outcomes.insert(verifies);
        if verifies {
            // Signing the decoded header and entries gives the same bytes.
            let mut enc = Encoder::new(Header {
                flags: 0,
                ..*d.header()
            });
            for e in d.entries() {
                enc.push(e).unwrap();
            }
            assert_eq!(enc.finish_signed(&key).unwrap(), &v.bytes[..], "{}", v.name);
        }
    }
    assert_eq!(outcomes.len(), 2, "both outcomes have vectors");
}

#[test]
fn vector_names_are_unique() {
    let mut names = BTreeSet::new();
    let all = [load("valid.txt"), load("invalid.txt"), load("auth.txt")];
    for v in all.into_iter().flatten() {
        assert!(names.insert(v.name.clone()), "duplicate vector {}", v.name);
    }
}

/// The hex dump in SPEC.md's worked example (§ 7) is the `spec_example` vector (which
/// `valid_vectors` runs through the codec), and every row of its field-by-field table lies at
/// its offset in it.
#[test]
fn spec_example_matches_vector() {
    let spec = std::fs::read_to_string(common::crate_path("SPEC.md")).unwrap();
    let begin = "<!-- example-hex:begin -->";
    let end = "<!-- example-hex:end -->";
    let a = spec.find(begin).expect("begin marker") + begin.len();
    let b = spec.find(end).expect("end marker");
    let block: String = spec[a..b]
        .lines()
        .filter(|l| !l.trim_start().starts_with("```"))
        // Drop the `0000:` offsets.
        .map(|l| l.split_once(':').map_or(l, |(_, bytes)| bytes))
        .collect::<Vec<_>>()
        .join("\n");
    let bytes = parse_hex(&block).unwrap();
    let vectors = load("valid.txt");
    let v = vectors.iter().find(|v| v.name == "spec_example").unwrap();
    assert_eq!(to_hex(&bytes), to_hex(&v.bytes));
    let section = spec.find("## 7. Worked example").expect("§ 7");
    let rows = common::table_bytes(&spec[section..spec.find(begin).unwrap()]);
    assert_eq!(rows.len(), 19, "the rows of § 7's table");
    common::check_table("§ 7", &rows, &v.bytes);
}
