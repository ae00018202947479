//! `cargo bench`: the release `ChatServer` ("ours") side by side with a tokio chat
//! server written the way tokio's examples write one ("the peer",
//! `benches/common/peer.rs`), both driven over loopback by the same load generator
//! with the same settings, in the same run, alternating, several rounds; medians.
//!
//! Workloads, in order (select some with `cargo bench -- NAME...`):
//!
//! - `connect`: open 5,000 connections, one PONG on each; connections per second.
//! - `pingpong`: 100 connections each keeping 16 PINGs in flight; PONGs per second.
//! - `chat`: 100 logged-in pairs, each user keeping 16 ONE_CHATs in flight to its
//!   partner; delivered (durable: both servers commit each message before delivering
//!   it) messages per second, p50/p99 send-to-receipt latency, and the server's CPU
//!   time per delivered message.
//! - `chat_w1`: the same pairs with one message in flight each; p99 latency.
//! - `fanout`: one sender, a group of 500 logged-in members, next message once all
//!   have the previous one; deliveries per second, p99 time to the last member, and
//!   the server's CPU time per delivery.
//! - `idle`: 10,000 idle connections on a fresh server; resident memory added per
//!   connection (KiB, VmRSS of the server process).
//! - `history` (ours only): HISTORY pages of 50 from a conversation of 1,000,000
//!   messages, the newest page and pages deep in it; p99 latency.
//!
//! Each workload ends with `RESULT name=<figure> ours=<x> peer=<y> ratio=<r>` lines, r > 1
//! meaning ours is better (peer=0 ratio=0: the peer cannot do it). Sizes can be lowered
//! for development with `BENCH_*` environment variables (see `Settings`); the defaults
//! are the published ones.

mod common;

use std::time::{Duration, Instant};

use common::history;
use common::load::{self, ChatRig, FanoutRig, Run};
use common::server::{self, Kind, Server};

/// Sizes and times; each can be overridden by the environment variable named with it.
struct Settings {
    rounds: usize,
    threads: usize,
    client_threads: usize,
    warmup: Duration,
    secs: Duration,
    connect_n: usize,
    connect_concurrency: usize,
    pingpong_conns: usize,
    depth: usize,
    chat_pairs: usize,
    window: u64,
    fanout_members: usize,
    fanout_max_msgs: usize,
    idle_n: usize,
    history_rows: usize,
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

impl Settings {
    /// The published sizes, or tiny ones for a `smoke` run (`cargo test --all-targets`
    /// runs this binary without `--bench`: it then only checks that every workload works).
    fn from_env(smoke: bool) -> Settings {
        let size = |name: &str, full: usize, tiny: usize| env(name, if smoke { tiny } else { full });
        Settings {
            rounds: size("BENCH_ROUNDS", 5, 1),
            threads: env("BENCH_THREADS", 2),
            client_threads: env("BENCH_CLIENT_THREADS", 2),
            warmup: Duration::from_millis(size("BENCH_WARMUP_MS", 500, 50) as u64),
            secs: Duration::from_millis(size("BENCH_MS", 2000, 200) as u64),
            connect_n: size("BENCH_CONNECT_N", 5000, 50),
            connect_concurrency: env("BENCH_CONNECT_CONCURRENCY", 100),
            pingpong_conns: size("BENCH_PINGPONG_CONNS", 100, 4),
            depth: env("BENCH_DEPTH", 16),
            chat_pairs: size("BENCH_CHAT_PAIRS", 100, 2),
            window: env("BENCH_WINDOW", 16) as u64,
            fanout_members: size("BENCH_FANOUT_MEMBERS", 500, 4),
            fanout_max_msgs: env("BENCH_FANOUT_MAX_MSGS", 100_000),
            idle_n: size("BENCH_IDLE_N", 10_000, 50),
            history_rows: size("BENCH_HISTORY_ROWS", 1_000_000, 1_000),
        }
    }
}

/// Ours first in even rounds, the peer first in odd ones.
fn order(round: usize) -> [Kind; 2] {
    if round.is_multiple_of(2) {
        [Kind::Ours, Kind::Peer]
    } else {
        [Kind::Peer, Kind::Ours]
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Per-kind runs of one workload.
#[derive(Default)]
struct Runs {
    ours: Vec<Run>,
    peer: Vec<Run>,
}

impl Runs {
    fn push(&mut self, kind: Kind, run: Run) {
        match kind {
            Kind::Ours => self.ours.push(run),
            Kind::Peer => self.peer.push(run),
        }
    }

    fn med(&self, kind: Kind, f: impl Fn(&Run) -> Option<f64>) -> f64 {
        let runs = if kind == Kind::Ours { &self.ours } else { &self.peer };
        median(runs.iter().filter_map(f).collect())
    }

    /// Prints the medians of the figure and of the latencies (if any).
    fn summary(&self, name: &str, unit: &str) {
        let ms = |kind, f: fn(&Run) -> Option<f64>| fmt(self.med(kind, f) / 1000.0);
        let (p50, p99) = (|r: &Run| r.p50_us, |r: &Run| r.p99_us);
        let has_peer = !self.peer.is_empty();
        if self.ours.iter().any(|r| r.p99_us.is_some()) {
            let peer = if has_peer {
                format!(" | peer p50={} ms p99={} ms", ms(Kind::Peer, p50), ms(Kind::Peer, p99))
            } else {
                String::new()
            };
            println!("{name}: median latency ours p50={} ms p99={} ms{peer}", ms(Kind::Ours, p50), ms(Kind::Ours, p99));
        }
        let figure = |kind| fmt(self.med(kind, |r| Some(r.figure)));
        let peer = if has_peer { format!(", peer {} {unit}", figure(Kind::Peer)) } else { String::new() };
        println!("{name}: median ours {} {unit}{peer}", figure(Kind::Ours));
    }

    /// Prints `RESULT name=<name> ours=.. peer=.. ratio=..` for the medians of `f`; the
    /// ratio is ours/peer if higher is better, else peer/ours. Without peer runs (a
    /// workload the peer cannot do) peer and ratio are 0.
    fn result(&self, name: &str, higher_is_better: bool, f: impl Fn(&Run) -> Option<f64> + Copy) {
        let ours = self.med(Kind::Ours, f);
        if self.peer.is_empty() {
            println!("RESULT name={name} ours={} peer=0 ratio=0", fmt(ours));
            return;
        }
        let peer = self.med(Kind::Peer, f);
        let ratio = if higher_is_better { ours / peer } else { peer / ours };
        println!("RESULT name={name} ours={} peer={} ratio={ratio:.2}", fmt(ours), fmt(peer));
    }

    /// The summary and the RESULT line of the workload's figure.
    fn report(&self, name: &str, unit: &str, higher_is_better: bool) {
        self.summary(name, unit);
        let result_name = if name == "idle" { "idle_kib_per_conn" } else { name };
        self.result(result_name, higher_is_better, |r| Some(r.figure));
    }

    /// The RESULT line of the server's CPU time per delivered message (lower is better).
    fn report_cpu(&self, name: &str) {
        let us = |kind| fmt(self.med(kind, |r| r.cpu_us_per_msg));
        println!(
            "{name}: median server CPU per delivered message ours {} µs, peer {} µs",
            us(Kind::Ours),
            us(Kind::Peer)
        );
        self.result(&format!("{name}_cpu_us_per_msg"), false, |r| r.cpu_us_per_msg);
    }

    /// The RESULT line of the p99 latency in ms (lower is better).
    fn report_p99(&self, name: &str) {
        self.result(&format!("{name}_p99_ms"), false, |r| r.p99_us.map(|us| us / 1000.0));
    }
}

fn fmt(x: f64) -> String {
    if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

/// Runs `f` once, printing the round's figure and where the CPU went.
async fn timed_round<F: std::future::Future<Output = Run>>(
    name: &str,
    round: usize,
    rounds: usize,
    srv: &mut Server,
    unit: &str,
    f: F,
) -> Run {
    let (cpu0, gen0, cs0, t0) = (srv.cpu_secs(), server::self_cpu_secs(), srv.context_switches(), Instant::now());
    let run = f.await;
    let wall = t0.elapsed().as_secs_f64();
    let (cpu, gen) = (srv.cpu_secs() - cpu0, server::self_cpu_secs() - gen0);
    let cs = srv.context_switches().saturating_sub(cs0);
    srv.check_alive();
    let mut lat = match (run.p50_us, run.p99_us) {
        (Some(p50), Some(p99)) => format!("  p50 {:.2} ms  p99 {:.2} ms", p50 / 1000.0, p99 / 1000.0),
        _ => String::new(),
    };
    if let Some(us) = run.cpu_us_per_msg {
        lat.push_str(&format!("  server cpu {us:.2} µs/msg"));
    }
    println!(
        "{name:<8} round {}/{rounds}  {:<4}  {:>10} {unit}{lat}   [over {wall:.1} s: cpu server {:.0}%, generator {:.0}%; server context switches {}/s]",
        round + 1,
        srv.kind.name(),
        fmt(run.figure),
        100.0 * cpu / wall,
        100.0 * gen / wall,
        fmt(cs as f64 / wall),
    );
    run
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--peer-server") {
        common::peer::main(&args);
        return;
    }
    // Workload filters: the arguments that are neither flags nor a flag's value.
    let filters: Vec<&str> = args
        .iter()
        .enumerate()
        .filter(|(i, a)| !a.starts_with('-') && (*i == 0 || !matches!(args[i - 1].as_str(), "--skip" | "--exact")))
        .map(|(_, a)| a.as_str())
        .collect();
    let selected = |name: &str| filters.is_empty() || filters.iter().any(|f| name.contains(f));
    let smoke = !args.iter().any(|a| a == "--bench");
    let mut s = Settings::from_env(smoke);
    if smoke {
        println!("smoke run with tiny sizes (no --bench flag: cargo test); `cargo bench` measures");
    }

    let fds = server::raise_fd_limit();
    // Each side of an idle connection holds one fd, in different processes; keep a margin.
    if (fds as usize) < s.idle_n + 200 {
        let n = (fds as usize).saturating_sub(200);
        println!("note: open-file limit {fds}: idle scaled down from {} to {n} connections", s.idle_n);
        s.idle_n = n;
    }
    println!(
        "cluster-chat benchmarks: {} cores, server threads {}, generator threads {}, {} rounds, {:?} per timed round after {:?} warm-up, open-file limit {fds}",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        s.threads,
        s.client_threads,
        s.rounds,
        s.secs,
        s.warmup,
    );
    println!("ours on {}; the peer on SQLite (WAL, synchronous=NORMAL)", server::ours_store());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(s.client_threads)
        .enable_all()
        .build()
        .expect("generator runtime");
    let started = Instant::now();
    rt.block_on(run_all(&s, &selected));
    println!("total {:.1} s", started.elapsed().as_secs_f64());
    // Tasks still parked on closed rigs are dropped with the runtime.
    rt.shutdown_timeout(Duration::from_secs(1));
}

async fn run_all(s: &Settings, selected: &dyn Fn(&str) -> bool) {
    let needs_shared = ["connect", "pingpong", "chat", "chat_w1", "fanout"].iter().any(|w| selected(w));
    // Users the peer preloads: chat users first, then the fan-out sender and members.
    let peer_users = 2 * s.chat_pairs + s.fanout_members + 1;
    let mut servers = if needs_shared {
        Some((Server::start(Kind::Ours, s.threads, peer_users), Server::start(Kind::Peer, s.threads, peer_users)))
    } else {
        None
    };

    if selected("connect") {
        let (ours, peer) = servers.as_mut().expect("servers");
        let mut runs = Runs::default();
        for round in 0..s.rounds {
            for kind in order(round) {
                let srv = if kind == Kind::Ours { &mut *ours } else { &mut *peer };
                let addr = srv.addr;
                let run = timed_round(
                    "connect",
                    round,
                    s.rounds,
                    srv,
                    "conn/s",
                    load::connect_run(addr, s.connect_n, s.connect_concurrency),
                )
                .await;
                runs.push(kind, run);
                // Let the server reap the closed connections before the next run.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
        runs.report("connect", "conn/s", true);
    }

    if selected("pingpong") {
        let (ours, peer) = servers.as_mut().expect("servers");
        let mut runs = Runs::default();
        for round in 0..s.rounds {
            for kind in order(round) {
                let srv = if kind == Kind::Ours { &mut *ours } else { &mut *peer };
                let addr = srv.addr;
                let f = load::pingpong_run(addr, s.pingpong_conns, s.depth, s.warmup, s.secs);
                let run = timed_round("pingpong", round, s.rounds, srv, "msg/s", f).await;
                runs.push(kind, run);
            }
        }
        runs.report("pingpong", "msg/s", true);
    }

    if selected("chat") || selected("chat_w1") {
        let (ours, peer) = servers.as_mut().expect("servers");
        let n = 2 * s.chat_pairs;
        let setup = Instant::now();
        let ours_ids = load::register(ours.addr, "chat", n).await;
        let mut ours_rig = ChatRig::new(load::login(ours.addr, ours_ids).await);
        let mut peer_rig = ChatRig::new(load::login(peer.addr, (1..=n as i64).collect()).await);
        println!("chat: {n} users registered and logged in ({:.1} s, untimed)", setup.elapsed().as_secs_f64());
        let (mut runs, mut w1, mut unloaded) = (Runs::default(), Runs::default(), Runs::default());
        let short = s.secs.min(Duration::from_millis(1000));
        for round in 0..s.rounds {
            for kind in order(round) {
                let (srv, rig) =
                    if kind == Kind::Ours { (&mut *ours, &mut ours_rig) } else { (&mut *peer, &mut peer_rig) };
                let cpu = srv.cpu();
                if selected("chat") {
                    let f = rig.run(s.window, s.warmup, s.secs, usize::MAX, cpu);
                    runs.push(kind, timed_round("chat", round, s.rounds, srv, "msg/s", f).await);
                }
                if selected("chat_w1") {
                    let f = rig.run(1, s.warmup, s.secs, usize::MAX, cpu);
                    w1.push(kind, timed_round("chat_w1", round, s.rounds, srv, "msg/s", f).await);
                }
                if selected("chat") {
                    // Latency without queueing: one user, one message in flight.
                    let f = rig.run(1, s.warmup.min(Duration::from_millis(300)), short, 1, cpu);
                    unloaded.push(kind, timed_round("chat1", round, s.rounds, srv, "msg/s", f).await);
                }
            }
        }
        ours_rig.close();
        peer_rig.close();
        if selected("chat") {
            let ms = |r: &Runs, kind, f: fn(&Run) -> Option<f64>| r.med(kind, f) / 1000.0;
            println!(
                "chat: unloaded (1 sender, window 1) median latency ours p50={:.3} ms p99={:.3} ms | peer p50={:.3} ms p99={:.3} ms",
                ms(&unloaded, Kind::Ours, |r| r.p50_us),
                ms(&unloaded, Kind::Ours, |r| r.p99_us),
                ms(&unloaded, Kind::Peer, |r| r.p50_us),
                ms(&unloaded, Kind::Peer, |r| r.p99_us),
            );
            runs.report("chat", "msg/s", true);
            runs.report_cpu("chat");
        }
        if selected("chat_w1") {
            w1.summary("chat_w1", "msg/s");
            w1.report_p99("chat_w1");
        }
    }

    if selected("fanout") {
        let (ours, peer) = servers.as_mut().expect("servers");
        let m = s.fanout_members;
        let setup = Instant::now();
        let ours_ids = load::register(ours.addr, "fan", m + 1).await;
        let mut ours_users = load::login(ours.addr, ours_ids).await;
        let first = 2 * s.chat_pairs as i64 + 1;
        let mut peer_users = load::login(peer.addr, (first..=first + m as i64).collect()).await;
        let group = format!("fanout-{}", std::process::id());
        let ours_sender = ours_users.remove(0).1;
        let mut ours_rig = FanoutRig::new(ours_sender, ours_users, &group).await;
        let peer_sender = peer_users.remove(0).1;
        let mut peer_rig = FanoutRig::new(peer_sender, peer_users, &group).await;
        println!(
            "fanout: {} users registered, logged in, in one group ({:.1} s, untimed)",
            m + 1,
            setup.elapsed().as_secs_f64()
        );
        let mut runs = Runs::default();
        for round in 0..s.rounds {
            for kind in order(round) {
                let (srv, rig) =
                    if kind == Kind::Ours { (&mut *ours, &mut ours_rig) } else { (&mut *peer, &mut peer_rig) };
                let f = rig.run(s.warmup, s.secs, s.fanout_max_msgs, srv.cpu());
                let run = timed_round("fanout", round, s.rounds, srv, "deliveries/s", f).await;
                runs.push(kind, run);
            }
        }
        ours_rig.close();
        peer_rig.close();
        runs.report("fanout", "deliveries/s", true);
        runs.report_cpu("fanout");
    }
    drop(servers.take());

    if selected("idle") {
        let mut runs = Runs::default();
        for round in 0..s.rounds {
            for kind in order(round) {
                let mut srv = Server::start(kind, s.threads, 1);
                let addr = srv.addr;
                // Warm the server up with one connection, then take the baseline.
                let warm = load::open_idle(addr, 1).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                let before = srv.rss_kib();
                let n = s.idle_n;
                let f = async {
                    let conns = load::open_idle(addr, n).await;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let after = srv.rss_kib();
                    for c in conns.into_iter().chain(warm) {
                        load::close_hard(c);
                    }
                    Run { figure: after.saturating_sub(before) as f64 / n as f64, ..Default::default() }
                };
                let run = f.await;
                println!(
                    "idle     round {}/{}  {:<4}  {:>10} KiB/conn   [{} connections, server RSS {} KiB before]",
                    round + 1,
                    s.rounds,
                    kind.name(),
                    fmt(run.figure),
                    n,
                    before
                );
                srv.check_alive();
                runs.push(kind, run);
            }
        }
        runs.report("idle", "KiB/conn", false);
    }

    if selected("history") {
        history_workload(s).await;
    }
}

/// `history`, ours only: two users, `history_rows` messages between them written into
/// the SQLite file while the server is stopped, then HISTORY pages over the protocol.
async fn history_workload(s: &Settings) {
    let mut srv = Server::start(Kind::Ours, s.threads, 1);
    let ids = load::register(srv.addr, "hist", 2).await;
    let (a, b) = ((ids[0], "hist0"), (ids[1], "hist1"));
    let setup = Instant::now();
    let mut mids = 0..=0;
    srv.restart_with(|db| mids = history::fill(db, a, b, s.history_rows));
    println!(
        "history: {} messages between two users written into the stopped server's database ({:.1} s, untimed)",
        s.history_rows,
        setup.elapsed().as_secs_f64()
    );
    let mut me = load::login(srv.addr, vec![a.0]).await.remove(0).1;
    let (mut newest, mut deep) = (Runs::default(), Runs::default());
    for round in 0..s.rounds {
        let f = history::run(&mut me, b.0, &mids, false, s.warmup, s.secs);
        newest.push(Kind::Ours, timed_round("history", round, s.rounds, &mut srv, "pages/s", f).await);
        let f = history::run(&mut me, b.0, &mids, true, s.warmup, s.secs);
        deep.push(Kind::Ours, timed_round("history_deep", round, s.rounds, &mut srv, "pages/s", f).await);
    }
    newest.summary("history (the newest page)", "pages/s");
    deep.summary("history_deep (before a random mid of the older half)", "pages/s");
    newest.report_p99("history");
    deep.report_p99("history_deep");
}
