//! `presence-gateway`'s command line: `serve` runs the gateway, `token` mints a browser token
//! (what the application that logs users in would do), `secret` writes a fresh secret file.

use super::core::Limits;
use super::server;
use super::token::Secret;
use super::Settings;
use clap::{Parser, Subcommand};
use presenced_client::{read_key_file, read_token_file, ConnectOptions, Trust};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A reference WebSocket gateway for presenced: browsers connect with a signed token, the
/// gateway heartbeats their devices and pushes their rosters' presence to them.
#[derive(Parser, Debug)]
#[command(name = "presence-gateway", version)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway.
    Serve(Box<Serve>),
    /// Print a token for a user (and the page's address with it, given --url).
    Token {
        /// The secret file the gateway checks tokens with.
        #[arg(long)]
        secret_file: PathBuf,
        /// The user.
        #[arg(long)]
        user: u64,
        /// How long the token is valid.
        #[arg(long, default_value = "1h", value_parser = crate::parse_duration)]
        ttl: Duration,
        /// The gateway's address, e.g. http://127.0.0.1:8080: prints the page's URL.
        #[arg(long)]
        url: Option<String>,
    },
    /// Write a fresh random secret (32 bytes, hex) to a new file, readable by its owner only.
    Secret {
        /// The file to create (refused if it exists).
        path: PathBuf,
    },
}

/// `presence-gateway serve`'s settings.
#[derive(Parser, Debug)]
pub struct Serve {
    /// Where browsers connect (HTTP and WebSocket).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The daemon's push link; its heartbeat ports come from the link's WELCOME.
    #[arg(long, default_value = "127.0.0.1:7060")]
    pub link: SocketAddr,
    /// The file holding the secret browser tokens are signed with (see `secret`).
    #[arg(long)]
    pub secret_file: PathBuf,
    /// Create --secret-file with a fresh random secret if it does not exist.
    #[arg(long)]
    pub create_secret: bool,
    /// Print a page URL with a one-hour token for each of these users, each watching the
    /// others (to try it).
    #[arg(long, value_delimiter = ',')]
    pub print_urls_for: Vec<u64>,
    /// This gateway's id in heartbeats.
    #[arg(long, default_value_t = 1)]
    pub gateway_id: u32,
    /// The gateway's heartbeat key file (64 hex digits), for a daemon with auth.keys_file.
    #[arg(long)]
    pub key_file: Option<PathBuf>,
    /// The push link's token file, for a daemon whose key file lists [links].
    #[arg(long)]
    pub link_token_file: Option<PathBuf>,
    /// The push link's name (the daemon's logs; its [links] entry when a token is given).
    #[arg(long, default_value = "presence-gateway")]
    pub link_name: String,
    /// Trust the daemon's certificate if issued by this CA (PEM); without it, only a daemon on
    /// loopback with its self-signed certificate is accepted.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// The name the daemon's certificate must carry.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
    /// Browser connections at once.
    #[arg(long, default_value_t = Limits::default().max_connections)]
    pub max_connections: usize,
    /// Users in one browser's roster.
    #[arg(long, default_value_t = Limits::default().max_roster_users)]
    pub max_roster_users: usize,
    /// Bytes in one browser message.
    #[arg(long, default_value_t = Limits::default().max_message_bytes)]
    pub max_message_bytes: usize,
    /// Messages one browser may send per second.
    #[arg(long, default_value_t = Limits::default().max_messages_per_second)]
    pub max_messages_per_second: u32,
    /// A browser silent this long (it is pinged every third of it) is closed and logged out.
    #[arg(long, default_value = "45s", value_parser = parse_timeout)]
    pub browser_silence_timeout: Duration,
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    let timeout = crate::parse_duration(text)?;
    if timeout < Duration::from_millis(30) {
        return Err(format!("`{text}` is too short: at least 30ms"));
    }
    Ok(timeout)
}

/// Runs the command; the exit status.
pub fn main(args: Args) -> u8 {
    let result = match args.command {
        Command::Serve(serve) => run_serve(*serve),
        Command::Token {
            secret_file,
            user,
            ttl,
            url,
        } => Secret::from_file(&secret_file).map(|secret| {
            let token = secret.mint(user, unix_s() + ttl.as_secs());
            match url {
                Some(url) => println!("{}", page_url(&url, &token)),
                None => println!("{token}"),
            }
        }),
        Command::Secret { path } => create_secret(&path),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("presence-gateway: {e}");
            1
        }
    }
}

fn unix_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn page_url(base: &str, token: &str) -> String {
    format!("{}/?token={token}", base.trim_end_matches('/'))
}

fn create_secret(path: &Path) -> Result<(), String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
        .open(path)
        .and_then(|mut f| writeln!(f, "{hex}"))
        .map_err(|e| format!("cannot create {}: {e}", path.display()))
}

fn run_serve(serve: Serve) -> Result<(), String> {
    if serve.create_secret && !serve.secret_file.exists() {
        create_secret(&serve.secret_file)?;
        eprintln!(
            "presence-gateway: wrote a new secret to {}",
            serve.secret_file.display()
        );
    }
    let secret = Secret::from_file(&serve.secret_file)?;
    let key = match &serve.key_file {
        Some(path) => {
            Some(read_key_file(path).map_err(|e| format!("--key-file {}: {e}", path.display()))?)
        }
        None => None,
    };
    let token = match &serve.link_token_file {
        Some(path) => Some(
            read_token_file(path)
                .map_err(|e| format!("--link-token-file {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let settings = Settings {
        listen: serve.listen,
        link: serve.link,
        connect: ConnectOptions {
            client_name: serve.link_name.clone(),
            trust: serve
                .ca_file
                .clone()
                .map_or(Trust::InsecureLocal, Trust::CaFile),
            server_name: serve.server_name.clone(),
            token,
        },
        gateway_id: serve.gateway_id,
        key,
        secret: secret.clone(),
        limits: Limits {
            max_connections: serve.max_connections,
            max_roster_users: serve.max_roster_users,
            max_message_bytes: serve.max_message_bytes,
            max_messages_per_second: serve.max_messages_per_second,
        },
        silence_timeout: serve.browser_silence_timeout,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let running = server::start(settings).await?;
        let base = format!("http://{}", running.addr);
        println!("presence-gateway: listening on {base}/");
        for user in &serve.print_urls_for {
            let token = secret.mint(*user, unix_s() + 3600);
            let others: Vec<String> = serve
                .print_urls_for
                .iter()
                .filter(|u| *u != user)
                .map(u64::to_string)
                .collect();
            let url = page_url(&base, &token);
            println!("user {user}: {url}&watch={}", others.join(","));
        }
        let _ = std::io::stdout().flush();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| format!("cannot wait for SIGTERM: {e}"))?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("presence-gateway: stopping: every browser logs out");
        running.shutdown().await;
        Ok(())
    })
}
