//! The client's output, shared by the main thread (menus, answers) and the push printer
//! thread (messages as they arrive).
//!
//! One mutex guards it. The main thread holds [`ScreenGuard`] from sending a request
//! until its answer is printed, so a push that arrives right after a reply (say, just
//! after LOGIN_ACK) is printed after that reply's words, never in the middle.
//!
//! Pushes, and notices the client prints on its own, go either inline to the output
//! (plain mode: a pending prompt is moved below them) or, on a terminal, to the printer
//! thread, which hands them to rustyline's `ExternalPrinter` to print above the line
//! being edited. That printer can wait until the line editor reads again, which only
//! the main thread can bring about; so only the printer thread ever calls it, and
//! [`Screen::aside`] never waits for it.

use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use serde_json::Value;

use super::render;

/// Prints one message (ending with `\n`) above the line being edited.
pub type ExternalPrinter = Box<dyn FnMut(String) -> io::Result<()> + Send>;

/// A handle on the shared output; clones share it. Safe to use from any thread.
#[derive(Clone)]
pub struct Screen {
    state: Arc<Mutex<State>>,
    /// The printer thread's queue, on a terminal.
    printer: Option<Sender<Job>>,
}

struct State {
    out: Box<dyn Write + Send>,
    /// A prompt written (plain mode) and not yet followed by a newline.
    prompt: Option<String>,
}

/// Work for the printer thread.
enum Job {
    Print(String),
    /// Answer once everything queued before has been printed.
    Flushed(Sender<()>),
}

/// Exclusive use of the screen; pushes wait while it is held.
pub struct ScreenGuard<'a>(MutexGuard<'a, State>);

impl Screen {
    /// A screen that prints pushes inline, into `out`.
    pub fn new(out: impl Write + Send + 'static) -> Screen {
        Screen { state: Arc::new(Mutex::new(State { out: Box::new(out), prompt: None })), printer: None }
    }

    /// A screen that prints pushes through `printer`, on a thread of its own, and
    /// everything else into `out`. The thread ends when the last clone is dropped.
    pub fn with_printer(out: impl Write + Send + 'static, mut printer: ExternalPrinter) -> io::Result<Screen> {
        let (tx, jobs) = unbounded::<Job>();
        std::thread::Builder::new().name("chat-printer".into()).spawn(move || {
            for job in jobs {
                match job {
                    Job::Print(text) => {
                        if let Err(e) = printer(text) {
                            log::debug!("cannot print above the input line: {e}");
                        }
                    }
                    Job::Flushed(done) => {
                        let _ = done.send(());
                    }
                }
            }
        })?;
        Ok(Screen { printer: Some(tx), ..Screen::new(out) })
    }

    /// Takes the screen; blocks while another thread prints.
    pub fn lock(&self) -> ScreenGuard<'_> {
        ScreenGuard(self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Prints text that comes on its own (a push, a notice) without disturbing the input
    /// line, after any answer being printed. Never waits for the line editor.
    pub fn aside(&self, text: &str) -> io::Result<()> {
        let guard = self.lock();
        match &self.printer {
            None => guard.aside_inline(text),
            Some(printer) => printer
                .send(Job::Print(format!("{text}\n")))
                .map_err(|_| io::Error::other("the printer thread is gone")),
        }
    }

    /// Waits, at most `within`, until what [`Screen::aside`] queued has been printed.
    pub fn settle(&self, within: Duration) {
        if let Some(printer) = &self.printer {
            let (done, flushed) = bounded(1);
            if printer.send(Job::Flushed(done)).is_ok() {
                let _ = flushed.recv_timeout(within);
            }
        }
    }

    /// Starts the push printer thread: it prints each frame of `pushes` in words until
    /// the channel ends (when the connection's reader thread does).
    pub fn spawn_push_printer(&self, pushes: Receiver<Value>) -> io::Result<JoinHandle<()>> {
        let screen = self.clone();
        std::thread::Builder::new().name("chat-pushes".into()).spawn(move || {
            for push in pushes {
                if let Err(e) = screen.aside(&render::incoming(&push)) {
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

    /// Prints text inline, moving a pending prompt below it.
    fn aside_inline(mut self, text: &str) -> io::Result<()> {
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
            screen.aside("pushed")?;
            screen.lock().line("b")
        })();
        assert!(r.is_ok());
        assert_eq!(out.text(), "a\n> \npushed\n> \nb\n");
    }

    #[test]
    fn asides_never_wait_for_the_external_printer() {
        let out = Shared::default();
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&got);
        // A printer stuck until released, as rustyline's is until readline runs again.
        let (release, released) = bounded::<()>(0);
        let printer: ExternalPrinter = Box::new(move |s| {
            let _ = released.recv();
            sink.lock().map_err(|_| io::Error::other("poisoned"))?.push(s);
            Ok(())
        });
        let Ok(screen) = Screen::with_printer(out.clone(), printer) else { panic!("no printer thread") };
        assert!(screen.aside("x").is_ok() && screen.aside("y").is_ok());
        assert!(screen.lock().line("answer").is_ok());
        assert_eq!(out.text(), "answer\n");
        drop(release);
        screen.settle(Duration::from_secs(5));
        assert_eq!(got.lock().map(|g| g.clone()).unwrap_or_default(), vec!["x\n".to_owned(), "y\n".to_owned()]);
    }
}
