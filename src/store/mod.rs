//! The model layer: users, friends, groups and their members, and the offline mailbox.
//!
//! One trait, [`Store`], with one implementation per backend. Every method is
//! synchronous and may block; the chat layer calls them only from worker-pool threads,
//! never from a reactor thread. Every query is parameterised.

mod conn_pool;
mod mysql;
mod sqlite;

pub use self::mysql::MysqlStore;
pub use sqlite::SqliteStore;

use std::fmt;
use std::sync::Arc;

pub type UserId = i64;
pub type GroupId = i64;

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

    /// Appends messages to mailboxes, in the given order, in one transaction.
    fn push_offline(&self, msgs: &[(UserId, String)]) -> Result<()>;
    /// The chat layer pages with `peek_offline`/`remove_offline` under the user's
    /// delivery lock; this atomic drain is kept for tools and the store tests.
    /// Takes `user`'s whole mailbox, oldest first, deleting exactly the rows returned,
    /// in one transaction: a message stored concurrently is either returned or kept.
    fn take_offline(&self, user: UserId) -> Result<Vec<String>>;
    /// Up to `limit` of `user`'s oldest mailbox rows as (row id, message), oldest
    /// first. Nothing is removed: rows leave with `remove_offline` once handed over.
    fn peek_offline(&self, user: UserId, limit: usize) -> Result<Vec<(i64, String)>>;
    /// Removes exactly these rows of `user`'s mailbox, in one transaction.
    fn remove_offline(&self, user: UserId, ids: &[i64]) -> Result<()>;
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
/// - `sqlite://PATH`, or a bare path: [`SqliteStore`] (its own small pool).
pub fn open_with_pool(url: &str, pool_size: usize) -> Result<Arc<dyn Store>> {
    if url.starts_with("mysql://") {
        return Ok(Arc::new(MysqlStore::open(url, pool_size)?));
    }
    let path = match url.strip_prefix("sqlite://") {
        Some(path) => path,
        None if url.contains("://") => {
            let scheme = url.split("://").next().unwrap_or_default();
            return Err(StoreError::Unavailable(format!("unknown database scheme {scheme}:// (mysql or sqlite)")));
        }
        None => url,
    };
    Ok(Arc::new(SqliteStore::open(path)?))
}
