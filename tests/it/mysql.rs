//! The MySQL backend through the real server: what lands in the tables, a schema applied
//! by two servers and by hand, and a database outage in the middle of a run.
//!
//! Each test uses a fresh database on the shared private MariaDB, except the outage
//! test, which stops and restarts a MariaDB of its own.

use std::time::{Duration, Instant};

use argon2::{Argon2, PasswordHash, PasswordVerifier};
use mysql::prelude::Queryable;
use serde_json::{json, Value};

use crate::support::services::{self, MariaDb};
use crate::support::{unique, Client, Server, User};

/// A password that must never appear in a table.
const SECRET: &str = "correct horse battery staple 🦀";

/// Asserts `stored` is an argon2id PHC string of [`SECRET`] that does not contain it.
fn assert_hash_of_secret(stored: &str) {
    assert!(stored.starts_with("$argon2id$v=19$"), "not an argon2id PHC string: {stored}");
    assert!(!stored.contains(SECRET) && !stored.contains("horse"), "the password is in the table: {stored}");
    let parsed = PasswordHash::new(stored).unwrap_or_else(|e| panic!("not a PHC string ({e}): {stored}"));
    assert!(Argon2::default().verify_password(SECRET.as_bytes(), &parsed).is_ok(), "not a hash of the password");
}

/// The `msg` of each offline message in a LOGIN_ACK (v1: JSON-encoded strings).
fn offline_msgs(ack: &Value) -> Vec<String> {
    let list = ack["offlinemsg"].as_array().cloned().unwrap_or_default();
    list.iter()
        .map(|m| {
            let push: Value = serde_json::from_str(m.as_str().expect("a string")).expect("json");
            push["msg"].as_str().expect("msg").to_owned()
        })
        .collect()
}

#[test]
fn mysql_user_table_holds_an_argon2id_hash_not_the_password() {
    let db = MariaDb::shared().create_database();
    let s = Server::start_with_db(&db, &[]);
    let mut c = s.client();
    let id = c.register(&unique("hashed"), SECRET);
    c.login(id, SECRET);
    let mut conn = services::connect(&db);
    let stored: Option<String> = conn.exec_first("SELECT password FROM user WHERE id = ?", (id,)).expect("select");
    assert_hash_of_secret(&stored.expect("the user's row"));
    let plain: Option<i64> =
        conn.exec_first("SELECT COUNT(*) FROM user WHERE password LIKE ?", (format!("%{SECRET}%"),)).expect("select");
    assert_eq!(plain, Some(0));
}

#[test]
fn sqlite_user_table_holds_an_argon2id_hash_not_the_password() {
    let path = services::scratch_dir("hash-sqlite").join("chat.db");
    let s = Server::start_with_db(&format!("sqlite://{}", path.display()), &[]);
    let mut c = s.client();
    let id = c.register(&unique("hashed"), SECRET);
    c.login(id, SECRET);
    let conn = rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open");
    let stored: String =
        conn.query_row("SELECT password FROM user WHERE id = ?1", [id], |row| row.get(0)).expect("the user's row");
    assert_hash_of_secret(&stored);
}

#[test]
fn a_second_server_on_the_same_database_starts_and_sees_the_data() {
    let db = MariaDb::shared().create_database();
    let first = Server::start_with_db(&db, &[]);
    let mut a = User::new(&first, "idem");
    let bname = unique("idem");
    let b = first.client().register(&bname, "pw");
    assert_eq!(a.c.call(json!({"msgid": 7, "friendid": b}))["errno"], 0);
    let gname = unique("idem-group");
    let g = a.c.call(json!({"msgid": 8, "groupname": gname, "groupdesc": "d"}))["groupid"].as_i64().expect("gid");
    assert_eq!(a.c.call(json!({"msgid": 6, "toid": b, "msg": "stored"}))["errno"], 0);

    // The first server keeps running: its schema is in place, the second's is a no-op.
    let second = Server::start_with_db(&db, &[]);
    let mut bc = second.client();
    let ack = bc.login(b, "pw");
    assert_eq!(offline_msgs(&ack), ["stored"]);
    // Servers without a bus do not know each other's users: a may log in here too.
    let mut a2 = second.client();
    let ack = a2.login(a.id, "pw");
    assert_eq!(ack["groups"].as_array().map(Vec::len), Some(1), "{ack}");
    let friends = a2.call(json!({"msgid": 14}));
    assert_eq!(friends["friends"][0]["id"], b, "{friends}");
    assert_eq!(a2.call(json!({"msgid": 10, "groupid": g, "msg": "hi"}))["errno"], 0);
    // A third start after both are gone works too.
    drop((first, second, a, a2, bc));
    let third = Server::start_with_db(&db, &[]);
    third.client().login(b, "pw");

    let mut conn = services::connect(&db);
    let tables: Vec<String> = conn
        .query("SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE() ORDER BY TABLE_NAME")
        .expect("tables");
    assert_eq!(tables, ["allgroup", "friend", "groupuser", "inbox", "message", "user"]);
}

#[test]
fn the_schema_file_loads_by_hand_and_is_utf8mb4_with_exact_names() {
    let db = MariaDb::shared().create_database();
    let mut conn = services::connect(&db);
    let schema = include_str!("../../sql/chat.sql");
    let text: String = schema.lines().map(|l| l.split("--").next().unwrap_or_default()).collect::<Vec<_>>().join("\n");
    // Twice: every statement is idempotent.
    for _ in 0..2 {
        for statement in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            conn.query_drop(statement).unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
    }
    let not_utf8mb4: Vec<(String, String)> = conn
        .query(
            "SELECT TABLE_NAME, COLUMN_NAME FROM information_schema.COLUMNS
              WHERE TABLE_SCHEMA = DATABASE() AND CHARACTER_SET_NAME IS NOT NULL
                AND CHARACTER_SET_NAME <> 'utf8mb4'",
        )
        .expect("columns");
    assert_eq!(not_utf8mb4, []);

    // The server accepts the tables it finds.
    let s = Server::start_with_db(&db, &[]);
    let mut c = s.client();
    // Case and trailing spaces make different names; 4-byte characters survive.
    let base = unique("Zoë🦀");
    let names = [base.clone(), base.to_lowercase(), format!("{base} "), format!(" {base}")];
    let ids: Vec<i64> = names.iter().map(|n| c.register(n, "pw")).collect();
    assert_eq!(c.call(json!({"msgid": 4, "name": base, "password": "pw"}))["errno"], 409);
    for (id, name) in ids.iter().zip(&names) {
        let stored: Option<String> = conn.exec_first("SELECT name FROM user WHERE id = ?", (*id,)).expect("select");
        assert_eq!(stored.as_deref(), Some(name.as_str()));
    }
    let mut me = s.client();
    let ack = me.login(ids[0], "pw");
    assert_eq!(ack["name"], names[0].as_str());
    let emoji = "👩‍👩‍👧‍👦 𝄞 🦀";
    let g = me.call(json!({"msgid": 8, "groupname": format!("{base}{emoji}"), "groupdesc": emoji}));
    assert_eq!(g["errno"], 0, "{g}");
    assert_eq!(me.call(json!({"msgid": 6, "toid": ids[1], "msg": emoji}))["errno"], 0);
    let mut other = s.client();
    assert_eq!(offline_msgs(&other.login(ids[1], "pw")), [emoji]);
}

/// MariaDB goes away mid-run and comes back on the same port and data: requests that
/// need it get 503 quickly meanwhile, the server stays up, and afterwards everything
/// works without a restart, with nothing that was acknowledged lost.
#[test]
fn a_database_outage_gives_503_and_the_server_recovers() {
    let mariadb = MariaDb::start("mariadb-outage");
    let db = mariadb.create_database();
    let s = Server::start_with_db(&db, &[]);
    let mut alice = User::new(&s, "alice");
    let bname = unique("bob");
    let bob = s.client().register(&bname, "pw");
    assert_eq!(alice.c.call(json!({"msgid": 6, "toid": bob, "msg": "before"}))["errno"], 0);

    let stopped = Instant::now();
    mariadb.stop();
    eprintln!("MariaDB stopped in {:?}", stopped.elapsed());

    let started = Instant::now();
    let during = alice.c.call(json!({"msgid": 6, "toid": bob, "msg": "during"}));
    let during_acked = match during["errno"].as_i64() {
        Some(0) => true,
        Some(503) => false,
        _ => panic!("ONE_CHAT during the outage: {during}"),
    };
    let mut c = s.client();
    let reg = c.call(json!({"msgid": 4, "name": unique("newcomer"), "password": "pw"}));
    assert_eq!((reg["msgid"].as_i64(), reg["errno"].as_i64()), (Some(5), Some(503)), "{reg}");
    let login = c.call(json!({"msgid": 1, "id": bob, "password": "pw"}));
    assert_eq!((login["msgid"].as_i64(), login["errno"].as_i64()), (Some(2), Some(503)), "{login}");
    let friend = alice.c.call(json!({"msgid": 7, "friendid": bob}));
    assert_eq!(friend["errno"], 503, "{friend}");
    assert!(started.elapsed() < Duration::from_secs(8), "503s took {:?}", started.elapsed());
    // Alive: PING needs no database, and the process is still there.
    assert_eq!(c.call(json!({"msgid": 16})), json!({"msgid": 17}));
    assert!(!s.log().contains("panicked"), "{}", s.log());

    mariadb.restart();

    // The same connections, the same server: the pool replaced its dead connections.
    let mut b = Client::connect(s.addr);
    let ack = b.login(bob, "pw");
    let mut expected = vec!["before"];
    if during_acked {
        expected.push("during");
    }
    assert_eq!(offline_msgs(&ack), expected, "{ack}");
    assert_eq!(alice.c.call(json!({"msgid": 6, "toid": bob, "msg": "after"}))["errno"], 0);
    assert_eq!(b.push()["msg"], "after");
    assert_eq!(alice.c.call(json!({"msgid": 7, "friendid": bob}))["errno"], 0);
    let newcomer = User::new(&s, "newcomer");
    assert!(newcomer.id > bob);
    assert_eq!(c.call(json!({"msgid": 16})), json!({"msgid": 17}));
}

/// A page of history reads a short range of the conversation's index, backwards, with
/// no sort: it costs the same at the millionth message as at the first. Pinned on the
/// plan of the backend's own statement, with table statistics, not on timings.
#[test]
fn mysql_history_reads_the_conversation_index_without_a_sort() {
    use chat::store::{Conversation, MysqlStore, NewMessage, Store};

    let db = MariaDb::shared().create_database();
    let store = MysqlStore::open(&db, 2).expect("open");
    let users: Vec<i64> = (0..20).map(|i| store.create_user(&unique(&format!("u{i}")), "h").expect("user")).collect();
    let group = store.create_group(users[0], &unique("g"), "").expect("group");
    let msg = |sender: i64, to: Conversation| NewMessage {
        sender,
        sender_name: "n".into(),
        to,
        text: "hello".into(),
        time: "2026-05-01 12:00:00".into(),
        unix_time: 1_780_000_000,
        cmid: None,
        recipients: vec![],
    };
    // One busy conversation (most of the log), and many quiet ones.
    for _ in 0..20 {
        let mut batch: Vec<NewMessage> = (0..200).map(|_| msg(users[0], Conversation::Peer(users[1]))).collect();
        batch.extend(users.windows(2).map(|w| msg(w[1], Conversation::Peer(w[0]))));
        batch.extend((0..10).map(|i| msg(users[i], Conversation::Group(group))));
        store.append(&batch).expect("append");
    }
    services::connect(&db).query_drop("ANALYZE TABLE message").expect("analyze");
    for (me, conv) in [
        (users[0], Conversation::Peer(users[1])),
        (users[1], Conversation::Peer(users[0])),
        (users[7], Conversation::Peer(users[8])),
        (users[3], Conversation::Peer(users[3])),
        (users[0], Conversation::Group(group)),
    ] {
        let (key, extra) = store.history_plan(me, conv).expect("plan");
        assert_eq!(key.as_deref(), Some("message_conv"), "{conv:?}: {extra:?}");
        let extra = extra.unwrap_or_default();
        assert!(!extra.contains("filesort") && !extra.contains("temporary"), "{conv:?}: {extra}");
    }
}
