//! Connections, consumers and definitions: `/api/connections`, `/api/consumers`,
//! `/api/definitions`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use warren_server::registry::ConnectionInfo;

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json;
use crate::AppState;

type Q = Query<HashMap<String, String>>;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/connections", get(list_connections))
        .route(
            "/api/connections/{name}",
            get(get_connection).delete(close_connection),
        )
        .route("/api/vhosts/{vhost}/connections", get(vhost_connections))
        .route("/api/channels", get(list_channels))
        .route("/api/channels/{name}", get(get_channel))
        .route("/api/connections/{name}/channels", get(connection_channels))
        .route("/api/vhosts/{vhost}/channels", get(vhost_channels))
        .route("/api/consumers", get(list_consumers))
        .route("/api/consumers/{vhost}", get(vhost_consumers))
        .route("/api/definitions", get(export_all).post(import_all))
        .route(
            "/api/definitions/{vhost}",
            get(export_vhost).post(import_vhost),
        )
}

fn connection_json(state: &AppState, c: &ConnectionInfo, node: &str) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let connected_at = c
        .connected_at
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let (recv_rate, send_rate) = state.rates.connection(c.id);
    json!({
        "name": c.name,
        "node": node,
        "user": c.user,
        "user_who_performed_action": c.user,
        "vhost": c.vhost,
        "peer_host": warren_server::registry::host_of(c.peer),
        "peer_port": c.peer.port(),
        "host": warren_server::registry::host_of(c.local),
        "port": c.local.port(),
        "client_properties": json::table_to_json(&c.client_properties),
        "connected_at": connected_at,
        "state": "running",
        "type": "network",
        "protocol": c.protocol,
        "ssl": c.tls,
        "ssl_protocol": Value::Null,
        "ssl_key_exchange": Value::Null,
        "ssl_cipher": Value::Null,
        "ssl_hash": Value::Null,
        "peer_cert_subject": Value::Null,
        "peer_cert_issuer": Value::Null,
        "peer_cert_validity": Value::Null,
        "auth_mechanism": c.auth_mechanism,
        "channels": c.stats.channels.load(Relaxed),
        "recv_oct": c.stats.recv_oct.load(Relaxed),
        "recv_oct_details": json::details(recv_rate),
        "recv_cnt": c.stats.recv_cnt.load(Relaxed),
        "send_oct": c.stats.send_oct.load(Relaxed),
        "send_oct_details": json::details(send_rate),
        "send_cnt": c.stats.send_cnt.load(Relaxed),
        "send_pend": 0,
        "timeout": c.heartbeat,
        "frame_max": c.frame_max,
        "channel_max": c.channel_max,
    })
}

fn visible_connections(state: &AppState, caller: &Caller, vhost: Option<&str>) -> Vec<Value> {
    let node = state.admin.node_name();
    state
        .admin
        .connections()
        .iter()
        .filter(|c| caller.is_monitor() || c.user == caller.name())
        .filter(|c| vhost.is_none_or(|v| c.vhost == v))
        .map(|c| connection_json(state, c, &node))
        .collect()
}

async fn list_connections(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Q,
) -> ApiResult<Json<Value>> {
    json::list(visible_connections(&state, &caller, None), &q).map(Json)
}

async fn vhost_connections(
    State(state): State<AppState>,
    caller: Caller,
    Path(vh): Path<String>,
    Query(q): Q,
) -> ApiResult<Json<Value>> {
    if state.admin.broker().vhost(&vh).is_none() {
        return Err(ApiError::not_found());
    }
    json::list(visible_connections(&state, &caller, Some(&vh)), &q).map(Json)
}

async fn get_connection(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    visible_connections(&state, &caller, None)
        .into_iter()
        .find(|c| c["name"] == name.as_str())
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

/// `DELETE /api/connections/{name}`: closes it with 320 and the `X-Reason` header (RabbitMQ's
/// default text otherwise).
async fn close_connection(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> ApiResult<StatusCode> {
    let owner = state
        .admin
        .connections()
        .iter()
        .find(|c| c.name == name)
        .map(|c| c.user.clone())
        .ok_or_else(ApiError::not_found)?;
    if !caller.is_admin() && owner != caller.name() {
        return Err(ApiError::not_authorised("Not administrator user"));
    }
    let reason = headers
        .get("x-reason")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("Closed via management plugin")
        .to_string();
    state.admin.close_connection(&name, &reason);
    Ok(StatusCode::NO_CONTENT)
}

// ----- channels -----

/// How long a channel listing waits for busy connections to report.
const REPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

fn channel_json(
    state: &AppState,
    c: &ConnectionInfo,
    ch: &warren_server::stats::ChannelReport,
    node: &str,
) -> Value {
    let rates = state.rates.channel(c.id, ch.number);
    let values = crate::rates::channel_values(&ch.counters);
    let mut stats = serde_json::Map::new();
    for (i, name) in crate::rates::CHANNEL_COUNTERS.iter().enumerate() {
        stats.insert((*name).to_string(), json!(values[i]));
        stats.insert(format!("{name}_details"), json::details(rates[i]));
    }
    json!({
        "name": format!("{} ({})", c.name, ch.number),
        "node": node,
        "number": ch.number,
        "user": c.user,
        "user_who_performed_action": c.user,
        "vhost": c.vhost,
        "connection_details": {"name": c.name, "peer_host": warren_server::registry::host_of(c.peer), "peer_port": c.peer.port()},
        "state": "running",
        "consumer_count": ch.consumers,
        "messages_unacknowledged": ch.unacked,
        "messages_unconfirmed": ch.unconfirmed,
        "messages_uncommitted": ch.uncommitted,
        "acks_uncommitted": ch.acks_uncommitted,
        "prefetch_count": ch.prefetch,
        "global_prefetch_count": ch.global_prefetch,
        "confirm": ch.confirm,
        "transactional": ch.transactional,
        "pending_raft_commands": 0,
        "message_stats": stats,
    })
}

/// The channels the caller may see (monitors see all; others their own connections'),
/// optionally of one vhost or one connection.
async fn visible_channels(
    state: &AppState,
    caller: &Caller,
    vhost: Option<&str>,
    connection: Option<&str>,
) -> Vec<Value> {
    let node = state.admin.node_name();
    let me = caller.name().to_string();
    let monitor = caller.is_monitor();
    let reports = state.admin.channels(REPORT_TIMEOUT).await;
    reports
        .iter()
        .filter(|(c, _)| monitor || c.user == me)
        .filter(|(c, _)| vhost.is_none_or(|v| c.vhost == v))
        .filter(|(c, _)| connection.is_none_or(|n| c.name == n))
        .flat_map(|(c, chans)| chans.iter().map(|ch| channel_json(state, c, ch, &node)))
        .collect()
}

async fn list_channels(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Q,
) -> ApiResult<Json<Value>> {
    json::list(visible_channels(&state, &caller, None, None).await, &q).map(Json)
}

/// One channel, with its consumers in `consumer_details` as RabbitMQ's object has them
/// (the lists leave them out).
async fn get_channel(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let mut channel = visible_channels(&state, &caller, None, None)
        .await
        .into_iter()
        .find(|c| c["name"] == name.as_str())
        .ok_or_else(ApiError::not_found)?;
    let vhost = channel["vhost"].as_str().unwrap_or_default().to_string();
    let consumers: Vec<Value> = consumers_json(&state, &caller, Some(&vhost))
        .into_iter()
        .filter(|c| c["channel_details"]["name"] == name.as_str())
        .collect();
    channel["consumer_details"] = Value::Array(consumers);
    Ok(Json(channel))
}

async fn connection_channels(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(q): Q,
) -> ApiResult<Json<Value>> {
    if !state.admin.connections().iter().any(|c| c.name == name) {
        return Err(ApiError::not_found());
    }
    json::list(
        visible_channels(&state, &caller, None, Some(&name)).await,
        &q,
    )
    .map(Json)
}

async fn vhost_channels(
    State(state): State<AppState>,
    caller: Caller,
    Path(vh): Path<String>,
    Query(q): Q,
) -> ApiResult<Json<Value>> {
    if state.admin.broker().vhost(&vh).is_none() {
        return Err(ApiError::not_found());
    }
    json::list(visible_channels(&state, &caller, Some(&vh), None).await, &q).map(Json)
}

fn consumers_json(state: &AppState, caller: &Caller, only: Option<&str>) -> Vec<Value> {
    let conns = state.admin.connections();
    let mut out = Vec::new();
    for v in state.admin.broker().vhosts() {
        if only.is_some_and(|o| o != v.name) || !caller.sees_vhost(&v.name) {
            continue;
        }
        for q in v.queues() {
            for c in q.snapshot().consumers_detail {
                out.push(consumer_json(state, &conns, &v.name, &q.name, &c));
            }
        }
    }
    out
}

/// A consumer as RabbitMQ's API shows it (in `/api/consumers` and a queue's
/// `consumer_details`), with its channel found among `conns`.
pub(crate) fn consumer_json(
    state: &AppState,
    conns: &[Arc<ConnectionInfo>],
    vhost: &str,
    queue: &str,
    c: &warren_broker::queue::ConsumerInfo,
) -> Value {
    let conn = conns.iter().find(|i| i.id == c.connection);
    json!({
        "consumer_tag": c.tag,
        "exclusive": c.exclusive,
        "ack_required": !c.no_ack,
        "prefetch_count": c.prefetch,
        "active": true,
        "activity_status": "up",
        "arguments": if c.priority != 0 { json!({"x-priority": c.priority}) } else { json!({}) },
        "queue": {"name": queue, "vhost": vhost},
        "channel_details": {
            "number": c.channel,
            "connection_name": conn.map(|i| i.name.clone()),
            "name": conn.map(|i| format!("{} ({})", i.name, c.channel)),
            "user": conn.map(|i| i.user.clone()),
            "peer_host": conn.map(|i| i.peer.ip().to_string()),
            "peer_port": conn.map(|i| i.peer.port()),
            "node": state.admin.node_name(),
        },
    })
}

async fn list_consumers(State(state): State<AppState>, caller: Caller) -> Json<Value> {
    Json(Value::Array(consumers_json(&state, &caller, None)))
}

async fn vhost_consumers(
    State(state): State<AppState>,
    caller: Caller,
    Path(vh): Path<String>,
) -> ApiResult<Json<Value>> {
    if state.admin.broker().vhost(&vh).is_none() {
        return Err(ApiError::not_found());
    }
    Ok(Json(Value::Array(consumers_json(
        &state,
        &caller,
        Some(&vh),
    ))))
}

// ----- definitions -----

/// The topology of one vhost (non-exclusive queues, user exchanges, explicit bindings) in
/// RabbitMQ's export format.
fn export_meta(state: &AppState) -> warren_broker::definitions::ExportMeta {
    let id = state.admin.config().identity.resolved();
    warren_broker::definitions::ExportMeta {
        rabbitmq_version: warren_server::config::RABBITMQ_VERSION.to_string(),
        product_name: id.product,
        product_version: id.version,
    }
}

async fn export_all(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    Ok(Json(warren_broker::definitions::export(
        state.admin.broker(),
        &export_meta(&state),
    )))
}

async fn export_vhost(
    State(state): State<AppState>,
    caller: Caller,
    Path(vh): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    warren_broker::definitions::export_vhost(state.admin.broker(), &vh, &export_meta(&state))
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

async fn import_all(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let text = std::str::from_utf8(&body).map_err(|_| ApiError::bad_request("not_json"))?;
    serde_json::from_str::<Value>(text).map_err(|_| ApiError::bad_request("not_json"))?;
    // Everything is checked before anything changes.
    warren_broker::definitions::import(state.admin.broker(), text)
        .map_err(ApiError::bad_request)?;
    tracing::info!(user = %caller.name(), "definitions imported over HTTP");
    Ok(StatusCode::NO_CONTENT)
}

async fn import_vhost(
    State(state): State<AppState>,
    caller: Caller,
    Path(vh): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    if state.admin.broker().vhost(&vh).is_none() {
        return Err(ApiError::vhost_not_found());
    }
    let doc: Value =
        serde_json::from_slice(&body).map_err(|_| ApiError::bad_request("not_json"))?;
    let entries = warren_broker::definitions::parse_topology(&doc, Some(&vh))
        .map_err(ApiError::bad_request)?;
    // A vhost's definitions name no vhost: its policies belong to the target.
    let mut policies = Vec::new();
    if let Some(list) = doc.get("policies").and_then(Value::as_array) {
        for p in list {
            let mut p = p.clone();
            if let Some(o) = p.as_object_mut() {
                o.insert("vhost".into(), json!(vh));
            }
            policies.push(p);
        }
    }
    let parsed = serde_json::to_string(&json!({"policies": policies}))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let (access_state, _) =
        warren_broker::definitions::parse_access(&parsed).map_err(ApiError::bad_request)?;
    for p in &access_state.policies {
        warren_broker::policy::Policy::from_record(p, warren_broker::policy::PolicyKind::Regular)
            .map_err(|why| ApiError::bad_request(format!("policy '{}': {why}", p.name)))?;
    }
    warren_broker::definitions::apply_topology(state.admin.broker(), entries)
        .map_err(ApiError::bad_request)?;
    for p in access_state.policies {
        state
            .admin
            .broker()
            .put_policy(warren_broker::policy::PolicyKind::Regular, p)
            .map_err(ApiError::admin)?;
    }
    Ok(StatusCode::NO_CONTENT)
}
