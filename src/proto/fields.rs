//! `Fields`: a request object's top-level fields, parsed without building a map.
//!
//! A request has a handful of fields and is read a few times by name, so a vector
//! searched in order beats serde_json's `Map` (a B-tree whose first node alone is a
//! ~600-byte allocation per request). Parsing is serde_json's own, value by value, so
//! what is and is not valid JSON, and every error text, stay serde_json's. As in its
//! map, a repeated key keeps the last value.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

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

/// A whole JSON text: an object's fields, or anything else.
pub enum TopLevel {
    Object(Fields),
    NotAnObject,
}

impl<'de> Deserialize<'de> for TopLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TopLevel, D::Error> {
        d.deserialize_any(TopLevelVisitor)
    }
}

struct TopLevelVisitor;

impl<'de> Visitor<'de> for TopLevelVisitor {
    type Value = TopLevel;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TopLevel, A::Error> {
        let mut fields: Vec<(Box<str>, Value)> = Vec::with_capacity(map.size_hint().unwrap_or(4).min(16));
        while let Some(key) = map.next_key::<String>()? {
            let value: Value = map.next_value()?;
            match fields.iter_mut().find(|(k, _)| **k == *key) {
                Some((_, slot)) => *slot = value,
                None => fields.push((key.into_boxed_str(), value)),
            }
        }
        Ok(TopLevel::Object(Fields(fields)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<TopLevel, A::Error> {
        // Read as serde_json would, so the same texts fail the same way.
        while seq.next_element::<Value>()?.is_some() {}
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

    fn fields(text: &str) -> Fields {
        match serde_json::from_str::<TopLevel>(text) {
            Ok(TopLevel::Object(f)) => f,
            _ => panic!("not an object: {text}"),
        }
    }

    #[test]
    fn fields_read_like_serde_jsons_map() {
        let f = fields(r#"{"msgid":6,"msg":"a\"b","n":{"x":[1,2.5]},"msgid":7}"#);
        assert_eq!(f.get("msgid"), Some(&Value::from(7)), "the last of a repeated key wins");
        assert_eq!(f.get("msg"), Some(&Value::from("a\"b")));
        assert_eq!(f.get("n"), Some(&serde_json::json!({"x": [1, 2.5]})));
        assert!(!f.contains_key("toid"));
        for text in ["[1,{}]", "\"s\"", "1", "-1", "1.5", "true", "null"] {
            assert!(matches!(serde_json::from_str::<TopLevel>(text), Ok(TopLevel::NotAnObject)), "{text}");
        }
    }

    #[test]
    fn bad_json_fails_with_serde_jsons_own_errors() {
        for text in [r#"{"a":1e400}"#, r#"{"a":"\ud800"}"#, r#"[1e400]"#, r#"{"a":1,}"#, r#"{"a":1} x"#, "{"] {
            let ours = serde_json::from_str::<TopLevel>(text).err().map(|e| e.to_string());
            let theirs = serde_json::from_str::<Value>(text).err().map(|e| e.to_string());
            assert_eq!(ours, theirs, "{text}");
        }
    }
}
