//! `TcpServer`: an acceptor on the caller's thread and N event-loop threads, as muduo's
//! `TcpServer` with its `EventLoopThreadPool`.
//!
//! ```text
//! let server = TcpServer::bind(addr, opts)?;   // sockets and loops, no threads yet
//! let pool = server.pool();                     // hand to the upper layer
//! let stop = server.shutdown_handle();          // raise from a signal thread or a test
//! let running = server.start(handler)?;         // loop threads up
//! running.accept_until_stopped();               // this thread accepts until `stop`
//! running.stop_loops();                         // flush, close all, join
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use mio::Waker;

use super::acceptor::{Acceptor, STOP};
use super::event_loop::EventLoop;
use super::loop_pool::{LoopPool, Task};
use super::Handler;

#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Event-loop threads.
    pub threads: usize,
    /// Connections open at once; past it new ones are closed on accept.
    pub max_conns: usize,
    /// TCP keepalive on every connection.
    pub keepalive: bool,
}

/// Raises the stop flag of a server. Safe to call from any thread, any number of times.
#[derive(Clone)]
pub struct ShutdownHandle {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl ShutdownHandle {
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::Release);
        if let Err(e) = self.waker.wake() {
            log::error!("cannot wake the acceptor: {e}");
        }
    }
}

pub struct TcpServer<H: Handler> {
    acceptor: Acceptor,
    loops: Vec<EventLoop<H>>,
    pool: LoopPool<H::Context>,
    shutdown: ShutdownHandle,
    local_addr: SocketAddr,
}

impl<H: Handler> TcpServer<H> {
    /// Takes a bound listener (std, so tests may bind port 0 first).
    pub fn new(listener: std::net::TcpListener, opts: &ServerOptions) -> io::Result<TcpServer<H>> {
        listener.set_nonblocking(true)?;
        // Accepted sockets inherit these from the listener (Linux copies the socket's
        // options into each connection it accepts), which saves two syscalls each.
        set_flag(&listener, libc::IPPROTO_TCP, libc::TCP_NODELAY)?;
        if opts.keepalive {
            // A peer that vanished without a FIN is noticed.
            set_flag(&listener, libc::SOL_SOCKET, libc::SO_KEEPALIVE)?;
        }
        let local_addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let live = Arc::new(AtomicUsize::new(0));
        let acceptor = Acceptor::new(
            mio::net::TcpListener::from_std(listener),
            Arc::clone(&stop),
            Arc::clone(&live),
            opts.max_conns,
        )?;
        let waker = Arc::new(Waker::new(acceptor.poll.registry(), STOP)?);
        let mut loops = Vec::new();
        let mut handles = Vec::new();
        for i in 0..opts.threads.max(1) {
            let (el, handle) = EventLoop::new(i as u32, Arc::clone(&live))?;
            loops.push(el);
            handles.push(handle);
        }
        Ok(TcpServer {
            acceptor,
            loops,
            pool: LoopPool { loops: handles.into() },
            shutdown: ShutdownHandle { stop, waker },
            local_addr,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn pool(&self) -> LoopPool<H::Context> {
        self.pool.clone()
    }

    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Starts the event-loop threads.
    pub fn start(self, handler: Arc<H>) -> io::Result<RunningServer<H>> {
        let mut threads = Vec::new();
        for (i, el) in self.loops.into_iter().enumerate() {
            let handler = Arc::clone(&handler);
            threads.push(std::thread::Builder::new().name(format!("loop-{i}")).spawn(move || el.run(&handler))?);
        }
        Ok(RunningServer { acceptor: Some(self.acceptor), pool: self.pool, threads, _shutdown: self.shutdown })
    }
}

pub struct RunningServer<H: Handler> {
    acceptor: Option<Acceptor>,
    pool: LoopPool<H::Context>,
    threads: Vec<JoinHandle<()>>,
    /// Keeps the acceptor's waker open while it runs: if the last handle closed it
    /// right after a wake-up, epoll would drop the pending event with the fd.
    _shutdown: ShutdownHandle,
}

impl<H: Handler> RunningServer<H> {
    /// Accepts on this thread until the shutdown handle is raised; then closes the
    /// listening socket, so new connections are refused.
    pub fn accept_until_stopped(&mut self) {
        if let Some(mut acceptor) = self.acceptor.take() {
            acceptor.run(&self.pool.loops);
        }
    }

    /// Each loop flushes what it can, closes its connections (each gets its
    /// `on_connection` down callback) and exits; returns when all have.
    pub fn stop_loops(self) {
        for handle in self.pool.loops.iter() {
            handle.push(Task::Shutdown);
        }
        for t in self.threads {
            if t.join().is_err() {
                log::error!("an event loop panicked");
            }
        }
    }
}

/// Turns on a boolean socket option.
fn set_flag(socket: &impl std::os::fd::AsRawFd, level: libc::c_int, name: libc::c_int) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: a valid socket fd and a pointer to a c_int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            &on as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(socket: &impl std::os::fd::AsRawFd, level: libc::c_int, name: libc::c_int) -> bool {
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: a valid socket fd, and a c_int with its size for the answer.
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                level,
                name,
                &mut value as *mut libc::c_int as *mut libc::c_void,
                &mut len,
            )
        };
        assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        value != 0
    }

    #[test]
    fn accepted_sockets_inherit_nodelay_and_keepalive_from_the_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        set_flag(&listener, libc::IPPROTO_TCP, libc::TCP_NODELAY).unwrap();
        set_flag(&listener, libc::SOL_SOCKET, libc::SO_KEEPALIVE).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(flag(&accepted, libc::IPPROTO_TCP, libc::TCP_NODELAY));
        assert!(flag(&accepted, libc::SOL_SOCKET, libc::SO_KEEPALIVE));
    }
}
