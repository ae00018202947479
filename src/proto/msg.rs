//! Message ids, errno values, and the typed reading of request fields.
//!
//! Everything a request may get wrong maps to errno 400 here, before any handler runs
//! its logic: a missing or mistyped field, a string outside its length range (counted
//! in Unicode scalar values), a non-integer id (`16.0` is not an integer).

use serde_json::{Map, Value};

use super::fields::{Fields, TopLevel};

pub const LOGIN: i64 = 1;
pub const LOGIN_ACK: i64 = 2;
pub const LOGINOUT: i64 = 3;
pub const REG: i64 = 4;
pub const REG_ACK: i64 = 5;
pub const ONE_CHAT: i64 = 6;
pub const ADD_FRIEND: i64 = 7;
pub const CREATE_GROUP: i64 = 8;
pub const ADD_GROUP: i64 = 9;
pub const GROUP_CHAT: i64 = 10;
pub const ERROR: i64 = 11;
pub const DEL_FRIEND: i64 = 12;
pub const DEL_GROUP: i64 = 13;
pub const SHOW_FRIEND_LIST: i64 = 14;
pub const ACK: i64 = 15;
pub const PING: i64 = 16;
pub const PONG: i64 = 17;

/// errno values of replies.
pub mod errno {
    pub const OK: i64 = 0;
    pub const BAD_LOGIN: i64 = 1;
    pub const ONLINE_ELSEWHERE: i64 = 2;
    pub const MALFORMED: i64 = 400;
    pub const NOT_LOGGED_IN: i64 = 401;
    pub const FORBIDDEN: i64 = 403;
    pub const NOT_FOUND: i64 = 404;
    pub const CONFLICT: i64 = 409;
    pub const TOO_LARGE: i64 = 413;
    pub const TOO_MANY: i64 = 429;
    /// The server failed while handling the request (a bug); nothing is promised of
    /// what it did.
    pub const INTERNAL: i64 = 500;
    pub const UNAVAILABLE: i64 = 503;
}

/// The reply type a request gets: LOGIN_ACK, REG_ACK, PONG or ACK.
pub fn reply_type(msgid: i64) -> i64 {
    match msgid {
        LOGIN => LOGIN_ACK,
        REG => REG_ACK,
        PING => PONG,
        _ => ACK,
    }
}

/// Whether `msgid` names a request a client may send.
pub fn is_request(msgid: i64) -> bool {
    matches!(
        msgid,
        LOGIN
            | LOGINOUT
            | REG
            | ONE_CHAT
            | ADD_FRIEND
            | CREATE_GROUP
            | ADD_GROUP
            | GROUP_CHAT
            | DEL_FRIEND
            | DEL_GROUP
            | SHOW_FRIEND_LIST
            | PING
    )
}

/// A request's failure: an errno and the human text that goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fail {
    pub errno: i64,
    pub errmsg: String,
}

impl Fail {
    pub fn new(errno: i64, errmsg: impl Into<String>) -> Fail {
        Fail { errno, errmsg: errmsg.into() }
    }
}

/// A parsed request object.
#[derive(Debug, Clone)]
pub struct Request {
    pub msgid: i64,
    pub reqid: Option<Value>,
    pub body: Fields,
    /// A string held an invalid escape (a lone surrogate): the request is malformed.
    pub lossy: bool,
}

/// Why a frame is not a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Not JSON, or not an object: answered with ERROR, then the connection closes.
    NotJson(String),
    /// An object with no integer msgid, or an unknown one: ERROR 400, connection kept.
    /// Carries the request's reqid, if any, for the reply.
    NoRequest { reqid: Option<Value>, why: String },
}

impl Request {
    /// Parses one frame's bytes.
    ///
    /// Valid JSON that serde_json cannot represent — a lone surrogate escape, a number
    /// beyond f64 (`1e400`) — is repaired (the escape becomes U+FFFD, the number
    /// `null`) and the request marked `lossy`: a mistyped field, not a broken stream.
    pub fn parse(bytes: &[u8]) -> Result<Request, ParseError> {
        let mut repaired: Option<Vec<u8>> = None;
        let mut lossy = false;
        let value = loop {
            let input = repaired.as_deref().unwrap_or(bytes);
            let err = match serde_json::from_slice::<TopLevel>(input) {
                Ok(v) => break v,
                Err(e) => e,
            };
            let text = err.to_string();
            let fixed = if text.starts_with("number out of range") {
                null_out_number(input, err.line(), err.column())
            } else if !lossy
                && (text.contains("surrogate") || text.contains("code point") || text.contains("hex escape"))
            {
                Some(replace_lone_surrogates(input))
            } else {
                None
            };
            match fixed {
                // Each repair removes one problem, so this ends; the bound is a backstop.
                Some(f) if f != input && f.len() <= input.len() + 8 => {
                    repaired = Some(f);
                    lossy = true;
                }
                _ => return Err(ParseError::NotJson(text)),
            }
        };
        let TopLevel::Object(body) = value else {
            return Err(ParseError::NotJson("expected a JSON object".into()));
        };
        let reqid = body.get("reqid").cloned();
        let msgid = match body.get("msgid") {
            None => return Err(ParseError::NoRequest { reqid, why: "missing msgid".into() }),
            Some(v) => match v.as_i64() {
                Some(id) if is_request(id) => id,
                Some(id) => return Err(ParseError::NoRequest { reqid, why: format!("unknown msgid {id}") }),
                None => return Err(ParseError::NoRequest { reqid, why: "msgid must be an integer".into() }),
            },
        };
        Ok(Request { msgid, reqid, body, lossy })
    }

    /// A required integer field.
    pub fn int(&self, field: &str) -> Result<i64, Fail> {
        match self.body.get(field) {
            None => Err(Fail::new(errno::MALFORMED, format!("missing field {field}"))),
            Some(v) => v.as_i64().ok_or_else(|| Fail::new(errno::MALFORMED, format!("{field} must be an integer"))),
        }
    }

    /// An optional integer field: absent is `None`, present must be an integer.
    pub fn opt_int(&self, field: &str) -> Result<Option<i64>, Fail> {
        match self.body.get(field) {
            None => Ok(None),
            Some(_) => self.int(field).map(Some),
        }
    }

    /// A required string field of `min..=max` characters.
    pub fn string(&self, field: &str, min: usize, max: usize) -> Result<&str, Fail> {
        match self.body.get(field) {
            None => Err(Fail::new(errno::MALFORMED, format!("missing field {field}"))),
            Some(Value::String(s)) => {
                let n = s.chars().count();
                if n < min || n > max {
                    Err(Fail::new(errno::MALFORMED, format!("{field} must be {min} to {max} characters")))
                } else {
                    Ok(s)
                }
            }
            Some(_) => Err(Fail::new(errno::MALFORMED, format!("{field} must be a string"))),
        }
    }

    /// An optional string field; `default` when absent.
    pub fn opt_string<'a>(&'a self, field: &str, min: usize, max: usize, default: &'a str) -> Result<&'a str, Fail> {
        if self.body.contains_key(field) {
            self.string(field, min, max)
        } else {
            Ok(default)
        }
    }
}

/// Builds a reply body: `{"msgid":type, "errno":.., ..fields}` with `req` on ACKs and the
/// request's `reqid` echoed. Serialises to bytes without terminator.
pub fn reply(msgid: i64, request: i64, reqid: Option<&Value>, result: Result<Map<String, Value>, Fail>) -> Vec<u8> {
    if matches!(&result, Ok(fields) if fields.is_empty()) {
        return bare_reply(msgid, request, reqid);
    }
    let mut obj = Map::new();
    obj.insert("msgid".into(), msgid.into());
    if msgid == ACK {
        obj.insert("req".into(), request.into());
    }
    match result {
        Ok(fields) => {
            if msgid != PONG {
                obj.insert("errno".into(), errno::OK.into());
            }
            obj.extend(fields);
        }
        Err(fail) => {
            obj.insert("errno".into(), fail.errno.into());
            obj.insert("errmsg".into(), fail.errmsg.into());
        }
    }
    if let Some(reqid) = reqid {
        obj.insert("reqid".into(), reqid.clone());
    }
    serde_json::to_vec(&Value::Object(obj)).unwrap_or_default()
}

/// A success reply with no result fields (PONG, most ACKs), written directly: the same
/// bytes `reply` makes through a map (keys in the map's order), without building one.
fn bare_reply(msgid: i64, request: i64, reqid: Option<&Value>) -> Vec<u8> {
    let mut out = Vec::with_capacity(48);
    out.push(b'{');
    if msgid != PONG {
        out.extend_from_slice(b"\"errno\":0,");
    }
    out.extend_from_slice(b"\"msgid\":");
    let _ = serde_json::to_writer(&mut out, &msgid);
    if msgid == ACK {
        out.extend_from_slice(b",\"req\":");
        let _ = serde_json::to_writer(&mut out, &request);
    }
    if let Some(reqid) = reqid {
        out.extend_from_slice(b",\"reqid\":");
        let _ = serde_json::to_writer(&mut out, reqid);
    }
    out.push(b'}');
    out
}

/// An ERROR frame (msgid 11).
pub fn error_frame(errno: i64, errmsg: &str, reqid: Option<&Value>) -> Vec<u8> {
    let mut obj = Map::new();
    obj.insert("msgid".into(), ERROR.into());
    obj.insert("errno".into(), errno.into());
    obj.insert("errmsg".into(), errmsg.into());
    if let Some(reqid) = reqid {
        obj.insert("reqid".into(), reqid.clone());
    }
    serde_json::to_vec(&Value::Object(obj)).unwrap_or_default()
}

/// Replaces the number token serde_json stopped at (1-based line and byte column) with
/// `null`; `None` if no number is there.
fn null_out_number(input: &[u8], line: usize, column: usize) -> Option<Vec<u8>> {
    let line_start = if line <= 1 {
        0
    } else {
        input.iter().enumerate().filter(|(_, b)| **b == b'\n').nth(line - 2).map(|(i, _)| i + 1)?
    };
    let at = (line_start + column.max(1) - 1).min(input.len().checked_sub(1)?);
    let is_num = |b: u8| b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E');
    let mut end = at;
    while end < input.len() && is_num(input[end]) {
        end += 1;
    }
    let mut start = at.min(end);
    while start > 0 && is_num(input[start - 1]) {
        start -= 1;
    }
    if start == end {
        return None;
    }
    let mut out = Vec::with_capacity(input.len());
    out.extend_from_slice(&input[..start]);
    out.extend_from_slice(b"null");
    out.extend_from_slice(&input[end..]);
    Some(out)
}

/// Replaces `\uXXXX` escapes of unpaired surrogates inside strings with `\ufffd`.
fn replace_lone_surrogates(bytes: &[u8]) -> Vec<u8> {
    fn hex4(b: &[u8]) -> Option<u16> {
        let s = std::str::from_utf8(b.get(..4)?).ok()?;
        u16::from_str_radix(s, 16).ok()
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut in_string = false;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !in_string {
            in_string = b == b'"';
            out.push(b);
            i += 1;
            continue;
        }
        match b {
            b'"' => {
                in_string = false;
                out.push(b);
                i += 1;
            }
            b'\\' if bytes.get(i + 1) == Some(&b'u') => {
                let unit = hex4(&bytes[(i + 2).min(bytes.len())..]);
                match unit {
                    Some(hi @ 0xD800..=0xDBFF) => {
                        let next_is_low = bytes.get(i + 6) == Some(&b'\\')
                            && bytes.get(i + 7) == Some(&b'u')
                            && matches!(hex4(&bytes[(i + 8).min(bytes.len())..]), Some(0xDC00..=0xDFFF));
                        if next_is_low {
                            out.extend_from_slice(&bytes[i..i + 12]);
                            i += 12;
                        } else {
                            let _ = hi;
                            out.extend_from_slice(b"\\ufffd");
                            i += 6;
                        }
                    }
                    Some(0xDC00..=0xDFFF) => {
                        out.extend_from_slice(b"\\ufffd");
                        i += 6;
                    }
                    _ => {
                        out.extend_from_slice(&bytes[i..(i + 2).min(bytes.len())]);
                        i += 2;
                    }
                }
            }
            b'\\' => {
                out.extend_from_slice(&bytes[i..(i + 2).min(bytes.len())]);
                i += 2;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_replies_are_the_bytes_a_map_makes() {
        let reqids = [None, Some(Value::from("a\"b")), Some(serde_json::json!({"z": [1, 2.5], "a": null}))];
        for (msgid, request) in [(PONG, PING), (ACK, ONE_CHAT), (ACK, LOGINOUT), (REG_ACK, REG)] {
            for reqid in &reqids {
                let mut obj = Map::new();
                obj.insert("msgid".into(), msgid.into());
                if msgid == ACK {
                    obj.insert("req".into(), request.into());
                }
                if msgid != PONG {
                    obj.insert("errno".into(), 0.into());
                }
                if let Some(r) = reqid {
                    obj.insert("reqid".into(), r.clone());
                }
                let expected = serde_json::to_vec(&Value::Object(obj)).unwrap();
                assert_eq!(bare_reply(msgid, request, reqid.as_ref()), expected);
            }
        }
    }

    #[test]
    fn msgid_must_be_a_known_integer() {
        assert!(matches!(Request::parse(br#"{"msgid":16.0}"#), Err(ParseError::NoRequest { .. })));
        assert!(matches!(
            Request::parse(br#"{"msgid":99,"reqid":"a"}"#),
            Err(ParseError::NoRequest { reqid: Some(_), .. })
        ));
        assert!(matches!(Request::parse(br#"{"id":1}"#), Err(ParseError::NoRequest { .. })));
        assert!(matches!(Request::parse(br#"[1]"#), Err(ParseError::NotJson(_))));
        assert!(matches!(Request::parse(br#"{"msgid":"#), Err(ParseError::NotJson(_))));
        assert_eq!(Request::parse(br#"{"msgid":16}"#).map(|r| r.msgid), Ok(16).map_err(|_: ()| unreachable!()));
    }

    #[test]
    fn lone_surrogates_make_a_lossy_request_not_a_closed_connection() {
        let r = Request::parse(br#"{"msgid":6,"toid":2,"msg":"a\ud800b"}"#).map_err(|e| format!("{e:?}"));
        assert!(r.as_ref().map(|r| r.lossy).unwrap_or(false), "{r:?}");
        let r = Request::parse(br#"{"msgid":6,"toid":2,"msg":"\udc00"}"#).map_err(|e| format!("{e:?}"));
        assert!(r.as_ref().map(|r| r.lossy).unwrap_or(false), "{r:?}");
        // A proper pair and an escaped backslash are fine.
        let r = Request::parse(br#"{"msgid":6,"msg":"\ud83d\ude00 \\ud800"}"#).map_err(|e| format!("{e:?}"));
        let r = r.as_ref().map(|r| (r.lossy, r.string("msg", 1, 10).map(str::to_owned)));
        assert_eq!(r.ok(), Some((false, Ok("😀 \\ud800".to_owned()))));
    }

    #[test]
    fn numbers_beyond_f64_are_mistyped_fields() {
        for text in [r#"{"msgid":6,"toid":1e400,"msg":"x"}"#, "{\n\"msgid\": 6,\n \"toid\": -1e400, \"id\": 1E999}"] {
            let r = Request::parse(text.as_bytes()).map(|r| (r.msgid, r.lossy, r.int("toid").is_err()));
            assert_eq!(r, Ok((6, true, true)), "{text}");
        }
        assert!(matches!(Request::parse(br#"{"msgid":1e400}"#), Err(ParseError::NoRequest { .. })));
        assert!(matches!(Request::parse(br#"{"msgid":16,"x":1e400"#), Err(ParseError::NotJson(_))));
    }

    #[test]
    fn lengths_count_characters() {
        let r = match Request::parse("{\"msgid\":4,\"name\":\"😀😀\"}".as_bytes()) {
            Ok(r) => r,
            Err(e) => panic!("{e:?}"),
        };
        assert!(r.string("name", 1, 2).is_ok());
        assert_eq!(r.string("name", 1, 1).map_err(|f| f.errno), Err(400));
        assert_eq!(r.int("name").map_err(|f| f.errno), Err(400));
    }
}
