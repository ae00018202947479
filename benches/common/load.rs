//! The load generator: tokio tasks over loopback, the same code and settings for ours
//! and the peer. Every loop is bounded in count and in time.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use super::server::CpuClock;
use super::wire::{self, Frames};

/// How long any one reply or delivery may take before the bench gives up.
pub const WAIT: Duration = Duration::from_secs(30);

const PING: &[u8] = b"{\"msgid\":16}\n";

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Nanoseconds since the generator's epoch: the stamp a bench message carries.
pub fn now_ns() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

async fn timeout<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: nothing within {WAIT:?}"),
    }
}

pub async fn connect(addr: SocketAddr) -> TcpStream {
    let mut tries = 0;
    loop {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                return s;
            }
            Err(e) if tries < 20 => {
                tries += 1;
                eprintln!("connect {addr}: {e}; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("connect {addr}: {e}"),
        }
    }
}

/// Closes with a reset (SO_LINGER 0), so thousands of closes leave no TIME_WAIT.
pub fn close_hard(s: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a valid socket fd and a pointer to a linger struct of the size passed. With
    // a zero timeout, close never blocks.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(s);
}

/// One connection used for request/reply setup steps.
pub struct Conn {
    pub stream: TcpStream,
    pub frames: Frames,
}

impl Conn {
    pub async fn open(addr: SocketAddr) -> Conn {
        Conn { stream: connect(addr).await, frames: Frames::new() }
    }

    /// Sends one request and returns its reply (pushes in between are skipped).
    pub async fn call(&mut self, req: serde_json::Value) -> Vec<u8> {
        let mut bytes = serde_json::to_vec(&req).expect("json");
        bytes.push(b'\n');
        self.stream.write_all(&bytes).await.expect("write request");
        let want = match req["msgid"].as_i64() {
            Some(1) => 2,
            Some(4) => 5,
            Some(16) => 17,
            _ => 15,
        };
        timeout("reply", async {
            loop {
                while let Some(r) = self.frames.next_frame() {
                    let f = self.frames.get(r);
                    if wire::msgid(f) == Some(want) {
                        return f.to_vec();
                    }
                }
                assert!(self.frames.fill(&mut self.stream).await.expect("read reply"), "server closed the connection");
            }
        })
        .await
    }

    pub async fn call_ok(&mut self, req: serde_json::Value) -> Vec<u8> {
        let what = req.to_string();
        let r = self.call(req).await;
        assert_eq!(wire::errno(&r), Some(0), "{what} -> {}", String::from_utf8_lossy(&r));
        r
    }
}

/// Runs `f` on each item with at most `n` at once; results in input order.
pub async fn parallel<T, R, F, Fut>(items: Vec<T>, n: usize, f: F) -> Vec<R>
where
    T: Send + 'static,
    R: Send + 'static,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = R> + Send + 'static,
{
    let sem = Arc::new(Semaphore::new(n));
    let f = Arc::new(f);
    let mut set = JoinSet::new();
    for (i, item) in items.into_iter().enumerate() {
        let permit = Arc::clone(&sem).acquire_owned().await.expect("semaphore");
        let f = Arc::clone(&f);
        set.spawn(async move {
            let r = f(item).await;
            drop(permit);
            (i, r)
        });
    }
    let mut out: Vec<Option<R>> = (0..set.len()).map(|_| None).collect();
    while let Some(r) = set.join_next().await {
        let (i, r) = r.expect("task panicked");
        out[i] = Some(r);
    }
    out.into_iter().map(|r| r.expect("result")).collect()
}

/// Registers `n` users on ours (REG is argon2-hashed: done in parallel, untimed).
pub async fn register(addr: SocketAddr, prefix: &str, n: usize) -> Vec<i64> {
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    parallel(names, 16, move |name| async move {
        let mut c = Conn::open(addr).await;
        let r = c.call_ok(serde_json::json!({"msgid": 4, "name": name, "password": "pw"})).await;
        wire::int_field(&r, b"\"id\":").expect("REG_ACK id")
    })
    .await
}

/// Opens one connection per user and logs it in.
pub async fn login(addr: SocketAddr, ids: Vec<i64>) -> Vec<(i64, Conn)> {
    parallel(ids, 16, move |id| async move {
        let mut c = Conn::open(addr).await;
        c.call_ok(serde_json::json!({"msgid": 1, "id": id, "password": "pw"})).await;
        (id, c)
    })
    .await
}

/// What one timed run measured.
#[derive(Debug, Clone, Default)]
pub struct Run {
    /// The workload's figure: per second, or KiB per connection for `idle`.
    pub figure: f64,
    /// Latency percentiles in microseconds, where the workload has them.
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    /// The server's CPU time per delivered message over the measured interval (µs),
    /// where the workload delivers messages.
    pub cpu_us_per_msg: Option<f64>,
}

/// CPU seconds over a count of messages, in µs per message.
fn per_msg_us(cpu_secs: f64, msgs: u64) -> Option<f64> {
    (msgs > 0).then(|| cpu_secs * 1e6 / msgs as f64)
}

// ---------------------------------------------------------------- connect

/// Connects and gets one PONG, so the server surely holds the connection.
async fn connect_with_pong(addr: SocketAddr) -> TcpStream {
    let mut s = connect(addr).await;
    s.write_all(PING).await.expect("write ping");
    let mut frames = Frames::new();
    loop {
        if let Some(r) = frames.next_frame() {
            assert_eq!(wire::msgid(frames.get(r)), Some(17), "expected PONG");
            return s;
        }
        assert!(frames.fill(&mut s).await.expect("read pong"), "closed before PONG");
    }
}

/// Opens `n` connections, `concurrency` handshakes at a time, and gets one PONG on
/// each; connections per second from the first connect to the last PONG.
pub async fn connect_run(addr: SocketAddr, n: usize, concurrency: usize) -> Run {
    let t0 = Instant::now();
    let streams = timeout("connect", parallel((0..n).collect(), concurrency, move |_| connect_with_pong(addr))).await;
    let wall = t0.elapsed().as_secs_f64();
    for s in streams {
        close_hard(s);
    }
    Run { figure: n as f64 / wall, ..Default::default() }
}

// ---------------------------------------------------------------- pingpong

/// `conns` connections each keeping `depth` PINGs in flight; PONGs per second over
/// `duration`, after `warmup`.
pub async fn pingpong_run(addr: SocketAddr, conns: usize, depth: usize, warmup: Duration, duration: Duration) -> Run {
    let pongs = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut set = JoinSet::new();
    for _ in 0..conns {
        let (pongs, stop) = (Arc::clone(&pongs), Arc::clone(&stop));
        set.spawn(async move {
            let mut s = connect(addr).await;
            let mut frames = Frames::new();
            let mut out = PING.repeat(depth);
            s.write_all(&out).await.expect("write pings");
            let mut outstanding = depth;
            while outstanding > 0 {
                let more = tokio::time::timeout(WAIT, frames.fill(&mut s)).await;
                assert!(matches!(more, Ok(Ok(true))), "pingpong: connection closed or stalled");
                let mut n = 0;
                while let Some(r) = frames.next_frame() {
                    let f = frames.get(r);
                    assert_eq!(wire::msgid(f), Some(17), "expected PONG, got {:?}", String::from_utf8_lossy(f));
                    n += 1;
                }
                outstanding -= n;
                pongs.fetch_add(n as u64, Ordering::Relaxed);
                if n > 0 && !stop.load(Ordering::Relaxed) {
                    out.clear();
                    for _ in 0..n {
                        out.extend_from_slice(PING);
                    }
                    s.write_all(&out).await.expect("write pings");
                    outstanding += n;
                }
            }
            close_hard(s);
        });
    }
    tokio::time::sleep(warmup).await;
    let (c0, t0) = (pongs.load(Ordering::Relaxed), Instant::now());
    tokio::time::sleep(duration).await;
    let (c1, wall) = (pongs.load(Ordering::Relaxed), t0.elapsed().as_secs_f64());
    stop.store(true, Ordering::Relaxed);
    timeout("pingpong drain", async {
        while let Some(r) = set.join_next().await {
            r.expect("pingpong task panicked");
        }
    })
    .await;
    Run { figure: (c1 - c0) as f64 / wall, ..Default::default() }
}

// ---------------------------------------------------------------- chat

/// One direction of a pair: messages from `from` to `to`.
struct Dir {
    to: i64,
    sent: AtomicU64,
    delivered: AtomicU64,
    acked: AtomicU64,
    notify: Notify,
}

/// Logged-in pairs exchanging ONE_CHAT, kept connected across rounds.
pub struct ChatRig {
    /// Per user: its write half and the direction it sends on.
    senders: Vec<(OwnedWriteHalf, Arc<Dir>)>,
    dirs: Vec<Arc<Dir>>,
    measuring: Arc<AtomicBool>,
    hist: Arc<Mutex<Histogram<u64>>>,
    errors: Arc<AtomicU64>,
    readers: JoinSet<()>,
}

impl ChatRig {
    /// `users` are logged-in connections; users 2k and 2k+1 form a pair.
    pub fn new(users: Vec<(i64, Conn)>) -> ChatRig {
        let measuring = Arc::new(AtomicBool::new(false));
        let hist = Arc::new(Mutex::new(histogram()));
        let errors = Arc::new(AtomicU64::new(0));
        let ids: Vec<i64> = users.iter().map(|(id, _)| *id).collect();
        let partner = |i: usize| i ^ 1;
        let dirs: Vec<Arc<Dir>> = (0..ids.len())
            .map(|i| {
                Arc::new(Dir {
                    to: ids[partner(i)],
                    sent: AtomicU64::new(0),
                    delivered: AtomicU64::new(0),
                    acked: AtomicU64::new(0),
                    notify: Notify::new(),
                })
            })
            .collect();
        let mut senders = Vec::new();
        let mut readers = JoinSet::new();
        for (i, (_, conn)) in users.into_iter().enumerate() {
            let (rd, wr) = conn.stream.into_split();
            let (inbound, outbound) = (Arc::clone(&dirs[partner(i)]), Arc::clone(&dirs[i]));
            let (measuring, hist, errors) = (Arc::clone(&measuring), Arc::clone(&hist), Arc::clone(&errors));
            let frames = conn.frames;
            readers.spawn(chat_reader(rd, frames, inbound, Arc::clone(&outbound), measuring, hist, errors));
            senders.push((wr, outbound));
        }
        ChatRig { senders, dirs, measuring, hist, errors, readers }
    }

    /// One timed round: each of the first `active` users (all: `usize::MAX`) keeps
    /// `window` messages in flight to its partner. `cpu` is the server's.
    pub async fn run(
        &mut self,
        window: u64,
        warmup: Duration,
        duration: Duration,
        active: usize,
        cpu: CpuClock,
    ) -> Run {
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = JoinSet::new();
        let mut senders = std::mem::take(&mut self.senders);
        let idle = senders.split_off(active.min(senders.len()));
        self.senders = idle;
        for (wr, dir) in senders {
            writers.spawn(chat_writer(wr, dir, window, Arc::clone(&stop)));
        }
        let delivered = |dirs: &[Arc<Dir>]| dirs.iter().map(|d| d.delivered.load(Ordering::Relaxed)).sum::<u64>();
        tokio::time::sleep(warmup).await;
        self.hist.lock().expect("hist").reset();
        self.measuring.store(true, Ordering::Relaxed);
        let (c0, cpu0, t0) = (delivered(&self.dirs), cpu.secs(), Instant::now());
        tokio::time::sleep(duration).await;
        let (c1, cpu1, wall) = (delivered(&self.dirs), cpu.secs(), t0.elapsed().as_secs_f64());
        self.measuring.store(false, Ordering::Relaxed);
        stop.store(true, Ordering::Relaxed);
        for d in &self.dirs {
            d.notify.notify_one();
        }
        while let Some(w) = writers.join_next().await {
            self.senders.push(w.expect("chat writer panicked"));
        }
        // Drain: every message sent is delivered and acknowledged before the next round.
        let dirs = self.dirs.clone();
        timeout("chat drain", async {
            while dirs.iter().any(|d| {
                let sent = d.sent.load(Ordering::Relaxed);
                d.delivered.load(Ordering::Relaxed) < sent || d.acked.load(Ordering::Relaxed) < sent
            }) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        let errors = self.errors.load(Ordering::Relaxed);
        assert_eq!(errors, 0, "chat: {errors} requests failed");
        let h = self.hist.lock().expect("hist");
        Run {
            figure: (c1 - c0) as f64 / wall,
            p50_us: Some(h.value_at_quantile(0.50) as f64),
            p99_us: Some(h.value_at_quantile(0.99) as f64),
            cpu_us_per_msg: per_msg_us(cpu1 - cpu0, c1 - c0),
        }
    }

    pub fn close(mut self) {
        self.readers.abort_all();
        for (wr, _) in self.senders.drain(..) {
            drop(wr);
        }
    }
}

async fn chat_writer(
    mut wr: OwnedWriteHalf,
    dir: Arc<Dir>,
    window: u64,
    stop: Arc<AtomicBool>,
) -> (OwnedWriteHalf, Arc<Dir>) {
    let mut out = Vec::with_capacity(4096);
    let to = dir.to;
    loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let inflight = dir.sent.load(Ordering::Relaxed) - dir.delivered.load(Ordering::Acquire);
        if inflight >= window {
            dir.notify.notified().await;
            continue;
        }
        out.clear();
        let n = window - inflight;
        for _ in 0..n {
            use std::io::Write;
            let _ =
                writeln!(out, "{{\"msgid\":6,\"toid\":{to},\"msg\":\"{} hello from the load generator\"}}", now_ns());
        }
        dir.sent.fetch_add(n, Ordering::Relaxed);
        wr.write_all(&out).await.expect("chat: write");
    }
    (wr, dir)
}

async fn chat_reader(
    mut rd: OwnedReadHalf,
    mut frames: Frames,
    inbound: Arc<Dir>,
    outbound: Arc<Dir>,
    measuring: Arc<AtomicBool>,
    hist: Arc<Mutex<Histogram<u64>>>,
    errors: Arc<AtomicU64>,
) {
    loop {
        let mut got = 0;
        while let Some(r) = frames.next_frame() {
            let f = frames.get(r);
            match wire::msgid(f) {
                Some(6) => {
                    got += 1;
                    if measuring.load(Ordering::Relaxed) {
                        if let Some(sent) = wire::stamp(f) {
                            let us = now_ns().saturating_sub(sent) / 1000;
                            hist.lock().expect("hist").saturating_record(us.max(1));
                        }
                    }
                }
                Some(15) => {
                    if wire::errno(f) != Some(0) && errors.fetch_add(1, Ordering::Relaxed) == 0 {
                        eprintln!("chat: failed request: {}", String::from_utf8_lossy(f));
                    }
                    outbound.acked.fetch_add(1, Ordering::Relaxed);
                }
                _ => {
                    if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                        eprintln!("chat: unexpected frame: {}", String::from_utf8_lossy(f));
                    }
                }
            }
        }
        if got > 0 {
            inbound.delivered.fetch_add(got, Ordering::Release);
            inbound.notify.notify_one();
        }
        match frames.fill(&mut rd).await {
            Ok(true) => {}
            _ => return,
        }
    }
}

// ---------------------------------------------------------------- fanout

/// One sender and a group of logged-in members, kept connected across rounds.
pub struct FanoutRig {
    sender: OwnedWriteHalf,
    acked: Arc<AtomicU64>,
    sent: u64,
    groupid: i64,
    members: u64,
    delivered: Arc<AtomicU64>,
    all_have_it: Arc<Notify>,
    measuring: Arc<AtomicBool>,
    hist: Arc<Mutex<Histogram<u64>>>,
    errors: Arc<AtomicU64>,
    readers: JoinSet<()>,
}

impl FanoutRig {
    /// `sender` creates the group `name`; every member joins it.
    pub async fn new(sender: Conn, members: Vec<(i64, Conn)>, name: &str) -> FanoutRig {
        let mut sender = sender;
        let r = sender.call_ok(serde_json::json!({"msgid": 8, "groupname": name, "groupdesc": "bench"})).await;
        let groupid = wire::int_field(&r, b"\"groupid\":").expect("groupid");
        let members = parallel(members, 16, move |(id, mut c)| async move {
            c.call_ok(serde_json::json!({"msgid": 9, "groupid": groupid})).await;
            (id, c)
        })
        .await;
        let n = members.len() as u64;
        let delivered = Arc::new(AtomicU64::new(0));
        let all_have_it = Arc::new(Notify::new());
        let measuring = Arc::new(AtomicBool::new(false));
        let hist = Arc::new(Mutex::new(histogram()));
        let errors = Arc::new(AtomicU64::new(0));
        let mut readers = JoinSet::new();
        for (_, c) in members {
            let (delivered, all, measuring, hist, errors) = (
                Arc::clone(&delivered),
                Arc::clone(&all_have_it),
                Arc::clone(&measuring),
                Arc::clone(&hist),
                Arc::clone(&errors),
            );
            readers.spawn(async move {
                let Conn { mut stream, mut frames } = c;
                loop {
                    while let Some(r) = frames.next_frame() {
                        let f = frames.get(r);
                        if wire::msgid(f) != Some(10) {
                            if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                                eprintln!("fanout: unexpected frame: {}", String::from_utf8_lossy(f));
                            }
                            continue;
                        }
                        let total = delivered.fetch_add(1, Ordering::AcqRel) + 1;
                        if total % n == 0 {
                            if measuring.load(Ordering::Relaxed) {
                                if let Some(sent) = wire::stamp(f) {
                                    let us = now_ns().saturating_sub(sent) / 1000;
                                    hist.lock().expect("hist").saturating_record(us.max(1));
                                }
                            }
                            all.notify_one();
                        }
                    }
                    match frames.fill(&mut stream).await {
                        Ok(true) => {}
                        _ => return,
                    }
                }
            });
        }
        // The sender's ACKs, read as they come so its socket never fills.
        let acked = Arc::new(AtomicU64::new(0));
        let Conn { stream, mut frames } = sender;
        let (mut rd, sender) = stream.into_split();
        {
            let (acked, errors) = (Arc::clone(&acked), Arc::clone(&errors));
            readers.spawn(async move {
                loop {
                    while let Some(r) = frames.next_frame() {
                        let f = frames.get(r);
                        let ok = wire::msgid(f) == Some(15) && wire::errno(f) == Some(0);
                        if !ok && errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("fanout: sender got {}", String::from_utf8_lossy(f));
                        }
                        acked.fetch_add(1, Ordering::Relaxed);
                    }
                    match frames.fill(&mut rd).await {
                        Ok(true) => {}
                        _ => return,
                    }
                }
            });
        }
        FanoutRig {
            sender,
            acked,
            sent: 0,
            groupid,
            members: n,
            delivered,
            all_have_it,
            measuring,
            hist,
            errors,
            readers,
        }
    }

    /// Sends one message and waits until every member has it.
    async fn one(&mut self) {
        let target = self.delivered.load(Ordering::Acquire) + self.members;
        let line = format!(
            "{{\"msgid\":10,\"groupid\":{},\"msg\":\"{} hello group from the load generator\"}}\n",
            self.groupid,
            now_ns()
        );
        self.sender.write_all(line.as_bytes()).await.expect("fanout: write");
        self.sent += 1;
        let delivered = Arc::clone(&self.delivered);
        let all = Arc::clone(&self.all_have_it);
        timeout("fanout delivery", async {
            while delivered.load(Ordering::Acquire) < target {
                all.notified().await;
            }
        })
        .await;
    }

    /// One timed round: next message when all members have the previous one. `cpu` is
    /// the server's.
    pub async fn run(&mut self, warmup: Duration, duration: Duration, max_msgs: usize, cpu: CpuClock) -> Run {
        let start = Instant::now();
        while start.elapsed() < warmup {
            self.one().await;
        }
        self.hist.lock().expect("hist").reset();
        self.measuring.store(true, Ordering::Relaxed);
        let (cpu0, t0) = (cpu.secs(), Instant::now());
        let mut k = 0;
        while t0.elapsed() < duration && k < max_msgs {
            self.one().await;
            k += 1;
        }
        let (cpu1, wall) = (cpu.secs(), t0.elapsed().as_secs_f64());
        self.measuring.store(false, Ordering::Relaxed);
        // Every message acknowledged before the next round.
        let (acked, sent) = (Arc::clone(&self.acked), self.sent);
        timeout("fanout acks", async {
            while acked.load(Ordering::Relaxed) < sent {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        let errors = self.errors.load(Ordering::Relaxed);
        assert_eq!(errors, 0, "fanout: {errors} unexpected frames");
        let h = self.hist.lock().expect("hist");
        Run {
            figure: (k as u64 * self.members) as f64 / wall,
            p50_us: Some(h.value_at_quantile(0.50) as f64),
            p99_us: Some(h.value_at_quantile(0.99) as f64),
            cpu_us_per_msg: per_msg_us(cpu1 - cpu0, k as u64 * self.members),
        }
    }

    pub fn close(mut self) {
        self.readers.abort_all();
    }
}

// ---------------------------------------------------------------- idle

/// Opens `n` connections (one PING/PONG each, so the server has them all) and keeps
/// them; the caller measures, then drops them.
pub async fn open_idle(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    timeout("idle connect", parallel((0..n).collect(), 100, move |_| connect_with_pong(addr))).await
}
