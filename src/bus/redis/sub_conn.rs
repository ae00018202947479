//! `SubConn`: the subscribing connection, RESP2 over a `TcpStream` (see `resp`), and
//! `Target`, where it connects.
//!
//! Opened on the thread calling `RedisBus::connect` (the first one) or on the
//! `redis-sub` thread (reconnections), and used only by the `redis-sub` thread. Reads
//! block at most `TICK` (1 s), so an idle subscriber wakes up to check for shutdown,
//! queued requests and a dead connection; writes block at most 2 s.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use redis::ConnectionAddr;

use super::resp::{encode, parse, Frame};
use super::subscriber::Pending;
use super::{CONNECT_TIMEOUT, IO_TIMEOUT};
use crate::bus::BusError;

/// Read timeout of the subscribing connection: how often an idle subscriber wakes up to
/// check for shutdown, queued requests and a dead connection.
const TICK: Duration = Duration::from_secs(1);
/// No data this long after a PING means the subscribing connection is dead.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// Where and how the subscriber connects.
pub(super) struct Target {
    pub(super) addr: String,
    pub(super) port: u16,
    username: Option<String>,
    password: Option<String>,
}

impl Target {
    pub(super) fn from_info(info: &redis::ConnectionInfo) -> Result<Target, BusError> {
        let ConnectionAddr::Tcp(host, port) = info.addr() else {
            return Err(BusError("redis url: only plain TCP (redis://host:port) is supported".into()));
        };
        let settings = info.redis_settings();
        Ok(Target {
            addr: host.clone(),
            port: *port,
            username: settings.username().map(str::to_owned),
            password: settings.password().map(str::to_owned),
        })
    }
}

pub(super) struct SubConn {
    pub(super) stream: TcpStream,
    /// Bytes read and not yet parsed start at `start`.
    buf: Vec<u8>,
    start: usize,
    pub(super) pending: VecDeque<Pending>,
    last_rx: Instant,
    ping_sent: Option<Instant>,
}

impl SubConn {
    /// Connects (and authenticates, if the URL has a password).
    pub(super) fn open(target: &Target) -> io::Result<SubConn> {
        let addrs: Vec<SocketAddr> = (target.addr.as_str(), target.port).to_socket_addrs()?.collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        let mut stream = None;
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let stream = stream.ok_or(last)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(TICK))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let mut conn = SubConn {
            stream,
            buf: Vec::with_capacity(16 * 1024),
            start: 0,
            pending: VecDeque::new(),
            last_rx: Instant::now(),
            ping_sent: None,
        };
        if let Some(password) = &target.password {
            let mut out = Vec::new();
            match &target.username {
                Some(user) => encode(&mut out, &[b"AUTH", user.as_bytes(), password.as_bytes()]),
                None => encode(&mut out, &[b"AUTH", password.as_bytes()]),
            }
            conn.stream.write_all(&out)?;
            match conn.read_frame(IO_TIMEOUT)? {
                Frame::Simple(_) => {}
                Frame::Error(e) => {
                    return Err(io::Error::other(format!("AUTH: {}", String::from_utf8_lossy(&e))));
                }
                other => return Err(io::Error::other(format!("AUTH: unexpected reply {other:?}"))),
            }
        }
        Ok(conn)
    }

    /// Reads one whole frame, waiting at most `limit` (used before subscribing only).
    fn read_frame(&mut self, limit: Duration) -> io::Result<Frame> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(frame) = self.next_frame()? {
                return Ok(frame);
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "no reply from redis"));
            }
            match self.fill() {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed by redis")),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads what the socket has (blocking at most `TICK`).
    pub(super) fn fill(&mut self) -> io::Result<usize> {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk)?;
        if n > 0 {
            self.buf.extend_from_slice(&chunk[..n]);
            self.last_rx = Instant::now();
            self.ping_sent = None;
        }
        Ok(n)
    }

    /// The next whole frame in the buffer, if any.
    pub(super) fn next_frame(&mut self) -> io::Result<Option<Frame>> {
        match parse(&self.buf, self.start, 0)? {
            Some((frame, next)) => {
                self.start = next;
                Ok(Some(frame))
            }
            None => Ok(None),
        }
    }

    /// On a read timeout: PINGs an idle connection; fails one that stayed silent after.
    pub(super) fn idle_check(&mut self) -> io::Result<()> {
        match self.ping_sent {
            Some(at) if at.elapsed() >= PING_TIMEOUT => {
                Err(io::Error::new(io::ErrorKind::TimedOut, "no answer to PING"))
            }
            Some(_) => Ok(()),
            None if self.last_rx.elapsed() >= TICK => {
                let mut out = Vec::new();
                encode(&mut out, &[b"PING"]);
                self.stream.write_all(&out)?;
                self.ping_sent = Some(Instant::now());
                Ok(())
            }
            None => Ok(()),
        }
    }
}
