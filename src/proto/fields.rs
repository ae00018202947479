//! `Fields`: a request object's top-level fields, parsed without building a map.
//!
//! A request has a handful of fields and is read a few times by name, so a vector
//! searched in order beats serde_json's `Map` (a B-tree whose first node alone is a
//! ~600-byte allocation per request). Parsing is serde_json's own, value by value, so
//! what is and is not valid JSON, and every error text, stay serde_json's. As in its
//! map, a repeated key keeps the last value; past [`SCAN_MAX`] fields repeats are found
//! through a hash index, so any number of keys costs linear time.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// Up to this many fields, a repeated key is found by scanning them.
const SCAN_MAX: usize = 16;

#[derive(Debug, Clone, Default)]
pub struct Fields(Vec<(Box<str>, Value)>);

impl Fields {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.0.iter().find(|(k, _)| &**k == key).map(|(_, v)| v)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }
}

/// Which fields of an object a parse keeps.
#[derive(Debug, Clone, Copy)]
pub enum Keep {
    All,
    /// These only: the values of the others are checked as JSON and skipped, never
    /// built (serde's `IgnoredAny`), so a number or an escape in them cannot fail.
    Only(&'static [&'static str]),
}

impl Keep {
    fn keeps(self, key: &str) -> bool {
        match self {
            Keep::All => true,
            Keep::Only(keys) => keys.contains(&key),
        }
    }
}

/// A whole JSON text: an object's fields, or anything else.
pub enum TopLevel {
    Object(Fields),
    NotAnObject,
}

impl TopLevel {
    /// Parses one JSON text, keeping the object fields `keep` names.
    pub fn parse(bytes: &[u8], keep: Keep) -> serde_json::Result<TopLevel> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let value = keep.deserialize(&mut de)?;
        de.end()?;
        Ok(value)
    }
}

impl<'de> DeserializeSeed<'de> for Keep {
    type Value = TopLevel;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<TopLevel, D::Error> {
        d.deserialize_any(TopLevelVisitor(self))
    }
}

/// Reads a key: `Some` (a copy) when `Keep` keeps it, `None` (no copy made) when not.
struct KeyFilter(Keep);

impl<'de> DeserializeSeed<'de> for KeyFilter {
    type Value = Option<String>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeyFilter {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<String>, E> {
        Ok(self.0.keeps(key).then(|| key.to_owned()))
    }
}

struct TopLevelVisitor(Keep);

impl<'de> Visitor<'de> for TopLevelVisitor {
    type Value = TopLevel;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
        let mut fields: Vec<(Box<str>, Value)> = Vec::with_capacity(map.size_hint().unwrap_or(4).min(16));
        // Where each key is, once there are more than `SCAN_MAX`.
        let mut index: Option<HashMap<Box<str>, usize>> = None;
        while let Some(key) = map.next_key_seed(KeyFilter(self.0))? {
            let Some(key) = key else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let value: Value = map.next_value()?;
            let at = match &index {
                Some(index) => index.get(key.as_str()).copied(),
                None => fields.iter().position(|(k, _)| **k == *key),
            };
            if let Some(at) = at {
                fields[at].1 = value;
                continue;
            }
            let key = key.into_boxed_str();
            if let Some(index) = &mut index {
                index.insert(key.clone(), fields.len());
            }
            fields.push((key, value));
            if index.is_none() && fields.len() > SCAN_MAX {
                index = Some(fields.iter().enumerate().map(|(i, (k, _))| (k.clone(), i)).collect());
            }
        }
        Ok(TopLevel::Object(Fields(fields)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TopLevel, A::Error> {
        // Read as serde_json would, so the same texts fail the same way.
        match self.0 {
            Keep::All => while seq.next_element::<Value>()?.is_some() {},
            Keep::Only(_) => while seq.next_element::<IgnoredAny>()?.is_some() {},
        }
        Ok(TopLevel::NotAnObject)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<TopLevel, E> {
        Ok(TopLevel::NotAnObject)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<TopLevel, E> {
        Ok(TopLevel::NotAnObject)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<TopLevel, E> {
        Ok(TopLevel::NotAnObject)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<TopLevel, E> {
        Ok(TopLevel::NotAnObject)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<TopLevel, E> {
        Ok(TopLevel::NotAnObject)
    }

    fn visit_unit<E: de::Error>(self) -> Result<TopLevel, E> {
        Ok(TopLevel::NotAnObject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, keep: Keep) -> serde_json::Result<TopLevel> {
        TopLevel::parse(text.as_bytes(), keep)
    }

    fn fields(text: &str, keep: Keep) -> Fields {
        match parse(text, keep) {
            Ok(TopLevel::Object(f)) => f,
            _ => panic!("not an object: {text}"),
        }
    }

    #[test]
    fn fields_read_like_serde_jsons_map() {
        let f = fields(r#"{"msgid":6,"msg":"a\"b","n":{"x":[1,2.5]},"msgid":7}"#, Keep::All);
        assert_eq!(f.get("msgid"), Some(&Value::from(7)), "the last of a repeated key wins");
        assert_eq!(f.get("msg"), Some(&Value::from("a\"b")));
        assert_eq!(f.get("n"), Some(&serde_json::json!({"x": [1, 2.5]})));
        assert!(!f.contains_key("toid"));
        for text in ["[1,{}]", "\"s\"", "1", "-1", "1.5", "true", "null"] {
            assert!(matches!(parse(text, Keep::All), Ok(TopLevel::NotAnObject)), "{text}");
        }
    }

    #[test]
    fn bad_json_fails_with_serde_jsons_own_errors() {
        for text in [
            r#"{"a":1e400}"#,
            r#"{"a":"\ud800"}"#,
            r#"[1e400]"#,
            r#"{"a":1,}"#,
            r#"{"a":1} x"#,
            "{",
            "{1:2}",
            r#"{"\q":1}"#,
        ] {
            let ours = parse(text, Keep::All).err().map(|e| e.to_string());
            let theirs = serde_json::from_str::<Value>(text).err().map(|e| e.to_string());
            assert_eq!(ours, theirs, "{text}");
        }
    }

    #[test]
    fn many_keys_and_repeats_past_the_scan_read_like_serde_jsons_map() {
        // Distinct keys, then every one again, then one key many times: past SCAN_MAX
        // the index finds the repeats.
        let mut text = String::from("{");
        for round in 0..2 {
            for k in 0..(3 * SCAN_MAX) {
                text.push_str(&format!("\"k{k}\":{},", round * 1000 + k));
            }
        }
        for n in 0..100 {
            text.push_str(&format!("\"k5\":{n},"));
        }
        text.push_str("\"last\":true}");
        let f = fields(&text, Keep::All);
        let theirs: serde_json::Map<String, Value> = serde_json::from_str(&text).expect("json");
        assert_eq!(f.0.len(), theirs.len());
        for (k, v) in &theirs {
            assert_eq!(f.get(k), Some(v), "{k}");
        }
        // A repeated key stays where it first was.
        let keys: Vec<&str> = f.0.iter().map(|(k, _)| &**k).collect();
        assert_eq!(keys[..3], ["k0", "k1", "k2"]);
    }

    #[test]
    fn keep_only_skips_the_other_values_unparsed() {
        let text = r#"{"x":[1e400,"\ud800"],"msgid":16,"y":{"z":-1E999},"reqid":"r","msgid":17,"w":"\udc00"}"#;
        let f = fields(text, Keep::Only(&["msgid", "reqid"]));
        assert_eq!(f.0.len(), 2);
        assert_eq!((f.get("msgid"), f.get("reqid")), (Some(&Value::from(17)), Some(&Value::from("r"))));
        assert!(parse(text, Keep::All).is_err());
        // It is still JSON that is checked.
        for bad in [r#"{"x":[1,}"#, r#"{"x":tru}"#, r#"{"x":"\q"}"#] {
            assert!(parse(bad, Keep::Only(&["msgid"])).is_err(), "{bad}");
        }
    }
}
