//! The session's command lines (`chat:friendid:message`, ...) and the requests they
//! become. Pure functions: no I/O, no threads.

use std::fmt;

use serde_json::{json, Value};

use super::history::{HISTORY, PAGE};
use crate::proto::msg::{
    ADD_FRIEND, ADD_GROUP, CREATE_GROUP, DEL_FRIEND, DEL_GROUP, GROUP_CHAT, LOGINOUT, ONE_CHAT, SHOW_FRIEND_LIST,
};

/// One command typed after login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Help,
    Chat { to: i64, msg: String },
    AddFriend(i64),
    DelFriend(i64),
    ShowFriendList,
    CreateGroup { name: String, desc: String },
    AddGroup(i64),
    DelGroup(i64),
    GroupChat { group: i64, msg: String },
    History { peer: i64 },
    GroupHistory { group: i64 },
    LoginOut,
}

/// A line that is not a command, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandError(pub String);

impl fmt::Display for CommandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CommandError {}

/// The commands, their syntax and what they do, for `help`.
pub const HELP: &[(&str, &str)] = &[
    ("help", "show this list"),
    ("chat:friendid:message", "send a message to a user"),
    ("addfriend:friendid", "add a user to your friends"),
    ("delfriend:friendid", "remove a user from your friends"),
    ("showfriendlist", "show your friends and who is online"),
    ("creategroup:groupname:groupdesc", "create a group (you become its creator)"),
    ("addgroup:groupid", "join a group"),
    ("delgroup:groupid", "leave a group (its creator deletes it)"),
    ("groupchat:groupid:message", "send a message to a group"),
    ("history:friendid", "your latest messages with a user; again for older ones"),
    ("grouphistory:groupid", "a group's latest messages; again for older ones"),
    ("loginout", "log out and go back to the menu"),
];

fn usage(name: &str) -> CommandError {
    let syntax = HELP.iter().find(|(s, _)| s.split(':').next() == Some(name)).map(|(s, _)| *s).unwrap_or(name);
    CommandError(format!("usage: {syntax}"))
}

fn id(name: &str, what: &str, text: &str) -> Result<i64, CommandError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(usage(name));
    }
    text.parse::<i64>().map_err(|_| CommandError(format!("{what} must be a number, not \"{text}\"")))
}

fn message(name: &str, text: Option<&str>) -> Result<String, CommandError> {
    match text {
        Some(m) if !m.trim().is_empty() => Ok(m.to_owned()),
        Some(_) => Err(CommandError("the message is empty".into())),
        None => Err(usage(name)),
    }
}

impl Command {
    /// Parses one line. The command's name is before the first colon; a message is
    /// everything after its id's colon, colons included.
    pub fn parse(line: &str) -> Result<Command, CommandError> {
        let line = line.trim_end_matches(['\r', '\n']);
        let (name, rest) = match line.split_once(':') {
            Some((name, rest)) => (name.trim(), Some(rest)),
            None => (line.trim(), None),
        };
        let no_args = |cmd: Command| match rest {
            Some(r) if !r.trim().is_empty() => Err(CommandError(format!("{name} takes no arguments"))),
            _ => Ok(cmd),
        };
        match name {
            "help" => no_args(Command::Help),
            "showfriendlist" => no_args(Command::ShowFriendList),
            "loginout" => no_args(Command::LoginOut),
            "addfriend" => Ok(Command::AddFriend(id(name, "friendid", rest.unwrap_or(""))?)),
            "delfriend" => Ok(Command::DelFriend(id(name, "friendid", rest.unwrap_or(""))?)),
            "addgroup" => Ok(Command::AddGroup(id(name, "groupid", rest.unwrap_or(""))?)),
            "delgroup" => Ok(Command::DelGroup(id(name, "groupid", rest.unwrap_or(""))?)),
            "history" => Ok(Command::History { peer: id(name, "friendid", rest.unwrap_or(""))? }),
            "grouphistory" => Ok(Command::GroupHistory { group: id(name, "groupid", rest.unwrap_or(""))? }),
            "chat" | "groupchat" => {
                let (target, msg) = match rest.map(|r| r.split_once(':')) {
                    Some(Some((target, msg))) => (target, Some(msg)),
                    Some(None) => (rest.unwrap_or(""), None),
                    None => ("", None),
                };
                if name == "chat" {
                    let to = id(name, "friendid", target)?;
                    Ok(Command::Chat { to, msg: message(name, msg)? })
                } else {
                    let group = id(name, "groupid", target)?;
                    Ok(Command::GroupChat { group, msg: message(name, msg)? })
                }
            }
            "creategroup" => {
                let (group, desc) = match rest.map(|r| r.split_once(':')) {
                    Some(Some((group, desc))) => (group.trim(), desc),
                    Some(None) => (rest.unwrap_or("").trim(), ""),
                    None => ("", ""),
                };
                if group.is_empty() {
                    return Err(usage(name));
                }
                Ok(Command::CreateGroup { name: group.to_owned(), desc: desc.to_owned() })
            }
            "" => Err(CommandError("type a command; help lists them".into())),
            other => Err(CommandError(format!("unknown command \"{other}\"; help lists the commands"))),
        }
    }

    /// The request this command sends for user `me` (named `my_name`), without reqid;
    /// `None` for commands the client handles alone (help).
    ///
    /// Like the seeds' client it sends its own id, name and time; the server checks the
    /// id against the session and replaces the name and time with its own. A chat
    /// message's `cmid` comes from the [`super::outbox::Outbox`], a history page's
    /// `before` from the [`super::history::Cursor`].
    pub fn request(&self, me: i64, my_name: &str, now: &str) -> Option<Value> {
        Some(match self {
            Command::Help => return None,
            Command::Chat { to, msg } => {
                json!({"msgid": ONE_CHAT, "id": me, "name": my_name, "toid": to, "msg": msg, "time": now})
            }
            Command::AddFriend(f) => json!({"msgid": ADD_FRIEND, "id": me, "friendid": f}),
            Command::DelFriend(f) => json!({"msgid": DEL_FRIEND, "id": me, "friendid": f}),
            Command::ShowFriendList => json!({"msgid": SHOW_FRIEND_LIST, "id": me}),
            Command::CreateGroup { name, desc } => {
                json!({"msgid": CREATE_GROUP, "id": me, "groupname": name, "groupdesc": desc})
            }
            Command::AddGroup(g) => json!({"msgid": ADD_GROUP, "id": me, "groupid": g}),
            Command::DelGroup(g) => json!({"msgid": DEL_GROUP, "id": me, "groupid": g}),
            Command::GroupChat { group, msg } => {
                json!({"msgid": GROUP_CHAT, "id": me, "name": my_name, "groupid": group, "msg": msg, "time": now})
            }
            Command::History { peer } => json!({"msgid": HISTORY, "peer": peer, "limit": PAGE}),
            Command::GroupHistory { group } => json!({"msgid": HISTORY, "groupid": group, "limit": PAGE}),
            Command::LoginOut => json!({"msgid": LOGINOUT, "id": me}),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_parse() {
        assert_eq!(Command::parse("help"), Ok(Command::Help));
        assert_eq!(Command::parse(" showfriendlist \r\n"), Ok(Command::ShowFriendList));
        assert_eq!(Command::parse("loginout"), Ok(Command::LoginOut));
        assert_eq!(Command::parse("addfriend:42"), Ok(Command::AddFriend(42)));
        assert_eq!(Command::parse("delfriend: 7 "), Ok(Command::DelFriend(7)));
        assert_eq!(Command::parse("addgroup:3"), Ok(Command::AddGroup(3)));
        assert_eq!(Command::parse("delgroup:3"), Ok(Command::DelGroup(3)));
        assert_eq!(Command::parse("history:2"), Ok(Command::History { peer: 2 }));
        assert_eq!(Command::parse("grouphistory: 9"), Ok(Command::GroupHistory { group: 9 }));
        assert_eq!(
            Command::parse("creategroup:rust:a: group"),
            Ok(Command::CreateGroup { name: "rust".into(), desc: "a: group".into() })
        );
        assert_eq!(
            Command::parse("creategroup:rust"),
            Ok(Command::CreateGroup { name: "rust".into(), desc: String::new() })
        );
    }

    #[test]
    fn messages_keep_their_colons() {
        assert_eq!(
            Command::parse("chat:2:see you at 10:30: ok?"),
            Ok(Command::Chat { to: 2, msg: "see you at 10:30: ok?".into() })
        );
        assert_eq!(Command::parse("groupchat:9::)"), Ok(Command::GroupChat { group: 9, msg: ":)".into() }));
    }

    #[test]
    fn bad_lines_are_explained() {
        for (line, want) in [
            ("chat:x:hi", "friendid must be a number"),
            ("chat:2", "usage: chat:friendid:message"),
            ("chat", "usage: chat:friendid:message"),
            ("chat:2:  ", "the message is empty"),
            ("addfriend", "usage: addfriend:friendid"),
            ("groupchat:", "usage: groupchat:groupid:message"),
            ("creategroup:", "usage: creategroup:groupname:groupdesc"),
            ("help:me", "help takes no arguments"),
            ("history", "usage: history:friendid"),
            ("history:bob", "friendid must be a number"),
            ("grouphistory:", "usage: grouphistory:groupid"),
            ("fly:1", "unknown command \"fly\""),
        ] {
            let got = Command::parse(line).map_err(|e| e.0);
            assert!(matches!(&got, Err(e) if e.contains(want)), "{line}: {got:?}");
        }
    }

    #[test]
    fn requests_carry_the_seeds_fields() {
        let r = Command::parse("chat:2:a:b").ok().and_then(|c| c.request(1, "ann", "2024-01-01 00:00:00"));
        assert_eq!(
            r,
            Some(json!({"msgid": 6, "id": 1, "name": "ann", "toid": 2, "msg": "a:b", "time": "2024-01-01 00:00:00"}))
        );
        assert_eq!(Command::Help.request(1, "ann", ""), None);
        assert_eq!(Command::LoginOut.request(1, "ann", ""), Some(json!({"msgid": 3, "id": 1})));
        assert_eq!(
            Command::History { peer: 2 }.request(1, "ann", ""),
            Some(json!({"msgid": 19, "peer": 2, "limit": PAGE}))
        );
        assert_eq!(
            Command::GroupHistory { group: 7 }.request(1, "ann", ""),
            Some(json!({"msgid": 19, "groupid": 7, "limit": PAGE}))
        );
    }
}
