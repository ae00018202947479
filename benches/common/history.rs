//! The `history` workload (ours only; the peer keeps no history): a conversation of
//! many messages written straight into our SQLite file while the server is stopped,
//! then HISTORY pages read from it one at a time over the protocol.

use std::ops::RangeInclusive;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use super::load::{histogram, now_ns, Conn, Run, WAIT};

/// Messages per page, the protocol's default.
pub const PAGE: usize = 50;

/// Appends `n` messages between the users `a` and `b` (id and name; they take turns
/// sending) to the `message` table of our SQLite file, in one transaction, with no
/// inbox rows (nothing is owed to anyone). The server must be stopped and must have
/// created its schema. Returns the range of mids written.
pub fn fill(db: &Path, a: (i64, &str), b: (i64, &str), n: usize) -> rusqlite::Result<RangeInclusive<i64>> {
    let mut db = rusqlite::Connection::open(db)?;
    let (lo, hi) = (a.0.min(b.0), a.0.max(b.0));
    let time = chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string();
    let unixtime = chrono::Local::now().timestamp();
    let tx = db.transaction()?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO message (sender, sendername, convlo, convhi, msg, time, unixtime)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for i in 0..n {
            let (sender, name) = if i % 2 == 0 { a } else { b };
            let msg = format!("message {i} of a long conversation, written by the bench");
            insert.execute(rusqlite::params![sender, name, lo, hi, msg, time, unixtime])?;
        }
    }
    let last = tx.last_insert_rowid();
    tx.commit()?;
    db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
    Ok(last + 1 - n as i64..=last)
}

/// A small xorshift generator: the bench needs spread, not quality.
struct Xorshift(u64);

impl Xorshift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// Reads one page and checks it is full; returns its latency in µs. The reply is the
/// next frame: nothing else is sent to this user meanwhile. (Its top-level `msgid`
/// comes after the messages' own, so `Conn::call` cannot pick it out.)
async fn page(me: &mut Conn, peer: i64, before: Option<i64>) -> u64 {
    let mut req = serde_json::json!({"msgid": 19, "peer": peer, "limit": PAGE});
    if let Some(before) = before {
        req["before"] = before.into();
    }
    let mut bytes = serde_json::to_vec(&req).expect("json");
    bytes.push(b'\n');
    let sent = Instant::now();
    me.stream.write_all(&bytes).await.expect("history: write");
    let frame = loop {
        if let Some(r) = me.frames.next_frame() {
            break r;
        }
        let more = tokio::time::timeout(WAIT, me.frames.fill(&mut me.stream)).await;
        assert!(matches!(more, Ok(Ok(true))), "history: connection closed or no reply within {WAIT:?}");
    };
    let us = sent.elapsed().as_micros() as u64;
    let reply: serde_json::Value = serde_json::from_slice(me.frames.get(frame)).expect("history: reply is JSON");
    let got = reply["messages"].as_array().map_or(0, Vec::len);
    assert!(reply["req"] == 19 && reply["errno"] == 0 && got == PAGE, "history: expected a page of {PAGE}: {reply}");
    us
}

/// One timed round on the logged-in connection `me`: HISTORY pages of the conversation
/// with `peer`, one request at a time. `deep`: each page `before` a random mid of the
/// older half of `mids` (else the newest page). Pages per second over `duration`
/// after `warmup`, and the latency of each page.
pub async fn run(
    me: &mut Conn,
    peer: i64,
    mids: &RangeInclusive<i64>,
    deep: bool,
    warmup: Duration,
    duration: Duration,
) -> Run {
    let mut rng = Xorshift(now_ns() | 1);
    let older_half = (mids.end() - mids.start()) as u64 / 2;
    let mut before = || deep.then(|| mids.start() + PAGE as i64 + rng.below(older_half) as i64);
    let start = Instant::now();
    while start.elapsed() < warmup {
        page(me, peer, before()).await;
    }
    let mut hist = histogram();
    let t0 = Instant::now();
    while t0.elapsed() < duration {
        hist.saturating_record(page(me, peer, before()).await.max(1));
    }
    Run {
        figure: hist.len() as f64 / t0.elapsed().as_secs_f64(),
        p50_us: Some(hist.value_at_quantile(0.50) as f64),
        p99_us: Some(hist.value_at_quantile(0.99) as f64),
        cpu_us_per_msg: None,
    }
}
