//! The real `ChatClient` (piped stdin) as a v2 client of a real server, through a relay
//! that can cut its connections the way a network does, and can keep RECEIVED frames
//! from the server or an ACK from the client.
//!
//! Tests marked `ignore` need the server side of protocol §7-§10 (the message log,
//! issue 13); they pin what the client must do once the server has it.

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use super::{registered, ChatClient};
use crate::support::{Client, Server, User};

/// What the relay does with the frames it passes, and what it saw.
#[derive(Default)]
struct Rules {
    /// Keep the client's RECEIVED frames from the server, on connections made while set.
    drop_received: AtomicBool,
    /// Keep the next ACK of a chat message from the client, and cut the connection.
    lose_next_chat_ack: AtomicBool,
    /// Every frame from the client (`true`) or the server, in order per direction.
    seen: Mutex<Vec<(bool, Value)>>,
}

impl Rules {
    fn see(&self, up: bool, frame: &Value) {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).push((up, frame.clone()));
    }

    fn seen(&self) -> Vec<(bool, Value)> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A TCP relay in front of a server, one upstream connection per client connection.
struct Relay {
    addr: SocketAddr,
    live: Arc<Mutex<Vec<TcpStream>>>,
    rules: Arc<Rules>,
    stop: Arc<AtomicBool>,
}

enum Pass {
    Forward,
    Drop,
    DropAndCut,
}

fn cut_all(live: &Mutex<Vec<TcpStream>>) {
    for s in live.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
        let _ = s.shutdown(Shutdown::Both);
    }
}

/// Copies `from` to `to` frame by frame (frames end with `\n` or NUL), asking `pass`
/// about each, until either side ends.
fn pump(
    from: TcpStream,
    mut to: TcpStream,
    live: Arc<Mutex<Vec<TcpStream>>>,
    pass: impl Fn(&Value) -> Pass + Send + 'static,
) {
    std::thread::spawn(move || {
        let mut from = BufReader::new(from);
        let mut frame = Vec::new();
        loop {
            frame.clear();
            match from.read_until(b'\n', &mut frame) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let value = frame.split(|b| *b == 0 || *b == b'\n').next().and_then(|t| serde_json::from_slice(t).ok());
            match value.as_ref().map(&pass).unwrap_or(Pass::Forward) {
                Pass::Forward => {
                    if to.write_all(&frame).is_err() {
                        break;
                    }
                }
                Pass::Drop => {}
                Pass::DropAndCut => {
                    cut_all(&live);
                    break;
                }
            }
        }
        let _ = to.shutdown(Shutdown::Both);
    });
}

impl Relay {
    fn start(upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        listener.set_nonblocking(true).expect("nonblocking");
        let relay = Relay {
            addr: listener.local_addr().expect("relay address"),
            live: Arc::default(),
            rules: Arc::default(),
            stop: Arc::default(),
        };
        let (live, rules, stop) = (Arc::clone(&relay.live), Arc::clone(&relay.rules), Arc::clone(&relay.stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                };
                let Ok(server) = TcpStream::connect(upstream) else { continue };
                let clones = (client.set_nonblocking(false), client.try_clone(), server.try_clone());
                let (Ok(()), Ok(client2), Ok(server2)) = clones else { continue };
                live.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend([client.try_clone(), server.try_clone()].into_iter().flatten());
                let up = Arc::clone(&rules);
                let drop_received = rules.drop_received.load(Ordering::Relaxed);
                pump(client, server, Arc::clone(&live), move |v| {
                    up.see(true, v);
                    if v["msgid"] == 18 && drop_received {
                        Pass::Drop
                    } else {
                        Pass::Forward
                    }
                });
                let down = Arc::clone(&rules);
                pump(server2, client2, Arc::clone(&live), move |v| {
                    down.see(false, v);
                    let chat_ack = v["msgid"] == 15 && (v["req"] == 6 || v["req"] == 10);
                    if chat_ack && down.lose_next_chat_ack.swap(false, Ordering::Relaxed) {
                        Pass::DropAndCut
                    } else {
                        Pass::Forward
                    }
                });
            }
        });
        relay
    }

    /// The mids of the chat messages with text `msg` the server handed the client (live,
    /// or offline in a LOGIN_ACK), once per handing.
    fn handed(&self, msg: &str) -> Vec<i64> {
        let mut mids = Vec::new();
        for (up, v) in self.rules.seen() {
            let offline = v["offlinemsg"].as_array().cloned().unwrap_or_default();
            for m in offline.iter().chain([&v]) {
                if !up && m["msg"] == msg && matches!(m["msgid"].as_i64(), Some(6 | 10)) {
                    mids.extend(m["mid"].as_i64());
                }
            }
        }
        mids
    }

    /// Every mid the client confirmed with RECEIVED.
    fn confirmed(&self) -> Vec<i64> {
        let frames = self.rules.seen().into_iter().filter(|(up, v)| *up && v["msgid"] == 18);
        frames.flat_map(|(_, v)| v["mids"].as_array().cloned().unwrap_or_default()).filter_map(|m| m.as_i64()).collect()
    }

    /// Cuts every connection through the relay, as a network failure would.
    fn cut(&self) {
        cut_all(&self.live);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.cut();
    }
}

/// LOGIN as a v2 client over the raw protocol: the LOGIN_ACK.
fn login_v2(c: &mut Client, id: i64) -> Value {
    let r = c.call(json!({"msgid": 1, "id": id, "password": "pw", "v": 2}));
    assert_eq!(r["errno"], 0, "{r}");
    r
}

#[test]
fn a_cut_connection_is_made_again_and_the_session_goes_on() {
    let s = Server::start(&[]);
    let mut bob = User::new(&s, "bob");
    let (id, name) = registered(&s, "kim");
    let relay = Relay::start(s.addr);
    let mut cli = ChatClient::start(relay.addr);
    cli.login(id, &name);

    relay.cut();
    cli.expect("reconnecting...");
    cli.expect(&format!("reconnected to {} as {name} (id {id})", relay.addr));
    cli.answer(&format!("chat:{}:after the cut", bob.id), &format!("message sent to user {}", bob.id));
    assert_eq!(bob.c.push()["msg"], "after the cut");
    assert_eq!(bob.c.call(json!({"msgid": 6, "toid": id, "msg": "welcome back"}))["errno"], 0);
    cli.expect(&format!("{} ({}): welcome back", bob.name, bob.id));
    cli.finish();
}

#[test]
fn a_chat_whose_ack_was_lost_is_sent_again_and_delivered_once() {
    let s = Server::start(&[]);
    let mut bob = User::new(&s, "bob");
    let (id, name) = registered(&s, "lee");
    let relay = Relay::start(s.addr);
    let mut cli = ChatClient::start(relay.addr);
    cli.login(id, &name);

    relay.rules.lose_next_chat_ack.store(true, Ordering::Relaxed);
    cli.send(&format!("chat:{}:exactly once", bob.id));
    cli.expect("the connection was lost");
    cli.expect("reconnected to");
    cli.expect(&format!("message sent to user {}", bob.id));
    let p = bob.c.push();
    assert_eq!((p["msg"].as_str(), p["id"].as_i64()), (Some("exactly once"), Some(id)), "{p}");
    assert!(p["mid"].as_i64().is_some(), "{p}");
    bob.c.expect_silence(Duration::from_millis(500));
    // And it is once in history.
    let h = bob.c.call(json!({"msgid": 19, "peer": id}));
    let texts: Vec<&str> = h["messages"].as_array().into_iter().flatten().filter_map(|m| m["msg"].as_str()).collect();
    assert_eq!(texts, vec!["exactly once"], "{h}");
    cli.finish();
}

#[test]
fn what_the_client_shows_is_confirmed_and_not_handed_again() {
    let s = Server::start(&[]);
    let mut bob = User::new(&s, "bob");
    let (id, name) = registered(&s, "max");
    for m in ["offline one", "offline two"] {
        assert_eq!(bob.c.call(json!({"msgid": 6, "toid": id, "msg": m}))["errno"], 0);
    }
    let relay = Relay::start(s.addr);
    let mut cli = ChatClient::start(relay.addr);
    cli.login(id, &name);
    // The offline messages are shown with the time the server stamped.
    let out = cli.stdout();
    assert!(out.contains("offline messages (2):\n  [20") && out.contains("offline two"), "{out}");
    assert_eq!(bob.c.call(json!({"msgid": 6, "toid": id, "msg": "live one"}))["errno"], 0);
    cli.expect("live one");
    cli.finish();

    // Each was handed once, with a mid, and confirmed; a new v2 session gets none again.
    let confirmed = relay.confirmed();
    for m in ["offline one", "offline two", "live one"] {
        let handed = relay.handed(m);
        assert_eq!(handed.len(), 1, "{m}: {handed:?}");
        assert!(confirmed.contains(&handed[0]), "{m} ({handed:?}) not in RECEIVED {confirmed:?}");
    }
    let mut again = Client::connect(s.addr);
    let ack = login_v2(&mut again, id);
    assert!(ack.get("offlinemsg").is_none_or(|o| o.as_array().is_some_and(Vec::is_empty)), "{ack}");
    again.expect_silence(Duration::from_millis(300));
}

#[test]
fn unconfirmed_messages_come_again_and_are_shown_once() {
    let s = Server::start(&[]);
    let mut bob = User::new(&s, "bob");
    let (id, name) = registered(&s, "ned");
    let relay = Relay::start(s.addr);
    // On the first connection the client confirms, but the server never hears it.
    relay.rules.drop_received.store(true, Ordering::Relaxed);
    let mut cli = ChatClient::start(relay.addr);
    cli.login(id, &name);
    relay.rules.drop_received.store(false, Ordering::Relaxed);
    for m in ["unconfirmed one", "unconfirmed two"] {
        assert_eq!(bob.c.call(json!({"msgid": 6, "toid": id, "msg": m}))["errno"], 0);
    }
    cli.expect("unconfirmed two");
    relay.cut();
    // The server hands both again at the new login; the client drops them by mid.
    cli.expect("reconnected to");
    assert_eq!(bob.c.call(json!({"msgid": 6, "toid": id, "msg": "after the cut"}))["errno"], 0);
    cli.expect("after the cut");
    let out = cli.stdout();
    for m in ["unconfirmed one", "unconfirmed two"] {
        // Handed twice (live, then again at the new login), shown once.
        let handed = relay.handed(m);
        assert!(handed.len() == 2 && handed[0] == handed[1], "{m}: {handed:?}");
        assert_eq!(out.matches(m).count(), 1, "{out}");
    }
    cli.finish();
    // Now they are confirmed.
    let mut again = Client::connect(s.addr);
    let ack = login_v2(&mut again, id);
    assert!(ack.get("offlinemsg").is_none_or(|o| o.as_array().is_some_and(Vec::is_empty)), "{ack}");
}

#[test]
fn history_pages_back_through_a_conversation() {
    let s = Server::start(&[]);
    let mut bob = User::new(&s, "bob");
    let (id, name) = registered(&s, "oli");
    let mut raw = Client::connect(s.addr);
    raw.login(id, "pw");
    // 25 messages, alternating sides: m0 (bob), m1 (oli), ...
    for n in 0..25 {
        let (c, to) = if n % 2 == 0 { (&mut bob.c, id) } else { (&mut raw, bob.id) };
        assert_eq!(c.call(json!({"msgid": 6, "toid": to, "msg": format!("m{n}")}))["errno"], 0);
    }
    assert_eq!(raw.call(json!({"msgid": 3}))["errno"], 0);
    drop(raw);
    let gid = bob.c.call(json!({"msgid": 8, "groupname": crate::support::unique("hist")}))["groupid"]
        .as_i64()
        .expect("groupid");
    assert_eq!(bob.c.call(json!({"msgid": 10, "groupid": gid, "msg": "before oli joined"}))["errno"], 0);

    let mut cli = ChatClient::start(s.addr);
    cli.login(id, &name);
    cli.send(&format!("history:{}", bob.id));
    let page = cli.expect_through(&format!("history:{} again shows older messages", bob.id));
    // The newest 20, oldest first, each with its time.
    assert!(page.contains(&format!("latest messages with user {}:\n  [20", bob.id)), "{page}");
    let at = |s: &str| page.find(s).unwrap_or_else(|| panic!("{s:?} not in:\n{page}"));
    assert!(at(": m5\n") < at(": m24\n"), "{page}");
    assert!(!page.contains(": m4\n"), "{page}");
    cli.send(&format!("history:{}", bob.id));
    let older = cli.expect_through("(the conversation starts here)");
    assert!(older.contains(&format!("older messages with user {}:", bob.id)), "{older}");
    assert!(older.contains(": m0\n") && older.contains(": m4\n") && !older.contains(": m5\n"), "{older}");
    cli.answer(&format!("history:{}", bob.id), "no older messages");
    // Group history: members only, including what was said before they joined.
    cli.answer(&format!("grouphistory:{gid}"), &format!("you are not a member of group {gid}"));
    cli.answer(&format!("addgroup:{gid}"), &format!("you joined group {gid}"));
    cli.answer(&format!("grouphistory:{gid}"), "before oli joined");
    cli.answer("history:987654", "user 987654 does not exist");
    cli.finish();
}
