//! `ChatServer [IP] [PORT] [--db URL] ...`: parses the command line and runs the server.
//! Exit status: 0 after a graceful shutdown, 1 on a runtime error, 2 on bad arguments.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let config = chat::Config::parse();
    match chat::run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("ChatServer: {e}");
            ExitCode::FAILURE
        }
    }
}
