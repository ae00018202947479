//! Delivery: every message is owed before it is pushed; pushes are how it gets there
//! fast.
//!
//! A message reaches delivery only once the log writer has committed it together with
//! one inbox row per recipient (see `message`). From then on the inbox is the truth:
//! a row leaves it when the message was written into a v1 session's socket, or when a
//! v2 session confirmed it (RECEIVED). Everything below only moves copies:
//!
//! 1. `fan_out` (on the writer thread, after the commit): recipients live here get the
//!    push offered to their registry entry, and their loop writes it; for the others it
//!    is published on the bus (by a worker), and a server that holds them offers it.
//!    Nobody holding the recipient is not an error: the row waits for their login.
//! 2. LOGIN hands the oldest owed messages over in its LOGIN_ACK; the rest is `pump`ed
//!    in batches, each once the connection has written the previous one. Meanwhile the
//!    entry is backlogged, so live pushes cannot overtake older owed ones (registry).
//! 3. A push lost on the way (the bus dropped it, the recipient's connection closed
//!    before writing it, a server was killed) is still in the inbox: it comes at the
//!    next login, or when the bus reconnects (`doorbell`: the pump reads the inbox again
//!    from its start, after the log writer has applied what this session settled; a v1
//!    push written in the instant between that barrier and the read can come twice).

use std::sync::Arc;

use super::conn_state::{send_pushes, ConnState};
use super::hub::Hub;
use super::message::push_of;
use super::registry::{Offer, Push, Registry};
use super::worker::Job;
use crate::net::{ConnRef, Connection};
use crate::store::UserId;

/// Inbox rows per pumped batch (a message is at most ~16 KB).
pub const PUMP_BATCH: usize = 64;

impl Hub {
    /// Offers `push` to `to` live here, and has its loop write it. Any thread.
    pub fn offer(&self, to: UserId, push: Push) -> bool {
        match self.registry.offer(to, push) {
            Offer::Taken => true,
            Offer::Flush(conn) => {
                self.flush_on_loop(conn);
                true
            }
            Offer::NotHere => false,
        }
    }

    /// Never waits (a loop's queue may be full): one such task per user at most.
    fn flush_on_loop(&self, conn: ConnRef) {
        let registry = Arc::clone(&self.registry);
        self.loops.post(conn, move |c| {
            if let Some(c) = c {
                flush_pending(&registry, c);
            }
        });
    }

    /// A committed message's push to its recipients: offered to those live here, and
    /// published for the others by a worker (keyed by the sender, so one sender's
    /// messages are published in order). Writer thread; never blocks.
    pub fn fan_out(&self, recipients: &[UserId], push: Push, sender: UserId) {
        let away: Vec<UserId> = recipients.iter().copied().filter(|u| !self.offer(*u, push.clone())).collect();
        if away.is_empty() || !self.bus.is_clustered() {
            return;
        }
        if !self.dispatch(super::remote::user_key(sender), Job::Publish(away, push)) {
            log::warn!("no workers to publish a message; its recipients get it at their next login");
        }
    }

    /// Publishes `push` for users held elsewhere (or nowhere), in one round trip.
    /// Worker threads. A failure costs latency only: the message is in their inbox.
    pub fn publish(&self, users: &[UserId], push: &Push) {
        let msgs: Vec<(UserId, Arc<str>)> = users.iter().map(|u| (*u, Arc::clone(&push.text))).collect();
        if let Err(e) = self.bus.publish_many(&msgs) {
            log::warn!("{e}; {} recipients get message {} at their next login", users.len(), push.mid);
        }
    }

    /// Writes a pumped batch to `conn` and waits until it did, if `conn` still holds `to`.
    /// `None` when it does not; else whether the socket took them all at once. If it did
    /// not, the connection asks for the next pump once it has written them.
    fn hand_over(&self, conn: ConnRef, to: UserId, pushes: Vec<Push>) -> Option<bool> {
        self.run_on_conn(conn, move |c| {
            if c.ctx.user != Some(to) {
                return None;
            }
            send_pushes(c, to, pushes);
            let caught_up = c.unsent() == 0;
            c.ctx.want_pump |= !caught_up;
            Some(caught_up)
        })
    }

    /// Hands `user`'s inbox to `conn`, a batch at a time, while the socket keeps up;
    /// opens the entry to live pushes once the inbox is drained. With `restart`, reads
    /// the inbox from its start (the bus may have lost pushes).
    pub fn pump(&self, conn: ConnRef, user: UserId, mut restart: bool) {
        loop {
            let _lock = self.registry.lock(user);
            let Some(after) = self.registry.begin_handover(user, conn, restart) else { return };
            if restart {
                // What this session wrote before is settled first, so is not read again.
                self.writer.barrier();
                restart = false;
            }
            let msgs = match self.store.inbox(user, after, PUMP_BATCH) {
                Ok(msgs) => msgs,
                Err(e) => {
                    log::warn!("inbox of {user}: {e}; retrying");
                    self.loops.run(conn, |c| {
                        if let Some(c) = c {
                            c.ctx.want_pump = true;
                        }
                    });
                    return;
                }
            };
            if msgs.is_empty() {
                if self.registry.open(user, conn) {
                    self.flush_on_loop(conn);
                }
                return;
            }
            let pushes: Vec<Push> = msgs.iter().map(push_of).collect();
            let mids: Vec<_> = pushes.iter().map(|p| p.mid).collect();
            self.registry.handed(user, conn, &mids);
            let Some(caught_up) = self.hand_over(conn, user, pushes) else { return };
            if !caught_up {
                return; // the connection's write-complete callback asks for more
            }
        }
    }

    /// The bus reconnected, or says `user` has mail it may not have pushed: read the
    /// inbox again if `user` is here.
    pub fn doorbell(&self, user: UserId) {
        if let Some(conn) = self.registry.conn_of(user) {
            self.pump(conn, user, true);
        }
    }
}

/// Loop thread of `conn`: writes the live pushes waiting for its user, in one send.
pub fn flush_pending(registry: &Registry, conn: &mut Connection<ConnState>) {
    let Some(user) = conn.ctx.user else { return };
    let pushes = registry.take_pending(user, conn.id());
    if !pushes.is_empty() {
        send_pushes(conn, user, pushes);
    }
}
