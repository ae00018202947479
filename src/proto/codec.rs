//! Incremental framing of the JSON wire protocol; no I/O here.
//!
//! Each direction of a connection is a stream of JSON objects. A client may
//! follow an object with a NUL byte, with whitespace, or with nothing at all
//! (`{..}{..}`), and one object may be split over many reads just as many
//! objects may arrive in one read. [`FrameDecoder`] cuts such a stream into
//! complete objects without parsing them: it only tracks brace depth and
//! string/escape state, and leaves validation to `serde_json`.
//!
//! The decoder is incremental: it remembers how far it has scanned and the
//! scanner state, so every byte is examined once, and a frame fed one byte at
//! a time costs O(n), not O(n²). Like mini-redis's `Frame::check`, an
//! incomplete frame is not an error: it is [`Decoded::Partial`], and the
//! caller simply calls again when more bytes arrive.
//!
//! The decoder also remembers which terminator the client uses, so replies
//! follow the same convention ([`FrameDecoder::terminator`]).
//!
//! One decoder belongs to one connection and is used by the reactor thread
//! that owns that connection. It is plain data (`Send`), with no locks.

use std::fmt;
use std::ops::Range;

/// The default limit on the size of one frame, in bytes.
pub const DEFAULT_MAX_FRAME: usize = 64 * 1024;

/// Why a stream cannot be framed. After an error the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The pending object passed the limit (errno 413).
    TooLarge { limit: usize },
    /// A top-level value that is not an object, or bytes that cannot be JSON (errno 400).
    NotAnObject,
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::TooLarge { limit } => write!(f, "frame larger than {limit} bytes"),
            FrameError::NotAnObject => f.write_str("expected a JSON object"),
        }
    }
}

impl std::error::Error for FrameError {}

/// The outcome of one [`FrameDecoder::decode`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A complete object: its bytes are `input[body]`. The caller handles it, then
    /// drops the first `consumed` bytes of its buffer (consumed == body.end, and
    /// body.start > 0 when separators preceded it).
    Frame { body: Range<usize>, consumed: usize },
    /// No complete object yet. The caller drops the first `consumed` bytes (separators
    /// only, possibly 0) and calls again when more bytes arrive.
    Partial { consumed: usize },
}

/// Cuts one connection's byte stream into JSON objects; one per connection.
///
/// Offsets kept here are relative to the start of the caller's buffer, which
/// is why the caller must drop exactly the `consumed` bytes it is told to.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    /// Limit on the bytes of one object, from its `{` to its `}`.
    max_frame: usize,
    /// Bytes of the input already examined.
    scanned: usize,
    /// Offset of the `{` opening the pending object, if one has started.
    start: Option<usize>,
    /// Nesting depth of `{`/`[` inside the pending object.
    depth: usize,
    /// Inside a string literal of the pending object.
    in_string: bool,
    /// The previous byte was a backslash inside a string.
    escaped: bool,
    /// The terminator for replies: `b'\0'` or `b'\n'`.
    terminator: u8,
    /// A frame was cut at the end of the input: the next byte to arrive
    /// decides the terminator.
    mode_pending: bool,
}

impl FrameDecoder {
    /// A decoder that rejects objects longer than `max_frame` bytes
    /// (usually [`DEFAULT_MAX_FRAME`]). Replies end with `\n` until the
    /// client is seen ending a frame with NUL.
    pub fn new(max_frame: usize) -> Self {
        FrameDecoder {
            max_frame,
            scanned: 0,
            start: None,
            depth: 0,
            in_string: false,
            escaped: false,
            terminator: b'\n',
            mode_pending: false,
        }
    }

    /// Looks for the next complete object in `input`.
    ///
    /// `input` is the connection's unread bytes, oldest first: what was left after the
    /// previous call's `consumed` was dropped, plus new bytes appended. Never rescans
    /// bytes it has already examined (keep scan offset, brace depth, in-string and
    /// escape state across calls; adjust offsets when the caller drops `consumed`).
    ///
    /// Call it again after each `Frame` (there may be more objects in the
    /// buffer) until it returns `Partial`. Separators (NUL, space, `\t`,
    /// `\r`, `\n`) between objects are always reported as consumed, so they
    /// never accumulate in the caller's buffer nor count toward the limit.
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded, FrameError> {
        debug_assert!(self.scanned <= input.len(), "caller dropped unconsumed bytes");

        // The first byte after a frame that ended exactly at the end of an
        // earlier input decides the reply terminator.
        if self.mode_pending {
            if let Some(&next) = input.first() {
                self.set_mode(next);
            }
        }

        let mut i = self.scanned;
        while i < input.len() {
            let b = input[i];
            let Some(start) = self.start else {
                // Between frames: skip separators; anything else must open an object.
                match b {
                    0 | b' ' | b'\t' | b'\r' | b'\n' => {}
                    b'{' => {
                        self.start = Some(i);
                        self.depth = 1;
                        self.check_size(1)?;
                    }
                    _ => return Err(FrameError::NotAnObject),
                }
                i += 1;
                continue;
            };

            // Inside a string only a quote or a backslash matters: skip to the next.
            if self.in_string && !self.escaped {
                let plain = input[i..].iter().position(|&c| c == b'"' || c == b'\\').unwrap_or(input.len() - i);
                if plain > 0 {
                    i += plain;
                    continue;
                }
            }

            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if b == b'\\' {
                    self.escaped = true;
                } else if b == b'"' {
                    self.in_string = false;
                }
            } else {
                match b {
                    b'"' => self.in_string = true,
                    b'{' | b'[' => self.depth += 1,
                    b'}' | b']' => {
                        // depth >= 1 here: it returns to 0 at most once, and
                        // the frame ends right then.
                        self.depth -= 1;
                        if self.depth == 0 {
                            self.check_size(i + 1 - start)?;
                            return Ok(self.cut(input, start, i + 1));
                        }
                    }
                    _ => {}
                }
            }
            i += 1;
        }

        // Reject a giant object once the bytes so far pass the limit, without
        // waiting for its end.
        if let Some(start) = self.start {
            self.check_size(input.len() - start)?;
        }
        // Incomplete is not an error: keep the state, and tell the caller to
        // drop the separators before the pending object (all of it if none).
        let consumed = self.start.unwrap_or(input.len());
        self.scanned = input.len() - consumed;
        self.start = self.start.map(|_| 0);
        Ok(Decoded::Partial { consumed })
    }

    /// The byte to put after each reply: b'\0' or b'\n'.
    pub fn terminator(&self) -> u8 {
        self.terminator
    }

    /// Ends the object `input[start..end]`, resets the scanner for the bytes
    /// after it, and settles the terminator if the next byte is already here.
    fn cut(&mut self, input: &[u8], start: usize, end: usize) -> Decoded {
        self.scanned = 0;
        self.start = None;
        self.depth = 0;
        self.in_string = false;
        self.escaped = false;
        match input.get(end) {
            Some(&next) => self.set_mode(next),
            None => self.mode_pending = true,
        }
        Decoded::Frame { body: start..end, consumed: end }
    }

    /// Sets the terminator from the byte that followed the latest frame.
    fn set_mode(&mut self, next: u8) {
        self.terminator = if next == 0 { b'\0' } else { b'\n' };
        self.mode_pending = false;
    }

    /// Fails once the pending object, `len` bytes so far, passes the limit.
    fn check_size(&self, len: usize) -> Result<(), FrameError> {
        if len > self.max_frame {
            Err(FrameError::TooLarge { limit: self.max_frame })
        } else {
            Ok(())
        }
    }
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new(DEFAULT_MAX_FRAME)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `chunks` to a decoder the way a connection does: append each
    /// chunk to the unread bytes, decode until `Partial`, dropping `consumed`
    /// each time. Returns the frames and how many bytes are left unread.
    fn feed<'a>(
        dec: &mut FrameDecoder,
        chunks: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<(Vec<Vec<u8>>, usize), FrameError> {
        let mut buf = Vec::new();
        let mut frames = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            loop {
                match dec.decode(&buf)? {
                    Decoded::Frame { body, consumed } => {
                        assert_eq!(consumed, body.end);
                        frames.push(buf[body].to_vec());
                        buf.drain(..consumed);
                    }
                    Decoded::Partial { consumed } => {
                        buf.drain(..consumed);
                        break;
                    }
                }
            }
        }
        Ok((frames, buf.len()))
    }

    fn feed_all(dec: &mut FrameDecoder, input: &[u8]) -> Result<Vec<Vec<u8>>, FrameError> {
        feed(dec, [input]).map(|(frames, _)| frames)
    }

    #[test]
    fn single_frame_with_nul_newline_or_nothing() {
        for (input, term) in [(&b"{\"a\":1}\0"[..], b'\0'), (&b"{\"a\":1}\n"[..], b'\n'), (&b"{\"a\":1}"[..], b'\n')] {
            let mut dec = FrameDecoder::default();
            assert_eq!(dec.decode(input), Ok(Decoded::Frame { body: 0..7, consumed: 7 }));
            assert_eq!(dec.terminator(), term);
            let rest = &input[7..];
            assert_eq!(dec.decode(rest), Ok(Decoded::Partial { consumed: rest.len() }));
        }
    }

    #[test]
    fn back_to_back_frames() {
        let mut dec = FrameDecoder::default();
        let input = b"{}{\"b\":[]}";
        assert_eq!(dec.decode(input), Ok(Decoded::Frame { body: 0..2, consumed: 2 }));
        assert_eq!(dec.decode(&input[2..]), Ok(Decoded::Frame { body: 0..8, consumed: 8 }));
        assert_eq!(dec.decode(b""), Ok(Decoded::Partial { consumed: 0 }));
    }

    #[test]
    fn leading_separators_are_skipped() {
        let mut dec = FrameDecoder::default();
        let input = b"\0 \t\r\n\0{}";
        assert_eq!(dec.decode(input), Ok(Decoded::Frame { body: 6..8, consumed: 8 }));
    }

    #[test]
    fn partial_object_keeps_only_its_own_bytes() {
        let mut dec = FrameDecoder::default();
        // The separators before `{` are consumed, the object is kept.
        assert_eq!(dec.decode(b"\n\n{\"a\""), Ok(Decoded::Partial { consumed: 2 }));
        assert_eq!(dec.decode(b"{\"a\":1}"), Ok(Decoded::Frame { body: 0..7, consumed: 7 }));
    }

    #[test]
    fn one_byte_at_a_time() {
        let input = b"  {\"s\":\"}{\\\"\",\"n\":[1,{\"x\":2}]}\0{\"t\":\"\\\\\"}\n";
        let mut dec = FrameDecoder::default();
        let (frames, left) = feed(&mut dec, input.chunks(1)).unwrap();
        assert_eq!(frames, vec![b"{\"s\":\"}{\\\"\",\"n\":[1,{\"x\":2}]}".to_vec(), b"{\"t\":\"\\\\\"}".to_vec(),]);
        assert_eq!(left, 0);
        assert_eq!(dec.terminator(), b'\n');
    }

    #[test]
    fn big_frame_one_byte_at_a_time() {
        // 64 KiB fed byte by byte: quick only if nothing is rescanned.
        let mut frame = b"{\"a\":\"".to_vec();
        frame.resize(DEFAULT_MAX_FRAME - 2, b'x');
        frame.extend_from_slice(b"\"}");
        let mut dec = FrameDecoder::default();
        let (frames, left) = feed(&mut dec, frame.chunks(1)).unwrap();
        assert_eq!(frames, vec![frame]);
        assert_eq!(left, 0);
    }

    #[test]
    fn thousand_frames_in_one_input() {
        let mut input = Vec::new();
        for i in 0..1000 {
            input.extend_from_slice(format!("{{\"i\":{i}}}").as_bytes());
            if i % 3 == 0 {
                input.push(0);
            } else if i % 3 == 1 {
                input.push(b'\n');
            }
        }
        let mut dec = FrameDecoder::default();
        let frames = feed_all(&mut dec, &input).unwrap();
        assert_eq!(frames.len(), 1000);
        for (i, frame) in frames.iter().enumerate() {
            assert_eq!(frame, format!("{{\"i\":{i}}}").as_bytes());
        }
    }

    #[test]
    fn deep_nesting_is_a_frame() {
        let mut frame = b"{\"a\":".to_vec();
        frame.extend_from_slice(&[b'['; 10_000]);
        frame.extend_from_slice(&[b']'; 10_000]);
        frame.push(b'}');
        let mut dec = FrameDecoder::default();
        assert_eq!(feed_all(&mut dec, &frame).unwrap(), vec![frame]);
    }

    #[test]
    fn invalid_utf8_inside_strings_is_opaque() {
        let frame = b"{\"a\":\"\xff\xfe}\xc3\"}";
        let mut dec = FrameDecoder::default();
        assert_eq!(feed_all(&mut dec, frame).unwrap(), vec![frame.to_vec()]);
    }

    #[test]
    fn terminator_follows_the_byte_after_the_frame() {
        let mut dec = FrameDecoder::default();
        assert_eq!(dec.terminator(), b'\n');
        feed_all(&mut dec, b"{}\0").unwrap();
        assert_eq!(dec.terminator(), b'\0');
        feed_all(&mut dec, b"{}\n").unwrap();
        assert_eq!(dec.terminator(), b'\n');
        feed_all(&mut dec, b"{} \0").unwrap();
        assert_eq!(dec.terminator(), b'\n', "only the first byte after the frame counts");
        // Back to back: the `{` of the next frame follows the first one.
        feed_all(&mut dec, b"{}\0{}{}\0").unwrap();
        assert_eq!(dec.terminator(), b'\0');
    }

    #[test]
    fn terminator_decided_by_a_later_call() {
        let mut dec = FrameDecoder::default();
        feed_all(&mut dec, b"{}\0").unwrap();
        assert_eq!(dec.terminator(), b'\0');

        // A frame with nothing after it yet: the old mode sticks...
        assert!(matches!(dec.decode(b"{}"), Ok(Decoded::Frame { .. })));
        assert_eq!(dec.terminator(), b'\0');
        assert_eq!(dec.decode(b""), Ok(Decoded::Partial { consumed: 0 }));
        assert_eq!(dec.terminator(), b'\0');
        // ...until the next byte arrives.
        assert_eq!(dec.decode(b"\n"), Ok(Decoded::Partial { consumed: 1 }));
        assert_eq!(dec.terminator(), b'\n');

        // And a NUL arriving later switches to NUL mode.
        assert!(matches!(dec.decode(b"{}"), Ok(Decoded::Frame { .. })));
        assert_eq!(dec.terminator(), b'\n');
        assert_eq!(dec.decode(b"\0"), Ok(Decoded::Partial { consumed: 1 }));
        assert_eq!(dec.terminator(), b'\0');

        // Once decided, later separators do not change it.
        assert_eq!(dec.decode(b"\n\n"), Ok(Decoded::Partial { consumed: 2 }));
        assert_eq!(dec.terminator(), b'\0');
    }

    #[test]
    fn non_objects_are_rejected() {
        for input in [&b"[1]"[..], b"1", b"\"x\"", b"null", b"true", b"x", b"\0\n}", b"{}]"] {
            let mut dec = FrameDecoder::default();
            assert_eq!(feed_all(&mut dec, input), Err(FrameError::NotAnObject), "{input:?}");
        }
    }

    /// An object of exactly `len` bytes.
    fn object_of(len: usize) -> Vec<u8> {
        let mut frame = b"{\"a\":\"".to_vec();
        frame.resize(len - 2, b'y');
        frame.extend_from_slice(b"\"}");
        frame
    }

    #[test]
    fn exact_limit_is_fine() {
        let mut dec = FrameDecoder::new(100);
        let frame = object_of(100);
        assert_eq!(feed_all(&mut dec, &frame).unwrap(), vec![frame]);
    }

    #[test]
    fn complete_object_over_limit_is_too_large() {
        let mut dec = FrameDecoder::new(100);
        assert_eq!(feed_all(&mut dec, &object_of(101)), Err(FrameError::TooLarge { limit: 100 }));
    }

    #[test]
    fn endless_partial_object_is_rejected_early() {
        let mut dec = FrameDecoder::new(100);
        let mut input = b"{\"a\":\"".to_vec();
        input.resize(100, b'z');
        // Exactly the limit, still open: fine.
        assert_eq!(feed(&mut dec, input.chunks(7)).map(|(f, left)| (f.len(), left)), Ok((0, 100)));
        // One more byte, without waiting for the end of the object.
        let mut dec = FrameDecoder::new(100);
        input.push(b'z');
        assert_eq!(feed(&mut dec, input.chunks(7)), Err(FrameError::TooLarge { limit: 100 }));
    }

    #[test]
    fn nul_flood_is_consumed() {
        let flood = vec![0u8; 1 << 20];
        let mut dec = FrameDecoder::new(16);
        assert_eq!(dec.decode(&flood), Ok(Decoded::Partial { consumed: flood.len() }));
    }

    #[test]
    fn separators_do_not_count_toward_the_limit() {
        let mut input = vec![b' '; 1000];
        input.extend_from_slice(&object_of(16));
        input.extend(vec![0u8; 1000]);
        input.extend_from_slice(&object_of(16));
        let mut dec = FrameDecoder::new(16);
        assert_eq!(feed_all(&mut dec, &input).unwrap().len(), 2);
    }

    #[test]
    fn errors_display() {
        assert_eq!(FrameError::TooLarge { limit: 65536 }.to_string(), "frame larger than 65536 bytes");
        assert_eq!(FrameError::NotAnObject.to_string(), "expected a JSON object");
    }

    #[test]
    fn decoder_is_send() {
        fn assert_send<T: Send>() {}
        assert_send::<FrameDecoder>();
    }

    /// Frames that trip naive scanners.
    const TRICKY: &[&str] = &[
        r#"{}"#,
        r#"{"a":"}"}"#,
        r#"{"a":"{"}"#,
        r#"{"a":"\""}"#,
        r#"{"a":"\\"}"#,
        r#"{"a":"\\\\"}"#,
        r#"{"a":"\\\"}{"}"#,
        r#"{"a":"😀🎉 ünïcödé }"}"#,
        r#"{"a":[1,[2,[3,{"b":"]"}]],{}],"c":{"d":{"e":null}}}"#,
        r#"{"msgid":1,"id":13,"password":"p{a}s\"s"}"#,
        r#"{ "a" : [ ] , "b" : { } }"#,
    ];

    const SEPARATORS: &[&[u8]] = &[b"", b"\0", b"\n", b"\r\n", b" \t\0", b"\0\n"];

    proptest! {
        #[test]
        fn random_splits_yield_the_original_frames(
            picks in prop::collection::vec((0..TRICKY.len(), 0..SEPARATORS.len()), 1..40),
            mut splits in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
        ) {
            let mut stream = Vec::new();
            let mut expected = Vec::new();
            // The terminator after feeding everything: set by the last frame
            // with any byte after it.
            let mut expected_term = b'\n';
            for (n, &(f, s)) in picks.iter().enumerate() {
                let frame = TRICKY[f].as_bytes();
                let sep = SEPARATORS[s];
                stream.extend_from_slice(frame);
                stream.extend_from_slice(sep);
                expected.push(frame.to_vec());
                if let Some(&next) = sep.first() {
                    expected_term = if next == 0 { b'\0' } else { b'\n' };
                } else if n + 1 < picks.len() {
                    expected_term = b'\n'; // the next frame's `{`
                }
            }

            let mut cuts: Vec<usize> = splits.drain(..).map(|i| i.index(stream.len() + 1)).collect();
            cuts.push(0);
            cuts.push(stream.len());
            cuts.sort_unstable();
            let chunks = cuts.windows(2).map(|w| &stream[w[0]..w[1]]);

            let mut dec = FrameDecoder::new(256);
            let (frames, left) = feed(&mut dec, chunks).unwrap();
            prop_assert_eq!(&frames, &expected);
            prop_assert_eq!(left, 0);
            prop_assert_eq!(dec.terminator(), expected_term);
            for frame in &frames {
                let value: serde_json::Value = serde_json::from_slice(frame).unwrap();
                prop_assert!(value.is_object());
            }
        }
    }
}
