//! `Registry`: which local connection holds which user, the live pushes waiting for
//! each, and each user's delivery lock.
//!
//! Shared by every thread. The map's mutex is held only for a lookup or an update,
//! never across I/O, so loop threads may take it. The per-user delivery lock (striped)
//! is held by worker threads across a login's "become reachable, read the inbox, send
//! LOGIN_ACK", a pumped batch, and a logout. Never held by a loop thread.
//!
//! Every message is in the log, and in each recipient's inbox, before anyone offers
//! it (see `delivery`), so nothing here is the only copy of anything: a push that is
//! dropped here (its user left, the connection closed before writing it) is still owed
//! and comes from the inbox at the next login. What the registry adds is order and
//! exactly-once within a session:
//!
//! - `offer` appends a live push to the entry's `pending` queue under the map's mutex,
//!   and the user's loop writes the queue out (`delivery::flush_pending`). Nobody waits.
//! - While the inbox is being handed over (a login's LOGIN_ACK page, then the pump),
//!   the entry is `backlog`ged: offers wait in `held`, so no live push overtakes older
//!   owed messages. When the inbox is drained, `open` moves `held` to `pending`, less
//!   what the handover already gave (a message can be in the inbox and offered live at
//!   once: it was committed before it was offered).
//! - For a while after that, a late offer of a message the handover gave is dropped.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::net::ConnRef;
use crate::store::{Mid, UserId};

const STRIPES: usize = 1024;

/// How long after a handover a live offer of a message it gave may still arrive (the
/// sender's server commits, then offers or publishes: milliseconds, unless loaded).
const LATE_OFFER: Duration = Duration::from_secs(30);

/// A push as it travels to a connection: the message's mid and the push's JSON text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Push {
    pub mid: Mid,
    pub text: Arc<str>,
}

struct Entry {
    conn: ConnRef,
    /// The inbox is being handed over: live pushes wait in `held`.
    backlog: bool,
    /// Live pushes taken for the connection and not yet written by its loop.
    pending: Vec<Push>,
    /// Live pushes offered during the backlog.
    held: Vec<Push>,
    /// Mids the handover gave this session, and since when it is over.
    handed: HashSet<Mid>,
    opened: Option<Instant>,
    /// The highest mid the handover read from the inbox: the pump goes on after it.
    cursor: Mid,
}

pub struct Registry {
    users: Mutex<HashMap<UserId, Entry>>,
    stripes: Box<[Mutex<()>]>,
}

/// What became of a push offered to a user (see `Registry::offer`).
#[derive(Debug, PartialEq, Eq)]
pub enum Offer {
    /// Queued behind other pending pushes (or held, or a repeat): nothing to do.
    Taken,
    /// Queued first: a task on this connection's loop must write the queue.
    Flush(ConnRef),
    /// No live connection here holds the user.
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
        self.users().contains_key(&user)
    }

    /// Whether `conn` is the live connection holding `user`.
    pub fn holds(&self, user: UserId, conn: ConnRef) -> bool {
        matches!(self.users().get(&user), Some(e) if e.conn == conn)
    }

    /// The connection holding `user`, if a live one does.
    pub fn conn_of(&self, user: UserId) -> Option<ConnRef> {
        self.users().get(&user).map(|e| e.conn)
    }

    /// Makes `conn` hold `user`, unless another live connection does (`Err` with it).
    /// The entry starts backlogged. Hold the user's lock.
    pub fn connect(&self, user: UserId, conn: ConnRef) -> Result<(), ConnRef> {
        let mut users = self.users();
        if let Some(e) = users.get(&user) {
            return Err(e.conn);
        }
        let entry = Entry {
            conn,
            backlog: true,
            pending: Vec::new(),
            held: Vec::new(),
            handed: HashSet::new(),
            opened: None,
            cursor: 0,
        };
        users.insert(user, entry);
        Ok(())
    }

    /// Any thread, without the user's lock: offers a live push to `user`.
    pub fn offer(&self, user: UserId, push: Push) -> Offer {
        let mut users = self.users();
        let Some(e) = users.get_mut(&user) else { return Offer::NotHere };
        if e.backlog {
            e.held.push(push);
            return Offer::Taken;
        }
        if e.opened.is_some_and(|at| at.elapsed() > LATE_OFFER) {
            e.handed = HashSet::new();
            e.opened = None;
        }
        if e.handed.contains(&push.mid) {
            return Offer::Taken;
        }
        e.pending.push(push);
        if e.pending.len() == 1 {
            Offer::Flush(e.conn)
        } else {
            Offer::Taken
        }
    }

    /// Loop thread of `conn`: the live pushes waiting for it, if it holds `user`.
    pub fn take_pending(&self, user: UserId, conn: ConnRef) -> Vec<Push> {
        match self.users().get_mut(&user) {
            Some(e) if e.conn == conn => std::mem::take(&mut e.pending),
            _ => Vec::new(),
        }
    }

    /// The handover is about to read `user`'s inbox for `conn`: where to go on from
    /// (`None` when `conn` no longer holds `user`). With `restart` (the bus resubscribed: the
    /// bus may have lost pushes) it reads from the start and the entry takes offers
    /// into `held` again. Hold the lock.
    pub fn begin_handover(&self, user: UserId, conn: ConnRef, restart: bool) -> Option<Mid> {
        let mut users = self.users();
        let e = users.get_mut(&user).filter(|e| e.conn == conn)?;
        if restart {
            e.backlog = true;
            e.cursor = 0;
        }
        Some(e.cursor)
    }

    /// The handover gave `conn` these mids (read from the inbox, oldest first). Hold
    /// the lock.
    pub fn handed(&self, user: UserId, conn: ConnRef, mids: &[Mid]) {
        if let Some(e) = self.users().get_mut(&user).filter(|e| e.conn == conn) {
            e.handed.extend(mids);
            if let Some(&last) = mids.last() {
                e.cursor = e.cursor.max(last);
            }
        }
    }

    /// The inbox is drained: live pushes go straight to the connection again, starting
    /// with those held meanwhile that the handover did not give. True when the caller
    /// must have the loop flush. Hold the lock.
    pub fn open(&self, user: UserId, conn: ConnRef) -> bool {
        let mut users = self.users();
        let Some(e) = users.get_mut(&user).filter(|e| e.conn == conn) else { return false };
        e.backlog = false;
        e.opened = Some(Instant::now());
        let handed = &e.handed;
        let held: Vec<Push> = std::mem::take(&mut e.held).into_iter().filter(|p| !handed.contains(&p.mid)).collect();
        let first = e.pending.is_empty();
        e.pending.extend(held);
        first && !e.pending.is_empty()
    }

    /// Removes `user`'s entry if it belongs to `conn`; true if it did. Whatever was
    /// waiting in it is still owed, in the inbox.
    pub fn disconnect(&self, user: UserId, conn: ConnRef) -> bool {
        let mut users = self.users();
        let held = matches!(users.get(&user), Some(e) if e.conn == conn);
        if held {
            users.remove(&user);
        }
        held
    }

    /// Every user with an entry.
    pub fn all_users(&self) -> Vec<UserId> {
        self.users().keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(mid: Mid) -> Push {
        Push { mid, text: Arc::from(format!("{{\"mid\":{mid}}}")) }
    }

    fn conn(key: u32) -> ConnRef {
        ConnRef { loop_index: 0, key, generation: 1 }
    }

    fn mids(pushes: Vec<Push>) -> Vec<Mid> {
        pushes.into_iter().map(|p| p.mid).collect()
    }

    #[test]
    fn one_connection_holds_a_user() {
        let r = Registry::default();
        assert_eq!(r.connect(1, conn(1)), Ok(()));
        assert_eq!(r.connect(1, conn(2)), Err(conn(1)));
        assert!(r.holds(1, conn(1)) && !r.holds(1, conn(2)));
        assert!(!r.disconnect(1, conn(2)));
        assert!(r.disconnect(1, conn(1)));
        assert!(!r.is_online(1));
        assert_eq!(r.offer(1, push(1)), Offer::NotHere);
    }

    #[test]
    fn offers_wait_while_the_inbox_is_handed_over() {
        let r = Registry::default();
        r.connect(1, conn(1)).unwrap();
        assert_eq!(r.offer(1, push(5)), Offer::Taken);
        assert_eq!(r.offer(1, push(6)), Offer::Taken);
        assert!(r.take_pending(1, conn(1)).is_empty(), "nothing live before the handover ends");
        assert_eq!(r.begin_handover(1, conn(1), false), Some(0));
        r.handed(1, conn(1), &[3, 5]);
        assert_eq!(r.begin_handover(1, conn(1), false), Some(5), "the pump goes on after the handover");
        assert!(r.open(1, conn(1)), "6 was held and not handed");
        assert_eq!(mids(r.take_pending(1, conn(1))), vec![6]);
    }

    #[test]
    fn a_late_offer_of_a_handed_message_is_dropped() {
        let r = Registry::default();
        r.connect(1, conn(1)).unwrap();
        r.handed(1, conn(1), &[7]);
        assert!(!r.open(1, conn(1)));
        assert_eq!(r.offer(1, push(7)), Offer::Taken);
        assert_eq!(r.offer(1, push(8)), Offer::Flush(conn(1)));
        assert_eq!(r.offer(1, push(9)), Offer::Taken, "one flush task per batch");
        assert_eq!(mids(r.take_pending(1, conn(1))), vec![8, 9]);
        assert!(r.take_pending(1, conn(2)).is_empty(), "another connection gets nothing");
    }

    #[test]
    fn a_restarted_handover_reads_from_the_start_and_holds_offers() {
        let r = Registry::default();
        r.connect(1, conn(1)).unwrap();
        r.handed(1, conn(1), &[4]);
        r.open(1, conn(1));
        assert_eq!(r.begin_handover(1, conn(1), true), Some(0));
        assert_eq!(r.offer(1, push(10)), Offer::Taken);
        assert!(r.take_pending(1, conn(1)).is_empty());
        assert!(r.open(1, conn(1)));
        assert_eq!(mids(r.take_pending(1, conn(1))), vec![10]);
        assert_eq!(r.begin_handover(1, conn(2), false), None);
    }
}
