//! Starting a server process and learning its address from its "listening on <addr>"
//! log line. Shared by the integration tests and the benches (which include this file
//! by path).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Spawned {
    pub child: Child,
    pub addr: SocketAddr,
    /// Its stderr so far, up to the `max_log` bytes asked for.
    pub log: Arc<Mutex<String>>,
}

/// Spawns `cmd` with stderr captured and waits up to `wait` for the address it listens
/// on. If none comes, kills it and panics with its log; `what` names it there.
pub fn spawn_listening(mut cmd: Command, what: &str, wait: Duration, max_log: usize) -> Spawned {
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let stderr = child.stderr.take().expect("stderr");
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(addr) = line.split("listening on ").nth(1) {
                if let (Some(tx), Ok(addr)) = (tx.take(), addr.trim().parse::<SocketAddr>()) {
                    let _ = tx.send(addr);
                }
            }
            let mut log = sink.lock().unwrap_or_else(|p| p.into_inner());
            if log.len() < max_log {
                log.push_str(&line);
                log.push('\n');
            }
        }
    });
    match rx.recv_timeout(wait) {
        Ok(addr) => Spawned { child, addr, log },
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not start: {}", log.lock().map(|l| l.clone()).unwrap_or_default());
        }
    }
}
