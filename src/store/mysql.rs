//! The MySQL (MariaDB) backend of [`Store`], for servers that share one database.
//!
//! Threads: every method blocks on the network, so this code runs on worker-pool
//! threads only, never on a reactor thread. [`MysqlStore::open`] runs once, on the
//! thread that builds the server, before any request is served.
//!
//! Layout:
//! - A bounded pool of connections (the `mysql` crate's `Pool`): at most `pool_size`
//!   (`--db-pool`, default workers + 2, so no worker waits for a connection), of which
//!   one is opened at start and the rest on demand. A connection taken from the pool is
//!   pinged first, so connections that died while the database was away are dropped and
//!   replaced: after an outage the pool recovers by itself, without a restart.
//! - Nothing waits for long: connecting gives up after [`CONNECT_TIMEOUT`], a read or a
//!   write after [`IO_TIMEOUT`], waiting for a free connection after [`CHECKOUT_TIMEOUT`],
//!   and a row lock after 3 s ([`LOCK_WAIT`]). Every failure to reach the database is
//!   [`StoreError::Unavailable`] (errno 503); the server stays up.
//! - Prepared statements only (`exec_*` with bound parameters); each connection keeps
//!   its statements in a cache. SQL text is never built from data. The one exception
//!   to "prepared" is the schema at start: constant DDL sent as text.
//! - Statements that must agree run in one transaction (InnoDB): create/leave/delete
//!   group, joining, a batch of stores or removals, and the mailbox drain. Isolation is
//!   READ COMMITTED, so InnoDB takes no gap locks: storing mail never waits for a drain,
//!   and concurrent drains and stores do not deadlock on each other's gaps. What a
//!   transaction must keep still it locks explicitly (`FOR UPDATE`, `LOCK IN SHARE
//!   MODE`), and the mailbox drain checks that it deleted exactly what it read.
//! - A transaction that the server aborted (deadlock, lock timeout) or that lost a race
//!   (the drain's check) is run again from the start, at most [`ATTEMPTS`] times.
//! - One small function per query, below the `Store` impl's helpers.
//!
//! The schema is `sql/chat.sql`, compiled in and applied at every open (idempotent).

use std::time::Duration;

use mysql::prelude::Queryable;
use mysql::{FromRowError, Opts, OptsBuilder, Pool, PoolConstraints, PoolOpts, PooledConn, Transaction, TxOpts};

use super::{
    schema, Accepted, Conversation, Credentials, Group, GroupId, Member, Message, Mid, NewMessage, Result, Role, Store,
    StoreError, User, UserId,
};

/// How long opening a TCP connection to the database may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one read or write on a database connection may block.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a free connection when all `pool_size` are in use.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a statement waits for a row lock, in seconds: 3, below [`IO_TIMEOUT`] so
/// that the server, not the socket, gives up first (the server's default is 50).
const LOCK_WAIT: &str = "SET SESSION innodb_lock_wait_timeout = 3";
/// Tries of a unit of work that the server aborted for a deadlock or a lock timeout,
/// or that lost a race.
const ATTEMPTS: u32 = 5;
/// Prepared statements kept per connection; there are about 20 distinct queries.
const STATEMENT_CACHE: usize = 64;
/// Connections opened when the pool is created: one, which proves the database is
/// reachable; the rest are opened on demand (the crate's default opens ten at once).
const POOL_MIN: usize = 1;

/// Run on every new connection, before it is used. Constant text.
const SESSION_INIT: &[&str] = &[
    "SET NAMES utf8mb4",
    // Strict: a value too long for its column is an error, never silently truncated.
    "SET SESSION sql_mode = 'STRICT_ALL_TABLES,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION'",
    // No gap locks (see the module doc); whatever the server's default is.
    "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
    LOCK_WAIT,
];

/// `ER_DUP_ENTRY`: a unique or primary key is taken.
const ER_DUP_ENTRY: u16 = 1062;
/// `ER_LOCK_WAIT_TIMEOUT`: waited [`LOCK_WAIT`] for a row lock.
const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;
/// `ER_LOCK_DEADLOCK`: InnoDB rolled the transaction back to break a deadlock.
const ER_LOCK_DEADLOCK: u16 = 1213;

const STATE_ONLINE: &str = "online";
const STATE_OFFLINE: &str = "offline";

/// A [`Store`] on a MySQL or MariaDB database, shared by all worker threads.
pub struct MysqlStore {
    pool: Pool,
    /// `host:port/db` for messages: the URL without its credentials.
    target: String,
}

impl MysqlStore {
    /// Connects to the database a `mysql://USER:PASS@HOST:PORT/DB` URL names and
    /// applies the schema. Fails (`Unavailable`) within a few seconds when the database
    /// cannot be reached; it does not wait for it to come up.
    pub fn open(url: &str, pool_size: usize) -> Result<MysqlStore> {
        let target = redact(url);
        let opts = pool_options(url, pool_size)
            .map_err(|why| StoreError::Unavailable(format!("database URL mysql://{target}: {why}")))?;
        let pool =
            Pool::new(opts).map_err(|e| StoreError::Unavailable(format!("cannot connect to mysql://{target}: {e}")))?;
        let store = MysqlStore { pool, target };
        store.apply_schema()?;
        log::info!("mysql: using mysql://{} (pool of {pool_size})", store.target);
        Ok(store)
    }

    /// Creates the tables that are missing, then checks that every table has the
    /// columns the queries use (a database left by the C++ seeds does not).
    fn apply_schema(&self) -> Result<()> {
        self.attempt(|conn| {
            for statement in schema::mysql_statements() {
                conn.query_drop(statement)?;
            }
            check_columns(conn)
        })
        .map_err(|e| match e {
            StoreError::Unavailable(why) => {
                StoreError::Unavailable(format!("cannot apply the schema to mysql://{}: {why}", self.target))
            }
            other => other,
        })
    }

    /// A connection for the caller's exclusive use; it goes back to the pool on drop.
    fn conn(&self) -> std::result::Result<PooledConn, Failure> {
        self.pool.try_get_conn(CHECKOUT_TIMEOUT).map_err(Failure::Sql)
    }

    /// Runs `work` on a pooled connection, again from the start (on a connection from
    /// the pool again) when the server aborted it for a deadlock or a lock timeout.
    fn attempt<T>(&self, mut work: impl FnMut(&mut PooledConn) -> Q<T>) -> Result<T> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.conn().and_then(|mut conn| work(&mut conn)) {
                Ok(out) => return Ok(out),
                Err(failure) if failure.is_transient() && tries < ATTEMPTS => {
                    log::debug!("mysql: retrying after {failure}");
                    std::thread::sleep(backoff(tries));
                }
                Err(failure) => return Err(failure.into_store()),
            }
        }
    }

    /// Runs one statement in autocommit mode: single reads and single-row writes.
    fn single<T>(&self, work: impl FnMut(&mut PooledConn) -> Q<T>) -> Result<T> {
        self.attempt(work)
    }

    /// Runs `work` in one transaction; commits when it succeeds. When it fails, the
    /// transaction is rolled back (when it is dropped) and nothing of it remains.
    fn transaction<T>(&self, mut work: impl FnMut(&mut Transaction<'_>) -> Q<T>) -> Result<T> {
        self.attempt(|conn| {
            let mut tx = conn.start_transaction(TxOpts::default())?;
            let out = work(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })
    }
}

/// How long to wait before try `tries + 1`: growing, and jittered so that the two
/// sides of a deadlock do not collide again.
fn backoff(tries: u32) -> Duration {
    let jitter = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_micros());
    Duration::from_micros(u64::from(tries) * 5_000 + u64::from(jitter % 10_000))
}

/// The pool's options: the URL's, with the limits and settings this backend relies on.
fn pool_options(url: &str, pool_size: usize) -> std::result::Result<Opts, String> {
    let parsed = Opts::from_url(url).map_err(|e| e.to_string())?;
    let constraints =
        PoolConstraints::new(POOL_MIN, pool_size.max(POOL_MIN)).ok_or_else(|| format!("bad pool size {pool_size}"))?;
    let pool = PoolOpts::default()
        .with_constraints(constraints)
        // The default resets every connection given back, which also drops its
        // statement cache. Every transaction here ends in COMMIT or ROLLBACK and no
        // session state is changed after SESSION_INIT, so there is nothing to reset.
        .with_reset_connection(false)
        // Ping a pooled connection before handing it out: connections that died in an
        // outage are replaced instead of failing the request after the database is back.
        .with_check_health(true);
    let opts = OptsBuilder::from_opts(parsed)
        // The crate's default switches a loopback TCP URL to the server's unix socket,
        // silently: the URL says TCP, so TCP it is.
        .prefer_socket(false)
        .tcp_connect_timeout(Some(CONNECT_TIMEOUT))
        .read_timeout(Some(IO_TIMEOUT))
        .write_timeout(Some(IO_TIMEOUT))
        .tcp_nodelay(true)
        .stmt_cache_size(STATEMENT_CACHE)
        .init(SESSION_INIT.to_vec())
        .pool_opts(pool);
    Ok(opts.into())
}

/// `mysql://user:secret@host:3306/db` → `host:3306/db`: what may be logged.
fn redact(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.split_once('?').map_or(rest, |(before, _)| before);
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    if path.is_empty() {
        host.to_owned()
    } else {
        format!("{host}/{path}")
    }
}

// ---------------------------------------------------------------------------------
// Errors.

/// Why a unit of work failed: the database, the store's own verdict (`NotFound`), or
/// a race that running it again resolves.
#[derive(Debug)]
enum Failure {
    Sql(mysql::Error),
    Store(StoreError),
    Raced(String),
}

type Q<T> = std::result::Result<T, Failure>;

impl From<mysql::Error> for Failure {
    fn from(err: mysql::Error) -> Failure {
        Failure::Sql(err)
    }
}

impl From<StoreError> for Failure {
    fn from(err: StoreError) -> Failure {
        Failure::Store(err)
    }
}

impl From<FromRowError> for Failure {
    fn from(err: FromRowError) -> Failure {
        Failure::Sql(mysql::Error::FromRowError(err.0))
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Sql(err) => write!(f, "{err}"),
            Failure::Store(err) => write!(f, "{err}"),
            Failure::Raced(why) => write!(f, "lost a race: {why}"),
        }
    }
}

impl Failure {
    /// The work was rolled back and may simply be run again.
    fn is_transient(&self) -> bool {
        match self {
            Failure::Sql(mysql::Error::MySqlError(e)) => matches!(e.code, ER_LOCK_DEADLOCK | ER_LOCK_WAIT_TIMEOUT),
            Failure::Raced(_) => true,
            _ => false,
        }
    }

    /// A taken unique or primary key is `Conflict`; every other database failure
    /// (unreachable, timed out, a value that does not decode) is `Unavailable`.
    fn into_store(self) -> StoreError {
        match self {
            Failure::Store(err) => err,
            Failure::Raced(why) => {
                log::warn!("mysql: still losing after {ATTEMPTS} tries: {why}");
                StoreError::Unavailable(why)
            }
            Failure::Sql(mysql::Error::MySqlError(e)) if e.code == ER_DUP_ENTRY => StoreError::Conflict,
            Failure::Sql(err) => {
                log::warn!("mysql: {err}");
                StoreError::Unavailable(err.to_string())
            }
        }
    }
}

/// Decodes rows read with `exec_opt`: a row that does not fit is an error, not a panic.
fn decoded<T>(rows: Vec<std::result::Result<T, FromRowError>>) -> Q<Vec<T>> {
    rows.into_iter().map(|row| row.map_err(Failure::from)).collect()
}

fn state_str(online: bool) -> &'static str {
    if online {
        STATE_ONLINE
    } else {
        STATE_OFFLINE
    }
}

fn parse_role(role: &str) -> Q<Role> {
    match role {
        "creator" => Ok(Role::Creator),
        "normal" => Ok(Role::Normal),
        other => Err(StoreError::Unavailable(format!("unknown grouprole {other:?}")).into()),
    }
}

fn new_id(id: Option<u64>) -> Q<i64> {
    id.and_then(|id| i64::try_from(id).ok())
        .ok_or_else(|| StoreError::Unavailable(format!("bad auto-increment id {id:?}")).into())
}

// ---------------------------------------------------------------------------------
// Queries: one function each.

/// Fails (with the server's "Unknown column" message) when a table lacks a column the
/// queries use.
fn check_columns(c: &mut impl Queryable) -> Q<()> {
    const PROBES: &[&str] = &[
        "SELECT id, name, password, state FROM user WHERE 1 = 0",
        "SELECT userid, friendid FROM friend WHERE 1 = 0",
        "SELECT id, groupname, groupdesc FROM allgroup WHERE 1 = 0",
        "SELECT groupid, userid, grouprole FROM groupuser WHERE 1 = 0",
        "SELECT id, userid, message FROM offlinemessage WHERE 1 = 0",
        "SELECT mid, sender, sendername, convlo, convhi, msg, time, unixtime, cmid FROM message WHERE 1 = 0",
        "SELECT userid, mid FROM inbox WHERE 1 = 0",
    ];
    for probe in PROBES {
        c.exec_drop(*probe, ())?;
    }
    Ok(())
}

fn insert_user(c: &mut impl Queryable, name: &str, password_hash: &str) -> Q<UserId> {
    let result = c.exec_iter("INSERT INTO user (name, password) VALUES (?, ?)", (name, password_hash))?;
    new_id(result.last_insert_id())
}

fn select_credentials(c: &mut impl Queryable, id: UserId) -> Q<Option<Credentials>> {
    let row =
        c.exec_first_opt::<(UserId, String, String), _, _>("SELECT id, name, password FROM user WHERE id = ?", (id,))?;
    Ok(row.transpose()?.map(|(id, name, password_hash)| Credentials { id, name, password_hash }))
}

fn select_user_exists(c: &mut impl Queryable, id: UserId) -> Q<bool> {
    let row = c.exec_first_opt::<i64, _, _>("SELECT 1 FROM user WHERE id = ?", (id,))?;
    Ok(row.transpose()?.is_some())
}

/// Sets the state of `ids`, which the caller sorted: rows are locked in id order, so
/// two concurrent batches cannot deadlock each other.
fn update_states(c: &mut impl Queryable, ids: &[UserId], online: bool) -> Q<()> {
    let state = state_str(online);
    c.exec_batch("UPDATE user SET state = ? WHERE id = ?", ids.iter().map(|&id| (state, id)))?;
    Ok(())
}

fn update_all_offline(c: &mut impl Queryable) -> Q<()> {
    // The WHERE keeps rows that are already offline from being rewritten.
    c.exec_drop("UPDATE user SET state = ? WHERE state <> ?", (STATE_OFFLINE, STATE_OFFLINE))?;
    Ok(())
}

fn select_online(c: &mut impl Queryable) -> Q<Vec<UserId>> {
    Ok(c.exec("SELECT id FROM user WHERE state = ?", (STATE_ONLINE,))?)
}

fn insert_friend(c: &mut impl Queryable, user: UserId, friend: UserId) -> Q<()> {
    c.exec_drop("INSERT INTO friend (userid, friendid) VALUES (?, ?)", (user, friend))?;
    Ok(())
}

/// Whether a row was deleted.
fn delete_friend(c: &mut impl Queryable, user: UserId, friend: UserId) -> Q<bool> {
    let result = c.exec_iter("DELETE FROM friend WHERE userid = ? AND friendid = ?", (user, friend))?;
    Ok(result.affected_rows() > 0)
}

fn select_friends(c: &mut impl Queryable, user: UserId) -> Q<Vec<User>> {
    let rows = c.exec_opt::<(UserId, String, String), _, _>(
        "SELECT u.id, u.name, u.state
           FROM friend f JOIN user u ON u.id = f.friendid
          WHERE f.userid = ?
          ORDER BY u.id",
        (user,),
    )?;
    Ok(decoded(rows)?.into_iter().map(|(id, name, state)| User { id, name, online: state == STATE_ONLINE }).collect())
}

fn insert_group(c: &mut impl Queryable, name: &str, desc: &str) -> Q<GroupId> {
    let result = c.exec_iter("INSERT INTO allgroup (groupname, groupdesc) VALUES (?, ?)", (name, desc))?;
    new_id(result.last_insert_id())
}

/// Whether the group exists; takes a shared lock on its row, so it cannot be deleted
/// before the transaction ends (a join never adds a member to a deleted group).
fn select_group_for_share(c: &mut impl Queryable, group: GroupId) -> Q<bool> {
    let row = c.exec_first_opt::<GroupId, _, _>("SELECT id FROM allgroup WHERE id = ? LOCK IN SHARE MODE", (group,))?;
    Ok(row.transpose()?.is_some())
}

/// Whether the group exists; locks its row: membership changes that start here are
/// serialized with joins (which share-lock it) and with each other.
fn select_group_for_update(c: &mut impl Queryable, group: GroupId) -> Q<bool> {
    let row = c.exec_first_opt::<GroupId, _, _>("SELECT id FROM allgroup WHERE id = ? FOR UPDATE", (group,))?;
    Ok(row.transpose()?.is_some())
}

fn delete_group(c: &mut impl Queryable, group: GroupId) -> Q<()> {
    c.exec_drop("DELETE FROM allgroup WHERE id = ?", (group,))?;
    Ok(())
}

fn insert_member(c: &mut impl Queryable, group: GroupId, user: UserId, role: Role) -> Q<()> {
    c.exec_drop("INSERT INTO groupuser (groupid, userid, grouprole) VALUES (?, ?, ?)", (group, user, role.as_str()))?;
    Ok(())
}

fn select_role(c: &mut impl Queryable, group: GroupId, user: UserId) -> Q<Option<Role>> {
    let row = c.exec_first_opt::<String, _, _>(
        "SELECT grouprole FROM groupuser WHERE groupid = ? AND userid = ? FOR UPDATE",
        (group, user),
    )?;
    row.transpose()?.as_deref().map(parse_role).transpose()
}

fn delete_member(c: &mut impl Queryable, group: GroupId, user: UserId) -> Q<()> {
    c.exec_drop("DELETE FROM groupuser WHERE groupid = ? AND userid = ?", (group, user))?;
    Ok(())
}

fn delete_all_members(c: &mut impl Queryable, group: GroupId) -> Q<()> {
    c.exec_drop("DELETE FROM groupuser WHERE groupid = ?", (group,))?;
    Ok(())
}

/// The members of a group sorted by user id, `None` when there is no such group: one
/// statement, so existence and members come from one snapshot.
fn select_members(c: &mut impl Queryable, group: GroupId) -> Q<Option<Vec<(UserId, Role)>>> {
    let rows = c.exec_opt::<(GroupId, Option<UserId>, Option<String>), _, _>(
        "SELECT g.id, gu.userid, gu.grouprole
           FROM allgroup g LEFT JOIN groupuser gu ON gu.groupid = g.id
          WHERE g.id = ?
          ORDER BY gu.userid",
        (group,),
    )?;
    let rows = decoded(rows)?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut members = Vec::with_capacity(rows.len());
    for (_, user, role) in rows {
        // A group without members gives one row of NULLs.
        if let (Some(user), Some(role)) = (user, role) {
            members.push((user, parse_role(&role)?));
        }
    }
    Ok(Some(members))
}

/// Every group `user` is in, each with all its members: one statement for all of them
/// (not one per group), sorted by group id then user id.
fn select_user_groups(c: &mut impl Queryable, user: UserId) -> Q<Vec<Group>> {
    type Row = (GroupId, String, String, UserId, String, String, String);
    let rows = c.exec_opt::<Row, _, _>(
        "SELECT g.id, g.groupname, g.groupdesc, u.id, u.name, u.state, gu.grouprole
           FROM groupuser mine
           JOIN allgroup g ON g.id = mine.groupid
           JOIN groupuser gu ON gu.groupid = mine.groupid
           JOIN user u ON u.id = gu.userid
          WHERE mine.userid = ?
          ORDER BY g.id, u.id",
        (user,),
    )?;
    let mut groups: Vec<Group> = Vec::new();
    for (id, name, desc, member_id, member_name, state, role) in decoded(rows)? {
        let member = Member {
            user: User { id: member_id, name: member_name, online: state == STATE_ONLINE },
            role: parse_role(&role)?,
        };
        match groups.last_mut() {
            Some(group) if group.id == id => group.members.push(member),
            _ => groups.push(Group { id, name, desc, members: vec![member] }),
        }
    }
    Ok(groups)
}

fn insert_offline(c: &mut impl Queryable, msgs: &[(UserId, String)]) -> Q<()> {
    c.exec_batch(
        "INSERT INTO offlinemessage (userid, message) VALUES (?, ?)",
        msgs.iter().map(|(u, m)| (*u, m.as_str())),
    )?;
    Ok(())
}

/// `user`'s mailbox, oldest first, every row locked until the transaction ends: nobody
/// else can take or remove them meanwhile. (Rows stored meanwhile are not locked out.)
fn select_offline_for_update(c: &mut impl Queryable, user: UserId) -> Q<Vec<(i64, String)>> {
    let rows = c.exec_opt::<(i64, String), _, _>(
        "SELECT id, message FROM offlinemessage WHERE userid = ? ORDER BY id FOR UPDATE",
        (user,),
    )?;
    decoded(rows)
}

/// Up to `limit` of `user`'s oldest messages as (row id, message), without locks.
fn select_offline_page(c: &mut impl Queryable, user: UserId, limit: usize) -> Q<Vec<(i64, String)>> {
    let limit = u64::try_from(limit).unwrap_or(u64::MAX);
    let rows = c.exec_opt::<(i64, String), _, _>(
        "SELECT id, message FROM offlinemessage WHERE userid = ? ORDER BY id LIMIT ?",
        (user, limit),
    )?;
    decoded(rows)
}

/// Deletes these rows of `user`'s mailbox (the caller sorted them, so concurrent
/// removals lock rows in one order).
fn delete_offline_rows(c: &mut impl Queryable, user: UserId, ids: &[i64]) -> Q<()> {
    c.exec_batch("DELETE FROM offlinemessage WHERE userid = ? AND id = ?", ids.iter().map(|&id| (user, id)))?;
    Ok(())
}

/// Deletes `user`'s messages up to id `max`; returns how many.
fn delete_offline_upto(c: &mut impl Queryable, user: UserId, max: i64) -> Q<u64> {
    let result = c.exec_iter("DELETE FROM offlinemessage WHERE userid = ? AND id <= ?", (user, max))?;
    Ok(result.affected_rows())
}

// ---------------------------------------------------------------------------------

impl Store for MysqlStore {
    fn create_user(&self, name: &str, password_hash: &str) -> Result<UserId> {
        self.single(|c| insert_user(c, name, password_hash))
    }

    fn credentials(&self, id: UserId) -> Result<Option<Credentials>> {
        self.single(|c| select_credentials(c, id))
    }

    fn user_exists(&self, id: UserId) -> Result<bool> {
        self.single(|c| select_user_exists(c, id))
    }

    fn set_online(&self, ids: &[UserId], online: bool) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        self.transaction(|tx| update_states(tx, &ids, online))
    }

    fn set_all_offline(&self) -> Result<()> {
        self.single(update_all_offline)
    }

    fn online_users(&self) -> Result<Vec<UserId>> {
        self.single(select_online)
    }

    fn add_friend(&self, user: UserId, friend: UserId) -> Result<()> {
        self.single(|c| insert_friend(c, user, friend))
    }

    fn del_friend(&self, user: UserId, friend: UserId) -> Result<()> {
        if self.single(|c| delete_friend(c, user, friend))? {
            Ok(())
        } else {
            Err(StoreError::NotFound)
        }
    }

    fn friends(&self, user: UserId) -> Result<Vec<User>> {
        self.single(|c| select_friends(c, user))
    }

    fn create_group(&self, creator: UserId, name: &str, desc: &str) -> Result<GroupId> {
        self.transaction(|tx| {
            let group = insert_group(tx, name, desc)?;
            insert_member(tx, group, creator, Role::Creator)?;
            Ok(group)
        })
    }

    fn join_group(&self, group: GroupId, user: UserId) -> Result<()> {
        self.transaction(|tx| {
            if !select_group_for_share(tx, group)? {
                return Err(StoreError::NotFound.into());
            }
            // The primary key (groupid, userid) turns "already a member" into Conflict.
            insert_member(tx, group, user, Role::Normal)
        })
    }

    fn leave_group(&self, group: GroupId, user: UserId) -> Result<Role> {
        self.transaction(|tx| {
            // The group row first: a deletion waits for joins in progress, and a join
            // that comes later finds no group.
            if !select_group_for_update(tx, group)? {
                return Err(StoreError::NotFound.into());
            }
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
        self.single(|c| select_members(c, group))
    }

    fn user_groups(&self, user: UserId) -> Result<Vec<Group>> {
        self.single(|c| select_user_groups(c, user))
    }

    fn push_offline(&self, msgs: &[(UserId, String)]) -> Result<()> {
        if msgs.is_empty() {
            return Ok(());
        }
        self.transaction(|tx| insert_offline(tx, msgs))
    }

    fn take_offline(&self, user: UserId) -> Result<Vec<String>> {
        self.transaction(|tx| {
            let rows = select_offline_for_update(tx, user)?;
            let Some(&(max, _)) = rows.last() else {
                return Ok(Vec::new());
            };
            // Every row read is locked and has an id <= max, so all of them are
            // deleted. A row with a smaller id that was not read (an insert that got
            // its id first but reached the index after the SELECT) would be deleted
            // too: then the count is off, and the whole drain is rolled back and run
            // again, rather than losing that message.
            let deleted = delete_offline_upto(tx, user, max)?;
            if usize::try_from(deleted).ok() != Some(rows.len()) {
                return Err(Failure::Raced(format!(
                    "offline mailbox of {user}: read {} rows, deleted {deleted}",
                    rows.len()
                )));
            }
            Ok(rows.into_iter().map(|(_, msg)| msg).collect())
        })
    }

    fn peek_offline(&self, user: UserId, limit: usize) -> Result<Vec<(i64, String)>> {
        self.single(|c| select_offline_page(c, user, limit))
    }

    fn remove_offline(&self, user: UserId, ids: &[i64]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut ids = ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        self.transaction(|tx| delete_offline_rows(tx, user, &ids))
    }

    fn append(&self, _msgs: &[NewMessage]) -> Result<Vec<Accepted>> {
        Err(StoreError::Unavailable("message log not implemented yet".into()))
    }

    fn inbox(&self, _user: UserId, _after: Mid, _limit: usize) -> Result<Vec<Message>> {
        Err(StoreError::Unavailable("message log not implemented yet".into()))
    }

    fn settle(&self, _user: UserId, _mids: &[Mid]) -> Result<()> {
        Err(StoreError::Unavailable("message log not implemented yet".into()))
    }

    fn history(
        &self,
        _me: UserId,
        _conv: Conversation,
        _before: Option<Mid>,
        _limit: usize,
    ) -> Result<(Vec<Message>, bool)> {
        Err(StoreError::Unavailable("message log not implemented yet".into()))
    }

    fn expire(&self, _unix_time: i64) -> Result<usize> {
        Err(StoreError::Unavailable("message log not implemented yet".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_tables_are_idempotent_and_utf8mb4() {
        let statements = schema::mysql_statements();
        let tables: Vec<&str> = statements
            .iter()
            .map(|s| {
                let rest =
                    s.strip_prefix("CREATE TABLE IF NOT EXISTS ").unwrap_or_else(|| panic!("not idempotent: {s}"));
                rest.split_whitespace().next().unwrap_or_default()
            })
            .collect();
        assert_eq!(tables, ["user", "friend", "allgroup", "groupuser", "offlinemessage", "message", "inbox"]);
        for s in &statements {
            assert!(!s.contains("--"), "comment left in {s}");
            assert!(s.contains("utf8mb4"), "not utf8mb4: {s}");
        }
    }

    #[test]
    fn redact_drops_credentials_and_parameters() {
        assert_eq!(redact("mysql://chat:s3cret@127.0.0.1:3306/chat"), "127.0.0.1:3306/chat");
        assert_eq!(redact("mysql://chat:p@ss@db:3306/chat?pool_max=3"), "db:3306/chat");
        assert_eq!(redact("mysql://db"), "db");
        assert_eq!(redact("mysql://u@db/x"), "db/x");
    }

    #[test]
    fn options_keep_the_url_and_override_the_defaults() {
        let opts = pool_options("mysql://u:p@127.0.0.1:3307/chat?prefer_socket=true", 7).expect("options");
        assert_eq!(opts.get_tcp_port(), 3307);
        assert_eq!(opts.get_user(), Some("u"));
        assert_eq!(opts.get_pass(), Some("p"));
        assert_eq!(opts.get_db_name(), Some("chat"));
        assert!(!opts.get_prefer_socket());
        assert_eq!(opts.get_tcp_connect_timeout(), Some(CONNECT_TIMEOUT));
        assert_eq!(opts.get_read_timeout(), Some(&IO_TIMEOUT));
        assert_eq!(opts.get_write_timeout(), Some(&IO_TIMEOUT));
        assert_eq!(opts.get_stmt_cache_size(), STATEMENT_CACHE);
        let pool = opts.get_pool_opts();
        assert_eq!((pool.constraints().min(), pool.constraints().max()), (POOL_MIN, 7));
        assert!(!pool.reset_connection());
        assert!(pool.check_health());
        assert!(pool_options("postgres://x/y", 4).is_err());
    }

    #[test]
    fn lock_wait_is_below_the_socket_timeout() {
        assert!(SESSION_INIT.contains(&LOCK_WAIT));
        let secs: u64 = LOCK_WAIT.rsplit(' ').next().and_then(|n| n.parse().ok()).expect("seconds");
        assert!(Duration::from_secs(secs) < IO_TIMEOUT);
    }

    #[test]
    fn errors_map_to_conflict_or_unavailable() {
        let sql = |code| {
            Failure::Sql(mysql::Error::MySqlError(mysql::MySqlError {
                state: "23000".into(),
                message: "m".into(),
                code,
            }))
        };
        assert_eq!(sql(ER_DUP_ENTRY).into_store(), StoreError::Conflict);
        assert!(matches!(sql(1146).into_store(), StoreError::Unavailable(_)));
        assert!(sql(ER_LOCK_DEADLOCK).is_transient() && sql(ER_LOCK_WAIT_TIMEOUT).is_transient());
        assert!(!sql(ER_DUP_ENTRY).is_transient());
        let raced = Failure::Raced("r".into());
        assert!(raced.is_transient());
        assert!(matches!(raced.into_store(), StoreError::Unavailable(_)));
        let io = Failure::Sql(mysql::Error::IoError(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)));
        assert!(!io.is_transient());
        assert!(matches!(io.into_store(), StoreError::Unavailable(_)));
        assert_eq!(Failure::Store(StoreError::NotFound).into_store(), StoreError::NotFound);
    }
}
