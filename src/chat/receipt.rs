//! RECEIVED (v2 sessions): the client confirms pushes; they leave its inbox.
//!
//! A well-formed RECEIVED gets no reply (PROTOCOL.md §9). The loop handles it itself
//! when the connection has nothing at a worker (`received_now`); otherwise it follows
//! the connection's requests through its worker (`received`), which has the loop
//! confirm. Either way the confirmation is applied on the loop, where the session's
//! unconfirmed set lives, and the settle goes to the log writer.

use std::sync::Arc;

use serde_json::Value;

use super::conn_state::{answered, ConnState};
use super::dispatch::Outcome;
use super::hub::Hub;
use super::session::Session;
use crate::net::{ConnRef, Connection};
use crate::proto::msg::{errno, Fail, Request};
use crate::store::Mid;

/// Mids in one RECEIVED at most.
pub const MIDS_MAX: usize = 1000;

/// The `mids` of a RECEIVED: 1-1000 integers.
pub fn mids(req: &Request) -> Result<Vec<Mid>, Fail> {
    let bad = || Fail::new(errno::MALFORMED, format!("mids must be an array of 1 to {MIDS_MAX} integers"));
    let Some(Value::Array(items)) = req.body.get("mids") else { return Err(bad()) };
    if items.is_empty() || items.len() > MIDS_MAX {
        return Err(bad());
    }
    items.iter().map(|v| v.as_i64().ok_or_else(bad)).collect()
}

/// Loop thread: confirms on the spot when the request is well formed, the session is
/// logged in and nothing is at a worker. False when a worker must handle it.
pub fn received_now(conn: &mut Connection<ConnState>, req: &Request) -> bool {
    if conn.ctx.user.is_none() || conn.ctx.in_flight > 0 || req.lossy || req.opt_int("id").is_err() {
        return false;
    }
    match mids(req) {
        Ok(mids) => {
            conn.ctx.confirm(mids);
            true
        }
        Err(_) => false,
    }
}

pub fn received(hub: &Arc<Hub>, s: &mut Session, conn: ConnRef, req: &Request) -> Result<Outcome, Fail> {
    let mids = mids(req)?;
    s.me(req)?;
    hub.loops.run(conn, move |c| {
        if let Some(c) = c {
            answered(c);
            c.ctx.confirm(mids);
        }
    });
    Ok(Outcome::Sent)
}
