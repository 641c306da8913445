//! Integration tests: a real broker on `127.0.0.1:0` with a temporary data directory,
//! driven over TCP by `lapin` and by a raw-bytes client (`util::RawClient`).
//!
//! Every expectation is RabbitMQ's behaviour (3.10, see `conformance/README.md`). Tests
//! never sleep for a fixed time: they wait on conditions with timeouts (`util::eventually`).

mod access;
mod acks;
mod backpressure;
mod confirms_tx;
mod ctl;
mod ctl_commands;
mod disk_full;
mod errors;
mod extensions;
mod lifecycle;
mod management;
mod paging;
mod parity;
mod publish_consume;
mod raw_protocol;
mod stream_protocol;
mod streams;
mod tls;
mod util;
