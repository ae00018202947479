//! `Config`: the server's command line, validated once (clap).

use std::net::IpAddr;

use clap::Parser;

/// A cluster chat server speaking the seeds' JSON protocol.
#[derive(Debug, Clone, Parser)]
#[command(name = "ChatServer", version, about)]
pub struct Config {
    /// Address to listen on.
    #[arg(default_value = "127.0.0.1")]
    pub ip: IpAddr,
    /// Port to listen on (0 picks a free one).
    #[arg(default_value_t = 6000)]
    pub port: u16,
    /// Database: sqlite://PATH (embedded, the default), a bare path, or
    /// mysql://USER:PASS@HOST:PORT/DB (MariaDB or MySQL, shared by a cluster; the tables
    /// are created when missing).
    #[arg(long, env = "CHAT_DB", default_value = "sqlite://chat.db")]
    pub db: String,
    /// Redis that joins this server to a cluster: redis://HOST:PORT. Without it the
    /// server is alone: users elsewhere are unreachable, so everything not local is stored.
    #[arg(long, env = "CHAT_REDIS")]
    pub redis: Option<String>,
    /// Database connections open at most (mysql://) [default: workers + 2].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=4096))]
    pub db_pool: Option<u16>,
    /// Event-loop threads [default: one per core].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
    /// Worker threads for storage and password hashing [default: 4 per core, at least 8].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,
    /// Largest request frame in bytes; a larger one gets errno 413 and the connection closes.
    #[arg(long, default_value_t = 64 * 1024, value_parser = clap::value_parser!(u32).range(64..=(16 << 20)))]
    pub max_frame: u32,
    /// Unsent output in bytes past which a connection is closed as a slow reader.
    #[arg(long, default_value_t = 4 << 20, value_parser = clap::value_parser!(u64).range(4096..))]
    pub max_outbuf: u64,
    /// Requests per second per connection (burst of twice that); 0 turns the limit off.
    #[arg(long, default_value_t = 200)]
    pub rate_limit: u32,
    /// Seconds a connection may stay without logging in; 0 turns it off.
    #[arg(long, default_value_t = 30)]
    pub login_timeout: u64,
    /// Seconds a logged-in connection may stay silent; 0 (the default) turns it off.
    #[arg(long, default_value_t = 0)]
    pub idle_timeout: u64,
    /// v2 pushes one session may have unconfirmed (RECEIVED); past it, the session is
    /// closed as a slow reader and gets them again at its next login.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_unconfirmed: u64,
    /// Days of history kept: older messages are deleted (hourly). 0 keeps everything.
    #[arg(long, default_value_t = 0)]
    pub history_days: u64,
    /// Connections open at once; past it new ones are closed on accept.
    #[arg(long, default_value_t = 100_000)]
    pub max_conns: usize,
    /// Connections the kernel completes and queues until they are accepted; a burst
    /// past it is retried by its clients a second later [default: net.core.somaxconn,
    /// the kernel's cap].
    #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
    pub backlog: Option<i32>,
}

impl Config {
    pub fn threads(&self) -> usize {
        self.threads.map(usize::from).unwrap_or_else(cores)
    }

    pub fn workers(&self) -> usize {
        self.workers.map(usize::from).unwrap_or_else(|| (4 * cores()).max(8))
    }

    pub fn backlog(&self) -> i32 {
        self.backlog.unwrap_or_else(crate::net::somaxconn)
    }

    /// A worker holds at most one connection at a time, so with workers + 2 no worker
    /// waits for one, and shutdown's final stores find one free.
    pub fn db_pool(&self) -> usize {
        self.db_pool.map(usize::from).unwrap_or_else(|| self.workers() + 2)
    }

    /// Whether this server may mark every user of its database offline when it starts,
    /// because it is the only server on that database: nobody can be online before it
    /// serves, and marks left by a crash are stale. Not in a cluster (`--redis`): there
    /// servers share one MySQL database, and a starting server would mark the users of
    /// the servers already running offline.
    pub fn sole_server_on_db(&self) -> bool {
        self.redis.is_none()
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)
}
