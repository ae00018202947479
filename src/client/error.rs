//! What ends a client session with a non-zero exit: each variant displays as one
//! sentence meant for a person, with no backtrace and no JSON.

use std::fmt;
use std::io;
use std::time::Duration;

/// Why the client stopped (or, for [`ClientError::NoReply`], why one request failed).
#[derive(Debug)]
pub enum ClientError {
    /// The server could not be reached at all.
    Connect { server: String, reason: String },
    /// The connection ended while the client was running.
    Lost { server: String, reason: String },
    /// A request got no reply in time. The session reports it and goes on.
    NoReply { server: String, after: Duration },
    /// Reading the user's input failed (not its end: that is a normal exit).
    Input(io::Error),
    /// Writing to the output failed (e.g. a closed pipe).
    Output(io::Error),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Connect { server, reason } => {
                write!(f, "Cannot connect to the chat server at {server}: {reason}.")
            }
            ClientError::Lost { server, reason } => {
                write!(f, "Lost the connection to the chat server at {server}: {reason}.")
            }
            ClientError::NoReply { server, after } => {
                write!(f, "The chat server at {server} did not answer within {} s.", after.as_secs_f32())
            }
            ClientError::Input(e) => write!(f, "Cannot read the input: {}.", describe(e)),
            ClientError::Output(e) => write!(f, "Cannot write the output: {}.", describe(e)),
        }
    }
}

impl std::error::Error for ClientError {}

/// An I/O error in words, without the "(os error N)" suffix.
pub fn describe(e: &io::Error) -> String {
    use io::ErrorKind::*;
    let text = match e.kind() {
        ConnectionRefused => "connection refused (is the server running on that port?)",
        ConnectionReset => "the connection was reset",
        ConnectionAborted => "the connection was aborted",
        BrokenPipe => "the connection is broken",
        TimedOut | WouldBlock => "timed out",
        AddrNotAvailable => "the address is not available",
        NotConnected => "not connected",
        UnexpectedEof => "the server closed the connection",
        _ => {
            let s = e.to_string();
            return match s.find(" (os error") {
                Some(i) => s[..i].to_owned(),
                None => s,
            };
        }
    };
    text.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_one_sentence() {
        let e = ClientError::Connect {
            server: "127.0.0.1:1".into(),
            reason: describe(&io::Error::from(io::ErrorKind::ConnectionRefused)),
        };
        let text = e.to_string();
        assert!(text.starts_with("Cannot connect to the chat server at 127.0.0.1:1: connection refused"), "{text}");
        assert!(text.ends_with('.') && !text.contains('\n'), "{text}");
        let e = io::Error::from_raw_os_error(libc::EHOSTUNREACH);
        assert!(!describe(&e).contains("os error"), "{}", describe(&e));
    }
}
