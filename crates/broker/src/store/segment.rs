//! The durable queue store: append-only segment files plus a marks file per segment.
//!
//! Responsibilities: write persistent messages as checksummed records, keep a compact
//! in-memory index of ready messages (bodies beyond a cache budget stay on disk and are
//! read back when delivered), record deliveries and acks so a restart neither loses nor
//! resurrects messages, reclaim a segment once every message in it is settled, and
//! recover all of it at start, dropping a torn or corrupt tail with a warning.
//!
//! On-disk layout, in the queue's directory:
//!
//! ```text
//! 00000001.seg   records: len:u32 crc32:u32 | seq:u64 expires_at:u64 priority:u8
//!                xlen:u8 exchange rklen:u8 routing_key plen:u32 properties body
//!                (crc over the part after |, whose length is len)
//! 00000001.mrk   marks: kind:u8 seq:u64 (1 = delivered, 2 = settled)
//! ```
//!
//! Bodies are kept in memory within the queue's `cache_bytes` and the broker's global
//! [`PageBudget`]; beyond that they are written out and read back when delivered.
//! Transient (non-persistent) messages are written only then, flagged in their record
//! (the top bit of `expires_at`) so that recovery skips them: they never survive a
//! restart. A store made with [`SegmentStore::transient`] (for a non-durable queue)
//! treats every message as transient, writes no marks and creates its directory only
//! when it first pages a message out.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::ready::{Item, ReadyList};
use super::{DiskLoc, PageBudget, QueueStore, Settled, SyncFile};
use crate::message::{scan_properties, Message, QueuedMessage};

const MARK_DELIVERED: u8 = 1;
const MARK_SETTLED: u8 = 2;
/// Upper bound of a record's length field; anything larger is corruption.
const MAX_RECORD: u32 = 1 << 30;
/// In a record's `expires_at`: the message is transient, written only to page it out;
/// recovery skips it.
const TRANSIENT_RECORD: u64 = 1 << 63;

/// Tuning of a segment store.
#[derive(Debug, Clone, Copy)]
pub struct SegmentConfig {
    /// A new segment file is started when the current one reaches this size.
    pub segment_bytes: u64,
    /// Body bytes of persisted ready messages kept in memory; the rest is read from
    /// disk when delivered.
    pub cache_bytes: u64,
    /// Index entries a single-priority queue keeps in memory; messages published after
    /// that are only on disk (read back in order, a batch at a time, as the queue
    /// drains), so a backlog of any length costs no memory per message.
    pub index_entries: usize,
}

impl Default for SegmentConfig {
    fn default() -> Self {
        SegmentConfig {
            segment_bytes: 64 * 1024 * 1024,
            cache_bytes: 16 * 1024 * 1024,
            index_entries: 65_536,
        }
    }
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    redelivered: bool,
    loc: Option<DiskLoc>,
    /// `None` when the body was paged out (then `loc` says where it is).
    msg: Option<Arc<Message>>,
    body_len: u64,
    priority: u8,
    expires_at: u64,
}

impl Entry {
    /// The index entry of `m`, at `loc` on disk if written, its body in memory if `keep`.
    fn of(m: QueuedMessage, loc: Option<DiskLoc>, keep: bool) -> Self {
        Entry {
            seq: m.seq,
            redelivered: m.redelivered,
            loc,
            body_len: m.message.body.len() as u64,
            msg: keep.then_some(m.message),
            priority: m.priority,
            expires_at: m.expires_at,
        }
    }
}

impl Item for Entry {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn level(&self) -> usize {
        usize::from(self.priority)
    }
    fn expires_at(&self) -> u64 {
        self.expires_at
    }
}

/// Ready messages that are only on disk, after every message of the index: the records
/// from (`seg`, `offset`) to the end of the log, all ready, in publish order. Used by
/// single-priority queues whose index is full.
#[derive(Debug, Default)]
struct Delta {
    count: u64,
    bytes: u64,
    seg: u32,
    offset: u64,
    /// Delta records per segment.
    per_segment: BTreeMap<u32, u64>,
}

/// Records read into the index at a time when the index runs empty.
const REFILL: u64 = 4096;

#[derive(Debug)]
struct Segment {
    file: Arc<SyncFile>,
    size: u64,
    /// Records not yet settled.
    live: u64,
    marks: Option<File>,
}

/// A queue's store.
#[derive(Debug)]
pub struct SegmentStore {
    dir: PathBuf,
    cfg: SegmentConfig,
    ready: ReadyList<Entry>,
    bytes: u64,
    /// Body bytes of ready messages held in memory (counted in `budget` too).
    cached: u64,
    budget: Arc<PageBudget>,
    /// A non-durable queue's store: nothing is recovered or marked.
    transient: bool,
    /// Priority levels.
    levels: usize,
    /// Ready messages beyond the index (single-level queues only).
    delta: Delta,
    segments: BTreeMap<u32, Segment>,
    current: u32,
    next_seq: u64,
    /// Marks waiting to be written, per segment.
    pending_marks: HashMap<u32, Vec<u8>>,
}

fn seg_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08}.seg"))
}

fn mark_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n:08}.mrk"))
}

/// Encodes a message as one record (`transient`: flagged so recovery skips it).
fn encode_record(q: &QueuedMessage, transient: bool) -> Vec<u8> {
    let m = &q.message;
    let x = m.exchange.as_bytes();
    let r = m.routing_key.as_bytes();
    let xl = x.len().min(255);
    let rl = r.len().min(255);
    let payload_len = 17 + 1 + xl + 1 + rl + 4 + m.raw_properties.len() + m.body.len();
    let mut rec = Vec::with_capacity(8 + payload_len);
    rec.extend_from_slice(&(payload_len as u32).to_be_bytes());
    rec.extend_from_slice(&[0; 4]);
    rec.extend_from_slice(&q.seq.to_be_bytes());
    let flag = if transient { TRANSIENT_RECORD } else { 0 };
    rec.extend_from_slice(&((q.expires_at & !TRANSIENT_RECORD) | flag).to_be_bytes());
    rec.push(q.priority);
    rec.push(xl as u8);
    rec.extend_from_slice(&x[..xl]);
    rec.push(rl as u8);
    rec.extend_from_slice(&r[..rl]);
    rec.extend_from_slice(&(m.raw_properties.len() as u32).to_be_bytes());
    rec.extend_from_slice(&m.raw_properties);
    rec.extend_from_slice(&m.body);
    let crc = crc32fast::hash(&rec[8..]);
    rec[4..8].copy_from_slice(&crc.to_be_bytes());
    rec
}

/// What a record holds besides the message.
#[derive(Debug, Clone, Copy)]
struct RecordMeta {
    seq: u64,
    expires_at: u64,
    priority: u8,
    /// Written only to page a transient message out: not recovered.
    transient: bool,
}

/// Decodes the part of a record after its 8-byte header (already checksummed).
fn decode_payload(p: &[u8]) -> Option<(RecordMeta, Message)> {
    let take = |at: &mut usize, n: usize| -> Option<&[u8]> {
        let s = p.get(*at..*at + n)?;
        *at += n;
        Some(s)
    };
    let mut at = 0;
    let seq = u64::from_be_bytes(take(&mut at, 8)?.try_into().ok()?);
    let raw_expiry = u64::from_be_bytes(take(&mut at, 8)?.try_into().ok()?);
    let expires_at = raw_expiry & !TRANSIENT_RECORD;
    let transient = raw_expiry & TRANSIENT_RECORD != 0;
    let priority = *take(&mut at, 1)?.first()?;
    let xl = usize::from(*take(&mut at, 1)?.first()?);
    let exchange = std::str::from_utf8(take(&mut at, xl)?).ok()?.to_string();
    let rl = usize::from(*take(&mut at, 1)?.first()?);
    let routing_key = std::str::from_utf8(take(&mut at, rl)?).ok()?.to_string();
    let pl = u32::from_be_bytes(take(&mut at, 4)?.try_into().ok()?) as usize;
    let raw = Bytes::copy_from_slice(take(&mut at, pl)?);
    let body = Bytes::copy_from_slice(p.get(at..)?);
    let properties = scan_properties(&raw)?.props;
    Some((
        RecordMeta {
            seq,
            expires_at,
            priority,
            transient,
        },
        Message {
            exchange,
            routing_key,
            raw_properties: raw,
            properties,
            body,
            bcc: Vec::new(),
        },
    ))
}

/// One record read during recovery.
struct Recovered {
    meta: RecordMeta,
    loc: DiskLoc,
    body_len: u64,
    msg: Option<Arc<Message>>,
}

/// Reads the records of one segment in order, calling `f(meta, message, loc)` for each.
/// Stops at the first torn or corrupt record; returns where the valid data ends and
/// whether the file ended there.
fn walk_segment(
    path: &Path,
    segment: u32,
    mut f: impl FnMut(RecordMeta, Message, DiskLoc),
) -> io::Result<(u64, bool)> {
    let file = File::open(path)?;
    let total = file.metadata()?.len();
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut offset = 0u64;
    let mut header = [0u8; 8];
    let mut payload = Vec::new();
    loop {
        if offset == total {
            return Ok((offset, true));
        }
        if r.read_exact(&mut header).is_err() {
            return Ok((offset, false));
        }
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        if !(8..=MAX_RECORD).contains(&len) || offset + 8 + u64::from(len) > total {
            return Ok((offset, false));
        }
        payload.resize(len as usize, 0);
        if r.read_exact(&mut payload).is_err() || crc32fast::hash(&payload) != crc {
            return Ok((offset, false));
        }
        let Some((meta, msg)) = decode_payload(&payload) else {
            return Ok((offset, false));
        };
        f(
            meta,
            msg,
            DiskLoc {
                segment,
                offset,
                len: 8 + len,
            },
        );
        offset += 8 + u64::from(len);
    }
}

/// Reads the records of one segment. Stops at the first torn or corrupt record and
/// returns the offset where the valid data ends.
fn scan_segment(
    path: &Path,
    segment: u32,
    keep_bodies: &mut u64,
) -> io::Result<(Vec<Recovered>, u64, bool)> {
    let mut out = Vec::new();
    let (end, clean) = walk_segment(path, segment, |meta, msg, loc| {
        let body_len = msg.body.len() as u64;
        let msg = if meta.transient {
            None
        } else if *keep_bodies >= body_len {
            *keep_bodies -= body_len;
            Some(Arc::new(msg))
        } else {
            *keep_bodies = 0;
            None
        };
        out.push(Recovered {
            meta,
            loc,
            body_len,
            msg,
        });
    })?;
    Ok((out, end, clean))
}

/// A stream's record (streams use the queue record format): its offset where a queue
/// record has its sequence number, and its append time (epoch ms) where a queue record
/// has its expiry.
pub(crate) fn encode_stream_record(offset: u64, timestamp_ms: u64, m: &Arc<Message>) -> Vec<u8> {
    encode_record(
        &QueuedMessage {
            seq: offset,
            message: m.clone(),
            redelivered: false,
            loc: None,
            priority: 0,
            expires_at: timestamp_ms,
        },
        false,
    )
}

/// The records of `buf` (whole records back to back, as a stream chunk is stored):
/// `(offset, timestamp, message)` each, up to the first torn or corrupt one.
pub(crate) fn decode_stream_records(buf: &[u8]) -> Vec<(u64, u64, Message)> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while let Some(header) = buf.get(at..at + 8) {
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        let Some(payload) = buf.get(at + 8..at + 8 + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        let Some((meta, msg)) = decode_payload(payload) else {
            break;
        };
        out.push((meta.seq, meta.expires_at, msg));
        at += 8 + len;
    }
    out
}

/// Walks a stream segment file: `f(offset, timestamp, message, loc)` per record. Returns
/// where its valid data ends and whether the file ended there.
pub(crate) fn walk_stream_segment(
    path: &Path,
    segment: u32,
    mut f: impl FnMut(u64, u64, Message, DiskLoc),
) -> io::Result<(u64, bool)> {
    walk_segment(path, segment, |meta, msg, loc| {
        f(meta.seq, meta.expires_at, msg, loc)
    })
}

/// Opens a segment file for reading and appending, creating it if needed.
pub(crate) fn open_stream_segment(path: &Path) -> io::Result<File> {
    open_segment_file(path)
}

fn read_marks(path: &Path) -> io::Result<Vec<(u8, u64)>> {
    let data = match fs::read(path) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    // A torn final mark (fewer than 9 bytes) is ignored.
    Ok(data
        .chunks_exact(9)
        .filter_map(|c| {
            let seq = u64::from_be_bytes(c[1..9].try_into().ok()?);
            matches!(c[0], MARK_DELIVERED | MARK_SETTLED).then_some((c[0], seq))
        })
        .collect())
}

fn open_segment_file(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(path)
}

impl SegmentStore {
    /// Opens (creating if needed) the store in `dir`, with `levels` priority levels, and
    /// recovers its messages.
    ///
    /// # Errors
    /// The directory or a file in it cannot be read or written.
    pub fn open(dir: &Path, cfg: SegmentConfig, levels: usize) -> io::Result<Self> {
        Self::open_with_budget(dir, cfg, levels, PageBudget::unlimited())
    }

    /// A store for a non-durable queue in `dir` (created, with its files, only when a
    /// message is first paged out; nothing in it is ever recovered).
    pub fn transient(
        dir: &Path,
        cfg: SegmentConfig,
        levels: usize,
        budget: Arc<PageBudget>,
    ) -> Self {
        SegmentStore {
            dir: dir.to_path_buf(),
            cfg,
            ready: ReadyList::new(levels),
            bytes: 0,
            cached: 0,
            budget,
            transient: true,
            levels,
            delta: Delta::default(),
            segments: BTreeMap::new(),
            current: 0,
            next_seq: 0,
            pending_marks: HashMap::new(),
        }
    }

    /// [`SegmentStore::open`], keeping bodies in memory within `budget` as well.
    ///
    /// # Errors
    /// The directory or a file in it cannot be read or written.
    pub fn open_with_budget(
        dir: &Path,
        cfg: SegmentConfig,
        levels: usize,
        budget: Arc<PageBudget>,
    ) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let mut numbers: Vec<u32> = Vec::new();
        for entry in fs::read_dir(dir)? {
            let name = entry?.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name.strip_suffix(".seg").and_then(|n| n.parse().ok()) {
                numbers.push(n);
            }
        }
        numbers.sort_unstable();
        let mut keep_bodies = cfg.cache_bytes;
        let mut records: Vec<Recovered> = Vec::new();
        let mut settled: HashSet<u64> = HashSet::new();
        let mut delivered: HashSet<u64> = HashSet::new();
        let mut per_segment: BTreeMap<u32, (u64, u64)> = BTreeMap::new(); // (records, size)
        for &n in &numbers {
            let path = seg_path(dir, n);
            let (recs, valid_end, clean) = scan_segment(&path, n, &mut keep_bodies)?;
            if !clean {
                let total = fs::metadata(&path)?.len();
                tracing::warn!(
                    segment = %path.display(),
                    valid_bytes = valid_end,
                    dropped_bytes = total - valid_end,
                    "torn or corrupt record at the end of a segment: dropping the tail"
                );
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(valid_end)?;
                f.sync_all()?;
            }
            per_segment.insert(n, (recs.len() as u64, valid_end));
            records.extend(recs);
            for (kind, seq) in read_marks(&mark_path(dir, n))? {
                if kind == MARK_SETTLED {
                    settled.insert(seq);
                } else {
                    delivered.insert(seq);
                }
            }
        }
        let mut live: HashMap<u32, u64> = HashMap::new();
        let mut ready: Vec<Entry> = Vec::new();
        // Never reuse a sequence number that a mark mentions, even if its record is gone.
        let mut next_seq = settled
            .iter()
            .chain(delivered.iter())
            .max()
            .map_or(0, |s| s + 1);
        for r in records {
            let seq = r.meta.seq;
            next_seq = next_seq.max(seq + 1);
            // A transient message paged out before the restart is gone, as in RabbitMQ.
            if settled.contains(&seq) || r.meta.transient {
                continue;
            }
            *live.entry(r.loc.segment).or_default() += 1;
            ready.push(Entry {
                seq,
                redelivered: delivered.contains(&seq),
                loc: Some(r.loc),
                msg: r.msg,
                body_len: r.body_len,
                priority: r.meta.priority,
                expires_at: r.meta.expires_at,
            });
        }
        ready.sort_by_key(|e| e.seq);
        let mut list = ReadyList::new(levels);
        for e in ready {
            list.push_back(e);
        }
        let mut segments = BTreeMap::new();
        for (n, (_, size)) in per_segment {
            let l = live.get(&n).copied().unwrap_or(0);
            if l == 0 {
                let _ = fs::remove_file(seg_path(dir, n));
                let _ = fs::remove_file(mark_path(dir, n));
                continue;
            }
            segments.insert(
                n,
                Segment {
                    file: Arc::new(SyncFile::new(open_segment_file(&seg_path(dir, n))?)?),
                    size,
                    live: l,
                    marks: None,
                },
            );
        }
        // Always write to a fresh segment after a restart.
        let current = numbers.last().map_or(1, |n| n + 1);
        segments.insert(
            current,
            Segment {
                file: Arc::new(SyncFile::new(open_segment_file(&seg_path(dir, current))?)?),
                size: 0,
                live: 0,
                marks: None,
            },
        );
        let bytes = list.iter().map(|e| e.body_len).sum();
        let cached = list
            .iter()
            .filter(|e| e.msg.is_some())
            .map(|e| e.body_len)
            .sum();
        budget.force_take(cached);
        Ok(SegmentStore {
            dir: dir.to_path_buf(),
            cfg,
            ready: list,
            bytes,
            cached,
            budget,
            transient: false,
            levels,
            delta: Delta::default(),
            segments,
            current,
            next_seq,
            pending_marks: HashMap::new(),
        })
    }

    /// Makes sure there is a current segment to append to (a transient store creates its
    /// directory and first file on its first page-out).
    fn ensure_current(&mut self) -> io::Result<()> {
        if self.segments.contains_key(&self.current) {
            return Ok(());
        }
        fs::create_dir_all(&self.dir)?;
        let next = self.current.max(1);
        let file = open_segment_file(&seg_path(&self.dir, next))?;
        self.segments.insert(
            next,
            Segment {
                file: Arc::new(SyncFile::new(file)?),
                size: 0,
                live: 0,
                marks: None,
            },
        );
        self.current = next;
        Ok(())
    }

    /// Appends a record to the current segment; returns where it went.
    fn append_record(&mut self, rec: &[u8]) -> io::Result<(DiskLoc, Arc<SyncFile>)> {
        self.ensure_current()?;
        self.roll_if_full(rec.len() as u64)?;
        let seg = self
            .segments
            .get_mut(&self.current)
            .ok_or_else(|| io::Error::other("no current segment"))?;
        seg.file.append(rec);
        let loc = DiskLoc {
            segment: self.current,
            offset: seg.size,
            len: rec.len() as u32,
        };
        seg.size += rec.len() as u64;
        seg.live += 1;
        Ok((loc, seg.file.clone()))
    }

    /// Keeps `len` more body bytes in memory if both this queue's cache and the global
    /// budget have room.
    fn reserve(&mut self, len: u64) -> bool {
        if self.cached + len <= self.cfg.cache_bytes && self.budget.try_take(len) {
            self.cached += len;
            true
        } else {
            false
        }
    }

    /// Counts `len` body bytes that stay in memory whatever the budget says.
    fn force_reserve(&mut self, len: u64) {
        self.cached += len;
        self.budget.force_take(len);
    }

    /// `len` body bytes left memory.
    fn release(&mut self, len: u64) {
        let len = len.min(self.cached);
        self.cached -= len;
        self.budget.give(len);
    }

    fn roll_if_full(&mut self, need: u64) -> io::Result<()> {
        let size = self.segments.get(&self.current).map_or(0, |s| s.size);
        if size > 0 && size + need > self.cfg.segment_bytes {
            let old = self.current;
            let next = self.current + 1;
            if let Some(seg) = self.segments.get(&old) {
                // Records reach the OS in order, whatever later syncs cover.
                seg.file.write_pending()?;
            }
            let file = open_segment_file(&seg_path(&self.dir, next))?;
            self.segments.insert(
                next,
                Segment {
                    file: Arc::new(SyncFile::new(file)?),
                    size: 0,
                    live: 0,
                    marks: None,
                },
            );
            self.current = next;
            self.reclaim(old);
        }
        Ok(())
    }

    /// Deletes a segment whose records are all settled (never the current one).
    fn reclaim(&mut self, n: u32) {
        if n == self.current {
            return;
        }
        if self.segments.get(&n).is_some_and(|s| s.live == 0) {
            self.segments.remove(&n);
            self.pending_marks.remove(&n);
            let _ = fs::remove_file(seg_path(&self.dir, n));
            let _ = fs::remove_file(mark_path(&self.dir, n));
        }
    }

    fn mark(&mut self, kind: u8, seq: u64, loc: DiskLoc) {
        if self.transient {
            return;
        }
        let buf = self.pending_marks.entry(loc.segment).or_default();
        buf.push(kind);
        buf.extend_from_slice(&seq.to_be_bytes());
    }

    fn load(&self, loc: DiskLoc) -> io::Result<Message> {
        let seg = self
            .segments
            .get(&loc.segment)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "segment reclaimed"))?;
        let mut rec = vec![0u8; loc.len as usize];
        seg.file.read_at(&mut rec, loc.offset)?;
        let crc = u32::from_be_bytes([rec[4], rec[5], rec[6], rec[7]]);
        if crc32fast::hash(&rec[8..]) != crc {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "record checksum mismatch",
            ));
        }
        decode_payload(&rec[8..])
            .map(|(_, m)| m)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "undecodable record"))
    }

    /// Turns an index entry back into a queued message, reading the body if paged out.
    fn materialise(&mut self, e: Entry) -> Option<QueuedMessage> {
        self.bytes -= e.body_len;
        let message = match e.msg {
            Some(m) => {
                self.release(e.body_len);
                m
            }
            None => {
                let loc = e.loc?;
                match self.load(loc) {
                    Ok(m) => Arc::new(m),
                    Err(err) => {
                        tracing::error!(dir = %self.dir.display(), seq = e.seq, error = %err, "cannot read a queued message from disk; dropping it");
                        self.settle_one(Settled {
                            seq: e.seq,
                            loc: Some(loc),
                        });
                        return None;
                    }
                }
            }
        };
        Some(QueuedMessage {
            seq: e.seq,
            message,
            redelivered: e.redelivered,
            loc: e.loc,
            priority: e.priority,
            expires_at: e.expires_at,
        })
    }

    /// Reads up to `max` records of the delta, in order, advancing past them.
    fn read_delta(&mut self, max: u64) -> Vec<(RecordMeta, DiskLoc, Message)> {
        let mut out = Vec::new();
        while (out.len() as u64) < max.min(self.delta.count) {
            let Some(seg) = self.segments.get(&self.delta.seg) else {
                self.lose_delta("its segment is missing");
                break;
            };
            if self.delta.offset >= seg.size {
                let next = self
                    .segments
                    .range(self.delta.seg + 1..)
                    .next()
                    .map(|(n, _)| *n);
                match next {
                    Some(n) => {
                        self.delta.seg = n;
                        self.delta.offset = 0;
                        continue;
                    }
                    None => {
                        self.lose_delta("the log ends before it");
                        break;
                    }
                }
            }
            let file = seg.file.clone();
            let avail = seg.size - self.delta.offset;
            let mut buf = vec![0u8; avail.min(1 << 20) as usize];
            if let Err(e) = file.read_at(&mut buf, self.delta.offset) {
                self.lose_delta(&format!("read error: {e}"));
                break;
            }
            let mut at = 0usize;
            while (out.len() as u64) < max.min(self.delta.count) && at + 8 <= buf.len() {
                let len = u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
                let total = 8 + len as usize;
                if at + total > buf.len() {
                    if at > 0 {
                        break;
                    }
                    // One record larger than the chunk: read it whole.
                    buf = vec![0u8; total];
                    if let Err(e) = file.read_at(&mut buf, self.delta.offset) {
                        self.lose_delta(&format!("read error: {e}"));
                        return out;
                    }
                }
                let rec = &buf[at..at + total];
                let crc = u32::from_be_bytes([rec[4], rec[5], rec[6], rec[7]]);
                let decoded = (crc32fast::hash(&rec[8..]) == crc)
                    .then(|| decode_payload(&rec[8..]))
                    .flatten();
                let Some((meta, msg)) = decoded else {
                    self.lose_delta("a record is corrupt");
                    return out;
                };
                let loc = DiskLoc {
                    segment: self.delta.seg,
                    offset: self.delta.offset + at as u64,
                    len: total as u32,
                };
                self.delta.count -= 1;
                self.delta.bytes = self.delta.bytes.saturating_sub(msg.body.len() as u64);
                if let Some(n) = self.delta.per_segment.get_mut(&loc.segment) {
                    *n = n.saturating_sub(1);
                }
                out.push((meta, loc, msg));
                at += total;
            }
            if at == 0 {
                self.lose_delta("a record does not fit its segment");
                break;
            }
            self.delta.offset += at as u64;
        }
        if self.delta.count == 0 {
            self.delta = Delta::default();
        }
        out
    }

    /// The delta cannot be read any more: its messages are dropped (and counted out).
    fn lose_delta(&mut self, why: &str) {
        tracing::error!(dir = %self.dir.display(), messages = self.delta.count, why, "cannot read queued messages back from disk; dropping them");
        self.bytes = self.bytes.saturating_sub(self.delta.bytes);
        self.delta = Delta::default();
    }

    /// Keeps the index from running empty while messages wait on disk.
    fn refill_if_empty(&mut self) {
        if self.delta.count == 0 || self.ready.len() > 0 {
            return;
        }
        for (meta, loc, msg) in self.read_delta(REFILL) {
            let body_len = msg.body.len() as u64;
            let keep = self.reserve(body_len);
            self.ready.push_back(Entry {
                seq: meta.seq,
                redelivered: false,
                loc: Some(loc),
                msg: keep.then(|| Arc::new(msg)),
                body_len,
                priority: meta.priority,
                expires_at: meta.expires_at,
            });
        }
    }

    /// Files on disk (segments and mark files), for tests and diagnostics.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn settle_one(&mut self, s: Settled) {
        if let Some(loc) = s.loc {
            self.mark(MARK_SETTLED, s.seq, loc);
            if let Some(seg) = self.segments.get_mut(&loc.segment) {
                seg.live = seg.live.saturating_sub(1);
            }
        }
    }
}

impl Drop for SegmentStore {
    /// Buffered marks are written when the store goes away (records are written by their
    /// [`SyncFile`]'s own drop), and its bodies leave the global budget.
    fn drop(&mut self) {
        self.flush();
        self.budget.give(self.cached);
        self.cached = 0;
    }
}

impl QueueStore for SegmentStore {
    fn push(&mut self, mut message: QueuedMessage) -> io::Result<Option<Arc<SyncFile>>> {
        let body_len = message.message.body.len() as u64;
        self.bytes += body_len;
        self.next_seq = self.next_seq.max(message.seq + 1);
        let persist = !self.transient && message.message.is_persistent();
        if self.delta.count > 0 || (self.levels <= 1 && self.ready.len() >= self.cfg.index_entries)
        {
            // The index is full: the message goes to disk only, behind the index.
            let rec = encode_record(&message, !persist);
            match self.append_record(&rec) {
                Ok((loc, file)) => {
                    if self.delta.count == 0 {
                        self.delta.seg = loc.segment;
                        self.delta.offset = loc.offset;
                    }
                    self.delta.count += 1;
                    self.delta.bytes += body_len;
                    *self.delta.per_segment.entry(loc.segment).or_default() += 1;
                    return Ok(persist.then_some(file));
                }
                Err(e) => {
                    // Kept in memory instead (it may then be delivered before older
                    // messages still on disk: the disk is failing).
                    self.force_reserve(body_len);
                    self.ready.push_back(Entry::of(message, None, true));
                    return if persist { Err(e) } else { Ok(None) };
                }
            }
        }
        let keep = self.reserve(body_len);
        if keep && !persist {
            // In memory only: nothing to write.
            self.ready.push_back(Entry::of(message, None, true));
            return Ok(None);
        }
        // Persistent messages are written always; transient ones only to page them out.
        let rec = encode_record(&message, !persist);
        match self.append_record(&rec) {
            Ok((loc, file)) => {
                message.loc = Some(loc);
                self.ready.push_back(Entry::of(message, Some(loc), keep));
                // Only a persistent message's confirm waits for the disk.
                Ok(persist.then_some(file))
            }
            Err(e) => {
                // Not written: the message stays in memory, over the budget if need be.
                if !keep {
                    self.force_reserve(body_len);
                }
                self.ready.push_back(Entry::of(message, None, true));
                if persist {
                    Err(e)
                } else {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "cannot page a transient message out; keeping it in memory");
                    Ok(None)
                }
            }
        }
    }

    fn pop(&mut self) -> Option<QueuedMessage> {
        self.refill_if_empty();
        while let Some(e) = self.ready.pop_front() {
            let m = self.materialise(e);
            self.refill_if_empty();
            if m.is_some() {
                return m;
            }
        }
        None
    }

    fn pop_expired(&mut self, now_ms: u64) -> Option<QueuedMessage> {
        self.refill_if_empty();
        while let Some(e) = self.ready.pop_expired(now_ms) {
            let m = self.materialise(e);
            self.refill_if_empty();
            if m.is_some() {
                return m;
            }
        }
        None
    }

    fn next_expiry(&self) -> Option<u64> {
        self.ready.next_expiry()
    }

    fn delivered(&mut self, m: &QueuedMessage) {
        if let Some(loc) = m.loc {
            if !m.redelivered {
                self.mark(MARK_DELIVERED, m.seq, loc);
            }
        }
    }

    fn requeue(&mut self, mut messages: Vec<QueuedMessage>) {
        messages.sort_by_key(|m| m.seq);
        for m in messages.into_iter().rev() {
            let body_len = m.message.body.len() as u64;
            self.bytes += body_len;
            // Requeued messages were in memory all along (unacknowledged).
            self.force_reserve(body_len);
            let loc = m.loc;
            self.ready.insert_by_seq(Entry::of(m, loc, true));
        }
    }

    fn settle(&mut self, messages: &[Settled]) {
        let mut touched: Vec<u32> = Vec::new();
        for s in messages {
            self.settle_one(*s);
            if let Some(loc) = s.loc {
                if !touched.contains(&loc.segment) {
                    touched.push(loc.segment);
                }
            }
        }
        // The marks stay buffered until `flush`: the connection flushes once per batch
        // of client frames (so an ack is written before anything the client sends next
        // is answered), the queue tick within 25 ms otherwise.
        for n in touched {
            self.reclaim(n);
        }
    }

    fn write_buffered(&mut self) {
        if let Some(seg) = self.segments.get(&self.current) {
            if let Err(e) = seg.file.write_pending() {
                tracing::error!(error = %e, "cannot write queued records");
            }
        }
        self.flush();
    }

    fn flush(&mut self) {
        if self.pending_marks.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending_marks);
        for (n, buf) in pending {
            let Some(seg) = self.segments.get_mut(&n) else {
                continue;
            };
            // A mark must never reach the disk before its record: recovery derives the
            // next sequence number from the records, and a settle mark for a record that
            // was lost would otherwise hide a later message that reuses its number.
            if let Err(e) = seg.file.write_pending() {
                tracing::error!(error = %e, "cannot write queued records; keeping their marks");
                self.pending_marks.insert(n, buf);
                continue;
            }
            if seg.marks.is_none() {
                match OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(mark_path(&self.dir, n))
                {
                    Ok(f) => seg.marks = Some(f),
                    Err(e) => {
                        tracing::error!(error = %e, "cannot open a marks file");
                        continue;
                    }
                }
            }
            if let Some(f) = seg.marks.as_mut() {
                if let Err(e) = f.write_all(&buf) {
                    tracing::error!(error = %e, "cannot write delivery/ack marks");
                }
            }
        }
    }

    fn len(&self) -> usize {
        self.ready.len() + self.delta.count as usize
    }

    fn bytes(&self) -> u64 {
        self.bytes
    }

    fn purge(&mut self) -> usize {
        let n = self.len();
        let mut all: Vec<Settled> = self
            .ready
            .drain()
            .into_iter()
            .map(|e| Settled {
                seq: e.seq,
                loc: e.loc,
            })
            .collect();
        if self.transient {
            // Nothing to mark: the segments just lose their delta records.
            let per_segment = std::mem::take(&mut self.delta.per_segment);
            for (n, count) in per_segment {
                if let Some(seg) = self.segments.get_mut(&n) {
                    seg.live = seg.live.saturating_sub(count);
                }
                self.reclaim(n);
            }
            self.delta = Delta::default();
        } else {
            // Each record gets its settle mark, so a restart does not bring it back.
            while self.delta.count > 0 {
                let batch = self.read_delta(1 << 16);
                if batch.is_empty() {
                    break;
                }
                all.extend(batch.into_iter().map(|(meta, loc, _)| Settled {
                    seq: meta.seq,
                    loc: Some(loc),
                }));
            }
        }
        self.bytes = 0;
        self.release(self.cached);
        self.settle(&all);
        self.flush();
        n
    }

    fn next_seq(&self) -> u64 {
        self.next_seq
    }

    fn destroy(&mut self) {
        self.ready.drain();
        self.delta = Delta::default();
        self.release(self.cached);
        self.segments.clear();
        self.pending_marks.clear();
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::error!(dir = %self.dir.display(), error = %e, "cannot remove a deleted queue's files");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn msg(body: &[u8], persistent: bool) -> Arc<Message> {
        // delivery_mode is property bit 12 (0x1000): flags 0x10 0x00, then the octet.
        let raw: Bytes = if persistent {
            Bytes::from_static(&[0x10, 0x00, 2])
        } else {
            Bytes::from_static(&[0, 0])
        };
        Arc::new(Message::new("ex", "rk", raw, Bytes::copy_from_slice(body)))
    }

    fn qm(seq: u64, body: &[u8], persistent: bool) -> QueuedMessage {
        QueuedMessage {
            seq,
            message: msg(body, persistent),
            redelivered: false,
            loc: None,
            priority: 0,
            expires_at: 0,
        }
    }

    fn small() -> SegmentConfig {
        SegmentConfig {
            segment_bytes: 256,
            cache_bytes: 16,
            ..SegmentConfig::default()
        }
    }

    #[test]
    fn persistent_messages_survive_reopen_in_order_and_transient_do_not() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = SegmentStore::open(dir.path(), small(), 1).unwrap();
            for i in 0..20u64 {
                let persistent = i % 4 != 3;
                let r = s
                    .push(qm(i, format!("body-{i}").as_bytes(), persistent))
                    .unwrap();
                assert_eq!(r.is_some(), persistent);
            }
            assert!(s.segment_count() > 1, "small segments must roll");
        }
        let mut s = SegmentStore::open(dir.path(), small(), 1).unwrap();
        let got: Vec<(u64, Vec<u8>)> = std::iter::from_fn(|| s.pop())
            .map(|m| (m.seq, m.message.body.to_vec()))
            .collect();
        let want: Vec<(u64, Vec<u8>)> = (0..20u64)
            .filter(|i| i % 4 != 3)
            .map(|i| (i, format!("body-{i}").into_bytes()))
            .collect();
        assert_eq!(got, want);
        // The last message (transient) was paged out (the cache holds 16 bytes): it is
        // not recovered, and its number is not reused.
        assert_eq!(s.next_seq(), 20);
        // Properties came back too.
        s.requeue(vec![]);
    }

    fn drain(s: &mut SegmentStore) -> Vec<(u64, Vec<u8>)> {
        std::iter::from_fn(|| s.pop())
            .map(|m| (m.seq, m.message.body.to_vec()))
            .collect()
    }

    #[test]
    fn a_transient_store_pages_beyond_its_cache_and_keeps_order() {
        let dir = tempfile::tempdir().unwrap();
        let qdir = dir.path().join("t");
        let budget = PageBudget::unlimited();
        let mut s = SegmentStore::transient(&qdir, small(), 1, budget.clone());
        // Nothing on disk until something is paged out.
        s.push(qm(0, b"0123456789", false)).unwrap();
        assert!(!qdir.exists());
        for i in 1..200u64 {
            // Even "persistent" messages are transient in a non-durable queue: no sync.
            let r = s.push(qm(i, format!("body-{i:04}").as_bytes(), i % 2 == 0));
            assert!(r.unwrap().is_none());
        }
        assert!(qdir.exists() && s.segment_count() > 1);
        assert!(s.cached <= 16 && budget.used() == s.cached);
        assert_eq!(s.len(), 200);
        // Take some, put two back (they return to their places), then everything comes
        // out in order with the right bodies.
        let a = s.pop().unwrap();
        let b = s.pop().unwrap();
        let c = s.pop().unwrap();
        s.requeue(vec![c.clone(), a.clone()]);
        s.settle(&[Settled::from(&b)]);
        let got = drain(&mut s);
        let mut want = vec![(0u64, b"0123456789".to_vec())];
        want.extend((2..200u64).map(|i| (i, format!("body-{i:04}").into_bytes())));
        assert_eq!(got, want);
        assert_eq!((s.len(), s.bytes()), (0, 0));
        assert_eq!(budget.used(), 0, "every body left the budget");
        s.destroy();
        assert!(!qdir.exists());
    }

    #[test]
    fn paged_transient_messages_of_a_durable_queue_are_not_recovered() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = SegmentStore::open(dir.path(), small(), 1).unwrap();
            for i in 0..50u64 {
                s.push(qm(i, format!("m{i:03}").as_bytes(), i % 5 == 0))
                    .unwrap();
            }
            // Everything beyond the 16-byte cache went to disk, transient ones flagged.
            assert!(s.segment_count() > 1);
        }
        let mut s = SegmentStore::open(dir.path(), small(), 1).unwrap();
        let got: Vec<u64> = drain(&mut s).into_iter().map(|(q, _)| q).collect();
        assert_eq!(got, (0..50).filter(|i| i % 5 == 0).collect::<Vec<_>>());
        assert_eq!(s.next_seq(), 50);
    }

    fn indexed(n: usize) -> SegmentConfig {
        SegmentConfig {
            segment_bytes: 4096,
            cache_bytes: 64,
            index_entries: n,
        }
    }

    #[test]
    fn beyond_the_index_messages_live_only_on_disk_and_come_back_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let budget = PageBudget::unlimited();
        let mut s = SegmentStore::transient(&dir.path().join("d"), indexed(10), 1, budget.clone());
        let big = vec![7u8; (1 << 20) + 100]; // larger than one read chunk
        let body = |i: u64| -> Vec<u8> {
            if i == 500 {
                big.clone()
            } else {
                format!("m{i:05}").into_bytes()
            }
        };
        for i in 0..1000u64 {
            s.push(qm(i, &body(i), false)).unwrap();
        }
        // Ten in the index, the rest on disk only.
        assert_eq!(s.ready.len(), 10);
        assert_eq!((s.len(), s.delta.count), (1000, 990));
        let total: u64 = (0..1000u64).map(|i| body(i).len() as u64).sum();
        assert_eq!(s.bytes(), total);
        // Take 15 (the index is refilled from disk), put two back, take the rest.
        let taken: Vec<QueuedMessage> = (0..15).map(|_| s.pop().unwrap()).collect();
        assert_eq!(s.len(), 985);
        s.requeue(vec![taken[14].clone(), taken[3].clone()]);
        let got: Vec<u64> = std::iter::from_fn(|| s.pop())
            .map(|m| {
                assert_eq!(m.message.body.to_vec(), body(m.seq), "seq {}", m.seq);
                m.seq
            })
            .collect();
        let mut want = vec![3u64];
        want.extend(14..1000);
        assert_eq!(got, want);
        assert_eq!((s.len(), s.bytes(), s.delta.count), (0, 0, 0));
        assert_eq!(budget.used(), 0);
        // New messages after a drain go to the index again.
        s.push(qm(1000, b"again", false)).unwrap();
        assert_eq!((s.ready.len(), s.delta.count), (1, 0));
    }

    #[test]
    fn purging_a_delta_settles_it_for_good() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = SegmentStore::open(dir.path(), indexed(5), 1).unwrap();
            for i in 0..300u64 {
                s.push(qm(i, format!("p{i:04}").as_bytes(), true)).unwrap();
            }
            assert_eq!(s.delta.count, 295);
            let first = s.pop().unwrap();
            s.settle(&[Settled::from(&first)]);
            assert_eq!(s.purge(), 299);
            assert_eq!(s.len(), 0);
            s.push(qm(300, b"after", true)).unwrap();
        }
        // Nothing purged comes back after a restart; the later message does.
        let mut s = SegmentStore::open(dir.path(), indexed(5), 1).unwrap();
        assert_eq!(drain(&mut s), vec![(300, b"after".to_vec())]);
        // A transient store's purge just forgets its delta.
        let mut t = SegmentStore::transient(
            &dir.path().join("t"),
            indexed(5),
            1,
            PageBudget::unlimited(),
        );
        for i in 0..100u64 {
            t.push(qm(i, b"xxxxxxxx", false)).unwrap();
        }
        assert_eq!(t.purge(), 100);
        assert_eq!(t.len(), 0);
        assert!(t.pop().is_none());
    }

    #[test]
    fn a_durable_delta_is_recovered_whole_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = SegmentStore::open(dir.path(), indexed(5), 1).unwrap();
            for i in 0..100u64 {
                s.push(qm(i, format!("r{i:03}").as_bytes(), true)).unwrap();
            }
            assert_eq!(s.delta.count, 95);
        }
        let mut s = SegmentStore::open(dir.path(), indexed(5), 1).unwrap();
        let got: Vec<u64> = drain(&mut s).into_iter().map(|(q, _)| q).collect();
        assert_eq!(got, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn expiry_reaches_messages_read_back_from_the_delta() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SegmentStore::transient(
            &dir.path().join("e"),
            indexed(2),
            1,
            PageBudget::unlimited(),
        );
        for i in 0..6u64 {
            let mut m = qm(i, b"ttl", false);
            m.expires_at = 100 + i;
            s.push(m).unwrap();
        }
        let expired: Vec<u64> = std::iter::from_fn(|| s.pop_expired(103))
            .map(|m| m.seq)
            .collect();
        assert_eq!(expired, vec![0, 1, 2, 3]);
        assert_eq!(s.next_expiry(), Some(104));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn the_global_budget_is_shared_by_all_stores() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = SegmentConfig {
            segment_bytes: 1 << 20,
            cache_bytes: 1 << 20,
            ..SegmentConfig::default()
        };
        let budget = PageBudget::new(100);
        let mut a = SegmentStore::transient(&dir.path().join("a"), cfg, 1, budget.clone());
        let mut b = SegmentStore::transient(&dir.path().join("b"), cfg, 1, budget.clone());
        for i in 0..10u64 {
            a.push(qm(i, &[b'a'; 10], false)).unwrap();
        }
        assert_eq!(budget.used(), 100);
        // b's own cache has room, the global budget has not: b pages out.
        b.push(qm(0, &[b'b'; 10], false)).unwrap();
        assert_eq!((b.cached, budget.used()), (0, 100));
        assert!(dir.path().join("b").exists());
        assert_eq!(drain(&mut b), vec![(0, vec![b'b'; 10])]);
        drop(a);
        assert_eq!(budget.used(), 0, "a dropped store gives its bodies back");
    }

    #[test]
    fn priorities_ttl_order_survive_paging() {
        let dir = tempfile::tempdir().unwrap();
        let mut s =
            SegmentStore::transient(&dir.path().join("p"), small(), 3, PageBudget::unlimited());
        for i in 0..30u64 {
            let mut m = qm(i, format!("p{i:02}").as_bytes(), false);
            m.priority = (i % 3) as u8;
            m.expires_at = if i == 2 { 5 } else { 0 };
            s.push(m).unwrap();
        }
        // The expired message at the head of level 2 is found (its body was in memory;
        // the ones after it come back from disk).
        let e = s.pop_expired(10).unwrap();
        assert_eq!((e.seq, e.message.body.to_vec()), (2, b"p02".to_vec()));
        assert!(s.pop_expired(10).is_none());
        let got: Vec<u64> = drain(&mut s).into_iter().map(|(q, _)| q).collect();
        let mut want: Vec<u64> = (3..30).filter(|i| i % 3 == 2).collect();
        want.extend((0..30).filter(|i| i % 3 == 1));
        want.extend((0..30).filter(|i| i % 3 == 0));
        assert_eq!(got, want);
    }

    #[test]
    fn settled_messages_stay_gone_and_delivered_come_back_redelivered() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = SegmentStore::open(dir.path(), small(), 1).unwrap();
            for i in 0..6u64 {
                s.push(qm(i, b"x", true)).unwrap();
            }
            let a = s.pop().unwrap();
            let b = s.pop().unwrap();
            s.delivered(&a);
            s.delivered(&b);
            s.settle(&[Settled::from(&a)]);
            s.flush();
        }
        let mut s = SegmentStore::open(dir.path(), small(), 1).unwrap();
        let first = s.pop().unwrap();
        assert_eq!(first.seq, 1);
        assert!(first.redelivered);
        let second = s.pop().unwrap();
        assert_eq!(second.seq, 2);
        assert!(!second.redelivered);
        assert_eq!(s.len(), 3);
    }

    /// A settle mark written before its (buffered) record, followed by a crash, must not
    /// let a later message reuse the sequence number and vanish at the next recovery.
    #[test]
    fn marks_never_outrun_records_and_sequence_numbers_are_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SegmentStore::open(dir.path(), small(), 1).unwrap();
        s.push(qm(0, b"a", true)).unwrap();
        s.push(qm(1, b"b", true)).unwrap();
        let a = s.pop().unwrap();
        let b = s.pop().unwrap();
        s.requeue(vec![a]);
        s.settle(&[Settled::from(&b)]);
        s.flush();
        // SIGKILL: nothing else is written.
        std::mem::forget(s);
        let mut s = SegmentStore::open(dir.path(), small(), 1).unwrap();
        assert_eq!(s.len(), 1, "a is still queued, b stays settled");
        assert!(s.next_seq() >= 2, "next_seq {}", s.next_seq());
        s.push(qm(s.next_seq(), b"c", true)).unwrap();
        s.flush();
        drop(s);
        let s = SegmentStore::open(dir.path(), small(), 1).unwrap();
        assert_eq!(s.len(), 2, "a and c survive");
    }

    #[test]
    fn fully_settled_segments_are_reclaimed() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SegmentStore::open(dir.path(), small(), 1).unwrap();
        for i in 0..40u64 {
            s.push(qm(i, &[7u8; 40], true)).unwrap();
        }
        let before = fs::read_dir(dir.path()).unwrap().count();
        let taken: Vec<Settled> = std::iter::from_fn(|| s.pop())
            .map(|m| Settled::from(&m))
            .collect();
        s.settle(&taken);
        let after: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert!(before > 3);
        // Only the current (open) segment and its marks file remain.
        assert!(after.len() <= 2, "{after:?}");
        drop(s);
        let s = SegmentStore::open(dir.path(), small(), 1).unwrap();
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn paged_out_bodies_are_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = SegmentStore::open(
            dir.path(),
            SegmentConfig {
                segment_bytes: 1 << 20,
                cache_bytes: 10,
                ..SegmentConfig::default()
            },
            1,
        )
        .unwrap();
        for i in 0..5u64 {
            s.push(qm(i, format!("payload number {i}").as_bytes(), true))
                .unwrap();
        }
        assert!(s.cached <= 10);
        let bodies: Vec<String> = std::iter::from_fn(|| s.pop())
            .map(|m| String::from_utf8(m.message.body.to_vec()).unwrap())
            .collect();
        assert_eq!(bodies[4], "payload number 4");
        assert_eq!(bodies.len(), 5);
    }

    #[test]
    fn torn_and_corrupt_tails_are_dropped_keeping_intact_records() {
        let dir = tempfile::tempdir().unwrap();
        {
            let mut s = SegmentStore::open(dir.path(), SegmentConfig::default(), 1).unwrap();
            for i in 0..10u64 {
                s.push(qm(i, format!("m{i}").as_bytes(), true)).unwrap();
            }
        }
        let seg = seg_path(dir.path(), 1);
        let len = fs::metadata(&seg).unwrap().len();
        // Tear the last record in half.
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.set_len(len - 5).unwrap();
        drop(f);
        {
            let mut s = SegmentStore::open(dir.path(), SegmentConfig::default(), 1).unwrap();
            let seqs: Vec<u64> = std::iter::from_fn(|| s.pop()).map(|m| m.seq).collect();
            assert_eq!(seqs, (0..9).collect::<Vec<_>>());
        }
        // Corrupt a byte inside the (now) last record of segment 1: flip its body.
        let len = fs::metadata(&seg).unwrap().len();
        let f = OpenOptions::new().write(true).open(&seg).unwrap();
        f.write_all_at(&[0xFF], len - 1).unwrap();
        drop(f);
        let mut s = SegmentStore::open(dir.path(), SegmentConfig::default(), 1).unwrap();
        let seqs: Vec<u64> = std::iter::from_fn(|| s.pop()).map(|m| m.seq).collect();
        assert_eq!(seqs, (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn garbage_segment_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        let mut x: u64 = 12345;
        let mut junk = Vec::new();
        for _ in 0..4096 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            junk.push(x as u8);
        }
        fs::write(seg_path(dir.path(), 1), &junk).unwrap();
        fs::write(mark_path(dir.path(), 1), &junk[..100]).unwrap();
        let s = SegmentStore::open(dir.path(), SegmentConfig::default(), 1).unwrap();
        assert_eq!(s.len(), 0);
    }
}
