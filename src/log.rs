//! The daemon's log: levelled, structured lines on stderr, through `tracing`.
//!
//! Operators read it two ways, and each gets what suits it:
//!
//! - **Under systemd** (journald sets `JOURNAL_STREAM` when stderr is the journal), a line is
//!   `<N>message key=value …`: `<N>` is the syslog priority journald reads (3 error, 4 warning,
//!   6 info, 7 debug), and there is no timestamp of ours (the journal stamps every line), so
//!   `journalctl -p warning -u presenced` filters by level.
//! - **Elsewhere**, a line is `2026-11-27T07:36:26.123Z WARN message key=value …` (UTC).
//!
//! The level is `log.level`; SIGHUP changes it without a restart ([`Log::set_level`]). The
//! threads that log on their own (shards, store, link) keep each report bounded in rate where
//! its cause can repeat (refusals, shedding, storage errors): a flood never floods the log.

use crate::settings::LogLevel;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{reload, Registry};

/// The installed log; changes its level.
pub struct Log {
    level: reload::Handle<LevelFilter, Registry>,
}

impl Log {
    /// Installs the process-wide log at `level`, writing to stderr in the journal's format
    /// when stderr is the journal. A second call (tests starting daemons in-process) keeps
    /// the first installation and returns a handle that changes nothing else's level.
    pub fn install(level: LogLevel) -> Log {
        let journald = std::env::var_os("JOURNAL_STREAM").is_some();
        let (filter, handle) = reload::Layer::new(filter_of(level));
        let lines = tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .event_format(Line { journald });
        let subscriber = tracing_subscriber::registry().with(filter).with(lines);
        // Already installed (an in-process daemon in a test): the first one stays.
        let _ = tracing::subscriber::set_global_default(subscriber);
        Log { level: handle }
    }

    /// Sets the level from now on.
    pub fn set_level(&self, level: LogLevel) {
        // Fails only when the subscriber is gone (never, while the process runs).
        let _ = self.level.modify(|f| *f = filter_of(level));
    }
}

/// A report that a peer can cause over and over (a refused link), logged at most once per
/// `period`; the next line says how many were not logged.
pub struct Every {
    period_ms: u64,
    /// Wall ms of the last line, plus one (0: never).
    last_ms: AtomicU64,
    unsaid: AtomicU64,
}

impl Every {
    /// At most one line per `period`.
    pub const fn new(period: Duration) -> Every {
        Every {
            period_ms: period.as_millis() as u64,
            last_ms: AtomicU64::new(0),
            unsaid: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line is due at `now_ms` (`n` occurrences since the last one went
    /// unlogged), `None` when this one is only counted.
    pub fn due(&self, now_ms: u64) -> Option<u64> {
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == 0 || now_ms >= last - 1 + self.period_ms;
        if due
            && self
                .last_ms
                .compare_exchange(last, now_ms + 1, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.unsaid.swap(0, Ordering::Relaxed));
        }
        self.unsaid.fetch_add(1, Ordering::Relaxed);
        None
    }
}

fn filter_of(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    }
}

/// One event as one line (see the module docs).
struct Line {
    journald: bool,
}

impl<S, N> FormatEvent<S, N> for Line
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let level = *event.metadata().level();
        if self.journald {
            write!(writer, "<{}>", syslog_priority(level))?;
        } else {
            write!(
                writer,
                "{} {:>5} ",
                Utc(std::time::SystemTime::now()),
                level
            )?;
        }
        ctx.format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// The syslog priority journald reads from a line's `<N>` prefix.
fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// A time as RFC 3339 UTC with milliseconds (`2026-11-27T07:36:26.123Z`).
struct Utc(std::time::SystemTime);

impl fmt::Display for Utc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self
            .0
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let (days, ms_of_day) = (ms / 86_400_000, ms % 86_400_000);
        let (y, m, d) = civil_from_days(days as i64);
        let s = ms_of_day / 1000;
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            s / 3600,
            s / 60 % 60,
            s % 60,
            ms_of_day % 1000
        )
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn utc_times_read_as_rfc_3339() {
        let at = |ms: u64| Utc(UNIX_EPOCH + Duration::from_millis(ms)).to_string();
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(at(1_795_764_986_123), "2026-11-27T07:36:26.123Z");
        assert_eq!(at(4_102_444_799_999), "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn a_repeated_report_is_logged_once_per_period_with_the_count_unsaid() {
        let every = Every::new(Duration::from_secs(10));
        assert_eq!(every.due(5_000), Some(0));
        assert_eq!(every.due(6_000), None);
        assert_eq!(every.due(14_999), None);
        assert_eq!(every.due(15_000), Some(2));
        assert_eq!(every.due(15_001), None);
        assert_eq!(every.due(40_000), Some(1));
    }

    #[test]
    fn journald_priorities_follow_syslog() {
        assert_eq!(syslog_priority(Level::ERROR), 3);
        assert_eq!(syslog_priority(Level::WARN), 4);
        assert_eq!(syslog_priority(Level::INFO), 6);
        assert_eq!(syslog_priority(Level::DEBUG), 7);
    }
}
