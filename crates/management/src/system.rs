//! The node and its administration: overview, whoami, nodes, extensions, cluster name,
//! health checks, vhosts, users, permissions, topic permissions and limits.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};
use warren_broker::access::{self, HashingAlgorithm, UserLimits, VHostLimits};

use crate::auth::Caller;
use crate::error::{ApiError, ApiResult};
use crate::json::{self, details};
use crate::AppState;

type Q = Query<HashMap<String, String>>;

pub(crate) fn routes() -> Router<AppState> {
    Router::new()
        .route("/api/overview", get(overview))
        .route("/api/whoami", get(whoami))
        .route(
            "/api/extensions",
            get(|_: Caller| async { Json(json!([])) }),
        )
        .route("/api/cluster-name", get(cluster_name).put(put_cluster_name))
        .route("/api/nodes", get(nodes))
        .route("/api/nodes/{name}", get(node))
        .route("/api/aliveness-test/{vhost}", get(aliveness))
        .route("/api/health/checks/alarms", get(check_alarms))
        .route("/api/health/checks/local-alarms", get(check_alarms))
        .route("/api/health/checks/virtual-hosts", get(check_ok))
        .route("/api/health/checks/node-is-quorum-critical", get(check_ok))
        .route(
            "/api/health/checks/node-is-mirror-sync-critical",
            get(check_ok),
        )
        .route("/api/health/checks/port-listener/{port}", get(check_port))
        .route(
            "/api/health/checks/protocol-listener/{protocol}",
            get(check_protocol),
        )
        .route(
            "/api/health/checks/certificate-expiration/{n}/{unit}",
            get(check_certificates),
        )
        .route("/api/vhosts", get(list_vhosts))
        .route(
            "/api/vhosts/{vhost}",
            get(get_vhost).put(put_vhost).delete(delete_vhost),
        )
        .route("/api/vhosts/{vhost}/permissions", get(vhost_permissions))
        .route(
            "/api/vhosts/{vhost}/topic-permissions",
            get(vhost_topic_permissions),
        )
        .route("/api/users", get(list_users))
        .route(
            "/api/users/without-permissions",
            get(users_without_permissions),
        )
        .route(
            "/api/users/{user}",
            get(get_user).put(put_user).delete(delete_user),
        )
        .route("/api/users/{user}/permissions", get(user_permissions))
        .route(
            "/api/users/{user}/topic-permissions",
            get(user_topic_permissions),
        )
        .route("/api/permissions", get(list_permissions))
        .route(
            "/api/permissions/{vhost}/{user}",
            get(get_permission)
                .put(put_permission)
                .delete(delete_permission),
        )
        .route("/api/topic-permissions", get(list_topic_permissions))
        .route(
            "/api/topic-permissions/{vhost}/{user}",
            get(get_topic_permission)
                .put(put_topic_permission)
                .delete(delete_topic_permission),
        )
        .route("/api/vhost-limits", get(list_vhost_limits))
        .route("/api/vhost-limits/{vhost}", get(vhost_limits_of))
        .route(
            "/api/vhost-limits/{vhost}/{name}",
            axum::routing::put(put_vhost_limit).delete(delete_vhost_limit),
        )
        .route("/api/user-limits", get(list_user_limits))
        .route("/api/user-limits/{user}", get(user_limits_of))
        .route(
            "/api/user-limits/{user}/{name}",
            axum::routing::put(put_user_limit).delete(delete_user_limit),
        )
}

fn product(state: &AppState) -> (String, String) {
    let id = state.admin.config().identity.resolved();
    (id.product, id.version)
}

/// The version reported as `rabbitmq_version`: RabbitMQ's under `report_as =
/// "rabbitmq"`, else the 3.x release whose API Warren follows.
fn rabbitmq_version(state: &AppState) -> String {
    match state.admin.config().identity.report_as {
        warren_server::config::Product::Rabbitmq => product(state).1,
        warren_server::config::Product::Warren => warren_server::config::RABBITMQ_VERSION.into(),
    }
}

/// The management listener's address: the bound one when known (a configured port 0
/// becomes the port the system chose), else the configured one.
fn http_listen(state: &AppState) -> std::net::SocketAddr {
    state
        .http_addr
        .unwrap_or(state.admin.config().management.listen)
}

fn listeners(state: &AppState) -> Value {
    let node = state.admin.node_name();
    let amqp = state.admin.amqp_addr();
    let mut out = vec![json!({
        "node": node, "protocol": "amqp", "ip_address": amqp.ip().to_string(), "port": amqp.port(),
        "socket_opts": {}
    })];
    if let Some(tls) = state.admin.amqps_addr() {
        out.push(json!({
            "node": node, "protocol": "amqp/ssl", "ip_address": tls.ip().to_string(),
            "port": tls.port(), "socket_opts": {}
        }));
    }
    let m = http_listen(state);
    out.push(json!({
        "node": node, "protocol": "http", "ip_address": m.ip().to_string(), "port": m.port(),
        "socket_opts": {"port": m.port()}
    }));
    for (protocol, a) in state.admin.other_listeners() {
        out.push(json!({
            "node": node, "protocol": protocol, "ip_address": a.ip().to_string(),
            "port": a.port(), "socket_opts": {}
        }));
    }
    Value::Array(out)
}

async fn overview(State(state): State<AppState>, caller: Caller) -> Json<Value> {
    let broker = state.admin.broker();
    let (mut queues, mut exchanges, mut consumers) = (0u64, 0u64, 0u64);
    let (mut ready, mut unacked) = (0u64, 0u64);
    let mut stats = warren_broker::queue::QueueStats::default();
    let (mut r_pub, mut r_dg, mut r_ack, mut r_ready, mut r_unacked, mut r_redel) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for v in broker.vhosts() {
        if !caller.sees_vhost(&v.name) {
            continue;
        }
        exchanges += v.exchanges().len() as u64;
        for q in v.queues() {
            queues += 1;
            let s = q.snapshot();
            consumers += s.consumers;
            ready += s.ready;
            unacked += s.unacked;
            stats += s.stats;
            let r = state.rates.queue(&v.name, &q.name);
            r_pub += r.publish;
            r_dg += r.deliver_get;
            r_ack += r.ack;
            r_ready += r.ready;
            r_unacked += r.unacked;
            r_redel += r.redeliver;
        }
    }
    let conns = state.admin.connections();
    let visible_conns: Vec<_> = conns
        .iter()
        .filter(|c| caller.is_monitor() || c.user == caller.name())
        .collect();
    let channels: u64 = visible_conns
        .iter()
        .map(|c| c.stats.channels.load(std::sync::atomic::Ordering::Relaxed))
        .sum();
    let ids = visible_conns.iter().map(|c| c.id).collect();
    let (ch_totals, ch_rates) = state.rates.channel_sums(&ids);
    let channel_stat = |name: &str| {
        let i = crate::rates::CHANNEL_COUNTERS
            .iter()
            .position(|c| *c == name)
            .unwrap_or(0);
        (ch_totals[i], details(ch_rates[i]))
    };
    let (confirm, confirm_details) = channel_stat("confirm");
    let (returned, returned_details) = channel_stat("return_unroutable");
    let (dropped, dropped_details) = channel_stat("drop_unroutable");
    let (product_name, product_version) = product(&state);
    let node = state.admin.node_name();
    Json(json!({
        "management_version": rabbitmq_version(&state),
        "rates_mode": "basic",
        "sample_retention_policies": {"global": [600, 3600, 28800, 86400], "basic": [600, 3600], "detailed": [600]},
        "exchange_types": exchange_types(),
        "churn_rates": churn_json(&state),
        "release_series_support_status": "supported",
        "product_version": product_version,
        "product_name": product_name,
        "rabbitmq_version": rabbitmq_version(&state),
        "warren_version": env!("CARGO_PKG_VERSION"),
        "cluster_name": cluster_name_of(&state),
        "erlang_version": "none (Warren is written in Rust)",
        "erlang_full_version": "none (Warren is written in Rust)",
        "disable_stats": false,
        "enable_queue_totals": false,
        "message_stats": {
            "publish": stats.publish, "publish_details": details(r_pub),
            "deliver_get": stats.deliver_get(), "deliver_get_details": details(r_dg),
            "deliver": stats.deliver, "deliver_details": details(0.0),
            "deliver_no_ack": stats.deliver_no_ack, "deliver_no_ack_details": details(0.0),
            "get": stats.get, "get_details": details(0.0),
            "get_no_ack": stats.get_no_ack, "get_no_ack_details": details(0.0),
            "get_empty": stats.get_empty, "get_empty_details": details(0.0),
            "redeliver": stats.redeliver, "redeliver_details": details(r_redel),
            "ack": stats.ack, "ack_details": details(r_ack),
            "confirm": confirm, "confirm_details": confirm_details,
            "return_unroutable": returned, "return_unroutable_details": returned_details,
            "drop_unroutable": dropped, "drop_unroutable_details": dropped_details,
            "disk_reads": 0, "disk_reads_details": details(0.0),
            "disk_writes": 0, "disk_writes_details": details(0.0),
        },
        "queue_totals": {
            "messages": ready + unacked, "messages_details": details(r_ready + r_unacked),
            "messages_ready": ready, "messages_ready_details": details(r_ready),
            "messages_unacknowledged": unacked, "messages_unacknowledged_details": details(r_unacked),
        },
        "object_totals": {
            "channels": channels,
            "connections": visible_conns.len(),
            "consumers": consumers,
            "exchanges": exchanges,
            "queues": queues,
        },
        "statistics_db_event_queue": 0,
        "node": node,
        "statistics_db_node": node,
        "listeners": listeners(&state),
        "contexts": [{"node": node, "description": "RabbitMQ Management", "path": "/",
                      "port": http_listen(&state).port().to_string()}],
    }))
}

async fn whoami(caller: Caller) -> Json<Value> {
    Json(json!({"name": caller.user.name, "tags": caller.user.tags}))
}

/// The cluster name: the `cluster_name` global parameter once set (as RabbitMQ keeps
/// it), else the configured identity's.
pub(crate) fn cluster_name_of(state: &AppState) -> String {
    state
        .admin
        .access()
        .global_parameters()
        .into_iter()
        .find_map(|(n, v)| (n == "cluster_name").then(|| v.as_str().map(str::to_string)))
        .flatten()
        .unwrap_or_else(|| state.admin.node_name())
}

async fn cluster_name(State(state): State<AppState>, _: Caller) -> Json<Value> {
    Json(json!({"name": cluster_name_of(&state)}))
}

async fn put_cluster_name(
    State(state): State<AppState>,
    caller: Caller,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let b = json::body(&body)?;
    let name =
        json::string(&b, "name")?.ok_or_else(|| ApiError::bad_request("[{key_missing,name}]"))?;
    state
        .admin
        .access()
        .put_global_parameter("cluster_name", &json!(name))
        .map_err(ApiError::admin)?;
    Ok(StatusCode::NO_CONTENT)
}

fn exchange_types() -> Value {
    json!([
        {"name": "direct", "description": "AMQP direct exchange, as per the AMQP specification", "enabled": true},
        {"name": "fanout", "description": "AMQP fanout exchange, as per the AMQP specification", "enabled": true},
        {"name": "headers", "description": "AMQP headers exchange, as per the AMQP specification", "enabled": true},
        {"name": "topic", "description": "AMQP topic exchange, as per the AMQP specification", "enabled": true},
    ])
}

/// Connections, channels and queues created and closed since the start, with rates
/// (RabbitMQ's `churn_rates`, also part of a node object).
fn churn_json(state: &AppState) -> serde_json::Map<String, Value> {
    let values = crate::rates::churn_values(&state.admin);
    let rates = state.rates.churn();
    let mut m = serde_json::Map::new();
    for (i, name) in crate::rates::CHURN_COUNTERS.iter().enumerate() {
        m.insert((*name).to_string(), json!(values[i]));
        m.insert(format!("{name}_details"), details(rates[i]));
    }
    m
}

fn node_json(state: &AppState) -> Value {
    let alarms = state.admin.alarms();
    let rss = warren_server::alarm::rss_bytes().unwrap_or(0);
    let disk = warren_server::alarm::available_bytes(&state.admin.config().data_dir).unwrap_or(0);
    let fd_total = warren_server::alarm::max_fds().unwrap_or(0);
    let fd_used = warren_server::alarm::open_fds().unwrap_or(0);
    let state_now = *alarms.subscribe().borrow();
    let mut node = json!({
        "name": state.admin.node_name(),
        "type": "disc",
        "running": true,
        "being_drained": false,
        "mem_used": rss,
        "mem_limit": alarms.watermark_bytes(),
        "mem_alarm": state_now.memory,
        "disk_free": disk,
        "disk_free_limit": state.admin.config().resources.disk_free_limit_bytes,
        "disk_free_alarm": state_now.disk,
        "fd_used": fd_used,
        "fd_total": fd_total,
        "sockets_used": state.admin.connections().len(),
        "sockets_total": fd_total,
        "proc_used": 0,
        "proc_total": 0,
        "processors": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "uptime": state.admin.uptime().as_millis() as u64,
        "os_pid": std::process::id().to_string(),
        "partitions": [],
        "applications": [],
        "enabled_plugins": ["rabbitmq_management"],
        "rates_mode": "basic",
        "net_ticktime": 60,
        "run_queue": 0,
        "mem_calculation_strategy": "rss",
        "cluster_links": [],
        "config_files": [],
        "log_files": ["<stdout>"],
        "db_dir": state.admin.config().data_dir.display().to_string(),
        "exchange_types": exchange_types(),
        "auth_mechanisms": auth_mechanisms(state),
        "contexts": [{"description": "RabbitMQ Management", "path": "/",
                      "port": http_listen(state).port().to_string()}],
    });
    if let Value::Object(m) = &mut node {
        m.extend(churn_json(state));
    }
    node
}

/// The SASL mechanisms the node knows and whether they are enabled.
fn auth_mechanisms(state: &AppState) -> Value {
    let auth = &state.admin.config().auth;
    let on = |m: &str| auth.mechanisms.iter().any(|c| c == m);
    json!([
        {"name": "PLAIN", "description": "SASL PLAIN authentication mechanism", "enabled": on("PLAIN")},
        {"name": "AMQPLAIN", "description": "QPid AMQPLAIN mechanism", "enabled": on("AMQPLAIN")},
        {"name": "EXTERNAL", "description": "SASL EXTERNAL authentication mechanism", "enabled": on("EXTERNAL")},
        {"name": "ANONYMOUS", "description": "SASL ANONYMOUS authentication mechanism",
         "enabled": auth.anonymous_login_user.is_some()},
    ])
}

async fn nodes(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require_monitor()?;
    Ok(Json(json!([node_json(&state)])))
}

async fn node(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_monitor()?;
    if name != state.admin.node_name() {
        return Err(ApiError::not_found());
    }
    Ok(Json(node_json(&state)))
}

/// `GET /api/aliveness-test/{vhost}`: declares `aliveness-test`, publishes a message to
/// it and gets it back, as RabbitMQ 3.x does. The body is exactly `{"status":"ok"}`.
async fn aliveness(
    State(state): State<AppState>,
    caller: Caller,
    Path(vh): Path<String>,
) -> ApiResult<Json<Value>> {
    let grant = caller.vhost_grant(&vh)?;
    let v = state
        .admin
        .broker()
        .vhost(&vh)
        .ok_or_else(ApiError::vhost_not_found)?;
    grant
        .check_configure(access::Resource::Queue, "aliveness-test")
        .map_err(ApiError::engine)?;
    let (q, _, _) = v
        .declare_queue(
            warren_broker::QueueOptions {
                name: "aliveness-test".into(),
                ..Default::default()
            },
            0,
        )
        .map_err(ApiError::engine)?;
    let m = std::sync::Arc::new(warren_broker::Message::new(
        "",
        "aliveness-test",
        bytes::Bytes::new(),
        bytes::Bytes::from_static(b"test_message"),
    ));
    q.publish(m)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    match q.get(true) {
        Some(_) => Ok(Json(json!({"status": "ok"}))),
        None => Err(ApiError::internal("aliveness-test message not received")),
    }
}

fn failed(reason: &str) -> (StatusCode, Json<Value>) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"status": "failed", "reason": reason})),
    )
}

/// RabbitMQ's certificate-expiration check: fails when a listener's certificate expires
/// within `n` `unit`s (days, weeks, months, years).
async fn check_certificates(
    State(state): State<AppState>,
    _: Caller,
    Path((n, unit)): Path<(String, String)>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let Ok(n) = n.parse::<u64>() else {
        return Err(ApiError::bad_request("Invalid expiration value."));
    };
    let days = match unit.as_str() {
        "days" => 1,
        "weeks" => 7,
        "months" => 30,
        "years" => 365,
        _ => {
            return Err(ApiError::bad_request(
                "Time unit not recognised. Supported units: days, weeks, months, years.",
            ))
        }
    };
    let config = state.admin.config();
    let Some(addr) = state.admin.amqps_addr() else {
        return Ok((StatusCode::OK, Json(json!({"status": "ok"}))));
    };
    let horizon = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
        .saturating_add((n.saturating_mul(days * 86_400)).min(i64::MAX as u64) as i64);
    match warren_server::tls::certificate_not_after(&config.tls) {
        Some(not_after) if not_after > horizon => {
            Ok((StatusCode::OK, Json(json!({"status": "ok"}))))
        }
        expiring => {
            let certfile = config.tls.cert.as_ref().map(|p| p.display().to_string());
            let expired = json!([{
                "node": state.admin.node_name(), "protocol": "amqp/ssl",
                "interface": addr.ip().to_string(), "port": addr.port(),
                "certfile": certfile,
                "cacertfile": config.tls.ca.as_ref().map(|p| p.display().to_string()),
                "expiry_date": expiring.map(json::iso8601_ms_secs),
            }]);
            Ok((
                StatusCode::SERVICE_UNAVAILABLE,
                Json(
                    json!({"status": "failed", "reason": "Certificates expiring", "expired": expired}),
                ),
            ))
        }
    }
}

async fn check_ok(_: Caller) -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn check_alarms(State(state): State<AppState>, _: Caller) -> (StatusCode, Json<Value>) {
    let s = *state.admin.alarms().subscribe().borrow();
    if s.any() {
        let mut which = Vec::new();
        if s.memory {
            which.push("memory");
        }
        if s.disk {
            which.push("disk");
        }
        failed(&format!(
            "resource alarm(s) in effect: {}",
            which.join(", ")
        ))
    } else {
        (StatusCode::OK, Json(json!({"status": "ok"})))
    }
}

fn listener_ports(state: &AppState) -> Vec<(&'static str, u16)> {
    let mut ports = vec![
        ("amqp", state.admin.amqp_addr().port()),
        ("http", http_listen(state).port()),
    ];
    if let Some(tls) = state.admin.amqps_addr() {
        ports.push(("amqp/ssl", tls.port()));
    }
    ports
}

async fn check_port(
    State(state): State<AppState>,
    _: Caller,
    Path(port): Path<String>,
) -> (StatusCode, Json<Value>) {
    let Ok(port) = port.parse::<u16>() else {
        return failed("invalid port");
    };
    if listener_ports(&state).iter().any(|(_, p)| *p == port) {
        (StatusCode::OK, Json(json!({"status": "ok", "port": port})))
    } else {
        failed(&format!("No active listener on port {port}"))
    }
}

async fn check_protocol(
    State(state): State<AppState>,
    _: Caller,
    Path(protocol): Path<String>,
) -> (StatusCode, Json<Value>) {
    let p = protocol.to_ascii_lowercase();
    let p = match p.as_str() {
        "amqp091" | "amqp0-9-1" | "amqp" => "amqp",
        "http" | "management" => "http",
        "amqps" | "amqp/ssl" | "amqp091/ssl" => "amqp/ssl",
        other => other,
    };
    if listener_ports(&state).iter().any(|(name, _)| *name == p) {
        (
            StatusCode::OK,
            Json(json!({"status": "ok", "protocol": protocol})),
        )
    } else {
        failed(&format!("No active listener for protocol {protocol}"))
    }
}

// ----- vhosts -----

fn vhost_json(state: &AppState, info: &access::VHostInfo) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let broker = state.admin.broker();
    let (mut ready, mut unacked) = (0u64, 0u64);
    let mut stats = warren_broker::queue::QueueStats::default();
    if let Some(v) = broker.vhost(&info.name) {
        for q in v.queues() {
            let s = q.snapshot();
            ready += s.ready;
            unacked += s.unacked;
            stats += s.stats;
        }
    }
    let (mut recv, mut send, mut recv_rate, mut send_rate) = (0u64, 0u64, 0.0, 0.0);
    for c in state
        .admin
        .connections()
        .iter()
        .filter(|c| c.vhost == info.name)
    {
        recv += c.stats.recv_oct.load(Relaxed);
        send += c.stats.send_oct.load(Relaxed);
        let (r, s) = state.rates.connection(c.id);
        recv_rate += r;
        send_rate += s;
    }
    json!({
        "name": info.name,
        "description": info.description,
        "tags": info.tags,
        "metadata": {"description": info.description, "tags": info.tags},
        "default_queue_type": "classic",
        "tracing": broker.vhost(&info.name).is_some_and(|v| v.is_tracing()),
        "cluster_state": {state.admin.node_name(): "running"},
        "messages": ready + unacked,
        "messages_details": details(0.0),
        "messages_ready": ready,
        "messages_ready_details": details(0.0),
        "messages_unacknowledged": unacked,
        "messages_unacknowledged_details": details(0.0),
        "recv_oct": recv,
        "recv_oct_details": details(recv_rate),
        "send_oct": send,
        "send_oct_details": details(send_rate),
        "message_stats": {
            "publish": stats.publish,
            "deliver": stats.deliver,
            "deliver_no_ack": stats.deliver_no_ack,
            "get": stats.get,
            "get_no_ack": stats.get_no_ack,
            "get_empty": stats.get_empty,
            "deliver_get": stats.deliver_get(),
            "redeliver": stats.redeliver,
            "ack": stats.ack,
        },
    })
}

async fn list_vhosts(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Q,
) -> ApiResult<Json<Value>> {
    let items = state
        .admin
        .access()
        .vhosts()
        .iter()
        .filter(|v| caller.sees_vhost(&v.name))
        .map(|v| vhost_json(&state, v))
        .collect();
    json::list(items, &q).map(Json)
}

async fn get_vhost(
    State(state): State<AppState>,
    caller: Caller,
    Path(vh): Path<String>,
) -> ApiResult<Json<Value>> {
    let info = state
        .admin
        .access()
        .vhost(&vh)
        .ok_or_else(ApiError::not_found)?;
    if !caller.sees_vhost(&vh) {
        return Err(ApiError::not_authorised("Access refused."));
    }
    Ok(Json(vhost_json(&state, &info)))
}

fn tags_field(b: &Value) -> ApiResult<Vec<String>> {
    warren_broker::definitions::tags(b.get("tags"), "body").map_err(ApiError::bad_request)
}

async fn put_vhost(
    State(state): State<AppState>,
    caller: Caller,
    Path(vh): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let b = json::body(&body)?;
    let description = json::string(&b, "description")?.unwrap_or_default();
    let tags = tags_field(&b)?;
    let tracing = match b.get("tracing") {
        Some(v) if !v.is_null() => Some(json::boolean(&b, "tracing", false)?),
        _ => None,
    };
    let status = if state.admin.access().vhost(&vh).is_some() {
        StatusCode::NO_CONTENT
    } else {
        state
            .admin
            .create_vhost(&vh, &description, &tags)
            .map_err(ApiError::admin)?;
        StatusCode::CREATED
    };
    if let Some(on) = tracing {
        state
            .admin
            .broker()
            .set_tracing(&vh, on)
            .map_err(ApiError::admin)?;
    }
    Ok(status)
}

async fn delete_vhost(
    State(state): State<AppState>,
    caller: Caller,
    Path(vh): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    state.admin.delete_vhost(&vh).map_err(ApiError::admin)?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- users -----

fn user_json(u: &access::User) -> Value {
    json!({
        "name": u.name,
        "password_hash": u.password_hash,
        "hashing_algorithm": u.hashing_algorithm.name(),
        "tags": u.tags,
        "limits": limits_json(u.limits.max_connections.map(|n| ("max-connections", n)).into_iter()
            .chain(u.limits.max_channels.map(|n| ("max-channels", n)))),
    })
}

fn limits_json(it: impl Iterator<Item = (&'static str, u64)>) -> Value {
    let mut m = serde_json::Map::new();
    for (k, v) in it {
        m.insert(k.to_string(), Value::from(v));
    }
    Value::Object(m)
}

async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Q,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let items = state.admin.access().users().iter().map(user_json).collect();
    json::list(items, &q).map(Json)
}

async fn users_without_permissions(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let perms = state.admin.access().permissions();
    Ok(Json(Value::Array(
        state
            .admin
            .access()
            .users()
            .iter()
            .filter(|u| !perms.iter().any(|p| p.user == u.name))
            .map(user_json)
            .collect(),
    )))
}

async fn get_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let u = state
        .admin
        .access()
        .user(&name)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(user_json(&u)))
}

/// `PUT /api/users/{name}`: `password` (hashed here) or `password_hash` with an optional
/// `hashing_algorithm`; `tags` as a string ("a,b") or a list.
async fn put_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let b = json::body(&body)?;
    let tags = tags_field(&b)?;
    let access = state.admin.access();
    let algorithm = match json::string(&b, "hashing_algorithm")? {
        None => HashingAlgorithm::Sha256,
        Some(a) => HashingAlgorithm::parse(&a)
            .ok_or_else(|| ApiError::bad_request(format!("unknown hashing_algorithm '{a}'")))?,
    };
    let existing = access.user(&name);
    let hash = match (
        json::string(&b, "password")?,
        json::string(&b, "password_hash")?,
    ) {
        (Some(p), _) => access::hash_password(HashingAlgorithm::Sha256, &p),
        (None, Some(h)) => h,
        (None, None) => match &existing {
            // RabbitMQ keeps the password of an existing user when neither is given.
            Some(u) => u.password_hash.clone(),
            None => {
                return Err(ApiError::bad_request(
                    "Must specify either password or password_hash",
                ))
            }
        },
    };
    let algorithm = if b.get("password").is_some_and(|p| !p.is_null()) {
        HashingAlgorithm::Sha256
    } else if b.get("password_hash").is_some_and(|p| !p.is_null()) {
        algorithm
    } else {
        existing.as_ref().map_or(algorithm, |u| u.hashing_algorithm)
    };
    access
        .put_user(&name, &hash, algorithm, &tags)
        .map_err(ApiError::admin)?;
    Ok(if existing.is_some() {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::CREATED
    })
}

async fn delete_user(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    state.admin.delete_user(&name).map_err(ApiError::admin)?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- permissions -----

fn permission_json(p: &access::Permission) -> Value {
    json!({"user": p.user, "vhost": p.vhost, "configure": p.configure, "write": p.write, "read": p.read})
}

fn permissions_where(state: &AppState, keep: impl Fn(&access::Permission) -> bool) -> Json<Value> {
    let all = state.admin.access().permissions();
    Json(Value::Array(
        all.iter()
            .filter(|p| keep(p))
            .map(permission_json)
            .collect(),
    ))
}

fn topic_permissions_where(
    state: &AppState,
    keep: impl Fn(&access::TopicPermission) -> bool,
) -> Json<Value> {
    let all = state.admin.access().topic_permissions();
    Json(Value::Array(
        all.iter()
            .filter(|p| keep(p))
            .map(topic_permission_json)
            .collect(),
    ))
}

fn topic_permission_json(p: &access::TopicPermission) -> Value {
    json!({"user": p.user, "vhost": p.vhost, "exchange": p.exchange, "write": p.write, "read": p.read})
}

async fn list_permissions(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    Ok(Json(Value::Array(
        state
            .admin
            .access()
            .permissions()
            .iter()
            .map(permission_json)
            .collect(),
    )))
}

async fn vhost_permissions(
    State(state): State<AppState>,
    caller: Caller,
    Path(vh): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    state
        .admin
        .access()
        .vhost(&vh)
        .ok_or_else(ApiError::not_found)?;
    Ok(permissions_where(&state, |p| p.vhost == vh))
}

async fn user_permissions(
    State(state): State<AppState>,
    caller: Caller,
    Path(u): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    state
        .admin
        .access()
        .user(&u)
        .ok_or_else(ApiError::not_found)?;
    Ok(permissions_where(&state, |p| p.user == u))
}

async fn get_permission(
    State(state): State<AppState>,
    caller: Caller,
    Path((vh, u)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    state
        .admin
        .access()
        .permissions()
        .iter()
        .find(|p| p.vhost == vh && p.user == u)
        .map(|p| Json(permission_json(p)))
        .ok_or_else(ApiError::not_found)
}

async fn put_permission(
    State(state): State<AppState>,
    caller: Caller,
    Path((vh, u)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let b = json::body(&body)?;
    let access = state.admin.access();
    if access.vhost(&vh).is_none() {
        return Err(ApiError::vhost_not_found());
    }
    if access.user(&u).is_none() {
        return Err(ApiError::bad_request("user_not_found"));
    }
    let field = |k: &str| -> ApiResult<String> {
        json::string(&b, k)?.ok_or_else(|| ApiError::bad_request(format!("{k} is required")))
    };
    let existed = access
        .permissions()
        .iter()
        .any(|p| p.vhost == vh && p.user == u);
    access
        .set_permissions(
            &u,
            &vh,
            &field("configure")?,
            &field("write")?,
            &field("read")?,
        )
        .map_err(ApiError::admin)?;
    Ok(if existed {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::CREATED
    })
}

async fn delete_permission(
    State(state): State<AppState>,
    caller: Caller,
    Path((vh, u)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let access = state.admin.access();
    if !access
        .permissions()
        .iter()
        .any(|p| p.vhost == vh && p.user == u)
    {
        return Err(ApiError::not_found());
    }
    access.clear_permissions(&u, &vh).map_err(ApiError::admin)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list_topic_permissions(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    Ok(Json(Value::Array(
        state
            .admin
            .access()
            .topic_permissions()
            .iter()
            .map(topic_permission_json)
            .collect(),
    )))
}

async fn vhost_topic_permissions(
    State(state): State<AppState>,
    caller: Caller,
    Path(vh): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    state
        .admin
        .access()
        .vhost(&vh)
        .ok_or_else(ApiError::not_found)?;
    Ok(topic_permissions_where(&state, |p| p.vhost == vh))
}

async fn user_topic_permissions(
    State(state): State<AppState>,
    caller: Caller,
    Path(u): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    state
        .admin
        .access()
        .user(&u)
        .ok_or_else(ApiError::not_found)?;
    Ok(topic_permissions_where(&state, |p| p.user == u))
}

async fn get_topic_permission(
    State(state): State<AppState>,
    caller: Caller,
    Path((vh, u)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let items: Vec<Value> = state
        .admin
        .access()
        .topic_permissions()
        .iter()
        .filter(|p| p.vhost == vh && p.user == u)
        .map(topic_permission_json)
        .collect();
    if items.is_empty() {
        return Err(ApiError::not_found());
    }
    Ok(Json(Value::Array(items)))
}

async fn put_topic_permission(
    State(state): State<AppState>,
    caller: Caller,
    Path((vh, u)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let b = json::body(&body)?;
    let access = state.admin.access();
    if access.vhost(&vh).is_none() {
        return Err(ApiError::vhost_not_found());
    }
    let field = |k: &str| -> ApiResult<String> {
        json::string(&b, k)?.ok_or_else(|| ApiError::bad_request(format!("{k} is required")))
    };
    access
        .set_topic_permissions(
            &u,
            &vh,
            &field("exchange")?,
            &field("write")?,
            &field("read")?,
        )
        .map_err(ApiError::admin)?;
    Ok(StatusCode::CREATED)
}

async fn delete_topic_permission(
    State(state): State<AppState>,
    caller: Caller,
    Path((vh, u)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    state
        .admin
        .access()
        .clear_topic_permissions(&u, &vh, None)
        .map_err(ApiError::admin)?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- limits -----

fn vhost_limits_json(v: &access::VHostInfo) -> Value {
    json!({
        "vhost": v.name,
        "value": limits_json(v.limits.max_connections.map(|n| ("max-connections", n)).into_iter()
            .chain(v.limits.max_queues.map(|n| ("max-queues", n)))),
    })
}

async fn list_vhost_limits(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<Value>> {
    caller.require_monitor()?;
    Ok(Json(Value::Array(
        state
            .admin
            .access()
            .vhosts()
            .iter()
            .filter(|v| v.limits != VHostLimits::default())
            .map(vhost_limits_json)
            .collect(),
    )))
}

async fn vhost_limits_of(
    State(state): State<AppState>,
    caller: Caller,
    Path(vh): Path<String>,
) -> ApiResult<Json<Value>> {
    if !caller.sees_vhost(&vh) {
        return Err(ApiError::not_authorised("Access refused."));
    }
    let v = state
        .admin
        .access()
        .vhost(&vh)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(if v.limits == VHostLimits::default() {
        json!([])
    } else {
        json!([vhost_limits_json(&v)])
    }))
}

fn limit_from_body(body: &Bytes) -> ApiResult<Option<u64>> {
    let b = json::body(body)?;
    match b.get("value") {
        Some(Value::Number(n)) => n
            .as_i64()
            .map(access::limit_value)
            .ok_or_else(|| ApiError::bad_request("value must be an integer")),
        Some(Value::String(s)) => s
            .parse::<i64>()
            .map(access::limit_value)
            .map_err(|_| ApiError::bad_request("value must be an integer")),
        _ => Err(ApiError::bad_request("value is required")),
    }
}

async fn put_vhost_limit(
    State(state): State<AppState>,
    caller: Caller,
    Path((vh, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let value = limit_from_body(&body)?;
    let access = state.admin.access();
    let mut limits = access
        .vhost(&vh)
        .ok_or_else(ApiError::vhost_not_found)?
        .limits;
    match name.as_str() {
        "max-connections" => limits.max_connections = value,
        "max-queues" => limits.max_queues = value,
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown vhost limit '{other}'"
            )))
        }
    }
    access
        .set_vhost_limits(&vh, limits)
        .map_err(ApiError::admin)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_vhost_limit(
    State(state): State<AppState>,
    caller: Caller,
    Path((vh, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let access = state.admin.access();
    let mut limits = access.vhost(&vh).ok_or_else(ApiError::not_found)?.limits;
    match name.as_str() {
        "max-connections" => limits.max_connections = None,
        "max-queues" => limits.max_queues = None,
        _ => return Err(ApiError::not_found()),
    }
    access
        .set_vhost_limits(&vh, limits)
        .map_err(ApiError::admin)?;
    Ok(StatusCode::NO_CONTENT)
}

fn user_limits_json(u: &access::User) -> Value {
    json!({
        "user": u.name,
        "value": limits_json(u.limits.max_connections.map(|n| ("max-connections", n)).into_iter()
            .chain(u.limits.max_channels.map(|n| ("max-channels", n)))),
    })
}

async fn list_user_limits(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    Ok(Json(Value::Array(
        state
            .admin
            .access()
            .users()
            .iter()
            .filter(|u| u.limits != UserLimits::default())
            .map(user_limits_json)
            .collect(),
    )))
}

async fn user_limits_of(
    State(state): State<AppState>,
    caller: Caller,
    Path(u): Path<String>,
) -> ApiResult<Json<Value>> {
    caller.require_admin()?;
    let u = state
        .admin
        .access()
        .user(&u)
        .ok_or_else(ApiError::not_found)?;
    Ok(Json(if u.limits == UserLimits::default() {
        json!([])
    } else {
        json!([user_limits_json(&u)])
    }))
}

async fn put_user_limit(
    State(state): State<AppState>,
    caller: Caller,
    Path((u, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let value = limit_from_body(&body)?;
    let access = state.admin.access();
    let mut limits = access.user(&u).ok_or_else(ApiError::not_found)?.limits;
    match name.as_str() {
        "max-connections" => limits.max_connections = value,
        "max-channels" => limits.max_channels = value,
        other => {
            return Err(ApiError::bad_request(format!(
                "unknown user limit '{other}'"
            )))
        }
    }
    access
        .set_user_limits(&u, limits)
        .map_err(ApiError::admin)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn delete_user_limit(
    State(state): State<AppState>,
    caller: Caller,
    Path((u, name)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let access = state.admin.access();
    let mut limits = access.user(&u).ok_or_else(ApiError::not_found)?.limits;
    match name.as_str() {
        "max-connections" => limits.max_connections = None,
        "max-channels" => limits.max_channels = None,
        _ => return Err(ApiError::not_found()),
    }
    access
        .set_user_limits(&u, limits)
        .map_err(ApiError::admin)?;
    Ok(StatusCode::NO_CONTENT)
}
