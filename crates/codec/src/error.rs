//! AMQP reply codes and the error that becomes a `channel.close` or `connection.close`.

use std::fmt;

/// An AMQP 0-9-1 reply code, with RabbitMQ's names (spec JSON `constants`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReplyCode {
    /// 200: normal close.
    ReplySuccess,
    /// 311: content too large (unused by RabbitMQ on 0-9-1).
    ContentTooLarge,
    /// 312: a mandatory message could not be routed (basic.return).
    NoRoute,
    /// 313: immediate delivery impossible (never used: immediate is not supported).
    NoConsumers,
    /// 320: the broker closed the connection (operator or shutdown).
    ConnectionForced,
    /// 402: invalid virtual host path.
    InvalidPath,
    /// 403: access refused.
    AccessRefused,
    /// 404: no such entity.
    NotFound,
    /// 405: exclusively locked resource.
    ResourceLocked,
    /// 406: precondition failed.
    PreconditionFailed,
    /// 501: malformed frame.
    FrameError,
    /// 502: malformed field values.
    SyntaxError,
    /// 503: invalid command.
    CommandInvalid,
    /// 504: channel misuse.
    ChannelError,
    /// 505: a frame the peer did not expect.
    UnexpectedFrame,
    /// 506: server out of resources.
    ResourceError,
    /// 530: not allowed.
    NotAllowed,
    /// 540: not implemented.
    NotImplemented,
    /// 541: internal error.
    InternalError,
}

impl ReplyCode {
    /// The numeric code sent on the wire.
    pub fn code(self) -> u16 {
        match self {
            ReplyCode::ReplySuccess => 200,
            ReplyCode::ContentTooLarge => 311,
            ReplyCode::NoRoute => 312,
            ReplyCode::NoConsumers => 313,
            ReplyCode::ConnectionForced => 320,
            ReplyCode::InvalidPath => 402,
            ReplyCode::AccessRefused => 403,
            ReplyCode::NotFound => 404,
            ReplyCode::ResourceLocked => 405,
            ReplyCode::PreconditionFailed => 406,
            ReplyCode::FrameError => 501,
            ReplyCode::SyntaxError => 502,
            ReplyCode::CommandInvalid => 503,
            ReplyCode::ChannelError => 504,
            ReplyCode::UnexpectedFrame => 505,
            ReplyCode::ResourceError => 506,
            ReplyCode::NotAllowed => 530,
            ReplyCode::NotImplemented => 540,
            ReplyCode::InternalError => 541,
        }
    }

    /// The name RabbitMQ puts in front of the reply text.
    pub fn name(self) -> &'static str {
        match self {
            ReplyCode::ReplySuccess => "OK",
            ReplyCode::ContentTooLarge => "CONTENT_TOO_LARGE",
            ReplyCode::NoRoute => "NO_ROUTE",
            ReplyCode::NoConsumers => "NO_CONSUMERS",
            ReplyCode::ConnectionForced => "CONNECTION_FORCED",
            ReplyCode::InvalidPath => "INVALID_PATH",
            ReplyCode::AccessRefused => "ACCESS_REFUSED",
            ReplyCode::NotFound => "NOT_FOUND",
            ReplyCode::ResourceLocked => "RESOURCE_LOCKED",
            ReplyCode::PreconditionFailed => "PRECONDITION_FAILED",
            ReplyCode::FrameError => "FRAME_ERROR",
            ReplyCode::SyntaxError => "SYNTAX_ERROR",
            ReplyCode::CommandInvalid => "COMMAND_INVALID",
            ReplyCode::ChannelError => "CHANNEL_ERROR",
            ReplyCode::UnexpectedFrame => "UNEXPECTED_FRAME",
            ReplyCode::ResourceError => "RESOURCE_ERROR",
            ReplyCode::NotAllowed => "NOT_ALLOWED",
            ReplyCode::NotImplemented => "NOT_IMPLEMENTED",
            ReplyCode::InternalError => "INTERNAL_ERROR",
        }
    }

    /// Hard errors close the connection; soft errors close only the channel.
    pub fn is_hard(self) -> bool {
        matches!(
            self,
            ReplyCode::ConnectionForced
                | ReplyCode::InvalidPath
                | ReplyCode::FrameError
                | ReplyCode::SyntaxError
                | ReplyCode::CommandInvalid
                | ReplyCode::ChannelError
                | ReplyCode::UnexpectedFrame
                | ReplyCode::ResourceError
                | ReplyCode::NotAllowed
                | ReplyCode::NotImplemented
                | ReplyCode::InternalError
        )
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

/// An error that closes a channel or the connection.
///
/// `text` is already in RabbitMQ's form `"NAME - detail"` and at most 255 bytes.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{text}")]
pub struct AmqpError {
    /// The reply code.
    pub code: ReplyCode,
    /// The reply text, `"NAME - detail"`.
    pub text: String,
    /// Class id of the method that failed (0 when none).
    pub class_id: u16,
    /// Method id of the method that failed (0 when none).
    pub method_id: u16,
    /// RabbitMQ closes the socket without a `connection.close` for this error (an
    /// unknown method, a failed SASL or tune negotiation): so do we.
    pub close_socket: bool,
}

impl AmqpError {
    /// An error with `code` and the detail text; the code's name is prefixed.
    pub fn new(code: ReplyCode, detail: impl fmt::Display) -> Self {
        let mut text = format!("{} - {}", code.name(), detail);
        truncate_on_char_boundary(&mut text, 255);
        AmqpError {
            code,
            text,
            class_id: 0,
            method_id: 0,
            close_socket: false,
        }
    }

    /// Marks the error as one RabbitMQ answers by closing the socket, without a
    /// `connection.close` frame.
    pub fn silently(mut self) -> Self {
        self.close_socket = true;
        self
    }

    /// Records the method that caused the error, unless one is recorded already.
    pub fn with_method(mut self, class_id: u16, method_id: u16) -> Self {
        if self.class_id == 0 && self.method_id == 0 {
            self.class_id = class_id;
            self.method_id = method_id;
        }
        self
    }

    /// Shorthand constructors.
    pub fn not_found(detail: impl fmt::Display) -> Self {
        Self::new(ReplyCode::NotFound, detail)
    }
    /// 403.
    pub fn access_refused(detail: impl fmt::Display) -> Self {
        Self::new(ReplyCode::AccessRefused, detail)
    }
    /// 406.
    pub fn precondition_failed(detail: impl fmt::Display) -> Self {
        Self::new(ReplyCode::PreconditionFailed, detail)
    }
    /// 501.
    pub fn frame_error(detail: impl fmt::Display) -> Self {
        Self::new(ReplyCode::FrameError, detail)
    }
    /// 503.
    pub fn command_invalid(detail: impl fmt::Display) -> Self {
        Self::new(ReplyCode::CommandInvalid, detail)
    }
    /// 504.
    pub fn channel_error(detail: impl fmt::Display) -> Self {
        Self::new(ReplyCode::ChannelError, detail)
    }
    /// 505.
    pub fn unexpected_frame(detail: impl fmt::Display) -> Self {
        Self::new(ReplyCode::UnexpectedFrame, detail)
    }
    /// 530.
    pub fn not_allowed(detail: impl fmt::Display) -> Self {
        Self::new(ReplyCode::NotAllowed, detail)
    }
    /// 540.
    pub fn not_implemented(detail: impl fmt::Display) -> Self {
        Self::new(ReplyCode::NotImplemented, detail)
    }
    /// 541.
    pub fn internal_error(detail: impl fmt::Display) -> Self {
        Self::new(ReplyCode::InternalError, detail)
    }
}

/// Renders bytes as Erlang's `~p` prints a binary, as RabbitMQ's reply texts quote
/// frame payloads: `<<"abc">>` when every byte is printable Latin-1, else
/// `<<0,60,1>>`.
pub fn erlang_binary(bytes: &[u8]) -> String {
    // io_lib:printable_latin1_list: 32..=126, 160..=255 and \b \t \n \v \f \r \e.
    let printable = |b: u8| matches!(b, 32..=126 | 160..=255 | 8..=13 | 27);
    if !bytes.is_empty() && bytes.iter().all(|b| printable(*b)) {
        let mut s = String::from("<<\"");
        for &b in bytes {
            match b {
                b'"' => s.push_str("\\\""),
                b'\\' => s.push_str("\\\\"),
                8 => s.push_str("\\b"),
                9 => s.push_str("\\t"),
                10 => s.push_str("\\n"),
                11 => s.push_str("\\v"),
                12 => s.push_str("\\f"),
                13 => s.push_str("\\r"),
                27 => s.push_str("\\e"),
                other => s.push(char::from(other)),
            }
        }
        s.push_str("\">>");
        s
    } else {
        let items: Vec<String> = bytes.iter().map(u8::to_string).collect();
        format!("<<{}>>", items.join(","))
    }
}

/// Cuts `s` to at most `max` bytes without splitting a UTF-8 character.
pub fn truncate_on_char_boundary(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_has_rabbitmq_prefix_and_is_capped() {
        let e = AmqpError::not_found("no queue 'q' in vhost '/'");
        assert_eq!(e.text, "NOT_FOUND - no queue 'q' in vhost '/'");
        assert_eq!(e.code.code(), 404);
        assert!(!e.code.is_hard());
        let long = AmqpError::precondition_failed("é".repeat(300));
        assert!(long.text.len() <= 255);
        assert!(long.text.is_char_boundary(long.text.len()));
    }

    #[test]
    fn binaries_render_as_erlang_prints_them() {
        assert_eq!(erlang_binary(b"abc"), "<<\"abc\">>");
        assert_eq!(erlang_binary(b""), "<<>>");
        assert_eq!(erlang_binary(&[0, 60, 0]), "<<0,60,0>>");
        assert_eq!(erlang_binary(b"a\"b\n"), "<<\"a\\\"b\\n\">>");
    }

    #[test]
    fn hard_and_soft_codes() {
        assert!(ReplyCode::FrameError.is_hard());
        assert!(ReplyCode::NotAllowed.is_hard());
        assert!(!ReplyCode::ResourceLocked.is_hard());
        assert!(!ReplyCode::AccessRefused.is_hard());
    }
}
