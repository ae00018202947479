//! The MySQL (MariaDB) backend of [`Store`], for servers that share one database.
//!
//! Threads: every method blocks on the network, so this code runs on worker-pool
//! threads only, never on a reactor thread. [`MysqlStore::open`] runs once, on the
//! thread that builds the server, before any request is served.
//!
//! Layout:
//! - A bounded pool of connections ([`ConnPool`]): at most `pool_size` (`--db-pool`,
//!   default workers + 2, so no worker waits for a connection), of which one is opened
//!   at start and the rest on demand. A connection taken from the pool is pinged first,
//!   so connections that died while the database was away are dropped and replaced,
//!   and one whose read or write failed is closed: after an outage the pool recovers
//!   by itself, without a restart.
//! - Nothing waits for long: connecting gives up after [`CONNECT_TIMEOUT`], a read or a
//!   write after [`IO_TIMEOUT`], waiting for a free connection after [`CHECKOUT_TIMEOUT`],
//!   and a row lock after 1 s ([`LOCK_WAIT`]). So a database that stops answering (hung,
//!   stopped) costs a request 1.5 s; then, for a second at a time, requests fail at once
//!   (`ConnPool`'s stall). Every failure to reach the database is
//!   [`StoreError::Unavailable`] (errno 503); the server stays up.
//! - Prepared statements only (`exec_*` with bound parameters); each connection keeps
//!   its statements in a cache. SQL text is never built from data: the multi-row
//!   statements of the message log repeat a constant placeholder group 1, 2, 4, ... or
//!   [`MAX_ROWS`] times. The exceptions to "prepared" are constant: the
//!   schema at start (DDL), and START TRANSACTION, COMMIT and ROLLBACK, sent as text.
//! - The message log: `append` is one transaction. Its messages go in as multi-row
//!   INSERTs when InnoDB gives one statement's rows consecutive auto-increment values
//!   (`innodb_autoinc_lock_mode` 0 or 1, read in the transaction with the step), else
//!   row by row with each row's `LAST_INSERT_ID`. A taken `(sender, cmid)` is the unique
//!   key's duplicate-key error (InnoDB undoes that statement only): that chunk goes in
//!   row by row, and the colliding row's first copy is read. A concurrent append of the
//!   same cmid on another server waits on the key's lock until that one commits, then
//!   collides: one row, whichever server wins. Inbox rows go in sorted, many per
//!   statement. History forces `message_conv` (read backwards, no sort).
//! - Statements that must agree run in one transaction (InnoDB): create/leave/delete
//!   group (with its messages), joining, a batch of appends or settles, an expiry
//!   batch. Isolation is READ COMMITTED, so InnoDB takes no gap locks: appends never
//!   wait for settles or expiry on each other's gaps. What a transaction must keep
//!   still it locks explicitly (`FOR UPDATE`, `LOCK IN SHARE MODE`).
//! - A transaction that the server aborted (deadlock, lock timeout) is run again from
//!   the start, at most [`ATTEMPTS`] times.
//! - One small function per query, below the `Store` impl's helpers.
//!
//! The schema is `sql/chat.sql`, compiled in and applied at every open (idempotent).

use std::time::Duration;

use mysql::prelude::Queryable;
use mysql::{Conn, FromRowError, Opts, OptsBuilder};

use super::conn_pool::{self, ConnPool};
use super::{
    schema, Accepted, Conversation, Credentials, Group, GroupId, Member, Message, Mid, NewMessage, Result, Role, Store,
    StoreError, User, UserId,
};

/// How long opening a TCP connection to the database may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How long one read or write on a database connection may block: what a database
/// that stopped answering costs a request before its 503 (at most one such wait per
/// request: see `ConnPool`).
const IO_TIMEOUT: Duration = Duration::from_millis(1500);
/// How long a caller waits for a free connection when all `pool_size` are in use.
const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a statement waits for a row lock, in seconds: 1, below [`IO_TIMEOUT`] so
/// that the server, not the socket, gives up first (the server's default is 50).
const LOCK_WAIT: &str = "SET SESSION innodb_lock_wait_timeout = 1";
/// Tries of a unit of work that the server aborted for a deadlock or a lock timeout.
const ATTEMPTS: u32 = 5;
/// Prepared statements kept per connection: about 25 distinct queries, and the
/// multi-row ones in up to 9 sizes each.
const STATEMENT_CACHE: usize = 128;

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

/// Messages one `expire` transaction deletes at most, so it holds few locks for long.
const EXPIRE_BATCH: usize = 1000;

/// A [`Store`] on a MySQL or MariaDB database, shared by all worker threads.
pub struct MysqlStore {
    pool: ConnPool,
    /// `host:port/db` for messages: the URL without its credentials.
    target: String,
}

impl MysqlStore {
    /// Connects to the database a `mysql://USER:PASS@HOST:PORT/DB` URL names and
    /// applies the schema. Fails (`Unavailable`) within a few seconds when the database
    /// cannot be reached; it does not wait for it to come up.
    pub fn open(url: &str, pool_size: usize) -> Result<MysqlStore> {
        let target = redact(url);
        let opts = conn_options(url)
            .map_err(|why| StoreError::Unavailable(format!("database URL mysql://{target}: {why}")))?;
        let pool = ConnPool::new(opts, pool_size, CHECKOUT_TIMEOUT)
            .map_err(|e| StoreError::Unavailable(format!("cannot connect to mysql://{target}: {e}")))?;
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

    /// How MariaDB runs a page of `me`'s history of `conv`: the index it reads and the
    /// `Extra` of `EXPLAIN`, of the very statement [`Store::history`] sends. For tests
    /// and operators: the page must read `message_conv` with no filesort.
    pub fn history_plan(&self, me: UserId, conv: Conversation) -> Result<(Option<String>, Option<String>)> {
        let (lo, hi) = conv.key(me).ok_or(StoreError::NotFound)?;
        self.single(|c| {
            let row = c.exec_first_opt::<mysql::Row, _, _>(explained_history(), (lo, hi, Mid::MAX, 51u64))?;
            let row = row.transpose()?.ok_or_else(|| StoreError::Unavailable("EXPLAIN gave no row".into()))?;
            let column = |name: &str| row.get_opt::<Option<String>, _>(name).and_then(|v| v.ok()).flatten();
            Ok((column("key"), column("Extra")))
        })
    }

    /// Runs `work` on a pooled connection, again from the start (on a connection from
    /// the pool again) when the server aborted it for a deadlock or a lock timeout.
    fn attempt<T>(&self, mut work: impl FnMut(&mut Conn) -> Q<T>) -> Result<T> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.pool.run(&mut work, Failure::sql) {
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
    fn single<T>(&self, work: impl FnMut(&mut Conn) -> Q<T>) -> Result<T> {
        self.attempt(work)
    }

    /// Runs `work` in one transaction; commits when it succeeds. When it fails, nothing
    /// of it remains: it is rolled back, by ROLLBACK, or when the connection broke (it
    /// is closed then) by the server, which rolls back what a closed connection left.
    /// (The crate's `Transaction` sends ROLLBACK whatever happened, so a read that timed
    /// out would be followed by another wait as long.)
    fn transaction<T>(&self, mut work: impl FnMut(&mut Conn) -> Q<T>) -> Result<T> {
        self.attempt(|conn| {
            conn.query_drop("START TRANSACTION")?;
            let out = work(conn).and_then(|out| Ok(conn.query_drop("COMMIT").map(|()| out)?));
            if out.as_ref().is_err_and(|failure| !failure.sql().is_some_and(conn_pool::is_broken)) {
                // The first error is what the caller must see (a deadlock is retried).
                if let Err(e) = conn.query_drop("ROLLBACK") {
                    log::warn!("mysql: ROLLBACK failed: {e}");
                }
            }
            out
        })
    }
}

/// How long to wait before try `tries + 1`: growing, and jittered so that the two
/// sides of a deadlock do not collide again.
fn backoff(tries: u32) -> Duration {
    let jitter = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_micros());
    Duration::from_micros(u64::from(tries) * 5_000 + u64::from(jitter % 10_000))
}

/// The connections' options: the URL's, with the limits and settings this backend
/// relies on. (Connections given back to the pool are not reset: every transaction
/// here ends in COMMIT or ROLLBACK and no session state changes after SESSION_INIT.)
fn conn_options(url: &str) -> std::result::Result<Opts, String> {
    let parsed = Opts::from_url(url).map_err(|e| e.to_string())?;
    let opts = OptsBuilder::from_opts(parsed)
        // The crate's default switches a loopback TCP URL to the server's unix socket,
        // silently: the URL says TCP, so TCP it is.
        .prefer_socket(false)
        .tcp_connect_timeout(Some(CONNECT_TIMEOUT))
        .read_timeout(Some(IO_TIMEOUT))
        .write_timeout(Some(IO_TIMEOUT))
        .tcp_nodelay(true)
        .stmt_cache_size(STATEMENT_CACHE)
        .init(SESSION_INIT.to_vec());
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

/// Why a unit of work failed: the database, or the store's own verdict (`NotFound`).
#[derive(Debug)]
enum Failure {
    Sql(mysql::Error),
    Store(StoreError),
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
        }
    }
}

impl Failure {
    /// The database's error, if that is what it is.
    fn sql(&self) -> Option<&mysql::Error> {
        match self {
            Failure::Sql(e) => Some(e),
            _ => None,
        }
    }

    /// The work was rolled back and may simply be run again.
    fn is_transient(&self) -> bool {
        match self {
            Failure::Sql(mysql::Error::MySqlError(e)) => matches!(e.code, ER_LOCK_DEADLOCK | ER_LOCK_WAIT_TIMEOUT),
            _ => false,
        }
    }

    /// A taken unique or primary key is `Conflict`; every other database failure
    /// (unreachable, timed out, a value that does not decode) is `Unavailable`.
    fn into_store(self) -> StoreError {
        match self {
            Failure::Store(err) => err,
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

/// Rows one multi-row statement carries at most: a batch is cut into chunks of
/// 256, 128, ..., 1 rows, so a handful of distinct statements (each prepared once per
/// connection) serve every batch size.
const MAX_ROWS: usize = 256;

/// The largest power of two ≤ `n` and ≤ [`MAX_ROWS`]: the next chunk of `n` rows.
fn chunk_len(n: usize) -> usize {
    debug_assert!(n > 0);
    let mut len = MAX_ROWS;
    while len > n {
        len /= 2;
    }
    len
}

/// `head` followed by `rows` copies of `group` separated by commas: a statement with
/// a fixed number of placeholder groups. Only the count varies (powers of two, see
/// [`chunk_len`]); no data ever reaches the text.
fn repeated(head: &'static str, group: &'static str, rows: usize, tail: &'static str) -> String {
    let mut sql = String::with_capacity(head.len() + rows * (group.len() + 2) + tail.len());
    sql.push_str(head);
    for i in 0..rows {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(group);
    }
    sql.push_str(tail);
    sql
}

/// Whether InnoDB gives the rows of one multi-row INSERT consecutive auto-increment
/// values (`innodb_autoinc_lock_mode` 0 or 1, MariaDB's default; not 2, MySQL 8's
/// default and Galera's), and the step between them (`auto_increment_increment`).
/// Read in the transaction that relies on it, since the step is a session variable.
fn autoinc_step(c: &mut impl Queryable) -> Q<Option<i64>> {
    let row = c.exec_first_opt::<(i64, i64), _, _>(
        "SELECT @@GLOBAL.innodb_autoinc_lock_mode, @@SESSION.auto_increment_increment",
        (),
    )?;
    Ok(match row.transpose()? {
        Some((mode, step)) if mode <= 1 && step >= 1 => Some(step),
        _ => None,
    })
}

/// Whether `failure` is a taken unique key: a repeated (sender, cmid).
fn is_duplicate(failure: &Failure) -> bool {
    matches!(failure, Failure::Sql(mysql::Error::MySqlError(e)) if e.code == ER_DUP_ENTRY)
}

fn message_values(m: &NewMessage) -> Q<Vec<mysql::Value>> {
    let (lo, hi) = m.to.key(m.sender).ok_or(StoreError::NotFound)?;
    Ok(vec![
        m.sender.into(),
        m.sender_name.as_str().into(),
        lo.into(),
        hi.into(),
        (&*m.text).into(),
        m.time.as_str().into(),
        m.unix_time.into(),
        m.cmid.as_deref().into(),
    ])
}

const INSERT_MESSAGES: &str =
    "INSERT INTO message (sender, sendername, convlo, convhi, msg, time, unixtime, cmid) VALUES ";
const MESSAGE_ROW: &str = "(?, ?, ?, ?, ?, ?, ?, ?)";

/// Inserts `msgs` with one statement; returns their mids, or `None` when a (sender,
/// cmid) of them is taken (then nothing of the statement remains).
fn insert_message_rows(c: &mut impl Queryable, msgs: &[NewMessage], step: i64) -> Q<Option<Vec<Mid>>> {
    let mut values = Vec::with_capacity(msgs.len() * 8);
    for m in msgs {
        values.extend(message_values(m)?);
    }
    let sql = repeated(INSERT_MESSAGES, MESSAGE_ROW, msgs.len(), "");
    let first = match c.exec_iter(sql, mysql::Params::Positional(values)) {
        Ok(result) => new_id(result.last_insert_id())?,
        Err(err) => {
            let failure = Failure::from(err);
            return if is_duplicate(&failure) { Ok(None) } else { Err(failure) };
        }
    };
    Ok(Some((0..msgs.len()).map(|k| first + step * k as i64).collect()))
}

/// Inserts one message; `None` when its (sender, cmid) is taken.
fn insert_message_row(c: &mut impl Queryable, m: &NewMessage) -> Q<Option<Mid>> {
    let sql = repeated(INSERT_MESSAGES, MESSAGE_ROW, 1, "");
    match c.exec_iter(sql, mysql::Params::Positional(message_values(m)?)) {
        Ok(result) => Ok(Some(new_id(result.last_insert_id())?)),
        Err(err) => {
            let failure = Failure::from(err);
            if is_duplicate(&failure) && m.cmid.is_some() {
                Ok(None)
            } else {
                Err(failure)
            }
        }
    }
}

/// The mid and time of `sender`'s message with `cmid`. Under READ COMMITTED this sees
/// the row of a concurrent transaction as soon as it committed, which is when the
/// INSERT that collided with it failed.
fn select_by_cmid(c: &mut impl Queryable, sender: UserId, cmid: Option<&str>) -> Q<(Mid, String)> {
    let row = c.exec_first_opt::<(Mid, String), _, _>(
        "SELECT mid, time FROM message WHERE sender = ? AND cmid = ?",
        (sender, cmid),
    )?;
    row.transpose()?.ok_or_else(|| {
        StoreError::Unavailable(format!("message of {sender} with cmid {cmid:?}: duplicate key, but no row")).into()
    })
}

/// Appends `msgs` in order (see [`Store::append`]), inbox rows included. Chunks go in
/// as multi-row INSERTs where the server makes their mids consecutive; a chunk that
/// hits a taken (sender, cmid) (that statement is undone) and every chunk where the
/// mids would not be known go in row by row, and a taken key then yields the first
/// row's mid and time.
fn insert_messages(c: &mut impl Queryable, msgs: &[NewMessage]) -> Q<Vec<Accepted>> {
    let step = autoinc_step(c)?;
    let mut accepted = Vec::with_capacity(msgs.len());
    let mut rest = msgs;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(chunk_len(rest.len()));
        rest = tail;
        if let Some(step) = step {
            if let Some(mids) = insert_message_rows(c, chunk, step)? {
                accepted.extend(chunk.iter().zip(mids).map(|(m, mid)| Accepted {
                    mid,
                    time: m.time.clone(),
                    first: true,
                }));
                continue;
            }
        }
        for m in chunk {
            accepted.push(match insert_message_row(c, m)? {
                Some(mid) => Accepted { mid, time: m.time.clone(), first: true },
                None => {
                    let (mid, time) = select_by_cmid(c, m.sender, m.cmid.as_deref())?;
                    Accepted { mid, time, first: false }
                }
            });
        }
    }
    // Sorted, so that concurrent appends lock inbox rows in one order; a recipient
    // named twice is owed the message once.
    let mut owed: Vec<(UserId, Mid)> = msgs
        .iter()
        .zip(&accepted)
        .filter(|(_, a)| a.first)
        .flat_map(|(m, a)| m.recipients.iter().map(move |&user| (user, a.mid)))
        .collect();
    owed.sort_unstable();
    owed.dedup();
    insert_inbox_rows(c, &owed)?;
    Ok(accepted)
}

/// Inserts (user, mid) inbox rows, a chunk per statement.
fn insert_inbox_rows(c: &mut impl Queryable, rows: &[(UserId, Mid)]) -> Q<()> {
    let mut rest = rows;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(chunk_len(rest.len()));
        rest = tail;
        let values: Vec<mysql::Value> = chunk.iter().flat_map(|&(user, mid)| [user.into(), mid.into()]).collect();
        c.exec_drop(repeated("INSERT INTO inbox (userid, mid) VALUES ", "(?, ?)", chunk.len(), ""), values)?;
    }
    Ok(())
}

/// A [`Message`] from the columns mid, sender, sendername, convlo, convhi, msg, time.
type MessageRow = (Mid, UserId, String, i64, i64, String, String);

fn message_of((mid, sender, sender_name, lo, hi, text, time): MessageRow) -> Message {
    Message { mid, sender, sender_name, to: Conversation::from_key(sender, (lo, hi)), text, time }
}

fn select_inbox(c: &mut impl Queryable, user: UserId, after: Mid, limit: usize) -> Q<Vec<Message>> {
    let limit = u64::try_from(limit).unwrap_or(u64::MAX);
    let rows = c.exec_opt::<MessageRow, _, _>(
        "SELECT m.mid, m.sender, m.sendername, m.convlo, m.convhi, m.msg, m.time
           FROM inbox i JOIN message m ON m.mid = i.mid
          WHERE i.userid = ? AND i.mid > ?
          ORDER BY i.mid
          LIMIT ?",
        (user, after, limit),
    )?;
    Ok(decoded(rows)?.into_iter().map(message_of).collect())
}

/// Deletes these (sorted) mids from `user`'s inbox, a chunk per statement.
fn delete_inbox_rows(c: &mut impl Queryable, user: UserId, mids: &[Mid]) -> Q<()> {
    let mut rest = mids;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(chunk_len(rest.len()));
        rest = tail;
        let values: Vec<mysql::Value> = std::iter::once(user).chain(chunk.iter().copied()).map(Into::into).collect();
        c.exec_drop(repeated("DELETE FROM inbox WHERE userid = ? AND mid IN (", "?", chunk.len(), ")"), values)?;
    }
    Ok(())
}

/// A conversation's page: up to `limit` of its messages with mid < `before`, newest
/// first, read backwards along `message_conv` (forced: the optimizer may otherwise
/// walk the primary key backwards to skip the sort, which scans the whole log for a
/// quiet conversation).
const HISTORY: &str = "SELECT mid, sender, sendername, convlo, convhi, msg, time
                                    FROM message FORCE INDEX (message_conv)
                                   WHERE convlo = ? AND convhi = ? AND mid < ?
                                   ORDER BY mid DESC
                                   LIMIT ?";

/// `EXPLAIN` and [`HISTORY`]: constant text, built once.
fn explained_history() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| format!("EXPLAIN {HISTORY}"))
}

fn select_history(c: &mut impl Queryable, (lo, hi): (i64, i64), before: Mid, limit: usize) -> Q<Vec<Message>> {
    let limit = u64::try_from(limit).unwrap_or(u64::MAX);
    let rows = c.exec_opt::<MessageRow, _, _>(HISTORY, (lo, hi, before, limit))?;
    Ok(decoded(rows)?.into_iter().map(message_of).collect())
}

/// Up to `limit` mids of messages accepted before `unix_time`, in mid order.
fn select_expired(c: &mut impl Queryable, unix_time: i64, limit: usize) -> Q<Vec<Mid>> {
    let limit = u64::try_from(limit).unwrap_or(u64::MAX);
    let mut mids: Vec<Mid> = c.exec("SELECT mid FROM message WHERE unixtime < ? LIMIT ?", (unix_time, limit))?;
    mids.sort_unstable();
    Ok(mids)
}

/// Deletes these (sorted) messages and their inbox rows; returns how many messages
/// went (a concurrent expiry may have taken some).
fn delete_messages(c: &mut impl Queryable, mids: &[Mid]) -> Q<u64> {
    let mut deleted = 0;
    let mut rest = mids;
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(chunk_len(rest.len()));
        rest = tail;
        let values: Vec<mysql::Value> = chunk.iter().map(|&mid| mid.into()).collect();
        c.exec_drop(repeated("DELETE FROM inbox WHERE mid IN (", "?", chunk.len(), ")"), values.clone())?;
        let result = c.exec_iter(repeated("DELETE FROM message WHERE mid IN (", "?", chunk.len(), ")"), values)?;
        deleted += result.affected_rows();
    }
    Ok(deleted)
}

/// Deletes a group's messages and their inbox rows.
fn delete_group_messages(c: &mut impl Queryable, group: GroupId) -> Q<()> {
    let Some((lo, hi)) = Conversation::Group(group).key(0) else {
        return Ok(());
    };
    c.exec_drop(
        "DELETE inbox FROM inbox JOIN message ON message.mid = inbox.mid
          WHERE message.convlo = ? AND message.convhi = ?",
        (lo, hi),
    )?;
    c.exec_drop("DELETE FROM message WHERE convlo = ? AND convhi = ?", (lo, hi))?;
    Ok(())
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
                    delete_group_messages(tx, group)?;
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

    fn append(&self, msgs: &[NewMessage]) -> Result<Vec<Accepted>> {
        if msgs.is_empty() {
            return Ok(Vec::new());
        }
        self.transaction(|tx| insert_messages(tx, msgs))
    }

    fn inbox(&self, user: UserId, after: Mid, limit: usize) -> Result<Vec<Message>> {
        self.single(|c| select_inbox(c, user, after, limit))
    }

    fn settle(&self, settles: &[(UserId, Vec<Mid>)]) -> Result<()> {
        // Sorted and merged, so concurrent settles lock rows in one order.
        let mut rows: Vec<(UserId, Mid)> =
            settles.iter().flat_map(|(user, mids)| mids.iter().map(move |&mid| (*user, mid))).collect();
        if rows.is_empty() {
            return Ok(());
        }
        rows.sort_unstable();
        rows.dedup();
        self.transaction(|tx| {
            for group in rows.chunk_by(|a, b| a.0 == b.0) {
                let mids: Vec<Mid> = group.iter().map(|&(_, mid)| mid).collect();
                delete_inbox_rows(tx, group[0].0, &mids)?;
            }
            Ok(())
        })
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
        let page = self.single(|c| select_history(c, key, before.unwrap_or(Mid::MAX), limit.saturating_add(1)))?;
        Ok(super::history_page(page, limit))
    }

    fn expire(&self, unix_time: i64) -> Result<usize> {
        let mut total = 0u64;
        loop {
            let (found, deleted) = self.transaction(|tx| {
                let mids = select_expired(tx, unix_time, EXPIRE_BATCH)?;
                Ok((mids.len(), delete_messages(tx, &mids)?))
            })?;
            total += deleted;
            if found < EXPIRE_BATCH {
                return Ok(usize::try_from(total).unwrap_or(usize::MAX));
            }
        }
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
        assert_eq!(tables, ["user", "friend", "allgroup", "groupuser", "message", "inbox"]);
        for s in &statements {
            assert!(!s.contains("--"), "comment left in {s}");
            assert!(s.contains("utf8mb4"), "not utf8mb4: {s}");
        }
    }

    #[test]
    fn multi_row_statements_come_in_a_few_sizes() {
        let mut sizes = std::collections::BTreeSet::new();
        for n in 1..=3000 {
            let (mut rest, mut chunks) = (n, 0);
            while rest > 0 {
                let len = chunk_len(rest);
                assert!(len <= rest && len <= MAX_ROWS && len.is_power_of_two());
                sizes.insert(len);
                rest -= len;
                chunks += 1;
            }
            assert!(chunks <= n / MAX_ROWS + 9, "{n} rows in {chunks} statements");
        }
        assert_eq!(sizes.len(), 9);
        assert_eq!(repeated("INSERT INTO t (a) VALUES ", "(?)", 3, ""), "INSERT INTO t (a) VALUES (?), (?), (?)");
        assert_eq!(repeated("DELETE FROM t WHERE a IN (", "?", 1, ")"), "DELETE FROM t WHERE a IN (?)");
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
        let opts = conn_options("mysql://u:p@127.0.0.1:3307/chat?prefer_socket=true").expect("options");
        assert_eq!(opts.get_tcp_port(), 3307);
        assert_eq!(opts.get_user(), Some("u"));
        assert_eq!(opts.get_pass(), Some("p"));
        assert_eq!(opts.get_db_name(), Some("chat"));
        assert!(!opts.get_prefer_socket());
        assert_eq!(opts.get_tcp_connect_timeout(), Some(CONNECT_TIMEOUT));
        assert_eq!(opts.get_read_timeout(), Some(&IO_TIMEOUT));
        assert_eq!(opts.get_write_timeout(), Some(&IO_TIMEOUT));
        assert_eq!(opts.get_stmt_cache_size(), STATEMENT_CACHE);
        assert!(conn_options("postgres://x/y").is_err());
    }

    #[test]
    fn lock_wait_is_below_the_socket_timeout() {
        assert!(SESSION_INIT.contains(&LOCK_WAIT));
        let secs: u64 = LOCK_WAIT.rsplit(' ').next().and_then(|n| n.parse().ok()).expect("seconds");
        assert!(Duration::from_secs(secs) < IO_TIMEOUT);
    }

    #[test]
    fn a_database_that_does_not_answer_costs_a_request_less_than_two_seconds() {
        // A request waits for one of them at most: connecting, or one read or write.
        assert!(CONNECT_TIMEOUT.max(IO_TIMEOUT) < Duration::from_secs(2));
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
        let io = Failure::Sql(mysql::Error::IoError(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)));
        assert!(!io.is_transient());
        assert!(matches!(io.into_store(), StoreError::Unavailable(_)));
        assert_eq!(Failure::Store(StoreError::NotFound).into_store(), StoreError::NotFound);
    }
}
