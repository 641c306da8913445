//! Users, permissions, topic permissions, limits and vhost deletion (#10). Every
//! refusal is checked with RabbitMQ 3.10.8's exact reply code and text (measured on the
//! Debian package).

use amq_protocol::protocol::{basic, channel, exchange, queue, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString};
use warren_broker::access::{UserLimits, VHostLimits};

use crate::util::{
    assert_close, eventually, frame, header_frame, header_frame_with, method_frame, publish_method,
    ss, Ending, Login, RawClient, TestBroker,
};

/// A raw connection as `user` (password = user name) to `vhost`.
async fn open_as(broker: &TestBroker, user: &str, vhost: &str) -> RawClient {
    RawClient::open_with(
        broker.addr(),
        &Login {
            user: user.into(),
            password: user.into(),
            vhost: vhost.into(),
            ..Login::default()
        },
    )
    .await
}

/// A user `name` (password `name`) with the given permissions on `/`.
fn user_with(broker: &TestBroker, name: &str, configure: &str, write: &str, read: &str) {
    let admin = broker.running().admin();
    admin.access().add_user(name, Some(name), &[]).unwrap();
    admin
        .access()
        .set_permissions(name, "/", configure, write, read)
        .unwrap();
}

/// Channel numbers for one raw connection: each refused call closes its channel.
struct Calls {
    c: RawClient,
    next: u16,
}

impl Calls {
    /// Sends `frames` on a fresh channel, then (for content, which gets no reply) a
    /// passive declare of amq.direct. Returns `Err((code, text))` for a channel.close,
    /// `Ok(())` for any other reply.
    async fn call(
        &mut self,
        build: impl FnOnce(u16) -> (Vec<u8>, bool),
    ) -> Result<(), (u16, String)> {
        let ch = self.next;
        self.next += 1;
        self.c.open_channel(ch).await;
        let (mut bytes, needs_probe) = build(ch);
        if needs_probe {
            bytes.extend(method_frame(
                ch,
                &AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
                    exchange: ss("amq.direct"),
                    kind: ss("direct"),
                    passive: true,
                    ..Default::default()
                })),
            ));
        }
        self.c.send(&bytes).await;
        loop {
            match self.c.next_method().await {
                (n, AMQPClass::Channel(channel::AMQPMethod::Close(close))) if n == ch => {
                    self.c
                        .send_method(
                            ch,
                            &AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                        )
                        .await;
                    return Err((close.reply_code, close.reply_text.to_string()));
                }
                // Deliveries to a consumer of this channel may precede its reply.
                (n, AMQPClass::Basic(basic::AMQPMethod::Deliver(_))) if n == ch => {
                    self.skip_content().await;
                    continue;
                }
                (n, AMQPClass::Basic(basic::AMQPMethod::GetOk(_))) if n == ch => {
                    self.skip_content().await;
                    return Ok(());
                }
                (n, _) if n == ch => return Ok(()),
                (0, other) => panic!("connection-level reply: {other:?}"),
                _ => continue,
            }
        }
    }
}

impl Calls {
    /// Reads the header and body frames of a delivered message.
    async fn skip_content(&mut self) {
        match self.c.next_frame().await {
            Some(crate::util::Frame::Header { body_size, .. }) => {
                let mut left = body_size;
                while left > 0 {
                    match self.c.next_frame().await {
                        Some(crate::util::Frame::Body { payload, .. }) => {
                            left = left.saturating_sub(payload.len() as u64)
                        }
                        other => panic!("expected a body frame, got {other:?}"),
                    }
                }
            }
            other => panic!("expected a content header, got {other:?}"),
        }
    }
}

fn m(ch: u16, method: AMQPClass) -> (Vec<u8>, bool) {
    (method_frame(ch, &method), false)
}

fn declare_q(name: &str, args: FieldTable) -> AMQPClass {
    AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
        queue: ss(name),
        auto_delete: false,
        arguments: args,
        ..Default::default()
    }))
}

fn declare_x(name: &str, args: FieldTable) -> AMQPClass {
    AMQPClass::Exchange(exchange::AMQPMethod::Declare(exchange::Declare {
        exchange: ss(name),
        kind: ss("direct"),
        arguments: args,
        ..Default::default()
    }))
}

fn bind_q(q: &str, x: &str, key: &str) -> AMQPClass {
    AMQPClass::Queue(queue::AMQPMethod::Bind(queue::Bind {
        queue: ss(q),
        exchange: ss(x),
        routing_key: ss(key),
        nowait: false,
        arguments: FieldTable::default(),
    }))
}

fn bind_x(dest: &str, src: &str, key: &str) -> AMQPClass {
    AMQPClass::Exchange(exchange::AMQPMethod::Bind(exchange::Bind {
        destination: ss(dest),
        source: ss(src),
        routing_key: ss(key),
        nowait: false,
        arguments: FieldTable::default(),
    }))
}

fn publish(ch: u16, x: &str, key: &str) -> (Vec<u8>, bool) {
    let mut bytes = method_frame(ch, &publish_method(x, key));
    bytes.extend(header_frame(ch, 1));
    bytes.extend(frame(3, ch, b"x"));
    (bytes, true)
}

fn str_table(key: &str, value: &str) -> FieldTable {
    let mut t = FieldTable::default();
    t.insert(ss(key), AMQPValue::LongString(LongString::from(value)));
    t
}

fn refused(kind: &str, name: &str, user: &str) -> Result<(), (u16, String)> {
    Err((
        403,
        format!(
            "ACCESS_REFUSED - access to {kind} '{name}' in vhost '/' refused for user '{user}'"
        ),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permission_matrix_each_method_allowed_and_refused() {
    let broker = TestBroker::start().await;
    user_with(&broker, "u", "^u\\.", "^u\\.", "^u\\.");
    // Things the user may not touch, made by guest.
    {
        let mut g = Calls {
            c: RawClient::open(broker.addr()).await,
            next: 1,
        };
        for (q, x) in [("other.q", "other.x")] {
            g.call(|ch| m(ch, declare_q(q, FieldTable::default())))
                .await
                .unwrap();
            g.call(|ch| m(ch, declare_x(x, FieldTable::default())))
                .await
                .unwrap();
        }
    }
    let mut c = Calls {
        c: open_as(&broker, "u", "/").await,
        next: 1,
    };
    // queue.declare: configure on the queue; passive needs nothing.
    assert_eq!(
        c.call(|ch| m(ch, declare_q("u.q", FieldTable::default())))
            .await,
        Ok(())
    );
    assert_eq!(
        c.call(|ch| m(ch, declare_q("other.new", FieldTable::default())))
            .await,
        refused("queue", "other.new", "u")
    );
    let passive = AMQPClass::Queue(queue::AMQPMethod::Declare(queue::Declare {
        queue: ss("other.q"),
        passive: true,
        ..Default::default()
    }));
    assert_eq!(c.call(|ch| m(ch, passive)).await, Ok(()));
    // ...with a dead-letter exchange: write on it (and read on the queue).
    assert_eq!(
        c.call(|ch| m(
            ch,
            declare_q("u.dl1", str_table("x-dead-letter-exchange", "other.dlx"))
        ))
        .await,
        refused("exchange", "other.dlx", "u")
    );
    assert_eq!(
        c.call(|ch| m(
            ch,
            declare_q("u.dl2", str_table("x-dead-letter-exchange", "u.dlx"))
        ))
        .await,
        Ok(())
    );
    // exchange.declare / delete: configure; an alternate exchange needs write on it.
    assert_eq!(
        c.call(|ch| m(ch, declare_x("u.x", FieldTable::default())))
            .await,
        Ok(())
    );
    assert_eq!(
        c.call(|ch| m(ch, declare_x("other.x2", FieldTable::default())))
            .await,
        refused("exchange", "other.x2", "u")
    );
    assert_eq!(
        c.call(|ch| m(
            ch,
            declare_x("u.ae1", str_table("alternate-exchange", "other.ae"))
        ))
        .await,
        refused("exchange", "other.ae", "u")
    );
    let delete_x = |name: &str| {
        AMQPClass::Exchange(exchange::AMQPMethod::Delete(exchange::Delete {
            exchange: ss(name),
            if_unused: false,
            nowait: false,
        }))
    };
    assert_eq!(
        c.call(|ch| m(ch, delete_x("other.x"))).await,
        refused("exchange", "other.x", "u")
    );
    // basic.publish: write on the exchange (the default exchange is amq.default).
    assert_eq!(c.call(|ch| publish(ch, "u.x", "k")).await, Ok(()));
    assert_eq!(
        c.call(|ch| publish(ch, "amq.direct", "k")).await,
        refused("exchange", "amq.direct", "u")
    );
    assert_eq!(
        c.call(|ch| publish(ch, "", "u.q")).await,
        refused("exchange", "amq.default", "u")
    );
    // A refusal comes before a 404, as in RabbitMQ.
    assert_eq!(
        c.call(|ch| publish(ch, "no.such.exchange", "k")).await,
        refused("exchange", "no.such.exchange", "u")
    );
    // queue.bind: write on the queue, read on the exchange.
    assert_eq!(c.call(|ch| m(ch, bind_q("u.q", "u.x", "k"))).await, Ok(()));
    assert_eq!(
        c.call(|ch| m(ch, bind_q("u.q", "amq.direct", "k"))).await,
        refused("exchange", "amq.direct", "u")
    );
    assert_eq!(
        c.call(|ch| m(ch, bind_q("other.q", "u.x", "k"))).await,
        refused("queue", "other.q", "u")
    );
    let unbind = AMQPClass::Queue(queue::AMQPMethod::Unbind(queue::Unbind {
        queue: ss("u.q"),
        exchange: ss("amq.direct"),
        routing_key: ss("k"),
        arguments: FieldTable::default(),
    }));
    assert_eq!(
        c.call(|ch| m(ch, unbind)).await,
        refused("exchange", "amq.direct", "u")
    );
    // exchange.bind: write on the destination, read on the source.
    assert_eq!(
        c.call(|ch| m(ch, declare_x("u.x2", FieldTable::default())))
            .await,
        Ok(())
    );
    assert_eq!(c.call(|ch| m(ch, bind_x("u.x2", "u.x", "k"))).await, Ok(()));
    assert_eq!(
        c.call(|ch| m(ch, bind_x("u.x", "amq.topic", "k"))).await,
        refused("exchange", "amq.topic", "u")
    );
    assert_eq!(
        c.call(|ch| m(ch, bind_x("amq.fanout", "u.x", "k"))).await,
        refused("exchange", "amq.fanout", "u")
    );
    // basic.get, basic.consume, queue.purge: read on the queue.
    let get = |q: &str| {
        AMQPClass::Basic(basic::AMQPMethod::Get(basic::Get {
            queue: ss(q),
            no_ack: true,
        }))
    };
    assert_eq!(c.call(|ch| m(ch, get("u.q"))).await, Ok(()));
    assert_eq!(
        c.call(|ch| m(ch, get("other.q"))).await,
        refused("queue", "other.q", "u")
    );
    let consume = |q: &str| {
        AMQPClass::Basic(basic::AMQPMethod::Consume(basic::Consume {
            queue: ss(q),
            consumer_tag: ss(""),
            no_local: false,
            no_ack: true,
            exclusive: false,
            nowait: false,
            arguments: FieldTable::default(),
        }))
    };
    assert_eq!(c.call(|ch| m(ch, consume("u.dl2"))).await, Ok(()));
    assert_eq!(
        c.call(|ch| m(ch, consume("other.q"))).await,
        refused("queue", "other.q", "u")
    );
    let purge = |q: &str| {
        AMQPClass::Queue(queue::AMQPMethod::Purge(queue::Purge {
            queue: ss(q),
            nowait: false,
        }))
    };
    assert_eq!(c.call(|ch| m(ch, purge("u.q"))).await, Ok(()));
    assert_eq!(
        c.call(|ch| m(ch, purge("other.q"))).await,
        refused("queue", "other.q", "u")
    );
    // queue.delete: configure on the queue.
    let delete_q = |q: &str| {
        AMQPClass::Queue(queue::AMQPMethod::Delete(queue::Delete {
            queue: ss(q),
            if_unused: false,
            if_empty: false,
            nowait: false,
        }))
    };
    assert_eq!(
        c.call(|ch| m(ch, delete_q("other.q"))).await,
        refused("queue", "other.q", "u")
    );
    assert_eq!(c.call(|ch| m(ch, delete_q("u.q"))).await, Ok(()));
    assert_eq!(c.call(|ch| m(ch, delete_x("u.x2"))).await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vhost_without_permissions_is_530_at_open() {
    let broker = TestBroker::start().await;
    let admin = broker.running().admin();
    admin
        .access()
        .add_user("nobody", Some("nobody"), &[])
        .unwrap();
    let login = Login {
        user: "nobody".into(),
        password: "nobody".into(),
        ..Login::default()
    };
    let mut c = RawClient::begin(broker.addr(), &login).await;
    c.tune_and_open(&login).await;
    let close = c.expect_close().await;
    assert_close(
        &close,
        530,
        "NOT_ALLOWED - access to vhost '/' refused for user 'nobody'",
    );
    assert_eq!((close.class_id, close.method_id), (10, 40));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topic_permissions_apply_to_topic_exchanges_only() {
    let broker = TestBroker::start().await;
    user_with(&broker, "t", ".*", ".*", ".*");
    broker
        .running()
        .admin()
        .access()
        .set_topic_permissions("t", "/", "amq.topic", "^{username}\\.", "^r\\.{vhost}")
        .unwrap();
    let mut c = Calls {
        c: open_as(&broker, "t", "/").await,
        next: 1,
    };
    let topic = |key: &str| {
        Err((
            403,
            format!(
                "ACCESS_REFUSED - access to topic '{key}' in exchange 'amq.topic' in vhost '/' refused for user 't'"
            ),
        ))
    };
    assert_eq!(c.call(|ch| publish(ch, "amq.topic", "t.a")).await, Ok(()));
    assert_eq!(
        c.call(|ch| publish(ch, "amq.topic", "zz")).await,
        topic("zz")
    );
    assert_eq!(c.call(|ch| publish(ch, "amq.direct", "zz")).await, Ok(()));
    assert_eq!(
        c.call(|ch| m(ch, declare_q("tq", FieldTable::default())))
            .await,
        Ok(())
    );
    assert_eq!(
        c.call(|ch| m(ch, bind_q("tq", "amq.topic", "r./"))).await,
        Ok(())
    );
    assert_eq!(
        c.call(|ch| m(ch, bind_q("tq", "amq.topic", "zz"))).await,
        topic("zz")
    );
    assert_eq!(
        c.call(|ch| m(ch, bind_x("amq.fanout", "amq.topic", "zz")))
            .await,
        topic("zz")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_id_may_name_another_user_only_for_impersonators() {
    let broker = TestBroker::start().await;
    user_with(&broker, "plain", ".*", ".*", ".*");
    user_with(&broker, "imp", ".*", ".*", ".*");
    let access = broker.running().admin().access().clone();
    access
        .set_user_tags("imp", &["impersonator".to_string()])
        .unwrap();
    // user-id (flag bit 4) = "someone".
    let mut props = vec![0x00, 0x10, 7];
    props.extend_from_slice(b"someone");
    let publish_as = |ch: u16| {
        let mut bytes = method_frame(ch, &publish_method("amq.direct", "k"));
        bytes.extend(header_frame_with(ch, 1, &props));
        bytes.extend(frame(3, ch, b"x"));
        (bytes, true)
    };
    let mut plain = Calls {
        c: open_as(&broker, "plain", "/").await,
        next: 1,
    };
    assert_eq!(
        plain.call(publish_as).await,
        Err((
            406,
            "PRECONDITION_FAILED - user_id property set to 'someone' but authenticated user was 'plain'"
                .to_string()
        ))
    );
    let mut imp = Calls {
        c: open_as(&broker, "imp", "/").await,
        next: 1,
    };
    assert_eq!(imp.call(publish_as).await, Ok(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vhost_and_user_limits_with_rabbitmqs_codes_and_texts() {
    let broker = TestBroker::start().await;
    let admin = broker.running().admin();
    admin.create_vhost("lim", "", &[]).unwrap();
    user_with(&broker, "l", ".*", ".*", ".*");
    admin
        .access()
        .set_permissions("l", "lim", ".*", ".*", ".*")
        .unwrap();
    admin
        .access()
        .set_vhost_limits(
            "lim",
            VHostLimits {
                max_connections: Some(1),
                max_queues: Some(1),
            },
        )
        .unwrap();
    let mut first = Calls {
        c: open_as(&broker, "l", "lim").await,
        next: 1,
    };
    let login = Login {
        user: "l".into(),
        password: "l".into(),
        vhost: "lim".into(),
        ..Login::default()
    };
    let mut second = RawClient::begin(broker.addr(), &login).await;
    second.tune_and_open(&login).await;
    assert_close(
        &second.expect_close().await,
        530,
        "NOT_ALLOWED - access to vhost 'lim' refused for user 'l': connection limit (1) is reached",
    );
    assert_eq!(
        first
            .call(|ch| m(ch, declare_q("l1", FieldTable::default())))
            .await,
        Ok(())
    );
    assert_eq!(
        first.call(|ch| m(ch, declare_q("l2", FieldTable::default()))).await,
        Err((
            406,
            "PRECONDITION_FAILED - cannot declare queue 'l2': queue limit in vhost 'lim' (1) is reached"
                .to_string()
        ))
    );
    // Redeclaring an existing queue is not limited.
    assert_eq!(
        first
            .call(|ch| m(ch, declare_q("l1", FieldTable::default())))
            .await,
        Ok(())
    );
    // User limits.
    admin
        .access()
        .set_user_limits(
            "l",
            UserLimits {
                max_connections: Some(2),
                max_channels: Some(1),
            },
        )
        .unwrap();
    let mut c2 = open_as(&broker, "l", "/").await;
    let login = Login {
        user: "l".into(),
        password: "l".into(),
        ..Login::default()
    };
    let mut c3 = RawClient::begin(broker.addr(), &login).await;
    c3.tune_and_open(&login).await;
    assert_close(
        &c3.expect_close().await,
        530,
        "NOT_ALLOWED - connection refused for user 'l': user connection limit (2) is reached",
    );
    // `first` holds channels: close it properly (close-ok comes after its channels are
    // released), then c2 may open exactly one.
    first
        .c
        .send_method(
            0,
            &AMQPClass::Connection(amq_protocol::protocol::connection::AMQPMethod::Close(
                amq_protocol::protocol::connection::Close {
                    reply_code: 200,
                    reply_text: ss("bye"),
                    class_id: 0,
                    method_id: 0,
                },
            )),
        )
        .await;
    loop {
        if let (
            0,
            AMQPClass::Connection(amq_protocol::protocol::connection::AMQPMethod::CloseOk(_)),
        ) = first.c.next_method().await
        {
            break;
        }
    }
    c2.open_channel(1).await;
    c2.send(&method_frame(
        2,
        &AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    ))
    .await;
    assert_close(
        &c2.expect_close().await,
        530,
        "NOT_ALLOWED - number of channels opened for user 'l' has reached the maximum allowed user limit of (1)",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_vhost_closes_its_connections_and_removes_its_stored_messages() {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions};
    let broker = TestBroker::start().await;
    let admin = broker.running().admin();
    admin.create_vhost("doomed", "", &[]).unwrap();
    admin
        .access()
        .set_permissions("guest", "doomed", ".*", ".*", ".*")
        .unwrap();
    let uri = format!("amqp://guest:guest@{}/doomed", broker.addr());
    let conn = crate::util::connect_uri(&uri).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_declare(
        ss("keep"),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for _ in 0..10 {
        ch.basic_publish(
            ss(""),
            ss("keep"),
            BasicPublishOptions::default(),
            b"persistent body",
            lapin::BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let storage = broker.running().broker().storage().unwrap().clone();
    let files_under = |dir: &std::path::Path| -> usize {
        fn walk(d: &std::path::Path) -> usize {
            std::fs::read_dir(d).map_or(0, |rd| {
                rd.flatten()
                    .map(|e| {
                        let p = e.path();
                        if p.is_dir() {
                            walk(&p)
                        } else {
                            1
                        }
                    })
                    .sum()
            })
        }
        walk(dir)
    };
    let vhosts_dir = storage.root().join("vhosts");
    let before = files_under(&vhosts_dir);
    assert!(before > 0, "the durable queue wrote files");
    // A raw client in the vhost sees the 320 with RabbitMQ's text.
    let mut raw = RawClient::open_with(
        broker.addr(),
        &Login {
            vhost: "doomed".into(),
            ..Login::default()
        },
    )
    .await;
    admin.delete_vhost("doomed").unwrap();
    match raw.ending().await {
        Ending::Close(close) => {
            assert_close(&close, 320, "CONNECTION_FORCED - vhost 'doomed' is deleted")
        }
        Ending::Eof => panic!("expected connection.close 320"),
    }
    eventually(
        std::time::Duration::from_secs(10),
        "the lapin connection is closed",
        || !conn.status().connected(),
    )
    .await;
    assert_eq!(
        files_under(&vhosts_dir),
        0,
        "nothing of the vhost is left on disk"
    );
    assert!(broker.running().broker().vhost("doomed").is_none());
    assert!(admin
        .access()
        .permissions()
        .iter()
        .all(|p| p.vhost != "doomed"));
    assert_eq!(
        admin.delete_vhost("doomed"),
        Err(warren_broker::access::AdminError::NoSuchVHost(
            "doomed".into()
        ))
    );
    // Recreated, it is empty.
    admin.create_vhost("doomed", "", &[]).unwrap();
    let v = broker.running().broker().vhost("doomed").unwrap();
    assert!(v.queue("keep", 0).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_user_closes_their_connections() {
    let broker = TestBroker::start().await;
    user_with(&broker, "gone", ".*", ".*", ".*");
    let mut c = open_as(&broker, "gone", "/").await;
    broker.running().admin().delete_user("gone").unwrap();
    match c.ending().await {
        Ending::Close(close) => {
            assert_close(&close, 320, "CONNECTION_FORCED - user 'gone' is deleted")
        }
        Ending::Eof => panic!("expected connection.close 320"),
    }
    let login = Login {
        user: "gone".into(),
        password: "gone".into(),
        ..Login::default()
    };
    let mut again = RawClient::begin(broker.addr(), &login).await;
    assert_eq!(again.expect_close().await.reply_code, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_logs_in_as_the_configured_user_only_when_enabled() {
    use amq_protocol::protocol::connection;
    async fn start_ok(addr: std::net::SocketAddr, mechanism: &str) -> (RawClient, String) {
        let mut c = RawClient::tcp(addr).await;
        c.send(crate::util::PROTOCOL_HEADER).await;
        let mechs = match c.next_method().await {
            (0, AMQPClass::Connection(connection::AMQPMethod::Start(s))) => {
                String::from_utf8_lossy(s.mechanisms.as_bytes()).into_owned()
            }
            other => panic!("{other:?}"),
        };
        c.send_method(
            0,
            &AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: FieldTable::default(),
                mechanism: ss(mechanism),
                response: LongString::from("trace"),
                locale: ss("en_US"),
            })),
        )
        .await;
        (c, mechs)
    }
    let off = TestBroker::start().await;
    let (mut c, mechs) = start_ok(off.addr(), "ANONYMOUS").await;
    assert_eq!(mechs, "PLAIN AMQPLAIN");
    assert!(matches!(c.ending().await, Ending::Eof));

    let on = TestBroker::start_with(|c| {
        c.auth.anonymous_login_user = Some("guest".into());
        c.auth.anonymous_login_pass = Some("guest".into());
    })
    .await;
    let (mut c, mechs) = start_ok(on.addr(), "ANONYMOUS").await;
    assert_eq!(mechs, "PLAIN AMQPLAIN ANONYMOUS");
    c.tune_and_open(&Login::default()).await;
    c.expect_open_ok().await;
    c.open_channel(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_permissions_and_vhosts_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let config = warren_server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: path.clone(),
        ..warren_server::Config::default()
    };
    let running = warren_server::start(config).await.unwrap();
    let admin = running.admin();
    admin
        .create_vhost("kept", "a vhost", &["t".into()])
        .unwrap();
    admin
        .access()
        .add_user("app", Some("pw"), &["monitoring"])
        .unwrap();
    admin
        .access()
        .set_permissions("app", "kept", "^a", "^b", "^c")
        .unwrap();
    admin.delete_user("guest").unwrap();
    drop(admin);
    running.shutdown().await;
    let mut config = warren_server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: path.clone(),
        ..warren_server::Config::default()
    };
    // The configured users and vhosts seed only a fresh data directory.
    config.vhosts = vec!["/".into(), "seeded-only-when-fresh".into()];
    let running = warren_server::start(config).await.unwrap();
    let access = running.admin().access().clone();
    assert!(access.check_password("app", "pw").is_ok());
    assert!(
        access.user("guest").is_none(),
        "a deleted default user stays deleted"
    );
    assert_eq!(access.vhost("kept").unwrap().description, "a vhost");
    assert!(running.broker().vhost("kept").is_some());
    assert_eq!(access.permissions().len(), 1);
    assert!(access.vhost("seeded-only-when-fresh").is_none());
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_users_with_a_hash_or_without_a_password() {
    let broker = TestBroker::start_with(|c| {
        c.auth.users = vec![
            warren_server::config::User {
                name: "hashed".into(),
                password: None,
                // RabbitMQ 3.10.8's hash of "p1".
                password_hash: Some("lzE5Yxb3zmj/myS3bmd6N11fV+aS1HolG2eCjLtohHZ7LV+6".into()),
                hashing_algorithm: Default::default(),
                tags: vec![],
            },
            warren_server::config::User {
                name: "nopass".into(),
                password: None,
                password_hash: None,
                hashing_algorithm: Default::default(),
                tags: vec![],
            },
        ];
    })
    .await;
    let login = Login {
        user: "hashed".into(),
        password: "p1".into(),
        ..Login::default()
    };
    let mut c = RawClient::open_with(broker.addr(), &login).await;
    c.open_channel(1).await;
    for password in ["", "x"] {
        let login = Login {
            user: "nopass".into(),
            password: password.into(),
            ..Login::default()
        };
        let mut c = RawClient::begin(broker.addr(), &login).await;
        assert_eq!(c.expect_close().await.reply_code, 403);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_load_at_boot_and_a_bad_file_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.json");
    std::fs::write(
        &good,
        r#"{"users": [{"name": "u1", "hashing_algorithm": "rabbit_password_hashing_sha256",
             "password_hash": "lzE5Yxb3zmj/myS3bmd6N11fV+aS1HolG2eCjLtohHZ7LV+6", "tags": []}],
            "vhosts": [{"name": "jobs"}],
            "permissions": [{"user": "u1", "vhost": "jobs", "configure": ".*", "write": ".*", "read": ".*"}]}"#,
    )
    .unwrap();
    let broker = TestBroker::start_with(|c| c.load_definitions = Some(good.clone())).await;
    let login = Login {
        user: "u1".into(),
        password: "p1".into(),
        vhost: "jobs".into(),
        ..Login::default()
    };
    let mut c = RawClient::open_with(broker.addr(), &login).await;
    c.open_channel(1).await;

    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        r#"{"users": [{"name": "x", "hashing_algorithm": "rot13"}]}"#,
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let config = warren_server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: data.path().to_path_buf(),
        load_definitions: Some(bad),
        ..warren_server::Config::default()
    };
    let err = warren_server::start(config).await.unwrap_err().to_string();
    assert!(
        err.contains("bad.json") && err.contains("unknown hashing_algorithm 'rot13'"),
        "{err}"
    );
}
