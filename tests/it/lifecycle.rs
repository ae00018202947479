//! The process: restart keeps data and mail, SIGTERM exits 0, bad arguments exit 2,
//! many connections across several loops.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{bin, fresh_db, unique, Client, Server, User};

#[test]
fn data_and_undelivered_mail_survive_a_restart() {
    let db = fresh_db();
    let mut s = Server::start_with_db(&db, &[]);
    let mut a = User::new(&s, "sam");
    let mut c = s.client();
    let bname = unique("tia");
    let b = c.register(&bname, "pw");
    a.c.call(json!({"msgid": 7, "friendid": b}));
    let g = a.c.call(json!({"msgid": 8, "groupname": unique("keep")}))["groupid"].as_i64().expect("gid");
    assert_eq!(a.c.call(json!({"msgid": 6, "toid": b, "msg": "kept"}))["errno"], 0);
    s.stop_cleanly();

    let s = Server::start_with_db(&db, &[]);
    let mut c = s.client();
    let r = c.login(b, "pw");
    assert_eq!(r["name"], bname.as_str());
    let offline: Vec<serde_json::Value> = r["offlinemsg"].as_array().cloned().unwrap_or_default();
    assert_eq!(offline.len(), 1, "{r}");
    let m: serde_json::Value = serde_json::from_str(offline[0].as_str().unwrap_or("")).expect("json");
    assert_eq!(m["msg"], "kept");
    // a is offline after the restart, and its friend and group are still there.
    let mut a2 = s.client();
    let r = a2.login(a.id, "pw");
    assert_eq!(r["friends"].as_array().map(Vec::len), Some(1), "{r}");
    assert_eq!(a2.call(json!({"msgid": 10, "groupid": g, "msg": "x"}))["errno"], 0);
}

#[test]
fn sigterm_exits_zero_and_users_can_log_in_after_restart() {
    let db = fresh_db();
    let mut s = Server::start_with_db(&db, &[]);
    let users: Vec<User> = (0..3).map(|_| User::new(&s, "term")).collect();
    let started = Instant::now();
    s.stop_cleanly();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(s.log().contains("stopped"), "{}", s.log());
    let s = Server::start_with_db(&db, &[]);
    let mut viewer = User::new(&s, "viewer");
    for u in &users {
        viewer.c.call(json!({"msgid": 7, "friendid": u.id}));
    }
    let mut states = || -> Vec<String> {
        let r = viewer.c.call(json!({"msgid": 14}));
        r["friends"]
            .as_array()
            .map(|f| f.iter().filter_map(|x| x["state"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    // Marked offline by the shutdown; online again once logged in.
    assert_eq!(states(), ["offline", "offline", "offline"]);
    let _sessions: Vec<Client> = users
        .iter()
        .map(|u| {
            let mut c = s.client();
            c.login(u.id, "pw");
            c
        })
        .collect();
    assert_eq!(states(), ["online", "online", "online"]);
}

#[test]
fn bad_arguments_exit_2_with_a_message() {
    for args in [&["127.0.0.1", "notaport"][..], &["not-an-ip"], &["--threads", "0"], &["--bogus"]] {
        let out = Command::new(bin("ChatServer")).args(args).output().expect("run");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?}: no message");
    }
}

#[test]
fn a_thousand_connections_across_loops() {
    let s = Server::start(&["--threads", "4"]);
    let mut clients: Vec<Client> = (0..1000).map(|_| Client::connect(s.addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.send(&json!({"msgid": 16, "reqid": i}));
    }
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(c.reply(), json!({"msgid": 17, "reqid": i}));
    }
}
