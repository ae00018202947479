//! The SQLite backend of [`Store`].
//!
//! Every method blocks on disk I/O and possibly on SQLite's write lock, so this code
//! runs on worker-pool threads only, never on a reactor thread.
//!
//! Layout:
//! - A small pool of connections, each behind a `std::sync::Mutex`. A caller takes a
//!   free one (`try_lock`, round-robin) so reads run in parallel; when all are busy it
//!   blocks on one of them.
//! - WAL journal mode: readers never block the writer and the writer never blocks
//!   readers. `synchronous=NORMAL` is durable against process crashes, and in WAL mode
//!   loses at most the last transactions on power loss, never consistency.
//! - Every write runs in a `BEGIN IMMEDIATE` transaction: it takes the write lock up
//!   front, waiting in the busy handler, instead of starting as a reader and failing
//!   with `SQLITE_BUSY` when it tries to upgrade while another connection writes.
//! - One small function per query; all of them use `prepare_cached` and bound
//!   parameters. SQL text is never built from data.
//!
//! Table names are the canonical ones of the C++ seed (`user`, `friend`, `allgroup`,
//! `groupuser`, `offlinemessage`) so a MySQL backend can share the schema.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use rusqlite::{ffi, params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};

use super::{Credentials, Group, GroupId, Member, Result, Role, Store, StoreError, User, UserId};

/// Connections in the pool of a file database.
const POOL_SIZE: usize = 4;
/// How long a statement waits for a lock held by another connection before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Prepared statements kept per connection; there are about 25 distinct queries.
const STATEMENT_CACHE: usize = 64;

const STATE_ONLINE: &str = "online";
const STATE_OFFLINE: &str = "offline";

/// Idempotent: run on every open. Types follow the seed; `AUTOINCREMENT` so an id is
/// never handed out twice, even after the row with the highest id is deleted.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS user (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    name     TEXT    NOT NULL UNIQUE,
    password TEXT    NOT NULL,                   -- argon2 PHC hash
    state    TEXT    NOT NULL DEFAULT 'offline'  -- 'online' | 'offline'
);
CREATE TABLE IF NOT EXISTS friend (
    userid   INTEGER NOT NULL,
    friendid INTEGER NOT NULL,
    PRIMARY KEY (userid, friendid)
);
CREATE TABLE IF NOT EXISTS allgroup (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    groupname TEXT    NOT NULL UNIQUE,
    groupdesc TEXT    NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS groupuser (
    groupid   INTEGER NOT NULL,
    userid    INTEGER NOT NULL,
    grouprole TEXT    NOT NULL,                  -- 'creator' | 'normal'
    PRIMARY KEY (groupid, userid)
);
CREATE INDEX IF NOT EXISTS groupuser_userid ON groupuser (userid);
-- Covers a group's member list (every GROUP_CHAT reads it) without a row lookup each.
CREATE INDEX IF NOT EXISTS groupuser_members ON groupuser (groupid, userid, grouprole);
CREATE TABLE IF NOT EXISTS offlinemessage (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    userid  INTEGER NOT NULL,
    message TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS offlinemessage_userid_id ON offlinemessage (userid, id);
";

/// A [`Store`] on one SQLite file, shared by all worker threads.
pub struct SqliteStore {
    conns: Vec<Mutex<Connection>>,
    /// Where the next connection search starts, so load spreads over the pool.
    next: AtomicUsize,
}

impl SqliteStore {
    /// Opens (creating when missing) the database file at `path` and its schema.
    ///
    /// `":memory:"` gives a private in-memory database; it uses a single connection,
    /// since each connection to `:memory:` would be a separate database.
    pub fn open(path: &str) -> Result<SqliteStore> {
        let size = if path == ":memory:" { 1 } else { POOL_SIZE };
        let mut first = open_connection(path)?;
        create_schema(&mut first)?;
        let mut conns = Vec::with_capacity(size);
        conns.push(Mutex::new(first));
        for _ in 1..size {
            conns.push(Mutex::new(open_connection(path)?));
        }
        Ok(SqliteStore { conns, next: AtomicUsize::new(0) })
    }

    /// A connection for the caller's exclusive use: the first free one from a rotating
    /// start, else waits for the one at the start.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        let n = self.conns.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            match self.conns[(start + i) % n].try_lock() {
                Ok(guard) => return guard,
                Err(TryLockError::Poisoned(poisoned)) => return recover(poisoned.into_inner()),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        match self.conns[start].lock() {
            Ok(guard) => guard,
            Err(poisoned) => recover(poisoned.into_inner()),
        }
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
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
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

fn open_connection(path: &str) -> Result<Connection> {
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
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

/// In an immediate transaction, so two processes opening a new file at once do not
/// interleave their `CREATE`s.
fn create_schema(conn: &mut Connection) -> Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(SCHEMA)?;
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

fn insert_offline(conn: &Connection, user: UserId, message: &str) -> Result<()> {
    conn.prepare_cached("INSERT INTO offlinemessage (userid, message) VALUES (?1, ?2)")?
        .execute(params![user, message])?;
    Ok(())
}

fn select_offline(conn: &Connection, user: UserId) -> Result<Vec<(i64, String)>> {
    let mut stmt = conn.prepare_cached("SELECT id, message FROM offlinemessage WHERE userid = ?1 ORDER BY id")?;
    let rows = stmt.query_map(params![user], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn select_offline_page(conn: &Connection, user: UserId, limit: usize) -> Result<Vec<(i64, String)>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt =
        conn.prepare_cached("SELECT id, message FROM offlinemessage WHERE userid = ?1 ORDER BY id LIMIT ?2")?;
    let rows = stmt.query_map(params![user, limit], |row| Ok((row.get(0)?, row.get(1)?)))?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

fn delete_offline_row(conn: &Connection, user: UserId, id: i64) -> Result<usize> {
    Ok(conn.prepare_cached("DELETE FROM offlinemessage WHERE userid = ?1 AND id = ?2")?.execute(params![user, id])?)
}

/// Deletes `user`'s messages up to id `max`; returns how many.
fn delete_offline_upto(conn: &Connection, user: UserId, max: i64) -> Result<usize> {
    Ok(conn.prepare_cached("DELETE FROM offlinemessage WHERE userid = ?1 AND id <= ?2")?.execute(params![user, max])?)
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

    fn push_offline(&self, msgs: &[(UserId, String)]) -> Result<()> {
        if msgs.is_empty() {
            return Ok(());
        }
        self.write(|tx| msgs.iter().try_for_each(|(user, msg)| insert_offline(tx, *user, msg)))
    }

    fn take_offline(&self, user: UserId) -> Result<Vec<String>> {
        // Immediate: no other writer can insert or delete between the SELECT and the
        // DELETE, so `id <= max` deletes exactly the rows selected.
        self.write(|tx| {
            let rows = select_offline(tx, user)?;
            let Some(&(max, _)) = rows.last() else {
                return Ok(Vec::new());
            };
            let deleted = delete_offline_upto(tx, user, max)?;
            if deleted != rows.len() {
                // Cannot happen under the write lock; refuse rather than lose mail.
                return Err(StoreError::Unavailable(format!(
                    "offline mailbox of {user}: selected {} rows, deleted {deleted}",
                    rows.len()
                )));
            }
            Ok(rows.into_iter().map(|(_, msg)| msg).collect())
        })
    }

    fn peek_offline(&self, user: UserId, limit: usize) -> Result<Vec<(i64, String)>> {
        self.read(|c| select_offline_page(c, user, limit))
    }

    fn remove_offline(&self, user: UserId, ids: &[i64]) -> Result<()> {
        self.write(|tx| ids.iter().try_for_each(|id| delete_offline_row(tx, user, *id).map(drop)))
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
        assert_eq!(table_names(&store), ["allgroup", "friend", "groupuser", "offlinemessage", "user"]);
        let mode: String = store.conn().query_row("PRAGMA journal_mode", [], |row| row.get(0)).unwrap();
        assert_eq!(mode.to_ascii_lowercase(), "wal");
        assert_eq!(store.conns.len(), POOL_SIZE);
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
            s.push_offline(&[(alice, "one".into()), (alice, "two".into())]).unwrap();
            (alice, bob, group)
        };
        let s = SqliteStore::open(&db(&dir)).unwrap();
        assert_eq!(
            s.credentials(alice).unwrap(),
            Some(Credentials { id: alice, name: "alice".into(), password_hash: "$argon2id$v=19$...".into() })
        );
        assert_eq!(s.friends(alice).unwrap(), [User { id: bob, name: "bob".into(), online: true }]);
        assert_eq!(s.group_members(group).unwrap(), Some(vec![(alice, Role::Creator), (bob, Role::Normal)]));
        assert_eq!(s.take_offline(alice).unwrap(), ["one", "two"]);
        s.set_all_offline().unwrap();
        drop(s);
        let s = SqliteStore::open(&db(&dir)).unwrap();
        assert!(s.take_offline(alice).unwrap().is_empty());
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
        assert_eq!(s.conns.len(), 1);
        let u = s.create_user("u", "h").unwrap();
        s.push_offline(&[(u, "m".into())]).unwrap();
        assert_eq!(s.take_offline(u).unwrap(), ["m"]);
    }

    #[test]
    fn nul_bytes_round_trip() {
        let s = SqliteStore::open(":memory:").unwrap();
        let u = s.create_user("a\0b", "h\0").unwrap();
        assert_eq!(s.credentials(u).unwrap().unwrap().name, "a\0b");
        s.push_offline(&[(u, "x\0y\0".into())]).unwrap();
        assert_eq!(s.take_offline(u).unwrap(), ["x\0y\0"]);
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
        for i in 0..s.conns.len() {
            let s2 = Arc::clone(&s);
            let joined = std::thread::spawn(move || {
                let guard = s2.conns[i].lock().unwrap();
                guard.execute_batch("BEGIN").unwrap();
                panic!("poison connection {i} mid-transaction");
            })
            .join();
            assert!(joined.is_err());
        }
        // Every connection is poisoned and was left inside a transaction.
        for _ in 0..2 * s.conns.len() {
            s.push_offline(&[(u, "m".into())]).unwrap();
            assert_eq!(s.take_offline(u).unwrap(), ["m"]);
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
