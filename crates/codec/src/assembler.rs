//! Reassembles a content-bearing method, its content header and its body frames into
//! one [`Command`], in the manner of RabbitMQ's `rabbit_command_assembler`.
//!
//! The assembler is a pure state machine, one per channel. Frames out of order get
//! 505 UNEXPECTED_FRAME; a body longer than the header announced gets 501; a header
//! announcing more than the configured maximum message size gets 406 before any body
//! is buffered.

use amq_protocol::protocol::{basic, AMQPClass};
use bytes::{Bytes, BytesMut};

use crate::error::AmqpError;
use crate::frame::Frame;

/// A complete command from the client.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// A method without content.
    Method(Box<AMQPClass>),
    /// A content-bearing method (basic.publish) with its properties and body.
    Content {
        /// The method.
        method: Box<AMQPClass>,
        /// Raw property flags + list, as the client sent them.
        properties: Bytes,
        /// The whole body.
        body: Bytes,
    },
}

#[derive(Debug, Default)]
enum State {
    #[default]
    Idle,
    ExpectHeader(Box<AMQPClass>),
    ExpectBody {
        method: Box<AMQPClass>,
        properties: Bytes,
        expected: u64,
        body: Body,
    },
}

#[derive(Debug)]
enum Body {
    Empty,
    One(Bytes),
    Many(BytesMut),
}

impl Body {
    fn len(&self) -> usize {
        match self {
            Body::Empty => 0,
            Body::One(b) => b.len(),
            Body::Many(b) => b.len(),
        }
    }

    fn push(&mut self, part: Bytes, expected: u64) {
        *self = match std::mem::replace(self, Body::Empty) {
            Body::Empty => Body::One(part),
            Body::One(first) => {
                // Room for the whole body announced (checked against the maximum message
                // size when the header arrived), up to PREALLOC_MAX: a limit may be
                // configured far above what memory holds, and a header only claims.
                let mut all = BytesMut::with_capacity(expected.min(PREALLOC_MAX) as usize);
                all.extend_from_slice(&first);
                all.extend_from_slice(&part);
                Body::Many(all)
            }
            Body::Many(mut all) => {
                all.extend_from_slice(&part);
                Body::Many(all)
            }
        }
    }

    fn freeze(self) -> Bytes {
        match self {
            Body::Empty => Bytes::new(),
            Body::One(b) => b,
            Body::Many(b) => b.freeze(),
        }
    }
}

/// The most a body split over several frames reserves before its frames arrive.
const PREALLOC_MAX: u64 = 64 << 20;

/// Per-channel content assembly.
#[derive(Debug)]
pub struct ContentAssembler {
    state: State,
    max_message_bytes: u64,
}

fn carries_content(method: &AMQPClass) -> bool {
    matches!(method, AMQPClass::Basic(basic::AMQPMethod::Publish(_)))
}

const EXPECTED_HEADER: &str =
    "expected content header for class 60, got non content header frame instead";
const EXPECTED_BODY: &str = "expected content body, got non content body frame instead";
const EXPECTED_METHOD: &str = "expected method frame, got non method frame instead";

impl ContentAssembler {
    /// An assembler refusing messages above `max_message_bytes`.
    pub fn new(max_message_bytes: u64) -> Self {
        ContentAssembler {
            state: State::Idle,
            max_message_bytes,
        }
    }

    /// Whether a content-bearing method is waiting for its header or body.
    pub fn in_progress(&self) -> bool {
        !matches!(self.state, State::Idle)
    }

    /// Feeds one frame (method, header or body) of this channel.
    ///
    /// # Errors
    /// 505 for a frame in the wrong place, 501 for a body longer than announced, 406 for a
    /// message over the size limit. After an error the assembler is idle again.
    pub fn push(&mut self, frame: Frame) -> Result<Option<Command>, AmqpError> {
        let result = self.step(frame);
        if result.is_err() {
            self.state = State::Idle;
        }
        result
    }

    fn step(&mut self, frame: Frame) -> Result<Option<Command>, AmqpError> {
        match (std::mem::take(&mut self.state), frame) {
            (State::Idle, Frame::Method { method, .. }) => {
                if carries_content(&method) {
                    self.state = State::ExpectHeader(method);
                    Ok(None)
                } else {
                    Ok(Some(Command::Method(method)))
                }
            }
            (State::Idle, _) => Err(AmqpError::unexpected_frame(EXPECTED_METHOD)),
            (
                State::ExpectHeader(method),
                Frame::Header {
                    class_id,
                    body_size,
                    properties,
                    ..
                },
            ) => {
                let (mc, mm) = (method.get_amqp_class_id(), method.get_amqp_method_id());
                if class_id != mc {
                    return Err(AmqpError::unexpected_frame(format!(
                        "content header for class {class_id} does not match method class {mc}"
                    ))
                    .with_method(mc, mm));
                }
                if body_size > self.max_message_bytes {
                    return Err(AmqpError::precondition_failed(format!(
                        "message size {body_size} is larger than configured max size {}",
                        self.max_message_bytes
                    ))
                    .with_method(mc, mm));
                }
                if body_size == 0 {
                    return Ok(Some(Command::Content {
                        method,
                        properties,
                        body: Bytes::new(),
                    }));
                }
                self.state = State::ExpectBody {
                    method,
                    properties,
                    expected: body_size,
                    body: Body::Empty,
                };
                Ok(None)
            }
            (State::ExpectHeader(method), _) => Err(AmqpError::unexpected_frame(EXPECTED_HEADER)
                .with_method(method.get_amqp_class_id(), method.get_amqp_method_id())),
            (
                State::ExpectBody {
                    method,
                    properties,
                    expected,
                    mut body,
                },
                Frame::Body { payload, .. },
            ) => {
                let have = body.len() as u64 + payload.len() as u64;
                if have > expected {
                    return Err(AmqpError::frame_error(format!(
                        "content body of {have} bytes is larger than the {expected} bytes announced in its header"
                    ))
                    .with_method(method.get_amqp_class_id(), method.get_amqp_method_id()));
                }
                if !payload.is_empty() {
                    body.push(payload, expected);
                }
                if have == expected {
                    Ok(Some(Command::Content {
                        method,
                        properties,
                        body: body.freeze(),
                    }))
                } else {
                    self.state = State::ExpectBody {
                        method,
                        properties,
                        expected,
                        body,
                    };
                    Ok(None)
                }
            }
            (State::ExpectBody { method, .. }, _) => {
                Err(AmqpError::unexpected_frame(EXPECTED_BODY)
                    .with_method(method.get_amqp_class_id(), method.get_amqp_method_id()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::protocol::queue;

    fn publish() -> Frame {
        Frame::Method {
            channel: 1,
            method: Box::new(AMQPClass::Basic(basic::AMQPMethod::Publish(
                basic::Publish {
                    exchange: "".into(),
                    routing_key: "q".into(),
                    mandatory: false,
                    immediate: false,
                },
            ))),
        }
    }
    fn header(size: u64) -> Frame {
        Frame::Header {
            channel: 1,
            class_id: 60,
            body_size: size,
            properties: Bytes::from_static(&[0, 0]),
        }
    }
    fn body(b: &'static [u8]) -> Frame {
        Frame::Body {
            channel: 1,
            payload: Bytes::from_static(b),
        }
    }
    fn other_method() -> Frame {
        Frame::Method {
            channel: 1,
            method: Box::new(AMQPClass::Queue(queue::AMQPMethod::Purge(queue::Purge {
                queue: "q".into(),
                nowait: false,
            }))),
        }
    }

    #[test]
    fn publish_header_bodies_make_one_command() {
        let mut a = ContentAssembler::new(1024);
        assert_eq!(a.push(publish()).unwrap(), None);
        assert_eq!(a.push(header(6)).unwrap(), None);
        assert_eq!(a.push(body(b"abc")).unwrap(), None);
        match a.push(body(b"def")).unwrap() {
            Some(Command::Content { body, .. }) => assert_eq!(&body[..], b"abcdef"),
            c => panic!("{c:?}"),
        }
        assert!(!a.in_progress());
    }

    #[test]
    fn empty_body_completes_at_header() {
        let mut a = ContentAssembler::new(1024);
        a.push(publish()).unwrap();
        assert!(matches!(
            a.push(header(0)).unwrap(),
            Some(Command::Content { .. })
        ));
    }

    #[test]
    fn every_bad_order_is_505() {
        let cases: Vec<Vec<Frame>> = vec![
            vec![header(1)],
            vec![body(b"x")],
            vec![publish(), other_method()],
            vec![publish(), body(b"x")],
            vec![publish(), header(2), other_method()],
            vec![publish(), header(2), header(2)],
        ];
        for frames in cases {
            let mut a = ContentAssembler::new(1024);
            let n = frames.len();
            let mut last = Ok(None);
            for (i, f) in frames.into_iter().enumerate() {
                last = a.push(f);
                if i + 1 < n {
                    assert!(last.is_ok());
                }
            }
            assert_eq!(last.unwrap_err().code.code(), 505);
            assert!(!a.in_progress());
        }
    }

    #[test]
    fn body_longer_than_header_is_501_and_too_large_is_406() {
        let mut a = ContentAssembler::new(1024);
        a.push(publish()).unwrap();
        a.push(header(2)).unwrap();
        assert_eq!(a.push(body(b"abc")).unwrap_err().code.code(), 501);
        a.push(publish()).unwrap();
        let e = a.push(header(4096)).unwrap_err();
        assert_eq!(e.code.code(), 406);
        assert_eq!((e.class_id, e.method_id), (60, 40));
    }

    #[test]
    fn header_class_mismatch_is_505() {
        let mut a = ContentAssembler::new(1024);
        a.push(publish()).unwrap();
        let f = Frame::Header {
            channel: 1,
            class_id: 50,
            body_size: 1,
            properties: Bytes::new(),
        };
        assert_eq!(a.push(f).unwrap_err().code.code(), 505);
    }
}
