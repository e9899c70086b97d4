//! `presenced`: the daemon binary.
//!
//! The presence core (`presenced::shard`) is complete; the daemon around it (UDP ingest on
//! pinned shard threads, the QUIC push link) is the next piece of work. Until it lands, this
//! binary says so and exits with status 2 rather than pretending to serve.

fn main() {
    eprintln!(
        "presenced {}: not yet — the daemon (UDP ingest, QUIC push link) is not built yet.\n\
         The presence core is complete: run the tests with `bash .ci/run`.",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
