//! CREATE_GROUP, ADD_GROUP, DEL_GROUP. Worker threads.

use std::sync::Arc;

use super::dispatch::{fields, Outcome};
use super::hub::{unavailable, Hub};
use super::session::Session;
use crate::net::ConnRef;
use crate::proto::msg::{errno, Fail, Request};
use crate::store::{GroupId, Role, StoreError, UserId};

pub const GROUPNAME_MAX: usize = 50;

/// The members of `group`, which `me` must be one of: 404 no such group, 403 not a
/// member (GROUP_CHAT, HISTORY).
pub fn members_as(hub: &Hub, group: GroupId, me: UserId) -> Result<Vec<(UserId, Role)>, Fail> {
    let members = hub
        .store
        .group_members(group)
        .map_err(unavailable)?
        .ok_or_else(|| Fail::new(errno::NOT_FOUND, format!("group {group} does not exist")))?;
    if !members.iter().any(|(id, _)| *id == me) {
        return Err(Fail::new(errno::FORBIDDEN, format!("you are not in group {group}")));
    }
    Ok(members)
}
pub const GROUPDESC_MAX: usize = 200;

pub fn create(hub: &Arc<Hub>, s: &mut Session, _conn: ConnRef, req: &Request) -> Result<Outcome, Fail> {
    let name = req.string("groupname", 1, GROUPNAME_MAX)?;
    let desc = req.opt_string("groupdesc", 0, GROUPDESC_MAX, "")?;
    let (me, _) = s.me(req)?;
    match hub.store.create_group(me, name, desc) {
        Ok(id) => Ok(Outcome::Reply(fields([("groupid", id.into())]))),
        Err(StoreError::Conflict) => Err(Fail::new(errno::CONFLICT, format!("a group named {name} exists"))),
        Err(e) => Err(unavailable(e)),
    }
}

pub fn join(hub: &Arc<Hub>, s: &mut Session, _conn: ConnRef, req: &Request) -> Result<Outcome, Fail> {
    let group = req.int("groupid")?;
    let (me, _) = s.me(req)?;
    match hub.store.join_group(group, me) {
        Ok(()) => Ok(Outcome::Reply(Default::default())),
        Err(StoreError::NotFound) => Err(Fail::new(errno::NOT_FOUND, format!("group {group} does not exist"))),
        Err(StoreError::Conflict) => Err(Fail::new(errno::CONFLICT, format!("you are already in group {group}"))),
        Err(e) => Err(unavailable(e)),
    }
}

pub fn leave(hub: &Arc<Hub>, s: &mut Session, _conn: ConnRef, req: &Request) -> Result<Outcome, Fail> {
    let group = req.int("groupid")?;
    let (me, _) = s.me(req)?;
    match hub.store.leave_group(group, me) {
        Ok(_) => Ok(Outcome::Reply(Default::default())),
        Err(StoreError::NotFound) => Err(Fail::new(errno::NOT_FOUND, format!("you are not in group {group}"))),
        Err(e) => Err(unavailable(e)),
    }
}
