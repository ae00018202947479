//! The real `ChatClient` binary on a pseudo-terminal, as a person (or tmux, or a paste,
//! or an input method) drives it: whole lines arrive in one write, Enter included, and
//! must be acted on at once, also while pushes are being printed above the prompt.
//!
//! The test plays the terminal: it answers the cursor-position query (`ESC [ 6 n`) the
//! line editor sends before each prompt, as a real terminal does.

use std::fs::File;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{bin, Server, User, WAIT};

use super::registered;

/// A `ChatClient` whose stdin and stdout are the slave side of a pseudo-terminal.
struct Tty {
    child: Child,
    /// The master side, for typing.
    keys: File,
    /// Everything the client wrote to the terminal.
    screen: Arc<Mutex<Vec<u8>>>,
    /// How far `expect` has read the screen.
    seen: usize,
}

fn lock(buf: &Mutex<Vec<u8>>) -> std::sync::MutexGuard<'_, Vec<u8>> {
    buf.lock().unwrap_or_else(|p| p.into_inner())
}

/// Opens a pseudo-terminal of 24 rows by 100 columns: (master, slave).
fn openpty() -> (File, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize { ws_row: 24, ws_col: 100, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: openpty writes two descriptors into the integers it is given; the name
    // and termios pointers may be null; `size` outlives the call.
    let rc = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned by nobody else.
    unsafe { (File::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// Copies the terminal's output into `screen` and answers each cursor-position query.
fn play_terminal(mut master: File, screen: Arc<Mutex<Vec<u8>>>) {
    const QUERY: &[u8] = b"\x1b[6n";
    let mut answer = match master.try_clone() {
        Ok(f) => f,
        Err(e) => panic!("clone the pty master: {e}"),
    };
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        let mut scanned = 0;
        // EIO once the client has exited and the slave is closed.
        while let Ok(n) = master.read(&mut chunk) {
            if n == 0 {
                break;
            }
            let mut out = lock(&screen);
            out.extend_from_slice(&chunk[..n]);
            while let Some(at) = out[scanned..].windows(QUERY.len()).position(|w| w == QUERY) {
                scanned += at + QUERY.len();
                let _ = answer.write_all(b"\x1b[1;1R");
            }
            scanned = scanned.max(out.len().saturating_sub(QUERY.len() - 1));
        }
    });
}

impl Tty {
    fn start(addr: SocketAddr) -> Tty {
        Tty::start_with(addr, &[])
    }

    fn start_with(addr: SocketAddr, flags: &[&str]) -> Tty {
        let (master, slave) = openpty();
        let io = || Stdio::from(slave.try_clone().expect("dup the pty slave"));
        let child = Command::new(bin("ChatClient"))
            .args([addr.ip().to_string(), addr.port().to_string()])
            .args(flags)
            .env_remove("RUST_LOG")
            .env("TERM", "xterm-256color")
            .stdin(io())
            .stdout(io())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ChatClient");
        // Only the child holds the slave now, so the master reads EIO when it exits.
        drop(slave);
        let keys = master.try_clone().expect("clone the pty master");
        let screen = Arc::new(Mutex::new(Vec::new()));
        play_terminal(master, Arc::clone(&screen));
        Tty { child, keys, screen, seen: 0 }
    }

    /// Whether the terminal is back in line mode with echo, as a shell wants it.
    fn cooked(&self) -> bool {
        // SAFETY: termios is plain data that tcgetattr fills; the master is open.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::tcgetattr(std::os::fd::AsRawFd::as_raw_fd(&self.keys), &mut t) };
        assert_eq!(rc, 0, "tcgetattr: {}", std::io::Error::last_os_error());
        t.c_lflag & (libc::ICANON | libc::ECHO) == (libc::ICANON | libc::ECHO)
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&lock(&self.screen)).into_owned()
    }

    /// Types `text` in ONE write, as a paste, an input method or tmux's send-keys does.
    fn type_at_once(&mut self, text: &str) {
        let n = self.keys.write(text.as_bytes()).expect("write to the terminal");
        assert_eq!(n, text.len(), "a short write to the terminal");
    }

    /// Waits (at most `WAIT`) for `want` on the screen after what was already expected.
    fn expect(&mut self, want: &str) {
        self.seen = self.wait_for(want, self.seen);
    }

    /// Waits (at most `WAIT`) for `want` on the screen from byte `from` on; where it ends.
    fn wait_for(&self, want: &str, from: usize) -> usize {
        let deadline = Instant::now() + WAIT;
        loop {
            let screen = lock(&self.screen);
            if let Some(pos) = screen.get(from..).and_then(|rest| find(rest, want.as_bytes())) {
                return from + pos + want.len();
            }
            drop(screen);
            if Instant::now() >= deadline {
                panic!("{want:?} not on the screen within {WAIT:?}; screen:\n{}", self.screen());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Logs in through the menu, each answer and its Enter typed in one write, and waits
    /// for the command prompt.
    fn login(&mut self, id: i64, name: &str) {
        self.expect("choice:");
        self.type_at_once("1\r");
        self.expect("userid:");
        self.type_at_once(&format!("{id}\r"));
        self.expect("userpassword:");
        self.type_at_once("pw\r");
        self.expect(&format!("logged in as {name} (id {id})"));
        self.expect("loginout");
        self.expect("> ");
    }

    /// Ctrl-D at the prompt: the client exits with status 0.
    fn finish(mut self) {
        self.type_at_once("\x04");
        let status = self.exit();
        assert_eq!(status.code(), Some(0), "screen:\n{}", self.screen());
    }

    fn exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("ChatClient did not exit within {WAIT:?}; screen:\n{}", self.screen());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Tty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn a_command_typed_in_one_write_is_sent_at_once() {
    let s = Server::start(&[]);
    let mut bob = User::new(&s, "bob");
    let (id, name) = registered(&s, "tty");
    let mut cli = Tty::start(s.addr);
    cli.login(id, &name);

    // A paste or an input method: many characters, multi-byte ones too, and Enter.
    let msg = "你好, pasted: all of it";
    cli.type_at_once(&format!("chat:{}:{msg}\r", bob.id));
    let p = bob.c.push();
    assert_eq!((p["msg"].as_str(), p["id"].as_i64()), (Some(msg), Some(id)), "{p}");
    cli.expect(&format!("message sent to user {}", bob.id));
    // And the next one, typed the same way.
    cli.expect("> ");
    cli.type_at_once(&format!("chat:{}:again\r", bob.id));
    assert_eq!(bob.c.push()["msg"], "again");
    cli.expect(&format!("message sent to user {}", bob.id));
    cli.finish();
}

#[test]
fn a_command_typed_in_one_write_is_sent_while_pushes_arrive() {
    let s = Server::start(&[]);
    let mut bob = User::new(&s, "bob");
    let (id, name) = registered(&s, "tty");
    let mut cli = Tty::start(s.addr);
    cli.login(id, &name);

    // Carol sends a message every few milliseconds until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut carol = User::new(&s, "carol");
    let carol_name = carol.name.clone();
    let sender = {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(30);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let n = sent.load(Ordering::Relaxed);
                assert_eq!(carol.c.call(json!({"msgid": 6, "toid": id, "msg": format!("push {n}")}))["errno"], 0);
                sent.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(3));
            }
        })
    };
    cli.expect(&format!("{carol_name} ("));
    cli.expect("push 5");

    for round in 0..3 {
        let msg = format!("typed while pushes print, round {round}");
        cli.type_at_once(&format!("chat:{}:{msg}\r", bob.id));
        let p = bob.c.push();
        assert_eq!((p["msg"].as_str(), p["id"].as_i64()), (Some(msg.as_str()), Some(id)), "{p}");
        cli.expect(&format!("message sent to user {}", bob.id));
    }
    let before = sent.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    sender.join().expect("the sender thread");
    // The pushes kept coming while the commands went out, and they are all on the screen.
    assert!(before > 5, "only {before} pushes sent");
    let mut at = 0;
    for n in 0..sent.load(Ordering::Relaxed) {
        at = cli.wait_for(&format!("): push {n}\r"), at);
    }
    cli.finish();
}

#[test]
fn a_vanished_server_leaves_the_terminal_as_it_was() {
    let mut s = Server::start(&[]);
    let (id, name) = registered(&s, "tty");
    let mut cli = Tty::start_with(s.addr, &["--reconnect", "0"]);
    cli.login(id, &name);
    // Half a line typed when the server dies.
    cli.type_at_once("chat:1:half");
    cli.expect("half");
    s.signal("KILL", WAIT);
    let status = cli.exit();
    assert_eq!(status.code(), Some(1), "screen:\n{}", cli.screen());
    // The line being edited is left, bracketed paste is off, and the modes are back.
    cli.expect("\x1b[?2004l\r\n");
    assert!(cli.cooked(), "the terminal is left in raw mode");
}
