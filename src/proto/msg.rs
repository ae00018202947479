//! Message ids, errno values, and the typed reading of request fields.
//!
//! Everything a request may get wrong maps to errno 400 here, before any handler runs
//! its logic: a missing or mistyped field, a string outside its length range (counted
//! in Unicode scalar values), a non-integer id (`16.0` is not an integer).

use serde_json::{Map, Value};

use super::fields::{Fields, Keep, TopLevel};

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
pub const RECEIVED: i64 = 18;
pub const HISTORY: i64 = 19;

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
            | RECEIVED
            | HISTORY
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
    /// The cost is linear in the frame's length whatever it holds: at most two parses
    /// and one repairing pass.
    pub fn parse(bytes: &[u8]) -> Result<Request, ParseError> {
        Request::parse_keeping(bytes, Keep::All)
    }

    /// Reads only `msgid` and `reqid`, checking the rest as JSON but building none of
    /// it: enough to answer a request that will not be carried out (over the rate
    /// limit). The other fields are absent from `body`.
    pub fn parse_head(bytes: &[u8]) -> Result<Request, ParseError> {
        Request::parse_keeping(bytes, Keep::Only(&["msgid", "reqid"]))
    }

    fn parse_keeping(bytes: &[u8], keep: Keep) -> Result<Request, ParseError> {
        let not_json = |e: serde_json::Error| ParseError::NotJson(e.to_string());
        let (value, lossy) = match TopLevel::parse(bytes, keep) {
            Ok(value) => (value, false),
            Err(e) if repairable(&e) => (TopLevel::parse(&repair(bytes), keep).map_err(not_json)?, true),
            Err(e) => return Err(not_json(e)),
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

/// Whether serde_json refused valid JSON it cannot represent: a number beyond f64 or
/// an unpaired surrogate escape, which [`repair`] replaces.
fn repairable(e: &serde_json::Error) -> bool {
    let text = e.to_string();
    text.starts_with("number out of range")
        || text.contains("surrogate")
        || text.contains("code point")
        || text.contains("hex escape")
}

/// The text with every number beyond f64 replaced by `null` and every unpaired
/// surrogate escape by `\ufffd`, in one pass; everything else is copied as it is.
/// Outside strings, a run of number bytes is one token, as in valid JSON.
fn repair(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => i = copy_string(bytes, i, &mut out),
            b'-' | b'0'..=b'9' => {
                let len = bytes[i..].iter().position(|&b| !is_number_byte(b)).unwrap_or(bytes.len() - i);
                let token = &bytes[i..i + len];
                out.extend_from_slice(if beyond_f64(token) { b"null" } else { token });
                i += len;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

fn is_number_byte(b: u8) -> bool {
    b.is_ascii_digit() || matches!(b, b'-' | b'+' | b'.' | b'e' | b'E')
}

/// Whether serde_json refuses the number `token` as out of range. A JSON number whose
/// first significant digit is clearly inside f64's range (below 10^307) or outside it
/// (10^310 and up) is decided here; anything else is asked of serde_json itself.
fn beyond_f64(token: &[u8]) -> bool {
    match magnitude(token) {
        Some(None) => false,
        Some(Some(e)) if e < 307 => false,
        Some(Some(e)) if e >= 310 => true,
        _ => serde_json::from_slice::<Value>(token).is_err_and(|e| e.to_string().starts_with("number out of range")),
    }
}

/// For a valid JSON number, the power of ten of its first significant digit, `None`
/// for zero; `None` outright for what is not a JSON number.
fn magnitude(token: &[u8]) -> Option<Option<i64>> {
    fn digits(b: &[u8]) -> usize {
        b.iter().take_while(|d| d.is_ascii_digit()).count()
    }
    let t = token.strip_prefix(b"-").unwrap_or(token);
    let (int, rest) = t.split_at(digits(t));
    if int.is_empty() || (int.len() > 1 && int[0] == b'0') {
        return None;
    }
    let (frac, rest) = match rest.strip_prefix(b".") {
        Some(r) if digits(r) > 0 => r.split_at(digits(r)),
        Some(_) => return None,
        None => (&rest[..0], rest),
    };
    let exp = match rest {
        [] => 0,
        [b'e' | b'E', e @ ..] => {
            let (negative, e) = match e {
                [b'-', e @ ..] => (true, e),
                [b'+', e @ ..] => (false, e),
                e => (false, e),
            };
            if e.is_empty() || digits(e) != e.len() {
                return None;
            }
            // Past 10^12 the answer is the same: saturate.
            let n = e.iter().fold(0i64, |n, d| (n * 10 + i64::from(d - b'0')).min(1 << 40));
            if negative {
                -n
            } else {
                n
            }
        }
        _ => return None,
    };
    let len = |b: &[u8]| i64::try_from(b.len()).unwrap_or(i64::MAX >> 2);
    let first = match int.iter().position(|&d| d != b'0') {
        Some(i) => len(&int[i..]) - 1,
        None => match frac.iter().position(|&d| d != b'0') {
            Some(i) => -len(&frac[..i]) - 1,
            None => return Some(None),
        },
    };
    Some(Some(first + exp))
}

/// Copies the string literal opening at `bytes[start]` to `out`, its unpaired
/// surrogate escapes replaced by `\ufffd`; returns where it ends (past its closing
/// quote, or the end of the input).
fn copy_string(bytes: &[u8], start: usize, out: &mut Vec<u8>) -> usize {
    out.push(b'"');
    let mut i = start + 1;
    loop {
        let plain = bytes[i..].iter().position(|&b| b == b'"' || b == b'\\').unwrap_or(bytes.len() - i);
        out.extend_from_slice(&bytes[i..i + plain]);
        i += plain;
        match bytes.get(i) {
            None => return i,
            Some(b'"') => {
                out.push(b'"');
                return i + 1;
            }
            Some(_) => {
                // A backslash: a surrogate escape, a pair of them, or another escape.
                let escape = match hex_escape(bytes, i) {
                    Some(0xD800..=0xDBFF) if matches!(hex_escape(bytes, i + 6), Some(0xDC00..=0xDFFF)) => 12,
                    Some(0xD800..=0xDFFF) => {
                        out.extend_from_slice(b"\\ufffd");
                        i += 6;
                        continue;
                    }
                    _ => 2,
                };
                let end = (i + escape).min(bytes.len());
                out.extend_from_slice(&bytes[i..end]);
                i = end;
            }
        }
    }
}

/// The code unit of the `\uXXXX` escape at `bytes[at]`, if one is there.
fn hex_escape(bytes: &[u8], at: usize) -> Option<u16> {
    let digits = bytes.get(at..at + 6).filter(|e| e.starts_with(b"\\u"))?.get(2..)?;
    digits.iter().try_fold(0u16, |n, &d| Some(n * 16 + (d as char).to_digit(16)? as u16))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

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
    #[test]
    fn every_bad_number_and_surrogate_is_repaired_in_one_go() {
        let mut text = String::from(r#"{"msgid":6,"toid":2,"msg":"a\ud800b\udc00c\ud83d\ude00","#);
        for k in 0..2000 {
            text.push_str(&format!(r#""n{k}":[1e400,-1E999,1e300,"\ud800"],"#));
        }
        text.push_str(r#""z":99999999999999999999}"#);
        let r = Request::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{e:?}"));
        assert!(r.lossy);
        assert_eq!(r.string("msg", 1, 10), Ok("a\u{fffd}b\u{fffd}c😀"));
        assert_eq!(r.body.get("n1999"), Some(&serde_json::json!([null, null, 1e300, "\u{fffd}"])));
        assert_eq!(r.body.get("z"), Some(&Value::from(1e20)));
    }

    #[test]
    fn invalid_json_after_a_repair_fails_with_serde_jsons_text_for_the_repaired_frame() {
        let cases = [
            (r#"{"msgid":16,"a":1e400,"b":}"#, r#"{"msgid":16,"a":null,"b":}"#),
            ("{\"a\":\"\\ud800\",\n\"b\":-1e400 \"c\":1}", "{\"a\":\"\\ufffd\",\n\"b\":null \"c\":1}"),
            (r#"{"a":"\ud800","b":"\x"}"#, r#"{"a":"\ufffd","b":"\x"}"#),
            (r#"{"a":1e400e5,"b":1e5e5}"#, r#"{"a":null,"b":1e5e5}"#),
            (r#"{"a":"\ud800\u12"}"#, r#"{"a":"\ufffd\u12"}"#),
        ];
        for (text, repaired) in cases {
            let theirs = serde_json::from_str::<Value>(repaired).err().map(|e| e.to_string());
            let ours = match Request::parse(text.as_bytes()) {
                Err(ParseError::NotJson(why)) => Some(why),
                other => panic!("{text}: {other:?}"),
            };
            assert_eq!(ours, theirs, "{text}");
        }
    }

    #[test]
    fn the_head_is_msgid_and_reqid_whatever_else_the_frame_holds() {
        let text = r#"{"msgid":6,"toid":1e400,"msg":"\ud800","reqid":[1,"a"],"x":{"y":"z"}}"#;
        let r = Request::parse_head(text.as_bytes()).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((r.msgid, r.reqid, r.lossy), (6, Some(serde_json::json!([1, "a"])), false));
        assert!(!r.body.contains_key("toid") && !r.body.contains_key("msg"));
        // A reqid that needs a repair is repaired, as in a full parse.
        let r = Request::parse_head(br#"{"msgid":16,"reqid":1e400}"#).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!((r.msgid, r.reqid, r.lossy), (16, Some(Value::Null), true));
        assert!(matches!(
            Request::parse_head(br#"{"msgid":99,"reqid":7,"x":1e400}"#),
            Err(ParseError::NoRequest { reqid: Some(_), .. })
        ));
        assert!(matches!(Request::parse_head(br#"{"msgid":16,"x":[1,]}"#), Err(ParseError::NotJson(_))));
        assert!(matches!(Request::parse_head(br#"[16]"#), Err(ParseError::NotJson(_))));
    }

    /// Number tokens near and far from f64's limits, valid or not.
    fn any_number() -> impl Strategy<Value = String> {
        let digits =
            |n| proptest::collection::vec(0u8..10, n).prop_map(|d| d.iter().map(|d| (b'0' + d) as char).collect());
        (
            prop_oneof![Just(""), Just("-")],
            prop_oneof![Just("0".to_owned()), "[1-9][0-9]{0,3}", digits(0..400)],
            prop_oneof![Just(String::new()), digits(0..30).prop_map(|d: String| format!(".{d}"))],
            prop_oneof![
                Just(String::new()),
                (prop_oneof![Just("e"), Just("E")], prop_oneof![Just(""), Just("+"), Just("-")], 290i64..320)
                    .prop_map(|(e, s, n)| format!("{e}{s}{n}")),
                (-1000i64..1000).prop_map(|n| format!("e{n}")),
                Just("e99999999999999999999999".to_owned()),
                Just("e".to_owned()),
                Just("e5e5".to_owned()),
            ],
        )
            .prop_map(|(sign, int, frac, exp)| format!("{sign}{int}{frac}{exp}"))
    }

    proptest! {
        #[test]
        fn numbers_beyond_f64_are_what_serde_json_says(token in any_number()) {
            let serde = serde_json::from_str::<Value>(&token).err().map(|e| e.to_string());
            let theirs = serde.is_some_and(|e| e.starts_with("number out of range"));
            prop_assert_eq!(beyond_f64(token.as_bytes()), theirs, "{}", token);
        }
    }

    #[test]
    fn numbers_at_f64s_limits_are_what_serde_json_says() {
        for token in [
            "1.7976931348623157e308",
            "1.7976931348623158e308",
            "1.7976931348623159e308",
            "-17976931348623159e292",
            "179769313486231570000000000000000000000e270",
            "0.0000000017976931348623159e317",
            "9e307",
            "1e309",
            "10e308",
            "0e999999",
            "-0.0e400",
            "1e-99999999999999999999",
            "1e400e5",
        ] {
            let serde = serde_json::from_str::<Value>(token).err().map(|e| e.to_string());
            let theirs = serde.is_some_and(|e| e.starts_with("number out of range"));
            assert_eq!(beyond_f64(token.as_bytes()), theirs, "{token}");
        }
    }

    /// A field value of each kind, as JSON text, and what a repaired parse reads.
    fn any_token() -> impl Strategy<Value = (String, Value)> {
        prop_oneof![
            Just(("1e400".to_owned(), Value::Null)),
            Just(("-12.5E+999".to_owned(), Value::Null)),
            Just(("1e-999".to_owned(), Value::from(0.0))),
            Just((format!("1{}", "0".repeat(400)), Value::Null)),
            Just((format!("1{}", "0".repeat(300)), Value::from(1e300))),
            any::<i64>().prop_map(|n| (n.to_string(), Value::from(n))),
            Just((r#""\ud800""#.to_owned(), Value::from("\u{fffd}"))),
            Just((r#""\udfff\ud83d\ude00\ud83d""#.to_owned(), Value::from("\u{fffd}😀\u{fffd}"))),
            Just((r#""\\ud800 \"1e400\"""#.to_owned(), Value::from("\\ud800 \"1e400\""))),
            "[a-z ]{0,8}".prop_map(|t| (format!("{t:?}"), Value::from(t))),
        ]
        .prop_flat_map(|leaf| {
            let (text, value) = leaf.clone();
            prop_oneof![
                Just(leaf),
                Just((format!("[{text},{text}]"), Value::Array(vec![value.clone(), value.clone()]))),
                Just((format!(r#"{{"k":{text}}}"#), serde_json::json!({ "k": value }))),
            ]
        })
    }

    proptest! {
        #[test]
        fn a_repaired_frame_reads_as_if_sent_repaired(
            fields in proptest::collection::vec(("[a-d]", any_token()), 0..40)
        ) {
            let mut text = String::from(r#"{"msgid":16"#);
            let mut expected: Vec<(String, Value)> = Vec::new();
            for (key, (token, value)) in &fields {
                text.push_str(&format!(r#","{key}":{token}"#));
                match expected.iter_mut().find(|(k, _)| k == key) {
                    Some(slot) => slot.1 = value.clone(),
                    None => expected.push((key.clone(), value.clone())),
                }
            }
            text.push('}');
            let r = Request::parse(text.as_bytes());
            prop_assert!(r.is_ok(), "{text}: {:?}", r.err());
            let r = r.unwrap_or_else(|_| unreachable!());
            let needs_repair = serde_json::from_str::<Value>(&text).is_err();
            prop_assert_eq!(r.lossy, needs_repair);
            for (key, value) in &expected {
                prop_assert_eq!(r.body.get(key), Some(value), "{}", text);
            }
        }
    }
}
