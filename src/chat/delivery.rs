//! Delivery: a push reaches its recipient live, or the mailbox, exactly once.
//!
//! Runs on worker threads, under the recipient's delivery lock (see `registry`):
//!
//! 1. recipient held by a live local connection with its mailbox drained → `offer` the
//!    push to its registry entry; the connection's loop writes it out (`flush_pending`).
//!    From then on it is the connection's: it goes back to the mailbox if the socket
//!    never takes it;
//! 2. else publish on the bus; a server that holds the recipient takes it;
//! 3. else store it in the mailbox, after any pushes a closed connection left unsent,
//!    and ring the doorbell.
//!
//! A message is acknowledged to its sender only after one of these succeeded. Step 1
//! needs neither the lock nor a worker, so a sender's loop may do it itself (see
//! `message::one_chat_now`).
//!
//! A mailbox too large for one LOGIN_ACK is pumped: the registry marks the user
//! backlogged (new mail is stored behind the backlog, never overtakes it), and batches
//! go out as pushes whenever the connection has written the previous one (the loop's
//! write-complete callback, or its tick, dispatches the next `pump`). Rows leave the
//! mailbox only once handed to the connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::conn_state::{send_pushes, ConnState};
use super::hub::{unavailable, Hub};
use super::registry::{Offer, Registry, Route};
use crate::net::{ConnRef, Connection};
use crate::proto::msg::Fail;
use crate::store::UserId;

/// How long a sender waits for another server to finish storing a user's last
/// messages before storing its own behind them.
const PRESENCE_WAIT: Duration = Duration::from_secs(2);

/// Mailbox rows per pumped batch (a message is at most ~16 KB).
pub const PUMP_BATCH: usize = 64;

impl Hub {
    /// Delivers `push` (a push object's JSON text) to `to`.
    pub fn deliver(&self, to: UserId, push: Arc<str>) -> Result<(), Fail> {
        let _lock = self.registry.lock(to);
        match self.offer(to, vec![push]) {
            Ok(()) => Ok(()),
            Err((Route::Queued, msgs)) => self.store_for(to, msgs),
            Err((_, msgs)) => {
                for push in msgs {
                    if !self.publish(to, &push) {
                        self.store_and_ring(to, push)?;
                    }
                }
                Ok(())
            }
        }
    }

    /// Offers live pushes to `to` (see `Registry::offer`), and has its loop write them.
    /// Any thread; `Err` gives them back with where they must go instead.
    pub fn offer(&self, to: UserId, msgs: Vec<Arc<str>>) -> Result<(), (Route, Vec<Arc<str>>)> {
        match self.registry.offer(to, msgs) {
            Offer::Queued => Ok(()),
            Offer::Flush(conn) => {
                let registry = Arc::clone(&self.registry);
                // Never waits (a loop may be offering): one such task per user at most.
                self.loops.post(conn, move |c| {
                    if let Some(c) = c {
                        flush_pending(&registry, c);
                    }
                });
                Ok(())
            }
            Offer::Refused(route, msgs) => Err((route, msgs)),
        }
    }

    /// Stores `push` for `to`, then tells whichever server holds `to` (a lost doorbell
    /// only delays delivery to the next login or resubscription). Hold `to`'s lock.
    fn store_and_ring(&self, to: UserId, push: Arc<str>) -> Result<(), Fail> {
        self.store_for(to, vec![push])?;
        if let Err(e) = self.bus.ring(to) {
            log::warn!("{e}; doorbell for {to} not rung");
        }
        Ok(())
    }

    /// Delivers one push to many users: offered at once to those live here; the copies
    /// for users not held here are published in one round trip; the rest, and any copy
    /// no server took, go through `deliver`.
    pub fn deliver_to_many(&self, users: &[UserId], push: &Arc<str>) -> Result<(), Fail> {
        let (mut queued, mut away) = (Vec::new(), Vec::new());
        for &user in users {
            match self.offer(user, vec![Arc::clone(push)]) {
                Ok(()) => {}
                Err((Route::Queued, _)) => queued.push(user),
                Err(_) => away.push(user),
            }
        }
        let published = if away.len() > 1 {
            let msgs: Vec<(UserId, Arc<str>)> = away.iter().map(|u| (*u, Arc::clone(push))).collect();
            self.bus.publish_many(&msgs).unwrap_or_else(|e| {
                log::warn!("{e}; delivering one by one");
                vec![false; away.len()]
            })
        } else {
            vec![false; away.len()]
        };
        let rest = away.iter().zip(published).filter(|(_, taken)| !taken).map(|(u, _)| *u);
        for user in queued.into_iter().chain(rest) {
            self.deliver(user, Arc::clone(push))?;
        }
        Ok(())
    }

    /// Publishes `push` for `to`; true when a server took it. When none did but one
    /// still holds `to`'s presence (it is storing what reached it, or logging `to` in),
    /// tries again: storing now could put this message ahead of those.
    fn publish(&self, to: UserId, push: &str) -> bool {
        let deadline = Instant::now() + PRESENCE_WAIT;
        loop {
            match self.bus.publish(to, push) {
                Ok(true) => return true,
                Ok(false) => {}
                Err(e) => {
                    log::warn!("{e}; storing the message for {to}");
                    return false;
                }
            }
            if Instant::now() >= deadline || !self.bus.online_elsewhere(to).unwrap_or(false) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Writes a pumped batch to `conn` and waits until it did, if `conn` still holds `to`.
    /// `None` when it does not; else whether the socket took them all at once. If it did
    /// not, the connection asks for the next pump once it has written them.
    fn hand_over(&self, conn: ConnRef, to: UserId, msgs: Vec<Arc<str>>) -> Option<bool> {
        self.run_on_conn(conn, move |c| {
            if c.ctx.user != Some(to) {
                return None;
            }
            send_pushes(c, to, msgs);
            let caught_up = c.unsent() == 0;
            c.ctx.want_pump |= !caught_up;
            Some(caught_up)
        })
    }

    /// Hands `user`'s mailbox to `conn`, a batch at a time, while the socket keeps up;
    /// clears the backlog once the mailbox is empty.
    pub fn pump(&self, conn: ConnRef, user: UserId) {
        loop {
            let _lock = self.registry.lock(user);
            if !self.registry.holds(user, conn) {
                return;
            }
            let rows = match self.store.peek_offline(user, PUMP_BATCH) {
                Ok(rows) => rows,
                Err(e) => {
                    log::warn!("mailbox of {user}: {e}; retrying");
                    self.loops.run(conn, |c| {
                        if let Some(c) = c {
                            c.ctx.want_pump = true;
                        }
                    });
                    return;
                }
            };
            if rows.is_empty() {
                self.registry.set_backlog(user, conn, false);
                return;
            }
            let (ids, msgs): (Vec<i64>, Vec<Arc<str>>) = rows.into_iter().map(|(id, m)| (id, Arc::from(m))).unzip();
            let Some(caught_up) = self.hand_over(conn, user, msgs) else { return };
            if let Err(e) = self.store.remove_offline(user, &ids) {
                log::error!("mailbox of {user}: {e}; {} handed messages may come again", ids.len());
            }
            if !caught_up {
                return; // the connection's write-complete callback asks for more
            }
        }
    }

    /// Hands the pushes other servers sent `user` to their connection, in order.
    pub fn flush_inbox(&self, user: UserId) {
        let _lock = self.registry.lock(user);
        let msgs = self.registry.take_inbox(user);
        if msgs.is_empty() {
            return;
        }
        let Err((_, msgs)) = self.offer(user, msgs) else { return };
        let n = msgs.len();
        if let Err(f) = self.store_for(user, msgs) {
            log::error!("{n} pushes from other servers for {user} are lost: {}", f.errmsg);
        }
    }

    /// A push from another server for a user with no entry here any more.
    pub fn store_remote(&self, user: UserId, push: Arc<str>) {
        let _lock = self.registry.lock(user);
        if let Err(f) = self.store_and_ring(user, push) {
            log::error!("a push from another server for {user} is lost: {}", f.errmsg);
        }
    }

    /// `user`'s mailbox has mail (or doorbells may have been missed): pump it to them
    /// if they are here.
    pub fn doorbell(&self, user: UserId) {
        let Some(conn) = self.registry.conn_of(user) else { return };
        {
            let _lock = self.registry.lock(user);
            self.registry.set_backlog(user, conn, true);
        }
        self.pump(conn, user);
    }

    /// Stores `msgs` in `to`'s mailbox behind anything a closed connection of `to` left
    /// unsent. Hold `to`'s delivery lock.
    pub fn store_for(&self, to: UserId, msgs: Vec<Arc<str>>) -> Result<(), Fail> {
        let leftovers = self.registry.take_leftovers(to);
        let rows: Vec<(UserId, String)> = leftovers.iter().chain(msgs.iter()).map(|m| (to, m.to_string())).collect();
        if rows.is_empty() {
            return Ok(());
        }
        self.store.push_offline(&rows).map_err(|e| {
            self.registry.restore_leftovers(to, leftovers);
            unavailable(e)
        })
    }
}

/// Loop thread of `conn`: writes the live pushes waiting for its user, in one send.
pub fn flush_pending(registry: &Registry, conn: &mut Connection<ConnState>) {
    let Some(user) = conn.ctx.user else { return };
    let msgs = registry.take_pending(user, conn.id());
    if !msgs.is_empty() {
        send_pushes(conn, user, msgs);
    }
}
