//! AMQP 1.0 messages, the payload format of RabbitMQ's stream protocol, and their
//! conversion to and from the AMQP 0-9-1 messages Warren stores.
//!
//! # Codec
//!
//! [`Value`] is any AMQP 1.0 value (AMQP 1.0 part 1, "Types"). [`Value::decode`] accepts
//! every encoding of the spec; [`Value::encode`] writes the compact ones the reference
//! clients write (`smallulong`/`smallint`/`uint0`..., `str8`/`sym8`/`vbin8` up to 255
//! bytes, `list8`/`map8`/`array8` while the size and count fit in a byte, `list0` for an
//! empty list, `true`/`false` without a payload; array elements use the full-width
//! constructors, as RabbitMQ does). Decoding is bounds-checked everywhere, never
//! recurses deeper than [`MAX_DEPTH`] levels, refuses an element count larger than the
//! bytes that could hold it, and charges every value it builds against a budget
//! proportional to the input, so a few hostile bytes (an array of 2^32 zero-width
//! nulls, say) cannot make it allocate much.
//!
//! [`decode`] splits a message into its sections (header, delivery-annotations,
//! message-annotations, properties, application-properties, the body as data /
//! amqp-sequence / amqp-value sections, footer), in the order the spec requires, each
//! at most once (the body: one or more data sections, or one or more amqp-sequence
//! sections, or one amqp-value). Descriptors may be numeric or symbolic. A message
//! without a body section decodes to an empty data body ([`Body::Data`] with no
//! sections). [`encode`] writes the sections that are present (see [`Amqp10Message`]).
//!
//! # Conversion to AMQP 0-9-1 ([`to_amqp091`])
//!
//! RabbitMQ 4's `mc_amqpl:convert_from(mc_amqp, ...)`, the current form of the mapping
//! (RabbitMQ 3.10's `rabbit_msg_record:to_amqp091/1` did less and crashed on a header
//! section or a non-data body):
//!
//! | AMQP 1.0 | AMQP 0-9-1 |
//! | --- | --- |
//! | data sections | the body, concatenated |
//! | amqp-value / amqp-sequence body | the body sections (and the footer) as AMQP 1.0 bytes, `type` = `amqp-1.0` |
//! | header `durable` | `delivery-mode` 2 (true) or 1 (false); else annotation `x-basic-delivery-mode` (1 or 2) |
//! | header `priority` | `priority`; else annotation `x-basic-priority` |
//! | header `ttl` | `expiration` (decimal milliseconds); else annotation `x-basic-expiration` (if a count of milliseconds) |
//! | annotation `x-basic-type` | `type` (data bodies) |
//! | `message-id`, `correlation-id` | `message-id`, `correlation-id`: a string of at most 255 bytes as is, a uuid as `urn:uuid:...`, a ulong in decimal; a binary id, or a longer string, goes to header `x-message-id` / `x-correlation-id` instead |
//! | `user-id` | `user-id`, if it is UTF-8 without NUL, at most 255 bytes |
//! | `reply-to` | `reply-to` (at most 255 bytes) |
//! | `content-type`, `content-encoding` | the same (at most 255 bytes) |
//! | `creation-time` (ms) | `timestamp` (s, rounded down; negative ones dropped) |
//! | `group-id` | `app-id` (at most 255 bytes) |
//! | application-properties | headers |
//! | message annotations `x-...` | headers, except RabbitMQ's internal ones (`x-basic-*`, `x-routing-key`, `x-exchange`, `x-death`); a list `x-cc` becomes `CC`, a timestamp `x-opt-rabbitmq-received-time` becomes `timestamp_in_ms` (long) |
//!
//! Header values: string and symbol → longstr, binary → longstr, boolean → bool, byte /
//! ubyte / short / ushort / int / uint / long → the 0-9-1 type of the same width and
//! sign, ulong → long (when it fits), float / double → float / double, timestamp →
//! timestamp (seconds), null → void, list / array → array, map → table. What has no 0-9-1
//! form (char, decimals, uuid, described values, a ulong above `i64::MAX`, values
//! nested deeper than 32 levels, keys longer than 255 bytes) is left out where RabbitMQ
//! would crash. `to`, `subject`, `absolute-expiry-time`, `group-sequence`,
//! `reply-to-group-id`, non-`x-` annotations, delivery annotations and the header's
//! `first-acquirer` / `delivery-count` have no 0-9-1 counterpart either (as in RabbitMQ).
//!
//! # Conversion from AMQP 0-9-1 ([`from_amqp091`])
//!
//! RabbitMQ 4's `mc_amqpl:convert_to(mc_amqp, ...)`, the reverse of the table above:
//! the body as one data section (or, with `type` = `amqp-1.0`, the AMQP 1.0 sections it
//! holds, if it decodes), headers not starting with `x-` → application-properties
//! (except arrays and tables, which application-properties may not hold), headers
//! starting with `x-` → message annotations (symbol keys), an array `CC` → annotation
//! `x-cc`, `type` → annotation `x-basic-type`, `app-id` → `group-id`, a `message-id` /
//! `correlation-id` of the form `urn:uuid:...` → a uuid. longstr → string if it is UTF-8
//! without NUL, else binary; timestamp (s) → timestamp (ms); decimals are left out.
//!
//! # Lossless round trips
//!
//! A stream-protocol client reads back what it (or another) published, and Warren keeps
//! messages as 0-9-1, so [`to_amqp091`] checks that [`from_amqp091`] would rebuild the
//! properties, application-properties and message-annotations sections exactly (map
//! order aside), and for each one that it would not (a `subject`, a ulong message-id,
//! a creation time with milliseconds, a symbol application property...), it adds the
//! section's AMQP 1.0 encoding as a binary header: `x-amqp-1.0-properties`,
//! `x-amqp-1.0-app-properties`, `x-amqp-1.0-message-annotations`, and
//! `x-amqp-1.0-footer` for the footer of a data body. These are the headers RabbitMQ
//! 3.x's AMQP 1.0 plugin wrote for the same purpose and which RabbitMQ 3.11.9+'s stream
//! conversion and RabbitMQ 4 read; [`from_amqp091`] prefers them over the mapped
//! fields. A plain message (string ids, the usual properties with a creation time in
//! whole seconds, application properties of strings, integers and booleans, one data
//! section) needs none of them, so 0-9-1 consumers see exactly what RabbitMQ shows.
//! What still does not survive: the header's `first-acquirer` / `delivery-count`,
//! delivery annotations, and the split of a body into several data sections; and
//! RabbitMQ's `x-basic-*` annotations come back with a header section beside them.
//!
//! # Differences from RabbitMQ
//!
//! * [`from_amqp091`] adds a header section only when `delivery-mode`, `priority` or
//!   `expiration` is set (RabbitMQ 4 always adds one; 3.10 put them in `x-basic-*`
//!   annotations instead).
//! * It adds no `x-exchange` / `x-routing-key` annotations (RabbitMQ adds them to
//!   messages published over 0-9-1 into a stream): the message does not say whether it
//!   came from a 0-9-1 publisher; a caller that knows may push them.
//! * `reply-to` is copied as is both ways (RabbitMQ 4 writes and reads `/queues/...`
//!   addresses, which belong to its AMQP 1.0 listener).
//! * Values without a 0-9-1 form are left out instead of crashing the conversion, and
//!   an undecodable `amqp-1.0` body stays a data section.
//! * A longstr is a string whenever it is UTF-8 without NUL (RabbitMQ 4 calls any
//!   longstr over 4096 bytes binary).
//! * The annotation `x-opt-deaths` is not turned into an `x-death` header.
//! * RabbitMQ 3.10 named the id headers `x-message-id-type` / `x-correlation-id-type`,
//!   put every header (`x-` ones too) in application-properties and `type` / `app-id` in
//!   `x-basic-type` / `x-basic-app-id` application properties.

use std::collections::BTreeMap;

use amq_protocol::frame::WriteContext;
use amq_protocol::protocol::basic::{gen_properties, AMQPProperties};
use amq_protocol::types::{AMQPValue, ByteArray, FieldArray, FieldTable, LongString, ShortString};
use bytes::Bytes;

/// The deepest nesting [`Value::decode`] and [`decode`] accept: a value inside 64 others
/// (described values, lists, maps and arrays each add a level; a message section is the
/// outermost) decodes, one more level is [`Error::TooDeep`].
pub const MAX_DEPTH: usize = 64;

/// The deepest nesting of a value converted to a 0-9-1 header value (the headers table
/// adds one; Warren refuses tables nested deeper than 64).
const MAX_091_DEPTH: usize = 32;

/// The deepest nesting of a value converted from a 0-9-1 header value, so that the
/// section holding it stays within [`MAX_DEPTH`].
const MAX_FROM_091_DEPTH: usize = MAX_DEPTH - 4;

const AMQP10_TYPE: &str = "amqp-1.0";
const PROPERTIES_HEADER: &str = "x-amqp-1.0-properties";
const APP_PROPERTIES_HEADER: &str = "x-amqp-1.0-app-properties";
const ANNOTATIONS_HEADER: &str = "x-amqp-1.0-message-annotations";
const FOOTER_HEADER: &str = "x-amqp-1.0-footer";
const MESSAGE_ID_HEADER: &str = "x-message-id";
const CORRELATION_ID_HEADER: &str = "x-correlation-id";

const HEADER: u64 = 0x70;
const DELIVERY_ANNOTATIONS: u64 = 0x71;
const MESSAGE_ANNOTATIONS: u64 = 0x72;
const PROPERTIES: u64 = 0x73;
const APPLICATION_PROPERTIES: u64 = 0x74;
const DATA: u64 = 0x75;
const AMQP_SEQUENCE: u64 = 0x76;
const AMQP_VALUE: u64 = 0x77;
const FOOTER: u64 = 0x78;

/// Why bytes are not an AMQP 1.0 value or message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input ends inside a value.
    #[error("AMQP 1.0 value truncated")]
    Truncated,
    /// A format code the spec does not define.
    #[error("unknown AMQP 1.0 format code 0x{0:02x}")]
    UnknownFormatCode(u8),
    /// Values nested deeper than [`MAX_DEPTH`].
    #[error("AMQP 1.0 values nested deeper than {} levels", MAX_DEPTH)]
    TooDeep,
    /// The input declares far more values than its size justifies.
    #[error("AMQP 1.0 value declares more elements than its size allows")]
    TooLarge,
    /// A value that breaks an encoding rule (a size or count that does not add up,
    /// a string that is not UTF-8, ...).
    #[error("malformed AMQP 1.0 value: {0}")]
    Malformed(&'static str),
    /// Well-formed values that are not a message (a section that is not one, out of
    /// order, or holding the wrong type).
    #[error("invalid AMQP 1.0 message: {0}")]
    InvalidMessage(&'static str),
}

/// An AMQP 1.0 value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`.
    Null,
    /// `boolean`.
    Boolean(bool),
    /// `ubyte`.
    Ubyte(u8),
    /// `ushort`.
    Ushort(u16),
    /// `uint`.
    Uint(u32),
    /// `ulong`.
    Ulong(u64),
    /// `byte`.
    Byte(i8),
    /// `short`.
    Short(i16),
    /// `int`.
    Int(i32),
    /// `long`.
    Long(i64),
    /// `float`.
    Float(f32),
    /// `double`.
    Double(f64),
    /// `decimal32`, its IEEE 754 bytes as encoded.
    Decimal32([u8; 4]),
    /// `decimal64`, its IEEE 754 bytes as encoded.
    Decimal64([u8; 8]),
    /// `decimal128`, its IEEE 754 bytes as encoded.
    Decimal128([u8; 16]),
    /// `char`: a UTF-32 code point, as encoded (not checked).
    Char(u32),
    /// `timestamp`: milliseconds since the Unix epoch.
    Timestamp(i64),
    /// `uuid`.
    Uuid([u8; 16]),
    /// `binary`.
    Binary(Vec<u8>),
    /// `string` (UTF-8).
    String(String),
    /// `symbol` (ASCII by the spec; any UTF-8 is accepted).
    Symbol(String),
    /// `list`.
    List(Vec<Value>),
    /// `map`, in encoded order.
    Map(Vec<(Value, Value)>),
    /// `array`. Its elements should share one type; [`Value::encode`] writes an array
    /// whose elements do not as a list, and an empty array with the `null` constructor.
    Array(Vec<Value>),
    /// A described value: descriptor, value.
    Described(Box<Value>, Box<Value>),
}

/// The message header section (all fields optional; absent means the spec's default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    /// `durable`.
    pub durable: Option<bool>,
    /// `priority`.
    pub priority: Option<u8>,
    /// `ttl`, milliseconds.
    pub ttl: Option<u32>,
    /// `first-acquirer`.
    pub first_acquirer: Option<bool>,
    /// `delivery-count`.
    pub delivery_count: Option<u32>,
}

/// The properties section.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Properties {
    /// `message-id`: a ulong, uuid, binary or string.
    pub message_id: Option<Value>,
    /// `user-id`.
    pub user_id: Option<Vec<u8>>,
    /// `to`.
    pub to: Option<String>,
    /// `subject`.
    pub subject: Option<String>,
    /// `reply-to`.
    pub reply_to: Option<String>,
    /// `correlation-id`: a ulong, uuid, binary or string.
    pub correlation_id: Option<Value>,
    /// `content-type` (a symbol).
    pub content_type: Option<String>,
    /// `content-encoding` (a symbol).
    pub content_encoding: Option<String>,
    /// `absolute-expiry-time`, milliseconds since the Unix epoch.
    pub absolute_expiry_time: Option<i64>,
    /// `creation-time`, milliseconds since the Unix epoch.
    pub creation_time: Option<i64>,
    /// `group-id`.
    pub group_id: Option<String>,
    /// `group-sequence`.
    pub group_sequence: Option<u32>,
    /// `reply-to-group-id`.
    pub reply_to_group_id: Option<String>,
}

impl Properties {
    fn is_empty(&self) -> bool {
        *self == Properties::default()
    }
}

/// A message body.
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    /// Data sections (binary), in order. Empty when the message had no body section.
    Data(Vec<Vec<u8>>),
    /// amqp-sequence sections, in order.
    Sequence(Vec<Vec<Value>>),
    /// One amqp-value section.
    Value(Value),
}

impl Default for Body {
    fn default() -> Self {
        Body::Data(Vec::new())
    }
}

/// An AMQP 1.0 message. [`encode`] writes the header, properties and footer when they
/// are `Some`, the annotations and application-properties when they are not empty,
/// and one section per body part.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Amqp10Message {
    /// The header section.
    pub header: Option<Header>,
    /// The delivery-annotations section (conversions drop it, as RabbitMQ).
    pub delivery_annotations: Vec<(Value, Value)>,
    /// The message-annotations section.
    pub message_annotations: Vec<(Value, Value)>,
    /// The properties section.
    pub properties: Option<Properties>,
    /// The application-properties section (string keys), in encoded order.
    pub application_properties: Vec<(String, Value)>,
    /// The body.
    pub body: Body,
    /// The footer section.
    pub footer: Option<Vec<(Value, Value)>>,
}

// ---------------------------------------------------------------------------------
// Decoding

fn take<'a>(input: &mut &'a [u8], n: usize) -> Result<&'a [u8], Error> {
    if input.len() < n {
        return Err(Error::Truncated);
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Ok(head)
}

fn fixed<const N: usize>(input: &mut &[u8]) -> Result<[u8; N], Error> {
    let mut out = [0u8; N];
    out.copy_from_slice(take(input, N)?);
    Ok(out)
}

fn byte(input: &mut &[u8]) -> Result<u8, Error> {
    let [b] = fixed::<1>(input)?;
    Ok(b)
}

fn u32_len(input: &mut &[u8]) -> Result<usize, Error> {
    usize::try_from(u32::from_be_bytes(fixed(input)?)).map_err(|_| Error::TooLarge)
}

/// The payload of a variable-width value (`vbin`, `str`, `sym`): one-byte length for
/// the `0xa_` codes, four-byte length for the `0xb_` ones.
fn variable<'a>(code: u8, input: &mut &'a [u8]) -> Result<&'a [u8], Error> {
    let len = if code & 0xf0 == 0xa0 {
        usize::from(byte(input)?)
    } else {
        u32_len(input)?
    };
    take(input, len)
}

fn utf8(bytes: &[u8]) -> Result<String, Error> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| Error::Malformed("string or symbol is not UTF-8"))
}

/// A compound value's count and the bytes after it (its size covers both).
fn compound<'a>(wide: bool, input: &mut &'a [u8]) -> Result<(usize, &'a [u8]), Error> {
    if wide {
        let size = u32_len(input)?;
        let mut inner = take(input, size)?;
        let count = u32_len(&mut inner)?;
        Ok((count, inner))
    } else {
        let size = usize::from(byte(input)?);
        let mut inner = take(input, size)?;
        let count = usize::from(byte(&mut inner)?);
        Ok((count, inner))
    }
}

/// An array's element constructor.
enum Constructor {
    Primitive(u8),
    /// Descriptor, the underlying constructor, and what cloning the descriptor costs.
    Described(Box<Value>, Box<Constructor>, usize),
}

impl Constructor {
    /// Whether elements take no bytes (null, true, false, uint0, ulong0, list0).
    fn zero_width(&self) -> bool {
        match self {
            Constructor::Primitive(code) => matches!(code, 0x40..=0x45),
            Constructor::Described(_, inner, _) => inner.zero_width(),
        }
    }
}

/// How many budget units a copy of `v` costs: one per value plus its bytes.
fn weight(v: &Value) -> usize {
    match v {
        Value::Binary(b) => 1 + b.len(),
        Value::String(s) | Value::Symbol(s) => 1 + s.len(),
        Value::List(items) | Value::Array(items) => items.iter().map(weight).sum::<usize>() + 1,
        Value::Map(pairs) => {
            pairs
                .iter()
                .map(|(k, v)| weight(k) + weight(v))
                .sum::<usize>()
                + 1
        }
        Value::Described(d, v) => weight(d) + weight(v) + 1,
        _ => 1,
    }
}

fn known_code(code: u8) -> bool {
    matches!(
        code,
        0x40..=0x45
            | 0x50..=0x56
            | 0x60
            | 0x61
            | 0x70..=0x74
            | 0x80..=0x84
            | 0x94
            | 0x98
            | 0xa0
            | 0xa1
            | 0xa3
            | 0xb0
            | 0xb1
            | 0xb3
            | 0xc0
            | 0xc1
            | 0xd0
            | 0xd1
            | 0xe0
            | 0xf0
    )
}

/// One decoding run: a budget of values, shared by everything decoded from one input.
struct Decoder {
    budget: usize,
}

impl Decoder {
    fn new(len: usize) -> Self {
        Decoder {
            budget: len.saturating_mul(2).saturating_add(1024),
        }
    }

    fn charge(&mut self, units: usize) -> Result<(), Error> {
        self.budget = self.budget.checked_sub(units).ok_or(Error::TooLarge)?;
        Ok(())
    }

    fn value(&mut self, input: &mut &[u8], depth: usize) -> Result<Value, Error> {
        if depth > MAX_DEPTH {
            return Err(Error::TooDeep);
        }
        self.charge(1)?;
        let code = byte(input)?;
        if code == 0x00 {
            let descriptor = self.value(input, depth + 1)?;
            let value = self.value(input, depth + 1)?;
            return Ok(Value::Described(Box::new(descriptor), Box::new(value)));
        }
        self.primitive(code, input, depth)
    }

    /// The value after constructor `code` (at nesting `depth`).
    fn primitive(&mut self, code: u8, input: &mut &[u8], depth: usize) -> Result<Value, Error> {
        Ok(match code {
            0x40 => Value::Null,
            0x41 => Value::Boolean(true),
            0x42 => Value::Boolean(false),
            0x56 => match byte(input)? {
                0 => Value::Boolean(false),
                1 => Value::Boolean(true),
                _ => return Err(Error::Malformed("boolean other than 0 or 1")),
            },
            0x50 => Value::Ubyte(byte(input)?),
            0x60 => Value::Ushort(u16::from_be_bytes(fixed(input)?)),
            0x70 => Value::Uint(u32::from_be_bytes(fixed(input)?)),
            0x52 => Value::Uint(u32::from(byte(input)?)),
            0x43 => Value::Uint(0),
            0x80 => Value::Ulong(u64::from_be_bytes(fixed(input)?)),
            0x53 => Value::Ulong(u64::from(byte(input)?)),
            0x44 => Value::Ulong(0),
            0x51 => Value::Byte(i8::from_be_bytes(fixed(input)?)),
            0x61 => Value::Short(i16::from_be_bytes(fixed(input)?)),
            0x71 => Value::Int(i32::from_be_bytes(fixed(input)?)),
            0x54 => Value::Int(i32::from(i8::from_be_bytes(fixed(input)?))),
            0x81 => Value::Long(i64::from_be_bytes(fixed(input)?)),
            0x55 => Value::Long(i64::from(i8::from_be_bytes(fixed(input)?))),
            0x72 => Value::Float(f32::from_be_bytes(fixed(input)?)),
            0x82 => Value::Double(f64::from_be_bytes(fixed(input)?)),
            0x74 => Value::Decimal32(fixed(input)?),
            0x84 => Value::Decimal64(fixed(input)?),
            0x94 => Value::Decimal128(fixed(input)?),
            0x73 => Value::Char(u32::from_be_bytes(fixed(input)?)),
            0x83 => Value::Timestamp(i64::from_be_bytes(fixed(input)?)),
            0x98 => Value::Uuid(fixed(input)?),
            0xa0 | 0xb0 => Value::Binary(variable(code, input)?.to_vec()),
            0xa1 | 0xb1 => Value::String(utf8(variable(code, input)?)?),
            0xa3 | 0xb3 => Value::Symbol(utf8(variable(code, input)?)?),
            0x45 => Value::List(Vec::new()),
            0xc0 | 0xd0 => {
                let (count, mut inner) = compound(code == 0xd0, input)?;
                if count > inner.len() {
                    return Err(Error::Malformed("list count larger than its size"));
                }
                let mut items = Vec::with_capacity(count);
                for _ in 0..count {
                    items.push(self.value(&mut inner, depth + 1)?);
                }
                if !inner.is_empty() {
                    return Err(Error::Malformed("list size larger than its elements"));
                }
                Value::List(items)
            }
            0xc1 | 0xd1 => {
                let (count, mut inner) = compound(code == 0xd1, input)?;
                if count & 1 == 1 {
                    return Err(Error::Malformed("map with an odd element count"));
                }
                if count > inner.len() {
                    return Err(Error::Malformed("map count larger than its size"));
                }
                let mut pairs = Vec::with_capacity(count / 2);
                for _ in 0..count / 2 {
                    let key = self.value(&mut inner, depth + 1)?;
                    let value = self.value(&mut inner, depth + 1)?;
                    pairs.push((key, value));
                }
                if !inner.is_empty() {
                    return Err(Error::Malformed("map size larger than its elements"));
                }
                Value::Map(pairs)
            }
            0xe0 | 0xf0 => {
                let (count, mut inner) = compound(code == 0xf0, input)?;
                let constructor = self.constructor(&mut inner, depth + 1)?;
                // Zero-width elements are only limited by the budget.
                if !constructor.zero_width() && count > inner.len() {
                    return Err(Error::Malformed("array count larger than its size"));
                }
                let mut items = Vec::with_capacity(count.min(4096));
                for _ in 0..count {
                    items.push(self.element(&constructor, &mut inner, depth + 1)?);
                }
                if !inner.is_empty() {
                    return Err(Error::Malformed("array size larger than its elements"));
                }
                Value::Array(items)
            }
            other => return Err(Error::UnknownFormatCode(other)),
        })
    }

    fn constructor(&mut self, input: &mut &[u8], depth: usize) -> Result<Constructor, Error> {
        if depth > MAX_DEPTH {
            return Err(Error::TooDeep);
        }
        match byte(input)? {
            0x00 => {
                let descriptor = self.value(input, depth + 1)?;
                let inner = self.constructor(input, depth + 1)?;
                let cost = weight(&descriptor);
                Ok(Constructor::Described(
                    Box::new(descriptor),
                    Box::new(inner),
                    cost,
                ))
            }
            code if known_code(code) => Ok(Constructor::Primitive(code)),
            code => Err(Error::UnknownFormatCode(code)),
        }
    }

    fn element(
        &mut self,
        constructor: &Constructor,
        input: &mut &[u8],
        depth: usize,
    ) -> Result<Value, Error> {
        self.charge(1)?;
        match constructor {
            Constructor::Primitive(code) => self.primitive(*code, input, depth),
            Constructor::Described(descriptor, inner, cost) => {
                self.charge(*cost)?;
                let value = self.element(inner, input, depth)?;
                Ok(Value::Described(descriptor.clone(), Box::new(value)))
            }
        }
    }
}

impl Value {
    /// Decodes the value at the start of `bytes`; returns it and how many bytes it took.
    ///
    /// # Errors
    /// Truncated or malformed input, an unknown format code, nesting deeper than
    /// [`MAX_DEPTH`], or element counts out of proportion to the input.
    pub fn decode(bytes: &[u8]) -> Result<(Value, usize), Error> {
        let mut input = bytes;
        let value = Decoder::new(bytes.len()).value(&mut input, 0)?;
        Ok((value, bytes.len() - input.len()))
    }

    /// Appends the value's encoding (compact forms, see the module documentation).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Value::Null => out.push(0x40),
            Value::Boolean(b) => out.push(if *b { 0x41 } else { 0x42 }),
            Value::Ubyte(v) => out.extend([0x50, *v]),
            Value::Ushort(v) => {
                out.push(0x60);
                out.extend(v.to_be_bytes());
            }
            Value::Uint(0) => out.push(0x43),
            Value::Uint(v) => match u8::try_from(*v) {
                Ok(small) => out.extend([0x52, small]),
                Err(_) => {
                    out.push(0x70);
                    out.extend(v.to_be_bytes());
                }
            },
            Value::Ulong(0) => out.push(0x44),
            Value::Ulong(v) => match u8::try_from(*v) {
                Ok(small) => out.extend([0x53, small]),
                Err(_) => {
                    out.push(0x80);
                    out.extend(v.to_be_bytes());
                }
            },
            Value::Byte(v) => {
                out.push(0x51);
                out.extend(v.to_be_bytes());
            }
            Value::Short(v) => {
                out.push(0x61);
                out.extend(v.to_be_bytes());
            }
            Value::Int(v) => match i8::try_from(*v) {
                Ok(small) => {
                    out.push(0x54);
                    out.extend(small.to_be_bytes());
                }
                Err(_) => {
                    out.push(0x71);
                    out.extend(v.to_be_bytes());
                }
            },
            Value::Long(v) => match i8::try_from(*v) {
                Ok(small) => {
                    out.push(0x55);
                    out.extend(small.to_be_bytes());
                }
                Err(_) => {
                    out.push(0x81);
                    out.extend(v.to_be_bytes());
                }
            },
            Value::List(items) if items.is_empty() => out.push(0x45),
            Value::List(items) => write_list(out, Some((0xc0, 0xd0)), items),
            Value::Map(pairs) => write_map(out, Some((0xc1, 0xd1)), pairs),
            Value::Array(items) => {
                if homogeneous(items) {
                    write_array(out, Some((0xe0, 0xf0)), items);
                } else {
                    write_list(out, Some((0xc0, 0xd0)), items);
                }
            }
            Value::Described(descriptor, value) => {
                out.push(0x00);
                descriptor.encode(out);
                value.encode(out);
            }
            Value::Binary(b) => write_variable(out, 0xa0, 0xb0, b),
            Value::String(s) => write_variable(out, 0xa1, 0xb1, s.as_bytes()),
            Value::Symbol(s) => write_variable(out, 0xa3, 0xb3, s.as_bytes()),
            // Fixed-width values with a single encoding: the array form plus its code.
            other => {
                out.push(array_code(other));
                write_element(out, other);
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Encoding

fn u32_of(n: usize) -> [u8; 4] {
    u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes()
}

fn write_variable(out: &mut Vec<u8>, short: u8, long: u8, bytes: &[u8]) {
    match u8::try_from(bytes.len()) {
        Ok(len) => out.extend([short, len]),
        Err(_) => {
            out.push(long);
            out.extend(u32_of(bytes.len()));
        }
    }
    out.extend_from_slice(bytes);
}

/// Writes a compound value: its constructor (`codes`: the 8-bit and 32-bit forms; the
/// 8-bit one when size and count fit, as RabbitMQ chooses) or, for an array element
/// (`None`), only the 32-bit size and count; then what `items` writes.
fn write_compound(
    out: &mut Vec<u8>,
    codes: Option<(u8, u8)>,
    count: usize,
    items: impl FnOnce(&mut Vec<u8>),
) {
    let start = out.len();
    out.extend([0; 9]);
    items(out);
    let content = out.len() - start - 9;
    match (codes, u8::try_from(count), u8::try_from(content + 1)) {
        (Some((short, _)), Ok(count), Ok(size)) if count < 255 => {
            out[start..start + 3].copy_from_slice(&[short, size, count]);
            out.copy_within(start + 9.., start + 3);
            out.truncate(out.len() - 6);
        }
        (Some((_, long)), _, _) => {
            out[start] = long;
            out[start + 1..start + 5].copy_from_slice(&u32_of(content + 4));
            out[start + 5..start + 9].copy_from_slice(&u32_of(count));
        }
        (None, _, _) => {
            out[start..start + 4].copy_from_slice(&u32_of(content + 4));
            out[start + 4..start + 8].copy_from_slice(&u32_of(count));
            out.copy_within(start + 9.., start + 8);
            out.truncate(out.len() - 1);
        }
    }
}

fn write_list(out: &mut Vec<u8>, codes: Option<(u8, u8)>, items: &[Value]) {
    write_compound(out, codes, items.len(), |out| {
        for item in items {
            item.encode(out);
        }
    });
}

fn write_map(out: &mut Vec<u8>, codes: Option<(u8, u8)>, pairs: &[(Value, Value)]) {
    write_compound(out, codes, pairs.len().saturating_mul(2), |out| {
        for (key, value) in pairs {
            key.encode(out);
            value.encode(out);
        }
    });
}

/// An array of `items`, which [`homogeneous`] accepted; an empty one gets the `null`
/// constructor.
fn write_array(out: &mut Vec<u8>, codes: Option<(u8, u8)>, items: &[Value]) {
    write_compound(out, codes, items.len(), |out| {
        match items.first() {
            Some(first) => write_constructor(out, first),
            None => out.push(0x40),
        }
        for item in items {
            write_element(out, item);
        }
    });
}

/// The full-width constructor of `v` as an array element (`0x00` for a described one).
fn array_code(v: &Value) -> u8 {
    match v {
        Value::Null => 0x40,
        Value::Boolean(_) => 0x56,
        Value::Ubyte(_) => 0x50,
        Value::Ushort(_) => 0x60,
        Value::Uint(_) => 0x70,
        Value::Ulong(_) => 0x80,
        Value::Byte(_) => 0x51,
        Value::Short(_) => 0x61,
        Value::Int(_) => 0x71,
        Value::Long(_) => 0x81,
        Value::Float(_) => 0x72,
        Value::Double(_) => 0x82,
        Value::Decimal32(_) => 0x74,
        Value::Decimal64(_) => 0x84,
        Value::Decimal128(_) => 0x94,
        Value::Char(_) => 0x73,
        Value::Timestamp(_) => 0x83,
        Value::Uuid(_) => 0x98,
        Value::Binary(_) => 0xb0,
        Value::String(_) => 0xb1,
        Value::Symbol(_) => 0xb3,
        Value::List(_) => 0xd0,
        Value::Map(_) => 0xd1,
        Value::Array(_) => 0xf0,
        Value::Described(..) => 0x00,
    }
}

/// Whether two elements share an array constructor.
fn same_constructor(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Described(da, va), Value::Described(db, vb)) => {
            da == db && same_constructor(va, vb)
        }
        _ => array_code(a) != 0x00 && array_code(a) == array_code(b),
    }
}

/// Whether `v`, as an array element, can be written with its constructor: the arrays
/// it holds directly (not inside lists or maps, which encode themselves) are
/// homogeneous.
fn element_ok(v: &Value) -> bool {
    match v {
        Value::Array(items) => homogeneous(items),
        Value::Described(_, inner) => element_ok(inner),
        _ => true,
    }
}

/// Whether `items` can be written as an array (one constructor for all).
fn homogeneous(items: &[Value]) -> bool {
    match items.split_first() {
        None => true,
        Some((first, rest)) => {
            element_ok(first)
                && rest
                    .iter()
                    .all(|v| same_constructor(first, v) && element_ok(v))
        }
    }
}

fn write_constructor(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Described(descriptor, inner) => {
            out.push(0x00);
            descriptor.encode(out);
            write_constructor(out, inner);
        }
        other => out.push(array_code(other)),
    }
}

/// Writes `v` without its constructor, in the form [`array_code`] names.
fn write_element(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => {}
        Value::Boolean(b) => out.push(u8::from(*b)),
        Value::Ubyte(n) => out.push(*n),
        Value::Ushort(n) => out.extend(n.to_be_bytes()),
        Value::Uint(n) => out.extend(n.to_be_bytes()),
        Value::Ulong(n) => out.extend(n.to_be_bytes()),
        Value::Byte(n) => out.extend(n.to_be_bytes()),
        Value::Short(n) => out.extend(n.to_be_bytes()),
        Value::Int(n) => out.extend(n.to_be_bytes()),
        Value::Long(n) => out.extend(n.to_be_bytes()),
        Value::Float(n) => out.extend(n.to_be_bytes()),
        Value::Double(n) => out.extend(n.to_be_bytes()),
        Value::Decimal32(b) => out.extend(b),
        Value::Decimal64(b) => out.extend(b),
        Value::Decimal128(b) => out.extend(b),
        Value::Char(c) => out.extend(c.to_be_bytes()),
        Value::Timestamp(t) => out.extend(t.to_be_bytes()),
        Value::Uuid(u) => out.extend(u),
        Value::Binary(b) => {
            out.extend(u32_of(b.len()));
            out.extend_from_slice(b);
        }
        Value::String(s) | Value::Symbol(s) => {
            out.extend(u32_of(s.len()));
            out.extend_from_slice(s.as_bytes());
        }
        Value::List(items) => write_list(out, None, items),
        Value::Map(pairs) => write_map(out, None, pairs),
        Value::Array(items) => write_array(out, None, items),
        Value::Described(_, inner) => write_element(out, inner),
    }
}

fn write_section(out: &mut Vec<u8>, code: u64) {
    // Section codes are below 0x100: smallulong.
    out.extend([0x00, 0x53, u8::try_from(code).unwrap_or(0)]);
}

/// A composite type's fields as a list, trailing absent (or null) fields left out.
fn write_fields(out: &mut Vec<u8>, fields: &[Option<Value>]) {
    let n = fields
        .iter()
        .rposition(|f| f.as_ref().is_some_and(|v| *v != Value::Null))
        .map_or(0, |i| i + 1);
    if n == 0 {
        out.push(0x45);
        return;
    }
    write_compound(out, Some((0xc0, 0xd0)), n, |out| {
        for field in &fields[..n] {
            match field {
                Some(v) => v.encode(out),
                None => out.push(0x40),
            }
        }
    });
}

fn write_header(out: &mut Vec<u8>, h: &Header) {
    write_section(out, HEADER);
    write_fields(
        out,
        &[
            h.durable.map(Value::Boolean),
            h.priority.map(Value::Ubyte),
            h.ttl.map(Value::Uint),
            h.first_acquirer.map(Value::Boolean),
            h.delivery_count.map(Value::Uint),
        ],
    );
}

fn write_properties(out: &mut Vec<u8>, p: &Properties) {
    write_section(out, PROPERTIES);
    let string = |s: &Option<String>| s.clone().map(Value::String);
    let symbol = |s: &Option<String>| s.clone().map(Value::Symbol);
    write_fields(
        out,
        &[
            p.message_id.clone(),
            p.user_id.clone().map(Value::Binary),
            string(&p.to),
            string(&p.subject),
            string(&p.reply_to),
            p.correlation_id.clone(),
            symbol(&p.content_type),
            symbol(&p.content_encoding),
            p.absolute_expiry_time.map(Value::Timestamp),
            p.creation_time.map(Value::Timestamp),
            string(&p.group_id),
            p.group_sequence.map(Value::Uint),
            string(&p.reply_to_group_id),
        ],
    );
}

fn write_application_properties(out: &mut Vec<u8>, pairs: &[(String, Value)]) {
    write_section(out, APPLICATION_PROPERTIES);
    write_compound(
        out,
        Some((0xc1, 0xd1)),
        pairs.len().saturating_mul(2),
        |out| {
            for (key, value) in pairs {
                write_variable(out, 0xa1, 0xb1, key.as_bytes());
                value.encode(out);
            }
        },
    );
}

fn write_annotations(out: &mut Vec<u8>, code: u64, pairs: &[(Value, Value)]) {
    write_section(out, code);
    write_map(out, Some((0xc1, 0xd1)), pairs);
}

fn write_body(out: &mut Vec<u8>, body: &Body) {
    match body {
        Body::Data(parts) => {
            for part in parts {
                write_section(out, DATA);
                write_variable(out, 0xa0, 0xb0, part);
            }
        }
        Body::Sequence(sequences) => {
            for items in sequences {
                write_section(out, AMQP_SEQUENCE);
                if items.is_empty() {
                    out.push(0x45);
                } else {
                    write_list(out, Some((0xc0, 0xd0)), items);
                }
            }
        }
        Body::Value(v) => {
            write_section(out, AMQP_VALUE);
            v.encode(out);
        }
    }
}

/// Encodes a message: the sections that are present, in the standard order.
pub fn encode(m: &Amqp10Message) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(m, &mut out);
    out
}

/// [`encode`] appending to `out`.
pub fn encode_into(m: &Amqp10Message, out: &mut Vec<u8>) {
    if let Some(h) = &m.header {
        write_header(out, h);
    }
    if !m.delivery_annotations.is_empty() {
        write_annotations(out, DELIVERY_ANNOTATIONS, &m.delivery_annotations);
    }
    if !m.message_annotations.is_empty() {
        write_annotations(out, MESSAGE_ANNOTATIONS, &m.message_annotations);
    }
    if let Some(p) = &m.properties {
        write_properties(out, p);
    }
    if !m.application_properties.is_empty() {
        write_application_properties(out, &m.application_properties);
    }
    write_body(out, &m.body);
    if let Some(footer) = &m.footer {
        write_annotations(out, FOOTER, footer);
    }
}

// ---------------------------------------------------------------------------------
// Message sections

/// The section code a descriptor names (numeric or symbolic).
fn section_code(descriptor: &Value) -> Option<u64> {
    match descriptor {
        Value::Ulong(code @ HEADER..=FOOTER) => Some(*code),
        Value::Symbol(name) => Some(match name.as_str() {
            "amqp:header:list" => HEADER,
            "amqp:delivery-annotations:map" => DELIVERY_ANNOTATIONS,
            "amqp:message-annotations:map" => MESSAGE_ANNOTATIONS,
            "amqp:properties:list" => PROPERTIES,
            "amqp:application-properties:map" => APPLICATION_PROPERTIES,
            "amqp:data:binary" => DATA,
            "amqp:amqp-sequence:list" => AMQP_SEQUENCE,
            "amqp:amqp-value:*" => AMQP_VALUE,
            "amqp:footer:map" => FOOTER,
            _ => return None,
        }),
        _ => None,
    }
}

/// The fields of a composite section (a list), read in order.
struct Fields {
    items: std::vec::IntoIter<Value>,
    wrong_type: &'static str,
}

impl Fields {
    fn new(v: Value, not_a_list: &'static str, wrong_type: &'static str) -> Result<Self, Error> {
        match v {
            Value::List(items) => Ok(Fields {
                items: items.into_iter(),
                wrong_type,
            }),
            _ => Err(Error::InvalidMessage(not_a_list)),
        }
    }

    /// The next field (`null` or missing: absent), converted by `conv`.
    fn next<T>(&mut self, conv: fn(Value) -> Option<T>) -> Result<Option<T>, Error> {
        match self.items.next() {
            None | Some(Value::Null) => Ok(None),
            Some(v) => conv(v)
                .map(Some)
                .ok_or(Error::InvalidMessage(self.wrong_type)),
        }
    }
}

fn unsigned(v: &Value) -> Option<u64> {
    match *v {
        Value::Ubyte(n) => Some(n.into()),
        Value::Ushort(n) => Some(n.into()),
        Value::Uint(n) => Some(n.into()),
        Value::Ulong(n) => Some(n),
        Value::Byte(n) => u64::try_from(n).ok(),
        Value::Short(n) => u64::try_from(n).ok(),
        Value::Int(n) => u64::try_from(n).ok(),
        Value::Long(n) => u64::try_from(n).ok(),
        _ => None,
    }
}

fn as_bool(v: Value) -> Option<bool> {
    match v {
        Value::Boolean(b) => Some(b),
        _ => None,
    }
}

fn as_u8(v: Value) -> Option<u8> {
    u8::try_from(unsigned(&v)?).ok()
}

fn as_u32(v: Value) -> Option<u32> {
    u32::try_from(unsigned(&v)?).ok()
}

fn as_any(v: Value) -> Option<Value> {
    Some(v)
}

fn as_binary(v: Value) -> Option<Vec<u8>> {
    match v {
        Value::Binary(b) => Some(b),
        _ => None,
    }
}

/// A string or symbol field (either is accepted for either).
fn as_string(v: Value) -> Option<String> {
    match v {
        Value::String(s) | Value::Symbol(s) => Some(s),
        _ => None,
    }
}

fn as_timestamp(v: Value) -> Option<i64> {
    match v {
        Value::Timestamp(t) | Value::Long(t) => Some(t),
        Value::Ulong(t) => i64::try_from(t).ok(),
        _ => None,
    }
}

fn header_from(v: Value) -> Result<Header, Error> {
    let mut f = Fields::new(
        v,
        "the header is not a list",
        "a header field has the wrong type",
    )?;
    Ok(Header {
        durable: f.next(as_bool)?,
        priority: f.next(as_u8)?,
        ttl: f.next(as_u32)?,
        first_acquirer: f.next(as_bool)?,
        delivery_count: f.next(as_u32)?,
    })
}

fn properties_from(v: Value) -> Result<Properties, Error> {
    let mut f = Fields::new(
        v,
        "the properties are not a list",
        "a properties field has the wrong type",
    )?;
    Ok(Properties {
        message_id: f.next(as_any)?,
        user_id: f.next(as_binary)?,
        to: f.next(as_string)?,
        subject: f.next(as_string)?,
        reply_to: f.next(as_string)?,
        correlation_id: f.next(as_any)?,
        content_type: f.next(as_string)?,
        content_encoding: f.next(as_string)?,
        absolute_expiry_time: f.next(as_timestamp)?,
        creation_time: f.next(as_timestamp)?,
        group_id: f.next(as_string)?,
        group_sequence: f.next(as_u32)?,
        reply_to_group_id: f.next(as_string)?,
    })
}

fn annotations_from(v: Value) -> Result<Vec<(Value, Value)>, Error> {
    match v {
        Value::Map(pairs) => Ok(pairs),
        Value::Null => Ok(Vec::new()),
        _ => Err(Error::InvalidMessage(
            "an annotations or footer section is not a map",
        )),
    }
}

fn application_properties_from(v: Value) -> Result<Vec<(String, Value)>, Error> {
    match v {
        Value::Map(pairs) => pairs
            .into_iter()
            .map(|(k, v)| match k {
                Value::String(k) | Value::Symbol(k) => Ok((k, v)),
                _ => Err(Error::InvalidMessage(
                    "an application property key is not a string",
                )),
            })
            .collect(),
        Value::Null => Ok(Vec::new()),
        _ => Err(Error::InvalidMessage(
            "the application properties are not a map",
        )),
    }
}

/// Where a section may appear: sections come in this order, each once, except body
/// sections.
fn rank(code: u64) -> u64 {
    match code {
        DATA | AMQP_SEQUENCE | AMQP_VALUE => DATA,
        other => other,
    }
}

/// Decodes the sections in `bytes`, which must not start before `first` (a rank).
fn decode_sections(bytes: &[u8], first: u64) -> Result<Amqp10Message, Error> {
    let mut decoder = Decoder::new(bytes.len());
    let mut input = bytes;
    let mut m = Amqp10Message::default();
    let mut last: Option<u64> = None;
    let mut body_code: Option<u64> = None;
    while !input.is_empty() {
        let Value::Described(descriptor, content) = decoder.value(&mut input, 0)? else {
            return Err(Error::InvalidMessage(
                "a message section is not a described value",
            ));
        };
        let code =
            section_code(&descriptor).ok_or(Error::InvalidMessage("unknown message section"))?;
        let r = rank(code);
        if r < first || last.is_some_and(|l| r < l || (r == l && r != DATA)) {
            return Err(Error::InvalidMessage(
                "message sections out of order or repeated",
            ));
        }
        last = Some(r);
        let content = *content;
        match code {
            HEADER => m.header = Some(header_from(content)?),
            DELIVERY_ANNOTATIONS => m.delivery_annotations = annotations_from(content)?,
            MESSAGE_ANNOTATIONS => m.message_annotations = annotations_from(content)?,
            PROPERTIES => m.properties = Some(properties_from(content)?),
            APPLICATION_PROPERTIES => {
                m.application_properties = application_properties_from(content)?
            }
            FOOTER => m.footer = Some(annotations_from(content)?),
            _ => {
                if body_code.is_some_and(|b| b != code || b == AMQP_VALUE) {
                    return Err(Error::InvalidMessage(
                        "a body mixes section kinds or has two amqp-value sections",
                    ));
                }
                body_code = Some(code);
                match (code, content, &mut m.body) {
                    (DATA, Value::Binary(b), Body::Data(parts)) => parts.push(b),
                    (DATA, _, _) => {
                        return Err(Error::InvalidMessage("a data section is not binary"))
                    }
                    (AMQP_SEQUENCE, Value::List(items), Body::Sequence(seqs)) => seqs.push(items),
                    (AMQP_SEQUENCE, Value::List(items), body) => {
                        *body = Body::Sequence(vec![items])
                    }
                    (AMQP_SEQUENCE, _, _) => {
                        return Err(Error::InvalidMessage(
                            "an amqp-sequence section is not a list",
                        ))
                    }
                    (_, v, body) => *body = Body::Value(v),
                }
            }
        }
    }
    Ok(m)
}

/// Decodes an AMQP 1.0 message (its sections, back to back).
///
/// # Errors
/// Bytes that are not AMQP 1.0 values ([`Value::decode`]'s errors), values that are
/// not message sections, sections out of order or repeated, or fields of the wrong
/// type.
pub fn decode(bytes: &[u8]) -> Result<Amqp10Message, Error> {
    decode_sections(bytes, HEADER)
}

// ---------------------------------------------------------------------------------
// AMQP 0-9-1 values

fn short(s: &str) -> Option<ShortString> {
    ShortString::try_new(s).ok()
}

/// A header value for `v` (RabbitMQ's `mc_amqpl:to_091/2`), `None` if it has none.
fn to_091(v: &Value, depth: usize) -> Option<AMQPValue> {
    if depth > MAX_091_DEPTH {
        return None;
    }
    Some(match v {
        Value::String(s) | Value::Symbol(s) => {
            AMQPValue::LongString(LongString::from(s.as_bytes()))
        }
        Value::Binary(b) => AMQPValue::LongString(LongString::from(b.as_slice())),
        Value::Boolean(b) => AMQPValue::Boolean(*b),
        Value::Byte(n) => AMQPValue::ShortShortInt(*n),
        Value::Ubyte(n) => AMQPValue::ShortShortUInt(*n),
        Value::Short(n) => AMQPValue::ShortInt(*n),
        Value::Ushort(n) => AMQPValue::ShortUInt(*n),
        Value::Int(n) => AMQPValue::LongInt(*n),
        Value::Uint(n) => AMQPValue::LongUInt(*n),
        Value::Long(n) => AMQPValue::LongLongInt(*n),
        Value::Ulong(n) => AMQPValue::LongLongInt(i64::try_from(*n).ok()?),
        Value::Float(n) => AMQPValue::Float(*n),
        Value::Double(n) => AMQPValue::Double(*n),
        Value::Timestamp(ms) => AMQPValue::Timestamp(u64::try_from(*ms).ok()? / 1000),
        Value::Null => AMQPValue::Void,
        Value::List(items) | Value::Array(items) => AMQPValue::FieldArray(FieldArray::from(
            items
                .iter()
                .filter_map(|v| to_091(v, depth + 1))
                .collect::<Vec<_>>(),
        )),
        Value::Map(pairs) => {
            let mut table = BTreeMap::new();
            for (k, v) in pairs {
                let (Value::String(k) | Value::Symbol(k)) = k else {
                    continue;
                };
                if let (Some(k), Some(v)) = (short(k), to_091(v, depth + 1)) {
                    table.insert(k, v);
                }
            }
            AMQPValue::FieldTable(FieldTable::from(table))
        }
        Value::Decimal32(_)
        | Value::Decimal64(_)
        | Value::Decimal128(_)
        | Value::Char(_)
        | Value::Uuid(_)
        | Value::Described(..) => return None,
    })
}

/// UTF-8 without NUL: what RabbitMQ takes for a string in a longstr.
fn text(bytes: &[u8]) -> Option<&str> {
    std::str::from_utf8(bytes)
        .ok()
        .filter(|s| !s.contains('\0'))
}

/// The AMQP 1.0 value for a header value (RabbitMQ's `mc_amqpl:from_091/2`).
fn from_091(v: &AMQPValue, depth: usize) -> Option<Value> {
    if depth > MAX_FROM_091_DEPTH {
        return None;
    }
    Some(match v {
        AMQPValue::Boolean(b) => Value::Boolean(*b),
        AMQPValue::ShortShortInt(n) => Value::Byte(*n),
        AMQPValue::ShortShortUInt(n) => Value::Ubyte(*n),
        AMQPValue::ShortInt(n) => Value::Short(*n),
        AMQPValue::ShortUInt(n) => Value::Ushort(*n),
        AMQPValue::LongInt(n) => Value::Int(*n),
        AMQPValue::LongUInt(n) => Value::Uint(*n),
        AMQPValue::LongLongInt(n) => Value::Long(*n),
        AMQPValue::Float(n) => Value::Float(*n),
        AMQPValue::Double(n) => Value::Double(*n),
        AMQPValue::DecimalValue(_) => return None,
        AMQPValue::ShortString(s) => Value::String(s.as_str().to_owned()),
        AMQPValue::LongString(s) => match text(s.as_bytes()) {
            Some(t) => Value::String(t.to_owned()),
            None => Value::Binary(s.as_bytes().to_vec()),
        },
        AMQPValue::FieldArray(a) => Value::List(
            a.as_slice()
                .iter()
                .filter_map(|v| from_091(v, depth + 1))
                .collect(),
        ),
        AMQPValue::Timestamp(s) => Value::Timestamp(i64::try_from(*s).ok()?.checked_mul(1000)?),
        AMQPValue::FieldTable(t) => Value::Map(
            t.inner()
                .iter()
                .filter_map(|(k, v)| {
                    Some((
                        Value::Symbol(k.as_str().to_owned()),
                        from_091(v, depth + 1)?,
                    ))
                })
                .collect(),
        ),
        AMQPValue::ByteArray(b) => Value::Binary(b.as_slice().to_vec()),
        AMQPValue::Void => Value::Null,
    })
}

fn urn_uuid(u: &[u8; 16]) -> String {
    let mut s = String::with_capacity(45);
    s.push_str("urn:uuid:");
    for (i, b) in u.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// The uuid in `urn:uuid:xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (either case).
fn parse_urn_uuid(s: &str) -> Option<[u8; 16]> {
    let rest = s.strip_prefix("urn:uuid:")?.as_bytes();
    if rest.len() != 36 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; 16];
    let mut n = 0;
    let mut i = 0;
    while i < rest.len() {
        let c = *rest.get(i)?;
        if matches!(i, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return None;
            }
            i += 1;
            continue;
        }
        let lo = nibble(*rest.get(i + 1)?)?;
        *out.get_mut(n)? = (nibble(c)? << 4) | lo;
        n += 1;
        i += 2;
    }
    (n == 16).then_some(out)
}

/// A message or correlation id as a 0-9-1 property; a binary id, or a string id too
/// long for one, goes to header `header` instead (RabbitMQ 4's `message_id/3`).
fn id_to_091(
    id: Option<&Value>,
    header: &str,
    headers: &mut BTreeMap<ShortString, AMQPValue>,
) -> Option<ShortString> {
    match id? {
        Value::Uuid(u) => short(&urn_uuid(u)),
        Value::Ulong(n) => short(&n.to_string()),
        Value::String(s) => short(s).or_else(|| {
            headers.insert(
                short(header)?,
                AMQPValue::LongString(LongString::from(s.as_bytes())),
            );
            None
        }),
        Value::Binary(b) => {
            headers.insert(
                short(header)?,
                AMQPValue::ByteArray(ByteArray::from(b.as_slice())),
            );
            None
        }
        _ => None,
    }
}

/// The reverse of [`id_to_091`]: the property, else the header (and whether the header
/// was used).
fn id_from_091(prop: Option<&ShortString>, header: Option<&AMQPValue>) -> (Option<Value>, bool) {
    if let Some(s) = prop {
        let id = match parse_urn_uuid(s.as_str()) {
            Some(u) => Value::Uuid(u),
            None => Value::String(s.as_str().to_owned()),
        };
        return (Some(id), false);
    }
    match header {
        Some(AMQPValue::LongString(s)) => {
            let id = match std::str::from_utf8(s.as_bytes()) {
                Ok(t) => Value::String(t.to_owned()),
                Err(_) => Value::Binary(s.as_bytes().to_vec()),
            };
            (Some(id), true)
        }
        Some(AMQPValue::ByteArray(b)) => (Some(Value::Binary(b.as_slice().to_vec())), true),
        _ => (None, false),
    }
}

/// Header names RabbitMQ keeps for itself when turning annotations into headers.
fn internal_annotation(name: &str) -> bool {
    name.starts_with("x-basic-") || matches!(name, "x-routing-key" | "x-exchange" | "x-death")
}

/// Header names the conversion itself writes, never copied from the message.
fn reserved_header(name: &str) -> bool {
    matches!(
        name,
        PROPERTIES_HEADER
            | APP_PROPERTIES_HEADER
            | ANNOTATIONS_HEADER
            | FOOTER_HEADER
            | MESSAGE_ID_HEADER
            | CORRELATION_ID_HEADER
    )
}

fn annotation<'a>(m: &'a Amqp10Message, name: &str) -> Option<&'a Value> {
    m.message_annotations
        .iter()
        .find(|(k, _)| matches!(k, Value::Symbol(s) if s == name))
        .map(|(_, v)| v)
}

fn annotation_text(m: &Amqp10Message, name: &str) -> Option<ShortString> {
    match annotation(m, name)? {
        Value::String(s) | Value::Symbol(s) => short(s),
        _ => None,
    }
}

fn raw_properties(p: &AMQPProperties) -> Bytes {
    gen_properties(p)(WriteContext::from(Vec::new()))
        .map(|c| Bytes::from(c.write))
        .unwrap_or_else(|_| Bytes::from_static(&[0, 0]))
}

/// Converts a message to AMQP 0-9-1: its raw properties (flags and list, as
/// amq-protocol's `gen_properties` writes them) and its body. See the module
/// documentation for the mapping.
pub fn to_amqp091(m: &Amqp10Message) -> (Bytes, Bytes) {
    let (body, amqp10_body) = match &m.body {
        Body::Data(parts) => (parts.concat(), false),
        Body::Sequence(seqs) if seqs.is_empty() => (Vec::new(), false),
        other => {
            let mut out = Vec::new();
            write_body(&mut out, other);
            if let Some(footer) = &m.footer {
                write_annotations(&mut out, FOOTER, footer);
            }
            (out, true)
        }
    };

    let mut p = AMQPProperties::default();
    let header = m.header.as_ref();
    let delivery_mode = match header.and_then(|h| h.durable) {
        Some(true) => Some(2),
        Some(false) => Some(1),
        // Only the modes 0-9-1 knows: Warren refuses others.
        None => annotation(m, "x-basic-delivery-mode")
            .and_then(|v| as_u8(v.clone()))
            .filter(|mode| matches!(mode, 1 | 2)),
    };
    if let Some(mode) = delivery_mode {
        p = p.with_delivery_mode(mode);
    }
    let priority = header
        .and_then(|h| h.priority)
        .or_else(|| annotation(m, "x-basic-priority").and_then(|v| as_u8(v.clone())));
    if let Some(priority) = priority {
        p = p.with_priority(priority);
    }
    let expiration = match header.and_then(|h| h.ttl) {
        Some(ttl) => short(&ttl.to_string()),
        // Only what 0-9-1 accepts: a count of milliseconds.
        None => {
            annotation_text(m, "x-basic-expiration").filter(|e| e.as_str().parse::<u32>().is_ok())
        }
    };
    if let Some(expiration) = expiration {
        p = p.with_expiration(expiration);
    }
    let kind = if amqp10_body {
        short(AMQP10_TYPE)
    } else {
        annotation_text(m, "x-basic-type")
    };
    if let Some(kind) = kind {
        p = p.with_type(kind);
    }

    // Application properties, then the id headers, then annotations: a later insert
    // wins, as the first of RabbitMQ's duplicate headers does.
    let mut headers = BTreeMap::new();
    for (k, v) in &m.application_properties {
        if reserved_header(k) {
            continue;
        }
        if let (Some(k), Some(v)) = (short(k), to_091(v, 1)) {
            headers.insert(k, v);
        }
    }
    if let Some(props) = &m.properties {
        if let Some(id) = id_to_091(props.message_id.as_ref(), MESSAGE_ID_HEADER, &mut headers) {
            p = p.with_message_id(id);
        }
        if let Some(id) = id_to_091(
            props.correlation_id.as_ref(),
            CORRELATION_ID_HEADER,
            &mut headers,
        ) {
            p = p.with_correlation_id(id);
        }
        let user_id = props.user_id.as_deref().and_then(text).and_then(short);
        if let Some(user_id) = user_id {
            p = p.with_user_id(user_id);
        }
        if let Some(reply_to) = props.reply_to.as_deref().and_then(short) {
            p = p.with_reply_to(reply_to);
        }
        if let Some(content_type) = props.content_type.as_deref().and_then(short) {
            p = p.with_content_type(content_type);
        }
        if let Some(encoding) = props.content_encoding.as_deref().and_then(short) {
            p = p.with_content_encoding(encoding);
        }
        if let Some(ms) = props.creation_time.and_then(|t| u64::try_from(t).ok()) {
            p = p.with_timestamp(ms / 1000);
        }
        if let Some(group) = props.group_id.as_deref().and_then(short) {
            p = p.with_app_id(group);
        }
    }
    for (k, v) in &m.message_annotations {
        let Value::Symbol(k) = k else {
            continue;
        };
        let converted = match k.as_str() {
            "x-cc" if matches!(v, Value::List(_) | Value::Array(_)) => {
                short("CC").zip(to_091(v, 1))
            }
            "x-opt-rabbitmq-received-time" => match v {
                Value::Timestamp(ts) => {
                    short("timestamp_in_ms").map(|k| (k, AMQPValue::LongLongInt(*ts)))
                }
                _ => None,
            },
            name if name.starts_with("x-")
                && !internal_annotation(name)
                && !reserved_header(name) =>
            {
                short(name).zip(to_091(v, 1))
            }
            _ => None,
        };
        if let Some((k, v)) = converted {
            headers.insert(k, v);
        }
    }
    // Keep what the mapping loses (see the module documentation).
    let rebuilt = meta_from_091(&p, &headers, amqp10_body);
    let mut kept: Vec<(&str, Vec<u8>)> = Vec::new();
    if !same_properties(m.properties.as_ref(), rebuilt.properties.as_ref()) {
        let mut out = Vec::new();
        write_properties(
            &mut out,
            m.properties.as_ref().unwrap_or(&Properties::default()),
        );
        kept.push((PROPERTIES_HEADER, out));
    }
    if !same_application_properties(&m.application_properties, &rebuilt.application_properties) {
        let mut out = Vec::new();
        write_application_properties(&mut out, &m.application_properties);
        kept.push((APP_PROPERTIES_HEADER, out));
    }
    if !same_annotations(&m.message_annotations, &rebuilt.message_annotations) {
        let mut out = Vec::new();
        write_annotations(&mut out, MESSAGE_ANNOTATIONS, &m.message_annotations);
        kept.push((ANNOTATIONS_HEADER, out));
    }
    if let (false, Some(footer)) = (amqp10_body, &m.footer) {
        let mut out = Vec::new();
        write_annotations(&mut out, FOOTER, footer);
        kept.push((FOOTER_HEADER, out));
    }
    for (name, bytes) in kept {
        if let Some(name) = short(name) {
            headers.insert(name, AMQPValue::ByteArray(ByteArray::from(bytes)));
        }
    }
    if !headers.is_empty() {
        p = p.with_headers(FieldTable::from(headers));
    }
    (raw_properties(&p), Bytes::from(body))
}

fn same_properties(a: Option<&Properties>, b: Option<&Properties>) -> bool {
    let empty = Properties::default();
    a.unwrap_or(&empty) == b.unwrap_or(&empty)
}

fn same_application_properties(a: &[(String, Value)], b: &[(String, Value)]) -> bool {
    let sorted = |pairs: &[(String, Value)]| {
        let mut v: Vec<(String, Value)> = pairs.to_vec();
        v.sort_by(|x, y| x.0.cmp(&y.0));
        v
    };
    a.len() == b.len() && sorted(a) == sorted(b)
}

fn same_annotations(a: &[(Value, Value)], b: &[(Value, Value)]) -> bool {
    let sorted = |pairs: &[(Value, Value)]| {
        let mut v: Vec<(Vec<u8>, Value)> = pairs
            .iter()
            .map(|(k, v)| {
                let mut key = Vec::new();
                k.encode(&mut key);
                (key, v.clone())
            })
            .collect();
        v.sort_by(|x, y| x.0.cmp(&y.0));
        v
    };
    a.len() == b.len() && sorted(a) == sorted(b)
}

/// Everything but the body, rebuilt from 0-9-1 properties.
struct Meta {
    header: Option<Header>,
    message_annotations: Vec<(Value, Value)>,
    properties: Option<Properties>,
    application_properties: Vec<(String, Value)>,
    footer: Option<Vec<(Value, Value)>>,
}

/// The section kept in header `name`, if it is there and decodes as section `code`.
fn kept_section(
    headers: &BTreeMap<ShortString, AMQPValue>,
    name: &str,
    code: u64,
) -> Option<Value> {
    let bytes = match headers.get(name)? {
        AMQPValue::ByteArray(b) => b.as_slice(),
        AMQPValue::LongString(s) => s.as_bytes(),
        _ => return None,
    };
    let mut input = bytes;
    let v = Decoder::new(bytes.len()).value(&mut input, 0).ok()?;
    match v {
        Value::Described(d, content) if input.is_empty() && section_code(&d) == Some(code) => {
            Some(*content)
        }
        _ => None,
    }
}

/// The sections other than the body for 0-9-1 properties `p` with headers `headers`
/// (those in `p` are not read); `amqp10_body` says that `type` = `amqp-1.0` was used up
/// by a body that decoded.
fn meta_from_091(
    p: &AMQPProperties,
    headers: &BTreeMap<ShortString, AMQPValue>,
    amqp10_body: bool,
) -> Meta {
    let mut used: Vec<&str> = Vec::new();

    let kept_properties =
        kept_section(headers, PROPERTIES_HEADER, PROPERTIES).and_then(|v| properties_from(v).ok());
    if kept_properties.is_some() {
        used.push(PROPERTIES_HEADER);
    }
    let kept_application_properties =
        kept_section(headers, APP_PROPERTIES_HEADER, APPLICATION_PROPERTIES)
            .and_then(|v| application_properties_from(v).ok());
    if kept_application_properties.is_some() {
        used.push(APP_PROPERTIES_HEADER);
    }
    let kept_annotations = kept_section(headers, ANNOTATIONS_HEADER, MESSAGE_ANNOTATIONS)
        .and_then(|v| annotations_from(v).ok());
    if kept_annotations.is_some() {
        used.push(ANNOTATIONS_HEADER);
    }
    let footer =
        kept_section(headers, FOOTER_HEADER, FOOTER).and_then(|v| annotations_from(v).ok());
    if footer.is_some() {
        used.push(FOOTER_HEADER);
    }

    let (message_id, used_message_id) =
        id_from_091(p.message_id().as_ref(), headers.get(MESSAGE_ID_HEADER));
    if used_message_id {
        used.push(MESSAGE_ID_HEADER);
    }
    let (correlation_id, used_correlation_id) = id_from_091(
        p.correlation_id().as_ref(),
        headers.get(CORRELATION_ID_HEADER),
    );
    if used_correlation_id {
        used.push(CORRELATION_ID_HEADER);
    }
    let owned = |s: &Option<ShortString>| s.as_ref().map(|s| s.as_str().to_owned());
    let mapped = Properties {
        message_id,
        user_id: p.user_id().as_ref().map(|u| u.as_str().as_bytes().to_vec()),
        reply_to: owned(p.reply_to()),
        correlation_id,
        content_type: owned(p.content_type()),
        content_encoding: owned(p.content_encoding()),
        creation_time: p
            .timestamp()
            .and_then(|s| i64::try_from(s).ok()?.checked_mul(1000)),
        group_id: owned(p.app_id()),
        ..Properties::default()
    };
    let properties = Some(kept_properties.unwrap_or(mapped)).filter(|p| !p.is_empty());

    let durable = p.delivery_mode().map(|mode| mode == 2);
    let priority = *p.priority();
    let ttl = p
        .expiration()
        .as_ref()
        .and_then(|e| e.as_str().parse::<u32>().ok());
    let header = (durable.is_some() || priority.is_some() || ttl.is_some()).then(|| Header {
        durable,
        priority,
        ttl,
        ..Header::default()
    });

    let mut annotations = Vec::new();
    if let (false, Some(kind)) = (amqp10_body, p.kind()) {
        annotations.push((
            Value::Symbol("x-basic-type".to_owned()),
            Value::String(kind.as_str().to_owned()),
        ));
    }
    let mut application_properties = Vec::new();
    for (k, v) in headers {
        let k = k.as_str();
        if used.contains(&k) {
            continue;
        }
        if k.starts_with("x-") {
            if let Some(v) = from_091(v, 1) {
                annotations.push((Value::Symbol(k.to_owned()), v));
            }
        } else if k == "CC" && matches!(v, AMQPValue::FieldArray(_)) {
            if let Some(v) = from_091(v, 1) {
                annotations.push((Value::Symbol("x-cc".to_owned()), v));
            }
        } else if !matches!(v, AMQPValue::FieldArray(_) | AMQPValue::FieldTable(_)) {
            if let Some(v) = from_091(v, 1) {
                application_properties.push((k.to_owned(), v));
            }
        }
    }
    Meta {
        header,
        message_annotations: kept_annotations.unwrap_or(annotations),
        properties,
        application_properties: kept_application_properties.unwrap_or(application_properties),
        footer,
    }
}

/// Converts a stored AMQP 0-9-1 message to AMQP 1.0, for a stream-protocol consumer.
/// See the module documentation for the mapping.
pub fn from_amqp091(m: &warren_broker::Message) -> Amqp10Message {
    let p = m.full_properties();
    let decoded = if p.kind().as_ref().map(ShortString::as_str) == Some(AMQP10_TYPE) {
        decode_sections(&m.body, DATA)
            .ok()
            .filter(|d| !matches!(&d.body, Body::Data(parts) if parts.is_empty()))
    } else {
        None
    };
    let empty = BTreeMap::new();
    let headers = p.headers().as_ref().map_or(&empty, FieldTable::inner);
    let meta = meta_from_091(&p, headers, decoded.is_some());
    let (body, footer) = match decoded {
        Some(d) => (d.body, d.footer),
        None => (Body::Data(vec![m.body.to_vec()]), meta.footer),
    };
    Amqp10Message {
        header: meta.header,
        delivery_annotations: Vec::new(),
        message_annotations: meta.message_annotations,
        properties: meta.properties,
        application_properties: meta.application_properties,
        body,
        footer,
    }
}

/// [`from_amqp091`] then [`encode_into`], less the message annotation `drop` (the
/// stream offset, which the chunk carries), without copying the body: what the stream
/// protocol sends for each stored message.
pub fn encode_from_amqp091_into(m: &warren_broker::Message, drop: &str, out: &mut Vec<u8>) {
    let keep = |(k, _): &(Value, Value)| !matches!(k, Value::Symbol(s) if s == drop);
    let p = m.full_properties();
    if p.kind().as_ref().map(ShortString::as_str) == Some(AMQP10_TYPE) {
        // AMQP 1.0 sections kept in the body: the general path.
        let mut converted = from_amqp091(m);
        converted.message_annotations.retain(keep);
        encode_into(&converted, out);
        return;
    }
    let empty = BTreeMap::new();
    let headers = p.headers().as_ref().map_or(&empty, FieldTable::inner);
    let mut meta = meta_from_091(&p, headers, false);
    meta.message_annotations.retain(keep);
    let sections = Amqp10Message {
        header: meta.header,
        delivery_annotations: Vec::new(),
        message_annotations: meta.message_annotations,
        properties: meta.properties,
        application_properties: meta.application_properties,
        // Written below, from the stored body.
        body: Body::Data(Vec::new()),
        footer: None,
    };
    encode_into(&sections, out);
    write_section(out, DATA);
    write_variable(out, 0xa0, 0xb0, &m.body);
    if let Some(footer) = &meta.footer {
        write_annotations(out, FOOTER, footer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use amq_protocol::types::DecimalValue;
    use warren_broker::Message;

    fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    fn enc(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        v.encode(&mut out);
        out
    }

    /// Decodes a whole value (all of `b`).
    fn dec(b: &[u8]) -> Result<Value, Error> {
        let (v, n) = Value::decode(b)?;
        assert_eq!(n, b.len(), "bytes left after {v:?}");
        Ok(v)
    }

    fn s(x: &str) -> Value {
        Value::String(x.into())
    }

    fn sym(x: &str) -> Value {
        Value::Symbol(x.into())
    }

    fn stored(m: &Amqp10Message) -> Message {
        let (props, body) = to_amqp091(m);
        Message::new("", "stream", props, body)
    }

    fn headers_of(msg: &Message) -> BTreeMap<String, AMQPValue> {
        msg.full_properties()
            .headers()
            .as_ref()
            .map(|h| {
                h.inner()
                    .iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn text_of(p: &Option<ShortString>) -> Option<&str> {
        p.as_ref().map(ShortString::as_str)
    }

    // --- codec ---------------------------------------------------------------

    #[test]
    fn encodings_match_the_spec() {
        let mut uuid = [0u8; 16];
        for (i, b) in uuid.iter_mut().enumerate() {
            *b = i as u8;
        }
        let cases: Vec<(Value, &str)> = vec![
            (Value::Null, "40"),
            (Value::Boolean(true), "41"),
            (Value::Boolean(false), "42"),
            (Value::Ubyte(200), "50 c8"),
            (Value::Ushort(0x0102), "60 01 02"),
            (Value::Uint(0), "43"),
            (Value::Uint(7), "52 07"),
            (Value::Uint(0x1234_5678), "70 12 34 56 78"),
            (Value::Ulong(0), "44"),
            (Value::Ulong(0x73), "53 73"),
            (Value::Ulong(1 << 40), "80 00 00 01 00 00 00 00 00"),
            (Value::Byte(-1), "51 ff"),
            (Value::Short(-2), "61 ff fe"),
            (Value::Int(-2), "54 fe"),
            (Value::Int(1000), "71 00 00 03 e8"),
            (Value::Long(-1), "55 ff"),
            (Value::Long(1 << 40), "81 00 00 01 00 00 00 00 00"),
            (Value::Float(1.0), "72 3f 80 00 00"),
            (Value::Double(1.0), "82 3f f0 00 00 00 00 00 00"),
            (Value::Decimal32([1, 2, 3, 4]), "74 01 02 03 04"),
            (Value::Decimal64([1; 8]), "84 0101010101010101"),
            (
                Value::Decimal128([2; 16]),
                "94 02020202020202020202020202020202",
            ),
            (Value::Char('a' as u32), "73 00 00 00 61"),
            (
                Value::Timestamp(1_700_000_000_000),
                "83 00 00 01 8b cf e5 68 00",
            ),
            (Value::Uuid(uuid), "98 000102030405060708090a0b0c0d0e0f"),
            (Value::Binary(vec![1, 2, 3]), "a0 03 01 02 03"),
            (s("hello"), "a1 05 68 65 6c 6c 6f"),
            (sym("text/plain"), "a3 0a 74 65 78 74 2f 70 6c 61 69 6e"),
            (Value::List(vec![]), "45"),
            (
                Value::List(vec![Value::Uint(1), Value::Null]),
                "c0 04 02 52 01 40",
            ),
            (Value::Map(vec![]), "c1 01 00"),
            (
                Value::Map(vec![(sym("a"), Value::Int(1))]),
                "c1 06 02 a3 01 61 54 01",
            ),
            (
                Value::Array(vec![sym("a"), sym("bc")]),
                "e0 0d 02 b3 00000001 61 00000002 62 63",
            ),
            (
                Value::Array(vec![Value::Int(1), Value::Int(-1)]),
                "e0 0a 02 71 00000001 ffffffff",
            ),
            (
                Value::Array(vec![Value::Boolean(true), Value::Boolean(false)]),
                "e0 04 02 56 01 00",
            ),
            (Value::Array(vec![]), "e0 02 00 40"),
            (
                Value::Array(vec![
                    Value::Described(Box::new(Value::Ulong(0x70)), Box::new(Value::Ubyte(1))),
                    Value::Described(Box::new(Value::Ulong(0x70)), Box::new(Value::Ubyte(2))),
                ]),
                "e0 07 02 00 53 70 50 01 02",
            ),
            (
                Value::Described(Box::new(Value::Ulong(0x70)), Box::new(Value::List(vec![]))),
                "00 53 70 45",
            ),
            (
                Value::Described(Box::new(sym("foo")), Box::new(Value::Null)),
                "00 a3 03 66 6f 6f 40",
            ),
        ];
        for (v, h) in cases {
            assert_eq!(enc(&v), hex(h), "encoding {v:?}");
            assert_eq!(dec(&hex(h)).unwrap(), v, "decoding {h}");
        }
    }

    #[test]
    fn long_forms_are_used_past_255() {
        let long = "x".repeat(300);
        for (v, code) in [
            (s(&long), 0xb1),
            (sym(&long), 0xb3),
            (Value::Binary(long.clone().into_bytes()), 0xb0),
        ] {
            let mut expect = vec![code, 0, 0, 1, 0x2c];
            expect.extend(long.as_bytes());
            assert_eq!(enc(&v), expect);
            assert_eq!(dec(&expect).unwrap(), v);
        }
        // 254 elements and 255 bytes still fit list8; 255 elements do not.
        let list = Value::List(vec![Value::Null; 254]);
        assert_eq!(&enc(&list)[..3], &hex("c0 ff fe")[..]);
        assert_eq!(dec(&enc(&list)).unwrap(), list);
        let list = Value::List(vec![Value::Null; 255]);
        assert_eq!(&enc(&list)[..9], &hex("d0 00000103 000000ff")[..]);
        assert_eq!(dec(&enc(&list)).unwrap(), list);
        let map = Value::Map(vec![(s(&long), Value::Null)]);
        assert_eq!(&enc(&map)[..9], &hex("d1 00000136 00000002")[..]);
        assert_eq!(dec(&enc(&map)).unwrap(), map);
        let array = Value::Array(vec![Value::Long(1); 40]);
        assert_eq!(&enc(&array)[..10], &hex("f0 00000145 00000028 81")[..]);
        assert_eq!(dec(&enc(&array)).unwrap(), array);
    }

    #[test]
    fn every_encoding_decodes() {
        let cases: Vec<(&str, Value)> = vec![
            ("56 01", Value::Boolean(true)),
            ("56 00", Value::Boolean(false)),
            ("70 00000007", Value::Uint(7)),
            ("80 0000000000000007", Value::Ulong(7)),
            ("71 0000002a", Value::Int(42)),
            ("81 000000000000002a", Value::Long(42)),
            ("b1 00000002 68 69", s("hi")),
            ("b3 00000002 68 69", sym("hi")),
            ("b0 00000001 ff", Value::Binary(vec![0xff])),
            (
                "d0 00000006 00000002 41 42",
                Value::List(vec![Value::Boolean(true), Value::Boolean(false)]),
            ),
            (
                "d1 00000008 00000002 a3 01 6b 41",
                Value::Map(vec![(sym("k"), Value::Boolean(true))]),
            ),
            (
                "e0 07 02 a3 01 61 02 62 63",
                Value::Array(vec![sym("a"), sym("bc")]),
            ),
            (
                "f0 0000000d 00000002 71 00000001 00000002",
                Value::Array(vec![Value::Int(1), Value::Int(2)]),
            ),
            (
                "e0 05 03 54 01 02 ff",
                Value::Array(vec![Value::Int(1), Value::Int(2), Value::Int(-1)]),
            ),
            ("e0 02 03 41", Value::Array(vec![Value::Boolean(true); 3])),
            ("e0 02 0a 40", Value::Array(vec![Value::Null; 10])),
            (
                "e0 0c 01 f0 00000006 00000001 52 07",
                Value::Array(vec![Value::Array(vec![Value::Uint(7)])]),
            ),
        ];
        for (h, v) in cases {
            assert_eq!(dec(&hex(h)).unwrap(), v, "decoding {h}");
            // Re-encoded (compactly), it decodes to the same value.
            assert_eq!(dec(&enc(&v)).unwrap(), v);
        }
    }

    #[test]
    fn heterogeneous_arrays_are_written_as_lists() {
        let v = Value::Array(vec![Value::Int(1), s("a")]);
        assert_eq!(enc(&v), hex("c0 06 02 54 01 a1 01 61"));
        // An array holding a heterogeneous array is written as a list too.
        let v = Value::Array(vec![Value::Array(vec![Value::Int(1), s("a")])]);
        assert_eq!(enc(&v)[0], 0xc0);
        assert!(dec(&enc(&v)).is_ok());
    }

    #[test]
    fn nested_values_round_trip() {
        let v = Value::Map(vec![
            (
                s("list"),
                Value::List(vec![
                    Value::Double(2.5),
                    Value::Timestamp(-1),
                    Value::Char(0x1F600),
                ]),
            ),
            (
                sym("arrays"),
                Value::Array(vec![
                    Value::Array(vec![s("a"), s("b")]),
                    Value::Array(vec![]),
                ]),
            ),
            (
                Value::Ulong(9),
                Value::Array(vec![Value::Map(vec![(s("k"), Value::Null)])]),
            ),
            (
                Value::Null,
                Value::Described(Box::new(sym("x:y")), Box::new(Value::Binary(vec![0; 300]))),
            ),
        ]);
        assert_eq!(dec(&enc(&v)).unwrap(), v);
    }

    // --- messages ------------------------------------------------------------

    /// What a client sends for properties {message-id "id1", content-type "text/plain"},
    /// application-properties {"k": "v", "n": 42} and data "hello", written by hand from
    /// the spec's encodings.
    const CLIENT_MESSAGE: &str = "
        00 53 73 c0 17 07 a1 03 69 64 31 40 40 40 40 40 a3 0a 74 65 78 74 2f 70 6c 61 69 6e
        00 53 74 c1 0c 04 a1 01 6b a1 01 76 a1 01 6e 55 2a
        00 53 75 a0 05 68 65 6c 6c 6f";

    fn client_message() -> Amqp10Message {
        Amqp10Message {
            properties: Some(Properties {
                message_id: Some(s("id1")),
                content_type: Some("text/plain".into()),
                ..Properties::default()
            }),
            application_properties: vec![("k".into(), s("v")), ("n".into(), Value::Long(42))],
            body: Body::Data(vec![b"hello".to_vec()]),
            ..Amqp10Message::default()
        }
    }

    #[test]
    fn message_matches_hand_written_bytes() {
        assert_eq!(encode(&client_message()), hex(CLIENT_MESSAGE));
        assert_eq!(decode(&hex(CLIENT_MESSAGE)).unwrap(), client_message());
    }

    #[test]
    fn other_clients_encodings_decode() {
        // The same message with an int, wide descriptors, a symbolic data descriptor and a
        // header {durable = true} and message annotations {x-opt-k: "v"}.
        let bytes = hex("
            00 53 70 c0 02 01 41
            00 80 0000000000000072 c1 0d 02 a3 07 782d6f70742d6b a1 01 76
            00 53 73 c0 17 07 a1 03 69 64 31 40 40 40 40 40 a3 0a 74 65 78 74 2f 70 6c 61 69 6e
            00 53 74 c1 0f 04 a1 01 6b a1 01 76 a1 01 6e 71 0000002a
            00 a3 10 616d71703a646174613a62696e617279 a0 05 68 65 6c 6c 6f");
        let m = decode(&bytes).unwrap();
        assert_eq!(
            m.header,
            Some(Header {
                durable: Some(true),
                ..Header::default()
            })
        );
        assert_eq!(m.message_annotations, vec![(sym("x-opt-k"), s("v"))]);
        assert_eq!(m.properties, client_message().properties);
        assert_eq!(m.application_properties[1], ("n".into(), Value::Int(42)));
        assert_eq!(m.body, Body::Data(vec![b"hello".to_vec()]));
        assert_eq!(
            encode(&m)[..7],
            hex("00 53 70 c0 02 01 41")[..],
            "the header as clients write it"
        );
    }

    fn rich_message() -> Amqp10Message {
        Amqp10Message {
            header: Some(Header {
                durable: Some(true),
                priority: Some(7),
                ttl: Some(60_000),
                first_acquirer: Some(false),
                delivery_count: Some(3),
            }),
            delivery_annotations: vec![(sym("x-opt-d"), Value::Int(1))],
            message_annotations: vec![
                (sym("x-opt-trace"), s("t1")),
                (Value::Ulong(7), Value::List(vec![Value::Int(1)])),
            ],
            properties: Some(Properties {
                message_id: Some(Value::Ulong(42)),
                user_id: Some(b"guest".to_vec()),
                to: Some("/queues/q".into()),
                subject: Some("subject".into()),
                reply_to: Some("replies".into()),
                correlation_id: Some(Value::Uuid([7; 16])),
                content_type: Some("application/json".into()),
                content_encoding: Some("gzip".into()),
                absolute_expiry_time: Some(1_800_000_000_000),
                creation_time: Some(1_700_000_000_123),
                group_id: Some("group".into()),
                group_sequence: Some(4),
                reply_to_group_id: Some("rg".into()),
            }),
            application_properties: vec![
                ("sym".into(), sym("s")),
                ("bin".into(), Value::Binary(vec![0xff, 0])),
                ("ts".into(), Value::Timestamp(1_700_000_000_123)),
                ("x-app".into(), Value::Int(1)),
                ("big".into(), Value::Ulong(u64::MAX)),
                ("char".into(), Value::Char('€' as u32)),
            ],
            body: Body::Value(Value::Map(vec![(
                s("a"),
                Value::List(vec![Value::Int(1), s("two")]),
            )])),
            footer: Some(vec![(sym("x-hash"), Value::Binary(vec![1, 2]))]),
        }
    }

    #[test]
    fn every_section_round_trips() {
        let m = rich_message();
        assert_eq!(decode(&encode(&m)).unwrap(), m);
        let mut seq = m.clone();
        seq.body = Body::Sequence(vec![vec![Value::Int(1)], vec![], vec![s("x")]]);
        assert_eq!(decode(&encode(&seq)).unwrap(), seq);
        let mut data = m;
        data.body = Body::Data(vec![b"a".to_vec(), Vec::new(), vec![0; 1000]]);
        assert_eq!(decode(&encode(&data)).unwrap(), data);
        // Present but empty sections.
        let empty = Amqp10Message {
            header: Some(Header::default()),
            properties: Some(Properties::default()),
            footer: Some(Vec::new()),
            ..Amqp10Message::default()
        };
        assert_eq!(
            encode(&empty),
            hex("00 53 70 45 00 53 73 45 00 53 78 c1 01 00")
        );
        assert_eq!(decode(&encode(&empty)).unwrap(), empty);
        // No section at all: an empty data body.
        assert_eq!(decode(&[]).unwrap(), Amqp10Message::default());
    }

    #[test]
    fn malformed_messages_are_refused() {
        let data = "00 53 75 a0 01 61";
        let value = "00 53 77 40";
        let seq = "00 53 76 45";
        let props = "00 53 73 45";
        let header = "00 53 70 45";
        for bad in [
            "a1 01 61".to_owned(),                   // not a section
            "00 53 79 45".to_owned(),                // unknown section
            "00 a3 03 666f6f 45".to_owned(),         // unknown symbolic descriptor
            format!("{props} {header}"),             // out of order
            format!("{props} {props}"),              // repeated
            format!("{data} {seq}"),                 // mixed body
            format!("{value} {value}"),              // two amqp-values
            format!("{value} {props}"),              // section after the body
            "00 53 75 a1 01 61".to_owned(),          // data that is not binary
            "00 53 76 40".to_owned(),                // sequence that is not a list
            "00 53 70 c0 02 01 50 01".to_owned(),    // durable that is not a boolean
            "00 53 73 c0 03 02 40 a1 00".to_owned(), // user-id that is not binary
            "00 53 74 c1 04 02 54 01 40".to_owned(), // application property key not a string
            "00 53 72 a1 00".to_owned(),             // annotations that are not a map
            format!("{data} 00"),                    // trailing garbage
        ] {
            assert!(decode(&hex(&bad)).is_err(), "{bad}");
        }
    }

    // --- conversions -----------------------------------------------------------

    /// A message as clients usually send it, application properties in key order.
    fn common_message() -> Amqp10Message {
        Amqp10Message {
            properties: Some(Properties {
                message_id: Some(s("id1")),
                user_id: Some(b"guest".to_vec()),
                reply_to: Some("replies".into()),
                correlation_id: Some(s("c-1")),
                content_type: Some("text/plain".into()),
                content_encoding: Some("utf-8".into()),
                creation_time: Some(1_700_000_000_000),
                group_id: Some("app".into()),
                ..Properties::default()
            }),
            application_properties: vec![
                ("b".into(), Value::Boolean(true)),
                ("f".into(), Value::Double(1.5)),
                ("i".into(), Value::Int(-7)),
                ("k".into(), s("v")),
                ("n".into(), Value::Long(42)),
                ("u".into(), Value::Uint(9)),
                ("v".into(), Value::Null),
            ],
            body: Body::Data(vec![b"hello".to_vec()]),
            ..Amqp10Message::default()
        }
    }

    #[test]
    fn common_message_maps_like_rabbitmq_and_round_trips() {
        let m = common_message();
        let msg = stored(&decode(&encode(&m)).unwrap());
        let p = msg.full_properties();
        assert_eq!(text_of(p.message_id()), Some("id1"));
        assert_eq!(text_of(p.correlation_id()), Some("c-1"));
        assert_eq!(text_of(p.user_id()), Some("guest"));
        assert_eq!(text_of(p.reply_to()), Some("replies"));
        assert_eq!(text_of(p.content_type()), Some("text/plain"));
        assert_eq!(text_of(p.content_encoding()), Some("utf-8"));
        assert_eq!(text_of(p.app_id()), Some("app"));
        assert_eq!(*p.timestamp(), Some(1_700_000_000));
        assert_eq!(*p.delivery_mode(), None);
        assert_eq!(*p.priority(), None);
        assert_eq!(text_of(p.kind()), None);
        let h = headers_of(&msg);
        let expected: BTreeMap<String, AMQPValue> = [
            ("b", AMQPValue::Boolean(true)),
            ("f", AMQPValue::Double(1.5)),
            ("i", AMQPValue::LongInt(-7)),
            ("k", AMQPValue::LongString("v".into())),
            ("n", AMQPValue::LongLongInt(42)),
            ("u", AMQPValue::LongUInt(9)),
            ("v", AMQPValue::Void),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        assert_eq!(h, expected, "no kept sections for a plain message");
        assert_eq!(msg.headers(), p.headers().as_ref(), "Warren's scan agrees");
        assert_eq!(&msg.body[..], b"hello");

        let back = from_amqp091(&msg);
        assert_eq!(back, m);
        assert_eq!(decode(&encode(&back)).unwrap(), m);
    }

    #[test]
    fn the_direct_encoding_is_the_conversion_then_encode() {
        let general = |msg: &Message, drop: &str| {
            let mut m = from_amqp091(msg);
            m.message_annotations
                .retain(|(k, _)| !matches!(k, Value::Symbol(s) if s == drop));
            encode(&m)
        };
        let mut seq = rich_message();
        seq.body = Body::Sequence(vec![vec![Value::Int(1)], vec![s("x")]]);
        let stored_messages = [
            stored(&common_message()),
            stored(&client_message()),
            stored(&rich_message()),
            stored(&seq),
            stored(&Amqp10Message::default()),
            Message::new("", "q", Bytes::new(), Bytes::from_static(b"plain")),
            Message::new("", "q", Bytes::new(), Bytes::new())
                .with_header("x-stream-offset", AMQPValue::LongLongInt(7)),
        ];
        for msg in &stored_messages {
            for drop in ["x-stream-offset", "x-opt-none"] {
                let mut direct = vec![1, 2];
                encode_from_amqp091_into(msg, drop, &mut direct);
                assert_eq!(&direct[..2], &[1, 2], "appends");
                assert_eq!(direct[2..], general(msg, drop)[..], "{msg:?}");
            }
        }
    }

    #[test]
    fn client_message_round_trips_in_any_key_order() {
        let mut m = client_message();
        m.application_properties.reverse();
        let back = from_amqp091(&stored(&decode(&encode(&m)).unwrap()));
        assert_eq!(back.properties, m.properties);
        assert_eq!(back.body, m.body);
        let mut got = back.application_properties;
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, client_message().application_properties);
    }

    #[test]
    fn header_maps_to_delivery_mode_priority_and_expiration() {
        let mut m = common_message();
        m.header = Some(Header {
            durable: Some(true),
            priority: Some(5),
            ttl: Some(60_000),
            ..Header::default()
        });
        let msg = stored(&m);
        let p = msg.full_properties();
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(*p.priority(), Some(5));
        assert_eq!(text_of(p.expiration()), Some("60000"));
        assert_eq!(from_amqp091(&msg), m);

        m.header = Some(Header {
            durable: Some(false),
            ..Header::default()
        });
        let msg = stored(&m);
        assert_eq!(*msg.full_properties().delivery_mode(), Some(1));
        assert_eq!(from_amqp091(&msg).header, m.header);

        // Without a header, RabbitMQ's x-basic-* annotations stand in for it.
        m.header = None;
        m.message_annotations = vec![
            (sym("x-basic-delivery-mode"), Value::Ubyte(2)),
            (sym("x-basic-priority"), Value::Ubyte(3)),
            (sym("x-basic-expiration"), s("1500")),
            (sym("x-basic-type"), s("order")),
        ];
        let p = stored(&m).full_properties();
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(*p.priority(), Some(3));
        assert_eq!(text_of(p.expiration()), Some("1500"));
        assert_eq!(text_of(p.kind()), Some("order"));
        let back = from_amqp091(&stored(&m));
        assert_eq!(back.message_annotations, m.message_annotations);
    }

    #[test]
    fn what_0_9_1_cannot_hold_survives_in_kept_sections() {
        let m = rich_message();
        let msg = stored(&m);
        let p = msg.full_properties();
        assert_eq!(text_of(p.message_id()), Some("42"));
        assert_eq!(
            text_of(p.correlation_id()),
            Some("urn:uuid:07070707-0707-0707-0707-070707070707")
        );
        assert_eq!(*p.timestamp(), Some(1_700_000_000));
        assert_eq!(text_of(p.kind()), Some(AMQP10_TYPE));
        assert_eq!(*p.delivery_mode(), Some(2));
        let h = headers_of(&msg);
        for name in [PROPERTIES_HEADER, APP_PROPERTIES_HEADER, ANNOTATIONS_HEADER] {
            assert!(
                matches!(h.get(name), Some(AMQPValue::ByteArray(_))),
                "{name}"
            );
        }
        assert!(
            !h.contains_key(FOOTER_HEADER),
            "the footer travels in the body"
        );
        assert_eq!(
            h.get("x-opt-trace"),
            Some(&AMQPValue::LongString("t1".into()))
        );
        assert_eq!(h.get("sym"), Some(&AMQPValue::LongString("s".into())));
        assert_eq!(
            h.get("bin"),
            Some(&AMQPValue::LongString(vec![0xff, 0].into()))
        );
        assert_eq!(h.get("ts"), Some(&AMQPValue::Timestamp(1_700_000_000)));
        assert_eq!(h.get("x-app"), Some(&AMQPValue::LongInt(1)));
        assert!(!h.contains_key("big") && !h.contains_key("char"));
        // The body is the AMQP 1.0 encoding of the value and the footer.
        let body = decode(&msg.body).unwrap();
        assert_eq!((body.body, body.footer), (m.body.clone(), m.footer.clone()));

        let back = from_amqp091(&msg);
        assert_eq!(back.properties, m.properties);
        assert_eq!(back.application_properties, m.application_properties);
        assert_eq!(back.message_annotations, m.message_annotations);
        assert_eq!(back.body, m.body);
        assert_eq!(back.footer, m.footer);
        // The header keeps what 0-9-1 holds; delivery annotations are dropped.
        assert_eq!(
            back.header,
            Some(Header {
                durable: Some(true),
                priority: Some(7),
                ttl: Some(60_000),
                ..Header::default()
            })
        );
        assert!(back.delivery_annotations.is_empty());

        // A data body's footer is kept in a header.
        let mut data = rich_message();
        data.body = Body::Data(vec![b"ab".to_vec(), b"c".to_vec()]);
        let msg = stored(&data);
        assert_eq!(&msg.body[..], b"abc");
        assert!(headers_of(&msg).contains_key(FOOTER_HEADER));
        let back = from_amqp091(&msg);
        assert_eq!(back.footer, data.footer);
        assert_eq!(back.body, Body::Data(vec![b"abc".to_vec()]));
    }

    #[test]
    fn ids_that_do_not_fit_go_to_headers() {
        let long = "i".repeat(300);
        let mut m = common_message();
        let props = m.properties.as_mut().unwrap();
        props.message_id = Some(Value::Binary(vec![0xde, 0xad]));
        props.correlation_id = Some(s(&long));
        let msg = stored(&m);
        let p = msg.full_properties();
        assert_eq!(*p.message_id(), None);
        assert_eq!(*p.correlation_id(), None);
        let h = headers_of(&msg);
        assert_eq!(
            h.get(MESSAGE_ID_HEADER),
            Some(&AMQPValue::ByteArray(vec![0xde, 0xad].into()))
        );
        assert_eq!(
            h.get(CORRELATION_ID_HEADER),
            Some(&AMQPValue::LongString(long.as_str().into()))
        );
        assert!(!h.contains_key(PROPERTIES_HEADER), "rebuilt exactly");
        assert_eq!(from_amqp091(&msg), m);

        // A uuid goes as a urn and comes back as a uuid.
        let mut m = common_message();
        m.properties.as_mut().unwrap().message_id = Some(Value::Uuid([0xab; 16]));
        let msg = stored(&m);
        assert_eq!(
            text_of(msg.full_properties().message_id()),
            Some("urn:uuid:abababab-abab-abab-abab-abababababab")
        );
        assert!(!headers_of(&msg).contains_key(PROPERTIES_HEADER));
        assert_eq!(from_amqp091(&msg), m);
    }

    fn amqp091_message(props: AMQPProperties, body: &[u8]) -> Message {
        Message::new(
            "ex",
            "rk",
            raw_properties(&props),
            Bytes::copy_from_slice(body),
        )
    }

    #[test]
    fn a_0_9_1_message_maps_like_rabbitmq() {
        let mut headers = BTreeMap::new();
        let mut put = |k: &str, v: AMQPValue| {
            headers.insert(ShortString::from(k), v);
        };
        put("k", AMQPValue::LongString("v".into()));
        put("bin", AMQPValue::LongString(vec![0xff, 0xfe].into()));
        put("nul", AMQPValue::LongString("a\0b".into()));
        put("n", AMQPValue::LongLongInt(-5));
        put("u8", AMQPValue::ShortShortUInt(8));
        put("i16", AMQPValue::ShortInt(-16));
        put("ts", AMQPValue::Timestamp(1_700_000_000));
        put(
            "dec",
            AMQPValue::DecimalValue(DecimalValue { scale: 1, value: 5 }),
        );
        put(
            "arr",
            AMQPValue::FieldArray(vec![AMQPValue::Boolean(true)].into()),
        );
        put("tbl", AMQPValue::FieldTable(FieldTable::default()));
        put(
            "CC",
            AMQPValue::FieldArray(vec![AMQPValue::LongString("k2".into())].into()),
        );
        put("x-custom", AMQPValue::LongString("c".into()));
        let mut death = BTreeMap::new();
        death.insert(ShortString::from("count"), AMQPValue::LongLongInt(1));
        death.insert(
            ShortString::from("queue"),
            AMQPValue::LongString("q".into()),
        );
        put(
            "x-death",
            AMQPValue::FieldArray(vec![AMQPValue::FieldTable(death.into())].into()),
        );
        put("void", AMQPValue::Void);
        put("x", AMQPValue::ByteArray(vec![1].into()));
        put(PROPERTIES_HEADER, AMQPValue::LongString("not AMQP".into()));
        let props = AMQPProperties::default()
            .with_content_type("application/json".into())
            .with_content_encoding("gzip".into())
            .with_delivery_mode(2)
            .with_priority(4)
            .with_expiration("1500".into())
            .with_message_id("urn:uuid:0123456789ABCDEF0123456789abcdef".into())
            .with_correlation_id("c".into())
            .with_timestamp(1_700_000_000)
            .with_type("order".into())
            .with_user_id("guest".into())
            .with_app_id("billing".into())
            .with_reply_to("amq.rabbitmq.reply-to".into())
            .with_cluster_id("cl".into())
            .with_headers(FieldTable::from(headers));
        let m = from_amqp091(&amqp091_message(props, b"{}"));
        assert_eq!(
            m.header,
            Some(Header {
                durable: Some(true),
                priority: Some(4),
                ttl: Some(1500),
                ..Header::default()
            })
        );
        assert_eq!(
            m.properties,
            Some(Properties {
                // Not the canonical 8-4-4-4-12 form: stays a string.
                message_id: Some(s("urn:uuid:0123456789ABCDEF0123456789abcdef")),
                user_id: Some(b"guest".to_vec()),
                reply_to: Some("amq.rabbitmq.reply-to".into()),
                correlation_id: Some(s("c")),
                content_type: Some("application/json".into()),
                content_encoding: Some("gzip".into()),
                creation_time: Some(1_700_000_000_000),
                group_id: Some("billing".into()),
                ..Properties::default()
            })
        );
        assert_eq!(
            m.application_properties,
            vec![
                ("bin".into(), Value::Binary(vec![0xff, 0xfe])),
                ("i16".into(), Value::Short(-16)),
                ("k".into(), s("v")),
                ("n".into(), Value::Long(-5)),
                ("nul".into(), Value::Binary(b"a\0b".to_vec())),
                ("ts".into(), Value::Timestamp(1_700_000_000_000)),
                ("u8".into(), Value::Ubyte(8)),
                ("void".into(), Value::Null),
                ("x".into(), Value::Binary(vec![1])),
            ]
        );
        assert_eq!(
            m.message_annotations,
            vec![
                (sym("x-basic-type"), s("order")),
                (sym("x-cc"), Value::List(vec![s("k2")])),
                (sym(PROPERTIES_HEADER), s("not AMQP")),
                (sym("x-custom"), s("c")),
                (
                    sym("x-death"),
                    Value::List(vec![Value::Map(vec![
                        (sym("count"), Value::Long(1)),
                        (sym("queue"), s("q")),
                    ])])
                ),
            ]
        );
        assert_eq!(m.body, Body::Data(vec![b"{}".to_vec()]));
        assert_eq!(decode(&encode(&m)).unwrap(), m);

        // A canonical urn is a uuid; a bare message is a single data section.
        let props = AMQPProperties::default()
            .with_message_id("urn:uuid:01234567-89AB-cdef-0123-456789abcdef".into());
        let m = from_amqp091(&amqp091_message(props, b""));
        assert_eq!(
            m.properties.as_ref().and_then(|p| p.message_id.clone()),
            Some(Value::Uuid([
                0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab,
                0xcd, 0xef
            ]))
        );
        assert_eq!(m.header, None);
        assert_eq!(m.body, Body::Data(vec![Vec::new()]));
        assert_eq!(
            encode(&m)[encode(&m).len() - 5..],
            hex("00 53 75 a0 00")[..]
        );
    }

    #[test]
    fn amqp_1_0_typed_bodies_are_decoded_when_they_can_be() {
        let mut body = Vec::new();
        write_body(&mut body, &Body::Value(s("v")));
        let props = AMQPProperties::default().with_type(AMQP10_TYPE.into());
        let m = from_amqp091(&amqp091_message(props.clone(), &body));
        assert_eq!(m.body, Body::Value(s("v")));
        assert!(m.message_annotations.is_empty());

        // Not AMQP 1.0 after all: a data section, and the type as an annotation.
        let m = from_amqp091(&amqp091_message(props.clone(), b"\x00\x53\x73\x45"));
        assert_eq!(m.body, Body::Data(vec![b"\x00\x53\x73\x45".to_vec()]));
        assert_eq!(
            m.message_annotations,
            vec![(sym("x-basic-type"), s(AMQP10_TYPE))]
        );
        let m = from_amqp091(&amqp091_message(props, b"plain text"));
        assert_eq!(m.body, Body::Data(vec![b"plain text".to_vec()]));
    }

    #[test]
    fn deep_values_stay_within_warren_limits() {
        let mut deep = Value::Int(1);
        for _ in 0..50 {
            deep = Value::List(vec![deep]);
        }
        let mut m = common_message();
        m.application_properties.push(("zdeep".into(), deep));
        let m = decode(&encode(&m)).unwrap();
        let msg = stored(&m);
        // Warren's own (bounded) scan accepts the headers.
        assert_eq!(msg.headers(), msg.full_properties().headers().as_ref());
        assert!(headers_of(&msg).contains_key(APP_PROPERTIES_HEADER));
        assert_eq!(from_amqp091(&msg), m);
    }

    // --- hostile input -----------------------------------------------------------

    #[test]
    fn hostile_values_are_errors() {
        for bad in [
            "",
            "01",
            "a1",
            "a1 05 68",
            "a1 02 ff fe",
            "56 02",
            "70 00 00",
            "b0 ffffffff",
            "b1 00000010 61",
            "d0 ffffffff 00000001",
            "d0 00000005 ffffffff 40",
            "c0 00",
            "c0 05 ff 40 40 40 40",
            "c0 03 01 40 40",
            "c1 03 01 40 40",
            "c1 03 02 40",
            "e0 02 01 01",
            "e0 03 02 a3 01",
            "e0 04 01 00 53",
            "00",
            "00 53",
            "00 53 70",
        ] {
            assert!(Value::decode(&hex(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn element_counts_are_bounded_by_the_input() {
        // 2^32 - 1 zero-width elements in 10 bytes.
        assert_eq!(
            Value::decode(&hex("f0 00000005 ffffffff 40")),
            Err(Error::TooLarge)
        );
        // Zero-width described elements, each a copy of a 200-byte descriptor.
        let mut b = hex("f0 000000d0 00001000 00 a3 c8");
        b.extend([b'x'; 200]);
        b.push(0x40);
        assert_eq!(Value::decode(&b), Err(Error::TooLarge));
        // Many elements of described ubytes: each needs its byte.
        let mut b = hex("f0 0000000b 00010000 00 a3 02 6162 50");
        b.push(1);
        assert!(Value::decode(&b).is_err());
    }

    fn nested_lists(levels: usize) -> Vec<u8> {
        let mut v = vec![0x45];
        for _ in 1..levels {
            let mut outer = vec![0xd0];
            outer.extend(u32_of(v.len() + 4));
            outer.extend(u32_of(1));
            outer.extend(v);
            v = outer;
        }
        v
    }

    #[test]
    fn deep_nesting_is_refused() {
        assert!(dec(&nested_lists(MAX_DEPTH + 1)).is_ok());
        assert_eq!(
            Value::decode(&nested_lists(MAX_DEPTH + 2)),
            Err(Error::TooDeep)
        );
        assert_eq!(Value::decode(&nested_lists(5000)), Err(Error::TooDeep));
        let mut described = vec![0u8; 100_000];
        described.push(0x40);
        assert_eq!(Value::decode(&described), Err(Error::TooDeep));
        // Array constructors described by described descriptors...
        let mut ctor = hex("f0 00000000 00000001");
        for _ in 0..10_000 {
            ctor.extend([0x00]);
        }
        assert_eq!(Value::decode(&ctor).err(), Some(Error::Truncated));
        let size = ctor.len() - 5;
        ctor[1..5].copy_from_slice(&u32_of(size));
        assert_eq!(Value::decode(&ctor), Err(Error::TooDeep));
        // ... and in a message.
        let mut m = hex("00 53 77");
        m.extend(nested_lists(MAX_DEPTH));
        assert!(decode(&m).is_ok());
        let mut m = hex("00 53 77");
        m.extend(nested_lists(MAX_DEPTH + 1));
        assert_eq!(decode(&m), Err(Error::TooDeep));
    }

    #[test]
    fn truncated_messages_never_panic() {
        let full = encode(&rich_message());
        for n in 0..full.len() {
            let _ = decode(&full[..n]);
        }
        let full = hex(CLIENT_MESSAGE);
        let ends: Vec<usize> = (0..full.len())
            .filter(|n| decode(&full[..*n]).is_ok())
            .collect();
        assert_eq!(ends, vec![0, 28, 45], "only whole sections decode");
    }

    /// xorshift64*: deterministic pseudo-random numbers for the tests below.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn chance(&mut self, n: usize) -> bool {
            self.below(n) == 0
        }
    }

    #[test]
    fn mutated_messages_never_panic() {
        let seeds = [encode(&rich_message()), hex(CLIENT_MESSAGE)];
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for i in 0..20_000 {
            let mut b = seeds[i % 2].clone();
            for _ in 0..=rng.below(4) {
                let at = rng.below(b.len() + 1);
                match rng.below(4) {
                    0 if at < b.len() => b[at] = rng.next() as u8,
                    1 => b.insert(at, rng.next() as u8),
                    2 if at < b.len() => {
                        b.remove(at);
                    }
                    _ => b.truncate(at),
                }
            }
            let Ok(m) = decode(&b) else {
                continue;
            };
            let again = encode(&m);
            if let Ok(m2) = decode(&again) {
                assert_eq!(encode(&m2), again);
            }
            let _ = from_amqp091(&stored(&m));
        }
    }

    fn random_int(rng: &mut Rng) -> u64 {
        match rng.below(5) {
            0 => 0,
            1 => 1,
            2 => u64::MAX,
            3 => rng.next() % 300,
            _ => rng.next(),
        }
    }

    fn random_text(rng: &mut Rng) -> String {
        const WORDS: [&str; 8] = [
            "",
            "a",
            "text/plain",
            "a\0b",
            "urn:uuid:abababab-abab-abab-abab-abababababab",
            "x-y",
            "ünïcödé",
            "42",
        ];
        if rng.chance(10) {
            "l".repeat(300)
        } else {
            WORDS[rng.below(WORDS.len())].to_owned()
        }
    }

    fn random_value(rng: &mut Rng, depth: usize) -> Value {
        let kinds = if depth > 3 { 21 } else { 25 };
        let n = random_int(rng);
        match rng.below(kinds) {
            0 => Value::Null,
            1 => Value::Boolean(n & 1 == 0),
            2 => Value::Ubyte(n as u8),
            3 => Value::Ushort(n as u16),
            4 => Value::Uint(n as u32),
            5 => Value::Ulong(n),
            6 => Value::Byte(n as i8),
            7 => Value::Short(n as i16),
            8 => Value::Int(n as i32),
            9 => Value::Long(n as i64),
            10 => Value::Float(f32::from_bits(n as u32)),
            11 => Value::Double(f64::from_bits(n)),
            12 => Value::Decimal32((n as u32).to_be_bytes()),
            13 => Value::Char(n as u32 % 0x11_0000),
            14 => Value::Timestamp(if rng.chance(2) {
                (n % 2_000_000_000) as i64 * 1000
            } else {
                n as i64
            }),
            15 => Value::Uuid([n as u8; 16]),
            16 => Value::Binary(if rng.chance(2) {
                random_text(rng).into_bytes()
            } else {
                n.to_be_bytes().to_vec()
            }),
            17 | 18 => Value::String(random_text(rng)),
            19 => Value::Symbol(random_text(rng)),
            20 => Value::Decimal128([n as u8; 16]),
            21 => Value::List(
                (0..rng.below(4))
                    .map(|_| random_value(rng, depth + 1))
                    .collect(),
            ),
            22 => Value::Map(
                (0..rng.below(4))
                    .map(|_| (random_value(rng, depth + 1), random_value(rng, depth + 1)))
                    .collect(),
            ),
            23 => {
                let first = random_value(rng, depth + 1);
                let len = rng.below(4);
                Value::Array(vec![first; len])
            }
            _ => Value::Described(
                Box::new(Value::Ulong(n % 500)),
                Box::new(random_value(rng, depth + 1)),
            ),
        }
    }

    fn random_id(rng: &mut Rng) -> Value {
        match rng.below(5) {
            0 => Value::Ulong(random_int(rng)),
            1 => Value::Uuid([rng.next() as u8; 16]),
            2 => Value::Binary(random_text(rng).into_bytes()),
            3 => random_value(rng, 3),
            _ => Value::String(random_text(rng)),
        }
    }

    fn random_message(rng: &mut Rng) -> Amqp10Message {
        const KEYS: [&str; 16] = [
            "k",
            "x-k",
            "CC",
            "timestamp_in_ms",
            "x-cc",
            "x-basic-type",
            "x-basic-priority",
            "x-basic-delivery-mode",
            "x-basic-expiration",
            "x-opt-rabbitmq-received-time",
            "x-routing-key",
            "x-death",
            "x-message-id",
            "x-amqp-1.0-properties",
            "x-amqp-1.0-footer",
            "",
        ];
        let key = |rng: &mut Rng| {
            if rng.chance(12) {
                "k".repeat(300)
            } else {
                KEYS[rng.below(KEYS.len())].to_owned()
            }
        };
        let pairs = |rng: &mut Rng| -> Vec<(Value, Value)> {
            (0..rng.below(4))
                .map(|_| {
                    let k = match rng.below(4) {
                        0 => Value::Ulong(random_int(rng)),
                        1 => random_value(rng, 3),
                        _ => Value::Symbol(key(rng)),
                    };
                    (k, random_value(rng, 1))
                })
                .collect()
        };
        let opt = |rng: &mut Rng| rng.chance(2);
        let header = opt(rng).then(|| Header {
            durable: rng.chance(2).then(|| rng.chance(2)),
            priority: rng.chance(2).then(|| rng.next() as u8),
            ttl: rng.chance(2).then(|| rng.next() as u32),
            first_acquirer: rng.chance(3).then(|| rng.chance(2)),
            delivery_count: rng.chance(3).then(|| rng.next() as u32),
        });
        let text = |rng: &mut Rng| rng.chance(2).then(|| random_text(rng));
        let properties = opt(rng).then(|| Properties {
            message_id: rng.chance(2).then(|| random_id(rng)),
            user_id: rng.chance(2).then(|| random_text(rng).into_bytes()),
            to: text(rng),
            subject: text(rng),
            reply_to: text(rng),
            correlation_id: rng.chance(2).then(|| random_id(rng)),
            content_type: text(rng),
            content_encoding: text(rng),
            absolute_expiry_time: rng.chance(3).then(|| rng.next() as i64),
            creation_time: rng.chance(2).then(|| match rng.below(3) {
                0 => 1_700_000_000_000,
                1 => -5,
                _ => rng.next() as i64,
            }),
            group_id: text(rng),
            group_sequence: rng.chance(3).then(|| rng.next() as u32),
            reply_to_group_id: text(rng),
        });
        let application_properties = (0..rng.below(5))
            .map(|_| (key(rng), random_value(rng, 1)))
            .collect();
        let body = match rng.below(4) {
            0 => Body::Sequence(
                (0..1 + rng.below(3))
                    .map(|_| (0..rng.below(3)).map(|_| random_value(rng, 1)).collect())
                    .collect(),
            ),
            1 => Body::Value(random_value(rng, 0)),
            _ => Body::Data(
                (0..rng.below(3))
                    .map(|_| random_text(rng).into_bytes())
                    .collect(),
            ),
        };
        Amqp10Message {
            header,
            delivery_annotations: if opt(rng) { pairs(rng) } else { Vec::new() },
            message_annotations: pairs(rng),
            properties,
            application_properties,
            body,
            footer: opt(rng).then(|| pairs(rng)),
        }
    }

    /// What a conversion round trip must keep, as bytes (so NaNs compare).
    fn normalized(m: &Amqp10Message) -> Vec<u8> {
        let mut m = m.clone();
        m.header = None;
        m.delivery_annotations.clear();
        if let Body::Data(parts) = &m.body {
            m.body = Body::Data(vec![parts.concat()]);
        }
        if m.properties.as_ref().is_some_and(Properties::is_empty) {
            m.properties = None;
        }
        m.application_properties.sort_by(|a, b| a.0.cmp(&b.0));
        m.message_annotations.sort_by_key(|(k, _)| enc(k));
        encode(&m)
    }

    #[test]
    fn random_messages_survive_both_conversions() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for i in 0..3000 {
            let m = random_message(&mut rng);
            let bytes = encode(&m);
            let decoded = decode(&bytes).unwrap_or_else(|e| panic!("message {i}: {e}"));
            assert_eq!(encode(&decoded), bytes, "message {i} re-encodes the same");
            let msg = stored(&decoded);
            // (Compared as text: NaNs are not equal to themselves.)
            assert_eq!(
                format!("{:?}", msg.headers()),
                format!("{:?}", msg.full_properties().headers().as_ref()),
                "message {i}: Warren's scan agrees"
            );
            let back = from_amqp091(&msg);
            assert_eq!(
                normalized(&back),
                normalized(&decoded),
                "message {i}: {decoded:#?}\nbecame {back:#?}"
            );
            // Durable, priority and TTL survive in the header.
            let wanted = |h: &Option<Header>| {
                h.as_ref()
                    .map(|h| (h.durable, h.priority, h.ttl))
                    .filter(|t| *t != (None, None, None))
            };
            if decoded.message_annotations.is_empty() {
                assert_eq!(wanted(&back.header), wanted(&decoded.header), "message {i}");
            }
        }
    }
}
