//! Starting the servers under test as child processes, and reading their memory and
//! CPU from /proc. Both are killed (SIGKILL) when dropped, also on panic.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::services::MariaDb;
use super::spawn::{spawn_listening, Spawned};

/// Which server: ours (the release `ChatServer`) or the tokio peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Ours,
    Peer,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Ours => "ours",
            Kind::Peer => "peer",
        }
    }
}

/// A server's database: a SQLite file in its temp dir, or, for ours with
/// `BENCH_STORE=mysql`, a fresh database on a private MariaDB (the integration tests'
/// instance, started once per bench process). The peer is always on SQLite.
pub enum Db {
    Sqlite(PathBuf),
    Mysql(String),
}

impl Db {
    fn for_kind(kind: Kind, dir: &tempfile::TempDir) -> Db {
        match (kind, std::env::var("BENCH_STORE").as_deref()) {
            (Kind::Peer, _) | (Kind::Ours, Err(_) | Ok("" | "sqlite")) => Db::Sqlite(dir.path().join("chat.db")),
            (Kind::Ours, Ok("mysql")) => Db::Mysql(MariaDb::shared().create_database()),
            (Kind::Ours, Ok(other)) => panic!("BENCH_STORE={other}: expected sqlite or mysql"),
        }
    }

    /// What `--db` takes.
    fn url(&self) -> String {
        match self {
            Db::Sqlite(path) => format!("sqlite://{}", path.display()),
            Db::Mysql(url) => url.clone(),
        }
    }
}

/// What ours runs on, for the bench's header line.
pub fn ours_store() -> &'static str {
    match std::env::var("BENCH_STORE").as_deref() {
        Ok("mysql") => "MariaDB (private instance, innodb_flush_log_at_trx_commit=2)",
        _ => "SQLite (WAL, synchronous=NORMAL)",
    }
}

/// Spawns `kind` on `db` and waits for its address.
fn spawn(kind: Kind, threads: usize, peer_users: usize, db: &Db) -> Spawned {
    let cmd = match kind {
        Kind::Ours => {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_ChatServer"));
            cmd.args(["127.0.0.1", "0", "--db"])
                .arg(db.url())
                .args(["--rate-limit", "0", "--login-timeout", "0", "--threads"])
                .arg(threads.to_string())
                // Extra flags for experiments, e.g. BENCH_OURS_ARGS="--workers 32".
                .args(std::env::var("BENCH_OURS_ARGS").unwrap_or_default().split_whitespace())
                .env("RUST_LOG", "info");
            cmd
        }
        Kind::Peer => {
            let Db::Sqlite(path) = db else { panic!("the peer runs on SQLite") };
            let mut cmd = Command::new(std::env::current_exe().expect("bench executable"));
            cmd.args(["--peer-server", "--threads", &threads.to_string(), "--users", &peer_users.to_string()])
                .arg("--db")
                .arg(path);
            cmd
        }
    };
    let what = format!("the {} server", kind.name());
    spawn_listening(cmd, &what, Duration::from_secs(20), 1 << 20)
}

pub struct Server {
    pub kind: Kind,
    pub addr: SocketAddr,
    child: Child,
    log: Arc<Mutex<String>>,
    threads: usize,
    peer_users: usize,
    db: Db,
    _dir: tempfile::TempDir,
}

impl Server {
    /// Starts `kind` with `threads` event-loop (ours) or runtime (peer) threads, on a
    /// fresh database (a SQLite file is removed with the server).
    pub fn start(kind: Kind, threads: usize, peer_users: usize) -> Server {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::for_kind(kind, &dir);
        let Spawned { child, addr, log } = spawn(kind, threads, peer_users, &db);
        Server { kind, addr, child, log, threads, peer_users, db, _dir: dir }
    }

    /// Stops the server (SIGKILL), lets `f` change its database, and starts it again on
    /// that database (at a new address).
    pub fn restart_with(&mut self, f: impl FnOnce(&Db)) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        f(&self.db);
        let Spawned { child, addr, log } = spawn(self.kind, self.threads, self.peer_users, &self.db);
        (self.child, self.addr, self.log) = (child, addr, log);
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn cpu(&self) -> CpuClock {
        CpuClock(self.pid())
    }

    /// Resident memory in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// CPU seconds (user + system) the server has used so far.
    pub fn cpu_secs(&self) -> f64 {
        self.cpu().secs()
    }

    /// Context switches (voluntary and not) of all the server's threads so far.
    pub fn context_switches(&self) -> u64 {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) else { return 0 };
        tasks
            .filter_map(Result::ok)
            .map(|t| {
                let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
                status
                    .lines()
                    .filter(|l| l.starts_with("voluntary_ctxt_switches") || l.starts_with("nonvoluntary_ctxt_switches"))
                    .filter_map(|l| l.split(':').nth(1)?.trim().parse::<u64>().ok())
                    .sum::<u64>()
            })
            .sum()
    }

    /// Panics with the server's log if it has exited.
    pub fn check_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("the {} server exited ({status}); log:\n{}", self.kind.name(), self.log());
        }
    }

    pub fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let log = self.log();
        if log.contains("panicked") {
            eprintln!("{} server log:\n{log}", self.kind.name());
        }
    }
}

/// A process's CPU time, read from /proc: what the load generator samples at the
/// edges of a measured interval.
#[derive(Debug, Clone, Copy)]
pub struct CpuClock(u32);

impl CpuClock {
    /// CPU seconds (user + system, all threads) the process has used so far, in clock
    /// ticks (10 ms at the usual 100 Hz).
    pub fn secs(self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.0)).unwrap_or_default();
        // Fields after the parenthesised command name; utime and stime are 14 and 15.
        let rest = stat.rsplit(')').next().unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        (ticks(11) + ticks(12)) / if hz > 0.0 { hz } else { 100.0 }
    }
}

/// CPU seconds (user + system) this process (the load generator) has used so far.
pub fn self_cpu_secs() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Raises the open-file limit to the hard limit; returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            let _ = libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
        lim.rlim_cur as u64
    }
}
