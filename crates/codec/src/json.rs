//! AMQP field values and tables as JSON, the way RabbitMQ's management API and
//! `rabbitmqctl --formatter json` render them.

use amq_protocol::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use serde_json::{Map, Value};

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
        Value::Object(_) => AMQPValue::FieldTable(json_to_table(v).unwrap_or_default()),
    }
}

/// A JSON object (or null) as a field table.
///
/// # Errors
/// Not an object, or a key longer than 255 bytes.
pub fn json_to_table(v: &Value) -> Result<FieldTable, String> {
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
