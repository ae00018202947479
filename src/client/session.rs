//! The main thread's work: the menu, login and registration, the command loop, and
//! keeping a logged-in session going: reconnecting when the connection drops, sending
//! unacknowledged chat messages again with their cmid, confirming what is shown.
//!
//! Runs entirely on the thread that calls [`super::run`]. It asks the input thread for
//! each line and waits for that line, the connection's end, or the moment to send
//! unacknowledged messages again, whichever comes first; it holds the screen from
//! sending a request until the answer is printed. Each connection has its push printer
//! thread ([`pushes`]); the main thread replaces both when it reconnects.
//!
//! To reconnect without asking, the session keeps what logged it in: the password, or
//! the token a v2 server gave in exchange (protocol §15), which then replaces it.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{after, never, select};
use serde_json::{json, Value};

use super::commands::Command;
use super::connection::Connection;
use super::error::ClientError;
use super::history::{Cursor, Next};
use super::inbox::Inbox;
use super::input::InputThread;
use super::outbox::{Again, Outbox, Verdict};
use super::pushes::{self, PushPrinter};
use super::render::{self, errno_of};
use super::screen::{Screen, ScreenGuard};
use super::Options;
use crate::proto::msg::{errno, LOGIN, REG};

/// Why the session stops: the end of input (a normal exit) or an error.
enum Stop {
    Eof,
    Fail(ClientError),
}

impl From<ClientError> for Stop {
    fn from(e: ClientError) -> Stop {
        Stop::Fail(e)
    }
}

impl From<std::io::Error> for Stop {
    fn from(e: std::io::Error) -> Stop {
        Stop::Fail(ClientError::Output(e))
    }
}

/// What proves who the user is: the password typed, or the token a v2 server gave.
#[derive(Clone)]
enum Secret {
    Password(String),
    Token(String),
}

/// The logged-in user.
#[derive(Clone)]
struct Account {
    id: i64,
    name: String,
    secret: Secret,
}

/// LOGIN for user `id`, as a v2 client.
fn login_request(id: i64, secret: &Secret) -> Value {
    match secret {
        Secret::Password(p) => json!({"msgid": LOGIN, "id": id, "password": p, "v": 2}),
        Secret::Token(t) => json!({"msgid": LOGIN, "id": id, "token": t, "v": 2}),
    }
}

impl Account {
    /// The account a successful LOGIN_ACK describes; its token, if any, replaces `secret`.
    fn from_login(reply: &Value, id: i64, secret: Secret) -> Account {
        let secret = match reply.get("token").and_then(Value::as_str) {
            Some(token) if !token.is_empty() => Secret::Token(token.to_owned()),
            _ => secret,
        };
        Account {
            id: reply.get("id").and_then(Value::as_i64).unwrap_or(id),
            name: reply.get("name").and_then(Value::as_str).unwrap_or_default().to_owned(),
            secret,
        }
    }
}

/// A connection and the push printer thread reading its pushes.
struct Link {
    conn: Connection,
    printer: Option<PushPrinter>,
}

impl Link {
    fn new(conn: Connection, screen: &Screen, inbox: &Arc<Mutex<Inbox>>) -> Result<Link, ClientError> {
        let printer = PushPrinter::spawn(conn.pushes(), conn.outlet(), screen.clone(), Arc::clone(inbox))
            .map_err(ClientError::Output)?;
        Ok(Link { conn, printer: Some(printer) })
    }

    /// Lets the push being printed be confirmed, shuts the connection down and waits
    /// until the pushes it read are printed. Never called with the screen held: the
    /// push printer may be waiting for it.
    fn finish(&mut self) {
        if let Some(printer) = &self.printer {
            printer.idle();
        }
        self.conn.close();
        if let Some(printer) = self.printer.take() {
            printer.join();
        }
    }
}

/// Why logging in again failed.
enum Retry {
    /// Worth another try (no connection, no answer, 503, the old session not yet gone).
    Later(String),
    /// The server refused the account itself.
    Never(String),
    Fail(Stop),
}

/// The first pause between attempts to reconnect; it doubles up to two seconds.
const FIRST_RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// One run of the menu, over one connection at a time.
pub struct Session<'a> {
    host: &'a str,
    port: u16,
    options: &'a Options,
    screen: &'a Screen,
    input: &'a InputThread,
    link: Link,
    inbox: Arc<Mutex<Inbox>>,
    outbox: Outbox,
    history: Cursor,
    account: Option<Account>,
}

/// The local time as the protocol writes it.
fn now() -> String {
    chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

fn lock(inbox: &Mutex<Inbox>) -> MutexGuard<'_, Inbox> {
    inbox.lock().unwrap_or_else(|p| p.into_inner())
}

impl<'a> Session<'a> {
    /// A session over `conn`, a connection to `host:port`; reconnections go there too.
    pub fn new(
        host: &'a str,
        port: u16,
        options: &'a Options,
        conn: Connection,
        screen: &'a Screen,
        input: &'a InputThread,
    ) -> Result<Session<'a>, ClientError> {
        let inbox = Arc::new(Mutex::new(Inbox::default()));
        let link = Link::new(conn, screen, &inbox)?;
        Ok(Session {
            host,
            port,
            options,
            screen,
            input,
            link,
            inbox,
            outbox: Outbox::default(),
            history: Cursor::default(),
            account: None,
        })
    }

    /// The menu until `quit` or the end of input (`Ok`), or until the connection (and
    /// every attempt to reconnect) or the output fails. Says which chat messages were
    /// never acknowledged, and prints the pushes already read before returning.
    pub fn run(mut self) -> Result<(), ClientError> {
        let result = match self.menu() {
            Ok(()) | Err(Stop::Eof) => Ok(()),
            Err(Stop::Fail(e)) => Err(e),
        };
        let unsent = self.give_up();
        self.link.finish();
        match (result, unsent) {
            (Ok(()), Err(Stop::Fail(e))) => Err(e),
            (result, _) => result,
        }
    }

    fn menu(&mut self) -> Result<(), Stop> {
        loop {
            self.screen.lock().lines(render::MENU)?;
            let choice = self.ask("choice:", false)?;
            match choice.trim() {
                "1" => {
                    if self.login()? {
                        self.commands()?;
                    }
                }
                "2" => self.register()?,
                "3" => return Ok(()),
                "" => {}
                other => self.say(&format!("invalid choice \"{}\": type 1, 2 or 3", render::clean(other)))?,
            }
        }
    }

    fn say(&self, text: &str) -> Result<(), Stop> {
        Ok(self.screen.lock().line(text)?)
    }

    /// One line from the user, unless the input ends first or the connection ends and
    /// cannot be made again. Meanwhile a logged-in session reconnects when it has to and
    /// sends unacknowledged chat messages again when they are due.
    fn ask(&mut self, prompt: &str, remember: bool) -> Result<String, Stop> {
        let input = self.input;
        input.ask(prompt, remember);
        loop {
            let closed = self.link.conn.closed().clone();
            let due = self.account.as_ref().and(self.outbox.due());
            let retry = due.map(|at| after(at.saturating_duration_since(Instant::now()))).unwrap_or_else(never);
            select! {
                recv(input.lines()) -> line => return match line {
                    Ok(Ok(Some(line))) => Ok(line),
                    Ok(Ok(None)) | Err(_) => Err(Stop::Eof),
                    Ok(Err(e)) => Err(Stop::Fail(ClientError::Input(e))),
                },
                recv(closed) -> reason => {
                    self.reconnect(reason.unwrap_or_else(|_| "the connection ended".into()))?;
                    self.flush(false)?;
                }
                recv(retry) -> _ => self.flush(false)?,
            }
        }
    }

    /// Sends `request` and returns its reply; `None` (after saying so) when the server
    /// did not answer in time, or when a logged-in session lost its connection (the
    /// next [`Session::ask`] reconnects).
    fn request(&self, screen: &mut ScreenGuard<'_>, request: Value) -> Result<Option<Value>, Stop> {
        match self.link.conn.call(request) {
            Ok(reply) => Ok(Some(reply)),
            Err(e @ ClientError::NoReply { .. }) => {
                screen.line(&e.to_string())?;
                Ok(None)
            }
            Err(ClientError::Lost { reason, .. }) if self.account.is_some() => {
                screen.line(&format!(
                    "the connection was lost before the answer came ({}); it may not have been done",
                    render::clean(&reason)
                ))?;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn register(&mut self) -> Result<(), Stop> {
        let name = self.ask("username:", false)?;
        let name = name.trim();
        if name.is_empty() {
            return self.say("the name cannot be empty");
        }
        let password = self.ask("userpassword:", false)?;
        let mut screen = self.screen.lock();
        if let Some(reply) = self.request(&mut screen, json!({"msgid": REG, "name": name, "password": password}))? {
            screen.line(&render::registered(name, &reply))?;
        }
        Ok(())
    }

    /// Logs in from the menu; whether it worked.
    fn login(&mut self) -> Result<bool, Stop> {
        let id = self.ask("userid:", false)?;
        let Ok(id) = id.trim().parse::<i64>() else {
            self.say("the user id is a number (registering prints it)")?;
            return Ok(false);
        };
        let secret = Secret::Password(self.ask("userpassword:", false)?);
        let screen = self.screen;
        let mut guard = screen.lock();
        let Some(reply) = self.request(&mut guard, login_request(id, &secret))? else {
            return Ok(false);
        };
        if errno_of(&reply) != errno::OK {
            guard.line(&render::login_failure(&reply))?;
            return Ok(false);
        }
        // Mids shown to another account say nothing about this one.
        lock(&self.inbox).clear();
        let sorted = lock(&self.inbox).sort(render::offline_of(&reply));
        guard.lines(&render::login_summary(&reply, &sorted.show))?;
        guard.lines(&render::help())?;
        drop(guard);
        pushes::confirm(&self.link.conn.outlet(), &sorted.confirm);
        self.account = Some(Account::from_login(&reply, id, secret));
        Ok(true)
    }

    /// Commands until `loginout` succeeds.
    fn commands(&mut self) -> Result<(), Stop> {
        loop {
            let line = self.ask("> ", true)?;
            if line.trim().is_empty() {
                continue;
            }
            let cmd = match Command::parse(&line) {
                Ok(cmd) => cmd,
                Err(e) => {
                    self.say(&e.0)?;
                    continue;
                }
            };
            let Some(me) = &self.account else { return Ok(()) };
            let Some(request) = cmd.request(me.id, &me.name, &now()) else {
                self.screen.lock().lines(&render::help())?;
                continue;
            };
            match cmd {
                Command::Chat { .. } | Command::GroupChat { .. } => {
                    self.history.forget();
                    self.chat(cmd, request)?;
                }
                Command::History { .. } | Command::GroupHistory { .. } => self.history_page(&cmd, request)?,
                _ => {
                    self.history.forget();
                    let screen = self.screen;
                    let mut guard = screen.lock();
                    let Some(reply) = self.request(&mut guard, request)? else {
                        continue;
                    };
                    guard.line(&render::outcome(&cmd, &reply))?;
                    if cmd == Command::LoginOut && errno_of(&reply) == errno::OK {
                        drop(guard);
                        self.account = None;
                        self.give_up()?;
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Queues a chat message with a fresh cmid and sends what is due, in order.
    fn chat(&mut self, cmd: Command, request: Value) -> Result<(), Stop> {
        let ahead = self.outbox.len();
        self.outbox.queue(cmd.clone(), request);
        if ahead > 0 && !self.outbox.ready(Instant::now()) {
            return self.say(&render::queued(&cmd, ahead));
        }
        self.flush(true)
    }

    /// Sends queued chat messages from the front until one is not acknowledged (it
    /// waits for a pause, or for a reconnection, which this does at once). `answer`
    /// says the user is waiting for it (no prompt is shown).
    fn flush(&mut self, answer: bool) -> Result<(), Stop> {
        loop {
            let Some(unsent) = self.outbox.front().cloned() else { return Ok(()) };
            if !self.outbox.ready(Instant::now()) {
                return Ok(());
            }
            let screen = self.screen;
            let mut guard = screen.lock();
            let waiting = self.outbox.len();
            let result = self.link.conn.call(unsent.request.clone());
            let verdict = self.outbox.settle(&result, Instant::now());
            let text = match &verdict {
                Verdict::Settled(reply) => render::outcome(&unsent.cmd, reply),
                Verdict::Again(why) => render::unsent(&unsent.cmd, why, waiting),
            };
            if answer {
                guard.line(&text)?;
            } else {
                guard.aside(&text)?;
            }
            drop(guard);
            match verdict {
                Verdict::Settled(_) => {}
                Verdict::Again(Again::Lost(reason)) => self.reconnect(reason)?,
                Verdict::Again(_) => return Ok(()),
            }
        }
    }

    /// A page of history: the latest, or the one before the page shown last.
    fn history_page(&mut self, cmd: &Command, request: Value) -> Result<(), Stop> {
        let (request, older) = match self.history.next(cmd, request) {
            Next::NoOlder => return self.say(&render::no_older(cmd)),
            Next::Send { request, older } => (request, older),
        };
        let screen = self.screen;
        let mut guard = screen.lock();
        let Some(reply) = self.request(&mut guard, request)? else {
            self.history.forget();
            return Ok(());
        };
        self.history.record(cmd, &reply);
        if errno_of(&reply) == errno::OK {
            guard.lines(&render::history_page(cmd, &reply, older))?;
        } else {
            guard.line(&render::outcome(cmd, &reply))?;
        }
        Ok(())
    }

    /// Gives up on unacknowledged chat messages, saying which.
    fn give_up(&mut self) -> Result<(), Stop> {
        let unsent: Vec<Command> = self.outbox.take_all().into_iter().map(|u| u.cmd).collect();
        if unsent.is_empty() {
            return Ok(());
        }
        Ok(self.screen.lock().lines(&render::not_sent(&unsent))?)
    }

    /// After the connection ended for `reason`: a logged-in session connects and logs
    /// in again, trying for [`Options::reconnect_within`]; otherwise, or when that
    /// fails, the session ends with [`ClientError::Lost`].
    fn reconnect(&mut self, reason: String) -> Result<(), Stop> {
        self.link.finish();
        let server = self.link.conn.server().to_owned();
        let lost = |why: Option<String>| {
            let reason = match why {
                Some(why) => format!("{reason}; reconnecting failed: {why}"),
                None => reason.clone(),
            };
            Stop::Fail(ClientError::Lost { server: server.clone(), reason })
        };
        let Some(account) = self.account.clone() else { return Err(lost(None)) };
        if self.options.reconnect_within.is_zero() {
            return Err(lost(None));
        }
        self.screen.aside(&format!(
            "lost the connection to the chat server at {server} ({}); reconnecting...",
            render::clean(&reason)
        ))?;
        let deadline = Instant::now() + self.options.reconnect_within;
        let mut pause = FIRST_RECONNECT_PAUSE;
        loop {
            let why = match self.relogin(&account) {
                Ok(()) => return Ok(()),
                Err(Retry::Fail(stop)) => return Err(stop),
                Err(Retry::Never(why)) => return Err(lost(Some(why))),
                Err(Retry::Later(why)) => why,
            };
            log::debug!("reconnecting: {why}");
            if Instant::now() + pause > deadline {
                return Err(lost(Some(why)));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// One attempt to connect and log in again as `account`. On success the new
    /// connection replaces the old one, its offline messages are shown (less repeats)
    /// and confirmed, and queued chat messages may be sent at once.
    fn relogin(&mut self, account: &Account) -> Result<(), Retry> {
        let conn = Connection::connect(self.host, self.port, self.options).map_err(|e| Retry::Later(e.to_string()))?;
        let reply = conn.call(login_request(account.id, &account.secret)).map_err(|e| Retry::Later(e.to_string()))?;
        match errno_of(&reply) {
            errno::OK => {}
            errno::BAD_LOGIN => return Err(Retry::Never(render::login_failure(&reply))),
            _ => return Err(Retry::Later(render::login_failure(&reply))),
        }
        let me = Account::from_login(&reply, account.id, account.secret.clone());
        // Shown before the new push printer starts, so before any newer push.
        let sorted = lock(&self.inbox).sort(render::offline_of(&reply));
        let mut text = vec![format!("reconnected to {} as {} (id {})", conn.server(), render::clean(&me.name), me.id)];
        if !sorted.show.is_empty() {
            text.extend(render::offline_messages(&sorted.show));
        }
        self.screen.aside(&text.join("\n")).map_err(|e| Retry::Fail(e.into()))?;
        pushes::confirm(&conn.outlet(), &sorted.confirm);
        self.link = Link::new(conn, self.screen, &self.inbox).map_err(|e| Retry::Fail(e.into()))?;
        self.account = Some(me);
        self.outbox.wake(Instant::now());
        Ok(())
    }
}
