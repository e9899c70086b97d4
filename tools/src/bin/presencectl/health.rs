//! `presencectl health`: asks the daemon's metrics endpoint (`metrics.listen`) for `GET
//! /healthz` and says what it answered, for people and for scripts (load balancer checks,
//! deploys waiting for a restarted daemon): exit status 0 `ok`, 1 `degraded` (the reasons
//! follow), 2 `down` (no answer within [`TIMEOUT`], or an answer that is not the daemon's).
//! The body is read into the daemon's own typed schema (`presenced_wire::health`), never by
//! hand. HTTP is hyper's client, the implementation the daemon's endpoint serves with.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use presenced_tools::presencectl_cli::HealthArgs;
use presenced_wire::health::{Health, Status};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

/// How long the whole exchange may take: connect, ask, read the answer.
pub const TIMEOUT: Duration = Duration::from_secs(1);

/// Asks, prints the answer, and gives the exit status: 0 ok, 1 degraded, 2 down.
pub fn run(args: &HealthArgs) -> ExitCode {
    let answer = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(async {
            tokio::time::timeout(TIMEOUT, ask(args.metrics))
                .await
                .unwrap_or_else(|_| {
                    Err(format!(
                        "no answer from {} within {} s",
                        args.metrics,
                        TIMEOUT.as_secs()
                    ))
                })
        }),
        Err(e) => Err(e.to_string()),
    };
    match answer {
        Ok(health) => {
            let Health {
                status,
                reasons,
                uptime_s,
            } = health;
            match status {
                Status::Ok => {
                    println!("ok (up {uptime_s} s)");
                    ExitCode::SUCCESS
                }
                Status::Degraded => {
                    println!("degraded (up {uptime_s} s)");
                    for reason in reasons {
                        println!("  {reason}");
                    }
                    ExitCode::from(1)
                }
            }
        }
        Err(why) => {
            println!("down: {why}");
            ExitCode::from(2)
        }
    }
}

/// One `GET /healthz`; an error says why there is no health answer.
async fn ask(addr: SocketAddr) -> Result<Health, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    tokio::spawn(connection);
    let request = Request::get("/healthz")
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{addr}: {e}"))?
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    match (status, Health::from_json(&text)) {
        (StatusCode::OK | StatusCode::SERVICE_UNAVAILABLE, Ok(health)) => Ok(health),
        (status, _) => Err(format!(
            "{addr} answered HTTP {status}, not a presenced health answer (is it the metrics \
             endpoint, metrics.listen?)"
        )),
    }
}
