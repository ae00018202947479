//! Interactive consistent-hash configurator (the seeds' `ConsistentHash`).
//!
//! Reads one command per line from stdin — typed at a terminal (then a `> `
//! prompt is shown) or piped from a script — and answers on stdout. Type `h`
//! for the list of commands. Exits with status 0 at end of input or on `q`.
//! The interpreter is `chat::ring::shell`.

#![allow(non_snake_case)] // the binary keeps the seeds' name

use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;

fn main() -> ExitCode {
    let stdin = io::stdin();
    let interactive = stdin.is_terminal();
    let stdout = io::stdout();
    let mut out = io::BufWriter::new(stdout.lock());
    match chat::ring::shell::run(stdin.lock(), &mut out, interactive).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        // Whoever reads our output went away: nothing left to say.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(io::stderr(), "ConsistentHash: {e}");
            ExitCode::FAILURE
        }
    }
}
