//! A minimal AMQP 0-9-1 client that only opens a connection (and optionally one channel),
//! holds it and closes it. It is used where the thing measured is the connection itself:
//! the start-up probe (the first moment `connection.open-ok` arrives) and idle-connection
//! memory. lapin would do, but it runs one OS thread per connection; a task per
//! connection keeps 1,000 idle connections cheap on the client side.
//!
//! Frames are read and written with Warren's own codec (`warren_codec`), which decodes
//! both directions of the protocol.

use std::time::Duration;

use amq_protocol::protocol::{channel, connection, AMQPClass};
use amq_protocol::types::{AMQPValue, FieldTable, LongString, ShortString};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use warren_codec::{encode, Frame, FrameDecoder, PROTOCOL_HEADER};

use crate::error::PerfError;

/// Where and as whom to connect, taken from an `amqp://` URI.
#[derive(Debug, Clone)]
pub struct Target {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// User name.
    pub user: String,
    /// Password.
    pub password: String,
    /// Virtual host.
    pub vhost: String,
}

impl Target {
    /// Parses an `amqp://user:pass@host:port/vhost` URI (lapin's parser).
    ///
    /// # Errors
    /// [`PerfError::Uri`] if it does not parse.
    pub fn parse(uri: &str) -> Result<Self, PerfError> {
        let parsed: lapin::uri::AMQPUri = uri.parse().map_err(|reason| PerfError::Uri {
            uri: uri.to_string(),
            reason,
        })?;
        Ok(Target {
            host: parsed.authority.host,
            port: parsed.authority.port,
            user: parsed.authority.userinfo.username,
            password: parsed.authority.userinfo.password,
            vhost: parsed.vhost,
        })
    }
}

/// An open connection.
#[derive(Debug)]
pub struct RawConnection {
    pub(crate) stream: TcpStream,
    /// Bytes read but not yet decoded.
    pub(crate) buf: BytesMut,
    pub(crate) decoder: FrameDecoder,
    /// Heartbeat interval agreed in tune-ok (the server's proposal), seconds.
    pub(crate) heartbeat: u16,
    /// frame_max agreed in tune-ok (0: no limit).
    pub(crate) frame_max: u32,
}

fn short(s: &str) -> ShortString {
    ShortString::from(s)
}

impl RawConnection {
    /// Connects, runs the handshake up to `connection.open-ok` and, if `with_channel`,
    /// opens channel 1.
    ///
    /// # Errors
    /// Socket errors, a refused login (the broker closes the connection) or an
    /// unexpected reply.
    pub async fn open(target: &Target, with_channel: bool) -> Result<Self, PerfError> {
        let stream = TcpStream::connect((target.host.as_str(), target.port))
            .await
            .map_err(PerfError::io("TCP connect"))?;
        stream
            .set_nodelay(true)
            .map_err(PerfError::io("TCP_NODELAY"))?;
        let mut c = RawConnection {
            stream,
            buf: BytesMut::with_capacity(4096),
            // No limit until tune: the server's connection.start is small anyway.
            decoder: FrameDecoder::new(0),
            heartbeat: 0,
            frame_max: 0,
        };
        c.stream
            .write_all(&PROTOCOL_HEADER)
            .await
            .map_err(PerfError::io("write protocol header"))?;
        match c.next_method().await? {
            (0, AMQPClass::Connection(connection::AMQPMethod::Start(_))) => {}
            other => return Err(unexpected("connection.start", &other)),
        }
        let mut caps = FieldTable::default();
        caps.insert(short("consumer_cancel_notify"), AMQPValue::Boolean(true));
        caps.insert(
            short("authentication_failure_close"),
            AMQPValue::Boolean(true),
        );
        let mut props = FieldTable::default();
        props.insert(
            short("product"),
            AMQPValue::LongString("warren-perf".into()),
        );
        props.insert(short("capabilities"), AMQPValue::FieldTable(caps));
        let response = format!("\0{}\0{}", target.user, target.password);
        c.send_method(
            0,
            &AMQPClass::Connection(connection::AMQPMethod::StartOk(connection::StartOk {
                client_properties: props,
                mechanism: short("PLAIN"),
                response: LongString::from(response),
                locale: short("en_US"),
            })),
        )
        .await?;
        let tune = match c.next_method().await? {
            (0, AMQPClass::Connection(connection::AMQPMethod::Tune(t))) => t,
            other => return Err(unexpected("connection.tune", &other)),
        };
        c.heartbeat = tune.heartbeat;
        c.frame_max = tune.frame_max;
        c.decoder.set_frame_max(tune.frame_max);
        c.send_method(
            0,
            &AMQPClass::Connection(connection::AMQPMethod::TuneOk(connection::TuneOk {
                channel_max: tune.channel_max,
                frame_max: tune.frame_max,
                heartbeat: tune.heartbeat,
            })),
        )
        .await?;
        c.send_method(
            0,
            &AMQPClass::Connection(connection::AMQPMethod::Open(connection::Open {
                virtual_host: short(&target.vhost),
            })),
        )
        .await?;
        match c.next_method().await? {
            (0, AMQPClass::Connection(connection::AMQPMethod::OpenOk(_))) => {}
            other => return Err(unexpected("connection.open-ok", &other)),
        }
        if with_channel {
            c.send_method(
                1,
                &AMQPClass::Channel(channel::AMQPMethod::Open(channel::Open {})),
            )
            .await?;
            match c.next_method().await? {
                (1, AMQPClass::Channel(channel::AMQPMethod::OpenOk(_))) => {}
                other => return Err(unexpected("channel.open-ok", &other)),
            }
        }
        Ok(c)
    }

    pub(crate) async fn send_method(
        &mut self,
        channel: u16,
        method: &AMQPClass,
    ) -> Result<(), PerfError> {
        let mut out = BytesMut::with_capacity(256);
        encode::method(&mut out, channel, method);
        self.stream
            .write_all(&out)
            .await
            .map_err(PerfError::io("socket write"))
    }

    /// The next frame; `None` when the broker closed the socket.
    pub(crate) async fn next_frame(&mut self) -> Result<Option<Frame>, PerfError> {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(f)) => return Ok(Some(f)),
                Ok(None) => {}
                Err(e) => return Err(PerfError::Protocol(format!("undecodable frame: {e}"))),
            }
            let n = self
                .stream
                .read_buf(&mut self.buf)
                .await
                .map_err(PerfError::io("socket read"))?;
            if n == 0 {
                return Ok(None);
            }
        }
    }

    /// The next method frame, skipping heartbeats.
    pub(crate) async fn next_method(&mut self) -> Result<(u16, AMQPClass), PerfError> {
        loop {
            match self.next_frame().await? {
                Some(Frame::Method { channel, method }) => return Ok((channel, *method)),
                Some(Frame::Heartbeat { .. }) => continue,
                Some(other) => {
                    return Err(PerfError::Protocol(format!(
                        "expected a method frame, got {other:?}"
                    )))
                }
                None => {
                    return Err(PerfError::Protocol(
                        "the broker closed the socket during the handshake".into(),
                    ))
                }
            }
        }
    }

    /// Keeps the connection open, answering nothing but sending heartbeats at the agreed
    /// interval, until `stop` turns true; then closes it politely (connection.close, wait
    /// up to 5 s for close-ok).
    ///
    /// # Errors
    /// The broker closed the connection while it was held.
    pub async fn hold(mut self, mut stop: watch::Receiver<bool>) -> Result<(), PerfError> {
        let beat = Duration::from_secs(u64::from(self.heartbeat.max(1)));
        let mut ticker = tokio::time::interval(beat / 2);
        ticker.tick().await;
        loop {
            if *stop.borrow() {
                break;
            }
            tokio::select! {
                _ = stop.changed() => break,
                _ = ticker.tick(), if self.heartbeat > 0 => {
                    let mut out = BytesMut::with_capacity(8);
                    encode::heartbeat(&mut out);
                    self.stream.write_all(&out).await.map_err(PerfError::io("heartbeat"))?;
                }
                f = self.next_frame() => match f? {
                    Some(Frame::Method { method, .. })
                        if matches!(*method, AMQPClass::Connection(connection::AMQPMethod::Close(_))) =>
                    {
                        return Err(PerfError::Protocol(format!("broker closed the connection: {method:?}")));
                    }
                    Some(_) => {}
                    None => return Err(PerfError::Protocol("broker closed the socket".into())),
                },
            }
        }
        self.close().await
    }

    /// Sends connection.close and waits up to 5 s for close-ok.
    ///
    /// # Errors
    /// Socket errors or a timeout.
    pub async fn close(self) -> Result<(), PerfError> {
        self.close_within(Duration::from_secs(5)).await
    }

    /// Sends connection.close and waits up to `wait` for close-ok.
    ///
    /// # Errors
    /// Socket errors or a timeout.
    pub async fn close_within(mut self, wait: Duration) -> Result<(), PerfError> {
        self.send_method(
            0,
            &AMQPClass::Connection(connection::AMQPMethod::Close(connection::Close {
                reply_code: 200,
                reply_text: short("OK"),
                class_id: 0,
                method_id: 0,
            })),
        )
        .await?;
        let until_close_ok = async {
            loop {
                match self.next_frame().await? {
                    Some(Frame::Method { method, .. })
                        if matches!(
                            *method,
                            AMQPClass::Connection(connection::AMQPMethod::CloseOk(_))
                        ) =>
                    {
                        return Ok(())
                    }
                    Some(_) => continue,
                    None => return Ok(()),
                }
            }
        };
        tokio::time::timeout(wait, until_close_ok)
            .await
            .map_err(|_| PerfError::Timeout("connection.close-ok".into()))?
    }
}

pub(crate) fn unexpected(wanted: &str, got: &(u16, AMQPClass)) -> PerfError {
    PerfError::Protocol(format!(
        "expected {wanted}, got {:?} on channel {}",
        got.1, got.0
    ))
}
