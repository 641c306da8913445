//! Writing frames into an output buffer.
//!
//! Methods are serialised by amq-protocol. The hot path (`basic.deliver`, content
//! header and body frames) is written by hand: the header carries the publisher's raw
//! property bytes unchanged, and bodies are split by `frame_max` here.

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::{gen_class, AMQPClass};
use bytes::{BufMut, BytesMut};

use crate::frame::{
    FRAME_BODY, FRAME_END, FRAME_HEADER, FRAME_HEARTBEAT, FRAME_METHOD, FRAME_OVERHEAD,
};

/// Appends a method frame.
pub fn method(out: &mut BytesMut, channel: u16, method: &AMQPClass) {
    let payload: Vec<u8> = Vec::with_capacity(64);
    // Serialising into a growable Vec cannot run out of room (amq-protocol only fails
    // with BufferTooSmall on fixed slices); on any other failure nothing is written.
    let written = gen_class(method)(WriteContext::from(payload));
    if let Ok(ctx) = written {
        let payload = ctx.write;
        frame_header(out, FRAME_METHOD, channel, payload.len());
        out.extend_from_slice(&payload);
        out.put_u8(FRAME_END);
    }
}

/// Appends a heartbeat frame on channel 0.
pub fn heartbeat(out: &mut BytesMut) {
    out.extend_from_slice(&[FRAME_HEARTBEAT, 0, 0, 0, 0, 0, 0, FRAME_END]);
}

fn short_str(out: &mut BytesMut, s: &str) {
    // Short strings are at most 255 bytes; names are validated on the way in.
    let b = s.as_bytes();
    let n = b.len().min(255);
    out.put_u8(n as u8);
    out.extend_from_slice(&b[..n]);
}

fn frame_header(out: &mut BytesMut, kind: u8, channel: u16, size: usize) {
    out.put_u8(kind);
    out.put_u16(channel);
    out.put_u32(size as u32);
}

/// Appends a `basic.deliver` method frame.
pub fn deliver(
    out: &mut BytesMut,
    channel: u16,
    consumer_tag: &str,
    delivery_tag: u64,
    redelivered: bool,
    exchange: &str,
    routing_key: &str,
) {
    let size = 4
        + 1
        + consumer_tag.len().min(255)
        + 8
        + 1
        + 1
        + exchange.len().min(255)
        + 1
        + routing_key.len().min(255);
    frame_header(out, FRAME_METHOD, channel, size);
    out.put_u16(60);
    out.put_u16(60);
    short_str(out, consumer_tag);
    out.put_u64(delivery_tag);
    out.put_u8(u8::from(redelivered));
    short_str(out, exchange);
    short_str(out, routing_key);
    out.put_u8(FRAME_END);
}

/// Appends a `basic.get-ok` method frame.
pub fn get_ok(
    out: &mut BytesMut,
    channel: u16,
    delivery_tag: u64,
    redelivered: bool,
    exchange: &str,
    routing_key: &str,
    message_count: u32,
) {
    let size = 4 + 8 + 1 + 1 + exchange.len().min(255) + 1 + routing_key.len().min(255) + 4;
    frame_header(out, FRAME_METHOD, channel, size);
    out.put_u16(60);
    out.put_u16(71);
    out.put_u64(delivery_tag);
    out.put_u8(u8::from(redelivered));
    short_str(out, exchange);
    short_str(out, routing_key);
    out.put_u32(message_count);
    out.put_u8(FRAME_END);
}

/// Appends a `basic.return` method frame.
pub fn basic_return(
    out: &mut BytesMut,
    channel: u16,
    reply_code: u16,
    reply_text: &str,
    exchange: &str,
    routing_key: &str,
) {
    let size = 4
        + 2
        + 1
        + reply_text.len().min(255)
        + 1
        + exchange.len().min(255)
        + 1
        + routing_key.len().min(255);
    frame_header(out, FRAME_METHOD, channel, size);
    out.put_u16(60);
    out.put_u16(50);
    out.put_u16(reply_code);
    short_str(out, reply_text);
    short_str(out, exchange);
    short_str(out, routing_key);
    out.put_u8(FRAME_END);
}

/// Appends a content header frame (class basic) and the body frames, each body frame
/// at most `frame_max` bytes long including framing. An empty body sends no body frame.
pub fn content(out: &mut BytesMut, channel: u16, properties: &[u8], body: &[u8], frame_max: u32) {
    let header_size = 12 + properties.len();
    out.reserve(FRAME_OVERHEAD + header_size + body.len() + FRAME_OVERHEAD);
    frame_header(out, FRAME_HEADER, channel, header_size);
    out.put_u16(60);
    out.put_u16(0);
    out.put_u64(body.len() as u64);
    out.extend_from_slice(properties);
    out.put_u8(FRAME_END);
    let chunk = (frame_max as usize).saturating_sub(FRAME_OVERHEAD).max(1);
    for part in body.chunks(chunk) {
        frame_header(out, FRAME_BODY, channel, part.len());
        out.extend_from_slice(part);
        out.put_u8(FRAME_END);
    }
}

/// Raw property bytes for "no properties set" (flags word 0).
pub const EMPTY_PROPERTIES: [u8; 2] = [0, 0];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{Frame, FrameDecoder};
    use amq_protocol::protocol::basic;
    use bytes::Bytes;

    #[test]
    fn body_split_by_frame_max() {
        let body = vec![7u8; 10_000];
        let mut out = BytesMut::new();
        content(&mut out, 2, &EMPTY_PROPERTIES, &body, 4096);
        let dec = FrameDecoder::new(4096);
        let mut sizes = vec![];
        let mut total = 0;
        while let Some(f) = dec.decode(&mut out).unwrap() {
            if let Frame::Body { payload, .. } = f {
                assert!(payload.len() <= 4096 - 8);
                total += payload.len();
                sizes.push(payload.len());
            }
        }
        assert_eq!(total, 10_000);
        assert_eq!(sizes.len(), 3);
    }

    #[test]
    fn empty_body_sends_header_only() {
        let mut out = BytesMut::new();
        content(&mut out, 1, &EMPTY_PROPERTIES, b"", 4096);
        let dec = FrameDecoder::new(4096);
        assert!(matches!(
            dec.decode(&mut out).unwrap(),
            Some(Frame::Header { body_size: 0, .. })
        ));
        assert!(out.is_empty());
    }

    #[test]
    fn hand_written_deliver_parses_with_amq_protocol() {
        let mut out = BytesMut::new();
        deliver(&mut out, 5, "ctag", 42, true, "ex", "rk");
        get_ok(&mut out, 5, 43, false, "", "q", 7);
        basic_return(&mut out, 5, 312, "NO_ROUTE", "ex", "rk");
        let dec = FrameDecoder::new(4096);
        let expect = [
            basic::AMQPMethod::Deliver(basic::Deliver {
                consumer_tag: "ctag".into(),
                delivery_tag: 42,
                redelivered: true,
                exchange: "ex".into(),
                routing_key: "rk".into(),
            }),
            basic::AMQPMethod::GetOk(basic::GetOk {
                delivery_tag: 43,
                redelivered: false,
                exchange: "".into(),
                routing_key: "q".into(),
                message_count: 7,
            }),
            basic::AMQPMethod::Return(basic::Return {
                reply_code: 312,
                reply_text: "NO_ROUTE".into(),
                exchange: "ex".into(),
                routing_key: "rk".into(),
            }),
        ];
        for e in expect {
            match dec.decode(&mut out).unwrap().unwrap() {
                Frame::Method { channel, method } => {
                    assert_eq!(channel, 5);
                    assert_eq!(*method, AMQPClass::Basic(e));
                }
                f => panic!("unexpected {f:?}"),
            }
        }
        let _ = Bytes::new();
    }
}
