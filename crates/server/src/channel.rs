//! One AMQP channel: the methods of the exchange, queue, basic, confirm and tx classes.
//!
//! Responsibilities: content assembly (through [`ContentAssembler`]), the publish guards,
//! routing and enqueueing, consumers, delivery tags and the unacknowledged map, prefetch
//! credit, publisher confirms and transactions. A `Channel` is a plain struct owned by its
//! connection task; it writes replies into the connection's output buffer.
//! Collaborators: [`VHost`] and [`Queue`] (engine), [`ConnSink`] (deliveries come back
//! through the connection's inbox).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use warren_broker::access::{ChannelSlot, Grant, Resource};
use warren_broker::store::SyncFile;

use bytes::{Bytes, BytesMut};
use warren_broker::message::{decode_properties, scan_properties};
use warren_broker::store::{Persister, Settled};
use warren_broker::vhost::REPLY_TO;
use warren_broker::{
    Consumer, Credit, Delivery, ExchangeKind, ExchangeOptions, Message, Queue, QueueOptions,
    QueuedMessage, VHost,
};
use warren_codec::protocol::{access, basic, channel, confirm, exchange, queue, tx, AMQPClass};
use warren_codec::types::ShortString;
use warren_codec::{encode, AmqpError, Command, ContentAssembler};

use crate::error::amqp;
use crate::sink::{ConnEvent, ConnSink};

/// What a channel needs from its connection.
#[derive(Debug)]
pub struct Ctx {
    /// Connection id (exclusive queues and consumers).
    pub id: u64,
    /// The vhost opened by connection.open.
    pub vhost: Arc<VHost>,
    /// Authenticated user.
    pub user: String,
    /// Where queues deliver to this connection.
    pub sink: Arc<ConnSink>,
    /// Negotiated frame_max, for splitting bodies.
    pub frame_max: u32,
    /// Largest accepted message.
    pub max_message_bytes: u64,
    /// The group-commit thread, when the broker has a data directory.
    pub persister: Option<Persister>,
    /// A queue published to that asked for flow control
    /// ([`warren_broker::queue::Published::pressure`]): the connection pauses reading.
    pub flow: std::cell::RefCell<Option<Arc<Queue>>>,
    /// The user's permissions in this vhost, taken at connection.open.
    pub grant: Arc<Grant>,
    /// Users and limits (channel limits).
    pub access: Arc<warren_broker::access::Access>,
    /// The node's name, for the firehose's `node` header.
    pub node: Arc<str>,
}

/// A delivered message awaiting ack.
#[derive(Debug)]
struct Unacked {
    queue: Arc<Queue>,
    message: QueuedMessage,
    /// The consumer's window; `None` for basic.get.
    credit: Option<Arc<Credit>>,
}

#[derive(Debug)]
struct ChannelConsumer {
    queue: Arc<Queue>,
    /// A direct reply-to consumer: its queue is a pseudo-queue owned by this channel.
    reply: bool,
}

/// What happened to a published message in its queues.
#[derive(Debug, Default, Clone, Copy)]
struct Stored {
    /// A queue refused it (length limit with reject-publish).
    rejected: bool,
    /// A disk write failed.
    failed: bool,
}

impl Stored {
    fn nack(self) -> bool {
        self.rejected || self.failed
    }
}

/// A publish on its way to routing (held back by a transaction, or routed at once). The
/// exchange and routing key are the message's own.
#[derive(Debug)]
struct PendingPublish {
    mandatory: bool,
    message: Arc<Message>,
}

#[derive(Debug)]
enum Settle {
    Ack,
    Requeue,
    Drop,
}

#[derive(Debug, Default)]
struct Tx {
    publishes: Vec<PendingPublish>,
    settles: Vec<(Settle, Vec<(u64, Unacked)>)>,
    /// Commits whose commit-ok waits for the persister.
    outstanding: usize,
}

/// Publisher-confirm bookkeeping. Confirms leave in sequence order: a batch whose
/// messages were written to disk waits for the persister's group commit, and so does
/// every later batch until it completes.
#[derive(Debug, Default)]
struct Confirms {
    /// Sequence number of the last publish.
    last_seq: u64,
    /// Highest sequence number confirmed (acked or nacked) to the client.
    confirmed: u64,
    /// Highest sequence number handed to the persister or confirmed.
    requested: u64,
    /// Sync requests in flight.
    outstanding: usize,
    /// Files written since the last request.
    files: Vec<Arc<SyncFile>>,
    /// Publishes whose disk write failed: nacked instead of acked.
    failed: Vec<u64>,
}

#[derive(Debug)]
enum Mode {
    Plain,
    Confirm(Confirms),
    Tx(Tx),
}

/// Channel state.
#[derive(Debug)]
pub struct Channel {
    id: u16,
    /// Set once the server has sent channel.close; frames are then dropped until close-ok.
    pub closing: bool,
    assembler: ContentAssembler,
    consumers: HashMap<Arc<str>, ChannelConsumer>,
    unacked: BTreeMap<u64, Unacked>,
    next_tag: u64,
    /// basic.qos global=false: window for consumers created from now on.
    consumer_prefetch: u32,
    /// basic.qos global=true: window shared by the channel's consumers.
    channel_credit: Arc<Credit>,
    mode: Mode,
    /// Last queue declared on this channel, for methods that name queue "".
    last_queue: Option<String>,
    /// The direct reply-to pseudo-queue of this channel's reply consumer.
    reply_queue: Option<Arc<Queue>>,
    /// Durable queues that settled messages in the current batch of frames: their marks
    /// are written once, before the connection answers anything after the acks.
    to_flush: Vec<Arc<Queue>>,
    /// Counts the channel against its user's `max-channels` until it is dropped.
    _slot: ChannelSlot,
    /// Counts the channel's close in the node's churn counters when dropped.
    _churn: crate::stats::ChannelGuard,
    /// Message counts for the management API (plain fields: only this connection's
    /// task touches them).
    counters: crate::stats::ChannelCounters,
}

fn short(s: &str) -> ShortString {
    // Names reaching here came from the wire as short strings or were generated.
    ShortString::try_new(s.to_string()).unwrap_or_default()
}

/// Sends a method's `-ok` reply unless the client asked for `nowait`.
fn reply_unless_nowait(out: &mut BytesMut, ch: u16, nowait: bool, m: AMQPClass) {
    if !nowait {
        encode::method(out, ch, &m);
    }
}

fn method_frame(out: &mut BytesMut, ch: u16, m: AMQPClass) {
    encode::method(out, ch, &m);
}

impl Channel {
    /// An open channel.
    pub fn new(
        id: u16,
        max_message_bytes: u64,
        slot: ChannelSlot,
        churn: crate::stats::ChannelGuard,
    ) -> Self {
        Channel {
            id,
            closing: false,
            assembler: ContentAssembler::new(max_message_bytes),
            consumers: HashMap::new(),
            unacked: BTreeMap::new(),
            next_tag: 1,
            consumer_prefetch: 0,
            channel_credit: Arc::new(Credit::new(0)),
            mode: Mode::Plain,
            last_queue: None,
            reply_queue: None,
            to_flush: Vec::new(),
            _slot: slot,
            _churn: churn,
            counters: crate::stats::ChannelCounters::default(),
        }
    }

    /// The channel's state and counts, for the management API.
    pub fn report(&self) -> crate::stats::ChannelReport {
        let mut counters = self.counters;
        let (unconfirmed, uncommitted, acks_uncommitted) = match &self.mode {
            Mode::Plain => (0, 0, 0),
            Mode::Confirm(c) => {
                counters.confirm = c.confirmed;
                (c.last_seq - c.confirmed, 0, 0)
            }
            Mode::Tx(t) => (
                0,
                t.publishes.len() as u64,
                t.settles
                    .iter()
                    .filter(|(how, _)| matches!(how, Settle::Ack))
                    .map(|(_, v)| v.len() as u64)
                    .sum(),
            ),
        };
        crate::stats::ChannelReport {
            number: self.id,
            consumers: self.consumers.len() as u64,
            unacked: self.unacked.len() as u64,
            unconfirmed,
            uncommitted,
            acks_uncommitted,
            prefetch: self.consumer_prefetch,
            global_prefetch: self.channel_credit.limit(),
            confirm: matches!(self.mode, Mode::Confirm(_)),
            transactional: matches!(self.mode, Mode::Tx(_)),
            counters,
        }
    }

    /// Feeds a method, header or body frame.
    ///
    /// # Errors
    /// Any channel or connection error; the caller decides which by the code.
    pub fn frame(
        &mut self,
        ctx: &Ctx,
        out: &mut BytesMut,
        frame: warren_codec::Frame,
    ) -> Result<(), AmqpError> {
        match self.assembler.push(frame)? {
            None => Ok(()),
            Some(Command::Method(m)) => {
                let (c, mid) = (m.get_amqp_class_id(), m.get_amqp_method_id());
                self.method(ctx, out, *m).map_err(|e| e.with_method(c, mid))
            }
            Some(Command::Content {
                method,
                properties,
                body,
            }) => match *method {
                AMQPClass::Basic(basic::AMQPMethod::Publish(p)) => self
                    .publish(ctx, out, p, properties, body)
                    .map_err(|e| e.with_method(60, 40)),
                _ => Err(AmqpError::unexpected_frame("unexpected content")),
            },
        }
    }

    fn queue_name(&self, name: &str) -> Result<String, AmqpError> {
        if name.is_empty() {
            self.last_queue
                .clone()
                .ok_or_else(|| AmqpError::not_found("no previously declared queue"))
        } else {
            Ok(name.to_string())
        }
    }

    fn method(&mut self, ctx: &Ctx, out: &mut BytesMut, m: AMQPClass) -> Result<(), AmqpError> {
        let ch = self.id;
        let vhost = &ctx.vhost;
        match m {
            AMQPClass::Channel(channel::AMQPMethod::Open(_)) => {
                Err(AmqpError::channel_error("second 'channel.open' seen"))
            }
            AMQPClass::Channel(channel::AMQPMethod::Flow(f)) => {
                if !f.active {
                    // RabbitMQ does not support channel.flow active=false from clients.
                    return Err(AmqpError::not_implemented("active=false"));
                }
                method_frame(
                    out,
                    ch,
                    AMQPClass::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk {
                        active: true,
                    })),
                );
                Ok(())
            }
            AMQPClass::Channel(channel::AMQPMethod::FlowOk(_)) => Ok(()),
            AMQPClass::Access(access::AMQPMethod::Request(_)) => {
                method_frame(
                    out,
                    ch,
                    AMQPClass::Access(access::AMQPMethod::RequestOk(access::RequestOk {})),
                );
                Ok(())
            }
            AMQPClass::Exchange(exchange::AMQPMethod::Declare(d)) => {
                if !d.passive {
                    check_exchange_declare(
                        ctx,
                        d.exchange.as_str(),
                        d.kind.as_str(),
                        &d.arguments,
                    )?;
                }
                vhost
                    .declare_exchange(&ExchangeOptions {
                        name: d.exchange.to_string(),
                        kind: d.kind.to_string(),
                        passive: d.passive,
                        durable: d.durable,
                        auto_delete: d.auto_delete,
                        internal: d.internal,
                        arguments: d.arguments,
                    })
                    .map_err(amqp)?;
                reply_unless_nowait(
                    out,
                    ch,
                    d.nowait,
                    AMQPClass::Exchange(exchange::AMQPMethod::DeclareOk(exchange::DeclareOk {})),
                );
                Ok(())
            }
            AMQPClass::Exchange(exchange::AMQPMethod::Delete(d)) => {
                let name = d.exchange.as_str();
                // RabbitMQ: the default and amq.* exchanges are refused before the
                // permission check (the engine answers those).
                if !name.is_empty() && !name.starts_with("amq.") {
                    ctx.grant
                        .check_configure(Resource::Exchange, name)
                        .map_err(amqp)?;
                }
                vhost
                    .delete_exchange(d.exchange.as_str(), d.if_unused)
                    .map_err(amqp)?;
                reply_unless_nowait(
                    out,
                    ch,
                    d.nowait,
                    AMQPClass::Exchange(exchange::AMQPMethod::DeleteOk(exchange::DeleteOk {})),
                );
                Ok(())
            }
            AMQPClass::Exchange(exchange::AMQPMethod::Bind(b)) => {
                check_bind(
                    ctx,
                    Resource::Exchange,
                    b.destination.as_str(),
                    b.source.as_str(),
                    b.routing_key.as_str(),
                )?;
                vhost
                    .bind_exchange(
                        b.destination.as_str(),
                        b.source.as_str(),
                        b.routing_key.as_str(),
                        &b.arguments,
                    )
                    .map_err(amqp)?;
                reply_unless_nowait(
                    out,
                    ch,
                    b.nowait,
                    AMQPClass::Exchange(exchange::AMQPMethod::BindOk(exchange::BindOk {})),
                );
                Ok(())
            }
            AMQPClass::Exchange(exchange::AMQPMethod::Unbind(b)) => {
                check_bind(
                    ctx,
                    Resource::Exchange,
                    b.destination.as_str(),
                    b.source.as_str(),
                    b.routing_key.as_str(),
                )?;
                vhost
                    .unbind_exchange(
                        b.destination.as_str(),
                        b.source.as_str(),
                        b.routing_key.as_str(),
                        &b.arguments,
                    )
                    .map_err(amqp)?;
                reply_unless_nowait(
                    out,
                    ch,
                    b.nowait,
                    AMQPClass::Exchange(exchange::AMQPMethod::UnbindOk(exchange::UnbindOk {})),
                );
                Ok(())
            }
            AMQPClass::Queue(queue::AMQPMethod::Declare(d))
                if vhost.is_reply_queue(d.queue.as_str()) =>
            {
                // RabbitMQ: the direct reply-to pseudo-queue always "exists".
                reply_unless_nowait(
                    out,
                    ch,
                    d.nowait,
                    AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                        queue: d.queue.clone(),
                        message_count: 0,
                        consumer_count: 1,
                    })),
                );
                Ok(())
            }
            AMQPClass::Queue(queue::AMQPMethod::Declare(d)) => {
                let name = if d.passive {
                    self.queue_name(d.queue.as_str())?
                } else {
                    d.queue.to_string()
                };
                let dlx = warren_broker::args::string_arg(&d.arguments, "x-dead-letter-exchange");
                let authorize = |queue: &str, new: bool| {
                    ctx.grant.check_queue_declare(queue, new, dlx.as_deref())
                };
                let (q, messages, consumers) = vhost
                    .declare_queue_checked(
                        QueueOptions {
                            name,
                            passive: d.passive,
                            durable: d.durable,
                            exclusive: d.exclusive,
                            auto_delete: d.auto_delete,
                            arguments: d.arguments,
                        },
                        ctx.id,
                        &authorize,
                    )
                    .map_err(amqp)?;
                if !d.passive {
                    tracing::debug!(queue = %q.name, "queue declared");
                }
                self.last_queue = Some(q.name.clone());
                reply_unless_nowait(
                    out,
                    ch,
                    d.nowait,
                    AMQPClass::Queue(queue::AMQPMethod::DeclareOk(queue::DeclareOk {
                        queue: short(&q.name),
                        message_count: messages,
                        consumer_count: consumers,
                    })),
                );
                Ok(())
            }
            AMQPClass::Queue(queue::AMQPMethod::Bind(b)) => {
                let name = self.queue_name(b.queue.as_str())?;
                check_bind(
                    ctx,
                    Resource::Queue,
                    &name,
                    b.exchange.as_str(),
                    b.routing_key.as_str(),
                )?;
                vhost
                    .bind_queue(
                        &name,
                        b.exchange.as_str(),
                        b.routing_key.as_str(),
                        &b.arguments,
                        ctx.id,
                    )
                    .map_err(amqp)?;
                reply_unless_nowait(
                    out,
                    ch,
                    b.nowait,
                    AMQPClass::Queue(queue::AMQPMethod::BindOk(queue::BindOk {})),
                );
                Ok(())
            }
            AMQPClass::Queue(queue::AMQPMethod::Unbind(b)) => {
                let name = self.queue_name(b.queue.as_str())?;
                check_bind(
                    ctx,
                    Resource::Queue,
                    &name,
                    b.exchange.as_str(),
                    b.routing_key.as_str(),
                )?;
                vhost
                    .unbind_queue(
                        &name,
                        b.exchange.as_str(),
                        b.routing_key.as_str(),
                        &b.arguments,
                        ctx.id,
                    )
                    .map_err(amqp)?;
                method_frame(
                    out,
                    ch,
                    AMQPClass::Queue(queue::AMQPMethod::UnbindOk(queue::UnbindOk {})),
                );
                Ok(())
            }
            AMQPClass::Queue(queue::AMQPMethod::Purge(p)) => {
                let name = self.queue_name(p.queue.as_str())?;
                ctx.grant.check_read(Resource::Queue, &name).map_err(amqp)?;
                let n = vhost.purge_queue(&name, ctx.id).map_err(amqp)?;
                reply_unless_nowait(
                    out,
                    ch,
                    p.nowait,
                    AMQPClass::Queue(queue::AMQPMethod::PurgeOk(queue::PurgeOk {
                        message_count: n,
                    })),
                );
                Ok(())
            }
            AMQPClass::Queue(queue::AMQPMethod::Delete(d)) => {
                let name = self.queue_name(d.queue.as_str())?;
                ctx.grant
                    .check_configure(Resource::Queue, &name)
                    .map_err(amqp)?;
                let n = vhost
                    .delete_queue(&name, d.if_unused, d.if_empty, ctx.id)
                    .map_err(amqp)?;
                reply_unless_nowait(
                    out,
                    ch,
                    d.nowait,
                    AMQPClass::Queue(queue::AMQPMethod::DeleteOk(queue::DeleteOk {
                        message_count: n,
                    })),
                );
                Ok(())
            }
            AMQPClass::Basic(m) => self.basic(ctx, out, m),
            AMQPClass::Confirm(confirm::AMQPMethod::Select(s)) => {
                match self.mode {
                    Mode::Tx(_) => {
                        return Err(AmqpError::precondition_failed(
                            "cannot switch from tx to confirm mode",
                        ))
                    }
                    Mode::Plain => self.mode = Mode::Confirm(Confirms::default()),
                    Mode::Confirm(_) => {}
                }
                reply_unless_nowait(
                    out,
                    ch,
                    s.nowait,
                    AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
                );
                Ok(())
            }
            AMQPClass::Tx(t) => self.tx(ctx, out, t),
            other => Err(AmqpError::command_invalid(format!(
                "unexpected method {} on a channel",
                warren_codec::methods::name(other.get_amqp_class_id(), other.get_amqp_method_id())
            ))),
        }
    }

    fn basic(
        &mut self,
        ctx: &Ctx,
        out: &mut BytesMut,
        m: basic::AMQPMethod,
    ) -> Result<(), AmqpError> {
        let ch = self.id;
        match m {
            basic::AMQPMethod::Qos(q) => {
                if q.global {
                    self.channel_credit.set_limit(u32::from(q.prefetch_count));
                } else {
                    // RabbitMQ: a per-consumer qos also lifts an earlier channel-wide one.
                    self.consumer_prefetch = u32::from(q.prefetch_count);
                    self.channel_credit.set_limit(0);
                }
                self.dispatch_all();
                method_frame(
                    out,
                    ch,
                    AMQPClass::Basic(basic::AMQPMethod::QosOk(basic::QosOk {})),
                );
                Ok(())
            }
            basic::AMQPMethod::Consume(c) => self.consume(ctx, out, c),
            basic::AMQPMethod::Cancel(c) => {
                let tag: Arc<str> = c.consumer_tag.as_str().into();
                if let Some(cc) = self.consumers.remove(&tag) {
                    self.release_consumer(ctx, &tag, &cc, true);
                }
                reply_unless_nowait(
                    out,
                    ch,
                    c.nowait,
                    AMQPClass::Basic(basic::AMQPMethod::CancelOk(basic::CancelOk {
                        consumer_tag: c.consumer_tag,
                    })),
                );
                Ok(())
            }
            basic::AMQPMethod::Get(g) => {
                let name = self.queue_name(g.queue.as_str())?;
                ctx.grant.check_read(Resource::Queue, &name).map_err(amqp)?;
                let q = ctx.vhost.queue(&name, ctx.id).map_err(amqp)?;
                if q.is_stream() {
                    return Err(amqp(warren_broker::Error::NotImplemented(format!(
                        "basic.get not supported by stream queues {}",
                        q.display_name()
                    ))));
                }
                match q.get(g.no_ack) {
                    None => {
                        self.counters.get_empty += 1;
                        method_frame(
                            out,
                            ch,
                            AMQPClass::Basic(basic::AMQPMethod::GetEmpty(basic::GetEmpty {})),
                        )
                    }
                    Some((m, remaining)) => {
                        if g.no_ack {
                            self.counters.get_no_ack += 1;
                        } else {
                            self.counters.get += 1;
                        }
                        if m.redelivered {
                            self.counters.redeliver += 1;
                        }
                        if ctx.vhost.is_tracing() {
                            crate::trace::delivered(
                                &ctx.vhost,
                                &ctx.node,
                                &q.name,
                                &m.message,
                                m.redelivered,
                            );
                        }
                        let tag = self.next_tag;
                        self.next_tag += 1;
                        encode::get_ok(
                            out,
                            ch,
                            tag,
                            m.redelivered,
                            &m.message.exchange,
                            &m.message.routing_key,
                            remaining,
                        );
                        encode::content(
                            out,
                            ch,
                            &m.message.raw_properties,
                            &m.message.body,
                            ctx.frame_max,
                        );
                        if !g.no_ack {
                            self.unacked.insert(
                                tag,
                                Unacked {
                                    queue: q,
                                    message: m,
                                    credit: None,
                                },
                            );
                        }
                    }
                }
                Ok(())
            }
            basic::AMQPMethod::Ack(a) => {
                let taken = self.take_unacked(a.delivery_tag, a.multiple)?;
                self.settle(Settle::Ack, taken);
                Ok(())
            }
            basic::AMQPMethod::Nack(n) => {
                let taken = self.take_unacked(n.delivery_tag, n.multiple)?;
                refuse_stream_nack(&taken)?;
                self.settle(
                    if n.requeue {
                        Settle::Requeue
                    } else {
                        Settle::Drop
                    },
                    taken,
                );
                Ok(())
            }
            basic::AMQPMethod::Reject(r) => {
                let taken = self.take_unacked(r.delivery_tag, false)?;
                refuse_stream_nack(&taken)?;
                self.settle(
                    if r.requeue {
                        Settle::Requeue
                    } else {
                        Settle::Drop
                    },
                    taken,
                );
                Ok(())
            }
            basic::AMQPMethod::Recover(r) => {
                if !r.requeue {
                    return Err(AmqpError::not_implemented("requeue=false"));
                }
                self.requeue_all_unacked();
                method_frame(
                    out,
                    ch,
                    AMQPClass::Basic(basic::AMQPMethod::RecoverOk(basic::RecoverOk {})),
                );
                Ok(())
            }
            basic::AMQPMethod::RecoverAsync(r) => {
                if !r.requeue {
                    return Err(AmqpError::not_implemented("requeue=false"));
                }
                self.requeue_all_unacked();
                Ok(())
            }
            other => {
                let m = AMQPClass::Basic(other);
                Err(AmqpError::command_invalid(format!(
                    "unexpected method {} from a client",
                    warren_codec::methods::name(60, m.get_amqp_method_id())
                )))
            }
        }
    }

    fn consume(
        &mut self,
        ctx: &Ctx,
        out: &mut BytesMut,
        c: basic::Consume,
    ) -> Result<(), AmqpError> {
        let ch = self.id;
        let reply = c.queue.as_str() == REPLY_TO;
        if reply && !c.no_ack {
            return Err(AmqpError::precondition_failed(
                "reply consumer cannot acknowledge",
            ));
        }
        if reply && self.reply_queue.is_some() {
            return Err(AmqpError::precondition_failed("reply consumer already set"));
        }
        let name = if reply {
            String::new()
        } else {
            let name = self.queue_name(c.queue.as_str())?;
            ctx.grant.check_read(Resource::Queue, &name).map_err(amqp)?;
            name
        };
        let tag: Arc<str> = if c.consumer_tag.as_str().is_empty() {
            warren_broker::names::consumer_tag().into()
        } else {
            c.consumer_tag.as_str().into()
        };
        if self.consumers.contains_key(&tag) {
            return Err(AmqpError::not_allowed(format!(
                "attempt to reuse consumer tag '{tag}'"
            )));
        }
        let q = if reply {
            ctx.vhost.create_reply_queue(ctx.id)
        } else {
            ctx.vhost.queue(&name, ctx.id).map_err(amqp)?
        };
        let priority = match c.arguments.inner().get("x-priority") {
            None => 0,
            Some(v) => int_arg(v).ok_or_else(|| {
                AmqpError::precondition_failed(format!(
                    "invalid arg 'x-priority' for queue '{}' in vhost '{}': \"expected integer, got {}\"",
                    name,
                    ctx.vhost.name,
                    warren_broker::args::type_name(v)
                ))
            })?,
        };
        let consumer = Consumer {
            priority,
            tag: tag.clone(),
            connection: ctx.id,
            channel: ch,
            no_ack: c.no_ack,
            exclusive: c.exclusive,
            credit: Arc::new(Credit::new(self.consumer_prefetch)),
            channel_credit: self.channel_credit.clone(),
            sink: ctx.sink.clone(),
            arguments: c.arguments.clone(),
        };
        // Deliveries the queue makes right away travel through the connection's inbox,
        // so they are written after this consume-ok.
        q.add_consumer(consumer).map_err(amqp)?;
        if reply {
            self.reply_queue = Some(q.clone());
        }
        self.consumers
            .insert(tag.clone(), ChannelConsumer { queue: q, reply });
        reply_unless_nowait(
            out,
            ch,
            c.nowait,
            AMQPClass::Basic(basic::AMQPMethod::ConsumeOk(basic::ConsumeOk {
                consumer_tag: short(&tag),
            })),
        );
        Ok(())
    }

    fn take_unacked(&mut self, tag: u64, multiple: bool) -> Result<Vec<(u64, Unacked)>, AmqpError> {
        if multiple && tag == 0 {
            return Ok(std::mem::take(&mut self.unacked).into_iter().collect());
        }
        if !self.unacked.contains_key(&tag) {
            return Err(AmqpError::precondition_failed(format!(
                "unknown delivery tag {tag}"
            )));
        }
        if multiple {
            let rest = self.unacked.split_off(&(tag + 1));
            let taken = std::mem::replace(&mut self.unacked, rest);
            Ok(taken.into_iter().collect())
        } else {
            Ok(self
                .unacked
                .remove(&tag)
                .map(|u| (tag, u))
                .into_iter()
                .collect())
        }
    }

    fn settle(&mut self, how: Settle, taken: Vec<(u64, Unacked)>) {
        if let Mode::Tx(tx) = &mut self.mode {
            tx.settles.push((how, taken));
            return;
        }
        self.apply_settle(how, taken);
    }

    fn apply_settle(&mut self, how: Settle, taken: Vec<(u64, Unacked)>) {
        if taken.is_empty() {
            return;
        }
        // Group by queue, preserving order.
        let mut groups: Vec<(Arc<Queue>, Vec<QueuedMessage>)> = Vec::new();
        for (_, u) in taken {
            if let Some(c) = &u.credit {
                c.give(1);
                self.channel_credit.give(1);
            }
            match groups.iter_mut().find(|(q, _)| Arc::ptr_eq(q, &u.queue)) {
                Some((_, v)) => v.push(u.message),
                None => groups.push((u.queue, vec![u.message])),
            }
        }
        for (q, msgs) in &mut groups {
            if q.durable
                && !matches!(how, Settle::Requeue)
                && !self.to_flush.iter().any(|f| Arc::ptr_eq(f, q))
            {
                self.to_flush.push(q.clone());
            }
            match how {
                Settle::Ack => {
                    self.counters.ack += msgs.len() as u64;
                    q.settle(msgs);
                    q.dispatch();
                }
                Settle::Drop => {
                    q.reject(std::mem::take(msgs));
                    q.dispatch();
                }
                Settle::Requeue => q.requeue(std::mem::take(msgs), true),
            }
        }
        self.dispatch_all();
    }

    /// Whether the channel has consumers (whose acks arrive on this connection).
    pub fn has_consumers(&self) -> bool {
        !self.consumers.is_empty()
    }

    /// Writes the settle marks of this batch's acks and rejects (see `to_flush`).
    pub fn flush_marks(&mut self) {
        for q in self.to_flush.drain(..) {
            q.flush_marks();
        }
    }

    fn release_consumer(&mut self, ctx: &Ctx, tag: &str, c: &ChannelConsumer, dispatch: bool) {
        if c.reply {
            ctx.vhost.drop_reply_queue(&c.queue);
            if self
                .reply_queue
                .as_ref()
                .is_some_and(|q| Arc::ptr_eq(q, &c.queue))
            {
                self.reply_queue = None;
            }
        } else {
            ctx.vhost
                .consumer_removed(&c.queue, ctx.id, self.id, tag, dispatch);
        }
    }

    /// Gives every consumer's queue a chance to deliver (after credit was returned).
    pub fn dispatch_all(&self) {
        let mut seen: Vec<&Arc<Queue>> = Vec::new();
        for c in self.consumers.values() {
            if !seen.iter().any(|q| Arc::ptr_eq(q, &c.queue)) {
                seen.push(&c.queue);
                c.queue.dispatch();
            }
        }
    }

    fn requeue_all_unacked(&mut self) {
        let all: Vec<(u64, Unacked)> = std::mem::take(&mut self.unacked).into_iter().collect();
        self.apply_settle(Settle::Requeue, all);
    }

    fn publish(
        &mut self,
        ctx: &Ctx,
        out: &mut BytesMut,
        p: basic::Publish,
        raw_properties: Bytes,
        body: Bytes,
    ) -> Result<(), AmqpError> {
        if p.immediate {
            return Err(AmqpError::not_implemented("immediate=true"));
        }
        let exchange = p.exchange.as_str();
        // RabbitMQ: write permission on the exchange comes before its lookup (403 before
        // 404), topic permission after it.
        ctx.grant
            .check_write(Resource::Exchange, exchange)
            .map_err(amqp)?;
        if ctx.grant.has_topic_permissions()
            && ctx.vhost.exchange_kind(exchange) == Some(ExchangeKind::Topic)
        {
            ctx.grant
                .check_topic_write(exchange, p.routing_key.as_str())
                .map_err(amqp)?;
        }
        let scanned = scan_properties(&raw_properties)
            .ok_or_else(|| AmqpError::frame_error("cannot decode content header properties"))?;
        // RabbitMQ checks the exchange (404/403) before user_id and expiration (406).
        // Routing checks it again anyway, so look it up here only when a property check
        // could fail first, or when a transaction defers routing to the commit.
        let invalid = scanned.props.check().err();
        if matches!(self.mode, Mode::Tx(_))
            || scanned.user_id.is_some()
            || scanned.props.expiration.is_some()
            || invalid.is_some()
        {
            ctx.vhost.check_publish(exchange).map_err(amqp)?;
        }
        if let Some(uid) = scanned.user_id {
            // RabbitMQ: users tagged `impersonator` may publish as anyone.
            if uid != ctx.user && !ctx.grant.impersonator {
                return Err(AmqpError::precondition_failed(format!(
                    "user_id property set to '{uid}' but authenticated user was '{}'",
                    ctx.user
                )));
            }
        }
        if let Some(exp) = scanned.props.expiration.as_deref() {
            check_expiration(exp)?;
        }
        if let Some(reason) = invalid {
            return Err(AmqpError::precondition_failed(format!(
                "invalid message: {reason}"
            )));
        }
        let direct_reply = scanned.reply_to == Some(REPLY_TO);
        let properties = scanned.props;
        let raw_properties = if direct_reply {
            // Direct reply-to: point the reply at this channel's pseudo-queue.
            let Some(rq) = &self.reply_queue else {
                return Err(AmqpError::precondition_failed(
                    "fast reply consumer does not exist",
                ));
            };
            decode_properties(&raw_properties)
                .map(|p| p.with_reply_to(short(&rq.name)))
                .and_then(|p| encode_properties(&p))
                .unwrap_or(raw_properties)
        } else {
            raw_properties
        };
        let basic::Publish {
            exchange,
            routing_key,
            mandatory,
            ..
        } = p;
        let message = Arc::new(Message {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            raw_properties: if raw_properties.is_empty() {
                Bytes::from_static(&encode::EMPTY_PROPERTIES)
            } else {
                raw_properties
            },
            properties,
            body,
            bcc: Vec::new(),
        });
        let pending = PendingPublish { mandatory, message };
        match &mut self.mode {
            Mode::Tx(tx) => {
                tx.publishes.push(pending);
                Ok(())
            }
            Mode::Confirm(c) => {
                let seq = c.last_seq + 1;
                let mut files = std::mem::take(&mut c.files);
                let stored = self.route_and_store(ctx, out, pending, &mut files);
                if let Mode::Confirm(c) = &mut self.mode {
                    c.files = files;
                    // Only a message the broker took responsibility for gets a sequence
                    // number that a confirm can cover: a publish refused here (404,
                    // 403) is answered by channel.close alone, as on RabbitMQ.
                    let stored = stored?;
                    c.last_seq = seq;
                    if stored.nack() {
                        c.failed.push(seq);
                    }
                }
                Ok(())
            }
            Mode::Plain => self
                .route_and_store(ctx, out, pending, &mut Vec::new())
                .map(|_| ()),
        }
    }

    /// Routes and enqueues a message. Files written for it are added to `files` (to be
    /// synced before it is confirmed).
    fn route_and_store(
        &mut self,
        ctx: &Ctx,
        out: &mut BytesMut,
        p: PendingPublish,
        files: &mut Vec<Arc<SyncFile>>,
    ) -> Result<Stored, AmqpError> {
        let queues = ctx
            .vhost
            .route(&p.message.exchange, &p.message.routing_key, &p.message)
            .map_err(amqp)?;
        self.counters.publish += 1;
        if ctx.vhost.is_tracing() {
            crate::trace::published(&ctx.vhost, &ctx.node, &p.message);
        }
        if queues.is_empty() {
            if p.mandatory {
                self.counters.return_unroutable += 1;
                self.return_no_route(ctx, out, &p.message);
            } else {
                self.counters.drop_unroutable += 1;
            }
            return Ok(Stored::default());
        }
        if p.mandatory
            && p.message.exchange.is_empty()
            && p.message.routing_key.starts_with(REPLY_TO)
        {
            // RabbitMQ 3.10 delivers a mandatory direct reply and also returns it: the
            // pseudo-queue does not count as a route.
            self.return_no_route(ctx, out, &p.message);
        }
        // Sender-selected distribution: BCC routes but must not reach consumers.
        let message = if p.message.has_bcc() {
            Arc::new(p.message.without_bcc())
        } else {
            p.message
        };
        let mut stored = Stored::default();
        for q in &queues {
            match q.publish(message.clone()) {
                Ok(published) => {
                    // x-overflow reject-publish: the publisher gets basic.nack.
                    stored.rejected |= published.rejected;
                    if published.pressure {
                        ctx.flow.replace(Some(q.clone()));
                    }
                    if let Some(f) = published.sync {
                        if !files.iter().any(|g| Arc::ptr_eq(g, &f)) {
                            files.push(f);
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(queue = %q.name, error = %e, "cannot write a persistent message");
                    stored.failed = true;
                }
            }
        }
        Ok(stored)
    }

    /// basic.return 312 NO_ROUTE with the message, for a mandatory publish.
    fn return_no_route(&self, ctx: &Ctx, out: &mut BytesMut, m: &Message) {
        encode::basic_return(out, self.id, 312, "NO_ROUTE", &m.exchange, &m.routing_key);
        encode::content(out, self.id, &m.raw_properties, &m.body, ctx.frame_max);
    }

    /// Sends the publisher confirms owed, coalesced with `multiple`, or hands them to the
    /// persister when messages were written to disk. Called once per batch of frames so
    /// a burst of publishes costs one ack and one group commit.
    pub fn flush_confirms(&mut self, ctx: &Ctx, out: &mut BytesMut) {
        let id = self.id;
        let Mode::Confirm(c) = &mut self.mode else {
            return;
        };
        if c.last_seq == c.requested {
            return;
        }
        let upto = c.last_seq;
        c.requested = upto;
        match &ctx.persister {
            Some(p) if !c.files.is_empty() || c.outstanding > 0 => {
                c.outstanding += 1;
                let tx = ctx.sink.event_sender();
                p.sync(std::mem::take(&mut c.files), move |ok| {
                    let _ = tx.send(ConnEvent::Synced {
                        channel: id,
                        upto,
                        ok,
                    });
                });
            }
            _ => {
                c.files.clear();
                Self::confirm_range(id, c, out, upto, true);
            }
        }
    }

    /// The persister finished a sync this channel asked for.
    pub fn synced(&mut self, out: &mut BytesMut, upto: u64, ok: bool) {
        let id = self.id;
        if let Mode::Confirm(c) = &mut self.mode {
            c.outstanding = c.outstanding.saturating_sub(1);
            if !ok {
                tracing::error!(channel = id, "fsync failed: nacking publishes");
            }
            Self::confirm_range(id, c, out, upto, ok);
        }
    }

    /// A commit's sync finished; returns whether commit-ok should be sent.
    pub fn committed(&mut self) -> bool {
        if let Mode::Tx(t) = &mut self.mode {
            t.outstanding = t.outstanding.saturating_sub(1);
        }
        !self.closing
    }

    /// Acks (or nacks) every publish in `(c.confirmed, upto]`.
    fn confirm_range(id: u16, c: &mut Confirms, out: &mut BytesMut, upto: u64, ok: bool) {
        if upto <= c.confirmed {
            return;
        }
        let from = c.confirmed;
        c.confirmed = upto;
        let frame = |out: &mut BytesMut, ack: bool, tag: u64, multiple: bool| {
            let m = if ack {
                basic::AMQPMethod::Ack(basic::Ack {
                    delivery_tag: tag,
                    multiple,
                })
            } else {
                basic::AMQPMethod::Nack(basic::Nack {
                    delivery_tag: tag,
                    multiple,
                    requeue: false,
                })
            };
            method_frame(out, id, AMQPClass::Basic(m));
        };
        let failed: Vec<u64> = c.failed.iter().copied().filter(|s| *s <= upto).collect();
        c.failed.retain(|s| *s > upto);
        if failed.is_empty() {
            frame(out, ok, upto, upto > from + 1);
            return;
        }
        for tag in from + 1..=upto {
            frame(out, ok && !failed.contains(&tag), tag, false);
        }
    }

    fn tx(&mut self, ctx: &Ctx, out: &mut BytesMut, t: tx::AMQPMethod) -> Result<(), AmqpError> {
        let ch = self.id;
        match t {
            tx::AMQPMethod::Select(_) => {
                match self.mode {
                    Mode::Confirm { .. } => {
                        return Err(AmqpError::precondition_failed(
                            "cannot switch from confirm to tx mode",
                        ))
                    }
                    Mode::Plain => self.mode = Mode::Tx(Tx::default()),
                    Mode::Tx(_) => {}
                }
                method_frame(
                    out,
                    ch,
                    AMQPClass::Tx(tx::AMQPMethod::SelectOk(tx::SelectOk {})),
                );
                Ok(())
            }
            tx::AMQPMethod::Commit(_) => {
                let Mode::Tx(txn) = &mut self.mode else {
                    return Err(AmqpError::precondition_failed(
                        "channel is not transactional",
                    ));
                };
                let outstanding = txn.outstanding;
                let txn = std::mem::replace(
                    txn,
                    Tx {
                        outstanding,
                        ..Tx::default()
                    },
                );
                let mut files = Vec::new();
                let mut failure = None;
                let mut rejected = false;
                for p in txn.publishes {
                    match self.route_and_store(ctx, out, p, &mut files) {
                        Ok(stored) if stored.failed => {
                            failure = Some(AmqpError::internal_error(
                                "cannot write a persistent message to disk",
                            ));
                            break;
                        }
                        Ok(stored) => rejected |= stored.rejected,
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
                if let Some(e) = failure {
                    // The commit failed: its acks and rejects are not applied. The
                    // messages stay unacknowledged on this channel, which the error
                    // closes, and closing requeues them: none is left neither settled
                    // nor back in its queue.
                    for (_, taken) in txn.settles {
                        self.unacked.extend(taken);
                    }
                    return Err(e);
                }
                for (how, taken) in txn.settles {
                    self.apply_settle(how, taken);
                }
                if rejected {
                    // A queue refused a message (x-overflow reject-publish).
                    return Err(AmqpError::precondition_failed("partial tx completion"));
                }
                match &ctx.persister {
                    // commit-ok waits until the transaction's messages are on disk.
                    Some(p) if !files.is_empty() || outstanding > 0 => {
                        if let Mode::Tx(t) = &mut self.mode {
                            t.outstanding += 1;
                        }
                        let tx = ctx.sink.event_sender();
                        p.sync(files, move |ok| {
                            let _ = tx.send(ConnEvent::Committed { channel: ch, ok });
                        });
                    }
                    _ => method_frame(
                        out,
                        ch,
                        AMQPClass::Tx(tx::AMQPMethod::CommitOk(tx::CommitOk {})),
                    ),
                }
                Ok(())
            }
            tx::AMQPMethod::Rollback(_) => {
                let Mode::Tx(txn) = &mut self.mode else {
                    return Err(AmqpError::precondition_failed(
                        "channel is not transactional",
                    ));
                };
                let outstanding = txn.outstanding;
                let txn = std::mem::replace(
                    txn,
                    Tx {
                        outstanding,
                        ..Tx::default()
                    },
                );
                // RabbitMQ: acks in a rolled-back transaction leave the messages unacked.
                for (_, taken) in txn.settles {
                    self.unacked.extend(taken);
                }
                method_frame(
                    out,
                    ch,
                    AMQPClass::Tx(tx::AMQPMethod::RollbackOk(tx::RollbackOk {})),
                );
                Ok(())
            }
            _ => Err(AmqpError::command_invalid(
                "unexpected tx method from a client",
            )),
        }
    }

    /// A delivery from a queue arrived through the inbox: write it, or hand it back if
    /// this channel no longer has that consumer.
    pub fn deliver(&mut self, ctx: &Ctx, out: &mut BytesMut, d: Delivery) {
        if self.closing || !self.consumers.contains_key(&d.consumer_tag) {
            if !d.no_ack {
                self.channel_credit.give(1);
            }
            return_delivery(d);
            return;
        }
        if d.no_ack {
            self.counters.deliver_no_ack += 1;
        } else {
            self.counters.deliver += 1;
        }
        if d.message.redelivered {
            self.counters.redeliver += 1;
        }
        if ctx.vhost.is_tracing() {
            let m = &d.message;
            crate::trace::delivered(
                &ctx.vhost,
                &ctx.node,
                &d.queue.name,
                &m.message,
                m.redelivered,
            );
        }
        let tag = self.next_tag;
        self.next_tag += 1;
        let m = &d.message;
        encode::deliver(
            out,
            self.id,
            &d.consumer_tag,
            tag,
            m.redelivered,
            &m.message.exchange,
            &m.message.routing_key,
        );
        encode::content(
            out,
            self.id,
            &m.message.raw_properties,
            &m.message.body,
            ctx.frame_max,
        );
        if !d.no_ack {
            self.unacked.insert(
                tag,
                Unacked {
                    queue: d.queue,
                    message: d.message,
                    credit: Some(d.credit),
                },
            );
        } else if d.message.loc.is_some() {
            d.queue.written(&[Settled::from(&d.message)]);
        }
    }

    /// The broker cancelled a consumer (its queue was deleted). Returns whether the
    /// channel had it, so the connection can send basic.cancel.
    pub fn consumer_cancelled(&mut self, tag: &Arc<str>) -> bool {
        !self.closing && self.consumers.remove(tag).is_some()
    }

    /// Releases everything the channel holds: consumers are removed (auto-delete queues
    /// may go), unacknowledged messages are requeued, a transaction is discarded.
    pub fn close(&mut self, ctx: &Ctx) {
        self.closing = true;
        // Detach consumers without dispatching, put unacked messages back (in their
        // original positions), then let the queues deliver: the next single active
        // consumer then starts with the requeued messages, as on RabbitMQ.
        let consumers = std::mem::take(&mut self.consumers);
        for (tag, c) in &consumers {
            self.release_consumer(ctx, tag, c, false);
        }
        if let Mode::Tx(txn) = &mut self.mode {
            let txn = std::mem::take(txn);
            for (_, taken) in txn.settles {
                self.unacked.extend(taken);
            }
        }
        self.requeue_all_unacked();
        for c in consumers.values() {
            if !c.reply && !c.queue.is_deleted() {
                c.queue.dispatch();
            }
        }
        // Acks that came in the same batch as the close are on disk before close-ok.
        self.flush_marks();
    }

    /// Number of messages delivered and not yet acknowledged.
    pub fn unacked_count(&self) -> usize {
        self.unacked.len()
    }

    /// The reply code of an error, as a channel.close frame.
    pub fn close_frame(&self, out: &mut BytesMut, e: &AmqpError) {
        method_frame(
            out,
            self.id,
            AMQPClass::Channel(channel::AMQPMethod::Close(channel::Close {
                reply_code: e.code.code(),
                reply_text: short(&e.text),
                class_id: e.class_id,
                method_id: e.method_id,
            })),
        );
    }
}

/// RabbitMQ's checks for a non-passive exchange.declare: configure on the exchange; for
/// a new exchange with an alternate exchange also read on it and write on the AE. An
/// unknown type and the default exchange are refused first (by the engine).
fn check_exchange_declare(
    ctx: &Ctx,
    name: &str,
    kind: &str,
    args: &warren_codec::types::FieldTable,
) -> Result<(), AmqpError> {
    if name.is_empty() || ExchangeKind::parse(kind).is_none() {
        return Ok(());
    }
    ctx.grant
        .check_configure(Resource::Exchange, name)
        .map_err(amqp)?;
    if !ctx.vhost.has_exchange(name) && !name.starts_with("amq.") {
        if let Some(ae) = warren_broker::args::string_arg(args, "alternate-exchange") {
            ctx.grant
                .check_read(Resource::Exchange, name)
                .map_err(amqp)?;
            ctx.grant
                .check_write(Resource::Exchange, &ae)
                .map_err(amqp)?;
        }
    }
    Ok(())
}

/// RabbitMQ's checks for queue.bind/unbind and exchange.bind/unbind, in its order: write
/// on the destination, neither end the default exchange, read on the source, and topic
/// read permission on the routing key when the source is a topic exchange.
fn check_bind(
    ctx: &Ctx,
    dest_kind: Resource,
    destination: &str,
    source: &str,
    key: &str,
) -> Result<(), AmqpError> {
    let g = &ctx.grant;
    // RabbitMQ refuses the default exchange after the destination's write check.
    g.check_write(dest_kind, destination).map_err(amqp)?;
    if source.is_empty() || (dest_kind == Resource::Exchange && destination.is_empty()) {
        return Err(amqp(warren_broker::Error::DefaultExchange));
    }
    let topic =
        g.has_topic_permissions() && ctx.vhost.exchange_kind(source) == Some(ExchangeKind::Topic);
    g.check_bind(dest_kind, destination, source, key, topic)
        .map_err(amqp)
}

fn encode_properties(p: &basic::AMQPProperties) -> Option<Bytes> {
    use warren_codec::protocol::basic::gen_properties;
    gen_properties(p)(amq_protocol::frame::WriteContext::from(Vec::new()))
        .ok()
        .map(|c| Bytes::from(c.write))
}

fn int_arg(v: &warren_codec::types::AMQPValue) -> Option<i64> {
    use warren_codec::types::AMQPValue as V;
    match v {
        V::Timestamp(_) => None,
        other => warren_broker::args::int_value(other).and_then(|n| i64::try_from(n).ok()),
    }
}

/// RabbitMQ's `rabbit_basic:parse_expiration`: a non-negative integer of milliseconds,
/// with Erlang's `string:to_integer` leniency and error terms in the reply text.
fn check_expiration(exp: &str) -> Result<u64, AmqpError> {
    let fail =
        |why: String| AmqpError::precondition_failed(format!("invalid expiration '{exp}': {why}"));
    let bytes = exp.as_bytes();
    let mut i = 0;
    let negative = match bytes.first() {
        Some(b'-') => {
            i = 1;
            true
        }
        Some(b'+') => {
            i = 1;
            false
        }
        _ => false,
    };
    let digits_start = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    if i == digits_start {
        return Err(fail("no_integer".into()));
    }
    if i < bytes.len() {
        return Err(fail(format!("{{leftover_string,\"{}\"}}", &exp[i..])));
    }
    let value: u128 = exp[digits_start..i].parse().unwrap_or(u128::MAX);
    if negative && value > 0 {
        return Err(fail(format!("{{value_negative,-{value}}}")));
    }
    // RabbitMQ's largest expiry: ten years in milliseconds.
    const MAX_EXPIRY: u128 = 315_360_000_000;
    if value > MAX_EXPIRY {
        return Err(fail(format!("{{value_too_large,{value}}}")));
    }
    Ok(value as u64)
}

/// Hands a delivery that was not written back to its queue.
pub fn return_delivery(d: Delivery) {
    if !d.no_ack {
        d.credit.give(1);
    }
    let q = d.queue.clone();
    // It never reached the client, so it keeps its redelivered flag.
    q.requeue_marked(vec![d.message], !d.no_ack, false);
}

/// RabbitMQ 3.10 refuses basic.nack and basic.reject of stream deliveries with 540.
fn refuse_stream_nack(taken: &[(u64, Unacked)]) -> Result<(), AmqpError> {
    match taken.iter().find(|(_, u)| u.queue.is_stream()) {
        Some((_, u)) => Err(amqp(warren_broker::Error::NotImplemented(format!(
            "basic.nack and basic.reject not supported by stream queues {}",
            u.queue.display_name()
        )))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::check_expiration;

    #[test]
    fn expiration_parsing_matches_rabbitmq() {
        assert_eq!(check_expiration("60000").unwrap(), 60000);
        assert_eq!(check_expiration("0").unwrap(), 0);
        assert_eq!(
            check_expiration("soon").unwrap_err().text,
            "PRECONDITION_FAILED - invalid expiration 'soon': no_integer"
        );
        assert_eq!(
            check_expiration("-1").unwrap_err().text,
            "PRECONDITION_FAILED - invalid expiration '-1': {value_negative,-1}"
        );
        assert_eq!(
            check_expiration("10x").unwrap_err().text,
            "PRECONDITION_FAILED - invalid expiration '10x': {leftover_string,\"x\"}"
        );
    }
}
