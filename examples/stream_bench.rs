//! Stream benchmark over the stream protocol (port 5552), for Warren and RabbitMQ alike.
//! It speaks the protocol itself (with `warren_stream::protocol`'s frame reader and
//! writer) and sends only what RabbitMQ 3.9+ understands, so the same binary measures
//! both brokers:
//!
//! 1. publish throughput with confirms: `--messages` messages of `--size` bytes (AMQP 1.0
//!    data sections) from one connection, 100 per `publish` frame, at most `--window`
//!    unconfirmed;
//! 2. consume throughput from `first` with `--readers` concurrent subscriptions (each on
//!    its own connection, credit 10 chunks), each reading every message;
//! 3. time to the first delivery when starting at an offset in the middle of a stream of
//!    `--big-gib` GiB (filled first with 64 KiB messages), and at `last`: connect,
//!    authenticate, subscribe, first chunk.
//!
//! cargo run --release --example stream_bench -- --host 127.0.0.1 --port 5552
//!
//! Prints one line per measure and a JSON line at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use warren_stream::protocol::{code, key, Reader, Writer};

struct Args {
    host: String,
    port: u16,
    user: String,
    password: String,
    messages: u64,
    size: usize,
    readers: usize,
    window: usize,
    big_gib: f64,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        host: "127.0.0.1".into(),
        port: 5552,
        user: "guest".into(),
        password: "guest".into(),
        messages: 1_000_000,
        size: 1024,
        readers: 4,
        window: 10_000,
        big_gib: 1.0,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let v = argv
            .get(i + 1)
            .cloned()
            .ok_or_else(|| format!("{} needs a value", argv[i]))?;
        let num = |what: &str| format!("{what}: not a number: {v}");
        match argv[i].as_str() {
            "--host" => a.host = v,
            "--port" => a.port = v.parse().map_err(|_| num("--port"))?,
            "--user" => a.user = v,
            "--password" => a.password = v,
            "--messages" => a.messages = v.parse().map_err(|_| num("--messages"))?,
            "--size" => a.size = v.parse().map_err(|_| num("--size"))?,
            "--readers" => a.readers = v.parse().map_err(|_| num("--readers"))?,
            "--window" => a.window = v.parse().map_err(|_| num("--window"))?,
            "--big-gib" => a.big_gib = v.parse().map_err(|_| num("--big-gib"))?,
            other => return Err(format!("unknown option {other}")),
        }
        i += 2;
    }
    Ok(a)
}

type Res<T> = Result<T, String>;

fn bad<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |e| format!("{what}: {e}")
}

/// Reads whole frames from one half of a connection.
struct FrameReader {
    rd: OwnedReadHalf,
    buf: BytesMut,
}

impl FrameReader {
    async fn next(&mut self) -> Res<BytesMut> {
        loop {
            if self.buf.len() >= 4 {
                let size = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]])
                    as usize;
                if self.buf.len() >= 4 + size {
                    let mut f = self.buf.split_to(4 + size);
                    let _ = f.split_to(4);
                    return Ok(f);
                }
                self.buf.reserve(4 + size - self.buf.len());
            }
            if self.rd.read_buf(&mut self.buf).await.map_err(bad("read"))? == 0 {
                return Err("the broker closed the connection".into());
            }
        }
    }
}

/// An open, authenticated connection.
struct Conn {
    rd: FrameReader,
    wr: OwnedWriteHalf,
    correlation: u32,
}

impl Conn {
    async fn open(a: &Args) -> Res<Conn> {
        let socket = TcpStream::connect((a.host.as_str(), a.port))
            .await
            .map_err(bad("connect"))?;
        let _ = socket.set_nodelay(true);
        let (rd, wr) = socket.into_split();
        let mut c = Conn {
            rd: FrameReader {
                rd,
                buf: BytesMut::with_capacity(1 << 20),
            },
            wr,
            correlation: 0,
        };
        let mut w = c.request(key::PEER_PROPERTIES);
        w.map(&[("product".into(), "warren stream bench".into())]);
        c.call(w).await?;
        let w = c.request(key::SASL_HANDSHAKE);
        c.call(w).await?;
        let mut plain = vec![0u8];
        plain.extend_from_slice(a.user.as_bytes());
        plain.push(0);
        plain.extend_from_slice(a.password.as_bytes());
        let mut w = c.request(key::SASL_AUTHENTICATE);
        w.str("PLAIN").u32(plain.len() as u32).raw(&plain);
        let (status, _) = c.call(w).await?;
        if status != code::OK {
            return Err(format!("authentication failed ({status})"));
        }
        // The server's tune: answer with the same frame_max and no heartbeat.
        let tune = c.rd.next().await?;
        let mut r = Reader::new(&tune);
        let (k, _) = (r.u16().map_err(bad("tune"))?, r.u16().map_err(bad("tune"))?);
        if k != key::TUNE {
            return Err(format!("expected tune, got {k:#06x}"));
        }
        let frame_max = r.u32().map_err(bad("tune"))?;
        let mut w = Writer::command(key::TUNE, 1);
        w.u32(frame_max).u32(0);
        c.send(w.finish()).await?;
        let mut w = c.request(key::OPEN);
        w.str("/");
        let (status, _) = c.call(w).await?;
        if status != code::OK {
            return Err(format!("open failed ({status})"));
        }
        Ok(c)
    }

    fn request(&mut self, k: u16) -> Writer {
        self.correlation += 1;
        let mut w = Writer::command(k, 1);
        w.u32(self.correlation);
        w
    }

    async fn send(&mut self, frame: Vec<u8>) -> Res<()> {
        self.wr.write_all(&frame).await.map_err(bad("write"))
    }

    /// Sends a request and waits for its response: (status, the frame's rest).
    async fn call(&mut self, w: Writer) -> Res<(u16, BytesMut)> {
        let want = self.correlation;
        self.send(w.finish()).await?;
        loop {
            let f = self.rd.next().await?;
            let mut r = Reader::new(&f);
            let k = r.u16().map_err(bad("response"))?;
            let _version = r.u16().map_err(bad("response"))?;
            if k & key::RESPONSE == 0 {
                continue; // heartbeat, tune...
            }
            let correlation = r.u32().map_err(bad("response"))?;
            if correlation != want {
                continue;
            }
            let status = r.u16().map_err(bad("response"))?;
            let rest = f.len() - r.remaining();
            let mut f = f;
            return Ok((status, f.split_off(rest)));
        }
    }

    async fn create(&mut self, stream: &str) -> Res<()> {
        let mut w = self.request(key::CREATE);
        w.str(stream).u32(0);
        match self.call(w).await?.0 {
            code::OK | code::STREAM_ALREADY_EXISTS => Ok(()),
            other => Err(format!("create {stream}: {other}")),
        }
    }

    async fn delete(&mut self, stream: &str) -> Res<()> {
        let mut w = self.request(key::DELETE);
        w.str(stream);
        self.call(w).await.map(|_| ())
    }
}

/// An AMQP 1.0 message with one data section of `size` bytes.
fn amqp10_message(size: usize) -> Vec<u8> {
    let mut m = vec![0x00, 0x53, 0x75, 0xb0];
    m.extend_from_slice(&(size as u32).to_be_bytes());
    m.resize(m.len() + size, b'x');
    m
}

/// Publishes `n` messages of `size` bytes and waits for every confirm.
async fn publish(a: &Args, stream: &str, n: u64, size: usize) -> Res<Duration> {
    let mut c = Conn::open(a).await?;
    let mut w = c.request(key::DECLARE_PUBLISHER);
    w.u8(1).str("").str(stream);
    let (status, _) = c.call(w).await?;
    if status != code::OK {
        return Err(format!("declare publisher: {status}"));
    }
    let Conn { mut rd, mut wr, .. } = c;
    let window = Arc::new(Semaphore::new(a.window));
    let confirms = {
        let window = window.clone();
        tokio::spawn(async move {
            let mut confirmed = 0u64;
            while confirmed < n {
                let f = rd.next().await?;
                let mut r = Reader::new(&f);
                let k = r.u16().map_err(bad("confirm"))?;
                let _ = r.u16();
                match k {
                    key::PUBLISH_CONFIRM => {
                        let _publisher = r.u8().map_err(bad("confirm"))?;
                        let count = r.u32().map_err(bad("confirm"))?;
                        confirmed += u64::from(count);
                        window.add_permits(count as usize);
                    }
                    key::PUBLISH_ERROR => return Err("publish error".to_string()),
                    _ => {}
                }
            }
            Ok::<_, String>(())
        })
    };
    let message = amqp10_message(size);
    let per_frame = ((512 * 1024) / (message.len() + 12)).clamp(1, 100) as u64;
    let started = Instant::now();
    let mut next_id = 0u64;
    while next_id < n {
        let k = per_frame.min(n - next_id);
        window
            .acquire_many(k as u32)
            .await
            .map_err(bad("window"))?
            .forget();
        let mut w = Writer::command(key::PUBLISH, 1);
        w.u8(1).u32(k as u32);
        for _ in 0..k {
            w.u64(next_id).u32(message.len() as u32).raw(&message);
            next_id += 1;
        }
        wr.write_all(&w.finish()).await.map_err(bad("publish"))?;
    }
    confirms.await.map_err(bad("confirm task"))??;
    Ok(started.elapsed())
}

/// Subscribes at `offset` (type, value) and reads `n` messages; returns the time to the
/// first chunk and to the last message, both from before connecting.
async fn consume(a: &Args, stream: &str, offset: (u16, u64), n: u64) -> Res<(Duration, Duration)> {
    let started = Instant::now();
    let mut c = Conn::open(a).await?;
    let mut w = c.request(key::SUBSCRIBE);
    w.u8(1).str(stream).u16(offset.0);
    if offset.0 == 4 {
        w.u64(offset.1);
    }
    w.u16(10).u32(0);
    let (status, _) = c.call(w).await?;
    if status != code::OK {
        return Err(format!("subscribe: {status}"));
    }
    let mut first = None;
    let mut got = 0u64;
    while got < n {
        let f = tokio::time::timeout(Duration::from_secs(60), c.rd.next())
            .await
            .map_err(|_| format!("no delivery for 60 s after {got} messages"))??;
        let mut r = Reader::new(&f);
        let k = r.u16().map_err(bad("deliver"))?;
        let _ = r.u16();
        if k != key::DELIVER {
            continue;
        }
        let _subscription = r.u8().map_err(bad("deliver"))?;
        // The osiris chunk header: magic/version, type, entries (u16), records (u32), ...
        let header = &f[5..];
        if header.len() < 48 {
            return Err("short chunk".into());
        }
        let records = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        first.get_or_insert_with(|| started.elapsed());
        got += u64::from(records);
        let mut w = Writer::command(key::CREDIT, 1);
        w.u8(1).u16(1);
        c.send(w.finish()).await?;
    }
    Ok((first.unwrap_or_default(), started.elapsed()))
}

async fn run(a: Arc<Args>) -> Res<()> {
    let stream = format!("bench-{}", std::process::id());
    let mut admin = Conn::open(&a).await?;
    let _ = admin.delete(&stream).await;
    admin.create(&stream).await?;

    let t = publish(&a, &stream, a.messages, a.size).await?;
    let publish_rate = a.messages as f64 / t.as_secs_f64();
    println!(
        "publish with confirms: {} x {} B in {:.2} s = {:.0} msg/s",
        a.messages,
        a.size,
        t.as_secs_f64(),
        publish_rate
    );

    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..a.readers {
        let a = a.clone();
        let stream = stream.clone();
        tasks.push(tokio::spawn(async move {
            consume(&a, &stream, (1, 0), a.messages).await
        }));
    }
    for t in tasks {
        t.await.map_err(bad("reader"))??;
    }
    let t = started.elapsed();
    let consume_rate = (a.messages * a.readers as u64) as f64 / t.as_secs_f64();
    println!(
        "consume from first: {} readers x {} messages in {:.2} s = {:.0} msg/s in all",
        a.readers,
        a.messages,
        t.as_secs_f64(),
        consume_rate
    );
    admin.delete(&stream).await?;

    // A big stream of 64 KiB messages, then a reader starting in its middle.
    let big = format!("bench-big-{}", std::process::id());
    let _ = admin.delete(&big).await;
    admin.create(&big).await?;
    let big_size = 64 * 1024;
    let big_n = ((a.big_gib * (1u64 << 30) as f64) / big_size as f64) as u64;
    let t = publish(&a, &big, big_n, big_size).await?;
    let fill_secs = t.as_secs_f64();
    println!(
        "filled {:.1} GiB ({} x 64 KiB) in {:.1} s",
        a.big_gib, big_n, fill_secs
    );
    let (mid_first, _) = consume(&a, &big, (4, big_n / 2), 1).await?;
    let (last_first, _) = consume(&a, &big, (2, 0), 1).await?;
    println!(
        "first delivery from offset {} (the middle): {:.1} ms; from last: {:.1} ms",
        big_n / 2,
        mid_first.as_secs_f64() * 1000.0,
        last_first.as_secs_f64() * 1000.0
    );
    admin.delete(&big).await?;
    println!(
        "{{\"publish_msg_per_s\":{publish_rate:.0},\"consume_msg_per_s\":{consume_rate:.0},\"readers\":{},\"big_gib\":{},\"fill_secs\":{fill_secs:.1},\"first_from_middle_ms\":{:.1},\"first_from_last_ms\":{:.1}}}",
        a.readers,
        a.big_gib,
        mid_first.as_secs_f64() * 1000.0,
        last_first.as_secs_f64() * 1000.0
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> std::process::ExitCode {
    let a = match args() {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("stream_bench: {e}");
            return std::process::ExitCode::from(64);
        }
    };
    match run(a).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stream_bench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
