//! SASL mechanisms: PLAIN and AMQPLAIN (checked against the users of the engine's
//! [`Access`]), EXTERNAL (the user named by a verified TLS client certificate, as
//! RabbitMQ's `rabbitmq_auth_mechanism_ssl`), and ANONYMOUS when
//! `auth.anonymous_login_user` is set (RabbitMQ 4's `anonymous_login_user`).

use std::net::IpAddr;

use amq_protocol::types::AMQPValue;
use warren_broker::access::Access;

use crate::config::Auth;

/// Where a client logs in from: its address and, on TLS, the certificate it presented
/// (DER), if any.
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a> {
    /// The client's address.
    pub ip: IpAddr,
    /// The client's TLS certificate (end entity), verified against the CA bundle.
    pub cert: Option<&'a [u8]>,
}

/// The mechanisms offered in connection.start, in order of preference: the configured
/// ones (`auth.mechanisms`), EXTERNAL only to a TLS client that presented a
/// certificate, ANONYMOUS only when `anonymous_login_user` is set.
pub fn mechanisms(auth: &Auth, peer: Peer<'_>) -> Vec<&'static str> {
    let mut m = Vec::new();
    for name in ["PLAIN", "AMQPLAIN", "EXTERNAL", "ANONYMOUS"] {
        let configured = auth.mechanisms.iter().any(|c| c == name);
        let offered = match name {
            "EXTERNAL" => configured && peer.cert.is_some(),
            "ANONYMOUS" => auth.anonymous_login_user.is_some(),
            _ => configured,
        };
        if offered {
            m.push(name);
        }
    }
    m
}

/// Why a login failed.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthError {
    /// A mechanism we do not offer (503).
    UnknownMechanism(String),
    /// The response could not be decoded (502).
    Malformed(&'static str),
    /// Wrong user or password, or a loopback-only user from elsewhere (403).
    Refused {
        /// The user name given.
        user: String,
        /// Detail for the log, never for the client.
        why: &'static str,
    },
}

/// Extracts `(user, password)` from a SASL response.
///
/// # Errors
/// Unknown mechanism or undecodable response.
pub fn credentials(mechanism: &str, response: &[u8]) -> Result<(String, String), AuthError> {
    match mechanism {
        "PLAIN" => {
            // [authzid] NUL authcid NUL passwd
            let mut parts = response.split(|b| *b == 0);
            let (Some(_authz), Some(user), Some(pass), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(AuthError::Malformed(
                    "PLAIN response is not authzid\\0user\\0password",
                ));
            };
            Ok((
                String::from_utf8_lossy(user).into_owned(),
                String::from_utf8_lossy(pass).into_owned(),
            ))
        }
        "AMQPLAIN" => {
            // A field table without its length prefix.
            let mut framed = Vec::with_capacity(response.len() + 4);
            framed.extend_from_slice(&(response.len() as u32).to_be_bytes());
            framed.extend_from_slice(response);
            let (_, table) = warren_codec::nesting::parse_field_table(framed.as_slice()).ok_or(
                AuthError::Malformed("AMQPLAIN response is not a field table"),
            )?;
            let text = |k: &str| match table.inner().get(k) {
                Some(AMQPValue::LongString(s)) => {
                    Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                }
                Some(AMQPValue::ShortString(s)) => Some(s.as_str().to_string()),
                _ => None,
            };
            match (text("LOGIN"), text("PASSWORD")) {
                (Some(u), Some(p)) => Ok((u, p)),
                _ => Err(AuthError::Malformed(
                    "AMQPLAIN response lacks LOGIN or PASSWORD",
                )),
            }
        }
        other => Err(AuthError::UnknownMechanism(other.to_string())),
    }
}

/// Checks a login. Returns the user name.
///
/// # Errors
/// See [`AuthError`].
pub fn authenticate(
    auth: &Auth,
    access: &Access,
    mechanism: &str,
    response: &[u8],
    peer: Peer<'_>,
) -> Result<String, AuthError> {
    if !mechanisms(auth, peer).contains(&mechanism) {
        return Err(AuthError::UnknownMechanism(mechanism.to_string()));
    }
    let user = match mechanism {
        // RabbitMQ 4: ANONYMOUS logs in as the configured user with its password; the
        // client's response (a trace string) is ignored.
        "ANONYMOUS" => {
            let user = auth.anonymous_login_user.clone().unwrap_or_default();
            let password = auth.anonymous_login_pass.clone().unwrap_or_default();
            check_password(access, user, &password)?
        }
        // rabbitmq_auth_mechanism_ssl: the user named by the verified certificate, which
        // must exist; no password is involved and the response is ignored.
        "EXTERNAL" => {
            let name = peer
                .cert
                .and_then(|der| crate::tls::cert_login_name(der, auth.ssl_cert_login_from))
                .ok_or(AuthError::Refused {
                    user: String::new(),
                    why: "no user name in the client certificate",
                })?;
            if access.user(&name).is_none() {
                return Err(AuthError::Refused {
                    user: name,
                    why: "user from the client certificate does not exist",
                });
            }
            name
        }
        _ => {
            let (user, password) = credentials(mechanism, response)?;
            check_password(access, user, &password)?
        }
    };
    if auth.loopback_users.contains(&user) && !is_loopback(peer.ip) {
        return Err(AuthError::Refused {
            user,
            why: "user can only log in via localhost",
        });
    }
    Ok(user)
}

fn check_password(access: &Access, user: String, password: &str) -> Result<String, AuthError> {
    match access.check_password(&user, password) {
        Ok(_) => Ok(user),
        Err(e) => Err(AuthError::Refused {
            user,
            why: e.reason(),
        }),
    }
}

/// Whether `ip` is a loopback address (IPv4-mapped IPv6 included), for
/// `loopback_users` on AMQP and HTTP alike.
pub fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::{generation::gen_field_table, FieldTable, LongString};
    use std::net::Ipv4Addr;

    fn local() -> Peer<'static> {
        Peer {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            cert: None,
        }
    }

    fn guest_access() -> Access {
        let a = Access::in_memory();
        a.add_user("guest", Some("guest"), &["administrator"])
            .unwrap();
        a
    }

    #[test]
    fn plain_and_amqplain() {
        let auth = Auth::default();
        let access = guest_access();
        let local = local();
        assert_eq!(
            authenticate(&auth, &access, "PLAIN", b"\0guest\0guest", local),
            Ok("guest".to_string())
        );
        assert!(matches!(
            authenticate(&auth, &access, "PLAIN", b"\0guest\0nope", local),
            Err(AuthError::Refused { .. })
        ));
        assert!(matches!(
            authenticate(&auth, &access, "PLAIN", b"guest", local),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            authenticate(&auth, &access, "CRAM-MD5", b"", local),
            Err(AuthError::UnknownMechanism(_))
        ));
        let mut t = FieldTable::default();
        t.insert(
            "LOGIN".into(),
            AMQPValue::LongString(LongString::from(b"guest".to_vec())),
        );
        t.insert(
            "PASSWORD".into(),
            AMQPValue::LongString(LongString::from(b"guest".to_vec())),
        );
        let buf = gen_field_table(&t)(amq_protocol::frame::WriteContext::from(Vec::new()))
            .unwrap()
            .write;
        assert_eq!(
            authenticate(&auth, &access, "AMQPLAIN", &buf[4..], local),
            Ok("guest".to_string())
        );
    }

    #[test]
    fn anonymous_only_when_configured() {
        let access = guest_access();
        let local = local();
        let mut auth = Auth::default();
        assert_eq!(mechanisms(&auth, local), ["PLAIN", "AMQPLAIN"]);
        assert!(matches!(
            authenticate(&auth, &access, "ANONYMOUS", b"", local),
            Err(AuthError::UnknownMechanism(_))
        ));
        auth.anonymous_login_user = Some("guest".into());
        auth.anonymous_login_pass = Some("guest".into());
        assert_eq!(mechanisms(&auth, local), ["PLAIN", "AMQPLAIN", "ANONYMOUS"]);
        assert_eq!(
            authenticate(&auth, &access, "ANONYMOUS", b"trace", local),
            Ok("guest".to_string())
        );
        auth.anonymous_login_pass = Some("wrong".into());
        assert!(matches!(
            authenticate(&auth, &access, "ANONYMOUS", b"", local),
            Err(AuthError::Refused { .. })
        ));
    }

    #[test]
    fn guest_only_from_loopback() {
        let auth = Auth::default();
        let access = guest_access();
        let remote = Peer {
            ip: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            cert: None,
        };
        assert!(matches!(
            authenticate(&auth, &access, "PLAIN", b"\0guest\0guest", remote),
            Err(AuthError::Refused { .. })
        ));
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn mechanisms_follow_the_configuration_and_the_transport() {
        let access = guest_access();
        let auth = Auth {
            mechanisms: vec!["AMQPLAIN".into(), "EXTERNAL".into()],
            ..Auth::default()
        };
        // PLAIN is not configured: refused as unknown, as RabbitMQ does.
        assert!(matches!(
            authenticate(&auth, &access, "PLAIN", b"\0guest\0guest", local()),
            Err(AuthError::UnknownMechanism(_))
        ));
        // EXTERNAL is offered only with a client certificate.
        assert_eq!(mechanisms(&auth, local()), ["AMQPLAIN"]);
        let with_cert = Peer {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            cert: Some(b"not a certificate"),
        };
        assert_eq!(mechanisms(&auth, with_cert), ["AMQPLAIN", "EXTERNAL"]);
        assert!(matches!(
            authenticate(&auth, &access, "EXTERNAL", b"", with_cert),
            Err(AuthError::Refused { .. })
        ));
    }
}
