//! Interactive consistent-hash configurator (the seeds' `ConsistentHash`).
//!
//! Reads one command per line from stdin — typed at a terminal (then a `> `
//! prompt is shown) or piped from a script — and answers on stdout. Type `h`
//! for the list of commands. Exits with status 0 at end of input or on `q`.
//! A client address `HOST:PORT` maps to a server by the key `"HOST:PORT"`
//! (see `chat::ring` for the hashing).

#![allow(non_snake_case)] // the binary keeps the seeds' name

use std::io::{self, BufRead, IsTerminal, Write};
use std::process::ExitCode;

use chat::ring::{server_address, HashRing, MAX_VIRTUAL_NODES};

/// Sample size of `statDist` without an argument.
const DEFAULT_SAMPLES: u64 = 100_000;
/// Largest sample size `statDist` accepts (keeps one command under seconds).
const MAX_SAMPLES: u64 = 10_000_000;

const COMMANDS: &str = "add, del, get, getVirNum, getRealNum, getAllNodeNum, showTime, statDist, h, q";

const HELP: &str = "\
commands:
  add HOST PORT VNODES   add server HOST:PORT with VNODES virtual nodes (1-65536)
  del HOST PORT          remove server HOST:PORT
  get HOST PORT          show which server the client address HOST:PORT maps to
  getVirNum HOST PORT    show the number of virtual nodes of server HOST:PORT
  getRealNum             show the number of real servers
  getAllNodeNum          show the number of ring points (all virtual nodes)
  showTime               list every ring point in order: position and server
  statDist [N]           spread N sample client addresses (default 100000) over the servers
  h                      show this help
  q                      quit
empty lines and lines starting with # are ignored";

fn main() -> ExitCode {
    let stdin = io::stdin();
    let interactive = stdin.is_terminal();
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    match run(stdin.lock(), &mut out, interactive).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        // Whoever reads our output went away: nothing left to say.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(io::stderr(), "ConsistentHash: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the command loop until end of input or `q`.
fn run(mut input: impl BufRead, out: &mut impl Write, interactive: bool) -> io::Result<()> {
    let mut ring = HashRing::new();
    let mut line = Vec::new();
    loop {
        if interactive {
            write!(out, "> ")?;
            out.flush()?;
        }
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            if interactive {
                writeln!(out)?;
            }
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let words: Vec<&str> = text.split_whitespace().collect();
        match execute(&mut ring, &words, out)? {
            Flow::Continue => {}
            Flow::Quit => return Ok(()),
        }
        if interactive {
            out.flush()?;
        }
    }
}

enum Flow {
    Continue,
    Quit,
}

/// Executes one command (already split into words) and prints its answer.
fn execute(ring: &mut HashRing, words: &[&str], out: &mut impl Write) -> io::Result<Flow> {
    let Some((&command, args)) = words.split_first() else {
        return Ok(Flow::Continue);
    };
    if command.starts_with('#') {
        return Ok(Flow::Continue);
    }
    let result = match command {
        "add" => cmd_add(ring, args, out),
        "del" => cmd_del(ring, args, out),
        "get" => cmd_get(ring, args, out),
        "getVirNum" => cmd_get_vir_num(ring, args, out),
        "getRealNum" => no_args(command, args)
            .and_then(|()| writeln!(out, "real nodes: {}", ring.real_nodes()).map_err(Failure::Io)),
        "getAllNodeNum" => no_args(command, args)
            .and_then(|()| writeln!(out, "ring points: {}", ring.all_nodes()).map_err(Failure::Io)),
        "showTime" => cmd_show(ring, args, out),
        "statDist" => cmd_stat_dist(ring, args, out),
        "h" | "help" => no_args(command, args).and_then(|()| writeln!(out, "{HELP}").map_err(Failure::Io)),
        "q" | "quit" | "exit" => match no_args(command, args) {
            Ok(()) => return Ok(Flow::Quit),
            Err(e) => Err(e),
        },
        _ => Err(Failure::Usage(format!("unknown command {command:?}; commands: {COMMANDS} (type h for help)"))),
    };
    report_result(result, out)?;
    Ok(Flow::Continue)
}

/// Why a command did not do its job.
enum Failure {
    /// Bad input or a refused operation: one line for the user.
    Usage(String),
    /// Writing the answer failed.
    Io(io::Error),
}

type CmdResult = Result<(), Failure>;

/// Prints a usage failure as one `error: ...` line; passes I/O errors on.
fn report_result(result: CmdResult, out: &mut impl Write) -> io::Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(Failure::Usage(message)) => writeln!(out, "error: {message}"),
        Err(Failure::Io(e)) => Err(e),
    }
}

fn usage_of(command: &str) -> &'static str {
    match command {
        "add" => "add HOST PORT VNODES",
        "del" => "del HOST PORT",
        "get" => "get HOST PORT",
        "getVirNum" => "getVirNum HOST PORT",
        "statDist" => "statDist [N]",
        "getRealNum" => "getRealNum",
        "getAllNodeNum" => "getAllNodeNum",
        "showTime" => "showTime",
        "h" | "help" => "h",
        _ => "q",
    }
}

fn bad_args(command: &str, problem: impl std::fmt::Display) -> Failure {
    Failure::Usage(format!("{problem}; usage: {}", usage_of(command)))
}

fn expect_args(command: &str, args: &[&str], count: usize) -> CmdResult {
    if args.len() == count {
        Ok(())
    } else {
        Err(bad_args(
            command,
            format!("{command} takes {count} argument{}, got {}", if count == 1 { "" } else { "s" }, args.len()),
        ))
    }
}

fn no_args(command: &str, args: &[&str]) -> CmdResult {
    if args.is_empty() {
        Ok(())
    } else {
        Err(bad_args(command, format!("{command} takes no arguments, got {}", args.len())))
    }
}

fn parse_port(command: &str, text: &str) -> Result<u16, Failure> {
    match text.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(bad_args(command, format!("invalid PORT '{text}' (expected 1-65535)"))),
    }
}

fn parse_host<'a>(command: &str, text: &'a str) -> Result<&'a str, Failure> {
    if text.contains('#') {
        Err(bad_args(command, format!("invalid HOST '{text}' (must not contain '#')")))
    } else {
        Ok(text)
    }
}

fn cmd_add(ring: &mut HashRing, args: &[&str], out: &mut impl Write) -> CmdResult {
    expect_args("add", args, 3)?;
    let host = parse_host("add", args[0])?;
    let port = parse_port("add", args[1])?;
    let vnodes = match args[2].parse::<u32>() {
        Ok(v) if (1..=MAX_VIRTUAL_NODES).contains(&v) => v,
        _ => return Err(bad_args("add", format!("invalid VNODES '{}' (expected 1-{MAX_VIRTUAL_NODES})", args[2]))),
    };
    ring.add(host, port, vnodes).map_err(|e| Failure::Usage(e.to_string()))?;
    let server = server_address(host, port);
    writeln!(out, "added {server} with {vnodes} virtual nodes").map_err(Failure::Io)
}

fn cmd_del(ring: &mut HashRing, args: &[&str], out: &mut impl Write) -> CmdResult {
    expect_args("del", args, 2)?;
    let host = parse_host("del", args[0])?;
    let port = parse_port("del", args[1])?;
    ring.remove(host, port).map_err(|e| Failure::Usage(e.to_string()))?;
    writeln!(out, "removed {}", server_address(host, port)).map_err(Failure::Io)
}

fn cmd_get(ring: &HashRing, args: &[&str], out: &mut impl Write) -> CmdResult {
    expect_args("get", args, 2)?;
    let host = parse_host("get", args[0])?;
    let port = parse_port("get", args[1])?;
    let client = server_address(host, port);
    match ring.get(&client) {
        Some(server) => writeln!(out, "{client} -> {server}"),
        None => writeln!(out, "the ring is empty: no server for {client} (use add first)"),
    }
    .map_err(Failure::Io)
}

fn cmd_get_vir_num(ring: &HashRing, args: &[&str], out: &mut impl Write) -> CmdResult {
    expect_args("getVirNum", args, 2)?;
    let host = parse_host("getVirNum", args[0])?;
    let port = parse_port("getVirNum", args[1])?;
    match ring.virtual_nodes(host, port) {
        Some(n) => writeln!(out, "virtual nodes of {}: {n}", server_address(host, port)).map_err(Failure::Io),
        None => Err(Failure::Usage(format!("server {} is not on the ring", server_address(host, port)))),
    }
}

fn cmd_show(ring: &HashRing, args: &[&str], out: &mut impl Write) -> CmdResult {
    no_args("showTime", args)?;
    if ring.is_empty() {
        return writeln!(out, "the ring is empty").map_err(Failure::Io);
    }
    writeln!(out, "{} ring points (position server):", ring.all_nodes()).map_err(Failure::Io)?;
    for (position, server) in ring.points() {
        writeln!(out, "{position:>20} {server}").map_err(Failure::Io)?;
    }
    Ok(())
}

/// The `i`-th sample client address of `statDist`: `10.0.X.Y:PORT` with
/// `X.Y` the low 16 bits of `i` and `PORT` = 10000 + the bits above.
fn sample_client(i: u64) -> String {
    format!("10.0.{}.{}:{}", (i >> 8) & 0xff, i & 0xff, 10_000 + (i >> 16))
}

fn cmd_stat_dist(ring: &HashRing, args: &[&str], out: &mut impl Write) -> CmdResult {
    let samples = match args {
        [] => DEFAULT_SAMPLES,
        [n] => match n.parse::<u64>() {
            Ok(n) if (1..=MAX_SAMPLES).contains(&n) => n,
            _ => return Err(bad_args("statDist", format!("invalid N '{n}' (expected 1-{MAX_SAMPLES})"))),
        },
        _ => return Err(bad_args("statDist", format!("statDist takes at most 1 argument, got {}", args.len()))),
    };
    if ring.is_empty() {
        return writeln!(out, "the ring is empty: no distribution (use add first)").map_err(Failure::Io);
    }
    let dist = ring.distribution((0..samples).map(sample_client));
    writeln!(out, "{samples} client addresses over {} servers:", ring.real_nodes()).map_err(Failure::Io)?;
    for (server, count) in dist {
        let percent = count as f64 * 100.0 / samples as f64;
        writeln!(out, "{server} {count} {percent:.2}%").map_err(Failure::Io)?;
    }
    Ok(())
}
