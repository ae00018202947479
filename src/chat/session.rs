//! `Session`: who a connection is, as its worker sees it.
//!
//! Owned by the worker that handles the connection's requests (all of a connection's
//! jobs run on one worker), so it needs no lock.

use crate::proto::msg::{errno, Fail, Request};
use crate::store::UserId;

#[derive(Debug, Default)]
pub struct Session {
    /// The logged-in user's id and name.
    pub user: Option<(UserId, String)>,
}

impl Session {
    /// The caller, for a request that needs a login: 400 for a mistyped `id`, 401 before
    /// LOGIN, 403 when `id` names someone else.
    pub fn me(&self, req: &Request) -> Result<(UserId, &str), Fail> {
        let claimed = req.opt_int("id")?;
        let Some((id, name)) = &self.user else {
            return Err(Fail::new(errno::NOT_LOGGED_IN, "login first"));
        };
        match claimed {
            Some(c) if c != *id => Err(Fail::new(errno::FORBIDDEN, "id is not the logged-in user")),
            _ => Ok((*id, name)),
        }
    }
}
