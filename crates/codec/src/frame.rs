//! Reading frames from a byte stream.
//!
//! AMQP 0-9-1, General Frame Format: `type:u8 channel:u16 size:u32 payload[size] 0xCE`.
//! The 7-byte header is inspected first and the declared size is checked against the
//! negotiated `frame_max` before any payload is buffered, so a peer that claims a 4 GiB
//! frame costs us 7 bytes, not 4 GiB. amq-protocol's streaming parser does not check this.

use amq_protocol::protocol::{basic, parse_class, AMQPClass};
use bytes::{Buf, Bytes, BytesMut};

use crate::error::{erlang_binary, AmqpError};
use crate::methods;

/// The protocol header a 0-9-1 client sends first.
pub const PROTOCOL_HEADER: [u8; 8] = *b"AMQP\x00\x00\x09\x01";
/// Frame types (AMQP 0-9-1 constants).
pub const FRAME_METHOD: u8 = 1;
/// Content header frame type.
pub const FRAME_HEADER: u8 = 2;
/// Content body frame type.
pub const FRAME_BODY: u8 = 3;
/// Heartbeat frame type.
pub const FRAME_HEARTBEAT: u8 = 8;
/// The frame-end octet.
pub const FRAME_END: u8 = 0xCE;
/// Header (7) plus frame-end (1).
pub const FRAME_OVERHEAD: usize = 8;
/// The most a partial frame makes the decoder reserve ahead of the bytes arriving.
const RESERVE_AHEAD: usize = 1 << 20;

/// One decoded frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A method frame.
    Method {
        /// Channel number.
        channel: u16,
        /// The decoded method.
        method: Box<AMQPClass>,
    },
    /// A content header frame. `properties` holds the raw property flags and list,
    /// forwarded verbatim to consumers so every field keeps its exact wire type.
    Header {
        /// Channel number.
        channel: u16,
        /// Class of the content (60 for basic).
        class_id: u16,
        /// Total body size announced.
        body_size: u64,
        /// Raw property flags + property list.
        properties: Bytes,
    },
    /// A content body frame; the payload is a slice of the read buffer, not a copy.
    Body {
        /// Channel number.
        channel: u16,
        /// Body bytes.
        payload: Bytes,
    },
    /// A heartbeat (valid only on channel 0).
    Heartbeat {
        /// Channel number.
        channel: u16,
    },
}

impl Frame {
    /// The channel the frame belongs to.
    pub fn channel(&self) -> u16 {
        match self {
            Frame::Method { channel, .. }
            | Frame::Header { channel, .. }
            | Frame::Body { channel, .. }
            | Frame::Heartbeat { channel } => *channel,
        }
    }
}

/// Decodes frames, enforcing a maximum frame size.
#[derive(Debug, Clone, Copy)]
pub struct FrameDecoder {
    frame_max: u32,
}

impl FrameDecoder {
    /// A decoder accepting frames up to `frame_max` bytes (0 means the protocol maximum).
    pub fn new(frame_max: u32) -> Self {
        FrameDecoder { frame_max }
    }

    /// Changes the limit, after tune-ok.
    pub fn set_frame_max(&mut self, frame_max: u32) {
        self.frame_max = frame_max;
    }

    /// The current limit.
    pub fn frame_max(&self) -> u32 {
        self.frame_max
    }

    /// Takes one frame from the front of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` does not yet hold a whole frame; the bytes stay in
    /// `buf`. A frame whose declared size exceeds the limit is an error as soon as its
    /// 7-byte header is visible.
    ///
    /// # Errors
    /// 501 FRAME_ERROR for an oversized frame, a bad frame-end octet, an unknown frame type
    /// or undecodable method arguments; 503 COMMAND_INVALID for an unknown class or method.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Frame>, AmqpError> {
        if buf.len() < 7 {
            return Ok(None);
        }
        let frame_type = buf[0];
        let channel = u16::from_be_bytes([buf[1], buf[2]]);
        let size = u32::from_be_bytes([buf[3], buf[4], buf[5], buf[6]]);
        if !matches!(
            frame_type,
            FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
        ) {
            return Err(AmqpError::frame_error(format!(
                "unknown frame type {frame_type}"
            )));
        }
        // RabbitMQ allows frame_max minus the 8 bytes of framing, plus an 8-byte fudge.
        if self.frame_max != 0 && size > self.frame_max {
            return Err(AmqpError::frame_error(format!(
                "type {frame_type}, frame size {size} is larger than negotiated frame_max {}",
                self.frame_max
            )));
        }
        let total = 7 + size as usize + 1;
        if buf.len() < total {
            // Room for the rest of the frame, but at most RESERVE_AHEAD before it arrives:
            // with frame_max 0 (no limit) a 7-byte header may claim 4 GiB.
            buf.reserve((total - buf.len()).min(RESERVE_AHEAD));
            return Ok(None);
        }
        if buf[total - 1] != FRAME_END {
            return Err(AmqpError::frame_error(format!(
                "type {frame_type}, invalid frame end marker 0x{:02x}",
                buf[total - 1]
            )));
        }
        buf.advance(7);
        let payload = buf.split_to(size as usize).freeze();
        buf.advance(1);
        // RabbitMQ (rabbit_reader): a heartbeat carries no payload, and content frames
        // and heartbeats have their own channels; its texts quote the payload.
        let octets = || erlang_binary(&payload);
        match (frame_type, channel) {
            (FRAME_HEARTBEAT, _) if !payload.is_empty() => {
                return Err(AmqpError::frame_error(format!(
                    "type {frame_type}, all octets = {}: unknown_frame",
                    octets()
                )))
            }
            (FRAME_HEARTBEAT, 1..) | (FRAME_HEADER | FRAME_BODY, 0) => {
                return Err(AmqpError::unexpected_frame(format!(
                    "type {frame_type}, all octets = {}",
                    octets()
                )))
            }
            _ => {}
        }
        match frame_type {
            FRAME_METHOD => decode_method(channel, &payload).map(Some),
            FRAME_HEADER => decode_header(channel, payload).map(Some),
            FRAME_BODY => Ok(Some(Frame::Body { channel, payload })),
            _ => Ok(Some(Frame::Heartbeat { channel })),
        }
    }
}

fn decode_method(channel: u16, payload: &[u8]) -> Result<Frame, AmqpError> {
    if payload.len() < 4 {
        return Err(AmqpError::frame_error("method frame too short"));
    }
    let class_id = u16::from_be_bytes([payload[0], payload[1]]);
    let method_id = u16::from_be_bytes([payload[2], payload[3]]);
    if !methods::is_known(class_id, method_id) {
        // RabbitMQ closes the socket without a connection.close here.
        return Err(AmqpError::command_invalid(format!(
            "unknown method (class {class_id}, method {method_id})"
        ))
        .with_method(class_id, method_id)
        .silently());
    }
    // amq-protocol drops basic.qos prefetch-size on parse; RabbitMQ refuses a non-zero
    // value with 540, so read it from the raw arguments here.
    if (class_id, method_id) == (60, 10) && payload.len() >= 8 {
        let size = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
        if size != 0 {
            return Err(
                AmqpError::not_implemented(format!("prefetch_size!=0 ({size})"))
                    .with_method(class_id, method_id),
            );
        }
    }
    // The methods of every message (basic.publish in, basic.ack back) skip amq-protocol's
    // general nom parser, which costs several times the rest of the publish path; the
    // result is the same value (a test compares them on valid and broken input).
    let fast = match (class_id, method_id) {
        (60, 40) => Some(parse_publish(&payload[4..])),
        (60, 80) => Some(parse_ack(&payload[4..])),
        _ => None,
    };
    // amq-protocol's parser recurses once per nested table or array: measure first.
    if fast.is_none() && crate::nesting::method_too_deep(class_id, method_id, &payload[4..]) {
        return Err(AmqpError::frame_error(format!(
            "field table nested deeper than {} levels in method {}",
            crate::nesting::MAX_NESTING,
            methods::name(class_id, method_id)
        ))
        .with_method(class_id, method_id));
    }
    let parsed = match fast {
        Some(m) => m,
        None => parse_class(payload).ok().map(|(_rest, method)| method),
    };
    match parsed {
        Some(method) => Ok(Frame::Method {
            channel,
            method: Box::new(method),
        }),
        None => Err(AmqpError::frame_error(format!(
            "cannot decode arguments of method {}",
            methods::name(class_id, method_id)
        ))
        .with_method(class_id, method_id)),
    }
}

/// A short string: length octet, then that many bytes of UTF-8.
fn short_str(args: &[u8]) -> Option<(&str, &[u8])> {
    let (&len, rest) = args.split_first()?;
    let len = usize::from(len);
    if rest.len() < len {
        return None;
    }
    let (text, rest) = rest.split_at(len);
    Some((std::str::from_utf8(text).ok()?, rest))
}

/// `basic.publish` arguments: reserved short, exchange, routing key, bit flags.
fn parse_publish(args: &[u8]) -> Option<AMQPClass> {
    let args = args.get(2..)?;
    let (exchange, args) = short_str(args)?;
    let (routing_key, args) = short_str(args)?;
    let flags = *args.first()?;
    Some(AMQPClass::Basic(basic::AMQPMethod::Publish(
        basic::Publish {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            mandatory: flags & 1 != 0,
            immediate: flags & 2 != 0,
        },
    )))
}

/// `basic.ack` arguments: delivery tag, bit flags.
fn parse_ack(args: &[u8]) -> Option<AMQPClass> {
    let tag: [u8; 8] = args.get(..8)?.try_into().ok()?;
    let flags = *args.get(8)?;
    Some(AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
        delivery_tag: u64::from_be_bytes(tag),
        multiple: flags & 1 != 0,
    })))
}

fn decode_header(channel: u16, payload: Bytes) -> Result<Frame, AmqpError> {
    // class-id:u16 weight:u16 body-size:u64 property-flags... property-list...
    if payload.len() < 14 {
        return Err(AmqpError::frame_error("content header frame too short"));
    }
    let class_id = u16::from_be_bytes([payload[0], payload[1]]);
    let mut size = [0u8; 8];
    size.copy_from_slice(&payload[4..12]);
    let body_size = u64::from_be_bytes(size);
    let properties = payload.slice(12..);
    Ok(Frame::Header {
        channel,
        class_id,
        body_size,
        properties,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode;
    use amq_protocol::protocol::{basic, channel};

    fn method(m: AMQPClass) -> BytesMut {
        let mut b = BytesMut::new();
        encode::method(&mut b, 3, &m);
        b
    }

    #[test]
    fn method_round_trip_and_partial_input() {
        let m = AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "ex".into(),
            routing_key: "rk".into(),
            mandatory: true,
            immediate: false,
        }));
        let full = method(m.clone());
        let dec = FrameDecoder::new(4096);
        // Byte at a time: nothing until the last byte arrives.
        let mut buf = BytesMut::new();
        for (i, b) in full.iter().enumerate() {
            buf.extend_from_slice(&[*b]);
            let r = dec.decode(&mut buf).unwrap();
            if i + 1 < full.len() {
                assert!(r.is_none());
            } else {
                assert_eq!(
                    r,
                    Some(Frame::Method {
                        channel: 3,
                        method: Box::new(m.clone())
                    })
                );
            }
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn oversize_frame_rejected_from_header_alone() {
        // A frame claiming 4 GiB: only its 7 header bytes are present.
        let mut buf = BytesMut::from(&[1u8, 0, 1, 0xFF, 0xFF, 0xFF, 0xFF][..]);
        let err = FrameDecoder::new(131_072).decode(&mut buf).unwrap_err();
        assert_eq!(err.code.code(), 501);
    }

    #[test]
    fn bad_frame_end_and_unknown_type() {
        let mut buf = method(AMQPClass::Channel(channel::AMQPMethod::Open(
            channel::Open {},
        )));
        let last = buf.len() - 1;
        buf[last] = 0;
        assert_eq!(
            FrameDecoder::new(4096)
                .decode(&mut buf)
                .unwrap_err()
                .code
                .code(),
            501
        );
        let mut buf = BytesMut::from(&[9u8, 0, 0, 0, 0, 0, 0, 0xCE][..]);
        assert_eq!(
            FrameDecoder::new(4096)
                .decode(&mut buf)
                .unwrap_err()
                .code
                .code(),
            501
        );
    }

    #[test]
    fn unknown_method_is_503_and_garbage_args_501() {
        let mut buf = BytesMut::from(&[1u8, 0, 1, 0, 0, 0, 4, 0, 60, 0, 99, 0xCE][..]);
        let e = FrameDecoder::new(4096).decode(&mut buf).unwrap_err();
        assert_eq!(e.code.code(), 503);
        assert_eq!((e.class_id, e.method_id), (60, 99));
        // basic.publish with a truncated argument list.
        let mut buf = BytesMut::from(&[1u8, 0, 1, 0, 0, 0, 6, 0, 60, 0, 40, 0, 0, 0xCE][..]);
        let e = FrameDecoder::new(4096).decode(&mut buf).unwrap_err();
        assert_eq!(e.code.code(), 501);
    }

    /// The hand-written parsers give what amq-protocol's parser gives, for valid
    /// arguments, truncated ones, bad UTF-8 and trailing bytes.
    #[test]
    fn fast_paths_match_amq_protocol() {
        let mut cases: Vec<Vec<u8>> = Vec::new();
        for (ex, rk, flags) in [
            ("", "q", 0u8),
            ("amq.direct", "a.b.c", 1),
            ("x", "", 2),
            ("ex", "k", 3),
            ("ex", "k", 0xfc),
        ] {
            let mut a = vec![0, 60, 0, 40, 0, 0, ex.len() as u8];
            a.extend_from_slice(ex.as_bytes());
            a.push(rk.len() as u8);
            a.extend_from_slice(rk.as_bytes());
            a.push(flags);
            cases.push(a);
        }
        for (tag, flags) in [(0u64, 0u8), (1, 1), (u64::MAX, 0), (42, 0xff)] {
            let mut a = vec![0, 60, 0, 80];
            a.extend_from_slice(&tag.to_be_bytes());
            a.push(flags);
            cases.push(a);
        }
        // Invalid UTF-8 in the exchange name.
        cases.push(vec![0, 60, 0, 40, 0, 0, 2, 0xff, 0xfe, 0, 0]);
        // Every truncation, and one trailing byte, of every valid case.
        for c in cases.clone() {
            for n in 4..c.len() {
                cases.push(c[..n].to_vec());
            }
            let mut longer = c.clone();
            longer.push(7);
            cases.push(longer);
        }
        for payload in cases {
            let ours = decode_method(1, &payload).ok();
            let theirs = parse_class(&payload[..]).ok().map(|(_, m)| Frame::Method {
                channel: 1,
                method: Box::new(m),
            });
            assert_eq!(ours, theirs, "payload {payload:?}");
        }
    }

    #[test]
    fn qos_prefetch_size_is_540() {
        let mut buf = BytesMut::from(
            &[
                1u8, 0, 1, 0, 0, 0, 11, 0, 60, 0, 10, 0, 0, 0, 1, 0, 5, 0, 0xCE,
            ][..],
        );
        let e = FrameDecoder::new(4096).decode(&mut buf).unwrap_err();
        assert_eq!(e.code.code(), 540);
        assert_eq!(e.text, "NOT_IMPLEMENTED - prefetch_size!=0 (1)");
    }

    #[test]
    fn body_is_sliced_and_header_kept_raw() {
        let mut buf = BytesMut::new();
        let props = [0x80u8, 0x00, 4, b't', b'e', b'x', b't'];
        encode::content(&mut buf, 1, &props, b"hello world", 4096);
        let dec = FrameDecoder::new(4096);
        match dec.decode(&mut buf).unwrap().unwrap() {
            Frame::Header {
                class_id,
                body_size,
                properties,
                ..
            } => {
                assert_eq!(class_id, 60);
                assert_eq!(body_size, 11);
                assert_eq!(&properties[..], &props[..]);
            }
            f => panic!("unexpected {f:?}"),
        }
        assert_eq!(
            dec.decode(&mut buf).unwrap().unwrap(),
            Frame::Body {
                channel: 1,
                payload: Bytes::from_static(b"hello world")
            }
        );
    }

    #[test]
    fn random_bytes_never_panic() {
        // A small deterministic generator; the decoder must return errors, not panic.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let dec = FrameDecoder::new(4096);
        for _ in 0..2000 {
            let mut buf = BytesMut::new();
            let n = (x % 64) as usize;
            for _ in 0..n {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.extend_from_slice(&[(x & 0xff) as u8]);
            }
            // Often make it look like a method frame to reach the method parser.
            if n > 8 && x.is_multiple_of(2) {
                buf[0] = 1;
                let size = (n - 8) as u32;
                buf[3..7].copy_from_slice(&size.to_be_bytes());
                buf[n - 1] = FRAME_END;
            }
            while let Ok(Some(_)) = dec.decode(&mut buf) {}
        }
    }
}
