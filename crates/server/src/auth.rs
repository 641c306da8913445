//! SASL PLAIN and AMQPLAIN, checked against the configured users.

use std::net::IpAddr;

use amq_protocol::types::{parsing::parse_field_table, AMQPValue};

use crate::config::Auth;

/// Mechanisms offered in connection.start, in order of preference.
pub const MECHANISMS: &str = "PLAIN AMQPLAIN";

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
            let (_, table) = parse_field_table(framed.as_slice())
                .map_err(|_| AuthError::Malformed("AMQPLAIN response is not a field table"))?;
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
    mechanism: &str,
    response: &[u8],
    peer: IpAddr,
) -> Result<String, AuthError> {
    let (user, password) = credentials(mechanism, response)?;
    let Some(known) = auth.users.iter().find(|u| u.name == user) else {
        return Err(AuthError::Refused {
            user,
            why: "unknown user",
        });
    };
    if known.password != password {
        return Err(AuthError::Refused {
            user,
            why: "invalid credentials",
        });
    }
    if auth.loopback_users.contains(&user) && !is_loopback(peer) {
        return Err(AuthError::Refused {
            user,
            why: "user can only log in via localhost",
        });
    }
    Ok(user)
}

fn is_loopback(ip: IpAddr) -> bool {
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

    #[test]
    fn plain_and_amqplain() {
        let auth = Auth::default();
        let local = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(
            authenticate(&auth, "PLAIN", b"\0guest\0guest", local),
            Ok("guest".to_string())
        );
        assert!(matches!(
            authenticate(&auth, "PLAIN", b"\0guest\0nope", local),
            Err(AuthError::Refused { .. })
        ));
        assert!(matches!(
            authenticate(&auth, "PLAIN", b"guest", local),
            Err(AuthError::Malformed(_))
        ));
        assert!(matches!(
            authenticate(&auth, "CRAM-MD5", b"", local),
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
            authenticate(&auth, "AMQPLAIN", &buf[4..], local),
            Ok("guest".to_string())
        );
    }

    #[test]
    fn guest_only_from_loopback() {
        let auth = Auth::default();
        let remote = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
        assert!(matches!(
            authenticate(&auth, "PLAIN", b"\0guest\0guest", remote),
            Err(AuthError::Refused { .. })
        ));
        assert!(is_loopback("::ffff:127.0.0.1".parse().unwrap()));
    }
}
