//! AMQP 0-9-1 on the wire, for a server. No sockets, no clock.
//!
//! This crate owns the byte-level protocol: reading frames out of a buffer with the
//! negotiated size limit checked *before* a payload is buffered ([`FrameDecoder`]),
//! writing frames ([`encode`]), reassembling a content-bearing method with its header and
//! body frames into one command ([`ContentAssembler`]), and the AMQP reply codes
//! ([`ReplyCode`], [`AmqpError`]). Methods and field tables are amq-protocol's types,
//! re-exported here as [`protocol`] and [`types`].
//!
//! ```
//! use bytes::BytesMut;
//! use warren_codec::{encode, Frame, FrameDecoder};
//!
//! let mut wire = BytesMut::new();
//! encode::heartbeat(&mut wire);
//! let decoder = FrameDecoder::new(131_072);
//! let frame = decoder.decode(&mut wire).unwrap().unwrap();
//! assert!(matches!(frame, Frame::Heartbeat { channel: 0 }));
//! ```

pub mod assembler;
pub mod encode;
pub mod error;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
pub mod json;
pub mod methods;
pub mod nesting;

pub use amq_protocol::protocol;
pub use amq_protocol::types;
pub use assembler::{Command, ContentAssembler};
pub use error::{AmqpError, ReplyCode};
pub use frame::{Frame, FrameDecoder, PROTOCOL_HEADER};
