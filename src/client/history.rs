//! Paging back through a conversation (HISTORY, protocol §10): `history:2` shows the
//! latest page, the same command again the page before the oldest message shown, and so
//! on until the server says there is no more. Any other command starts over. Pure
//! bookkeeping for the main thread, no I/O.

use serde_json::Value;

use super::commands::Command;
use super::inbox::mid_of;
use super::render::errno_of;
use crate::proto::msg::errno;

pub use crate::proto::msg::HISTORY;

/// Messages per page: about a terminal's height.
pub const PAGE: i64 = 20;

/// Where the last page shown began.
#[derive(Debug, Default)]
pub struct Cursor {
    last: Option<Shown>,
}

#[derive(Debug)]
struct Shown {
    cmd: Command,
    /// The oldest mid on the page, if its messages had mids.
    oldest: Option<i64>,
    /// Whether the server said older messages exist.
    more: bool,
}

/// What to do for a history command.
#[derive(Debug, PartialEq)]
pub enum Next {
    /// Send this request; `older` when it continues the previous page.
    Send { request: Value, older: bool },
    /// The previous page was the first of the conversation.
    NoOlder,
}

impl Cursor {
    /// Any command but a repeated history command starts over.
    pub fn forget(&mut self) {
        self.last = None;
    }

    /// The request for history command `cmd`, whose plain `request` asks for the latest
    /// page: with `before` when `cmd` repeats the previous history command.
    pub fn next(&mut self, cmd: &Command, mut request: Value) -> Next {
        match self.last.as_ref().filter(|shown| shown.cmd == *cmd) {
            Some(Shown { more: false, .. }) | Some(Shown { oldest: None, .. }) => Next::NoOlder,
            Some(Shown { oldest: Some(oldest), .. }) => {
                if let Value::Object(fields) = &mut request {
                    fields.insert("before".into(), (*oldest).into());
                }
                Next::Send { request, older: true }
            }
            None => {
                self.last = None;
                Next::Send { request, older: false }
            }
        }
    }

    /// Records the reply to `cmd`'s page.
    pub fn record(&mut self, cmd: &Command, reply: &Value) {
        if errno_of(reply) != errno::OK {
            self.last = None;
            return;
        }
        let messages = reply.get("messages").and_then(Value::as_array);
        let oldest = messages.and_then(|m| m.iter().filter_map(mid_of).min());
        let more = reply.get("more").and_then(Value::as_bool).unwrap_or(false) && oldest.is_some();
        self.last = Some(Shown { cmd: cmd.clone(), oldest, more });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn page(mids: &[i64], more: bool) -> Value {
        let messages: Vec<Value> = mids.iter().map(|m| json!({"msgid": 6, "mid": m, "msg": "x"})).collect();
        json!({"msgid": 15, "req": 19, "errno": 0, "messages": messages, "more": more})
    }

    fn plain(cmd: &Command) -> Value {
        cmd.request(1, "ann", "").unwrap_or_default()
    }

    #[test]
    fn the_same_command_again_pages_back_until_the_start() {
        let h = Command::History { peer: 2 };
        let mut c = Cursor::default();
        assert_eq!(c.next(&h, plain(&h)), Next::Send { request: plain(&h), older: false });
        c.record(&h, &page(&[40, 41, 42], true));
        let Next::Send { request, older: true } = c.next(&h, plain(&h)) else { panic!("no older page asked") };
        assert_eq!(request["before"], 40);
        assert_eq!((request["peer"].clone(), request["limit"].clone()), (json!(2), json!(PAGE)));
        c.record(&h, &page(&[3, 7], false));
        assert_eq!(c.next(&h, plain(&h)), Next::NoOlder);
    }

    #[test]
    fn another_command_or_a_failure_starts_over() {
        let (h, g) = (Command::History { peer: 2 }, Command::GroupHistory { group: 2 });
        let mut c = Cursor::default();
        c.record(&h, &page(&[5], true));
        // Another conversation (a group with the same number is another one).
        assert_eq!(c.next(&g, plain(&g)), Next::Send { request: plain(&g), older: false });
        assert_eq!(c.next(&h, plain(&h)), Next::Send { request: plain(&h), older: false });
        c.record(&h, &page(&[5], true));
        c.forget();
        assert_eq!(c.next(&h, plain(&h)), Next::Send { request: plain(&h), older: false });
        c.record(&h, &page(&[5], true));
        c.record(&h, &json!({"errno": 503}));
        assert_eq!(c.next(&h, plain(&h)), Next::Send { request: plain(&h), older: false });
    }

    #[test]
    fn an_empty_page_or_one_without_mids_has_nothing_older() {
        let h = Command::History { peer: 2 };
        let mut c = Cursor::default();
        c.record(&h, &page(&[], true));
        assert_eq!(c.next(&h, plain(&h)), Next::NoOlder);
        c.forget();
        c.record(&h, &json!({"errno": 0, "messages": [{"msg": "no mid"}], "more": true}));
        assert_eq!(c.next(&h, plain(&h)), Next::NoOlder);
    }
}
