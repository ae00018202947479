//! Cuts the server's byte stream into JSON frames. Server frames end with `\n` or NUL
//! (the server mirrors the client's terminator); blank frames between them are skipped.
//! No I/O here: the reader thread feeds bytes in and takes frames out.

use serde_json::Value;

/// Why a frame was not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Not a JSON object; the frame is skipped and the stream goes on.
    Bad(String),
    /// More than the limit without a terminator: the stream cannot be trusted.
    TooLong(usize),
}

/// Bytes read but not yet cut into frames.
#[derive(Debug)]
pub struct FrameBuf {
    buf: Vec<u8>,
    /// Start of the unconsumed bytes in `buf`.
    start: usize,
    /// Bytes from `start` on already searched for a terminator.
    scanned: usize,
    limit: usize,
}

impl FrameBuf {
    /// A buffer that gives up on a frame longer than `limit` bytes.
    pub fn new(limit: usize) -> FrameBuf {
        FrameBuf { buf: Vec::new(), start: 0, scanned: 0, limit }
    }

    /// Appends bytes read from the socket.
    pub fn extend(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        } else if self.start > 64 * 1024 && self.start * 2 > self.buf.len() {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, if any. An incomplete frame is not an error.
    pub fn next_frame(&mut self) -> Option<Result<Value, FrameError>> {
        loop {
            let rest = &self.buf[self.start..];
            let Some(pos) = rest[self.scanned..].iter().position(|b| *b == b'\n' || *b == 0).map(|p| p + self.scanned)
            else {
                self.scanned = rest.len();
                if rest.len() > self.limit {
                    return Some(Err(FrameError::TooLong(rest.len())));
                }
                return None;
            };
            let text = &rest[..pos];
            self.start += pos + 1;
            self.scanned = 0;
            if text.iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            if text.len() > self.limit {
                return Some(Err(FrameError::TooLong(text.len())));
            }
            return Some(match serde_json::from_slice::<Value>(text) {
                Ok(v @ Value::Object(_)) => Ok(v),
                Ok(_) => Err(FrameError::Bad("not a JSON object".into())),
                Err(e) => Err(FrameError::Bad(e.to_string())),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn drain(f: &mut FrameBuf) -> Vec<Result<Value, FrameError>> {
        std::iter::from_fn(|| f.next_frame()).collect()
    }

    #[test]
    fn splits_on_newline_and_nul_across_reads() {
        let mut f = FrameBuf::new(1024);
        f.extend(b"{\"msgid\":17}\n\n{\"msg");
        assert_eq!(drain(&mut f), vec![Ok(json!({"msgid": 17}))]);
        f.extend(b"id\":6,\"msg\":\"a:b\"}\0{\"msgid\":15}\r\n");
        assert_eq!(drain(&mut f), vec![Ok(json!({"msgid": 6, "msg": "a:b"})), Ok(json!({"msgid": 15}))]);
        assert_eq!(drain(&mut f), vec![]);
    }

    #[test]
    fn bad_frames_are_skipped_and_long_ones_refused() {
        let mut f = FrameBuf::new(16);
        f.extend(b"[1]\nnope\n{\"msgid\":17}\n");
        let got = drain(&mut f);
        assert!(matches!(got.as_slice(), [Err(FrameError::Bad(_)), Err(FrameError::Bad(_)), Ok(_)]), "{got:?}");
        f.extend(&[b'x'; 17]);
        assert_eq!(f.next_frame(), Some(Err(FrameError::TooLong(17))));
    }
}
