//! Hostile input, floods, slow readers, limits: against the real binary. The server
//! log must show no panic (checked when each `Server` is dropped).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use serde_json::{json, Value};

use crate::support::{rss_kib, Client, Server, User};

/// A deterministic byte generator (xorshift), so failures reproduce.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

#[test]
fn hostile_bytes_close_only_their_connection() {
    let s = Server::start(&[]);
    let mut bystander = User::new(&s, "by");
    let deep = format!("{{\"msgid\":16,\"x\":{}{}}}\n", "[".repeat(10_000), "]".repeat(10_000));
    let mut tls_hello = vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03];
    tls_hello.extend(noise(500, 7));
    let mut random = noise(8192, 42);
    random[0] = b'x'; // not a separator, not '{': the stream is not JSON from its first byte
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("10,000-level nesting", deep.into_bytes()),
        ("invalid UTF-8 in a string", b"{\"msgid\":4,\"name\":\"\xff\xfe\",\"password\":\"x\"}\n".to_vec()),
        ("a TLS handshake", tls_hello),
        ("8 KiB of random bytes", random),
    ];
    for (what, bytes) in cases {
        let mut c = s.client();
        c.send_raw(&bytes);
        let r = c.read_frame(Duration::from_secs(5)).unwrap_or_else(|| panic!("{what}: closed without ERROR"));
        assert_eq!((r["msgid"].as_i64(), r["errno"].as_i64()), (Some(11), Some(400)), "{what}: {r}");
        assert!(c.closed_within(Duration::from_secs(5)), "{what}: left open");
    }
    // A NUL flood is only separators: the connection still works.
    let mut c = s.client();
    c.send_raw(&vec![0u8; 1 << 20]);
    assert_eq!(c.call(json!({"msgid": 16})), json!({"msgid": 17}));
    assert_eq!(bystander.c.call(json!({"msgid": 16})), json!({"msgid": 17}));
}

#[test]
fn out_of_range_and_mistyped_ids_are_400_and_keep_the_connection() {
    let s = Server::start(&[]);
    let mut u = User::new(&s, "ids");
    let mut anon = s.client();
    let bad_values =
        ["1e400", "-1e400", "99999999999999999999", "9223372036854775808", "1.5", "\"1\"", "true", "null", "[]", "{}"];
    for v in bad_values {
        // (connection, msgid, template with X for the id field)
        let cases: [(bool, i64, String); 9] = [
            (false, 1, format!(r#"{{"msgid":1,"id":{v},"password":"pw"}}"#)),
            (true, 6, format!(r#"{{"msgid":6,"toid":{v},"msg":"hi"}}"#)),
            (true, 6, format!(r#"{{"msgid":6,"id":{v},"toid":{},"msg":"hi"}}"#, u.id)),
            (true, 7, format!(r#"{{"msgid":7,"friendid":{v}}}"#)),
            (true, 12, format!(r#"{{"msgid":12,"friendid":{v}}}"#)),
            (true, 9, format!(r#"{{"msgid":9,"groupid":{v}}}"#)),
            (true, 13, format!(r#"{{"msgid":13,"groupid":{v}}}"#)),
            (true, 10, format!(r#"{{"msgid":10,"groupid":{v},"msg":"hi"}}"#)),
            (true, 14, format!(r#"{{"msgid":14,"id":{v}}}"#)),
        ];
        for (logged_in, msgid, frame) in cases {
            let c = if logged_in { &mut u.c } else { &mut anon };
            c.send_raw(frame.as_bytes());
            c.send_raw(b"\n");
            let r = c.reply();
            let want = if msgid == 1 { 2 } else { 15 };
            assert_eq!((r["msgid"].as_i64(), r["errno"].as_i64()), (Some(want), Some(400)), "{frame} -> {r}");
        }
    }
    // In-range extremes are just unknown ids.
    for v in [i64::MAX, i64::MIN, 0, -1] {
        let r = u.c.call(json!({"msgid": 6, "toid": v, "msg": "hi"}));
        assert_eq!(r["errno"], 404, "{v}: {r}");
        let r = anon.call(json!({"msgid": 1, "id": v, "password": "pw"}));
        assert_eq!(r["errno"], 1, "{v}: {r}");
    }
    // msgid itself out of range: ERROR 400, connection kept.
    anon.send_raw(b"{\"msgid\":1e400}\n");
    assert_eq!(anon.reply()["errno"], 400);
    assert_eq!(anon.call(json!({"msgid": 16})), json!({"msgid": 17}));
}

#[test]
fn login_timeout_closes_idle_sockets_but_not_sessions() {
    let s = Server::start(&["--login-timeout", "1"]);
    let mut user = User::new(&s, "stay");
    let mut idle: Vec<Client> = (0..300).map(|_| s.client()).collect();
    let started = Instant::now();
    for (i, c) in idle.iter_mut().enumerate() {
        let left = Duration::from_secs(8).saturating_sub(started.elapsed());
        assert!(c.closed_within(left.max(Duration::from_millis(100))), "socket {i} still open after the login timeout");
    }
    assert_eq!(user.c.call(json!({"msgid": 16})), json!({"msgid": 17}));
}

#[test]
fn idle_timeout_closes_silent_sessions_only() {
    let s = Server::start(&["--idle-timeout", "1"]);
    let mut silent = User::new(&s, "silent");
    let mut chatty = User::new(&s, "chatty");
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        assert_eq!(chatty.c.call(json!({"msgid": 16})), json!({"msgid": 17}));
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(silent.c.closed_within(Duration::from_secs(3)), "silent session not closed");
}

#[test]
fn rate_limit_answers_429_and_does_not_carry_out() {
    let s = Server::start(&["--rate-limit", "5"]);
    let mut a = User::new(&s, "fast");
    let mut b = User::new(&s, "target");
    std::thread::sleep(Duration::from_millis(2100)); // refill after REG and LOGIN
    let mut burst = Vec::new();
    for i in 0..30 {
        burst.extend(
            serde_json::to_vec(&json!({"msgid": 6, "toid": b.id, "msg": format!("m{i}"), "reqid": i}))
                .unwrap_or_default(),
        );
        burst.push(b'\n');
    }
    a.c.send_raw(&burst);
    let replies: Vec<Value> = (0..30).map(|_| a.c.reply()).collect();
    let ok = replies.iter().filter(|r| r["errno"] == 0).count();
    let limited = replies.iter().filter(|r| r["errno"] == 429).count();
    assert_eq!(ok + limited, 30, "{replies:?}");
    assert!((10..=12).contains(&ok), "burst of 2N=10 (plus refill): {ok} accepted");
    for (i, r) in replies.iter().enumerate() {
        assert_eq!((r["msgid"].as_i64(), r["reqid"].as_i64()), (Some(15), Some(i as i64)), "{r}");
    }
    // Exactly the accepted ones were delivered.
    for _ in 0..ok {
        b.c.push();
    }
    b.c.expect_silence(Duration::from_millis(300));
    // PONG is limited too, and the connection stays open.
    let mut pongs = Vec::new();
    for _ in 0..20 {
        a.c.send(&json!({"msgid": 16}));
    }
    for _ in 0..20 {
        pongs.push(a.c.reply());
    }
    assert!(pongs.iter().any(|p| p == &json!({"msgid": 17, "errno": 429, "errmsg": p["errmsg"]})), "{pongs:?}");
    // 429 comes before 400: a malformed request while limited is a 429.
    let r = a.c.call(json!({"msgid": 6, "toid": "not an id"}));
    assert_eq!((r["msgid"].as_i64(), r["errno"].as_i64()), (Some(15), Some(429)), "{r}");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(a.c.call(json!({"msgid": 16})), json!({"msgid": 17}));
}

#[test]
fn wrong_password_storm_is_answered_and_slowed_without_revealing_accounts() {
    let s = Server::start(&["--rate-limit", "0"]);
    let mut victim = Client::connect(s.addr);
    let id = victim.register(&crate::support::unique("victim"), "right");
    let unknown = 9_000_000;
    let mut bystander = s.client();
    let mut clients: Vec<Client> = (0..4).map(|_| s.client()).collect();
    for round in 0..10 {
        for (k, c) in clients.iter_mut().enumerate() {
            let target = if k % 2 == 0 { id } else { unknown };
            c.send(&json!({"msgid": 1, "id": target, "password": format!("guess{round}")}));
        }
        for c in clients.iter_mut() {
            let r = c.reply();
            assert_eq!(r["msgid"], 2, "{r}");
            assert!(matches!(r["errno"].as_i64(), Some(1) | Some(429)), "{r}");
        }
    }
    // Both ids have now failed 20 times: both are slowed down, with the same words.
    let known = clients[0].call(json!({"msgid": 1, "id": id, "password": "right"}));
    let unknown = clients[1].call(json!({"msgid": 1, "id": unknown, "password": "right"}));
    assert_eq!(known["errno"], 429, "{known}");
    assert_eq!(unknown["errno"], 429, "{unknown}");
    assert_eq!(known["errmsg"], unknown["errmsg"]);
    let t = Instant::now();
    assert_eq!(bystander.call(json!({"msgid": 16})), json!({"msgid": 17}));
    assert!(t.elapsed() < Duration::from_secs(1));
    // After a pause the right password works again.
    std::thread::sleep(Duration::from_millis(1100));
    victim.login(id, "right");
}

#[test]
fn max_conns_closes_extra_connections_at_once() {
    let s = Server::start(&["--max-conns", "20"]);
    let mut held: Vec<Client> = (0..20).map(|_| s.client()).collect();
    for c in held.iter_mut() {
        assert_eq!(c.call(json!({"msgid": 16})), json!({"msgid": 17}));
    }
    let mut extra = s.client();
    assert!(extra.closed_within(Duration::from_secs(3)), "connection past --max-conns kept open");
    held.truncate(10);
    std::thread::sleep(Duration::from_millis(300));
    let mut again = s.client();
    assert_eq!(again.call(json!({"msgid": 16})), json!({"msgid": 17}));
}

#[test]
fn a_reader_that_never_reads_costs_bounded_memory_and_loses_nothing() {
    let s = Server::start(&[]);
    let mut slow = User::new(&s, "slow");
    // Make the slow reader's socket buffers small, so the server's side fills quickly.
    let senders: Vec<User> = (0..16).map(|_| User::new(&s, "sender")).collect();
    std::thread::sleep(Duration::from_millis(300));
    let base = rss_kib(s.pid());
    let msg: String = "😀".repeat(4000); // 16 KB per message
    let total_bytes: usize = 200 << 20;
    let per_sender = total_bytes / msg.len() / senders.len() + 1;
    let max_rss = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(base));
    let pid = s.pid();
    let deadline = Instant::now() + Duration::from_secs(120);
    let handles: Vec<_> = senders
        .into_iter()
        .map(|mut u| {
            let msg = msg.clone();
            let to = slow.id;
            let max_rss = std::sync::Arc::clone(&max_rss);
            std::thread::spawn(move || {
                // Within the default rate limit (200/s, burst 400): windows of 100 per 0.55 s.
                let mut sent = 0;
                while sent < per_sender && Instant::now() < deadline {
                    let window = (per_sender - sent).min(100);
                    let started = Instant::now();
                    let mut frames = Vec::new();
                    for _ in 0..window {
                        frames.extend(
                            serde_json::to_vec(&json!({"msgid": 6, "toid": to, "msg": msg})).unwrap_or_default(),
                        );
                        frames.push(b'\n');
                    }
                    u.c.send_raw(&frames);
                    for _ in 0..window {
                        let r = u.c.reply();
                        assert_eq!(r["errno"], 0, "an ACK that is not 0 while flooding a slow reader: {r}");
                    }
                    sent += window;
                    max_rss.fetch_max(rss_kib(pid), std::sync::atomic::Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(550).saturating_sub(started.elapsed()));
                }
                sent
            })
        })
        .collect();
    let sent: usize = handles.into_iter().map(|h| h.join().expect("sender")).sum();
    assert!(sent * msg.len() >= total_bytes, "only {sent} messages sent in time");
    let peak = max_rss.load(std::sync::atomic::Ordering::Relaxed);
    assert!(peak < base + 64 * 1024, "resident memory grew from {base} KiB to {peak} KiB");
    // The slow reader was cut off: what its socket took is in its receive buffer, the
    // rest waits in its mailbox: the oldest page in LOGIN_ACK, then pumped as pushes.
    let _ = slow.c.stream.set_nonblocking(true);
    let mut received = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    while let Ok(n) = slow.c.stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        received += buf[..n].iter().filter(|b| **b == b'\n').count();
    }
    let mut again = s.client();
    let r = again.call(json!({"msgid": 1, "id": slow.id, "password": "pw", "v": 2}));
    let in_ack = r["offlinemsg"].as_array().map(Vec::len).unwrap_or(0);
    assert!(in_ack > 0, "nothing stored for the slow reader");
    // A v2 session confirms what it got, or it is cut off in turn (--max-unconfirmed).
    let mids_of = |v: &[Value]| -> Vec<i64> { v.iter().filter_map(|m| m["mid"].as_i64()).collect() };
    again.send(&json!({"msgid": 18, "mids": mids_of(r["offlinemsg"].as_array().map(Vec::as_slice).unwrap_or(&[]))}));
    let mut unconfirmed = Vec::new();
    let mut pumped = 0usize;
    let deadline = Instant::now() + Duration::from_secs(60);
    while in_ack + pumped + received < sent && Instant::now() < deadline {
        match again.push_within(Duration::from_secs(10)) {
            Some(p) => {
                assert_eq!(p["toid"], slow.id);
                pumped += 1;
                unconfirmed.push(p);
                if unconfirmed.len() == 500 {
                    again.send(&json!({"msgid": 18, "mids": mids_of(&unconfirmed)}));
                    unconfirmed.clear();
                }
            }
            None => break,
        }
    }
    let offline = in_ack + pumped;
    assert!(offline + received >= sent, "lost: sent {sent}, stored {offline}, received at most {received}");
}

#[test]
fn a_ping_flood_does_not_slow_another_connection() {
    let s = Server::start(&[]);
    let addr = s.addr;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut w = TcpStream::connect(addr).expect("connect");
            let mut r = w.try_clone().expect("clone");
            let reader = std::thread::spawn(move || {
                let mut buf = vec![0u8; 1 << 16];
                while matches!(r.read(&mut buf), Ok(n) if n > 0) {}
            });
            let pings = b"{\"msgid\":16}\n".repeat(1000);
            let deadline = Instant::now() + Duration::from_secs(10);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < deadline {
                if w.write_all(&pings).is_err() {
                    break;
                }
            }
            drop(w);
            let _ = reader.join();
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let mut c = s.client();
    let mut times: Vec<Duration> = (0..50)
        .map(|_| {
            let t = Instant::now();
            assert_eq!(c.call(json!({"msgid": 16})), json!({"msgid": 17}));
            std::thread::sleep(Duration::from_millis(10));
            t.elapsed()
        })
        .collect();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = flood.join();
    times.sort();
    assert!(
        times[times.len() / 2] < Duration::from_millis(200),
        "median PING {:?} under a flood",
        times[times.len() / 2]
    );
}

/// Random JSON values for a field: every type, odd numbers, long and odd strings.
fn any_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-3i64..50).prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        ".{0,60}".prop_map(Value::from),
        Just(Value::from("😀".repeat(51))),
        Just(json!([1, "a"])),
        Just(json!({"k": "v"})),
    ]
}

fn any_request() -> impl Strategy<Value = Value> {
    const FIELDS: [&str; 16] = [
        "id",
        "toid",
        "friendid",
        "groupid",
        "name",
        "password",
        "msg",
        "groupname",
        "groupdesc",
        "time",
        "reqid",
        "v",
        "peer",
        "before",
        "limit",
        "cmid",
    ];
    (
        prop_oneof![(1i64..=19).prop_map(Value::from), any_value()],
        proptest::collection::vec((proptest::sample::select(&FIELDS[..]), any_value()), 0..6),
    )
        .prop_map(|(msgid, pairs)| {
            let mut obj = serde_json::Map::new();
            obj.insert("msgid".into(), msgid);
            for (k, v) in pairs {
                obj.insert(k.into(), v);
            }
            Value::Object(obj)
        })
}

fn expected_reply_type(req: &Value) -> i64 {
    match req["msgid"].as_i64() {
        Some(1) => 2,
        Some(4) => 5,
        Some(16) => 17,
        // RECEIVED (18) gets no reply only with a well-formed `mids`, never generated.
        Some(3 | 6..=10 | 12..=14 | 18 | 19) => 15,
        _ => 11,
    }
}

#[test]
fn random_requests_each_get_one_reply_of_the_right_type() {
    let s = Server::start(&["--rate-limit", "0"]);
    let u = std::cell::RefCell::new(User::new(&s, "fuzz").c);
    let anon = std::cell::RefCell::new(s.client());
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig { cases: 300, ..ProptestConfig::default() });
    let result = runner.run(&proptest::collection::vec(any_request(), 1..8), |reqs| {
        for c in [&u, &anon] {
            let c = &mut *c.borrow_mut();
            let mut bytes = Vec::new();
            for r in &reqs {
                bytes.extend(serde_json::to_vec(r).unwrap_or_default());
                bytes.push(b'\n');
            }
            c.send_raw(&bytes);
            for r in &reqs {
                let reply = c.read_frame(Duration::from_secs(10)).expect("connection closed on a well-formed object");
                let got = reply["msgid"].as_i64().unwrap_or(0);
                prop_assert!(got == expected_reply_type(r) || matches!(got, 6 | 10), "{} -> {}", r, reply);
                if matches!(got, 6 | 10) {
                    // A push (a random request chatted to ourselves); the reply follows.
                    let reply = c.reply();
                    prop_assert_eq!(reply["msgid"].as_i64().unwrap_or(0), expected_reply_type(r));
                }
            }
        }
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    // The session survived whatever the fuzzer logged out: log in again if needed.
    let mut check = s.client();
    assert_eq!(check.call(json!({"msgid": 16})), json!({"msgid": 17}));
}

/// The number in a flood message `f<n>`, from a push or an offline message (a push's
/// JSON text in v1).
fn flood_number(v: &Value) -> u64 {
    let push: Value = match v {
        Value::String(text) => serde_json::from_str(text).expect("an offline message is a push's JSON"),
        other => other.clone(),
    };
    push["msg"].as_str().and_then(|m| m.strip_prefix('f')).and_then(|n| n.parse().ok()).expect("a flood message")
}

#[test]
fn a_recipient_that_hangs_up_mid_flood_gets_everything_once_in_order() {
    let s = Server::start(&["--rate-limit", "0"]);
    let mut c = Client::connect(s.addr);
    let rid = c.register(&crate::support::unique("hangup"), "pw");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = crate::support::flood(s.addr, rid, std::sync::Arc::clone(&stop));
    let mut got: Vec<u64> = Vec::new();
    let login = json!({"msgid": 1, "id": rid, "password": "pw"});
    for _ in 0..20 {
        let mut r = Client::connect(s.addr);
        r.send(&login);
        let ack = r.read_frame(Duration::from_secs(10)).expect("a LOGIN_ACK");
        if ack["errno"] != 0 {
            continue; // errno 2 while the previous session is being torn down
        }
        got.extend(ack["offlinemsg"].as_array().into_iter().flatten().map(flood_number));
        std::thread::sleep(Duration::from_millis(20));
        // Hang up without LOGINOUT while pushes are on their way, and read what the
        // server wrote before it saw the hang-up; the rest must wait in the mailbox.
        r.stream.shutdown(std::net::Shutdown::Write).expect("shutdown");
        while let crate::support::Polled::Frame(v) = r.poll_frame(Duration::from_secs(10)) {
            got.push(flood_number(&v));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = flood.join().expect("flooder");
    let mut last = Client::connect(s.addr);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ack = last.call(login.clone());
    while ack["errno"] == 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        ack = last.call(login.clone());
    }
    assert_eq!(ack["errno"], 0, "{ack}");
    got.extend(ack["offlinemsg"].as_array().into_iter().flatten().map(flood_number));
    while let crate::support::Polled::Frame(v) = last.poll_frame(Duration::from_millis(500)) {
        got.push(flood_number(&v));
    }
    assert!(sent > 100, "the flood ran: {sent} messages");
    let expected: Vec<u64> = (0..sent).collect();
    assert!(got == expected, "every acked message exactly once, in order: got {} of {sent}", got.len());
}
