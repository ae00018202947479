//! The SQLite backend of [`Store`].
//!
//! Every method blocks on disk I/O and possibly on SQLite's write lock, so this code
//! runs on worker-pool threads (and the log writer's thread) only, never on a reactor
//! thread.
//!
//! Layout:
//! - One writing connection and a small pool of reading ones, each behind a
//!   `std::sync::Mutex`. Writers queue on the writing connection's mutex (SQLite has
//!   one writer at a time anyway), which keeps its large page cache valid. A reader
//!   takes a free reading connection (`try_lock`, round-robin) so reads run in
//!   parallel; when all are busy it blocks on one of them.
//! - WAL journal mode: readers never block the writer and the writer never blocks
//!   readers. Durability is [`Synchronous`]: `NORMAL` (the default) keeps every commit
//!   through a crash or kill -9 of the process (the WAL is in the OS's page cache), and
//!   on power loss loses at most the last commits, never consistency; `FULL`
//!   (`sqlite://PATH?sync=full`) fsyncs the WAL at every commit, so a commit also
//!   survives power loss. Group commit (`append` of many messages in one transaction)
//!   makes that one fsync per batch, not per message. Checkpoints run every
//!   [`CHECKPOINT_PAGES`] WAL pages, so the `-wal` file grows to about 40 MB.
//! - The message log: `append` writes each message's row and its inbox rows with
//!   prepared statements in one transaction; a taken `(sender, cmid)` is found by the
//!   unique key (`ON CONFLICT DO NOTHING`, then the first row is read). History reads
//!   `message_conv` backwards (`INDEXED BY`: a missing index is an error, never a
//!   scan); expiry deletes in batches of [`EXPIRE_BATCH`] messages per transaction.
//! - Every write runs in a `BEGIN IMMEDIATE` transaction: it takes the write lock up
//!   front, waiting in the busy handler, instead of starting as a reader and failing
//!   with `SQLITE_BUSY` when it tries to upgrade while another connection writes.
//! - One small function per query; all of them use `prepare_cached` and bound
//!   parameters. SQL text is never built from data.
//!
//! The schema is `sql/chat.sql`, the MySQL backend's too: SQLite's DDL is derived from
//! it at every open (`schema.rs`), so both stores have the same tables and indexes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use rusqlite::{ffi, params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};

use super::{
    schema, Accepted, Conversation, Credentials, Group, GroupId, Member, Message, Mid, NewMessage, Result, Role, Store,
    StoreError, User, UserId,
};

/// Reading connections of a file database (it has one writing connection besides).
const POOL_SIZE: usize = 4;
/// The writing connection's page cache, in KiB (a negative `cache_size`): room for the
/// index pages the log's inserts touch (SQLite's default is 2 MiB); bounded, as it is
/// resident memory of the server. Taken as needed.
const WRITER_CACHE: i64 = -16_384;
/// WAL pages after which a commit checkpoints them into the database file (default
/// 1000): fewer, larger checkpoints write a page rewritten by many commits once.
const CHECKPOINT_PAGES: i64 = 10_000;
/// How long a statement waits for a lock held by another connection before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Prepared statements kept per connection; there are about 25 distinct queries.
const STATEMENT_CACHE: usize = 64;

const STATE_ONLINE: &str = "online";
const STATE_OFFLINE: &str = "offline";

/// When a commit is on disk: SQLite's `PRAGMA synchronous` in WAL mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// Commits survive a crash of the process (kill -9), not a power loss: the WAL is
    /// fsynced at checkpoints only.
    #[default]
    Normal,
    /// Every commit fsyncs the WAL: commits survive a power loss too.
    Full,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// Messages one `expire` transaction deletes at most, so other writers wait little.
const EXPIRE_BATCH: usize = 1000;

/// A [`Store`] on one SQLite file, shared by all worker threads.
pub struct SqliteStore {
    /// The connection every write transaction runs on. SQLite lets one connection
    /// write at a time anyway; a single one keeps its page cache (the hot index pages
    /// of the log) valid, where writes rotating over several connections would each
    /// find their cache invalidated by the others' commits.
    writer: Mutex<Connection>,
    /// Connections for reads, which run in parallel. Empty for `:memory:`.
    readers: Vec<Mutex<Connection>>,
    /// Where the next reader search starts, so load spreads over the pool.
    next: AtomicUsize,
}

impl SqliteStore {
    /// Opens (creating when missing) the database file at `path` and its schema.
    ///
    /// `":memory:"` gives a private in-memory database; it uses a single connection,
    /// since each connection to `:memory:` would be a separate database.
    pub fn open(path: &str) -> Result<SqliteStore> {
        SqliteStore::open_with(path, Synchronous::default())
    }

    /// [`SqliteStore::open`] with the durability of commits chosen.
    pub fn open_with(path: &str, sync: Synchronous) -> Result<SqliteStore> {
        let readers = if path == ":memory:" { 0 } else { POOL_SIZE };
        let mut writer = open_connection(path, sync)?;
        create_schema(&mut writer)?;
        writer.pragma_update(None, "cache_size", WRITER_CACHE)?;
        writer.pragma_update(None, "wal_autocheckpoint", CHECKPOINT_PAGES)?;
        let readers = (0..readers).map(|_| open_connection(path, sync).map(Mutex::new)).collect::<Result<_>>()?;
        Ok(SqliteStore { writer: Mutex::new(writer), readers, next: AtomicUsize::new(0) })
    }

    /// A reading connection for the caller's exclusive use: the first free one from a
    /// rotating start, else waits for the one at the start.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        let n = self.readers.len();
        if n == 0 {
            return self.writer();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            match self.readers[(start + i) % n].try_lock() {
                Ok(guard) => return guard,
                Err(TryLockError::Poisoned(poisoned)) => return recover(poisoned.into_inner()),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        lock(&self.readers[start])
    }

    /// The writing connection, once the writer before has finished.
    fn writer(&self) -> MutexGuard<'_, Connection> {
        lock(&self.writer)
    }

    /// Runs `f` on a connection outside any explicit transaction: for single reads.
    fn read<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        f(&self.conn())
    }

    /// Runs several reads in one deferred transaction, so they see one snapshot.
    fn snapshot<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Deferred)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Runs `f` in a `BEGIN IMMEDIATE` transaction; commits when `f` succeeds, and
    /// rolls back (when the transaction is dropped) when it fails.
    fn write<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let mut conn = self.writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }
}

fn lock(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    match conn.lock() {
        Ok(guard) => guard,
        Err(poisoned) => recover(poisoned.into_inner()),
    }
}

/// A thread panicked while holding this connection. A `Transaction` rolls back when
/// dropped during unwinding, but make sure no transaction is left open.
fn recover(guard: MutexGuard<'_, Connection>) -> MutexGuard<'_, Connection> {
    if !guard.is_autocommit() {
        if let Err(err) = guard.execute_batch("ROLLBACK") {
            log::warn!("sqlite: rollback after a panic failed: {err}");
        }
    }
    guard
}

fn open_connection(path: &str, sync: Synchronous) -> Result<Connection> {
    let conn = Connection::open(path)?;
    // First, so the pragmas and the schema below wait for other connections too.
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // The journal mode is stored in the file; setting it again is a no-op. An
    // in-memory database answers "memory", which is fine.
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
        log::warn!("sqlite: {path}: journal_mode is {mode}, not wal");
    }
    conn.pragma_update(None, "synchronous", sync.pragma())?;
    Ok(conn)
}

/// The tables and indexes of `sql/chat.sql`, derived for SQLite (see `schema.rs`), in
/// an immediate transaction, so two processes opening a new file at once do not
/// interleave their `CREATE`s.
fn create_schema(conn: &mut Connection) -> Result<()> {
    let statements = schema::sqlite_statements().map_err(StoreError::Unavailable)?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    for statement in &statements {
        tx.execute_batch(statement)?;
    }
    tx.commit()?;
    Ok(())
}

/// Unique and primary-key violations are the only conflicts the API reports; any
/// other failure (I/O, lock timeout, corruption, a NOT NULL violation that would be a
/// bug) is `Unavailable`.
impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> StoreError {
        if let rusqlite::Error::SqliteFailure(e, _) = &err {
            if e.code == ErrorCode::ConstraintViolation
                && matches!(e.extended_code, ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY)
            {
                return StoreError::Conflict;
            }
        }
        log::warn!("sqlite: {err}");
        StoreError::Unavailable(err.to_string())
    }
}

fn state_str(online: bool) -> &'static str {
    if online {
        STATE_ONLINE
    } else {
        STATE_OFFLINE
    }
}

fn parse_role(role: &str) -> Result<Role> {
    match role {
        "creator" => Ok(Role::Creator),
        "normal" => Ok(Role::Normal),
        other => Err(StoreError::Unavailable(format!("unknown grouprole {other:?}"))),
    }
}

// ---------------------------------------------------------------------------------
// Queries: one function each.

fn insert_user(conn: &Connection, name: &str, password_hash: &str) -> Result<UserId> {
    conn.prepare_cached("INSERT INTO user (name, password) VALUES (?1, ?2)")?.execute(params![name, password_hash])?;
    Ok(conn.last_insert_rowid())
}

fn select_credentials(conn: &Connection, id: UserId) -> Result<Option<Credentials>> {
    let creds = conn
        .prepare_cached("SELECT id, name, password FROM user WHERE id = ?1")?
        .query_row(params![id], |row| {
            Ok(Credentials { id: row.get(0)?, name: row.get(1)?, password_hash: row.get(2)? })
        })
        .optional()?;
    Ok(creds)
}

fn select_user_exists(conn: &Connection, id: UserId) -> Result<bool> {
    let found =
        conn.prepare_cached("SELECT 1 FROM user WHERE id = ?1")?.query_row(params![id], |_| Ok(())).optional()?;
    Ok(found.is_some())
}

fn update_state(conn: &Connection, id: UserId, online: bool) -> Result<()> {
    conn.prepare_cached("UPDATE user SET state = ?1 WHERE id = ?2")?.execute(params![state_str(online), id])?;
    Ok(())
}

fn update_all_offline(conn: &Connection) -> Result<()> {
    // The WHERE keeps rows that are already offline from being rewritten.
    conn.prepare_cached("UPDATE user SET state = ?1 WHERE state <> ?1")?.execute(params![STATE_OFFLINE])?;
    Ok(())
}

fn select_online(conn: &Connection) -> Result<Vec<UserId>> {
    let mut stmt = conn.prepare_cached("SELECT id FROM user WHERE state = ?1")?;
    let rows = stmt.query_map(params![STATE_ONLINE], |row| row.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn insert_friend(conn: &Connection, user: UserId, friend: UserId) -> Result<()> {
    conn.prepare_cached("INSERT INTO friend (userid, friendid) VALUES (?1, ?2)")?.execute(params![user, friend])?;
    Ok(())
}

/// Returns whether a row was deleted.
fn delete_friend(conn: &Connection, user: UserId, friend: UserId) -> Result<bool> {
    let n = conn
        .prepare_cached("DELETE FROM friend WHERE userid = ?1 AND friendid = ?2")?
        .execute(params![user, friend])?;
    Ok(n > 0)
}

fn select_friends(conn: &Connection, user: UserId) -> Result<Vec<User>> {
    let mut stmt = conn.prepare_cached(
        "SELECT u.id, u.name, u.state
           FROM friend f JOIN user u ON u.id = f.friendid
          WHERE f.userid = ?1
          ORDER BY u.id",
    )?;
    let rows = stmt.query_map(params![user], |row| {
        Ok(User { id: row.get(0)?, name: row.get(1)?, online: row.get::<_, String>(2)? == STATE_ONLINE })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn insert_group(conn: &Connection, name: &str, desc: &str) -> Result<GroupId> {
    conn.prepare_cached("INSERT INTO allgroup (groupname, groupdesc) VALUES (?1, ?2)")?.execute(params![name, desc])?;
    Ok(conn.last_insert_rowid())
}

fn select_group_exists(conn: &Connection, group: GroupId) -> Result<bool> {
    let found = conn
        .prepare_cached("SELECT 1 FROM allgroup WHERE id = ?1")?
        .query_row(params![group], |_| Ok(()))
        .optional()?;
    Ok(found.is_some())
}

fn delete_group(conn: &Connection, group: GroupId) -> Result<()> {
    conn.prepare_cached("DELETE FROM allgroup WHERE id = ?1")?.execute(params![group])?;
    Ok(())
}

fn insert_member(conn: &Connection, group: GroupId, user: UserId, role: Role) -> Result<()> {
    conn.prepare_cached("INSERT INTO groupuser (groupid, userid, grouprole) VALUES (?1, ?2, ?3)")?.execute(params![
        group,
        user,
        role.as_str()
    ])?;
    Ok(())
}

fn select_role(conn: &Connection, group: GroupId, user: UserId) -> Result<Option<Role>> {
    let role: Option<String> = conn
        .prepare_cached("SELECT grouprole FROM groupuser WHERE groupid = ?1 AND userid = ?2")?
        .query_row(params![group, user], |row| row.get(0))
        .optional()?;
    role.as_deref().map(parse_role).transpose()
}

fn delete_member(conn: &Connection, group: GroupId, user: UserId) -> Result<()> {
    conn.prepare_cached("DELETE FROM groupuser WHERE groupid = ?1 AND userid = ?2")?.execute(params![group, user])?;
    Ok(())
}

fn delete_all_members(conn: &Connection, group: GroupId) -> Result<()> {
    conn.prepare_cached("DELETE FROM groupuser WHERE groupid = ?1")?.execute(params![group])?;
    Ok(())
}

fn select_members(conn: &Connection, group: GroupId) -> Result<Vec<(UserId, Role)>> {
    let mut stmt = conn.prepare_cached("SELECT userid, grouprole FROM groupuser WHERE groupid = ?1 ORDER BY userid")?;
    let rows = stmt.query_map(params![group], |row| Ok((row.get::<_, UserId>(0)?, row.get::<_, String>(1)?)))?;
    let mut members = Vec::new();
    for row in rows {
        let (id, role) = row?;
        members.push((id, parse_role(&role)?));
    }
    Ok(members)
}

/// The groups `user` belongs to, sorted by id, with empty member lists.
fn select_user_groups(conn: &Connection, user: UserId) -> Result<Vec<Group>> {
    let mut stmt = conn.prepare_cached(
        "SELECT g.id, g.groupname, g.groupdesc
           FROM groupuser m JOIN allgroup g ON g.id = m.groupid
          WHERE m.userid = ?1
          ORDER BY g.id",
    )?;
    let rows = stmt.query_map(params![user], |row| {
        Ok(Group { id: row.get(0)?, name: row.get(1)?, desc: row.get(2)?, members: Vec::new() })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Every member of every group `user` belongs to, as (group id, member), sorted by
/// group id then user id: one join instead of one query per group.
fn select_user_groups_members(conn: &Connection, user: UserId) -> Result<Vec<(GroupId, Member)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT gu.groupid, u.id, u.name, u.state, gu.grouprole
           FROM groupuser mine
           JOIN groupuser gu ON gu.groupid = mine.groupid
           JOIN user u ON u.id = gu.userid
          WHERE mine.userid = ?1
          ORDER BY gu.groupid, u.id",
    )?;
    let rows = stmt.query_map(params![user], |row| {
        let user = User { id: row.get(1)?, name: row.get(2)?, online: row.get::<_, String>(3)? == STATE_ONLINE };
        Ok((row.get::<_, GroupId>(0)?, user, row.get::<_, String>(4)?))
    })?;
    let mut members = Vec::new();
    for row in rows {
        let (group, user, role) = row?;
        members.push((group, Member { user, role: parse_role(&role)? }));
    }
    Ok(members)
}

/// A [`Message`] from the columns mid, sender, sendername, convlo, convhi, msg, time.
fn message_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Message> {
    let sender = row.get(1)?;
    Ok(Message {
        mid: row.get(0)?,
        sender,
        sender_name: row.get(2)?,
        to: Conversation::from_key(sender, (row.get(3)?, row.get(4)?)),
        text: row.get(5)?,
        time: row.get(6)?,
    })
}

/// Appends `msgs` in order: a new row and its inbox rows each, or the first row's mid
/// and time when the sender's cmid is taken (by an earlier call or earlier in `msgs`:
/// the transaction sees its own rows).
fn insert_messages(conn: &Connection, msgs: &[NewMessage]) -> Result<Vec<Accepted>> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO message (sender, sendername, convlo, convhi, msg, time, unixtime, cmid)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (sender, cmid) DO NOTHING",
    )?;
    let mut owed = conn.prepare_cached("INSERT INTO inbox (userid, mid) VALUES (?1, ?2) ON CONFLICT DO NOTHING")?;
    let mut accepted = Vec::with_capacity(msgs.len());
    for m in msgs {
        let (lo, hi) = m.to.key(m.sender).ok_or(StoreError::NotFound)?;
        let added = insert.execute(params![m.sender, m.sender_name, lo, hi, &*m.text, m.time, m.unix_time, m.cmid])?;
        if added == 0 {
            // Only the (sender, cmid) key can conflict: the mid is new.
            let (mid, time) = select_by_cmid(conn, m.sender, m.cmid.as_deref())?;
            accepted.push(Accepted { mid, time, first: false });
            continue;
        }
        let mid = conn.last_insert_rowid();
        for &user in &m.recipients {
            owed.execute(params![user, mid])?;
        }
        accepted.push(Accepted { mid, time: m.time.clone(), first: true });
    }
    Ok(accepted)
}

fn select_by_cmid(conn: &Connection, sender: UserId, cmid: Option<&str>) -> Result<(Mid, String)> {
    let row = conn
        .prepare_cached("SELECT mid, time FROM message WHERE sender = ?1 AND cmid = ?2")?
        .query_row(params![sender, cmid], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    row.ok_or_else(|| StoreError::Unavailable(format!("message of {sender} with cmid {cmid:?}: conflict, but no row")))
}

/// A user's inbox after a mid, oldest first.
const INBOX: &str = "SELECT m.mid, m.sender, m.sendername, m.convlo, m.convhi, m.msg, m.time
                       FROM inbox i JOIN message m ON m.mid = i.mid
                      WHERE i.userid = ?1 AND i.mid > ?2
                      ORDER BY i.mid
                      LIMIT ?3";

fn select_inbox(conn: &Connection, user: UserId, after: Mid, limit: usize) -> Result<Vec<Message>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(INBOX)?;
    let rows = stmt.query_map(params![user, after, limit], message_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn delete_inbox_rows(conn: &Connection, user: UserId, mids: &[Mid]) -> Result<()> {
    let mut stmt = conn.prepare_cached("DELETE FROM inbox WHERE userid = ?1 AND mid = ?2")?;
    for &mid in mids {
        stmt.execute(params![user, mid])?;
    }
    Ok(())
}

/// A conversation's page: up to `limit` of its messages with mid < `before`, newest
/// first. `INDEXED BY`: without the index this is an error, never a scan of the log.
const HISTORY: &str = "SELECT mid, sender, sendername, convlo, convhi, msg, time
                         FROM message INDEXED BY message_conv
                        WHERE convlo = ?1 AND convhi = ?2 AND mid < ?3
                        ORDER BY mid DESC
                        LIMIT ?4";

fn select_history(conn: &Connection, (lo, hi): (i64, i64), before: Mid, limit: usize) -> Result<Vec<Message>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(HISTORY)?;
    let rows = stmt.query_map(params![lo, hi, before, limit], message_row)?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Up to `limit` mids of messages accepted before a time.
const EXPIRED: &str = "SELECT mid FROM message WHERE unixtime < ?1 LIMIT ?2";

fn select_expired(conn: &Connection, unix_time: i64, limit: usize) -> Result<Vec<Mid>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(EXPIRED)?;
    let rows = stmt.query_map(params![unix_time, limit], |row| row.get(0))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// Deletes these messages and their inbox rows; returns how many messages went.
fn delete_messages(conn: &Connection, mids: &[Mid]) -> Result<usize> {
    let mut owed = conn.prepare_cached("DELETE FROM inbox WHERE mid = ?1")?;
    let mut message = conn.prepare_cached("DELETE FROM message WHERE mid = ?1")?;
    let mut deleted = 0;
    for &mid in mids {
        owed.execute(params![mid])?;
        deleted += message.execute(params![mid])?;
    }
    Ok(deleted)
}

/// The inbox rows of a conversation's messages.
const DELETE_CONVERSATION_INBOX: &str =
    "DELETE FROM inbox WHERE mid IN (SELECT mid FROM message WHERE convlo = ?1 AND convhi = ?2)";
const DELETE_CONVERSATION: &str = "DELETE FROM message WHERE convlo = ?1 AND convhi = ?2";

/// Deletes a group's messages and their inbox rows.
fn delete_group_messages(conn: &Connection, group: GroupId) -> Result<()> {
    let Some((lo, hi)) = Conversation::Group(group).key(0) else {
        return Ok(());
    };
    conn.prepare_cached(DELETE_CONVERSATION_INBOX)?.execute(params![lo, hi])?;
    conn.prepare_cached(DELETE_CONVERSATION)?.execute(params![lo, hi])?;
    Ok(())
}

// ---------------------------------------------------------------------------------

impl Store for SqliteStore {
    fn create_user(&self, name: &str, password_hash: &str) -> Result<UserId> {
        self.write(|tx| insert_user(tx, name, password_hash))
    }

    fn credentials(&self, id: UserId) -> Result<Option<Credentials>> {
        self.read(|c| select_credentials(c, id))
    }

    fn user_exists(&self, id: UserId) -> Result<bool> {
        self.read(|c| select_user_exists(c, id))
    }

    fn set_online(&self, ids: &[UserId], online: bool) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.write(|tx| ids.iter().try_for_each(|&id| update_state(tx, id, online)))
    }

    fn set_all_offline(&self) -> Result<()> {
        self.write(update_all_offline)
    }

    fn online_users(&self) -> Result<Vec<UserId>> {
        self.read(select_online)
    }

    fn add_friend(&self, user: UserId, friend: UserId) -> Result<()> {
        self.write(|tx| insert_friend(tx, user, friend))
    }

    fn del_friend(&self, user: UserId, friend: UserId) -> Result<()> {
        if self.write(|tx| delete_friend(tx, user, friend))? {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    fn friends(&self, user: UserId) -> Result<Vec<User>> {
        self.read(|c| select_friends(c, user))
    }

    fn create_group(&self, creator: UserId, name: &str, desc: &str) -> Result<GroupId> {
        self.write(|tx| {
            let group = insert_group(tx, name, desc)?;
            insert_member(tx, group, creator, Role::Creator)?;
            Ok(group)
        })
    }

    fn join_group(&self, group: GroupId, user: UserId) -> Result<()> {
        self.write(|tx| {
            if !select_group_exists(tx, group)? {
                return Err(StoreError::NotFound);
            }
            // The primary key (groupid, userid) turns "already a member" into Conflict.
            insert_member(tx, group, user, Role::Normal)
        })
    }

    fn leave_group(&self, group: GroupId, user: UserId) -> Result<Role> {
        self.write(|tx| {
            // Membership rows only exist for existing groups, so "no row" covers both
            // "no such group" and "not a member".
            let role = select_role(tx, group, user)?.ok_or(StoreError::NotFound)?;
            match role {
                Role::Normal => delete_member(tx, group, user)?,
                Role::Creator => {
                    delete_group_messages(tx, group)?;
                    delete_all_members(tx, group)?;
                    delete_group(tx, group)?;
                }
            }
            Ok(role)
        })
    }

    fn group_members(&self, group: GroupId) -> Result<Option<Vec<(UserId, Role)>>> {
        self.snapshot(|c| {
            if !select_group_exists(c, group)? {
                return Ok(None);
            }
            select_members(c, group).map(Some)
        })
    }

    fn user_groups(&self, user: UserId) -> Result<Vec<Group>> {
        self.snapshot(|c| {
            let mut groups = select_user_groups(c, user)?;
            // Both lists are sorted by group id; groups are unique, so search by id.
            for (group, member) in select_user_groups_members(c, user)? {
                if let Ok(i) = groups.binary_search_by_key(&group, |g| g.id) {
                    groups[i].members.push(member);
                }
            }
            Ok(groups)
        })
    }

    fn append(&self, msgs: &[NewMessage]) -> Result<Vec<Accepted>> {
        if msgs.is_empty() {
            return Ok(Vec::new());
        }
        self.write(|tx| insert_messages(tx, msgs))
    }

    fn inbox(&self, user: UserId, after: Mid, limit: usize) -> Result<Vec<Message>> {
        self.read(|c| select_inbox(c, user, after, limit))
    }

    fn settle(&self, settles: &[(UserId, Vec<Mid>)]) -> Result<()> {
        if settles.iter().all(|(_, mids)| mids.is_empty()) {
            return Ok(());
        }
        self.write(|tx| settles.iter().try_for_each(|(user, mids)| delete_inbox_rows(tx, *user, mids)))
    }

    fn history(
        &self,
        me: UserId,
        conv: Conversation,
        before: Option<Mid>,
        limit: usize,
    ) -> Result<(Vec<Message>, bool)> {
        let Some(key) = conv.key(me) else {
            return Ok((Vec::new(), false));
        };
        let page = self.read(|c| select_history(c, key, before.unwrap_or(Mid::MAX), limit.saturating_add(1)))?;
        Ok(super::history_page(page, limit))
    }

    fn expire(&self, unix_time: i64) -> Result<usize> {
        let mut total = 0;
        loop {
            let (found, deleted) = self.write(|tx| {
                let mids = select_expired(tx, unix_time, EXPIRE_BATCH)?;
                Ok((mids.len(), delete_messages(tx, &mids)?))
            })?;
            total += deleted;
            if found < EXPIRE_BATCH {
                return Ok(total);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The database file in `dir`, a fresh temp dir removed on drop.
    fn db(dir: &tempfile::TempDir) -> String {
        dir.path().join("chat.db").to_str().unwrap().to_owned()
    }

    fn all_conns(s: &SqliteStore) -> impl Iterator<Item = &Mutex<Connection>> {
        std::iter::once(&s.writer).chain(&s.readers)
    }

    fn table_names(store: &SqliteStore) -> Vec<String> {
        let conn = store.conn();
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
            .unwrap();
        let rows = stmt.query_map([], |row| row.get(0)).unwrap();
        rows.collect::<rusqlite::Result<_>>().unwrap()
    }

    #[test]
    fn schema_has_the_seed_tables_and_wal() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&db(&dir)).unwrap();
        assert_eq!(table_names(&store), ["allgroup", "friend", "groupuser", "inbox", "message", "user"]);
        let mode: String = store.conn().query_row("PRAGMA journal_mode", [], |row| row.get(0)).unwrap();
        assert_eq!(mode.to_ascii_lowercase(), "wal");
        assert_eq!(store.readers.len(), POOL_SIZE);
    }

    /// The plan's lines of `EXPLAIN QUERY PLAN sql` (all parameters bound to 1).
    fn plan(store: &SqliteStore, sql: &str) -> Vec<String> {
        let conn = store.conn();
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let ones = vec![1i64; stmt.parameter_count()];
        let rows = stmt.query_map(rusqlite::params_from_iter(ones), |row| row.get::<_, String>(3)).unwrap();
        rows.collect::<rusqlite::Result<_>>().unwrap()
    }

    /// Appends `text` from `u` to their own notes, owed to `u`.
    fn owe(s: &SqliteStore, u: UserId, text: &str) {
        let mut m = message(u, Conversation::Peer(u), 0);
        (m.text, m.cmid, m.recipients) = (text.into(), None, vec![u]);
        s.append(&[m]).unwrap();
    }

    /// The texts of `u`'s inbox, settled.
    fn take(s: &SqliteStore, u: UserId) -> Vec<String> {
        let page = s.inbox(u, 0, 1000).unwrap();
        s.settle(&[(u, page.iter().map(|m| m.mid).collect())]).unwrap();
        page.into_iter().map(|m| m.text).collect()
    }

    fn message(sender: UserId, to: Conversation, i: usize) -> NewMessage {
        NewMessage {
            sender,
            sender_name: format!("u{sender}"),
            to,
            text: format!("m{i}").into(),
            time: "2026-01-01 00:00:00".into(),
            unix_time: i64::try_from(i).unwrap(),
            cmid: Some(format!("c{i}")),
            recipients: vec![sender + 1],
        }
    }

    /// Every query of the log reads a short range of an index: a history page, an
    /// inbox page and an expiry batch cost the same at the millionth message as at the
    /// first. Pinned on the plan (with statistics, as after ANALYZE, and without), not
    /// on timings.
    #[test]
    fn the_log_is_read_through_its_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&db(&dir)).unwrap();
        let mut i = 0;
        for _ in 0..20 {
            let batch: Vec<NewMessage> = (1..=50)
                .flat_map(|u| {
                    i += 2;
                    [message(u, Conversation::Peer(u + 1), i), message(u, Conversation::Group(u % 3 + 1), i + 1)]
                })
                .collect();
            s.append(&batch).unwrap();
        }
        for analyzed in [false, true] {
            if analyzed {
                s.conn().execute_batch("ANALYZE").unwrap();
            }
            let checks: &[(&str, &[&str])] = &[
                (HISTORY, &["SEARCH message USING INDEX message_conv (convlo=? AND convhi=? AND mid<?)"]),
                (
                    INBOX,
                    &[
                        "SEARCH i USING PRIMARY KEY (userid=? AND mid>?)",
                        "SEARCH m USING INTEGER PRIMARY KEY (rowid=?)",
                    ],
                ),
                (EXPIRED, &["SEARCH message USING COVERING INDEX message_unixtime (unixtime<?)"]),
                (DELETE_CONVERSATION, &["SEARCH message USING INDEX message_conv (convlo=? AND convhi=?)"]),
            ];
            for (sql, want) in checks {
                assert_eq!(plan(&s, sql), *want, "{sql} (analyzed: {analyzed})");
            }
            let inbox = plan(&s, DELETE_CONVERSATION_INBOX);
            assert!(inbox.iter().all(|l| !l.starts_with("SCAN") && !l.contains("TEMP B-TREE")), "{inbox:?}");
            assert!(inbox[0].starts_with("SEARCH inbox USING COVERING INDEX inbox_mid (mid=?)"), "{inbox:?}");
        }
    }

    #[test]
    fn sync_full_is_set_on_every_connection() {
        let dir = tempfile::tempdir().unwrap();
        for (sync, want) in [(Synchronous::Normal, 1), (Synchronous::Full, 2)] {
            let s = SqliteStore::open_with(&db(&dir), sync).unwrap();
            for conn in all_conns(&s) {
                let got: i64 = conn.lock().unwrap().query_row("PRAGMA synchronous", [], |r| r.get(0)).unwrap();
                assert_eq!(got, want, "{sync:?}");
            }
        }
    }

    #[test]
    fn schema_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let a = SqliteStore::open(&db(&dir)).unwrap();
        let alice = a.create_user("alice", "h").unwrap();
        // A second store on the same file while the first is still open.
        let b = SqliteStore::open(&db(&dir)).unwrap();
        assert_eq!(table_names(&b), table_names(&a));
        assert!(b.user_exists(alice).unwrap());
        let bob = b.create_user("bob", "h").unwrap();
        assert!(a.user_exists(bob).unwrap());
        assert_eq!(b.create_user("alice", "x"), Err(StoreError::Conflict));
        drop(a);
        drop(b);
        let c = SqliteStore::open(&db(&dir)).unwrap();
        assert!(c.user_exists(alice).unwrap() && c.user_exists(bob).unwrap());
    }

    #[test]
    fn data_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (alice, bob, group) = {
            let s = SqliteStore::open(&db(&dir)).unwrap();
            let alice = s.create_user("alice", "$argon2id$v=19$...").unwrap();
            let bob = s.create_user("bob", "hash-b").unwrap();
            s.set_online(&[bob], true).unwrap();
            s.add_friend(alice, bob).unwrap();
            let group = s.create_group(alice, "g", "desc").unwrap();
            s.join_group(group, bob).unwrap();
            owe(&s, alice, "one");
            owe(&s, alice, "two");
            (alice, bob, group)
        };
        let s = SqliteStore::open(&db(&dir)).unwrap();
        assert_eq!(
            s.credentials(alice).unwrap(),
            Some(Credentials { id: alice, name: "alice".into(), password_hash: "$argon2id$v=19$...".into() })
        );
        assert_eq!(s.friends(alice).unwrap(), [User { id: bob, name: "bob".into(), online: true }]);
        assert_eq!(s.group_members(group).unwrap(), Some(vec![(alice, Role::Creator), (bob, Role::Normal)]));
        assert_eq!(take(&s, alice), ["one", "two"]);
        s.set_all_offline().unwrap();
        drop(s);
        let s = SqliteStore::open(&db(&dir)).unwrap();
        assert!(take(&s, alice).is_empty());
        assert_eq!(s.history(alice, Conversation::Peer(alice), None, 10).unwrap().0.len(), 2);
        assert!(!s.friends(alice).unwrap()[0].online);
    }

    #[test]
    fn ids_are_not_reused_after_delete() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&db(&dir)).unwrap();
        let u = s.create_user("u", "h").unwrap();
        let g1 = s.create_group(u, "g", "").unwrap();
        s.leave_group(g1, u).unwrap();
        let g2 = s.create_group(u, "g", "").unwrap();
        assert!(g2 > g1);
    }

    #[test]
    fn memory_database_works() {
        let s = SqliteStore::open(":memory:").unwrap();
        assert_eq!(all_conns(&s).count(), 1);
        let u = s.create_user("u", "h").unwrap();
        owe(&s, u, "m");
        assert_eq!(take(&s, u), ["m"]);
    }

    #[test]
    fn nul_bytes_round_trip() {
        let s = SqliteStore::open(":memory:").unwrap();
        let u = s.create_user("a\0b", "h\0").unwrap();
        assert_eq!(s.credentials(u).unwrap().unwrap().name, "a\0b");
        owe(&s, u, "x\0y\0");
        assert_eq!(take(&s, u), ["x\0y\0"]);
    }

    #[test]
    fn errors_map_to_conflict_or_unavailable() {
        let s = SqliteStore::open(":memory:").unwrap();
        let err = s.conn().execute("SELECT * FROM no_such_table", []).unwrap_err();
        assert!(matches!(StoreError::from(err), StoreError::Unavailable(_)));
        let u = s.create_user("u", "h").unwrap();
        s.add_friend(u, u).unwrap();
        assert_eq!(s.add_friend(u, u), Err(StoreError::Conflict)); // primary key
        assert_eq!(s.create_user("u", "h"), Err(StoreError::Conflict)); // unique
    }

    #[test]
    fn failed_write_rolls_back() {
        let s = SqliteStore::open(":memory:").unwrap();
        let u = s.create_user("u", "h").unwrap();
        s.create_group(u, "taken", "").unwrap();
        // The group insert fails, so nothing of this transaction may remain.
        assert_eq!(s.create_group(u, "taken", ""), Err(StoreError::Conflict));
        assert_eq!(s.user_groups(u).unwrap().len(), 1);
        // The connection is usable afterwards (no transaction left open).
        assert!(s.conn().is_autocommit());
        s.create_group(u, "other", "").unwrap();
    }

    #[test]
    fn poisoned_connection_is_recovered() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(SqliteStore::open(&db(&dir)).unwrap());
        let u = s.create_user("u", "h").unwrap();
        let n = all_conns(&s).count();
        for i in 0..n {
            let s2 = Arc::clone(&s);
            let joined = std::thread::spawn(move || {
                let guard = all_conns(&s2).nth(i).unwrap().lock().unwrap();
                guard.execute_batch("BEGIN").unwrap();
                panic!("poison connection {i} mid-transaction");
            })
            .join();
            assert!(joined.is_err());
        }
        // Every connection is poisoned and was left inside a transaction.
        for _ in 0..2 * n {
            owe(&s, u, "m");
            assert_eq!(take(&s, u), ["m"]);
        }
    }

    #[test]
    fn parallel_readers_and_writers() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&db(&dir)).unwrap();
        let ids: Vec<UserId> = (0..8).map(|i| s.create_user(&format!("user{i}"), "h").unwrap()).collect();
        std::thread::scope(|scope| {
            for (t, &me) in ids.iter().enumerate() {
                let s = &s;
                let ids = &ids;
                scope.spawn(move || {
                    for round in 0..50 {
                        // Never `me`: the creator cannot join its own group.
                        let friend = ids[(t + 1 + round % (ids.len() - 1)) % ids.len()];
                        match s.add_friend(me, friend) {
                            Ok(()) | Err(StoreError::Conflict) => {}
                            Err(err) => panic!("add_friend: {err}"),
                        }
                        s.set_online(&[me], round % 2 == 0).unwrap();
                        assert!(s.user_exists(friend).unwrap());
                        s.friends(me).unwrap();
                        let g = s.create_group(me, &format!("g{t}-{round}"), "").unwrap();
                        s.join_group(g, friend).unwrap();
                        s.user_groups(friend).unwrap();
                    }
                });
            }
        });
        assert_eq!(s.friends(ids[0]).unwrap().len(), ids.len() - 1);
    }
}
