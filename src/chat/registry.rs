//! `Registry`: which local connection holds which user, and each user's delivery lock.
//!
//! Shared by every thread. The map's mutex is held only for a lookup or an update,
//! never across I/O, so loop threads may take it. The per-user delivery lock (striped)
//! is held by worker threads across a whole delivery to that user (publish, mailbox
//! write, a pumped batch with its confirmation) and across a login's "become reachable,
//! drain the mailbox, send LOGIN_ACK". That lock is what keeps one sender's messages to
//! one recipient in order, and nothing pushed before LOGIN_ACK. Never held by a loop
//! thread.
//!
//! A live push needs no lock and does not wait for the recipient's loop: `offer`
//! appends it to the entry's `pending` queue under the map's mutex, and the recipient's
//! loop writes the queue out (`delivery::flush_pending`). A push in `pending` is as safe
//! as one in the connection's output: if the connection closes first, `mark_leaving`
//! keeps it with the unsent ones, in order; a logout stores it. The entry takes live
//! pushes only while its mailbox is drained (`backlog` false, which a login sets only
//! once the mailbox fits its LOGIN_ACK), so none overtakes older mail, and one sender's
//! pushes keep their order because they all pass through the same queue.
//!
//! When a logged-in connection closes, its loop moves the pushes it could not write
//! into the entry (`Leaving`). Whoever next holds that user's lock stores them first,
//! before any newer message, so they keep their place in the mailbox.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::{Mutex, MutexGuard};

use crate::net::ConnRef;
use crate::store::UserId;

const STRIPES: usize = 1024;

enum Entry {
    /// `backlog`: the user's mailbox is (or may still be) being drained to the
    /// connection; new mail joins the mailbox behind it instead of overtaking it live.
    /// `pending`: live pushes taken for the connection and not yet written by its loop.
    /// `inbox`: pushes from other servers, in arrival order, waiting for a worker.
    Online { conn: ConnRef, backlog: bool, pending: Vec<Arc<str>>, inbox: Vec<Arc<str>> },
    /// The connection closed; these pushes to the user were never written.
    Leaving(ConnRef, Vec<Arc<str>>),
}

pub struct Registry {
    users: Mutex<HashMap<UserId, Entry>>,
    stripes: Box<[Mutex<()>]>,
}

/// What became of pushes offered to a user (see `Registry::offer`).
pub enum Offer {
    /// Queued behind other pending pushes; their loop task writes these too.
    Queued,
    /// Queued first: a task on this connection's loop must write them.
    Flush(ConnRef),
    /// Not taken: where they must go instead, and the pushes back.
    Refused(Route, Vec<Arc<str>>),
}

/// Where a push that a user's entry did not take live must go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Held here, but the mailbox is still being drained to it: store, the pump follows.
    Queued,
    /// Not held by a live connection here.
    NotHere,
}

impl Default for Registry {
    fn default() -> Self {
        Registry { users: Mutex::new(HashMap::new()), stripes: (0..STRIPES).map(|_| Mutex::new(())).collect() }
    }
}

impl Registry {
    fn users(&self) -> MutexGuard<'_, HashMap<UserId, Entry>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `user`'s delivery lock. Worker threads only.
    pub fn lock(&self, user: UserId) -> MutexGuard<'_, ()> {
        let i = (user as u64 % STRIPES as u64) as usize;
        self.stripes[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a live local connection holds `user`.
    pub fn is_online(&self, user: UserId) -> bool {
        matches!(self.users().get(&user), Some(Entry::Online { .. }))
    }

    /// Whether `conn` is the live connection holding `user`.
    pub fn holds(&self, user: UserId, conn: ConnRef) -> bool {
        matches!(self.users().get(&user), Some(Entry::Online { conn: c, .. }) if *c == conn)
    }

    /// Marks whether `user`'s mailbox is being drained to `conn` (while it is, the entry
    /// takes no live push). Hold the lock.
    pub fn set_backlog(&self, user: UserId, conn: ConnRef, on: bool) {
        if let Some(Entry::Online { conn: c, backlog, .. }) = self.users().get_mut(&user) {
            if *c == conn {
                *backlog = on;
            }
        }
    }

    /// Makes `conn` hold `user`, unless another live connection does (`Err` with it).
    /// The entry starts backlogged: it takes no live push until the login has drained
    /// the mailbox and cleared the backlog. Hold the user's lock and store
    /// `take_leftovers` first.
    pub fn connect(&self, user: UserId, conn: ConnRef) -> Result<(), ConnRef> {
        let mut users = self.users();
        if let Some(Entry::Online { conn: other, .. }) = users.get(&user) {
            return Err(*other);
        }
        users.insert(user, Entry::Online { conn, backlog: true, pending: Vec::new(), inbox: Vec::new() });
        Ok(())
    }

    /// Any thread, without the user's lock: takes live pushes for `user` if a live
    /// local connection holds it and its mailbox is drained.
    pub fn offer(&self, user: UserId, mut msgs: Vec<Arc<str>>) -> Offer {
        match self.users().get_mut(&user) {
            Some(Entry::Online { conn, backlog: false, pending, .. }) => {
                let first = pending.is_empty();
                pending.append(&mut msgs);
                if first {
                    Offer::Flush(*conn)
                } else {
                    Offer::Queued
                }
            }
            Some(Entry::Online { backlog: true, .. }) => Offer::Refused(Route::Queued, msgs),
            _ => Offer::Refused(Route::NotHere, msgs),
        }
    }

    /// Puts back what `take_waiting` took and could not be stored, as pending pushes
    /// ahead of any newer ones; the caller has the connection's loop write them. Hold
    /// the lock.
    pub fn restore_waiting(&self, user: UserId, mut msgs: Vec<Arc<str>>) {
        if let Some(Entry::Online { pending, .. }) = self.users().get_mut(&user) {
            msgs.append(pending);
            *pending = msgs;
        }
    }

    /// Loop thread of `conn`: the live pushes waiting for it, if it holds `user`.
    pub fn take_pending(&self, user: UserId, conn: ConnRef) -> Vec<Arc<str>> {
        match self.users().get_mut(&user) {
            Some(Entry::Online { conn: c, pending, .. }) if *c == conn => std::mem::take(pending),
            _ => Vec::new(),
        }
    }

    /// Pushes a closed connection left unsent for `user`, oldest first. Hold the lock.
    pub fn take_leftovers(&self, user: UserId) -> Vec<Arc<str>> {
        match self.users().get_mut(&user) {
            Some(Entry::Leaving(_, unsent)) => std::mem::take(unsent),
            _ => Vec::new(),
        }
    }

    /// Puts back leftovers that could not be stored, ahead of any newer ones.
    pub fn restore_leftovers(&self, user: UserId, mut msgs: Vec<Arc<str>>) {
        if let Some(Entry::Leaving(_, unsent)) = self.users().get_mut(&user) {
            msgs.append(unsent);
            *unsent = msgs;
        }
    }

    /// Loop thread, as `conn` closes: keeps its unsent pushes for `user` in the entry,
    /// followed by the pending live pushes and the remote pushes not yet handed over.
    /// Returns them back if `conn` no longer holds `user`.
    pub fn mark_leaving(&self, user: UserId, conn: ConnRef, mut unsent: Vec<Arc<str>>) -> Vec<Arc<str>> {
        let mut users = self.users();
        match users.remove(&user) {
            Some(Entry::Online { conn: c, mut pending, mut inbox, .. }) if c == conn => {
                unsent.append(&mut pending);
                unsent.append(&mut inbox);
                users.insert(user, Entry::Leaving(conn, unsent));
                Vec::new()
            }
            Some(other) => {
                users.insert(user, other);
                unsent
            }
            None => unsent,
        }
    }

    /// Bus thread: a push from another server for `user`. Queued on the entry; true when
    /// the queue was empty, so the caller must have a worker hand it over. `Err` gives
    /// it back when no entry holds `user` (the caller stores it).
    pub fn incoming(&self, user: UserId, push: Arc<str>) -> Result<bool, Arc<str>> {
        match self.users().get_mut(&user) {
            Some(Entry::Online { inbox, .. }) => {
                inbox.push(push);
                Ok(inbox.len() == 1)
            }
            Some(Entry::Leaving(_, unsent)) => {
                unsent.push(push);
                Ok(false)
            }
            None => Err(push),
        }
    }

    /// Takes the remote pushes waiting for `user`. Hold the lock.
    pub fn take_inbox(&self, user: UserId) -> Vec<Arc<str>> {
        match self.users().get_mut(&user) {
            Some(Entry::Online { inbox, .. }) => std::mem::take(inbox),
            _ => Vec::new(),
        }
    }

    /// Takes every push waiting for `user` (pending live ones, then remote ones), for a
    /// logout to store. Hold the lock.
    pub fn take_waiting(&self, user: UserId) -> Vec<Arc<str>> {
        match self.users().get_mut(&user) {
            Some(Entry::Online { pending, inbox, .. }) => {
                let mut msgs = std::mem::take(pending);
                msgs.append(inbox);
                msgs
            }
            _ => Vec::new(),
        }
    }

    /// The connection holding `user`, if a live one does.
    pub fn conn_of(&self, user: UserId) -> Option<ConnRef> {
        match self.users().get(&user) {
            Some(Entry::Online { conn, .. }) => Some(*conn),
            _ => None,
        }
    }

    /// Whether `user`'s entry, live or leaving, belongs to `conn`.
    pub fn is_entry_of(&self, user: UserId, conn: ConnRef) -> bool {
        matches!(self.users().get(&user), Some(Entry::Online { conn: c, .. }) | Some(Entry::Leaving(c, _)) if *c == conn)
    }

    /// Removes `user`'s entry if it belongs to `conn`; true if it did.
    /// Hold the lock and store `take_leftovers` first.
    pub fn disconnect(&self, user: UserId, conn: ConnRef) -> bool {
        let mut users = self.users();
        let held =
            matches!(users.get(&user), Some(Entry::Online { conn: c, .. }) | Some(Entry::Leaving(c, _)) if *c == conn);
        if held {
            users.remove(&user);
        }
        held
    }

    /// Every user with an entry, live or leaving.
    pub fn all_users(&self) -> Vec<UserId> {
        self.users().keys().copied().collect()
    }
}
