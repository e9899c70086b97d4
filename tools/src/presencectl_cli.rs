//! presencectl's command line, kept in the library rather than in the binary so that the
//! xtask renders presencectl's man page and shell completions from the same clap definition
//! the binary parses with (`cargo run -p xtask -- dist`), as it does presenced's.

use clap::{Args, Parser, Subcommand, ValueEnum};
use presenced_wire::State;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// presencectl's clap definition, for the xtask's renderings.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

/// Look at and drive a running presenced.
#[derive(Parser, Debug)]
#[command(name = "presencectl", version)]
pub struct Cli {
    #[allow(missing_docs)] // a doc comment here would be taken as help text
    #[command(flatten)]
    pub link: LinkArgs,
    #[allow(missing_docs)]
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach the daemon's push link.
#[derive(Args, Debug)]
pub struct LinkArgs {
    /// The daemon's push-link (QUIC) address.
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:7060",
        value_name = "ADDR"
    )]
    pub link: SocketAddr,
    /// A presenced cluster: push-link addresses of one or more of its members, comma-separated
    /// (used instead of --link). `members` asks the first that answers; `query` asks each
    /// user's primary.
    #[arg(
        long,
        global = true,
        value_name = "ADDR[,ADDR...]",
        value_delimiter = ',',
        conflicts_with = "link"
    )]
    pub cluster: Option<Vec<SocketAddr>>,
    /// PEM file of the CA that issued the daemon's certificate. Without it, any certificate is
    /// accepted, which is allowed only for a loopback address (the daemon's self-signed one).
    /// For a cluster whose members have self-signed certificates of their own, a file holding
    /// all of them: each is trusted.
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// The name the daemon's certificate must carry.
    #[arg(long, global = true, default_value = "localhost", value_name = "NAME")]
    pub server_name: String,
    /// This link's name in the daemon's logs, and in `[links]` of its key file.
    #[arg(
        long,
        global = true,
        default_value = "presencectl",
        value_name = "NAME"
    )]
    pub name: String,
    /// File holding this link's token as text (whitespace around it ignored), for a daemon
    /// whose key file lists `[links]`.
    #[arg(long, global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

impl LinkArgs {
    /// The one daemon a command without cluster support talks to: the first --cluster
    /// address, else --link.
    pub fn address(&self) -> SocketAddr {
        self.cluster
            .as_ref()
            .and_then(|c| c.first().copied())
            .unwrap_or(self.link)
    }
}

/// What presencectl does.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Current presence of users: state, last seen, version.
    Query {
        /// User ids (nonzero).
        #[arg(required = true, value_parser = user_id)]
        users: Vec<u64>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Prints transitions as they arrive: of the given users (after their current presence),
    /// or of everyone with --all; carries on across restarts of the daemon.
    ///
    /// When the link goes away (the daemon restarts, say) it says so on stderr and reconnects
    /// (after the daemon's GOAWAY delay plus up to 1 s of jitter, then backing off from 1 s to
    /// 30 s), subscribes again, prints the users whose presence changed meanwhile and says how
    /// many did ("reconnected after 180 ms; 0 changes"). While a daemon that lost its state is
    /// warming, an offline it shows for a user known online is held back until it is sure.
    Watch {
        /// User ids to watch (nonzero).
        #[arg(value_parser = user_id, required_unless_present = "all")]
        users: Vec<u64>,
        /// Every transition of every user (the firehose).
        #[arg(long)]
        all: bool,
        /// Exit after this many transitions.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
        /// Exit after this long, e.g. 30s (default: run until interrupted).
        #[arg(long, value_name = "DURATION", value_parser = crate::parse_duration)]
        timeout: Option<Duration>,
        /// Give up (exit status 1) once the link has been down this long, e.g. 5m (default:
        /// keep trying to reconnect).
        #[arg(long, value_name = "DURATION", value_parser = crate::parse_duration)]
        give_up_after: Option<Duration>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// A cluster's member map, from the first member given that answers (--cluster, or
    /// --link): its revision, replicas per user, whether that member reaches etcd, and per
    /// member its id, push link, heartbeat address and whether it is warm (or warming, and
    /// for how long still).
    Members {
        /// The map as JSON (the MEMBERS frame's schema, one line).
        #[arg(long)]
        json: bool,
    },
    /// The daemon's counters: per shard (datagrams, heartbeats, drops by reason, users,
    /// devices, transitions, routing, shedding, refusals, timers), per authenticated gateway
    /// (accepted, refused by reason) and the push link's (links, subscriptions, events, lag,
    /// latency).
    Stats {
        /// The counters as JSON (the daemon's stats schema, one line).
        #[arg(long)]
        json: bool,
    },
    /// A user's presence history: each span from one transition to the next (start, end or
    /// "now", state, the cause of the transition that began it, live devices), oldest first,
    /// and the user's last seen. Needs a daemon that speaks push-link protocol version 2 and
    /// keeps its state.
    History {
        /// The user id (nonzero).
        #[arg(value_parser = user_id)]
        user: u64,
        /// Only spans that end at or after this: a time ago (e.g. 90m, 2d) or a Unix time in
        /// milliseconds (default: everything the daemon keeps).
        #[arg(long, value_name = "DURATION|MS", value_parser = parse_since)]
        since: Option<Since>,
        /// At most this many spans, the oldest first.
        #[arg(
            long,
            value_name = "N",
            default_value_t = 1000,
            value_parser = clap::value_parser!(u64).range(1..)
        )]
        max: u64,
        /// One JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The daemon's health from its metrics endpoint (GET /healthz, 1 s at most): exit status
    /// 0 ok, 1 degraded (the reasons are printed), 2 down (no answer).
    Health(HealthArgs),
    /// Sends heartbeats by hand: each user's device reports a state.
    Send {
        /// User ids (nonzero).
        #[arg(required = true, value_parser = user_id)]
        users: Vec<u64>,
        /// The device id.
        #[arg(long, default_value_t = 1)]
        device: u32,
        /// What the device reports; `offline` is a logout.
        #[arg(long, value_enum, default_value_t = Report::Online)]
        state: Report,
        /// Leave the ACTIVITY flag off (the user did nothing since the last heartbeat).
        #[arg(long)]
        inactive: bool,
        /// The gateway id to send as.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        gateway: u32,
        /// Send to this UDP address instead of asking the push link for the daemon's ports.
        #[arg(long, value_name = "ADDR")]
        heartbeat: Option<SocketAddr>,
        /// Sign the datagrams with the gateway's key, read from this file (64 hex digits), for
        /// a daemon with `auth.keys_file`.
        #[arg(long, value_name = "FILE")]
        key_file: Option<PathBuf>,
        /// Keep sending at this interval (e.g. 20s) until interrupted or --count is reached.
        #[arg(long, value_name = "DURATION", value_parser = crate::parse_duration)]
        every: Option<Duration>,
        /// With --every: stop after this many rounds.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
}

/// A device's report, as `send` takes it.
#[allow(missing_docs)] // a variant's doc comment would become its help in `send --help`
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Report {
    Online,
    Idle,
    Offline,
    Invisible,
}

impl From<Report> for State {
    fn from(r: Report) -> State {
        match r {
            Report::Online => State::Online,
            Report::Idle => State::Idle,
            Report::Offline => State::Offline,
            Report::Invisible => State::Invisible,
        }
    }
}

/// A user id for the command line: nonzero.
fn user_id(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(0) => Err("user id 0 is reserved; give an id from 1 to 18446744073709551615".into()),
        Ok(u) => Ok(u),
        Err(_) => Err(format!(
            "`{text}` is not a user id (a whole number, 1 or more)"
        )),
    }
}

/// `presencectl health`'s options.
#[derive(Args, Debug)]
pub struct HealthArgs {
    /// The daemon's metrics endpoint (its `metrics.listen`).
    #[arg(long, default_value = "127.0.0.1:9464", value_name = "ADDR")]
    pub metrics: SocketAddr,
}

/// `history --since`: a time ago, or a Unix time in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    /// This long before now.
    Ago(Duration),
    /// This Unix millisecond.
    At(u64),
}

impl Since {
    /// The Unix millisecond meant, `now_ms` being now.
    pub fn unix_ms(self, now_ms: u64) -> u64 {
        match self {
            Since::Ago(d) => {
                now_ms.saturating_sub(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            }
            Since::At(ms) => ms,
        }
    }
}

/// Parses `--since`: digits only are a Unix time in milliseconds, anything else a duration
/// ago (`90m`, `2d`, `1h 30m`).
pub fn parse_since(text: &str) -> Result<Since, String> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t
            .parse()
            .map(Since::At)
            .map_err(|_| format!("`{text}` is too large for a Unix time in milliseconds"));
    }
    crate::parse_duration(t)
        .map(Since::Ago)
        .map_err(|e| format!("{e}; or give a Unix time in milliseconds"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("presencectl").chain(args.iter().copied()))
    }

    #[test]
    fn watch_arguments() {
        let Command::Watch {
            users,
            all,
            give_up_after,
            ..
        } = parse(&["watch", "5", "6"]).unwrap().command
        else {
            panic!("not watch")
        };
        assert_eq!((users, all, give_up_after), (vec![5, 6], false, None));
        let Command::Watch {
            users,
            all,
            give_up_after,
            ..
        } = parse(&["watch", "--all", "--give-up-after", "2m"])
            .unwrap()
            .command
        else {
            panic!("not watch")
        };
        assert!(users.is_empty() && all);
        assert_eq!(give_up_after, Some(Duration::from_secs(120)));
        for bad in [
            &["watch"][..],
            &["watch", "0"],
            &["watch", "1", "--give-up-after", "soon"],
        ] {
            let e = parse(bad).expect_err(&format!("{bad:?}"));
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
        }
    }

    #[test]
    fn history_arguments() {
        let Command::History {
            user,
            since,
            max,
            json,
        } = parse(&["history", "42"]).unwrap().command
        else {
            panic!("not history")
        };
        assert_eq!((user, since, max, json), (42, None, 1000, false));
        let Command::History {
            user,
            since,
            max,
            json,
        } = parse(&["history", "7", "--since", "90m", "--max", "5", "--json"])
            .unwrap()
            .command
        else {
            panic!("not history")
        };
        assert_eq!(user, 7);
        assert_eq!(since, Some(Since::Ago(Duration::from_secs(5400))));
        assert_eq!((max, json), (5, true));
        let Command::History { since, .. } = parse(&["history", "7", "--since", "1700000000000"])
            .unwrap()
            .command
        else {
            panic!("not history")
        };
        assert_eq!(since, Some(Since::At(1_700_000_000_000)));
        // Refused before anything is sent.
        for bad in [
            &["history"][..],
            &["history", "0"],
            &["history", "x"],
            &["history", "1", "2"],
            &["history", "1", "--max", "0"],
            &["history", "1", "--since", "5x"],
        ] {
            let e = parse(bad).expect_err(&format!("{bad:?}"));
            assert_eq!(e.exit_code(), 2, "{bad:?}: {e}");
        }
    }

    #[test]
    fn since_is_a_time_ago_or_a_unix_millisecond() {
        assert_eq!(parse_since("0"), Ok(Since::At(0)));
        assert_eq!(
            parse_since("1700000000000"),
            Ok(Since::At(1_700_000_000_000))
        );
        assert_eq!(
            parse_since("90m"),
            Ok(Since::Ago(Duration::from_secs(5400)))
        );
        assert_eq!(
            parse_since(" 1h 30m "),
            Ok(Since::Ago(Duration::from_secs(5400)))
        );
        assert!(parse_since("5x").unwrap_err().contains("not a duration"));
        assert!(parse_since("").is_err());
        assert!(parse_since("99999999999999999999").is_err());
        assert_eq!(Since::Ago(Duration::from_secs(2)).unix_ms(10_000), 8_000);
        assert_eq!(Since::Ago(Duration::from_secs(20)).unix_ms(10_000), 0);
        assert_eq!(Since::At(5).unix_ms(10_000), 5);
    }
}
