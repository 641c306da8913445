//! RabbitMQ's stream protocol (its stream plugin's PROTOCOL.adoc) on Warren's stream
//! queues. A view of the engine like the management API: the same users, vhosts,
//! permissions and stream queues as AMQP 0-9-1; messages travel in the AMQP 1.0 format
//! the protocol's clients use and are stored as the engine stores every message.

pub mod amqp10;
pub mod protocol;
mod sac;
pub mod server;

pub use server::{start, start_with_tls, Running};
