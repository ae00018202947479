//! ONE_CHAT and GROUP_CHAT: stamp the message with the session's sender and the
//! server's time, then deliver it (see `delivery`). Worker threads, except
//! `one_chat_now`, which the sender's loop thread runs.
//!
//! The ACK is sent only after every recipient has the message delivered or stored.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::conn_state::{send_frame, ConnState};
use super::delivery::flush_pending;
use super::dispatch::Outcome;
use super::hub::{unavailable, Hub};
use super::session::Session;
use crate::net::{ConnRef, Connection};
use crate::proto::msg::{self, errno, reply, Fail, Request};
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

thread_local! {
    /// This thread's last time stamp and the Unix second it is for.
    static STAMP: RefCell<(u64, Rc<str>)> = RefCell::new((u64::MAX, Rc::from("")));
}

/// The server's time stamp, `YYYY-MM-DD HH:MM:SS`, local time. Formatting it costs more
/// than the rest of a ONE_CHAT, so each thread formats it once a second.
fn now() -> Rc<str> {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    STAMP.with_borrow_mut(|(at, stamp)| {
        if *at != secs {
            let local: chrono::DateTime<chrono::Local> = now.into();
            *stamp = Rc::from(local.format("%Y-%m-%d %H:%M:%S").to_string());
            *at = secs;
        }
        Rc::clone(stamp)
    })
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

/// Loop thread: ONE_CHAT without a worker, when it needs none. That is when the sender
/// is logged in with no request at a worker (so its replies and deliveries keep their
/// order), the request is well formed, and the recipient is live on this server with its
/// mailbox drained (which also proves it exists): the push is offered to the recipient
/// and ACKed at once. False when any of that does not hold; nothing was done then, and
/// a worker's `one_chat` must handle the request.
pub fn one_chat_now(hub: &Hub, conn: &mut Connection<ConnState>, req: &Request) -> bool {
    let Some(me) = conn.ctx.user else { return false };
    if conn.ctx.in_flight > 0 || req.lossy {
        return false;
    }
    let (Ok(toid), Ok(text)) = (req.int("toid"), req.string("msg", 1, MSG_MAX)) else { return false };
    match req.opt_int("id") {
        Ok(None) => {}
        Ok(Some(claimed)) if claimed == me => {}
        _ => return false,
    }
    let time = now();
    let push = OneChatPush { msgid: msg::ONE_CHAT, id: me, name: &conn.ctx.name, toid, msg: text, time: &time };
    let Ok(push) = to_text(&push) else { return false };
    if hub.offer(toid, vec![push]).is_err() {
        return false;
    }
    if toid == me {
        flush_pending(&hub.registry, conn); // the push before its ACK, as a worker does it
    }
    send_frame(conn, &reply(msg::ACK, msg::ONE_CHAT, req.reqid.as_ref(), Ok(Default::default())));
    true
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
