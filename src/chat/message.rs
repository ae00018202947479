//! ONE_CHAT and GROUP_CHAT: stamp the message with the session's sender and the
//! server's time, then deliver it (see `delivery`). Worker threads.
//!
//! The ACK is sent only after every recipient has the message delivered or stored.

use std::sync::Arc;

use serde::Serialize;

use super::dispatch::Outcome;
use super::hub::{unavailable, Hub};
use super::session::Session;
use crate::net::ConnRef;
use crate::proto::msg::{self, errno, Fail, Request};
use crate::store::{GroupId, UserId};

pub const MSG_MAX: usize = 4000;

#[derive(Serialize)]
struct OneChatPush<'a> {
    msgid: i64,
    id: UserId,
    name: &'a str,
    toid: UserId,
    msg: &'a str,
    time: &'a str,
}

#[derive(Serialize)]
struct GroupChatPush<'a> {
    msgid: i64,
    id: UserId,
    name: &'a str,
    groupid: GroupId,
    msg: &'a str,
    time: &'a str,
}

/// The server's time stamp, `YYYY-MM-DD HH:MM:SS`, local time.
fn now() -> String {
    chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

fn to_text(push: &impl Serialize) -> Result<Arc<str>, Fail> {
    serde_json::to_string(push).map(Arc::from).map_err(|e| Fail::new(errno::MALFORMED, e.to_string()))
}

pub fn one_chat(hub: &Hub, s: &mut Session, _conn: ConnRef, req: &Request) -> Result<Outcome, Fail> {
    let toid = req.int("toid")?;
    let text = req.string("msg", 1, MSG_MAX)?;
    let (me, name) = s.me(req)?;
    if !hub.store.user_exists(toid).map_err(unavailable)? {
        return Err(Fail::new(errno::NOT_FOUND, format!("user {toid} does not exist")));
    }
    let time = now();
    let push = to_text(&OneChatPush { msgid: msg::ONE_CHAT, id: me, name, toid, msg: text, time: &time })?;
    hub.deliver(toid, push)?;
    Ok(Outcome::Reply(Default::default()))
}

pub fn group_chat(hub: &Hub, s: &mut Session, _conn: ConnRef, req: &Request) -> Result<Outcome, Fail> {
    let groupid = req.int("groupid")?;
    let text = req.string("msg", 1, MSG_MAX)?;
    let (me, name) = s.me(req)?;
    let members = hub
        .store
        .group_members(groupid)
        .map_err(unavailable)?
        .ok_or_else(|| Fail::new(errno::NOT_FOUND, format!("group {groupid} does not exist")))?;
    if !members.iter().any(|(id, _)| *id == me) {
        return Err(Fail::new(errno::FORBIDDEN, format!("you are not in group {groupid}")));
    }
    let time = now();
    let push = to_text(&GroupChatPush { msgid: msg::GROUP_CHAT, id: me, name, groupid, msg: text, time: &time })?;
    let others: Vec<UserId> = members.iter().map(|(id, _)| *id).filter(|id| *id != me).collect();
    hub.deliver_to_many(&others, &push)?;
    Ok(Outcome::Reply(Default::default()))
}
