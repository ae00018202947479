//! The listening socket and the process limits a server of many connections needs,
//! set up once at start by the thread that builds the server.
//!
//! std's `TcpListener::bind` listens with a backlog of 128: a burst of connections
//! past it has its SYNs dropped, and those clients retry only a second later. So the
//! listener is made here, through `socket2`, with the backlog asked for (by default the
//! kernel's own cap, `net.core.somaxconn`).

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// A socket listening on `addr` with room for `backlog` connections not yet accepted
/// (the kernel caps it at `net.core.somaxconn`). Like std's: close-on-exec, and
/// `SO_REUSEADDR`, so a restart need not wait for old connections' TIME_WAIT.
pub fn listen(addr: SocketAddr, backlog: i32) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket.into())
}

/// The kernel's cap on a listen backlog: `net.core.somaxconn`, or libc's `SOMAXCONN`
/// where /proc does not say.
pub fn somaxconn() -> i32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(libc::SOMAXCONN)
}

/// Raises this process's soft limit on open files to its hard limit (each connection
/// is a file descriptor) and returns the limit now in force.
pub fn raise_fd_limit() -> io::Result<libc::rlim_t> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the limits into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_max)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_listener_queues_the_backlog_asked_for() {
        // Nobody accepts: the kernel completes backlog + 1 connections and drops the
        // SYNs of the others (std's listener would complete all ten).
        let listener = listen("127.0.0.1:0".parse().unwrap(), 3).unwrap();
        let addr = listener.local_addr().unwrap().into();
        let clients: Vec<Socket> = (0..10)
            .map(|_| {
                let client = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
                client.set_nonblocking(true).unwrap();
                let _ = client.connect(&addr); // EINPROGRESS
                client
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(clients.iter().filter(|c| c.peer_addr().is_ok()).count(), 4);
    }

    #[test]
    fn limits_are_read_from_the_kernel() {
        assert!(somaxconn() >= 128, "{}", somaxconn());
        let raised = raise_fd_limit().unwrap();
        let mut now = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes the limits into the struct it is given.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) }, 0);
        assert_eq!((now.rlim_cur, now.rlim_max), (raised, raised));
    }
}
