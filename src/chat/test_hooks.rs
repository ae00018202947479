//! Hooks for tests of panic isolation, compiled only with the `test-hooks` cargo
//! feature (off by default; `autobuild.sh test` turns it on for the binary under test).
//! Without it `site` is always `None`, and the hooks compile to nothing.
//!
//! A PING carrying `"panic":"loop"` panics on its loop thread (`Frontend::on_frame`);
//! one carrying `"panic":"worker"` is sent to its worker and panics there
//! (`Worker::handle`).

use crate::proto::msg::Request;

/// Where a hook may panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Site {
    Loop,
    Worker,
}

/// Where `req` asks to panic, if anywhere.
#[cfg(feature = "test-hooks")]
fn site(req: &Request) -> Option<Site> {
    if req.msgid != crate::proto::msg::PING {
        return None;
    }
    match req.body.get("panic").and_then(serde_json::Value::as_str) {
        Some("loop") => Some(Site::Loop),
        Some("worker") => Some(Site::Worker),
        _ => None,
    }
}

#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
fn site(_req: &Request) -> Option<Site> {
    None
}

/// Whether `req` must go to a worker (to panic there) though the loop could answer it.
#[inline]
pub fn to_worker(req: &Request) -> bool {
    site(req) == Some(Site::Worker)
}

/// Panics if `req` asks to panic at `here`.
#[inline]
pub fn panic_here(req: &Request, here: Site) {
    if site(req) == Some(here) {
        panic!("test hook: a PING asked to panic on the {here:?} thread");
    }
}
