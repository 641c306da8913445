//! Headers-exchange matching: `x-match` = `all` (default), `any`, `all-with-x`,
//! `any-with-x`. In `all`/`any`, binding arguments whose names start with `x-` take no
//! part. A binding argument of type void matches any value of a present header. Values
//! compare as RabbitMQ compares Erlang terms: integers by value whatever their width,
//! strings and byte arrays by bytes.

use amq_protocol::types::{AMQPValue, FieldTable};

/// The `x-match` mode of a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XMatch {
    /// Every argument must match.
    All,
    /// At least one argument must match.
    Any,
    /// `all`, including `x-` arguments.
    AllWithX,
    /// `any`, including `x-` arguments.
    AnyWithX,
}

/// Reads and validates `x-match` from binding arguments.
///
/// # Errors
/// The RabbitMQ error text for an invalid value.
pub fn x_match(args: &FieldTable) -> Result<XMatch, String> {
    match args.inner().get("x-match") {
        None => Ok(XMatch::All),
        Some(v) => match as_bytes(v) {
            Some(b"all") => Ok(XMatch::All),
            Some(b"any") => Ok(XMatch::Any),
            Some(b"all-with-x") => Ok(XMatch::AllWithX),
            Some(b"any-with-x") => Ok(XMatch::AnyWithX),
            _ => Err(format!(
                "Invalid x-match field value <<\"{}\">>; expected all, any, all-with-x, or any-with-x",
                crate::args::format_value(v)
            )),
        },
    }
}

fn as_bytes(v: &AMQPValue) -> Option<&[u8]> {
    match v {
        AMQPValue::LongString(s) => Some(s.as_bytes()),
        AMQPValue::ShortString(s) => Some(s.as_str().as_bytes()),
        AMQPValue::ByteArray(b) => Some(b.as_slice()),
        _ => None,
    }
}

/// Erlang-term equality of two field values.
pub fn values_equal(a: &AMQPValue, b: &AMQPValue) -> bool {
    if let (Some(x), Some(y)) = (crate::args::int_value(a), crate::args::int_value(b)) {
        return x == y;
    }
    if let (Some(x), Some(y)) = (as_bytes(a), as_bytes(b)) {
        return x == y;
    }
    a == b
}

/// Whether a message with `headers` matches a binding with `args`.
pub fn matches(args: &FieldTable, headers: Option<&FieldTable>) -> bool {
    let mode = x_match(args).unwrap_or(XMatch::All);
    let with_x = matches!(mode, XMatch::AllWithX | XMatch::AnyWithX);
    let all = matches!(mode, XMatch::All | XMatch::AllWithX);
    let empty = FieldTable::default();
    let headers = headers.unwrap_or(&empty).inner();
    let mut considered = 0usize;
    for (k, want) in args.inner() {
        if k.as_str() == "x-match" || (!with_x && k.as_str().starts_with("x-")) {
            continue;
        }
        considered += 1;
        let ok = match headers.get(k) {
            None => false,
            Some(have) => matches!(want, AMQPValue::Void) || values_equal(want, have),
        };
        if all && !ok {
            return false;
        }
        if !all && ok {
            return true;
        }
    }
    // all: everything matched (vacuously true with no arguments); any: nothing did.
    let _ = considered;
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::LongString;

    fn table(kv: &[(&str, AMQPValue)]) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in kv {
            t.insert((*k).into(), v.clone());
        }
        t
    }
    fn s(x: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(x.as_bytes().to_vec()))
    }

    #[test]
    fn all_and_any() {
        let all = table(&[("a", s("1")), ("b", AMQPValue::LongInt(2))]);
        let any = table(&[
            ("x-match", s("any")),
            ("a", s("1")),
            ("b", AMQPValue::LongInt(2)),
        ]);
        let both = table(&[("a", s("1")), ("b", AMQPValue::LongLongInt(2))]);
        let one = table(&[("a", s("1"))]);
        let wrong = table(&[("a", s("2")), ("b", AMQPValue::ShortInt(3))]);
        assert!(matches(&all, Some(&both)));
        assert!(!matches(&all, Some(&one)));
        assert!(matches(&any, Some(&one)));
        assert!(!matches(&any, Some(&wrong)));
        assert!(!matches(&any, None));
        assert!(matches(&table(&[]), None));
    }

    #[test]
    fn x_args_only_count_with_x() {
        let plain = table(&[("x-match", s("all")), ("x-k", s("v"))]);
        let with_x = table(&[("x-match", s("all-with-x")), ("x-k", s("v"))]);
        let any_x = table(&[("x-match", s("any-with-x")), ("x-k", s("v")), ("a", s("z"))]);
        let h = table(&[("x-k", s("v"))]);
        let none = table(&[]);
        assert!(matches(&plain, Some(&none)));
        assert!(matches(&with_x, Some(&h)));
        assert!(!matches(&with_x, Some(&none)));
        assert!(matches(&any_x, Some(&h)));
    }

    #[test]
    fn void_matches_presence_and_bad_x_match_is_refused() {
        let b = table(&[("k", AMQPValue::Void)]);
        assert!(matches(&b, Some(&table(&[("k", s("anything"))]))));
        assert!(!matches(&b, Some(&table(&[("j", s("x"))]))));
        assert!(x_match(&table(&[("x-match", s("some"))])).is_err());
    }
}
