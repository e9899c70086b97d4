//! `presence-gateway`: the reference WebSocket gateway (browsers in, heartbeats and the push
//! link to presenced out). The logic lives in `presenced_tools::gateway`; see
//! `presence-gateway --help`.

use clap::Parser;
use presenced_tools::gateway::{self, cli::Args};
use std::process::ExitCode;

fn main() -> ExitCode {
    ExitCode::from(gateway::cli::main(Args::parse()))
}
