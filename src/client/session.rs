//! The main thread's work: the menu, login and registration, and the command loop.
//!
//! Runs entirely on the thread that calls [`super::run`]. It asks the input thread for
//! each line and waits for that line or the connection's end at once; it holds the
//! screen from sending a request until the answer is printed.

use crossbeam_channel::select;
use serde_json::{json, Value};

use super::commands::Command;
use super::connection::Connection;
use super::error::ClientError;
use super::input::InputThread;
use super::render;
use super::screen::{Screen, ScreenGuard};
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

/// The logged-in user.
struct Account {
    id: i64,
    name: String,
}

/// One run of the menu over one connection.
pub struct Session<'a> {
    conn: &'a Connection,
    screen: &'a Screen,
    input: &'a InputThread,
}

/// The local time as the protocol writes it.
fn now() -> String {
    chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

impl<'a> Session<'a> {
    pub fn new(conn: &'a Connection, screen: &'a Screen, input: &'a InputThread) -> Session<'a> {
        Session { conn, screen, input }
    }

    /// The menu until `quit` or the end of input (`Ok`), or until the connection or the
    /// output fails.
    pub fn run(&self) -> Result<(), ClientError> {
        match self.menu() {
            Ok(()) | Err(Stop::Eof) => Ok(()),
            Err(Stop::Fail(e)) => Err(e),
        }
    }

    fn menu(&self) -> Result<(), Stop> {
        loop {
            self.screen.lock().lines(render::MENU)?;
            let choice = self.ask("choice:", false)?;
            match choice.trim() {
                "1" => {
                    if let Some(account) = self.login()? {
                        self.commands(&account)?;
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

    /// One line from the user, unless the input ends or the connection does first.
    fn ask(&self, prompt: &str, remember: bool) -> Result<String, Stop> {
        self.input.ask(prompt, remember);
        select! {
            recv(self.input.lines()) -> line => match line {
                Ok(Ok(Some(line))) => Ok(line),
                Ok(Ok(None)) | Err(_) => Err(Stop::Eof),
                Ok(Err(e)) => Err(Stop::Fail(ClientError::Input(e))),
            },
            recv(self.conn.closed()) -> reason => {
                Err(Stop::Fail(self.conn.lost(reason.unwrap_or_else(|_| "the connection ended".into()))))
            }
        }
    }

    /// Sends `request` and returns its reply; `None` (after saying so) when the server
    /// did not answer in time.
    fn request(&self, screen: &mut ScreenGuard<'_>, request: Value) -> Result<Option<Value>, Stop> {
        match self.conn.call(request) {
            Ok(reply) => Ok(Some(reply)),
            Err(e @ ClientError::NoReply { .. }) => {
                screen.line(&e.to_string())?;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    fn register(&self) -> Result<(), Stop> {
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

    fn login(&self) -> Result<Option<Account>, Stop> {
        let id = self.ask("userid:", false)?;
        let Ok(id) = id.trim().parse::<i64>() else {
            self.say("the user id is a number (registering prints it)")?;
            return Ok(None);
        };
        let password = self.ask("userpassword:", false)?;
        let mut screen = self.screen.lock();
        let Some(reply) = self.request(&mut screen, json!({"msgid": LOGIN, "id": id, "password": password, "v": 2}))?
        else {
            return Ok(None);
        };
        if render::errno_of(&reply) != errno::OK {
            screen.line(&render::login_failure(&reply))?;
            return Ok(None);
        }
        screen.lines(&render::login_summary(&reply))?;
        screen.lines(&render::help())?;
        let id = reply.get("id").and_then(Value::as_i64).unwrap_or(id);
        let name = reply.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
        Ok(Some(Account { id, name }))
    }

    /// Commands until `loginout` succeeds.
    fn commands(&self, me: &Account) -> Result<(), Stop> {
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
            let Some(request) = cmd.request(me.id, &me.name, &now()) else {
                self.screen.lock().lines(&render::help())?;
                continue;
            };
            let mut screen = self.screen.lock();
            let Some(reply) = self.request(&mut screen, request)? else {
                continue;
            };
            screen.line(&render::outcome(&cmd, &reply))?;
            if cmd == Command::LoginOut && render::errno_of(&reply) == errno::OK {
                return Ok(());
            }
        }
    }
}
