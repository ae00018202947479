//! The terminal client behind `ChatClient IP PORT`: the seeds' menu (login, register,
//! quit), then commands such as `chat:friendid:message`, with messages from others
//! printed as they arrive. It speaks the v2 login and tags every request with a `reqid`.
//!
//! # Threads
//!
//! - **Main thread** (the caller of [`run`] or [`run_terminal`]): [`session`] drives the
//!   menu and the commands. It asks the input thread for a line, waits for the line or
//!   the connection's end, sends the request and blocks until the reply with its `reqid`
//!   comes back, then prints the answer in words.
//! - **Input thread** ([`input`]): reads one line per request of the main thread:
//!   rustyline on a terminal ([`terminal`]), plain lines otherwise ([`input::PlainLines`]).
//! - **Reader thread** ([`connection`]): the only reader of the socket; hands replies to
//!   the waiting request by `reqid`, pushes to the push printer, and reports the close.
//! - **Keepalive thread** ([`connection`]): PING after [`Options::keepalive`] without
//!   sending anything.
//! - **Push printer thread** ([`screen`]): prints each push through the shared
//!   [`screen::Screen`], above the input line on a terminal.
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
}

impl Default for Options {
    fn default() -> Options {
        Options {
            keepalive: Duration::from_secs(30),
            reply_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(10),
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
    drive(conn, &screen, &input)
}

/// Runs the client on the terminal: rustyline reads stdin with line editing and
/// history, pushes are printed above the line being typed, and everything else goes to
/// `output` (stdout). The terminal's settings are restored however it ends.
pub fn run_terminal<W>(host: &str, port: u16, output: W, options: &Options) -> Result<(), ClientError>
where
    W: Write + Send + 'static,
{
    // Connect first: an unreachable server is reported without touching the terminal.
    let conn = Connection::connect(host, port, options)?;
    let _mode = ModeGuard::save();
    let (terminal, printer) = Terminal::open().map_err(ClientError::Input)?;
    let screen = match printer {
        Some(printer) => Screen::with_printer(output, printer).map_err(ClientError::Output)?,
        None => Screen::new(output),
    };
    let input = InputThread::spawn(Box::new(terminal)).map_err(ClientError::Input)?;
    let result = drive(conn, &screen, &input);
    if result.is_err() {
        // rustyline may still be reading a line: leave that line, and its bracketed-paste mode.
        let _ = screen.lock().line(terminal::leave_editing());
    }
    result
}

/// How long the end of a run waits for pushes already read to be printed. On a terminal
/// the line editor's printer can wait for a `readline` that will not come.
const LAST_PUSHES: Duration = Duration::from_secs(1);

/// The session over a connection, then an orderly end: the socket is shut down, and
/// pushes already read are printed before returning.
fn drive(conn: Connection, screen: &Screen, input: &InputThread) -> Result<(), ClientError> {
    let printer = screen.spawn_push_printer(conn.pushes()).map_err(ClientError::Output)?;
    let result = Session::new(&conn, screen, input).run();
    drop(conn);
    let _ = printer.join();
    screen.settle(LAST_PUSHES);
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{self, BufReader, Read};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use serde_json::{json, Value};

    #[derive(Clone, Default)]
    struct Out(Arc<Mutex<Vec<u8>>>);

    impl Write for Out {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().map_err(|_| io::Error::other("poisoned"))?.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Out {
        fn text(&self) -> String {
            self.0.lock().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default()
        }
    }

    /// Input that ends after a pause: the client idles at the menu meanwhile.
    struct SlowEof(Duration);

    impl Read for SlowEof {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            std::thread::sleep(self.0);
            Ok(0)
        }
    }

    fn opts(keepalive_ms: u64) -> Options {
        Options {
            keepalive: Duration::from_millis(keepalive_ms),
            reply_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
        }
    }

    fn read_frame(r: &mut BufReader<TcpStream>) -> Option<Value> {
        let mut line = String::new();
        match io::BufRead::read_line(r, &mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => serde_json::from_str(line.trim()).ok(),
        }
    }

    #[test]
    fn an_unreachable_server_is_one_sentence() {
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(1);
        let r = run("127.0.0.1", port, io::empty(), Out::default(), &opts(0));
        let text = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(text.starts_with(&format!("Cannot connect to the chat server at 127.0.0.1:{port}")), "{text}");
        assert!(!text.contains('\n'));
    }

    #[test]
    fn an_idle_client_pings() {
        let Ok(listener) = TcpListener::bind("127.0.0.1:0") else { return };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let server = std::thread::spawn(move || {
            let (s, _) = listener.accept().ok()?;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            let mut r = BufReader::new(s);
            let first = read_frame(&mut r);
            let at = Instant::now();
            let second = read_frame(&mut r);
            let gap = at.elapsed();
            // Hold the connection until the client leaves.
            while read_frame(&mut r).is_some() {}
            Some((first, second, gap))
        });
        let out = Out::default();
        let r = run("127.0.0.1", port, BufReader::new(SlowEof(Duration::from_millis(400))), out.clone(), &opts(100));
        assert!(r.is_ok(), "{r:?}");
        let got = server.join().ok().flatten();
        let Some((Some(first), Some(second), gap)) = got else { panic!("no pings: {got:?}") };
        assert_eq!(first, json!({"msgid": 16}));
        assert_eq!(second, json!({"msgid": 16}));
        assert!(gap >= Duration::from_millis(80), "{gap:?}");
        assert!(out.text().contains("choice:"));
    }

    #[test]
    fn replies_match_by_reqid_and_pushes_print_after_the_answer() {
        let Ok(listener) = TcpListener::bind("127.0.0.1:0") else { return };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let server = std::thread::spawn(move || -> Option<Value> {
            let (s, _) = listener.accept().ok()?;
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            let mut w = s.try_clone().ok()?;
            let mut r = BufReader::new(s);
            let login = read_frame(&mut r)?;
            let reqid = login.get("reqid")?.clone();
            // A stray reply, then the real one, then a push in the same write, NUL-terminated.
            let ack = json!({"msgid": 2, "errno": 0, "id": 5, "name": "eve", "reqid": reqid,
                "offlinemsg": [{"msgid": 10, "id": 2, "name": "bob", "groupid": 7, "msg": "while you were away", "time": "t0"}]});
            let push = json!({"msgid": 6, "id": 2, "name": "bob", "toid": 5, "msg": "live: hi", "time": "t1"});
            let bytes = format!("{}\0{ack}\0{push}\0", json!({"msgid": 2, "errno": 1, "reqid": 999_999}));
            w.write_all(bytes.as_bytes()).ok()?;
            let friends = read_frame(&mut r)?;
            let reply = json!({"msgid": 15, "req": 14, "errno": 0, "friends": [{"id": 2, "name": "bob", "state": "online"}], "reqid": friends.get("reqid")?});
            w.write_all(format!("{reply}\n").as_bytes()).ok()?;
            while read_frame(&mut r).is_some() {}
            Some(login)
        });
        let out = Out::default();
        let input = io::Cursor::new(b"1\n5\nsecret\nshowfriendlist\n".to_vec());
        let r = run("127.0.0.1", port, input, out.clone(), &opts(0));
        assert!(r.is_ok(), "{r:?}");
        let login = server.join().ok().flatten();
        assert_eq!(
            login.as_ref().map(|l| (&l["msgid"], &l["v"], &l["password"])),
            Some((&json!(1), &json!(2), &json!("secret"))),
            "{login:?}"
        );
        let text = out.text();
        let at = |s: &str| text.find(s).unwrap_or_else(|| panic!("{s:?} not in:\n{text}"));
        assert!(at("logged in as eve (id 5)") < at("[t0] group 7 | bob (2): while you were away"));
        assert!(at("commands:") < at("[t1] bob (2): live: hi"), "{text}");
        at("friends (1):\n  2 bob (online)");
        assert!(!text.contains("wrong user id"), "{text}");
    }

    #[test]
    fn a_vanished_server_ends_the_run_with_an_error() {
        let Ok(listener) = TcpListener::bind("127.0.0.1:0") else { return };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let server = std::thread::spawn(move || {
            let conn = listener.accept();
            std::thread::sleep(Duration::from_millis(100));
            drop(conn);
        });
        let started = Instant::now();
        let r = run("127.0.0.1", port, BufReader::new(SlowEof(Duration::from_secs(10))), Out::default(), &opts(0));
        let _ = server.join();
        assert!(started.elapsed() < Duration::from_secs(5));
        let text = r.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(text.starts_with("Lost the connection to the chat server"), "{text}");
    }
}
