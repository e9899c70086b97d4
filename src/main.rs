//! `presenced`: the presence daemon. Heartbeats in over UDP, presence out over QUIC.

use clap::Parser;
use presenced::daemon;
use presenced::settings::{keys_help, Settings, SettingsError, Sources};
use std::path::PathBuf;
use std::process::ExitCode;

/// Command line; every setting can also come from the TOML file or `--set`.
#[derive(Parser, Debug)]
#[command(
    name = "presenced",
    version,
    about = "Presence daemon: UDP heartbeats in, presence transitions out over QUIC.",
    after_long_help = keys_help()
)]
struct Cli {
    /// TOML settings file (`[section] key = value`; see the keys below).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Sets any key, overriding the file: `--set presence.grace=12s` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Shortcut for `--set ingest.listen=ADDR`.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Shortcut for `--set link.listen=ADDR`.
    #[arg(long, value_name = "ADDR")]
    link_listen: Option<String>,
    /// Shortcut for `--set shards.count=N`.
    #[arg(long, value_name = "N")]
    shards: Option<String>,
}

/// The settings: defaults, then the file, then the shortcuts, then each `--set` in order.
fn settings(cli: &Cli) -> Result<Settings, SettingsError> {
    let mut sources = Sources::default();
    if let Some(path) = &cli.config {
        sources.merge_file(path)?;
    }
    for (key, value) in [
        ("ingest.listen", &cli.listen),
        ("link.listen", &cli.link_listen),
        ("shards.count", &cli.shards),
    ] {
        if let Some(value) = value {
            sources.set(key, value)?;
        }
    }
    for pair in &cli.set {
        sources.set_pair(pair)?;
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    sources.build(cores)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match settings(&cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("presenced: {e}");
            return ExitCode::from(2);
        }
    };
    let signals = match signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ]) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("presenced: cannot install signal handlers: {e}");
            return ExitCode::from(1);
        }
    };
    let running = match daemon::start(settings) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("presenced: {e}");
            return ExitCode::from(1);
        }
    };
    if let Some(warning) = running.recv_buffer_warning() {
        eprintln!("{warning}");
    }
    println!("{}", running.ready_line());
    daemon::notify_ready();
    let mut signals = signals;
    'run: loop {
        for signal in signals.pending() {
            if signal != signal_hook::consts::SIGHUP {
                break 'run;
            }
            // SIGHUP: reload the gateway keys; on error the old ones stay in force.
            match running.reload_keys() {
                Ok(n) => eprintln!("presenced: reloaded auth.keys_file: {n} gateway(s)"),
                Err(e) => eprintln!("presenced: keys not reloaded, the old ones stay: {e}"),
            }
        }
        if running.any_stopped() {
            eprintln!("presenced: a thread stopped; shutting down");
            break 'run;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    match running.shutdown() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("presenced: {e}");
            ExitCode::from(1)
        }
    }
}
