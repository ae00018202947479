//! The load generator's side of the wire: cutting the server's output into frames and
//! picking fields out of them without a full JSON parse (both servers write compact
//! JSON, one object per line), so the generator spends its CPU on load, not parsing.

use std::ops::Range;

use tokio::io::{AsyncRead, AsyncReadExt};

/// Frames read from one connection; each ends with `\n` or NUL.
pub struct Frames {
    buf: Vec<u8>,
    pos: usize,
}

impl Frames {
    pub fn new() -> Frames {
        Frames { buf: Vec::with_capacity(16 * 1024), pos: 0 }
    }

    /// Reads more bytes; false at end of stream.
    pub async fn fill<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> std::io::Result<bool> {
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 * 1024);
        }
        Ok(r.read_buf(&mut self.buf).await? > 0)
    }

    /// The next complete non-empty frame, as a range for `get`.
    pub fn next_frame(&mut self) -> Option<Range<usize>> {
        loop {
            let rest = &self.buf[self.pos..];
            let end = rest.iter().position(|b| *b == b'\n' || *b == 0)?;
            let frame = self.pos..self.pos + end;
            self.pos += end + 1;
            if end > 0 {
                return Some(frame);
            }
        }
    }

    pub fn get(&self, r: Range<usize>) -> &[u8] {
        &self.buf[r]
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// An integer field: `key` is the quoted name, e.g. `b"\"msgid\":"`.
pub fn int_field(frame: &[u8], key: &[u8]) -> Option<i64> {
    let at = find(frame, key)? + key.len();
    let rest = &frame[at..];
    let (neg, rest) = match rest.first() {
        Some(b'-') => (true, &rest[1..]),
        _ => (false, rest),
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let v: i64 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    Some(if neg { -v } else { v })
}

pub fn msgid(frame: &[u8]) -> Option<i64> {
    int_field(frame, b"\"msgid\":")
}

pub fn errno(frame: &[u8]) -> Option<i64> {
    int_field(frame, b"\"errno\":")
}

/// The send time (ns since the generator's epoch) a bench message starts with.
pub fn stamp(frame: &[u8]) -> Option<u64> {
    let key = b"\"msg\":\"";
    let at = find(frame, key)? + key.len();
    let rest = &frame[at..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}
