//! The one place where engine errors become AMQP reply codes.

use warren_broker::Error;
use warren_codec::{AmqpError, ReplyCode};

/// Maps an engine error to the reply RabbitMQ gives for it.
pub fn amqp(err: Error) -> AmqpError {
    let code = match &err {
        Error::QueueNotFound { .. } | Error::ExchangeNotFound { .. } => ReplyCode::NotFound,
        Error::ExclusiveLocked { .. } => ReplyCode::ResourceLocked,
        Error::Inequivalent(_)
        | Error::InUse { .. }
        | Error::NotEmpty { .. }
        | Error::BindingInvalid(_)
        | Error::QueueLimit { .. }
        | Error::InvalidArg(_) => ReplyCode::PreconditionFailed,
        Error::ReservedName { .. }
        | Error::DefaultExchange
        | Error::SystemExchange { .. }
        | Error::ExclusiveConsumer { .. }
        | Error::InternalExchange { .. }
        | Error::AccessRefused { .. }
        | Error::TopicAccessRefused { .. } => ReplyCode::AccessRefused,
        // RabbitMQ 3.10: unknown exchange type is a connection error 503.
        Error::UnknownExchangeType(_) => ReplyCode::CommandInvalid,
        Error::Storage(_) => ReplyCode::InternalError,
        Error::NotImplemented(_) => ReplyCode::NotImplemented,
    };
    AmqpError::new(code, err)
}
