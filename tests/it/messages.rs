//! PROTOCOL.md §7–§10 against the real binary: mids, idempotent sends with cmid,
//! acknowledged delivery for v2 sessions (RECEIVED), history, and a kill -9 mid-stream.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{fresh_db, unique, Client, Polled, Server, User};

fn ack(r: &Value, req: i64) -> i64 {
    assert_eq!(r["msgid"], 15, "not an ACK: {r}");
    assert_eq!(r["req"], req, "ACK for another request: {r}");
    r["errno"].as_i64().expect("errno")
}

fn mid(v: &Value) -> i64 {
    let mid = v["mid"].as_i64().unwrap_or_else(|| panic!("no mid in {v}"));
    assert!((1..(1i64 << 53)).contains(&mid), "{v}");
    mid
}

/// A user logged in with `"v":2` on a fresh connection (retrying errno 2 for a few
/// seconds: a killed server's sessions take a moment to vanish from the cluster).
fn v2_login(addr: std::net::SocketAddr, id: i64) -> (Client, Value) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = Client::connect(addr);
        let r = c.call(json!({"msgid": 1, "v": 2, "id": id, "password": "pw"}));
        if r["errno"] == 2 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        assert_eq!(r["errno"], 0, "{r}");
        return (c, r);
    }
}

fn offline(r: &Value) -> Vec<Value> {
    r["offlinemsg"].as_array().cloned().unwrap_or_default()
}

fn received(c: &mut Client, mids: &[i64]) {
    c.send(&json!({"msgid": 18, "mids": mids}));
}

#[test]
fn acks_and_pushes_carry_the_same_increasing_mids() {
    let s = Server::start(&[]);
    let mut a = User::new(&s, "mida");
    let mut b = User::new(&s, "midb");
    let mut last = 0;
    for i in 0..5 {
        let r = a.c.call(json!({"msgid": 6, "toid": b.id, "msg": format!("m{i}")}));
        assert_eq!(ack(&r, 6), 0, "{r}");
        assert!(r["time"].as_str().is_some_and(|t| t.len() == 19), "{r}");
        let m = mid(&r);
        assert!(m > last, "mids increase per sender: {m} after {last}");
        last = m;
        let p = b.c.push();
        assert_eq!((mid(&p), p["msg"].as_str(), p["time"].clone()), (m, Some(&*format!("m{i}")), r["time"].clone()));
    }
    let g = a.c.call(json!({"msgid": 8, "groupname": unique("midg")}))["groupid"].as_i64().expect("gid");
    assert_eq!(b.c.call(json!({"msgid": 9, "groupid": g}))["errno"], 0);
    let r = a.c.call(json!({"msgid": 10, "groupid": g, "msg": "to all"}));
    assert_eq!(ack(&r, 10), 0, "{r}");
    assert!(mid(&r) > last);
    let p = b.c.push();
    assert_eq!((p["msgid"].as_i64(), mid(&p)), (Some(10), mid(&r)));
}

#[test]
fn a_cmid_resend_gets_the_first_ack_and_delivers_nothing_twice() {
    let s = Server::start(&[]);
    let mut a = User::new(&s, "cma");
    let mut b = User::new(&s, "cmb");
    let first = a.c.call(json!({"msgid": 6, "toid": b.id, "msg": "once", "cmid": "c-1"}));
    assert_eq!(ack(&first, 6), 0, "{first}");
    assert_eq!(b.c.push()["msg"], "once");
    // Again on the same connection, and from a new one (another node in a cluster).
    let again = a.c.call(json!({"msgid": 6, "toid": b.id, "msg": "once", "cmid": "c-1"}));
    assert_eq!((again["mid"].clone(), again["time"].clone()), (first["mid"].clone(), first["time"].clone()));
    drop(a.c);
    let mut a2 = s.client();
    a2.login(a.id, "pw");
    let again = a2.call(json!({"msgid": 6, "toid": b.id, "msg": "once", "cmid": "c-1"}));
    assert_eq!((ack(&again, 6), again["mid"].clone()), (0, first["mid"].clone()), "{again}");
    // A group message too.
    let g = a2.call(json!({"msgid": 8, "groupname": unique("cmg")}))["groupid"].as_i64().expect("gid");
    assert_eq!(b.c.call(json!({"msgid": 9, "groupid": g}))["errno"], 0);
    let gfirst = a2.call(json!({"msgid": 10, "groupid": g, "msg": "all once", "cmid": "c-2"}));
    let gagain = a2.call(json!({"msgid": 10, "groupid": g, "msg": "all once", "cmid": "c-2"}));
    assert_eq!(gfirst["mid"], gagain["mid"]);
    assert_eq!(b.c.push()["msg"], "all once");
    b.c.expect_silence(Duration::from_millis(300));
    let h = b.c.call(json!({"msgid": 19, "peer": a.id}));
    assert_eq!(h["messages"].as_array().map(Vec::len), Some(1), "{h}");
}

#[test]
fn bad_cmids_are_400_and_store_nothing() {
    let s = Server::start(&[]);
    let mut a = User::new(&s, "bca");
    let mut b = User::new(&s, "bcb");
    for cmid in [json!(""), json!("x".repeat(65)), json!(7), json!(null), json!(["a"])] {
        let r = a.c.call(json!({"msgid": 6, "toid": b.id, "msg": "no", "cmid": cmid}));
        assert_eq!(ack(&r, 6), 400, "cmid {cmid}: {r}");
        let r = a.c.call(json!({"msgid": 10, "groupid": 1, "msg": "no", "cmid": cmid}));
        assert_eq!(ack(&r, 10), 400, "cmid {cmid}: {r}");
    }
    // 64 characters (not bytes) is fine.
    let r = a.c.call(json!({"msgid": 6, "toid": b.id, "msg": "yes", "cmid": "é".repeat(64)}));
    assert_eq!(ack(&r, 6), 0, "{r}");
    assert_eq!(b.c.push()["msg"], "yes");
    b.c.expect_silence(Duration::from_millis(200));
}

#[test]
fn unconfirmed_v2_pushes_come_again_at_the_next_login_in_order() {
    let s = Server::start(&[]);
    let mut a = User::new(&s, "ua");
    let mut c = s.client();
    let name = unique("ub");
    let b = c.register(&name, "pw");
    let (mut bc, _) = v2_login(s.next_addr(), b);
    let mids: Vec<i64> =
        (0..3).map(|i| mid(&a.c.call(json!({"msgid": 6, "toid": b, "msg": format!("u{i}")})))).collect();
    let got: Vec<i64> = (0..3).map(|_| mid(&bc.push())).collect();
    assert_eq!(got, mids);
    received(&mut bc, &mids[..1]);
    // RECEIVED has no reply: the next frame is the PING's PONG.
    assert_eq!(bc.call(json!({"msgid": 16}))["msgid"], 17);
    drop(bc);
    let later = mid(&a.c.call(json!({"msgid": 6, "toid": b, "msg": "u3"})));
    let (mut bc, r) = v2_login(s.next_addr(), b);
    let again: Vec<i64> = offline(&r).iter().map(mid).collect();
    assert_eq!(again, vec![mids[1], mids[2], later], "unconfirmed first, in order, then newer: {r}");
    assert!(offline(&r).iter().all(Value::is_object), "v2 offline messages are objects");
    received(&mut bc, &again);
    assert_eq!(bc.call(json!({"msgid": 16}))["msgid"], 17);
    drop(bc);
    let (_, r) = v2_login(s.next_addr(), b);
    assert!(r.get("offlinemsg").is_none(), "confirmed ones do not come again: {r}");
}

#[test]
fn v1_pushes_written_to_the_socket_are_delivered_once() {
    let s = Server::start(&[]);
    let mut a = User::new(&s, "va");
    let mut b = User::new(&s, "vb");
    for i in 0..3 {
        assert_eq!(a.c.call(json!({"msgid": 6, "toid": b.id, "msg": format!("v{i}")}))["errno"], 0);
    }
    for _ in 0..3 {
        b.c.push();
    }
    assert_eq!(b.c.call(json!({"msgid": 3}))["errno"], 0);
    let r = b.c.call(json!({"msgid": 1, "id": b.id, "password": "pw"}));
    assert_eq!(r["errno"], 0);
    assert!(r.get("offlinemsg").is_none(), "{r}");
}

#[test]
fn received_errors_and_limits() {
    let s = Server::start(&[]);
    let mut anon = s.client();
    let r = anon.call(json!({"msgid": 18, "mids": [1]}));
    assert_eq!(ack(&r, 18), 401, "{r}");
    let mut c = s.client();
    let id = c.register(&unique("rc"), "pw");
    c.call(json!({"msgid": 1, "v": 2, "id": id, "password": "pw"}));
    let many: Vec<i64> = (1..=1001).collect();
    for bad in [json!(null), json!([]), json!([1.5]), json!(["1"]), json!(7), json!(many)] {
        let r = c.call(json!({"msgid": 18, "mids": bad}));
        assert_eq!(ack(&r, 18), 400, "mids {bad}: {r}");
    }
    let r = c.call(json!({"msgid": 18}));
    assert_eq!(ack(&r, 18), 400, "{r}");
    // Unknown mids are ignored, with no reply; 1,000 is allowed.
    c.send(&json!({"msgid": 18, "mids": (1..=1000).collect::<Vec<i64>>()}));
    assert_eq!(c.call(json!({"msgid": 16}))["msgid"], 17);
}

#[test]
fn history_pages_a_conversation_both_ways() {
    let s = Server::start(&[]);
    let mut a = User::new(&s, "ha");
    let mut b = User::new(&s, "hb");
    let mut all = Vec::new();
    for i in 0..7 {
        let (from, to) = if i % 2 == 0 { (&mut a, b.id) } else { (&mut b, a.id) };
        all.push(mid(&from.c.call(json!({"msgid": 6, "toid": to, "msg": format!("h{i}")}))));
    }
    let page = |c: &mut Client, q: Value| -> (Vec<i64>, bool) {
        let r = c.call(q);
        assert_eq!(ack(&r, 19), 0, "{r}");
        let msgs = r["messages"].as_array().expect("messages");
        assert!(
            msgs.iter()
                .all(|m| (m["msgid"] == 6 || m["msgid"] == 10) && m["time"].is_string() && m["name"].is_string()),
            "{r}"
        );
        (msgs.iter().map(mid).collect(), r["more"].as_bool().expect("more"))
    };
    assert_eq!(page(&mut a.c, json!({"msgid": 19, "peer": b.id, "limit": 3})), (all[4..].to_vec(), true));
    assert_eq!(
        page(&mut b.c, json!({"msgid": 19, "peer": a.id, "limit": 3, "before": all[4]})),
        (all[1..4].to_vec(), true)
    );
    assert_eq!(
        page(&mut a.c, json!({"msgid": 19, "peer": b.id, "limit": 3, "before": all[1]})),
        (all[..1].to_vec(), false)
    );
    assert_eq!(page(&mut a.c, json!({"msgid": 19, "peer": b.id})), (all.clone(), false));
    // The conversation with oneself holds only that.
    let own = mid(&a.c.call(json!({"msgid": 6, "toid": a.id, "msg": "note"})));
    a.c.push();
    assert_eq!(page(&mut a.c, json!({"msgid": 19, "peer": a.id})), (vec![own], false));
    // A group's history is there for members, also what was sent before they joined.
    let g = a.c.call(json!({"msgid": 8, "groupname": unique("hg")}))["groupid"].as_i64().expect("gid");
    let gm = mid(&a.c.call(json!({"msgid": 10, "groupid": g, "msg": "early"})));
    let r = b.c.call(json!({"msgid": 19, "groupid": g}));
    assert_eq!(ack(&r, 19), 403, "{r}");
    assert_eq!(b.c.call(json!({"msgid": 9, "groupid": g}))["errno"], 0);
    let (msgs, more) = page(&mut b.c, json!({"msgid": 19, "groupid": g}));
    assert_eq!((msgs, more), (vec![gm], false));
}

#[test]
fn history_errors() {
    let s = Server::start(&[]);
    let mut anon = s.client();
    assert_eq!(ack(&anon.call(json!({"msgid": 19, "peer": 1})), 19), 401);
    let mut a = User::new(&s, "he");
    for bad in [
        json!({"msgid": 19}),
        json!({"msgid": 19, "peer": a.id, "groupid": 1}),
        json!({"msgid": 19, "peer": "1"}),
        json!({"msgid": 19, "peer": a.id, "limit": 0}),
        json!({"msgid": 19, "peer": a.id, "limit": 101}),
        json!({"msgid": 19, "peer": a.id, "before": "9"}),
        json!({"msgid": 19, "peer": a.id, "before": 1.5}),
    ] {
        assert_eq!(ack(&a.c.call(bad.clone()), 19), 400, "{bad}");
    }
    assert_eq!(ack(&a.c.call(json!({"msgid": 19, "peer": 999_999})), 19), 404);
    assert_eq!(ack(&a.c.call(json!({"msgid": 19, "groupid": 999_999})), 19), 404);
    let r = a.c.call(json!({"msgid": 19, "peer": a.id, "limit": 100}));
    assert_eq!((ack(&r, 19), r["messages"].clone(), r["more"].clone()), (0, json!([]), json!(false)));
}

/// A sender gets ACKs for messages to a live v2 recipient and to an offline one; the
/// server is killed (SIGKILL) mid-stream; after a restart every acknowledged message
/// reaches its recipient (none twice after dropping repeats by mid) and is in history.
#[test]
fn nothing_acknowledged_is_lost_when_the_server_is_killed() {
    let db = fresh_db();
    let mut s = Server::start_with_db(&db, &[]);
    let addr = s.addr;
    let acked = kill_mid_stream(addr, addr, || {
        s.signal("KILL", Duration::from_secs(5));
    });
    let s = Server::start_with_db(&db, &[]);
    acked.check(s.addr);
}

/// What `kill_mid_stream` saw: the users, and every acknowledged (recipient, mid).
pub struct Acked {
    sender: i64,
    live: i64,
    away: i64,
    seen_live: BTreeSet<i64>,
    acked: Vec<(i64, i64)>,
}

/// Registers a sender (at `sender_at`), a live v2 recipient (at `live_at`) and an
/// offline one; streams ONE_CHATs to both, each with a cmid, reading (and confirming
/// some of) the live recipient's pushes; calls `kill` at a moment that depends on the
/// process id, then stops.
pub fn kill_mid_stream(sender_at: std::net::SocketAddr, live_at: std::net::SocketAddr, kill: impl FnOnce()) -> Acked {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let mut setup = Client::connect(sender_at);
    let (live, away, sender) = (unique("kl"), unique("ko"), unique("ks"));
    let (live, away, sender) =
        (setup.register(&live, "pw"), setup.register(&away, "pw"), setup.register(&sender, "pw"));
    let (mut lc, _) = v2_login(live_at, live);
    let acked = Arc::new(std::sync::Mutex::new(Vec::<(i64, i64)>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let sending = {
        let (acked, stop) = (Arc::clone(&acked), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut c = Client::connect(sender_at);
            c.login(sender, "pw");
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let to = if i % 2 == 0 { live } else { away };
                c.send(&json!({"msgid": 6, "toid": to, "msg": format!("k{i}"), "cmid": format!("k{i}")}));
                match c.poll_frame(Duration::from_secs(5)) {
                    Polled::Frame(r) if r["errno"] == 0 => acked.lock().unwrap().push((to, mid(&r))),
                    _ => break,
                }
                i += 1;
            }
        })
    };
    let mut seen_live = BTreeSet::new();
    let kill_after = Duration::from_millis(200 + (std::process::id() as u64 % 400));
    let started = std::time::Instant::now();
    while started.elapsed() < kill_after {
        if let Polled::Frame(p) = lc.poll_frame(Duration::from_millis(20)) {
            let m = mid(&p);
            seen_live.insert(m);
            if m % 3 == 0 {
                received(&mut lc, &[m]);
            }
        }
    }
    kill();
    // What was pushed before the kill and read only now counts as seen too.
    while let Polled::Frame(p) = lc.poll_frame(Duration::from_millis(200)) {
        seen_live.insert(mid(&p));
    }
    stop.store(true, Ordering::Relaxed);
    sending.join().expect("sender");
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 10, "only {} messages acknowledged before the kill", acked.len());
    Acked { sender, live, away, seen_live, acked }
}

impl Acked {
    /// Logs both recipients in (v2) at `addr`: every acknowledged message arrives, each
    /// redelivered one once and in order, and all are in history.
    pub fn check(self, addr: std::net::SocketAddr) {
        for (user, already) in [(self.live, self.seen_live.clone()), (self.away, BTreeSet::new())] {
            let (mut c, r) = v2_login(addr, user);
            let mut got: BTreeSet<i64> = already;
            let mut order = Vec::new();
            for m in offline(&r) {
                order.push(mid(&m));
            }
            // More than a LOGIN_ACK page comes as pushes after it.
            while let Polled::Frame(p) = c.poll_frame(Duration::from_millis(500)) {
                order.push(mid(&p));
            }
            got.extend(&order);
            let want: BTreeSet<i64> = self.acked.iter().filter(|(to, _)| *to == user).map(|(_, m)| *m).collect();
            let missing: Vec<_> = want.difference(&got).collect();
            assert!(missing.is_empty(), "user {user} lost acknowledged messages {missing:?}");
            let mut sorted = order.clone();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(order, sorted, "redelivered in order, each once");
            let mut history = BTreeSet::new();
            let mut before: Option<i64> = None;
            loop {
                let mut q = json!({"msgid": 19, "peer": self.sender, "limit": 100});
                if let Some(b) = before {
                    q["before"] = b.into();
                }
                let r = c.call(q);
                let page: Vec<i64> = r["messages"].as_array().expect("messages").iter().map(mid).collect();
                history.extend(&page);
                before = page.first().copied();
                if r["more"] != true {
                    break;
                }
            }
            assert!(want.is_subset(&history), "history holds every acknowledged message");
        }
    }
}
