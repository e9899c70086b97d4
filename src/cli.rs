//! The daemon's command line. It lives in the library, not in `main.rs`, so that
//! `cargo run -p xtask -- dist` renders the man page (presenced(8)) and the shell completions
//! from the very definition the daemon parses.

use crate::settings::{keys_help, Settings};
use clap::{CommandFactory, Parser};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Command line; every setting can also come from the TOML file or `--set`.
#[derive(Parser, Debug)]
#[command(
    name = "presenced",
    version,
    about = "Presence daemon: UDP heartbeats in, presence transitions out over QUIC.",
    after_long_help = keys_help()
)]
pub struct Cli {
    /// TOML settings file (`[section] key = value`; see the keys below).
    #[arg(long, short, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Checks the settings instead of running: reads FILE as --config does, then the options
    /// and each --set, checks every key and the key file, prints a summary and exits (0: the
    /// daemon would start with them; 2: the error, naming the key).
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    pub check_config: Option<PathBuf>,
    /// Sets any key, overriding the file: `--set presence.grace=12s` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Shortcut for `--set ingest.listen=ADDR`.
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Shortcut for `--set link.listen=ADDR`.
    #[arg(long, value_name = "ADDR")]
    pub link_listen: Option<String>,
    /// Shortcut for `--set shards.count=N`.
    #[arg(long, value_name = "N")]
    pub shards: Option<String>,
}

impl Cli {
    /// The settings file: `--config`'s, or `--check-config`'s.
    pub fn config_file(&self) -> Option<&Path> {
        self.config.as_deref().or(self.check_config.as_deref())
    }
}

/// The command line as a clap `Command`, for the man page and the completions.
pub fn command() -> clap::Command {
    Cli::command()
}

/// `--check-config FILE`, once the settings were built (an error building them has already
/// exited 2, naming the key): checks what the settings alone cannot (the key file parses and
/// is private), then prints a summary and returns 0, or the error naming the key and 2.
pub fn check_config(settings: &Settings, file: &Path) -> ExitCode {
    match check(settings) {
        Ok(gateways) => {
            println!("{}", summary(settings, file, gateways));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("presenced: {e}");
            ExitCode::from(2)
        }
    }
}

/// The key file's gateways, if one is set; the error names the key.
fn check(settings: &Settings) -> Result<Option<usize>, String> {
    let Some(path) = &settings.auth.keys_file else {
        return Ok(None);
    };
    let keys = crate::keyfile::load(
        path,
        settings.auth.replay_window,
        settings.auth.max_gateways,
        None,
    )
    .map_err(|e| format!("setting `auth.keys_file`: {e}"))?;
    Ok(Some(keys.len()))
}

/// What the daemon would do with these settings, in a few lines.
pub fn summary(settings: &Settings, file: &Path, gateways: Option<usize>) -> String {
    let ingest = &settings.ingest;
    let shards = settings.shards.count;
    let mut heartbeats = format!("udp {}", ingest.listen);
    if let Some(v6) = ingest.listen_v6 {
        heartbeats.push_str(&format!(" and {v6}"));
    }
    if ingest.shard_ports {
        let first = u32::from(ingest.listen.port()) + 1;
        let last = first + u32::try_from(shards).unwrap_or(u32::MAX) - 1;
        heartbeats.push_str(&format!(", shard ports {first}-{last}"));
    }
    let cert = match &settings.link.cert {
        Some(cert) => format!("certificate {}", cert.display()),
        None => "a self-signed certificate for localhost".to_string(),
    };
    let auth = match (&settings.auth.keys_file, gateways) {
        (Some(path), Some(n)) => format!("signed datagrams, {n} gateway(s) in {}", path.display()),
        _ => "unsigned datagrams (no auth.keys_file)".to_string(),
    };
    let state = if settings.state.enabled {
        format!("{}", settings.state.dir.display())
    } else {
        "in memory only (state.enabled = false)".to_string()
    };
    let pinned = match (settings.shards.pin, settings.shards.service_cores) {
        (false, _) => String::new(),
        (true, 0) => ", pinned".to_string(),
        (true, n) => format!(", pinned, {n} core(s) kept for the service threads"),
    };
    format!(
        "presenced: {}: settings valid\n  \
         heartbeats  {heartbeats}\n  \
         push link   quic {}, {cert}\n  \
         shards      {shards}{pinned}\n  \
         auth        {auth}\n  \
         state       {state}",
        file.display(),
        settings.link.listen,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::Sources;

    #[test]
    fn the_command_line_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn check_config_reads_its_file_and_excludes_config() {
        let cli = Cli::try_parse_from(["presenced", "--check-config", "a.toml"]).unwrap();
        assert_eq!(cli.config_file(), Some(Path::new("a.toml")));
        let cli = Cli::try_parse_from(["presenced", "-c", "b.toml"]).unwrap();
        assert_eq!(cli.config_file(), Some(Path::new("b.toml")));
        assert!(Cli::try_parse_from(["presenced", "-c", "a", "--check-config", "b"]).is_err());
    }

    #[test]
    fn the_summary_of_the_example_file_names_what_the_daemon_binds() {
        let mut sources = Sources::default();
        sources
            .merge_toml(
                include_str!("../systemd/presenced.toml"),
                "systemd/presenced.toml",
            )
            .unwrap();
        let settings = sources.build(4).unwrap();
        assert_eq!(check(&settings), Ok(None));
        let text = summary(&settings, Path::new("presenced.toml"), None);
        assert!(text.starts_with("presenced: presenced.toml: settings valid\n"));
        assert!(
            text.contains("udp 127.0.0.1:7070, shard ports 7071-7073"),
            "{text}"
        );
        assert!(text.contains("quic 127.0.0.1:7060"), "{text}");
        assert!(
            text.contains("shards      3, pinned, 1 core(s) kept for the service threads"),
            "{text}"
        );
        assert!(text.contains("/var/lib/presenced"), "{text}");
    }

    #[test]
    fn a_missing_key_file_is_an_error_naming_the_key() {
        let mut sources = Sources::default();
        sources
            .set("auth.keys_file", "/nonexistent/presenced-keys.toml")
            .unwrap();
        let settings = sources.build(1).unwrap();
        let err = check(&settings).unwrap_err();
        assert!(err.starts_with("setting `auth.keys_file`: "), "{err}");
    }
}
