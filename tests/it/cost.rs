//! What a client can make the server spend, and how long a fault may hold a request:
//! a burst of connections, frames built to be costly to parse, the time LOGIN takes for
//! an unknown id, a database that stops answering. Each test shows a bound issue 12
//! asks for (with the margin it allows), against the real binary; the measured numbers
//! go to stderr (`--nocapture`).

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::services::{self, MariaDb};
use crate::support::{bin, spawn, unique, Client, Server, User};

/// Raises this process's soft limit on open files to its hard limit.
fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a valid pointer to an rlimit for the answer, then to the new limit.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    lim.rlim_cur
}

/// 5,000 clients connect at once: every connection is established within 0.5 s (a
/// listen backlog of 128 drops SYNs past it, and those clients retry only after a
/// second), and the server then answers each of them.
#[test]
fn a_burst_of_5000_connections_is_established_within_half_a_second() {
    const N: usize = 5000;
    let limit = raise_fd_limit();
    assert!(limit > 2 * N as u64 + 500, "RLIMIT_NOFILE hard limit {limit} is too low for this test");
    let s = Server::start(&[]);
    let mut poll = mio::Poll::new().expect("poll");
    let mut events = mio::Events::with_capacity(1024);
    let started = Instant::now();
    let mut streams: Vec<mio::net::TcpStream> = (0..N)
        .map(|i| {
            let mut st = mio::net::TcpStream::connect(s.addr).expect("connect");
            poll.registry().register(&mut st, mio::Token(i), mio::Interest::WRITABLE).expect("register");
            st
        })
        .collect();
    let mut up = vec![false; N];
    let mut established = 0;
    let deadline = started + Duration::from_secs(10);
    while established < N && Instant::now() < deadline {
        poll.poll(&mut events, Some(Duration::from_millis(50))).expect("poll");
        for ev in events.iter() {
            let i = ev.token().0;
            if up[i] {
                continue;
            }
            if let Ok(Some(e)) | Err(e) = streams[i].take_error() {
                panic!("connection {i}: {e}");
            }
            if streams[i].peer_addr().is_ok() {
                up[i] = true;
                established += 1;
            }
        }
    }
    let connect_time = started.elapsed();
    // Each one is served: a PING on every connection, every PONG read.
    for st in streams.iter_mut() {
        poll.registry().reregister(st, mio::Token(0), mio::Interest::READABLE).expect("reregister");
    }
    let mut answered = 0;
    for st in streams.iter_mut() {
        st.write_all(b"{\"msgid\":16}\n").expect("write");
    }
    let mut pending: Vec<usize> = (0..N).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut buf = [0u8; 64];
    while !pending.is_empty() && Instant::now() < deadline {
        poll.poll(&mut events, Some(Duration::from_millis(50))).expect("poll");
        pending.retain(|&i| match streams[i].read(&mut buf) {
            Ok(n) if n > 0 => {
                assert_eq!(&buf[..n], b"{\"msgid\":17}\n", "connection {i}");
                answered += 1;
                false
            }
            _ => true,
        });
    }
    let served_time = started.elapsed();
    eprintln!("burst of {N}: all established in {connect_time:?}; all answered a PING after {served_time:?}");
    assert_eq!(established, N, "only {established} of {N} connections established in 10 s");
    assert_eq!(answered, N, "only {answered} of {N} connections answered a PING");
    assert!(connect_time < Duration::from_millis(500), "{N} connections took {connect_time:?} to establish");
}

/// The server raises its soft limit on open files to the hard limit, and says so, with
/// the backlog it listens with and a warning when the limit is below --max-conns.
#[test]
fn the_server_raises_its_open_files_limit_and_logs_its_limits() {
    let hard = raise_fd_limit();
    let db = format!("sqlite://{}", services::scratch_dir("limits").join("chat.db").display());
    let mut cmd = Command::new(bin("ChatServer"));
    cmd.args(["127.0.0.1", "0", "--db", &db, "--backlog", "64", "--max-conns", &(hard + 1).to_string()]);
    cmd.env("RUST_LOG", "info");
    // SAFETY: only setrlimit, async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let low = libc::rlimit { rlim_cur: 256, rlim_max: hard };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &low) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut server = spawn::spawn_listening(cmd, "ChatServer", Duration::from_secs(10), usize::MAX);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.child.id())).unwrap_or_default();
    let log = server.log.lock().map(|l| l.clone()).unwrap_or_default();
    let _ = server.child.kill();
    let _ = server.child.wait();
    let open_files: Vec<String> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .map(|l| l.split_whitespace().skip(3).take(2).map(str::to_owned).collect())
        .unwrap_or_default();
    assert_eq!(open_files, [hard.to_string(), hard.to_string()], "{limits}");
    assert!(log.contains(&format!("open files: up to {hard}; listen backlog: 64")), "{log}");
    assert!(log.contains("ulimit -n") && log.contains("net.core.somaxconn"), "{log}");
}

/// The server process's CPU time so far (user + system), from /proc/<pid>/stat.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/<pid>/stat");
    // The fields after the command name, which is in parentheses and may hold spaces:
    // the first of them is field 3 (state); utime and stime are fields 14 and 15.
    let after_name = &stat[stat.rfind(')').expect("a command name") + 1..];
    let fields: Vec<u64> = after_name.split_whitespace().skip(1).map(|f| f.parse().unwrap_or(0)).collect();
    let ticks = fields[14 - 4] + fields[15 - 4];
    // SAFETY: no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// `{"msgid":16,<head><item 0>,<item 1>,...<tail>}` with `n` items.
fn frame(head: &str, item: impl Fn(usize) -> String, n: usize, tail: &str) -> Vec<u8> {
    let items: Vec<String> = (0..n).map(item).collect();
    format!("{{\"msgid\":16,{head}{}{tail}}}\n", items.join(",")).into_bytes()
}

/// Frames costly to parse (each under the default --max-frame of 64 KiB) and, for
/// each, a plain frame of about the same size and shape.
fn costly_frames() -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    vec![
        (
            "10,000 numbers beyond f64",
            frame("\"x\":[", |_| "1e400".into(), 10_000, "]"),
            frame("\"x\":[", |_| "1e300".into(), 10_000, "]"),
        ),
        (
            "6,000 distinct keys",
            frame("", |i| format!("\"k{i}\":0"), 6_000, ""),
            frame("\"x\":[", |i| format!("\"k{i}\",0"), 6_000, "]"),
        ),
        (
            "10,000 repeats of one key",
            frame("", |_| "\"k\":0".into(), 10_000, ""),
            frame("\"x\":[", |_| "\"k\",0".into(), 10_000, "]"),
        ),
        (
            "9,000 lone surrogates",
            frame("\"x\":\"", |_| "\\ud800".into(), 9_000, "\""),
            frame("\"x\":\"", |_| "\\u00e9".into(), 9_000, "\""),
        ),
    ]
}

/// The server's CPU time per frame for `frame`, each answered before the next is sent:
/// frames are sent until they have cost 300 ms or `max` frames have gone.
fn cpu_per_frame(s: &Server, c: &mut Client, frame: &[u8], max: u32) -> Duration {
    let before = cpu_time(s.pid());
    let mut n = 0;
    while n < max && cpu_time(s.pid()) - before < Duration::from_millis(300) {
        c.send_raw(frame);
        let r = c.reply();
        assert_eq!(r["msgid"], 17, "{r}");
        n += 1;
    }
    (cpu_time(s.pid()) - before) / n
}

/// Parsing costs about the same per byte whatever a frame holds: numbers beyond f64,
/// thousands of keys, lone surrogates cost the server's CPU within 5x of a plain frame
/// of the same size.
#[test]
fn costly_frames_cost_about_what_plain_frames_of_their_size_cost() {
    let s = Server::start(&["--rate-limit", "0"]);
    let mut c = s.client();
    for (what, costly, plain) in costly_frames() {
        let plain_cpu = cpu_per_frame(&s, &mut c, &plain, 3000);
        let costly_cpu = cpu_per_frame(&s, &mut c, &costly, 3000);
        eprintln!(
            "{what} ({} bytes): {:.3} ms of server CPU per frame; a plain frame of {} bytes: {:.3} ms",
            costly.len(),
            costly_cpu.as_secs_f64() * 1e3,
            plain.len(),
            plain_cpu.as_secs_f64() * 1e3
        );
        assert!(costly_cpu <= 5 * plain_cpu.max(Duration::from_micros(50)), "{what}: {costly_cpu:?} vs {plain_cpu:?}");
    }
}

/// While four connections send costly frames without pause for 2 s, every PING on
/// another connection is answered within 200 ms. Each connection's first 400 frames
/// (the rate limit's burst) are parsed; the rest are answered 429 from their head.
#[test]
fn pings_are_answered_within_200_ms_while_four_connections_send_costly_frames() {
    let s = Server::start(&[]);
    let frames: Arc<Vec<Vec<u8>>> = Arc::new(costly_frames().into_iter().map(|(_, costly, _)| costly).collect());
    let stop = Arc::new(AtomicBool::new(false));
    let flooders: Vec<_> = (0..4)
        .map(|k| {
            let (frames, stop, addr) = (Arc::clone(&frames), Arc::clone(&stop), s.addr);
            std::thread::spawn(move || {
                let mut w = TcpStream::connect(addr).expect("connect");
                w.set_write_timeout(Some(Duration::from_millis(500))).expect("timeout");
                let mut r = w.try_clone().expect("clone");
                let reader = std::thread::spawn(move || {
                    let mut buf = vec![0u8; 1 << 16];
                    while matches!(r.read(&mut buf), Ok(n) if n > 0) {}
                });
                // Whole frames, one after another; a write that times out is resumed.
                let (mut sent, mut at) = (0usize, 0usize);
                while !stop.load(Ordering::Relaxed) {
                    let frame = &frames[(k + sent) % frames.len()];
                    match w.write(&frame[at..]) {
                        Ok(n) => at += n,
                        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                        Err(e) => panic!("flooder {k}: {e}"),
                    }
                    if at == frame.len() {
                        (sent, at) = (sent + 1, 0);
                    }
                }
                let _ = w.shutdown(std::net::Shutdown::Both);
                let _ = reader.join();
                sent
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut c = s.client();
    let mut times = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(2) {
        let t = Instant::now();
        assert_eq!(c.call(json!({"msgid": 16})), json!({"msgid": 17}));
        times.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    let sent: usize = flooders.into_iter().map(|f| f.join().expect("flooder")).sum();
    let (pings, worst) = (times.len(), times.iter().max().copied().unwrap_or_default());
    eprintln!(
        "{sent} costly frames sent by four connections; PING median {:?}, slowest of {pings} {worst:?}",
        median(times)
    );
    assert!(sent >= 40, "the flood ran: {sent} frames");
    assert!(worst < Duration::from_millis(200), "a PING took {worst:?} under the flood");
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// LOGIN for an id nobody has takes as long as LOGIN with a wrong password (within a
/// factor of two, medians of a few tries): the timing does not tell which ids exist.
#[test]
fn login_takes_as_long_for_an_unknown_id_as_for_a_wrong_password() {
    let s = Server::start(&["--rate-limit", "0"]);
    let mut c = s.client();
    let id = c.register(&unique("timing"), "right");
    let mut timed = |id: i64| {
        let t = Instant::now();
        let r = c.call(json!({"msgid": 1, "id": id, "password": "wrong"}));
        assert_eq!((r["msgid"].as_i64(), r["errno"].as_i64()), (Some(2), Some(1)), "{r}");
        t.elapsed()
    };
    // Fewer than ten failures per id: past that the login guard answers 429 at once.
    let (mut wrong, mut unknown) = (Vec::new(), Vec::new());
    for k in 0..7 {
        wrong.push(timed(id));
        unknown.push(timed(9_000_000 + k));
    }
    let (wrong, unknown) = (median(wrong), median(unknown));
    eprintln!("LOGIN median: wrong password {wrong:?}, unknown id {unknown:?}");
    assert!(unknown * 2 >= wrong && wrong * 2 >= unknown, "wrong password {wrong:?}, unknown id {unknown:?}");
}

/// Sends SIGSTOP to a process and waits until all its threads are stopped; sends
/// SIGCONT when dropped.
struct Stopped(i32);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        let stopped = Stopped(i32::try_from(pid).expect("pid"));
        // SAFETY: our own child (a private MariaDB), by PID.
        assert_eq!(unsafe { libc::kill(stopped.0, libc::SIGSTOP) }, 0);
        let state =
            |stat: String| stat.rsplit(')').next().and_then(|rest| rest.split_whitespace().next()).map(str::to_owned);
        let all_stopped = || {
            let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks");
            tasks.flatten().all(|t| {
                let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                matches!(state(stat).as_deref(), Some("T") | Some("t"))
            })
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !all_stopped() {
            assert!(Instant::now() < deadline, "process {pid} did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
        stopped
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// The reply to `req` on `c` and how long it took.
fn timed_call(c: &mut Client, req: Value) -> (Value, Duration) {
    let t = Instant::now();
    let r = c.call(req);
    (r, t.elapsed())
}

/// A database that stops answering (SIGSTOP, not a crash: its connections stay open and
/// silent) costs each request at most 2 s: it gets 503, also when several wait at once.
/// After SIGCONT the same server serves again, and what got 503 was not done.
#[test]
fn a_hung_database_gives_503_within_2_s_and_service_resumes_when_it_wakes() {
    let mariadb = MariaDb::start("mariadb-hung");
    let s = Server::start_with_db(&mariadb.create_database(), &[]);
    let mut alice = User::new(&s, "alice");
    let bob = s.client().register(&unique("bob"), "pw");
    assert_eq!(alice.c.call(json!({"msgid": 6, "toid": bob, "msg": "before"}))["errno"], 0);
    let mut c = s.client();

    let stopped = Stopped::new(mariadb.pid().expect("MariaDB runs"));
    let bound = Duration::from_secs(2);
    // Several at once, as the database stops: none waits for another's timeout.
    let at_once: Vec<_> = (0..4)
        .map(|_| {
            let addr = s.addr;
            std::thread::spawn(move || {
                timed_call(&mut Client::connect(addr), json!({"msgid": 1, "id": bob, "password": "pw"}))
            })
        })
        .collect();
    for t in at_once {
        let (r, took) = t.join().expect("client");
        eprintln!("hung database: one of four LOGINs at once -> {r} in {took:?}");
        assert_eq!((r["msgid"].as_i64(), r["errno"].as_i64()), (Some(2), Some(503)), "{r}");
        assert!(took < bound, "a LOGIN among four took {took:?}");
    }
    // Then one after another, the first after a pause (so it tries the database again).
    std::thread::sleep(Duration::from_millis(1200));
    let answers_503 = |client: &mut Client, req: Value, reply: i64| {
        let (r, took) = timed_call(client, req.clone());
        eprintln!("hung database: {req} -> {r} in {took:?}");
        assert_eq!((r["msgid"].as_i64(), r["errno"].as_i64()), (Some(reply), Some(503)), "{req} -> {r}");
        assert!(took < bound, "{req} took {took:?}");
    };
    answers_503(&mut alice.c, json!({"msgid": 6, "toid": bob, "msg": "during"}), 15);
    answers_503(&mut c, json!({"msgid": 4, "name": unique("newcomer"), "password": "pw"}), 5);
    answers_503(&mut c, json!({"msgid": 1, "id": bob, "password": "pw"}), 2);
    let (pong, took) = timed_call(&mut c, json!({"msgid": 16}));
    assert_eq!(pong, json!({"msgid": 17}));
    assert!(took < Duration::from_millis(200), "PING took {took:?}");

    drop(stopped);
    let woke = Instant::now();
    let mut b = Client::connect(s.addr);
    let ack = loop {
        let ack = b.call(json!({"msgid": 1, "id": bob, "password": "pw"}));
        if ack["errno"] != 503 || woke.elapsed() > Duration::from_secs(10) {
            break ack;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("hung database: served again {:?} after SIGCONT", woke.elapsed());
    assert_eq!(ack["errno"], 0, "{ack}");
    let offline: Vec<Value> = ack["offlinemsg"].as_array().cloned().unwrap_or_default();
    let msgs: Vec<String> = offline
        .iter()
        .map(|m| serde_json::from_str::<Value>(m.as_str().unwrap_or("{}")).expect("json")["msg"].to_string())
        .collect();
    assert_eq!(msgs, ["\"before\""], "the ONE_CHAT answered 503 was not stored");
    assert_eq!(alice.c.call(json!({"msgid": 6, "toid": bob, "msg": "after"}))["errno"], 0);
    assert_eq!(b.push()["msg"], "after");
    User::new(&s, "newcomer");
}
