//! Terminal mode: rustyline line editing with history, pushes printed above the line
//! being edited through rustyline's `ExternalPrinter`, and the terminal's settings put
//! back however the client ends.
//!
//! Threads: the [`Terminal`] line source runs on the input thread (rustyline's
//! `readline` blocks there); the printer runs on the push printer thread; [`ModeGuard`]
//! is made and dropped on the main thread.

use std::io;

use rustyline::error::ReadlineError;
use rustyline::{DefaultEditor, ExternalPrinter as _};

use super::input::LineSource;
use super::screen::ExternalPrinter;

/// rustyline's editor as a [`LineSource`].
pub struct Terminal {
    editor: DefaultEditor,
}

fn to_io(e: ReadlineError) -> io::Error {
    match e {
        ReadlineError::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}

impl Terminal {
    /// Opens the editor on stdin/stdout, and a printer for pushes when both are terminals.
    pub fn open() -> io::Result<(Terminal, Option<ExternalPrinter>)> {
        let mut editor = DefaultEditor::new().map_err(to_io)?;
        let printer = match editor.create_external_printer() {
            Ok(mut p) => Some(Box::new(move |msg: String| p.print(msg).map_err(to_io)) as ExternalPrinter),
            Err(e) => {
                log::debug!("no external printer ({e}); pushes are printed inline");
                None
            }
        };
        Ok((Terminal { editor }, printer))
    }
}

impl LineSource for Terminal {
    fn read_line(&mut self, prompt: &str, remember: bool) -> io::Result<Option<String>> {
        match self.editor.readline(prompt) {
            Ok(line) => {
                if remember && !line.trim().is_empty() {
                    let _ = self.editor.add_history_entry(line.as_str());
                }
                Ok(Some(line))
            }
            Err(ReadlineError::Eof) => Ok(None),
            // Ctrl-C abandons the line being typed; Ctrl-D (or loginout, quit) leaves.
            Err(ReadlineError::Interrupted) => Ok(Some(String::new())),
            Err(e) => Err(to_io(e)),
        }
    }
}

/// What ends a line left half-edited by rustyline: the escape that turns off the
/// bracketed-paste mode it turns on while reading, when stdout is a terminal.
pub fn leave_editing() -> &'static str {
    // SAFETY: isatty only inspects the descriptor.
    if unsafe { libc::isatty(libc::STDOUT_FILENO) } == 1 {
        "\x1b[?2004l"
    } else {
        ""
    }
}

/// Saves the terminal's settings of stdin and restores them when dropped, so an exit
/// while rustyline holds the terminal in raw mode (the server vanished while the user
/// was typing) leaves a usable shell behind.
pub struct ModeGuard(Option<libc::termios>);

impl ModeGuard {
    pub fn save() -> ModeGuard {
        // SAFETY: termios is plain data; tcgetattr fills it or fails, and we keep it only
        // on success.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut t) == 0 {
                ModeGuard(Some(t))
            } else {
                ModeGuard(None)
            }
        }
    }
}

impl Drop for ModeGuard {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            // SAFETY: `t` came from tcgetattr on the same descriptor.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, t);
            }
        }
    }
}
