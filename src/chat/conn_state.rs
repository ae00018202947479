//! `ConnState`: what the chat layer keeps per connection on its loop thread.
//!
//! Not thread safe, but in loop: it lives in `Connection::ctx` and only the owning loop
//! touches it. Workers change it through closures they queue on that loop.
//!
//! Backpressure: a connection has at most [`MAX_IN_FLIGHT`] requests at workers. At the
//! cap the frontend pauses reading it; replies resume it once no more than
//! [`RESUME_IN_FLIGHT`] are left (`answered`), so a client that pipelines without
//! reading is held back by its own TCP window, not by the server's memory.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use super::registry::Push;
use super::worker::Job;
use crate::net::Connection;
use crate::proto::codec::FrameDecoder;
use crate::store::{LogWriter, Mid, UserId};

/// Requests of one connection at workers at most; then it is not read until replies
/// drain.
pub const MAX_IN_FLIGHT: u32 = 64;
/// Requests in flight at which a connection paused at the cap is read again.
pub const RESUME_IN_FLIGHT: u32 = MAX_IN_FLIGHT / 2;

/// Pushes (or a LOGIN_ACK's offline messages) for a v1 session, handed to a connection
/// whose socket has not taken them yet. Once it has, they are delivered: settled (taken
/// out of the user's inbox). If the connection closes first they stay in the inbox.
struct Handed {
    /// Stream offset just past the frame: written once `conn.written() >= end`.
    end: u64,
    user: UserId,
    mids: Vec<Mid>,
}

pub struct ConnState {
    pub decoder: FrameDecoder,
    /// The logged-in user, from the moment its LOGIN_ACK was queued, and its name.
    pub user: Option<UserId>,
    pub name: Arc<str>,
    /// Requests handed to a worker and not answered yet (at most `MAX_IN_FLIGHT`).
    /// While non-zero, replies made on the loop go through the worker too, so replies
    /// keep request order.
    pub in_flight: u32,
    /// A job the worker's full queue refused: it goes first once there is room, and
    /// the connection is not read until then.
    pub stalled: Option<Job>,
    /// Waiting to hear that the worker's queue has room.
    pub awaiting_room: bool,
    /// A fatal frame error was answered; further input is discarded.
    pub failed: bool,
    /// The user's inbox is being pumped: ask for the next batch once output drains.
    pub want_pump: bool,
    pub bucket: TokenBucket,
    /// The session is v2: pushes wait in `unconfirmed` until RECEIVED names them.
    pub v2: bool,
    /// Requests of this connection whose messages are at the log writer, submitted from
    /// the loop (see `message::chat_now`); part of `in_flight`.
    pub at_writer: u32,
    /// Unsent output past which the connection is cut off as a slow reader.
    max_outbuf: usize,
    /// v2 pushes written and not confirmed; past this many, a slow reader.
    max_unconfirmed: usize,
    handed: VecDeque<Handed>,
    unconfirmed: HashSet<Mid>,
    writer: Arc<LogWriter>,
}

impl ConnState {
    pub fn new(
        max_frame: usize,
        max_outbuf: usize,
        rate: u32,
        max_unconfirmed: usize,
        writer: Arc<LogWriter>,
    ) -> ConnState {
        ConnState {
            decoder: FrameDecoder::new(max_frame),
            user: None,
            name: Arc::from(""),
            in_flight: 0,
            stalled: None,
            awaiting_room: false,
            failed: false,
            want_pump: false,
            bucket: TokenBucket::new(rate),
            v2: false,
            at_writer: 0,
            max_outbuf,
            max_unconfirmed,
            handed: VecDeque::new(),
            unconfirmed: HashSet::new(),
            writer,
        }
    }

    /// RECEIVED: these pushes reached the v2 client; they leave its inbox.
    pub fn confirm(&mut self, mids: Vec<Mid>) {
        let Some(user) = self.user else { return };
        for mid in &mids {
            self.unconfirmed.remove(mid);
        }
        self.writer.settle(user, mids);
    }

    /// The session ends (LOGINOUT, or the connection closes): what the socket took is
    /// delivered (v1); the rest, and whatever a v2 client did not confirm, stays owed.
    pub fn end_session(&mut self, written: u64) {
        settle_written(self, written);
        self.unconfirmed = HashSet::new();
        self.v2 = false;
        self.user = None;
    }
}

/// A request's reply is being queued on the loop (from a worker's closure): one fewer
/// in flight, and reading resumes once few enough are left.
pub fn answered(conn: &mut Connection<ConnState>) {
    conn.ctx.in_flight = conn.ctx.in_flight.saturating_sub(1);
    if conn.ctx.in_flight <= RESUME_IN_FLIGHT {
        conn.resume_reading();
    }
}

/// Writes one frame (body and terminator) in a single send.
pub fn send_frame(conn: &mut Connection<ConnState>, body: &[u8]) {
    let terminator = [conn.ctx.decoder.terminator()];
    conn.send_parts(&[body, &terminator]);
    cut_off_slow_reader(conn);
}

/// Writes frames in a single send.
pub fn send_frames<'a>(conn: &mut Connection<ConnState>, bodies: impl IntoIterator<Item = &'a [u8]>) {
    let terminator = [conn.ctx.decoder.terminator()];
    let mut parts = Vec::new();
    for body in bodies {
        parts.extend([body, &terminator[..]]);
    }
    conn.send_parts(&parts);
    cut_off_slow_reader(conn);
}

/// A connection whose unsent output passes the limit is cut off: it is not reading.
fn cut_off_slow_reader(conn: &mut Connection<ConnState>) {
    if conn.unsent() > conn.ctx.max_outbuf {
        log::info!("{}: {} bytes unsent, cutting off a slow reader", conn.peer(), conn.unsent());
        conn.abort();
    }
}

/// Writes a frame that carries messages for `user` (a LOGIN_ACK with these mids),
/// tracking them until delivered.
pub fn send_tracked(conn: &mut Connection<ConnState>, body: &[u8], user: UserId, mids: Vec<Mid>) {
    send_frame(conn, body);
    track(conn, user, mids);
}

/// Writes pushes for `user`, each its own frame, in a single send, and tracks them until
/// delivered. A v2 session is not pushed a message it has not confirmed yet again.
pub fn send_pushes(conn: &mut Connection<ConnState>, user: UserId, mut pushes: Vec<Push>) {
    if conn.ctx.v2 {
        pushes.retain(|p| !conn.ctx.unconfirmed.contains(&p.mid));
    }
    send_frames(conn, pushes.iter().map(|p| p.text.as_bytes()));
    track(conn, user, pushes.into_iter().map(|p| p.mid).collect());
}

/// Tracks `mids`, just written for `user`: a v2 session's until confirmed, a v1
/// session's until the socket has taken them, when they are settled.
fn track(conn: &mut Connection<ConnState>, user: UserId, mids: Vec<Mid>) {
    let (written, queued, unsent) = (conn.written(), conn.queued(), conn.unsent());
    if conn.ctx.v2 && conn.ctx.user == Some(user) {
        conn.ctx.unconfirmed.extend(mids);
        let n = conn.ctx.unconfirmed.len();
        if n > conn.ctx.max_unconfirmed {
            log::info!("{}: {n} pushes unconfirmed, cutting off a slow reader", conn.peer());
            conn.abort();
        }
        return;
    }
    let ctx = &mut conn.ctx;
    if !mids.is_empty() {
        ctx.handed.push_back(Handed { end: queued, user, mids });
    }
    if unsent == 0 || ctx.handed.front().is_some_and(|h| h.end <= written) {
        settle_written(ctx, written);
    }
}

/// Settles what the socket has taken (see `Handed`). Loop thread; also on write
/// progress and ticks.
pub fn settle_written(ctx: &mut ConnState, written: u64) {
    while ctx.handed.front().is_some_and(|h| h.end <= written) {
        let Some(first) = ctx.handed.pop_front() else { break };
        let (user, mut mids) = (first.user, first.mids);
        while let Some(h) = ctx.handed.front().filter(|h| h.end <= written && h.user == user) {
            mids.extend_from_slice(&h.mids);
            ctx.handed.pop_front();
        }
        ctx.writer.settle(user, mids);
    }
}

/// Requests per second with a burst of twice that; 0 turns the limit off.
pub struct TokenBucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub fn new(rate: u32) -> TokenBucket {
        let rate = f64::from(rate);
        TokenBucket { rate, tokens: 2.0 * rate, last: Instant::now() }
    }

    /// Takes one token; false when the bucket is empty.
    pub fn allow(&mut self) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(2.0 * self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::ConnRef;
    use crate::store::{Conversation, NewMessage, SqliteStore, Store};
    use std::io::Read;

    /// A store whose inbox of user 1 owes mids 1..=n, and its log writer.
    fn owed(dir: &tempfile::TempDir, n: usize) -> (Arc<dyn Store>, Arc<LogWriter>) {
        let url = dir.path().join("chat.db");
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(url.to_str().unwrap()).unwrap());
        let msgs: Vec<NewMessage> = (0..n)
            .map(|i| NewMessage {
                sender: 2,
                sender_name: "b".into(),
                to: Conversation::Peer(1),
                text: Arc::from(format!("m{i}")),
                time: "2026-01-01 00:00:00".into(),
                unix_time: 0,
                cmid: None,
                recipients: vec![1],
            })
            .collect();
        let mids: Vec<Mid> = store.append(&msgs).unwrap().iter().map(|a| a.mid).collect();
        assert_eq!(mids, (1..=n as Mid).collect::<Vec<_>>());
        let writer = Arc::new(LogWriter::new(Arc::clone(&store)).unwrap());
        (store, writer)
    }

    fn still_owed(store: &dyn Store, writer: &LogWriter) -> Vec<Mid> {
        writer.barrier();
        store.inbox(1, 0, 100_000).unwrap().iter().map(|m| m.mid).collect()
    }

    /// A connection on a real loopback socket, and the peer's end, which reads only when
    /// a test says so.
    fn pair(max_outbuf: usize, writer: &Arc<LogWriter>) -> (Connection<ConnState>, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, addr) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let id = ConnRef { loop_index: 0, key: 0, generation: 1 };
        let mut ctx = ConnState::new(1 << 16, max_outbuf, 0, 3, Arc::clone(writer));
        ctx.user = Some(1);
        (Connection::new(id, mio::net::TcpStream::from_std(server), addr, ctx), peer)
    }

    fn push(mid: Mid, size: usize) -> Push {
        Push { mid, text: Arc::from(format!("{{\"mid\":{mid}}}{}", " ".repeat(size))) }
    }

    /// Hands 64 KiB pushes with mids from 1 until the socket stops taking them; returns
    /// how many.
    fn fill(conn: &mut Connection<ConnState>) -> usize {
        let mut n = 0;
        while conn.unsent() == 0 && conn.is_open() {
            n += 1;
            assert!(n < 10_000, "the socket took 640 MB");
            send_pushes(conn, 1, vec![push(n as Mid, 64 * 1024)]);
        }
        n
    }

    #[test]
    fn answered_counts_down_and_resumes_reading_at_the_low_mark() {
        let dir = tempfile::tempdir().unwrap();
        let (_store, writer) = owed(&dir, 0);
        let (mut conn, _peer) = pair(1 << 20, &writer);
        conn.ctx.in_flight = MAX_IN_FLIGHT;
        conn.pause_reading();
        while conn.ctx.in_flight > RESUME_IN_FLIGHT + 1 {
            answered(&mut conn);
            assert!(conn.is_read_paused(), "resumed at {} in flight", conn.ctx.in_flight);
        }
        answered(&mut conn);
        assert_eq!(conn.ctx.in_flight, RESUME_IN_FLIGHT);
        assert!(!conn.is_read_paused());
        for _ in 0..RESUME_IN_FLIGHT + 3 {
            answered(&mut conn);
        }
        assert_eq!(conn.ctx.in_flight, 0, "never below zero");
    }

    #[test]
    fn v1_pushes_the_socket_took_are_settled() {
        let dir = tempfile::tempdir().unwrap();
        let (store, writer) = owed(&dir, 3);
        let (mut conn, _peer) = pair(1 << 20, &writer);
        send_pushes(&mut conn, 1, vec![push(1, 0), push(2, 0)]);
        assert_eq!(conn.unsent(), 0);
        assert!(conn.ctx.handed.is_empty());
        assert_eq!(still_owed(&*store, &writer), [3]);
    }

    #[test]
    fn v1_pushes_not_written_stay_owed_until_the_socket_takes_them() {
        let dir = tempfile::tempdir().unwrap();
        let (store, writer) = owed(&dir, 200);
        let (mut conn, mut peer) = pair(1 << 30, &writer);
        let n = fill(&mut conn);
        let owed_now = still_owed(&*store, &writer);
        assert!(owed_now.first().is_some_and(|&m| m > 1) && owed_now.contains(&(n as Mid)), "{owed_now:?}");
        // The session ends now: what the socket took is settled, the rest stays owed.
        let mut buf = vec![0u8; 1 << 20];
        peer.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        while conn.unsent() > 0 {
            assert!(peer.read(&mut buf).unwrap() > 0);
            conn.flush();
        }
        let written = conn.written();
        conn.ctx.end_session(written);
        assert_eq!(still_owed(&*store, &writer), ((n as Mid + 1)..=200).collect::<Vec<_>>());
    }

    #[test]
    fn a_slow_reader_cut_off_leaves_its_unwritten_pushes_owed() {
        let dir = tempfile::tempdir().unwrap();
        let (store, writer) = owed(&dir, 1000);
        let (mut conn, _peer) = pair(256 * 1024, &writer);
        let mut n = 0;
        while conn.is_open() {
            n += 1;
            send_pushes(&mut conn, 1, vec![push(n, 64 * 1024)]);
        }
        let written = conn.written();
        conn.ctx.end_session(written);
        let owed_now = still_owed(&*store, &writer);
        assert!(owed_now.contains(&n), "the last push was never written: {owed_now:?}");
    }

    #[test]
    fn v2_pushes_wait_for_received_and_too_many_cut_the_session_off() {
        let dir = tempfile::tempdir().unwrap();
        let (store, writer) = owed(&dir, 5);
        let (mut conn, _peer) = pair(1 << 20, &writer);
        conn.ctx.v2 = true;
        send_pushes(&mut conn, 1, vec![push(1, 0), push(2, 0)]);
        send_pushes(&mut conn, 1, vec![push(2, 0)]);
        assert_eq!(conn.ctx.unconfirmed.len(), 2, "a mid still unconfirmed is not pushed again");
        assert_eq!(still_owed(&*store, &writer), [1, 2, 3, 4, 5], "written is not delivered for v2");
        conn.ctx.confirm(vec![1, 99]);
        assert_eq!(still_owed(&*store, &writer), [2, 3, 4, 5]);
        send_pushes(&mut conn, 1, vec![push(3, 0), push(4, 0)]);
        assert!(conn.is_open(), "3 unconfirmed is the limit here");
        send_pushes(&mut conn, 1, vec![push(5, 0)]);
        assert!(!conn.is_open(), "past --max-unconfirmed: cut off");
        assert_eq!(still_owed(&*store, &writer), [2, 3, 4, 5]);
    }
}
