//! Every request of PROTOCOL.md §3–§6 against the real binary: success and each error.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{flood, unique, Client, Polled, Server, User};

fn ack(r: &Value, req: i64) -> i64 {
    assert_eq!(r["msgid"], 15, "not an ACK: {r}");
    assert_eq!(r["req"], req, "ACK for another request: {r}");
    r["errno"].as_i64().expect("errno")
}

fn strings(v: &Value) -> Vec<Value> {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| serde_json::from_str(s.as_str().expect("v1 elements are strings")).expect("JSON in string"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn register_then_login_with_v1_reply_shape() {
    let s = Server::start(&[]);
    let mut c = s.client();
    let name = unique("alice");
    let r = c.call(json!({"msgid": 4, "name": name, "password": "pw"}));
    assert_eq!((r["msgid"].as_i64(), r["errno"].as_i64()), (Some(5), Some(0)), "{r}");
    let id = r["id"].as_i64().expect("id");
    // The same name again: 409, nothing created.
    let r = c.call(json!({"msgid": 4, "name": name, "password": "other"}));
    assert_eq!((r["msgid"].as_i64(), r["errno"].as_i64()), (Some(5), Some(409)), "{r}");
    assert!(r["errmsg"].is_string());

    let r = c.call(json!({"msgid": 1, "id": id, "password": "pw"}));
    assert_eq!((r["msgid"].as_i64(), r["errno"].as_i64()), (Some(2), Some(0)), "{r}");
    assert_eq!(r["id"], id);
    assert_eq!(r["name"], name.as_str());
    // Empty arrays are absent.
    assert!(r.get("offlinemsg").is_none() && r.get("friends").is_none() && r.get("groups").is_none(), "{r}");
}

#[test]
fn register_field_errors_are_400_and_create_nothing() {
    let s = Server::start(&[]);
    let mut c = s.client();
    for bad in [
        json!({"msgid": 4, "password": "pw"}),
        json!({"msgid": 4, "name": "x"}),
        json!({"msgid": 4, "name": 5, "password": "pw"}),
        json!({"msgid": 4, "name": "", "password": "pw"}),
        json!({"msgid": 4, "name": "n".repeat(51), "password": "pw"}),
        json!({"msgid": 4, "name": "ok", "password": ""}),
        json!({"msgid": 4, "name": "ok", "password": "p".repeat(129)}),
    ] {
        let r = c.call(bad.clone());
        assert_eq!((r["msgid"].as_i64(), r["errno"].as_i64()), (Some(5), Some(400)), "{bad} -> {r}");
    }
    // Limits are in characters: 50 four-byte emoji is a valid name.
    let r = c.call(json!({"msgid": 4, "name": "😀".repeat(50), "password": "🔑".repeat(128)}));
    assert_eq!(r["errno"], 0, "{r}");
}

#[test]
fn login_errors_in_order() {
    let s = Server::start(&[]);
    let mut a = s.client();
    let id = a.register(&unique("bob"), "right");
    // 400: missing or mistyped fields.
    for bad in [
        json!({"msgid": 1, "password": "x"}),
        json!({"msgid": 1, "id": "1", "password": "x"}),
        json!({"msgid": 1, "id": id}),
    ] {
        let r = a.call(bad.clone());
        assert_eq!((r["msgid"].as_i64(), r["errno"].as_i64()), (Some(2), Some(400)), "{bad} -> {r}");
    }
    // 1: wrong password and unknown id get the same text.
    let wrong = a.call(json!({"msgid": 1, "id": id, "password": "wrong"}));
    let unknown = a.call(json!({"msgid": 1, "id": 999_999, "password": "right"}));
    assert_eq!(wrong["errno"], 1, "{wrong}");
    assert_eq!(unknown["errno"], 1, "{unknown}");
    assert_eq!(wrong["errmsg"], "id or password is invalid!");
    assert_eq!(wrong["errmsg"], unknown["errmsg"]);
    a.login(id, "right");
    // 409: this connection is already logged in (checked before the password).
    let r = a.call(json!({"msgid": 1, "id": id, "password": "wrong"}));
    assert_eq!(r["errno"], 409, "{r}");
    // 2: online elsewhere, only for the right password; 1 otherwise.
    let mut b = s.client();
    let r = b.call(json!({"msgid": 1, "id": id, "password": "right"}));
    assert_eq!(r["errno"], 2, "{r}");
    assert_eq!(r["errmsg"], "this account is using, input another!");
    let r = b.call(json!({"msgid": 1, "id": id, "password": "wrong"}));
    assert_eq!(r["errno"], 1, "{r}");
}

#[test]
fn before_login_only_login_reg_and_ping_are_served() {
    let s = Server::start(&[]);
    let mut c = s.client();
    let r = c.call(json!({"msgid": 16}));
    assert_eq!(r, json!({"msgid": 17}));
    for (msgid, body) in [
        (3, json!({"msgid": 3})),
        (6, json!({"msgid": 6, "toid": 1, "msg": "hi"})),
        (7, json!({"msgid": 7, "friendid": 1})),
        (8, json!({"msgid": 8, "groupname": "g"})),
        (9, json!({"msgid": 9, "groupid": 1})),
        (10, json!({"msgid": 10, "groupid": 1, "msg": "hi"})),
        (12, json!({"msgid": 12, "friendid": 1})),
        (13, json!({"msgid": 13, "groupid": 1})),
        (14, json!({"msgid": 14})),
    ] {
        let r = c.call(body);
        assert_eq!(ack(&r, msgid), 401, "{r}");
    }
    // A malformed request is 400 even before login (400 comes before 401).
    let r = c.call(json!({"msgid": 6, "toid": "x", "msg": "hi"}));
    assert_eq!(ack(&r, 6), 400, "{r}");
}

#[test]
fn identity_comes_from_the_session() {
    let s = Server::start(&[]);
    let mut a = User::new(&s, "ann");
    let mut b = User::new(&s, "ben");
    let mut c = User::new(&s, "cat");
    // Acting as someone else: 403 and nothing delivered.
    let r = a.c.call(json!({"msgid": 6, "id": c.id, "name": c.name, "toid": b.id, "msg": "forged", "time": "x"}));
    assert_eq!(ack(&r, 6), 403, "{r}");
    for req in [
        json!({"msgid": 7, "id": c.id, "friendid": b.id}),
        json!({"msgid": 14, "id": c.id}),
        json!({"msgid": 3, "id": c.id}),
    ] {
        let msgid = req["msgid"].as_i64().unwrap_or_default();
        let r = a.c.call(req);
        assert_eq!(ack(&r, msgid), 403, "{r}");
    }
    let r = a.c.call(json!({"msgid": 14, "id": "x"}));
    assert_eq!(ack(&r, 14), 400, "{r}");
    b.c.expect_silence(Duration::from_millis(200));
    // The name and time a client sends are replaced by the server's.
    let r = a.c.call(
        json!({"msgid": 6, "id": a.id, "name": "mallory", "toid": b.id, "msg": "hello", "time": "1999-01-01 00:00:00"}),
    );
    assert_eq!(ack(&r, 6), 0, "{r}");
    let p = b.c.push();
    assert_eq!(p["msgid"], 6);
    assert_eq!(p["id"], a.id);
    assert_eq!(p["name"], a.name.as_str());
    assert_eq!(p["toid"], b.id);
    assert_eq!(p["msg"], "hello");
    let time = p["time"].as_str().expect("time");
    assert_ne!(time, "1999-01-01 00:00:00");
    assert_eq!(time.len(), 19, "{time}");
    assert!(
        time.as_bytes().iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            10 => *b == b' ',
            13 | 16 => *b == b':',
            _ => b.is_ascii_digit(),
        }),
        "{time}"
    );
    // id may be left out.
    let r = a.c.call(json!({"msgid": 6, "toid": b.id, "msg": "no id"}));
    assert_eq!(ack(&r, 6), 0, "{r}");
    assert_eq!(b.c.push()["msg"], "no id");
    let _ = c.c.call(json!({"msgid": 16}));
}

#[test]
fn one_chat_errors_and_self_chat() {
    let s = Server::start(&[]);
    let mut a = User::new(&s, "dan");
    for bad in [
        json!({"msgid": 6, "msg": "hi"}),
        json!({"msgid": 6, "toid": a.id}),
        json!({"msgid": 6, "toid": 1.5, "msg": "hi"}),
        json!({"msgid": 6, "toid": a.id, "msg": ""}),
        json!({"msgid": 6, "toid": a.id, "msg": "m".repeat(4001)}),
        json!({"msgid": 6, "toid": a.id, "msg": 7}),
    ] {
        let r = a.c.call(bad.clone());
        assert_eq!(ack(&r, 6), 400, "{bad} -> {r}");
    }
    let r = a.c.call(json!({"msgid": 6, "toid": 987_654, "msg": "hi"}));
    assert_eq!(ack(&r, 6), 404, "{r}");
    // 4000 characters of 4-byte emoji is within the limit; to oneself is allowed.
    let long = "😀".repeat(4000);
    a.c.send(&json!({"msgid": 6, "toid": a.id, "msg": long}));
    let r = a.c.reply();
    assert_eq!(ack(&r, 6), 0, "{r}");
    assert_eq!(a.c.push()["msg"], long.as_str());
}

#[test]
fn reqid_is_echoed_and_unknown_fields_ignored() {
    let s = Server::start(&[]);
    let mut c = s.client();
    let r = c.call(json!({"msgid": 16, "reqid": {"any": ["value", 1]}}));
    assert_eq!(r, json!({"msgid": 17, "reqid": {"any": ["value", 1]}}));
    let r = c.call(json!({"msgid": 4, "name": unique("r"), "password": "pw", "reqid": 7, "extra": [1, 2]}));
    assert_eq!((r["errno"].as_i64(), r["reqid"].as_i64()), (Some(0), Some(7)), "{r}");
    let r = c.call(json!({"msgid": 14, "reqid": "s"}));
    assert_eq!((r["errno"].as_i64(), r["reqid"].as_str()), (Some(401), Some("s")), "{r}");
    let r = c.call(json!({"msgid": 99, "reqid": "u"}));
    assert_eq!(
        (r["msgid"].as_i64(), r["errno"].as_i64(), r["reqid"].as_str()),
        (Some(11), Some(400), Some("u")),
        "{r}"
    );
}

#[test]
fn offline_messages_in_order_delivered_once() {
    let s = Server::start(&[]);
    let mut a = User::new(&s, "eve");
    let mut c = Client::connect(s.addr);
    let bname = unique("fay");
    let b = c.register(&bname, "pw");
    for i in 0..5 {
        let r = a.c.call(json!({"msgid": 6, "toid": b, "msg": format!("m{i}")}));
        assert_eq!(ack(&r, 6), 0, "{r}");
    }
    let r = c.login(b, "pw");
    let offline = strings(&r["offlinemsg"]);
    let msgs: Vec<&str> = offline.iter().map(|m| m["msg"].as_str().unwrap_or("")).collect();
    assert_eq!(msgs, ["m0", "m1", "m2", "m3", "m4"]);
    assert!(offline
        .iter()
        .all(|m| m["msgid"] == 6 && m["id"] == a.id && m["name"] == a.name.as_str() && m["toid"] == b));
    // Logged out and in again: nothing is delivered twice.
    assert_eq!(ack(&c.call(json!({"msgid": 3})), 3), 0);
    let r = c.login(b, "pw");
    assert!(r.get("offlinemsg").is_none(), "{r}");
}

#[test]
fn v2_login_has_objects_all_the_way_down() {
    let s = Server::start(&[]);
    let mut a = User::new(&s, "gus");
    let mut c = Client::connect(s.addr);
    let b = c.register(&unique("hal"), "pw");
    a.c.call(json!({"msgid": 7, "friendid": b}));
    let gname = unique("grp");
    let g = a.c.call(json!({"msgid": 8, "groupname": gname, "groupdesc": "d"}))["groupid"].as_i64().expect("groupid");
    a.c.call(json!({"msgid": 6, "toid": b, "msg": "x"}));
    // b's view: a group with a as member, an offline message.
    c.call(json!({"msgid": 1, "id": b, "password": "pw", "v": 2}));
    c.call(json!({"msgid": 3}));
    a.c.call(json!({"msgid": 6, "toid": b, "msg": "y"}));
    let r = c.call(json!({"msgid": 1, "id": b, "password": "pw", "v": 2}));
    assert_eq!(r["errno"], 0, "{r}");
    // "x" came in the first LOGIN_ACK, unconfirmed (no RECEIVED): it comes again first.
    assert_eq!((r["offlinemsg"][0]["msg"].as_str(), r["offlinemsg"][1]["msg"].as_str()), (Some("x"), Some("y")), "{r}");
    // a's own v2 view: its friend and its group with itself as creator.
    let mut a2 = Client::connect(s.addr);
    a.c.call(json!({"msgid": 3}));
    let r = a2.call(json!({"msgid": 1, "id": a.id, "password": "pw", "v": 2}));
    assert_eq!(r["friends"][0], json!({"id": b, "name": r["friends"][0]["name"], "state": "online"}), "{r}");
    assert_eq!(r["groups"][0]["id"], g);
    assert_eq!(r["groups"][0]["groupname"], gname.as_str());
    assert_eq!(r["groups"][0]["groupdesc"], "d");
    assert_eq!(r["groups"][0]["users"][0], json!({"id": a.id, "name": a.name, "state": "online", "role": "creator"}));
}

#[test]
fn friends_are_one_way_sorted_with_state() {
    let s = Server::start(&[]);
    let mut a = User::new(&s, "ivy");
    let mut c = Client::connect(s.addr);
    let off = c.register(&unique("jon"), "pw");
    let on = User::new(&s, "kim");
    assert_eq!(ack(&a.c.call(json!({"msgid": 7, "friendid": on.id})), 7), 0);
    assert_eq!(ack(&a.c.call(json!({"msgid": 7, "friendid": off})), 7), 0);
    assert_eq!(ack(&a.c.call(json!({"msgid": 7, "friendid": off})), 7), 409);
    assert_eq!(ack(&a.c.call(json!({"msgid": 7, "friendid": a.id})), 7), 400);
    assert_eq!(ack(&a.c.call(json!({"msgid": 7, "friendid": 555_555})), 7), 404);
    assert_eq!(ack(&a.c.call(json!({"msgid": 7})), 7), 400);
    let r = a.c.call(json!({"msgid": 14}));
    assert_eq!(ack(&r, 14), 0);
    let got = r["friends"].as_array().cloned().unwrap_or_default();
    let mut ids = [off, on.id];
    ids.sort();
    assert_eq!(got.iter().map(|f| f["id"].as_i64().unwrap_or(0)).collect::<Vec<_>>(), ids, "sorted by id: {r}");
    assert_eq!(got.iter().find(|f| f["id"] == on.id), Some(&json!({"id": on.id, "name": on.name, "state": "online"})));
    assert_eq!(got.iter().find(|f| f["id"] == off).map(|f| f["state"].clone()), Some(json!("offline")));
    // One-way: `on` has no friends.
    let mut on = on;
    assert_eq!(on.c.call(json!({"msgid": 14}))["friends"], json!([]));
    // The friend list in LOGIN_ACK (v1 strings).
    a.c.call(json!({"msgid": 3}));
    let r = a.c.login(a.id, "pw");
    assert_eq!(strings(&r["friends"]).len(), 2, "{r}");
    // Delete: then 404.
    assert_eq!(ack(&a.c.call(json!({"msgid": 12, "friendid": off})), 12), 0);
    assert_eq!(ack(&a.c.call(json!({"msgid": 12, "friendid": off})), 12), 404);
    assert_eq!(a.c.call(json!({"msgid": 14}))["friends"].as_array().map(Vec::len), Some(1));
}

#[test]
fn groups_create_join_chat_leave_delete() {
    let s = Server::start(&[]);
    let mut a = User::new(&s, "leo");
    let mut b = User::new(&s, "mia");
    let mut c = User::new(&s, "ned");
    let mut x = User::new(&s, "out");
    let gname = unique("team");
    let r = a.c.call(json!({"msgid": 8, "groupname": gname, "groupdesc": "the team"}));
    assert_eq!(ack(&r, 8), 0, "{r}");
    let g = r["groupid"].as_i64().expect("groupid");
    assert_eq!(ack(&a.c.call(json!({"msgid": 8, "groupname": gname})), 8), 409);
    assert_eq!(ack(&a.c.call(json!({"msgid": 8, "groupname": ""})), 8), 400);
    assert_eq!(ack(&a.c.call(json!({"msgid": 8, "groupname": "z", "groupdesc": "d".repeat(201)})), 8), 400);
    let r = a.c.call(json!({"msgid": 8, "groupname": unique("nodesc")}));
    assert_eq!(ack(&r, 8), 0, "{r}");
    assert_eq!(ack(&b.c.call(json!({"msgid": 9, "groupid": g})), 9), 0);
    assert_eq!(ack(&b.c.call(json!({"msgid": 9, "groupid": g})), 9), 409);
    assert_eq!(ack(&b.c.call(json!({"msgid": 9, "groupid": 424_242})), 9), 404);
    assert_eq!(ack(&c.c.call(json!({"msgid": 9, "groupid": g})), 9), 0);
    // Fan-out to every member but the sender.
    let r = b.c.call(json!({"msgid": 10, "groupid": g, "msg": "hi all", "name": "fake"}));
    assert_eq!(ack(&r, 10), 0, "{r}");
    for u in [&mut a, &mut c] {
        let p = u.c.push();
        assert_eq!(
            (p["msgid"].as_i64(), p["id"].as_i64(), p["groupid"].as_i64()),
            (Some(10), Some(b.id), Some(g)),
            "{p}"
        );
        assert_eq!(p["name"], b.name.as_str());
        assert_eq!(p["msg"], "hi all");
        assert!(p["time"].is_string());
    }
    b.c.expect_silence(Duration::from_millis(200));
    // A non-member: 403; no group: 404.
    assert_eq!(ack(&x.c.call(json!({"msgid": 10, "groupid": g, "msg": "let me in"})), 10), 403);
    assert_eq!(ack(&x.c.call(json!({"msgid": 10, "groupid": 424_242, "msg": "?"})), 10), 404);
    assert_eq!(ack(&x.c.call(json!({"msgid": 10, "groupid": g, "msg": ""})), 10), 400);
    // LOGIN_ACK lists the group with members and roles (v1 strings all the way down).
    c.c.call(json!({"msgid": 3}));
    let r = c.c.login(c.id, "pw");
    let groups = strings(&r["groups"]);
    let team = groups.iter().find(|gr| gr["id"] == g).expect("group listed");
    assert_eq!(team["groupname"], gname.as_str());
    assert_eq!(team["groupdesc"], "the team");
    let users = strings(&team["users"]);
    let role = |id: i64| users.iter().find(|u| u["id"] == id).map(|u| u["role"].clone());
    assert_eq!(role(a.id), Some(json!("creator")));
    assert_eq!(role(b.id), Some(json!("normal")));
    assert_eq!(role(c.id), Some(json!("normal")));
    assert!(users.iter().all(|u| u["state"] == "online"), "{users:?}");
    // A normal member leaves; then 404 for them.
    assert_eq!(ack(&c.c.call(json!({"msgid": 13, "groupid": g})), 13), 0);
    assert_eq!(ack(&c.c.call(json!({"msgid": 13, "groupid": g})), 13), 404);
    assert_eq!(ack(&c.c.call(json!({"msgid": 10, "groupid": g, "msg": "still here?"})), 10), 403);
    // The creator deletes the group for everyone.
    assert_eq!(ack(&a.c.call(json!({"msgid": 13, "groupid": g})), 13), 0);
    assert_eq!(ack(&b.c.call(json!({"msgid": 10, "groupid": g, "msg": "gone?"})), 10), 404);
    assert_eq!(ack(&b.c.call(json!({"msgid": 9, "groupid": g})), 9), 404);
}

#[test]
fn group_messages_wait_offline_in_order() {
    let s = Server::start(&[]);
    let mut a = User::new(&s, "oli");
    let mut c = Client::connect(s.addr);
    let b = c.register(&unique("pam"), "pw");
    c.login(b, "pw");
    let g = a.c.call(json!({"msgid": 8, "groupname": unique("g")}))["groupid"].as_i64().expect("groupid");
    assert_eq!(ack(&c.call(json!({"msgid": 9, "groupid": g})), 9), 0);
    assert_eq!(ack(&c.call(json!({"msgid": 3})), 3), 0);
    for i in 0..3 {
        assert_eq!(ack(&a.c.call(json!({"msgid": 10, "groupid": g, "msg": format!("g{i}")})), 10), 0);
        assert_eq!(ack(&a.c.call(json!({"msgid": 6, "toid": b, "msg": format!("o{i}")})), 6), 0);
    }
    let r = c.login(b, "pw");
    let msgs: Vec<(i64, String)> = strings(&r["offlinemsg"])
        .iter()
        .map(|m| (m["msgid"].as_i64().unwrap_or(0), m["msg"].as_str().unwrap_or("").to_owned()))
        .collect();
    let expect: Vec<(i64, String)> = (0..3).flat_map(|i| [(10, format!("g{i}")), (6, format!("o{i}"))]).collect();
    assert_eq!(msgs, expect);
}

#[test]
fn loginout_keeps_the_connection_and_a_drop_is_a_loginout() {
    let s = Server::start(&[]);
    let mut a = User::new(&s, "quin");
    let mut b = User::new(&s, "rex");
    assert_eq!(ack(&a.c.call(json!({"msgid": 3})), 3), 0);
    // Same connection, logged out: 401; may log in again.
    assert_eq!(ack(&a.c.call(json!({"msgid": 14})), 14), 401);
    a.c.login(a.id, "pw");
    // Messages to a logged-out user are stored, not pushed to the old connection.
    b.c.call(json!({"msgid": 3}));
    let r = a.c.call(json!({"msgid": 6, "toid": b.id, "msg": "later"}));
    assert_eq!(ack(&r, 6), 0);
    b.c.expect_silence(Duration::from_millis(200));
    // Dropping the connection without LOGINOUT frees the account at once.
    drop(a.c);
    let mut again = Client::connect(s.addr);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = again.call(json!({"msgid": 1, "id": a.id, "password": "pw"}));
        if r["errno"] == 0 {
            break;
        }
        assert_eq!(r["errno"], 2, "{r}");
        assert!(std::time::Instant::now() < deadline, "still online after the drop");
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = b.c.login(b.id, "pw");
    assert_eq!(strings(&r["offlinemsg"])[0]["msg"], "later");
}

#[test]
fn hostile_strings_round_trip_byte_for_byte() {
    let s = Server::start(&[]);
    let tricky = [
        "quote \" and 'single'",
        "back\\slash \\\\ \\n",
        "'; DROP TABLE user; --",
        "Robert'); DELETE FROM offlinemessage;--",
        "😀🎉 𝄞 emoji",
        "nul\u{0}inside",
        "{\"msgid\":6}",
        "\u{feff}bom",
    ];
    let mut a = Client::connect(s.addr);
    let name = format!("{}{}", unique("n"), tricky[2]);
    let aid = a.register(&name, tricky[0]);
    let r = a.login(aid, tricky[0]);
    assert_eq!(r["name"], name.as_str());
    let mut b = Client::connect(s.addr);
    let bname = format!("{}{}", unique("n"), tricky[4]);
    let bid = b.register(&bname, tricky[3]);
    for t in tricky {
        assert_eq!(a.call(json!({"msgid": 6, "toid": bid, "msg": t}))["errno"], 0);
    }
    let gname = format!("{}{}", unique("g"), tricky[1]);
    let r = a.call(json!({"msgid": 8, "groupname": gname, "groupdesc": tricky[5]}));
    assert_eq!(r["errno"], 0, "{r}");
    let r = b.login(bid, tricky[3]);
    let got: Vec<String> =
        strings(&r["offlinemsg"]).iter().map(|m| m["msg"].as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(got, tricky);
    assert_eq!(strings(&r["offlinemsg"])[0]["name"], name.as_str());
    assert_eq!(b.call(json!({"msgid": 9, "groupid": r["id"].as_i64().map(|_| 1).unwrap_or(1)}))["msgid"], 15);
    a.call(json!({"msgid": 3}));
    let r = a.login(aid, tricky[0]);
    let g = strings(&r["groups"]);
    assert_eq!(g[0]["groupname"], gname.as_str());
    assert_eq!(g[0]["groupdesc"], tricky[5]);
}

#[test]
fn a_large_mailbox_comes_as_login_ack_then_pushes_in_order() {
    let s = Server::start(&["--rate-limit", "0"]);
    let mut a = User::new(&s, "bulk");
    let mut c = Client::connect(s.addr);
    let b = c.register(&unique("inbox"), "pw");
    let mut frames = Vec::new();
    for i in 0..450 {
        frames.extend(serde_json::to_vec(&json!({"msgid": 6, "toid": b, "msg": format!("m{i}")})).unwrap_or_default());
        frames.push(b'\n');
    }
    a.c.send_raw(&frames);
    for _ in 0..450 {
        assert_eq!(ack(&a.c.reply(), 6), 0);
    }
    let r = c.login(b, "pw");
    let mut got: Vec<String> =
        strings(&r["offlinemsg"]).iter().map(|m| m["msg"].as_str().unwrap_or("").to_owned()).collect();
    assert_eq!(got.len(), 200, "the oldest page comes in LOGIN_ACK");
    // Sent while the rest is being pumped: it must not overtake the backlog.
    assert_eq!(ack(&a.c.call(json!({"msgid": 6, "toid": b, "msg": "late"})), 6), 0);
    while got.len() < 451 {
        got.push(c.push()["msg"].as_str().unwrap_or("").to_owned());
    }
    let expect: Vec<String> = (0..450).map(|i| format!("m{i}")).chain(["late".to_owned()]).collect();
    assert_eq!(got, expect);
    c.expect_silence(Duration::from_millis(200));
    // Handed over means gone from the mailbox.
    c.call(json!({"msgid": 3}));
    assert!(c.login(b, "pw").get("offlinemsg").is_none());
}

#[test]
fn nothing_is_pushed_before_login_ack_even_mid_flood() {
    let s = Server::start(&["--rate-limit", "0"]);
    let mut c = Client::connect(s.addr);
    let rid = c.register(&unique("target"), "pw");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = flood(s.next_addr(), rid, std::sync::Arc::clone(&stop));
    let mut received = 0u64;
    for _ in 0..30 {
        let mut r = Client::connect(s.next_addr());
        r.send(&json!({"msgid": 1, "id": rid, "password": "pw"}));
        let first = r.read_frame(Duration::from_secs(10)).expect("a reply");
        assert_eq!(first["msgid"], 2, "the first frame after LOGIN must be its LOGIN_ACK: {first}");
        if first["errno"] != 0 {
            continue; // errno 2 while the previous session is being torn down
        }
        received += first["offlinemsg"].as_array().map_or(0, |a| a.len() as u64);
        for _ in 0..5 {
            if let Polled::Frame(_) = r.poll_frame(Duration::from_millis(50)) {
                received += 1;
            }
        }
        // Log out cleanly, collecting what was pushed before the ACK.
        r.send(&json!({"msgid": 3}));
        loop {
            let v = r.read_frame(Duration::from_secs(10)).expect("LOGINOUT ACK");
            if v["msgid"] == 15 {
                break;
            }
            received += 1;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let sent = flood.join().expect("flooder");
    // And nothing was lost: what is left waits in the mailbox.
    let mut last = Client::connect(s.addr);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (mut last_ack, mut tries) = (last.call(json!({"msgid": 1, "id": rid, "password": "pw"})), 0);
    while last_ack["errno"] == 2 && std::time::Instant::now() < deadline {
        tries += 1;
        std::thread::sleep(Duration::from_millis(20 * tries.min(5)));
        last_ack = last.call(json!({"msgid": 1, "id": rid, "password": "pw"}));
    }
    assert_eq!(last_ack["errno"], 0, "{last_ack}");
    received += last_ack["offlinemsg"].as_array().map_or(0, |a| a.len() as u64);
    while let Polled::Frame(_) = last.poll_frame(Duration::from_millis(300)) {
        received += 1;
    }
    assert_eq!(received, sent, "every acked message exactly once");
}
