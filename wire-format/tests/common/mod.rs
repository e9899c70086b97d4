//! Shared by the integration tests: hex and the test-vector file format (SPEC.md, "Test
//! vectors").

#![allow(dead_code)]

use std::path::PathBuf;

use presenced_wire::{Entry, Header, State};

/// Path of a file under `wire-format/`.
pub fn crate_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Parses hex digits, ignoring all whitespace.
pub fn parse_hex(s: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if digits.len() % 2 != 0 {
        return Err(format!("odd number of hex digits ({})", digits.len()));
    }
    digits
        .chunks(2)
        .map(|p| {
            let s = std::str::from_utf8(p).map_err(|e| e.to_string())?;
            u8::from_str_radix(s, 16).map_err(|_| format!("bad hex byte {s:?}"))
        })
        .collect()
}

/// Lower-case hex, no separators.
pub fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One block of a vector file: its name, bytes, and the other `key: value` lines in order.
#[derive(Debug, Clone)]
pub struct Block {
    pub name: String,
    pub bytes: Vec<u8>,
    pub fields: Vec<(String, String)>,
}

impl Block {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> impl Iterator<Item = &str> {
        let key = key.to_string();
        self.fields
            .iter()
            .filter(move |(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    fn num<T: std::str::FromStr>(&self, key: &str) -> T {
        let v = self
            .get(key)
            .unwrap_or_else(|| panic!("{}: missing `{key}`", self.name));
        v.parse()
            .unwrap_or_else(|_| panic!("{}: bad `{key}`: {v:?}", self.name))
    }

    /// The expected header of a valid vector.
    pub fn header(&self) -> Header {
        Header {
            gateway: self.num("gateway"),
            boot_epoch: self.num("boot_epoch"),
            sequence: self.num("sequence"),
            send_time_ms: self.num("send_time_ms"),
            flags: self.num("flags"),
        }
    }

    /// The expected entries of a valid vector.
    pub fn entries(&self) -> Vec<Entry> {
        self.all("entry")
            .map(|line| {
                let parts: Vec<&str> = line.split_whitespace().collect();
                assert_eq!(parts.len(), 4, "{}: bad entry line {line:?}", self.name);
                let state = State::ALL
                    .into_iter()
                    .find(|s| s.name() == parts[2])
                    .unwrap_or_else(|| panic!("{}: bad state in {line:?}", self.name));
                let active = match parts[3] {
                    "0" => false,
                    "1" => true,
                    other => panic!("{}: bad active flag {other:?}", self.name),
                };
                Entry {
                    user: parts[0].parse().expect("user"),
                    device: parts[1].parse().expect("device"),
                    state,
                    active,
                }
            })
            .collect()
    }

    /// The expected error of an invalid vector: the reason and its `key=value` details.
    pub fn error(&self) -> (String, Vec<(String, String)>) {
        let line = self
            .get("error")
            .unwrap_or_else(|| panic!("{}: missing `error`", self.name));
        let mut parts = line.split_whitespace();
        let reason = parts.next().expect("reason").to_string();
        let details = parts
            .map(|kv| {
                let (k, v) = kv
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{}: bad detail {kv:?}", self.name));
                (k.to_string(), v.to_string())
            })
            .collect();
        (reason, details)
    }
}

/// Parses a vector file (format in SPEC.md): `#` comment lines and blank lines are ignored;
/// `key: value` lines; a line starting with whitespace continues the previous value; each
/// `name:` starts a block; `hex:` holds the datagram.
pub fn parse_vectors(text: &str) -> Result<Vec<Block>, String> {
    let mut raw: Vec<Vec<(String, String)>> = Vec::new();
    for (no, line) in text.lines().enumerate() {
        let no = no + 1;
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with(char::is_whitespace) {
            let last = raw
                .last_mut()
                .and_then(|b| b.last_mut())
                .ok_or(format!("line {no}: continuation outside a block"))?;
            last.1.push(' ');
            last.1.push_str(line.trim());
            continue;
        }
        let (key, value) = line
            .split_once(':')
            .ok_or(format!("line {no}: expected `key: value`"))?;
        let (key, value) = (key.trim().to_string(), value.trim().to_string());
        if key == "name" {
            raw.push(Vec::new());
        }
        raw.last_mut()
            .ok_or(format!("line {no}: `{key}` before the first `name:`"))?
            .push((key, value));
    }
    raw.into_iter()
        .map(|mut fields| {
            let name = fields.remove(0).1;
            let hex_at = fields
                .iter()
                .position(|(k, _)| k == "hex")
                .ok_or(format!("{name}: no `hex:`"))?;
            let hex = fields.remove(hex_at).1;
            let bytes = parse_hex(&hex).map_err(|e| format!("{name}: {e}"))?;
            Ok(Block {
                name,
                bytes,
                fields,
            })
        })
        .collect()
}

/// Loads `vectors/<file>`.
pub fn load(file: &str) -> Vec<Block> {
    let path = crate_path(&format!("vectors/{file}"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    parse_vectors(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `(offset, bytes)` of each row of SPEC.md's field-by-field tables in `text` (rows
/// `| <offset> | <bytes> | …`, where the bytes are hex in backquotes, possibly followed by
/// `× <count>` for a repeated group); rows whose first cell is not a number are skipped.
pub fn table_bytes(text: &str) -> Vec<(usize, Vec<u8>)> {
    let mut rows = Vec::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let (Some(offset), Some(bytes)) = (cells.get(1), cells.get(2)) else {
            continue;
        };
        let Ok(offset) = offset.parse::<usize>() else {
            continue;
        };
        let mut quoted = bytes.split('`');
        let (Some(""), Some(hex), Some(rest)) = (quoted.next(), quoted.next(), quoted.next())
        else {
            panic!("SPEC.md table row {line:?}: the bytes are not in backquotes");
        };
        let group = parse_hex(hex).unwrap_or_else(|e| panic!("SPEC.md table row {line:?}: {e}"));
        let times = match rest.trim().strip_prefix('×') {
            None => 1,
            Some(n) => n.trim().parse().expect("a count after ×"),
        };
        rows.push((offset, group.repeat(times)));
    }
    rows
}

/// Asserts that each `(offset, bytes)` row lies at its offset in `frame`.
pub fn check_table(what: &str, rows: &[(usize, Vec<u8>)], frame: &[u8]) {
    for (offset, bytes) in rows {
        let at = frame.get(*offset..offset + bytes.len());
        assert_eq!(
            at.map(to_hex),
            Some(to_hex(bytes)),
            "{what}: the table's row at offset {offset}"
        );
    }
}
