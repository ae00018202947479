//! Two ChatServers on one MariaDB and one Redis: failures and churn. (The whole
//! protocol suite also runs across servers: CHAT_TEST_TOPOLOGY=cluster and nginx.)

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::{unique, Client, Polled, Server};

fn login_retrying(addr: std::net::SocketAddr, id: i64, within: Duration) -> (Client, Value) {
    let deadline = Instant::now() + within;
    loop {
        let mut c = Client::connect(addr);
        let r = c.call(json!({"msgid": 1, "id": id, "password": "pw", "v": 2}));
        match r["errno"].as_i64() {
            Some(0) => return (c, r),
            Some(2) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => panic!("login {id}: {r}"),
        }
    }
}

fn msgs_of(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|m| m["msg"].as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

#[test]
fn a_killed_server_loses_nothing_and_frees_its_users() {
    let mut s = Server::start_cluster(2, &[], false);
    let (a, b) = (s.addr, s.nodes[0].addr);
    let mut sender = Client::connect(a);
    let sid = sender.register(&unique("s"), "pw");
    sender.login(sid, "pw");
    let mut r = Client::connect(b);
    let rid = r.register(&unique("r"), "pw");
    r.login(rid, "pw");
    assert_eq!(sender.call(json!({"msgid": 6, "toid": rid, "msg": "live"}))["errno"], 0);
    assert_eq!(r.push()["msg"], "live", "crossed servers through Redis");

    assert_eq!(sender.call(json!({"msgid": 7, "friendid": rid}))["errno"], 0);
    s.nodes[0].signal("KILL", Duration::from_secs(5));
    assert!(r.closed_within(Duration::from_secs(5)));
    // The crash left R marked online; a node starting now clears what nobody holds.
    let redis = s.redis.as_ref().map(|r| r.url()).unwrap_or_default();
    let _restarted = Server::start_with_db(&s.db, &["--redis", &redis]);
    let state = sender.call(json!({"msgid": 14}))["friends"][0]["state"].clone();
    assert_eq!(state, "offline", "stale online mark of a killed server's user");
    for m in ["after1", "after2", "after3"] {
        assert_eq!(sender.call(json!({"msgid": 6, "toid": rid, "msg": m}))["errno"], 0);
    }
    // The dead server's user is free at once on the other server, and gets each
    // message once.
    let started = Instant::now();
    let (mut r, ack) = login_retrying(a, rid, Duration::from_secs(5));
    assert!(started.elapsed() < Duration::from_secs(5));
    // "live" reached the v1 session on the killed server; whether that server recorded it
    // before the kill is a race, so it may come once more (PROTOCOL.md §7), first.
    let offline = msgs_of(&ack["offlinemsg"]);
    let fresh = offline.strip_prefix(&["live".to_owned()][..]).unwrap_or(&offline);
    assert_eq!(fresh, ["after1", "after2", "after3"]);
    r.expect_silence(Duration::from_millis(300));
    let mids: Vec<i64> = ack["offlinemsg"].as_array().into_iter().flatten().filter_map(|m| m["mid"].as_i64()).collect();
    r.send(&json!({"msgid": 18, "mids": mids}));
    r.call(json!({"msgid": 3}));
    assert!(r.call(json!({"msgid": 1, "id": rid, "password": "pw"})).get("offlinemsg").is_none());
}

/// The recipient's server is killed mid-stream: every acknowledged message still
/// reaches the recipients once they log in on the other server (PROTOCOL.md §7).
#[test]
fn nothing_acknowledged_is_lost_when_the_recipients_server_is_killed() {
    let mut s = Server::start_cluster(2, &[], false);
    let (a, b) = (s.addr, s.nodes[0].addr);
    let acked = crate::messages::kill_mid_stream(a, b, || {
        s.nodes[0].signal("KILL", Duration::from_secs(5));
    });
    acked.check(a);
}

#[test]
fn a_redis_outage_stores_then_delivers_without_a_new_login() {
    let s = Server::start_cluster(2, &[], false);
    let redis = s.redis.as_ref().expect("the cluster's Redis");
    let mut sender = Client::connect(s.addr);
    let sid = sender.register(&unique("s"), "pw");
    sender.login(sid, "pw");
    let mut r = Client::connect(s.nodes[0].addr);
    let rid = r.register(&unique("r"), "pw");
    r.login(rid, "pw");

    redis.stop();
    for m in ["down1", "down2", "down3"] {
        let ack = sender.call(json!({"msgid": 6, "toid": rid, "msg": m}));
        assert_eq!(ack["errno"], 0, "sends during the outage are stored and acked: {ack}");
    }
    redis.restart();
    // The receiver's server resubscribes and drains its mailbox: no new login needed.
    let started = Instant::now();
    let got: Vec<String> = (0..3)
        .map(|_| {
            r.push_within(Duration::from_secs(10))
                .map(|p| p["msg"].as_str().unwrap_or("").to_owned())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(got, ["down1", "down2", "down3"]);
    assert!(started.elapsed() < Duration::from_secs(10));
    // Live cross-server delivery resumes.
    let deadline = Instant::now() + Duration::from_secs(5);
    assert_eq!(sender.call(json!({"msgid": 6, "toid": rid, "msg": "back"}))["errno"], 0);
    let p = r.push_within(deadline.saturating_duration_since(Instant::now())).expect("live delivery within 5 s");
    assert_eq!(p["msg"], "back");
}

/// xorshift: reproducible randomness without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// (sender index, receiver id) -> sequence numbers received, in order of receipt,
/// repeats dropped by mid; and the mids each receiver has seen.
#[derive(Default)]
struct Received {
    seqs: HashMap<(usize, i64), Vec<u64>>,
    mids: std::collections::HashSet<(i64, i64)>,
}

#[test]
fn churn_loses_nothing_duplicates_nothing_and_keeps_order() {
    const SENDERS: usize = 10;
    const RECEIVERS: usize = 10;
    let s = Server::start_cluster(2, &["--rate-limit", "0"], false);
    let nodes = s.node_addrs();
    let receivers: Vec<i64> = (0..RECEIVERS)
        .map(|_| {
            let mut c = Client::connect(nodes[0]);
            c.register(&unique("rcv"), "pw")
        })
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let got: Arc<Mutex<Received>> = Arc::default();
    // The receivers are v2 sessions: a message pushed and not confirmed comes again at
    // the next login, so repeats are dropped by mid, as a v2 client does; they confirm
    // what they read, so repeats stay few.
    let record = |got: &Mutex<Received>, rid: i64, push: &Value| -> Option<i64> {
        let msg = push["msg"].as_str().unwrap_or("");
        let mut parts = msg.split(':');
        let (Some(si), Some(seq), Some(mid)) = (
            parts.next().and_then(|x| x.parse().ok()),
            parts.next().and_then(|x| x.parse().ok()),
            push["mid"].as_i64(),
        ) else {
            panic!("unexpected message {push}")
        };
        let mut got = got.lock().unwrap_or_else(|p| p.into_inner());
        if got.mids.insert((rid, mid)) {
            got.seqs.entry((si, rid)).or_default().push(seq);
        }
        Some(mid)
    };
    let confirm = |c: &mut Client, mids: &mut Vec<i64>| {
        if !mids.is_empty() {
            c.send(&json!({"msgid": 18, "mids": mids}));
            mids.clear();
        }
    };

    let receiver_threads: Vec<_> = receivers
        .iter()
        .enumerate()
        .map(|(k, &rid)| {
            let (stop, got, nodes) = (Arc::clone(&stop), Arc::clone(&got), nodes.clone());
            std::thread::spawn(move || {
                let mut rng = Rng(0x9E37_79B9 + k as u64);
                while !stop.load(Ordering::Relaxed) {
                    let node = nodes[rng.next(2) as usize];
                    let (mut c, ack) = login_retrying(node, rid, Duration::from_secs(10));
                    let mut read: Vec<i64> = Vec::new();
                    for m in ack["offlinemsg"].as_array().into_iter().flatten() {
                        read.extend(record(&got, rid, m));
                    }
                    confirm(&mut c, &mut read);
                    let until = Instant::now() + Duration::from_millis(50 + rng.next(300));
                    while Instant::now() < until {
                        match c.poll_frame(Duration::from_millis(20)) {
                            Polled::Frame(p) => read.extend(record(&got, rid, &p)),
                            Polled::Timeout => confirm(&mut c, &mut read),
                            Polled::Closed => panic!("receiver {rid} cut off"),
                        }
                    }
                    confirm(&mut c, &mut read);
                    if rng.next(2) == 0 {
                        // LOGINOUT: whatever was pushed before its ACK is ours.
                        c.send(&json!({"msgid": 3}));
                        loop {
                            let v = c.read_frame(Duration::from_secs(10)).expect("LOGINOUT reply");
                            if v["msgid"] == 15 {
                                break;
                            }
                            record(&got, rid, &v);
                        }
                    } else {
                        // A drop: read what the server wrote until it closes.
                        let _ = c.stream.shutdown(std::net::Shutdown::Write);
                        while let Some(v) = c.read_frame(Duration::from_secs(10)) {
                            record(&got, rid, &v);
                        }
                    }
                }
            })
        })
        .collect();

    let sender_threads: Vec<_> = (0..SENDERS)
        .map(|si| {
            let (receivers, addr) = (receivers.clone(), nodes[si % 2]);
            std::thread::spawn(move || {
                let mut c = Client::connect(addr);
                let id = c.register(&unique("snd"), "pw");
                c.login(id, "pw");
                let mut acked: HashMap<i64, u64> = HashMap::new();
                let deadline = Instant::now() + Duration::from_secs(8);
                let mut i = 0usize;
                while Instant::now() < deadline {
                    let rid = receivers[(i + si) % receivers.len()];
                    let seq = acked.get(&rid).copied().unwrap_or(0);
                    let r = c.call(json!({"msgid": 6, "toid": rid, "msg": format!("{si}:{seq}")}));
                    assert_eq!(r["errno"], 0, "{r}");
                    acked.insert(rid, seq + 1);
                    i += 1;
                }
                acked
            })
        })
        .collect();
    let acked: Vec<HashMap<i64, u64>> = sender_threads.into_iter().map(|t| t.join().expect("sender")).collect();
    stop.store(true, Ordering::Relaxed);
    for t in receiver_threads {
        t.join().expect("receiver");
    }
    // A last login drains whatever is left.
    for &rid in &receivers {
        let (mut c, ack) = login_retrying(nodes[0], rid, Duration::from_secs(10));
        for m in ack["offlinemsg"].as_array().into_iter().flatten() {
            record(&got, rid, m);
        }
        while let Polled::Frame(p) = c.poll_frame(Duration::from_millis(500)) {
            record(&got, rid, &p);
        }
    }
    let got = got.lock().unwrap_or_else(|p| p.into_inner());
    let mut total = 0;
    for (si, per_receiver) in acked.iter().enumerate() {
        for (&rid, &n) in per_receiver {
            let seqs = got.seqs.get(&(si, rid)).cloned().unwrap_or_default();
            let expect: Vec<u64> = (0..n).collect();
            assert_eq!(seqs, expect, "sender {si} -> receiver {rid}: every acked message once, in order");
            total += n;
        }
    }
    assert!(total > 500, "only {total} messages in the churn");
}
