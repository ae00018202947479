//! The real `ChatClient` binary, driven through piped stdin against a real server: the
//! menu, every command's worded answer, pushes printed while it waits for input, and how
//! it ends (end of input, unreachable server, vanished server).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{bin, unique, Client, Server, User, WAIT};

mod tty;
mod v2;

/// A running `ChatClient` with piped stdio; stdout and stderr are collected by threads.
struct ChatClient {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Arc<Mutex<Vec<u8>>>,
    err: Arc<Mutex<Vec<u8>>>,
    /// How far `expect` has read stdout.
    seen: usize,
}

fn collect(mut from: impl Read + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&buf);
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = from.read(&mut chunk) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(&chunk[..n]);
        }
    });
    buf
}

fn text(buf: &Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&buf.lock().unwrap_or_else(|p| p.into_inner())).into_owned()
}

impl ChatClient {
    fn start(addr: SocketAddr) -> ChatClient {
        let mut child = Command::new(bin("ChatClient"))
            .args([addr.ip().to_string(), addr.port().to_string()])
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ChatClient");
        let out = collect(child.stdout.take().expect("stdout"));
        let err = collect(child.stderr.take().expect("stderr"));
        ChatClient { stdin: child.stdin.take(), child, out, err, seen: 0 }
    }

    fn stdout(&self) -> String {
        text(&self.out)
    }

    fn stderr(&self) -> String {
        text(&self.err)
    }

    /// Types one line.
    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(format!("{line}\n").as_bytes()).expect("write to the client");
        stdin.flush().expect("flush");
    }

    /// Waits (at most `WAIT`) for `want` in stdout after what was already expected, and
    /// returns the output from there on.
    fn expect(&mut self, want: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let out = self.stdout();
            if let Some(pos) = out.get(self.seen..).and_then(|rest| rest.find(want)) {
                let found = out[self.seen + pos..].to_owned();
                self.seen += pos + want.len();
                return found;
            }
            if Instant::now() >= deadline {
                panic!("{want:?} not printed within {WAIT:?}; stdout:\n{out}\nstderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits like `expect`, and returns the output from where the previous wait ended
    /// through `want`.
    fn expect_through(&mut self, want: &str) -> String {
        let from = self.seen;
        self.expect(want);
        self.stdout()[from..self.seen].to_owned()
    }

    /// Types `line` and waits for `want`.
    fn answer(&mut self, line: &str, want: &str) -> String {
        self.send(line);
        self.expect(want)
    }

    /// Ends the input.
    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The exit status, within `WAIT`.
    fn exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the collector threads take the last bytes.
                std::thread::sleep(Duration::from_millis(50));
                return status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!(
                    "ChatClient did not exit within {WAIT:?}; stdout:\n{}\nstderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Registers through the menu; the new id it prints.
    fn register(&mut self, name: &str) -> i64 {
        self.expect("choice:");
        self.send("2");
        self.answer(name, "userpassword:");
        let said = self.answer("pw", "your user id is ");
        let digits: String = said["your user id is ".len()..].chars().take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap_or_else(|_| panic!("no id in {said:?}"))
    }

    /// Logs in through the menu and waits for the command list.
    fn login(&mut self, id: i64, name: &str) {
        self.expect("choice:");
        self.send("1");
        self.answer(&id.to_string(), "userpassword:");
        self.answer("pw", &format!("logged in as {name} (id {id})"));
        self.expect("loginout");
    }

    /// Closes stdin and checks the clean exit.
    fn finish(mut self) {
        self.close_stdin();
        let status = self.exit();
        assert_eq!(status.code(), Some(0), "stderr:\n{}", self.stderr());
        let out = self.stdout();
        assert!(!out.contains("\"msgid\""), "raw JSON on the screen:\n{out}");
        assert!(self.stderr().trim().is_empty(), "stderr:\n{}", self.stderr());
    }
}

impl Drop for ChatClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A user registered (not logged in) over the raw protocol.
fn registered(s: &Server, prefix: &str) -> (i64, String) {
    let name = unique(prefix);
    let id = s.client().register(&name, "pw");
    (id, name)
}

#[test]
fn register_then_login_shows_account_friends_groups_and_offline_messages() {
    let s = Server::start(&[]);
    let mut bob = User::new(&s, "bob");
    let mut cli = ChatClient::start(s.addr);
    let name = unique("carol");
    let id = cli.register(&name);
    // The same name again: refused in words.
    cli.expect("choice:");
    cli.send("2");
    cli.answer(&name, "userpassword:");
    cli.answer("pw", &format!("the name {name} is already taken"));

    // Meanwhile, over the raw protocol: a friend, a group with bob in it, then offline mail.
    let group = unique("club");
    let mut raw = Client::connect(s.addr);
    raw.login(id, "pw");
    assert_eq!(raw.call(json!({"msgid": 7, "friendid": bob.id}))["errno"], 0);
    let r = raw.call(json!({"msgid": 8, "groupname": group, "groupdesc": "the club"}));
    let gid = r["groupid"].as_i64().expect("groupid");
    assert_eq!(bob.c.call(json!({"msgid": 9, "groupid": gid}))["errno"], 0);
    assert_eq!(raw.call(json!({"msgid": 3}))["errno"], 0);
    drop(raw);
    assert_eq!(bob.c.call(json!({"msgid": 6, "toid": id, "msg": "while you were out: hi"}))["errno"], 0);
    assert_eq!(bob.c.call(json!({"msgid": 10, "groupid": gid, "msg": "hi club"}))["errno"], 0);

    // A wrong password, then the right one.
    cli.expect("choice:");
    cli.send("1");
    cli.answer(&id.to_string(), "userpassword:");
    cli.answer("wrong", "wrong user id or password");
    cli.expect("choice:");
    cli.send("1");
    cli.answer(&id.to_string(), "userpassword:");
    cli.answer("pw", &format!("logged in as {name} (id {id})"));
    // Everything up to the command list, members in whatever order the server lists them.
    let shown = cli.expect_through("chat:friendid:message");
    for want in [
        format!("\n  {} {} (online)\n", bob.id, bob.name),
        format!("\n  group {gid} {group}: the club\n"),
        format!("\n    {id} {name} (online, creator)\n"),
        format!("\n    {} {} (online, normal)\n", bob.id, bob.name),
        "\noffline messages (2):\n".to_owned(),
        format!("] {} ({}): while you were out: hi\n", bob.name, bob.id),
        format!("] group {gid} | {} ({}): hi club\n", bob.name, bob.id),
    ] {
        assert!(shown.contains(&want), "{want:?} not in:\n{shown}");
    }
    cli.finish();
}

#[test]
fn every_command_answers_in_words() {
    let s = Server::start(&[]);
    let mut bob = User::new(&s, "bob");
    let (id, name) = registered(&s, "dave");
    let mut cli = ChatClient::start(s.addr);
    cli.login(id, &name);
    let bid = bob.id;

    cli.answer("help", "groupchat:groupid:message");
    cli.answer(&format!("addfriend:{bid}"), &format!("user {bid} is now your friend"));
    cli.answer(&format!("addfriend:{bid}"), &format!("user {bid} is already your friend"));
    cli.answer("addfriend:987654", "user 987654 does not exist");
    cli.answer(&format!("addfriend:{id}"), "the server refused it:");
    cli.answer("showfriendlist", &format!("  {bid} {} (online)", bob.name));

    cli.answer(&format!("chat:{bid}:see you at 10:30: ok?"), &format!("message sent to user {bid}"));
    let p = bob.c.push();
    assert_eq!((p["msg"].as_str(), p["id"].as_i64()), (Some("see you at 10:30: ok?"), Some(id)), "{p}");
    cli.answer("chat:987654:anyone?", "user 987654 does not exist");

    let group = unique("grp");
    let said = cli.answer(&format!("creategroup:{group}:a: group"), "created group ");
    let gid: i64 = said["created group ".len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("group id");
    cli.answer(&format!("creategroup:{group}:again"), &format!("a group named {group} already exists"));
    cli.answer(&format!("addgroup:{gid}"), &format!("you are already a member of group {gid}"));
    cli.answer("addgroup:987654", "group 987654 does not exist");
    assert_eq!(bob.c.call(json!({"msgid": 9, "groupid": gid}))["errno"], 0);
    cli.answer(&format!("groupchat:{gid}:hello: group"), &format!("message sent to group {gid}"));
    let p = bob.c.push();
    assert_eq!((p["msg"].as_str(), p["groupid"].as_i64()), (Some("hello: group"), Some(gid)), "{p}");
    cli.answer("groupchat:987654:x", "group 987654 does not exist");
    let other = bob.c.call(json!({"msgid": 8, "groupname": unique("bobs")}))["groupid"].as_i64().expect("groupid");
    cli.answer(&format!("groupchat:{other}:let me in"), &format!("you are not a member of group {other}"));
    cli.answer(&format!("addgroup:{other}"), &format!("you joined group {other}"));
    cli.answer(&format!("delgroup:{other}"), &format!("you left group {other}"));
    cli.answer(&format!("delgroup:{other}"), &format!("you are not in group {other}"));

    cli.answer(&format!("delfriend:{bid}"), &format!("user {bid} is no longer your friend"));
    cli.answer(&format!("delfriend:{bid}"), &format!("user {bid} is not your friend"));
    cli.answer("showfriendlist", "you have no friends yet");

    cli.answer("fly:away", "unknown command \"fly\"");
    cli.answer("chat:bob:hi", "friendid must be a number");
    cli.answer("chat:2", "usage: chat:friendid:message");

    cli.answer("loginout", "logged out");
    cli.expect("choice:");
    // Logged out for real: the account can log in elsewhere now.
    Client::connect(s.addr).login(id, "pw");
    cli.answer("7", "invalid choice");
    cli.finish();
}

#[test]
fn pushes_are_printed_while_the_client_waits_for_input() {
    let s = Server::start(&[]);
    let mut bob = User::new(&s, "bob");
    let (id, name) = registered(&s, "erin");
    let mut cli = ChatClient::start(s.addr);
    cli.login(id, &name);

    // Nothing typed: the push alone must reach the screen.
    assert_eq!(bob.c.call(json!({"msgid": 6, "toid": id, "msg": "are you there?"}))["errno"], 0);
    cli.expect(&format!("{} ({}): are you there?", bob.name, bob.id));

    let gid = bob.c.call(json!({"msgid": 8, "groupname": unique("crew")}))["groupid"].as_i64().expect("groupid");
    cli.answer(&format!("addgroup:{gid}"), &format!("you joined group {gid}"));
    assert_eq!(bob.c.call(json!({"msgid": 10, "groupid": gid, "msg": "crew: assemble"}))["errno"], 0);
    let line = cli.expect(&format!("group {gid} | {} ({}): crew: assemble", bob.name, bob.id));
    assert!(!line.is_empty());
    // The time the server stamped is shown.
    let out = cli.stdout();
    let pushed = out.lines().find(|l| l.contains("are you there?")).unwrap_or_default().to_owned();
    assert!(pushed.starts_with("[20") && pushed.as_bytes().get(20) == Some(&b']'), "{pushed:?}");
    cli.finish();
}

#[test]
fn end_of_input_at_the_menu_exits_zero() {
    let s = Server::start(&[]);
    let mut cli = ChatClient::start(s.addr);
    cli.expect("3. quit");
    cli.expect("choice:");
    cli.finish();
    // `3` quits as well, with input still open.
    let mut cli = ChatClient::start(s.addr);
    cli.answer("3", "");
    let status = cli.exit();
    assert_eq!(status.code(), Some(0));
}

#[test]
fn an_unreachable_server_is_one_sentence_and_exit_1() {
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut cli = ChatClient::start(addr);
    let status = cli.exit();
    assert_eq!(status.code(), Some(1), "stderr:\n{}", cli.stderr());
    let err = cli.stderr();
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains(&format!("Cannot connect to the chat server at 127.0.0.1:{port}")), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn a_vanished_server_is_one_sentence_and_exit_1() {
    let mut s = Server::start(&[]);
    let (id, name) = registered(&s, "finn");
    let mut cli = ChatClient::start(s.addr);
    cli.login(id, &name);
    // The client sits at its prompt, input open, when the server dies.
    s.signal("KILL", WAIT);
    let status = cli.exit();
    assert_eq!(status.code(), Some(1), "stderr:\n{}", cli.stderr());
    let err = cli.stderr();
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("Lost the connection to the chat server"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}
