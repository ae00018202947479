//! Backpressure and panic isolation, against the real binary: a client that pipelines
//! without reading is held back (bounded memory, every reply in the end, others served
//! meanwhile); a panic in one request or one connection's callback fails only that one.
//! The panic tests need the binary built with `--features test-hooks` (as
//! `autobuild.sh test` builds it).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{rss_kib, Server, User};

const FLOOD: usize = 100_000;

#[test]
fn a_client_pipelining_without_reading_is_held_back_and_answered_in_full() {
    // One loop and one worker: the flood and the bystander share both.
    let s = Server::start(&["--rate-limit", "0", "--threads", "1", "--workers", "1"]);
    let mut flooder = User::new(&s, "flooder");
    let mut bystander = User::new(&s, "bystander");
    // Friends make each SHOW_FRIEND_LIST reply about 1.5 KB: 40 MB of replies in all,
    // more than socket buffers and the output cap hold, unless reading pauses.
    for _ in 0..40 {
        let id = flooder.c.register(&crate::support::unique("friend"), "pw");
        assert_eq!(flooder.c.call(json!({"msgid": 7, "friendid": id}))["errno"], 0);
    }
    std::thread::sleep(Duration::from_millis(300));
    let base = rss_kib(s.pid());
    // 100,000 requests of about 2 KB (a padding field the server ignores), 200 MB in
    // all; half of them go to the worker, the PINGs after them follow through it.
    let pad = "x".repeat(2000);
    let friend = bystander.id;
    let mut w = flooder.c.stream.try_clone().expect("clone");
    let written = Arc::new(AtomicBool::new(false));
    let writer = {
        let written = Arc::clone(&written);
        std::thread::spawn(move || {
            let mut batch = Vec::new();
            for i in 0..FLOOD {
                let req = match i % 4 {
                    0 => json!({"msgid": 14, "reqid": i, "pad": pad}),
                    1 => json!({"msgid": 7, "friendid": friend, "reqid": i, "pad": pad}),
                    _ => json!({"msgid": 16, "reqid": i, "pad": pad}),
                };
                batch.extend(serde_json::to_vec(&req).expect("json"));
                batch.push(b'\n');
                if batch.len() > 256 * 1024 || i + 1 == FLOOD {
                    w.write_all(&batch).expect("write");
                    batch.clear();
                }
            }
            written.store(true, Ordering::Release);
        })
    };
    // The flooder reads nothing for a while; the server must stay small, and answer
    // the bystander in bounded time.
    let mut peak = base;
    let mut slowest = Duration::ZERO;
    let quiet_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < quiet_until {
        let t = Instant::now();
        assert_eq!(bystander.c.call(json!({"msgid": 16})), json!({"msgid": 17}));
        let r = bystander.c.call(json!({"msgid": 14}));
        assert_eq!(r["errno"], 0, "{r}");
        slowest = slowest.max(t.elapsed());
        peak = peak.max(rss_kib(s.pid()));
        std::thread::sleep(Duration::from_millis(50));
    }
    let held_back = !written.load(Ordering::Acquire);
    // Now it reads: every request has its reply, once, in order.
    let deadline = Instant::now() + Duration::from_secs(120);
    for i in 0..FLOOD {
        assert!(Instant::now() < deadline, "only {i} replies within two minutes");
        let r = flooder.c.reply();
        assert_eq!(r["reqid"], i, "reply {i} out of order: {r}");
        let want = match i % 4 {
            0 | 1 => 15,
            _ => 17,
        };
        assert_eq!(r["msgid"], want, "{r}");
        if i % 1000 == 0 {
            peak = peak.max(rss_kib(s.pid()));
        }
    }
    writer.join().expect("writer");
    assert!(peak < base + 100 * 1024, "resident memory grew from {base} KiB to {peak} KiB");
    assert!(slowest < Duration::from_secs(2), "the bystander waited {slowest:?}");
    eprintln!("flood: RSS {base} -> peak {peak} KiB; bystander slowest {slowest:?}; writer held back: {held_back}");
    assert_eq!(flooder.c.call(json!({"msgid": 16})), json!({"msgid": 17}));
}

#[test]
fn a_full_worker_queue_holds_its_connections_back_and_loses_nothing() {
    // One worker: 24 connections with 64 requests in flight each are more than its
    // queue holds (1,024), so some of them must wait for room.
    let s = Server::start(&["--rate-limit", "0", "--threads", "1", "--workers", "1"]);
    let users: Vec<User> = (0..24).map(|_| User::new(&s, "queued")).collect();
    let per_user = 400;
    let handles: Vec<_> = users
        .into_iter()
        .map(|mut u| {
            std::thread::spawn(move || {
                let mut frames = Vec::new();
                for i in 0..per_user {
                    frames.extend(serde_json::to_vec(&json!({"msgid": 14, "reqid": i})).expect("json"));
                    frames.push(b'\n');
                }
                u.c.send_raw(&frames);
                for i in 0..per_user {
                    let r = u.c.reply();
                    assert_eq!((r["reqid"].as_i64(), r["errno"].as_i64()), (Some(i), Some(0)), "{r}");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a client lost a reply");
    }
}

#[cfg(feature = "test-hooks")]
#[test]
fn a_request_that_panics_is_answered_500_and_its_worker_goes_on() {
    let s = Server::start(&["--rate-limit", "0", "--workers", "1"]);
    let mut u = User::new(&s, "panicky");
    // More panics in a row than requests may be in flight: an in-flight count left
    // behind by each would stop the connection being read.
    let n = 100;
    let mut frames = Vec::new();
    for i in 0..n {
        frames.extend(serde_json::to_vec(&json!({"msgid": 16, "panic": "worker", "reqid": i})).expect("json"));
        frames.push(b'\n');
    }
    frames.extend(serde_json::to_vec(&json!({"msgid": 14, "reqid": n})).expect("json"));
    frames.push(b'\n');
    u.c.send_raw(&frames);
    for i in 0..n {
        let r = u.c.reply();
        assert_eq!(r, json!({"msgid": 17, "errno": 500, "errmsg": "internal error", "reqid": i}));
    }
    // The next request on the same worker, same connection, succeeds.
    let r = u.c.reply();
    assert_eq!((r["msgid"].as_i64(), r["errno"].as_i64(), r["reqid"].as_i64()), (Some(15), Some(0), Some(n)), "{r}");
    assert_eq!(u.c.call(json!({"msgid": 16})), json!({"msgid": 17}));
    let mut other = User::new(&s, "other");
    assert_eq!(other.c.call(json!({"msgid": 14}))["errno"], 0);
    // Logged once each, with the connection.
    let log = s.log();
    assert_eq!(log.matches("request 16 failed: test hook").count(), n as usize, "{log}");
    assert!(log.lines().filter(|l| l.contains("test hook")).all(|l| l.contains("ConnRef")), "{log}");
}

#[cfg(feature = "test-hooks")]
#[test]
fn a_panic_on_a_loop_closes_only_its_connection() {
    // One loop: the others share it with the connection that panics.
    let s = Server::start(&["--threads", "1"]);
    let mut a = User::new(&s, "a");
    let mut b = User::new(&s, "b");
    let mut victim = User::new(&s, "victim");
    victim.c.send(&json!({"msgid": 16, "panic": "loop"}));
    assert!(victim.c.closed_within(Duration::from_secs(5)), "the connection that panicked is still open");
    assert_eq!(a.c.call(json!({"msgid": 16})), json!({"msgid": 17}));
    let r = a.c.call(json!({"msgid": 6, "toid": b.id, "msg": "still here"}));
    assert_eq!(r["errno"], 0, "{r}");
    assert_eq!(b.c.push()["msg"], "still here");
    // Its close was a LOGINOUT: the user may log in again.
    let mut again = s.client();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut r = again.call(json!({"msgid": 1, "id": victim.id, "password": "pw"}));
    while r["errno"] == 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        r = again.call(json!({"msgid": 1, "id": victim.id, "password": "pw"}));
    }
    assert_eq!(r["errno"], 0, "{r}");
    let log = s.log();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("test hook")).collect();
    assert_eq!(lines.len(), 1, "logged once: {lines:?}");
    assert!(lines[0].contains("on_message failed") && lines[0].contains("127.0.0.1:"), "{}", lines[0]);
}
