//! The gateway key file: which gateways may send, with which keys.
//!
//! ```toml
//! # gateway id = its 32-byte key in hex; during a key rotation, a list (all are accepted)
//! [gateways]
//! 1 = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
//! 7 = ["<new key>", "<old key>"]
//! ```
//!
//!
//! An optional `[links]` table makes push links authenticate (SPEC.md, P5): a link's HELLO
//! must carry a listed name and its token, and only links granted `firehose` may subscribe
//! to everything.
//!
//! ```toml
//! [links]
//! analytics = { token = "<16 to 256 bytes>", firehose = true }
//! gateway-eu-1 = { token = "<16 to 256 bytes>" }
//! ```
//!
//! Reading the file (and refusing one that other users can read) is the daemon's job; this
//! module parses its text. Reloading it (on SIGHUP) keeps each remaining gateway's replay
//! window and counters.

use super::replay::ReplayWindow;
use super::AuthError;
use presenced_wire::auth::Key;
use presenced_wire::stats::{AuthStats, GatewayStats};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Keys a gateway may hold at once (a rotation needs two).
pub const MAX_KEYS_PER_GATEWAY: usize = 4;

/// What survives a reload for one gateway: its replay window and counters.
pub struct GatewayState {
    /// The gateway's anti-replay window, shared by every shard.
    pub window: ReplayWindow,
    /// Datagrams accepted.
    pub accepted: AtomicU64,
    /// Datagrams refused, by [`AuthError::code`].
    pub refused: [AtomicU64; AuthError::REASONS.len()],
}

/// One gateway: its keys and its state.
pub struct Gateway {
    keys: Vec<Key>,
    /// Replay window and counters.
    pub state: Arc<GatewayState>,
}

impl Gateway {
    /// The gateway's keys, the current one first.
    pub fn keys(&self) -> &[Key] {
        &self.keys
    }
}

/// A gateway's anti-replay high-water mark: its boot epoch and the largest sequence number
/// accepted in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReplayMark {
    /// The gateway.
    pub gateway: u32,
    /// Its boot epoch.
    pub epoch: u32,
    /// The largest sequence number accepted in that epoch.
    pub highest: u64,
}

/// A push link allowed by `[links]`.
pub struct LinkGrant {
    token: Vec<u8>,
    /// May subscribe to every user's transitions.
    pub firehose: bool,
}

/// Shortest link token, bytes.
pub const MIN_TOKEN_LEN: usize = 16;

/// Every configured gateway and push link. Immutable once built; a reload builds a new one.
pub struct Keys {
    gateways: HashMap<u32, Gateway>,
    links: HashMap<String, LinkGrant>,
}

impl Keys {
    /// The gateway with this id.
    pub fn get(&self, gateway: u32) -> Option<&Gateway> {
        self.gateways.get(&gateway)
    }

    /// Whether push links must authenticate (the file has a `[links]` table).
    pub fn links_required(&self) -> bool {
        !self.links.is_empty()
    }

    /// The grant of link `name` if `token` is its token (compared in constant time).
    pub fn link(&self, name: &str, token: &[u8]) -> Option<&LinkGrant> {
        use subtle::ConstantTimeEq;
        let grant = self.links.get(name)?;
        bool::from(grant.token.as_slice().ct_eq(token)).then_some(grant)
    }

    /// Number of gateways.
    pub fn len(&self) -> usize {
        self.gateways.len()
    }

    /// Whether no gateway is configured.
    pub fn is_empty(&self) -> bool {
        self.gateways.is_empty()
    }

    /// Gateways by id, ascending.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &Gateway)> {
        let mut ids: Vec<u32> = self.gateways.keys().copied().collect();
        ids.sort_unstable();
        ids.into_iter()
            .filter_map(move |id| self.gateways.get(&id).map(|g| (id, g)))
    }

    /// Every gateway's anti-replay high-water mark, in gateway order (the store saves them
    /// each sync so that a restart keeps refusing what was accepted before it).
    pub fn marks(&self) -> Vec<ReplayMark> {
        self.iter()
            .filter_map(|(gateway, g)| {
                let (epoch, highest) = g.state.window.mark()?;
                Some(ReplayMark {
                    gateway,
                    epoch,
                    highest,
                })
            })
            .collect()
    }

    /// After a restart: for each saved mark of a gateway still in the file, refuses every
    /// sequence number of its epoch up to `floor(mark)` (the mark's `highest` after a clean
    /// stop; beyond it after a crash, which may have lost the last marks).
    pub fn restore_marks(&self, marks: &[ReplayMark], floor: impl Fn(&ReplayMark) -> u64) {
        for mark in marks {
            if let Some(g) = self.get(mark.gateway) {
                g.state.window.restore(mark.epoch, floor(mark));
            }
        }
    }

    /// Builds the key set from the file's text. `window` slots per new gateway; gateways also
    /// in `previous` keep their state.
    pub fn parse(
        text: &str,
        window: usize,
        max_gateways: usize,
        previous: Option<&Keys>,
    ) -> Result<Keys, String> {
        let doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| format!("not valid TOML: {e}"))?;
        for name in doc.keys() {
            if name != "gateways" && name != "links" {
                return Err(format!(
                    "unknown table [{name}]; the file has [gateways] and [links]"
                ));
            }
        }
        let links = parse_links(doc.get("links"))?;
        let table = match doc.get("gateways") {
            Some(toml::Value::Table(t)) => t.clone(),
            Some(_) => return Err("`gateways` must be a table: [gateways]".into()),
            None => toml::Table::new(),
        };
        if table.len() > max_gateways {
            return Err(format!(
                "{} gateways; auth.max_gateways is {max_gateways}",
                table.len()
            ));
        }
        let mut gateways = HashMap::with_capacity(table.len());
        for (id_text, value) in &table {
            let id: u32 = id_text.parse().ok().filter(|&id| id != 0).ok_or_else(|| {
                format!("gateway id `{id_text}` is not a number from 1 to 4294967295")
            })?;
            let texts: Vec<&str> = match value {
                toml::Value::String(s) => vec![s.as_str()],
                toml::Value::Array(a) => a
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .ok_or_else(|| format!("gateway {id}: keys are strings of hex"))
                    })
                    .collect::<Result<_, _>>()?,
                _ => {
                    return Err(format!(
                        "gateway {id}: give a key (\"<64 hex digits>\") or a list of keys"
                    ))
                }
            };
            if texts.is_empty() || texts.len() > MAX_KEYS_PER_GATEWAY {
                return Err(format!(
                    "gateway {id}: {} keys; give 1 to {MAX_KEYS_PER_GATEWAY}",
                    texts.len()
                ));
            }
            let keys = texts
                .iter()
                .map(|t| Key::from_hex(t).map_err(|e| format!("gateway {id}: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            let state = previous
                .and_then(|p| p.get(id))
                .map(|g| g.state.clone())
                .unwrap_or_else(|| {
                    Arc::new(GatewayState {
                        window: ReplayWindow::new(window),
                        accepted: AtomicU64::new(0),
                        refused: std::array::from_fn(|_| AtomicU64::new(0)),
                    })
                });
            gateways.insert(id, Gateway { keys, state });
        }
        Ok(Keys { gateways, links })
    }

    /// Memory held by the replay windows.
    pub fn memory_bytes(&self) -> usize {
        self.gateways
            .values()
            .map(|g| g.state.window.memory_bytes())
            .sum()
    }

    /// The STATS report: gateways, replay memory, and each gateway's counters.
    pub fn stats(&self) -> AuthStats {
        AuthStats {
            enabled: true,
            gateways: self.len() as u64,
            replay_memory_bytes: self.memory_bytes() as u64,
            per_gateway: self
                .iter()
                .map(|(id, g)| {
                    let refused = AuthError::REASONS
                        .iter()
                        .zip(&g.state.refused)
                        .map(|(reason, n)| (reason.to_string(), n.load(Ordering::Relaxed)))
                        .collect();
                    let accepted = g.state.accepted.load(Ordering::Relaxed);
                    (id, GatewayStats { accepted, refused })
                })
                .collect(),
        }
    }
}

fn parse_links(value: Option<&toml::Value>) -> Result<HashMap<String, LinkGrant>, String> {
    let table = match value {
        None => return Ok(HashMap::new()),
        Some(toml::Value::Table(t)) => t,
        Some(_) => return Err("`links` must be a table: [links]".into()),
    };
    let max = presenced_wire::link::MAX_TOKEN_LEN;
    let mut links = HashMap::with_capacity(table.len());
    for (name, grant) in table {
        if name.len() > presenced_wire::link::MAX_CLIENT_NAME_LEN {
            return Err(format!("link `{name}`: a name is at most 64 bytes"));
        }
        let Some(grant) = grant.as_table() else {
            return Err(format!("link `{name}`: give {{ token = \"...\" }}"));
        };
        for key in grant.keys() {
            if key != "token" && key != "firehose" {
                return Err(format!(
                    "link `{name}`: unknown key `{key}` (token, firehose)"
                ));
            }
        }
        let token = grant
            .get("token")
            .and_then(toml::Value::as_str)
            .ok_or_else(|| format!("link `{name}`: `token` (a string) is missing"))?;
        if token.len() < MIN_TOKEN_LEN || token.len() > max {
            return Err(format!(
                "link `{name}`: a token is {MIN_TOKEN_LEN} to {max} bytes, not {}",
                token.len()
            ));
        }
        let firehose = match grant.get("firehose") {
            None => false,
            Some(v) => v
                .as_bool()
                .ok_or_else(|| format!("link `{name}`: `firehose` is true or false"))?,
        };
        links.insert(
            name.clone(),
            LinkGrant {
                token: token.as_bytes().to_vec(),
                firehose,
            },
        );
    }
    Ok(links)
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const B: &str = "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5";

    #[test]
    fn parses_single_keys_and_rotations() {
        let keys = Keys::parse(
            &format!("[gateways]\n1 = \"{A}\"\n7 = [\"{B}\", \"{A}\"]\n"),
            64,
            10,
            None,
        )
        .unwrap();
        assert_eq!(keys.len(), 2);
        assert_eq!(keys.get(1).unwrap().keys().len(), 1);
        assert_eq!(keys.get(7).unwrap().keys()[0].to_hex(), B);
        assert!(keys.get(2).is_none());
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let err = |text: &str| Keys::parse(text, 64, 2, None).err().unwrap();
        assert!(err("[gateways]\n0 = \"x\"").contains("gateway id `0`"));
        assert!(err("[gateways]\n1 = \"abc\"").contains("64 hexadecimal digits"));
        assert!(err("[gateways]\n1 = 5").contains("give a key"));
        assert!(err("[gateways]\n1 = []").contains("0 keys"));
        assert!(err("[other]\n").contains("unknown table"));
        let three = format!("[gateways]\n1 = \"{A}\"\n2 = \"{A}\"\n3 = \"{A}\"\n");
        assert!(err(&three).contains("auth.max_gateways"));
    }

    #[test]
    fn links_need_their_token_and_the_firehose_its_grant() {
        let text = "[links]\nops = { token = \"0123456789abcdef\", firehose = true }\n\
                    gw = { token = \"fedcba9876543210\" }\n";
        let keys = Keys::parse(text, 64, 10, None).unwrap();
        assert!(keys.links_required());
        assert!(keys.link("ops", b"0123456789abcdef").unwrap().firehose);
        assert!(!keys.link("gw", b"fedcba9876543210").unwrap().firehose);
        assert!(keys.link("gw", b"0123456789abcdef").is_none());
        assert!(keys.link("nobody", b"fedcba9876543210").is_none());
        let err = |t: &str| Keys::parse(t, 64, 10, None).err().unwrap();
        assert!(err("[links]\na = { token = \"short\" }").contains("16 to 256 bytes"));
        assert!(err("[links]\na = { tokn = \"0123456789abcdef\" }").contains("unknown key"));
        assert!(!Keys::parse("", 64, 10, None).unwrap().links_required());
    }

    #[test]
    fn marks_survive_into_a_new_key_set() {
        let text = format!("[gateways]\n1 = \"{A}\"\n2 = \"{B}\"\n");
        let before = Keys::parse(&text, 64, 10, None).unwrap();
        before.get(1).unwrap().state.window.check(3, 500).unwrap();
        let marks = before.marks();
        assert_eq!(
            marks,
            vec![ReplayMark {
                gateway: 1,
                epoch: 3,
                highest: 500
            }]
        );
        let after = Keys::parse(&text, 64, 10, None).unwrap();
        after.restore_marks(&marks, |m| m.highest + 10);
        let window = &after.get(1).unwrap().state.window;
        assert!(window.check(3, 500).is_err());
        assert!(window.check(3, 510).is_err());
        assert_eq!(window.check(3, 511), Ok(()));
        assert_eq!(after.get(2).unwrap().state.window.check(1, 0), Ok(()));
    }

    #[test]
    fn a_reload_keeps_replay_state_of_remaining_gateways() {
        let first = Keys::parse(&format!("[gateways]\n1 = \"{A}\"\n"), 64, 10, None).unwrap();
        assert!(first.get(1).unwrap().state.window.check(1, 5).is_ok());
        let second = Keys::parse(
            &format!("[gateways]\n1 = \"{B}\"\n2 = \"{A}\"\n"),
            64,
            10,
            Some(&first),
        )
        .unwrap();
        assert!(
            second.get(1).unwrap().state.window.check(1, 5).is_err(),
            "a replay after reload"
        );
        assert!(second.get(2).unwrap().state.window.check(1, 5).is_ok());
    }
}
