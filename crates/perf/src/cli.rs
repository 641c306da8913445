//! The command line, modelled on RabbitMQ PerfTest and lavinmqperf.

use clap::Parser;

use crate::error::PerfError;

/// warren-perf: an AMQP 0-9-1 load generator for Warren and RabbitMQ.
///
/// Producers publish to one or more queues (or a fanout exchange) for --duration seconds
/// while consumers drain them; it prints per-second and total publish/consume rates,
/// publish-to-deliver latency percentiles and the broker's RSS, then one line starting
/// with `JSON ` that holds every number. Queues it declared are deleted at the end.
/// With --latency-floor it measures the same latency through a bare TCP relay instead
/// of a broker.
#[derive(Debug, Clone, Parser, serde::Serialize)]
#[command(name = "warren-perf", version, about, long_about)]
pub struct Cli {
    /// Broker URI.
    #[arg(long, default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub uri: String,
    /// For an `amqps://` URI: a PEM CA bundle the broker's certificate is verified
    /// against (instead of the public web roots).
    #[arg(long, value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Publishing connections (one channel each).
    #[arg(long, short = 'x', default_value_t = 1)]
    pub producers: usize,
    /// Consuming connections (one channel and one consumer each), spread over the queues.
    #[arg(long, short = 'y', default_value_t = 1)]
    pub consumers: usize,
    /// Message body size in bytes. Latency needs at least 8 (a timestamp in the first
    /// 8 bytes, nanoseconds since the Unix epoch from a monotonic clock; bytes 8..16
    /// carry the producer's sequence number).
    #[arg(long, short = 's', default_value_t = 16)]
    pub size: usize,
    /// How long producers and consumers run, in seconds.
    #[arg(long, short = 'z', default_value_t = 10.0)]
    pub duration: f64,
    /// Consume with no_ack=true (automatic acknowledgement).
    #[arg(long, short = 'a')]
    pub auto_ack: bool,
    /// With manual acks: acknowledge every N-th delivery with multiple=true (1 = ack
    /// each delivery alone).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub multiple_ack_every: u32,
    /// basic.qos prefetch count per consumer (0 = unlimited, no basic.qos sent).
    #[arg(long, short = 'q', default_value_t = 0)]
    pub prefetch: u16,
    /// Publisher confirms, with at most N unconfirmed messages per producer.
    #[arg(long, short = 'c', value_name = "N")]
    pub confirm: Option<usize>,
    /// Publish with delivery_mode 2 (persistent).
    #[arg(long)]
    pub persistent: bool,
    /// Declare the queues (and the fanout exchange) durable.
    #[arg(long)]
    pub durable: bool,
    /// Number of queues. Producer i publishes to queue i mod Q, consumer j consumes from
    /// queue j mod Q.
    #[arg(long, default_value_t = 1, value_name = "Q")]
    pub queues: usize,
    /// Publish to one fanout exchange bound to all Q queues instead of to a queue.
    #[arg(long)]
    pub fanout: bool,
    /// Publish at a fixed rate (messages per second per producer) instead of as fast as
    /// possible; for latency runs.
    #[arg(long, short = 'r', value_name = "MSG_PER_S")]
    pub rate: Option<f64>,
    /// Idle-connection mode: open N connections with one channel each, hold them for
    /// --duration seconds and report the broker's RSS growth per connection (needs
    /// --broker-pid). No messages are sent.
    #[arg(long, value_name = "N")]
    pub idle_connections: Option<usize>,
    /// Seconds to wait after opening the idle connections before sampling RSS.
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    pub idle_settle: f64,
    /// Soak mode: open N consumer connections (one channel, one exclusive queue, one
    /// manual-ack consumer each, --prefetch applied), then publish to those queues round
    /// robin from --producers connections at --soak-rate msg/s in total (--size-byte
    /// bodies, --confirm N for publisher confirms) for --duration seconds, sampling the
    /// broker's RSS and open fds (--broker-pid) every --soak-interval seconds. Reports
    /// per-connection memory, RSS over the run, messages published / delivered and every
    /// error; exits non-zero on any error or undelivered message.
    #[arg(long, visible_alias = "soak", value_name = "N", conflicts_with_all = ["idle_connections", "startup_probe"])]
    pub soak_connections: Option<usize>,
    /// Soak mode: messages per second, all producers together.
    #[arg(long, default_value_t = 5000.0, value_name = "MSG_PER_S")]
    pub soak_rate: f64,
    /// Soak mode: seconds between the sample lines (RSS is read every second for its
    /// minimum and maximum).
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub soak_interval: u64,
    /// Soak mode: after publishing stops, wait up to this many seconds for every
    /// published message to be delivered.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    pub soak_drain: f64,
    /// The broker's process id, to report its resident memory (/proc/PID/status VmRSS)
    /// and CPU time.
    #[arg(long, value_name = "PID")]
    pub broker_pid: Option<u32>,
    /// Prefix of the queue and exchange names (default: warren-perf-<pid>).
    #[arg(long, value_name = "PREFIX")]
    pub queue_prefix: Option<String>,
    /// Do not delete the queues and exchange at the end (e.g. fill a queue with
    /// `-y 0 --keep-queues`, then drain it with `-x 0` and the same --queue-prefix).
    #[arg(long)]
    pub keep_queues: bool,
    /// Publishes each producer keeps in flight inside the client when not using
    /// confirms. lapin hands each publish to its I/O thread and resolves it once written;
    /// awaiting them one at a time would measure that round trip, not the broker.
    #[arg(long, default_value_t = 256, value_name = "N")]
    pub pipeline: usize,
    /// Start-up probe mode: connect (handshake up to connection.open-ok) every
    /// millisecond until it succeeds, then print the time since --since-unix-ns.
    #[arg(long)]
    pub startup_probe: bool,
    /// The moment the broker process was started, in nanoseconds since the Unix epoch
    /// (`date +%s%N`); default: when the probe started.
    #[arg(long, value_name = "NS")]
    pub since_unix_ns: Option<u128>,
    /// Give up the start-up probe after this many seconds.
    #[arg(long, default_value_t = 60.0, value_name = "SECS")]
    pub startup_timeout: f64,
    /// Tokio worker threads of the client (0: everything on the main thread). lapin
    /// adds one I/O thread per connection either way.
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub threads: usize,
    /// Lean client for the message run: producers and consumers speak AMQP 0-9-1
    /// directly over Warren's codec instead of lapin (publishes are encoded 256 to a
    /// socket write; consumers decode frames straight out of a large read buffer), so
    /// the client costs much less CPU than the broker. Queues are still declared and
    /// deleted through lapin. Works with every other option of the message run,
    /// --confirm included (batches are cut to the room left in the confirm window);
    /// --pipeline does not apply.
    #[arg(long)]
    pub raw: bool,
    /// Print no per-second lines.
    #[arg(long)]
    pub quiet: bool,
    /// Latency-floor mode, no broker: start a bare TCP relay in a child process (this
    /// binary again), then send --size-byte messages (default 16, at least 16) stamped
    /// like the broker runs' bodies from one producer connection through the relay to one
    /// consumer connection, at --rate msg/s (default 1000) for --duration seconds, and
    /// report the same latency percentiles. The relay forwards bytes and nothing else:
    /// same sockets, runtime and clock as a broker run, no AMQP work.
    #[arg(long, conflicts_with_all = ["startup_probe", "idle_connections", "relay_listen", "soak_connections"])]
    pub latency_floor: bool,
    /// Internal, for --latency-floor: be the relay. Listen on ADDR, print the port on
    /// stdout, then forward everything from the producer's connection to the
    /// consumer's.
    #[arg(long, value_name = "ADDR", hide = true)]
    pub relay_listen: Option<String>,
}

impl Cli {
    /// Checks the combinations clap cannot.
    ///
    /// # Errors
    /// [`PerfError::Options`] naming the problem.
    pub fn validate(&self) -> Result<(), PerfError> {
        let bad = |s: &str| Err(PerfError::Options(s.to_string()));
        if !(self.duration > 0.0 && self.duration.is_finite()) {
            return bad("--duration must be a positive number of seconds");
        }
        if self.startup_probe || self.idle_connections.is_some() || self.relay_listen.is_some() {
            return Ok(());
        }
        if let Some(n) = self.soak_connections {
            if n == 0 {
                return bad("--soak-connections must be at least 1");
            }
            if !(self.soak_rate > 0.0 && self.soak_rate.is_finite()) {
                return bad("--soak-rate must be positive");
            }
            if self.soak_interval == 0 {
                return bad("--soak-interval must be at least 1 second");
            }
            if !(self.soak_drain >= 0.0 && self.soak_drain.is_finite()) {
                return bad("--soak-drain must be a non-negative number of seconds");
            }
            if self.confirm == Some(0) {
                return bad("--confirm must be at least 1");
            }
            if self.auto_ack {
                return bad("--soak-connections acknowledges every delivery; drop --auto-ack");
            }
            return Ok(());
        }
        if let Some(r) = self.rate {
            if !(r > 0.0 && r.is_finite()) {
                return bad("--rate must be positive");
            }
        }
        if self.latency_floor {
            if self.size < 16 {
                return bad(
                    "--latency-floor needs --size of at least 16 (timestamp and sequence number)",
                );
            }
            return Ok(());
        }
        if self.queues == 0 {
            return bad("--queues must be at least 1");
        }
        if self.producers == 0 && self.consumers == 0 {
            return bad("nothing to do: no producers and no consumers");
        }
        if self.multiple_ack_every == 0 {
            return bad("--multiple-ack-every must be at least 1");
        }
        if self.confirm == Some(0) {
            return bad("--confirm must be at least 1");
        }
        if self.pipeline == 0 {
            return bad("--pipeline must be at least 1");
        }
        if self.fanout && self.consumers > 0 && self.consumers < self.queues {
            return bad("--fanout needs at least one consumer per queue (--consumers >= --queues)");
        }
        Ok(())
    }

    /// The name prefix for queues and the exchange.
    pub fn prefix(&self) -> String {
        self.queue_prefix
            .clone()
            .unwrap_or_else(|| format!("warren-perf-{}", std::process::id()))
    }
}
