//! `ConnState`: what the chat layer keeps per connection on its loop thread.
//!
//! Not thread safe, but in loop: it lives in `Connection::ctx` and only the owning loop
//! touches it. Workers change it through closures they queue on that loop.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use super::registry::Push;
use crate::net::Connection;
use crate::proto::codec::FrameDecoder;
use crate::store::{LogWriter, Mid, UserId};

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
    /// Requests handed to a worker and not answered yet. While non-zero, replies made
    /// on the loop go through the worker too, so replies keep request order.
    pub in_flight: u32,
    /// A fatal frame error was answered; further input is discarded.
    pub failed: bool,
    /// The user's mailbox is being pumped: ask for the next batch once output drains.
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
