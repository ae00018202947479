//! `ChatClient IP PORT`: the terminal client. Parses the command line and runs
//! [`chat::client`]: with line editing when stdin is a terminal, plain lines otherwise.
//! Exit status: 0 at the end of input or `quit`, 1 when the server cannot be reached or
//! the connection is lost (one sentence on stderr), 2 on bad arguments.

use std::io::{BufReader, IsTerminal};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// The chat server's terminal client.
#[derive(Parser, Debug)]
#[command(name = "ChatClient", version, about)]
struct Args {
    /// The server's IP address (or host name).
    ip: String,
    /// The server's port.
    port: u16,
    /// Seconds without sending before a PING keeps the connection alive (0: never).
    #[arg(long, default_value_t = 30)]
    keepalive: u64,
    /// Seconds a logged-in session keeps trying to connect and log in again after the
    /// connection drops (0: exit at once).
    #[arg(long, default_value_t = 5)]
    reconnect: u64,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("off")).init();
    let args = Args::parse();
    let options = chat::client::Options {
        keepalive: Duration::from_secs(args.keepalive),
        reconnect_within: Duration::from_secs(args.reconnect),
        ..Default::default()
    };
    let result = if std::io::stdin().is_terminal() {
        chat::client::run_terminal(&args.ip, args.port, std::io::stdout(), &options)
    } else {
        chat::client::run(&args.ip, args.port, BufReader::new(std::io::stdin()), std::io::stdout(), &options)
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
