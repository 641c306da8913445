//! AMQPS: the TLS listener's configuration (rustls), the byte pump a connection uses
//! once the handshake is done, and the client-certificate identity SASL EXTERNAL logs
//! in with.
//!
//! The handshake runs through `tokio-rustls` (inside the AMQP handshake timeout); the
//! connection then keeps its `rustls::ServerConnection` and drives it by hand over the
//! same non-blocking socket halves a plain connection uses, so both transports share one
//! main loop and the plain path pays nothing for TLS.

use std::io::{self, BufRead, Write};
use std::path::Path;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection};
use tokio::net::tcp::OwnedWriteHalf;

use crate::config::{CertLoginFrom, Tls, TlsVerify};

/// Why the TLS listener cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file is missing, unreadable or holds nothing usable.
    #[error("tls: {what} {path}: {why}")]
    File {
        /// Which setting.
        what: &'static str,
        /// The file.
        path: String,
        /// Why.
        why: String,
    },
    /// rustls refused the combination (key does not match the certificate, ...).
    #[error("tls: {0}")]
    Config(String),
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |why: String| TlsError::File {
        what,
        path: path.display().to_string(),
        why,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

/// Builds the listener's rustls configuration: TLS 1.2 and 1.3 only, the server's
/// cipher suite order, client certificates requested when `verify = "peer"` (and
/// required with `fail_if_no_peer_cert`).
///
/// # Errors
/// Unreadable or empty PEM files, a key that does not match, `verify = "peer"` without
/// a CA bundle.
pub fn server_config(tls: &Tls) -> Result<Arc<ServerConfig>, TlsError> {
    build(tls, tls.verify)
}

/// The same certificate for an HTTPS listener (the management API): no client
/// certificate is asked for, and ALPN offers HTTP/1.1.
///
/// # Errors
/// As [`server_config`].
pub fn http_server_config(tls: &Tls) -> Result<Arc<ServerConfig>, TlsError> {
    let mut config = Arc::unwrap_or_clone(build(tls, TlsVerify::None)?);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn build(tls: &Tls, verify: TlsVerify) -> Result<Arc<ServerConfig>, TlsError> {
    let (Some(cert), Some(key)) = (&tls.cert, &tls.key) else {
        return Err(TlsError::Config(
            "the TLS listener needs both a certificate chain and a key".into(),
        ));
    };
    let chain = read_certs("certificate", cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| TlsError::File {
        what: "key",
        path: key.display().to_string(),
        why: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match verify {
        TlsVerify::None => builder.with_no_client_auth(),
        TlsVerify::Peer => {
            let Some(ca) = &tls.ca else {
                return Err(TlsError::Config(
                    "verify = \"peer\" needs a CA bundle (tls.ca / --tls-ca)".into(),
                ));
            };
            let mut roots = RootCertStore::empty();
            for c in read_certs("CA bundle", ca)? {
                roots.add(c).map_err(|e| TlsError::File {
                    what: "CA bundle",
                    path: ca.display().to_string(),
                    why: e.to_string(),
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if tls.fail_if_no_peer_cert {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier
                .build()
                .map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    config.ignore_client_order = true;
    Ok(Arc::new(config))
}

/// When the listener's certificate (the first of the chain) stops being valid, as a
/// Unix time in seconds; `None` if it cannot be read.
pub fn certificate_not_after(tls: &Tls) -> Option<i64> {
    let chain = read_certs("certificate", tls.cert.as_ref()?).ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(chain.first()?.as_ref()).ok()?;
    Some(cert.validity().not_after.timestamp())
}

/// The user name SASL EXTERNAL takes from a client certificate (RabbitMQ's
/// `ssl_cert_login_from`): the subject's distinguished name in RFC 4514 form, most
/// significant last as OpenSSL's `-nameopt RFC2253` prints it, or its common name.
pub fn cert_login_name(der: &[u8], from: CertLoginFrom) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    match from {
        CertLoginFrom::CommonName => subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string),
        CertLoginFrom::DistinguishedName => {
            let rdns: Vec<String> = subject
                .iter()
                .map(|rdn| {
                    rdn.iter()
                        .map(|atv| {
                            let value = atv.as_str().map(escape_dn_value).unwrap_or_else(|_| {
                                let hex: String = atv
                                    .attr_value()
                                    .as_bytes()
                                    .iter()
                                    .map(|b| format!("{b:02x}"))
                                    .collect();
                                format!("#{hex}")
                            });
                            format!("{}={value}", attribute_name(atv.attr_type()))
                        })
                        .collect::<Vec<_>>()
                        .join("+")
                })
                .collect();
            Some(rdns.into_iter().rev().collect::<Vec<_>>().join(","))
        }
    }
}

fn attribute_name(oid: &x509_parser::der_parser::oid::Oid<'_>) -> String {
    match oid.to_id_string().as_str() {
        "2.5.4.3" => "CN".into(),
        "2.5.4.6" => "C".into(),
        "2.5.4.7" => "L".into(),
        "2.5.4.8" => "ST".into(),
        "2.5.4.9" => "STREET".into(),
        "2.5.4.10" => "O".into(),
        "2.5.4.11" => "OU".into(),
        "2.5.4.4" => "SN".into(),
        "2.5.4.5" => "serialNumber".into(),
        "2.5.4.12" => "title".into(),
        "2.5.4.42" => "GN".into(),
        "0.9.2342.19200300.100.1.25" => "DC".into(),
        "0.9.2342.19200300.100.1.1" => "UID".into(),
        "1.2.840.113549.1.9.1" => "emailAddress".into(),
        other => other.to_string(),
    }
}

/// RFC 4514 escaping of an attribute value.
fn escape_dn_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A TLS session after its handshake, driven over the connection's socket halves.
pub(crate) struct Session {
    conn: ServerConnection,
    /// Ciphertext read from the socket, not yet given to rustls.
    pub(crate) raw: BytesMut,
}

impl Session {
    pub(crate) fn new(conn: ServerConnection) -> Self {
        Session {
            conn,
            raw: BytesMut::with_capacity(512),
        }
    }

    /// Decrypts what `raw` holds into `plain`. Returns `true` when the client sent
    /// close_notify.
    pub(crate) fn decrypt(&mut self, plain: &mut BytesMut) -> io::Result<bool> {
        loop {
            if !self.raw.is_empty() {
                let n = self.conn.read_tls(&mut &self.raw[..])?;
                self.raw.advance(n);
            }
            let state = self
                .conn
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let mut reader = self.conn.reader();
            let mut closed = false;
            loop {
                match reader.fill_buf() {
                    Ok([]) => {
                        closed = true;
                        break;
                    }
                    Ok(chunk) => {
                        let n = chunk.len();
                        plain.extend_from_slice(chunk);
                        reader.consume(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            if closed || state.peer_has_closed() {
                return Ok(true);
            }
            if self.raw.is_empty() {
                return Ok(false);
            }
        }
    }

    /// Whether encrypted bytes wait for the socket.
    pub(crate) fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Encrypts `out` (as much as rustls buffers) and writes what the socket takes now.
    /// Returns whether anything was written.
    pub(crate) fn write_some(
        &mut self,
        wr: &OwnedWriteHalf,
        out: &mut BytesMut,
    ) -> io::Result<bool> {
        let mut wrote = false;
        loop {
            while self.conn.wants_write() {
                match self.conn.write_tls(&mut NonBlocking(wr)) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(_) => wrote = true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(wrote),
                    Err(e) => return Err(e),
                }
            }
            if out.is_empty() {
                return Ok(wrote);
            }
            let n = self.conn.writer().write(out)?;
            out.advance(n);
            if n == 0 && !self.conn.wants_write() {
                return Ok(wrote);
            }
        }
    }

    /// Sends what is left of `out`, then close_notify, waiting for the socket.
    pub(crate) async fn finish(&mut self, wr: &OwnedWriteHalf, out: &mut BytesMut) {
        let mut closed = false;
        loop {
            if out.is_empty() && !closed {
                self.conn.send_close_notify();
                closed = true;
            }
            if self.write_some(wr, out).is_err() {
                return;
            }
            if closed && !self.conn.wants_write() {
                return;
            }
            if wr.writable().await.is_err() {
                return;
            }
        }
    }
}

/// `io::Write` over a socket half's `try_write`: never waits.
struct NonBlocking<'a>(&'a OwnedWriteHalf);

impl Write for NonBlocking<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dn_values_are_escaped_as_rfc_4514_says() {
        assert_eq!(escape_dn_value("a,b"), "a\\,b");
        assert_eq!(escape_dn_value(" lead"), "\\ lead");
        assert_eq!(escape_dn_value("trail "), "trail\\ ");
        assert_eq!(escape_dn_value("#x"), "\\#x");
        assert_eq!(escape_dn_value("plain"), "plain");
    }
}
