//! The stream protocol's wire format: frames (`size:u32` then the frame), commands
//! (`key:u16 version:u16 ...`), and the primitive types of PROTOCOL.adoc (big-endian
//! integers, `string` = int16 length + UTF-8 (-1 = null), `bytes` = int32 length +
//! bytes, arrays = int32 count + items). Reading is bounds-checked everywhere and never
//! panics; writing builds a frame in one buffer.

/// Command keys (a response has the top bit set).
pub mod key {
    pub const DECLARE_PUBLISHER: u16 = 0x0001;
    pub const PUBLISH: u16 = 0x0002;
    pub const PUBLISH_CONFIRM: u16 = 0x0003;
    pub const PUBLISH_ERROR: u16 = 0x0004;
    pub const QUERY_PUBLISHER_SEQUENCE: u16 = 0x0005;
    pub const DELETE_PUBLISHER: u16 = 0x0006;
    pub const SUBSCRIBE: u16 = 0x0007;
    pub const DELIVER: u16 = 0x0008;
    pub const CREDIT: u16 = 0x0009;
    pub const STORE_OFFSET: u16 = 0x000a;
    pub const QUERY_OFFSET: u16 = 0x000b;
    pub const UNSUBSCRIBE: u16 = 0x000c;
    pub const CREATE: u16 = 0x000d;
    pub const DELETE: u16 = 0x000e;
    pub const METADATA: u16 = 0x000f;
    pub const METADATA_UPDATE: u16 = 0x0010;
    pub const PEER_PROPERTIES: u16 = 0x0011;
    pub const SASL_HANDSHAKE: u16 = 0x0012;
    pub const SASL_AUTHENTICATE: u16 = 0x0013;
    pub const TUNE: u16 = 0x0014;
    pub const OPEN: u16 = 0x0015;
    pub const CLOSE: u16 = 0x0016;
    pub const HEARTBEAT: u16 = 0x0017;
    pub const ROUTE: u16 = 0x0018;
    pub const PARTITIONS: u16 = 0x0019;
    pub const CONSUMER_UPDATE: u16 = 0x001a;
    pub const EXCHANGE_COMMAND_VERSIONS: u16 = 0x001b;
    pub const STREAM_STATS: u16 = 0x001c;
    pub const CREATE_SUPER_STREAM: u16 = 0x001d;
    pub const DELETE_SUPER_STREAM: u16 = 0x001e;
    /// The bit that marks a response.
    pub const RESPONSE: u16 = 0x8000;
}

/// Response codes.
pub mod code {
    pub const OK: u16 = 0x01;
    pub const STREAM_DOES_NOT_EXIST: u16 = 0x02;
    pub const SUBSCRIPTION_ID_ALREADY_EXISTS: u16 = 0x03;
    pub const SUBSCRIPTION_ID_DOES_NOT_EXIST: u16 = 0x04;
    pub const STREAM_ALREADY_EXISTS: u16 = 0x05;
    pub const STREAM_NOT_AVAILABLE: u16 = 0x06;
    pub const SASL_MECHANISM_NOT_SUPPORTED: u16 = 0x07;
    pub const AUTHENTICATION_FAILURE: u16 = 0x08;
    pub const SASL_ERROR: u16 = 0x09;
    pub const SASL_CHALLENGE: u16 = 0x0a;
    pub const AUTHENTICATION_FAILURE_LOOPBACK: u16 = 0x0b;
    pub const VIRTUAL_HOST_ACCESS_FAILURE: u16 = 0x0c;
    pub const UNKNOWN_FRAME: u16 = 0x0d;
    pub const FRAME_TOO_LARGE: u16 = 0x0e;
    pub const INTERNAL_ERROR: u16 = 0x0f;
    pub const ACCESS_REFUSED: u16 = 0x10;
    pub const PRECONDITION_FAILED: u16 = 0x11;
    pub const PUBLISHER_DOES_NOT_EXIST: u16 = 0x12;
    pub const NO_OFFSET: u16 = 0x13;
}

/// A frame that does not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed stream protocol frame")]
pub struct Malformed;

/// Reads primitive values from a frame.
#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over a whole frame (without its size).
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.buf.len() < n {
            return Err(Malformed);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    pub fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, Malformed> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn i32(&mut self) -> Result<i32, Malformed> {
        Ok(self.u32()? as i32)
    }

    pub fn u64(&mut self) -> Result<u64, Malformed> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    pub fn i64(&mut self) -> Result<i64, Malformed> {
        Ok(self.u64()? as i64)
    }

    /// A `string`; `None` for null (-1).
    pub fn string(&mut self) -> Result<Option<String>, Malformed> {
        let len = self.u16()? as i16;
        if len < 0 {
            return Ok(None);
        }
        let b = self.take(len as usize)?;
        String::from_utf8(b.to_vec())
            .map(Some)
            .map_err(|_| Malformed)
    }

    /// A non-null `string`.
    pub fn str(&mut self) -> Result<String, Malformed> {
        self.string()?.ok_or(Malformed)
    }

    /// `bytes`; empty for null (-1).
    pub fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(&[]);
        }
        self.take(len as usize)
    }

    /// An array count, checked against what is left (each item at least `min` bytes).
    pub fn count(&mut self, min: usize) -> Result<usize, Malformed> {
        let n = self.i32()?;
        let n = usize::try_from(n).map_err(|_| Malformed)?;
        if n.saturating_mul(min.max(1)) > self.buf.len() {
            return Err(Malformed);
        }
        Ok(n)
    }

    /// A `[Key Value]` map of strings.
    pub fn map(&mut self) -> Result<Vec<(String, String)>, Malformed> {
        let n = self.count(4)?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let k = self.str()?;
            let v = self.string()?.unwrap_or_default();
            out.push((k, v));
        }
        Ok(out)
    }
}

/// Builds one frame: `size:u32` is filled in by [`Writer::finish`].
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// A frame for command `key` (version `version`).
    pub fn command(key: u16, version: u16) -> Self {
        let mut w = Writer {
            buf: Vec::with_capacity(64),
        };
        w.buf.extend_from_slice(&[0, 0, 0, 0]);
        w.u16(key).u16(version);
        w
    }

    /// A response to `key` with `correlation` and `code`.
    pub fn response(key: u16, correlation: u32, code: u16) -> Self {
        let mut w = Self::command(key | key::RESPONSE, 1);
        w.u32(correlation).u16(code);
        w
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A `string` (at most 32,767 bytes; longer ones are cut).
    pub fn str(&mut self, s: &str) -> &mut Self {
        let b = s.as_bytes();
        let n = b.len().min(i16::MAX as usize);
        self.u16(n as u16);
        self.buf.extend_from_slice(&b[..n]);
        self
    }

    /// Raw bytes, as they are.
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }

    /// A `[Key Value]` map of strings.
    pub fn map(&mut self, m: &[(String, String)]) -> &mut Self {
        self.u32(m.len() as u32);
        for (k, v) in m {
            self.str(k).str(v);
        }
        self
    }

    /// The frame, its size filled in.
    pub fn finish(mut self) -> Vec<u8> {
        let size = (self.buf.len() - 4) as u32;
        self.buf[..4].copy_from_slice(&size.to_be_bytes());
        self.buf
    }
}

/// An osiris chunk as `deliver` carries it: the 48-byte header, then each message as a
/// simple entry (`0` bit + 31-bit size, then the AMQP 1.0 message).
pub fn chunk(first_offset: u64, timestamp_ms: u64, messages: &[Vec<u8>]) -> Vec<u8> {
    let mut c = ChunkWriter::with_capacity(messages.iter().map(|m| m.len() + 4).sum());
    for m in messages {
        c.push(|out| out.extend_from_slice(m));
    }
    c.finish(first_offset, timestamp_ms)
}

/// Size of an osiris chunk header.
const CHUNK_HEADER: usize = 48;

/// Builds an osiris chunk in one buffer: entries are written in place after room for
/// the header, which [`ChunkWriter::finish`] fills (no copy of the entries).
#[derive(Debug)]
pub struct ChunkWriter {
    buf: Vec<u8>,
    entries: u32,
}

impl ChunkWriter {
    /// An empty chunk with room for `capacity` bytes of entries.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(CHUNK_HEADER + capacity);
        buf.resize(CHUNK_HEADER, 0);
        ChunkWriter { buf, entries: 0 }
    }

    /// Entries so far.
    pub fn entries(&self) -> u32 {
        self.entries
    }

    /// Bytes of entries so far (each with its 4-byte size).
    pub fn data_len(&self) -> usize {
        self.buf.len() - CHUNK_HEADER
    }

    /// Appends one simple entry: `write` adds the message's bytes.
    pub fn push(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        write(&mut self.buf);
        let len = (self.buf.len() - at - 4) as u32 & 0x7fff_ffff;
        self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
        self.entries += 1;
    }

    /// Removes the last entry, which started `data_len` bytes into the entries (the
    /// value [`ChunkWriter::data_len`] had before it was pushed).
    pub fn pop_to(&mut self, data_len: usize) {
        self.buf.truncate(CHUNK_HEADER + data_len);
        self.entries = self.entries.saturating_sub(1);
    }

    /// The finished chunk, its first entry at `first_offset`.
    pub fn finish(mut self, first_offset: u64, timestamp_ms: u64) -> Vec<u8> {
        let n = self.entries;
        let (head, data) = self.buf.split_at_mut(CHUNK_HEADER);
        let mut h = Vec::with_capacity(CHUNK_HEADER);
        h.push(0x50); // magic 5, version 0
        h.push(0); // chunk type: user
        h.extend_from_slice(&(n.min(u32::from(u16::MAX)) as u16).to_be_bytes());
        h.extend_from_slice(&n.to_be_bytes());
        h.extend_from_slice(&(timestamp_ms as i64).to_be_bytes());
        h.extend_from_slice(&1u64.to_be_bytes()); // epoch
        h.extend_from_slice(&first_offset.to_be_bytes());
        h.extend_from_slice(&(crc32fast::hash(data) as i32).to_be_bytes());
        h.extend_from_slice(&(data.len() as u32).to_be_bytes());
        h.extend_from_slice(&0u32.to_be_bytes()); // trailer length
        h.push(0); // bloom size
        h.extend_from_slice(&[0, 0, 0]); // reserved
        head.copy_from_slice(&h);
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_bad_input_is_refused() {
        let mut w = Writer::command(key::CREATE, 1);
        w.u32(7).str("s1").map(&[("max-age".into(), "1h".into())]);
        let f = w.finish();
        assert_eq!(
            u32::from_be_bytes([f[0], f[1], f[2], f[3]]) as usize,
            f.len() - 4
        );
        let mut r = Reader::new(&f[4..]);
        assert_eq!(r.u16().unwrap(), key::CREATE);
        assert_eq!(r.u16().unwrap(), 1);
        assert_eq!(r.u32().unwrap(), 7);
        assert_eq!(r.str().unwrap(), "s1");
        assert_eq!(
            r.map().unwrap(),
            vec![("max-age".to_string(), "1h".to_string())]
        );
        assert_eq!(r.remaining(), 0);
        // Truncated, negative and oversized counts.
        assert!(Reader::new(&[0, 5, b'a']).string().is_err());
        assert_eq!(Reader::new(&[0xff, 0xff]).string().unwrap(), None);
        assert!(Reader::new(&[0x7f, 0xff, 0xff, 0xff]).count(1).is_err());
        assert!(Reader::new(&[0xff, 0xff, 0xff, 0xfe]).count(1).is_err());
    }

    #[test]
    fn chunks_have_the_osiris_header() {
        let c = chunk(42, 1000, &[b"ab".to_vec(), b"cde".to_vec()]);
        assert_eq!(c.len(), 48 + 4 + 2 + 4 + 3);
        assert_eq!(c[0], 0x50);
        assert_eq!(u16::from_be_bytes([c[2], c[3]]), 2);
        assert_eq!(u64::from_be_bytes(c[24..32].try_into().unwrap()), 42);
        let data = &c[48..];
        assert_eq!(
            i32::from_be_bytes(c[32..36].try_into().unwrap()),
            crc32fast::hash(data) as i32
        );
        assert_eq!(
            u32::from_be_bytes(c[36..40].try_into().unwrap()),
            data.len() as u32
        );
        assert_eq!(&data[..6], &[0, 0, 0, 2, b'a', b'b']);
    }
}
