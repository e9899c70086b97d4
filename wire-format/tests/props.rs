//! Property tests of the codec: no panics, exact round trips, strictness.

use presenced_wire::{
    decode, encode, Datagram, Encoder, Entry, Header, State, ENTRY_LEN, HEADER_LEN, MAX_ENTRIES,
};
use proptest::prelude::*;

fn arb_state() -> impl Strategy<Value = State> {
    prop::sample::select(State::ALL.to_vec())
}

fn arb_entry() -> impl Strategy<Value = Entry> {
    (1..=u64::MAX, any::<u32>(), arb_state(), any::<bool>()).prop_map(
        |(user, device, state, active)| Entry {
            user,
            device,
            state,
            active,
        },
    )
}

fn arb_header() -> impl Strategy<Value = Header> {
    (1..=u32::MAX, any::<u32>(), any::<u64>(), any::<u64>())
        .prop_map(|(g, e, s, t)| Header::new(g, e, s, t))
}

fn arb_datagram() -> impl Strategy<Value = (Header, Vec<Entry>)> {
    (
        arb_header(),
        prop::collection::vec(arb_entry(), 1..=MAX_ENTRIES),
    )
}

/// 16 entry bytes, valid about 97% of the time.
fn arb_raw_entry() -> impl Strategy<Value = [u8; ENTRY_LEN]> {
    let user = prop_oneof![99 => 1..=u64::MAX, 1 => Just(0u64)];
    let tail = prop_oneof![
        97 => (0u8..4, 0u8..2).prop_map(|(s, f)| u32::from_le_bytes([s, f, 0, 0])),
        3 => any::<u32>(),
    ];
    (user, any::<u32>(), tail).prop_map(|(u, d, t)| {
        let mut b = [0u8; ENTRY_LEN];
        b[..8].copy_from_slice(&u.to_le_bytes());
        b[8..12].copy_from_slice(&d.to_le_bytes());
        b[12..].copy_from_slice(&t.to_le_bytes());
        b
    })
}

/// Encodes a decoded datagram's header and entries again. An authenticated one (the MAC
/// needs the key) gets its `AUTH` flag and tag back from the original.
fn reencode(d: &Datagram<'_>) -> Vec<u8> {
    let entries: Vec<Entry> = d.entries().collect();
    let header = Header {
        flags: 0,
        ..*d.header()
    };
    let mut bytes = encode(&header, &entries).expect("a decoded datagram re-encodes");
    if d.is_authenticated() {
        bytes[5] = presenced_wire::FLAG_AUTH;
        let at = bytes.len() - presenced_wire::TAG_LEN;
        bytes[at..].copy_from_slice(&d.tag());
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1600)) {
        if let Ok(d) = decode(&bytes) {
            prop_assert_eq!(reencode(&d), bytes);
        }
    }

    /// Nearly valid datagrams: a valid prefix, biased entry bytes, a mostly zero tag and a
    /// mostly exact length, so that every check past the magic gets exercised and some pass.
    #[test]
    fn nearly_valid_never_panic(
        flags in prop::sample::select(vec![0u8, 0, 0, 0, 1, 2]),
        count in prop::sample::select(vec![0u16, 1, 2, 3, 88, 89, 90, 0xFFFF]),
        fields in prop::collection::vec(any::<u8>(), 24),
        body in prop::collection::vec(arb_raw_entry(), MAX_ENTRIES),
        tag_nonzero in prop::option::weighted(0.1, (0usize..16, 1u8..=255)),
        len_delta in prop::sample::select(vec![0i32, 0, 0, 0, 0, 0, -1, 1, -16, 16]),
    ) {
        let mut bytes = b"PRSD\x01".to_vec();
        bytes.push(flags);
        bytes.extend_from_slice(&count.to_le_bytes());
        bytes.extend_from_slice(&fields);
        let n = usize::from(count).min(MAX_ENTRIES);
        for e in &body[..n] {
            bytes.extend_from_slice(e);
        }
        let mut tag = [0u8; 16];
        if let Some((i, v)) = tag_nonzero {
            tag[i] = v;
        }
        bytes.extend_from_slice(&tag);
        let len = (bytes.len() as i32 + len_delta).max(0) as usize;
        bytes.resize(len, 0);
        match decode(&bytes) {
            Ok(d) => {
                prop_assert_eq!(d.len(), usize::from(count));
                prop_assert_eq!(d.entries().len(), d.len());
                prop_assert_eq!(reencode(&d), bytes);
            }
            Err(e) => prop_assert!(!e.reason().is_empty()),
        }
    }

    #[test]
    fn valid_datagrams_round_trip((header, entries) in arb_datagram()) {
        let bytes = encode(&header, &entries).unwrap();
        prop_assert_eq!(bytes.len(), HEADER_LEN + ENTRY_LEN * entries.len() + 16);
        let d = decode(&bytes).unwrap();
        prop_assert_eq!(*d.header(), header);
        prop_assert_eq!(d.entries().collect::<Vec<_>>(), entries.clone());
        prop_assert_eq!(d.entries().rev().collect::<Vec<_>>(),
                        entries.iter().rev().copied().collect::<Vec<_>>());
        prop_assert_eq!(reencode(&d), bytes.clone());
        let mut enc = Encoder::new(header);
        for e in &entries {
            enc.push(*e).unwrap();
        }
        prop_assert_eq!(enc.finish().unwrap(), &bytes[..]);
    }

    #[test]
    fn single_byte_mutations_reencode_or_error(
        (header, entries) in arb_datagram(),
        pos in any::<prop::sample::Index>(),
        xor in 1u8..=255,
    ) {
        let mut bytes = encode(&header, &entries).unwrap();
        let pos = pos.index(bytes.len());
        bytes[pos] ^= xor;
        match decode(&bytes) {
            Ok(d) => prop_assert_eq!(reencode(&d), bytes),
            Err(_) => {
                // Boot epoch, sequence, send time and device ids take every value.
                prop_assert!(!(12..HEADER_LEN).contains(&pos), "header byte {}", pos);
                let in_entries = pos >= HEADER_LEN && pos < HEADER_LEN + ENTRY_LEN * entries.len();
                prop_assert!(!(in_entries && (8..12).contains(&((pos - HEADER_LEN) % ENTRY_LEN))),
                             "device byte {}", pos);
            }
        }
    }

    #[test]
    fn truncations_and_extensions_error(
        (header, entries) in arb_datagram(),
        cut in any::<prop::sample::Index>(),
        extra in prop::collection::vec(any::<u8>(), 1..64),
    ) {
        let bytes = encode(&header, &entries).unwrap();
        let cut = cut.index(bytes.len());
        prop_assert!(decode(&bytes[..cut]).is_err());
        let mut longer = bytes.clone();
        longer.extend_from_slice(&extra);
        prop_assert!(decode(&longer).is_err());
    }
}

#[test]
fn every_truncation_of_a_full_datagram_errors() {
    let entries: Vec<Entry> = (1..=MAX_ENTRIES as u64)
        .map(|user| Entry {
            user,
            device: 1,
            state: State::Online,
            active: true,
        })
        .collect();
    let bytes = encode(&Header::new(1, 1, 1, 1), &entries).unwrap();
    for cut in 0..bytes.len() {
        assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
}
