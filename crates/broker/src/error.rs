//! The engine's errors, in its own words. The server maps each to an AMQP reply code.

/// An engine operation that could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A permission check failed (RabbitMQ: 403 ACCESS_REFUSED).
    #[error("access to {kind} '{name}' in vhost '{vhost}' refused for user '{user}'")]
    AccessRefused {
        /// "queue" or "exchange".
        kind: &'static str,
        /// The resource's name as checked (`amq.default` for the default exchange).
        name: String,
        /// Vhost name.
        vhost: String,
        /// User name.
        user: String,
    },
    /// A topic permission check failed (403).
    #[error("access to topic '{routing_key}' in exchange '{exchange}' in vhost '{vhost}' refused for user '{user}'")]
    TopicAccessRefused {
        /// The routing key.
        routing_key: String,
        /// The topic exchange.
        exchange: String,
        /// Vhost name.
        vhost: String,
        /// User name.
        user: String,
    },
    /// The vhost's `max-queues` is reached (406).
    #[error("cannot declare queue '{queue}': queue limit in vhost '{vhost}' ({limit}) is reached")]
    QueueLimit {
        /// The queue that was not declared.
        queue: String,
        /// Vhost name.
        vhost: String,
        /// The limit.
        limit: u64,
    },
    /// No such queue.
    #[error("no queue '{queue}' in vhost '{vhost}'")]
    QueueNotFound {
        /// Vhost name.
        vhost: String,
        /// Queue name.
        queue: String,
    },
    /// No such exchange.
    #[error("no exchange '{exchange}' in vhost '{vhost}'")]
    ExchangeNotFound {
        /// Vhost name.
        vhost: String,
        /// Exchange name.
        exchange: String,
    },
    /// An exclusive queue of another connection, or an exclusive flag mismatch.
    #[error("cannot obtain exclusive access to locked queue '{queue}' in vhost '{vhost}'. It could be originally declared on another connection or the exclusive property value does not match that of the original declaration.")]
    ExclusiveLocked {
        /// Vhost name.
        vhost: String,
        /// Queue name.
        queue: String,
    },
    /// A redeclaration that differs from the existing entity.
    #[error("{0}")]
    Inequivalent(Box<Inequivalent>),
    /// `amq.` names are reserved.
    #[error("{kind} name '{name}' contains reserved prefix 'amq.*'")]
    ReservedName {
        /// "queue" or "exchange".
        kind: &'static str,
        /// The refused name.
        name: String,
    },
    /// The default exchange only accepts publishes.
    #[error("operation not permitted on the default exchange")]
    DefaultExchange,
    /// `amq.*` exchanges cannot be deleted.
    #[error("deletion of system exchange '{exchange}' in vhost '{vhost}' not allowed")]
    SystemExchange {
        /// Vhost name.
        vhost: String,
        /// Exchange name.
        exchange: String,
    },
    /// Unknown exchange type.
    #[error("unknown exchange type '{0}'")]
    UnknownExchangeType(String),
    /// delete if-unused on a queue with consumers, or an exchange with bindings.
    #[error("{kind} '{name}' in vhost '{vhost}' in use")]
    InUse {
        /// "queue" or "exchange".
        kind: &'static str,
        /// Entity name.
        name: String,
        /// Vhost name.
        vhost: String,
    },
    /// delete if-empty on a queue with messages.
    #[error("queue '{queue}' in vhost '{vhost}' not empty")]
    NotEmpty {
        /// Vhost name.
        vhost: String,
        /// Queue name.
        queue: String,
    },
    /// A second consumer on a queue with an exclusive consumer, or vice versa.
    #[error("queue '{queue}' in vhost '{vhost}' in exclusive use")]
    ExclusiveConsumer {
        /// Vhost name.
        vhost: String,
        /// Queue name.
        queue: String,
    },
    /// Publishing to an internal exchange.
    #[error("cannot publish to internal exchange '{exchange}' in vhost '{vhost}'")]
    InternalExchange {
        /// Vhost name.
        vhost: String,
        /// Exchange name.
        exchange: String,
    },
    /// An invalid queue argument (text as RabbitMQ words it).
    #[error("{0}")]
    InvalidArg(String),
    /// Something RabbitMQ answers with 540 NOT_IMPLEMENTED (text as it words it).
    #[error("{0}")]
    NotImplemented(String),
    /// The data directory could not be written.
    #[error("cannot write to the data directory: {0}")]
    Storage(String),
    /// A binding whose arguments the exchange type refuses.
    #[error("{0}")]
    BindingInvalid(String),
}

/// Details of an inequivalent redeclaration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("inequivalent arg '{arg}' for {kind} '{name}' in vhost '{vhost}': received {received} but current is {current}")]
pub struct Inequivalent {
    /// "queue" or "exchange".
    pub kind: &'static str,
    /// Entity name.
    pub name: String,
    /// Vhost name.
    pub vhost: String,
    /// The argument that differs.
    pub arg: String,
    /// What the client sent, formatted as RabbitMQ does.
    pub received: String,
    /// What the entity has.
    pub current: String,
}
