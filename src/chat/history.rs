//! HISTORY: a page of a conversation from the message log, newest first by page,
//! oldest first within it (PROTOCOL.md §10). Worker threads.

use std::sync::Arc;

use serde_json::Value;

use super::dispatch::{fields, Outcome};
use super::group::members_as;
use super::hub::{unavailable, Hub};
use super::message::push_of;
use super::session::Session;
use crate::net::ConnRef;
use crate::proto::msg::{errno, Fail, Request};
use crate::store::Conversation;

pub const LIMIT_DEFAULT: i64 = 50;
pub const LIMIT_MAX: i64 = 100;

pub fn history(hub: &Arc<Hub>, s: &mut Session, _conn: ConnRef, req: &Request) -> Result<Outcome, Fail> {
    let conv = match (req.opt_int("peer")?, req.opt_int("groupid")?) {
        (Some(peer), None) => Conversation::Peer(peer),
        (None, Some(group)) => Conversation::Group(group),
        _ => return Err(Fail::new(errno::MALFORMED, "exactly one of peer and groupid")),
    };
    let before = req.opt_int("before")?;
    let limit = req.opt_int("limit")?.unwrap_or(LIMIT_DEFAULT);
    if !(1..=LIMIT_MAX).contains(&limit) {
        return Err(Fail::new(errno::MALFORMED, format!("limit must be 1 to {LIMIT_MAX}")));
    }
    let (me, _) = s.me(req)?;
    match conv {
        Conversation::Peer(peer) => {
            if peer != me && !hub.store.user_exists(peer).map_err(unavailable)? {
                return Err(Fail::new(errno::NOT_FOUND, format!("user {peer} does not exist")));
            }
        }
        Conversation::Group(group) => {
            members_as(hub, group, me)?;
        }
    }
    let (msgs, more) = hub.store.history(me, conv, before, limit as usize).map_err(unavailable)?;
    let messages: Vec<Value> =
        msgs.iter().map(|m| serde_json::from_str(&push_of(m).text).unwrap_or(Value::Null)).collect();
    Ok(Outcome::Reply(fields([("messages", Value::Array(messages)), ("more", more.into())])))
}
