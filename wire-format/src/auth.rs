//! Datagram authentication (SPEC.md § 9): the tag is the first 16 bytes of the HMAC-SHA-256
//! of the datagram's header and entries under the gateway's 32-byte key (ring's HMAC, which
//! uses the CPU's SHA extensions), compared in constant time.

use crate::{Datagram, TAG_LEN};
use std::fmt;
use subtle::ConstantTimeEq;

/// Length of a gateway key in bytes.
pub const KEY_LEN: usize = 32;

/// A gateway's secret key, with its HMAC state computed once. Its `Debug` output does not
/// show the key.
#[derive(Clone)]
pub struct Key {
    bytes: [u8; KEY_LEN],
    hmac: ring::hmac::Key,
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        bool::from(self.bytes.ct_eq(&other.bytes))
    }
}

impl Eq for Key {}

impl Key {
    /// A key from its 32 bytes.
    pub fn new(bytes: [u8; KEY_LEN]) -> Key {
        Key {
            bytes,
            hmac: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &bytes),
        }
    }

    /// A key from 64 hexadecimal digits (either case; surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<Key, KeyError> {
        let text = text.trim();
        if text.len() != 2 * KEY_LEN {
            return Err(KeyError::Length(text.len()));
        }
        let mut bytes = [0u8; KEY_LEN];
        for (i, pair) in text.as_bytes().chunks_exact(2).enumerate() {
            let digit = |c: u8| char::from(c).to_digit(16);
            let (Some(hi), Some(lo)) = (
                pair.first().copied().and_then(digit),
                pair.get(1).copied().and_then(digit),
            ) else {
                return Err(KeyError::NotHex);
            };
            if let Some(b) = bytes.get_mut(i) {
                *b = u8::try_from(hi * 16 + lo).unwrap_or(0);
            }
        }
        Ok(Key::new(bytes))
    }

    /// The key as 64 lowercase hexadecimal digits.
    pub fn to_hex(&self) -> String {
        self.bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(..)")
    }
}

/// Why a key could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// Not 64 characters; carries the length found.
    Length(usize),
    /// A character is not a hexadecimal digit.
    NotHex,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Length(n) => write!(
                f,
                "a key is {} hexadecimal digits ({KEY_LEN} bytes), not {n}",
                2 * KEY_LEN
            ),
            KeyError::NotHex => f.write_str("a key may hold only hexadecimal digits 0-9, a-f"),
        }
    }
}

impl std::error::Error for KeyError {}

/// The tag of `signed` (a datagram's header and entries, `AUTH` flag set) under `key`.
pub fn tag(key: &Key, signed: &[u8]) -> [u8; TAG_LEN] {
    let mac = ring::hmac::sign(&key.hmac, signed);
    let mut tag = [0u8; TAG_LEN];
    if let Some(head) = mac.as_ref().get(..TAG_LEN) {
        tag.copy_from_slice(head);
    }
    tag
}

/// Whether `datagram` carries `AUTH` and a tag made with `key`. Constant time in the tag.
pub fn verify(datagram: &Datagram<'_>, key: &Key) -> bool {
    if !datagram.is_authenticated() {
        return false;
    }
    let want = tag(key, datagram.signed_bytes());
    bool::from(want.ct_eq(&datagram.tag()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, Encoder, Entry, Header, State};

    fn key(b: u8) -> Key {
        Key::new([b; KEY_LEN])
    }

    #[test]
    fn signed_datagrams_verify_with_their_key_only() {
        let mut enc = Encoder::new(Header::new(7, 1, 2, 3));
        enc.push(Entry {
            user: 42,
            device: 1,
            state: State::Online,
            active: true,
        })
        .unwrap();
        let bytes = enc.finish_signed(&key(1)).unwrap().to_vec();
        let d = decode(&bytes).unwrap();
        assert!(d.is_authenticated());
        assert!(verify(&d, &key(1)));
        assert!(!verify(&d, &key(2)));
        // Any flipped bit of header, entries or tag breaks it.
        for i in 0..bytes.len() {
            let mut forged = bytes.clone();
            forged[i] ^= 0x10;
            if let Ok(f) = decode(&forged) {
                assert!(!verify(&f, &key(1)), "bit flip at {i} still verifies");
            }
        }
        // An unsigned datagram never verifies.
        let plain = enc.finish().unwrap().to_vec();
        assert!(!verify(&decode(&plain).unwrap(), &key(1)));
    }

    #[test]
    fn keys_read_from_hex() {
        let hex = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1F";
        let k = Key::from_hex(hex).unwrap();
        assert_eq!(k.to_hex(), hex.to_lowercase());
        assert_eq!(format!("{k:?}"), "Key(..)");
        assert_eq!(Key::from_hex("abc"), Err(KeyError::Length(3)));
        assert_eq!(Key::from_hex(&"g".repeat(64)), Err(KeyError::NotHex));
        assert_eq!(Key::from_hex(&"é".repeat(32)), Err(KeyError::NotHex));
    }
}
