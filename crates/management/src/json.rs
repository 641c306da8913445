//! JSON conventions of RabbitMQ's management API: AMQP field tables as JSON objects,
//! booleans that may arrive as strings (old rabbitmqadmin sends `"true"`), timestamps,
//! and the list query parameters (`page`, `page_size`, `name`, `use_regex`,
//! `pagination`, `sort`, `sort_reverse`, `columns`).

use std::collections::HashMap;

use amq_protocol::types::FieldTable;
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};

pub use warren_codec::json::{table_to_json, value_to_json};

pub use warren_codec::json::json_to_value;

/// A JSON object (or null) as a field table.
///
/// # Errors
/// 400: not an object, or a key longer than 255 bytes.
pub fn json_to_table(v: &Value) -> ApiResult<FieldTable> {
    warren_codec::json::json_to_table(v).map_err(ApiError::bad_request)
}

/// A boolean field that may be a JSON boolean or the strings "true"/"false".
///
/// # Errors
/// 400 for any other value.
pub fn boolean(body: &Value, key: &str, default: bool) -> ApiResult<bool> {
    warren_codec::json::boolean(body, key, default).map_err(ApiError::bad_request)
}

/// An optional string field.
///
/// # Errors
/// Not a string.
pub fn string(body: &Value, key: &str) -> ApiResult<Option<String>> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ApiError::bad_request(format!(
            "{key} must be a string, not {other}"
        ))),
    }
}

/// A request body as JSON; an empty body is `{}`.
///
/// # Errors
/// RabbitMQ's 400 `not_json`.
pub fn body(bytes: &[u8]) -> ApiResult<Value> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) | Err(_) => Err(ApiError::bad_request("not_json")),
    }
}

/// [`iso8601_ms`] of a Unix time in seconds.
pub fn iso8601_ms_secs(epoch_secs: i64) -> String {
    iso8601_ms(u64::try_from(epoch_secs).unwrap_or(0).saturating_mul(1000))
}

/// ISO 8601 in UTC with milliseconds and `+00:00`, as RabbitMQ writes `idle_since`.
pub fn iso8601_ms(epoch_ms: u64) -> String {
    let secs = epoch_ms / 1000;
    let ms = epoch_ms % 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if mo <= 2 { y + 1 } else { y };
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{ms:03}+00:00")
}

/// `{"rate": r}`.
pub fn details(rate: f64) -> Value {
    serde_json::json!({ "rate": rate })
}

fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(v, |v, k| v.get(k))
}

fn compare(a: Option<&Value>, b: Option<&Value>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    match (a, b) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .unwrap_or(0.0)
            .partial_cmp(&y.as_f64().unwrap_or(0.0))
            .unwrap_or(Ordering::Equal),
        (Some(Value::String(x)), Some(Value::String(y))) => x.cmp(y),
        (Some(Value::Bool(x)), Some(Value::Bool(y))) => x.cmp(y),
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => x.to_string().cmp(&y.to_string()),
        (None, None) => Ordering::Equal,
    }
}

fn insert_path(out: &mut Map<String, Value>, parts: &[&str], value: Value) {
    match parts {
        [] => {}
        [last] => {
            out.insert((*last).to_string(), value);
        }
        [first, rest @ ..] => {
            let entry = out
                .entry((*first).to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(m) = entry {
                insert_path(m, rest, value);
            }
        }
    }
}

fn select_columns(v: &Value, columns: &[&str]) -> Value {
    let mut out = Map::new();
    for c in columns {
        if let Some(found) = lookup(v, c) {
            // A dotted column is nested as RabbitMQ nests it.
            let parts: Vec<&str> = c.split('.').collect();
            insert_path(&mut out, &parts, found.clone());
        }
    }
    Value::Object(out)
}

/// Applies RabbitMQ's list query parameters to `items`: filtering by `name` (substring,
/// or a regex with `use_regex=true`), `sort`/`sort_reverse`, `columns`, and paging when
/// `page` is given (then the reply is `{items, page, page_count, page_size,
/// filtered_count, item_count, total_count}`).
///
/// # Errors
/// 400 for a bad page, page size or regex.
pub fn list(mut items: Vec<Value>, query: &HashMap<String, String>) -> ApiResult<Value> {
    let total = items.len();
    filter_by_name(&mut items, |i| i.get("name").and_then(Value::as_str), query)?;
    if let Some(key) = query.get("sort").filter(|s| !s.is_empty()) {
        items.sort_by(|a, b| compare(lookup(a, key), lookup(b, key)));
    }
    if truthy(query, "sort_reverse") {
        items.reverse();
    }
    let filtered = items.len();
    let Some((page, page_size)) = paging(query, filtered)? else {
        return Ok(Value::Array(
            items.into_iter().map(|i| with_columns(i, query)).collect(),
        ));
    };
    let slice = items
        .into_iter()
        .skip((page - 1) * page_size)
        .take(page_size)
        .map(|i| with_columns(i, query))
        .collect();
    Ok(page_reply(slice, page, page_size, filtered, total))
}

/// [`list`] over items that cost something to render (a queue's JSON reads its
/// counters, rates and policy): for a page sorted by name or not at all (the web UI's
/// default), the name filter and the sort run on the items themselves and only the
/// requested page is rendered, so a page of a broker with tens of thousands of queues
/// takes milliseconds. Any other request renders every item first and is [`list`]. The
/// replies are the same either way.
///
/// # Errors
/// As [`list`].
pub fn list_lazy<T>(
    mut items: Vec<T>,
    name: impl Fn(&T) -> &str,
    render: impl Fn(&T) -> Value,
    query: &HashMap<String, String>,
) -> ApiResult<Value> {
    let sort = query.get("sort").filter(|s| !s.is_empty());
    let paged = paging(query, usize::MAX).ok().flatten().is_some();
    if sort.is_some_and(|s| s != "name") || !paged {
        return list(items.iter().map(render).collect(), query);
    }
    let total = items.len();
    filter_by_name(&mut items, |i| Some(name(i)), query)?;
    if sort.is_some() {
        items.sort_by(|a, b| name(a).cmp(name(b)));
    }
    if truthy(query, "sort_reverse") {
        items.reverse();
    }
    let filtered = items.len();
    let Some((page, page_size)) = paging(query, filtered)? else {
        return list(items.iter().map(render).collect(), query);
    };
    let slice = items
        .iter()
        .skip((page - 1) * page_size)
        .take(page_size)
        .map(|i| with_columns(render(i), query))
        .collect();
    Ok(page_reply(slice, page, page_size, filtered, total))
}

fn truthy(query: &HashMap<String, String>, key: &str) -> bool {
    query.get(key).is_some_and(|v| v == "true")
}

/// Keeps the items whose name contains `name` (or matches it, with `use_regex=true`).
fn filter_by_name<T>(
    items: &mut Vec<T>,
    name_of: impl Fn(&T) -> Option<&str>,
    query: &HashMap<String, String>,
) -> ApiResult<()> {
    let Some(name) = query.get("name").filter(|n| !n.is_empty()) else {
        return Ok(());
    };
    if truthy(query, "use_regex") {
        let re = regex::Regex::new(name)
            .map_err(|e| ApiError::bad_request(format!("invalid regex '{name}': {e}")))?;
        items.retain(|i| name_of(i).is_some_and(|n| re.is_match(n)));
    } else {
        items.retain(|i| name_of(i).is_some_and(|n| n.contains(name.as_str())));
    }
    Ok(())
}

/// `columns=a,b.c`: only those fields.
fn with_columns(item: Value, query: &HashMap<String, String>) -> Value {
    match query.get("columns").filter(|c| !c.is_empty()) {
        Some(cols) => {
            let cols: Vec<&str> = cols.split(',').map(str::trim).collect();
            select_columns(&item, &cols)
        }
        None => item,
    }
}

/// `(page, page_size)` when the request asks for a page of `filtered` items, `None`
/// when it asks for the whole list.
fn paging(query: &HashMap<String, String>, filtered: usize) -> ApiResult<Option<(usize, usize)>> {
    let paged = query.contains_key("page") && query.get("pagination").is_none_or(|p| p != "false");
    if !paged {
        return Ok(None);
    }
    let page: usize = query
        .get("page")
        .map_or(Ok(1), |p| p.parse())
        .map_err(|_| ApiError::bad_request("page must be a number"))?;
    let page_size: usize = query
        .get("page_size")
        .map_or(Ok(100), |p| p.parse())
        .map_err(|_| ApiError::bad_request("page_size must be a number"))?;
    if page == 0 || page_size == 0 || page_size > 500 {
        return Err(ApiError::bad_request(
            "page must be >= 1 and page_size between 1 and 500",
        ));
    }
    let page_count = filtered.div_ceil(page_size).max(1);
    if page > page_count && filtered > 0 {
        return Err(ApiError::bad_request(format!(
            "page {page} is out of range (there are {page_count} pages)"
        )));
    }
    Ok(Some((page, page_size)))
}

fn page_reply(
    slice: Vec<Value>,
    page: usize,
    page_size: usize,
    filtered: usize,
    total: usize,
) -> Value {
    serde_json::json!({
        "filtered_count": filtered,
        "item_count": slice.len(),
        "items": slice,
        "page": page,
        "page_count": filtered.div_ceil(page_size).max(1),
        "page_size": page_size,
        "total_count": total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::AMQPValue;

    #[test]
    fn tables_round_trip_as_rabbitmq_converts_them() {
        let v = serde_json::json!({"x-max-length": 5, "s": "a", "b": true, "f": 1.5, "n": null, "a": [1, "x"], "t": {"k": 1}});
        let t = json_to_table(&v).unwrap();
        assert_eq!(
            t.inner().get("x-max-length"),
            Some(&AMQPValue::LongLongInt(5))
        );
        assert_eq!(table_to_json(&t), v);
    }

    #[test]
    fn booleans_may_be_strings() {
        let v = serde_json::json!({"a": "true", "b": false, "c": "yes"});
        assert!(boolean(&v, "a", false).unwrap());
        assert!(!boolean(&v, "b", true).unwrap());
        assert!(boolean(&v, "missing", true).unwrap());
        assert!(boolean(&v, "c", true).is_err());
    }

    #[test]
    fn timestamps_are_iso8601() {
        assert_eq!(iso8601_ms(0), "1970-01-01T00:00:00.000+00:00");
        assert_eq!(
            iso8601_ms(1_796_342_284_726),
            "2026-12-03T23:58:04.726+00:00"
        );
    }

    #[test]
    fn lazy_lists_answer_as_lists_do() {
        let names = ["b.2", "a.10", "c", "a.1", "b.1", "a.2", "zz", "a.1"];
        let items: Vec<(usize, &str)> = names.iter().copied().enumerate().collect();
        let render =
            |(i, n): &(usize, &str)| serde_json::json!({"name": n, "i": i, "messages": i % 3});
        let rendered: Vec<Value> = items.iter().map(render).collect();
        let q = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect()
        };
        for query in [
            q(&[]),
            q(&[("page", "1"), ("page_size", "3")]),
            q(&[("page", "2"), ("page_size", "3"), ("sort", "name")]),
            q(&[
                ("page", "1"),
                ("page_size", "2"),
                ("sort", "name"),
                ("sort_reverse", "true"),
            ]),
            q(&[
                ("page", "1"),
                ("page_size", "5"),
                ("name", "a."),
                ("sort", "name"),
            ]),
            q(&[
                ("page", "1"),
                ("name", "^a\\.[0-9]$"),
                ("use_regex", "true"),
            ]),
            q(&[("page", "1"), ("sort", "messages"), ("columns", "name")]),
            q(&[("page", "1"), ("sort", "name"), ("columns", "name,i")]),
            q(&[("page", "1"), ("name", "nothing")]),
            q(&[("page", "4"), ("page_size", "3")]),
            q(&[("page", "0")]),
            q(&[("page", "1"), ("name", "("), ("use_regex", "true")]),
            q(&[("page", "1"), ("pagination", "false"), ("sort", "name")]),
        ] {
            let lazy = list_lazy(items.clone(), |(_, n)| n, render, &query);
            let eager = list(rendered.clone(), &query);
            assert_eq!(lazy, eager, "{query:?}");
        }
    }

    #[test]
    fn lists_filter_sort_page_and_select_columns() {
        let items: Vec<Value> = (0..25)
            .map(|i| serde_json::json!({"name": format!("q{i:02}"), "messages": 25 - i, "x": {"y": i}}))
            .collect();
        let q = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        let all = list(items.clone(), &q(&[])).unwrap();
        assert_eq!(all.as_array().unwrap().len(), 25);
        let paged = list(
            items.clone(),
            &q(&[("page", "2"), ("page_size", "10"), ("sort", "messages")]),
        )
        .unwrap();
        assert_eq!(paged["page_count"], 3);
        assert_eq!(paged["item_count"], 10);
        assert_eq!(paged["total_count"], 25);
        assert_eq!(paged["items"][0]["messages"], 11);
        let filtered = list(
            items.clone(),
            &q(&[
                ("name", "^q1"),
                ("use_regex", "true"),
                ("columns", "name,x.y"),
            ]),
        )
        .unwrap();
        let arr = filtered.as_array().unwrap();
        assert_eq!(arr.len(), 10);
        assert_eq!(arr[0], serde_json::json!({"name": "q10", "x": {"y": 10}}));
        assert!(list(items, &q(&[("page", "9")])).is_err());
    }
}
