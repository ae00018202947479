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
