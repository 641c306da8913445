//! JSON as rabbitmqadmin (v1) handles it: objects keep the server's key order (tables
//! list columns in the order they first appear), and values are rendered the way
//! Python's `json.dumps` and `str` render them, since that is what the v1 tool prints.

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::fmt::{self, Write};

/// A JSON value whose objects keep their key order.
#[derive(Debug, Clone, PartialEq)]
pub enum J {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    pub fn parse(text: &str) -> Result<J, serde_json::Error> {
        serde_json::from_str(text)
    }

    pub fn get(&self, key: &str) -> Option<&J> {
        match self {
            J::Obj(pairs) => pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Python's `json.dumps(v)`: `", "` and `": "` separators, non-ASCII escaped.
    pub fn dumps(&self) -> String {
        let mut out = String::new();
        self.write_compact(&mut out);
        out
    }

    fn write_compact(&self, out: &mut String) {
        match self {
            J::Arr(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    v.write_compact(out);
                }
                out.push(']');
            }
            J::Obj(pairs) => {
                out.push('{');
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_str(out, k, true);
                    out.push_str(": ");
                    v.write_compact(out);
                }
                out.push('}');
            }
            scalar => scalar.write_scalar(out, true),
        }
    }

    /// Python's `json.dumps(v, sort_keys=True, indent=2, ensure_ascii=False)`.
    pub fn pretty(&self) -> String {
        let mut out = String::new();
        self.write_pretty(&mut out, 0);
        out
    }

    fn write_pretty(&self, out: &mut String, level: usize) {
        let indent = |out: &mut String, n: usize| {
            out.push('\n');
            out.extend(std::iter::repeat_n(' ', n * 2));
        };
        match self {
            J::Arr(items) if !items.is_empty() => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    indent(out, level + 1);
                    v.write_pretty(out, level + 1);
                }
                indent(out, level);
                out.push(']');
            }
            J::Obj(pairs) if !pairs.is_empty() => {
                let mut sorted: Vec<&(String, J)> = pairs.iter().collect();
                sorted.sort_by(|a, b| a.0.cmp(&b.0));
                out.push('{');
                for (i, (k, v)) in sorted.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    indent(out, level + 1);
                    write_str(out, k, false);
                    out.push_str(": ");
                    v.write_pretty(out, level + 1);
                }
                indent(out, level);
                out.push('}');
            }
            J::Arr(_) => out.push_str("[]"),
            J::Obj(_) => out.push_str("{}"),
            scalar => scalar.write_scalar(out, false),
        }
    }

    fn write_scalar(&self, out: &mut String, ascii: bool) {
        match self {
            J::Null => out.push_str("null"),
            J::Bool(true) => out.push_str("true"),
            J::Bool(false) => out.push_str("false"),
            J::Int(n) => {
                let _ = write!(out, "{n}");
            }
            J::Float(f) => out.push_str(&python_float(*f)),
            J::Str(s) => write_str(out, s, ascii),
            J::Arr(_) | J::Obj(_) => {}
        }
    }

    /// Python's `str(v)` for a scalar cell: `True`/`False`, integers, float repr.
    pub fn cell(&self) -> Option<String> {
        match self {
            J::Null => None,
            J::Bool(true) => Some("True".into()),
            J::Bool(false) => Some("False".into()),
            J::Int(n) => Some(n.to_string()),
            J::Float(f) => Some(python_float(*f)),
            J::Str(s) => Some(s.clone()),
            other => Some(other.dumps()),
        }
    }
}

/// Python's `repr(float)`: the shortest digits that round-trip, in positional notation
/// for exponents from -4 to 15 and in scientific notation (`1e+16`, `1e-05`) beyond.
pub fn python_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let sci = format!("{f:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..16).contains(&exp) {
        let s = format!("{f}");
        if s.contains('.') {
            s
        } else {
            format!("{s}.0")
        }
    } else {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", exp.abs())
    }
}

fn write_str(out: &mut String, s: &str, ascii: bool) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (ascii && (c as u32) > 0x7e) => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl<'de> Deserialize<'de> for J {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<J, D::Error> {
        d.deserialize_any(JVisitor)
    }
}

struct JVisitor;

impl<'de> Visitor<'de> for JVisitor {
    type Value = J;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<J, E> {
        Ok(J::Null)
    }
    fn visit_none<E>(self) -> Result<J, E> {
        Ok(J::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<J, E> {
        Ok(J::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<J, E> {
        Ok(J::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<J, E> {
        Ok(J::Int(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<J, E> {
        Ok(J::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<J, E> {
        Ok(J::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<J, E> {
        Ok(J::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<J, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element()? {
            items.push(v);
        }
        Ok(J::Arr(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<J, A::Error> {
        let mut pairs: Vec<(String, J)> = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, J>()? {
            // A repeated key keeps its first position and its last value, as in Python.
            match pairs.iter_mut().find(|(existing, _)| *existing == k) {
                Some(slot) => slot.1 = v,
                None => pairs.push((k, v)),
            }
        }
        Ok(J::Obj(pairs))
    }
}

impl serde::Serialize for J {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            J::Null => s.serialize_unit(),
            J::Bool(b) => s.serialize_bool(*b),
            J::Int(n) => s.serialize_i128(*n),
            J::Float(f) => s.serialize_f64(*f),
            J::Str(v) => s.serialize_str(v),
            J::Arr(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for v in items {
                    seq.serialize_element(v)?;
                }
                seq.end()
            }
            J::Obj(pairs) => {
                let mut map = s.serialize_map(Some(pairs.len()))?;
                for (k, v) in pairs {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_render_as_python_repr() {
        for (f, want) in [
            (0.0, "0.0"),
            (1.0, "1.0"),
            (0.1, "0.1"),
            (2.5, "2.5"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (123456789012345.0, "123456789012345.0"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (-3.25e-7, "-3.25e-07"),
            (1.2345678901234568e20, "1.2345678901234568e+20"),
        ] {
            assert_eq!(python_float(f), want, "{f}");
        }
    }

    #[test]
    fn keys_keep_their_order_and_dumps_matches_python() {
        let v = J::parse(r#"{"z":1,"a":[1,"x",{"é":null}],"m":{"k":true},"f":0.5}"#).unwrap();
        assert_eq!(
            v.dumps(),
            r#"{"z": 1, "a": [1, "x", {"\u00e9": null}], "m": {"k": true}, "f": 0.5}"#
        );
        assert_eq!(
            v.pretty(),
            "{\n  \"a\": [\n    1,\n    \"x\",\n    {\n      \"é\": null\n    }\n  ],\n  \"f\": 0.5,\n  \"m\": {\n    \"k\": true\n  },\n  \"z\": 1\n}"
        );
        assert_eq!(J::parse("[]").unwrap().pretty(), "[]");
        assert_eq!(
            J::parse("{\"a\":{}}").unwrap().pretty(),
            "{\n  \"a\": {}\n}"
        );
    }

    #[test]
    fn cells_render_like_python_str() {
        assert_eq!(J::Bool(true).cell().as_deref(), Some("True"));
        assert_eq!(J::Int(-3).cell().as_deref(), Some("-3"));
        assert_eq!(J::Float(2.0).cell().as_deref(), Some("2.0"));
        assert_eq!(J::Null.cell(), None);
        // A character outside the BMP is escaped as a surrogate pair by dumps.
        assert_eq!(J::Str("😀".into()).dumps(), "\"\\ud83d\\ude00\"");
    }
}
