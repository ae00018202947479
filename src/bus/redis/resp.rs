//! The RESP codec of the subscribing connection: commands encoded as arrays of bulk
//! strings, and frames parsed incrementally from a buffer. No I/O; used by the
//! `redis-sub` thread (and by `SubConn::open` on the thread calling
//! `RedisBus::connect`, for AUTH).

use std::io;

/// Largest bulk string or array the subscriber accepts (Redis's own default limit).
const MAX_BULK: usize = 512 * 1024 * 1024;

/// Appends a command as a RESP array of bulk strings.
pub(super) fn encode<A: AsRef<[u8]>>(out: &mut Vec<u8>, args: &[A]) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for a in args {
        let a = a.as_ref();
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// A RESP value, as far as a subscribing connection sees them.
#[derive(Debug)]
pub(super) enum Frame {
    Simple(Vec<u8>),
    Error(Vec<u8>),
    Int(#[allow(dead_code)] i64),
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Frame>>),
}

impl Frame {
    pub(super) fn bytes(&self) -> Option<&[u8]> {
        match self {
            Frame::Bulk(Some(b)) | Frame::Simple(b) => Some(b),
            _ => None,
        }
    }
}

fn protocol_error(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("redis protocol error: {what}"))
}

/// Parses one frame at `pos`: `Ok(None)` when the buffer does not hold all of it yet.
/// RESP2, plus RESP3's push (`>`) and null (`_`) in case a server sends them.
pub(super) fn parse(buf: &[u8], pos: usize, depth: usize) -> io::Result<Option<(Frame, usize)>> {
    if depth > 8 {
        return Err(protocol_error("nesting too deep"));
    }
    let Some(&tag) = buf.get(pos) else { return Ok(None) };
    let Some(len) = buf[pos + 1..].windows(2).position(|w| w == b"\r\n") else {
        if buf.len() - pos > 64 * 1024 {
            return Err(protocol_error("header line too long"));
        }
        return Ok(None);
    };
    let line = &buf[pos + 1..pos + 1 + len];
    let next = pos + 1 + len + 2;
    let int = || -> io::Result<i64> {
        std::str::from_utf8(line).ok().and_then(|s| s.parse().ok()).ok_or_else(|| protocol_error("bad integer"))
    };
    let frame = match tag {
        b'+' => Frame::Simple(line.to_vec()),
        b'-' => Frame::Error(line.to_vec()),
        b':' => Frame::Int(int()?),
        b'_' => Frame::Bulk(None),
        b'$' => {
            let n = int()?;
            if n < 0 {
                return Ok(Some((Frame::Bulk(None), next)));
            }
            let n = usize::try_from(n).map_err(|_| protocol_error("bad length"))?;
            if n > MAX_BULK {
                return Err(protocol_error("bulk string too long"));
            }
            if buf.len() < next + n + 2 {
                return Ok(None);
            }
            if &buf[next + n..next + n + 2] != b"\r\n" {
                return Err(protocol_error("bulk string not terminated"));
            }
            return Ok(Some((Frame::Bulk(Some(buf[next..next + n].to_vec())), next + n + 2)));
        }
        b'*' | b'>' => {
            let n = int()?;
            if n < 0 {
                return Ok(Some((Frame::Array(None), next)));
            }
            let n = usize::try_from(n).map_err(|_| protocol_error("bad length"))?;
            if n > MAX_BULK {
                return Err(protocol_error("array too long"));
            }
            let mut items = Vec::with_capacity(n.min(16));
            let mut at = next;
            for _ in 0..n {
                let Some((item, after)) = parse(buf, at, depth + 1)? else { return Ok(None) };
                items.push(item);
                at = after;
            }
            return Ok(Some((Frame::Array(Some(items)), at)));
        }
        _ => return Err(protocol_error("unknown frame type")),
    };
    Ok(Some((frame, next)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parser_handles_partial_frames() {
        let frame = b"*3\r\n$7\r\nmessage\r\n$2\r\n42\r\n$7\r\nmailbox\r\n";
        for cut in 0..frame.len() {
            assert!(parse(&frame[..cut], 0, 0).expect("partial is not an error").is_none(), "cut {cut}");
        }
        let (f, next) = parse(frame, 0, 0).expect("parse").expect("whole");
        assert_eq!(next, frame.len());
        let Frame::Array(Some(items)) = f else { panic!("array") };
        assert_eq!(items[2].bytes(), Some(&b"mailbox"[..]));
        assert!(parse(b"?x\r\n", 0, 0).is_err());
    }

    #[test]
    fn encoded_commands_parse_back() {
        let mut out = Vec::new();
        encode(&mut out, &[&b"SUBSCRIBE"[..], b"42"]);
        encode(&mut out, &[b"PING"]);
        assert_eq!(out, b"*2\r\n$9\r\nSUBSCRIBE\r\n$2\r\n42\r\n*1\r\n$4\r\nPING\r\n");
        let (first, next) = parse(&out, 0, 0).expect("parse").expect("whole");
        let Frame::Array(Some(items)) = first else { panic!("array") };
        let words: Vec<_> = items.iter().map(Frame::bytes).collect();
        assert_eq!(words, [Some(&b"SUBSCRIBE"[..]), Some(&b"42"[..])]);
        let (second, end) = parse(&out, next, 0).expect("parse").expect("whole");
        assert!(matches!(second, Frame::Array(Some(ref items)) if items.len() == 1));
        assert_eq!(end, out.len());
    }

    #[test]
    fn parser_rejects_malformed_frames() {
        assert!(matches!(parse(b"$-1\r\n", 0, 0), Ok(Some((Frame::Bulk(None), 5)))));
        assert!(matches!(parse(b":12\r\n", 0, 0), Ok(Some((Frame::Int(12), 5)))));
        assert!(parse(b":x\r\n", 0, 0).is_err(), "bad integer");
        assert!(parse(b"$3\r\nabcXY", 0, 0).is_err(), "bulk string not terminated");
        assert!(parse(b"$999999999999\r\n", 0, 0).is_err(), "bulk string too long");
        let deep = "*1\r\n".repeat(10) + ":1\r\n";
        assert!(parse(deep.as_bytes(), 0, 0).is_err(), "nesting too deep");
    }
}
