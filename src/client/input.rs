//! Where the user's lines come from, and the input thread that reads them.
//!
//! The main thread never reads input itself: it asks the input thread for one line
//! (with a prompt) and then waits for either that line or the end of the connection,
//! so a server that vanishes is reported at once even while the user is not typing.

use std::io::{self, BufRead};
use std::thread::JoinHandle;

use crossbeam_channel::{unbounded, Receiver, Sender};

use super::screen::Screen;

/// A source of lines.
pub trait LineSource: Send {
    /// Shows `prompt` and reads one line, without its line ending; `None` at the end of
    /// input. `remember` says whether the line may go into the history (not passwords).
    fn read_line(&mut self, prompt: &str, remember: bool) -> io::Result<Option<String>>;
}

/// Plain lines from any reader (a pipe, a file, a test), prompts written to the screen.
pub struct PlainLines<R> {
    reader: R,
    screen: Screen,
}

impl<R: BufRead + Send> PlainLines<R> {
    pub fn new(reader: R, screen: Screen) -> PlainLines<R> {
        PlainLines { reader, screen }
    }
}

impl<R: BufRead + Send> LineSource for PlainLines<R> {
    fn read_line(&mut self, prompt: &str, _remember: bool) -> io::Result<Option<String>> {
        self.screen.lock().prompt(prompt)?;
        let mut buf = Vec::new();
        if self.reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(None);
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
    }
}

/// A line, the end of input (`Ok(None)`), or a read error.
pub type LineResult = io::Result<Option<String>>;

/// The input thread: reads one line per request from the main thread.
///
/// Dropping this handle lets the thread end after its current read; a thread blocked in
/// a read is left behind (the process is about to exit in that case).
pub struct InputThread {
    ask: Sender<(String, bool)>,
    lines: Receiver<LineResult>,
    _thread: JoinHandle<()>,
}

impl InputThread {
    /// Starts the thread over `source`.
    pub fn spawn(mut source: Box<dyn LineSource>) -> io::Result<InputThread> {
        let (ask, asks) = unbounded::<(String, bool)>();
        let (line_tx, lines) = unbounded();
        let thread = std::thread::Builder::new().name("chat-input".into()).spawn(move || {
            for (prompt, remember) in asks {
                let line = source.read_line(&prompt, remember);
                let more = matches!(line, Ok(Some(_)));
                if line_tx.send(line).is_err() || !more {
                    break;
                }
            }
        })?;
        Ok(InputThread { ask, lines, _thread: thread })
    }

    /// Asks for one line; it arrives on [`InputThread::lines`]. If the thread has ended
    /// (end of input), `lines` is disconnected instead.
    pub fn ask(&self, prompt: &str, remember: bool) {
        let _ = self.ask.send((prompt.to_owned(), remember));
    }

    /// The lines asked for, one per [`InputThread::ask`].
    pub fn lines(&self) -> &Receiver<LineResult> {
        &self.lines
    }
}
