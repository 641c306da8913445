//! `rabbitmq-streams add_super_stream` and `delete_super_stream`: the options RabbitMQ's
//! stream plugin commands take (3.10's `--routing-keys`, later versions'
//! `--binding-keys`), checked on the tool's side with RabbitMQ's texts, and turned into
//! the engine's super stream operation on the node.

use amq_protocol::types::{AMQPValue, FieldTable};
use serde_json::Value;

fn text<'a>(options: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a str> {
    options.get(name).and_then(Value::as_str)
}

/// A size as RabbitMQ's `parse_information_unit` reads it: a number and an optional
/// unit (`kb`/`mb`/`gb`/`tb` powers of 1000, `k`/`kib`... powers of 1024), in any case.
pub fn information_unit(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1_000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        "t" | "tib" => 1 << 40,
        "tb" => 1_000_000_000_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// An ISO 8601 duration (`PT10M30S`, `P5DT8H`, `P1Y2M`) in seconds, counting a year as
/// 365 days and a month as 30, as RabbitMQ does.
pub fn iso8601_seconds(s: &str) -> Option<u64> {
    let rest = s.trim().strip_prefix('P')?;
    if rest.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut in_time = false;
    let mut number = String::new();
    for c in rest.chars() {
        match c {
            'T' if !in_time && number.is_empty() => in_time = true,
            '0'..='9' => number.push(c),
            unit => {
                let n: u64 = number.parse().ok()?;
                number.clear();
                let secs = match (in_time, unit) {
                    (false, 'Y') => 365 * 86_400,
                    (false, 'M') => 30 * 86_400,
                    (false, 'W') => 7 * 86_400,
                    (false, 'D') => 86_400,
                    (true, 'H') => 3_600,
                    (true, 'M') => 60,
                    (true, 'S') => 1,
                    _ => return None,
                };
                total = total.checked_add(n.checked_mul(secs)?)?;
            }
        }
    }
    number.is_empty().then_some(total)
}

/// Checks `add_super_stream`'s options as RabbitMQ's command does.
///
/// # Errors
/// RabbitMQ's validation message.
pub fn validate(options: &serde_json::Map<String, Value>) -> Result<(), String> {
    let has = |k: &str| options.contains_key(k);
    if has("routing-keys") && has("binding-keys") {
        return Err("Specify --binding-keys only.".into());
    }
    if has("partitions") && (has("binding-keys") || has("routing-keys")) {
        return Err("Specify --partitions or --binding-keys, not both.".into());
    }
    if let Some(p) = options.get("partitions") {
        match p.as_str().and_then(|p| p.parse::<i64>().ok()) {
            Some(n) if n >= 1 => {}
            Some(_) => return Err("The partition number must be greater than 0".into()),
            None => return Err("Bad argument: --partitions must be an integer".into()),
        }
    }
    if text(options, "max-length-bytes").is_some_and(|v| information_unit(v).is_none()) {
        return Err(
            "Invalid value for --max-length-bytes, valid example values: 100gb, 50mb".into(),
        );
    }
    if text(options, "max-age").is_some_and(|v| iso8601_seconds(v).is_none()) {
        return Err("Invalid value for --max-age, the value must a ISO 8601 duration, e.g. e.g. PT10M30S for 10 minutes 30 seconds, P5DT8H for 5 days 8 hours.".into());
    }
    if text(options, "stream-max-segment-size-bytes").is_some_and(|v| information_unit(v).is_none())
    {
        return Err(
            "Invalid value for --stream-max-segment-size-bytes, valid example values: 100gb, 50mb"
                .into(),
        );
    }
    if let Some(l) = text(options, "leader-locator") {
        if !matches!(l, "client-local" | "balanced" | "random" | "least-leaders") {
            return Err(
                "Invalid value for --leader-locator, valid values are client-local, balanced."
                    .into(),
            );
        }
    }
    if let Some(v) = text(options, "initial-cluster-size") {
        match v.parse::<i64>() {
            Ok(n) if n > 0 => {}
            Ok(_) => {
                return Err(
                    "Invalid value for --initial-cluster-size, the value must be positive.".into(),
                )
            }
            Err(_) => return Err(
                "Invalid value for --initial-cluster-size, the value must be a positive integer."
                    .into(),
            ),
        }
    }
    Ok(())
}

/// The partitions and binding keys `add_super_stream NAME` makes: `NAME-0`.. with keys
/// `0`.. for `--partitions` (3 by default), `NAME-KEY` with key `KEY` for
/// `--binding-keys` / `--routing-keys` (comma-separated).
pub fn layout(name: &str, options: &serde_json::Map<String, Value>) -> (Vec<String>, Vec<String>) {
    let keys: Vec<String> = match text(options, "binding-keys").or(text(options, "routing-keys")) {
        Some(list) => list
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(String::from)
            .collect(),
        None => {
            let n = text(options, "partitions")
                .and_then(|p| p.parse::<u32>().ok())
                .unwrap_or(3);
            (0..n).map(|i| i.to_string()).collect()
        }
    };
    let partitions = keys.iter().map(|k| format!("{name}-{k}")).collect();
    (partitions, keys)
}

/// The partitions' stream arguments from the options.
pub fn arguments(options: &serde_json::Map<String, Value>) -> FieldTable {
    let mut t = FieldTable::default();
    let int = |v: u64| AMQPValue::LongLongInt(i64::try_from(v).unwrap_or(i64::MAX));
    if let Some(v) = text(options, "max-length-bytes").and_then(information_unit) {
        t.insert("x-max-length-bytes".into(), int(v));
    }
    if let Some(v) = text(options, "max-age").and_then(iso8601_seconds) {
        t.insert(
            "x-max-age".into(),
            AMQPValue::LongString(format!("{v}s").into()),
        );
    }
    if let Some(v) = text(options, "stream-max-segment-size-bytes").and_then(information_unit) {
        t.insert("x-stream-max-segment-size-bytes".into(), int(v));
    }
    if let Some(v) = text(options, "initial-cluster-size").and_then(|v| v.parse::<u64>().ok()) {
        t.insert("x-initial-cluster-size".into(), int(v));
    }
    if let Some(l) = text(options, "leader-locator") {
        t.insert(
            "x-queue-leader-locator".into(),
            AMQPValue::LongString(l.into()),
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> serde_json::Map<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
            .collect()
    }

    #[test]
    fn units_and_durations_parse_as_rabbitmq_reads_them() {
        assert_eq!(information_unit("100gb"), Some(100_000_000_000));
        assert_eq!(information_unit("50MB"), Some(50_000_000));
        assert_eq!(information_unit("2GiB"), Some(2 << 30));
        assert_eq!(information_unit("1000"), Some(1000));
        assert_eq!(information_unit("ten"), None);
        assert_eq!(iso8601_seconds("PT10M30S"), Some(630));
        assert_eq!(iso8601_seconds("P5DT8H"), Some(5 * 86_400 + 8 * 3_600));
        assert_eq!(iso8601_seconds("P1Y"), Some(365 * 86_400));
        assert_eq!(iso8601_seconds("10m"), None);
        assert_eq!(iso8601_seconds("P"), None);
        assert_eq!(iso8601_seconds("PT5"), None);
    }

    #[test]
    fn options_are_checked_with_rabbitmqs_texts() {
        assert!(validate(&opts(&[("partitions", "2")])).is_ok());
        assert_eq!(
            validate(&opts(&[("partitions", "2"), ("binding-keys", "a,b")])).unwrap_err(),
            "Specify --partitions or --binding-keys, not both."
        );
        assert_eq!(
            validate(&opts(&[("partitions", "0")])).unwrap_err(),
            "The partition number must be greater than 0"
        );
        assert!(validate(&opts(&[("max-age", "1h")]))
            .unwrap_err()
            .starts_with("Invalid value for --max-age"));
        assert!(validate(&opts(&[("leader-locator", "nearest")])).is_err());
    }

    #[test]
    fn layout_and_arguments() {
        let (p, k) = layout("inv", &opts(&[]));
        assert_eq!(p, vec!["inv-0", "inv-1", "inv-2"]);
        assert_eq!(k, vec!["0", "1", "2"]);
        let (p, k) = layout("inv", &opts(&[("routing-keys", "amer, emea")]));
        assert_eq!(p, vec!["inv-amer", "inv-emea"]);
        assert_eq!(k, vec!["amer", "emea"]);
        let a = arguments(&opts(&[("max-length-bytes", "1gb"), ("max-age", "PT1H")]));
        assert_eq!(
            a.inner().get("x-max-length-bytes"),
            Some(&AMQPValue::LongLongInt(1_000_000_000))
        );
        assert_eq!(
            a.inner().get("x-max-age"),
            Some(&AMQPValue::LongString("3600s".into()))
        );
    }
}
