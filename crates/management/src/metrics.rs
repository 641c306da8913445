//! Prometheus metrics with RabbitMQ's names and labels (its `rabbitmq_prometheus`
//! plugin, port 15692), so the RabbitMQ-Overview Grafana dashboard finds its series:
//! `/metrics` aggregates queues, `/metrics/per-object` labels each queue's series with
//! `vhost` and `queue`. Every scrape reads the engine at that moment.

use std::net::SocketAddr;

use axum::http::{header, HeaderMap};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use warren_server::admin::Admin;

type Labels = Vec<(String, String)>;

fn gauge(registry: &mut Registry, name: &str, help: &str, value: i64) {
    let g: Gauge = Gauge::default();
    g.set(value);
    registry.register(name, help, g);
}

fn labelled_gauge(registry: &mut Registry, name: &str, help: &str, rows: Vec<(Labels, i64)>) {
    let f = Family::<Labels, Gauge>::default();
    for (labels, v) in rows {
        f.get_or_create(&labels).set(v);
    }
    registry.register(name, help, f);
}

fn labelled_counter(registry: &mut Registry, name: &str, help: &str, rows: Vec<(Labels, u64)>) {
    let f = Family::<Labels, Counter>::default();
    for (labels, v) in rows {
        f.get_or_create(&labels).inc_by(v);
    }
    registry.register(name, help, f);
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Every connection's channels, as the exposition needs them.
pub type Channels = [(
    std::sync::Arc<warren_server::registry::ConnectionInfo>,
    Vec<warren_server::stats::ChannelReport>,
)];

/// The exposition text: aggregated, or with one series per queue and channel.
/// `channels` are the connections' channel reports ([`Admin::channels`]).
pub fn render(admin: &Admin, per_object: bool, channels: &Channels) -> String {
    let mut r = Registry::default();
    let node = admin.node_name();
    let id = admin.config().identity.resolved();
    labelled_gauge(
        &mut r,
        "rabbitmq_identity_info",
        "RabbitMQ node & cluster identity info",
        vec![(
            vec![
                ("rabbitmq_node".into(), node.clone()),
                ("rabbitmq_cluster".into(), id.cluster_name.clone()),
                ("rabbitmq_endpoint".into(), "default".into()),
            ],
            1,
        )],
    );
    labelled_gauge(
        &mut r,
        "rabbitmq_build_info",
        "RabbitMQ & Erlang/OTP version info",
        vec![(
            vec![
                (
                    "rabbitmq_version".into(),
                    warren_server::config::RABBITMQ_VERSION.into(),
                ),
                ("product_name".into(), id.product.clone()),
                ("product_version".into(), id.version.clone()),
                ("erlang_version".into(), "none".into()),
            ],
            1,
        )],
    );
    let (mut queues, mut consumers) = (0u64, 0u64);
    let mut ready: Vec<(Labels, i64)> = Vec::new();
    let mut unacked: Vec<(Labels, i64)> = Vec::new();
    let mut total: Vec<(Labels, i64)> = Vec::new();
    let mut qconsumers: Vec<(Labels, i64)> = Vec::new();
    let mut published: Vec<(Labels, u64)> = Vec::new();
    let (mut a_ready, mut a_unacked, mut a_pub) = (0u64, 0u64, 0u64);
    for v in admin.broker().vhosts() {
        for q in v.queues() {
            let s = q.snapshot();
            queues += 1;
            consumers += s.consumers;
            a_ready += s.ready;
            a_unacked += s.unacked;
            a_pub += s.stats.publish;
            if per_object {
                let l: Labels = vec![
                    ("vhost".into(), v.name.clone()),
                    ("queue".into(), q.name.clone()),
                ];
                ready.push((l.clone(), i(s.ready)));
                unacked.push((l.clone(), i(s.unacked)));
                total.push((l.clone(), i(s.ready + s.unacked)));
                qconsumers.push((l.clone(), i(s.consumers)));
                published.push((l, s.stats.publish));
            }
        }
    }
    if !per_object {
        ready.push((Vec::new(), i(a_ready)));
        unacked.push((Vec::new(), i(a_unacked)));
        total.push((Vec::new(), i(a_ready + a_unacked)));
        published.push((Vec::new(), a_pub));
    }
    gauge(
        &mut r,
        "rabbitmq_connections",
        "Connections currently open",
        admin.connections().len() as i64,
    );
    gauge(&mut r, "rabbitmq_queues", "Queues available", i(queues));
    gauge(
        &mut r,
        "rabbitmq_consumers",
        "Consumers currently connected",
        i(consumers),
    );
    labelled_gauge(
        &mut r,
        "rabbitmq_queue_messages_ready",
        "Messages ready to be delivered to consumers",
        ready,
    );
    labelled_gauge(
        &mut r,
        "rabbitmq_queue_messages_unacked",
        "Messages delivered to consumers but not yet acknowledged",
        unacked,
    );
    labelled_gauge(
        &mut r,
        "rabbitmq_queue_messages",
        "Sum of ready and unacknowledged messages - total queue depth",
        total,
    );
    if per_object {
        labelled_gauge(
            &mut r,
            "rabbitmq_queue_consumers",
            "Consumers on a queue",
            qconsumers,
        );
    }
    // prometheus-client appends `_total` to counters.
    labelled_counter(
        &mut r,
        "rabbitmq_queue_messages_published",
        "Total number of messages published to queues",
        published,
    );
    channel_metrics(&mut r, admin, per_object, channels);
    let rss = warren_server::alarm::rss_bytes().unwrap_or(0);
    gauge(
        &mut r,
        "rabbitmq_process_resident_memory_bytes",
        "Memory used in bytes",
        i(rss),
    );
    let fds = warren_server::alarm::open_fds().unwrap_or(0);
    gauge(
        &mut r,
        "rabbitmq_process_open_fds",
        "Open file descriptors",
        i(fds),
    );
    let max_fds = warren_server::alarm::max_fds().unwrap_or(0);
    gauge(
        &mut r,
        "rabbitmq_process_max_fds",
        "Open file descriptors limit",
        i(max_fds),
    );
    let alarms = admin.alarms();
    gauge(
        &mut r,
        "rabbitmq_resident_memory_limit_bytes",
        "Memory high watermark in bytes",
        i(alarms.watermark_bytes()),
    );
    let disk = warren_server::alarm::available_bytes(&admin.config().data_dir).unwrap_or(0);
    gauge(
        &mut r,
        "rabbitmq_disk_space_available_bytes",
        "Disk space available in bytes",
        i(disk),
    );
    gauge(
        &mut r,
        "rabbitmq_disk_space_available_limit_bytes",
        "Free disk space low watermark in bytes",
        i(admin.config().resources.disk_free_limit_bytes),
    );
    let state = *alarms.subscribe().borrow();
    gauge(
        &mut r,
        "rabbitmq_alarms_memory_used_watermark",
        "is 1 if VM memory watermark alarm is in effect",
        i64::from(state.memory),
    );
    gauge(
        &mut r,
        "rabbitmq_alarms_free_disk_space_watermark",
        "is 1 if free disk space watermark alarm is in effect",
        i64::from(state.disk),
    );
    gauge(
        &mut r,
        "rabbitmq_alarms_file_descriptor_limit",
        "is 1 if file descriptor limit alarm is in effect",
        0,
    );
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &r);
    out
}

/// Channel, connection and queue churn series (RabbitMQ's `rabbitmq_channel_*`,
/// `rabbitmq_*_opened_total` / `_closed_total`, `rabbitmq_queues_*_total`).
fn channel_metrics(r: &mut Registry, admin: &Admin, per_object: bool, channels: &Channels) {
    use std::sync::atomic::Ordering::Relaxed;
    use warren_server::stats::{ChannelCounters, ChannelReport};
    let open: u64 = channels.iter().map(|(_, c)| c.len() as u64).sum();
    gauge(r, "rabbitmq_channels", "Channels currently open", i(open));
    let (c_open, c_closed, ch_open, ch_closed) = admin.churn().read();
    let counter = |r: &mut Registry, name: &str, help: &str, v: u64| {
        labelled_counter(r, name, help, vec![(Vec::new(), v)]);
    };
    counter(
        r,
        "rabbitmq_connections_opened",
        "Total number of connections opened",
        c_open,
    );
    counter(
        r,
        "rabbitmq_connections_closed",
        "Total number of connections closed or terminated",
        c_closed,
    );
    counter(
        r,
        "rabbitmq_channels_opened",
        "Total number of channels opened",
        ch_open,
    );
    counter(
        r,
        "rabbitmq_channels_closed",
        "Total number of channels closed",
        ch_closed,
    );
    let q = admin.broker().queue_churn();
    counter(
        r,
        "rabbitmq_queues_declared",
        "Total number of queues declared",
        q.declared.load(Relaxed),
    );
    counter(
        r,
        "rabbitmq_queues_created",
        "Total number of queues created",
        q.created.load(Relaxed),
    );
    counter(
        r,
        "rabbitmq_queues_deleted",
        "Total number of queues deleted",
        q.deleted.load(Relaxed),
    );
    // One row per channel (per-object) or one sum (aggregated).
    let rows: Vec<(Labels, ChannelReport)> = if per_object {
        channels
            .iter()
            .flat_map(|(c, chans)| {
                chans.iter().map(move |ch| {
                    let name = format!("{} ({})", c.name, ch.number);
                    (vec![("channel".to_string(), name)], ch.clone())
                })
            })
            .collect()
    } else {
        let mut sum = ChannelReport::default();
        for (_, chans) in channels {
            for ch in chans {
                sum.counters += ch.counters;
                sum.consumers += ch.consumers;
                sum.unacked += ch.unacked;
                sum.unconfirmed += ch.unconfirmed;
                sum.uncommitted += ch.uncommitted;
                sum.acks_uncommitted += ch.acks_uncommitted;
            }
        }
        vec![(Vec::new(), sum)]
    };
    type Pick = fn(&ChannelCounters) -> u64;
    let counters: [(&str, &str, Pick); 11] = [
        ("rabbitmq_channel_messages_published", "Total number of messages published into an exchange on a channel", |c| c.publish),
        ("rabbitmq_channel_messages_confirmed", "Total number of messages published into an exchange and confirmed on the channel", |c| c.confirm),
        ("rabbitmq_channel_messages_unroutable_returned", "Total number of messages published as mandatory into an exchange and returned to the publisher as unroutable", |c| c.return_unroutable),
        ("rabbitmq_channel_messages_unroutable_dropped", "Total number of messages published as non-mandatory into an exchange and dropped as unroutable", |c| c.drop_unroutable),
        ("rabbitmq_channel_messages_delivered_ack", "Total number of messages delivered to consumers in manual acknowledgement mode", |c| c.deliver),
        ("rabbitmq_channel_messages_delivered", "Total number of messages delivered to consumers in automatic acknowledgement mode", |c| c.deliver_no_ack),
        ("rabbitmq_channel_get_ack", "Total number of messages fetched with basic.get in manual acknowledgement mode", |c| c.get),
        ("rabbitmq_channel_get", "Total number of messages fetched with basic.get in automatic acknowledgement mode", |c| c.get_no_ack),
        ("rabbitmq_channel_get_empty", "Total number of times basic.get operations fetched no message", |c| c.get_empty),
        ("rabbitmq_channel_messages_acked", "Total number of messages acknowledged by consumers", |c| c.ack),
        ("rabbitmq_channel_messages_redelivered", "Total number of messages redelivered to consumers", |c| c.redeliver),
    ];
    for (name, help, pick) in counters {
        labelled_counter(
            r,
            name,
            help,
            rows.iter()
                .map(|(l, ch)| (l.clone(), pick(&ch.counters)))
                .collect(),
        );
    }
    type Level = fn(&ChannelReport) -> u64;
    let gauges: [(&str, &str, Level); 5] = [
        (
            "rabbitmq_channel_consumers",
            "Consumers on a channel",
            |c| c.consumers,
        ),
        (
            "rabbitmq_channel_messages_unacked",
            "Delivered but not yet acknowledged messages",
            |c| c.unacked,
        ),
        (
            "rabbitmq_channel_messages_unconfirmed",
            "Published but not yet confirmed messages",
            |c| c.unconfirmed,
        ),
        (
            "rabbitmq_channel_messages_uncommitted",
            "Messages received in a transaction but not yet committed",
            |c| c.uncommitted,
        ),
        (
            "rabbitmq_channel_acks_uncommitted",
            "Message acknowledgements in a transaction not yet committed",
            |c| c.acks_uncommitted,
        ),
    ];
    for (name, help, pick) in gauges {
        labelled_gauge(
            r,
            name,
            help,
            rows.iter()
                .map(|(l, ch)| (l.clone(), i(pick(ch))))
                .collect(),
        );
    }
}

/// How long a scrape waits for busy connections to report their channels.
const REPORT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// The metrics routes.
pub fn router(admin: Admin) -> Router {
    let per_object = admin.clone();
    Router::new()
        .route(
            "/metrics",
            get(move |headers: HeaderMap| {
                let admin = admin.clone();
                async move {
                    let channels = admin.channels(REPORT_TIMEOUT).await;
                    exposition(&headers, render(&admin, false, &channels))
                }
            }),
        )
        .route(
            "/metrics/per-object",
            get(move |headers: HeaderMap| {
                let admin = per_object.clone();
                async move {
                    let channels = admin.channels(REPORT_TIMEOUT).await;
                    exposition(&headers, render(&admin, true, &channels))
                }
            }),
        )
}

/// OpenMetrics when the scraper asks for it (Prometheus does), else the Prometheus
/// text format 0.0.4 that RabbitMQ serves (and scripts grep): counters' `# TYPE` and
/// `# HELP` lines name the `_total` series, and there is no `# EOF`.
fn exposition(headers: &HeaderMap, openmetrics: String) -> impl IntoResponse {
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    if wants_openmetrics {
        return (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            openmetrics,
        );
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        to_text_format(&openmetrics),
    )
}

/// Rewrites prometheus-client's OpenMetrics text as the Prometheus 0.0.4 text format.
pub fn to_text_format(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# TYPE ", "# HELP "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// A running metrics listener.
#[derive(Debug)]
pub struct Running {
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `/metrics` on `listen` (RabbitMQ: port 15692) until the handle is dropped.
///
/// # Errors
/// The address cannot be bound.
pub async fn start(admin: Admin, listen: SocketAddr) -> std::io::Result<Running> {
    let listener = warren_server::bind(listen)?;
    let local_addr = listener.local_addr()?;
    let app = router(admin);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "prometheus listener failed");
        }
    });
    tracing::info!(address = %local_addr, "Prometheus metrics: HTTP (non-TLS) listener started on port {}", local_addr.port());
    Ok(Running { local_addr, task })
}
