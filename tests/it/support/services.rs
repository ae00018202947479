//! Real services for the tests, private to this test process: MariaDB, Redis, and nginx
//! with its stream module, each in its own temp dir on free loopback ports.
//!
//! Nothing here touches system services, system paths or fixed ports: every server runs
//! with `--no-defaults` (or its equivalent), binds 127.0.0.1 on a port the kernel picked,
//! and keeps its data, socket, pid and logs under one temp dir per test process.
//!
//! Lifetimes:
//! - [`MariaDb::shared`] and [`Redis::shared`] start once per test binary, at first use
//!   (`OnceLock`); [`MariaDb::start`], [`Redis::start`] and [`Nginx::start`] give a
//!   private instance, stopped when dropped.
//! - Nothing outlives the test process, even when a test panics or the process is
//!   killed: every child gets `PR_SET_PDEATHSIG = SIGKILL`, set in the child between fork
//!   and exec. The kernel sends it when the *thread* that forked exits, so all children
//!   are forked by one spawner thread that lives as long as the process. On a normal exit
//!   (libtest exits through `exit()`, also after failed tests) an `atexit` hook kills the
//!   children still running and removes the temp dir; a temp dir left by a process that
//!   was killed outright is removed by the next test process (the dir is named after its
//!   PID, and that PID is gone).
//!
//! A binary that is missing is a panic with what to install, never a silent skip.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use mysql::prelude::Queryable;

/// How long a service may take to accept connections after it was started.
const START_WAIT: Duration = Duration::from_secs(60);
/// How long a stopped service may take to exit after SIGTERM before it gets SIGKILL.
const STOP_WAIT: Duration = Duration::from_secs(20);
/// Tries at starting a service, each on a new free port (another process may take the
/// port between our probe and the server's bind).
const START_TRIES: usize = 3;

/// What `./autobuild.sh test` installs, for the panic messages.
const INSTALL_HINT: &str = "Debian/Ubuntu: apt-get install mariadb-server redis-server nginx-light \
     libnginx-mod-stream (./autobuild.sh test does it when run as root)";

// ---------------------------------------------------------------------------------
// The process's temp root, children, and cleanup at exit.

/// Children to kill at exit, by PID.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// This process's temp root, created (and the cleanup hook registered) at first use.
fn root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        remove_stale_roots();
        let dir = std::env::temp_dir().join(format!("{ROOT_PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        // SAFETY: registers a plain `extern "C" fn` with no arguments.
        if unsafe { libc::atexit(at_exit) } != 0 {
            eprintln!("services: atexit failed; children still die with the process");
        }
        dir
    })
}

const ROOT_PREFIX: &str = "chat-svc-";

/// A fresh directory under this process's temp root.
pub fn scratch_dir(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = root().join(format!("{tag}-{}", N.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// Removes temp roots of test processes that no longer exist.
fn remove_stale_roots() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(ROOT_PREFIX)).and_then(|p| p.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks whether the process exists.
        let gone =
            unsafe { libc::kill(pid, 0) } != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

extern "C" fn at_exit() {
    // The data is throwaway: SIGKILL, no graceful shutdown, then remove the files.
    let pids = match CHILDREN.try_lock() {
        Ok(mut pids) => std::mem::take(&mut *pids),
        Err(_) => return,
    };
    for pid in pids {
        let Ok(pid) = i32::try_from(pid) else { continue };
        // SAFETY: our own children, by PID; waitpid reaps them so their files are closed.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }
    if let Some(root) = std::env::temp_dir().join(format!("{ROOT_PREFIX}{}", std::process::id())).to_str() {
        let _ = std::fs::remove_dir_all(root);
    }
}

type SpawnJob = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `cmd` from the spawner thread, so the child's parent-death signal fires when
/// this process ends and not when the calling test's thread does; the child is killed
/// at exit too.
fn spawn(mut cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("service-spawner".into())
            .spawn(move || {
                // Lives as long as the process: the sender is in a static.
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the service spawner thread");
        Mutex::new(tx)
    });
    let parent = std::process::id();
    // SAFETY: only async-signal-safe calls between fork and exec, no allocation.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the prctl: then nobody would kill us.
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner.lock().unwrap_or_else(|p| p.into_inner()).send((cmd, tx)).expect("spawner thread gone");
    let child = rx.recv().expect("spawner thread gone")?;
    CHILDREN.lock().unwrap_or_else(|p| p.into_inner()).push(child.id());
    Ok(child)
}

fn forget_child(pid: u32) {
    CHILDREN.lock().unwrap_or_else(|p| p.into_inner()).retain(|&p| p != pid);
}

/// SIGTERM, then SIGKILL if it has not exited within [`STOP_WAIT`]; waits for the exit.
fn stop_child(child: &mut Child) {
    let pid = child.id();
    if let Ok(raw) = i32::try_from(pid) {
        // SAFETY: our own child, not yet reaped (we hold its `Child`).
        unsafe { libc::kill(raw, libc::SIGTERM) };
    }
    let deadline = Instant::now() + STOP_WAIT;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => break,
            Ok(None) if Instant::now() >= deadline => {
                eprintln!("services: pid {pid} ignored SIGTERM for {STOP_WAIT:?}; SIGKILL");
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    forget_child(pid);
}

fn kill_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
    forget_child(child.id());
}

/// A port that was free a moment ago: bind 127.0.0.1:0, read the port, close.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("bind 127.0.0.1:0")
}

/// The first of `names` found on PATH or in the sbin directories (often not on a
/// non-root PATH); panics with what to install when there is none.
pub fn find_binary(names: &[&str], package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin", "/usr/local/bin"].map(PathBuf::from))
        .collect();
    for name in names {
        for dir in &dirs {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!("{} not found (needs {package}); {INSTALL_HINT}", names.join(" or "))
}

fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn read_log(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(30).collect();
    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
}

/// Polls `ready` until it holds; panics with `log` if `child` exits or time runs out.
/// Returns false (instead of panicking) when the child exited and `retry` says so.
fn wait_ready(
    what: &str,
    child: &mut Child,
    log: &Path,
    mut ready: impl FnMut() -> bool,
    retry: impl Fn(&str) -> bool,
) -> bool {
    let deadline = Instant::now() + START_WAIT;
    loop {
        if ready() {
            return true;
        }
        if let Ok(Some(status)) = child.try_wait() {
            forget_child(child.id());
            let text = read_log(log);
            if retry(&text) {
                return false;
            }
            panic!("{what} exited with {status} before it was ready; {}:\n{text}", log.display());
        }
        if Instant::now() >= deadline {
            kill_child(child);
            panic!("{what} was not ready within {START_WAIT:?}; {}:\n{}", log.display(), read_log(log));
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

// ---------------------------------------------------------------------------------
// MariaDB.

/// The account the tests and the servers use; it may create databases.
pub const DB_USER: &str = "chat";
pub const DB_PASSWORD: &str = "chat-test-pw";

/// A private MariaDB server.
pub struct MariaDb {
    pub port: u16,
    dir: PathBuf,
    child: Mutex<Option<Child>>,
}

impl MariaDb {
    /// The instance this test binary shares, started at first use. Tests on it use
    /// databases of their own ([`MariaDb::create_database`]).
    pub fn shared() -> &'static MariaDb {
        static SHARED: OnceLock<MariaDb> = OnceLock::new();
        SHARED.get_or_init(|| MariaDb::start("mariadb-shared"))
    }

    /// A private instance, e.g. for a test that stops it; stopped and removed on drop.
    pub fn start(tag: &str) -> MariaDb {
        let started = Instant::now();
        let dir = scratch_dir(tag);
        let copy = Command::new("cp").arg("-a").arg(template_datadir()).arg(dir.join("data")).status().expect("run cp");
        assert!(copy.success(), "copy the MariaDB template datadir");
        std::fs::create_dir_all(dir.join("tmp")).expect("create tmp dir");
        let init = format!(
            "CREATE USER IF NOT EXISTS '{DB_USER}'@'127.0.0.1' IDENTIFIED BY '{DB_PASSWORD}';\n\
             GRANT ALL PRIVILEGES ON *.* TO '{DB_USER}'@'127.0.0.1';\n"
        );
        std::fs::write(dir.join("init.sql"), init).expect("write init.sql");
        for _ in 0..START_TRIES {
            let port = free_port();
            if let Some(child) = launch_mariadb(&dir, port) {
                eprintln!("services: MariaDB on 127.0.0.1:{port} ready in {:?}", started.elapsed());
                return MariaDb { port, dir, child: Mutex::new(Some(child)) };
            }
        }
        panic!("MariaDB did not start in {START_TRIES} tries; {}", dir.join("error.log").display())
    }
}

/// Starts mariadbd on `port` with the data and files in `dir`; `None` when the port
/// was taken.
fn launch_mariadb(dir: &Path, port: u16) -> Option<Child> {
    let mut cmd = Command::new(find_binary(&["mariadbd", "mysqld"], "mariadb-server"));
    // --no-defaults must come first: no /etc/mysql config is read.
    cmd.arg("--no-defaults");
    if is_root() {
        cmd.arg("--user=root");
    }
    let path = |name: &str| dir.join(name).display().to_string();
    cmd.arg(format!("--datadir={}", path("data")))
        .arg(format!("--port={port}"))
        .arg("--bind-address=127.0.0.1")
        .arg(format!("--socket={}", path("mysql.sock")))
        .arg(format!("--pid-file={}", path("mariadbd.pid")))
        .arg(format!("--log-error={}", path("error.log")))
        .arg(format!("--tmpdir={}", path("tmp")))
        .arg(format!("--init-file={}", path("init.sql")))
        .args(MARIADB_SMALL)
        .arg("--max-connections=1000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = spawn(cmd).unwrap_or_else(|e| panic!("spawn mariadbd: {e}"));
    let ready = wait_ready(
        "MariaDB",
        &mut child,
        &dir.join("error.log"),
        || connect_admin(port).is_ok(),
        |log| log.contains("Address already in use") || log.contains("Do you already have another"),
    );
    ready.then_some(child)
}

/// A connection to the MariaDB on `port` as [`DB_USER`], with no default database.
fn connect_admin(port: u16) -> mysql::Result<mysql::Conn> {
    let opts = mysql::OptsBuilder::new()
        .ip_or_hostname(Some("127.0.0.1"))
        .tcp_port(port)
        .user(Some(DB_USER))
        .pass(Some(DB_PASSWORD))
        .prefer_socket(false)
        .tcp_connect_timeout(Some(Duration::from_secs(2)))
        .read_timeout(Some(Duration::from_secs(10)));
    mysql::Conn::new(opts)
}

/// A connection to the database a `mysql://` URL names, over TCP as the URL says.
pub fn connect(url: &str) -> mysql::Conn {
    let opts = mysql::Opts::from_url(url).unwrap_or_else(|e| panic!("bad URL {url}: {e}"));
    let opts = mysql::OptsBuilder::from_opts(opts).prefer_socket(false).read_timeout(Some(Duration::from_secs(10)));
    mysql::Conn::new(opts).unwrap_or_else(|e| panic!("connect to {url}: {e}"))
}

impl MariaDb {
    /// A connection as [`DB_USER`], with no default database.
    pub fn admin(&self) -> mysql::Conn {
        connect_admin(self.port).unwrap_or_else(|e| panic!("connect to MariaDB on {}: {e}", self.port))
    }

    /// The `--db` URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!("mysql://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a fresh, empty database (`chat_<n>`) and returns its URL.
    pub fn create_database(&self) -> String {
        static N: AtomicU64 = AtomicU64::new(0);
        let name = format!("chat_{}", N.fetch_add(1, Ordering::Relaxed));
        // A generated identifier (identifiers cannot be bound parameters).
        self.admin()
            .query_drop(format!("CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        self.url(&name)
    }

    /// The PID of mariadbd while it runs (e.g. to SIGSTOP it).
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(Child::id)
    }

    /// SIGTERM, waits for the exit (SIGKILL after a bound). The data stays.
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() {
            stop_child(&mut child);
        }
    }

    /// Starts the server again, on the same port and data; waits until it is ready.
    pub fn restart(&self) {
        let mut slot = self.child.lock().unwrap_or_else(|p| p.into_inner());
        assert!(slot.is_none(), "MariaDB is running");
        *slot = Some(launch_mariadb(&self.dir, self.port).unwrap_or_else(|| panic!("port {} was taken", self.port)));
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            kill_child(&mut child);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Small and fast: a throwaway server for tests, not durable against power loss.
const MARIADB_SMALL: &[&str] = &[
    "--skip-name-resolve",
    "--skip-log-bin",
    "--innodb-buffer-pool-size=16M",
    "--innodb-log-file-size=8M",
    "--innodb-flush-log-at-trx-commit=2",
    "--innodb-doublewrite=0",
    "--innodb-use-native-aio=0",
    "--performance-schema=OFF",
];

/// A datadir made by `mariadb-install-db` once per test process; instances copy it,
/// which is much faster than installing each.
fn template_datadir() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let started = Instant::now();
        let dir = scratch_dir("mariadb-template");
        let data = dir.join("data");
        let mut cmd = Command::new(find_binary(&["mariadb-install-db", "mysql_install_db"], "mariadb-server"));
        cmd.arg("--no-defaults");
        if is_root() {
            cmd.arg("--user=root");
        }
        let out = cmd
            .arg(format!("--datadir={}", data.display()))
            .arg("--auth-root-authentication-method=normal")
            .arg("--skip-test-db")
            .args(MARIADB_SMALL)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run mariadb-install-db: {e}"));
        assert!(
            out.status.success(),
            "mariadb-install-db failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("services: MariaDB datadir installed in {:?}", started.elapsed());
        data
    })
}

// ---------------------------------------------------------------------------------
// Redis.

/// A private Redis server: no persistence, loopback only.
pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    child: Mutex<Option<Child>>,
}

impl Redis {
    /// The instance this test binary shares, started at first use.
    pub fn shared() -> &'static Redis {
        static SHARED: OnceLock<Redis> = OnceLock::new();
        SHARED.get_or_init(Redis::start)
    }

    /// A private instance; stopped and removed on drop.
    pub fn start() -> Redis {
        let dir = scratch_dir("redis");
        for _ in 0..START_TRIES {
            let port = free_port();
            if let Some(child) = launch_redis(&dir, port) {
                return Redis { port, dir, child: Mutex::new(Some(child)) };
            }
        }
        panic!("Redis did not start in {START_TRIES} tries")
    }
}

/// Starts redis-server on `port` in `dir`; `None` when the port was taken.
fn launch_redis(dir: &Path, port: u16) -> Option<Child> {
    let log = dir.join("redis.log");
    let mut cmd = Command::new(find_binary(&["redis-server"], "redis-server"));
    cmd.arg("--port")
        .arg(port.to_string())
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = spawn(cmd).unwrap_or_else(|e| panic!("spawn redis-server: {e}"));
    let ready =
        wait_ready("Redis", &mut child, &log, || redis_ping(port), |log| log.contains("Address already in use"));
    ready.then_some(child)
}

impl Redis {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The URL a server's `--redis` takes.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGTERM, waits for the exit (SIGKILL after a bound).
    pub fn stop(&self) {
        if let Some(mut child) = self.child.lock().unwrap_or_else(|p| p.into_inner()).take() {
            stop_child(&mut child);
        }
    }

    /// Starts it again on the same port (empty: nothing is persisted).
    pub fn restart(&self) {
        let mut slot = self.child.lock().unwrap_or_else(|p| p.into_inner());
        assert!(slot.is_none(), "Redis is running");
        *slot = Some(launch_redis(&self.dir, self.port).unwrap_or_else(|| panic!("port {} was taken", self.port)));
    }

    /// Sends `sig` to the running server: SIGSTOP stalls it with its connections open
    /// (no FIN, no RST), SIGCONT resumes it.
    pub fn signal(&self, sig: libc::c_int) {
        let slot = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let pid = slot.as_ref().map(Child::id).expect("Redis is running");
        // SAFETY: our own child, not yet reaped (we hold its `Child`).
        assert_eq!(unsafe { libc::kill(i32::try_from(pid).expect("pid"), sig) }, 0, "kill -{sig} {pid}");
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            kill_child(&mut child);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether a Redis server answers PING on `port`.
pub fn redis_ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_millis(500))
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 7];
    s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
}

// ---------------------------------------------------------------------------------
// nginx (stream proxy).

/// A private nginx, one process (`master_process off`) in the foreground, with the
/// stream module: a TCP load balancer in front of chat servers.
pub struct Nginx {
    /// The port the config's `server` listens on.
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Nginx {
    /// Starts nginx with `stream(port)` as the body of its `stream {}` block, where
    /// `port` is a free port the body must listen on (`listen 127.0.0.1:{port};`).
    /// Returns once that port accepts connections.
    pub fn start(stream: impl Fn(u16) -> String) -> Nginx {
        let dir = scratch_dir("nginx");
        let nginx = find_binary(&["nginx"], "nginx-light and libnginx-mod-stream");
        let load_module = stream_module_directive(&nginx);
        let log = dir.join("error.log");
        for _ in 0..START_TRIES {
            let port = free_port();
            let conf = format!(
                "{load_module}\
                 master_process off;\n\
                 pid {pid};\n\
                 error_log {log} info;\n\
                 worker_rlimit_nofile 8192;\n\
                 events {{ worker_connections 4096; }}\n\
                 stream {{\n{body}\n}}\n",
                pid = dir.join("nginx.pid").display(),
                log = log.display(),
                body = stream(port),
            );
            let conf_path = dir.join("nginx.conf");
            std::fs::write(&conf_path, conf).expect("write nginx.conf");
            let mut cmd = Command::new(&nginx);
            // -e: the error log before the config is read (else the compiled-in
            // /var/log/nginx/error.log).
            cmd.arg("-p")
                .arg(&dir)
                .arg("-e")
                .arg(&log)
                .arg("-c")
                .arg(&conf_path)
                .args(["-g", "daemon off;"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let mut child = spawn(cmd).unwrap_or_else(|e| panic!("spawn nginx: {e}"));
            let accepts = || TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port))).is_ok();
            if wait_ready("nginx", &mut child, &log, accepts, |log| log.contains("Address already in use")) {
                return Nginx { port, dir, child: Some(child) };
            }
        }
        panic!("nginx did not start in {START_TRIES} tries")
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    /// SIGTERM, waits for the exit (SIGKILL after a bound).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child);
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_child(&mut child);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `load_module ...;` when this nginx has the stream module as a dynamic module, `""`
/// when it is built in; panics when it has none.
fn stream_module_directive(nginx: &Path) -> String {
    let out = Command::new(nginx).arg("-V").output().unwrap_or_else(|e| panic!("run {} -V: {e}", nginx.display()));
    // nginx -V writes to stderr.
    let info = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let flags: Vec<&str> = info.split_whitespace().collect();
    if flags.contains(&"--with-stream") {
        return String::new();
    }
    if !flags.contains(&"--with-stream=dynamic") {
        panic!("{} has no stream module; {INSTALL_HINT}", nginx.display());
    }
    let mut dirs: Vec<PathBuf> =
        flags.iter().filter_map(|f| f.strip_prefix("--modules-path=")).map(PathBuf::from).collect();
    dirs.extend(
        ["/usr/lib/nginx/modules", "/usr/lib64/nginx/modules", "/usr/share/nginx/modules", "/usr/local/nginx/modules"]
            .map(PathBuf::from),
    );
    match dirs.iter().map(|d| d.join("ngx_stream_module.so")).find(|m| m.is_file()) {
        Some(module) => format!("load_module {};\n", module.display()),
        None => panic!("ngx_stream_module.so not found (needs libnginx-mod-stream); {INSTALL_HINT}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Redis answers, nginx proxies to it, and a restarted Redis answers on its port.
    #[test]
    fn redis_and_nginx_stream_proxy_start_and_stop() {
        let redis = Redis::start();
        assert!(redis_ping(redis.port));
        let target = redis.port;
        let mut nginx =
            Nginx::start(|port| format!("    server {{ listen 127.0.0.1:{port}; proxy_pass 127.0.0.1:{target}; }}"));
        assert!(redis_ping(nginx.port), "no PONG through nginx: {}", nginx.log());
        redis.stop();
        assert!(!redis_ping(redis.port));
        redis.restart();
        assert!(redis_ping(nginx.port));
        nginx.stop();
        assert!(!redis_ping(nginx.port));
        assert!(Redis::shared().port != 0 && redis_ping(Redis::shared().port));
    }
}
