//! AMQP field values and tables as JSON, the way RabbitMQ's management API and
//! `rabbitmqctl --formatter json` render them.

use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use serde_json::{Map, Value};

use crate::nesting::MAX_NESTING;

/// An AMQP field value as RabbitMQ's management API renders it.
pub fn value_to_json(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        AMQPValue::Float(f) => Value::from(f64::from(*f)),
        AMQPValue::Double(f) => Value::from(*f),
        AMQPValue::DecimalValue(d) => {
            Value::from(f64::from(d.value) / 10f64.powi(i32::from(d.scale)))
        }
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_string()),
        AMQPValue::LongString(s) => {
            Value::String(String::from_utf8_lossy(s.as_bytes()).into_owned())
        }
        AMQPValue::FieldArray(a) => Value::Array(a.as_slice().iter().map(value_to_json).collect()),
        AMQPValue::Timestamp(t) => Value::from(*t),
        AMQPValue::FieldTable(t) => table_to_json(t),
        AMQPValue::ByteArray(b) => {
            Value::String(String::from_utf8_lossy(b.as_slice()).into_owned())
        }
        AMQPValue::Void => Value::Null,
    }
}

/// A field table as a JSON object.
pub fn table_to_json(t: &FieldTable) -> Value {
    let mut m = Map::new();
    for (k, v) in t.inner() {
        m.insert(k.as_str().to_string(), value_to_json(v));
    }
    Value::Object(m)
}

/// A JSON value as RabbitMQ converts it to an AMQP field: strings become longstr,
/// integers long, other numbers double, objects tables, arrays arrays, null void.
pub fn json_to_value(v: &Value) -> AMQPValue {
    match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AMQPValue::LongLongInt(i),
            None => AMQPValue::Double(n.as_f64().unwrap_or(0.0)),
        },
        Value::String(s) => AMQPValue::LongString(LongString::from(s.as_bytes().to_vec())),
        Value::Array(a) => AMQPValue::FieldArray(FieldArray::from(
            a.iter().map(json_to_value).collect::<Vec<_>>(),
        )),
        Value::Object(_) => AMQPValue::FieldTable(object_to_table(v).unwrap_or_default()),
    }
}

/// A JSON object (or null) as a field table.
///
/// # Errors
/// Not an object, a key longer than 255 bytes (at any depth), or objects and arrays
/// nested deeper than [`MAX_NESTING`] levels (the table itself is level 1): Warren
/// refuses such a table on the wire and when it reads its data directory back, so a
/// durable queue declared with one could not be recovered.
pub fn json_to_table(v: &Value) -> Result<FieldTable, String> {
    if v.is_object() {
        check_nesting(v, 1)?;
    }
    object_to_table(v)
}

/// Objects and arrays from `depth` down nest at most [`MAX_NESTING`] levels; every key
/// fits a short string. Recursion is bounded: serde_json parses at most 128 levels.
fn check_nesting(v: &Value, depth: usize) -> Result<(), String> {
    let children: Box<dyn Iterator<Item = &Value>> = match v {
        Value::Object(m) => {
            if let Some(k) = m.keys().find(|k| k.len() > 255) {
                return Err(format!("argument name too long: {k}"));
            }
            Box::new(m.values())
        }
        Value::Array(a) => Box::new(a.iter()),
        _ => return Ok(()),
    };
    if depth > MAX_NESTING {
        return Err(format!(
            "arguments nest tables and arrays deeper than {MAX_NESTING} levels"
        ));
    }
    for c in children {
        check_nesting(c, depth + 1)?;
    }
    Ok(())
}

fn object_to_table(v: &Value) -> Result<FieldTable, String> {
    let mut t = FieldTable::default();
    match v {
        Value::Null => Ok(t),
        Value::Object(m) => {
            for (k, v) in m {
                let key = ShortString::try_new(k.clone())
                    .map_err(|_| format!("argument name too long: {k}"))?;
                t.insert(key, json_to_value(v));
            }
            Ok(t)
        }
        other => Err(format!("arguments must be an object, not {other}")),
    }
}

/// A boolean field that may be a JSON boolean or the strings "true"/"false" (old
/// rabbitmqadmin sends strings).
///
/// # Errors
/// Any other value.
pub fn boolean(body: &Value, key: &str, default: bool) -> Result<bool, String> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" => Ok(true),
        Some(Value::String(s)) if s == "false" => Ok(false),
        Some(other) => Err(format!("{key} must be a boolean, not {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested_objects(levels: usize) -> Value {
        let mut v = json!(1);
        for _ in 0..levels {
            v = json!({ "a": v });
        }
        v
    }

    #[test]
    fn tables_nested_deeper_than_the_wire_allows_are_refused() {
        // {"a": {"a": ... 1}}: `levels` tables.
        let ok = json_to_table(&nested_objects(MAX_NESTING)).unwrap();
        assert_eq!(crate::fuzzing::depth_of_table(&ok), MAX_NESTING);
        let err = json_to_table(&nested_objects(MAX_NESTING + 1)).unwrap_err();
        assert!(err.contains("deeper than 64"), "{err}");
        // Arrays count as levels too.
        let mut arrays = json!(1);
        for _ in 0..MAX_NESTING {
            arrays = json!([arrays]);
        }
        assert!(json_to_table(&json!({ "x": arrays })).is_err());
    }

    #[test]
    fn long_keys_are_refused_at_any_depth() {
        let long = "k".repeat(256);
        assert!(json_to_table(&json!({ long.clone(): 1 })).is_err());
        assert!(json_to_table(&json!({"x": [{ long: 1 }]})).is_err());
        assert!(json_to_table(&json!({"x": [{"k": 1}], "y": null})).is_ok());
        assert!(json_to_table(&json!(null)).unwrap().inner().is_empty());
        assert!(json_to_table(&json!([])).is_err());
    }
}
