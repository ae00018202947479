//! What the client has been handed: chat messages are shown once each, whatever the
//! server hands again, and every mid received is confirmed with RECEIVED (protocol §9).
//!
//! A v2 server hands a message again when its confirmation did not reach it (the
//! connection dropped first); the client recognises the repeat by its `mid` and drops
//! it, but confirms it again. A message without a mid (a server without §7) is always
//! shown and never confirmed. Pure bookkeeping: the push printer thread and the main
//! thread (offline messages in LOGIN_ACK) share one `Inbox` behind a mutex.

use std::collections::{HashSet, VecDeque};

use serde_json::{json, Value};

pub use crate::proto::msg::RECEIVED;

/// The most mids one RECEIVED may carry.
pub const MAX_MIDS_PER_RECEIVED: usize = 1000;

/// How many mids the client remembers: well over the server's default limit of
/// unconfirmed pushes per session (10,000), which bounds what can come again.
pub const REMEMBERED_MIDS: usize = 65_536;

/// The mids seen recently, oldest forgotten first.
#[derive(Debug)]
pub struct Inbox {
    seen: HashSet<i64>,
    order: VecDeque<i64>,
    capacity: usize,
}

/// A batch of messages sorted out: what to show, and what to confirm.
#[derive(Debug, Default, PartialEq)]
pub struct Sorted {
    /// New messages, in the order they came.
    pub show: Vec<Value>,
    /// Every mid of the batch, repeats included, for RECEIVED.
    pub confirm: Vec<i64>,
}

/// A message's mid, when it has one.
pub fn mid_of(message: &Value) -> Option<i64> {
    message.get("mid").and_then(Value::as_i64)
}

impl Default for Inbox {
    fn default() -> Inbox {
        Inbox::with_capacity(REMEMBERED_MIDS)
    }
}

impl Inbox {
    /// An inbox that remembers the last `capacity` mids.
    pub fn with_capacity(capacity: usize) -> Inbox {
        Inbox { seen: HashSet::new(), order: VecDeque::new(), capacity: capacity.max(1) }
    }

    /// Forgets everything (a new login: mids shown to another account say nothing).
    pub fn clear(&mut self) {
        self.seen.clear();
        self.order.clear();
    }

    /// Sorts out `batch`: drops repeats by mid (within the batch too), keeps the rest in
    /// order, and lists every mid to confirm.
    pub fn sort(&mut self, batch: Vec<Value>) -> Sorted {
        let mut out = Sorted::default();
        for message in batch {
            let Some(mid) = mid_of(&message) else {
                out.show.push(message);
                continue;
            };
            out.confirm.push(mid);
            if self.remember(mid) {
                out.show.push(message);
            }
        }
        out
    }

    /// Whether `mid` is new; remembers it.
    fn remember(&mut self, mid: i64) -> bool {
        if !self.seen.insert(mid) {
            return false;
        }
        self.order.push_back(mid);
        if self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}

/// The RECEIVED frames that confirm `mids`: none for none, at most
/// [`MAX_MIDS_PER_RECEIVED`] each.
pub fn received(mids: &[i64]) -> Vec<Value> {
    mids.chunks(MAX_MIDS_PER_RECEIVED).map(|chunk| json!({"msgid": RECEIVED, "mids": chunk})).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(mid: Option<i64>, msg: &str) -> Value {
        let mut v = json!({"msgid": 6, "id": 1, "name": "ann", "toid": 2, "msg": msg, "time": "t"});
        if let (Some(mid), Value::Object(m)) = (mid, &mut v) {
            m.insert("mid".into(), mid.into());
        }
        v
    }

    fn msgs(sorted: &Sorted) -> Vec<&str> {
        sorted.show.iter().filter_map(|m| m["msg"].as_str()).collect()
    }

    #[test]
    fn repeats_are_dropped_by_mid_but_confirmed_again() {
        let mut inbox = Inbox::default();
        let first = inbox.sort(vec![chat(Some(10), "a"), chat(Some(11), "b")]);
        assert_eq!((msgs(&first), &first.confirm), (vec!["a", "b"], &vec![10, 11]));
        // The server hands 11 again (its RECEIVED was lost), with a new one, and a repeat
        // inside the batch.
        let again = inbox.sort(vec![chat(Some(11), "b"), chat(Some(12), "c"), chat(Some(12), "c")]);
        assert_eq!((msgs(&again), &again.confirm), (vec!["c"], &vec![11, 12, 12]));
    }

    #[test]
    fn messages_without_a_mid_are_shown_and_not_confirmed() {
        let mut inbox = Inbox::default();
        let s = inbox.sort(vec![chat(None, "x"), chat(None, "x"), json!({"msgid": 6, "mid": "7"})]);
        assert_eq!(s.show.len(), 3);
        assert!(s.confirm.is_empty());
        assert!(received(&s.confirm).is_empty());
    }

    #[test]
    fn the_oldest_mids_are_forgotten_first() {
        let mut inbox = Inbox::with_capacity(2);
        inbox.sort(vec![chat(Some(1), "a"), chat(Some(2), "b"), chat(Some(3), "c")]);
        assert_eq!(msgs(&inbox.sort(vec![chat(Some(3), "c"), chat(Some(2), "b")])), Vec::<&str>::new());
        assert_eq!(msgs(&inbox.sort(vec![chat(Some(1), "a")])), vec!["a"]);
        inbox.clear();
        assert_eq!(msgs(&inbox.sort(vec![chat(Some(3), "c")])), vec!["c"]);
    }

    #[test]
    fn received_frames_hold_at_most_1000_mids() {
        let mids: Vec<i64> = (1..=2001).collect();
        let frames = received(&mids);
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0]["msgid"], 18);
        assert_eq!(frames[0]["mids"].as_array().map(Vec::len), Some(1000));
        assert_eq!(frames[2]["mids"], json!([2001]));
    }
}
