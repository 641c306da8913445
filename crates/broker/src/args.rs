//! Argument tables: RabbitMQ's equivalence rules for redeclaration and its way of
//! printing values in error texts.

use amq_protocol::types::{AMQPValue, FieldTable};

/// Queue arguments compared on redeclare of a classic queue (`rabbit_classic_queue`).
pub const QUEUE_EQUIVALENCE_KEYS: &[&str] = &[
    "x-expires",
    "x-message-ttl",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-overflow",
    "x-queue-mode",
    "x-queue-version",
    "x-single-active-consumer",
    "x-queue-type",
    "x-queue-master-locator",
    "x-queue-leader-locator",
];

/// Exchange arguments compared on redeclare.
pub const EXCHANGE_EQUIVALENCE_KEYS: &[&str] = &["alternate-exchange"];

/// The value of any integer field type (timestamps included), as RabbitMQ compares
/// integers: by value, whatever their width.
pub fn int_value(v: &AMQPValue) -> Option<i128> {
    Some(match v {
        AMQPValue::ShortShortInt(x) => i128::from(*x),
        AMQPValue::ShortShortUInt(x) => i128::from(*x),
        AMQPValue::ShortInt(x) => i128::from(*x),
        AMQPValue::ShortUInt(x) => i128::from(*x),
        AMQPValue::LongInt(x) => i128::from(*x),
        AMQPValue::LongUInt(x) => i128::from(*x),
        AMQPValue::LongLongInt(x) => i128::from(*x),
        AMQPValue::Timestamp(x) => i128::from(*x),
        _ => return None,
    })
}

/// RabbitMQ's name for a field type.
pub fn type_name(v: &AMQPValue) -> &'static str {
    match v {
        AMQPValue::Boolean(_) => "bool",
        AMQPValue::ShortShortInt(_) => "byte",
        AMQPValue::ShortShortUInt(_) => "unsignedbyte",
        AMQPValue::ShortInt(_) => "short",
        AMQPValue::ShortUInt(_) => "unsignedshort",
        AMQPValue::LongInt(_) => "signedint",
        AMQPValue::LongUInt(_) => "unsignedint",
        AMQPValue::LongLongInt(_) => "long",
        AMQPValue::Float(_) => "float",
        AMQPValue::Double(_) => "double",
        AMQPValue::DecimalValue(_) => "decimal",
        AMQPValue::ShortString(_) | AMQPValue::LongString(_) => "longstr",
        AMQPValue::FieldArray(_) => "array",
        AMQPValue::Timestamp(_) => "timestamp",
        AMQPValue::FieldTable(_) => "table",
        AMQPValue::ByteArray(_) => "binary",
        AMQPValue::Void => "void",
    }
}

/// A string argument of a table (the exchange named by `alternate-exchange` or
/// `x-dead-letter-exchange`); `None` when absent or not a string.
pub fn string_arg(args: &amq_protocol::types::FieldTable, key: &str) -> Option<String> {
    match args.inner().get(key)? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// The value as RabbitMQ prints it: strings bare, numbers as numbers.
pub fn format_value(v: &AMQPValue) -> String {
    match v {
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::ShortShortInt(x) => x.to_string(),
        AMQPValue::ShortShortUInt(x) => x.to_string(),
        AMQPValue::ShortInt(x) => x.to_string(),
        AMQPValue::ShortUInt(x) => x.to_string(),
        AMQPValue::LongInt(x) => x.to_string(),
        AMQPValue::LongUInt(x) => x.to_string(),
        AMQPValue::LongLongInt(x) => x.to_string(),
        AMQPValue::Float(x) => x.to_string(),
        AMQPValue::Double(x) => x.to_string(),
        AMQPValue::Timestamp(x) => x.to_string(),
        AMQPValue::ShortString(s) => s.as_str().to_string(),
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ByteArray(b) => String::from_utf8_lossy(b.as_slice()).into_owned(),
        other => format!("{other:?}"),
    }
}

/// `the value 'V' of type 'T'`, or `none` for an absent argument.
pub fn describe_typed(v: Option<&AMQPValue>) -> String {
    match v {
        None => "none".to_string(),
        Some(v) => format!("the value '{}' of type '{}'", format_value(v), type_name(v)),
    }
}

/// `'V'` as RabbitMQ 3.10 prints an argument value, or `none` for an absent one.
pub fn describe(v: Option<&AMQPValue>) -> String {
    match v {
        None => "none".to_string(),
        Some(v) => format!("'{}'", format_value(v)),
    }
}

fn class(v: &AMQPValue) -> u8 {
    match v {
        AMQPValue::ShortShortInt(_)
        | AMQPValue::ShortShortUInt(_)
        | AMQPValue::ShortInt(_)
        | AMQPValue::ShortUInt(_)
        | AMQPValue::LongInt(_)
        | AMQPValue::LongUInt(_)
        | AMQPValue::LongLongInt(_) => 1,
        AMQPValue::Float(_) | AMQPValue::Double(_) => 2,
        AMQPValue::ShortString(_) | AMQPValue::LongString(_) => 3,
        _ => 0,
    }
}

/// Equivalence of two argument values: integers of any width are one class, float and
/// double are one class (`rabbit_misc:type_class`), and values compare within a class.
pub fn equivalent(a: Option<&AMQPValue>, b: Option<&AMQPValue>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            if class(a) != class(b) {
                return false;
            }
            match class(a) {
                2 => as_f64(a) == as_f64(b),
                _ => crate::headers::values_equal(a, b),
            }
        }
        _ => false,
    }
}

fn as_f64(v: &AMQPValue) -> Option<f64> {
    match v {
        AMQPValue::Float(x) => Some(f64::from(*x)),
        AMQPValue::Double(x) => Some(*x),
        _ => None,
    }
}

/// The first key of `keys` on which `received` and `current` differ, with both values.
pub fn first_difference<'a>(
    keys: &[&'a str],
    received: &FieldTable,
    current: &FieldTable,
) -> Option<(&'a str, String, String)> {
    for key in keys {
        let r = received.inner().get(*key);
        let c = current.inner().get(*key);
        // RabbitMQ: an absent x-queue-type equals "classic".
        if *key == "x-queue-type" && is_classic_or_absent(r) && is_classic_or_absent(c) {
            continue;
        }
        if !equivalent(r, c) {
            // RabbitMQ prints bare values when both sides have one, and the value with
            // its type when the other side has none.
            return Some(match (r, c) {
                (Some(r), Some(c)) => (
                    key,
                    format!("'{}'", format_value(r)),
                    format!("'{}'", format_value(c)),
                ),
                _ => (key, describe_typed(r), describe_typed(c)),
            });
        }
    }
    None
}

fn is_classic_or_absent(v: Option<&AMQPValue>) -> bool {
    match v {
        None => true,
        Some(v) => format_value(v) == "classic",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints_of_any_width_are_equivalent() {
        assert!(equivalent(
            Some(&AMQPValue::LongInt(5)),
            Some(&AMQPValue::LongLongInt(5))
        ));
        assert!(!equivalent(
            Some(&AMQPValue::LongInt(5)),
            Some(&AMQPValue::Double(5.0))
        ));
        assert!(!equivalent(Some(&AMQPValue::LongInt(5)), None));
    }

    #[test]
    fn difference_is_described_like_rabbitmq() {
        let mut a = FieldTable::default();
        a.insert("x-max-length".into(), AMQPValue::LongInt(10));
        a.insert("x-custom".into(), AMQPValue::LongInt(1));
        let b = FieldTable::default();
        let d = first_difference(QUEUE_EQUIVALENCE_KEYS, &a, &b).unwrap();
        assert_eq!(d.0, "x-max-length");
        assert_eq!(d.1, "the value '10' of type 'signedint'");
        assert_eq!(d.2, "none");
        let mut only_custom = FieldTable::default();
        only_custom.insert("x-custom".into(), AMQPValue::LongInt(1));
        assert!(first_difference(QUEUE_EQUIVALENCE_KEYS, &only_custom, &b).is_none());
    }
}
