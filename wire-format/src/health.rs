//! The daemon's health as its metrics endpoint answers `GET /healthz`: one typed schema,
//! written by the daemon and read by `presencectl health` and anyone else, so that neither
//! side reads JSON back by hand. HTTP 200 carries status `ok`, 503 `degraded` with the reasons.
//! Like the STATS schema, every field is required when reading and unknown ones are ignored.
//!
//! ```
//! use presenced_wire::health::{Health, Status};
//! let reasons = vec!["shard 1: stalled".to_string()];
//! let h = Health { status: Status::Degraded, reasons, uptime_s: 7 };
//! assert_eq!(Health::from_json(&h.to_json().unwrap()).unwrap(), h);
//! ```

use serde::{Deserialize, Serialize};

/// The answer to `GET /healthz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok` (HTTP 200) or `degraded` (HTTP 503).
    pub status: Status,
    /// Why the daemon is degraded, one line each, for people; empty when ok.
    pub reasons: Vec<String>,
    /// Seconds since the daemon started.
    pub uptime_s: u64,
}

/// The daemon's state as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Started, every shard making progress, the state directory (when kept) writable.
    Ok,
    /// Running, but something needs a person: the reasons say what.
    Degraded,
}

impl Health {
    /// The JSON body.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    /// Reads a body; a missing or mistyped field is an error.
    pub fn from_json(json: &str) -> Result<Health, serde_json::Error> {
        serde_json::from_str(json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_reads_as_a_word_and_a_missing_field_is_an_error() {
        let ok = Health {
            status: Status::Ok,
            reasons: vec![],
            uptime_s: 3,
        };
        let json = ok.to_json().unwrap();
        assert_eq!(json, r#"{"status":"ok","reasons":[],"uptime_s":3}"#);
        assert!(Health::from_json(r#"{"status":"ok","reasons":[]}"#).is_err());
        assert!(Health::from_json(r#"{"status":"fine","reasons":[],"uptime_s":1}"#).is_err());
    }
}
