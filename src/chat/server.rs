//! `ChatServer`: builds the service from a `Config` and runs it until shut down.
//!
//! Threads: the caller's thread accepts; `--threads` event loops do all socket I/O;
//! `--workers` workers do storage and hashing. Shutdown (SIGINT/SIGTERM, or
//! `ShutdownHandle::shutdown`): stop accepting, stop taking requests, let requests in
//! flight finish, flush and close every connection (each close is a LOGINOUT, and
//! what a connection never wrote stays in its inbox), then stop the workers.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use super::config::Config;
use super::frontend::{Frontend, Limits};
use super::hub::Hub;
use super::registry::Registry;
use super::remote::RemoteInbox;
use super::worker::Worker;
use super::worker_pool::WorkerPool;
use crate::bus::{Bus, LocalBus, RedisBus};
use crate::net::{self, ServerOptions, ShutdownHandle, TcpServer};
use crate::store::{self, LogWriter, Store};

/// How long shutdown waits for requests in flight, and for the final stores.
const DRAIN: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub enum Error {
    Io(String, std::io::Error),
    Store(store::StoreError),
    Bus(crate::bus::BusError),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io(what, e) => write!(f, "{what}: {e}"),
            Error::Store(e) => write!(f, "database: {e}"),
            Error::Bus(e) => write!(f, "redis: {e}"),
        }
    }
}

impl std::error::Error for Error {}

pub struct ChatServer {
    tcp: TcpServer<Frontend>,
    frontend: Arc<Frontend>,
    store: Arc<dyn Store>,
    inbox: Arc<RemoteInbox>,
}

impl ChatServer {
    /// Opens the store and listens on the address `config` names, with its backlog.
    pub fn bind(config: &Config) -> Result<ChatServer, Error> {
        let addr = SocketAddr::new(config.ip, config.port);
        let listener =
            net::listen(addr, config.backlog()).map_err(|e| Error::Io(format!("cannot listen on {addr}"), e))?;
        ChatServer::new(config, listener)
    }

    /// Builds the service on a bound listener (whose backlog is the caller's).
    pub fn new(config: &Config, listener: TcpListener) -> Result<ChatServer, Error> {
        let store = store::open_with_pool(&config.db, config.db_pool()).map_err(Error::Store)?;
        // A single server owns its database: nobody is online before it starts, and
        // "online" marks a crash left behind are stale. Not so when servers share one
        // MySQL database (a cluster): a starting server must not mark the users of the
        // servers already running offline, so it leaves the marks alone
        // (`Config::sole_server_on_db`, which cluster mode turns off).
        if config.sole_server_on_db() {
            store.set_all_offline().map_err(Error::Store)?;
        }
        let registry = Arc::new(Registry::default());
        let inbox = Arc::new(RemoteInbox::new());
        let bus: Arc<dyn Bus> = match &config.redis {
            Some(url) => Arc::new(RedisBus::connect(url, Arc::clone(&inbox) as _).map_err(Error::Bus)?),
            None => Arc::new(LocalBus),
        };
        if !config.sole_server_on_db() {
            clear_stale_online_marks(store.as_ref(), bus.as_ref());
        }
        let opts = ServerOptions { threads: config.threads(), max_conns: config.max_conns, keepalive: true };
        let tcp = TcpServer::new(listener, &opts).map_err(|e| Error::Io("cannot start the event loops".into(), e))?;
        let writer = Arc::new(
            LogWriter::new(Arc::clone(&store)).map_err(|e| Error::Io("cannot start the log writer".into(), e))?,
        );
        let hub = Arc::new(Hub {
            store: Arc::clone(&store),
            writer,
            bus,
            registry,
            loops: tcp.pool(),
            login_guard: Default::default(),
            workers: Default::default(),
        });
        let workers = WorkerPool::start(config.workers(), |_| {
            let mut worker = Worker::new(Arc::clone(&hub));
            move |job| worker.handle(job)
        })
        .map_err(|e| Error::Io("cannot start the workers".into(), e))?;
        inbox.attach(Some(workers.dispatcher()));
        *hub.workers.lock().unwrap_or_else(|p| p.into_inner()) = Some(workers.dispatcher());
        if config.history_days > 0 {
            expire_history(Arc::clone(&store), config.history_days)?;
        }
        let secs = |s: u64| (s > 0).then(|| Duration::from_secs(s));
        let limits = Limits {
            max_frame: config.max_frame as usize,
            max_outbuf: config.max_outbuf as usize,
            rate_limit: config.rate_limit,
            login_timeout: secs(config.login_timeout),
            idle_timeout: secs(config.idle_timeout),
            max_unconfirmed: usize::try_from(config.max_unconfirmed).unwrap_or(usize::MAX),
        };
        let frontend = Arc::new(Frontend::new(hub, workers, limits));
        Ok(ChatServer { tcp, frontend, store, inbox })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.tcp.local_addr()
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.tcp.shutdown_handle()
    }

    /// Serves until the shutdown handle is raised, then shuts down gracefully.
    pub fn run(self) -> Result<(), Error> {
        let ChatServer { tcp, frontend, store, inbox } = self;
        log::info!("ChatServer listening on {}", tcp.local_addr());
        let mut running =
            tcp.start(Arc::clone(&frontend)).map_err(|e| Error::Io("cannot start the event loops".into(), e))?;
        running.accept_until_stopped();
        log::info!("shutting down");
        frontend.stop_taking_requests();
        if !frontend.workers.wait_idle(DRAIN) {
            log::warn!("requests still in flight after {DRAIN:?}");
        }
        log::debug!("requests drained; closing connections");
        running.stop_loops();
        log::debug!("connections closed; storing what they left");
        if !frontend.workers.wait_idle(DRAIN) {
            log::warn!("closing work still queued after {DRAIN:?}");
        }
        let users = frontend.hub.registry.all_users();
        if !users.is_empty() {
            if let Err(e) = store.set_online(&users, false) {
                log::warn!("cannot mark {} users offline: {e}", users.len());
            }
        }
        inbox.attach(None);
        frontend.hub.workers.lock().unwrap_or_else(|p| p.into_inner()).take();
        frontend.hub.writer.stop();
        match Arc::try_unwrap(frontend) {
            Ok(frontend) => frontend.workers.stop(),
            Err(_) => log::warn!("workers left running at exit"),
        }
        log::info!("stopped");
        Ok(())
    }
}

/// A cluster node starting: users the database marks online but whom no server holds
/// (nobody has their presence) were left so by a crash; mark them offline. A user
/// logging in meanwhile holds presence before being marked online, so is left alone.
fn clear_stale_online_marks(store: &dyn Store, bus: &dyn Bus) {
    let marked = match store.online_users() {
        Ok(ids) => ids,
        Err(e) => return log::warn!("cannot read online marks: {e}"),
    };
    let stale: Vec<_> = marked.into_iter().filter(|u| matches!(bus.online_elsewhere(*u), Ok(false))).collect();
    if !stale.is_empty() {
        log::info!("marking {} users offline whom no server holds (left by a crash)", stale.len());
        if let Err(e) = store.set_online(&stale, false) {
            log::warn!("cannot clear stale online marks: {e}");
        }
    }
}

/// `--history-days`: a thread that deletes older messages now and every hour.
fn expire_history(store: Arc<dyn Store>, days: u64) -> Result<(), Error> {
    let keep = i64::try_from(days.saturating_mul(86_400)).unwrap_or(i64::MAX);
    std::thread::Builder::new()
        .name("expire".into())
        .spawn(move || loop {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            match store.expire(i64::try_from(now).unwrap_or(i64::MAX).saturating_sub(keep)) {
                Ok(0) => {}
                Ok(n) => log::info!("deleted {n} messages older than {days} days"),
                Err(e) => log::warn!("cannot delete old messages: {e}"),
            }
            std::thread::sleep(Duration::from_secs(3600));
        })
        .map(|_| ())
        .map_err(|e| Error::Io("cannot start the expiry thread".into(), e))
}

/// Runs the server `config` describes until SIGINT or SIGTERM.
pub fn run(config: &Config) -> Result<(), Error> {
    check_limits(config);
    // A panic caught in one request or connection is logged once, by its catcher.
    crate::panic_guard::install_hook();
    let server = ChatServer::bind(config)?;
    let stop = server.shutdown_handle();
    let mut signals = signal_hook::iterator::Signals::new([signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM])
        .map_err(|e| Error::Io("cannot handle signals".into(), e))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                log::info!("signal {sig} received");
                stop.shutdown();
            }
        })
        .map_err(|e| Error::Io("cannot start the signal thread".into(), e))?;
    server.run()
}

/// Raises the limit on open files as far as it goes and says what the host allows: a
/// limit below `--max-conns` caps the connections below it, and the kernel cuts a
/// backlog past `net.core.somaxconn` to it.
fn check_limits(config: &Config) {
    match net::raise_fd_limit() {
        Ok(files) => {
            log::info!("open files: up to {files}; listen backlog: {}", config.backlog());
            if usize::try_from(files).is_ok_and(|files| files < config.max_conns) {
                log::warn!(
                    "at most {files} open files, fewer than --max-conns {}: the server cannot hold more than \
                     about {files} connections. On a real host raise the limit on open files (`ulimit -n`, \
                     LimitNOFILE= under systemd) and net.core.somaxconn (sysctl) for bursts of connections",
                    config.max_conns
                );
            }
        }
        Err(e) => log::warn!("cannot read or raise the limit on open files: {e}"),
    }
    let somaxconn = net::somaxconn();
    if config.backlog() > somaxconn {
        log::warn!(
            "--backlog {} is cut to net.core.somaxconn {somaxconn} by the kernel; raise net.core.somaxconn (sysctl)",
            config.backlog()
        );
    }
}
