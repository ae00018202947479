//! The peer: what a Rust engineer would otherwise write. A tokio chat server for the
//! same wire subset, written the way tokio's own chat example writes one: a task per
//! connection, an unbounded channel per logged-in user, a shared map behind a mutex
//! (`std::sync::Mutex`, as tokio's "shared state" tutorial recommends for short
//! critical sections), on a multi-threaded runtime.
//!
//! Subset: framing as PROTOCOL.md §1 (NUL, whitespace or nothing between objects,
//! replies terminated like the client's last frame, 64 KiB frame limit), LOGIN against
//! a preloaded in-memory user table (ids 1..=N, name `user{id}`, password `pw`),
//! ONE_CHAT, GROUP_CHAT, PING, and CREATE_GROUP / ADD_GROUP so the load generator can
//! build the fan-out group the same way for both servers. Replies have our shapes:
//! LOGIN_ACK, ACK `{"msgid":15,"req":..,"errno":0}` (for a chat with the message's
//! `mid` and `time`), pushes msgid 6 / 10 with `time` and `mid`, PONG `{"msgid":17}`.
//! Messages to an offline user are kept in memory and handed over in the next
//! LOGIN_ACK's `offlinemsg`.
//!
//! Durable before acknowledged, as ours: every ONE_CHAT and GROUP_CHAT goes to one
//! writer thread (a `std::thread` fed by an unbounded tokio channel) that inserts a
//! batch of them, as many as are waiting, in one SQLite transaction (WAL,
//! `synchronous=NORMAL`, our default) and hands each back to its sender's task with
//! its rowid as `mid`; that task then delivers the push and writes the ACK. One row per
//! message. A chat's ACK may thus follow the replies to requests sent after it.
//!
//! Runs in its own process (the bench binary re-executed with `--peer-server`), so
//! its memory and CPU are measured exactly as ours are.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

const MAX_FRAME: usize = 64 * 1024;

/// The most messages one transaction holds.
const MAX_BATCH: usize = 1024;

type Tx = mpsc::UnboundedSender<Arc<str>>;
type Rx = mpsc::UnboundedReceiver<Arc<str>>;
/// A chat on its way to the log, and where to hand it back once stored.
type Job = (Chat, mpsc::UnboundedSender<Stored>);

struct Group {
    name: String,
    members: Vec<i64>,
}

/// What every connection task shares.
struct Shared {
    /// Preloaded, read-only: id → (name, password).
    users: HashMap<i64, (String, String)>,
    state: Mutex<State>,
    /// To the writer thread.
    log: mpsc::UnboundedSender<Job>,
}

/// An accepted ONE_CHAT (`req` 6, `to` a user) or GROUP_CHAT (`req` 10, `to` a group).
struct Chat {
    req: i64,
    from: i64,
    name: String,
    to: i64,
    text: String,
    time: String,
    recipients: Vec<i64>,
}

/// A chat back from the writer: its mid, or `None` when the transaction failed.
struct Stored {
    chat: Chat,
    mid: Option<i64>,
}

#[derive(Default)]
struct State {
    online: HashMap<i64, Tx>,
    offline: HashMap<i64, Vec<Arc<str>>>,
    groups: HashMap<i64, Group>,
    next_group: i64,
}

/// A ONE_CHAT or GROUP_CHAT push, in our field order.
#[derive(Serialize)]
struct ChatPush<'a> {
    msgid: i64,
    id: i64,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    toid: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    groupid: Option<i64>,
    msg: &'a str,
    time: &'a str,
    mid: i64,
}

/// Runs the peer until killed: `--threads N` runtime threads, `--users N` preloaded,
/// the message log in the SQLite file `--db PATH`.
pub fn main(args: &[String]) {
    let arg = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let threads = arg("--threads", 2);
    let users = arg("--users", 2000) as i64;
    let Some(db) = args.iter().position(|a| a == "--db").and_then(|i| args.get(i + 1)) else {
        eprintln!("peer: --db PATH required");
        std::process::exit(2);
    };
    let db = match open_log(Path::new(db)) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("peer: cannot open {db}: {e}");
            std::process::exit(1);
        }
    };
    let (log, jobs) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        users: (1..=users).map(|id| (id, (format!("user{id}"), "pw".to_owned()))).collect(),
        state: Mutex::new(State { next_group: 1, ..Default::default() }),
        log,
    });
    let writer = Arc::clone(&shared);
    std::thread::spawn(move || write_log(db, jobs, &writer));
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build().expect("peer runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("peer bind");
        eprintln!("peer listening on {}", listener.local_addr().expect("peer addr"));
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("peer accept: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    continue;
                }
            };
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let _ = Connection::new(shared).run(stream).await;
            });
        }
    });
}

/// The message log: one table, one row per message.
fn open_log(path: &Path) -> rusqlite::Result<rusqlite::Connection> {
    let db = rusqlite::Connection::open(path)?;
    db.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = NORMAL;
         CREATE TABLE IF NOT EXISTS message (
             mid     INTEGER PRIMARY KEY,
             sender  INTEGER NOT NULL,
             toid    INTEGER,
             groupid INTEGER,
             msg     TEXT NOT NULL,
             time    TEXT NOT NULL
         );",
    )?;
    Ok(db)
}

/// The writer thread: takes every chat waiting (up to `MAX_BATCH`), inserts them in
/// one transaction, and hands each back to its sender's task once committed.
fn write_log(mut db: rusqlite::Connection, mut jobs: mpsc::UnboundedReceiver<Job>, shared: &Shared) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(job) = jobs.blocking_recv() {
        batch.push(job);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mids = insert(&mut db, &batch).map_err(|e| eprintln!("peer: message log: {e}")).ok();
        for (i, (chat, done)) in batch.drain(..).enumerate() {
            let stored = Stored { chat, mid: mids.as_ref().map(|m| m[i]) };
            // The sender is gone: deliver for it.
            if let Err(mpsc::error::SendError(stored)) = done.send(stored) {
                stored.publish(&shared.state);
            }
        }
    }
}

fn insert(db: &mut rusqlite::Connection, batch: &[Job]) -> rusqlite::Result<Vec<i64>> {
    let tx = db.transaction()?;
    let mut mids = Vec::with_capacity(batch.len());
    {
        let mut stmt =
            tx.prepare_cached("INSERT INTO message (sender, toid, groupid, msg, time) VALUES (?1, ?2, ?3, ?4, ?5)")?;
        for (c, _) in batch {
            let (toid, groupid) = if c.req == 6 { (Some(c.to), None) } else { (None, Some(c.to)) };
            mids.push(stmt.insert(rusqlite::params![c.from, toid, groupid, c.text, c.time])?);
        }
    }
    tx.commit()?;
    Ok(mids)
}

impl Stored {
    /// Delivers the push to the recipients; the ACK for the sender.
    fn publish(self, state: &Mutex<State>) -> Value {
        let Stored { chat: c, mid } = self;
        let Some(mid) = mid else {
            return json!({"msgid": 15, "req": c.req, "errno": 503, "errmsg": "storage unavailable"});
        };
        let (toid, groupid) = if c.req == 6 { (Some(c.to), None) } else { (None, Some(c.to)) };
        let push =
            ChatPush { msgid: c.req, id: c.from, name: &c.name, toid, groupid, msg: &c.text, time: &c.time, mid };
        let push: Arc<str> = serde_json::to_string(&push).unwrap_or_default().into();
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        for &to in &c.recipients {
            deliver(&mut state, to, Arc::clone(&push));
        }
        drop(state);
        json!({"msgid": 15, "req": c.req, "errno": 0, "mid": mid, "time": c.time})
    }
}

struct Connection {
    shared: Arc<Shared>,
    me: Option<(i64, String)>,
    rx: Option<Rx>,
    /// Chats back from the writer (made at LOGIN, with `rx`).
    stored: Option<(mpsc::UnboundedSender<Stored>, mpsc::UnboundedReceiver<Stored>)>,
    terminator: u8,
    out: Vec<u8>,
    close: bool,
}

fn now() -> String {
    chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

impl Connection {
    fn new(shared: Arc<Shared>) -> Connection {
        Connection { shared, me: None, rx: None, stored: None, terminator: b'\n', out: Vec::new(), close: false }
    }

    async fn run(mut self, mut stream: TcpStream) -> std::io::Result<()> {
        stream.set_nodelay(true)?;
        let result = self.serve(&mut stream).await;
        if let Some((id, _)) = self.me.take() {
            self.shared.state.lock().unwrap_or_else(|p| p.into_inner()).online.remove(&id);
        }
        // Stored chats not yet handed back are delivered without their ACKs; the
        // writer delivers the later ones itself.
        if let Some((_, mut stored)) = self.stored.take() {
            stored.close();
            while let Ok(s) = stored.try_recv() {
                s.publish(&self.shared.state);
            }
        }
        result
    }

    async fn serve(&mut self, stream: &mut TcpStream) -> std::io::Result<()> {
        let mut buf: Vec<u8> = Vec::with_capacity(4096);
        loop {
            tokio::select! {
                Some(push) = async { self.rx.as_mut()?.recv().await }, if self.rx.is_some() => {
                    self.frame(push.as_bytes());
                    while let Some(Ok(more)) = self.rx.as_mut().map(|rx| rx.try_recv()) {
                        self.frame(more.as_bytes());
                    }
                }
                Some(s) = async { self.stored.as_mut()?.1.recv().await }, if self.stored.is_some() => {
                    let ack = s.publish(&self.shared.state);
                    self.reply(ack);
                    while let Some(Ok(s)) = self.stored.as_mut().map(|(_, rx)| rx.try_recv()) {
                        let ack = s.publish(&self.shared.state);
                        self.reply(ack);
                    }
                }
                n = stream.read_buf(&mut buf) => {
                    if n? == 0 {
                        return Ok(());
                    }
                    let used = self.decode(&buf);
                    buf.drain(..used);
                    if buf.len() > MAX_FRAME && !self.close {
                        self.frame(&error(413, "frame too large"));
                        self.close = true;
                    }
                }
            }
            if !self.out.is_empty() {
                stream.write_all(&self.out).await?;
                self.out.clear();
            }
            if self.close {
                return Ok(());
            }
        }
    }

    fn frame(&mut self, body: &[u8]) {
        self.out.extend_from_slice(body);
        self.out.push(self.terminator);
    }

    /// Handles every complete object in `buf`; returns the bytes used.
    fn decode(&mut self, buf: &[u8]) -> usize {
        let mut pos = 0;
        while !self.close {
            while pos < buf.len() && matches!(buf[pos], 0 | b' ' | b'\n' | b'\r' | b'\t') {
                self.terminator = if buf[pos] == 0 { 0 } else { b'\n' };
                pos += 1;
            }
            if pos == buf.len() {
                break;
            }
            let mut values = serde_json::Deserializer::from_slice(&buf[pos..]).into_iter::<Value>();
            match values.next() {
                Some(Ok(value)) => {
                    pos += values.byte_offset();
                    if let Some(&t) = buf.get(pos) {
                        self.terminator = if t == 0 { 0 } else { b'\n' };
                    }
                    self.request(value);
                }
                Some(Err(e)) if e.is_eof() => break,
                None => break,
                Some(Err(e)) => {
                    self.frame(&error(400, &format!("not a JSON object: {e}")));
                    self.close = true;
                    return buf.len();
                }
            }
        }
        pos
    }

    fn reply(&mut self, v: Value) {
        let bytes = serde_json::to_vec(&v).unwrap_or_default();
        self.frame(&bytes);
    }

    fn request(&mut self, v: Value) {
        let Value::Object(req) = v else {
            self.frame(&error(400, "expected a JSON object"));
            self.close = true;
            return;
        };
        let Some(msgid) = req.get("msgid").and_then(Value::as_i64) else {
            return self.frame(&error(400, "missing msgid"));
        };
        let ack = |errno: i64, errmsg: &str| {
            if errno == 0 {
                json!({"msgid": 15, "req": msgid, "errno": 0})
            } else {
                json!({"msgid": 15, "req": msgid, "errno": errno, "errmsg": errmsg})
            }
        };
        let int = |k: &str| req.get(k).and_then(Value::as_i64);
        let string = |k: &str| req.get(k).and_then(Value::as_str);
        match msgid {
            16 => self.frame(br#"{"msgid":17}"#),
            1 => {
                let reply = self.login(int("id"), string("password"));
                self.reply(reply);
            }
            _ if !(2..=16).contains(&msgid) => self.frame(&error(400, "unknown msgid")),
            _ if self.me.is_none() => self.reply(ack(401, "not logged in")),
            6 => {
                let (Some(toid), Some(text)) = (int("toid"), string("msg")) else {
                    return self.reply(ack(400, "toid and msg required"));
                };
                if !self.shared.users.contains_key(&toid) {
                    return self.reply(ack(404, "no such user"));
                }
                self.submit(6, toid, text, vec![toid]);
            }
            10 => {
                let (Some(groupid), Some(text)) = (int("groupid"), string("msg")) else {
                    return self.reply(ack(400, "groupid and msg required"));
                };
                let me = self.me.as_ref().map(|m| m.0).unwrap_or_default();
                let state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
                let members = match state.groups.get(&groupid) {
                    None => Err(ack(404, "no such group")),
                    Some(g) if !g.members.contains(&me) => Err(ack(403, "not a member")),
                    Some(g) => Ok(g.members.iter().copied().filter(|m| *m != me).collect()),
                };
                drop(state);
                match members {
                    Ok(members) => self.submit(10, groupid, text, members),
                    Err(nack) => self.reply(nack),
                }
            }
            8 => {
                let Some(name) = string("groupname") else { return self.reply(ack(400, "groupname required")) };
                let me = self.me.as_ref().map(|m| m.0).unwrap_or_default();
                let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
                if state.groups.values().any(|g| g.name == name) {
                    drop(state);
                    return self.reply(ack(409, "name taken"));
                }
                let id = state.next_group;
                state.next_group += 1;
                state.groups.insert(id, Group { name: name.to_owned(), members: vec![me] });
                drop(state);
                self.reply(json!({"msgid": 15, "req": 8, "errno": 0, "groupid": id}));
            }
            9 => {
                let Some(groupid) = int("groupid") else { return self.reply(ack(400, "groupid required")) };
                let me = self.me.as_ref().map(|m| m.0).unwrap_or_default();
                let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
                let result = match state.groups.get_mut(&groupid) {
                    None => ack(404, "no such group"),
                    Some(g) if g.members.contains(&me) => ack(409, "already a member"),
                    Some(g) => {
                        g.members.push(me);
                        ack(0, "")
                    }
                };
                drop(state);
                self.reply(result);
            }
            _ => self.reply(ack(400, "not supported by the peer")),
        }
    }

    /// Hands an accepted chat to the writer; it comes back through `stored`.
    fn submit(&mut self, req: i64, to: i64, text: &str, recipients: Vec<i64>) {
        let (Some((from, name)), Some((done, _))) = (&self.me, &self.stored) else { return };
        let chat = Chat { req, from: *from, name: name.clone(), to, text: text.to_owned(), time: now(), recipients };
        if let Err(mpsc::error::SendError((chat, _))) = self.shared.log.send((chat, done.clone())) {
            let nack = Stored { chat, mid: None }.publish(&self.shared.state);
            self.reply(nack);
        }
    }

    fn login(&mut self, id: Option<i64>, password: Option<&str>) -> Value {
        let fail = |errno: i64, errmsg: &str| json!({"msgid": 2, "errno": errno, "errmsg": errmsg});
        let (Some(id), Some(password)) = (id, password) else { return fail(400, "id and password required") };
        if self.me.is_some() {
            return fail(409, "this connection is already logged in");
        }
        let Some((name, pw)) = self.shared.users.get(&id) else { return fail(1, "id or password is invalid!") };
        if pw != password {
            return fail(1, "id or password is invalid!");
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.online.contains_key(&id) {
            return fail(2, "this account is using, input another!");
        }
        state.online.insert(id, tx);
        let offline = state.offline.remove(&id).unwrap_or_default();
        drop(state);
        self.me = Some((id, name.clone()));
        self.rx = Some(rx);
        self.stored = Some(mpsc::unbounded_channel());
        let mut ack = json!({"msgid": 2, "errno": 0, "id": id, "name": name});
        if !offline.is_empty() {
            ack["offlinemsg"] = offline.iter().map(|m| Value::String(m.to_string())).collect();
        }
        ack
    }
}

/// To the user's channel if online, else to the in-memory mailbox.
fn deliver(state: &mut State, to: i64, push: Arc<str>) {
    let push = match state.online.get(&to) {
        Some(tx) => match tx.send(push) {
            Ok(()) => return,
            Err(mpsc::error::SendError(push)) => push,
        },
        None => push,
    };
    state.offline.entry(to).or_default().push(push);
}

fn error(errno: i64, errmsg: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"msgid": 11, "errno": errno, "errmsg": errmsg})).unwrap_or_default()
}
