//! `presenced-tools`: the operator and capacity tools of presenced. The binaries live in
//! `src/bin/`; the load generator's logic lives in [`loadgen`] so that it can be split into
//! small modules and tested, and presencectl's command line in [`presencectl_cli`] so that the
//! xtask can render its man page and completions. The reference gateway's logic lives in
//! [`gateway`].

#![warn(missing_docs)]

pub mod gateway;
pub mod loadgen;
pub mod presencectl_cli;

/// Parses a duration for any tool's command line, in the daemon's notation (humantime):
/// a number and a unit (`500us`, `300ms`, `30s`, `2m`, `1h`), or several (`1m 30s`).
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("`{text}` is not a duration ({e}): give a number and a unit, e.g. 500ms, 30s or 2m")
    })
}
