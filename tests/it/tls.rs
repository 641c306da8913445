//! AMQPS: a TLS listener beside the plain one, client certificates, SASL EXTERNAL, and
//! handshakes that fail, stall or send garbage. Certificates are made at test time
//! (rcgen): a CA, a server certificate for 127.0.0.1 and client certificates.

use std::path::PathBuf;
use std::sync::Arc;

use lapin::options::{BasicGetOptions, QueueDeclareOptions};
use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use warren_server::config::{CertLoginFrom, TlsVerify};

use crate::util::{self, TestBroker};

/// A throw-away PKI in a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
}

/// A PEM certificate and its PEM key.
struct Identity {
    cert: String,
    key: String,
}

impl Pki {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params.distinguished_name.push(DnType::CommonName, name);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Pki {
            dir: tempfile::tempdir().unwrap(),
            ca,
        }
    }

    fn issue(&self, sans: &[&str], dn: &[(DnType, &str)]) -> Identity {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        // rcgen starts with a placeholder common name: replace the whole subject.
        params.distinguished_name = DistinguishedName::new();
        for (t, v) in dn {
            params.distinguished_name.push(t.clone(), *v);
        }
        let cert = params.signed_by(&key, &self.ca).unwrap();
        Identity {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn ca_pem(&self) -> String {
        self.ca.pem()
    }

    /// Configures `config`'s TLS listener on 127.0.0.1:0 with a server certificate.
    fn serve(&self, config: &mut warren_server::Config) {
        let server = self.issue(
            &["127.0.0.1", "localhost"],
            &[(DnType::CommonName, "warren")],
        );
        config.tls.listen = "127.0.0.1:0".parse().unwrap();
        config.tls.cert = Some(self.write("server.pem", &server.cert));
        config.tls.key = Some(self.write("server.key", &server.key));
        config.tls.ca = Some(self.write("ca.pem", &self.ca_pem()));
    }
}

fn tls_config(pki: &Pki, client: Option<&Identity>) -> OwnedTLSConfig {
    OwnedTLSConfig {
        identity: client.map(|c| OwnedIdentity::PKCS8 {
            pem: c.cert.clone().into_bytes(),
            key: c.key.clone().into_bytes(),
        }),
        cert_chain: Some(pki.ca_pem()),
    }
}

async fn connect_tls(uri: &str, tls: OwnedTLSConfig) -> lapin::Result<Connection> {
    util::within(
        "lapin TLS connect",
        Connection::connect_with_config(
            uri,
            ConnectionProperties::default(),
            tls,
            lapin::runtime::default_runtime().expect("tokio runtime"),
        ),
    )
    .await
}

fn tls_port(broker: &TestBroker) -> u16 {
    broker.running().tls_addr().expect("TLS listener").port()
}

/// A round trip through a server-named queue on `conn`.
async fn round_trip(conn: &Connection, body: &[u8]) {
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            util::ss(""),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    util::publish(&ch, "", q.name().as_str(), body).await;
    let got = util::within("basic.get", async {
        loop {
            if let Some(m) = ch
                .basic_get(q.name().clone(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
            {
                return m;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert_eq!(got.delivery.data, body);
    // Closed here: lapin closes a dropped channel in the background, which would race
    // with a connection.close that follows.
    ch.close(200, "done".into()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapin_talks_amqps_while_the_plain_listener_keeps_serving() {
    let pki = Pki::new("Warren test CA");
    let broker = TestBroker::start_with(|c| pki.serve(c)).await;
    let uri = format!("amqps://guest:guest@127.0.0.1:{}/%2f", tls_port(&broker));
    let tls = connect_tls(&uri, tls_config(&pki, None)).await.unwrap();
    // Large enough to span several TLS records and AMQP frames.
    let body = util::test_body(300_000);
    round_trip(&tls, &body).await;
    let plain = broker.connect().await;
    round_trip(&plain, b"plain").await;
    // The connection list knows which one is TLS.
    let list = broker.running().admin().connections();
    assert_eq!(list.iter().filter(|c| c.tls).count(), 1, "{list:?}");
    assert_eq!(list.iter().filter(|c| !c.tls).count(), 1);
    tls.close(200, "bye".into()).await.unwrap();
    plain.close(200, "bye".into()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_trust_the_server_certificate_cannot_connect() {
    let pki = Pki::new("Warren test CA");
    let other = Pki::new("Some other CA");
    let broker = TestBroker::start_with(|c| pki.serve(c)).await;
    let uri = format!("amqps://guest:guest@127.0.0.1:{}/%2f", tls_port(&broker));
    assert!(connect_tls(&uri, tls_config(&other, None)).await.is_err());
    // The broker is unharmed.
    let ok = connect_tls(&uri, tls_config(&pki, None)).await.unwrap();
    round_trip(&ok, b"still fine").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_logs_in_as_the_certificate_subject() {
    let pki = Pki::new("Warren test CA");
    let broker = TestBroker::start_with(|c| {
        pki.serve(c);
        c.tls.verify = TlsVerify::Peer;
        c.auth.mechanisms = vec!["PLAIN".into(), "AMQPLAIN".into(), "EXTERNAL".into()];
    })
    .await;
    // Distinguished name, RFC 4514 order (most significant last), as RabbitMQ renders it.
    let dn = "CN=app-client,O=Warren tests";
    let admin = broker.running().admin();
    admin.access().add_user(dn, None, &[]).unwrap();
    admin
        .access()
        .set_permissions(dn, "/", ".*", ".*", ".*")
        .unwrap();
    let client = pki.issue(
        &[],
        &[
            (DnType::OrganizationName, "Warren tests"),
            (DnType::CommonName, "app-client"),
        ],
    );
    let port = tls_port(&broker);
    let uri = format!("amqps://127.0.0.1:{port}/%2f?auth_mechanism=external");
    let conn = connect_tls(&uri, tls_config(&pki, Some(&client)))
        .await
        .unwrap();
    round_trip(&conn, b"external").await;
    let users: Vec<String> = admin.connections().iter().map(|c| c.user.clone()).collect();
    assert_eq!(users, [dn.to_string()]);
    conn.close(200, "bye".into()).await.unwrap();

    // A certificate naming a user that does not exist is refused.
    let stranger = pki.issue(&[], &[(DnType::CommonName, "nobody")]);
    assert!(connect_tls(&uri, tls_config(&pki, Some(&stranger)))
        .await
        .is_err());
    // Without a certificate, EXTERNAL is not offered at all...
    assert!(connect_tls(&uri, tls_config(&pki, None)).await.is_err());
    // ...nor on the plain listener.
    let plain = format!("amqp://{}/%2f?auth_mechanism=external", broker.addr());
    assert!(util::connect_uri(&plain).await.is_err());
    // A password user still logs in over the same TLS listener, certificate or not.
    let guest = format!("amqps://guest:guest@127.0.0.1:{port}/%2f");
    let conn = connect_tls(&guest, tls_config(&pki, Some(&client)))
        .await
        .unwrap();
    assert!(conn.status().connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_if_no_peer_cert_refuses_clients_without_one() {
    let pki = Pki::new("Warren test CA");
    let other = Pki::new("Some other CA");
    let broker = TestBroker::start_with(|c| {
        pki.serve(c);
        c.tls.verify = TlsVerify::Peer;
        c.tls.fail_if_no_peer_cert = true;
    })
    .await;
    let uri = format!("amqps://guest:guest@127.0.0.1:{}/%2f", tls_port(&broker));
    assert!(connect_tls(&uri, tls_config(&pki, None)).await.is_err());
    // A certificate from a CA the broker does not trust is refused too.
    let forged = other.issue(&[], &[(DnType::CommonName, "guest")]);
    assert!(connect_tls(&uri, tls_config(&pki, Some(&forged)))
        .await
        .is_err());
    let client = pki.issue(&[], &[(DnType::CommonName, "someone")]);
    let conn = connect_tls(&uri, tls_config(&pki, Some(&client)))
        .await
        .unwrap();
    round_trip(&conn, b"verified").await;
}

/// Reads until the server closes the socket (EOF or reset), within the test timeout.
async fn closed_by_server(sock: &mut TcpStream) {
    util::within("server closes the socket", async {
        let mut buf = [0u8; 1024];
        loop {
            match sock.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_amqp_garbage_and_stalled_handshakes_on_the_tls_port_are_dropped() {
    let pki = Pki::new("Warren test CA");
    let broker = TestBroker::start_with(|c| {
        pki.serve(c);
        c.limits.handshake_timeout_secs = 1;
    })
    .await;
    let addr = broker.running().tls_addr().unwrap();
    // A plain AMQP client on the TLS port.
    let mut plain = TcpStream::connect(addr).await.unwrap();
    plain.write_all(b"AMQP\x00\x00\x09\x01").await.unwrap();
    closed_by_server(&mut plain).await;
    // Garbage.
    let mut garbage = TcpStream::connect(addr).await.unwrap();
    garbage.write_all(&[0x16; 4096]).await.unwrap();
    closed_by_server(&mut garbage).await;
    // A half-sent ClientHello, then nothing: the handshake timeout closes it.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    // Meanwhile a real client connects and works.
    let uri = format!("amqps://guest:guest@127.0.0.1:{}/%2f", addr.port());
    let conn = connect_tls(&uri, tls_config(&pki, None)).await.unwrap();
    round_trip(&conn, b"unaffected").await;
    closed_by_server(&mut stalled).await;
    // And a client that completes TLS but never speaks AMQP is timed out as well.
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(pki.ca_pem().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut silent = connector.connect(name, tcp).await.unwrap();
    util::within("silent TLS client is dropped", async {
        let mut buf = [0u8; 64];
        loop {
            match silent.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(conn.status().connected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_2_and_1_3_are_both_served() {
    let pki = Pki::new("Warren test CA");
    let broker = TestBroker::start_with(|c| pki.serve(c)).await;
    let addr = broker.running().tls_addr().unwrap();
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut roots = rustls::RootCertStore::empty();
        for c in rustls::pki_types::CertificateDer::pem_slice_iter(pki.ca_pem().as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[version])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let mut s = connector.connect(name, tcp).await.unwrap();
        assert_eq!(s.get_ref().1.protocol_version(), Some(version.version));
        // The AMQP handshake starts as on the plain port: connection.start follows the
        // protocol header.
        s.write_all(b"AMQP\x00\x00\x09\x01").await.unwrap();
        s.flush().await.unwrap();
        let mut head = [0u8; 7];
        util::within("connection.start", s.read_exact(&mut head))
            .await
            .unwrap();
        assert_eq!(head[0], 1, "a method frame");
    }
}

#[test]
fn certificate_login_names_follow_ssl_cert_login_from() {
    let pki = Pki::new("Warren test CA");
    let id = pki.issue(
        &[],
        &[
            (DnType::CountryName, "GB"),
            (DnType::OrganizationName, "Acme, Inc"),
            (DnType::CommonName, "svc"),
        ],
    );
    let der = rustls::pki_types::CertificateDer::pem_slice_iter(id.cert.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    use warren_server::tls::cert_login_name;
    assert_eq!(
        cert_login_name(&der, CertLoginFrom::DistinguishedName).as_deref(),
        Some("CN=svc,O=Acme\\, Inc,C=GB")
    );
    assert_eq!(
        cert_login_name(&der, CertLoginFrom::CommonName).as_deref(),
        Some("svc")
    );
    assert_eq!(cert_login_name(b"junk", CertLoginFrom::CommonName), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tls_files_stop_the_start_with_a_clear_error() {
    let pki = Pki::new("Warren test CA");
    let dir = tempfile::tempdir().unwrap();
    let mut config = warren_server::Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        ..warren_server::Config::default()
    };
    pki.serve(&mut config);
    config.tls.key = Some(pki.write("empty.key", ""));
    let err = warren_server::start(config.clone()).await.unwrap_err();
    assert!(err.to_string().contains("key"), "{err}");
    config.tls.key = Some(pki.dir.path().join("missing.key"));
    let err = warren_server::start(config).await.unwrap_err();
    assert!(err.to_string().contains("missing.key"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn management_api_over_https_with_the_amqps_certificate() {
    let pki = Pki::new("Warren test CA");
    let broker = TestBroker::start_with(|c| pki.serve(c)).await;
    let config = broker.running().admin().config().tls.clone();
    let tls = warren_server::tls::http_server_config(&config).unwrap();
    let https = warren_management::start_tls(
        broker.running().admin(),
        "127.0.0.1:0".parse().unwrap(),
        tls,
        std::time::Duration::from_secs(5),
    )
    .await
    .unwrap();
    // A client that connects and never starts its handshake holds up no one.
    let _stalled = TcpStream::connect(https.local_addr()).await.unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(pki.ca_pem().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let tcp = TcpStream::connect(https.local_addr()).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut s = util::within("TLS handshake", connector.connect(name, tcp))
        .await
        .unwrap();
    // guest is a loopback-only user: the client address is known on TLS too.
    s.write_all(
        b"GET /api/overview HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic Z3Vlc3Q6Z3Vlc3Q=\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    s.flush().await.unwrap();
    let mut reply = Vec::new();
    let _ = util::within("HTTPS reply", s.read_to_end(&mut reply)).await;
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\"management_version\""), "{reply}");
}

/// The civil date `days` days after 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_expiration_health_check_reads_the_listener_certificate() {
    let pki = Pki::new("Warren test CA");
    // A server certificate valid for about ten more days.
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        / 86_400;
    let (y, m, d) = civil_from_days(today + 10);
    params.not_after = rcgen::date_time_ymd(y, m, d);
    let cert = params.signed_by(&key, &pki.ca).unwrap();
    let broker = TestBroker::start_with(|c| {
        pki.serve(c);
        c.tls.cert = Some(pki.write("short.pem", &cert.pem()));
        c.tls.key = Some(pki.write("short.key", &key.serialize_pem()));
    })
    .await;
    let http = warren_management::start(broker.running().admin(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let get = |path: String| {
        let url = format!("http://{}{}", http.local_addr(), path);
        async move {
            let r = reqwest::Client::new()
                .get(url)
                .basic_auth("guest", Some("guest"))
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.unwrap())
        }
    };
    let base = "/api/health/checks/certificate-expiration";
    let (s, v) = get(format!("{base}/1/days")).await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")), "{v}");
    let (s, v) = get(format!("{base}/1/months")).await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(v["status"], "failed");
    assert_eq!(v["reason"], "Certificates expiring");
    assert_eq!(v["expired"][0]["protocol"], "amqp/ssl");
    let (s, v) = get(format!("{base}/1/fortnights")).await;
    assert_eq!(s, 400);
    assert_eq!(
        v["reason"],
        "Time unit not recognised. Supported units: days, weeks, months, years."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_protocol_over_tls_with_the_amqps_certificate() {
    use futures_lite::StreamExt;
    use rabbitmq_stream_client::types::{Message, OffsetSpecification};
    use rabbitmq_stream_client::{Environment, TlsConfiguration};
    // The stream client's rustls has two crypto providers in this build: pick one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pki = Pki::new("Warren stream TLS CA");
    let broker = TestBroker::start_with(|c| pki.serve(c)).await;
    let admin = broker.running().admin();
    let tls = warren_server::tls::server_config(&admin.config().tls).unwrap();
    let listener = warren_stream::start_with_tls(
        broker.running().admin(),
        "127.0.0.1:0".parse().unwrap(),
        Some(("127.0.0.1:0".parse().unwrap(), tls)),
    )
    .await
    .unwrap();
    let tls_port = listener.tls_local_addr().expect("a TLS listener").port();
    assert_ne!(tls_port, listener.local_addr().port());
    // Both are listed for the management API and the tools.
    assert_eq!(
        broker.running().admin().other_listeners(),
        vec![
            ("stream", listener.local_addr()),
            ("stream/ssl", listener.tls_local_addr().unwrap())
        ]
    );
    let ca = pki.write("client-ca.pem", &pki.ca_pem());
    let env = util::within(
        "a TLS stream connection",
        Environment::builder()
            .host("127.0.0.1")
            .port(tls_port)
            .tls(
                TlsConfiguration::builder()
                    .add_root_certificates(ca.to_string_lossy().into_owned())
                    .build()
                    .unwrap(),
            )
            .build(),
    )
    .await
    .expect("the client connects over TLS");
    env.stream_creator().create("tls.stream").await.unwrap();
    let producer = env.producer().build("tls.stream").await.unwrap();
    let status = producer
        .send_with_confirm(Message::builder().body("over tls").build())
        .await
        .unwrap();
    assert!(status.confirmed());
    let mut consumer = env
        .consumer()
        .offset(OffsetSpecification::First)
        .build("tls.stream")
        .await
        .unwrap();
    let d = util::within("a delivery over TLS", consumer.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.message().data(), Some(&b"over tls"[..]));
    let _ = consumer.handle().close().await;
    // A plain client on the TLS port gets nowhere, and the listener carries on.
    let mut plain = TcpStream::connect(("127.0.0.1", tls_port)).await.unwrap();
    plain.write_all(&[0, 0, 0, 4, 0, 0x11, 0, 1]).await.unwrap();
    let mut buf = [0u8; 64];
    let n = util::within(
        "the TLS listener to drop a plain client",
        plain.read(&mut buf),
    )
    .await
    .unwrap_or(0);
    assert!(
        n == 0 || buf[0] == 0x15,
        "a TLS alert or a close, got {:?}",
        &buf[..n]
    );
    producer.close().await.unwrap();
}
