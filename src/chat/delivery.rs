//! Delivery: a push reaches its recipient live, or the mailbox, exactly once.
//!
//! Runs on worker threads, under the recipient's delivery lock (see `registry`):
//!
//! 1. recipient held by a live local connection → queue the push on its loop and wait
//!    for the loop to confirm it took it (it is then the connection's, and goes back to
//!    the mailbox if the socket never takes it);
//! 2. else publish on the bus; a server that holds the recipient takes it;
//! 3. else store it in the mailbox, after any pushes a closed connection left unsent,
//!    and ring the doorbell.
//!
//! A message is acknowledged to its sender only after one of these succeeded.

use std::sync::Arc;

use super::conn_state::send_tracked;
use super::hub::{unavailable, Hub};
use super::registry::Route;
use crate::proto::msg::Fail;
use crate::store::UserId;

impl Hub {
    /// Delivers `push` (a push object's JSON text) to `to`.
    pub fn deliver(&self, to: UserId, push: Arc<str>) -> Result<(), Fail> {
        let _lock = self.registry.lock(to);
        if let Route::Local(conn) = self.registry.route(to) {
            if self.push_live(conn, to, Arc::clone(&push)) {
                return Ok(());
            }
        } else {
            match self.bus.publish(to, &push) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => log::warn!("{e}; storing the message for {to}"),
            }
        }
        self.store_for(to, vec![push])?;
        if let Err(e) = self.bus.ring(to) {
            log::warn!("{e}; doorbell for {to} not rung");
        }
        Ok(())
    }

    /// Queues `push` on `conn` if it still holds `to`; true once the loop took it.
    fn push_live(&self, conn: crate::net::ConnRef, to: UserId, push: Arc<str>) -> bool {
        self.run_on_conn(conn, move |c| {
            if c.ctx.user != Some(to) {
                return false;
            }
            let body = Arc::clone(&push);
            send_tracked(c, body.as_bytes(), to, vec![push]);
            true
        })
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
