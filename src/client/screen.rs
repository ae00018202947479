//! The client's output, shared by the main thread (menus, answers, notices) and the
//! push printer thread (messages as they arrive).
//!
//! One mutex guards it. The main thread holds [`ScreenGuard`] from sending a request
//! until its answer is printed, so a push that arrives right after a reply (say, just
//! after LOGIN_ACK) is printed after that reply's words, never in the middle.
//!
//! In plain mode everything is written to the output at once; a push or a notice
//! ([`Screen::aside`]) moves a pending prompt below it. On a terminal everything goes,
//! in order, through one queue to the printer thread, which hands it to rustyline's
//! `ExternalPrinter`: printed above the line being edited while rustyline reads,
//! straight out otherwise. That printer can wait until the line editor reads again,
//! which only the main thread can bring about; so only the printer thread ever calls
//! it, and nothing here waits for it.

use std::io::{self, Write};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crossbeam_channel::{bounded, unbounded, Sender};

/// Prints text (ending with `\n`) above the line being edited.
pub type ExternalPrinter = Box<dyn FnMut(String) -> io::Result<()> + Send>;

/// A handle on the shared output; clones share it. Safe to use from any thread.
#[derive(Clone)]
pub struct Screen(Arc<Mutex<State>>);

struct State {
    sink: Sink,
    /// A prompt written (plain mode) and not yet followed by a newline.
    prompt: Option<String>,
}

enum Sink {
    Plain(Box<dyn Write + Send>),
    /// The printer thread's queue (terminal mode).
    Printer(Sender<Job>),
}

/// Work for the printer thread.
enum Job {
    Print(String),
    /// Answer once everything queued before has been printed.
    Flushed(Sender<()>),
}

/// Exclusive use of the screen; pushes wait while it is held.
pub struct ScreenGuard<'a>(MutexGuard<'a, State>);

fn gone() -> io::Error {
    io::Error::other("the printer thread is gone")
}

impl Screen {
    /// A screen that writes everything to `out`.
    pub fn new(out: impl Write + Send + 'static) -> Screen {
        Screen(Arc::new(Mutex::new(State { sink: Sink::Plain(Box::new(out)), prompt: None })))
    }

    /// A screen that prints everything through `printer`, on a thread of its own, which
    /// ends when the last clone of the screen is dropped.
    pub fn with_printer(mut printer: ExternalPrinter) -> io::Result<Screen> {
        let (tx, jobs) = unbounded::<Job>();
        std::thread::Builder::new().name("chat-printer".into()).spawn(move || {
            for job in jobs {
                match job {
                    Job::Print(text) => {
                        if let Err(e) = printer(text) {
                            log::debug!("cannot print: {e}");
                        }
                    }
                    Job::Flushed(done) => {
                        let _ = done.send(());
                    }
                }
            }
        })?;
        Ok(Screen(Arc::new(Mutex::new(State { sink: Sink::Printer(tx), prompt: None }))))
    }

    /// Takes the screen; blocks while another thread prints.
    pub fn lock(&self) -> ScreenGuard<'_> {
        ScreenGuard(self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Prints text that comes on its own (a push, a notice) without disturbing the input
    /// line, after any answer being printed. Never waits for the line editor.
    pub fn aside(&self, text: &str) -> io::Result<()> {
        self.lock().aside(text)
    }

    /// Waits, at most `within`, until everything queued has been printed.
    pub fn settle(&self, within: Duration) {
        let (done, flushed) = bounded(1);
        let queued = match &self.lock().0.sink {
            Sink::Printer(printer) => printer.send(Job::Flushed(done)).is_ok(),
            Sink::Plain(_) => false,
        };
        if queued {
            let _ = flushed.recv_timeout(within);
        }
    }
}

impl ScreenGuard<'_> {
    /// Writes `text` (one or more lines) and a newline.
    pub fn line(&mut self, text: &str) -> io::Result<()> {
        let state = &mut *self.0;
        let out = match &mut state.sink {
            Sink::Printer(printer) => return printer.send(Job::Print(format!("{text}\n"))).map_err(|_| gone()),
            Sink::Plain(out) => out,
        };
        if state.prompt.take().is_some() {
            out.write_all(b"\n")?;
        }
        out.write_all(text.as_bytes())?;
        out.write_all(b"\n")?;
        out.flush()
    }

    /// Writes each of `lines`.
    pub fn lines<S: AsRef<str>>(&mut self, lines: &[S]) -> io::Result<()> {
        lines.iter().try_for_each(|l| self.line(l.as_ref()))
    }

    /// Writes a prompt and leaves the cursor after it (plain mode; on a terminal the
    /// line editor draws its own).
    pub fn prompt(&mut self, prompt: &str) -> io::Result<()> {
        let state = &mut *self.0;
        let Sink::Plain(out) = &mut state.sink else { return Ok(()) };
        if state.prompt.take().is_some() {
            out.write_all(b"\n")?;
        }
        out.write_all(prompt.as_bytes())?;
        out.flush()?;
        state.prompt = Some(prompt.to_owned());
        Ok(())
    }

    /// Like [`Screen::aside`], with the screen already held.
    pub fn aside(&mut self, text: &str) -> io::Result<()> {
        let state = &mut *self.0;
        match (&mut state.sink, &state.prompt) {
            (Sink::Printer(_), _) => self.line(text),
            (Sink::Plain(out), Some(prompt)) => {
                write!(out, "\n{text}\n{prompt}")?;
                out.flush()
            }
            (Sink::Plain(out), None) => {
                writeln!(out, "{text}")?;
                out.flush()
            }
        }
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
    fn nothing_waits_for_the_external_printer_and_order_is_kept() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&got);
        // A printer stuck until released, as rustyline's is until readline runs again.
        let (release, released) = bounded::<()>(0);
        let printer: ExternalPrinter = Box::new(move |s| {
            let _ = released.recv();
            sink.lock().map_err(|_| io::Error::other("poisoned"))?.push(s);
            Ok(())
        });
        let Ok(screen) = Screen::with_printer(printer) else { panic!("no printer thread") };
        assert!(screen.aside("x").is_ok() && screen.lock().line("answer").is_ok() && screen.aside("y").is_ok());
        drop(release);
        screen.settle(Duration::from_secs(5));
        let want: Vec<String> = ["x\n", "answer\n", "y\n"].map(String::from).to_vec();
        assert_eq!(got.lock().map(|g| g.clone()).unwrap_or_default(), want);
    }
}
