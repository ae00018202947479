//! Chat messages sent but not yet acknowledged, in the order they were typed, each with
//! its `cmid` (protocol §8).
//!
//! Every ONE_CHAT and GROUP_CHAT gets a fresh cmid when it is queued and keeps it for
//! good. The main thread sends from the front: an ACK (errno 0, or a refusal such as
//! 404) settles the message; no ACK before the connection dropped, no answer in time,
//! 503 or 429 keep it, and it is sent again, with the same cmid, after a reconnect or
//! a pause; the server then delivers it exactly once. Messages behind an unsettled one
//! wait for it, so one recipient still gets them in the order they were typed. Pure
//! bookkeeping, no I/O.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use rand_core::{OsRng, RngCore};
use serde_json::Value;

use super::commands::Command;
use super::error::ClientError;
use super::render::errno_of;
use crate::proto::msg::errno;

/// The first pause before sending again after 503, 429 or no answer; it doubles up to
/// [`MAX_PAUSE`].
pub const FIRST_PAUSE: Duration = Duration::from_secs(1);
pub const MAX_PAUSE: Duration = Duration::from_secs(30);

/// A chat message waiting for its ACK.
#[derive(Debug, Clone, PartialEq)]
pub struct Unsent {
    pub cmd: Command,
    /// The request as sent, `cmid` included.
    pub request: Value,
}

impl Unsent {
    pub fn cmid(&self) -> &str {
        self.request.get("cmid").and_then(Value::as_str).unwrap_or_default()
    }
}

/// Why a message is still unsent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Again {
    /// 503 or 429: the server could not take it now.
    Busy,
    /// No answer within the reply timeout.
    NoReply,
    /// The connection ended before the answer: sent again after reconnecting.
    Lost(String),
}

/// What an answer means for the message at the front.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Done with it, for better or worse: the reply says how.
    Settled(Value),
    Again(Again),
}

/// Fresh cmids: a random prefix per client run and a counter, so two runs (or two
/// clients of one user) never pick the same one.
#[derive(Debug)]
struct Cmids {
    prefix: String,
    next: u64,
}

impl Cmids {
    fn new() -> Cmids {
        let mut bytes = [0u8; 8];
        if OsRng.try_fill_bytes(&mut bytes).is_err() {
            // No system randomness: the clock and the process id still differ per run.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            bytes = (nanos ^ (u64::from(std::process::id()) << 40)).to_le_bytes();
        }
        Cmids { prefix: bytes.iter().map(|b| format!("{b:02x}")).collect(), next: 1 }
    }

    fn fresh(&mut self) -> String {
        let n = self.next;
        self.next += 1;
        format!("{}-{n}", self.prefix)
    }
}

/// The queue of unacknowledged chat messages.
#[derive(Debug)]
pub struct Outbox {
    queue: VecDeque<Unsent>,
    cmids: Cmids,
    /// When to send again after a failure, and the pause that led there.
    retry: Option<(Instant, Duration)>,
}

impl Default for Outbox {
    fn default() -> Outbox {
        Outbox { queue: VecDeque::new(), cmids: Cmids::new(), retry: None }
    }
}

/// What `result`, the answer to a chat message, means.
pub fn verdict(result: &Result<Value, ClientError>) -> Verdict {
    match result {
        Ok(reply) if matches!(errno_of(reply), errno::UNAVAILABLE | errno::TOO_MANY) => Verdict::Again(Again::Busy),
        Ok(reply) => Verdict::Settled(reply.clone()),
        Err(ClientError::NoReply { .. }) => Verdict::Again(Again::NoReply),
        Err(ClientError::Lost { reason, .. }) => Verdict::Again(Again::Lost(reason.clone())),
        Err(other) => Verdict::Again(Again::Lost(other.to_string())),
    }
}

impl Outbox {
    /// Queues a chat message; `request` gets a fresh cmid.
    pub fn queue(&mut self, cmd: Command, mut request: Value) {
        if let Value::Object(fields) = &mut request {
            fields.insert("cmid".into(), self.cmids.fresh().into());
        }
        self.queue.push_back(Unsent { cmd, request });
    }

    /// The message to send next.
    pub fn front(&self) -> Option<&Unsent> {
        self.queue.front()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Records the answer to the front message: settled ones leave the queue; the
    /// others stay and the pause before the next try grows.
    pub fn settle(&mut self, result: &Result<Value, ClientError>, now: Instant) -> Verdict {
        let v = verdict(result);
        match &v {
            Verdict::Settled(_) => {
                self.queue.pop_front();
                self.retry = None;
            }
            Verdict::Again(_) => {
                let pause = match self.retry {
                    Some((_, last)) => (last * 2).min(MAX_PAUSE),
                    None => FIRST_PAUSE,
                };
                self.retry = Some((now + pause, pause));
            }
        }
        v
    }

    /// When the front message is due again after a failure; `None` when nothing waits
    /// for a pause (empty, or never failed).
    pub fn due(&self) -> Option<Instant> {
        self.retry.filter(|_| !self.queue.is_empty()).map(|(at, _)| at)
    }

    /// Whether sending may start now (nothing failed, or the pause is over).
    pub fn ready(&self, now: Instant) -> bool {
        self.due().is_none_or(|at| at <= now)
    }

    /// Sends may start at once (a new connection), keeping the grown pause for later
    /// failures.
    pub fn wake(&mut self, now: Instant) {
        if let Some((at, _)) = &mut self.retry {
            *at = now;
        }
    }

    /// Gives up on everything queued (logging out, leaving): what was never acknowledged.
    pub fn take_all(&mut self) -> Vec<Unsent> {
        self.retry = None;
        self.queue.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chat(to: i64, msg: &str) -> (Command, Value) {
        let cmd = Command::Chat { to, msg: msg.into() };
        let req = cmd.request(1, "ann", "t").unwrap_or_default();
        (cmd, req)
    }

    fn lost() -> Result<Value, ClientError> {
        Err(ClientError::Lost { server: "s".into(), reason: "reset".into() })
    }

    #[test]
    fn every_message_gets_its_own_short_cmid() {
        let mut out = Outbox::default();
        let (c, r) = chat(2, "a");
        out.queue(c.clone(), r.clone());
        out.queue(c, r);
        let a = out.take_all();
        let (x, y) = (a[0].cmid().to_owned(), a[1].cmid().to_owned());
        assert!(!x.is_empty() && x != y && x.chars().count() <= 64, "{x} {y}");
        assert_eq!(a[0].request["msg"], "a");
        // Another client run picks other cmids.
        let mut other = Outbox::default();
        let (c, r) = chat(2, "a");
        other.queue(c, r);
        assert_ne!(other.front().map(Unsent::cmid), Some(x.as_str()));
    }

    #[test]
    fn only_an_ack_or_a_refusal_settles_a_message() {
        for (result, settled) in [
            (Ok(json!({"msgid": 15, "errno": 0, "mid": 9})), true),
            (Ok(json!({"msgid": 15, "errno": 404})), true),
            (Ok(json!({"msgid": 15, "errno": 403})), true),
            (Ok(json!({"msgid": 15, "errno": 503})), false),
            (Ok(json!({"msgid": 15, "errno": 429})), false),
            (Err(ClientError::NoReply { server: "s".into(), after: Duration::from_secs(1) }), false),
            (lost(), false),
        ] {
            assert_eq!(matches!(verdict(&result), Verdict::Settled(_)), settled, "{result:?}");
        }
        assert_eq!(verdict(&lost()), Verdict::Again(Again::Lost("reset".into())));
    }

    #[test]
    fn an_unsettled_message_keeps_its_cmid_and_its_place() {
        let t0 = Instant::now();
        let mut out = Outbox::default();
        for m in ["first", "second"] {
            let (c, r) = chat(2, m);
            out.queue(c, r);
        }
        let sent = out.front().cloned();
        assert!(out.ready(t0));
        assert_eq!(out.settle(&lost(), t0), Verdict::Again(Again::Lost("reset".into())));
        // Sent again: the very same request, cmid and all, still ahead of the second.
        assert_eq!(out.front().cloned(), sent);
        assert!(!out.ready(t0) && out.ready(t0 + FIRST_PAUSE));
        out.wake(t0);
        assert!(out.ready(t0));
        assert!(matches!(out.settle(&Ok(json!({"errno": 0})), t0), Verdict::Settled(_)));
        assert_eq!(out.front().map(|u| u.request["msg"].clone()), Some(json!("second")));
        assert_eq!(out.due(), None);
    }

    #[test]
    fn pauses_double_up_to_a_limit() {
        let t0 = Instant::now();
        let mut out = Outbox::default();
        let (c, r) = chat(2, "x");
        out.queue(c, r);
        let busy = Ok(json!({"errno": 503}));
        let mut pauses = Vec::new();
        for _ in 0..8 {
            out.settle(&busy, t0);
            pauses.push(out.due().map(|at| at - t0).unwrap_or_default().as_secs());
        }
        assert_eq!(pauses, vec![1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(out.take_all().len(), 1);
        assert!(out.is_empty() && out.due().is_none());
    }
}
