//! PROTOCOL.md §1 against the real binary: how bytes become frames and replies.

use std::io::Write;
use std::time::Duration;

use serde_json::json;

use crate::support::{Client, Server};

#[test]
fn coalesced_frames_each_get_a_reply_in_order() {
    let s = Server::start(&[]);
    let mut c = s.client();
    // Back-to-back, NUL-, space- and newline-separated, all in one write.
    c.send_raw(b"{\"msgid\":16,\"reqid\":1}{\"msgid\":16,\"reqid\":2}\0{\"msgid\":16,\"reqid\":3} \r\n\t{\"msgid\":16,\"reqid\":4}\n");
    for i in 1..=4 {
        assert_eq!(c.reply(), json!({"msgid": 17, "reqid": i}));
    }
}

#[test]
fn a_frame_split_across_reads_is_reassembled() {
    let s = Server::start(&[]);
    let mut c = s.client();
    let frame = b"{\"msgid\":16,\"reqid\":\"split \\\" } { here\"}\n";
    for chunk in frame.chunks(3) {
        c.send_raw(chunk);
        c.stream.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(c.reply(), json!({"msgid": 17, "reqid": "split \" } { here"}));
}

#[test]
fn replies_mirror_the_client_terminator() {
    let s = Server::start(&[]);
    let mut c = s.client();
    c.send_raw(b"{\"msgid\":16}");
    c.reply();
    c.send_raw(b"\n{\"msgid\":16}\n");
    c.reply();
    c.send_raw(b"{\"msgid\":16}\0");
    c.reply();
    c.send_raw(b"{\"msgid\":16}\n");
    c.reply();
    // Newline until a NUL-terminated frame; NUL after it; newline again after a newline.
    assert_eq!(c.seen_terminators, [b'\n', b'\n', 0, b'\n']);
}

#[test]
fn the_cpp_client_gets_nul_terminated_pushes() {
    let s = Server::start(&[]);
    let mut a = crate::support::User::new(&s, "nul");
    let mut b = crate::support::User::new(&s, "nulb");
    b.c.terminator = b"\0";
    b.c.call(json!({"msgid": 16}));
    a.c.call(json!({"msgid": 6, "toid": b.id, "msg": "one"}));
    a.c.call(json!({"msgid": 6, "toid": b.id, "msg": "two"}));
    assert_eq!(b.c.push()["msg"], "one");
    assert_eq!(b.c.push()["msg"], "two");
    // REG and LOGIN went with newlines; everything after the NUL-terminated PING has NUL.
    assert_eq!(b.c.seen_terminators[2..], [0, 0, 0], "{:?}", b.c.seen_terminators);
}

#[test]
fn unknown_msgid_and_mistyped_fields_keep_the_connection() {
    let s = Server::start(&[]);
    let mut c = s.client();
    for bad in [json!({"msgid": 99}), json!({"msgid": 16.0}), json!({"msgid": "1"}), json!({"nomsgid": 1}), json!({})] {
        let r = c.call(bad.clone());
        assert_eq!((r["msgid"].as_i64(), r["errno"].as_i64()), (Some(11), Some(400)), "{bad} -> {r}");
        assert!(r["errmsg"].is_string());
    }
    // A lone surrogate is a mistyped field: normal reply type, 400, connection kept.
    c.send_raw(b"{\"msgid\":4,\"name\":\"a\\ud800\",\"password\":\"x\"}\n");
    let r = c.reply();
    assert_eq!((r["msgid"].as_i64(), r["errno"].as_i64()), (Some(5), Some(400)), "{r}");
    assert_eq!(c.call(json!({"msgid": 16})), json!({"msgid": 17}));
}

#[test]
fn invalid_json_and_non_objects_close_only_that_connection() {
    let s = Server::start(&[]);
    let mut bystander = s.client();
    for bad in
        [&b"[1,2]\n"[..], b"42\n", b"\"str\"\n", b"null\n", b"{\"msgid\":16,,}\n", b"hello\n", b"{\"msgid\":\xff}\n"]
    {
        let mut c = s.client();
        c.send_raw(bad);
        let r = c.read_frame(Duration::from_secs(5)).expect("an ERROR before the close");
        assert_eq!(
            (r["msgid"].as_i64(), r["errno"].as_i64()),
            (Some(11), Some(400)),
            "{:?} -> {r}",
            String::from_utf8_lossy(bad)
        );
        assert!(c.closed_within(Duration::from_secs(5)), "{:?} left the connection open", String::from_utf8_lossy(bad));
    }
    assert_eq!(bystander.call(json!({"msgid": 16})), json!({"msgid": 17}));
}

#[test]
fn oversized_frames_get_413_and_close() {
    let s = Server::start(&["--max-frame", "1024"]);
    let mut bystander = s.client();
    // Exactly at the limit is fine.
    let mut c = s.client();
    let pad = "x".repeat(1024 - r#"{"msgid":16,"reqid":""}"#.len());
    let at_limit = format!(r#"{{"msgid":16,"reqid":"{pad}"}}"#);
    assert_eq!(at_limit.len(), 1024);
    c.send_raw(at_limit.as_bytes());
    c.send_raw(b"\n");
    assert_eq!(c.reply()["msgid"], 17);
    // Past the limit and never finished: 413 without waiting for the end.
    let mut big = s.client();
    let partial = format!(r#"{{"msgid":16,"reqid":"{pad}xxx"#);
    assert_eq!(partial.len(), 1025);
    big.send_raw(partial.as_bytes());
    let r = big.read_frame(Duration::from_secs(5)).expect("an ERROR before the close");
    assert_eq!((r["msgid"].as_i64(), r["errno"].as_i64()), (Some(11), Some(413)), "{r}");
    assert!(big.closed_within(Duration::from_secs(5)));
    // Separators between frames do not count.
    let mut c = s.client();
    c.send_raw(&[0u8; 10_000]);
    c.send_raw(&[b'\n'; 10_000]);
    assert_eq!(c.call(json!({"msgid": 16})), json!({"msgid": 17}));
    assert_eq!(bystander.call(json!({"msgid": 16})), json!({"msgid": 17}));
}

#[test]
fn a_half_close_is_a_disconnect() {
    let s = Server::start(&[]);
    let mut c = Client::connect(s.addr);
    let id = c.register(&crate::support::unique("half"), "pw");
    c.login(id, "pw");
    c.stream.shutdown(std::net::Shutdown::Write).expect("shutdown");
    assert!(c.closed_within(Duration::from_secs(5)));
    let mut again = Client::connect(s.addr);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while again.call(json!({"msgid": 1, "id": id, "password": "pw"}))["errno"] != 0 {
        assert!(std::time::Instant::now() < deadline, "the half-closed session is still online");
        std::thread::sleep(Duration::from_millis(20));
    }
}
