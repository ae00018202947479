//! `ConnPool`: the MySQL backend's connections, at most `max`, opened on demand.
//!
//! Worker threads only (everything here may block on the network, never for long: the
//! connections' own connect, read and write timeouts bound each step).
//!
//! Why not the `mysql` crate's `Pool`: it connects and pings under its lock, so when the
//! database stops answering, workers queue behind one another's timeouts; and it takes
//! back a connection whose read timed out, whose late reply the next user would read
//! as its own. Here:
//! - nothing waits on the network under the lock;
//! - an idle connection is pinged before use: one that died while idle (the database
//!   restarted) is closed and the next one tried, then a new one;
//! - a connection whose read or write failed is closed, never given back;
//! - a database that does not answer in time is *stalled*: for [`STALL_RETRY`] every
//!   call fails at once instead of waiting out the timeout again; then one call tries
//!   it (the others still fail at once), and its outcome ends the stall or renews it.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ::mysql::{Conn, DriverError, Error, Opts};

/// How long calls fail at once after the database did not answer in time.
pub const STALL_RETRY: Duration = Duration::from_secs(1);

pub struct ConnPool {
    opts: Opts,
    max: usize,
    /// How long a caller waits for a connection while all `max` are in use.
    wait: Duration,
    state: Mutex<State>,
    /// Signalled when a connection goes back idle or is closed.
    freed: Condvar,
    stall: Stall,
}

struct State {
    idle: Vec<Conn>,
    /// Connections idle or in use.
    open: usize,
}

impl ConnPool {
    /// A pool of at most `max` connections as `opts` says, one of them opened now,
    /// which proves the database is reachable.
    pub fn new(opts: Opts, max: usize, wait: Duration) -> Result<ConnPool, Error> {
        let first = Conn::new(opts.clone())?;
        Ok(ConnPool {
            opts,
            max: max.max(1),
            wait,
            state: Mutex::new(State { idle: vec![first], open: 1 }),
            freed: Condvar::new(),
            stall: Stall::new(STALL_RETRY),
        })
    }

    /// Runs `work` on a connection of its own. The connection goes back to the pool
    /// unless `work` failed with an error (found by `cause`) that leaves it unusable.
    pub fn run<T, E: From<Error>>(
        &self,
        work: impl FnOnce(&mut Conn) -> Result<T, E>,
        cause: impl Fn(&E) -> Option<&Error>,
    ) -> Result<T, E> {
        let (mut conn, slot) = self.get()?;
        let out = work(&mut conn);
        match out.as_ref().err().and_then(cause) {
            Some(e) if is_broken(e) => {
                self.stall.failed(e);
                drop((conn, slot));
            }
            _ => self.put(conn, slot),
        }
        out
    }

    /// An idle connection that answers a ping, or a new one.
    fn get(&self) -> Result<(Conn, Slot<'_>), Error> {
        self.stall.check()?;
        let deadline = Instant::now() + self.wait;
        loop {
            let (idle, slot) = self.take(deadline)?;
            let fresh = idle.is_none();
            let conn = match idle {
                Some(mut conn) => conn.ping().map(|()| conn),
                None => Conn::new(self.opts.clone()),
            };
            match conn {
                Ok(conn) => {
                    self.stall.answered();
                    return Ok((conn, slot));
                }
                Err(e) => {
                    // The failed connection is gone; so is its slot.
                    self.stall.failed(&e);
                    if fresh || timed_out(&e) {
                        return Err(e);
                    }
                    log::debug!("mysql: an idle connection is dead ({e}); trying the next");
                }
            }
        }
    }

    /// An idle connection, or `None` and a slot for a new one; waits until `deadline`
    /// while all `max` are in use.
    fn take(&self, deadline: Instant) -> Result<(Option<Conn>, Slot<'_>), Error> {
        let mut state = self.lock();
        loop {
            if let Some(conn) = state.idle.pop() {
                return Ok((Some(conn), Slot(self)));
            }
            if state.open < self.max {
                state.open += 1;
                return Ok((None, Slot(self)));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(DriverError::Timeout.into());
            }
            state = self.freed.wait_timeout(state, left).unwrap_or_else(|p| p.into_inner()).0;
        }
    }

    fn put(&self, conn: Conn, slot: Slot<'_>) {
        // The place stays taken, by an idle connection now.
        std::mem::forget(slot);
        self.lock().idle.push(conn);
        self.freed.notify_one();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One of the pool's `max` places, held by a connection in use. Dropped, the place is
/// free: the connection was closed (or dropped in a panic). `put` keeps it instead.
struct Slot<'a>(&'a ConnPool);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.lock().open -= 1;
        self.0.freed.notify_one();
    }
}

/// Whether the connection an error came from is unusable: a read or write failed
/// (part of a reply may still come) or the protocol lost its place. A server's error
/// reply leaves it fine.
pub fn is_broken(e: &Error) -> bool {
    matches!(e, Error::IoError(_) | Error::CodecError(_) | Error::DriverError(_))
}

/// Whether the database did not answer in time (a read, write or connect timeout).
fn timed_out(e: &Error) -> bool {
    let io = match e {
        Error::IoError(io) => Some(io),
        // The codec's error (its type is not exported) wraps the socket's.
        Error::CodecError(codec) => std::error::Error::source(codec).and_then(|s| s.downcast_ref::<io::Error>()),
        Error::DriverError(DriverError::ConnectTimeout) => return true,
        _ => None,
    };
    io.is_some_and(|io| matches!(io.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
}

/// Whether the database answers: see the module doc.
struct Stall {
    retry: Duration,
    epoch: Instant,
    /// Milliseconds after `epoch` until which calls fail at once; 0 while it answers.
    until: AtomicU64,
}

impl Stall {
    fn new(retry: Duration) -> Stall {
        Stall { retry, epoch: Instant::now(), until: AtomicU64::new(0) }
    }

    /// Never 0.
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    fn later(&self) -> u64 {
        self.now().saturating_add(u64::try_from(self.retry.as_millis()).unwrap_or(u64::MAX))
    }

    /// Fails while the database is stalled, except for the one call that tries it again.
    fn check(&self) -> Result<(), Error> {
        let until = self.until.load(Ordering::Acquire);
        if until == 0 {
            return Ok(());
        }
        let now = self.now();
        if now >= until && self.until.compare_exchange(until, self.later(), Ordering::AcqRel, Ordering::Acquire).is_ok()
        {
            return Ok(());
        }
        let why = "the database did not answer in time; trying it again shortly";
        Err(io::Error::other(why).into())
    }

    fn failed(&self, e: &Error) {
        if timed_out(e) && self.until.swap(self.later(), Ordering::AcqRel) == 0 {
            log::warn!("mysql: the database does not answer ({e}); failing fast, trying again every {:?}", self.retry);
        }
    }

    fn answered(&self) {
        if self.until.load(Ordering::Acquire) != 0 && self.until.swap(0, Ordering::AcqRel) != 0 {
            log::info!("mysql: the database answers again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: io::ErrorKind) -> Error {
        Error::IoError(io::Error::from(kind))
    }

    #[test]
    fn timeouts_and_broken_connections_are_told_apart() {
        let codec = Error::CodecError(io::Error::from(io::ErrorKind::WouldBlock).into());
        for e in [io(io::ErrorKind::WouldBlock), io(io::ErrorKind::TimedOut), codec] {
            assert!(timed_out(&e) && is_broken(&e), "{e}");
        }
        for e in [io(io::ErrorKind::ConnectionRefused), io(io::ErrorKind::BrokenPipe)] {
            assert!(!timed_out(&e) && is_broken(&e), "{e}");
        }
        let server = Error::MySqlError(::mysql::MySqlError { state: "23000".into(), message: "m".into(), code: 1062 });
        assert!(!timed_out(&server) && !is_broken(&server));
        assert!(timed_out(&Error::DriverError(DriverError::ConnectTimeout)));
    }

    #[test]
    fn a_stall_fails_calls_at_once_then_lets_one_try_again() {
        let stall = Stall::new(Duration::from_millis(100));
        assert!(stall.check().is_ok());
        stall.failed(&io(io::ErrorKind::ConnectionRefused));
        assert!(stall.check().is_ok(), "a refused connection is fast: no stall");
        stall.failed(&io(io::ErrorKind::WouldBlock));
        let failed = stall.check().err().map(|e| e.to_string()).unwrap_or_default();
        assert!(failed.contains("did not answer"), "{failed}");
        // The refusal is no timeout: a stall is not its own cause.
        assert!(stall.check().err().is_some_and(|e| !timed_out(&e)));
        std::thread::sleep(Duration::from_millis(120));
        assert!(stall.check().is_ok(), "one call tries again");
        assert!(stall.check().is_err(), "the others still fail at once");
        stall.answered();
        assert!(stall.check().is_ok() && stall.check().is_ok());
    }
}
