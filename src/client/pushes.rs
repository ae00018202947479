//! The push printer thread of one connection: it prints chat messages as they arrive,
//! each once, and confirms them to a v2 server with RECEIVED (protocol §9).
//!
//! It takes the pushes the connection's reader thread forwards in bursts (all that have
//! arrived, up to what one RECEIVED may confirm), drops repeats by mid through the
//! shared [`Inbox`], prints the rest in one go, and then sends one RECEIVED with every
//! mid of the burst. It ends when the connection's reader thread does.
//!
//! It holds a lock while it prints and confirms a burst, so that an orderly end can
//! wait for that before closing the connection ([`PushPrinter::idle`]).

use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crossbeam_channel::Receiver;
use serde_json::Value;

use super::connection::Outlet;
use super::inbox::{received, Inbox, MAX_MIDS_PER_RECEIVED};
use super::render;
use super::screen::Screen;

/// The push printer thread of one connection.
pub struct PushPrinter {
    thread: JoinHandle<()>,
    busy: Arc<Mutex<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PushPrinter {
    /// Starts the thread over one connection's `pushes`.
    pub fn spawn(
        pushes: Receiver<Value>,
        outlet: Outlet,
        screen: Screen,
        inbox: Arc<Mutex<Inbox>>,
    ) -> io::Result<PushPrinter> {
        let busy = Arc::new(Mutex::new(()));
        let held = Arc::clone(&busy);
        let thread = std::thread::Builder::new()
            .name("chat-pushes".into())
            .spawn(move || print_and_confirm(&pushes, &outlet, &screen, &inbox, &held))?;
        Ok(PushPrinter { thread, busy })
    }

    /// Waits until the burst being printed, if any, is confirmed.
    pub fn idle(&self) {
        drop(lock(&self.busy));
    }

    /// Waits for the thread to end (it does once its connection is closed).
    pub fn join(self) {
        let _ = self.thread.join();
    }
}

fn print_and_confirm(
    pushes: &Receiver<Value>,
    outlet: &Outlet,
    screen: &Screen,
    inbox: &Mutex<Inbox>,
    busy: &Mutex<()>,
) {
    while let Ok(first) = pushes.recv() {
        let _busy = lock(busy);
        let mut burst = vec![first];
        burst.extend(pushes.try_iter().take(MAX_MIDS_PER_RECEIVED - 1));
        let sorted = lock(inbox).sort(burst);
        if !sorted.show.is_empty() {
            let text: Vec<String> = sorted.show.iter().map(render::incoming).collect();
            if let Err(e) = screen.aside(&text.join("\n")) {
                log::debug!("cannot print a push: {e}");
            }
        }
        confirm(outlet, &sorted.confirm);
    }
}

/// Sends RECEIVED for `mids`, if any. A confirmation that cannot be sent is not an
/// error: the server hands those messages again at the next login (a reconnecting
/// session drops them as repeats).
pub fn confirm(outlet: &Outlet, mids: &[i64]) {
    for frame in received(mids) {
        if let Err(e) = outlet.send(&frame) {
            log::debug!("cannot confirm {} message(s): {e}", mids.len());
            return;
        }
    }
}
