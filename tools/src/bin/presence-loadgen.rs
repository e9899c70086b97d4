//! `presence-loadgen`: sizes a presenced daemon. Simulated gateways send heartbeats of
//! simulated users' devices; push-link observers check every transition and measure its
//! latency. See `presence-loadgen --help`, and `presenced_tools::loadgen` for how it works.

use clap::Parser;
use presenced_tools::loadgen::{self, cli::Args};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = Args::parse();
    ExitCode::from(loadgen::main(&args))
}
