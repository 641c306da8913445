//! Queues, exchanges and bindings: `/api/queues`, `/api/exchanges`, `/api/bindings`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use warren_broker::access::Resource;
use warren_broker::exchange::Destination;
use warren_broker::vhost::{BindingInfo, ExchangeInfo};
use warren_broker::{ExchangeKind, ExchangeOptions, Queue, QueueOptions, VHost};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::{self, details};
use crate::AppState;

type Q = Query<HashMap<String, String>>;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/queues", get(list_queues))
        .route("/api/queues/{vhost}", get(list_queues_in))
        .route(
            "/api/queues/{vhost}/{name}",
            get(get_queue).put(put_queue).delete(delete_queue),
        )
        .route(
            "/api/queues/{vhost}/{name}/contents",
            axum::routing::delete(purge_queue),
        )
        .route("/api/queues/{vhost}/{name}/get", post(get_messages))
        .route("/api/queues/{vhost}/{name}/bindings", get(queue_bindings))
        .route("/api/exchanges", get(list_exchanges))
        .route("/api/exchanges/{vhost}", get(list_exchanges_in))
        .route(
            "/api/exchanges/{vhost}/{name}",
            get(get_exchange).put(put_exchange).delete(delete_exchange),
        )
        .route("/api/exchanges/{vhost}/{name}/publish", post(publish))
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/source",
            get(bindings_from),
        )
        .route(
            "/api/exchanges/{vhost}/{name}/bindings/destination",
            get(bindings_to),
        )
        .route("/api/bindings", get(list_bindings))
        .route("/api/bindings/{vhost}", get(list_bindings_in))
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{dest}",
            get(get_bindings_between).post(post_binding),
        )
        .route(
            "/api/bindings/{vhost}/e/{source}/{kind}/{dest}/{props}",
            get(get_binding).delete(delete_binding),
        )
}

fn vhost(state: &AppState, name: &str) -> ApiResult<Arc<VHost>> {
    state
        .admin
        .broker()
        .vhost(name)
        .ok_or_else(ApiError::not_found)
}

/// The vhosts the caller sees: one (checked) or all visible.
fn visible_vhosts(
    state: &AppState,
    caller: &Caller,
    only: Option<&str>,
) -> ApiResult<Vec<Arc<VHost>>> {
    match only {
        Some(name) => {
            let v = vhost(state, name)?;
            if !caller.sees_vhost(name) {
                return Err(ApiError::not_authorised("Access refused."));
            }
            Ok(vec![v])
        }
        None => {
            let mut all: Vec<Arc<VHost>> = state
                .admin
                .broker()
                .vhosts()
                .into_iter()
                .filter(|v| caller.sees_vhost(&v.name))
                .collect();
            all.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(all)
        }
    }
}

// ----- queues -----

fn queue_json(state: &AppState, v: &VHost, q: &Queue) -> Value {
    let s = q.snapshot();
    let r = state.rates.queue(&v.name, &q.name);
    let node = state.admin.node_name();
    let policy = v.queue_policy(&q.name);
    let operator_policy = v.queue_operator_policy(&q.name);
    // The connections are looked up only for a queue with consumers.
    let conns = if s.consumers_detail.is_empty() {
        Vec::new()
    } else {
        state.admin.connections()
    };
    let consumer_details: Vec<Value> = s
        .consumers_detail
        .iter()
        .map(|c| crate::resources::consumer_json(state, &conns, &v.name, &q.name, c))
        .collect();
    json!({
        "name": q.name,
        "vhost": v.name,
        "durable": q.durable,
        "auto_delete": q.auto_delete,
        "exclusive": q.exclusive_owner.is_some(),
        "arguments": json::table_to_json(&q.arguments),
        "type": q.type_name(),
        "node": node,
        "state": "running",
        "policy": policy.as_ref().map(|p| p.name.clone()),
        "operator_policy": operator_policy.as_ref().map(|p| p.name.clone()),
        "effective_policy_definition": Value::Object(
            warren_broker::policy::effective_definition(policy.as_ref(), operator_policy.as_ref())
        ),
        "exclusive_consumer_tag": s.exclusive_consumer,
        "single_active_consumer_tag": Value::Null,
        "consumers": s.consumers,
        "consumer_capacity": if s.consumers > 0 { 1.0 } else { 0.0 },
        "consumer_utilisation": if s.consumers > 0 { 1.0 } else { 0.0 },
        "consumer_details": consumer_details,
        "idle_since": json::iso8601_ms(s.idle_since_ms),
        "memory": 0,
        "backing_queue_status": {"mode": "default", "version": 2, "len": s.ready},
        // Per-exchange and per-channel breakdowns exist only at RabbitMQ's `detailed` level.
        "incoming": [],
        "deliveries": [],
        "messages": s.ready + s.unacked,
        "messages_details": details(r.ready + r.unacked),
        "messages_ready": s.ready,
        "messages_ready_details": details(r.ready),
        "messages_unacknowledged": s.unacked,
        "messages_unacknowledged_details": details(r.unacked),
        "message_bytes": s.ready_bytes + s.unacked_bytes,
        "message_bytes_ready": s.ready_bytes,
        "message_bytes_unacknowledged": s.unacked_bytes,
        "message_bytes_ram": s.ready_bytes + s.unacked_bytes,
        "message_bytes_persistent": 0,
        "message_bytes_paged_out": 0,
        "messages_ram": s.ready + s.unacked,
        "messages_ready_ram": s.ready,
        "messages_unacknowledged_ram": s.unacked,
        "messages_persistent": 0,
        "messages_paged_out": 0,
        "head_message_timestamp": Value::Null,
        "recoverable_slaves": Value::Null,
        "message_stats": {
            "publish": s.stats.publish,
            "publish_details": details(r.publish),
            "deliver": s.stats.deliver,
            "deliver_details": details(r.deliver),
            "deliver_no_ack": s.stats.deliver_no_ack,
            "deliver_no_ack_details": details(r.deliver_no_ack),
            "get": s.stats.get,
            "get_details": details(r.get),
            "get_no_ack": s.stats.get_no_ack,
            "get_no_ack_details": details(r.get_no_ack),
            "get_empty": s.stats.get_empty,
            "get_empty_details": details(r.get_empty),
            "deliver_get": s.stats.deliver_get(),
            "deliver_get_details": details(r.deliver_get),
            "redeliver": s.stats.redeliver,
            "redeliver_details": details(r.redeliver),
            "ack": s.stats.ack,
            "ack_details": details(r.ack),
        },
    })
}

async fn list_queues(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Q,
) -> ApiResult<Json<Value>> {
    queues_of(&state, &caller, None, &q)
}

async fn list_queues_in(
    State(state): State<AppState>,
    caller: Caller,
    Path(vh): Path<String>,
    Query(q): Q,
) -> ApiResult<Json<Value>> {
    queues_of(&state, &caller, Some(&vh), &q)
}

fn queues_of(
    state: &AppState,
    caller: &Caller,
    only: Option<&str>,
    q: &HashMap<String, String>,
) -> ApiResult<Json<Value>> {
    let mut items = Vec::new();
    for v in visible_vhosts(state, caller, only)? {
        for queue in v.queues() {
            items.push((v.clone(), queue));
        }
    }
    // Only the requested page is rendered when it can be (the web UI's queue list).
    json::list_lazy(
        items,
        |(_, queue)| queue.name.as_str(),
        |(v, queue)| queue_json(state, v, queue),
        q,
    )
    .map(Json)
}

fn find_queue(
    state: &AppState,
    caller: &Caller,
    vh: &str,
    name: &str,
) -> ApiResult<(Arc<VHost>, Arc<Queue>)> {
    let v = vhost(state, vh)?;
    if !caller.sees_vhost(vh) {
        return Err(ApiError::not_authorised("Access refused."));
    }
    let q = v
        .queues()
        .into_iter()
        .find(|q| q.name == name)
        .ok_or_else(ApiError::not_found)?;
    Ok((v, q))
}

async fn get_queue(
    State(state): State<AppState>,
    caller: Caller,
    Path((vh, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let (v, q) = find_queue(&state, &caller, &vh, &name)?;
    Ok(Json(queue_json(&state, &v, &q)))
}

/// Connection id used for declares made over HTTP (they own no exclusive queue).
const HTTP_CONNECTION: u64 = 0;

async fn put_queue(
    State(state): State<AppState>,
    caller: Caller,
    Path((vh, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let b = json::body(&body)?;
    let grant = caller.vhost_grant(&vh)?;
    let v = vhost(&state, &vh)?;
    if name.is_empty() {
        return Err(ApiError::bad_request("queue name must not be empty"));
    }
    let existed = v.queue(&name, HTTP_CONNECTION).is_ok();
    let arguments = json::json_to_table(b.get("arguments").unwrap_or(&Value::Null))?;
    let dlx = warren_broker::args::string_arg(&arguments, "x-dead-letter-exchange");
    let authorize = |queue: &str, new: bool| grant.check_queue_declare(queue, new, dlx.as_deref());
    v.declare_queue_checked(
        QueueOptions {
            name,
            passive: false,
            durable: json::boolean(&b, "durable", false)?,
            exclusive: false,
            auto_delete: json::boolean(&b, "auto_delete", false)?,
            arguments,
        },
        HTTP_CONNECTION,
        &authorize,
    )
    .map_err(ApiError::engine)?;
    Ok(if existed {
        StatusCode::NO_CONTENT.into_response()
    } else {
        StatusCode::CREATED.into_response()
    })
}

async fn delete_queue(
    State(state): State<AppState>,
    caller: Caller,
    Path((vh, name)): Path<(String, String)>,
    Query(q): Q,
) -> ApiResult<StatusCode> {
    let grant = caller.vhost_grant(&vh)?;
    let v = vhost(&state, &vh)?;
    grant
        .check_configure(Resource::Queue, &name)
        .map_err(ApiError::engine)?;
    if v.queue(&name, HTTP_CONNECTION).is_err() {
        return Err(ApiError::not_found());
    }
    let flag = |k: &str| q.get(k).is_some_and(|v| v == "true");
    v.delete_queue(&name, flag("if-unused"), flag("if-empty"), HTTP_CONNECTION)
        .map_err(ApiError::engine)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn purge_queue(
    State(state): State<AppState>,
    caller: Caller,
    Path((vh, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    let grant = caller.vhost_grant(&vh)?;
    let v = vhost(&state, &vh)?;
    grant
        .check_read(Resource::Queue, &name)
        .map_err(ApiError::engine)?;
    v.purge_queue(&name, HTTP_CONNECTION)
        .map_err(ApiError::engine)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/queues/{vhost}/{name}/get`: RabbitMQ's "get messages" (for inspection).
async fn get_messages(
    State(state): State<AppState>,
    caller: Caller,
    Path((vh, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let b = json::body(&body)?;
    let grant = caller.vhost_grant(&vh)?;
    let v = vhost(&state, &vh)?;
    grant
        .check_read(Resource::Queue, &name)
        .map_err(ApiError::engine)?;
    let q = v.queue(&name, HTTP_CONNECTION).map_err(ApiError::engine)?;
    let count = match b.get("count") {
        None => 1,
        Some(Value::Number(n)) => n.as_u64().unwrap_or(1),
        Some(Value::String(s)) => s
            .parse()
            .map_err(|_| ApiError::bad_request("count must be a number"))?,
        Some(_) => return Err(ApiError::bad_request("count must be a number")),
    };
    let ackmode = json::string(&b, "ackmode")?
        .or(json::string(&b, "requeue")?.map(|r| {
            if r == "true" {
                "ack_requeue_true".to_string()
            } else {
                "ack_requeue_false".to_string()
            }
        }))
        .ok_or_else(|| ApiError::bad_request("ackmode is required"))?;
    let requeue = match ackmode.as_str() {
        "ack_requeue_true" | "reject_requeue_true" => true,
        "ack_requeue_false" | "reject_requeue_false" => false,
        other => return Err(ApiError::bad_request(format!("unknown ackmode '{other}'"))),
    };
    let reject = ackmode.starts_with("reject");
    let encoding = json::string(&b, "encoding")?.unwrap_or_else(|| "auto".into());
    if encoding != "auto" && encoding != "base64" {
        return Err(ApiError::bad_request(format!(
            "unknown encoding '{encoding}'"
        )));
    }
    let truncate = match b.get("truncate") {
        Some(Value::Number(n)) => n.as_u64().map(|n| n as usize),
        Some(Value::String(s)) => s.parse().ok(),
        _ => None,
    };
    let mut taken = Vec::new();
    for _ in 0..count {
        let Some((m, remaining)) = q.get(false) else {
            break;
        };
        taken.push((m, remaining));
    }
    let mut out = Vec::new();
    for (m, remaining) in &taken {
        let body = &m.message.body;
        let shown = &body[..truncate.map_or(body.len(), |t| t.min(body.len()))];
        let (payload, enc) = match (encoding.as_str(), std::str::from_utf8(shown)) {
            ("auto", Ok(text)) => (text.to_string(), "string"),
            _ => {
                use base64::Engine as _;
                (
                    base64::engine::general_purpose::STANDARD.encode(shown),
                    "base64",
                )
            }
        };
        let props = m.message.full_properties();
        out.push(json!({
            "payload_bytes": body.len(),
            "redelivered": m.redelivered,
            "exchange": m.message.exchange,
            "routing_key": m.message.routing_key,
            "message_count": remaining,
            "properties": properties_json(&props),
            "payload": payload,
            "payload_encoding": enc,
        }));
    }
    // Settle: requeue (marked redelivered), ack, or reject (dead-lettering).
    let messages: Vec<_> = taken.into_iter().map(|(m, _)| m).collect();
    if !messages.is_empty() {
        if requeue {
            q.requeue(messages, true);
        } else if reject {
            q.reject(messages);
        } else {
            q.settle(&messages);
            q.flush_marks();
        }
    }
    Ok(Json(Value::Array(out)))
}

/// Message properties as the management API shows them (only those set).
pub(crate) fn properties_json(p: &amq_protocol::protocol::basic::AMQPProperties) -> Value {
    let mut m = serde_json::Map::new();
    let s = |v: &amq_protocol::types::ShortString| Value::String(v.as_str().to_string());
    if let Some(v) = p.content_type() {
        m.insert("content_type".into(), s(v));
    }
    if let Some(v) = p.content_encoding() {
        m.insert("content_encoding".into(), s(v));
    }
    if let Some(v) = p.headers() {
        m.insert("headers".into(), json::table_to_json(v));
    }
    if let Some(v) = p.delivery_mode() {
        m.insert("delivery_mode".into(), Value::from(*v));
    }
    if let Some(v) = p.priority() {
        m.insert("priority".into(), Value::from(*v));
    }
    if let Some(v) = p.correlation_id() {
        m.insert("correlation_id".into(), s(v));
    }
    if let Some(v) = p.reply_to() {
        m.insert("reply_to".into(), s(v));
    }
    if let Some(v) = p.expiration() {
        m.insert("expiration".into(), s(v));
    }
    if let Some(v) = p.message_id() {
        m.insert("message_id".into(), s(v));
    }
    if let Some(v) = p.timestamp() {
        m.insert("timestamp".into(), Value::from(*v));
    }
    if let Some(v) = p.kind() {
        m.insert("type".into(), s(v));
    }
    if let Some(v) = p.user_id() {
        m.insert("user_id".into(), s(v));
    }
    if let Some(v) = p.app_id() {
        m.insert("app_id".into(), s(v));
    }
    Value::Object(m)
}

async fn queue_bindings(
    State(state): State<AppState>,
    caller: Caller,
    Path((vh, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let (v, _) = find_queue(&state, &caller, &vh, &name)?;
    let items = v
        .bindings()
        .into_iter()
        .filter(|b| matches!(&b.destination, Destination::Queue(q) if *q == name))
        .map(|b| binding_json(&v.name, &b))
        .collect();
    Ok(Json(Value::Array(items)))
}

// ----- exchanges -----

fn exchange_json(v: &VHost, x: &ExchangeInfo) -> Value {
    let vhost = &v.name;
    let policy = v.exchange_policy(&x.name).map(|p| p.name);
    json!({
        "name": x.name,
        "vhost": vhost,
        "type": x.kind.as_str(),
        "durable": x.durable,
        "auto_delete": x.auto_delete,
        "internal": x.internal,
        "arguments": json::table_to_json(&x.arguments),
        "user_who_performed_action": "rmq-internal",
        "policy": policy,
        // Per-source/destination rates exist only at RabbitMQ's `detailed` level.
        "incoming": [],
        "outgoing": [],
    })
}

async fn list_exchanges(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Q,
) -> ApiResult<Json<Value>> {
    exchanges_of(&state, &caller, None, &q)
}

async fn list_exchanges_in(
    State(state): State<AppState>,
    caller: Caller,
    Path(vh): Path<String>,
    Query(q): Q,
) -> ApiResult<Json<Value>> {
    exchanges_of(&state, &caller, Some(&vh), &q)
}

fn exchanges_of(
    state: &AppState,
    caller: &Caller,
    only: Option<&str>,
    q: &HashMap<String, String>,
) -> ApiResult<Json<Value>> {
    let mut items = Vec::new();
    for v in visible_vhosts(state, caller, only)? {
        for x in v.exchanges() {
            items.push(exchange_json(&v, &x));
        }
    }
    json::list(items, q).map(Json)
}

/// The default exchange is `amq.default` in URLs.
fn exchange_name(name: &str) -> &str {
    if name == "amq.default" {
        ""
    } else {
        name
    }
}

async fn get_exchange(
    State(state): State<AppState>,
    caller: Caller,
    Path((vh, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let v = visible_vhosts(&state, &caller, Some(&vh))?.remove(0);
    let x = v
        .exchange(exchange_name(&name))
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(exchange_json(&v, &x)))
}

async fn put_exchange(
    State(state): State<AppState>,
    caller: Caller,
    Path((vh, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let b = json::body(&body)?;
    let grant = caller.vhost_grant(&vh)?;
    let v = vhost(&state, &vh)?;
    let kind =
        json::string(&b, "type")?.ok_or_else(|| ApiError::bad_request("type is required"))?;
    let arguments = json::json_to_table(b.get("arguments").unwrap_or(&Value::Null))?;
    grant
        .check_configure(Resource::Exchange, &name)
        .map_err(ApiError::engine)?;
    let existed = v.has_exchange(&name);
    v.declare_exchange(&ExchangeOptions {
        name,
        kind,
        passive: false,
        durable: json::boolean(&b, "durable", true)?,
        auto_delete: json::boolean(&b, "auto_delete", false)?,
        internal: json::boolean(&b, "internal", false)?,
        arguments,
    })
    .map_err(ApiError::engine)?;
    Ok(if existed {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::CREATED
    })
}

async fn delete_exchange(
    State(state): State<AppState>,
    caller: Caller,
    Path((vh, name)): Path<(String, String)>,
    Query(q): Q,
) -> ApiResult<StatusCode> {
    let grant = caller.vhost_grant(&vh)?;
    let v = vhost(&state, &vh)?;
    if !v.has_exchange(&name) {
        return Err(ApiError::not_found());
    }
    grant
        .check_configure(Resource::Exchange, &name)
        .map_err(ApiError::engine)?;
    v.delete_exchange(&name, q.get("if-unused").is_some_and(|v| v == "true"))
        .map_err(ApiError::engine)?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/exchanges/{vhost}/{name}/publish`: `{"routed": bool}`.
async fn publish(
    State(state): State<AppState>,
    caller: Caller,
    Path((vh, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let b = json::body(&body)?;
    let grant = caller.vhost_grant(&vh)?;
    let v = vhost(&state, &vh)?;
    let exchange = exchange_name(&name).to_string();
    grant
        .check_write(Resource::Exchange, &exchange)
        .map_err(ApiError::engine)?;
    let routing_key = json::string(&b, "routing_key")?.unwrap_or_default();
    let payload = json::string(&b, "payload")?.unwrap_or_default();
    let encoding = json::string(&b, "payload_encoding")?.unwrap_or_else(|| "string".into());
    let body_bytes = match encoding.as_str() {
        "string" => payload.into_bytes(),
        "base64" => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(payload.as_bytes())
                .map_err(|_| ApiError::bad_request("payload is not valid base64"))?
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "payload_encoding must be string or base64, not '{other}'"
            )))
        }
    };
    let props = properties_from_json(b.get("properties").unwrap_or(&Value::Null))?;
    let raw = amq_protocol::protocol::basic::gen_properties(&props)(
        amq_protocol::frame::WriteContext::from(Vec::new()),
    )
    .map(|c| bytes::Bytes::from(c.write))
    .map_err(|_| ApiError::bad_request("cannot encode properties"))?;
    v.check_publish(&exchange).map_err(ApiError::engine)?;
    let message = Arc::new(warren_broker::Message::new(
        &exchange,
        &routing_key,
        raw,
        bytes::Bytes::from(body_bytes),
    ));
    let queues = v
        .route(&exchange, &routing_key, &message)
        .map_err(ApiError::engine)?;
    let routed = !queues.is_empty();
    let message = if message.has_bcc() {
        Arc::new(message.without_bcc())
    } else {
        message
    };
    for q in queues {
        if let Err(e) = q.publish(message.clone()) {
            return Err(ApiError::internal(format!("cannot store the message: {e}")));
        }
    }
    Ok(Json(json!({ "routed": routed })))
}

fn properties_from_json(v: &Value) -> ApiResult<amq_protocol::protocol::basic::AMQPProperties> {
    use amq_protocol::types::ShortString;
    let mut p = amq_protocol::protocol::basic::AMQPProperties::default();
    let Value::Object(m) = v else {
        return Ok(p);
    };
    let short = |k: &str, v: &Value| -> ApiResult<ShortString> {
        let s = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        ShortString::try_new(s).map_err(|_| ApiError::bad_request(format!("{k} is too long")))
    };
    let int = |k: &str, v: &Value| -> ApiResult<u64> {
        match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        }
        .ok_or_else(|| ApiError::bad_request(format!("{k} must be a number")))
    };
    for (k, v) in m {
        p = match k.as_str() {
            "content_type" => p.with_content_type(short(k, v)?),
            "content_encoding" => p.with_content_encoding(short(k, v)?),
            "headers" => p.with_headers(json::json_to_table(v)?),
            "delivery_mode" => p.with_delivery_mode(int(k, v)? as u8),
            "priority" => p.with_priority(int(k, v)? as u8),
            "correlation_id" => p.with_correlation_id(short(k, v)?),
            "reply_to" => p.with_reply_to(short(k, v)?),
            "expiration" => p.with_expiration(short(k, v)?),
            "message_id" => p.with_message_id(short(k, v)?),
            "timestamp" => p.with_timestamp(int(k, v)?),
            "type" => p.with_type(short(k, v)?),
            "user_id" => p.with_user_id(short(k, v)?),
            "app_id" => p.with_app_id(short(k, v)?),
            other => return Err(ApiError::bad_request(format!("unknown property '{other}'"))),
        };
    }
    Ok(p)
}

// ----- bindings -----

/// RabbitMQ's `properties_key`: the routing key (`~` when empty) and, with arguments,
/// `~` and a hash of them.
fn properties_key(b: &BindingInfo) -> String {
    let key = if b.routing_key.is_empty() {
        "~".to_string()
    } else {
        quote_plus(&b.routing_key)
    };
    if b.arguments.inner().is_empty() {
        key
    } else {
        let text = json::table_to_json(&b.arguments).to_string();
        // FNV-1a of the arguments' JSON: stable for equal arguments.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in text.bytes() {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{key}~{h:x}")
    }
}

/// Form-style quoting, as RabbitMQ quotes routing keys in `properties_key`: letters,
/// digits and `-_.` stay, a space is `+`, anything else `%XX`.
fn quote_plus(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => out.push(char::from(b)),
            b' ' => out.push('+'),
            other => out.push_str(&format!("%{other:02X}")),
        }
    }
    out
}

/// Whether `props` from a URL (already percent-decoded once by the router) names `b`.
fn same_props(b: &BindingInfo, props: &str) -> bool {
    let key = properties_key(b);
    if key == props {
        return true;
    }
    let bytes = key.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => decoded.push(v),
                    None => return false,
                }
                i += 3;
            }
            b'+' => {
                decoded.push(b' ');
                i += 1;
            }
            other => {
                decoded.push(other);
                i += 1;
            }
        }
    }
    decoded == props.as_bytes()
}

fn binding_json(vhost: &str, b: &BindingInfo) -> Value {
    let (dest, kind) = match &b.destination {
        Destination::Queue(q) => (q.as_str(), "queue"),
        Destination::Exchange(x) => (x.as_str(), "exchange"),
    };
    json!({
        "source": b.source,
        "vhost": vhost,
        "destination": dest,
        "destination_type": kind,
        "routing_key": b.routing_key,
        "arguments": json::table_to_json(&b.arguments),
        "properties_key": properties_key(b),
    })
}

async fn list_bindings(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Q,
) -> ApiResult<Json<Value>> {
    bindings_of(&state, &caller, None, &q)
}

async fn list_bindings_in(
    State(state): State<AppState>,
    caller: Caller,
    Path(vh): Path<String>,
    Query(q): Q,
) -> ApiResult<Json<Value>> {
    bindings_of(&state, &caller, Some(&vh), &q)
}

fn bindings_of(
    state: &AppState,
    caller: &Caller,
    only: Option<&str>,
    q: &HashMap<String, String>,
) -> ApiResult<Json<Value>> {
    let mut items = Vec::new();
    for v in visible_vhosts(state, caller, only)? {
        for b in v.bindings() {
            items.push(binding_json(&v.name, &b));
        }
    }
    json::list(items, q).map(Json)
}

async fn bindings_from(
    State(state): State<AppState>,
    caller: Caller,
    Path((vh, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let v = visible_vhosts(&state, &caller, Some(&vh))?.remove(0);
    let name = exchange_name(&name).to_string();
    if !v.has_exchange(&name) {
        return Err(ApiError::not_found());
    }
    Ok(Json(Value::Array(
        v.bindings()
            .into_iter()
            .filter(|b| b.source == name)
            .map(|b| binding_json(&v.name, &b))
            .collect(),
    )))
}

async fn bindings_to(
    State(state): State<AppState>,
    caller: Caller,
    Path((vh, name)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let v = visible_vhosts(&state, &caller, Some(&vh))?.remove(0);
    if !v.has_exchange(&name) {
        return Err(ApiError::not_found());
    }
    Ok(Json(Value::Array(
        v.bindings()
            .into_iter()
            .filter(|b| matches!(&b.destination, Destination::Exchange(x) if *x == name))
            .map(|b| binding_json(&v.name, &b))
            .collect(),
    )))
}

/// The engine's binding check (the same as AMQP's queue.bind / exchange.bind).
fn check_bind(
    grant: &warren_broker::access::Grant,
    v: &VHost,
    dest: &Destination,
    source: &str,
    key: &str,
) -> ApiResult<()> {
    let kind = match dest {
        Destination::Queue(_) => Resource::Queue,
        Destination::Exchange(_) => Resource::Exchange,
    };
    let topic =
        grant.has_topic_permissions() && v.exchange_kind(source) == Some(ExchangeKind::Topic);
    grant
        .check_bind(kind, dest.name(), source, key, topic)
        .map_err(ApiError::engine)
}

fn destination(kind: &str, name: &str) -> ApiResult<Destination> {
    match kind {
        "q" => Ok(Destination::Queue(name.to_string())),
        "e" => Ok(Destination::Exchange(name.to_string())),
        _ => Err(ApiError::not_found()),
    }
}

fn between(v: &VHost, source: &str, dest: &Destination) -> Vec<BindingInfo> {
    v.bindings()
        .into_iter()
        .filter(|b| b.source == source && &b.destination == dest)
        .collect()
}

fn check_ends_exist(v: &VHost, source: &str, dest: &Destination) -> ApiResult<()> {
    let dest_exists = match dest {
        Destination::Queue(q) => v.queue(q, HTTP_CONNECTION).is_ok(),
        Destination::Exchange(x) => v.has_exchange(x),
    };
    if !v.has_exchange(source) || !dest_exists {
        return Err(ApiError::not_found());
    }
    Ok(())
}

async fn get_bindings_between(
    State(state): State<AppState>,
    caller: Caller,
    Path((vh, source, kind, dest)): Path<(String, String, String, String)>,
) -> ApiResult<Json<Value>> {
    let v = visible_vhosts(&state, &caller, Some(&vh))?.remove(0);
    let source = exchange_name(&source).to_string();
    let dest = destination(&kind, &dest)?;
    check_ends_exist(&v, &source, &dest)?;
    Ok(Json(Value::Array(
        between(&v, &source, &dest)
            .iter()
            .map(|b| binding_json(&v.name, b))
            .collect(),
    )))
}

/// `POST .../e/{source}/{q|e}/{dest}`: 201 with `Location: {properties_key}` (Terraform
/// takes the binding's id from it).
async fn post_binding(
    State(state): State<AppState>,
    caller: Caller,
    Path((vh, source, kind, dest)): Path<(String, String, String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    let b = json::body(&body)?;
    let grant = caller.vhost_grant(&vh)?;
    let v = vhost(&state, &vh)?;
    let dest = destination(&kind, &dest)?;
    let key = json::string(&b, "routing_key")?.unwrap_or_default();
    let arguments = json::json_to_table(b.get("arguments").unwrap_or(&Value::Null))?;
    check_bind(&grant, &v, &dest, &source, &key)?;
    match &dest {
        Destination::Queue(q) => v.bind_queue(q, &source, &key, &arguments, HTTP_CONNECTION),
        Destination::Exchange(x) => v.bind_exchange(x, &source, &key, &arguments),
    }
    .map_err(ApiError::engine)?;
    let info = BindingInfo {
        source,
        destination: dest,
        routing_key: key,
        arguments,
    };
    // RabbitMQ answers `Location: DESTINATION/PROPERTIES_KEY`, relative to the request.
    let location = format!(
        "{}/{}",
        quote_plus(info.destination.name()),
        properties_key(&info)
    );
    Ok((StatusCode::CREATED, [(header::LOCATION, location)]).into_response())
}

async fn get_binding(
    State(state): State<AppState>,
    caller: Caller,
    Path((vh, source, kind, dest, props)): Path<(String, String, String, String, String)>,
) -> ApiResult<Json<Value>> {
    let v = visible_vhosts(&state, &caller, Some(&vh))?.remove(0);
    let source = exchange_name(&source).to_string();
    let dest = destination(&kind, &dest)?;
    between(&v, &source, &dest)
        .iter()
        .find(|b| same_props(b, &props))
        .map(|b| Json(binding_json(&v.name, b)))
        .ok_or_else(ApiError::not_found)
}

async fn delete_binding(
    State(state): State<AppState>,
    caller: Caller,
    Path((vh, source, kind, dest, props)): Path<(String, String, String, String, String)>,
) -> ApiResult<StatusCode> {
    let grant = caller.vhost_grant(&vh)?;
    let v = vhost(&state, &vh)?;
    let dest = destination(&kind, &dest)?;
    let Some(b) = between(&v, &source, &dest)
        .into_iter()
        .find(|b| same_props(b, &props))
    else {
        return Err(ApiError::not_found());
    };
    check_bind(&grant, &v, &dest, &source, &b.routing_key)?;
    match &dest {
        Destination::Queue(q) => {
            v.unbind_queue(q, &source, &b.routing_key, &b.arguments, HTTP_CONNECTION)
        }
        Destination::Exchange(x) => v.unbind_exchange(x, &source, &b.routing_key, &b.arguments),
    }
    .map_err(ApiError::engine)?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_keys_as_rabbitmq_writes_them() {
        let b = |key: &str| BindingInfo {
            source: "x".into(),
            destination: Destination::Queue("q".into()),
            routing_key: key.into(),
            arguments: Default::default(),
        };
        assert_eq!(properties_key(&b("k")), "k");
        assert_eq!(properties_key(&b("")), "~");
        assert_eq!(properties_key(&b("a/b")), "a%2Fb");
        assert_eq!(properties_key(&b("a.#")), "a.%23");
    }
}
