//! `TcpServer`: an acceptor on the caller's thread and N event-loop threads, as muduo's
//! `TcpServer` with its `EventLoopThreadPool`.
//!
//! ```text
//! let listener = net::listen(addr, backlog)?;  // or any bound std listener
//! let server = TcpServer::new(listener, opts)?; // sockets and loops, no threads yet
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
use socket2::SockRef;

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
        let socket = SockRef::from(&listener);
        socket.set_tcp_nodelay(true)?;
        if opts.keepalive {
            // A peer that vanished without a FIN is noticed.
            socket.set_keepalive(true)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_sockets_inherit_nodelay_and_keepalive_from_the_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        SockRef::from(&listener).set_tcp_nodelay(true).unwrap();
        SockRef::from(&listener).set_keepalive(true).unwrap();
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(SockRef::from(&accepted).tcp_nodelay().unwrap());
        assert!(SockRef::from(&accepted).keepalive().unwrap());
    }
}
