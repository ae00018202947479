//! The interpreter of `ConsistentHash`, the seeds' consistent-hash configurator:
//! commands in, text out, over one [`HashRing`].
//!
//! One command per line (`add HOST PORT VNODES`, `get HOST PORT`, `statDist [N]`, ...;
//! `h` lists them); empty lines and lines starting with `#` are ignored. A bad command
//! gets one `error: ...` line and the loop goes on; `q` or the end of input ends it. A
//! client address `HOST:PORT` maps to a server by the key `"HOST:PORT"`.
//!
//! Runs on the caller's thread (the binary's main thread), reading and writing only
//! what it is given.

use std::io::{self, BufRead, Write};

use super::{server_address, HashRing, MAX_VIRTUAL_NODES};

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

/// Runs the command loop over a fresh ring until end of input or `q`: one command per
/// line of `input`, its answer on `out`. `interactive` shows a `> ` prompt before each
/// line (and flushes after each answer). Fails only when reading or writing fails.
pub fn run(mut input: impl BufRead, out: &mut impl Write, interactive: bool) -> io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What `run` answers to `input`, not interactive.
    fn answers(input: impl AsRef<[u8]>) -> String {
        let mut out = Vec::new();
        run(input.as_ref(), &mut out, false).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn commands_in_text_out() {
        let mut ring = HashRing::new();
        ring.add("127.0.0.1", 6000, 160).unwrap();
        ring.add("127.0.0.1", 6002, 2).unwrap();
        let owner = ring.get("10.0.0.1:5555").unwrap().to_owned();
        let out = answers(
            "add 127.0.0.1 6000 160\nadd 127.0.0.1 6002 2\ngetRealNum\ngetAllNodeNum\n\
             getVirNum 127.0.0.1 6002\nget 10.0.0.1 5555\ndel 127.0.0.1 6000\ngetRealNum\n\
             get 10.0.0.1 5555\n",
        );
        assert_eq!(
            out,
            format!(
                "added 127.0.0.1:6000 with 160 virtual nodes\n\
                 added 127.0.0.1:6002 with 2 virtual nodes\n\
                 real nodes: 2\n\
                 ring points: 162\n\
                 virtual nodes of 127.0.0.1:6002: 2\n\
                 10.0.0.1:5555 -> {owner}\n\
                 removed 127.0.0.1:6000\n\
                 real nodes: 1\n\
                 10.0.0.1:5555 -> 127.0.0.1:6002\n"
            )
        );
    }

    #[test]
    fn bad_commands_get_one_error_line_and_change_nothing() {
        let cases = [
            ("add", "add takes 3 arguments, got 0; usage: add HOST PORT VNODES"),
            ("add h 0 1", "invalid PORT '0' (expected 1-65535); usage: add HOST PORT VNODES"),
            ("add h 65536 1", "invalid PORT '65536' (expected 1-65535); usage: add HOST PORT VNODES"),
            ("add h#x 1 1", "invalid HOST 'h#x' (must not contain '#'); usage: add HOST PORT VNODES"),
            ("add h 1 0", "invalid VNODES '0' (expected 1-65536); usage: add HOST PORT VNODES"),
            ("add h 1 65537", "invalid VNODES '65537' (expected 1-65536); usage: add HOST PORT VNODES"),
            ("add h 1 2", "server h:1 is already on the ring"),
            ("del h 2", "server h:2 is not on the ring"),
            ("del h", "del takes 2 arguments, got 1; usage: del HOST PORT"),
            ("get h x", "invalid PORT 'x' (expected 1-65535); usage: get HOST PORT"),
            ("getVirNum h 2", "server h:2 is not on the ring"),
            ("getRealNum now", "getRealNum takes no arguments, got 1; usage: getRealNum"),
            ("showTime all", "showTime takes no arguments, got 1; usage: showTime"),
            ("statDist 0", "invalid N '0' (expected 1-10000000); usage: statDist [N]"),
            ("statDist 1 2", "statDist takes at most 1 argument, got 2; usage: statDist [N]"),
            ("q now", "q takes no arguments, got 1; usage: q"),
            ("bogus", &format!("unknown command \"bogus\"; commands: {COMMANDS} (type h for help)")),
        ];
        for (command, error) in cases {
            let out = answers(format!("add h 1 1\n{command}\ngetAllNodeNum\n"));
            assert_eq!(out, format!("added h:1 with 1 virtual nodes\nerror: {error}\nring points: 1\n"), "{command}");
        }
    }

    #[test]
    fn an_empty_ring_says_so() {
        assert_eq!(
            answers("get 10.0.0.1 1\nshowTime\nstatDist\n"),
            "the ring is empty: no server for 10.0.0.1:1 (use add first)\n\
             the ring is empty\n\
             the ring is empty: no distribution (use add first)\n"
        );
    }

    #[test]
    fn comments_blanks_and_quit() {
        assert_eq!(answers("# a comment\n\n   \n#add h 1 1\nq\nadd h 1 1\n"), "");
        assert_eq!(answers("getRealNum\nquit\ngetRealNum\n"), "real nodes: 0\n");
        assert_eq!(answers("getRealNum"), "real nodes: 0\n", "a last line without a newline counts");
        assert!(answers(b"\xff\xfe\n").starts_with("error: unknown command \"\u{fffd}\u{fffd}\""));
        assert!(answers("h\n").contains("statDist [N]"));
    }

    #[test]
    fn interactive_shows_prompts() {
        let mut out = Vec::new();
        run(&b"getRealNum\n"[..], &mut out, true).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "> real nodes: 0\n> \n");
    }

    #[test]
    fn show_time_lists_the_points_in_order() {
        let mut ring = HashRing::new();
        ring.add("h", 1, 3).unwrap();
        let want: String = ring.points().map(|(p, s)| format!("{p:>20} {s}\n")).collect();
        assert_eq!(
            answers("add h 1 3\nshowTime\n"),
            format!("added h:1 with 3 virtual nodes\n3 ring points (position server):\n{want}")
        );
    }

    #[test]
    fn stat_dist_spreads_the_sample_clients() {
        assert_eq!(sample_client(0), "10.0.0.0:10000");
        assert_eq!(sample_client(0x1_0203), "10.0.2.3:10001");
        let mut ring = HashRing::new();
        ring.add("a", 1, 160).unwrap();
        ring.add("b", 1, 160).unwrap();
        let dist = ring.distribution((0..1000).map(sample_client));
        let mut want = String::from("1000 client addresses over 2 servers:\n");
        for (server, count) in &dist {
            want += &format!("{server} {count} {:.2}%\n", *count as f64 / 10.0);
        }
        let out = answers("add a 1 160\nadd b 1 160\nstatDist 1000\n");
        assert_eq!(out.lines().skip(2).collect::<Vec<_>>().join("\n") + "\n", want);
        assert_eq!(dist.iter().map(|d| d.1).sum::<usize>(), 1000);
    }

    #[test]
    fn write_errors_end_the_loop() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let err = run(&b"getRealNum\ngetRealNum\n"[..], &mut Closed, false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
