//! `Publishers`: the pool of publishing connections (the redis crate's sync client).
//!
//! Runs on the calling thread: workers publishing, ringing and asking `PUBSUB NUMSUB`,
//! and any thread in `RedisBus::subscribe`/`unsubscribe` publishing the subscriber's
//! wake-up. Each connection has a connect timeout of 500 ms and read/write timeouts of
//! 2 s, so calls fail fast during an outage; a connection that failed is dropped, never
//! returned to the pool.

use std::sync::Mutex;

use log::debug;
use redis::{ConnectionLike, RedisResult};

use super::{bus_err, lock, CONNECT_TIMEOUT, IO_TIMEOUT};
use crate::bus::BusError;

/// Idle publishing connections kept; more are closed when returned.
const MAX_IDLE_PUBLISHERS: usize = 16;

pub(super) struct Publishers {
    client: redis::Client,
    idle: Mutex<Vec<redis::Connection>>,
}

impl Publishers {
    pub(super) fn new(client: redis::Client) -> Publishers {
        Publishers { client, idle: Mutex::new(Vec::new()) }
    }

    fn open(&self) -> RedisResult<redis::Connection> {
        let con = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
        con.set_read_timeout(Some(IO_TIMEOUT))?;
        con.set_write_timeout(Some(IO_TIMEOUT))?;
        Ok(con)
    }

    /// Runs `f` on a pooled connection, or a new one. A pooled connection found closed
    /// (Redis restarted since it was last used) is replaced once, along with the rest of
    /// the pool; a connection that failed is never returned to the pool.
    pub(super) fn run<T>(
        &self,
        what: &str,
        mut f: impl FnMut(&mut redis::Connection) -> RedisResult<T>,
    ) -> Result<T, BusError> {
        let pooled = lock(&self.idle).pop();
        if let Some(mut con) = pooled {
            match f(&mut con) {
                Ok(v) => {
                    self.put(con);
                    return Ok(v);
                }
                Err(e) if e.is_connection_dropped() && !e.is_timeout() => {
                    debug!("redis bus: pooled connection closed ({e}); retrying on a new one");
                    lock(&self.idle).clear();
                }
                Err(e) => return Err(bus_err(what, e)),
            }
        }
        let mut con = self.open().map_err(|e| bus_err(what, e))?;
        let v = f(&mut con).map_err(|e| bus_err(what, e))?;
        self.put(con);
        Ok(v)
    }

    fn put(&self, con: redis::Connection) {
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE_PUBLISHERS && con.is_open() {
            idle.push(con);
        }
    }
}
