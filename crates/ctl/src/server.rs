//! The node's side of the control socket: it answers each request with one engine
//! operation (the same ones the management API calls) and returns rows the tool
//! renders.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use warren_broker::access::{AdminError, UserLimits, VHostLimits};
use warren_broker::policy::{PolicyKind, PolicyRecord};
use warren_codec::json::table_to_json;
use warren_server::admin::Admin;

use crate::protocol::{exit, Reply, Request};

/// The connection id control operations run as (no AMQP connection owns them).
const CONTROL_CONNECTION: u64 = 0;
/// Largest request accepted.
const MAX_REQUEST: u64 = 1 << 20;

/// What the node's owner lets the control socket do beyond engine operations.
pub trait NodeControl: Send + Sync + 'static {
    /// `rabbitmqctl stop`: stop the node (as SIGTERM does).
    fn stop(&self);

    /// The HTTP listeners the node has bound, as `(protocol, address)` with RabbitMQ's
    /// protocol names (`http`, `https`, `http/prometheus`); `None` when the owner does
    /// not know them, and the configured addresses are reported instead.
    fn http_listeners(&self) -> Option<Vec<(&'static str, SocketAddr)>> {
        None
    }
}

/// A listening control socket; the file is removed when this is dropped.
#[derive(Debug)]
pub struct ControlSocket {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl ControlSocket {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Why the control socket cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Another live node has this name.
    #[error("node with name \"{0}\" is already running on this host")]
    NameInUse(String),
    /// The directory or socket cannot be created.
    #[error("cannot create the control socket {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Opens `node`'s control socket and serves it.
///
/// # Errors
/// A live node with the same name, or the socket cannot be created.
pub async fn serve(
    admin: Admin,
    node: &str,
    control: Arc<dyn NodeControl>,
) -> Result<ControlSocket, ControlError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let path = crate::node::socket_path(node);
    let io = |source| ControlError::Io {
        path: path.clone(),
        source,
    };
    let dir = crate::node::control_dir();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(io)?;
    if path.exists() {
        if UnixStream::connect(&path).await.is_ok() {
            return Err(ControlError::NameInUse(node.to_string()));
        }
        // A socket left by a node that died.
        std::fs::remove_file(&path).map_err(io)?;
    }
    let listener = UnixListener::bind(&path).map_err(io)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    let node = node.to_string();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (admin, control, node) = (admin.clone(), control.clone(), node.clone());
            tokio::spawn(async move {
                let _ = session(stream, &admin, control.as_ref(), &node).await;
            });
        }
    });
    tracing::info!(path = %path.display(), "control socket ready for rabbitmqctl");
    Ok(ControlSocket { path, task })
}

async fn session(
    stream: UnixStream,
    admin: &Admin,
    control: &dyn NodeControl,
    node: &str,
) -> std::io::Result<()> {
    let (rd, mut wr) = stream.into_split();
    let mut line = String::new();
    tokio::io::AsyncReadExt::take(BufReader::new(rd), MAX_REQUEST)
        .read_line(&mut line)
        .await?;
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(req) => handle(admin, control, node, req).await,
        Err(e) => Reply::error(exit::USAGE, format!("malformed request: {e}")),
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_default();
    out.push(b'\n');
    wr.write_all(&out).await?;
    wr.shutdown().await
}

fn admin_error(e: AdminError) -> Reply {
    match e {
        AdminError::NoSuchUser(u) => {
            Reply::error(exit::NOUSER, format!("User \"{u}\" does not exist"))
        }
        AdminError::NoSuchVHost(v) => {
            Reply::error(exit::DATAERR, format!("Virtual host '{v}' does not exist"))
        }
        AdminError::UserExists(u) => {
            Reply::error(exit::SOFTWARE, format!("User \"{u}\" already exists"))
        }
        AdminError::VHostExists(v) => {
            Reply::error(exit::SOFTWARE, format!("Virtual host '{v}' already exists"))
        }
        AdminError::Storage(why) => Reply::error(exit::SOFTWARE, why),
        other => Reply::error(exit::DATAERR, other.to_string()),
    }
}

fn done(r: Result<(), AdminError>) -> Reply {
    r.map_or_else(admin_error, |()| Reply::ok())
}

/// `set_permissions` and `clear_permissions` word their errors differently from the
/// other commands in rabbitmqctl (no quotes; a missing vhost is exit 69).
fn permissions_done(r: Result<(), AdminError>) -> Reply {
    match r {
        Ok(()) => Reply::ok(),
        Err(AdminError::NoSuchUser(u)) => {
            Reply::error(exit::NOUSER, format!("User {u} does not exist"))
        }
        Err(AdminError::NoSuchVHost(v)) => Reply::error(
            exit::UNAVAILABLE,
            format!("Virtual host {v} does not exist"),
        ),
        Err(e) => admin_error(e),
    }
}

/// rabbitmqctl's refusal of `reset` while the application runs.
pub const APP_RUNNING: &str = "this command requires the 'rabbit' app to be stopped on the target node. Stop it with 'rabbitmqctl stop_app'.";

/// Positional argument `i`; `_what` names it for the reader (rabbitmqctl's error does
/// not name it).
fn arg<'a>(req: &'a Request, i: usize, _what: &str) -> Result<&'a str, Reply> {
    req.args
        .get(i)
        .map(String::as_str)
        .ok_or_else(|| Reply::error(exit::USAGE, "not enough arguments."))
}

fn opt<'a>(req: &'a Request, name: &str) -> Option<&'a Value> {
    req.options.get(name)
}

fn flag(req: &Request, name: &str) -> bool {
    opt(req, name).is_some_and(|v| v.as_bool().unwrap_or(true))
}

/// Rows limited to the requested columns (all the defaults when none are given),
/// refusing unknown ones as rabbitmqctl does.
fn table(req: &Request, all: &[&str], default: &[&str], rows: Vec<Map<String, Value>>) -> Reply {
    let columns: Vec<String> = if req.args.is_empty() {
        default.iter().map(|s| s.to_string()).collect()
    } else {
        req.args.clone()
    };
    let unknown: Vec<&String> = columns
        .iter()
        .filter(|c| !all.contains(&c.as_str()))
        .collect();
    if !unknown.is_empty() {
        let list: Vec<&str> = unknown.iter().map(|s| s.as_str()).collect();
        return Reply::error(
            exit::USAGE,
            format!("Info key(s) {} are not supported", list.join(",")),
        );
    }
    let rows = rows
        .into_iter()
        .map(|r| {
            columns
                .iter()
                .map(|c| (c.clone(), r.get(c).cloned().unwrap_or(Value::Null)))
                .collect()
        })
        .collect();
    Reply {
        rows,
        columns,
        ..Reply::default()
    }
}

/// Rows with fixed columns (commands whose columns cannot be chosen).
fn fixed(columns: &[&str], rows: Vec<Map<String, Value>>) -> Reply {
    table(&Request::default(), columns, columns, rows)
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

async fn handle(admin: &Admin, control: &dyn NodeControl, node: &str, req: Request) -> Reply {
    match run(admin, control, node, &req).await {
        Ok(r) | Err(r) => r,
    }
}

async fn run(
    admin: &Admin,
    control: &dyn NodeControl,
    node: &str,
    req: &Request,
) -> Result<Reply, Reply> {
    let vhost = req.vhost.clone().unwrap_or_else(|| "/".to_string());
    let access = admin.access();
    let broker = admin.broker();
    let need_vhost = || {
        broker.vhost(&vhost).ok_or_else(|| {
            Reply::error(
                exit::DATAERR,
                format!("Virtual host '{vhost}' does not exist"),
            )
        })
    };
    Ok(match req.command.as_str() {
        "ping" | "await_startup" | "check_running" => Reply::ok(),
        "status" => Reply {
            document: Some(status(admin, control, node)),
            ..Reply::default()
        },
        "server_version" => Reply::text(warren_server::config::RABBITMQ_VERSION),
        "stop" => {
            control.stop();
            Reply::ok()
        }
        "stop_app" => {
            admin.stop_app();
            Reply::ok()
        }
        "start_app" => {
            admin.start_app();
            Reply::ok()
        }
        "reset" | "force_reset" => {
            // As rabbitmqctl: only between stop_app and start_app.
            if !admin.is_app_stopped() {
                return Err(Reply::error(exit::USAGE, APP_RUNNING));
            }
            done(admin.reset())
        }
        "trace_on" | "trace_off" => {
            need_vhost()?;
            done(broker.set_tracing(&vhost, req.command == "trace_on"))
        }
        "export_definitions" => {
            let id = admin.config().identity.resolved();
            let meta = warren_broker::definitions::ExportMeta {
                rabbitmq_version: warren_server::config::RABBITMQ_VERSION.to_string(),
                product_name: id.product,
                product_version: id.version,
            };
            Reply {
                document: Some(warren_broker::definitions::export(broker, &meta)),
                ..Reply::default()
            }
        }
        "import_definitions" => {
            let text = opt(req, "document").and_then(Value::as_str).unwrap_or("");
            if let Err(e) = serde_json::from_str::<Value>(text) {
                return Err(Reply::error(
                    exit::DATAERR,
                    format!("Failed to deserialise input (format: JSON) (error: {e})"),
                ));
            }
            match warren_broker::definitions::import(broker, text) {
                Ok(_) => Reply::ok(),
                Err(why) => Reply::error(exit::DATAERR, why),
            }
        }
        "list_queues" => {
            // A missing vhost lists nothing, as in RabbitMQ (exit 0).
            let Some(v) = broker.vhost(&vhost) else {
                return Ok(Reply::ok());
            };
            let rows = v
                .queues()
                .iter()
                .map(|q| {
                    let s = q.snapshot();
                    let policy = v.queue_policy(&q.name).map(|p| p.name);
                    obj(json!({
                        "name": q.name, "vhost": v.name, "durable": q.durable,
                        "auto_delete": q.auto_delete, "exclusive": q.exclusive_owner.is_some(),
                        "arguments": table_to_json(&q.arguments),
                        "messages": s.ready + s.unacked, "messages_ready": s.ready,
                        "messages_unacknowledged": s.unacked, "consumers": s.consumers,
                        "message_bytes": s.ready_bytes + s.unacked_bytes,
                        "message_bytes_ready": s.ready_bytes,
                        "message_bytes_unacknowledged": s.unacked_bytes,
                        "policy": policy.unwrap_or_default(), "state": "running",
                        "type": q.type_name(), "memory": 0,
                    }))
                })
                .collect();
            let all = [
                "name",
                "vhost",
                "durable",
                "auto_delete",
                "exclusive",
                "arguments",
                "messages",
                "messages_ready",
                "messages_unacknowledged",
                "consumers",
                "message_bytes",
                "message_bytes_ready",
                "message_bytes_unacknowledged",
                "policy",
                "state",
                "type",
                "memory",
            ];
            table(req, &all, &["name", "messages"], rows)
        }
        "list_exchanges" => {
            // A missing vhost lists nothing, as in RabbitMQ (exit 0).
            let Some(v) = broker.vhost(&vhost) else {
                return Ok(Reply::ok());
            };
            let rows = v
                .exchanges()
                .iter()
                .map(|x| {
                    let policy = v.exchange_policy(&x.name).map(|p| p.name);
                    obj(json!({
                        "name": x.name, "vhost": v.name, "type": x.kind.as_str(),
                        "durable": x.durable, "auto_delete": x.auto_delete,
                        "internal": x.internal, "arguments": table_to_json(&x.arguments),
                        "policy": policy.unwrap_or_default(),
                    }))
                })
                .collect();
            let all = [
                "name",
                "vhost",
                "type",
                "durable",
                "auto_delete",
                "internal",
                "arguments",
                "policy",
            ];
            table(req, &all, &["name", "type"], rows)
        }
        "list_bindings" => {
            // A missing vhost lists nothing, as in RabbitMQ (exit 0).
            let Some(v) = broker.vhost(&vhost) else {
                return Ok(Reply::ok());
            };
            let rows = v
                .bindings()
                .iter()
                .map(|b| {
                    let (dest, kind) = match &b.destination {
                        warren_broker::exchange::Destination::Queue(q) => (q.clone(), "queue"),
                        warren_broker::exchange::Destination::Exchange(x) => {
                            (x.clone(), "exchange")
                        }
                    };
                    obj(json!({
                        "source_name": b.source, "source_kind": "exchange",
                        "destination_name": dest, "destination_kind": kind,
                        "routing_key": b.routing_key, "arguments": table_to_json(&b.arguments),
                        "vhost": v.name,
                    }))
                })
                .collect();
            let all = [
                "source_name",
                "source_kind",
                "destination_name",
                "destination_kind",
                "routing_key",
                "arguments",
                "vhost",
            ];
            let default = [
                "source_name",
                "source_kind",
                "destination_name",
                "destination_kind",
                "routing_key",
                "arguments",
            ];
            table(req, &all, &default, rows)
        }
        // rabbitmq-streams: every stream connection (3.10 ignores --vhost here), and
        // the publishers and consumers of one vhost.
        "list_stream_connections" => {
            let reports = admin.stream_reports(REPORT_TIMEOUT).await;
            let rows = reports
                .iter()
                .map(|(c, r)| {
                    let connected_at = c
                        .connected_at
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64);
                    obj(json!({
                        "auth_mechanism": c.auth_mechanism,
                        "client_properties": property_triples(&c.client_properties),
                        "conn_name": c.name, "connected_at": connected_at,
                        "connection_state": "running", "frame_max": c.frame_max,
                        "heartbeat": c.heartbeat,
                        "host": warren_server::registry::host_of(c.local),
                        "peer_cert_issuer": "", "peer_cert_subject": "", "peer_cert_validity": "",
                        "peer_host": warren_server::registry::host_of(c.peer),
                        "peer_port": c.peer.port(), "port": c.local.port(), "ssl": c.tls,
                        "ssl_cipher": "", "ssl_hash": "", "ssl_key_exchange": "", "ssl_protocol": "",
                        "subscriptions": r.consumers.len(), "user": c.user, "vhost": c.vhost,
                    }))
                })
                .collect();
            let all = [
                "auth_mechanism",
                "client_properties",
                "conn_name",
                "connected_at",
                "connection_state",
                "frame_max",
                "heartbeat",
                "host",
                "peer_cert_issuer",
                "peer_cert_subject",
                "peer_cert_validity",
                "peer_host",
                "peer_port",
                "port",
                "ssl",
                "ssl_cipher",
                "ssl_hash",
                "ssl_key_exchange",
                "ssl_protocol",
                "subscriptions",
                "user",
                "vhost",
            ];
            table(req, &all, &["conn_name"], rows)
        }
        "list_stream_consumers" => {
            let all = [
                "connection_pid",
                "subscription_id",
                "stream",
                "messages_consumed",
                "offset",
                "offset_lag",
                "credits",
                "properties",
            ];
            let mut rows = Vec::new();
            for (c, r) in admin.stream_reports(REPORT_TIMEOUT).await {
                if c.vhost != vhost {
                    continue;
                }
                for s in &r.consumers {
                    let properties: Map<String, Value> = s
                        .properties
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                        .collect();
                    rows.push(obj(json!({
                        "connection_pid": format!("#PID{}", pid(node, c.id, 0)),
                        "subscription_id": s.id, "stream": s.stream,
                        "messages_consumed": s.consumed, "offset": s.offset,
                        "offset_lag": s.offset_lag, "credits": s.credits,
                        "properties": properties,
                    })));
                }
            }
            table(req, &all, &all, rows)
        }
        "list_stream_publishers" => {
            let all = [
                "connection_pid",
                "publisher_id",
                "stream",
                "reference",
                "messages_published",
                "messages_confirmed",
                "messages_errored",
            ];
            let mut rows = Vec::new();
            for (c, r) in admin.stream_reports(REPORT_TIMEOUT).await {
                if c.vhost != vhost {
                    continue;
                }
                for p in &r.publishers {
                    rows.push(obj(json!({
                        "connection_pid": format!("#PID{}", pid(node, c.id, 0)),
                        "publisher_id": p.id, "stream": p.stream, "reference": p.reference,
                        "messages_published": p.published, "messages_confirmed": p.confirmed,
                        "messages_errored": p.errored,
                    })));
                }
            }
            table(req, &all, &all, rows)
        }
        "list_connections" => {
            use std::sync::atomic::Ordering::Relaxed;
            // AMQP connections only: stream connections have rabbitmq-streams'
            // list_stream_connections, as in RabbitMQ.
            let rows = admin
                .connections()
                .iter()
                .filter(|c| c.protocol == warren_server::registry::AMQP_091)
                .map(|c| {
                    obj(json!({
                        "pid": pid(node, c.id, 0), "name": c.name, "user": c.user, "vhost": c.vhost,
                        "peer_host": warren_server::registry::host_of(c.peer), "peer_port": c.peer.port(),
                        "host": warren_server::registry::host_of(c.local), "port": c.local.port(),
                        "client_properties": table_to_json(&c.client_properties),
                        "state": "running", "channels": c.stats.channels.load(Relaxed),
                        "ssl": c.tls, "protocol": "{0,9,1}", "auth_mechanism": c.auth_mechanism,
                        "timeout": c.heartbeat, "frame_max": c.frame_max,
                        "channel_max": c.channel_max,
                        "recv_oct": c.stats.recv_oct.load(Relaxed),
                        "send_oct": c.stats.send_oct.load(Relaxed),
                        "recv_cnt": c.stats.recv_cnt.load(Relaxed),
                        "send_cnt": c.stats.send_cnt.load(Relaxed),
                        "connected_at": c.connected_at.duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as u64),
                        "type": "network",
                    }))
                })
                .collect();
            let all = [
                "pid",
                "name",
                "user",
                "vhost",
                "peer_host",
                "peer_port",
                "host",
                "port",
                "client_properties",
                "state",
                "channels",
                "ssl",
                "protocol",
                "auth_mechanism",
                "timeout",
                "frame_max",
                "channel_max",
                "recv_oct",
                "send_oct",
                "recv_cnt",
                "send_cnt",
                "connected_at",
                "type",
            ];
            table(
                req,
                &all,
                &["user", "peer_host", "peer_port", "state"],
                rows,
            )
        }
        "list_channels" => {
            let reports = admin.channels(std::time::Duration::from_secs(5)).await;
            let rows = reports
                .iter()
                .flat_map(|(c, chans)| {
                    chans.iter().map(move |ch| {
                        obj(json!({
                            "pid": pid(node, c.id, ch.number), "connection": pid(node, c.id, 0),
                            "name": format!("{} ({})", c.name, ch.number), "number": ch.number,
                            "user": c.user, "vhost": c.vhost, "consumer_count": ch.consumers,
                            "messages_unacknowledged": ch.unacked,
                            "messages_unconfirmed": ch.unconfirmed,
                            "messages_uncommitted": ch.uncommitted,
                            "acks_uncommitted": ch.acks_uncommitted,
                            "prefetch_count": ch.prefetch, "global_prefetch_count": ch.global_prefetch,
                            "confirm": ch.confirm, "transactional": ch.transactional,
                        }))
                    })
                })
                .collect();
            let all = [
                "pid",
                "connection",
                "name",
                "number",
                "user",
                "vhost",
                "consumer_count",
                "messages_unacknowledged",
                "messages_unconfirmed",
                "messages_uncommitted",
                "acks_uncommitted",
                "prefetch_count",
                "global_prefetch_count",
                "confirm",
                "transactional",
            ];
            table(
                req,
                &all,
                &["pid", "user", "consumer_count", "messages_unacknowledged"],
                rows,
            )
        }
        "list_consumers" => {
            // A missing vhost lists nothing, as in RabbitMQ (exit 0).
            let Some(v) = broker.vhost(&vhost) else {
                return Ok(Reply::ok());
            };
            let mut rows = Vec::new();
            for q in v.queues() {
                for c in q.snapshot().consumers_detail {
                    rows.push(obj(json!({
                        "queue_name": q.name, "channel_pid": pid(node, c.connection, c.channel),
                        "consumer_tag": c.tag, "ack_required": !c.no_ack,
                        "prefetch_count": c.prefetch, "active": true, "activity_status": "up",
                        "exclusive": c.exclusive, "arguments": {},
                    })));
                }
            }
            let all = [
                "queue_name",
                "channel_pid",
                "consumer_tag",
                "ack_required",
                "prefetch_count",
                "active",
                "activity_status",
                "exclusive",
                "arguments",
            ];
            let default = [
                "queue_name",
                "channel_pid",
                "consumer_tag",
                "ack_required",
                "prefetch_count",
                "active",
                "arguments",
            ];
            table(req, &all, &default, rows)
        }
        "list_users" => {
            let rows = access
                .users()
                .iter()
                .map(|u| obj(json!({"user": u.name, "tags": u.tags})))
                .collect();
            table(req, &["user", "tags"], &["user", "tags"], rows)
        }
        "list_vhosts" => {
            let rows = access
                .vhosts()
                .iter()
                .map(|v| {
                    obj(
                        json!({"name": v.name, "description": v.description, "tags": v.tags,
                               "tracing": v.tracing, "default_queue_type": "classic"}),
                    )
                })
                .collect();
            let all = [
                "name",
                "description",
                "tags",
                "tracing",
                "default_queue_type",
            ];
            table(req, &all, &["name"], rows)
        }
        "list_permissions" => {
            need_vhost()?;
            let rows = access
                .permissions()
                .iter()
                .filter(|p| p.vhost == vhost)
                .map(|p| {
                    obj(json!({"user": p.user, "configure": p.configure,
                               "write": p.write, "read": p.read}))
                })
                .collect();
            let cols = ["user", "configure", "write", "read"];
            fixed(&cols, rows)
        }
        "list_user_permissions" => {
            let user = arg(req, 0, "<username>")?;
            if access.user(user).is_none() {
                return Err(Reply::error(
                    exit::UNAVAILABLE,
                    format!("{{:no_such_user, \"{user}\"}}"),
                ));
            }
            let rows = access
                .permissions()
                .iter()
                .filter(|p| p.user == user)
                .map(|p| {
                    obj(json!({"vhost": p.vhost, "configure": p.configure,
                               "write": p.write, "read": p.read}))
                })
                .collect();
            let cols = ["vhost", "configure", "write", "read"];
            fixed(&cols, rows)
        }
        "list_topic_permissions" => {
            need_vhost()?;
            let rows = access
                .topic_permissions()
                .iter()
                .filter(|p| p.vhost == vhost)
                .map(|p| {
                    obj(json!({"user": p.user, "exchange": p.exchange,
                               "write": p.write, "read": p.read}))
                })
                .collect();
            let cols = ["user", "exchange", "write", "read"];
            fixed(&cols, rows)
        }
        "list_policies" | "list_operator_policies" => {
            need_vhost()?;
            let kind = if req.command == "list_policies" {
                PolicyKind::Regular
            } else {
                PolicyKind::Operator
            };
            let rows = access
                .policies(kind, Some(&vhost))
                .iter()
                .map(|p| {
                    obj(
                        json!({"vhost": p.vhost, "name": p.name, "pattern": p.pattern,
                               "apply-to": p.apply_to,
                               "definition": Value::Object(p.definition.clone()).to_string(),
                               "priority": p.priority}),
                    )
                })
                .collect();
            let cols = [
                "vhost",
                "name",
                "pattern",
                "apply-to",
                "definition",
                "priority",
            ];
            fixed(&cols, rows)
        }
        "add_user" => {
            let user = arg(req, 0, "<username>")?;
            let password = arg(req, 1, "<password>")?;
            done(access.add_user(user, Some(password), &[]))
        }
        "delete_user" => done(admin.delete_user(arg(req, 0, "<username>")?).map(|_| ())),
        "change_password" => {
            let user = arg(req, 0, "<username>")?;
            done(access.change_password(user, Some(arg(req, 1, "<password>")?)))
        }
        "clear_password" => match access.change_password(arg(req, 0, "<username>")?, None) {
            // rabbitmqctl prints the Erlang error here (69), not "User ... does not exist".
            Err(AdminError::NoSuchUser(u)) => no_such_user(&u),
            r => done(r),
        },
        "authenticate_user" => {
            let user = arg(req, 0, "<username>")?;
            match access.check_password(user, arg(req, 1, "<password>")?) {
                Ok(_) => Reply::text("Success"),
                Err(_) => Reply::error(
                    exit::DATAERR,
                    format!("Error: failed to authenticate user \"{user}\"\nuser '{user}' - invalid credentials"),
                ),
            }
        }
        "set_user_tags" => {
            let user = arg(req, 0, "<username>")?;
            let tags: Vec<String> = req.args[1..].to_vec();
            done(access.set_user_tags(user, &tags))
        }
        "add_vhost" => {
            let name = arg(req, 0, "<vhost>")?;
            let description = opt(req, "description")
                .and_then(Value::as_str)
                .unwrap_or("");
            let tags: Vec<String> = opt(req, "tags")
                .and_then(Value::as_str)
                .map(|t| {
                    t.split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            // Adding an existing vhost succeeds and changes nothing, as in RabbitMQ.
            match admin.create_vhost(name, description, &tags) {
                Ok(_) | Err(AdminError::VHostExists(_)) => Reply::ok(),
                Err(e) => admin_error(e),
            }
        }
        "delete_vhost" => done(admin.delete_vhost(arg(req, 0, "<vhost>")?).map(|_| ())),
        "add_super_stream" => {
            let name = arg(req, 0, "<name>")?;
            let v = need_vhost()?;
            let (partitions, keys) = crate::streams::layout(name, &req.options);
            let arguments = crate::streams::arguments(&req.options);
            match v.create_super_stream(name, &partitions, &keys, &arguments) {
                Ok(()) => Reply::text(format!("Super stream {name} has been created")),
                // RabbitMQ 3.10 prints the Erlang error term.
                Err(e) => {
                    use warren_broker::super_stream::SuperStreamError as E;
                    let term = match &e {
                        E::AlreadyExists(m) => format!("{{:reference_already_exists, '{m}'}}"),
                        E::Invalid(m) => format!("{{:validation_failed, '{m}'}}"),
                        E::Engine(e) => format!("{{:internal_error, '{e}'}}"),
                    };
                    Reply::error(exit::SOFTWARE, term)
                }
            }
        }
        "delete_super_stream" => {
            let name = arg(req, 0, "<name>")?;
            let v = need_vhost()?;
            match v.delete_super_stream(name) {
                Some(_) => Reply::text(format!("Super stream {name} has been deleted")),
                None => Reply::error(exit::SOFTWARE, "stream_not_found"),
            }
        }
        "set_permissions" => {
            let user = arg(req, 0, "<username>")?;
            let (c, w, r) = (
                arg(req, 1, "<conf>")?,
                arg(req, 2, "<write>")?,
                arg(req, 3, "<read>")?,
            );
            permissions_done(access.set_permissions(user, &vhost, c, w, r))
        }
        "clear_permissions" => {
            permissions_done(access.clear_permissions(arg(req, 0, "<username>")?, &vhost))
        }
        "set_topic_permissions" => {
            let user = arg(req, 0, "<username>")?;
            let x = arg(req, 1, "<exchange>")?;
            let (w, r) = (arg(req, 2, "<write>")?, arg(req, 3, "<read>")?);
            permissions_done(access.set_topic_permissions(user, &vhost, x, w, r))
        }
        "clear_topic_permissions" => {
            let user = arg(req, 0, "<username>")?;
            permissions_done(access.clear_topic_permissions(
                user,
                &vhost,
                req.args.get(1).map(String::as_str),
            ))
        }
        "set_vhost_limits" => {
            let def = limits_json(arg(req, 0, "<definition>")?)?;
            check_limits(&def, &["max-connections", "max-queues"], true)?;
            let mut limits = access.vhost(&vhost).map(|v| v.limits).unwrap_or_default();
            apply_limit(&def, "max-connections", &mut limits.max_connections);
            apply_limit(&def, "max-queues", &mut limits.max_queues);
            done(access.set_vhost_limits(&vhost, limits))
        }
        "clear_vhost_limits" => {
            // RabbitMQ clears a runtime parameter: none set (or no such vhost) is 69.
            match access.vhost(&vhost) {
                Some(v) if v.limits != VHostLimits::default() => {
                    done(access.set_vhost_limits(&vhost, VHostLimits::default()))
                }
                _ => Reply::error(exit::UNAVAILABLE, "Parameter does not exist"),
            }
        }
        "set_user_limits" => {
            let user = arg(req, 0, "<username>")?;
            let def = limits_json(arg(req, 1, "<definition>")?)?;
            check_limits(&def, &["max-connections", "max-channels"], false)?;
            let Some(mut limits) = access.user(user).map(|u| u.limits) else {
                return Ok(no_such_user(user));
            };
            apply_limit(&def, "max-connections", &mut limits.max_connections);
            apply_limit(&def, "max-channels", &mut limits.max_channels);
            done(access.set_user_limits(user, limits))
        }
        "clear_user_limits" => {
            let user = arg(req, 0, "<username>")?;
            let which = arg(req, 1, "<limit_type>")?;
            let Some(mut limits) = access.user(user).map(|u| u.limits) else {
                return Ok(no_such_user(user));
            };
            match which {
                "all" => limits = UserLimits::default(),
                "max-connections" => limits.max_connections = None,
                "max-channels" => limits.max_channels = None,
                // RabbitMQ clears nothing and succeeds for a limit it does not know.
                _ => {}
            }
            done(access.set_user_limits(user, limits))
        }
        "set_policy" | "set_operator_policy" => {
            let kind = if req.command == "set_policy" {
                PolicyKind::Regular
            } else {
                PolicyKind::Operator
            };
            let name = arg(req, 0, "<name>")?;
            let pattern = arg(req, 1, "<pattern>")?;
            let definition = match parse_json(arg(req, 2, "<definition>")?)? {
                Value::Object(m) => m,
                other => {
                    return Err(Reply::error(
                        exit::UNAVAILABLE,
                        format!(
                            "Validation failed\n\n{} is not a JSON object\n",
                            erlang_term(&other)
                        ),
                    ))
                }
            };
            let priority = match opt(req, "priority") {
                None => 0,
                Some(v) => v
                    .as_str()
                    .and_then(|s| s.parse().ok())
                    .or_else(|| v.as_i64())
                    .ok_or_else(|| Reply::error(exit::USAGE, "priority must be an integer"))?,
            };
            let apply_to = opt(req, "apply-to")
                .and_then(Value::as_str)
                .unwrap_or("all")
                .to_string();
            let record = PolicyRecord {
                vhost: vhost.clone(),
                name: name.to_string(),
                pattern: pattern.to_string(),
                apply_to,
                priority,
                definition,
            };
            match broker.put_policy(kind, record) {
                Ok(_) => Reply::ok(),
                // As rabbitmqctl: a refused definition is 69 (a missing vhost stays 65).
                Err(AdminError::Validation(why)) => {
                    Reply::error(exit::UNAVAILABLE, AdminError::Validation(why).to_string())
                }
                Err(e) => admin_error(e),
            }
        }
        "clear_policy" | "clear_operator_policy" => {
            let kind = if req.command == "clear_policy" {
                PolicyKind::Regular
            } else {
                PolicyKind::Operator
            };
            match broker.delete_policy(kind, &vhost, arg(req, 0, "<name>")?) {
                Ok(()) => Reply::ok(),
                Err(AdminError::NotFound(_)) => {
                    Reply::error(exit::UNAVAILABLE, "Parameter does not exist")
                }
                Err(e) => admin_error(e),
            }
        }
        "purge_queue" => {
            let name = arg(req, 0, "<queue>")?;
            // RabbitMQ answers a missing vhost as it answers a missing queue.
            let Some(v) = broker.vhost(&vhost) else {
                return Ok(Reply::error(exit::UNAVAILABLE, "not_found"));
            };
            match v.purge_queue(name, CONTROL_CONNECTION) {
                Ok(_) => Reply::ok(),
                Err(_) => Reply::error(exit::UNAVAILABLE, "not_found"),
            }
        }
        "delete_queue" => {
            let name = arg(req, 0, "<queue>")?;
            // Unlike AMQP's queue.delete, rabbitmqctl refuses a queue that is not there.
            let Some(v) = broker
                .vhost(&vhost)
                .filter(|v| v.queues().iter().any(|q| q.name == name))
            else {
                return Ok(Reply::error(exit::USAGE, "Queue not found"));
            };
            match v.delete_queue(
                name,
                flag(req, "if-unused"),
                flag(req, "if-empty"),
                CONTROL_CONNECTION,
            ) {
                Ok(n) => Reply::text(format!(
                    "Queue was successfully deleted with {n} ready messages"
                )),
                Err(warren_broker::Error::QueueNotFound { .. }) => {
                    Reply::error(exit::USAGE, "Queue not found")
                }
                Err(warren_broker::Error::InUse { .. }) => {
                    Reply::error(exit::USAGE, "Queue is in use")
                }
                Err(warren_broker::Error::NotEmpty { .. }) => {
                    Reply::error(exit::USAGE, "Queue is not empty")
                }
                Err(e) => Reply::error(exit::DATAERR, e.to_string()),
            }
        }
        "close_connection" => {
            let name = arg(req, 0, "<connection pid>")?;
            let reason = arg(req, 1, "<explanation>")?;
            let target = admin
                .connections()
                .iter()
                .find(|c| c.name == name || pid(node, c.id, 0) == name)
                .map(|c| c.name.clone());
            match target {
                Some(n) => {
                    admin.close_connection(&n, reason);
                    Reply::ok()
                }
                // RabbitMQ: a pid of no connection closes nothing and succeeds; anything
                // that is not a pid (Warren also takes names) is a pid syntax error.
                None if name.starts_with('<') && name.ends_with('>') => Reply::ok(),
                None => Reply::error(
                    exit::UNAVAILABLE,
                    format!("Error:\n{{:invalid_pid_syntax, \"{name}\"}}"),
                ),
            }
        }
        "close_all_connections" => {
            let reason = arg(req, 0, "<explanation>")?;
            let scope = if flag(req, "global") {
                None
            } else {
                Some(vhost.as_str())
            };
            let n = admin.close_all_connections(scope, reason);
            Reply::text(format!("Closed {n} connections"))
        }
        "set_vm_memory_high_watermark" => {
            let bytes = watermark(&req.args)?;
            admin.alarms().set_watermark_bytes(bytes);
            Reply::ok()
        }
        "set_disk_free_limit" => {
            let bytes = disk_limit(&req.args)?;
            admin.alarms().set_disk_free_limit_bytes(bytes);
            Reply::ok()
        }
        "eval" => eval(admin, arg(req, 0, "<expression>")?)?,
        "check_local_alarms" | "check_alarms" => {
            let st = *admin.alarms().subscribe().borrow();
            let mut lines = Vec::new();
            if st.memory {
                lines.push(format!("Memory alarm on node {node}"));
            }
            if st.disk {
                lines.push(format!("Free disk space alarm on node {node}"));
            }
            if !lines.is_empty() {
                Reply::error(exit::UNAVAILABLE, lines.join("\n"))
            } else if req.command == "check_local_alarms" {
                Reply::text(format!("Node {node} reported no local alarms"))
            } else {
                Reply::text(format!(
                    "Node {node} reported no alarms, local or clusterwide"
                ))
            }
        }
        "listeners" => Reply {
            rows: listeners(admin, control)
                .into_iter()
                .map(|(p, a)| obj(listener_json(node, p, a)))
                .collect(),
            ..Reply::default()
        },
        "check_port_connectivity" => {
            let all = listeners(admin, control);
            let mut failed = Vec::new();
            for &(protocol, a) in &all {
                // A wildcard listener is tried on the loopback addresses.
                let targets: Vec<SocketAddr> = if a.ip().is_unspecified() {
                    let mut t = vec![SocketAddr::from(([127, 0, 0, 1], a.port()))];
                    if a.is_ipv6() {
                        t.insert(
                            0,
                            SocketAddr::new(std::net::Ipv6Addr::LOCALHOST.into(), a.port()),
                        );
                    }
                    t
                } else {
                    vec![a]
                };
                let mut ok = false;
                for target in targets {
                    let connect = tokio::net::TcpStream::connect(target);
                    let timeout = std::time::Duration::from_secs(10);
                    if matches!(tokio::time::timeout(timeout, connect).await, Ok(Ok(_))) {
                        ok = true;
                        break;
                    }
                }
                if !ok {
                    failed.push(listener_line(protocol, a));
                }
            }
            if failed.is_empty() {
                let mut ports: Vec<u16> = all.iter().map(|(_, a)| a.port()).collect();
                ports.sort_unstable();
                let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
                Reply::text(format!(
                    "Successfully connected to ports {} on node {node}.",
                    ports.join(", ")
                ))
            } else {
                Reply::error(
                    exit::UNAVAILABLE,
                    format!(
                        "Connection to ports of the following listeners on node {node} failed: \n{}",
                        failed.join("\n")
                    ),
                )
            }
        }
        "check_protocol_listener" => {
            let p = normalize_protocol(arg(req, 0, "<protocol>")?);
            let all = listeners(admin, control);
            if all.iter().any(|(q, _)| *q == p) {
                Reply::text(format!(
                    "A listener for protocol {p} is running on node {node}."
                ))
            } else {
                let mut found: Vec<&str> = all.iter().map(|(q, _)| *q).collect();
                found.sort_unstable();
                Reply::error(
                    exit::UNAVAILABLE,
                    format!(
                        "No listener for protocol {p} is active on node {node}. Found listeners for the following protocols: {}",
                        found.join(", ")
                    ),
                )
            }
        }
        other => Reply::error(exit::USAGE, format!("Command '{other}' not found.")),
    })
}

/// The node's listeners as `(protocol, address)`, in the order RabbitMQ lists them:
/// HTTP ones first, then AMQP. (No `clustering` listener: Warren has no Erlang
/// distribution.)
fn listeners(admin: &Admin, control: &dyn NodeControl) -> Vec<(&'static str, SocketAddr)> {
    let config = admin.config();
    let mut all = control.http_listeners().unwrap_or_else(|| {
        let mut http = Vec::new();
        if config.management.enabled {
            http.push(("http", config.management.listen));
            if let Some(a) = config.management.tls_listen {
                http.push(("https", a));
            }
        }
        if config.prometheus.enabled {
            http.push(("http/prometheus", config.prometheus.listen));
        }
        http
    });
    all.push(("amqp", admin.amqp_addr()));
    if let Some(a) = admin.amqps_addr() {
        all.push(("amqp/ssl", a));
    }
    all.extend(admin.other_listeners());
    all
}

/// RabbitMQ's description of a listener's protocol.
fn protocol_label(protocol: &str) -> &str {
    match protocol {
        "amqp" => "AMQP 0-9-1 and AMQP 1.0",
        "amqp/ssl" => "AMQP 0-9-1 and AMQP 1.0 over TLS",
        "http" => "HTTP API",
        "https" => "HTTP API over TLS (HTTPS)",
        "http/prometheus" => "Prometheus exporter API over HTTP",
        "https/prometheus" => "Prometheus exporter API over TLS (HTTPS)",
        other => other,
    }
}

/// A protocol name as rabbitmq-diagnostics normalises it (`amqp091` is `amqp`, ...).
fn normalize_protocol(p: &str) -> String {
    let p = p.to_lowercase();
    match p.as_str() {
        "amqp091" | "amqp0.9.1" | "amqp0-9-1" | "amqp0_9_1" | "amqp10" | "amqp1.0" | "amqp1-0"
        | "amqp1_0" => "amqp".into(),
        "amqps" => "amqp/ssl".into(),
        "http1" | "http1.1" | "http_api" | "management" | "management_ui" | "ui" => "http".into(),
        "cli" | "distribution" => "clustering".into(),
        _ => p,
    }
}

/// An interface as RabbitMQ prints it: IPv6 addresses in brackets.
fn interface(a: SocketAddr) -> String {
    match a.ip() {
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    }
}

fn listener_json(node: &str, protocol: &str, a: SocketAddr) -> Value {
    json!({"node": node, "protocol": protocol, "interface": interface(a),
           "port": a.port(), "purpose": protocol_label(protocol)})
}

fn listener_line(protocol: &str, a: SocketAddr) -> String {
    format!(
        "Interface: {}, port: {}, protocol: {protocol}, purpose: {}",
        interface(a),
        a.port(),
        protocol_label(protocol)
    )
}

/// How long the stream listings wait for the connections' answers.
const REPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Client properties as rabbitmq-streams' JSON shows them: `[name, type, value]`.
fn property_triples(props: &warren_codec::types::FieldTable) -> Value {
    use warren_codec::types::AMQPValue;
    let all = table_to_json(props);
    Value::Array(
        props
            .inner()
            .iter()
            .map(|(k, v)| {
                let kind = match v {
                    AMQPValue::LongString(_) => "longstr",
                    AMQPValue::ShortString(_) => "shortstr",
                    AMQPValue::Boolean(_) => "bool",
                    AMQPValue::FieldTable(_) => "table",
                    AMQPValue::FieldArray(_) => "array",
                    AMQPValue::LongLongInt(_) => "long",
                    AMQPValue::Timestamp(_) => "timestamp",
                    _ => "signedint",
                };
                let value = all.get(k.as_str()).cloned().unwrap_or(Value::Null);
                json!([k.as_str(), kind, value])
            })
            .collect(),
    )
}

/// A stand-in for an Erlang pid, unique per connection and channel: `<NODE.ID.CHANNEL>`.
fn pid(node: &str, connection: u64, channel: u16) -> String {
    format!("<{node}.{connection}.{channel}>")
}

/// A JSON argument (policy definition, limits); rabbitmqctl's error for text that is not
/// JSON is 69 with the decoder's Erlang reason.
fn parse_json(text: &str) -> Result<Value, Reply> {
    serde_json::from_str(text)
        .map_err(|_| Reply::error(exit::UNAVAILABLE, "JSON decoding error. Reason: badarg"))
}

/// A limits definition: a JSON object.
fn limits_json(text: &str) -> Result<Map<String, Value>, Reply> {
    match parse_json(text)? {
        Value::Object(m) => Ok(m),
        other => Err(Reply::error(
            exit::UNAVAILABLE,
            format!(
                "Validation failed\n\n{} is not a JSON object\n",
                erlang_term(&other)
            ),
        )),
    }
}

/// Refuses unknown limits and values that are not integers, with rabbitmqctl's words
/// (vhost limits wrap them in "Validation failed", user limits do not).
fn check_limits(def: &Map<String, Value>, known: &[&str], vhost: bool) -> Result<(), Reply> {
    let fail = |why: String| {
        let message = if vhost {
            format!("Validation failed\n\n{why}\n")
        } else {
            why
        };
        Err(Reply::error(exit::UNAVAILABLE, message))
    };
    let unknown: Vec<String> = def
        .iter()
        .filter(|(k, _)| !known.contains(&k.as_str()))
        .map(|(k, v)| format!("{{<<{k:?}>>,{}}}", erlang_term(v)))
        .collect();
    if !unknown.is_empty() {
        let scope = if vhost { "limits" } else { "user-limits" };
        return fail(format!(
            "Unrecognised terms [{}] in {scope}",
            unknown.join(",")
        ));
    }
    for (k, v) in def {
        if !v.is_i64() {
            return fail(format!(
                "{k} should be a number, actually was {}",
                erlang_term(v)
            ));
        }
    }
    Ok(())
}

/// A JSON value as RabbitMQ prints the decoded term in errors: strings as binaries.
fn erlang_term(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("<<{s:?}>>"),
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(erlang_term).collect::<Vec<_>>().join(",")
        ),
        Value::Object(m) => format!(
            "#{{{}}}",
            m.iter()
                .map(|(k, v)| format!("<<{k:?}>> => {}", erlang_term(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

/// A checked limit (an integer): negative removes it, as in RabbitMQ.
fn apply_limit(def: &Map<String, Value>, key: &str, slot: &mut Option<u64>) {
    if let Some(n) = def.get(key).and_then(Value::as_i64) {
        *slot = u64::try_from(n).ok();
    }
}

/// rabbitmqctl's answer for a missing user where it prints the Erlang error (69).
fn no_such_user(user: &str) -> Reply {
    Reply::error(exit::UNAVAILABLE, format!("{{:no_such_user, \"{user}\"}}"))
}

/// rabbitmqctl's argument errors (printed without the banner, as "Error (argument
/// validation): ..."): too few or too many arguments (64), a bad value (65).
fn bad_argument(detail: Option<&str>) -> Reply {
    match detail {
        None => Reply::error(exit::DATAERR, "Bad argument."),
        Some(d) => Reply::error(exit::DATAERR, format!("Bad argument: {d}")),
    }
}

fn not_enough_arguments() -> Reply {
    Reply::error(exit::USAGE, "not enough arguments.")
}

fn too_many_arguments() -> Reply {
    Reply::error(exit::USAGE, "too many arguments.")
}

/// `set_vm_memory_high_watermark FRACTION` or `absolute BYTES` (with K/M/G units),
/// validated as rabbitmqctl 3.10 does.
fn watermark(args: &[String]) -> Result<u64, Reply> {
    match args {
        [] => Err(not_enough_arguments()),
        [kw] if kw == "absolute" => Err(not_enough_arguments()),
        [kw, value] if kw == "absolute" => {
            let digits = value.len() - value.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            if digits == 0 {
                return Err(bad_argument(None));
            }
            if value[digits..].starts_with('.') {
                return Err(bad_argument(Some("The threshold should be an integer.")));
            }
            crate::conf::bytes(value).ok_or_else(|| bad_argument(Some("Invalid units.")))
        }
        [fraction] => {
            let f: f64 = fraction.parse().map_err(|_| bad_argument(None))?;
            if !(0.0..=1.0).contains(&f) {
                return Err(bad_argument(Some(
                    "The threshold should be a fraction between 0.0 and 1.0",
                )));
            }
            let total = warren_server::alarm::total_memory_bytes().unwrap_or(0);
            Ok(((total as f64) * f).max(if f > 0.0 { 1.0 } else { 0.0 }) as u64)
        }
        _ => Err(too_many_arguments()),
    }
}

/// `set_disk_free_limit BYTES` (with units) or `mem_relative FRACTION`, validated as
/// rabbitmqctl 3.10 does (a negative number of bytes is taken, and means no limit).
fn disk_limit(args: &[String]) -> Result<u64, Reply> {
    match args {
        [] => Err(not_enough_arguments()),
        [kw] if kw == "mem_relative" => Err(not_enough_arguments()),
        [kw, fraction] if kw == "mem_relative" => {
            let f: f64 = fraction.parse().map_err(|_| bad_argument(None))?;
            if f < 0.0 || !f.is_finite() {
                return Err(bad_argument(None));
            }
            let total = warren_server::alarm::total_memory_bytes().unwrap_or(0);
            Ok(((total as f64) * f) as u64)
        }
        [value] => match value.strip_prefix('-') {
            Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => Ok(0),
            _ => crate::conf::bytes(value).ok_or_else(|| bad_argument(None)),
        },
        _ => Err(too_many_arguments()),
    }
}

/// `rabbitmqctl eval`: only what client test suites evaluate. Setting or clearing the
/// memory alarm (`rabbit_alarm:set_alarm({{resource_limit, memory, node()}, []})`),
/// and statistics tweaks that have no meaning here (accepted, no effect).
fn eval(admin: &Admin, expr: &str) -> Result<Reply, Reply> {
    let e: String = expr.chars().filter(|c| !c.is_whitespace()).collect();
    let alarm = |on: bool| {
        // A watermark of 1 byte trips the alarm; the configured one lifts it.
        let bytes = if on {
            1
        } else {
            admin.config().resources.watermark_bytes()
        };
        admin.alarms().set_watermark_bytes(bytes);
        Ok(Reply::text("ok"))
    };
    if e.starts_with("rabbit_alarm:set_alarm(") && e.contains("memory") {
        return alarm(true);
    }
    if e.starts_with("rabbit_alarm:clear_alarm(") && e.contains("memory") {
        return alarm(false);
    }
    if e.starts_with("application:set_env(rabbit,collect_statistics_interval")
        || e.starts_with("application:set_env(rabbitmq_management")
    {
        return Ok(Reply::text("ok"));
    }
    Err(Reply::error(
        exit::SOFTWARE,
        format!("Warren cannot evaluate Erlang expressions; supported: rabbit_alarm:set_alarm/clear_alarm of the memory alarm. Got: {expr}"),
    ))
}

/// `status`, with the keys of `rabbitmqctl status --formatter json` that mean something
/// for Warren (no Erlang VM: no processes, run queue, net_ticktime, erlang_version).
fn status(admin: &Admin, control: &dyn NodeControl, node: &str) -> Value {
    let alarms = admin.alarms();
    let s = *alarms.subscribe().borrow();
    let config = admin.config();
    let listeners: Vec<Value> = listeners(admin, control)
        .into_iter()
        .map(|(p, a)| listener_json(node, p, a))
        .collect();
    let mut plugins: Vec<&str> = Vec::new();
    if config.management.enabled {
        plugins.push("rabbitmq_management");
    }
    if config.prometheus.enabled {
        plugins.push("rabbitmq_prometheus");
    }
    // Their dependencies run too, as in RabbitMQ.
    if !plugins.is_empty() {
        plugins.extend(["rabbitmq_management_agent", "rabbitmq_web_dispatch"]);
    }
    if config.stream.enabled {
        plugins.push("rabbitmq_stream");
    }
    if config.auth.mechanisms.iter().any(|m| m == "EXTERNAL") {
        plugins.push("rabbitmq_auth_mechanism_ssl");
    }
    plugins.sort_unstable();
    let mut alarm_list = Vec::new();
    if s.memory {
        alarm_list.push(json!({"node": node, "resource": "memory", "type": "resource_limit"}));
    }
    if s.disk {
        alarm_list.push(json!({"node": node, "resource": "disk", "type": "resource_limit"}));
    }
    let rss = warren_server::alarm::rss_bytes().unwrap_or(0);
    let watermark = alarms.watermark_bytes();
    let setting = if config.resources.memory_high_watermark_bytes > 0 {
        json!({"absolute": watermark})
    } else {
        let total = warren_server::alarm::total_memory_bytes().unwrap_or(0);
        let relative = if total > 0 {
            (watermark as f64 / total as f64 * 10_000.0).round() / 10_000.0
        } else {
            config.resources.memory_high_watermark
        };
        json!({ "relative": relative })
    };
    let fd_limit = warren_server::alarm::max_fds().unwrap_or(0);
    let connections = admin.connections().len();
    let broker = admin.broker();
    let queues: usize = broker.vhosts().iter().map(|v| v.queues().len()).sum();
    let log_files: Vec<String> = match (&config.log_file, config.log_console) {
        (Some(f), true) => vec![f.display().to_string(), "<stdout>".into()],
        (Some(f), false) => vec![f.display().to_string()],
        (None, _) => vec!["<stdout>".into()],
    };
    json!({
        "active_plugins": plugins,
        "alarms": alarm_list,
        "config_files": [],
        "data_directory": config.data_dir.display().to_string(),
        "disk_free": warren_server::alarm::available_bytes(&config.data_dir).unwrap_or(0),
        "disk_free_limit": alarms.disk_free_limit_bytes(),
        "file_descriptors": {
            "sockets_limit": fd_limit, "sockets_used": connections,
            "total_limit": fd_limit,
            "total_used": warren_server::alarm::open_fds().unwrap_or(0),
        },
        "is_under_maintenance": false,
        "listeners": listeners,
        "log_files": log_files,
        "memory": {"strategy": "rss", "total": {"rss": rss, "allocated": rss}},
        "os": std::env::consts::OS.chars().take(1).flat_map(char::to_uppercase)
            .chain(std::env::consts::OS.chars().skip(1)).collect::<String>(),
        "pid": std::process::id(),
        "product_name": config.identity.resolved().product,
        "product_version": config.identity.resolved().version,
        "rabbitmq_version": warren_server::config::RABBITMQ_VERSION,
        "totals": {"virtual_host_count": broker.vhosts().len(),
                   "connection_count": connections, "queue_count": queues},
        "uptime": admin.uptime().as_secs(),
        "vm_memory_calculation_strategy": "rss",
        "vm_memory_high_watermark_limit": watermark,
        "vm_memory_high_watermark_setting": setting,
    })
}
