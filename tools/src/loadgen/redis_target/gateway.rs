//! One simulated gateway against Redis: its own connection and the pipeline it fills. When a
//! pipeline leaves, the stamps of the transitions it causes are written (so latency counts
//! from its send); when its replies are back, every login (`SET … GET` answered nil: the key
//! was absent) and every logout that found its key (`GETDEL` answered a value) is published on
//! the user's channel in a second pipeline, sent at once.

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

/// A gateway: a connection, its pipeline and what each queued command is.
pub struct Gw {
    con: redis::Connection,
    pipe: redis::Pipeline,
    ops: Vec<Op>,
    publish: redis::Pipeline,
}

impl Gw {
    /// A gateway on connection `con`.
    pub fn new(con: redis::Connection) -> Gw {
        Gw {
            con,
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
    pub fn flush(&mut self, sh: &Shared, pop: &Population) {
        let n = self.ops.len() as u64;
        if n == 0 {
            return;
        }
        let now = sh.clock.now_us().max(1);
        for op in &self.ops {
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
        sh.counters.entries.fetch_add(n, Ordering::Relaxed);
        sh.counters.datagrams.fetch_add(1, Ordering::Relaxed);
        let replies = self.pipe.query::<Vec<Value>>(&mut self.con);
        self.pipe.clear();
        let ops = std::mem::take(&mut self.ops);
        match replies {
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
            Err(e) => sh.error(&e),
        }
        self.ops = ops;
        self.ops.clear();
        let published = self.publish.len() as u64;
        if published > 0 {
            if let Err(e) = self.publish.query::<()>(&mut self.con) {
                sh.error(&e);
            }
            sh.publishes.fetch_add(published, Ordering::Relaxed);
            self.publish.clear();
        }
    }
}
