//! The client over plain lines against a scripted fake server on a loopback socket: the
//! protocol as the client speaks it, v1 and v2 (§7-§10), without a chat server.

use std::io::{self, BufRead, BufReader, Cursor, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{run, Options};

/// The client's output.
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

/// Input that ends after a pause: the client idles meanwhile.
struct SlowEof(Duration);

impl Read for SlowEof {
    fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
        std::thread::sleep(self.0);
        Ok(0)
    }
}

/// `lines` typed at once, then the input ends after `idle`.
fn typed(lines: &str, idle: Duration) -> impl BufRead + Send + 'static {
    BufReader::new(Cursor::new(lines.as_bytes().to_vec()).chain(SlowEof(idle)))
}

fn opts(keepalive_ms: u64) -> Options {
    Options {
        keepalive: Duration::from_millis(keepalive_ms),
        reply_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(5),
        reconnect_within: Duration::from_secs(2),
    }
}

/// Runs `script` on a fake server's listener in a thread; its port and the thread.
fn fake<T: Send + 'static>(script: impl FnOnce(TcpListener) -> T + Send + 'static) -> (u16, JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    (port, std::thread::spawn(move || script(listener)))
}

/// One connection the fake server accepted.
struct Peer {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Peer {
    fn accept(l: &TcpListener) -> Peer {
        let (s, _) = l.accept().expect("accept");
        s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        Peer { w: s.try_clone().expect("clone"), r: BufReader::new(s) }
    }

    /// The next frame, `None` at the end of the stream (or after 10 s of silence).
    fn recv(&mut self) -> Option<Value> {
        let mut line = String::new();
        match self.r.read_line(&mut line) {
            Ok(0) | Err(_) => None,
            Ok(_) => Some(serde_json::from_str(line.trim()).expect("the client sends JSON")),
        }
    }

    /// The next frame, which must have `msgid`.
    fn expect(&mut self, msgid: i64) -> Value {
        let v = self.recv().unwrap_or_else(|| panic!("no frame with msgid {msgid}"));
        assert_eq!(v["msgid"], msgid, "{v}");
        v
    }

    fn send(&mut self, v: &Value) {
        self.w.write_all(format!("{v}\n").as_bytes()).expect("write");
    }

    /// Answers `request` with `reply`, echoing its reqid.
    fn answer(&mut self, request: &Value, mut reply: Value) {
        reply["reqid"] = request["reqid"].clone();
        self.send(&reply);
    }

    /// Everything the client sends until it leaves.
    fn rest(&mut self) -> Vec<Value> {
        std::iter::from_fn(|| self.recv()).collect()
    }

    /// Reads LOGIN and answers it for user 5, eve, with `extra` fields.
    fn login(&mut self, extra: Value) -> Value {
        let login = self.expect(1);
        let mut ack = json!({"msgid": 2, "errno": 0, "id": 5, "name": "eve"});
        if let (Value::Object(ack), Value::Object(extra)) = (&mut ack, extra) {
            ack.extend(extra);
        }
        self.answer(&login, ack);
        login
    }
}

fn chat(mid: i64, msg: &str) -> Value {
    json!({"msgid": 6, "id": 2, "name": "bob", "toid": 5, "msg": msg, "time": "2024-05-06 07:08:09", "mid": mid})
}

fn count(text: &str, what: &str) -> usize {
    text.matches(what).count()
}

const LOGIN_EVE: &str = "1\n5\nsecret\n";

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
    let (port, server) = fake(|l| {
        let mut p = Peer::accept(&l);
        let first = p.recv();
        let at = Instant::now();
        let second = p.recv();
        let gap = at.elapsed();
        p.rest();
        (first, second, gap)
    });
    let out = Out::default();
    let r = run("127.0.0.1", port, BufReader::new(SlowEof(Duration::from_millis(400))), out.clone(), &opts(100));
    assert!(r.is_ok(), "{r:?}");
    let (first, second, gap) = server.join().expect("server");
    assert_eq!(first, Some(json!({"msgid": 16})));
    assert_eq!(second, Some(json!({"msgid": 16})));
    assert!(gap >= Duration::from_millis(80), "{gap:?}");
    assert!(out.text().contains("choice:"));
}

#[test]
fn replies_match_by_reqid_and_pushes_print_after_the_answer() {
    let (port, server) = fake(|l| {
        let mut p = Peer::accept(&l);
        let login = p.expect(1);
        // A stray reply, then the real one, then a push in the same write, NUL-terminated:
        // a v1 server (offline messages as JSON strings, no mids).
        let offline =
            json!({"msgid": 10, "id": 2, "name": "bob", "groupid": 7, "msg": "while you were away", "time": "t0"});
        let ack = json!({"msgid": 2, "errno": 0, "id": 5, "name": "eve", "reqid": login["reqid"],
            "offlinemsg": [offline.to_string()]});
        let push = json!({"msgid": 6, "id": 2, "name": "bob", "toid": 5, "msg": "live: hi", "time": "t1"});
        let bytes = format!("{}\0{ack}\0{push}\0", json!({"msgid": 2, "errno": 1, "reqid": 999_999}));
        p.w.write_all(bytes.as_bytes()).expect("write");
        let friends = p.expect(14);
        p.answer(
            &friends,
            json!({"msgid": 15, "req": 14, "errno": 0, "friends": [{"id": 2, "name": "bob", "state": "online"}]}),
        );
        (login, p.rest())
    });
    let out = Out::default();
    let r =
        run("127.0.0.1", port, typed(&format!("{LOGIN_EVE}showfriendlist\n"), Duration::ZERO), out.clone(), &opts(0));
    assert!(r.is_ok(), "{r:?}");
    let (login, rest) = server.join().expect("server");
    assert_eq!((&login["msgid"], &login["v"], &login["password"]), (&json!(1), &json!(2), &json!("secret")), "{login}");
    // Nothing had a mid: nothing to confirm.
    assert!(rest.is_empty(), "{rest:?}");
    let text = out.text();
    let at = |s: &str| text.find(s).unwrap_or_else(|| panic!("{s:?} not in:\n{text}"));
    assert!(at("logged in as eve (id 5)") < at("[t0] group 7 | bob (2): while you were away"));
    assert!(at("commands:") < at("[t1] bob (2): live: hi"), "{text}");
    at("friends (1):\n  2 bob (online)");
    assert!(!text.contains("wrong user id"), "{text}");
}

#[test]
fn a_vanished_server_ends_the_run_with_an_error() {
    let (port, server) = fake(|l| {
        let conn = l.accept();
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

#[test]
fn v2_shows_each_message_once_and_confirms_all() {
    let (port, server) = fake(|l| {
        let mut p = Peer::accept(&l);
        p.login(json!({"offlinemsg": [chat(1, "off one"), chat(2, "off two")]}));
        let first = p.expect(18);
        // Mid 2 again (as after a lost RECEIVED), then a new one, then 3 again.
        p.w.write_all(format!("{}\n{}\n", chat(2, "off two"), chat(3, "live three")).as_bytes()).expect("write");
        p.send(&chat(3, "live three"));
        let mut mids: Vec<i64> = Vec::new();
        let mut rest = Vec::new();
        for v in p.rest() {
            match v["msgid"].as_i64() {
                Some(18) => mids.extend(v["mids"].as_array().into_iter().flatten().filter_map(Value::as_i64)),
                _ => rest.push(v),
            }
        }
        (first, mids, rest)
    });
    let out = Out::default();
    let r = run("127.0.0.1", port, typed(LOGIN_EVE, Duration::from_millis(500)), out.clone(), &opts(0));
    assert!(r.is_ok(), "{r:?}");
    let (first, mut mids, rest) = server.join().expect("server");
    assert_eq!(first, json!({"msgid": 18, "mids": [1, 2]}));
    mids.sort_unstable();
    assert_eq!(mids, vec![2, 3, 3], "every mid received is confirmed, repeats too");
    assert!(rest.is_empty(), "{rest:?}");
    let text = out.text();
    assert!(text.contains("offline messages (2):\n  [2024-05-06 07:08:09] bob (2): off one\n"), "{text}");
    assert_eq!((count(&text, "off two"), count(&text, "live three")), (1, 1), "{text}");
}

#[test]
fn an_unacknowledged_chat_is_sent_again_with_its_cmid_after_a_reconnect() {
    let (port, server) = fake(|l| {
        let mut p = Peer::accept(&l);
        p.login(json!({"token": "tok-1"}));
        let first = p.expect(6);
        // No ACK: the connection drops.
        drop(p);
        let mut p = Peer::accept(&l);
        let relogin = p.login(json!({}));
        let again = p.expect(6);
        p.answer(&again, json!({"msgid": 15, "req": 6, "errno": 0, "mid": 77, "time": "t"}));
        let next = p.expect(6);
        p.answer(&next, json!({"msgid": 15, "req": 6, "errno": 0, "mid": 78, "time": "t"}));
        (first, relogin, again, next, p.rest())
    });
    let out = Out::default();
    let input = typed(&format!("{LOGIN_EVE}chat:2:hello: there\nchat:2:and then\n"), Duration::from_millis(300));
    let r = run("127.0.0.1", port, input, out.clone(), &opts(0));
    assert!(r.is_ok(), "{r:?}");
    let (first, relogin, again, next, rest) = server.join().expect("server");
    let cmid = first["cmid"].as_str().unwrap_or_default();
    assert!(!cmid.is_empty() && cmid.chars().count() <= 64, "{first}");
    assert_eq!((&again["cmid"], &again["msg"], &again["toid"]), (&first["cmid"], &json!("hello: there"), &json!(2)));
    assert_ne!(next["cmid"], first["cmid"]);
    assert_eq!(next["msg"], "and then");
    // The token replaced the password.
    assert_eq!((&relogin["token"], relogin.get("password"), &relogin["v"]), (&json!("tok-1"), None, &json!(2)));
    assert!(rest.is_empty(), "{rest:?}");
    let text = out.text();
    for want in
        ["the connection was lost (", "): the message to user 2 will be sent again\n", "reconnected to 127.0.0.1:"]
    {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
    assert_eq!(count(&text, "message sent to user 2\n"), 2, "{text}");
    assert!(!text.contains("could not be sent"), "{text}");
}

#[test]
fn a_busy_server_gets_the_message_again_after_a_pause() {
    let (port, server) = fake(|l| {
        let mut p = Peer::accept(&l);
        p.login(json!({}));
        let first = p.expect(10);
        p.answer(&first, json!({"msgid": 15, "req": 10, "errno": 503, "errmsg": "busy"}));
        let at = Instant::now();
        // The client sends it again on its own, while it waits for input.
        let again = p.expect(10);
        let pause = at.elapsed();
        p.answer(&again, json!({"msgid": 15, "req": 10, "errno": 0, "mid": 5, "time": "t"}));
        (first, again, pause, p.rest())
    });
    let out = Out::default();
    let r = run(
        "127.0.0.1",
        port,
        typed(&format!("{LOGIN_EVE}groupchat:7:hi all\n"), Duration::from_secs(2)),
        out.clone(),
        &opts(0),
    );
    assert!(r.is_ok(), "{r:?}");
    let (first, again, pause, rest) = server.join().expect("server");
    assert_eq!((&again["cmid"], &again["msg"], &again["groupid"]), (&first["cmid"], &json!("hi all"), &json!(7)));
    assert!(pause >= Duration::from_millis(900), "{pause:?}");
    assert!(rest.is_empty(), "{rest:?}");
    let text = out.text();
    let at = |s: &str| text.find(s).unwrap_or_else(|| panic!("{s:?} not in:\n{text}"));
    assert!(at("the server is busy: the message to group 7 will be sent again") < at("message sent to group 7"));
}

#[test]
fn when_reconnecting_fails_the_run_ends_and_says_what_was_not_sent() {
    let (port, server) = fake(|l| {
        let mut p = Peer::accept(&l);
        p.login(json!({}));
        p.expect(6);
        // The server goes away for good.
        drop(l);
    });
    let out = Out::default();
    let started = Instant::now();
    let r = run(
        "127.0.0.1",
        port,
        typed(&format!("{LOGIN_EVE}chat:2:lost one\n"), Duration::from_secs(10)),
        out.clone(),
        &opts(0),
    );
    server.join().expect("server");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    let err = r.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.starts_with("Lost the connection to the chat server at 127.0.0.1:"), "{err}");
    assert!(err.contains("reconnecting failed") && !err.contains('\n'), "{err}");
    let text = out.text();
    assert!(text.contains("reconnecting..."), "{text}");
    assert!(text.contains("1 message(s) could not be sent:\n  to user 2: lost one\n"), "{text}");
}

#[test]
fn history_pages_back_on_repeat() {
    let (port, server) = fake(|l| {
        let mut p = Peer::accept(&l);
        p.login(json!({}));
        let first = p.expect(19);
        p.answer(
            &first,
            json!({"msgid": 15, "req": 19, "errno": 0, "more": true,
            "messages": [chat(40, "forty"), chat(41, "forty-one")]}),
        );
        let second = p.expect(19);
        p.answer(&second, json!({"msgid": 15, "req": 19, "errno": 0, "more": false, "messages": [chat(30, "thirty")]}));
        let group = p.expect(19);
        p.answer(&group, json!({"msgid": 15, "req": 19, "errno": 403, "errmsg": "not a member"}));
        (first, second, group, p.rest())
    });
    let out = Out::default();
    let input = typed(&format!("{LOGIN_EVE}history:2\nhistory:2\nhistory:2\ngrouphistory:9\n"), Duration::ZERO);
    let r = run("127.0.0.1", port, input, out.clone(), &opts(0));
    assert!(r.is_ok(), "{r:?}");
    let (first, second, group, rest) = server.join().expect("server");
    assert_eq!(first, json!({"msgid": 19, "peer": 2, "limit": 20, "reqid": first["reqid"]}));
    assert_eq!((&second["peer"], &second["before"]), (&json!(2), &json!(40)));
    assert_eq!((&group["groupid"], group.get("before")), (&json!(9), None));
    // Pages carry no mids to confirm.
    assert!(rest.is_empty(), "{rest:?}");
    let text = out.text();
    for want in [
        "latest messages with user 2:\n  [2024-05-06 07:08:09] bob (2): forty\n  [2024-05-06 07:08:09] bob (2): forty-one\n  (history:2 again shows older messages)\n",
        "older messages with user 2:\n  [2024-05-06 07:08:09] bob (2): thirty\n  (the conversation starts here)\n",
        "no older messages: the conversation with user 2 starts above\n",
        "you are not a member of group 9\n",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
}
