//! `ConnState`: what the chat layer keeps per connection on its loop thread.
//!
//! Not thread safe, but in loop: it lives in `Connection::ctx` and only the owning loop
//! touches it. Workers change it through closures they queue on that loop.
//!
//! Backpressure: a connection has at most [`MAX_IN_FLIGHT`] requests at workers. At the
//! cap the frontend pauses reading it; replies resume it once no more than
//! [`RESUME_IN_FLIGHT`] are left (`answered`), so a client that pipelines without
//! reading is held back by its own TCP window, not by the server's memory.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::worker::Job;
use crate::net::Connection;
use crate::proto::codec::FrameDecoder;
use crate::store::UserId;

/// Requests of one connection at workers at most; then it is not read until replies
/// drain.
pub const MAX_IN_FLIGHT: u32 = 64;
/// Requests in flight at which a connection paused at the cap is read again.
pub const RESUME_IN_FLIGHT: u32 = MAX_IN_FLIGHT / 2;

/// Pushes (or a LOGIN_ACK's offline messages) handed to a connection whose socket has
/// not taken them yet: if it closes first they go back to the mailbox.
struct Handed {
    /// Stream offset just past the frame: written once `conn.written() >= end`.
    end: u64,
    user: UserId,
    msgs: Vec<Arc<str>>,
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
    /// The user's mailbox is being pumped: ask for the next batch once output drains.
    pub want_pump: bool,
    pub bucket: TokenBucket,
    /// Unsent output past which the connection is cut off as a slow reader.
    max_outbuf: usize,
    handed: VecDeque<Handed>,
}

impl ConnState {
    pub fn new(max_frame: usize, max_outbuf: usize, rate: u32) -> ConnState {
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
            max_outbuf,
            handed: VecDeque::new(),
        }
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

/// Writes a frame that carries messages for `user` (a LOGIN_ACK), remembering them
/// until the socket has taken the whole frame.
pub fn send_tracked(conn: &mut Connection<ConnState>, body: &[u8], user: UserId, msgs: Vec<Arc<str>>) {
    send_frame(conn, body);
    track(conn, user, msgs);
}

/// Writes pushes for `user`, each its own frame, in a single send, remembering them
/// until the socket has taken them all.
pub fn send_pushes(conn: &mut Connection<ConnState>, user: UserId, msgs: Vec<Arc<str>>) {
    send_frames(conn, msgs.iter().map(|m| m.as_bytes()));
    track(conn, user, msgs);
}

/// Remembers `msgs`, just written, until the socket has taken them.
fn track(conn: &mut Connection<ConnState>, user: UserId, msgs: Vec<Arc<str>>) {
    let (written, queued, unsent) = (conn.written(), conn.queued(), conn.unsent());
    let handed = &mut conn.ctx.handed;
    while handed.front().is_some_and(|h| h.end <= written) {
        handed.pop_front();
    }
    if unsent > 0 && !msgs.is_empty() {
        handed.push_back(Handed { end: queued, user, msgs });
    }
}

/// The messages handed to a closing connection that its socket never took, in order.
pub fn take_unsent(conn: &mut Connection<ConnState>) -> Vec<(UserId, Arc<str>)> {
    let written = conn.written();
    std::mem::take(&mut conn.ctx.handed)
        .into_iter()
        .filter(|h| h.end > written)
        .flat_map(|h| h.msgs.into_iter().map(move |m| (h.user, m)))
        .collect()
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
    use std::io::Read;

    /// A connection on a real loopback socket, and the peer's end, which reads only when
    /// a test says so.
    fn pair(max_outbuf: usize) -> (Connection<ConnState>, std::net::TcpStream) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, addr) = listener.accept().unwrap();
        server.set_nonblocking(true).unwrap();
        let id = ConnRef { loop_index: 0, key: 0, generation: 1 };
        let ctx = ConnState::new(1 << 16, max_outbuf, 0);
        (Connection::new(id, mio::net::TcpStream::from_std(server), addr, ctx), peer)
    }

    fn text(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    /// Hands 64 KiB pushes for `user` until the socket stops taking them (or the
    /// connection is cut off); returns them.
    fn fill(conn: &mut Connection<ConnState>, user: UserId) -> Vec<Arc<str>> {
        let mut handed = Vec::new();
        while conn.unsent() == 0 && conn.is_open() {
            assert!(handed.len() < 10_000, "the socket took 640 MB");
            let push = text(&format!("{{\"n\":{}}}{}", handed.len(), " ".repeat(64 * 1024)));
            handed.push(Arc::clone(&push));
            send_pushes(conn, user, vec![push]);
        }
        handed
    }

    /// What `take_unsent` must return: the handed frames (body + terminator, in order,
    /// from stream offset `start`) not wholly taken by the socket.
    fn not_written(start: u64, written: u64, handed: &[(UserId, Arc<str>)]) -> Vec<(UserId, Arc<str>)> {
        let mut end = start;
        let mut out = Vec::new();
        for (user, m) in handed {
            end += m.len() as u64 + 1;
            if end > written {
                out.push((*user, Arc::clone(m)));
            }
        }
        out
    }

    #[test]
    fn answered_counts_down_and_resumes_reading_at_the_low_mark() {
        let (mut conn, _peer) = pair(1 << 20);
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
    fn pushes_the_socket_took_at_once_are_not_kept() {
        let (mut conn, _peer) = pair(1 << 20);
        send_pushes(&mut conn, 7, vec![text("{\"a\":1}"), text("{\"b\":2}")]);
        send_tracked(&mut conn, b"{\"msgid\":2}", 7, vec![text("{\"c\":3}")]);
        assert_eq!(conn.unsent(), 0);
        assert!(conn.ctx.handed.is_empty());
        assert!(take_unsent(&mut conn).is_empty());
    }

    #[test]
    fn pushes_not_written_come_back_in_order_with_their_user() {
        let (mut conn, _peer) = pair(1 << 30);
        let mut handed: Vec<(UserId, Arc<str>)> = fill(&mut conn, 1).into_iter().map(|m| (1, m)).collect();
        send_pushes(&mut conn, 2, vec![text("{\"to\":2,\"n\":0}"), text("{\"to\":2,\"n\":1}")]);
        handed.extend([(2, text("{\"to\":2,\"n\":0}")), (2, text("{\"to\":2,\"n\":1}"))]);
        // A LOGIN_ACK carrying offline messages: its body is what is written.
        let ack = b"{\"msgid\":2,\"offlinemsg\":[\"m\"]}";
        send_tracked(&mut conn, ack, 3, vec![text("{\"to\":3}")]);
        let written = conn.written();
        let unsent = take_unsent(&mut conn);
        // The LOGIN_ACK comes after frames the socket did not take: not written either.
        let mut expected = not_written(0, written, &handed);
        expected.push((3, text("{\"to\":3}")));
        assert!(expected.len() >= 4, "the fill left frames unwritten");
        assert_eq!(unsent, expected);
        assert!(take_unsent(&mut conn).is_empty(), "taken once");
    }

    #[test]
    fn what_the_socket_takes_later_is_forgotten() {
        let (mut conn, mut peer) = pair(1 << 30);
        fill(&mut conn, 1);
        assert!(!conn.ctx.handed.is_empty());
        let mut buf = vec![0u8; 1 << 20];
        peer.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        while conn.unsent() > 0 {
            let n = peer.read(&mut buf).unwrap();
            assert!(n > 0);
            conn.flush();
        }
        assert!(take_unsent(&mut conn).is_empty());
        // The bookkeeping is trimmed as more is handed.
        fill(&mut conn, 1);
        assert!(conn.ctx.handed.len() <= 2, "{} entries kept", conn.ctx.handed.len());
    }

    #[test]
    fn a_slow_reader_cut_off_keeps_its_unsent_pushes() {
        let (mut conn, _peer) = pair(256 * 1024);
        let mut handed: Vec<(UserId, Arc<str>)> = Vec::new();
        while conn.is_open() {
            assert!(handed.len() < 10_000, "never cut off");
            let push = text(&format!("{{\"n\":{}}}{}", handed.len(), " ".repeat(64 * 1024)));
            handed.push((5, Arc::clone(&push)));
            send_pushes(&mut conn, 5, vec![push]);
        }
        assert!(conn.unsent() > 256 * 1024, "cut off past --max-outbuf");
        let written = conn.written();
        let unsent = take_unsent(&mut conn);
        assert!(!unsent.is_empty());
        assert_eq!(unsent, not_written(0, written, &handed));
    }
}
