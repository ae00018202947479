//! ONE_CHAT and GROUP_CHAT: stamp the message with the session's sender and the
//! server's time, append it to the message log, then deliver it (see `delivery`).
//!
//! The ACK (with the message's `mid` and `time`) leaves only once the log writer has
//! committed the message and its recipients' inbox rows: durable before acknowledged.
//! Worker threads wait for the commit; `one_chat_now`, which the sender's loop thread
//! runs, does not: its ACK is queued by the writer thread once the batch commits.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::conn_state::{answered, send_frame, ConnState};
use super::dispatch::{fields, Outcome};
use super::hub::{unavailable, Hub};
use super::registry::Push;
use super::session::Session;
use crate::net::{ConnRef, Connection};
use crate::proto::msg::{self, errno, reply, Fail, Request};
use crate::store::{Accepted, Conversation, GroupId, Message, Mid, NewMessage, UserId};

pub const MSG_MAX: usize = 4000;
pub const CMID_MAX: usize = 64;

/// A ONE_CHAT or GROUP_CHAT push, in the seeds' field order, `mid` last.
#[derive(Serialize)]
struct ChatPush<'a> {
    msgid: i64,
    id: UserId,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    toid: Option<UserId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    groupid: Option<GroupId>,
    msg: &'a str,
    time: &'a str,
    mid: i64,
}

/// The push of a logged message, as every recipient gets it (live, offline, history).
pub fn push_of(m: &Message) -> Push {
    push(m.sender, &m.sender_name, m.to, &m.text, &m.time, m.mid)
}

fn push(id: UserId, name: &str, to: Conversation, text: &str, time: &str, mid: Mid) -> Push {
    let (msgid, toid, groupid) = match to {
        Conversation::Peer(to) => (msg::ONE_CHAT, Some(to), None),
        Conversation::Group(g) => (msg::GROUP_CHAT, None, Some(g)),
    };
    let push = ChatPush { msgid, id, name, toid, groupid, msg: text, time, mid };
    Push { mid, text: Arc::from(serde_json::to_string(&push).unwrap_or_default()) }
}

thread_local! {
    /// This thread's last time stamp and the Unix second it is for.
    static STAMP: RefCell<(u64, Rc<str>)> = RefCell::new((u64::MAX, Rc::from("")));
}

/// The server's time stamp, `YYYY-MM-DD HH:MM:SS`, local time, and the Unix second.
/// Formatting it costs more than the rest of a ONE_CHAT, so each thread formats it once
/// a second.
fn now() -> (Rc<str>, i64) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let stamp = STAMP.with_borrow_mut(|(at, stamp)| {
        if *at != secs {
            let local: chrono::DateTime<chrono::Local> = now.into();
            *stamp = Rc::from(local.format("%Y-%m-%d %H:%M:%S").to_string());
            *at = secs;
        }
        Rc::clone(stamp)
    });
    (stamp, secs as i64)
}

/// The optional `cmid`: 1-64 characters.
fn cmid(req: &Request) -> Result<Option<String>, Fail> {
    if !req.body.contains_key("cmid") {
        return Ok(None);
    }
    req.string("cmid", 1, CMID_MAX).map(|c| Some(c.to_owned()))
}

fn new_message(
    me: UserId,
    name: &str,
    to: Conversation,
    text: &str,
    cmid: Option<String>,
    recipients: Vec<UserId>,
) -> NewMessage {
    let (time, unix_time) = now();
    NewMessage {
        sender: me,
        sender_name: name.to_owned(),
        to,
        text: Arc::from(text),
        time: time.to_string(),
        unix_time,
        cmid,
        recipients,
    }
}

/// The ACK's result fields.
fn ack_fields(a: &Accepted) -> serde_json::Map<String, serde_json::Value> {
    fields([("mid", a.mid.into()), ("time", a.time.clone().into())])
}

impl Hub {
    /// Appends `new` to the log and, once committed, delivers it to its recipients
    /// (unless its cmid was seen before: then nothing is delivered). `then` runs on the
    /// writer thread after that, with the outcome.
    pub fn append(self: &Arc<Self>, new: NewMessage, then: impl FnOnce(Result<Accepted, Fail>) + Send + 'static) {
        let hub = Arc::clone(self);
        let (recipients, sender, name, to, text) =
            (new.recipients.clone(), new.sender, new.sender_name.clone(), new.to, Arc::clone(&new.text));
        self.writer.submit(
            new,
            Box::new(move |result| match result {
                Ok(accepted) => {
                    if accepted.first {
                        let push = push(sender, &name, to, &text, &accepted.time, accepted.mid);
                        hub.fan_out(&recipients, push, sender);
                    }
                    then(Ok(accepted));
                }
                Err(e) => then(Err(unavailable(e))),
            }),
        );
    }

    /// `append`, waiting for the outcome. Worker threads.
    fn append_and_wait(self: &Arc<Self>, new: NewMessage) -> Result<Accepted, Fail> {
        let (tx, rx) = crossbeam_channel::bounded(1);
        self.append(new, move |r| {
            let _ = tx.send(r);
        });
        rx.recv().unwrap_or_else(|_| Err(Fail::new(errno::UNAVAILABLE, "the message log stopped")))
    }
}

pub fn one_chat(hub: &Arc<Hub>, s: &mut Session, _conn: ConnRef, req: &Request) -> Result<Outcome, Fail> {
    let toid = req.int("toid")?;
    let text = req.string("msg", 1, MSG_MAX)?;
    let cmid = cmid(req)?;
    let (me, name) = s.me(req)?;
    if toid != me && !hub.registry.is_online(toid) && !hub.store.user_exists(toid).map_err(unavailable)? {
        return Err(Fail::new(errno::NOT_FOUND, format!("user {toid} does not exist")));
    }
    let accepted = hub.append_and_wait(new_message(me, name, Conversation::Peer(toid), text, cmid, vec![toid]))?;
    Ok(Outcome::Reply(ack_fields(&accepted)))
}

/// Loop thread: ONE_CHAT without a worker, when it needs none. That is when the sender
/// is logged in with nothing at a worker (only messages at the log writer, whose ACKs
/// come in order), the request is well formed, and the recipient is live on this server
/// (which proves it exists). The message goes to the log writer, which queues the ACK
/// once it is committed. False when any of that does not hold; nothing was done then,
/// and a worker's `one_chat` must handle the request.
pub fn one_chat_now(hub: &Arc<Hub>, conn: &mut Connection<ConnState>, req: &Request) -> bool {
    let Some(me) = conn.ctx.user else { return false };
    if conn.ctx.in_flight > conn.ctx.at_writer || req.lossy {
        return false;
    }
    let (Ok(toid), Ok(text), Ok(cmid)) = (req.int("toid"), req.string("msg", 1, MSG_MAX), cmid(req)) else {
        return false;
    };
    match req.opt_int("id") {
        Ok(None) => {}
        Ok(Some(claimed)) if claimed == me => {}
        _ => return false,
    }
    if !hub.registry.is_online(toid) {
        return false;
    }
    let new = new_message(me, &conn.ctx.name, Conversation::Peer(toid), text, cmid, vec![toid]);
    conn.ctx.in_flight += 1;
    conn.ctx.at_writer += 1;
    let (id, reqid, replier) = (conn.id(), req.reqid.clone(), Arc::clone(hub));
    hub.append(new, move |result| {
        let body = reply(msg::ACK, msg::ONE_CHAT, reqid.as_ref(), result.map(|a| ack_fields(&a)));
        replier.loops.run(id, move |c| {
            if let Some(c) = c {
                c.ctx.at_writer = c.ctx.at_writer.saturating_sub(1);
                answered(c);
                send_frame(c, &body);
            }
        });
    });
    true
}

pub fn group_chat(hub: &Arc<Hub>, s: &mut Session, _conn: ConnRef, req: &Request) -> Result<Outcome, Fail> {
    let groupid = req.int("groupid")?;
    let text = req.string("msg", 1, MSG_MAX)?;
    let cmid = cmid(req)?;
    let (me, name) = s.me(req)?;
    let members = hub
        .store
        .group_members(groupid)
        .map_err(unavailable)?
        .ok_or_else(|| Fail::new(errno::NOT_FOUND, format!("group {groupid} does not exist")))?;
    if !members.iter().any(|(id, _)| *id == me) {
        return Err(Fail::new(errno::FORBIDDEN, format!("you are not in group {groupid}")));
    }
    let others: Vec<UserId> = members.iter().map(|(id, _)| *id).filter(|id| *id != me).collect();
    let accepted = hub.append_and_wait(new_message(me, name, Conversation::Group(groupid), text, cmid, others))?;
    Ok(Outcome::Reply(ack_fields(&accepted)))
}
