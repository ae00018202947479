//! `Frontend`: the chat layer's `net::Handler`. Cuts each connection's bytes into
//! frames, parses them, answers what needs no worker, and hands the rest to the worker
//! pool.
//!
//! Runs on the loop threads; never blocks. Replies made here (PONG, 429, frame errors)
//! are written at once only while the connection has no request at a worker; otherwise
//! they travel through its worker so replies keep request order.
//!
//! Backpressure: before each frame, `ready_for_input` checks that the connection has
//! fewer than `MAX_IN_FLIGHT` requests at workers and no job waiting for room in its
//! worker's queue; if not, the connection's reading pauses, its unread frames stay in
//! its input, and a reply (`conn_state::answered`) or room in the queue
//! (`WorkerPool::when_room`) resumes it. The loop never waits for a worker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::conn_state::{send_frame, settle_written, ConnState, MAX_IN_FLIGHT};
use super::hub::Hub;
use super::test_hooks;
use super::worker::Job;
use super::worker_pool::WorkerPool;
use super::{message, receipt};
use crate::net::{ConnRef, Connection, Handler};
use crate::proto::codec::{Decoded, FrameError};
use crate::proto::msg::{self, errno, error_frame, reply, reply_type, Fail, ParseError, Request};

/// Limits a connection lives by.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_frame: usize,
    pub max_outbuf: usize,
    /// Requests per second per connection (burst twice that); 0 is no limit.
    pub rate_limit: u32,
    pub login_timeout: Option<Duration>,
    pub idle_timeout: Option<Duration>,
    /// v2 pushes a session may leave unconfirmed.
    pub max_unconfirmed: usize,
}

pub struct Frontend {
    pub hub: Arc<Hub>,
    pub workers: WorkerPool<Job>,
    limits: Limits,
    /// Shutting down: input is no longer turned into requests.
    draining: AtomicBool,
}

impl Frontend {
    pub fn new(hub: Arc<Hub>, workers: WorkerPool<Job>, limits: Limits) -> Frontend {
        Frontend { hub, workers, limits, draining: AtomicBool::new(false) }
    }

    /// Safe to call from any thread: from now on, input is discarded.
    pub fn stop_taking_requests(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Hands a request (or a reply that must follow earlier ones) to the connection's
    /// worker; if its queue is full, the job waits on the connection (`stall`).
    fn dispatch(&self, conn: &mut Connection<ConnState>, job: Job) {
        conn.ctx.in_flight += 1;
        if let Err(job) = self.workers.try_dispatch(conn.id().hash_key(), job) {
            self.stall(conn, job);
        }
    }

    /// Keeps a job the worker's full queue refused, and stops reading the connection
    /// until the queue has room.
    fn stall(&self, conn: &mut Connection<ConnState>, job: Job) {
        conn.ctx.stalled = Some(job);
        conn.pause_reading();
        if !conn.ctx.awaiting_room {
            conn.ctx.awaiting_room = true;
            let (loops, id) = (self.hub.loops.clone(), conn.id());
            // One such task per connection at a time (`awaiting_room`): `post` is safe.
            self.workers.when_room(id.hash_key(), move || {
                loops.post(id, |c| {
                    if let Some(c) = c {
                        c.ctx.awaiting_room = false;
                        c.resume_reading();
                    }
                })
            });
        }
    }

    /// Whether the next frame may be taken: a stalled job goes first, and no more than
    /// `MAX_IN_FLIGHT` requests may be at workers. If not, reading pauses (the frames
    /// stay in the input) until a reply or room in the queue resumes it.
    fn ready_for_input(&self, conn: &mut Connection<ConnState>) -> bool {
        if let Some(job) = conn.ctx.stalled.take() {
            if let Err(job) = self.workers.try_dispatch(conn.id().hash_key(), job) {
                self.stall(conn, job);
                return false;
            }
        }
        if conn.ctx.in_flight >= MAX_IN_FLIGHT {
            conn.pause_reading();
            return false;
        }
        true
    }

    /// Sends a reply made on the loop, in order with replies still at a worker.
    fn answer(&self, conn: &mut Connection<ConnState>, body: Vec<u8>, close: bool) {
        if close {
            conn.ctx.failed = true;
        }
        if conn.ctx.in_flight == 0 {
            send_frame(conn, &body);
            if close {
                conn.close();
            }
        } else {
            let (id, after_writer) = (conn.id(), conn.ctx.at_writer > 0);
            self.dispatch(conn, Job::Reply(id, body, close, after_writer));
        }
    }

    /// Asks a worker for the next batch of a backlogged inbox once output has drained.
    fn resume_pump(&self, conn: &mut Connection<ConnState>) {
        if conn.ctx.want_pump && conn.unsent() == 0 {
            conn.ctx.want_pump = false;
            let id = conn.id();
            // At most one pump at a time per connection (`want_pump`).
            self.workers.dispatch_always(id.hash_key(), Job::Pump(id));
        }
    }

    /// `allowed`: within the rate limit (else only the frame's head was parsed).
    fn on_frame(&self, conn: &mut Connection<ConnState>, parsed: Result<Request, ParseError>, allowed: bool) {
        match parsed {
            Err(ParseError::NotJson(why)) => {
                log::debug!("{}: not a JSON object: {why}", conn.peer());
                self.answer(conn, error_frame(errno::MALFORMED, &format!("not a JSON object: {why}"), None), true);
            }
            Err(ParseError::NoRequest { reqid, why }) => {
                let errno = if allowed { errno::MALFORMED } else { errno::TOO_MANY };
                self.answer(conn, error_frame(errno, &why, reqid.as_ref()), false);
            }
            Ok(req) if !allowed => {
                let fail = Fail::new(errno::TOO_MANY, "too many requests, slow down");
                self.answer(conn, reply(reply_type(req.msgid), req.msgid, req.reqid.as_ref(), Err(fail)), false);
            }
            Ok(req)
                if req.msgid == msg::PING && !req.lossy && conn.ctx.in_flight == 0 && !test_hooks::to_worker(&req) =>
            {
                test_hooks::panic_here(&req, test_hooks::Site::Loop);
                send_frame(conn, &reply(msg::PONG, msg::PING, req.reqid.as_ref(), Ok(Default::default())));
            }
            Ok(req) if req.msgid == msg::ONE_CHAT && message::one_chat_now(&self.hub, conn, &req) => {}
            Ok(req) if req.msgid == msg::RECEIVED && receipt::received_now(conn, &req) => {}
            Ok(req) => {
                let (id, after_writer) = (conn.id(), conn.ctx.at_writer > 0);
                self.dispatch(conn, Job::Request(id, req, after_writer));
            }
        }
    }
}

impl Handler for Frontend {
    type Context = ConnState;

    fn new_context(&self, _conn: ConnRef) -> ConnState {
        let l = &self.limits;
        ConnState::new(l.max_frame, l.max_outbuf, l.rate_limit, l.max_unconfirmed, Arc::clone(&self.hub.writer))
    }

    fn on_connection(&self, conn: &mut Connection<ConnState>) {
        if conn.is_open() {
            log::debug!("{} connected", conn.peer());
            // Replies to a peer that does not read stop its reading well before it
            // would be cut off as a slow reader.
            conn.set_high_water(self.limits.max_outbuf / 2);
            return;
        }
        log::debug!("{} disconnected", conn.peer());
        // What the socket took is delivered; what it did not stays in the inbox.
        let written = conn.written();
        conn.ctx.end_session(written);
        let id = conn.id();
        // One of each per connection: a job it read before closing, then its close.
        if let Some(job) = conn.ctx.stalled.take() {
            self.workers.dispatch_always(id.hash_key(), job);
        }
        self.workers.dispatch_always(id.hash_key(), Job::Closed(id));
    }

    fn on_message(&self, conn: &mut Connection<ConnState>) {
        loop {
            // First, so that a stalled job (a fatal error's reply, say) is not forgotten.
            if !self.ready_for_input(conn) {
                return;
            }
            if conn.ctx.failed || !conn.is_open() || self.draining.load(Ordering::Acquire) {
                let n = conn.input.len();
                conn.input.consume(n);
                return;
            }
            match conn.ctx.decoder.decode(conn.input.readable()) {
                Ok(Decoded::Frame { body, consumed }) => {
                    // Counted as it is cut: a frame over the limit is not carried out,
                    // so parsing its head is enough to answer it.
                    let allowed = conn.ctx.bucket.allow();
                    let frame = &conn.input.readable()[body];
                    let parsed = if allowed { Request::parse(frame) } else { Request::parse_head(frame) };
                    conn.input.consume(consumed);
                    self.on_frame(conn, parsed, allowed);
                }
                Ok(Decoded::Partial { consumed }) => {
                    conn.input.consume(consumed);
                    return;
                }
                Err(e) => {
                    log::debug!("{}: {e}", conn.peer());
                    let errno = match e {
                        FrameError::TooLarge { .. } => errno::TOO_LARGE,
                        FrameError::NotAnObject => errno::MALFORMED,
                    };
                    self.answer(conn, error_frame(errno, &e.to_string(), None), true);
                }
            }
        }
    }

    fn on_write_complete(&self, conn: &mut Connection<ConnState>) {
        let written = conn.written();
        settle_written(&mut conn.ctx, written);
        self.resume_pump(conn);
    }

    fn on_tick(&self, conn: &mut Connection<ConnState>, now: Instant) {
        // Also retries a pump that failed on a storage error.
        let written = conn.written();
        settle_written(&mut conn.ctx, written);
        self.resume_pump(conn);
        let expired = |since: Instant, limit: Option<Duration>| limit.is_some_and(|l| now.duration_since(since) > l);
        if conn.ctx.user.is_none() && conn.ctx.in_flight == 0 && expired(conn.created(), self.limits.login_timeout) {
            log::debug!("{}: no login in time, closing", conn.peer());
            conn.close();
        } else if conn.ctx.user.is_some() && expired(conn.last_read(), self.limits.idle_timeout) {
            log::debug!("{}: idle, closing", conn.peer());
            conn.close();
        }
    }
}
