//! The client's output, shared by the main thread (menus, answers) and the push printer
//! thread (messages as they arrive).
//!
//! One mutex guards it. The main thread holds [`ScreenGuard`] from sending a request
//! until its answer is printed, so a push that arrives right after a reply (say, just
//! after LOGIN_ACK) is printed after that reply's words, never in the middle.
//!
//! Pushes go either inline to the output (plain mode: a pending prompt is moved below
//! the message) or to an external printer (terminal mode: rustyline's
//! `ExternalPrinter`, which prints above the line being edited without mangling it).
//! The external printer is called outside the screen's mutex: it may wait until the
//! line editor reads again, which it does only after the main thread has printed its
//! answer and asked for the next line.

use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crossbeam_channel::Receiver;
use serde_json::Value;

use super::render;

/// Prints one message (ending with `\n`) above the line being edited.
pub type ExternalPrinter = Box<dyn FnMut(String) -> io::Result<()> + Send>;

/// A handle on the shared output; clones share it. Safe to use from any thread.
#[derive(Clone)]
pub struct Screen {
    state: Arc<Mutex<State>>,
    external: Option<Arc<Mutex<ExternalPrinter>>>,
}

struct State {
    out: Box<dyn Write + Send>,
    /// A prompt written (plain mode) and not yet followed by a newline.
    prompt: Option<String>,
}

/// Exclusive use of the screen; pushes wait while it is held.
pub struct ScreenGuard<'a>(MutexGuard<'a, State>);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Screen {
    /// A screen that prints pushes inline, into `out`.
    pub fn new(out: impl Write + Send + 'static) -> Screen {
        Screen { state: Arc::new(Mutex::new(State { out: Box::new(out), prompt: None })), external: None }
    }

    /// A screen that prints pushes through `printer` and everything else into `out`.
    pub fn with_printer(out: impl Write + Send + 'static, printer: ExternalPrinter) -> Screen {
        Screen { external: Some(Arc::new(Mutex::new(printer))), ..Screen::new(out) }
    }

    /// Takes the screen; blocks while another thread prints.
    pub fn lock(&self) -> ScreenGuard<'_> {
        ScreenGuard(lock(&self.state))
    }

    /// Prints a message that arrived on its own (a push) without disturbing the input
    /// line, after any answer being printed.
    pub fn push(&self, text: &str) -> io::Result<()> {
        let guard = self.lock();
        match &self.external {
            None => guard.push_inline(text),
            Some(printer) => {
                drop(guard);
                (lock(printer))(format!("{text}\n"))
            }
        }
    }

    /// Starts the push printer thread: it prints each frame of `pushes` in words until
    /// the channel ends (when the connection's reader thread does).
    pub fn spawn_push_printer(&self, pushes: Receiver<Value>) -> io::Result<JoinHandle<()>> {
        let screen = self.clone();
        std::thread::Builder::new().name("chat-pushes".into()).spawn(move || {
            for push in pushes {
                if let Err(e) = screen.push(&render::incoming(&push)) {
                    log::debug!("cannot print a push: {e}");
                }
            }
        })
    }
}

impl ScreenGuard<'_> {
    /// Writes `text` (one or more lines) and a newline.
    pub fn line(&mut self, text: &str) -> io::Result<()> {
        let state = &mut *self.0;
        if state.prompt.take().is_some() {
            state.out.write_all(b"\n")?;
        }
        state.out.write_all(text.as_bytes())?;
        state.out.write_all(b"\n")?;
        state.out.flush()
    }

    /// Writes each of `lines`.
    pub fn lines<S: AsRef<str>>(&mut self, lines: &[S]) -> io::Result<()> {
        lines.iter().try_for_each(|l| self.line(l.as_ref()))
    }

    /// Writes a prompt and leaves the cursor after it (plain mode).
    pub fn prompt(&mut self, prompt: &str) -> io::Result<()> {
        let state = &mut *self.0;
        if state.prompt.take().is_some() {
            state.out.write_all(b"\n")?;
        }
        state.out.write_all(prompt.as_bytes())?;
        state.out.flush()?;
        state.prompt = Some(prompt.to_owned());
        Ok(())
    }

    /// Prints a pushed message inline, moving a pending prompt below it.
    fn push_inline(mut self, text: &str) -> io::Result<()> {
        let state = &mut *self.0;
        match &state.prompt {
            Some(prompt) => write!(state.out, "\n{text}\n{prompt}")?,
            None => writeln!(state.out, "{text}")?,
        }
        state.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().map_err(|_| io::Error::other("poisoned"))?.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            self.0.lock().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
        }
    }

    #[test]
    fn a_push_moves_the_prompt_below_it() {
        let out = Shared::default();
        let screen = Screen::new(out.clone());
        let r = (|| {
            screen.lock().line("a")?;
            screen.lock().prompt("> ")?;
            screen.push("pushed")?;
            screen.lock().line("b")
        })();
        assert!(r.is_ok());
        assert_eq!(out.text(), "a\n> \npushed\n> \nb\n");
    }

    #[test]
    fn pushes_go_to_the_external_printer() {
        let out = Shared::default();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&got);
        let screen = Screen::with_printer(
            out.clone(),
            Box::new(move |s| {
                sink.lock().map_err(|_| io::Error::other("poisoned"))?.push(s);
                Ok(())
            }),
        );
        assert!(screen.push("x").is_ok());
        assert_eq!(out.text(), "");
        assert_eq!(got.lock().map(|g| g.clone()).unwrap_or_default(), vec!["x\n".to_owned()]);
    }
}
