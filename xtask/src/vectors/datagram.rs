//! `valid.txt`, `invalid.txt` and `auth.txt`: the heartbeat datagram's vectors (SPEC.md § 11).
//!
//! Every byte is built by hand from the SPEC.md tables, independently of `presenced-wire`'s
//! encoder, and each invalid vector's error is stated by hand, so `wire-format/tests/vectors.rs`
//! checks the codec against the spec, not against itself. HMAC-SHA-256 is built here from
//! SHA-256 (RFC 2104), independently of the crate's `auth` module.

use std::fmt::Write as _;

const MAGIC: [u8; 4] = [0x50, 0x52, 0x53, 0x44];

struct Hdr {
    magic: [u8; 4],
    version: u8,
    flags: u8,
    count: u16,
    gateway: u32,
    boot_epoch: u32,
    sequence: u64,
    send_time_ms: u64,
}

impl Hdr {
    fn v1(count: u16, gateway: u32, boot_epoch: u32, sequence: u64, send_time_ms: u64) -> Hdr {
        Hdr {
            magic: MAGIC,
            version: 1,
            flags: 0,
            count,
            gateway,
            boot_epoch,
            sequence,
            send_time_ms,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(32);
        b.extend_from_slice(&self.magic);
        b.push(self.version);
        b.push(self.flags);
        b.extend_from_slice(&self.count.to_le_bytes());
        b.extend_from_slice(&self.gateway.to_le_bytes());
        b.extend_from_slice(&self.boot_epoch.to_le_bytes());
        b.extend_from_slice(&self.sequence.to_le_bytes());
        b.extend_from_slice(&self.send_time_ms.to_le_bytes());
        assert_eq!(b.len(), 32);
        b
    }
}

#[derive(Clone, Copy)]
struct Ent {
    user: u64,
    device: u32,
    state: u8,
    flags: u8,
    reserved: u16,
}

impl Ent {
    fn new(user: u64, device: u32, state: u8, active: bool) -> Ent {
        Ent {
            user,
            device,
            state,
            flags: active as u8,
            reserved: 0,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(16);
        b.extend_from_slice(&self.user.to_le_bytes());
        b.extend_from_slice(&self.device.to_le_bytes());
        b.push(self.state);
        b.push(self.flags);
        b.extend_from_slice(&self.reserved.to_le_bytes());
        b
    }
}

const STATE_NAMES: [&str; 4] = ["online", "idle", "offline", "invisible"];

fn datagram(h: &Hdr, entries: &[Ent]) -> Vec<u8> {
    let mut b = h.bytes();
    for e in entries {
        b.extend_from_slice(&e.bytes());
    }
    b.extend_from_slice(&[0; 16]);
    b
}

/// Hex laid out like the tables: the header split by field, then 16-byte rows split as an
/// entry's fields (the last row of a well-formed datagram is the tag).
fn layout_hex(b: &[u8]) -> String {
    let mut out = String::new();
    let hex = |s: &[u8]| super::hex(s);
    let mut rest = b;
    let header_fields = [4usize, 1, 1, 2, 4, 4, 8, 8];
    let mut line = Vec::new();
    for w in header_fields {
        if rest.is_empty() {
            break;
        }
        let take = w.min(rest.len());
        line.push(hex(&rest[..take]));
        rest = &rest[take..];
    }
    if !line.is_empty() {
        writeln!(out, "  {}", line.join(" ")).unwrap();
    }
    while !rest.is_empty() {
        let mut line = Vec::new();
        for w in [8usize, 4, 1, 1, 2] {
            if rest.is_empty() {
                break;
            }
            let take = w.min(rest.len());
            line.push(hex(&rest[..take]));
            rest = &rest[take..];
        }
        writeln!(out, "  {}", line.join(" ")).unwrap();
    }
    out
}

struct Valid {
    name: &'static str,
    note: &'static str,
    gateway: u32,
    boot_epoch: u32,
    sequence: u64,
    send_time_ms: u64,
    entries: Vec<Ent>,
}

struct Invalid {
    name: &'static str,
    note: &'static str,
    bytes: Vec<u8>,
    error: String,
}

fn valid_vectors() -> Vec<Valid> {
    let mut v = Vec::new();
    v.push(Valid {
        name: "spec_example",
        note: "the worked example of SPEC.md: two entries",
        gateway: 7,
        boot_epoch: 1_700_000_000,
        sequence: 42,
        send_time_ms: 1_700_000_123_456,
        entries: vec![Ent::new(1001, 1, 0, true), Ent::new(1002, 7, 1, false)],
    });
    v.push(Valid {
        name: "one_entry",
        note: "the shortest datagram: one entry",
        gateway: 1,
        boot_epoch: 1,
        sequence: 1,
        send_time_ms: 1_735_689_600_000,
        entries: vec![Ent::new(1, 1, 0, false)],
    });
    v.push(Valid {
        name: "all_states_activity",
        note: "every state with ACTIVITY clear then set",
        gateway: 0x0102_0304,
        boot_epoch: 17,
        sequence: 0x0102_0304_0506_0708,
        send_time_ms: 1_735_689_600_123,
        entries: (0..8u8)
            .map(|i| Ent::new(100 + u64::from(i), u32::from(i), i / 2, i % 2 == 1))
            .collect(),
    });
    v.push(Valid {
        name: "extreme_ids",
        note: "largest and smallest user ids, largest and smallest device ids",
        gateway: 2,
        boot_epoch: 2,
        sequence: 2,
        send_time_ms: 1_735_689_600_456,
        entries: vec![
            Ent::new(u64::MAX, u32::MAX, 3, true),
            Ent::new(1, 0, 1, false),
            Ent::new(0x8000_0000_0000_0000, 0x8000_0000, 2, false),
        ],
    });
    v.push(Valid {
        name: "header_max",
        note: "every header field at its largest value",
        gateway: u32::MAX,
        boot_epoch: u32::MAX,
        sequence: u64::MAX,
        send_time_ms: u64::MAX,
        entries: vec![Ent::new(42, 3, 0, true)],
    });
    v.push(Valid {
        name: "header_min",
        note: "every header field at its smallest valid value (gateway 1, the rest 0)",
        gateway: 1,
        boot_epoch: 0,
        sequence: 0,
        send_time_ms: 0,
        entries: vec![Ent::new(42, 0, 2, false)],
    });
    v.push(Valid {
        name: "duplicate_device",
        note: "the same device twice: valid; entries apply in order, so it logs out last",
        gateway: 9,
        boot_epoch: 5,
        sequence: 77,
        send_time_ms: 1_735_689_601_000,
        entries: vec![Ent::new(5, 5, 0, true), Ent::new(5, 5, 2, false)],
    });
    v.push(Valid {
        name: "max_entries_ipv6",
        note: "87 entries: the most that fits an unfragmented IPv6 payload",
        gateway: 600,
        boot_epoch: 6,
        sequence: 6_000,
        send_time_ms: 1_735_689_606_000,
        entries: (0..87u64)
            .map(|i| Ent::new(6_000_000 + i, (i * 3) as u32, (i % 4) as u8, i % 3 == 0))
            .collect(),
    });
    v.push(Valid {
        name: "max_entries",
        note: "89 entries: the longest datagram",
        gateway: 0xCAFE,
        boot_epoch: 1_735_689_000,
        sequence: 123_456_789,
        send_time_ms: 1_735_689_612_345,
        entries: (0..89u64)
            .map(|i| {
                Ent::new(
                    i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
                    (i as u32).wrapping_mul(0x0101_0101),
                    (i % 4) as u8,
                    i % 2 == 0,
                )
            })
            .collect(),
    });
    v
}

fn invalid_vectors() -> Vec<Invalid> {
    let hdr = |count| Hdr::v1(count, 7, 1, 1, 1_735_689_600_000);
    let e1 = Ent::new(1001, 1, 0, true);
    let e2 = Ent::new(1002, 2, 1, false);
    let one = datagram(&hdr(1), &[e1]);
    let two = datagram(&hdr(2), &[e1, e2]);
    let full_entries: Vec<Ent> = (1..=89u64).map(|u| Ent::new(u, 0, 0, false)).collect();
    let full = datagram(&hdr(89), &full_entries);
    assert_eq!(full.len(), 1472);

    let with = |mut b: Vec<u8>, at: usize, val: u8| {
        b[at] = val;
        b
    };
    let hdr_with = |f: &dyn Fn(&mut Hdr), entries: &[Ent]| {
        let mut h = hdr(entries.len() as u16);
        f(&mut h);
        datagram(&h, entries)
    };
    let mut v = Vec::new();
    let mut add = |name, note, bytes: Vec<u8>, error: &str| {
        v.push(Invalid {
            name,
            note,
            bytes,
            error: error.to_string(),
        })
    };

    add("empty", "zero bytes", vec![], "too_short");
    add(
        "header_truncated_by_one",
        "one byte short of a header",
        one[..31].to_vec(),
        "too_short",
    );
    add(
        "too_short_bad_magic",
        "length is checked before magic",
        vec![0xFF; 31],
        "too_short",
    );
    let mut long = full.clone();
    long.push(0);
    add(
        "max_plus_trailing_byte",
        "a valid 89-entry datagram plus one byte",
        long,
        "too_long",
    );
    add(
        "too_long_garbage",
        "length is checked before magic",
        vec![0xFF; 1473],
        "too_long",
    );
    add(
        "bad_magic_prs1",
        "magic \"PRS1\"",
        with(one.clone(), 3, b'1'),
        "bad_magic",
    );
    add(
        "bad_magic_and_version",
        "magic is checked before version",
        with(with(one.clone(), 0, b'X'), 4, 9),
        "bad_magic",
    );
    add(
        "version_0",
        "version byte 0",
        with(one.clone(), 4, 0),
        "bad_version value=0",
    );
    add(
        "version_2",
        "version byte 2 (a future layout)",
        with(one.clone(), 4, 2),
        "bad_version value=2",
    );
    add(
        "version_2_and_reserved_flags",
        "version is checked before flags",
        with(with(one.clone(), 4, 2), 5, 0xFE),
        "bad_version value=2",
    );
    add(
        "reserved_flag_bit_1",
        "header flags 0x02",
        with(one.clone(), 5, 0x02),
        "reserved_flags",
    );
    add(
        "reserved_flag_bit_7_with_auth",
        "header flags 0x81: reserved bits are checked before AUTH",
        with(one.clone(), 5, 0x81),
        "reserved_flags",
    );
    add(
        "count_0",
        "entry count 0: header and tag only",
        datagram(&hdr(0), &[]),
        "bad_count value=0",
    );
    add(
        "auth_and_count_0",
        "AUTH is a valid flag; the count is checked after the flags",
        with(datagram(&hdr(0), &[]), 5, 0x01),
        "bad_count value=0",
    );
    add(
        "count_90",
        "entry count 90 in an otherwise valid 89-entry datagram: count is checked before length",
        {
            let mut b = full.clone();
            b[6] = 90;
            b
        },
        "bad_count value=90",
    );
    add(
        "count_65535",
        "entry count 0xffff",
        {
            let mut b = one.clone();
            b[6] = 0xFF;
            b[7] = 0xFF;
            b
        },
        "bad_count value=65535",
    );
    add(
        "truncated_by_one",
        "a one-entry datagram missing its last byte",
        one[..63].to_vec(),
        "length_mismatch expected=64 actual=63",
    );
    add(
        "trailing_byte",
        "a one-entry datagram plus one byte",
        {
            let mut b = one.clone();
            b.push(0);
            b
        },
        "length_mismatch expected=64 actual=65",
    );
    add(
        "two_entries_truncated_by_one",
        "a two-entry datagram missing its last byte",
        two[..79].to_vec(),
        "length_mismatch expected=80 actual=79",
    );
    add(
        "count_2_one_entry",
        "count says 2, one entry present",
        hdr_with(&|h| h.count = 2, &[e1]),
        "length_mismatch expected=80 actual=64",
    );
    add(
        "header_only",
        "a header with count 1 and nothing after it",
        hdr(1).bytes(),
        "length_mismatch expected=64 actual=32",
    );
    add(
        "max_truncated_by_one",
        "a valid 89-entry datagram missing its last byte",
        full[..1471].to_vec(),
        "length_mismatch expected=1472 actual=1471",
    );
    add(
        "trailing_byte_and_zero_gateway",
        "the exact length is checked before the gateway",
        {
            let mut b = hdr_with(&|h| h.gateway = 0, &[e1]);
            b.push(0);
            b
        },
        "length_mismatch expected=64 actual=65",
    );
    add(
        "zero_gateway",
        "gateway id 0",
        hdr_with(&|h| h.gateway = 0, &[e1]),
        "zero_gateway",
    );
    add(
        "zero_gateway_and_tag",
        "gateway is checked before the tag",
        with(hdr_with(&|h| h.gateway = 0, &[e1]), 48, 1),
        "zero_gateway",
    );
    add(
        "tag_last_byte",
        "last tag byte 0x01 while AUTH is clear",
        with(one.clone(), 63, 0x01),
        "non_zero_tag",
    );
    add(
        "tag_first_byte_and_zero_user",
        "tag is checked before the entries",
        with(datagram(&hdr(1), &[Ent::new(0, 1, 0, false)]), 48, 0x80),
        "non_zero_tag",
    );
    add(
        "zero_user",
        "entry 0 has user id 0",
        datagram(&hdr(1), &[Ent::new(0, 1, 0, false)]),
        "zero_user index=0",
    );
    add(
        "zero_user_last_of_89",
        "entry 88 of a full datagram has user id 0",
        {
            let mut es = full_entries.clone();
            es[88].user = 0;
            datagram(&hdr(89), &es)
        },
        "zero_user index=88",
    );
    add(
        "bad_state_4",
        "entry 1 has state 4",
        datagram(&hdr(2), &[e1, Ent { state: 4, ..e2 }]),
        "bad_state index=1 value=4",
    );
    add(
        "bad_state_255",
        "entry 0 has state 255",
        datagram(&hdr(1), &[Ent { state: 255, ..e1 }]),
        "bad_state index=0 value=255",
    );
    add(
        "zero_user_and_bad_state",
        "within an entry, the user is checked before the state",
        datagram(&hdr(1), &[Ent::new(0, 1, 7, false)]),
        "zero_user index=0",
    );
    add(
        "entry_flag_bit_1",
        "entry 0 has flags 0x02",
        datagram(&hdr(1), &[Ent { flags: 0x02, ..e1 }]),
        "reserved_entry_bits index=0",
    );
    add(
        "entry_flag_bit_7",
        "entry 1 has flags 0x81",
        datagram(&hdr(2), &[e1, Ent { flags: 0x81, ..e2 }]),
        "reserved_entry_bits index=1",
    );
    add(
        "entry_reserved_byte_14",
        "entry 0 byte 14 is 0x01",
        datagram(
            &hdr(1),
            &[Ent {
                reserved: 0x0001,
                ..e1
            }],
        ),
        "reserved_entry_bits index=0",
    );
    add(
        "entry_reserved_byte_15",
        "entry 1 byte 15 is 0x80",
        datagram(
            &hdr(2),
            &[
                e1,
                Ent {
                    reserved: 0x8000,
                    ..e2
                },
            ],
        ),
        "reserved_entry_bits index=1",
    );
    add(
        "bad_state_and_reserved_bits",
        "within an entry, the state is checked before the reserved bits",
        datagram(
            &hdr(1),
            &[Ent {
                state: 5,
                flags: 0x04,
                ..e1
            }],
        ),
        "bad_state index=0 value=5",
    );
    add(
        "first_bad_entry_wins",
        "entry 1 has reserved bits, entry 2 user 0: the first bad entry decides",
        datagram(
            &hdr(3),
            &[e1, Ent { flags: 0x10, ..e2 }, Ent::new(0, 3, 0, false)],
        ),
        "reserved_entry_bits index=1",
    );
    v
}

const FORMAT_NOTE: &str = "\
# Format (SPEC.md, \"Test vectors\"): blocks of `key: value` lines, each block starting with
# `name:`; `#` lines and blank lines are ignored; an indented line continues the previous
# value. `hex:` is the whole datagram (whitespace between digits ignored).
";

pub fn render_valid() -> String {
    let mut out = String::new();
    out.push_str("# presenced heartbeat datagram v1: valid vectors.\n");
    out.push_str(FORMAT_NOTE);
    out.push_str(
        "# Each block gives the decoded header fields (flags is the raw header flags byte) and\n\
         # one `entry: <user> <device> <state> <active 0|1>` line per entry, in order.\n\
         # decode(hex) must give exactly these fields, and encoding them must give hex.\n",
    );
    for v in valid_vectors() {
        let h = Hdr::v1(
            v.entries.len() as u16,
            v.gateway,
            v.boot_epoch,
            v.sequence,
            v.send_time_ms,
        );
        let bytes = datagram(&h, &v.entries);
        writeln!(out, "\nname: {}", v.name).unwrap();
        writeln!(out, "note: {} ({} bytes)", v.note, bytes.len()).unwrap();
        writeln!(out, "hex:").unwrap();
        out.push_str(&layout_hex(&bytes));
        writeln!(out, "gateway: {}", v.gateway).unwrap();
        writeln!(out, "boot_epoch: {}", v.boot_epoch).unwrap();
        writeln!(out, "sequence: {}", v.sequence).unwrap();
        writeln!(out, "send_time_ms: {}", v.send_time_ms).unwrap();
        writeln!(out, "flags: 0").unwrap();
        for e in &v.entries {
            writeln!(
                out,
                "entry: {} {} {} {}",
                e.user, e.device, STATE_NAMES[e.state as usize], e.flags
            )
            .unwrap();
        }
    }
    out
}

pub fn render_invalid() -> String {
    let mut out = String::new();
    out.push_str("# presenced heartbeat datagram v1: invalid vectors.\n");
    out.push_str(FORMAT_NOTE);
    out.push_str(
        "# `error: <reason> [key=value ...]`: decode(hex) must fail with this reason; the\n\
         # details are the error's fields (value, expected, actual, index).\n",
    );
    for v in invalid_vectors() {
        writeln!(out, "\nname: {}", v.name).unwrap();
        writeln!(out, "note: {} ({} bytes)", v.note, v.bytes.len()).unwrap();
        if v.bytes.is_empty() {
            writeln!(out, "hex:").unwrap();
        } else if v.bytes.iter().all(|&b| b == v.bytes[0]) && v.bytes.len() > 64 {
            // Long runs of one byte: 32 bytes a line.
            writeln!(out, "hex:").unwrap();
            for c in v.bytes.chunks(32) {
                writeln!(out, "  {}", super::hex(c)).unwrap();
            }
        } else {
            writeln!(out, "hex:").unwrap();
            out.push_str(&layout_hex(&v.bytes));
        }
        writeln!(out, "error: {}", v.error).unwrap();
    }
    out
}

/// HMAC-SHA-256 built by hand from SHA-256 (RFC 2104), independently of the crate's code.
fn hmac_sha256(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    let sha = |parts: &[&[u8]]| {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        for p in parts {
            ctx.update(p);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    };
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let ipad: Vec<u8> = block.iter().map(|b| b ^ 0x36).collect();
    let opad: Vec<u8> = block.iter().map(|b| b ^ 0x5c).collect();
    let inner = sha(&[&ipad, message]);
    sha(&[&opad, &inner])
}

/// Signs `unsigned` (a datagram with a zero tag) by SPEC.md § 9: AUTH set, then the first 16
/// bytes of the HMAC-SHA-256 of everything before the tag.
fn sign(unsigned: &[u8], key: &[u8; 32]) -> Vec<u8> {
    let mut b = unsigned.to_vec();
    b[5] |= 0x01;
    let tag_at = b.len() - 16;
    let mac = hmac_sha256(key, &b[..tag_at]);
    b[tag_at..].copy_from_slice(&mac[..16]);
    b
}

pub fn render_auth() -> String {
    let key_a: [u8; 32] = std::array::from_fn(|i| i as u8);
    let key_b: [u8; 32] = [0xA5; 32];
    let one = datagram(
        &Hdr::v1(1, 7, 1_700_000_000, 42, 1_700_000_123_456),
        &[Ent::new(1001, 1, 0, true)],
    );
    let full_entries: Vec<Ent> = (1..=89u64)
        .map(|u| Ent::new(u, u as u32, (u % 4) as u8, u % 2 == 0))
        .collect();
    let full = datagram(
        &Hdr::v1(89, 3, 9, 1_000_000, 1_795_000_000_000),
        &full_entries,
    );
    let signed_one = sign(&one, &key_a);
    let mut flipped = signed_one.clone();
    flipped[40] ^= 0x01; // entry 0's device id: still well formed
    let mut unsigned_flag_tag = one.clone();
    let tag_at = unsigned_flag_tag.len() - 16;
    let mac = hmac_sha256(&key_a, &one[..tag_at]);
    unsigned_flag_tag[tag_at..].copy_from_slice(&mac[..16]);
    unsigned_flag_tag[5] = 0x01; // the MAC was made over flags 0: the flag is covered
                                 // (name, note, key, datagram, verifies)
    type Case = (&'static str, &'static str, [u8; 32], Vec<u8>, &'static str);
    let cases: Vec<Case> = vec![
        (
            "signed_one_entry",
            "gateway 7, one entry (user 1001 online, active), signed with key 00 01 .. 1f",
            key_a,
            signed_one.clone(),
            "yes",
        ),
        (
            "signed_full",
            "89 entries signed with key a5 × 32",
            key_b,
            sign(&full, &key_b),
            "yes",
        ),
        (
            "wrong_key",
            "signed_one_entry checked with key a5 × 32",
            key_b,
            signed_one.clone(),
            "no",
        ),
        (
            "flipped_entry_bit",
            "signed_one_entry with entry 0's device id changed",
            key_a,
            flipped,
            "no",
        ),
        (
            "unsigned",
            "signed_one_entry unsigned: AUTH clear, zero tag",
            key_a,
            one.clone(),
            "no",
        ),
        (
            "flag_not_covered",
            "a tag made over the header with flags 0, then AUTH set",
            key_a,
            unsigned_flag_tag,
            "no",
        ),
    ];
    let mut out = String::new();
    out.push_str("# presenced heartbeat datagram v1: authentication vectors (SPEC.md § 9).\n");
    out.push_str(FORMAT_NOTE);
    out.push_str(
        "# `key:` is the gateway's 32-byte key in hex. Every `hex:` decodes. `verifies: yes`:\n\
         # its tag is the MAC of its header and entries under the key; `no`: it is not.\n",
    );
    for (name, note, key, bytes, verifies) in cases {
        writeln!(out, "\nname: {name}").unwrap();
        writeln!(out, "note: {note} ({} bytes)", bytes.len()).unwrap();
        writeln!(out, "key: {}", super::hex(&key)).unwrap();
        writeln!(out, "hex:").unwrap();
        out.push_str(&layout_hex(&bytes));
        writeln!(out, "verifies: {verifies}").unwrap();
    }
    out
}
