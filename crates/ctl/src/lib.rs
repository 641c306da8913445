//! RabbitMQ's command-line surface for Warren: the `rabbitmq-server` launcher
//! (`RABBITMQ_*` variables and `rabbitmq.conf`, [`conf`]), `rabbitmqctl`,
//! `rabbitmq-diagnostics` and `rabbitmq-plugins` ([`cli`]), and the node's control
//! socket they talk to ([`server`], located by node name as in [`node`]).
//!
//! The tools and the node exchange one JSON line each way ([`protocol`]); every command
//! is one engine operation on the node (the same ones the management API calls).

pub mod admin;
pub mod cli;
pub mod conf;
pub mod node;
pub mod protocol;
pub mod server;
pub mod streams;
