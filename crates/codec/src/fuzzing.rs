//! Checks shared by the coverage-guided fuzz targets (`fuzz/`, run with cargo-fuzz) and
//! the corpus replay test (`crates/server/tests/fuzz_corpus.rs`, run by `cargo test`).
//!
//! Each function takes arbitrary bytes, must never panic on them, and asserts what has
//! to hold: Warren's hand-written parsers agree with amq-protocol's, what is accepted
//! re-encodes to the same value, limits are kept. A panic here is a bug found.
//! Not an API: hidden from the docs, free to change.

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::{basic, parse_class, queue, AMQPClass};
use amq_protocol::types::generation::gen_field_table;
use amq_protocol::types::{AMQPValue, FieldTable};
use bytes::{Bytes, BytesMut};

use crate::assembler::{Command, ContentAssembler};
use crate::frame::{Frame, FrameDecoder, FRAME_END, FRAME_METHOD};
use crate::nesting::{table_depth, MAX_NESTING};

/// `frame_decode`: the first byte picks the decoder's `frame_max` (4096, 131072, or 0 =
/// the protocol maximum); the rest is a byte stream decoded frame by frame until the
/// decoder wants more bytes or fails. Checks that the decoder consumes exactly one
/// frame per frame and nothing when it wants more, never accepts a frame over the
/// limit nor reserves memory for a frame it has not received (a 7-byte header may
/// claim 4 GiB), keeps header properties raw, that every decoded method re-encodes to the same
/// method, and that the basic.publish / basic.ack fast paths agree with amq-protocol
/// ([`method_fast_paths_agree`]) on every method frame's payload.
pub fn frame_decode(data: &[u8]) {
    let Some((&selector, stream)) = data.split_first() else {
        return;
    };
    let frame_max = match selector % 3 {
        0 => 4096,
        1 => 131_072,
        _ => 0,
    };
    let decoder = FrameDecoder::new(frame_max);
    let mut buf = BytesMut::from(stream);
    loop {
        let before = buf.len();
        let capacity = buf.capacity();
        // The payload of a complete frame at the front, as the decoder will see it.
        let payload = complete_frame_payload(&buf);
        match decoder.decode(&mut buf) {
            Ok(None) => {
                assert_eq!(buf.len(), before, "a partial frame consumed bytes");
                assert!(payload.is_none(), "a complete frame was not decoded");
                // A header claiming a huge frame must not make the decoder allocate
                // for it up front (not even with frame_max 0, no limit).
                assert!(
                    buf.capacity() <= 2 * capacity.max(8 << 20),
                    "a partial frame of {before} bytes made the buffer reserve {}",
                    buf.capacity()
                );
                break;
            }
            Err(_) => break,
            Ok(Some(frame)) => {
                let (frame_type, payload) = payload.expect("decoded an incomplete frame");
                assert_eq!(
                    before - buf.len(),
                    payload.len() + 8,
                    "frame not consumed whole"
                );
                if frame_max != 0 {
                    assert!(payload.len() <= frame_max as usize, "frame over frame_max");
                }
                check_frame(frame_type, &payload, &frame);
            }
        }
    }
    // Every method frame's payload, decoded alone: the fast paths agree with amq-protocol.
    let mut at = stream;
    while let Some((frame_type, payload)) = complete_frame_payload(at) {
        if frame_type == FRAME_METHOD {
            method_fast_paths_agree(&payload);
        }
        at = &at[payload.len() + 8..];
    }
}

/// The frame type and payload of a well-formed frame at the front of `buf`, if whole.
fn complete_frame_payload(buf: &[u8]) -> Option<(u8, Vec<u8>)> {
    let header: [u8; 7] = buf.get(..7)?.try_into().ok()?;
    let size = usize::try_from(u32::from_be_bytes([
        header[3], header[4], header[5], header[6],
    ]))
    .ok()?;
    let end = size.checked_add(7)?;
    if *buf.get(end)? != FRAME_END {
        return None;
    }
    Some((header[0], buf[7..end].to_vec()))
}

fn check_frame(frame_type: u8, payload: &[u8], frame: &Frame) {
    match frame {
        Frame::Method { channel, method } => {
            assert_eq!(frame_type, FRAME_METHOD);
            // Re-encoded, the method decodes to the same value (Debug text: NaN floats
            // in tables compare equal there, as they should for this purpose).
            let mut wire = BytesMut::new();
            crate::encode::method(&mut wire, *channel, method);
            let again = FrameDecoder::new(0)
                .decode(&mut wire)
                .unwrap_or_else(|e| panic!("re-encoded {method:?} does not decode: {e:?}"));
            assert!(wire.is_empty(), "re-encoded method left bytes behind");
            match again {
                Some(Frame::Method {
                    channel: c,
                    method: m,
                }) => {
                    assert_eq!(c, *channel);
                    assert_eq!(format!("{m:?}"), format!("{method:?}"), "round trip");
                }
                other => panic!("re-encoded method decoded as {other:?}"),
            }
        }
        Frame::Header {
            class_id,
            body_size,
            properties,
            ..
        } => {
            assert_eq!(&payload[12..], &properties[..], "properties not kept raw");
            assert_eq!(u16::from_be_bytes([payload[0], payload[1]]), *class_id);
            let size: [u8; 8] = payload[4..12].try_into().expect("checked length");
            assert_eq!(u64::from_be_bytes(size), *body_size);
        }
        Frame::Body { payload: body, .. } => assert_eq!(&body[..], payload),
        Frame::Heartbeat { channel } => {
            assert_eq!(*channel, 0);
            assert!(payload.is_empty());
        }
    }
}

/// For a method frame payload (class id, method id, arguments) of basic.publish (60,40)
/// or basic.ack (60,80): Warren's hand-written parsers, reached through
/// [`FrameDecoder`], accept and reject exactly what amq-protocol's `parse_class` does,
/// and give the same value. Other payloads are ignored.
pub fn method_fast_paths_agree(payload: &[u8]) {
    if !matches!(payload.get(..4), Some([0, 60, 0, 40] | [0, 60, 0, 80])) {
        return;
    }
    let Ok(size) = u32::try_from(payload.len()) else {
        return;
    };
    let mut wire = BytesMut::with_capacity(payload.len() + 8);
    wire.extend_from_slice(&[FRAME_METHOD, 0, 1]);
    wire.extend_from_slice(&size.to_be_bytes());
    wire.extend_from_slice(payload);
    wire.extend_from_slice(&[FRAME_END]);
    let ours = match FrameDecoder::new(0).decode(&mut wire) {
        Ok(Some(Frame::Method { method, .. })) => Some(*method),
        Ok(other) => panic!("a whole method frame decoded as {other:?}"),
        Err(_) => None,
    };
    let theirs = parse_class(payload).ok().map(|(_rest, m)| m);
    assert_eq!(ours, theirs, "fast path disagrees on payload {payload:?}");
}

/// `field_table`: [`crate::nesting::parse_field_table`] on arbitrary bytes. For an
/// accepted table: the nesting is within [`MAX_NESTING`], the non-recursive depth
/// measure never under-counts the parsed table (and is exact on a re-encoded one), the
/// bytes consumed are the declared length, and amq-protocol's generator writes bytes
/// that parse back to the same table and re-encode identically.
pub fn field_table(data: &[u8]) {
    let measured = table_depth(data, MAX_NESTING);
    let Some((rest, table)) = crate::nesting::parse_field_table(data) else {
        return;
    };
    assert!((1..=MAX_NESTING).contains(&measured), "depth {measured}");
    let real = depth_of_table(&table);
    assert!(
        real <= measured,
        "table_depth measured {measured}, the parsed table nests {real}"
    );
    let declared = u32::from_be_bytes(data[..4].try_into().expect("parsed"));
    assert_eq!(data.len() - rest.len(), declared as usize + 4);

    let wire = encode_table(&table);
    assert_eq!(
        table_depth(&wire, MAX_NESTING),
        real,
        "depth of re-encoded table"
    );
    let (rest, again) =
        crate::nesting::parse_field_table(&wire).expect("re-encoded table does not parse");
    assert!(rest.is_empty(), "re-encoded table has trailing bytes");
    assert_eq!(
        format!("{again:?}"),
        format!("{table:?}"),
        "table round trip"
    );
    assert_eq!(encode_table(&again), wire, "re-encoding is not stable");
}

fn encode_table(t: &FieldTable) -> Vec<u8> {
    gen_field_table(t)(WriteContext::from(Vec::new()))
        .map(|c| c.write)
        .expect("a Vec never runs out of room")
}

/// How deeply a parsed table nests (the table itself is 1), like [`table_depth`].
pub fn depth_of_table(t: &FieldTable) -> usize {
    1 + t.inner().values().map(depth_of_value).max().unwrap_or(0)
}

fn depth_of_value(v: &AMQPValue) -> usize {
    match v {
        AMQPValue::FieldTable(t) => depth_of_table(t),
        AMQPValue::FieldArray(a) => 1 + a.as_slice().iter().map(depth_of_value).max().unwrap_or(0),
        _ => 0,
    }
}

/// What the model expects of one push.
#[derive(Debug, PartialEq)]
enum Outcome {
    Pending,
    Method,
    Content(Vec<u8>),
    Error(u16),
}

#[derive(Debug)]
enum Model {
    Idle,
    ExpectHeader,
    ExpectBody { expected: u64, have: Vec<u8> },
}

/// `content_assembly`: a [`ContentAssembler`] fed frames built from the input, checked
/// step by step against a small model of `rabbit_command_assembler`: commands complete
/// when (and only when) the announced body size has arrived, bodies are the frames'
/// bytes in order, frames out of place are 505, an over-long body 501, an over-size
/// header 406, and the assembler is idle after every error.
///
/// Input: the first byte picks the maximum message size; then each frame is an op
/// byte (low 2 bits: publish, another method, header, body) followed by its fields.
pub fn content_assembly(data: &[u8]) {
    let mut input = data;
    let max = match take_u8(&mut input) {
        Some(b) => match b % 5 {
            0 => 0,
            1 => 16,
            2 => 4096,
            3 => 1 << 20,
            // The largest limit a configuration file can give (TOML integers are i64).
            _ => i64::MAX as u64,
        },
        None => return,
    };
    let mut assembler = ContentAssembler::new(max);
    let mut model = Model::Idle;
    let mut frames = 0;
    while let Some(op) = take_u8(&mut input) {
        frames += 1;
        if frames > 4096 {
            break;
        }
        let frame = match op & 3 {
            0 => Frame::Method {
                channel: 1,
                method: Box::new(AMQPClass::Basic(basic::AMQPMethod::Publish(
                    basic::Publish {
                        exchange: "".into(),
                        routing_key: "q".into(),
                        mandatory: op & 4 != 0,
                        immediate: false,
                    },
                ))),
            },
            1 => Frame::Method {
                channel: 1,
                method: Box::new(AMQPClass::Queue(queue::AMQPMethod::Purge(queue::Purge {
                    queue: "q".into(),
                    nowait: false,
                }))),
            },
            2 => {
                // Class 60 mostly; a size as small, 2-byte or 8-byte number.
                let class_id = if op & 4 != 0 {
                    u16::from(take_u8(&mut input).unwrap_or(0))
                } else {
                    60
                };
                let body_size = match (op >> 3) & 3 {
                    0 => u64::from(take_u8(&mut input).unwrap_or(0) % 32),
                    1 => u64::from(take_u16(&mut input).unwrap_or(0)),
                    2 => u64::from_be_bytes(take_array(&mut input).unwrap_or([0; 8])),
                    _ => 0,
                };
                let n = usize::from(op >> 5);
                let properties = take_bytes(&mut input, n);
                Frame::Header {
                    channel: 1,
                    class_id,
                    body_size,
                    properties,
                }
            }
            _ => {
                let n = usize::from(op >> 2);
                Frame::Body {
                    channel: 1,
                    payload: take_bytes(&mut input, n),
                }
            }
        };
        let expected = model_step(&mut model, &frame, max);
        let got = match assembler.push(frame) {
            Ok(None) => Outcome::Pending,
            Ok(Some(Command::Method(_))) => Outcome::Method,
            Ok(Some(Command::Content {
                method,
                properties: _,
                body,
            })) => {
                assert!(matches!(
                    *method,
                    AMQPClass::Basic(basic::AMQPMethod::Publish(_))
                ));
                Outcome::Content(body.to_vec())
            }
            Err(e) => Outcome::Error(e.code.code()),
        };
        assert_eq!(got, expected, "assembler and model disagree");
        assert_eq!(
            assembler.in_progress(),
            !matches!(model, Model::Idle),
            "in_progress"
        );
    }
}

fn model_step(model: &mut Model, frame: &Frame, max: u64) -> Outcome {
    let state = std::mem::replace(model, Model::Idle);
    match (state, frame) {
        (Model::Idle, Frame::Method { method, .. }) => {
            if matches!(**method, AMQPClass::Basic(basic::AMQPMethod::Publish(_))) {
                *model = Model::ExpectHeader;
                Outcome::Pending
            } else {
                Outcome::Method
            }
        }
        (Model::Idle, _) => Outcome::Error(505),
        (
            Model::ExpectHeader,
            Frame::Header {
                class_id,
                body_size,
                ..
            },
        ) => {
            if *class_id != 60 {
                Outcome::Error(505)
            } else if *body_size > max {
                Outcome::Error(406)
            } else if *body_size == 0 {
                Outcome::Content(Vec::new())
            } else {
                *model = Model::ExpectBody {
                    expected: *body_size,
                    have: Vec::new(),
                };
                Outcome::Pending
            }
        }
        (Model::ExpectHeader, _) => Outcome::Error(505),
        (Model::ExpectBody { expected, mut have }, Frame::Body { payload, .. }) => {
            let total = have.len() as u64 + payload.len() as u64;
            if total > expected {
                return Outcome::Error(501);
            }
            have.extend_from_slice(payload);
            if total == expected {
                Outcome::Content(have)
            } else {
                *model = Model::ExpectBody { expected, have };
                Outcome::Pending
            }
        }
        (Model::ExpectBody { .. }, _) => Outcome::Error(505),
    }
}

fn take_u8(input: &mut &[u8]) -> Option<u8> {
    let (&b, rest) = input.split_first()?;
    *input = rest;
    Some(b)
}

fn take_u16(input: &mut &[u8]) -> Option<u16> {
    take_array(input).map(u16::from_be_bytes)
}

fn take_array<const N: usize>(input: &mut &[u8]) -> Option<[u8; N]> {
    let a: [u8; N] = input.get(..N)?.try_into().ok()?;
    *input = &input[N..];
    Some(a)
}

fn take_bytes(input: &mut &[u8], n: usize) -> Bytes {
    let n = n.min(input.len());
    let (b, rest) = input.split_at(n);
    *input = rest;
    Bytes::copy_from_slice(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode;

    #[test]
    fn checks_pass_on_valid_and_broken_input() {
        let mut wire = vec![1u8];
        let publish = AMQPClass::Basic(basic::AMQPMethod::Publish(basic::Publish {
            exchange: "ex".into(),
            routing_key: "rk".into(),
            mandatory: true,
            immediate: false,
        }));
        let mut b = BytesMut::new();
        encode::method(&mut b, 1, &publish);
        encode::content(&mut b, 1, &[0x80, 0, 1, b'x'], b"hello", 4096);
        encode::heartbeat(&mut b);
        wire.extend_from_slice(&b);
        frame_decode(&wire);
        frame_decode(&wire[..wire.len() - 3]);
        method_fast_paths_agree(&[0, 60, 0, 40, 0, 0, 2, 0xff, 0xfe, 0, 0]);
        for depth in [1, 3, MAX_NESTING, MAX_NESTING + 5] {
            field_table(&nested_arrays(depth));
        }
        // max 4096; publish; header (class 60, size 5, one property byte); body of 5.
        content_assembly(&[2, 0, 2 | (1 << 5), 5, 0xaa, 3 | (5 << 2), 1, 2, 3, 4, 5]);
    }

    /// `{x: [[...[]...]]}`: a table holding `depth - 1` nested arrays.
    fn nested_arrays(depth: usize) -> Vec<u8> {
        let arrays = depth - 1;
        let mut out = ((arrays * 5 + 2) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&[1, b'x']);
        for level in 0..arrays {
            out.push(b'A');
            out.extend_from_slice(&(((arrays - level - 1) * 5) as u32).to_be_bytes());
        }
        out
    }
}
