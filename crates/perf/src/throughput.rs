//! The message run: topology, producers, consumers, the per-second reporter and cleanup.
//!
//! Every producer and every consumer has its own connection with one channel, as in
//! PerfTest. Producers stamp each body with the time from [`Counters::now_ns`] in its
//! first 8 bytes (a monotonic clock, one `Instant` captured once per process, anchored
//! to the Unix epoch); consumers subtract it from the time of delivery, which gives
//! publish-to-deliver latency without any clock synchronisation.

use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::{FuturesUnordered, StreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, timeout};

use crate::cli::Cli;
use crate::error::PerfError;
use crate::procfs;
use crate::raw::{RawConsumer, RawPlan, RawProducer};
use crate::rawconn::Target;
use crate::stats::{self, human_mib, human_ns, Counters, Percentiles, Recorder, Snapshot};

/// How long setup and teardown steps may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// One second of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Second {
    /// Seconds since the start, at the end of this interval.
    pub t: f64,
    /// Published per second in this interval.
    pub publish_rate: f64,
    /// Confirmed per second in this interval.
    pub confirm_rate: f64,
    /// Delivered per second in this interval.
    pub consume_rate: f64,
    /// Publish-to-deliver latency in this interval.
    pub latency: Percentiles,
    /// Broker RSS at the end of this interval, if known.
    pub broker_rss_bytes: Option<u64>,
}

/// The broker's resident memory over the run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RssReport {
    /// Before the topology was declared.
    pub start_bytes: u64,
    /// The largest sample (one per second).
    pub peak_bytes: u64,
    /// After the queues were deleted.
    pub end_bytes: u64,
}

/// Everything a message run measured.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputReport {
    /// Measured duration, seconds.
    pub duration_s: f64,
    /// Totals within the duration.
    pub totals: Snapshot,
    /// Published per second.
    pub publish_rate: f64,
    /// Confirms (acks) per second.
    pub confirm_rate: f64,
    /// Deliveries per second (all consumers together; with --fanout each message counts
    /// once per queue).
    pub consume_rate: f64,
    /// Publish-to-deliver latency over the whole run.
    pub latency: Percentiles,
    /// Publish-to-confirm latency (with --confirm).
    pub confirm_latency: Option<Percentiles>,
    /// The broker's memory (with --broker-pid).
    pub broker_rss: Option<RssReport>,
    /// CPU seconds the broker used during the run divided by the duration: cores busy.
    pub broker_cpu_cores: Option<f64>,
    /// The same for this client process.
    pub client_cpu_cores: Option<f64>,
    /// Every second.
    pub per_second: Vec<Second>,
    /// Failures of producers, consumers or cleanup.
    pub errors: Vec<String>,
    /// Deliveries out of publish order (see [`Counters::out_of_order`]).
    pub out_of_order: u64,
}

async fn step<T>(
    what: &str,
    fut: impl std::future::Future<Output = lapin::Result<T>>,
) -> Result<T, PerfError> {
    timeout(STEP_TIMEOUT, fut)
        .await
        .map_err(|_| PerfError::Timeout(what.to_string()))?
        .map_err(PerfError::amqp(what))
}

async fn connect(cli: &Cli, name: &str) -> Result<Connection, PerfError> {
    let props = ConnectionProperties::default().with_connection_name(name.into());
    let what = format!("connect {name}");
    let Some(ca) = &cli.tls_ca else {
        return step(&what, Connection::connect(&cli.uri, props)).await;
    };
    let pem = std::fs::read_to_string(ca)
        .map_err(|e| PerfError::Options(format!("--tls-ca {}: {e}", ca.display())))?;
    let tls = lapin::tcp::OwnedTLSConfig {
        identity: None,
        cert_chain: Some(pem),
    };
    let runtime = lapin::runtime::default_runtime().map_err(PerfError::amqp(&what))?;
    step(
        &what,
        Connection::connect_with_config(&cli.uri, props, tls, runtime),
    )
    .await
}

/// The names the run declares.
#[derive(Debug, Clone)]
struct Topology {
    queues: Vec<ShortString>,
    exchange: Option<ShortString>,
}

impl Topology {
    fn new(cli: &Cli) -> Self {
        let prefix = cli.prefix();
        Topology {
            queues: (0..cli.queues)
                .map(|i| ShortString::from(format!("{prefix}-q{i}")))
                .collect(),
            exchange: cli
                .fanout
                .then(|| ShortString::from(format!("{prefix}-fanout"))),
        }
    }

    async fn declare(&self, ch: &Channel, durable: bool) -> Result<(), PerfError> {
        let qopts = QueueDeclareOptions {
            durable,
            ..QueueDeclareOptions::default()
        };
        for q in &self.queues {
            step(
                "queue.declare",
                ch.queue_declare(q.clone(), qopts, FieldTable::default()),
            )
            .await?;
        }
        if let Some(x) = &self.exchange {
            let xopts = ExchangeDeclareOptions {
                durable,
                ..ExchangeDeclareOptions::default()
            };
            step(
                "exchange.declare",
                ch.exchange_declare(
                    x.clone(),
                    ExchangeKind::Fanout,
                    xopts,
                    FieldTable::default(),
                ),
            )
            .await?;
            for q in &self.queues {
                step(
                    "queue.bind",
                    ch.queue_bind(
                        q.clone(),
                        x.clone(),
                        ShortString::from(""),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    ),
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn delete(&self, ch: &Channel) -> Vec<String> {
        let mut errors = Vec::new();
        for q in &self.queues {
            if let Err(e) = step(
                "queue.delete",
                ch.queue_delete(q.clone(), QueueDeleteOptions::default()),
            )
            .await
            {
                errors.push(format!("delete queue {q}: {e}"));
            }
        }
        if let Some(x) = &self.exchange {
            if let Err(e) = step(
                "exchange.delete",
                ch.exchange_delete(x.clone(), ExchangeDeleteOptions::default()),
            )
            .await
            {
                errors.push(format!("delete exchange {x}: {e}"));
            }
        }
        errors
    }
}

/// What a producer needs.
struct Producer {
    id: usize,
    conn: Connection,
    ch: Channel,
    exchange: ShortString,
    routing_key: ShortString,
}

/// What a consumer needs.
struct Consumer {
    conn: Connection,
    ch: Channel,
    consumer: lapin::Consumer,
}

#[derive(Debug, Clone)]
struct Plan {
    size: usize,
    window: usize,
    confirm: bool,
    rate: Option<f64>,
    properties: BasicProperties,
    auto_ack: bool,
    ack_every: u32,
    start: Instant,
    deadline: Instant,
}

/// Runs producers and consumers for `cli.duration` seconds and reports.
///
/// # Errors
/// Setup failed (connection, declarations). Failures during the run are reported in
/// [`ThroughputReport::errors`] instead.
pub async fn run(cli: &Cli) -> Result<ThroughputReport, PerfError> {
    let topo = Topology::new(cli);
    let rss_start = cli.broker_pid.and_then(|p| procfs::rss_bytes(p).ok());
    let setup = connect(cli, "warren-perf setup").await?;
    let setup_ch = step("channel.open", setup.create_channel()).await?;
    topo.declare(&setup_ch, cli.durable).await?;

    let result = run_declared(cli, &topo).await;

    let mut cleanup_errors = if cli.keep_queues {
        Vec::new()
    } else {
        topo.delete(&setup_ch).await
    };
    if let Err(e) = step("connection.close", setup.close(200, "OK".into())).await {
        cleanup_errors.push(format!("close setup connection: {e}"));
    }
    let mut report = result?;
    report.errors.extend(cleanup_errors);
    if let (Some(pid), Some(start)) = (cli.broker_pid, rss_start) {
        let end = procfs::rss_bytes(pid).unwrap_or(0);
        let peak = report
            .per_second
            .iter()
            .filter_map(|s| s.broker_rss_bytes)
            .chain([start, end])
            .max()
            .unwrap_or(0);
        report.broker_rss = Some(RssReport {
            start_bytes: start,
            peak_bytes: peak,
            end_bytes: end,
        });
    }
    Ok(report)
}

async fn run_declared(cli: &Cli, topo: &Topology) -> Result<ThroughputReport, PerfError> {
    let counters = Arc::new(Counters::new());
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));

    let clients = if cli.raw {
        connect_raw(cli, topo).await?
    } else {
        connect_lapin(cli, topo).await?
    };
    let mut properties = BasicProperties::default();
    if cli.persistent {
        properties = properties.with_delivery_mode(2);
    }
    let start = Instant::now();
    let duration = Duration::from_secs_f64(cli.duration);
    let plan = Plan {
        size: cli.size,
        window: cli.confirm.unwrap_or(cli.pipeline),
        confirm: cli.confirm.is_some(),
        rate: cli.rate,
        properties,
        auto_ack: cli.auto_ack,
        ack_every: cli.multiple_ack_every,
        start,
        deadline: start + duration,
    };
    let cpu_client_start = procfs::cpu_seconds(None).ok();
    let cpu_broker_start = cli
        .broker_pid
        .and_then(|p| procfs::cpu_seconds(Some(p)).ok());

    let (n_consumers, n_producers) = match &clients {
        Clients::Lapin {
            consumers,
            producers,
        } => (consumers.len(), producers.len()),
        Clients::Raw {
            consumers,
            producers,
        } => (consumers.len(), producers.len()),
    };
    let latency: Vec<Arc<Recorder>> = (0..n_consumers).map(|_| Recorder::new()).collect();
    let confirm_latency: Vec<Arc<Recorder>> = (0..n_producers).map(|_| Recorder::new()).collect();
    let tasks = match clients {
        Clients::Lapin {
            consumers,
            producers,
        } => spawn_lapin(
            consumers,
            producers,
            &plan,
            &counters,
            &errors,
            &latency,
            &confirm_latency,
        ),
        Clients::Raw {
            consumers,
            producers,
        } => spawn_raw(
            consumers,
            producers,
            raw_plan(cli, &plan),
            &counters,
            &errors,
            &latency,
            &confirm_latency,
        ),
    };

    let (per_second, totals) = report_seconds(
        start,
        plan.deadline,
        &counters,
        &latency,
        cli.broker_pid,
        (!cli.quiet).then_some(plan.confirm),
    )
    .await;
    let cpu_client = cpu_client_start
        .and_then(|s| Some(procfs::cpu_seconds(None).ok()? - s))
        .map(|c| c / cli.duration);
    let cpu_broker = cpu_broker_start
        .zip(cli.broker_pid)
        .and_then(|(s, p)| Some(procfs::cpu_seconds(Some(p)).ok()? - s))
        .map(|c| c / cli.duration);

    for t in tasks {
        if let Err(e) = t.await {
            push_error(&errors, format!("task failed: {e}"));
        }
    }
    let secs = cli.duration;
    let errors = std::mem::take(&mut *errors.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(ThroughputReport {
        duration_s: secs,
        totals,
        publish_rate: totals.published as f64 / secs,
        confirm_rate: totals.confirmed as f64 / secs,
        consume_rate: totals.consumed as f64 / secs,
        latency: Percentiles::from(&stats::totals(&latency)),
        confirm_latency: plan
            .confirm
            .then(|| Percentiles::from(&stats::totals(&confirm_latency))),
        broker_rss: None,
        broker_cpu_cores: cpu_broker,
        client_cpu_cores: cpu_client,
        per_second,
        errors,
        out_of_order: counters.out_of_order.load(Ordering::Relaxed),
    })
}

/// The reporter of a run: one [`Second`] per second from `start` until `deadline` (the
/// last one shorter if the duration is not whole), with the rates from `counters`, the
/// latency of that second from `latency` and the RSS of `pid`; each printed unless
/// `print` is `None` (`Some(confirm)`: print, with the confirm rate if `confirm`).
/// Returns them with the counters at the deadline.
pub(crate) async fn report_seconds(
    start: Instant,
    deadline: Instant,
    counters: &Counters,
    latency: &[Arc<Recorder>],
    pid: Option<u32>,
    print: Option<bool>,
) -> (Vec<Second>, Snapshot) {
    let mut per_second = Vec::new();
    let mut last = Snapshot::default();
    let mut last_t = 0.0f64;
    let mut tick = 1u64;
    loop {
        let target = (start + Duration::from_secs(tick)).min(deadline);
        sleep_until(target.into()).await;
        let now = counters.snapshot();
        let t = target.duration_since(start).as_secs_f64();
        let dt = (t - last_t).max(1e-9);
        let d = now.since(&last);
        let lat = Percentiles::from(&stats::take_intervals(latency));
        let rss = pid.and_then(|p| procfs::rss_bytes(p).ok());
        let sec = Second {
            t,
            publish_rate: d.published as f64 / dt,
            confirm_rate: d.confirmed as f64 / dt,
            consume_rate: d.consumed as f64 / dt,
            latency: lat,
            broker_rss_bytes: rss,
        };
        if let Some(confirm) = print {
            print_second(&sec, confirm);
        }
        per_second.push(sec);
        last = now;
        last_t = t;
        if target >= deadline {
            return (per_second, now);
        }
        tick += 1;
    }
}

/// Connected clients, before the clock starts.
enum Clients {
    Lapin {
        consumers: Vec<Consumer>,
        producers: Vec<Producer>,
    },
    Raw {
        consumers: Vec<RawConsumer>,
        producers: Vec<RawProducer>,
    },
}

async fn connect_lapin(cli: &Cli, topo: &Topology) -> Result<Clients, PerfError> {
    // Consumers first, so nothing published is missed.
    let mut consumers = Vec::with_capacity(cli.consumers);
    for j in 0..cli.consumers {
        let queue = topo.queues[j % topo.queues.len()].clone();
        let conn = connect(cli, &format!("warren-perf consumer {j}")).await?;
        let ch = step("channel.open", conn.create_channel()).await?;
        if cli.prefetch > 0 {
            step(
                "basic.qos",
                ch.basic_qos(cli.prefetch, BasicQosOptions::default()),
            )
            .await?;
        }
        let opts = BasicConsumeOptions {
            no_ack: cli.auto_ack,
            ..BasicConsumeOptions::default()
        };
        let consumer = step(
            "basic.consume",
            ch.basic_consume(
                queue,
                ShortString::from(format!("warren-perf-{j}")),
                opts,
                FieldTable::default(),
            ),
        )
        .await?;
        consumers.push(Consumer { conn, ch, consumer });
    }
    let mut producers = Vec::with_capacity(cli.producers);
    for i in 0..cli.producers {
        let conn = connect(cli, &format!("warren-perf producer {i}")).await?;
        let ch = step("channel.open", conn.create_channel()).await?;
        if cli.confirm.is_some() {
            step(
                "confirm.select",
                ch.confirm_select(ConfirmSelectOptions::default()),
            )
            .await?;
        }
        let (exchange, routing_key) = match &topo.exchange {
            Some(x) => (x.clone(), ShortString::from("")),
            None => (
                ShortString::from(""),
                topo.queues[i % topo.queues.len()].clone(),
            ),
        };
        producers.push(Producer {
            id: i,
            conn,
            ch,
            exchange,
            routing_key,
        });
    }

    Ok(Clients::Lapin {
        consumers,
        producers,
    })
}

async fn connect_raw(cli: &Cli, topo: &Topology) -> Result<Clients, PerfError> {
    let target = Target::parse(&cli.uri)?;
    // Consumers first, so nothing published is missed.
    let mut consumers = Vec::with_capacity(cli.consumers);
    for j in 0..cli.consumers {
        let queue = &topo.queues[j % topo.queues.len()];
        let c = RawConsumer::open(
            &target,
            queue.as_str(),
            &format!("warren-perf-{j}"),
            cli.prefetch,
            cli.auto_ack,
        )
        .await?;
        consumers.push(c);
    }
    let mut producers = Vec::with_capacity(cli.producers);
    for i in 0..cli.producers {
        let (exchange, routing_key) = match &topo.exchange {
            Some(x) => (x.as_str(), ""),
            None => ("", topo.queues[i % topo.queues.len()].as_str()),
        };
        producers.push(
            RawProducer::open(&target, i, exchange, routing_key, cli.confirm.is_some()).await?,
        );
    }
    Ok(Clients::Raw {
        consumers,
        producers,
    })
}

fn spawn_lapin(
    consumers: Vec<Consumer>,
    producers: Vec<Producer>,
    plan: &Plan,
    counters: &Arc<Counters>,
    errors: &Arc<Mutex<Vec<String>>>,
    latency: &[Arc<Recorder>],
    confirm_latency: &[Arc<Recorder>],
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (c, rec) in consumers.into_iter().zip(latency) {
        let (plan, counters, errors, rec) =
            (plan.clone(), counters.clone(), errors.clone(), rec.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = consume(&c, &plan, &counters, &rec).await {
                push_error(&errors, format!("consumer: {e}"));
            }
            // Unacknowledged deliveries go back to the queue when the channel closes.
            let _ = timeout(STEP_TIMEOUT, c.conn.close(200, "OK".into())).await;
        }));
    }
    for (p, rec) in producers.into_iter().zip(confirm_latency) {
        let (plan, counters, errors, rec) =
            (plan.clone(), counters.clone(), errors.clone(), rec.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = produce(&p, &plan, &counters, &rec).await {
                push_error(&errors, format!("producer {}: {e}", p.id));
            }
            let _ = timeout(STEP_TIMEOUT, p.conn.close(200, "OK".into())).await;
        }));
    }
    tasks
}

fn raw_plan(cli: &Cli, plan: &Plan) -> RawPlan {
    RawPlan {
        size: plan.size,
        rate: plan.rate,
        persistent: cli.persistent,
        confirm: cli.confirm,
        auto_ack: plan.auto_ack,
        ack_every: plan.ack_every,
        start: plan.start,
        deadline: plan.deadline,
    }
}

fn spawn_raw(
    consumers: Vec<RawConsumer>,
    producers: Vec<RawProducer>,
    raw_plan: RawPlan,
    counters: &Arc<Counters>,
    errors: &Arc<Mutex<Vec<String>>>,
    latency: &[Arc<Recorder>],
    confirm_latency: &[Arc<Recorder>],
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (c, rec) in consumers.into_iter().zip(latency) {
        let (plan, counters, errors, rec) = (
            raw_plan.clone(),
            counters.clone(),
            errors.clone(),
            rec.clone(),
        );
        tasks.push(tokio::spawn(async move {
            // run() closes the connection; unacknowledged deliveries go back to the queue.
            if let Err(e) = c.run(&plan, &counters, &rec).await {
                push_error(&errors, format!("consumer: {e}"));
            }
        }));
    }
    for (p, rec) in producers.into_iter().zip(confirm_latency) {
        let (plan, counters, errors, rec) = (
            raw_plan.clone(),
            counters.clone(),
            errors.clone(),
            rec.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let id = p.id;
            if let Err(e) = p.run(&plan, &counters, &rec).await {
                push_error(&errors, format!("producer {id}: {e}"));
            }
        }));
    }
    tasks
}

fn push_error(errors: &Mutex<Vec<String>>, e: String) {
    tracing::error!(error = %e, "run error");
    errors.lock().unwrap_or_else(|e| e.into_inner()).push(e);
}

fn print_second(s: &Second, confirm: bool) {
    let confirmed = if confirm {
        format!(", confirmed {:>9.0} msg/s", s.confirm_rate)
    } else {
        String::new()
    };
    let lat = if s.latency.count > 0 {
        format!(
            ", latency p50/p95/p99/max {}/{}/{}/{}",
            human_ns(s.latency.p50_ns),
            human_ns(s.latency.p95_ns),
            human_ns(s.latency.p99_ns),
            human_ns(s.latency.max_ns)
        )
    } else {
        String::new()
    };
    let rss = s
        .broker_rss_bytes
        .map(|b| format!(", broker RSS {}", human_mib(b)))
        .unwrap_or_default();
    println!(
        "time {:>6.3} s, sent {:>9.0} msg/s{confirmed}, received {:>9.0} msg/s{lat}{rss}",
        s.t, s.publish_rate, s.consume_rate
    );
}

/// A body of `size` bytes: the timestamp ([`Counters::now_ns`]) in bytes 0..8, the
/// producer's sequence number in 8..16, zeros after. Shorter bodies get what fits.
fn body(size: usize, stamp: u64, seq: u64) -> Vec<u8> {
    let mut b = vec![0u8; size];
    let mut header = [0u8; 16];
    header[..8].copy_from_slice(&stamp.to_be_bytes());
    header[8..].copy_from_slice(&seq.to_be_bytes());
    let n = size.min(16);
    b[..n].copy_from_slice(&header[..n]);
    b
}

/// The timestamp of a body, if it is long enough to hold one.
fn stamp_of(data: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = data.get(..8)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

async fn publish_one(
    p: &Producer,
    plan: &Plan,
    counters: &Counters,
    rec: &Recorder,
    seq: u64,
) -> Result<(), PerfError> {
    let stamp = counters.now_ns();
    let payload = body(plan.size, stamp, seq);
    let confirm =
        p.ch.basic_publish(
            p.exchange.clone(),
            p.routing_key.clone(),
            BasicPublishOptions::default(),
            &payload,
            plan.properties.clone(),
        )
        .await
        .map_err(PerfError::amqp("basic.publish"))?;
    counters.published.fetch_add(1, Ordering::Relaxed);
    if plan.confirm {
        let c = confirm
            .await
            .map_err(PerfError::amqp("publisher confirm"))?;
        if c.is_ack() {
            counters.confirmed.fetch_add(1, Ordering::Relaxed);
            rec.record(counters.now_ns().saturating_sub(stamp));
        } else {
            counters.nacked.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Publishes until the deadline, keeping up to `plan.window` publishes (or unconfirmed
/// messages) in flight, at `plan.rate` if set; then waits up to 10 s for the rest.
async fn produce(
    p: &Producer,
    plan: &Plan,
    counters: &Counters,
    rec: &Recorder,
) -> Result<(), PerfError> {
    let mut inflight = FuturesUnordered::new();
    let interval = plan.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let mut next_due = plan.start;
    let mut seq = 0u64;
    let mut failure = None;
    loop {
        let now = Instant::now();
        if now >= plan.deadline {
            break;
        }
        let due = interval.is_none() || now >= next_due;
        if due && inflight.len() < plan.window {
            inflight.push(publish_one(p, plan, counters, rec, seq));
            seq += 1;
            if let Some(i) = interval {
                next_due += i;
            }
            continue;
        }
        let wake = next_due.min(plan.deadline);
        tokio::select! {
            biased;
            r = inflight.next(), if !inflight.is_empty() => {
                if let Some(Err(e)) = r {
                    failure = Some(e);
                    break;
                }
            }
            _ = sleep_until(wake.into()), if interval.is_some() && inflight.len() < plan.window => {}
            else => {}
        }
    }
    let drain = async {
        while let Some(r) = inflight.next().await {
            r?;
        }
        Ok(())
    };
    match timeout(Duration::from_secs(10), drain).await {
        Ok(Err(e)) if failure.is_none() => failure = Some(e),
        Err(_) if failure.is_none() => {
            failure = Some(PerfError::Timeout(
                "outstanding publishes or confirms after the deadline".into(),
            ))
        }
        _ => {}
    }
    failure.map_or(Ok(()), Err)
}

/// Consumes until the deadline, acknowledging every `plan.ack_every`-th delivery unless
/// auto-ack. Acks are sent without waiting for each to be written.
async fn consume(
    c: &Consumer,
    plan: &Plan,
    counters: &Counters,
    rec: &Recorder,
) -> Result<(), PerfError> {
    let mut consumer = c.consumer.clone();
    let mut acks = FuturesUnordered::new();
    let mut since_ack = 0u32;
    let mut deadline = pin!(sleep_until(plan.deadline.into()));
    let multiple = plan.ack_every > 1;
    loop {
        tokio::select! {
            biased;
            _ = &mut deadline => break,
            Some(r) = acks.next(), if !acks.is_empty() => {
                let r: lapin::Result<()> = r;
                r.map_err(PerfError::amqp("basic.ack"))?;
            }
            d = consumer.next() => match d {
                Some(Ok(d)) => {
                    counters.consumed.fetch_add(1, Ordering::Relaxed);
                    if let Some(stamp) = stamp_of(&d.data) {
                        rec.record(counters.now_ns().saturating_sub(stamp));
                    }
                    if !plan.auto_ack {
                        since_ack += 1;
                        if since_ack >= plan.ack_every {
                            since_ack = 0;
                            acks.push(c.ch.basic_ack(d.delivery_tag, BasicAckOptions { multiple }));
                        }
                    }
                }
                Some(Err(e)) => return Err(PerfError::amqp("consume")(e)),
                None => return Err(PerfError::Protocol("the broker cancelled the consumer".into())),
            }
        }
    }
    // Let the acks already started reach the socket.
    let _ = timeout(Duration::from_secs(5), async {
        while acks.next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// Prints the end-of-run summary.
pub fn print_summary(cli: &Cli, r: &ThroughputReport) {
    let mode = if cli.auto_ack {
        "auto-ack".to_string()
    } else {
        format!(
            "manual ack (every {}), prefetch {}",
            cli.multiple_ack_every, cli.prefetch
        )
    };
    println!(
        "== {} producer(s), {} consumer(s), {} B, {mode}, {} queue(s){}{}{}, {:.1} s",
        cli.producers,
        cli.consumers,
        cli.size,
        cli.queues,
        if cli.fanout { " via fanout" } else { "" },
        if cli.persistent { ", persistent" } else { "" },
        cli.confirm
            .map(|n| format!(", confirms (≤{n} outstanding)"))
            .unwrap_or_default(),
        r.duration_s
    );
    println!(
        "published {:>12} msg  {:>10.0} msg/s",
        r.totals.published, r.publish_rate
    );
    if cli.confirm.is_some() {
        println!(
            "confirmed {:>12} msg  {:>10.0} msg/s  ({} nacked)",
            r.totals.confirmed, r.confirm_rate, r.totals.nacked
        );
    }
    println!(
        "consumed  {:>12} msg  {:>10.0} msg/s",
        r.totals.consumed, r.consume_rate
    );
    let l = &r.latency;
    if l.count > 0 {
        println!(
            "latency publish→deliver p50 {} p95 {} p99 {} max {} ({} samples)",
            human_ns(l.p50_ns),
            human_ns(l.p95_ns),
            human_ns(l.p99_ns),
            human_ns(l.max_ns),
            l.count
        );
    }
    if let Some(l) = &r.confirm_latency {
        println!(
            "latency publish→confirm p50 {} p95 {} p99 {} max {}",
            human_ns(l.p50_ns),
            human_ns(l.p95_ns),
            human_ns(l.p99_ns),
            human_ns(l.max_ns)
        );
    }
    if let Some(m) = &r.broker_rss {
        println!(
            "broker RSS start {}, peak {}, end {}",
            human_mib(m.start_bytes),
            human_mib(m.peak_bytes),
            human_mib(m.end_bytes)
        );
    }
    if let (Some(b), Some(c)) = (r.broker_cpu_cores, r.client_cpu_cores) {
        println!("CPU (cores busy): broker {b:.2}, warren-perf {c:.2}");
    } else if let Some(c) = r.client_cpu_cores {
        println!("CPU (cores busy): warren-perf {c:.2}");
    }
    for e in &r.errors {
        println!("error: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_carries_stamp_and_seq() {
        let b = body(32, 0x0102_0304_0506_0708, 9);
        assert_eq!(b.len(), 32);
        assert_eq!(stamp_of(&b), Some(0x0102_0304_0506_0708));
        assert_eq!(u64::from_be_bytes(b[8..16].try_into().unwrap()), 9);
        let short = body(4, u64::MAX, 1);
        assert_eq!(short, vec![0xff; 4]);
        assert_eq!(stamp_of(&short), None);
    }
}
