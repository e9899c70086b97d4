//! Browser tokens: how the gateway knows which user a WebSocket speaks for. The application
//! that logs a user in (not this gateway) mints a token for them with a secret it shares with
//! the gateway; the gateway checks the MAC and the expiry and trusts nothing else the browser
//! says about who it is. HMAC-SHA256 over the version, user id and expiry, so a token for one
//! user or one expiry cannot be edited into another.
//!
//! Format: `v1.<user>.<expiry, Unix seconds>.<MAC, 64 hex digits>`, all ASCII, safe in a URL.
//! A token is checked when the socket opens; the connection then lasts until it closes.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// The fewest bytes a secret may have: 32, the MAC's own strength.
pub const MIN_SECRET_BYTES: usize = 32;

/// The longest token accepted (longer input is refused before any parsing).
pub const MAX_TOKEN_BYTES: usize = 128;

/// The secret shared with whoever mints tokens.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// A secret of these bytes; refused if shorter than [`MIN_SECRET_BYTES`].
    pub fn new(bytes: Vec<u8>) -> Result<Secret, String> {
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "the token secret has {} bytes; it needs at least {MIN_SECRET_BYTES} \
                 (e.g. `head -c 32 /dev/urandom | base64 > gateway.secret`)",
                bytes.len()
            ));
        }
        Ok(Secret(bytes))
    }

    /// Reads a secret file: its text, surrounding whitespace removed.
    pub fn from_file(path: &std::path::Path) -> Result<Secret, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the token secret {}: {e}", path.display()))?;
        Secret::new(text.trim().as_bytes().to_vec()).map_err(|e| format!("{}: {e}", path.display()))
    }

    fn mac(&self, user: u64, expires_s: u64) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(format!("presence-gateway v1|{user}|{expires_s}").as_bytes());
        mac
    }

    /// A token for `user` that expires at `expires_s` (Unix seconds).
    pub fn mint(&self, user: u64, expires_s: u64) -> String {
        let tag = self.mac(user, expires_s).finalize().into_bytes();
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        format!("v1.{user}.{expires_s}.{hex}")
    }

    /// The user a token speaks for, if its MAC is right and it has not expired at `now_s`.
    pub fn verify(&self, token: &str, now_s: u64) -> Result<u64, TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some("v1"), Some(user), Some(expires), Some(tag), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(TokenError::Malformed);
        };
        let user: u64 = user.parse().map_err(|_| TokenError::Malformed)?;
        let expires_s: u64 = expires.parse().map_err(|_| TokenError::Malformed)?;
        let tag = decode_hex(tag).ok_or(TokenError::Malformed)?;
        self.mac(user, expires_s)
            .verify_slice(&tag)
            .map_err(|_| TokenError::BadSignature)?;
        if user == 0 {
            return Err(TokenError::Malformed);
        }
        if now_s >= expires_s {
            return Err(TokenError::Expired);
        }
        Ok(user)
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// Why a token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// Not a token of this format (or user 0).
    Malformed,
    /// The MAC does not match: another secret, or an edited token.
    BadSignature,
    /// Past its expiry.
    Expired,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenError::Malformed => "malformed token",
            TokenError::BadSignature => "bad token signature",
            TokenError::Expired => "token expired",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> Secret {
        Secret::new(b"0123456789abcdef0123456789abcdef".to_vec()).unwrap()
    }

    #[test]
    fn a_minted_token_names_its_user_until_it_expires() {
        let token = secret().mint(42, 1_000);
        assert_eq!(secret().verify(&token, 999), Ok(42));
        assert_eq!(secret().verify(&token, 1_000), Err(TokenError::Expired));
    }

    #[test]
    fn edited_tokens_and_other_secrets_are_refused() {
        let token = secret().mint(42, 1_000);
        let other_user = token.replacen("v1.42.", "v1.43.", 1);
        assert_eq!(
            secret().verify(&other_user, 0),
            Err(TokenError::BadSignature)
        );
        let later = token.replacen(".1000.", ".9000.", 1);
        assert_eq!(secret().verify(&later, 0), Err(TokenError::BadSignature));
        let other = Secret::new(vec![7; 32]).unwrap();
        assert_eq!(other.verify(&token, 0), Err(TokenError::BadSignature));
    }

    #[test]
    fn garbage_is_malformed_never_a_panic() {
        for bad in [
            "",
            "v1",
            "v1.1.2",
            "v2.1.2.00",
            "v1.x.2.00",
            "v1.1.2.zz",
            "v1.1.2.é€",
            "v1.1.2.3.4",
            &"v1.1.2.".repeat(40),
        ] {
            assert_eq!(secret().verify(bad, 0), Err(TokenError::Malformed), "{bad}");
        }
        let multibyte = format!("v1.1.2.{}", "é".repeat(32));
        assert_eq!(secret().verify(&multibyte, 0), Err(TokenError::Malformed));
    }

    #[test]
    fn short_secrets_are_refused() {
        assert!(Secret::new(vec![1; 31]).is_err());
    }
}
