//! One simulated gateway against Redis: its own connection and the pipeline it fills. When a
//! pipeline leaves, the stamps of the transitions it causes are written (so latency counts
//! from its send); when its replies are back, every login (`SET … GET` answered nil: the key
//! was absent) and every logout that found its key (`GETDEL` answered a value) is published on
//! the user's channel in a second pipeline, sent at once.
//!
//! A broken connection (the server restarted) is dropped and opened again after a bounded
//! backoff ([`reconnect`](super::reconnect)), never while the restart step holds the gateways
//! back ([`Shared::hold`]); the commands of pipelines that got no reply meanwhile are counted
//! as unsent, and the sender goes on with its schedule.

use super::reconnect::{self, Backoff};
use super::Shared;
use crate::loadgen::population::Population;
use redis::Value;
use std::sync::atomic::Ordering;

/// Commands per pipeline: the entries one heartbeat datagram holds.
pub const BATCH: usize = 89;

/// One queued command.
#[derive(Clone, Copy, Debug)]
struct Op {
    /// Device slot.
    slot: u32,
    /// `SET … GET` (true) or `GETDEL` (false).
    set: bool,
    /// Flags of the stamp to write when the pipeline leaves, if this command causes a
    /// transition the simulation expects.
    stamp: Option<u64>,
}

/// A gateway: a connection (none while it is being re-established), its pipeline and what
/// each queued command is.
pub struct Gw {
    client: redis::Client,
    con: Option<redis::Connection>,
    backoff: Backoff,
    /// No attempt to reconnect before this (µs on the shared clock).
    retry_at_us: u64,
    /// When the connection broke (µs on the shared clock), while it is down.
    down_since_us: Option<u64>,
    pipe: redis::Pipeline,
    ops: Vec<Op>,
    publish: redis::Pipeline,
}

impl Gw {
    /// A gateway on connection `con`, opened again from `client` if it breaks.
    pub fn new(client: redis::Client, con: redis::Connection) -> Gw {
        Gw {
            client,
            con: Some(con),
            backoff: Backoff::default(),
            retry_at_us: 0,
            down_since_us: None,
            pipe: redis::pipe(),
            ops: Vec::with_capacity(BATCH),
            publish: redis::pipe(),
        }
    }

    /// Queues a heartbeat of `slot`: `SET presence:<u>:<d> online PX <ttl> GET`; `stamp`
    /// (flags) when the simulation expects it to be a login.
    pub fn set(&mut self, sh: &Shared, pop: &Population, slot: u32, stamp: Option<u64>) {
        let (user, device) = sh.owner_of(slot);
        self.pipe
            .cmd("SET")
            .arg(super::key(user, device))
            .arg("online")
            .arg("PX")
            .arg(sh.ttl_ms)
            .arg("GET");
        self.queued(
            sh,
            pop,
            Op {
                slot,
                set: true,
                stamp,
            },
        );
    }

    /// Queues a logout of `slot`: `GETDEL presence:<u>:<d>`; `stamp` (flags) when the
    /// simulation expects a transition.
    pub fn del(&mut self, sh: &Shared, pop: &Population, slot: u32, stamp: Option<u64>) {
        let (user, device) = sh.owner_of(slot);
        self.pipe.cmd("GETDEL").arg(super::key(user, device));
        self.queued(
            sh,
            pop,
            Op {
                slot,
                set: false,
                stamp,
            },
        );
    }

    fn queued(&mut self, sh: &Shared, pop: &Population, op: Op) {
        self.ops.push(op);
        if self.ops.len() >= BATCH {
            self.flush(sh, pop);
        }
    }

    /// Commands queued, not yet sent.
    pub fn pending(&self) -> usize {
        self.ops.len()
    }

    /// Sends the pipeline, waits for its replies, and publishes the transitions they reveal.
    /// Without a connection (or when it breaks) the commands are counted unsent instead.
    pub fn flush(&mut self, sh: &Shared, pop: &Population) {
        let n = self.ops.len() as u64;
        if n == 0 {
            return;
        }
        sh.counters.entries.fetch_add(n, Ordering::Relaxed);
        sh.counters.datagrams.fetch_add(1, Ordering::Relaxed);
        let ops = std::mem::take(&mut self.ops);
        if self.connection(sh) {
            self.send(sh, pop, &ops);
        } else {
            sh.unsent.fetch_add(n, Ordering::Relaxed);
        }
        self.pipe.clear();
        self.ops = ops;
        self.ops.clear();
    }

    fn send(&mut self, sh: &Shared, pop: &Population, ops: &[Op]) {
        let now = sh.clock.now_us().max(1);
        for op in ops {
            if op.set {
                if let Some(s) = sh.last_send.get(op.slot as usize) {
                    s.store(now, Ordering::Relaxed);
                }
            }
            match (op.stamp, op.set) {
                (Some(flags), true) => pop.stamp_online(op.slot, now | flags),
                (Some(flags), false) => pop.stamp_offline(op.slot, now | flags),
                (None, _) => {}
            }
        }
        let Some(con) = self.con.as_mut() else {
            return;
        };
        match self.pipe.query::<Vec<Value>>(con) {
            Ok(replies) => {
                sh.accepted
                    .fetch_add(replies.len() as u64, Ordering::Relaxed);
                for (op, reply) in ops.iter().zip(&replies) {
                    // A SET that found no key is a login; a GETDEL that found one, a logout.
                    if op.set == matches!(reply, Value::Nil) {
                        let (user, device) = sh.owner_of(op.slot);
                        let state = if op.set { "online" } else { "offline" };
                        self.publish
                            .cmd("PUBLISH")
                            .arg(super::channel(user))
                            .arg(format!("{state} {device}"))
                            .ignore();
                    }
                }
            }
            Err(e) => self.failed(sh, &e, ops.len(), now),
        }
        let published = self.publish.len();
        if published > 0 {
            if let Some(con) = self.con.as_mut() {
                if let Err(e) = self.publish.query::<()>(con) {
                    self.failed(sh, &e, published, now);
                }
            }
            sh.publishes.fetch_add(published as u64, Ordering::Relaxed);
            self.publish.clear();
        }
    }

    /// A pipeline of `commands` failed: a broken connection is dropped (its commands are
    /// unsent), any other error counted.
    fn failed(&mut self, sh: &Shared, e: &redis::RedisError, commands: usize, now: u64) {
        if reconnect::broken(e) {
            sh.unsent.fetch_add(commands as u64, Ordering::Relaxed);
            self.con = None;
            self.down_since_us = Some(now);
            self.retry_at_us = now + self.backoff.next().as_micros() as u64;
        } else {
            sh.error(e);
        }
    }

    /// Whether there is a connection, after trying to open one again if it is down, the
    /// backoff has passed and the gateways are not held back.
    fn connection(&mut self, sh: &Shared) -> bool {
        if self.con.is_some() {
            return true;
        }
        let now = sh.clock.now_us();
        if now < self.retry_at_us || sh.hold.load(Ordering::Acquire) {
            return false;
        }
        match reconnect::connect(&self.client) {
            Ok(con) => {
                self.con = Some(con);
                self.backoff.reset();
                let since = self.down_since_us.take().unwrap_or(now);
                sh.gateway_reconnects.fetch_add(1, Ordering::Relaxed);
                sh.gateway_down_max_us
                    .fetch_max(sh.clock.now_us().saturating_sub(since), Ordering::Relaxed);
                true
            }
            Err(_) => {
                self.retry_at_us = sh.clock.now_us() + self.backoff.next().as_micros() as u64;
                false
            }
        }
    }
}
