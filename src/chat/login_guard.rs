//! `LoginGuard`: slows down password guessing, per account id.
//!
//! Each id may fail LOGIN `BURST` times, then earns one more try every
//! `1 / REFILL_PER_SEC` seconds; meanwhile LOGIN for it gets errno 429 before any
//! password is hashed. Unknown ids are counted the same way, so the answers never tell
//! whether an account exists. Shared by the workers; the lock is held only for a lookup.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::store::UserId;

const BURST: f64 = 10.0;
const REFILL_PER_SEC: f64 = 1.0;
/// Ids tracked at most; past it, ids whose allowance has refilled are forgotten.
const MAX_TRACKED: usize = 100_000;

#[derive(Default)]
pub struct LoginGuard {
    tries: Mutex<HashMap<UserId, (f64, Instant)>>,
}

impl LoginGuard {
    fn allowance(tokens: f64, since: Instant, now: Instant) -> f64 {
        (tokens + now.saturating_duration_since(since).as_secs_f64() * REFILL_PER_SEC).min(BURST)
    }

    /// Whether `id` may try a password now.
    pub fn may_try(&self, id: UserId) -> bool {
        let tries = self.tries.lock().unwrap_or_else(|p| p.into_inner());
        tries.get(&id).is_none_or(|(tokens, since)| Self::allowance(*tokens, *since, Instant::now()) >= 1.0)
    }

    /// A wrong password (or unknown id) for `id`.
    pub fn failed(&self, id: UserId) {
        let now = Instant::now();
        let mut tries = self.tries.lock().unwrap_or_else(|p| p.into_inner());
        if tries.len() >= MAX_TRACKED {
            tries.retain(|_, (tokens, since)| Self::allowance(*tokens, *since, now) < BURST);
        }
        let (tokens, since) = tries.entry(id).or_insert((BURST, now));
        *tokens = (Self::allowance(*tokens, *since, now) - 1.0).max(0.0);
        *since = now;
    }

    /// A successful login forgets earlier failures.
    pub fn succeeded(&self, id: UserId) {
        self.tries.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_blocked_then_forgotten_on_success() {
        let g = LoginGuard::default();
        for _ in 0..BURST as usize {
            assert!(g.may_try(7));
            g.failed(7);
        }
        assert!(!g.may_try(7));
        assert!(g.may_try(8), "other ids are not affected");
        g.succeeded(7);
        assert!(g.may_try(7));
    }
}
