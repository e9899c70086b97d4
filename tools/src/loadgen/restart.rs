//! The restart step (`--restart-cmd`): mid-run, while the simulated gateways keep heartbeating
//! every user, the target is restarted by a command (or, in tests, by a closure), and the run
//! checks that nobody's presence moved. For presenced the observers are
//! [`WatchObserver`](super::watch_observer::WatchObserver)s, which reconnect by themselves;
//! the watched users are read before and after the restart and compared (state, version, last
//! seen). For Redis (`redis_target::restart`) every connection reconnects by itself and the
//! keys of every device are read after the restart: a missing key is a device that now reads
//! offline although its gateway never stopped (a false offline); the login its gateway's next
//! beat then publishes is a false transition.

use super::cli::{Args, Scenario};
use super::observer::Shared;
use super::plan::Plan;
use super::report::{grouped, ms};
use super::{connect, RunError};
use presenced_client::LinkClient;
use presenced_wire::link::PresenceRecord;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// What restarts the target: runs the restart and returns once it has been done (the target
/// may still be starting), or says why it failed.
pub type RestartHook<'a> = &'a mut dyn FnMut() -> Result<(), String>;

/// Runs `command` with `sh -c`; fails unless it exits with status 0.
pub fn run_command(command: &str) -> Result<(), String> {
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("cannot run `sh -c {command:?}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{command}` exited with {status}"))
    }
}

/// Refuses a restart the run cannot do: only steady runs restart, before their end.
pub(super) fn check_args(args: &Args, plan: &Plan) -> Result<(), RunError> {
    if plan.scenario != Scenario::Steady {
        return Err(RunError::usage(
            "--restart-cmd runs with --scenario steady only",
        ));
    }
    if args
        .restart_after
        .is_some_and(|d| d.as_micros() as u64 >= plan.duration_us)
    {
        return Err(RunError::usage(
            "--restart-after must come before the end of --duration",
        ));
    }
    Ok(())
}

/// What the restart did to the watched users, as read before and after it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Compared {
    /// Users read both times.
    pub users: u64,
    /// Users whose state differs.
    pub state_changed: u64,
    /// Users whose version differs.
    pub version_changed: u64,
    /// Users whose last seen went back or became unknown: the restart lost it.
    pub last_seen_back: u64,
    /// Users whose last seen moved forward (an online user's last seen follows its active
    /// heartbeats: no finding).
    pub last_seen_forward: u64,
}

impl Compared {
    /// Compares the records read before the restart with those read after it.
    pub fn of(before: &[PresenceRecord], after: &[PresenceRecord]) -> Compared {
        let before: HashMap<u64, &PresenceRecord> = before.iter().map(|r| (r.user, r)).collect();
        let mut c = Compared::default();
        for a in after {
            let Some(b) = before.get(&a.user) else {
                continue;
            };
            c.users += 1;
            c.state_changed += u64::from(a.state != b.state);
            c.version_changed += u64::from(a.version != b.version);
            c.last_seen_back += u64::from(a.last_seen_ms < b.last_seen_ms);
            c.last_seen_forward += u64::from(a.last_seen_ms > b.last_seen_ms);
        }
        c
    }
}

/// The restart's part of the summary.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RestartReport {
    /// The command (`None`: a hook given by the caller of the library).
    pub command: Option<String>,
    /// When the restart began, seconds into the run.
    pub at_s: f64,
    /// How long the command took.
    pub command_s: f64,
    /// Until the target answered again (a new control link, or a Redis PING), from the start
    /// of the command.
    pub back_after_s: f64,
    /// Per observer: how long its link (Redis: its pub/sub connection) was down before it
    /// reconnected; empty for an observer that did not reconnect.
    pub reconnects: Vec<Vec<Duration>>,
    /// Observers that did not reconnect.
    pub not_reconnected: u64,
    /// Transitions beyond those the simulation caused (the checks' spurious transitions),
    /// all observers. Redis: the logins republished when the gateways re-created vanished
    /// keys.
    pub false_transitions: u64,
    /// Records that a reconnection (or the end of warming) reported changed, all observers
    /// (presenced only: Redis's observers get no records).
    pub changed_records: u64,
    /// The watched users read before and after the restart (presenced only).
    pub compared: Option<Compared>,
    /// Redis: devices whose key was missing after the restart although their gateway kept
    /// heartbeating (they read offline).
    pub false_offline: Option<u64>,
    /// Redis: live devices whose key was read after the restart.
    pub devices_read: Option<u64>,
}

impl RestartReport {
    /// False transitions and changed records, plus (Redis) false offlines: the restart's
    /// verdict, 0 when nobody's presence moved.
    pub fn false_total(&self) -> u64 {
        self.false_transitions + self.changed_records + self.false_offline.unwrap_or(0)
    }

    /// Violations the restart adds to the run's (beyond the spurious transitions the checks
    /// count already): changed records, false offlines, observers that did not come back.
    pub fn violations(&self) -> u64 {
        self.changed_records + self.false_offline.unwrap_or(0) + self.not_reconnected
    }

    fn downs_ms(&self) -> Vec<Vec<u64>> {
        self.reconnects
            .iter()
            .map(|r| r.iter().map(|d| d.as_millis() as u64).collect())
            .collect()
    }

    /// The restart as JSON.
    pub fn to_json(&self) -> Value {
        json!({
            "command": self.command,
            "at_s": self.at_s,
            "command_s": self.command_s,
            "back_after_s": self.back_after_s,
            "reconnect_down_ms": self.downs_ms(),
            "not_reconnected": self.not_reconnected,
            "false_transitions": self.false_transitions,
            "changed_records": self.changed_records,
            "false_total": self.false_total(),
            "compared": self.compared.map(|c| json!({
                "users": c.users, "state_changed": c.state_changed,
                "version_changed": c.version_changed, "last_seen_back": c.last_seen_back,
                "last_seen_forward": c.last_seen_forward,
            })),
            "false_offline": self.false_offline,
            "devices_read": self.devices_read,
        })
    }

    /// The restart's rows of the table.
    pub fn rows(&self) -> Vec<(&'static str, String)> {
        let mut rows = vec![(
            "restart",
            format!(
                "at {:.1} s by {}: command {}, answering again after {}",
                self.at_s,
                self.command.as_deref().unwrap_or("a hook"),
                ms((self.command_s * 1e6) as u64),
                ms((self.back_after_s * 1e6) as u64)
            ),
        )];
        let downs: Vec<String> = self
            .reconnects
            .iter()
            .map(|r| match r.as_slice() {
                [] => "none".to_string(),
                r => r
                    .iter()
                    .map(|d| ms(d.as_micros() as u64))
                    .collect::<Vec<_>>()
                    .join("+"),
            })
            .collect();
        rows.push((
            "reconnects",
            format!(
                "down {} (per observer); {} did not reconnect",
                downs.join(", "),
                self.not_reconnected
            ),
        ));
        rows.push((
            "false",
            format!(
                "{} transitions, {} changed records",
                grouped(self.false_transitions),
                grouped(self.changed_records)
            ),
        ));
        if let (Some(missing), Some(read)) = (self.false_offline, self.devices_read) {
            rows.push((
                "false offline",
                format!(
                    "{} of {} devices read offline (key missing) after the restart",
                    grouped(missing),
                    grouped(read)
                ),
            ));
        }
        let Some(c) = &self.compared else {
            return rows;
        };
        rows.push((
            "across restart",
            format!(
                "of {} users: state changed {}, version changed {}, last seen went back {} \
                 (forward {})",
                grouped(c.users),
                grouped(c.state_changed),
                grouped(c.version_changed),
                grouped(c.last_seen_back),
                grouped(c.last_seen_forward)
            ),
        ));
        rows
    }
}

/// Restarts presenced mid-run: reads the watched `users` on the control link `old`, closes
/// it, runs `hook`, connects a new control link (returned), waits until each of `observers`
/// has reconnected, and reads the users again. The reconnect times and false transitions are
/// filled in from the observers' findings at the end.
pub(super) fn presenced(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    old: LinkClient,
    hook: RestartHook<'_>,
    users: &[u64],
    shared: &Shared,
    observers: u64,
) -> Result<(RestartReport, LinkClient), RunError> {
    let read = |link: &LinkClient, when: &str| {
        rt.block_on(link.query(users))
            .map_err(|e| RunError::failed(format!("cannot read the users {when} the restart: {e}")))
    };
    let before = read(&old, "before")?;
    rt.block_on(old.close());
    let reconnected = shared.reconnected.load(Ordering::Acquire);
    let started = Instant::now();
    hook().map_err(|e| RunError::failed(format!("the restart failed: {e}")))?;
    let command_s = started.elapsed().as_secs_f64();
    let deadline = started + args.restart_wait;
    let link = loop {
        match rt.block_on(connect(args)) {
            Ok(link) => break link,
            Err(e) if Instant::now() >= deadline => {
                return Err(RunError::failed(format!(
                    "presenced did not come back within --restart-wait {:?}: {}",
                    args.restart_wait, e.message
                )))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    let back_after_s = started.elapsed().as_secs_f64();
    while shared.reconnected.load(Ordering::Acquire) < reconnected + observers
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let after = read(&link, "after")?;
    let report = RestartReport {
        command: args.restart_cmd.clone(),
        command_s,
        back_after_s,
        compared: Some(Compared::of(&before, &after)),
        ..RestartReport::default()
    };
    Ok((report, link))
}

#[cfg(test)]
mod tests {
    use super::*;
    use presenced_wire::link::WireState;

    fn rec(user: u64, state: WireState, version: u64, seen: Option<u64>) -> PresenceRecord {
        PresenceRecord {
            user,
            state,
            last_seen_ms: seen,
            version,
        }
    }

    #[test]
    fn compares_state_version_and_last_seen() {
        let before = [
            rec(1, WireState::Online, 5, Some(10)),
            rec(2, WireState::Online, 5, Some(10)),
            rec(3, WireState::Online, 5, Some(10)),
            rec(5, WireState::Online, 5, Some(10)),
        ];
        let after = [
            rec(1, WireState::Online, 5, Some(10)),
            rec(2, WireState::Offline, 6, Some(10)),
            rec(3, WireState::Online, 5, Some(11)),
            rec(4, WireState::Online, 1, None),
            rec(5, WireState::Online, 5, None),
        ];
        let c = Compared::of(&before, &after);
        assert_eq!(
            c,
            Compared {
                users: 4,
                state_changed: 1,
                version_changed: 1,
                last_seen_back: 1,
                last_seen_forward: 1,
            }
        );
    }

    #[test]
    fn the_command_must_succeed() {
        assert!(run_command("true").is_ok());
        let e = run_command("exit 3").unwrap_err();
        assert!(e.contains("exit"), "{e}");
    }

    #[test]
    fn false_offlines_are_violations() {
        let r = RestartReport {
            false_offline: Some(7),
            devices_read: Some(10),
            ..RestartReport::default()
        };
        assert_eq!((r.false_total(), r.violations()), (7, 7));
        assert!(r
            .rows()
            .iter()
            .any(|(k, v)| *k == "false offline" && v.contains("7 of 10")));
        let r = RestartReport {
            false_transitions: 2,
            changed_records: 3,
            not_reconnected: 1,
            reconnects: vec![vec![Duration::from_millis(1500)], vec![]],
            ..RestartReport::default()
        };
        assert_eq!((r.false_total(), r.violations()), (5, 4));
        assert_eq!(r.to_json()["reconnect_down_ms"], json!([[1500], []]));
    }
}
