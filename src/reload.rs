//! What a SIGHUP did, said in one log line: an operator who edits the settings and sends
//! SIGHUP must learn from that line alone which keys are now in force (each link limit with
//! the links it applies to), which could not be reloaded (their old values stay), and which
//! changed keys wait for a restart.

use std::fmt;

/// The outcome of one reload ([`crate::daemon::Running::reload`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reload {
    /// The keys put in force, as the line names them, e.g. `link.queue_bytes (every link)`.
    pub reloaded: Vec<String>,
    /// What could not be reloaded, and why: the old values stay.
    pub failed: Vec<String>,
    /// Changed keys that only a restart applies.
    pub restart: Vec<String>,
}

impl Reload {
    /// Everything changed is in force: nothing failed and nothing waits for a restart.
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty() && self.restart.is_empty()
    }
}

impl fmt::Display for Reload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reloaded.is_empty() {
            write!(f, "SIGHUP: reloaded nothing")?;
            if self.failed.is_empty() {
                write!(f, " (no reloadable setting changed)")?;
            }
        } else {
            write!(f, "SIGHUP: reloaded {}", self.reloaded.join(", "))?;
        }
        if !self.failed.is_empty() {
            write!(
                f,
                "; not reloaded, the old values stay: {}",
                self.failed.join(", ")
            )?;
        }
        if !self.restart.is_empty() {
            write!(
                f,
                "; changed settings that need a restart: {}",
                self.restart.join(", ")
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_names_what_was_reloaded_what_failed_and_what_waits() {
        let strings = |v: &[&str]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
        let done = Reload {
            reloaded: strings(&["log.level", "auth.keys_file (2 gateways)"]),
            ..Reload::default()
        };
        assert!(done.is_complete());
        assert_eq!(
            done.to_string(),
            "SIGHUP: reloaded log.level, auth.keys_file (2 gateways)"
        );
        let partial = Reload {
            reloaded: Vec::new(),
            failed: strings(&["auth.keys_file (unreadable)"]),
            restart: strings(&["presence.grace", "shards.count"]),
        };
        assert!(!partial.is_complete());
        assert_eq!(
            partial.to_string(),
            "SIGHUP: reloaded nothing; not reloaded, the old values stay: auth.keys_file \
             (unreadable); changed settings that need a restart: presence.grace, shards.count"
        );
    }
}
