//! The handler table: msgid → handler, and the reply each outcome gets.
//!
//! Runs on worker threads. Every well-formed request gets exactly one reply of its
//! reply type (PROTOCOL.md §3); a handler either returns its result fields, or sends
//! its reply itself when it must be ordered with other output (LOGIN, LOGINOUT).

use serde_json::{Map, Value};

use super::hub::Hub;
use super::session::Session;
use std::sync::Arc;

use super::{account, friend, group, history, message, receipt};
use crate::net::ConnRef;
use crate::proto::msg::{self, errno, reply, reply_type, Fail, Request};

pub enum Outcome {
    /// Reply with `errno: 0` and these fields.
    Reply(Map<String, Value>),
    /// The handler has queued its reply itself.
    Sent,
}

pub type HandlerFn = fn(&Arc<Hub>, &mut Session, ConnRef, &Request) -> Result<Outcome, Fail>;

const TABLE: &[(i64, HandlerFn)] = &[
    (msg::LOGIN, account::login),
    (msg::LOGINOUT, account::loginout),
    (msg::REG, account::register),
    (msg::PING, account::ping),
    (msg::ONE_CHAT, message::one_chat),
    (msg::GROUP_CHAT, message::group_chat),
    (msg::ADD_FRIEND, friend::add),
    (msg::DEL_FRIEND, friend::del),
    (msg::SHOW_FRIEND_LIST, friend::list),
    (msg::CREATE_GROUP, group::create),
    (msg::ADD_GROUP, group::join),
    (msg::DEL_GROUP, group::leave),
    (msg::RECEIVED, receipt::received),
    (msg::HISTORY, history::history),
];

/// Runs `req` through its handler and queues the reply.
pub fn handle(hub: &Arc<Hub>, session: &mut Session, conn: ConnRef, req: &Request) {
    let result = if req.lossy {
        Err(Fail::new(errno::MALFORMED, "a string holds an invalid escape (lone surrogate)"))
    } else {
        match TABLE.iter().find(|(id, _)| *id == req.msgid) {
            Some((_, handler)) => handler(hub, session, conn, req),
            None => Err(Fail::new(errno::MALFORMED, format!("unknown msgid {}", req.msgid))),
        }
    };
    let result = match result {
        Ok(Outcome::Sent) => return,
        Ok(Outcome::Reply(fields)) => Ok(fields),
        Err(fail) => Err(fail),
    };
    hub.reply(conn, reply(reply_type(req.msgid), req.msgid, req.reqid.as_ref(), result), false);
}

/// A user as replies show one: `{"id","name","state"}`.
pub fn user_json(u: &crate::store::User) -> Value {
    serde_json::json!({"id": u.id, "name": u.name, "state": if u.online { "online" } else { "offline" }})
}

/// Builds a field map from pairs.
pub fn fields<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}
