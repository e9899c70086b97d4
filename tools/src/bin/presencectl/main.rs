//! `presencectl`: look at and drive a running presenced. `query` and `watch` presence over the
//! push link (`watch` reconnects when the daemon restarts), read a user's `history`, read the
//! daemon's `stats`, and `send` heartbeats by hand to try it out. Built on the daemon's client
//! library, like every gateway. `health`
//! asks the metrics endpoint instead (`health.rs`).

mod format;
mod health;

use clap::Parser;
use presenced_client::{
    entry, read_key_file, read_token_file, ConnectOptions, HeartbeatClient, LinkClient, Trust,
    WatchConfig, WatchEvent, Watcher,
};
use presenced_tools::presencectl_cli::{Cli, Command, LinkArgs};
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
