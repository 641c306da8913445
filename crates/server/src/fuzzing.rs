//! Checks shared by the coverage-guided fuzz targets (`fuzz/`, run with cargo-fuzz) and
//! the corpus replay test (`tests/fuzz_corpus.rs` of this crate, run by `cargo test`).
//! Each takes arbitrary bytes, must never panic on them, and asserts what has to hold.
//! Not an API: hidden from the docs, free to change.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::OnceLock;

use amq_protocol::protocol::{connection, AMQPClass};
use amq_protocol::types::AMQPValue;
use bytes::BytesMut;
use warren_broker::access::Access;
use warren_codec::{encode, Frame, FrameDecoder};

use crate::auth::{self, AuthError, Peer};
use crate::config::{Auth, Config};

/// The mechanisms the first input byte chooses from (the last one is unknown).
const MECHANISMS: [&str; 5] = ["PLAIN", "AMQPLAIN", "EXTERNAL", "ANONYMOUS", "CRAM-MD5"];

/// `sasl`: the first byte picks a mechanism, the rest is the client's SASL response
/// (connection.start-ok's `response`). Checks that [`auth::credentials`] extracts
/// exactly PLAIN's `authzid NUL user NUL password` and AMQPLAIN's `LOGIN` and `PASSWORD`
/// (a field table without its length), refuses everything else as malformed, and that
/// [`auth::authenticate`] with the default configuration logs in as `guest` exactly
/// when the credentials are guest/guest and the peer is on loopback.
pub fn sasl(data: &[u8]) {
    let Some((&selector, response)) = data.split_first() else {
        return;
    };
    let mechanism = MECHANISMS[usize::from(selector) % MECHANISMS.len()];
    let creds = auth::credentials(mechanism, response);
    match mechanism {
        "PLAIN" => {
            let parts: Vec<&[u8]> = response.split(|b| *b == 0).collect();
            match (&creds, parts.as_slice()) {
                (Ok((user, pass)), [_, u, p]) => {
                    assert_eq!(user.as_str(), String::from_utf8_lossy(u));
                    assert_eq!(pass.as_str(), String::from_utf8_lossy(p));
                }
                (Err(AuthError::Malformed(_)), parts) => assert_ne!(parts.len(), 3),
                other => panic!("PLAIN {response:?}: {other:?}"),
            }
        }
        "AMQPLAIN" => match &creds {
            Ok((user, pass)) => {
                let table = amqplain_table(response).expect("accepted, so it parses");
                assert_eq!(text(table.inner().get("LOGIN")).as_deref(), Some(&**user));
                assert_eq!(
                    text(table.inner().get("PASSWORD")).as_deref(),
                    Some(&**pass)
                );
            }
            Err(AuthError::Malformed(_)) => {
                if let Some(t) = amqplain_table(response) {
                    let login = text(t.inner().get("LOGIN"));
                    assert!(login.is_none() || text(t.inner().get("PASSWORD")).is_none());
                }
            }
            Err(e) => panic!("AMQPLAIN {response:?}: {e:?}"),
        },
        other => assert_eq!(creds, Err(AuthError::UnknownMechanism(other.to_string()))),
    }

    // The whole login, from loopback and from elsewhere, with the default settings
    // (PLAIN and AMQPLAIN offered, guest/guest only from loopback).
    let config = Auth::default();
    let guest = matches!(&creds, Ok((u, p)) if u == "guest" && p == "guest");
    let loopback = Peer {
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        cert: None,
    };
    let remote = Peer {
        ip: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
        cert: None,
    };
    for peer in [loopback, remote] {
        let result = auth::authenticate(&config, access(), mechanism, response, peer);
        let offered = auth::mechanisms(&config, peer).contains(&mechanism);
        match &result {
            Ok(user) => {
                assert_eq!(user, "guest");
                assert!(guest && auth::is_loopback(peer.ip), "{result:?}");
            }
            Err(AuthError::UnknownMechanism(_)) => assert!(!offered),
            Err(AuthError::Malformed(_)) => assert!(creds.is_err()),
            Err(AuthError::Refused { .. }) => {
                assert!(creds.is_ok() && (!guest || !auth::is_loopback(peer.ip)));
            }
        }
    }
}

/// The users a login is checked against: guest/guest only (hashing a password once).
fn access() -> &'static Access {
    static ACCESS: OnceLock<Access> = OnceLock::new();
    ACCESS.get_or_init(|| {
        let a = Access::in_memory();
        a.add_user("guest", Some("guest"), &["administrator"])
            .expect("a valid user");
        a
    })
}

fn amqplain_table(response: &[u8]) -> Option<amq_protocol::types::FieldTable> {
    let mut framed = u32::try_from(response.len()).ok()?.to_be_bytes().to_vec();
    framed.extend_from_slice(response);
    warren_codec::nesting::parse_field_table(&framed).map(|(_, t)| t)
}

fn text(v: Option<&AMQPValue>) -> Option<String> {
    match v? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// `config_toml`: arbitrary text as a configuration file. [`Config::from_toml`] accepts
/// exactly what deserialises and then passes [`Config::validate`]; for an accepted
/// configuration the derived values (identity, memory watermark) are computed without
/// panicking, and the connection.start it makes the server send (server properties
/// from the identity strings, the offered mechanisms) encodes into a frame that decodes
/// to the same method.
pub fn config_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = toml::from_str::<Config>(text);
    let valid = parsed.as_ref().map(|c| c.validate().is_ok());
    let loaded = Config::from_toml(text, Path::new("fuzz.toml"));
    assert_eq!(
        loaded.is_ok(),
        matches!(valid, Ok(true)),
        "from_toml vs validate"
    );
    let Ok(config) = loaded else {
        return;
    };
    let _ = config.resources.watermark_bytes();
    let start = AMQPClass::Connection(connection::AMQPMethod::Start(connection::Start {
        version_major: 0,
        version_minor: 9,
        server_properties: crate::connection::server_properties(&config.identity.resolved()),
        mechanisms: config.auth.mechanisms.join(" ").into(),
        locales: "en_US".into(),
    }));
    let mut wire = BytesMut::new();
    encode::method(&mut wire, 0, &start);
    match FrameDecoder::new(0).decode(&mut wire) {
        Ok(Some(Frame::Method { method, .. })) => assert_eq!(*method, start),
        other => panic!("connection.start does not round-trip: {other:?}"),
    }
    assert!(config.clone().validate().is_ok());
    assert!(config.limits.frame_max_bytes == 0 || config.limits.frame_max_bytes >= 4096);
    assert!(config.limits.channel_max >= 1);
}

/// The broker the `connection` target talks to: started once per process on
/// `127.0.0.1:0` with a data directory of its own, in a runtime of its own.
struct Harness {
    rt: tokio::runtime::Runtime,
    running: crate::Running,
    addr: std::net::SocketAddr,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for the fuzzed broker");
        let dir = std::env::temp_dir().join(format!("warren-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = Config {
            listen: "127.0.0.1:0".parse().expect("address"),
            data_dir: dir,
            ..Config::default()
        };
        let running = rt
            .block_on(crate::start(config))
            .expect("the fuzzed broker starts");
        let addr = running.local_addr();
        Harness { rt, running, addr }
    })
}

/// What a well-behaved client sends to get channel 1 open on vhost `/` as guest: the
/// protocol header, start-ok (PLAIN, with the capabilities RabbitMQ clients announce),
/// tune-ok, connection.open and channel.open, all pipelined.
fn opening() -> BytesMut {
    use amq_protocol::protocol::channel;
    use amq_protocol::types::FieldTable;
    let mut caps = FieldTable::default();
    for cap in [
        "publisher_confirms",
        "consumer_cancel_notify",
        "basic.nack",
        "connection.blocked",
        "authentication_failure_close",
    ] {
        caps.insert(cap.into(), AMQPValue::Boolean(true));
    }
    let mut props = FieldTable::default();
    props.insert("capabilities".into(), AMQPValue::FieldTable(caps));
    let mut out = BytesMut::new();
    out.extend_from_slice(b"AMQP\x00\x00\x09\x01");
    let methods = [
        connection::AMQPMethod::StartOk(connection::StartOk {
            client_properties: props,
            mechanism: "PLAIN".into(),
            response: "\0guest\0guest".into(),
            locale: "en_US".into(),
        }),
        connection::AMQPMethod::TuneOk(connection::TuneOk {
            channel_max: 2047,
            frame_max: 131_072,
            heartbeat: 0,
        }),
        connection::AMQPMethod::Open(connection::Open {
            virtual_host: "/".into(),
        }),
    ];
    for m in methods {
        encode::method(&mut out, 0, &AMQPClass::Connection(m));
    }
    encode::method(
        &mut out,
        1,
        &AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
    );
    out
}

/// `connection`: a whole client conversation with a broker running in this process,
/// over loopback TCP. The first byte picks what comes before the rest: nothing (a raw
/// byte stream), the protocol header, or a complete opening as guest with channel 1 open
/// ([`opening`]). The client sends it all, closes its sending side and reads until the
/// broker closes the connection, which must happen within 10 s (no hang). Everything
/// the broker sent must be well-formed frames (after at most its protocol header) no
/// larger than the frame_max it offers, with nothing but heartbeats (and the close-ok
/// for a crossing close) after a connection.close. Queues and exchanges the input declared are deleted afterwards, so
/// inputs do not pile up state. A panic anywhere in the broker aborts the fuzzer.
pub fn connection(data: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut input = match mode % 3 {
        0 => BytesMut::new(),
        1 => BytesMut::from(&b"AMQP\x00\x00\x09\x01"[..]),
        _ => opening(),
    };
    input.extend_from_slice(rest);
    let h = harness();
    let output = h.rt.block_on(async {
        let mut stream = tokio::net::TcpStream::connect(h.addr)
            .await
            .expect("connect to the fuzzed broker");
        let (mut rd, mut wr) = stream.split();
        let send = async {
            // The broker may close first and reset the socket: not an error here.
            let _ = wr.write_all(&input).await;
            let _ = wr.shutdown().await;
        };
        let receive = async {
            let mut out = Vec::new();
            let _ = rd.read_to_end(&mut out).await;
            out
        };
        let both = async { tokio::join!(send, receive).1 };
        tokio::time::timeout(std::time::Duration::from_secs(10), both)
            .await
            .expect("the broker closes the connection within 10 s of the client's EOF")
    });
    check_server_output(&output);
    if let Some(vhost) = h.running.broker().vhost("/") {
        for q in vhost.queues() {
            let _ = vhost.delete_queue(&q.name, false, false, 0);
        }
        for x in vhost.exchanges() {
            if !x.name.is_empty() && !x.name.starts_with("amq.") {
                let _ = vhost.delete_exchange(&x.name, false);
            }
        }
    }
}

/// What [`connection`] asserts of the bytes a broker sent.
fn check_server_output(output: &[u8]) {
    let mut buf = BytesMut::from(output);
    if buf.starts_with(b"AMQP") {
        // The protocol header the broker answers a bad one with, then nothing.
        assert_eq!(
            &buf[..],
            b"AMQP\x00\x00\x09\x01",
            "after the protocol header"
        );
        return;
    }
    // The broker offers 131072 and never sends a frame larger than it offered.
    let decoder = FrameDecoder::new(131_072);
    let mut closed = false;
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(Frame::Heartbeat { channel: 0 })) => {}
            // The client's own connection.close crossed the broker's.
            Ok(Some(Frame::Method { channel: 0, method }))
                if closed
                    && matches!(
                        *method,
                        AMQPClass::Connection(connection::AMQPMethod::CloseOk(_))
                    ) => {}
            Ok(Some(frame)) => {
                assert!(!closed, "{frame:?} after connection.close");
                if let Frame::Method { channel: 0, method } = &frame {
                    if let AMQPClass::Connection(connection::AMQPMethod::Close(_)) = **method {
                        closed = true;
                    }
                }
            }
            Ok(None) => {
                assert!(buf.is_empty(), "{} bytes of a partial frame", buf.len());
                return;
            }
            Err(e) => panic!("the broker sent a malformed frame: {e:?}"),
        }
    }
}
