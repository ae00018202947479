//! `Worker`: the job function of one worker-pool thread.
//!
//! Owns the `Session` of every connection routed to it (by the connection's key, so a
//! connection's jobs all land here, in order).
//!
//! A request whose handler panics is answered with errno 500 (which also ends its
//! in-flight count), logged once with its connection, and the worker goes on.

use std::collections::HashMap;
use std::sync::Arc;

use super::dispatch;
use super::hub::Hub;
use super::registry::Push;
use super::session::Session;
use super::test_hooks::{self, Site};
use crate::net::ConnRef;
use crate::panic_guard;
use crate::proto::msg::{errno, reply, reply_type, Fail, Request};
use crate::store::UserId;

pub enum Job {
    /// A request to handle. `true`: messages of this connection are at the log writer;
    /// its reply must follow their ACKs, so wait for the writer first.
    Request(ConnRef, Request, bool),
    /// A reply made on the loop while earlier requests were in flight: passed back so
    /// it follows their replies. `true` closes the connection after it; the second flag
    /// is `Request`'s.
    Reply(ConnRef, Vec<u8>, bool, bool),
    /// The connection wrote what it was handed of its user's inbox: the next batch.
    Pump(ConnRef),
    /// A push from another server for a user here.
    Remote(UserId, Push),
    /// Publish a committed message for users not held here.
    Publish(Vec<UserId>, Push),
    /// This user's inbox may hold what the bus did not bring: read it again.
    Doorbell(UserId),
    /// The connection closed (its loop has settled what it wrote).
    Closed(ConnRef),
}

pub struct Worker {
    hub: Arc<Hub>,
    sessions: HashMap<ConnRef, Session>,
}

impl Worker {
    pub fn new(hub: Arc<Hub>) -> Worker {
        Worker { hub, sessions: HashMap::new() }
    }

    pub fn handle(&mut self, job: Job) {
        match job {
            Job::Request(conn, req, after_writer) => {
                if after_writer {
                    self.hub.writer.barrier();
                }
                let session = self.sessions.entry(conn).or_default();
                let handled = panic_guard::catch(|| {
                    test_hooks::panic_here(&req, Site::Worker);
                    dispatch::handle(&self.hub, session, conn, &req)
                });
                if let Err(why) = handled {
                    log::error!("{conn:?}: request {} failed: {why}; answered 500", req.msgid);
                    let fail = Fail::new(errno::INTERNAL, "internal error");
                    self.hub.reply(conn, reply(reply_type(req.msgid), req.msgid, req.reqid.as_ref(), Err(fail)), false);
                }
            }
            Job::Reply(conn, body, close, after_writer) => {
                if after_writer {
                    self.hub.writer.barrier();
                }
                self.hub.reply(conn, body, close)
            }
            Job::Pump(conn) => {
                if let Some((user, _)) = self.sessions.get(&conn).and_then(|s| s.user.as_ref()) {
                    self.hub.pump(conn, *user, false);
                }
            }
            Job::Remote(user, push) => {
                self.hub.offer(user, push);
            }
            Job::Publish(users, push) => self.hub.publish(&users, &push),
            Job::Doorbell(user) => self.hub.doorbell(user),
            Job::Closed(conn) => {
                if let Some((user, _)) = self.sessions.remove(&conn).and_then(|s| s.user) {
                    self.hub.logout(user, conn);
                }
            }
        }
    }
}
