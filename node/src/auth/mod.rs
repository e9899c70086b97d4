//! Authenticated heartbeats (SPEC.md § 9): per-gateway keys, MAC check, clock skew and
//! anti-replay, applied to every decoded datagram before any of it reaches presence state.
//!
//! With no key file every datagram must be unauthenticated (`AUTH` clear), as in the
//! unauthenticated mode of SPEC.md. With one, every datagram must carry `AUTH` and a tag made
//! with a key of its gateway. Checks run cheapest first, and the replay window is touched only
//! after the MAC verified, so forged datagrams cannot move it.

pub mod keys;
pub mod replay;
pub mod sources;

pub use keys::{Keys, ReplayMark};

use presenced_wire::Datagram;
use replay::Replay;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Why an authentication check refused a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthError {
    /// `AUTH` clear while the daemon requires authentication.
    Unauthenticated,
    /// `AUTH` set while the daemon has no key file.
    NotConfigured,
    /// The gateway id is not in the key file.
    UnknownGateway,
    /// The tag is not the MAC under any of the gateway's keys.
    BadMac,
    /// The send time is further from the daemon's clock than `auth.max_clock_skew`.
    ClockSkew,
    /// The boot epoch is older than one the gateway already used.
    StaleEpoch,
    /// The datagram was accepted before.
    Replayed,
    /// The sequence number is too far behind to tell (more than `auth.replay_window`).
    TooOld,
    /// The sequence number reached 2^48 − 1: the gateway must start a new boot epoch.
    SequenceExhausted,
}

impl AuthError {
    /// Every reason, indexed by [`code`](AuthError::code).
    pub const REASONS: [&'static str; 9] = [
        "unauthenticated",
        "auth_not_configured",
        "unknown_gateway",
        "bad_mac",
        "clock_skew",
        "stale_epoch",
        "replayed",
        "too_old",
        "sequence_exhausted",
    ];

    /// A dense index for counter arrays.
    pub const fn code(self) -> usize {
        self as usize
    }

    /// The stable name, for counters and logs.
    pub const fn reason(self) -> &'static str {
        Self::REASONS[self as usize]
    }

    /// Whether the refusal counts against the datagram's source address
    /// ([`sources::FailingSources`]): every refusal with a key file. `NotConfigured` (a signed
    /// datagram at a daemon without one) is a gateway's configuration, and costs no MAC.
    pub const fn counts_against_source(self) -> bool {
        !matches!(self, AuthError::NotConfigured)
    }
}

impl From<Replay> for AuthError {
    fn from(r: Replay) -> AuthError {
        match r {
            Replay::Replayed => AuthError::Replayed,
            Replay::TooOld => AuthError::TooOld,
            Replay::StaleEpoch => AuthError::StaleEpoch,
            Replay::SequenceExhausted => AuthError::SequenceExhausted,
        }
    }
}

/// One shard's view of authentication: the key set and the skew allowed.
#[derive(Clone)]
pub struct Verifier {
    keys: Option<Arc<Keys>>,
    max_skew_ms: u64,
}

impl Verifier {
    /// A verifier; `keys` `None` means authentication is off.
    pub fn new(keys: Option<Arc<Keys>>, max_skew_ms: u64) -> Verifier {
        Verifier { keys, max_skew_ms }
    }

    /// Replaces the key set (after a reload).
    pub fn set_keys(&mut self, keys: Arc<Keys>) {
        self.keys = Some(keys);
    }

    /// Checks a decoded datagram at wall-clock time `now_ms`; counts the outcome per gateway
    /// when the gateway is known.
    pub fn check(&self, d: &Datagram<'_>, now_ms: u64) -> Result<(), AuthError> {
        let Some(keys) = &self.keys else {
            return if d.is_authenticated() {
                Err(AuthError::NotConfigured)
            } else {
                Ok(())
            };
        };
        if !d.is_authenticated() {
            return Err(AuthError::Unauthenticated);
        }
        let header = d.header();
        let gateway = keys.get(header.gateway).ok_or(AuthError::UnknownGateway)?;
        let verdict = if !gateway
            .keys()
            .iter()
            .any(|k| presenced_wire::auth::verify(d, k))
        {
            Err(AuthError::BadMac)
        } else if header.send_time_ms.abs_diff(now_ms) > self.max_skew_ms {
            Err(AuthError::ClockSkew)
        } else {
            gateway
                .state
                .window
                .check(header.boot_epoch, header.sequence)
                .map_err(AuthError::from)
        };
        let state = &gateway.state;
        match verdict {
            Ok(()) => state.accepted.fetch_add(1, Ordering::Relaxed),
            Err(e) => state.refused[e.code()].fetch_add(1, Ordering::Relaxed),
        };
        verdict
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presenced_wire::auth::Key;
    use presenced_wire::{decode, Encoder, Entry, Header, State};

    const KEY: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn datagram(gateway: u32, epoch: u32, seq: u64, time: u64, key: Option<&str>) -> Vec<u8> {
        let mut enc = Encoder::new(Header::new(gateway, epoch, seq, time));
        enc.push(Entry {
            user: 1,
            device: 1,
            state: State::Online,
            active: true,
        })
        .unwrap();
        match key {
            Some(k) => enc
                .finish_signed(&Key::from_hex(k).unwrap())
                .unwrap()
                .to_vec(),
            None => enc.finish().unwrap().to_vec(),
        }
    }

    fn verifier() -> Verifier {
        let keys = Keys::parse(&format!("[gateways]\n7 = \"{KEY}\"\n"), 64, 10, None).unwrap();
        Verifier::new(Some(Arc::new(keys)), 30_000)
    }

    #[test]
    fn checks_in_order_and_counts_per_gateway() {
        let v = verifier();
        let now = 1_000_000;
        let check = |bytes: &[u8]| v.check(&decode(bytes).unwrap(), now);
        let other = "a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5";
        assert_eq!(
            check(&datagram(7, 1, 0, now, None)),
            Err(AuthError::Unauthenticated)
        );
        assert_eq!(
            check(&datagram(8, 1, 0, now, Some(KEY))),
            Err(AuthError::UnknownGateway)
        );
        assert_eq!(
            check(&datagram(7, 1, 0, now, Some(other))),
            Err(AuthError::BadMac)
        );
        assert_eq!(
            check(&datagram(7, 1, 0, now - 30_001, Some(KEY))),
            Err(AuthError::ClockSkew)
        );
        assert_eq!(check(&datagram(7, 1, 0, now + 30_000, Some(KEY))), Ok(()));
        assert_eq!(
            check(&datagram(7, 1, 0, now, Some(KEY))),
            Err(AuthError::Replayed)
        );
        assert_eq!(
            check(&datagram(7, 0, 1, now, Some(KEY))),
            Err(AuthError::StaleEpoch)
        );
        // A forged datagram does not move the window: sequence 1 still works after one.
        assert_eq!(
            check(&datagram(7, 1, 1, now, Some(other))),
            Err(AuthError::BadMac)
        );
        assert_eq!(check(&datagram(7, 1, 1, now, Some(KEY))), Ok(()));
        let stats = v.keys.as_ref().unwrap().stats();
        let gateway = &stats.per_gateway[&7];
        assert_eq!(gateway.accepted, 2);
        assert_eq!(gateway.refused["bad_mac"], 2);
    }

    #[test]
    fn without_keys_only_unauthenticated_datagrams_pass() {
        let v = Verifier::new(None, 0);
        let now = 5;
        assert_eq!(
            v.check(&decode(&datagram(7, 1, 0, 99, None)).unwrap(), now),
            Ok(())
        );
        let signed = datagram(7, 1, 0, now, Some(KEY));
        assert_eq!(
            v.check(&decode(&signed).unwrap(), now),
            Err(AuthError::NotConfigured)
        );
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Any change to a signed datagram is refused before it reaches the replay window:
        /// the untouched original is still accepted afterwards.
        #[test]
        fn tampered_datagrams_never_pass_or_move_the_window(
            flips in proptest::collection::vec((0usize..64, 1u8..=255), 1..4),
            seq in 0u64..1_000_000,
        ) {
            let v = verifier();
            let now = 1_000_000;
            let original = datagram(7, 1, seq, now, Some(KEY));
            let mut tampered = original.clone();
            for (at, mask) in &flips {
                tampered[*at] ^= mask;
            }
            if tampered != original {
                if let Ok(d) = decode(&tampered) {
                    proptest::prop_assert!(v.check(&d, now).is_err());
                }
            }
            proptest::prop_assert_eq!(v.check(&decode(&original).unwrap(), now), Ok(()));
        }
    }

    #[test]
    fn reasons_are_indexed_by_code() {
        for (i, r) in AuthError::REASONS.iter().enumerate() {
            let e = [
                AuthError::Unauthenticated,
                AuthError::NotConfigured,
                AuthError::UnknownGateway,
                AuthError::BadMac,
                AuthError::ClockSkew,
                AuthError::StaleEpoch,
                AuthError::Replayed,
                AuthError::TooOld,
                AuthError::SequenceExhausted,
            ][i];
            assert_eq!((e.code(), e.reason()), (i, *r));
        }
    }
}
