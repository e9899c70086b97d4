//! `presencectl`: look at and drive a running presenced. `query` and `watch` presence over the
//! push link (`watch` reconnects when the daemon restarts), read a user's `history`, read the
//! daemon's `stats`, show a cluster's `members`, and `send` heartbeats by hand to try it out.
//! Built on the daemon's client library, like every gateway; with `--cluster`, `query` asks
//! each user's primary as a gateway does (`presenced_client::cluster`). `health`
//! asks the metrics endpoint instead (`health.rs`).

mod format;
mod health;

use clap::Parser;
use presenced_client::cluster::ClusterCore;
use presenced_client::{
    entry, read_key_file, read_token_file, ConnectOptions, HeartbeatClient, LinkClient, Trust,
    WatchConfig, WatchEvent, Watcher,
};
use presenced_tools::presencectl_cli::{Cli, Command, LinkArgs};
use presenced_wire::cluster::MemberMap;
use presenced_wire::link::PresenceRecord;
use std::net::SocketAddr;
use std::process::ExitCode;

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
            let records = match &cli.link.cluster {
                Some(seeds) => cluster_query(&cli.link, seeds, &users).await?,
                None => {
                    let link = connect(&cli.link).await?;
                    let records = link.query(&users).await;
                    link.close().await;
                    records?
                }
            };
            print_records(&records, json, false);
        }
        Command::Members { json } => {
            let seeds = cli
                .link
                .cluster
                .clone()
                .unwrap_or_else(|| vec![cli.link.link]);
            let map = member_map(&cli.link, &seeds).await?.ok_or_else(|| {
                format!(
                    "{}: no cluster member (a single daemon, or one older than push-link \
                     version 4)",
                    addresses(&seeds)
                )
            })?;
            if json {
                println!("{}", serde_json::to_string(&map)?);
            } else {
                print!("{}", format::members_table(&map, format::now_ms()));
            }
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
            let addr = cli.link.address();
            let mut watcher = Watcher::connect(addr, connect_options(&cli.link)?, config)
                .await
                .map_err(|e| format!("push link {addr}: {e}"))?;
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
    connect_to(args, args.address()).await
}

async fn connect_to(
    args: &LinkArgs,
    addr: SocketAddr,
) -> Result<LinkClient, Box<dyn std::error::Error>> {
    LinkClient::connect(addr, connect_options(args)?)
        .await
        .map_err(|e| format!("push link {addr}: {e}").into())
}

fn addresses(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(SocketAddr::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

/// The member map of the first of `seeds` that answers (MAP, then the map it sent), with that
/// link; `Ok(None)` when the first that answers is no cluster member; an error when none
/// answers (naming each failure).
async fn first_member(
    args: &LinkArgs,
    seeds: &[SocketAddr],
) -> Result<(LinkClient, Option<MemberMap>), Box<dyn std::error::Error>> {
    let mut failures = Vec::new();
    for &addr in seeds {
        let link = match connect_to(args, addr).await {
            Ok(link) => link,
            Err(e) => {
                failures.push(e.to_string());
                continue;
            }
        };
        // MAP 0: a member sends its map before the ACK; before version 4 there is none.
        return match link.map(0).await {
            Ok(()) => {
                let map = link.members();
                Ok((link, map))
            }
            Err(presenced_client::ClientError::Unsupported(_)) => Ok((link, None)),
            Err(e) => {
                link.close().await;
                Err(format!("push link {addr}: {e}").into())
            }
        };
    }
    Err(failures.join("; ").into())
}

/// The member map of the first of `seeds` that answers.
async fn member_map(
    args: &LinkArgs,
    seeds: &[SocketAddr],
) -> Result<Option<MemberMap>, Box<dyn std::error::Error>> {
    let (link, map) = first_member(args, seeds).await?;
    link.close().await;
    Ok(map)
}

/// `query` over a cluster: each user at its primary, by the map of the first of `seeds` that
/// answers (a daemon that is no member answers for everyone); the records in `users`' order.
async fn cluster_query(
    args: &LinkArgs,
    seeds: &[SocketAddr],
    users: &[u64],
) -> Result<Vec<PresenceRecord>, Box<dyn std::error::Error>> {
    let (first, map) = first_member(args, seeds).await?;
    let Some(map) = map else {
        let records = first.query(users).await;
        first.close().await;
        return Ok(records?);
    };
    first.close().await;
    let mut core = ClusterCore::new();
    core.handle_map(map);
    let mut found = std::collections::HashMap::new();
    for (member, group) in core.route(users, format::now_ms()) {
        let link_addr = core
            .map()
            .and_then(|m| m.member(&member))
            .map(|m| m.link.clone())
            .unwrap_or_default();
        let addr = tokio::net::lookup_host(&link_addr)
            .await
            .ok()
            .and_then(|mut a| a.next())
            .ok_or_else(|| format!("member {member}: cannot resolve its link {link_addr:?}"))?;
        let link = connect_to(args, addr)
            .await
            .map_err(|e| format!("member {member}: {e}"))?;
        let records = link.query(&group).await;
        link.close().await;
        for r in records.map_err(|e| format!("member {member} ({addr}): {e}"))? {
            found.insert(r.user, r);
        }
    }
    Ok(users.iter().filter_map(|u| found.get(u).copied()).collect())
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
    let (shared, shards) = link.welcome().heartbeat_addrs(args.address().ip());
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
