//! REG, LOGIN, LOGINOUT and PING, and a connection's end (a disconnect is a LOGINOUT).
//!
//! Worker threads. LOGIN makes the user reachable first (registry, bus subscription),
//! then drains the mailbox into its LOGIN_ACK, all under the user's delivery lock, so a
//! message sent meanwhile is either in the LOGIN_ACK or pushed after it.

use std::sync::Arc;

use serde_json::{json, Value};

use super::conn_state::{answered, send_frame, send_tracked};
use super::delivery::flush_pending;
use super::dispatch::{fields, user_json, Outcome};
use super::hub::{unavailable, Hub};
use super::password;
use super::session::Session;
use crate::net::ConnRef;
use crate::proto::msg::{self, errno, reply, Fail, Request};
use crate::store::{Group, User, UserId};

pub const NAME_MAX: usize = 50;
pub const PASSWORD_MAX: usize = 128;
/// Offline messages in a LOGIN_ACK at most (~3 MB of the largest); the rest follow as
/// pushes.
pub const LOGIN_BATCH: usize = 200;

pub fn register(hub: &Hub, _s: &mut Session, _conn: ConnRef, req: &Request) -> Result<Outcome, Fail> {
    let name = req.string("name", 1, NAME_MAX)?;
    let password = req.string("password", 1, PASSWORD_MAX)?;
    let hash = password::hash(password).ok_or_else(|| Fail::new(errno::UNAVAILABLE, "cannot hash the password"))?;
    match hub.store.create_user(name, &hash) {
        Ok(id) => Ok(Outcome::Reply(fields([("id", id.into())]))),
        Err(crate::store::StoreError::Conflict) => Err(Fail::new(errno::CONFLICT, "this name is already taken")),
        Err(e) => Err(unavailable(e)),
    }
}

pub fn ping(_hub: &Hub, _s: &mut Session, _conn: ConnRef, _req: &Request) -> Result<Outcome, Fail> {
    Ok(Outcome::Reply(Default::default()))
}

pub fn login(hub: &Hub, s: &mut Session, conn: ConnRef, req: &Request) -> Result<Outcome, Fail> {
    let id = req.int("id")?;
    let password = req.string("password", 0, usize::MAX)?;
    let v2 = req.body.get("v").and_then(Value::as_i64) == Some(2);
    if s.user.is_some() {
        return Err(Fail::new(errno::CONFLICT, "this connection is already logged in"));
    }
    if !hub.login_guard.may_try(id) {
        return Err(Fail::new(errno::TOO_MANY, "too many failed logins, try again later"));
    }
    let bad = || {
        hub.login_guard.failed(id);
        Fail::new(errno::BAD_LOGIN, "id or password is invalid!")
    };
    let creds = hub.store.credentials(id).map_err(unavailable)?;
    // An unknown id is checked against a dummy hash: it costs what a wrong password
    // costs, so the time a LOGIN takes does not tell whether the account exists.
    let stored = creds.as_ref().map(|c| c.password_hash.as_str()).or_else(|| password::dummy_hash());
    let matches = password.chars().count() <= PASSWORD_MAX && stored.is_some_and(|h| password::verify(password, h));
    let Some(creds) = creds.filter(|_| matches) else {
        return Err(bad());
    };
    hub.login_guard.succeeded(id);

    let _lock = hub.registry.lock(id);
    let busy = || Fail::new(errno::ONLINE_ELSEWHERE, "this account is using, input another!");
    if hub.registry.is_online(id)
        || hub.bus.online_elsewhere(id).map_err(|e| Fail::new(errno::UNAVAILABLE, e.to_string()))?
    {
        return Err(busy());
    }
    // What an earlier connection of this user left unsent goes to the mailbox first.
    hub.store_for(id, Vec::new())?;
    hub.registry.connect(id, conn).map_err(|_| busy())?;
    // Makes the user unreachable here again: every failure from here on, and a
    // connection that vanished meanwhile, undo what was done.
    let undo = || {
        let waiting = hub.registry.take_waiting(id);
        if let Err(f) = hub.store_for(id, waiting) {
            log::error!("pushes for {id} taken during a failed login are lost: {}", f.errmsg);
        }
        hub.registry.disconnect(id, conn);
        let _ = hub.bus.unsubscribe(id);
        let _ = hub.bus.release(id);
    };
    hub.bus.subscribe(id).map_err(|e| {
        undo();
        Fail::new(errno::UNAVAILABLE, e.to_string())
    })?;
    if let Err(e) = hub.store.set_online(&[id], true) {
        undo();
        return Err(unavailable(e));
    }
    let (friends, groups) = match hub.store.friends(id).and_then(|f| Ok((f, hub.store.user_groups(id)?))) {
        Ok(x) => x,
        Err(e) => {
            undo();
            return Err(unavailable(e));
        }
    };
    // The oldest page of the mailbox goes in the LOGIN_ACK; the rest is pumped after it.
    let (ids, offline): (Vec<i64>, Vec<Arc<str>>) = match hub.store.peek_offline(id, LOGIN_BATCH) {
        Ok(rows) => rows.into_iter().map(|(row, m)| (row, Arc::from(m))).unzip(),
        Err(e) => {
            undo();
            return Err(unavailable(e));
        }
    };
    let backlog = ids.len() == LOGIN_BATCH;
    hub.registry.set_backlog(id, conn, backlog);

    let ack = login_ack(&creds.name, id, &friends, &groups, &offline, v2);
    let body = reply(msg::LOGIN_ACK, msg::LOGIN, req.reqid.as_ref(), Ok(ack));
    let (registry, name) = (Arc::clone(&hub.registry), Arc::from(creds.name.as_str()));
    let handed = hub.run_on_conn(conn, move |c| {
        answered(c);
        c.ctx.user = Some(id);
        c.ctx.name = name;
        send_tracked(c, &body, id, offline);
        // Live pushes offered since the backlog was cleared, and found no user here yet.
        flush_pending(&registry, c);
        let caught_up = c.unsent() == 0;
        c.ctx.want_pump |= backlog && !caught_up;
        Some(caught_up)
    });
    let Some(caught_up) = handed else {
        // The connection went away while we logged it in: nothing was handed over.
        undo();
        let _ = hub.store.set_online(&[id], false);
        return Ok(Outcome::Sent);
    };
    if let Err(e) = hub.store.remove_offline(id, &ids) {
        log::error!("mailbox of {id}: {e}; {} handed messages may come again", ids.len());
    }
    s.user = Some((id, creds.name));
    drop(_lock);
    if backlog && caught_up {
        hub.pump(conn, id);
    }
    Ok(Outcome::Sent)
}

pub fn loginout(hub: &Hub, s: &mut Session, conn: ConnRef, req: &Request) -> Result<Outcome, Fail> {
    let (id, _) = s.me(req)?;
    hub.logout(id, conn)?;
    s.user = None;
    let body = reply(msg::ACK, msg::LOGINOUT, req.reqid.as_ref(), Ok(Default::default()));
    hub.loops.run(conn, move |c| {
        if let Some(c) = c {
            answered(c);
            c.ctx.user = None;
            send_frame(c, &body);
        }
    });
    Ok(Outcome::Sent)
}

impl Hub {
    /// `user` on `conn` is no longer reachable here: stores what the connection left
    /// unsent, leaves the registry and the bus, and marks the user offline.
    fn logout(&self, user: UserId, conn: ConnRef) -> Result<(), Fail> {
        let _lock = self.registry.lock(user);
        if !self.registry.is_entry_of(user, conn) {
            return Ok(()); // another connection holds the user now
        }
        // Take no more live pushes: senders' loops offer them without the lock.
        self.registry.set_backlog(user, conn, true);
        let left = self.leave(user, conn);
        if left.is_err() {
            // Still logged in: written what could not be stored, and closed to live
            // pushes until the pump has drained the mailbox again.
            let registry = Arc::clone(&self.registry);
            self.loops.run(conn, move |c| {
                if let Some(c) = c {
                    flush_pending(&registry, c);
                    c.ctx.want_pump = true;
                }
            });
        }
        left
    }

    /// Unsent pushes first; then leave the bus, so nothing more arrives; then store what
    /// arrived meanwhile. Only then may others find the user gone and store newer mail
    /// behind these. On failure the entry stays: whoever next holds the lock stores its
    /// leftovers. Hold `user`'s lock.
    fn leave(&self, user: UserId, conn: ConnRef) -> Result<(), Fail> {
        self.store_for(user, Vec::new())?;
        if let Err(e) = self.bus.unsubscribe(user) {
            log::warn!("unsubscribe {user}: {e}");
        }
        let waiting = self.registry.take_waiting(user);
        if let Err(f) = self.store_for(user, waiting.clone()) {
            self.registry.restore_waiting(user, waiting);
            return Err(f);
        }
        self.registry.disconnect(user, conn);
        if let Err(e) = self.bus.release(user) {
            log::warn!("release {user}: {e}");
        }
        self.store.set_online(&[user], false).map_err(unavailable)
    }

    /// A connection ended: as LOGINOUT for its user, and its unwritten messages (for
    /// whichever user they were handed) go back to their mailboxes.
    pub fn connection_closed(&self, conn: ConnRef, user: Option<UserId>, unsent: Vec<(UserId, Arc<str>)>) {
        let mut by_user: Vec<(UserId, Vec<Arc<str>>)> = Vec::new();
        for (u, m) in unsent {
            match by_user.last_mut() {
                Some((last, msgs)) if *last == u => msgs.push(m),
                _ => by_user.push((u, vec![m])),
            }
        }
        for (u, msgs) in by_user {
            let _lock = self.registry.lock(u);
            if let Err(f) = self.store_for(u, msgs) {
                log::error!("messages for {u} left unsent by a closed connection are lost: {}", f.errmsg);
            }
        }
        if let Some(user) = user {
            if let Err(f) = self.logout(user, conn) {
                log::warn!("logout of {user}: {}", f.errmsg);
            }
        }
    }
}

/// In v1 every element is a JSON-encoded string; in v2 an object.
fn element(v: Value, v2: bool) -> Value {
    if v2 {
        v
    } else {
        Value::String(v.to_string())
    }
}

fn login_ack(
    name: &str,
    id: UserId,
    friends: &[User],
    groups: &[Group],
    offline: &[Arc<str>],
    v2: bool,
) -> serde_json::Map<String, Value> {
    let mut ack = fields([("id", id.into()), ("name", name.into())]);
    if !offline.is_empty() {
        let msgs = offline
            .iter()
            .map(|m| {
                if v2 {
                    serde_json::from_str(m).unwrap_or_else(|_| Value::String(m.to_string()))
                } else {
                    Value::String(m.to_string())
                }
            })
            .collect();
        ack.insert("offlinemsg".into(), Value::Array(msgs));
    }
    if !friends.is_empty() {
        ack.insert("friends".into(), friends.iter().map(|f| element(user_json(f), v2)).collect());
    }
    if !groups.is_empty() {
        let groups = groups.iter().map(|g| {
            let users: Vec<Value> = g
                .members
                .iter()
                .map(|m| {
                    let mut u = user_json(&m.user);
                    u["role"] = m.role.as_str().into();
                    element(u, v2)
                })
                .collect();
            element(json!({"id": g.id, "groupname": g.name, "groupdesc": g.desc, "users": users}), v2)
        });
        ack.insert("groups".into(), groups.collect());
    }
    ack
}
