//! `Acceptor`: the main loop. Accepts until WouldBlock and deals sockets round-robin to
//! the event loops.
//!
//! Runs on the thread that calls `RunningServer::accept_until_stopped`. Per-connection accept errors
//! (the peer gave up, a reset) are skipped; running out of file descriptors backs off
//! instead of spinning; past `max_conns` a socket is accepted and closed at once.

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token};

use super::loop_pool::{LoopHandle, Task};

pub(crate) const LISTENER: Token = Token(0);
pub(crate) const STOP: Token = Token(1);
/// How long to stop accepting when the process is out of file descriptors.
const FD_BACKOFF: Duration = Duration::from_millis(100);

pub(crate) struct Acceptor {
    pub(crate) poll: Poll,
    pub(crate) listener: TcpListener,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) live: Arc<AtomicUsize>,
    pub(crate) max_conns: usize,
}

impl Acceptor {
    pub(crate) fn new(
        mut listener: TcpListener,
        stop: Arc<AtomicBool>,
        live: Arc<AtomicUsize>,
        max_conns: usize,
    ) -> io::Result<Acceptor> {
        let poll = Poll::new()?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Acceptor { poll, listener, stop, live, max_conns })
    }

    /// Accepts until the stop flag is raised.
    pub(crate) fn run<C>(&mut self, loops: &[LoopHandle<C>]) {
        let mut events = Events::with_capacity(64);
        let mut next = 0usize;
        let mut backoff_until: Option<Instant> = None;
        while !self.stop.load(Ordering::Acquire) {
            let timeout = backoff_until.map(|t| t.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("acceptor: poll failed: {e}");
                    return;
                }
            }
            if self.stop.load(Ordering::Acquire) {
                return;
            }
            if let Some(t) = backoff_until {
                if Instant::now() < t {
                    continue;
                }
                backoff_until = None;
            }
            // Accept until WouldBlock, whatever woke us: after a back-off no new edge comes.
            loop {
                match self.listener.accept() {
                    Ok((stream, peer)) => {
                        if self.live.load(Ordering::Acquire) >= self.max_conns {
                            log::warn!("{peer}: refused, {} connections open", self.max_conns);
                            drop(stream);
                            continue;
                        }
                        self.live.fetch_add(1, Ordering::AcqRel);
                        loops[next].push(Task::Register(stream, peer));
                        next = (next + 1) % loops.len();
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if is_out_of_fds(&e) => {
                        log::warn!("acceptor: {e}; pausing accepts for {FD_BACKOFF:?}");
                        backoff_until = Some(Instant::now() + FD_BACKOFF);
                        break;
                    }
                    Err(e) => log::debug!("acceptor: skipping a failed accept: {e}"),
                }
            }
        }
    }
}

fn is_out_of_fds(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM))
}
