//! Replies and pushes in words for a person: never raw JSON. Pure functions over the
//! frames' JSON; anything missing or mistyped in a frame is shown as `?`, never a panic.
//! Text from other users is shown with control characters escaped, so a message cannot
//! move the cursor or recolour the terminal.

use serde_json::Value;

use super::commands::{Command, HELP};
use super::outbox::Again;
use crate::proto::msg::{errno, ERROR, GROUP_CHAT, ONE_CHAT};

/// The menu shown before login.
pub const MENU: &[&str] =
    &["========================", "1. login", "2. register", "3. quit", "========================"];

/// `text` with control characters escaped (`\n`, `\u{1b}`, ...).
pub fn clean(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// A string field, cleaned; `?` when absent or not a string.
fn text(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_str).map(clean).unwrap_or_else(|| "?".into())
}

/// An integer field as text; `?` when absent or not an integer.
fn int(v: &Value, key: &str) -> String {
    v.get(key).and_then(Value::as_i64).map(|i| i.to_string()).unwrap_or_else(|| "?".into())
}

/// A LOGIN_ACK list element: an object (v2), or a JSON-encoded string (v1).
fn element(v: &Value) -> Value {
    match v {
        Value::String(s) => serde_json::from_str(s).unwrap_or(Value::Null),
        other => other.clone(),
    }
}

fn elements(v: &Value, key: &str) -> Vec<Value> {
    v.get(key).and_then(Value::as_array).map(|a| a.iter().map(element).collect()).unwrap_or_default()
}

/// A reply's errno; 0 when absent (PONG has none). An ERROR frame without errno is 400.
pub fn errno_of(reply: &Value) -> i64 {
    match reply.get("errno").and_then(Value::as_i64) {
        Some(e) => e,
        None if reply.get("msgid").and_then(Value::as_i64) == Some(ERROR) => errno::MALFORMED,
        None => errno::OK,
    }
}

/// A reply's errmsg, cleaned; a generic text when it has none.
pub fn errmsg_of(reply: &Value) -> String {
    match reply.get("errmsg").and_then(Value::as_str) {
        Some(m) if !m.is_empty() => clean(m),
        _ => format!("error {}", errno_of(reply)),
    }
}

/// A chat message (a push, live or offline) on one line:
/// `[time] alice (1): text`, or `[time] group 7 | alice (1): text`.
pub fn chat_message(v: &Value) -> String {
    let who = format!("{} ({})", text(v, "name"), int(v, "id"));
    let time = text(v, "time");
    let msg = text(v, "msg");
    match v.get("msgid").and_then(Value::as_i64) {
        Some(GROUP_CHAT) => format!("[{time}] group {} | {who}: {msg}", int(v, "groupid")),
        _ => format!("[{time}] {who}: {msg}"),
    }
}

/// A frame that arrived without being asked for: a chat push, or an ERROR.
pub fn incoming(v: &Value) -> String {
    match v.get("msgid").and_then(Value::as_i64) {
        Some(ONE_CHAT | GROUP_CHAT) => chat_message(v),
        _ => format!("the server reports an error: {}", errmsg_of(v)),
    }
}

/// The answer to the menu's failed cases and every command's failure.
fn common_failure(errno: i64, reply: &Value) -> Option<String> {
    Some(match errno {
        errno::NOT_LOGGED_IN => "please log in".into(),
        errno::TOO_MANY => "too many requests, slow down and try again".into(),
        errno::UNAVAILABLE => "server busy, try again".into(),
        errno::TOO_LARGE => "that is too large for the server".into(),
        errno::MALFORMED => format!("the server refused it: {}", errmsg_of(reply)),
        _ => return None,
    })
}

/// What LOGIN's reply means when it failed.
pub fn login_failure(reply: &Value) -> String {
    let errno = errno_of(reply);
    match errno {
        errno::BAD_LOGIN => "wrong user id or password".into(),
        errno::ONLINE_ELSEWHERE => "this account is already logged in elsewhere".into(),
        errno::CONFLICT => "this connection is already logged in".into(),
        _ => common_failure(errno, reply).unwrap_or_else(|| format!("login failed: {}", errmsg_of(reply))),
    }
}

/// What REG's reply means.
pub fn registered(name: &str, reply: &Value) -> String {
    let errno = errno_of(reply);
    match errno {
        errno::OK => format!("registered {}: your user id is {}, do not forget it!", clean(name), int(reply, "id")),
        errno::CONFLICT => format!("the name {} is already taken", clean(name)),
        _ => common_failure(errno, reply).unwrap_or_else(|| format!("registration failed: {}", errmsg_of(reply))),
    }
}

/// A successful LOGIN_ACK: the account, friends, groups and `offline`, its offline
/// messages less any already shown.
pub fn login_summary(reply: &Value, offline: &[Value]) -> Vec<String> {
    let mut out = vec![format!("======== logged in as {} (id {}) ========", text(reply, "name"), int(reply, "id"))];
    let friends = elements(reply, "friends");
    if friends.is_empty() {
        out.push("friends: none".into());
    } else {
        out.push("friends:".into());
        out.extend(friends.iter().map(|f| format!("  {} {} ({})", int(f, "id"), text(f, "name"), text(f, "state"))));
    }
    let groups = elements(reply, "groups");
    if groups.is_empty() {
        out.push("groups: none".into());
    } else {
        out.push("groups:".into());
        for g in &groups {
            let desc = text(g, "groupdesc");
            let desc = if desc.is_empty() || desc == "?" { String::new() } else { format!(": {desc}") };
            out.push(format!("  group {} {}{desc}", int(g, "id"), text(g, "groupname")));
            for u in elements(g, "users") {
                out.push(format!(
                    "    {} {} ({}, {})",
                    int(&u, "id"),
                    text(&u, "name"),
                    text(&u, "state"),
                    text(&u, "role")
                ));
            }
        }
    }
    if offline.is_empty() {
        out.push("offline messages: none".into());
    } else {
        out.extend(offline_messages(offline));
    }
    out
}

/// A LOGIN_ACK's offline messages, objects (v2) or JSON-encoded strings (v1).
pub fn offline_of(reply: &Value) -> Vec<Value> {
    elements(reply, "offlinemsg")
}

/// Offline messages under a heading, each with its time.
pub fn offline_messages(offline: &[Value]) -> Vec<String> {
    let mut out = vec![format!("offline messages ({}):", offline.len())];
    out.extend(offline.iter().map(|m| format!("  {}", chat_message(m))));
    out
}

/// Who a command talks to, for sentences: `user 2`, `group 7`.
fn target(cmd: &Command) -> String {
    match cmd {
        Command::Chat { to: id, .. } | Command::History { peer: id } => format!("user {id}"),
        Command::GroupChat { group: id, .. } | Command::GroupHistory { group: id } => format!("group {id}"),
        _ => "?".into(),
    }
}

/// A page of HISTORY's reply to `cmd`: the messages, oldest first, each with its time;
/// `older` when it continues the page shown before.
pub fn history_page(cmd: &Command, reply: &Value, older: bool) -> Vec<String> {
    let with = match cmd {
        Command::GroupHistory { .. } => format!("in {}", target(cmd)),
        _ => format!("with {}", target(cmd)),
    };
    let messages = reply.get("messages").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    if messages.is_empty() {
        return vec![if older { format!("no older messages {with}") } else { format!("no messages {with} yet") }];
    }
    let mut out = vec![if older { format!("older messages {with}:") } else { format!("latest messages {with}:") }];
    out.extend(messages.iter().map(|m| format!("  {}", chat_message(m))));
    let again = match cmd {
        Command::History { peer } => format!("history:{peer}"),
        Command::GroupHistory { group } => format!("grouphistory:{group}"),
        _ => String::new(),
    };
    if reply.get("more").and_then(Value::as_bool) == Some(true) {
        out.push(format!("  ({again} again shows older messages)"));
    } else {
        out.push("  (the conversation starts here)".into());
    }
    out
}

/// The answer to a repeated history command after the first page of a conversation.
pub fn no_older(cmd: &Command) -> String {
    format!("no older messages: the conversation with {} starts above", target(cmd))
}

/// Why a chat message is not sent yet, and that it will be.
pub fn unsent(cmd: &Command, why: &Again, waiting: usize) -> String {
    let reason = match why {
        Again::Busy => "the server is busy".to_owned(),
        Again::NoReply => "the server did not answer".to_owned(),
        Again::Lost(reason) => format!("the connection was lost ({})", clean(reason)),
    };
    let others = match waiting {
        0 | 1 => String::new(),
        n => format!(" (with {} more after it)", n - 1),
    };
    format!("{reason}: the message to {}{others} will be sent again", target(cmd))
}

/// A chat message queued behind others that are not sent yet.
pub fn queued(cmd: &Command, ahead: usize) -> String {
    format!("the message to {} waits for {ahead} earlier message(s) to be sent", target(cmd))
}

/// Chat messages given up on (logging out or leaving before they were acknowledged).
pub fn not_sent(cmds: &[Command]) -> Vec<String> {
    let mut out = vec![format!("{} message(s) could not be sent:", cmds.len())];
    out.extend(cmds.iter().filter_map(|c| match c {
        Command::Chat { msg, .. } | Command::GroupChat { msg, .. } => {
            Some(format!("  to {}: {}", target(c), clean(msg)))
        }
        _ => None,
    }));
    out
}

/// The command list.
pub fn help() -> Vec<String> {
    let width = HELP.iter().map(|(s, _)| s.len()).max().unwrap_or(0);
    let mut out = vec!["commands:".to_owned()];
    out.extend(HELP.iter().map(|(syntax, what)| format!("  {syntax:width$}  {what}")));
    out
}

/// A friend list (SHOW_FRIEND_LIST's `friends`).
fn friend_list(reply: &Value) -> String {
    let friends = elements(reply, "friends");
    if friends.is_empty() {
        return "you have no friends yet".into();
    }
    let mut lines = vec![format!("friends ({}):", friends.len())];
    lines.extend(friends.iter().map(|f| format!("  {} {} ({})", int(f, "id"), text(f, "name"), text(f, "state"))));
    lines.join("\n")
}

/// What the server's reply to `cmd` means, in words (possibly several lines).
pub fn outcome(cmd: &Command, reply: &Value) -> String {
    let errno = errno_of(reply);
    if errno == errno::OK {
        return match cmd {
            Command::Help => help().join("\n"),
            Command::Chat { to, .. } => format!("message sent to user {to}"),
            Command::AddFriend(f) => format!("user {f} is now your friend"),
            Command::DelFriend(f) => format!("user {f} is no longer your friend"),
            Command::ShowFriendList => friend_list(reply),
            Command::CreateGroup { name, .. } => format!("created group {} ({})", int(reply, "groupid"), clean(name)),
            Command::AddGroup(g) => format!("you joined group {g}"),
            Command::DelGroup(g) => format!("you left group {g} (if you created it, it is deleted)"),
            Command::GroupChat { group, .. } => format!("message sent to group {group}"),
            Command::History { .. } | Command::GroupHistory { .. } => history_page(cmd, reply, false).join("\n"),
            Command::LoginOut => "logged out".into(),
        };
    }
    let unknown_request = reply.get("msgid").and_then(Value::as_i64) == Some(ERROR);
    let specific = match (errno, cmd) {
        (errno::MALFORMED, Command::History { .. } | Command::GroupHistory { .. }) if unknown_request => {
            Some("this server keeps no history".into())
        }
        (
            errno::NOT_FOUND,
            Command::Chat { to: user, .. } | Command::AddFriend(user) | Command::History { peer: user },
        ) => Some(format!("user {user} does not exist")),
        (errno::NOT_FOUND, Command::DelFriend(user)) => Some(format!("user {user} is not your friend")),
        (
            errno::NOT_FOUND,
            Command::AddGroup(g) | Command::GroupChat { group: g, .. } | Command::GroupHistory { group: g },
        ) => Some(format!("group {g} does not exist")),
        (errno::NOT_FOUND, Command::DelGroup(g)) => Some(format!("you are not in group {g}, or it does not exist")),
        (errno::FORBIDDEN, Command::GroupChat { group, .. } | Command::GroupHistory { group }) => {
            Some(format!("you are not a member of group {group}"))
        }
        (errno::FORBIDDEN, _) => Some(format!("not allowed: {}", errmsg_of(reply))),
        (errno::CONFLICT, Command::AddFriend(f)) => Some(format!("user {f} is already your friend")),
        (errno::CONFLICT, Command::CreateGroup { name, .. }) => {
            Some(format!("a group named {} already exists", clean(name)))
        }
        (errno::CONFLICT, Command::AddGroup(g)) => Some(format!("you are already a member of group {g}")),
        _ => None,
    };
    specific.or_else(|| common_failure(errno, reply)).unwrap_or_else(|| errmsg_of(reply))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pushes_name_sender_time_and_group() {
        let p =
            json!({"msgid": 6, "id": 1, "name": "ann", "toid": 2, "msg": "hi: there", "time": "2024-01-02 03:04:05"});
        assert_eq!(incoming(&p), "[2024-01-02 03:04:05] ann (1): hi: there");
        let g = json!({"msgid": 10, "id": 1, "name": "ann", "groupid": 7, "msg": "yo", "time": "t"});
        assert_eq!(incoming(&g), "[t] group 7 | ann (1): yo");
        assert_eq!(
            incoming(&json!({"msgid": 11, "errno": 413, "errmsg": "frame too large"})),
            "the server reports an error: frame too large"
        );
        // Hostile or broken frames: escaped, no panic.
        assert_eq!(incoming(&json!({"msgid": 6, "name": "\u{1b}[2J", "msg": 5})), "[?] \\u{1b}[2J (?): ?");
    }

    #[test]
    fn login_summary_reads_v1_and_v2() {
        let v2 = json!({"msgid": 2, "errno": 0, "id": 3, "name": "cat",
            "friends": [{"id": 1, "name": "ann", "state": "online"}],
            "groups": [{"id": 7, "groupname": "g", "groupdesc": "d", "users": [{"id": 3, "name": "cat", "state": "online", "role": "creator"}]}],
            "offlinemsg": [{"msgid": 6, "id": 1, "name": "ann", "toid": 3, "msg": "m", "time": "t"}]});
        let text = login_summary(&v2, &offline_of(&v2)).join("\n");
        for want in [
            "logged in as cat (id 3)",
            "  1 ann (online)",
            "  group 7 g: d",
            "    3 cat (online, creator)",
            "offline messages (1):",
            "[t] ann (1): m",
        ] {
            assert!(text.contains(want), "{want} not in\n{text}");
        }
        let v1 = json!({"id": 3, "name": "cat", "friends": ["{\"id\":1,\"name\":\"ann\",\"state\":\"offline\"}"]});
        let text = login_summary(&v1, &offline_of(&v1)).join("\n");
        assert!(
            text.contains("  1 ann (offline)")
                && text.contains("groups: none")
                && text.contains("offline messages: none"),
            "{text}"
        );
    }

    #[test]
    fn failures_are_words() {
        let r = |errno: i64| json!({"msgid": 15, "errno": errno, "errmsg": "server text"});
        assert_eq!(outcome(&Command::AddFriend(42), &r(404)), "user 42 does not exist");
        assert_eq!(outcome(&Command::AddGroup(7), &r(404)), "group 7 does not exist");
        assert_eq!(outcome(&Command::AddFriend(42), &r(409)), "user 42 is already your friend");
        assert_eq!(outcome(&Command::ShowFriendList, &r(401)), "please log in");
        assert_eq!(outcome(&Command::ShowFriendList, &r(503)), "server busy, try again");
        assert_eq!(
            outcome(&Command::GroupChat { group: 7, msg: "x".into() }, &r(403)),
            "you are not a member of group 7"
        );
        assert_eq!(outcome(&Command::ShowFriendList, &r(999)), "server text");
        assert_eq!(outcome(&Command::ShowFriendList, &json!({"errno": 999})), "error 999");
        assert_eq!(login_failure(&r(1)), "wrong user id or password");
        // A server without HISTORY answers it as an unknown request.
        let unknown = json!({"msgid": 11, "errno": 400, "errmsg": "unknown msgid 19"});
        assert_eq!(outcome(&Command::History { peer: 2 }, &unknown), "this server keeps no history");
        assert_eq!(outcome(&Command::GroupHistory { group: 7 }, &r(404)), "group 7 does not exist");
        assert_eq!(outcome(&Command::History { peer: 2 }, &r(404)), "user 2 does not exist");
        assert_eq!(registered("bob", &r(409)), "the name bob is already taken");
        assert_eq!(
            registered("bob", &json!({"errno": 0, "id": 12})),
            "registered bob: your user id is 12, do not forget it!"
        );
    }

    #[test]
    fn successes_are_words() {
        let ok = json!({"msgid": 15, "errno": 0, "groupid": 5});
        assert_eq!(
            outcome(&Command::CreateGroup { name: "g".into(), desc: String::new() }, &ok),
            "created group 5 (g)"
        );
        let list = json!({"errno": 0, "friends": [{"id": 2, "name": "bob", "state": "online"}]});
        assert_eq!(outcome(&Command::ShowFriendList, &list), "friends (1):\n  2 bob (online)");
        assert_eq!(outcome(&Command::ShowFriendList, &json!({"errno": 0, "friends": []})), "you have no friends yet");
    }

    #[test]
    fn history_pages_and_unsent_messages_are_words() {
        let h = Command::GroupHistory { group: 7 };
        let page = json!({"errno": 0, "more": false, "messages": [
            {"msgid": 10, "id": 1, "name": "ann", "groupid": 7, "msg": "hi", "time": "t1", "mid": 3}]});
        assert_eq!(
            history_page(&h, &page, true),
            vec!["older messages in group 7:", "  [t1] group 7 | ann (1): hi", "  (the conversation starts here)"]
        );
        assert_eq!(history_page(&h, &json!({"errno": 0, "messages": []}), false), vec!["no messages in group 7 yet"]);
        let chat = Command::Chat { to: 2, msg: "a\u{1b}b".into() };
        assert_eq!(
            unsent(&chat, &Again::Busy, 3),
            "the server is busy: the message to user 2 (with 2 more after it) will be sent again"
        );
        assert_eq!(
            unsent(&chat, &Again::NoReply, 1),
            "the server did not answer: the message to user 2 will be sent again"
        );
        assert_eq!(queued(&chat, 1), "the message to user 2 waits for 1 earlier message(s) to be sent");
        assert_eq!(not_sent(&[chat]), vec!["1 message(s) could not be sent:", "  to user 2: a\\u{1b}b"]);
    }
}
