//! REG, LOGIN, LOGINOUT and PING, and a connection's end (a disconnect is a LOGINOUT).
//!
//! Worker threads. LOGIN makes the user reachable first (registry, bus subscription),
//! then reads the inbox into its LOGIN_ACK, all under the user's delivery lock, so a
//! message committed meanwhile is either in the LOGIN_ACK or pushed after it (and not
//! both: the registry drops a late offer of a message the LOGIN_ACK carried).

use std::sync::Arc;

use serde_json::{json, Value};

use super::conn_state::{answered, send_frame, send_tracked};
use super::delivery::flush_pending;
use super::dispatch::{fields, user_json, Outcome};
use super::hub::{unavailable, Hub};
use super::message::push_of;
use super::password;
use super::registry::Push;
use super::session::Session;
use crate::net::ConnRef;
use crate::proto::msg::{self, errno, reply, Fail, Request};
use crate::store::{Group, Mid, User, UserId};

pub const NAME_MAX: usize = 50;
pub const PASSWORD_MAX: usize = 128;
/// Offline messages in a LOGIN_ACK at most (~3 MB of the largest); the rest follow as
/// pushes.
pub const LOGIN_BATCH: usize = 200;

pub fn register(hub: &Arc<Hub>, _s: &mut Session, _conn: ConnRef, req: &Request) -> Result<Outcome, Fail> {
    let name = req.string("name", 1, NAME_MAX)?;
    let password = req.string("password", 1, PASSWORD_MAX)?;
    let hash = password::hash(password).ok_or_else(|| Fail::new(errno::UNAVAILABLE, "cannot hash the password"))?;
    match hub.store.create_user(name, &hash) {
        Ok(id) => Ok(Outcome::Reply(fields([("id", id.into())]))),
        Err(crate::store::StoreError::Conflict) => Err(Fail::new(errno::CONFLICT, "this name is already taken")),
        Err(e) => Err(unavailable(e)),
    }
}

pub fn ping(_hub: &Arc<Hub>, _s: &mut Session, _conn: ConnRef, _req: &Request) -> Result<Outcome, Fail> {
    Ok(Outcome::Reply(Default::default()))
}

pub fn login(hub: &Arc<Hub>, s: &mut Session, conn: ConnRef, req: &Request) -> Result<Outcome, Fail> {
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
    hub.registry.connect(id, conn).map_err(|_| busy())?;
    // Makes the user unreachable here again: every failure from here on, and a
    // connection that vanished meanwhile, undo what was done. Nothing is lost: whatever
    // was offered meanwhile is still in the inbox.
    let undo = || {
        hub.registry.disconnect(id, conn);
        let _ = hub.bus.unsubscribe(id);
        let _ = hub.bus.release(id);
    };
    let fail = |f: Fail| {
        undo();
        f
    };
    hub.bus.subscribe(id).map_err(|e| fail(Fail::new(errno::UNAVAILABLE, e.to_string())))?;
    hub.store.set_online(&[id], true).map_err(|e| fail(unavailable(e)))?;
    let friends = hub.store.friends(id).map_err(|e| fail(unavailable(e)))?;
    let groups = hub.store.user_groups(id).map_err(|e| fail(unavailable(e)))?;
    // Reachable now: anything committed from here on is offered (and held while the
    // backlog lasts). The oldest page of the inbox goes in the LOGIN_ACK, the rest is
    // pumped after it. What an earlier session of this server wrote is settled first.
    hub.writer.barrier();
    let owed = hub.store.inbox(id, 0, LOGIN_BATCH).map_err(|e| fail(unavailable(e)))?;
    let offline: Vec<Push> = owed.iter().map(push_of).collect();
    let mids: Vec<Mid> = offline.iter().map(|p| p.mid).collect();
    hub.registry.handed(id, conn, &mids);
    let backlog = mids.len() == LOGIN_BATCH;
    if !backlog {
        hub.registry.open(id, conn);
    }

    let ack = login_ack(&creds.name, id, &friends, &groups, &offline, v2);
    let body = reply(msg::LOGIN_ACK, msg::LOGIN, req.reqid.as_ref(), Ok(ack));
    let (registry, name) = (Arc::clone(&hub.registry), Arc::from(creds.name.as_str()));
    let handed = hub.run_on_conn(conn, move |c| {
        answered(c);
        c.ctx.user = Some(id);
        c.ctx.v2 = v2;
        c.ctx.name = name;
        send_tracked(c, &body, id, mids);
        // Live pushes offered since the entry opened, and found no user here yet.
        flush_pending(&registry, c);
        let caught_up = c.unsent() == 0;
        c.ctx.want_pump |= backlog && !caught_up;
        Some(caught_up)
    });
    let Some(caught_up) = handed else {
        // The connection went away while we logged it in.
        undo();
        let _ = hub.store.set_online(&[id], false);
        return Ok(Outcome::Sent);
    };
    s.user = Some((id, creds.name));
    drop(_lock);
    if backlog && caught_up {
        hub.pump(conn, id, false);
    }
    Ok(Outcome::Sent)
}

pub fn loginout(hub: &Arc<Hub>, s: &mut Session, conn: ConnRef, req: &Request) -> Result<Outcome, Fail> {
    let (id, _) = s.me(req)?;
    let body = reply(msg::ACK, msg::LOGINOUT, req.reqid.as_ref(), Ok(Default::default()));
    hub.loops.run(conn, move |c| {
        if let Some(c) = c {
            answered(c);
            let written = c.written();
            c.ctx.end_session(written);
            send_frame(c, &body);
        }
    });
    hub.logout(id, conn);
    s.user = None;
    Ok(Outcome::Sent)
}

impl Hub {
    /// `user`'s session on `conn` has ended (its loop has queued the settles of what it
    /// wrote): once those are committed, the user is no longer reachable here, and
    /// another session, here or on another server, may read the inbox.
    pub fn logout(&self, user: UserId, conn: ConnRef) {
        let _lock = self.registry.lock(user);
        if !self.registry.holds(user, conn) {
            return; // another connection holds the user now
        }
        self.writer.barrier();
        self.registry.disconnect(user, conn);
        if let Err(e) = self.bus.unsubscribe(user) {
            log::warn!("unsubscribe {user}: {e}");
        }
        if let Err(e) = self.bus.release(user) {
            log::warn!("release {user}: {e}");
        }
        if let Err(e) = self.store.set_online(&[user], false) {
            log::warn!("cannot mark {user} offline: {e}");
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
    offline: &[Push],
    v2: bool,
) -> serde_json::Map<String, Value> {
    let mut ack = fields([("id", id.into()), ("name", name.into())]);
    if !offline.is_empty() {
        let msgs = offline
            .iter()
            .map(|p| {
                if v2 {
                    serde_json::from_str(&p.text).unwrap_or_else(|_| Value::String(p.text.to_string()))
                } else {
                    Value::String(p.text.to_string())
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
