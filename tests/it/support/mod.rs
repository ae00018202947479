//! Test support: a real `ChatServer` process on a free loopback port in a temp dir, and
//! a line-level client that speaks the wire protocol over a real socket.
//!
//! Servers are stopped by PID when dropped (SIGKILL), or with `stop()` (SIGTERM).
//!
//! The store behind [`Server::start`] is chosen by `CHAT_TEST_STORE`: `sqlite` (the
//! default, a file in a temp dir) or `mysql` (a fresh database on the private MariaDB of
//! [`services`]), so the whole protocol suite runs against either backend.

#![allow(dead_code)]

pub mod services;
pub mod spawn;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long a test waits for any one reply.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn bin(name: &str) -> PathBuf {
    match name {
        "ChatServer" => PathBuf::from(env!("CARGO_BIN_EXE_ChatServer")),
        "ChatClient" => PathBuf::from(env!("CARGO_BIN_EXE_ChatClient")),
        other => panic!("unknown binary {other}"),
    }
}

/// The store the suite runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Mysql,
}

/// The backend `CHAT_TEST_STORE` names: `sqlite` (default) or `mysql`.
pub fn backend() -> Backend {
    match std::env::var("CHAT_TEST_STORE").as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => Backend::Sqlite,
        Ok("mysql") => Backend::Mysql,
        Ok(other) => panic!("CHAT_TEST_STORE={other}: expected sqlite or mysql"),
    }
}

/// The URL of a fresh, empty database of the chosen backend, for tests that start
/// several servers over the same data (e.g. a restart). It lives until the test process
/// ends: a SQLite file under the process's temp dir, or a new database on the shared
/// private MariaDB.
pub fn fresh_db() -> String {
    match backend() {
        Backend::Sqlite => format!("sqlite://{}", services::scratch_dir("sqlite").join("chat.db").display()),
        Backend::Mysql => services::MariaDb::shared().create_database(),
    }
}

/// How `Server::start` deploys: `CHAT_TEST_TOPOLOGY` = `single` (default), `cluster`
/// (two nodes on one MariaDB and one Redis; clients alternate between them, so
/// conversations cross servers) or `nginx` (the same cluster behind nginx's stream
/// module, every client through nginx).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    Single,
    Cluster,
    Nginx,
}

pub fn topology() -> Topology {
    match std::env::var("CHAT_TEST_TOPOLOGY").as_deref() {
        Err(_) | Ok("") | Ok("single") => Topology::Single,
        Ok("cluster") => Topology::Cluster,
        Ok("nginx") => Topology::Nginx,
        Ok(other) => panic!("CHAT_TEST_TOPOLOGY={other}: expected single, cluster or nginx"),
    }
}

/// A running `ChatServer` (in a cluster topology: its first node, with the others).
pub struct Server {
    pub addr: SocketAddr,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    pub db: String,
    _dir: Option<tempfile::TempDir>,
    /// Further nodes of the cluster, and the balancer in front, if any.
    pub nodes: Vec<Server>,
    nginx: Option<services::Nginx>,
    pub redis: Option<services::Redis>,
    next: AtomicU64,
}

impl Server {
    /// A server on a fresh database of the backend `CHAT_TEST_STORE` names, deployed as
    /// `CHAT_TEST_TOPOLOGY` says.
    pub fn start(args: &[&str]) -> Server {
        if topology() != Topology::Single {
            return Server::start_cluster(2, args, topology() == Topology::Nginx);
        }
        if backend() == Backend::Mysql {
            return Server::start_with_db(&fresh_db(), args);
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let db = format!("sqlite://{}", dir.path().join("chat.db").display());
        let mut s = Server::start_with_db(&db, args);
        s._dir = Some(dir);
        s
    }

    /// `n` nodes on a fresh MariaDB database and the shared Redis; with `nginx`, a
    /// round-robin nginx in front that every client goes through.
    pub fn start_cluster(n: usize, args: &[&str], nginx: bool) -> Server {
        let db = services::MariaDb::shared().create_database();
        // A Redis of its own: user ids restart at 1 in every test database, and a user's
        // channel is its id.
        let redis_server = services::Redis::start();
        let redis = redis_server.url();
        let mut node_args: Vec<&str> = args.to_vec();
        node_args.extend(["--redis", &redis]);
        let mut first = Server::start_with_db(&db, &node_args);
        first.redis = Some(redis_server);
        first.nodes = (1..n).map(|_| Server::start_with_db(&db, &node_args)).collect();
        if nginx {
            let upstream: String =
                first.node_addrs().iter().map(|a| format!("server {a} max_fails=0;")).collect::<Vec<_>>().join(" ");
            first.nginx = Some(services::Nginx::start(|port| {
                format!(
                    "upstream chat {{ {upstream} }}\n\
                     server {{ listen 127.0.0.1:{port}; proxy_pass chat; proxy_timeout 10m; proxy_connect_timeout 2s; }}"
                )
            }));
        }
        first
    }

    /// Every node's own address.
    pub fn node_addrs(&self) -> Vec<SocketAddr> {
        std::iter::once(self.addr).chain(self.nodes.iter().map(|n| n.addr)).collect()
    }

    /// Where the next client connects: the balancer, or the nodes in turn.
    pub fn next_addr(&self) -> SocketAddr {
        if let Some(nginx) = &self.nginx {
            return nginx.addr();
        }
        let nodes = self.node_addrs();
        nodes[(self.next.fetch_add(1, Ordering::Relaxed) as usize) % nodes.len()]
    }

    /// A server on the database `db` (a URL), e.g. to restart over the same data.
    pub fn start_with_db(db: &str, args: &[&str]) -> Server {
        let mut cmd = Command::new(bin("ChatServer"));
        cmd.args(["127.0.0.1", "0", "--db", db])
            .args(args)
            .env("RUST_LOG", std::env::var("CHAT_TEST_LOG").unwrap_or_else(|_| "info".into()));
        let spawn::Spawned { child, addr, log } = spawn::spawn_listening(cmd, "ChatServer", WAIT, usize::MAX);
        Server {
            addr,
            child: Some(child),
            log,
            db: db.to_owned(),
            _dir: None,
            nodes: Vec::new(),
            nginx: None,
            redis: None,
            next: AtomicU64::new(0),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn client(&self) -> Client {
        Client::connect(self.next_addr())
    }

    /// Sends `sig` and waits up to `within` for the exit.
    pub fn signal(&mut self, sig: &str, within: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill").args([&format!("-{sig}"), &child.id().to_string()]).status();
        let deadline = Instant::now() + within;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM; the exit status if it exited within 5 s.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.signal("TERM", Duration::from_secs(5))
    }

    /// SIGTERM, and asserts a clean exit (status 0) within 5 s.
    pub fn stop_cleanly(&mut self) {
        match self.stop() {
            Some(status) if status.success() => {}
            other => panic!("ChatServer did not exit cleanly within 5 s ({other:?}); log:\n{}", self.log()),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let log = self.log();
        if log.contains("panicked") || std::thread::panicking() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!(
                "server log (last {} lines):\n{}",
                tail.len(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
            if !std::thread::panicking() {
                panic!("the server panicked");
            }
        }
    }
}

/// The resident memory of process `pid` in KiB (VmRSS), 0 if it cannot be read.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// What `Client::poll_frame` saw.
#[derive(Debug)]
pub enum Polled {
    Frame(Value),
    Timeout,
    Closed,
}

/// A protocol client over one TCP connection. Frames it sends end with `terminator`
/// (`"\n"` unless changed); frames it reads may end with NUL or newline.
pub struct Client {
    pub stream: TcpStream,
    buf: Vec<u8>,
    pushes: std::collections::VecDeque<Value>,
    pub terminator: &'static [u8],
    /// The terminator bytes seen after each frame read.
    pub seen_terminators: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        Client { stream, buf: Vec::new(), pushes: Default::default(), terminator: b"\n", seen_terminators: Vec::new() }
    }

    pub fn send(&mut self, v: &Value) {
        let mut bytes = serde_json::to_vec(v).expect("json");
        bytes.extend_from_slice(self.terminator);
        self.send_raw(&bytes);
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    /// The next frame from the server, or `None` if the connection closed; panics if
    /// none comes within `timeout`.
    pub fn read_frame(&mut self, timeout: Duration) -> Option<Value> {
        match self.poll_frame(timeout) {
            Polled::Frame(v) => Some(v),
            Polled::Closed => None,
            Polled::Timeout => panic!("no frame within {timeout:?}; have {:?}", String::from_utf8_lossy(&self.buf)),
        }
    }

    /// The next frame if one comes within `timeout`.
    pub fn poll_frame(&mut self, timeout: Duration) -> Polled {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == 0 || *b == b'\n') {
                let frame: Vec<u8> = self.buf.drain(..=pos).collect();
                self.seen_terminators.push(frame[pos]);
                let text = &frame[..pos];
                if text.iter().all(|b| b.is_ascii_whitespace()) {
                    continue;
                }
                return Polled::Frame(
                    serde_json::from_slice(text)
                        .unwrap_or_else(|e| panic!("bad frame {:?}: {e}", String::from_utf8_lossy(text))),
                );
            }
            let now = Instant::now();
            if now >= deadline {
                return Polled::Timeout;
            }
            self.stream.set_read_timeout(Some(deadline - now)).expect("timeout");
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Polled::Closed,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                    return Polled::Timeout
                }
                Err(_) => return Polled::Closed,
            }
        }
    }

    /// The next reply (not a push); pushes read meanwhile are kept for `push`.
    pub fn reply(&mut self) -> Value {
        loop {
            let v = self.read_frame(WAIT).expect("connection closed while waiting for a reply");
            match v["msgid"].as_i64() {
                Some(6) | Some(10) => self.pushes.push_back(v),
                _ => return v,
            }
        }
    }

    /// Sends a request and returns its reply.
    pub fn call(&mut self, v: Value) -> Value {
        self.send(&v);
        self.reply()
    }

    /// The next push (ONE_CHAT or GROUP_CHAT).
    pub fn push(&mut self) -> Value {
        self.push_within(WAIT).expect("no push")
    }

    pub fn push_within(&mut self, timeout: Duration) -> Option<Value> {
        if let Some(p) = self.pushes.pop_front() {
            return Some(p);
        }
        let v = self.read_frame(timeout)?;
        assert!(matches!(v["msgid"].as_i64(), Some(6) | Some(10)), "expected a push, got {v}");
        Some(v)
    }

    /// Asserts nothing arrives within `quiet`.
    pub fn expect_silence(&mut self, quiet: Duration) {
        assert!(self.pushes.is_empty(), "unexpected {:?}", self.pushes);
        self.stream.set_read_timeout(Some(quiet)).expect("timeout");
        let mut chunk = [0u8; 4096];
        match self.stream.read(&mut chunk) {
            Ok(0) => panic!("connection closed"),
            Ok(n) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&chunk[..n])),
            Err(_) => {}
        }
    }

    /// Whether the server closed the connection within `timeout` (frames before the
    /// close are skipped).
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut chunk = [0u8; 65536];
        while Instant::now() < deadline {
            self.stream.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
            match self.stream.read(&mut chunk) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                Err(_) => return true,
            }
        }
        false
    }

    // --- requests ---

    pub fn register(&mut self, name: &str, password: &str) -> i64 {
        let r = self.call(json!({"msgid": 4, "name": name, "password": password}));
        assert_eq!(r["errno"], 0, "REG {name}: {r}");
        r["id"].as_i64().expect("id")
    }

    pub fn login(&mut self, id: i64, password: &str) -> Value {
        let r = self.call(json!({"msgid": 1, "id": id, "password": password}));
        assert_eq!(r["errno"], 0, "LOGIN {id}: {r}");
        r
    }
}

/// A user registered and logged in on its own connection.
pub struct User {
    pub id: i64,
    pub name: String,
    pub c: Client,
}

static NAMES: AtomicU64 = AtomicU64::new(0);

/// A name unique within this test process.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}{}", NAMES.fetch_add(1, Ordering::Relaxed))
}

impl User {
    pub fn new(server: &Server, prefix: &str) -> User {
        User::at(server.next_addr(), prefix)
    }

    pub fn at(addr: SocketAddr, prefix: &str) -> User {
        let name = unique(prefix);
        let mut c = Client::connect(addr);
        let id = c.register(&name, "pw");
        c.login(id, "pw");
        User { id, name, c }
    }
}

/// A thread that registers a user at `addr` and sends `to` ONE_CHATs "f0", "f1", ...,
/// each ACKed with errno 0, until `stop` is raised or 20 s pass; it ends with the number
/// sent.
pub fn flood(addr: SocketAddr, to: i64, stop: Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut a = User::at(addr, "flooder");
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut sent = 0u64;
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            assert_eq!(a.c.call(json!({"msgid": 6, "toid": to, "msg": format!("f{sent}")}))["errno"], 0);
            sent += 1;
        }
        sent
    })
}
