//! Streams (`x-queue-type=stream`): an append-only log that consumers read without
//! removing anything, each from its own position.
//!
//! Every message gets the next offset (0, 1, 2, ...) and its append time. Records use
//! the queue record format (`store::segment`), in segment files of their own under
//! `vhosts/<vhost>/streams/<queue>/`; a new file starts when the current one would pass
//! `x-stream-max-segment-size-bytes`. Messages are grouped into chunks (up to
//! [`CHUNK_RECORDS`] records or [`CHUNK_BYTES`] bytes, or whatever was appended before
//! the queue's tick closed the chunk), as RabbitMQ's osiris groups what arrives
//! together. Memory holds one small entry per chunk (first offset, file position,
//! timestamps, Bloom filter), the open chunk's messages, and a few recently read chunks:
//! a stream larger than RAM costs a few bytes per chunk, not per message.
//!
//! Retention removes whole segments, oldest first and never the one being written: when
//! the stream is larger than `x-max-length-bytes`, or when every message of a segment is
//! older than `x-max-age`. A consumer whose position was removed moves to the first
//! remaining offset.
//!
//! Filtering (RabbitMQ 3.13): a message's `x-stream-filter-value` header goes into its
//! chunk's Bloom filter (`x-stream-filter-size-bytes`); a consumer with `x-stream-filter`
//! skips chunks that cannot hold a matching value without reading them. As in RabbitMQ
//! it is chunk-level: the consumer still sees other messages of a matching chunk.

use std::collections::{BTreeMap, VecDeque};
use std::fs;
use std::hash::{Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::message::Message;
use crate::store::{
    decode_stream_records, encode_stream_record, open_stream_segment, walk_stream_segment, SyncFile,
};

/// Records per chunk at most.
pub const CHUNK_RECORDS: u32 = 1024;
/// Bytes per chunk at most (a larger message makes a chunk of its own).
pub const CHUNK_BYTES: u64 = 1 << 20;
/// Closed chunks whose messages stay decoded in memory for readers.
const CACHED_CHUNKS: usize = 8;
/// RabbitMQ's default `x-stream-max-segment-size-bytes` (500 MB).
pub const DEFAULT_SEGMENT_BYTES: u64 = 500_000_000;
/// RabbitMQ's largest `x-stream-max-segment-size-bytes`.
pub const MAX_SEGMENT_BYTES: u64 = 3_000_000_000;
/// RabbitMQ's default `x-stream-filter-size-bytes`.
pub const DEFAULT_FILTER_BYTES: usize = 16;
/// The header carrying a message's filter value.
pub const FILTER_VALUE_HEADER: &str = "x-stream-filter-value";
/// The header every delivery from a stream carries.
pub const OFFSET_HEADER: &str = "x-stream-offset";

/// A stream's retention and layout settings (from its arguments and policies).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSettings {
    /// `x-max-length-bytes`.
    pub max_length_bytes: Option<u64>,
    /// `x-max-age`, in milliseconds.
    pub max_age_ms: Option<u64>,
    /// `x-stream-max-segment-size-bytes`.
    pub max_segment_bytes: u64,
    /// `x-stream-filter-size-bytes`.
    pub filter_bytes: usize,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            max_length_bytes: None,
            max_age_ms: None,
            max_segment_bytes: DEFAULT_SEGMENT_BYTES,
            filter_bytes: DEFAULT_FILTER_BYTES,
        }
    }
}

/// `x-max-age` (and interval offsets): `<digits><unit>`, unit Y, M, D, h, m or s, as
/// RabbitMQ's `check_max_age`. Milliseconds, or `None` when malformed.
pub fn parse_age(s: &str) -> Option<u64> {
    let unit = s.chars().last()?;
    let digits = &s[..s.len() - unit.len_utf8()];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    let secs: u64 = match unit {
        'Y' => 365 * 24 * 3600,
        'M' => 30 * 24 * 3600,
        'D' => 24 * 3600,
        'h' => 3600,
        'm' => 60,
        's' => 1,
        _ => return None,
    };
    n.checked_mul(secs)?.checked_mul(1000)
}

/// Where a consumer starts (`x-stream-offset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The first message still in the stream.
    First,
    /// The first message of the last chunk.
    Last,
    /// The next message published (the default).
    Next,
    /// An absolute offset (the first one held if it was removed; past the end, the
    /// reader waits for it).
    Offset(i64),
    /// The first message appended at or after this time (epoch ms).
    Timestamp(u64),
}

/// A consumer's `x-stream-filter` and `x-stream-match-unfiltered`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterSpec {
    /// Filter values; a chunk is read if it may hold any of them.
    pub values: Vec<String>,
    /// Also read chunks holding messages without a filter value.
    pub match_unfiltered: bool,
}

/// How a consumer reads a stream, from its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReaderSpec {
    /// Where it starts.
    pub start: OffsetSpec,
    /// Its filter, if any.
    pub filter: Option<FilterSpec>,
}

impl ReaderSpec {
    /// Reads `x-stream-offset`, `x-stream-filter` and `x-stream-match-unfiltered` as
    /// RabbitMQ does (`now_ms` for interval offsets). The error is RabbitMQ's reason
    /// term, e.g. `invalid_max_age` or `{invalid_offset_arg,{bool,true}}`.
    ///
    /// # Errors
    /// An `x-stream-offset` RabbitMQ refuses.
    pub fn from_arguments(args: &FieldTable, now_ms: u64) -> Result<Self, String> {
        let t = args.inner();
        let start = match t.get(OFFSET_HEADER) {
            None => OffsetSpec::Next,
            Some(v) => match v {
                AMQPValue::LongString(_) | AMQPValue::ShortString(_) => {
                    let s = match v {
                        AMQPValue::LongString(s) => {
                            String::from_utf8_lossy(s.as_bytes()).into_owned()
                        }
                        AMQPValue::ShortString(s) => s.as_str().to_string(),
                        _ => String::new(),
                    };
                    match s.as_str() {
                        "first" => OffsetSpec::First,
                        "last" => OffsetSpec::Last,
                        "next" => OffsetSpec::Next,
                        other => {
                            let ms = parse_age(other).ok_or("invalid_max_age")?;
                            OffsetSpec::Timestamp(now_ms.saturating_sub(ms))
                        }
                    }
                }
                AMQPValue::Timestamp(secs) => OffsetSpec::Timestamp(secs.saturating_mul(1000)),
                other => match crate::args::int_value(other) {
                    Some(n) => OffsetSpec::Offset(i64::try_from(n).unwrap_or(i64::MAX)),
                    None => {
                        return Err(format!(
                            "{{invalid_offset_arg,{{{},{}}}}}",
                            crate::args::type_name(other),
                            erlang_term(other)
                        ))
                    }
                },
            },
        };
        let values: Option<Vec<String>> = match t.get("x-stream-filter") {
            Some(AMQPValue::LongString(s)) => {
                Some(vec![String::from_utf8_lossy(s.as_bytes()).into_owned()])
            }
            Some(AMQPValue::ShortString(s)) => Some(vec![s.as_str().to_string()]),
            Some(AMQPValue::FieldArray(a)) => Some(
                a.as_slice()
                    .iter()
                    .filter_map(|v| match v {
                        AMQPValue::LongString(s) => {
                            Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
                        }
                        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
                        _ => None,
                    })
                    .collect(),
            ),
            _ => None,
        };
        let filter = values.map(|values| FilterSpec {
            values,
            match_unfiltered: matches!(
                t.get("x-stream-match-unfiltered"),
                Some(AMQPValue::Boolean(true))
            ),
        });
        Ok(ReaderSpec { start, filter })
    }
}

/// A field value as Erlang prints it in an error term (simple values only).
fn erlang_term(v: &AMQPValue) -> String {
    match v {
        AMQPValue::Boolean(b) => b.to_string(),
        AMQPValue::Float(f) => format!("{f:?}"),
        AMQPValue::Double(d) => format!("{d:?}"),
        AMQPValue::Void => "undefined".into(),
        _ => "[]".into(),
    }
}

/// Where [`StreamLog::locate`] found a message.
enum Located {
    /// In a closed chunk: its entries, and the index in them.
    Closed(Arc<Vec<Entry>>, usize),
    /// In the open chunk, at this index.
    Open(usize),
}

/// A chunk's Bloom filter over the filter values of its messages.
#[derive(Debug, Clone)]
struct Bloom(Box<[u8]>);

impl Bloom {
    fn new(bytes: usize) -> Self {
        Bloom(vec![0u8; bytes.max(1)].into_boxed_slice())
    }

    fn positions(&self, value: &str) -> [usize; 2] {
        let bits = self.0.len() * 8;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        value.hash(&mut h);
        let x = h.finish();
        [(x as u32 as usize) % bits, ((x >> 32) as usize) % bits]
    }

    fn insert(&mut self, value: &str) {
        for p in self.positions(value) {
            self.0[p / 8] |= 1 << (p % 8);
        }
    }

    fn may_contain(&self, value: &str) -> bool {
        self.positions(value)
            .iter()
            .all(|p| self.0[p / 8] & (1 << (p % 8)) != 0)
    }
}

/// One message as readers see it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its offset.
    pub offset: u64,
    /// When it was appended (epoch ms).
    pub timestamp: u64,
    /// The message, with its `x-stream-offset` header.
    pub message: Arc<Message>,
}

#[derive(Debug)]
struct Chunk {
    first: u64,
    count: u32,
    segment: u32,
    /// File position of its first record and its length in bytes (bodies' bytes for a
    /// stream without files).
    pos: u64,
    len: u64,
    last_ts: u64,
    /// Filter values of its messages; `None` when none has one.
    bloom: Option<Bloom>,
    /// Whether it holds a message without a filter value.
    unfiltered: bool,
    /// Its messages, while decoded (always, for a stream without files).
    entries: Option<Arc<Vec<Entry>>>,
}

impl Chunk {
    fn end(&self) -> u64 {
        self.first + u64::from(self.count)
    }

    fn matches(&self, f: &FilterSpec) -> bool {
        (f.match_unfiltered && self.unfiltered)
            || self
                .bloom
                .as_ref()
                .is_some_and(|b| f.values.iter().any(|v| b.may_contain(v)))
    }
}

#[derive(Debug)]
struct Segment {
    file: Option<Arc<SyncFile>>,
    size: u64,
}

/// The log behind a stream queue.
#[derive(Debug)]
pub struct StreamLog {
    dir: Option<PathBuf>,
    settings: StreamSettings,
    segments: BTreeMap<u32, Segment>,
    current: u32,
    /// Closed chunks, oldest first.
    chunks: VecDeque<Chunk>,
    /// The chunk being appended to (its messages are in memory), and the segment
    /// file's write count when it was last appended to.
    open: Option<(Chunk, Vec<Entry>, u64)>,
    /// First offsets of the closed chunks whose entries are decoded, oldest first.
    cached: VecDeque<u64>,
    /// Offset of the first message still in the stream.
    first: u64,
    /// Offset the next message gets.
    next: u64,
    /// Bytes of all segments.
    bytes: u64,
    /// Server-side tracking (stream protocol): the last publishing id per publisher
    /// reference, and the stored offset per consumer reference.
    tracking: Tracking,
    /// The buffer chunks are read into (kept: a fresh megabyte per read costs page
    /// faults).
    read_buf: Vec<u8>,
}

/// What the stream protocol's clients ask the server to remember, kept in the stream's
/// directory (`tracking`, rewritten atomically when it changed, at most once a tick).
#[derive(Debug, Default)]
struct Tracking {
    writers: std::collections::HashMap<String, u64>,
    offsets: std::collections::HashMap<String, u64>,
    dirty: bool,
}

impl Tracking {
    fn load(dir: &Path) -> Self {
        let mut t = Tracking::default();
        let Ok(text) = fs::read_to_string(dir.join("tracking")) else {
            return t;
        };
        for line in text.lines() {
            let mut parts = line.splitn(3, ' ');
            let (Some(kind), Some(value), Some(hex)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let (Ok(value), Some(name)) = (value.parse::<u64>(), unhex(hex)) else {
                continue;
            };
            match kind {
                "w" => {
                    t.writers.insert(name, value);
                }
                "o" => {
                    t.offsets.insert(name, value);
                }
                _ => {}
            }
        }
        t
    }

    fn save(&mut self, dir: &Path) {
        if !self.dirty {
            return;
        }
        let mut text = String::new();
        for (kind, map) in [("w", &self.writers), ("o", &self.offsets)] {
            for (name, value) in map {
                let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
                text.push_str(&format!("{kind} {value} {hex}\n"));
            }
        }
        let tmp = dir.join("tracking.tmp");
        let done = fs::write(&tmp, text).and_then(|()| fs::rename(&tmp, dir.join("tracking")));
        match done {
            Ok(()) => self.dirty = false,
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "cannot write stream tracking")
            }
        }
    }
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

fn seg_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08}.seg"))
}

impl StreamLog {
    /// A stream kept in memory only (a broker without a data directory).
    pub fn in_memory(settings: StreamSettings) -> Self {
        let mut segments = BTreeMap::new();
        segments.insert(
            1,
            Segment {
                file: None,
                size: 0,
            },
        );
        StreamLog {
            dir: None,
            settings,
            segments,
            current: 1,
            chunks: VecDeque::new(),
            open: None,
            cached: VecDeque::new(),
            first: 0,
            next: 0,
            bytes: 0,
            tracking: Tracking::default(),
            read_buf: Vec::new(),
        }
    }

    /// Opens the stream in `dir`, creating it, and recovers what it holds (a torn or
    /// corrupt tail is cut off with a warning).
    ///
    /// # Errors
    /// The directory or its files cannot be read or written.
    pub fn open(dir: &Path, settings: StreamSettings) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut numbers: Vec<u32> = fs::read_dir(dir)?
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                name.strip_suffix(".seg")?.parse().ok()
            })
            .collect();
        numbers.sort_unstable();
        let mut log = StreamLog {
            dir: Some(dir.to_path_buf()),
            settings,
            segments: BTreeMap::new(),
            current: numbers.last().copied().unwrap_or(1),
            chunks: VecDeque::new(),
            open: None,
            cached: VecDeque::new(),
            first: 0,
            next: 0,
            bytes: 0,
            tracking: Tracking::load(dir),
            read_buf: Vec::new(),
        };
        let mut first = None;
        for &n in &numbers {
            let path = seg_path(dir, n);
            let mut chunk: Option<Chunk> = None;
            let (valid, clean) = walk_stream_segment(&path, n, |offset, ts, msg, loc| {
                first.get_or_insert(offset);
                let full = chunk.as_ref().is_some_and(|c| {
                    c.count >= CHUNK_RECORDS || c.len + u64::from(loc.len) > CHUNK_BYTES
                });
                if full {
                    if let Some(c) = chunk.take() {
                        log.chunks.push_back(c);
                    }
                }
                let c = chunk.get_or_insert_with(|| Chunk {
                    first: offset,
                    count: 0,
                    segment: n,
                    pos: loc.offset,
                    len: 0,
                    last_ts: ts,
                    bloom: None,
                    unfiltered: false,
                    entries: None,
                });
                note_filter(c, &msg, settings.filter_bytes);
                c.count += 1;
                c.len += u64::from(loc.len);
                c.last_ts = ts;
                log.next = offset + 1;
            })?;
            if let Some(c) = chunk.take() {
                log.chunks.push_back(c);
            }
            if !clean {
                tracing::warn!(
                    segment = %path.display(),
                    valid_bytes = valid,
                    "torn or corrupt record at the end of a stream segment: dropping the tail"
                );
                let f = fs::OpenOptions::new().write(true).open(&path)?;
                f.set_len(valid)?;
                f.sync_all()?;
            }
            log.segments.insert(
                n,
                Segment {
                    file: Some(Arc::new(SyncFile::new(open_stream_segment(&path)?)?)),
                    size: valid,
                },
            );
            log.bytes += valid;
        }
        log.first = first.unwrap_or(0);
        if log.segments.is_empty() {
            let path = seg_path(dir, log.current);
            log.segments.insert(
                log.current,
                Segment {
                    file: Some(Arc::new(SyncFile::new(open_stream_segment(&path)?)?)),
                    size: 0,
                },
            );
        }
        Ok(log)
    }

    /// Offset of the first message still held.
    pub fn first_offset(&self) -> u64 {
        self.first
    }

    /// Offset the next message will get.
    pub fn next_offset(&self) -> u64 {
        self.next
    }

    /// Messages held.
    pub fn len(&self) -> u64 {
        self.next - self.first
    }

    /// Whether it holds no message.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes on disk (or of bodies in memory).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Chunks held (the open one included).
    pub fn chunk_count(&self) -> usize {
        self.chunks.len() + usize::from(self.open.is_some())
    }

    /// Segment files held.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// New retention settings (a policy changed); applied at once.
    pub fn set_settings(&mut self, settings: StreamSettings, now_ms: u64) {
        self.settings = settings;
        self.retain(now_ms);
    }

    /// Appends `message` at `now_ms`; returns its offset and the file to sync before
    /// confirming it (none for a stream without files).
    ///
    /// # Errors
    /// The segment file could not be created.
    pub fn append(
        &mut self,
        message: &Message,
        now_ms: u64,
    ) -> io::Result<(u64, Option<Arc<SyncFile>>)> {
        let offset = self.next;
        let message = Arc::new(message.with_header(
            OFFSET_HEADER,
            AMQPValue::LongLongInt(i64::try_from(offset).unwrap_or(i64::MAX)),
        ));
        let record = self
            .dir
            .is_some()
            .then(|| encode_stream_record(offset, now_ms, &message));
        let size = record
            .as_ref()
            .map_or(message.body.len() as u64, |r| r.len() as u64);
        // A chunk is what is written together: once the file has been written (a
        // confirm's sync, the tick, a full buffer), the next message starts a new one.
        let writes = self.current_writes();
        if self.open.as_ref().is_some_and(|(c, _, w)| {
            c.count >= CHUNK_RECORDS || (c.count > 0 && c.len + size > CHUNK_BYTES) || *w != writes
        }) {
            self.close_chunk();
        }
        let cur_size = self.segments.get(&self.current).map_or(0, |s| s.size);
        if cur_size > 0 && cur_size + size > self.settings.max_segment_bytes {
            self.close_chunk();
            self.roll()?;
        }
        let seg = self.current;
        let segment = self
            .segments
            .get_mut(&seg)
            .ok_or_else(|| io::Error::other("no current stream segment"))?;
        let pos = segment.size;
        if let (Some(file), Some(rec)) = (&segment.file, &record) {
            file.append(rec);
        }
        segment.size += size;
        self.bytes += size;
        let sync = segment.file.clone();
        let writes = sync.as_ref().map_or(0, |f| f.write_count());
        let (chunk, entries, mark) = self.open.get_or_insert_with(|| {
            (
                Chunk {
                    first: offset,
                    count: 0,
                    segment: seg,
                    pos,
                    len: 0,
                    last_ts: now_ms,
                    bloom: None,
                    unfiltered: false,
                    entries: None,
                },
                Vec::new(),
                writes,
            )
        });
        *mark = writes;
        note_filter(chunk, &message, self.settings.filter_bytes);
        chunk.count += 1;
        chunk.len += size;
        chunk.last_ts = now_ms;
        entries.push(Entry {
            offset,
            timestamp: now_ms,
            message,
        });
        self.next = offset + 1;
        if self.settings.max_length_bytes.is_some() {
            self.retain(now_ms);
        }
        Ok((offset, sync))
    }

    /// Closes the open chunk (the queue's tick does, so a quiet stream's last messages
    /// form a chunk of their own).
    pub fn close_chunk(&mut self) {
        if let Some((mut chunk, entries, _)) = self.open.take() {
            chunk.entries = Some(Arc::new(entries));
            self.cached.push_back(chunk.first);
            self.chunks.push_back(chunk);
            self.evict();
        }
    }

    /// Whether a chunk is open.
    pub fn has_open_chunk(&self) -> bool {
        self.open.is_some()
    }

    fn current_writes(&self) -> u64 {
        self.segments
            .get(&self.current)
            .and_then(|s| s.file.as_ref())
            .map_or(0, |f| f.write_count())
    }

    fn roll(&mut self) -> io::Result<()> {
        let next = self.current + 1;
        let file = match &self.dir {
            Some(dir) => {
                if let Some(f) = self
                    .segments
                    .get(&self.current)
                    .and_then(|s| s.file.as_ref())
                {
                    // Records reach the OS in order, whatever later syncs cover.
                    f.write_pending()?;
                }
                Some(Arc::new(SyncFile::new(open_stream_segment(&seg_path(
                    dir, next,
                ))?)?))
            }
            None => None,
        };
        self.segments.insert(next, Segment { file, size: 0 });
        self.current = next;
        Ok(())
    }

    /// Drops decoded entries of closed chunks beyond [`CACHED_CHUNKS`] (a stream without
    /// files keeps them all).
    fn evict(&mut self) {
        if self.dir.is_none() {
            self.cached.clear();
            return;
        }
        while self.cached.len() > CACHED_CHUNKS {
            let Some(first) = self.cached.pop_front() else {
                break;
            };
            if let Some(i) = self.chunk_index(first) {
                self.chunks[i].entries = None;
            }
        }
    }

    /// Index in `chunks` of the closed chunk holding `offset`.
    fn chunk_index(&self, offset: u64) -> Option<usize> {
        let i = self.chunks.partition_point(|c| c.end() <= offset);
        (i < self.chunks.len() && self.chunks[i].first <= offset).then_some(i)
    }

    /// Removes whole segments (never the current one) while the stream is over its
    /// byte limit, or while the oldest segment's newest message is older than the age
    /// limit. Returns how many messages went.
    pub fn retain(&mut self, now_ms: u64) -> u64 {
        let before = self.first;
        while let Some((&oldest, seg)) = self.segments.iter().next() {
            if oldest == self.current {
                break;
            }
            let over_bytes = self
                .settings
                .max_length_bytes
                .is_some_and(|max| self.bytes > max);
            let newest_ts = self
                .chunks
                .iter()
                .take_while(|c| c.segment == oldest)
                .map(|c| c.last_ts)
                .max();
            let too_old = self
                .settings
                .max_age_ms
                .is_some_and(|age| newest_ts.is_none_or(|ts| ts < now_ms.saturating_sub(age)));
            if !over_bytes && !too_old {
                break;
            }
            self.bytes -= seg.size;
            self.segments.remove(&oldest);
            while self.chunks.front().is_some_and(|c| c.segment == oldest) {
                if let Some(c) = self.chunks.pop_front() {
                    self.first = c.end();
                }
            }
            self.cached.retain(|f| *f >= self.first);
            if let Some(dir) = &self.dir {
                let path = seg_path(dir, oldest);
                if let Err(e) = fs::remove_file(&path) {
                    tracing::warn!(segment = %path.display(), error = %e, "cannot remove a stream segment");
                }
            }
        }
        self.first - before
    }

    /// The offset a new reader starts at.
    pub fn start_offset(&self, spec: OffsetSpec) -> u64 {
        match spec {
            OffsetSpec::First => self.first,
            OffsetSpec::Next => self.next,
            OffsetSpec::Last => match (&self.open, self.chunks.back()) {
                (Some((c, _, _)), _) => c.first,
                (None, Some(c)) => c.first,
                (None, None) => self.next,
            },
            // Past the end, the reader waits for that offset (as RabbitMQ's does).
            OffsetSpec::Offset(n) => u64::try_from(n).unwrap_or(0).max(self.first),
            OffsetSpec::Timestamp(ts) => {
                let i = self.chunks.partition_point(|c| c.last_ts < ts);
                match self.chunks.get(i) {
                    Some(c) => c.first.max(self.first),
                    None => self.open.as_ref().map_or(self.next, |(c, _, _)| c.first),
                }
            }
        }
    }

    /// The message at `offset` or after it: the first one at or after `offset` in a
    /// chunk `filter` may match, and not appended before `not_before` (epoch ms). An
    /// offset already removed reads from the first message held.
    ///
    /// # Errors
    /// A segment file could not be read.
    pub fn read(
        &mut self,
        offset: u64,
        filter: Option<&FilterSpec>,
        not_before: u64,
    ) -> io::Result<Option<Entry>> {
        let mut offset = offset;
        loop {
            let found = match self.locate(offset, filter)? {
                None => return Ok(None),
                Some(Located::Open(at)) => {
                    let rest = self.open.as_ref().map_or(&[][..], |(_, e, _)| &e[at..]);
                    return Ok(rest.iter().find(|e| e.timestamp >= not_before).cloned());
                }
                Some(Located::Closed(entries, at)) => {
                    match entries[at..].iter().find(|e| e.timestamp >= not_before) {
                        Some(e) => Ok(e.clone()),
                        None => Err(entries.last().map_or(offset + 1, |e| e.offset + 1)),
                    }
                }
            };
            match found {
                Ok(e) => return Ok(Some(e)),
                Err(next) => offset = next,
            }
        }
    }

    /// The entries from `offset` to the end of its chunk (or of the first later chunk
    /// `filter` may match); `None` when nothing is there yet. A stream-protocol
    /// subscriber receives them as one chunk.
    ///
    /// # Errors
    /// A segment file could not be read.
    pub fn read_chunk(
        &mut self,
        offset: u64,
        filter: Option<&FilterSpec>,
    ) -> io::Result<Option<Vec<Entry>>> {
        Ok(match self.locate(offset, filter)? {
            None => None,
            Some(Located::Open(at)) => self.open.as_ref().map(|(_, e, _)| e[at..].to_vec()),
            Some(Located::Closed(entries, at)) => Some(entries[at..].to_vec()),
        })
    }

    /// Where the first message at or after `offset` (at least the first held) is, in a
    /// chunk `filter` may match: a closed chunk's entries and the index in them, or the
    /// index in the open chunk.
    fn locate(&mut self, offset: u64, filter: Option<&FilterSpec>) -> io::Result<Option<Located>> {
        let mut offset = offset.max(self.first);
        loop {
            if offset >= self.next {
                return Ok(None);
            }
            if let Some(i) = self.chunk_index(offset) {
                let c = &self.chunks[i];
                if filter.is_some_and(|f| !c.matches(f)) {
                    offset = c.end();
                    continue;
                }
                let entries = self.load(i)?;
                let first = entries.first().map_or(offset, |e| e.offset);
                let at = (offset.saturating_sub(first) as usize).min(entries.len());
                return Ok(Some(Located::Closed(entries, at)));
            }
            return Ok(match &self.open {
                Some((c, entries, _))
                    if c.first <= offset && filter.is_none_or(|f| c.matches(f)) =>
                {
                    Some(Located::Open(
                        ((offset - c.first) as usize).min(entries.len()),
                    ))
                }
                _ => None,
            });
        }
    }

    /// The decoded entries of closed chunk `i`, reading them from disk if needed.
    fn load(&mut self, i: usize) -> io::Result<Arc<Vec<Entry>>> {
        if let Some(e) = &self.chunks[i].entries {
            return Ok(e.clone());
        }
        let c = &self.chunks[i];
        let file = self
            .segments
            .get(&c.segment)
            .and_then(|s| s.file.clone())
            .ok_or_else(|| io::Error::other("stream segment missing"))?;
        let mut buf = std::mem::take(&mut self.read_buf);
        buf.clear();
        buf.resize(c.len as usize, 0);
        file.read_at(&mut buf, c.pos)?;
        let decoded = decode_stream_records(&buf);
        self.read_buf = buf;
        let entries: Vec<Entry> = decoded
            .into_iter()
            .map(|(offset, timestamp, m)| Entry {
                offset,
                timestamp,
                message: Arc::new(m),
            })
            .collect();
        if entries.len() != c.count as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a stream chunk does not read back whole",
            ));
        }
        let entries = Arc::new(entries);
        let first = c.first;
        self.chunks[i].entries = Some(entries.clone());
        self.cached.push_back(first);
        self.evict();
        Ok(entries)
    }

    /// The last publishing id recorded for a publisher reference (stream protocol).
    pub fn writer_sequence(&self, reference: &str) -> Option<u64> {
        self.tracking.writers.get(reference).copied()
    }

    /// Records a publisher reference's last publishing id.
    pub fn set_writer_sequence(&mut self, reference: &str, id: u64) {
        self.tracking.writers.insert(reference.to_string(), id);
        self.tracking.dirty = true;
    }

    /// The offset stored for a consumer reference (stream protocol).
    pub fn stored_offset(&self, reference: &str) -> Option<u64> {
        self.tracking.offsets.get(reference).copied()
    }

    /// Stores a consumer reference's offset.
    pub fn store_offset(&mut self, reference: &str, offset: u64) {
        self.tracking.offsets.insert(reference.to_string(), offset);
        self.tracking.dirty = true;
    }

    /// Writes the tracking file if it changed.
    pub fn save_tracking(&mut self) {
        if let Some(dir) = self.dir.clone() {
            self.tracking.save(&dir);
        }
    }

    /// Writes buffered records to the OS.
    pub fn write_buffered(&self) {
        if let Some(f) = self
            .segments
            .get(&self.current)
            .and_then(|s| s.file.as_ref())
        {
            if let Err(e) = f.write_pending() {
                tracing::error!(error = %e, "cannot write a stream segment");
            }
        }
    }

    /// Removes the stream's files (the queue was deleted).
    pub fn destroy(&mut self) {
        self.segments.clear();
        self.chunks.clear();
        self.open = None;
        if let Some(dir) = &self.dir {
            if let Err(e) = fs::remove_dir_all(dir) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a stream");
                }
            }
        }
    }
}

/// Adds `message`'s filter value (or its lack of one) to `chunk`.
fn note_filter(chunk: &mut Chunk, message: &Message, bytes: usize) {
    match message.text_header(FILTER_VALUE_HEADER) {
        Some(v) => chunk
            .bloom
            .get_or_insert_with(|| Bloom::new(bytes))
            .insert(&v),
        None => chunk.unfiltered = true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(body: &str, filter: Option<&str>) -> Message {
        let m = Message::new("", "s", Bytes::new(), Bytes::from(body.to_string()));
        match filter {
            Some(f) => m.with_header(FILTER_VALUE_HEADER, AMQPValue::LongString(f.into())),
            None => m,
        }
    }

    fn body(e: &Entry) -> String {
        String::from_utf8_lossy(&e.message.body).into_owned()
    }

    fn read_all(log: &mut StreamLog, from: u64, filter: Option<&FilterSpec>) -> Vec<u64> {
        let mut out = Vec::new();
        let mut at = from;
        while let Some(e) = log.read(at, filter, 0).unwrap() {
            out.push(e.offset);
            at = e.offset + 1;
        }
        out
    }

    #[test]
    fn ages_follow_rabbitmq_units() {
        assert_eq!(parse_age("7D"), Some(7 * 24 * 3600 * 1000));
        assert_eq!(parse_age("12h"), Some(12 * 3600 * 1000));
        assert_eq!(parse_age("30m"), Some(30 * 60 * 1000));
        assert_eq!(parse_age("45s"), Some(45_000));
        assert_eq!(parse_age("1Y"), Some(365 * 24 * 3600 * 1000));
        assert_eq!(parse_age("2M"), Some(60 * 24 * 3600 * 1000));
        for bad in ["", "10", "h", "10X", "-1h", "1.5h", "10 h"] {
            assert_eq!(parse_age(bad), None, "{bad}");
        }
    }

    #[test]
    fn offsets_headers_and_recovery() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let mut log = StreamLog::open(&path, StreamSettings::default()).unwrap();
        for i in 0..2500 {
            let (off, sync) = log.append(&msg(&format!("m{i}"), None), 1000 + i).unwrap();
            assert_eq!(off, i);
            assert!(sync.is_some());
        }
        // 1024-record chunks, the last one open.
        assert_eq!(log.chunk_count(), 3);
        assert_eq!(log.start_offset(OffsetSpec::Last), 2048);
        assert_eq!(log.start_offset(OffsetSpec::First), 0);
        assert_eq!(log.start_offset(OffsetSpec::Next), 2500);
        assert_eq!(log.start_offset(OffsetSpec::Offset(-5)), 0);
        assert_eq!(log.start_offset(OffsetSpec::Offset(99_999)), 99_999);
        assert_eq!(log.start_offset(OffsetSpec::Timestamp(1000 + 1500)), 1024);
        let e = log.read(1234, None, 0).unwrap().unwrap();
        assert_eq!((e.offset, body(&e)), (1234, "m1234".to_string()));
        assert_eq!(
            e.message.headers().unwrap().inner().get(OFFSET_HEADER),
            Some(&AMQPValue::LongLongInt(1234))
        );
        // Within a chunk, a timestamp start skips earlier messages.
        let e = log.read(1024, None, 1000 + 1500).unwrap().unwrap();
        assert_eq!(e.offset, 1500);
        log.write_buffered();
        drop(log);
        let mut log = StreamLog::open(&path, StreamSettings::default()).unwrap();
        assert_eq!((log.first_offset(), log.next_offset()), (0, 2500));
        assert_eq!(read_all(&mut log, 0, None), (0..2500).collect::<Vec<_>>());
        let (off, _) = log.append(&msg("after", None), 5000).unwrap();
        assert_eq!(off, 2500);
        let e = log.read(2500, None, 0).unwrap().unwrap();
        assert_eq!(body(&e), "after");
    }

    #[test]
    fn retention_removes_whole_old_segments_only() {
        let dir = tempfile::tempdir().unwrap();
        let settings = StreamSettings {
            max_length_bytes: Some(20_000),
            max_segment_bytes: 5_000,
            ..StreamSettings::default()
        };
        let mut log = StreamLog::open(dir.path(), settings).unwrap();
        let big = "x".repeat(900);
        for i in 0..100 {
            log.append(&msg(&big, None), i).unwrap();
        }
        assert!(log.bytes() <= 20_000 + 5_000, "{} bytes", log.bytes());
        assert!(log.first_offset() > 0);
        assert_eq!(log.next_offset(), 100);
        let files = fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, log.segment_count());
        // A reader positioned in removed data starts at the first message held.
        let e = log.read(0, None, 0).unwrap().unwrap();
        assert_eq!(e.offset, log.first_offset());

        // Age: everything but the current segment goes once old enough.
        let mut log = StreamLog::in_memory(StreamSettings {
            max_age_ms: Some(1000),
            max_segment_bytes: 100,
            ..StreamSettings::default()
        });
        for i in 0..10 {
            log.append(&msg(&big, None), i * 100).unwrap();
        }
        assert_eq!(log.retain(900), 0, "nothing is older than 1 s at 0.9 s");
        assert_eq!(log.retain(1350), 4, "the segments of 0 to 0.3 s at 1.35 s");
        assert_eq!(log.retain(100_000), 5, "all but the current segment");
        assert_eq!(log.first_offset(), 9);
    }

    #[test]
    fn filtered_readers_skip_chunks_without_their_values() {
        let mut log = StreamLog::in_memory(StreamSettings::default());
        for (i, f) in ["a", "b", "a"].iter().enumerate() {
            for j in 0..10 {
                log.append(&msg(&format!("{f}{j}"), Some(f)), i as u64)
                    .unwrap();
            }
            log.close_chunk();
        }
        for j in 0..5 {
            log.append(&msg(&format!("plain{j}"), None), 9).unwrap();
        }
        let only_b = FilterSpec {
            values: vec!["b".into()],
            match_unfiltered: false,
        };
        assert_eq!(
            read_all(&mut log, 0, Some(&only_b)),
            (10..20).collect::<Vec<_>>()
        );
        let a_and_plain = FilterSpec {
            values: vec!["a".into()],
            match_unfiltered: true,
        };
        let got = read_all(&mut log, 0, Some(&a_and_plain));
        assert_eq!(got, (0..10).chain(20..30).chain(30..35).collect::<Vec<_>>());
        assert_eq!(read_all(&mut log, 0, None).len(), 35);
    }

    #[test]
    fn reader_arguments() {
        let mut t = FieldTable::default();
        assert_eq!(
            ReaderSpec::from_arguments(&t, 0).unwrap().start,
            OffsetSpec::Next
        );
        t.insert(OFFSET_HEADER.into(), AMQPValue::LongString("first".into()));
        assert_eq!(
            ReaderSpec::from_arguments(&t, 0).unwrap().start,
            OffsetSpec::First
        );
        t.insert(OFFSET_HEADER.into(), AMQPValue::LongString("1h".into()));
        assert_eq!(
            ReaderSpec::from_arguments(&t, 10_000_000).unwrap().start,
            OffsetSpec::Timestamp(10_000_000 - 3_600_000)
        );
        t.insert(OFFSET_HEADER.into(), AMQPValue::Timestamp(5));
        assert_eq!(
            ReaderSpec::from_arguments(&t, 0).unwrap().start,
            OffsetSpec::Timestamp(5000)
        );
        t.insert(OFFSET_HEADER.into(), AMQPValue::ShortShortInt(-1));
        assert_eq!(
            ReaderSpec::from_arguments(&t, 0).unwrap().start,
            OffsetSpec::Offset(-1)
        );
        t.insert(OFFSET_HEADER.into(), AMQPValue::LongString("bad".into()));
        assert_eq!(
            ReaderSpec::from_arguments(&t, 0).unwrap_err(),
            "invalid_max_age"
        );
        t.insert(OFFSET_HEADER.into(), AMQPValue::Boolean(true));
        assert_eq!(
            ReaderSpec::from_arguments(&t, 0).unwrap_err(),
            "{invalid_offset_arg,{bool,true}}"
        );
    }
}
