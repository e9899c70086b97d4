//! `presencectl`: look at and drive a running presenced. `query` and `watch` presence over the
//! push link (`watch` reconnects when the daemon restarts), read a user's `history`, read the
//! daemon's `stats`, and `send` heartbeats by hand to try it out. Built on the daemon's client
//! library, like every gateway. `health`
//! asks the metrics endpoint instead (`health.rs`).

mod format;
mod health;

use clap::{Args, Parser, Subcommand, ValueEnum};
use presenced_client::{
    entry, read_key_file, read_token_file, ConnectOptions, HeartbeatClient, LinkClient, Trust,
    WatchConfig, WatchEvent, Watcher,
};
use presenced_wire::link::PresenceRecord;
use presenced_wire::State;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Look at and drive a running presenced.
#[derive(Parser, Debug)]
#[command(name = "presencectl", version)]
struct Cli {
    #[command(flatten)]
    link: LinkArgs,
    #[command(subcommand)]
    command: Command,
}

/// How to reach the daemon's push link.
#[derive(Args, Debug)]
struct LinkArgs {
    /// The daemon's push-link (QUIC) address.
    #[arg(
        long,
        global = true,
        default_value = "127.0.0.1:7060",
        value_name = "ADDR"
    )]
    link: SocketAddr,
    /// PEM file of the CA that issued the daemon's certificate. Without it, any certificate is
    /// accepted, which is allowed only for a loopback address (the daemon's self-signed one).
    #[arg(long, global = true, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// The name the daemon's certificate must carry.
    #[arg(long, global = true, default_value = "localhost", value_name = "NAME")]
    server_name: String,
    /// This link's name in the daemon's logs, and in `[links]` of its key file.
    #[arg(
        long,
        global = true,
        default_value = "presencectl",
        value_name = "NAME"
    )]
    name: String,
    /// File holding this link's token, for a daemon whose key file lists `[links]`.
    #[arg(long, global = true, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
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
        #[arg(long, value_name = "DURATION", value_parser = presenced_tools::parse_duration)]
        timeout: Option<Duration>,
        /// Give up (exit status 1) once the link has been down this long, e.g. 5m (default:
        /// keep trying to reconnect).
        #[arg(long, value_name = "DURATION", value_parser = presenced_tools::parse_duration)]
        give_up_after: Option<Duration>,
        /// One JSON object per line.
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
        #[arg(long, value_name = "DURATION|MS", value_parser = format::parse_since)]
        since: Option<format::Since>,
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
    Health(health::HealthArgs),
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
        #[arg(long, value_name = "DURATION", value_parser = presenced_tools::parse_duration)]
        every: Option<Duration>,
        /// With --every: stop after this many rounds.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
}

/// A device's report, as `send` takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Report {
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

fn user_id(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(0) => Err("user id 0 is reserved; give an id from 1 to 18446744073709551615".into()),
        Ok(u) => Ok(u),
        Err(_) => Err(format!(
            "`{text}` is not a user id (a whole number, 1 or more)"
        )),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Health(args) = &cli.command {
        return health::run(args);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("presencectl: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("presencectl: {e}");
            ExitCode::FAILURE
        }
    }
}

type Fallible = Result<(), Box<dyn std::error::Error>>;

async fn run(cli: Cli) -> Fallible {
    match cli.command {
        Command::Query { users, json } => {
            let link = connect(&cli.link).await?;
            let records = link.query(&users).await?;
            print_records(&records, json, false);
            link.close().await;
        }
        Command::Watch {
            users,
            all,
            count,
            timeout,
            give_up_after,
            json,
        } => {
            let config = WatchConfig {
                firehose: all,
                give_up_after,
                ..WatchConfig::users(users)
            };
            let mut watcher = Watcher::connect(cli.link.link, connect_options(&cli.link)?, config)
                .await
                .map_err(|e| format!("push link {}: {e}", cli.link.link))?;
            let watch = watch(&mut watcher, count, json);
            let result = match timeout {
                Some(t) => tokio::time::timeout(t, watch).await.unwrap_or(Ok(())),
                None => tokio::select! {
                    result = watch => result,
                    _ = tokio::signal::ctrl_c() => Ok(()),
                },
            };
            watcher.close().await;
            result?;
        }
        Command::History {
            user,
            since,
            max,
            json,
        } => {
            let since_ms = since.map_or(0, |s| s.unix_ms(format::now_ms()));
            let link = connect(&cli.link).await?;
            let max = usize::try_from(max).unwrap_or(usize::MAX);
            let history = link.history_all(user, since_ms, max).await;
            link.close().await;
            let history = history.map_err(|e| format::history_error(user, &e))?;
            if json {
                println!("{}", format::history_json(user, &history));
            } else {
                print!("{}", format::history_table(user, &history));
            }
            if history.more {
                eprintln!("more spans follow: raise --max (now {max}) or give a later --since");
            }
        }
        Command::Stats { json } => {
            let link = connect(&cli.link).await?;
            let stats = link.stats().await?;
            link.close().await;
            if json {
                println!("{}", stats.to_json()?);
            } else {
                print!("{}", format::stats_table(&stats));
            }
        }
        Command::Send {
            users,
            device,
            state,
            inactive,
            gateway,
            heartbeat,
            key_file,
            every,
            count,
        } => {
            let mut sender = heartbeat_client(&cli.link, gateway, heartbeat).await?;
            if let Some(path) = key_file {
                let key = read_key_file(&path)
                    .map_err(|e| format!("--key-file {}: {e}", path.display()))?;
                sender = sender.with_key(key);
            }
            let send = async {
                let mut rounds = 0u64;
                loop {
                    for &user in &users {
                        sender.push(entry(user, device, state.into(), !inactive))?;
                    }
                    sender.flush()?;
                    rounds += 1;
                    eprintln!(
                        "sent {} heartbeat(s): device {device} {} ({} so far)",
                        users.len(),
                        format::report_name(state.into()),
                        sender.entries_sent()
                    );
                    let Some(every) = every else { return Ok(()) };
                    if count.is_some_and(|c| rounds >= c) {
                        return Ok(());
                    }
                    tokio::time::sleep(every).await;
                }
            };
            tokio::select! {
                result = send => return result,
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        // `main` answers it: its exit status says ok, degraded or down.
        Command::Health(_) => {}
    }
    Ok(())
}

/// How to connect, from the command line.
fn connect_options(args: &LinkArgs) -> Result<ConnectOptions, Box<dyn std::error::Error>> {
    let token = match &args.token_file {
        Some(path) => Some(
            read_token_file(path).map_err(|e| format!("--token-file {}: {e}", path.display()))?,
        ),
        None => None,
    };
    Ok(ConnectOptions {
        client_name: args.name.clone(),
        token,
        trust: match &args.ca {
            Some(path) => Trust::CaFile(path.clone()),
            None => Trust::InsecureLocal,
        },
        server_name: args.server_name.clone(),
    })
}

async fn connect(args: &LinkArgs) -> Result<LinkClient, Box<dyn std::error::Error>> {
    LinkClient::connect(args.link, connect_options(args)?)
        .await
        .map_err(|e| format!("push link {}: {e}", args.link).into())
}

/// A heartbeat sender: to `explicit`, or to the ports the daemon announces on its push link
/// (each entry to its shard's own port).
async fn heartbeat_client(
    args: &LinkArgs,
    gateway: u32,
    explicit: Option<SocketAddr>,
) -> Result<HeartbeatClient, Box<dyn std::error::Error>> {
    let (epoch, first) = format::epoch_and_sequence();
    if let Some(addr) = explicit {
        return Ok(HeartbeatClient::new(gateway, epoch, addr)?.with_first_sequence(first));
    }
    let link = connect(args).await?;
    let (shared, shards) = link.welcome().heartbeat_addrs(args.link.ip());
    link.close().await;
    Ok(HeartbeatClient::new(gateway, epoch, shared)?
        .with_shard_ports(shards)
        .with_first_sequence(first))
}

/// Prints what the watcher reports: presence and transitions on stdout, the link's comings
/// and goings on stderr; returns after `count` transitions, or with the error that stopped it.
async fn watch(watcher: &mut Watcher, count: Option<u64>, json: bool) -> Fallible {
    let mut seen = 0u64;
    while count.map_or(true, |c| seen < c) {
        let Some(event) = watcher.next().await else {
            return Err("the watcher stopped".into());
        };
        match event {
            WatchEvent::Record { record, .. } => print_records(&[record], json, true),
            WatchEvent::Transition(e) => {
                println!("{}", format::event_line(&e, json));
                seen += 1;
            }
            WatchEvent::Watching {
                users,
                firehose,
                unsure,
            } => {
                eprintln!(
                    "watching {}; interrupt to stop",
                    if firehose {
                        "every user".to_string()
                    } else {
                        format!("{users} user(s)")
                    }
                );
                warming_note(unsure);
            }
            WatchEvent::Lagged { users: Some(n) } => {
                eprintln!("lagged: transitions of {n} user(s) were dropped; querying them");
            }
            WatchEvent::Lagged { users: None } => {
                eprintln!("lagged: transitions were dropped; querying the watched users");
            }
            WatchEvent::Disconnected {
                reason,
                go_away,
                retry_in,
            } => eprintln!("{}", format::link_lost(&reason, go_away.as_ref(), retry_in)),
            WatchEvent::ConnectFailed {
                attempt,
                error,
                retry_in,
            } => eprintln!(
                "reconnection attempt {attempt} failed: {error}; next in {} ms",
                retry_in.as_millis()
            ),
            WatchEvent::Reconnected {
                down,
                changes,
                unsure,
            } => {
                eprintln!("{}", format::reconnected(down, changes));
                warming_note(unsure);
            }
            WatchEvent::GaveUp { down, error } => {
                return Err(format!(
                    "gave up: no link for {} ms; last error: {error}",
                    down.as_millis()
                )
                .into())
            }
            WatchEvent::Failed { error } => return Err(error.into()),
        }
    }
    Ok(())
}

/// Says that some watched users shown offline may be online.
fn warming_note(unsure: usize) {
    if unsure > 0 {
        eprintln!(
            "the daemon is warming (it started without its saved state): {unsure} user(s) it \
             shows offline may be online; asking again when it is sure"
        );
    }
}

fn print_records(records: &[PresenceRecord], json: bool, as_state: bool) {
    if json {
        for r in records {
            println!("{}", format::record_json(r));
        }
    } else if as_state {
        for r in records {
            println!("{}", format::record_line(r));
        }
    } else {
        print!("{}", format::records_table(records));
    }
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
        assert_eq!(since, Some(format::Since::Ago(Duration::from_secs(5400))));
        assert_eq!((max, json), (5, true));
        let Command::History { since, .. } = parse(&["history", "7", "--since", "1700000000000"])
            .unwrap()
            .command
        else {
            panic!("not history")
        };
        assert_eq!(since, Some(format::Since::At(1_700_000_000_000)));
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
}
