//! The model layer: users, friends, groups and their members, and the message log with
//! each user's inbox (what is owed to them).
//!
//! One trait, [`Store`], with one implementation per backend. Every method is
//! synchronous and may block; the chat layer calls them only from worker-pool threads,
//! never from a reactor thread. Every query is parameterised.

mod conn_pool;
mod log_writer;
mod mysql;
mod schema;
mod sqlite;

pub use self::mysql::MysqlStore;
pub use log_writer::LogWriter;
pub use sqlite::{SqliteStore, Synchronous};

use std::fmt;
use std::sync::Arc;

pub type UserId = i64;
pub type GroupId = i64;
/// A message's id in the log: unique across the cluster, in 1..2^53, never reused.
pub type Mid = i64;

/// Where a message goes: one user (the other side of a one-to-one conversation, seen
/// from the sender) or a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Conversation {
    Peer(UserId),
    Group(GroupId),
}

impl Conversation {
    /// Where the log files the conversation of `me` with `self`: (convlo, convhi) of
    /// `sql/chat.sql`. One-to-one, the two user ids, smaller first; a group, (0, id).
    /// `None` for an id that no user or group can have (ids start at 1), so that no
    /// key is shared by two conversations.
    fn key(self, me: UserId) -> Option<(i64, i64)> {
        match self {
            Conversation::Peer(peer) if me > 0 && peer > 0 => Some((me.min(peer), me.max(peer))),
            Conversation::Group(group) if group > 0 => Some((0, group)),
            _ => None,
        }
    }

    /// The conversation a row's key names, seen from its sender.
    fn from_key(sender: UserId, (lo, hi): (i64, i64)) -> Conversation {
        if lo == 0 {
            Conversation::Group(hi)
        } else if sender == lo {
            Conversation::Peer(hi)
        } else {
            Conversation::Peer(lo)
        }
    }
}

/// A page read newest first with one row more than `limit` (whether older ones exist)
/// as [`Store::history`] returns it: oldest first, and `more`.
fn history_page(mut newest_first: Vec<Message>, limit: usize) -> (Vec<Message>, bool) {
    let more = newest_first.len() > limit;
    newest_first.truncate(limit);
    newest_first.reverse();
    (newest_first, more)
}

/// A message to append to the log (see [`Store::append`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    pub sender: UserId,
    /// The sender's name when it was sent (pushes and history show it).
    pub sender_name: String,
    pub to: Conversation,
    /// Shared, so the chat layer keeps it for the pushes without a copy.
    pub text: Arc<str>,
    /// The server's stamp, `YYYY-MM-DD HH:MM:SS` (what pushes carry as `time`).
    pub time: String,
    /// Seconds since the Unix epoch when accepted (what `expire` compares).
    pub unix_time: i64,
    /// The client's id for the message (1-64 characters), unique per sender.
    pub cmid: Option<String>,
    /// Whom the message is owed to: one inbox row each, in the same transaction.
    pub recipients: Vec<UserId>,
}

/// A message as the log holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub mid: Mid,
    pub sender: UserId,
    pub sender_name: String,
    pub to: Conversation,
    pub text: String,
    pub time: String,
}

/// What [`Store::append`] made of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub mid: Mid,
    pub time: String,
    /// False when the sender's `cmid` was already in the log: `mid` and `time` are the
    /// first message's, and nothing was written.
    pub first: bool,
}

/// A user as others see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub name: String,
    /// The `state` column: true when the user is marked online.
    pub online: bool,
}

/// What LOGIN needs to check a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub id: UserId,
    pub name: String,
    /// A PHC string (argon2id); never a plain password.
    pub password_hash: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Creator,
    Normal,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Creator => "creator",
            Role::Normal => "normal",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub user: User,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub id: GroupId,
    pub name: String,
    pub desc: String,
    /// Sorted by user id.
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// A unique key is taken: a user or group name, a friendship, a membership.
    Conflict,
    /// The row the operation needs does not exist.
    NotFound,
    /// The backend cannot be reached or failed; the request may be retried (errno 503).
    Unavailable(String),
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Conflict => f.write_str("conflict"),
            StoreError::NotFound => f.write_str("not found"),
            StoreError::Unavailable(why) => write!(f, "storage unavailable: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The model layer. Implementations are shared by all worker threads.
pub trait Store: Send + Sync {
    /// Creates a user; `Conflict` when the name is taken. Returns the new id.
    fn create_user(&self, name: &str, password_hash: &str) -> Result<UserId>;
    /// The credentials of a user, `None` when there is no such id.
    fn credentials(&self, id: UserId) -> Result<Option<Credentials>>;
    /// Whether a user with this id exists.
    fn user_exists(&self, id: UserId) -> Result<bool>;
    /// Sets the `state` column of these users.
    fn set_online(&self, ids: &[UserId], online: bool) -> Result<()>;
    /// Marks every user offline (a single server starting on its own database).
    fn set_all_offline(&self) -> Result<()>;
    /// The users whose `state` column says online.
    fn online_users(&self) -> Result<Vec<UserId>>;

    /// Adds `friend` to `user`'s list (one-way). `Conflict` when already there.
    /// The caller checks that `friend` exists.
    fn add_friend(&self, user: UserId, friend: UserId) -> Result<()>;
    /// Removes `friend` from `user`'s list; `NotFound` when it was not there.
    fn del_friend(&self, user: UserId, friend: UserId) -> Result<()>;
    /// `user`'s friends, sorted by id.
    fn friends(&self, user: UserId) -> Result<Vec<User>>;

    /// Creates a group with `creator` as its creator, in one transaction.
    /// `Conflict` when the name is taken.
    fn create_group(&self, creator: UserId, name: &str, desc: &str) -> Result<GroupId>;
    /// Adds `user` as a normal member. `NotFound` no such group, `Conflict` already a member.
    fn join_group(&self, group: GroupId, user: UserId) -> Result<()>;
    /// A normal member leaves; the creator deletes the group for everyone (one transaction).
    /// `NotFound` when there is no such group or `user` is not a member.
    fn leave_group(&self, group: GroupId, user: UserId) -> Result<Role>;
    /// The members of a group with their roles, sorted by user id; `None` no such group.
    fn group_members(&self, group: GroupId) -> Result<Option<Vec<(UserId, Role)>>>;
    /// The groups `user` is in, sorted by group id, each with all its members
    /// (a bounded number of queries, not one per group).
    fn user_groups(&self, user: UserId) -> Result<Vec<Group>>;

    /// Appends messages to the log, in the given order, in one transaction (one commit:
    /// the group commit of many senders' messages). Each gets a new mid, larger than
    /// every mid this call or an earlier one on this server gave, and one inbox row per
    /// recipient. A message whose `(sender, cmid)` is already in the log is not written:
    /// its `Accepted` carries the first one's mid and time with `first: false` (also
    /// when the first is earlier in the same slice).
    fn append(&self, msgs: &[NewMessage]) -> Result<Vec<Accepted>>;
    /// Up to `limit` messages owed to `user` (in their inbox) with mid > `after`, by mid,
    /// oldest first.
    fn inbox(&self, user: UserId, after: Mid, limit: usize) -> Result<Vec<Message>>;
    /// Removes these mids from these users' inboxes (delivered, or confirmed); unknown
    /// ones are ignored. One transaction: the log writer's batch of settles.
    fn settle(&self, settles: &[(UserId, Vec<Mid>)]) -> Result<()>;
    /// A page of history: the newest `limit` messages of the conversation with mid <
    /// `before` (all when `None`), oldest first, and whether older ones exist.
    /// `Peer(p)` is the conversation between `me` and `p`, both directions (`p` may be
    /// `me`); `Group(g)` all of g's messages. Costs the same on the millionth message
    /// as on the first (an index per conversation).
    fn history(
        &self,
        me: UserId,
        conv: Conversation,
        before: Option<Mid>,
        limit: usize,
    ) -> Result<(Vec<Message>, bool)>;
    /// Deletes messages accepted before `unix_time` (seconds), with their inbox rows.
    /// Returns how many messages went.
    fn expire(&self, unix_time: i64) -> Result<usize>;
}

/// Connections a pooled backend opens at most when [`open`] is not told otherwise.
pub const DEFAULT_POOL_SIZE: usize = 10;

/// Opens the store a `--db` URL names, with a pool of [`DEFAULT_POOL_SIZE`]: see
/// [`open_with_pool`].
pub fn open(url: &str) -> Result<Arc<dyn Store>> {
    open_with_pool(url, DEFAULT_POOL_SIZE)
}

/// Opens the store a `--db` URL names; the scheme picks the backend:
/// - `mysql://USER:PASS@HOST:PORT/DB`: [`MysqlStore`], at most `pool_size` connections;
/// - `sqlite://PATH`, or a bare path: [`SqliteStore`] (its own small pool). Commits
///   survive kill -9 of the process; `sqlite://PATH?sync=full` also power loss (see
///   [`Synchronous`]). A bare path is taken as it is, `?` included.
pub fn open_with_pool(url: &str, pool_size: usize) -> Result<Arc<dyn Store>> {
    if url.starts_with("mysql://") {
        return Ok(Arc::new(MysqlStore::open(url, pool_size)?));
    }
    let (path, sync) = sqlite_target(url)?;
    Ok(Arc::new(SqliteStore::open_with(path, sync)?))
}

/// The file and the options of a SQLite `--db` URL.
fn sqlite_target(url: &str) -> Result<(&str, Synchronous)> {
    let Some(rest) = url.strip_prefix("sqlite://") else {
        if url.contains("://") {
            let scheme = url.split("://").next().unwrap_or_default();
            return Err(StoreError::Unavailable(format!("unknown database scheme {scheme}:// (mysql or sqlite)")));
        }
        return Ok((url, Synchronous::default()));
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut sync = Synchronous::default();
    for option in query.split('&').filter(|o| !o.is_empty()) {
        sync = match option {
            "sync=normal" => Synchronous::Normal,
            "sync=full" => Synchronous::Full,
            other => {
                return Err(StoreError::Unavailable(format!(
                    "unknown sqlite option {other:?} in --db (sync=normal or sync=full)"
                )))
            }
        };
    }
    Ok((path, sync))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_a_file_and_its_durability() {
        assert_eq!(sqlite_target("sqlite://chat.db"), Ok(("chat.db", Synchronous::Normal)));
        assert_eq!(sqlite_target("sqlite:///var/lib/chat.db?sync=full"), Ok(("/var/lib/chat.db", Synchronous::Full)));
        assert_eq!(sqlite_target("sqlite://a.db?sync=normal"), Ok(("a.db", Synchronous::Normal)));
        assert_eq!(sqlite_target("sqlite://a.db?"), Ok(("a.db", Synchronous::Normal)));
        assert_eq!(sqlite_target("plain.db"), Ok(("plain.db", Synchronous::Normal)));
        assert_eq!(sqlite_target("odd?name.db"), Ok(("odd?name.db", Synchronous::Normal)));
        for bad in ["sqlite://a.db?sync=off", "sqlite://a.db?mode=ro", "postgres://x/y"] {
            assert!(matches!(sqlite_target(bad), Err(StoreError::Unavailable(_))), "{bad}");
        }
    }

    #[test]
    fn conversation_keys_are_shared_by_both_directions_and_never_by_two_conversations() {
        use Conversation::{Group, Peer};
        assert_eq!(Peer(7).key(3), Some((3, 7)));
        assert_eq!(Peer(3).key(7), Some((3, 7)));
        assert_eq!(Peer(5).key(5), Some((5, 5)));
        assert_eq!(Group(5).key(3), Some((0, 5)));
        assert_eq!(Peer(0).key(5), None);
        assert_eq!(Peer(5).key(-1), None);
        assert_eq!(Group(0).key(5), None);
        assert_eq!(Conversation::from_key(3, (3, 7)), Peer(7));
        assert_eq!(Conversation::from_key(7, (3, 7)), Peer(3));
        assert_eq!(Conversation::from_key(5, (5, 5)), Peer(5));
        assert_eq!(Conversation::from_key(3, (0, 5)), Group(5));
    }
}
