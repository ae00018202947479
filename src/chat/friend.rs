//! ADD_FRIEND, DEL_FRIEND, SHOW_FRIEND_LIST. Friendship is one-way, as in the seeds.
//! Worker threads.

use serde_json::Value;

use std::sync::Arc;

use super::dispatch::{fields, user_json, Outcome};
use super::hub::{unavailable, Hub};
use super::session::Session;
use crate::net::ConnRef;
use crate::proto::msg::{errno, Fail, Request};
use crate::store::StoreError;

pub fn add(hub: &Arc<Hub>, s: &mut Session, _conn: ConnRef, req: &Request) -> Result<Outcome, Fail> {
    let friend = req.int("friendid")?;
    let (me, _) = s.me(req)?;
    if friend == me {
        return Err(Fail::new(errno::MALFORMED, "you cannot befriend yourself"));
    }
    if !hub.store.user_exists(friend).map_err(unavailable)? {
        return Err(Fail::new(errno::NOT_FOUND, format!("user {friend} does not exist")));
    }
    match hub.store.add_friend(me, friend) {
        Ok(()) => Ok(Outcome::Reply(Default::default())),
        Err(StoreError::Conflict) => Err(Fail::new(errno::CONFLICT, format!("user {friend} is already your friend"))),
        Err(e) => Err(unavailable(e)),
    }
}

pub fn del(hub: &Arc<Hub>, s: &mut Session, _conn: ConnRef, req: &Request) -> Result<Outcome, Fail> {
    let friend = req.int("friendid")?;
    let (me, _) = s.me(req)?;
    match hub.store.del_friend(me, friend) {
        Ok(()) => Ok(Outcome::Reply(Default::default())),
        Err(StoreError::NotFound) => Err(Fail::new(errno::NOT_FOUND, format!("user {friend} is not your friend"))),
        Err(e) => Err(unavailable(e)),
    }
}

pub fn list(hub: &Arc<Hub>, s: &mut Session, _conn: ConnRef, req: &Request) -> Result<Outcome, Fail> {
    let (me, _) = s.me(req)?;
    let friends = hub.store.friends(me).map_err(unavailable)?;
    let friends: Vec<Value> = friends.iter().map(user_json).collect();
    Ok(Outcome::Reply(fields([("friends", Value::Array(friends))])))
}
