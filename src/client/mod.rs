//! The terminal client behind `ChatClient IP PORT`: the seeds' menu (login, register,
//! quit), then commands such as `chat:friendid:message`, with messages from others
//! printed as they arrive. It tags every request with a `reqid` and speaks v2 of the
//! protocol (§7-§10): it confirms the messages it shows with RECEIVED and shows each
//! once ([`inbox`]), gives every chat message a `cmid` and sends it again until it is
//! acknowledged ([`outbox`]), reconnects when the connection drops, and pages back
//! through conversations ([`history`]). Against a server without §7-§10 (no mids in
//! pushes) it behaves as the seeds' client does.
//!
//! # Threads
//!
//! - **Main thread** (the caller of [`run`] or [`run_terminal`]): [`session`] drives the
//!   menu and the commands. It asks the input thread for a line, waits for the line,
//!   the connection's end (then reconnects) or the time to send unacknowledged messages
//!   again; it sends each request and blocks until the reply with its `reqid` comes
//!   back, then prints the answer in words.
//! - **Input thread** ([`input`]): reads one line per request of the main thread:
//!   rustyline on a terminal ([`terminal`]), plain lines otherwise ([`input::PlainLines`]).
//! - **Reader thread** ([`connection`]), one per connection: the only reader of the
//!   socket; hands replies to the waiting request by `reqid`, pushes to the push
//!   printer, and reports the close.
//! - **Keepalive thread** ([`connection`]), one per connection: PING after
//!   [`Options::keepalive`] without sending anything.
//! - **Push printer thread** ([`pushes`]), one per connection: prints each burst of
//!   pushes through the shared [`screen::Screen`], less repeats, then confirms them.
//! - **Printer thread** ([`screen`]), on a terminal: the only caller of rustyline's
//!   printer, which prints above the input line.
//!
//! Only the binary touches stdin, stdout and stderr directly; here, output goes to the
//! `Write` the caller passes in (on a terminal, rustyline also draws the input line).

pub mod commands;
pub mod connection;
pub mod error;
pub mod frame;
pub mod history;
pub mod inbox;
pub mod input;
pub mod outbox;
pub mod pushes;
pub mod render;
pub mod screen;
pub mod session;
pub mod terminal;

use std::io::{BufRead, Write};
use std::time::Duration;

pub use commands::Command;
pub use connection::Connection;
pub use error::ClientError;

use input::{InputThread, PlainLines};
use screen::Screen;
use session::Session;
use terminal::{ModeGuard, Terminal};

/// Timeouts of a client.
#[derive(Debug, Clone)]
pub struct Options {
    /// PING after this long without sending anything; zero turns keepalive off.
    pub keepalive: Duration,
    /// How long a request waits for its reply.
    pub reply_timeout: Duration,
    /// How long connecting may take, per address.
    pub connect_timeout: Duration,
    /// How long a logged-in session keeps trying to connect and log in again after its
    /// connection ends; zero ends the session at once.
    pub reconnect_within: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            keepalive: Duration::from_secs(30),
            reply_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(10),
            reconnect_within: Duration::from_secs(5),
        }
    }
}

/// Runs the client over plain lines from `input`, writing everything to `output`
/// (scripts, pipes, tests). `Ok` at the end of input or `quit`.
pub fn run<R, W>(host: &str, port: u16, input: R, output: W, options: &Options) -> Result<(), ClientError>
where
    R: BufRead + Send + 'static,
    W: Write + Send + 'static,
{
    let conn = Connection::connect(host, port, options)?;
    let screen = Screen::new(output);
    let input = InputThread::spawn(Box::new(PlainLines::new(input, screen.clone()))).map_err(ClientError::Input)?;
    drive(host, port, options, conn, &screen, &input)
}

/// Runs the client on the terminal: rustyline reads stdin with line editing and
/// history, and prints pushes above the line being typed and everything else; `output`
/// (stdout) is used only if rustyline cannot print. The terminal's settings are
/// restored however it ends.
pub fn run_terminal<W>(host: &str, port: u16, output: W, options: &Options) -> Result<(), ClientError>
where
    W: Write + Send + 'static,
{
    // Connect first: an unreachable server is reported without touching the terminal.
    let conn = Connection::connect(host, port, options)?;
    let _mode = ModeGuard::save();
    let (terminal, printer) = Terminal::open().map_err(ClientError::Input)?;
    let (screen, mut direct) = match printer {
        Some(printer) => (Screen::with_printer(printer).map_err(ClientError::Output)?, Some(output)),
        None => (Screen::new(output), None),
    };
    let input = InputThread::spawn(Box::new(terminal)).map_err(ClientError::Input)?;
    let result = drive(host, port, options, conn, &screen, &input);
    if result.is_err() {
        // rustyline may still be reading a line: leave that line, and its bracketed-paste
        // mode, straight on the terminal (its printer would print them as text).
        let _ = match direct.as_mut() {
            Some(out) => writeln!(out, "{}", terminal::leave_editing()).and_then(|()| out.flush()),
            None => screen.lock().line(terminal::leave_editing()),
        };
    }
    result
}

/// How long the end of a run waits for pushes already read to be printed. On a terminal
/// the line editor's printer can wait for a `readline` that will not come.
const LAST_PUSHES: Duration = Duration::from_secs(1);

/// The session, starting over `conn`, then an orderly end: the socket is shut down, and
/// pushes already read are printed before returning.
fn drive(
    host: &str,
    port: u16,
    options: &Options,
    conn: Connection,
    screen: &Screen,
    input: &InputThread,
) -> Result<(), ClientError> {
    let result = Session::new(host, port, options, conn, screen, input).and_then(Session::run);
    screen.settle(LAST_PUSHES);
    result
}

#[cfg(test)]
mod tests;
